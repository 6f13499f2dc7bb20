//! A mocked apiserver for reconcile tests, as kube-rs/controller-rs does it: each scenario takes
//! the requests reconcile makes, in order, asserts method, path and body, and answers as the
//! apiserver would. Schema, SSA and status semantics are left to the tests on a real apiserver.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tower_test::mock::{self, Handle};

use super::recall::FINALIZER;
use super::{Context, FIELD_MANAGER, Settings, run};
use crate::api::{MfaRecall, MfaRecallSpec};
use crate::audit::AuditLog;

pub const NAMESPACE: &str = "security";
const RECALLS: &str = "/apis/mfarecall.io/v1alpha1/namespaces/security/mfarecalls";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/security/events?";

/// A recall as the apiserver holds it, its spec fields over a minimal spec, with the finalizer unless `new`.
pub fn recall(name: &str, spec: Value, new: bool) -> MfaRecall {
    let mut full = json!({ "reason": "INC-1", "backends": ["kc"], "scope": { "allUsers": true } });
    for (field, value) in spec.as_object().expect("spec fields") {
        full[field] = value.clone();
    }
    let mut recall = MfaRecall::new(name, serde_json::from_value::<MfaRecallSpec>(full).unwrap());
    let meta = recall.meta_mut();
    meta.namespace = Some(NAMESPACE.into());
    meta.uid = Some(format!("uid-{name}"));
    meta.generation = Some(1);
    meta.resource_version = Some("1".into());
    if !new {
        meta.finalizers = Some(vec![FINALIZER.into()]);
    }
    recall
}

/// The other end of the mocked client.
pub struct ApiServerVerifier(Handle<Request<Body>, Response<Body>>);

/// A request taken, for its body to be checked.
pub struct Taken {
    pub body: Value,
    pub content_type: String,
}

impl ApiServerVerifier {
    /// Takes the next request, asserts its method and path (query included), and answers with
    /// `status` and `answer` (given the request's body).
    pub async fn expect(&mut self, method: Method, path: &str, status: StatusCode, answer: impl FnOnce(&Value) -> Value) -> Taken {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request()).await.unwrap_or_else(|_| panic!("no request came; expected {method} {path}")).expect("the client is gone");
        assert_eq!((request.method(), request.uri().to_string().as_str()), (&method, path), "unexpected request");
        let content_type = request.headers().get(http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
        let reply = serde_json::to_vec(&answer(&body)).unwrap();
        send.send_response(Response::builder().status(status).body(Body::from(reply)).unwrap());
        Taken { body, content_type }
    }

