//! The pages: server-rendered HTML (minijinja, escaped by default), each made with the person's
//! own Kubernetes client, so a page shows what they may read and a form does what they may do.
//! A refusal by Kubernetes is a 403 page with the apiserver's reason; a form the apiserver or an
//! admission policy refuses comes back with its message and what was typed.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use minijinja::{Environment, Value as Context, context};
use mfa_recall::api::{IdentityBackend, MfaBypass, MfaRecall, MfaRecallPolicy};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, CsrfForm};
use crate::ledger::UsersQuery;
use crate::{Shared, views};

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        for (name, source) in [
            ("base.html", include_str!("../templates/base.html")),
            ("recalls.html", include_str!("../templates/recalls.html")),
            ("recall.html", include_str!("../templates/recall.html")),
            ("new.html", include_str!("../templates/new.html")),
            ("approvals.html", include_str!("../templates/approvals.html")),
            ("bypasses.html", include_str!("../templates/bypasses.html")),
            ("policies.html", include_str!("../templates/policies.html")),
            ("signin.html", include_str!("../templates/signin.html")),
            ("error.html", include_str!("../templates/error.html")),
        ] {
            env.add_template(name, source).expect("the console's templates parse");
        }
        Self { env }
    }

    /// A page, with the person and their form token for the layout.
    pub fn render(&self, name: &str, page: Context, caller: Option<&Caller>) -> Response {
        self.render_status(StatusCode::OK, name, page, caller)
    }

    pub fn render_status(&self, status: StatusCode, name: &str, page: Context, caller: Option<&Caller>) -> Response {
        let ctx = context! { me => caller.map(|c| c.person.username.clone()), csrf => caller.and_then(|c| c.csrf.clone()), ..page };
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, template = name, "rendering a page");
                (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
            }
        }
    }
}

/// The page for an apiserver refusal or failure.
pub fn kube_error(console: &Shared, caller: Option<&Caller>, e: kube::Error) -> Response {
    let (status, message) = match &e {
        kube::Error::Api(s) => (StatusCode::from_u16(s.code).unwrap_or(StatusCode::BAD_GATEWAY), s.message.clone()),
        other => {
            tracing::warn!(error = %other, "Kubernetes API");
            (StatusCode::BAD_GATEWAY, "the Kubernetes API could not be reached".to_string())
        }
    };
    let title = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        _ => "The request failed",
    };
    console.pages.render_status(status, "error.html", context! { title, message, status => status.as_u16() }, caller)
}

macro_rules! client_or_return {
    ($console:expr, $caller:expr) => {
        match $console.people.client(&$caller.person) {
            Ok(c) => c,
            Err(refused) => return refused,
        }
    };
}

fn newest_first<K: kube::Resource>(mut items: Vec<K>) -> Vec<K> {
    items.sort_by(|a, b| b.meta().creation_timestamp.cmp(&a.meta().creation_timestamp).then_with(|| a.meta().name.cmp(&b.meta().name)));
    items
}

pub async fn recalls(State(console): State<Shared>, caller: Caller) -> Response {
    let client = client_or_return!(console, caller);
    match Api::<MfaRecall>::namespaced(client, &console.cli.namespace).list(&ListParams::default()).await {
        Ok(list) => {
            let recalls: Vec<views::RecallView> = newest_first(list.items).iter().map(views::recall).collect();
            console.pages.render("recalls.html", context! { recalls, namespace => console.cli.namespace.clone() }, Some(&caller))
        }
        Err(e) => kube_error(&console, Some(&caller), e),
    }
}

pub async fn recall(State(console): State<Shared>, Path(name): Path<String>, Query(query): Query<UsersQuery>, caller: Caller) -> Response {
    if let Err(refused) = valid_name(&console, &caller, &name) {
        return refused;
    }
    let client = client_or_return!(console, caller);
    let ns = &console.cli.namespace;
    let object = match Api::<MfaRecall>::namespaced(client.clone(), ns).get(&name).await {
        Ok(o) => o,
        Err(e) => return kube_error(&console, Some(&caller), e),
    };
    let view = views::recall(&object);
    let (users, users_error) = match crate::ledger::users(client.clone(), ns, &object, &query).await {
        Ok(users) => (Some(users), None),
        Err(e) => (None, Some(e)),
    };
    let bypasses: Vec<views::BypassView> = match Api::<MfaBypass>::namespaced(client.clone(), ns).list(&ListParams::default()).await {
        Ok(list) => newest_first(list.items).iter().filter(|b| b.spec.recall == name).map(views::bypass).collect(),
        Err(_) => Vec::new(),
    };
    let activity = events_of(client, ns, &name).await;
    let mine = view.requested_by.as_deref() == Some(caller.person.username.as_str());
    let broad = views::is_broad(&object, console.cli.broad_scope_users);
    console.pages.render(
        "recall.html",
        context! {
            recall => view, users, users_error, bypasses, activity, mine, broad,
            fresh => console.auth.is_fresh(&caller),
            q => query.q.clone().unwrap_or_default(),
        },
        Some(&caller),
    )
}

