//! The operator's metrics, in one registry that the controller's context carries (no globals):
//! recall progress by namespace, name, backend and state; reconcile errors; and provider calls
//! by backend and operation (answers by class, throttled answers, latency). Labels are names of
//! objects and operations, never of users. Exposed in the OpenMetrics text format by `render`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::RecallCounts;

/// The content type of `render`'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecallUsers {
    namespace: String,
    name: String,
    backend: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileError {
    controller: &'static str,
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalOutcome {
    source: &'static str,
    /// What became of the signal, as MfaRecallPolicy status counts it (and unknownPolicy).
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Call {
    backend: String,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answer {
    backend: String,
    operation: &'static str,
    /// 2xx..5xx, or none when no answer came (connection failed, timed out).
    class: &'static str,
}

/// Every metric of one operator process.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    users: Family<RecallUsers, Gauge>,
    reconcile_errors: Family<ReconcileError, Counter>,
    signals: Family<SignalOutcome, Counter>,
    /// The backends each recall (namespace, name) has shown, to take them away when it goes.
    shown: Arc<Mutex<BTreeMap<(String, String), BTreeSet<String>>>>,
    pub provider: ProviderMetrics,
}

/// The metrics of calls to providers, handed to each backend's client.
#[derive(Clone, Debug)]
pub struct ProviderMetrics {
    requests: Family<Answer, Counter>,
    throttled: Family<Call, Counter>,
    latency: Family<Call, Histogram, fn() -> Histogram>,
}

impl Default for ProviderMetrics {
    /// Metrics no registry exposes (a client built outside the operator, as tests and the bench do).
    fn default() -> Self {
        Self { requests: Family::default(), throttled: Family::default(), latency: Family::new_with_constructor(latency_histogram) }
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

const USER_STATES: [&str; 7] = ["targeted", "invalidated", "excluded", "failed", "reEnrolled", "pending", "disabled"];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mfa_recall");
        let users = Family::<RecallUsers, Gauge>::default();
        registry.register("users", "Users of each recall on each backend, by state (recall progress)", users.clone());
        let reconcile_errors = Family::<ReconcileError, Counter>::default();
        registry.register("reconcile_errors", "Reconcile errors by controller and category", reconcile_errors.clone());
        let signals = Family::<SignalOutcome, Counter>::default();
        registry.register("signals", "Signals received by the policies' receivers, by source and what became of them (created, duplicate, refused as unauthenticated, ...)", signals.clone());
        let provider = ProviderMetrics::default();
        registry.register("provider_requests", "Requests sent to identity providers, by answer class", provider.requests.clone());
        registry.register("provider_throttled", "Answers from identity providers that meant slow down (429 or quota errors)", provider.throttled.clone());
        registry.register_with_unit(
            "provider_request_duration",
            "Latency of requests to identity providers, retries counted apart",
            prometheus_client::registry::Unit::Seconds,
            provider.latency.clone(),
        );
        Self { registry: Arc::new(registry), users, reconcile_errors, signals, shown: Arc::default(), provider }
    }
}

impl Metrics {
    /// The latest counts of the recall `namespace/name` on `backend`.
    pub fn recall_progress(&self, namespace: &str, name: &str, backend: &str, c: &RecallCounts) {
        self.shown.lock().unwrap().entry((namespace.to_string(), name.to_string())).or_default().insert(backend.to_string());
        let counts = [c.targeted, c.invalidated, c.excluded, c.failed, c.re_enrolled, c.pending, c.disabled];
        for (state, n) in USER_STATES.into_iter().zip(counts) {
            let labels = RecallUsers { namespace: namespace.to_string(), name: name.to_string(), backend: backend.to_string(), state };
            self.users.get_or_create(&labels).set(n);
        }
    }

    /// A deleted recall leaves the metrics.
    pub fn forget_recall(&self, namespace: &str, name: &str) {
        let backends = self.shown.lock().unwrap().remove(&(namespace.to_string(), name.to_string())).unwrap_or_default();
        for backend in backends {
            for state in USER_STATES {
                self.users.remove(&RecallUsers { namespace: namespace.to_string(), name: name.to_string(), backend: backend.clone(), state });
            }
        }
    }

    pub fn reconcile_error(&self, controller: &'static str, category: &'static str) {
        self.reconcile_errors.get_or_create(&ReconcileError { controller, category }).inc();
    }

    pub fn signal(&self, source: &'static str, outcome: &str) {
        self.signals.get_or_create(&SignalOutcome { source, outcome: outcome.to_string() }).inc();
    }

    /// Every metric, as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl ProviderMetrics {
    /// Counts one request to a provider: its answer's status (None: no answer), whether it meant
    /// slow down, and how long it took.
    pub fn call(&self, backend: &str, operation: &'static str, status: Option<u16>, throttled: bool, latency: Duration) {
        let class = match status.map(|s| s / 100) {
            None => "none",
            Some(1) => "1xx",
            Some(2) => "2xx",
            Some(3) => "3xx",
            Some(4) => "4xx",
            Some(_) => "5xx",
        };
        self.requests.get_or_create(&Answer { backend: backend.to_string(), operation, class }).inc();
        let call = Call { backend: backend.to_string(), operation };
        if throttled {
            self.throttled.get_or_create(&call).inc();
        }
        self.latency.get_or_create(&call).observe(latency.as_secs_f64());
    }

    /// Throttled answers to `operation` on `backend` so far.
    pub fn throttled(&self, backend: &str, operation: &'static str) -> u64 {
        self.throttled.get_or_create(&Call { backend: backend.to_string(), operation }).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_progress_and_errors_are_exposed_with_their_own_labels() {
        let metrics = Metrics::default();
        metrics.provider.call("ns/okta", "list_users", Some(200), false, Duration::from_millis(20));
        metrics.provider.call("ns/okta", "list_users", Some(429), true, Duration::from_millis(400));
        metrics.provider.call("ns/okta", "list_users", None, false, Duration::from_secs(30));
        assert_eq!(metrics.provider.throttled("ns/okta", "list_users"), 1);
        let counts = RecallCounts { targeted: 5, invalidated: 3, ..Default::default() };
        metrics.recall_progress("sec", "breach", "corp-okta", &counts);
        metrics.reconcile_error("mfarecall", "kube");
        let text = metrics.render();
        for line in [
            r#"mfa_recall_provider_requests_total{backend="ns/okta",operation="list_users",class="2xx"} 1"#,
            r#"mfa_recall_provider_requests_total{backend="ns/okta",operation="list_users",class="none"} 1"#,
            r#"mfa_recall_provider_throttled_total{backend="ns/okta",operation="list_users"} 1"#,
            r#"mfa_recall_provider_request_duration_seconds_bucket{le="0.025",backend="ns/okta",operation="list_users"} 1"#,
            r#"mfa_recall_provider_request_duration_seconds_count{backend="ns/okta",operation="list_users"} 3"#,
            r#"mfa_recall_users{namespace="sec",name="breach",backend="corp-okta",state="invalidated"} 3"#,
            r#"mfa_recall_reconcile_errors_total{controller="mfarecall",category="kube"} 1"#,
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        metrics.forget_recall("sec", "breach");
        assert!(!metrics.render().contains("breach"), "a deleted recall leaves the metrics");
    }
}