    /// The finalizer added by a JSON patch that first tests there was none.
    pub async fn finalizer_added(&mut self, recall: &MfaRecall) {
        let mut finalized = recall.clone();
        finalized.finalizers_mut().push(FINALIZER.into());
        let taken = self.expect(Method::PATCH, &format!("{RECALLS}/{}?", recall.name_any()), StatusCode::OK, |_| json!(finalized)).await;
        assert_eq!(
            taken.body,
            json!([{ "op": "test", "path": "/metadata/finalizers", "value": null }, { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] }])
        );
    }

    /// The finalizer removed by a JSON patch that first tests it is ours.
    pub async fn finalizer_removed(&mut self, recall: &MfaRecall) {
        let mut released = recall.clone();
        released.finalizers_mut().clear();
        let taken = self.expect(Method::PATCH, &format!("{RECALLS}/{}?", recall.name_any()), StatusCode::OK, |_| json!(released)).await;
        assert_eq!(taken.body, json!([{ "op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER }, { "op": "remove", "path": "/metadata/finalizers/0" }]));
    }

    /// The status read, answered with `recall`.
    pub async fn status_read(&mut self, recall: &MfaRecall) {
        self.expect(Method::GET, &format!("{RECALLS}/{}/status", recall.name_any()), StatusCode::OK, |_| json!(recall)).await;
    }

    /// An event published; returns it.
    pub async fn event(&mut self) -> Value {
        self.expect(Method::POST, EVENTS, StatusCode::CREATED, |event| event.clone()).await.body
    }

    /// A repeated event: the recorder counts it on the earlier one's series (a PATCH of it).
    pub async fn event_repeated(&mut self) {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request()).await.expect("no request came; expected an event's series").expect("the client is gone");
        let path = request.uri().path().to_string();
        assert_eq!(request.method(), Method::PATCH, "{path}");
        assert!(path.starts_with(EVENTS.trim_end_matches('?')), "{path}");
        send.send_response(Response::builder().status(StatusCode::OK).body(Body::from(b"{}".to_vec())).unwrap());
    }

    /// An object read that the apiserver does not have.
    pub async fn not_found(&mut self, path: &str) {
        self.expect(Method::GET, path, StatusCode::NOT_FOUND, |_| json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found" })).await;
    }

    /// The status written by server-side apply under the operator's field manager, forced;
    /// returns the status applied.
    pub async fn status_applied(&mut self, recall: &MfaRecall) -> Value {
        let path = format!("{RECALLS}/{}/status?&force=true&fieldManager={FIELD_MANAGER}", recall.name_any());
        let answered = recall.clone();
        let taken = self
            .expect(Method::PATCH, &path, StatusCode::OK, move |patch| {
                let mut answered = json!(answered);
                answered["status"] = patch["status"].clone();
                answered
            })
            .await;
        assert_eq!(taken.content_type, "application/apply-patch+yaml");
        assert_eq!((&taken.body["apiVersion"], &taken.body["kind"]), (&json!("mfarecall.io/v1alpha1"), &json!("MfaRecall")));
        taken.body["status"].clone()
    }

    /// Nothing more is asked of the apiserver for a while.
    pub async fn quiet(&mut self) {
        if let Ok(Some((request, _))) = tokio::time::timeout(Duration::from_millis(200), self.0.next_request()).await {
            panic!("unexpected request: {} {}", request.method(), request.uri());
        }
    }
}

/// An audit trail in a file of its own, removed when dropped.
pub struct Trail(pub PathBuf);

impl Trail {
    /// The `action: outcome` of every line so far.
    pub fn actions(&self) -> Vec<String> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|l| format!("{}: {}", l["action"].as_str().unwrap(), l["outcome"].as_str().unwrap()))
            .collect()
    }
}

impl Drop for Trail {
    fn drop(&mut self) {
        let _ = crate::audit::remove(&self.0);
    }
}

impl Context {
    /// A context on a mocked apiserver, with an audit trail of its own.
    pub fn test() -> (Arc<Self>, ApiServerVerifier, Trail) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let trail = Trail(std::env::temp_dir().join(format!("mfa-recall-controller-{}.jsonl", crate::telemetry::trace_id())));
        let settings = Settings { namespace: None, audit_file: Some(trail.0.clone()), audit_file_persistent: false, audit_stdout: false, audit_key_file: None, ledger_key_file: PathBuf::new(), instance: "test".into(), concurrency: 1, max_revoking_recalls: 1, max_bypass_lifetime: std::time::Duration::from_secs(8 * 3600), metrics_addr: None, not_me_addr: None, signals_addr: None, leader_election: None };
        let ctx = Context {
            recorder: Recorder::new(client.clone(), Reporter { controller: "mfa-recall".into(), instance: Some("test".into()) }),
            audit: Arc::new(AuditLog::open(Some(&trail.0), "test", false).unwrap()),
            ledger_key: crate::keys::HmacKey::new(b"ledger key of the controller tests", "the ledger key").unwrap(),
            client,
            settings,
            runs: run::Runs::default(),
            turns: run::Turns::new(1),
            metrics: Default::default(),
            policies: Default::default(),
            providers: Mutex::new(Default::default()),
        };
        (Arc::new(ctx), ApiServerVerifier(handle), trail)
    }
}