/// The recall's Kubernetes Events, newest first (what the operator said it did, and when).
async fn events_of(client: kube::Client, namespace: &str, name: &str) -> Vec<serde_json::Value> {
    use k8s_openapi::api::core::v1::Event;
    let params = ListParams::default().fields(&format!("involvedObject.kind=MfaRecall,involvedObject.name={name}"));
    let Ok(list) = Api::<Event>::namespaced(client, namespace).list(&params).await else { return Vec::new() };
    let mut events: Vec<_> = list.items.into_iter().map(|e| (e.last_timestamp.map(|t| t.0).or(e.event_time.map(|t| t.0)), e.reason.unwrap_or_default(), e.message.unwrap_or_default(), e.type_.unwrap_or_default())).collect();
    events.sort_by(|a, b| b.0.cmp(&a.0));
    events.into_iter().take(20).map(|(at, reason, message, kind)| json!({ "at": at.map(|t| t.strftime("%H:%M:%S").to_string()), "reason": reason, "message": message, "warning": kind == "Warning" })).collect()
}

pub async fn new_recall(State(console): State<Shared>, caller: Caller) -> Response {
    new_form(&console, &caller, StatusCode::OK, None, NewRecall::default()).await
}

async fn new_form(console: &Shared, caller: &Caller, status: StatusCode, error: Option<String>, typed: NewRecall) -> Response {
    let client = client_or_return!(console, caller);
    let backends: Vec<String> = match Api::<IdentityBackend>::namespaced(client, &console.cli.namespace).list(&ListParams::default()).await {
        Ok(list) => list.items.iter().filter_map(|b| b.metadata.name.clone()).collect(),
        Err(e) => return kube_error(console, Some(caller), e),
    };
    console.pages.render_status(status, "new.html", context! { backends, error, typed, broad_users => console.cli.broad_scope_users }, Some(caller))
}

/// The new-recall form as typed.
#[derive(Default, serde::Serialize)]
struct NewRecall {
    name: String,
    reason: String,
    backends: Vec<String>,
    users: String,
    groups: String,
    all_users: bool,
    exclude_users: String,
    exclude_groups: String,
    approval: bool,
    csrf: String,
}

impl NewRecall {
    fn from_form(pairs: Vec<(String, String)>) -> Self {
        let mut form = Self::default();
        for (key, value) in pairs {
            match key.as_str() {
                "name" => form.name = value.trim().to_string(),
                "reason" => form.reason = value.trim().to_string(),
                "backend" => form.backends.push(value),
                "users" => form.users = value,
                "groups" => form.groups = value,
                "allUsers" => form.all_users = value == "on",
                "excludeUsers" => form.exclude_users = value,
                "excludeGroups" => form.exclude_groups = value,
                "approval" => form.approval = value == "on",
                "csrf" => form.csrf = value,
                _ => {}
            }
        }
        form
    }

