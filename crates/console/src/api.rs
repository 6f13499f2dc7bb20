//! The HTTP API for machines (SOAR tools, scripts), version 1, described by the OpenAPI document
//! it serves at /api/v1/openapi.json. A caller presents a Kubernetes token (TokenReview says
//! whose it is); each call is first put to a SubjectAccessReview on the object it touches, so a
//! refusal is a clear 403 before anything is sent, and then made impersonating the caller, so
//! the apiserver and the admission policies judge it again and record the caller's name.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use mfa_recall::api::{MfaRecall, RecallMode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::ledger::UsersQuery;
use crate::pages::{Action, is_object_name};
use crate::{Shared, views};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], include_str!("../static/openapi.json")) }))
        .route("/namespaces/{namespace}/recalls", get(list).post(create))
        .route("/namespaces/{namespace}/recalls/{name}", get(read))
        .route("/namespaces/{namespace}/recalls/{name}/start", post(start))
        .route("/namespaces/{namespace}/recalls/{name}/approve", post(approve))
        .route("/namespaces/{namespace}/recalls/{name}/events", get(events))
        .route("/namespaces/{namespace}/recalls/{name}/users", get(users))
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": code, "message": message.into() }))).into_response()
}

fn kube_error(e: kube::Error) -> Response {
    match e {
        kube::Error::Api(s) => {
            let status = StatusCode::from_u16(s.code).unwrap_or(StatusCode::BAD_GATEWAY);
            let code = match s.code {
                403 => "forbidden",
                404 => "notFound",
                409 => "conflict",
                400 | 422 => "invalid",
                _ => "kubernetes",
            };
            error(status, code, s.message)
        }
        other => {
            tracing::warn!(error = %other, "Kubernetes API");
            error(StatusCode::BAD_GATEWAY, "unavailable", "the Kubernetes API could not be reached")
        }
    }
}

/// The caller's client once Kubernetes says they may `verb` the recalls (or the one named) in `namespace`.
async fn allowed(console: &Shared, caller: &Caller, verb: &str, resource: &str, namespace: &str, name: Option<&str>) -> Result<kube::Client, Response> {
    // As Kubernetes writes names, so the review is about exactly the object the call then touches.
    if !is_object_name(namespace) || name.is_some_and(|n| !is_object_name(n)) {
        return Err(error(StatusCode::BAD_REQUEST, "invalid", "namespaces and names are lower-case letters, digits, dashes and dots"));
    }
    match console.people.may(&caller.person, verb, resource, namespace, name).await {
        Ok((true, _)) => console.people.client(&caller.person),
        Ok((false, reason)) => {
            let what = name.map(|n| format!("{resource}/{n}")).unwrap_or_else(|| resource.to_string());
            let because = if reason.is_empty() { String::new() } else { format!(": {reason}") };
            Err(error(StatusCode::FORBIDDEN, "forbidden", format!("{} may not {verb} {what} in namespace {namespace}{because}", caller.person.username)))
        }
        Err(e) => Err(kube_error(e)),
    }
}

async fn list(State(console): State<Shared>, Path(namespace): Path<String>, caller: Caller) -> Response {
    let client = match allowed(&console, &caller, "list", "mfarecalls", &namespace, None).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    match Api::<MfaRecall>::namespaced(client, &namespace).list(&ListParams::default()).await {
        Ok(list) => Json(json!({ "recalls": list.items.iter().map(views::recall).collect::<Vec<_>>() })).into_response(),
        Err(e) => kube_error(e),
    }
}

/// The body of a create call.
#[derive(Deserialize)]
struct NewRecallBody {
    name: String,
    /// An MfaRecall spec, as `kubectl explain mfarecall.spec` describes it.
    spec: Value,
}