    /// The MfaRecall to create as a plan, or what to fix.
    fn manifest(&self, requester: &str) -> Result<MfaRecall, String> {
        let lines = |text: &str| -> Vec<String> { text.split(['\n', ',']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect() };
        if self.reason.is_empty() {
            return Err("Say why (the incident, for example INC-1234): the reason goes into the audit trail.".into());
        }
        if self.backends.is_empty() {
            return Err("Choose at least one identity backend to recall from.".into());
        }
        let (users, groups) = (lines(&self.users), lines(&self.groups));
        if !self.all_users && users.is_empty() && groups.is_empty() {
            return Err("Name the users or groups to recall (one a line), or choose all users.".into());
        }
        if self.all_users && (!users.is_empty() || !groups.is_empty()) {
            return Err("Choose either all users or named users and groups, not both.".into());
        }
        let name = if self.name.is_empty() { format!("recall-{}", jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S")) } else { self.name.to_lowercase() };
        let exclude = json!({ "users": lines(&self.exclude_users), "groups": lines(&self.exclude_groups) });
        let scope = if self.all_users { json!({ "allUsers": true, "exclude": exclude }) } else { json!({ "users": users, "groups": groups, "exclude": exclude }) };
        let mut spec = json!({ "reason": self.reason, "backends": self.backends, "scope": scope, "mode": "Plan" });
        if self.approval {
            spec["approval"] = json!({ "requestedBy": requester });
        }
        serde_json::from_value(json!({ "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": { "name": name }, "spec": spec })).map_err(|e| format!("The recall is not valid: {e}"))
    }
}

pub async fn create_recall(State(console): State<Shared>, caller: Caller, axum::Form(pairs): axum::Form<Vec<(String, String)>>) -> Response {
    let typed = NewRecall::from_form(pairs);
    if let Err(refused) = caller.check_csrf(&typed.csrf) {
        return refused;
    }
    let manifest = match typed.manifest(&caller.person.username) {
        Ok(m) => m,
        Err(why) => return new_form(&console, &caller, StatusCode::UNPROCESSABLE_ENTITY, Some(why), typed).await,
    };
    let client = client_or_return!(console, caller);
    match Api::<MfaRecall>::namespaced(client, &console.cli.namespace).create(&PostParams::default(), &manifest).await {
        Ok(created) => {
            let name = created.metadata.name.unwrap_or_default();
            tracing::info!(user = %caller.person.username, recall = %name, "plan created");
            Redirect::to(&format!("/recalls/{name}")).into_response()
        }
        Err(kube::Error::Api(s)) if s.code == 403 => kube_error(&console, Some(&caller), kube::Error::Api(s)),
        // Refused by validation or an admission policy: the message says what to fix, and the form keeps what was typed.
        Err(kube::Error::Api(s)) => new_form(&console, &caller, StatusCode::UNPROCESSABLE_ENTITY, Some(s.message), typed).await,
        Err(e) => kube_error(&console, Some(&caller), e),
    }
}

/// Sets a planned recall to Execute; a broad one only after a fresh sign-in.
pub async fn start_recall(State(console): State<Shared>, Path(name): Path<String>, caller: Caller, axum::Form(form): axum::Form<CsrfForm>) -> Response {
    act_on_recall(console, name, caller, form, Action::Start).await
}

/// Approves a recall in the person's own name (the admission policy refuses anyone else's, and the requester's).
pub async fn approve_recall(State(console): State<Shared>, Path(name): Path<String>, caller: Caller, axum::Form(form): axum::Form<CsrfForm>) -> Response {
    act_on_recall(console, name, caller, form, Action::Approve).await
}

async fn act_on_recall(console: Shared, name: String, caller: Caller, form: CsrfForm, action: Action) -> Response {
    if let Err(refused) = caller.check_csrf(&form.csrf) {
        return refused;
    }
    if let Err(refused) = valid_name(&console, &caller, &name) {
        return refused;
    }
    let client = client_or_return!(console, caller);
    let api = Api::<MfaRecall>::namespaced(client, &console.cli.namespace);
    let object = match api.get(&name).await {
        Ok(o) => o,
        Err(e) => return kube_error(&console, Some(&caller), e),
    };
    if let Some(why) = action.refusal(&object, &caller.person.username) {
        return console.pages.render_status(StatusCode::CONFLICT, "error.html", context! { title => "Not now", message => why, status => 409 }, Some(&caller));
    }
    if views::is_broad(&object, console.cli.broad_scope_users) && !console.auth.is_fresh(&caller) {
        let next: String = form_urlencoded::byte_serialize(format!("/recalls/{name}").as_bytes()).collect();
        return Redirect::to(&format!("/auth/login?fresh=1&next={next}")).into_response();
    }
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(action.patch(&object, &caller.person.username))).await {
        Ok(_) => Redirect::to(&format!("/recalls/{name}")).into_response(),
        Err(e) => kube_error(&console, Some(&caller), e),
    }
}

/// What a person does to a recall from its page or the API.
#[derive(Clone, Copy)]
pub enum Action {
    Start,
    Approve,
}

impl Action {
    pub fn refusal(self, object: &MfaRecall, me: &str) -> Option<String> {
        match self {
            Action::Start => views::refuse_start(object),
            Action::Approve => views::refuse_approve(object, me),
        }
    }

    /// The merge patch, at the version the checks were made on (a change since is a conflict,
    /// not a start of something no one saw).
    pub fn patch(self, object: &MfaRecall, me: &str) -> serde_json::Value {
        let spec = match self {
            Action::Start => json!({ "mode": "Execute" }),
            Action::Approve => json!({ "approval": { "approvedBy": me } }),
        };
        json!({ "metadata": { "resourceVersion": object.metadata.resource_version }, "spec": spec })
    }
}

/// A name or namespace as Kubernetes writes them (a DNS-1123 subdomain), so a path segment such
/// as `x%2Fstatus` never reaches another object than the one checked.
pub fn is_object_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') && !label.starts_with('-') && !label.ends_with('-'))
}

fn valid_name(console: &Shared, caller: &Caller, name: &str) -> Result<(), Response> {
    if is_object_name(name) {
        return Ok(());
    }
    Err(console.pages.render_status(StatusCode::BAD_REQUEST, "error.html", context! { title => "Not a recall's name", message => "names are lower-case letters, digits, dashes and dots", status => 400 }, Some(caller)))
}

pub async fn approvals(State(console): State<Shared>, caller: Caller) -> Response {
    let client = client_or_return!(console, caller);
    let ns = &console.cli.namespace;
    let me = caller.person.username.as_str();
    let recalls = match Api::<MfaRecall>::namespaced(client.clone(), ns).list(&ListParams::default()).await {
        Ok(list) => newest_first(list.items).iter().map(views::recall).filter(|r| r.awaits_approval && r.requested_by.as_deref() != Some(me)).collect::<Vec<_>>(),
        Err(e) => return kube_error(&console, Some(&caller), e),
    };
    let bypasses = match Api::<MfaBypass>::namespaced(client, ns).list(&ListParams::default()).await {
        Ok(list) => newest_first(list.items).iter().map(views::bypass).filter(|b| b.awaits_approval && b.requested_by != me).collect::<Vec<_>>(),
        Err(_) => Vec::new(),
    };
    console.pages.render("approvals.html", context! { recalls, bypasses }, Some(&caller))
}

pub async fn bypasses(State(console): State<Shared>, caller: Caller) -> Response {
    bypass_page(&console, &caller, StatusCode::OK, None, json!({})).await
}

async fn bypass_page(console: &Shared, caller: &Caller, status: StatusCode, error: Option<String>, typed: serde_json::Value) -> Response {
    let client = client_or_return!(console, caller);
    match Api::<MfaBypass>::namespaced(client, &console.cli.namespace).list(&ListParams::default()).await {
        Ok(list) => {
            let bypasses: Vec<views::BypassView> = newest_first(list.items).iter().map(views::bypass).collect();
            console.pages.render_status(status, "bypasses.html", context! { bypasses, error, typed }, Some(caller))
        }
        Err(e) => kube_error(console, Some(caller), e),
    }
}

#[derive(Deserialize, serde::Serialize)]
pub struct BypassRequest {
    recall: String,
    backend: String,
    user: String,
    #[serde(default)]
    lifetime: String,
    reason: String,
    #[serde(default, skip_serializing)]
    csrf: String,
}

pub async fn request_bypass(State(console): State<Shared>, caller: Caller, axum::Form(form): axum::Form<BypassRequest>) -> Response {
    if let Err(refused) = caller.check_csrf(&form.csrf) {
        return refused;
    }
    let typed = serde_json::to_value(&form).unwrap_or_default();
    let lifetime = if form.lifetime.trim().is_empty() { "1h".to_string() } else { form.lifetime.trim().to_string() };
    let manifest = json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaBypass",
        "metadata": { "generateName": format!("{}-", form.recall.trim()) },
        "spec": { "recall": form.recall.trim(), "backend": form.backend.trim(), "user": form.user.trim(), "lifetime": lifetime, "reason": form.reason.trim(), "requestedBy": caller.person.username },
    });
    let bypass: MfaBypass = match serde_json::from_value(manifest) {
        Ok(b) => b,
        Err(e) => return bypass_page(&console, &caller, StatusCode::UNPROCESSABLE_ENTITY, Some(format!("The request is not valid: {e}")), typed).await,
    };
    let client = client_or_return!(console, caller);
    match Api::<MfaBypass>::namespaced(client, &console.cli.namespace).create(&PostParams::default(), &bypass).await {
        Ok(_) => Redirect::to("/bypasses").into_response(),
        Err(kube::Error::Api(s)) if s.code != 403 => bypass_page(&console, &caller, StatusCode::UNPROCESSABLE_ENTITY, Some(s.message), typed).await,
        Err(e) => kube_error(&console, Some(&caller), e),
    }
}