async fn create(State(console): State<Shared>, Path(namespace): Path<String>, caller: Caller, body: Result<Json<NewRecallBody>, axum::extract::rejection::JsonRejection>) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", format!("the body must be {{\"name\": ..., \"spec\": {{...an MfaRecall spec...}}}}: {}", e.body_text())),
    };
    let mut spec = body.spec;
    if !spec.is_object() {
        return error(StatusCode::BAD_REQUEST, "invalid", "spec must be an object: an MfaRecall spec");
    }
    // A plan unless the caller asks to execute at once: nothing is changed before someone reads it.
    if spec.get("mode").is_none() {
        spec["mode"] = json!("Plan");
    }
    // An approval is requested in the caller's name (the admission policy allows no other).
    if let Some(approval) = spec.get_mut("approval").and_then(Value::as_object_mut) {
        approval.entry("requestedBy").or_insert_with(|| json!(caller.person.username));
    }
    let recall: MfaRecall = match serde_json::from_value(json!({ "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": { "name": body.name }, "spec": spec })) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("the spec is not a valid MfaRecall spec: {e}")),
    };
    let client = match allowed(&console, &caller, "create", "mfarecalls", &namespace, None).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    match Api::<MfaRecall>::namespaced(client, &namespace).create(&PostParams::default(), &recall).await {
        Ok(created) => {
            tracing::info!(user = %caller.person.username, recall = %created.metadata.name.clone().unwrap_or_default(), plan = created.spec.mode == RecallMode::Plan, "recall created through the API");
            (StatusCode::CREATED, Json(views::recall(&created))).into_response()
        }
        Err(e) => kube_error(e),
    }
}

async fn read(State(console): State<Shared>, Path((namespace, name)): Path<(String, String)>, caller: Caller) -> Response {
    let client = match allowed(&console, &caller, "get", "mfarecalls", &namespace, Some(&name)).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    match Api::<MfaRecall>::namespaced(client, &namespace).get(&name).await {
        Ok(recall) => Json(views::recall(&recall)).into_response(),
        Err(e) => kube_error(e),
    }
}

async fn start(State(console): State<Shared>, Path((namespace, name)): Path<(String, String)>, caller: Caller) -> Response {
    act(&console, &caller, &namespace, &name, Action::Start).await
}

async fn approve(State(console): State<Shared>, Path((namespace, name)): Path<(String, String)>, caller: Caller) -> Response {
    act(&console, &caller, &namespace, &name, Action::Approve).await
}

/// Starts or approves as the pages do, on the version of the recall the checks were made on.
/// The API asks for no fresh sign-in: a caller presents its token with every call.
async fn act(console: &Shared, caller: &Caller, namespace: &str, name: &str, action: Action) -> Response {
    let client = match allowed(console, caller, "patch", "mfarecalls", namespace, Some(name)).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let api = Api::<MfaRecall>::namespaced(client, namespace);
    let object = match api.get(name).await {
        Ok(o) => o,
        Err(e) => return kube_error(e),
    };
    if let Some(why) = action.refusal(&object, &caller.person.username) {
        return error(StatusCode::CONFLICT, "conflict", why);
    }
    match api.patch(name, &PatchParams::default(), &Patch::Merge(action.patch(&object, &caller.person.username))).await {
        Ok(recall) => Json(views::recall(&recall)).into_response(),
        Err(e) => kube_error(e),
    }
}

async fn events(State(console): State<Shared>, Path((namespace, name)): Path<(String, String)>, caller: Caller) -> Response {
    let client = match allowed(&console, &caller, "watch", "mfarecalls", &namespace, Some(&name)).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    crate::live::changes(Api::namespaced(client, &namespace), Some(&name), console.stopping.clone()).await.unwrap_or_else(kube_error)
}

async fn users(State(console): State<Shared>, Path((namespace, name)): Path<(String, String)>, Query(query): Query<UsersQuery>, caller: Caller) -> Response {
    let client = match allowed(&console, &caller, "get", "recallledgersegments", &namespace, None).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let recall = match Api::<MfaRecall>::namespaced(client.clone(), &namespace).get(&name).await {
        Ok(r) => r,
        Err(e) => return kube_error(e),
    };
    match crate::ledger::users(client, &namespace, &recall, &query).await {
        Ok(users) => Json(users).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, "ledger", e),
    }
}