pub async fn approve_bypass(State(console): State<Shared>, Path(name): Path<String>, caller: Caller, axum::Form(form): axum::Form<CsrfForm>) -> Response {
    if let Err(refused) = caller.check_csrf(&form.csrf) {
        return refused;
    }
    if let Err(refused) = valid_name(&console, &caller, &name) {
        return refused;
    }
    let client = client_or_return!(console, caller);
    let patch = json!({ "spec": { "approvedBy": caller.person.username } });
    match Api::<MfaBypass>::namespaced(client, &console.cli.namespace).patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => Redirect::to("/bypasses").into_response(),
        Err(e) => kube_error(&console, Some(&caller), e),
    }
}

pub async fn policies(State(console): State<Shared>, caller: Caller) -> Response {
    let client = client_or_return!(console, caller);
    match Api::<MfaRecallPolicy>::namespaced(client, &console.cli.namespace).list(&ListParams::default()).await {
        Ok(list) => {
            let policies: Vec<views::PolicyView> = list.items.iter().map(views::policy).collect();
            console.pages.render("policies.html", context! { policies }, Some(&caller))
        }
        Err(e) => kube_error(&console, Some(&caller), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kubernetes_names_reach_the_apiserver() {
        for name in ["inc-1", "a.b-c", "recall-20261207-022657"] {
            assert!(is_object_name(name), "{name}");
        }
        for name in ["", "x/status", "X", "a?b", "-a", "a-", "a..b", "..", &"a".repeat(254)] {
            assert!(!is_object_name(name), "{name}");
        }
    }

    #[test]
    fn a_recall_is_started_only_from_a_finished_plan_and_broad_until_its_plan_says_otherwise() {
        let mut recall: MfaRecall = serde_json::from_value(json!({ "metadata": { "name": "r", "generation": 2, "resourceVersion": "7" }, "spec": { "reason": "x", "backends": ["okta"], "scope": { "users": ["a"] }, "mode": "Plan" } })).unwrap();
        assert!(views::refuse_start(&recall).is_some(), "no plan yet");
        assert!(views::is_broad(&recall, 100), "no plan yet says nothing of its size");
        recall.status = Some(serde_json::from_value(json!({ "phase": "Planned", "observedGeneration": 2, "plan": { "users": 1 } })).unwrap());
        assert!(views::refuse_start(&recall).is_none());
        assert!(!views::is_broad(&recall, 100));
        assert_eq!(Action::Start.patch(&recall, "me")["metadata"]["resourceVersion"], "7");
        recall.metadata.generation = Some(3);
        assert!(views::refuse_start(&recall).is_some(), "a plan of an older spec");
        assert!(views::refuse_approve(&recall, "me").is_some(), "nothing to approve");
    }

    #[test]
    fn every_page_renders_and_escapes_what_it_is_given() {
        let templates = Templates::new();
        let hostile = "<script>alert(1)</script>";
        let recall = json!({ "name": "inc-1", "phase": "Planned", "mode": "Plan", "reason": hostile, "message": hostile, "backendsNamed": ["okta"], "scope": hostile, "backends": [], "done": 0, "targeted": 0, "startable": true,
                             "plan": { "users": 3, "factors": "3 totp", "sample": [hostile] } });
        for (name, page) in [
            ("recalls.html", context! { recalls => vec![recall.clone()], namespace => "ns" }),
            ("recall.html", context! { recall => recall.clone(), users => json!({ "rows": [{ "username": hostile }], "backend": "okta", "page": 0, "has_next": false, "truncated": false }), activity => vec![json!({ "message": hostile })], q => hostile }),
            ("new.html", context! { backends => vec!["okta"], error => hostile, typed => json!({ "reason": hostile, "backends": [] }), broad_users => 100 }),
            ("approvals.html", context! { recalls => vec![recall.clone()], bypasses => Vec::<String>::new() }),
            ("bypasses.html", context! { bypasses => vec![json!({ "name": "b", "user": hostile, "awaitsApproval": true, "requestedBy": "x" })], typed => json!({}) }),
            ("policies.html", context! { policies => vec![json!({ "name": "p", "lastSignals": [{ "detail": hostile }] })] }),
            ("signin.html", context! { oidc => true }),
            ("error.html", context! { title => "Not allowed", message => hostile, status => 403 }),
        ] {
            let html = templates.env.get_template(name).unwrap().render(context! { me => hostile, csrf => "token", ..page }).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(!html.contains(hostile) && html.contains("&lt;script&gt;"), "{name} does not escape what it shows");
        }
    }
}
