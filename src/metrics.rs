//! Provider call metrics: requests, throttled answers and latency per backend and operation.
//! Labels are backend and operation names only, never user names. Rendered for Prometheus by
//! `render`, read whole by `provider_calls` (tests and benchmarks).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Calls of one operation on one backend.
#[derive(Clone, Debug, Default)]
pub struct CallStats {
    pub requests: u64,
    /// Answers by status class: index 1..=5 for 1xx..5xx, 0 for no answer (connection failed, timed out).
    pub by_class: [u64; 6],
    /// Answers that meant "slow down" (429, or the provider's own way of saying it).
    pub throttled: u64,
    /// Cumulative counts per `LATENCY_BUCKETS` bound.
    pub latency_buckets: [u64; LATENCY_BUCKETS.len()],
    pub latency_sum: f64,
}

/// A backend and an operation.
type Key = (String, &'static str);

/// By backend, then operation: nested so counting a call looks the backend up by `&str`
/// (thousands of calls a second, none of which should allocate a key).
static PROVIDER_CALLS: LazyLock<Mutex<BTreeMap<String, BTreeMap<&'static str, CallStats>>>> = LazyLock::new(Mutex::default);
/// Counts per recall (`namespace/name`) and backend, as last written to status.
static RECALL_PROGRESS: LazyLock<Mutex<BTreeMap<(String, String), crate::api::RecallCounts>>> = LazyLock::new(Mutex::default);
/// Reconcile errors by controller and category.
static RECONCILE_ERRORS: LazyLock<Mutex<BTreeMap<(&'static str, &'static str), u64>>> = LazyLock::new(Mutex::default);

/// The latest counts of one recall on one backend.
pub fn recall_progress(recall: &str, backend: &str, counts: &crate::api::RecallCounts) {
    RECALL_PROGRESS.lock().unwrap().insert((recall.to_string(), backend.to_string()), counts.clone());
}

/// A deleted recall leaves the metrics.
pub fn forget_recall(recall: &str) {
    RECALL_PROGRESS.lock().unwrap().retain(|(r, _), _| r != recall);
}

pub fn reconcile_error(controller: &'static str, category: &'static str) {
    *RECONCILE_ERRORS.lock().unwrap().entry((controller, category)).or_default() += 1;
}

/// Counts one request to a provider.
pub fn provider_call(backend: &str, op: &'static str, status: Option<u16>, throttled: bool, latency: Duration) {
    let mut calls = PROVIDER_CALLS.lock().unwrap();
    let by_op = match calls.get_mut(backend) {
        Some(by_op) => by_op,
        None => calls.entry(backend.to_string()).or_default(),
    };
    let stats = by_op.entry(op).or_default();
    stats.requests += 1;
    stats.by_class[status.map(|s| (s / 100).min(5) as usize).unwrap_or(0)] += 1;
    stats.throttled += throttled as u64;
    let seconds = latency.as_secs_f64();
    stats.latency_sum += seconds;
    for (bound, count) in LATENCY_BUCKETS.iter().zip(stats.latency_buckets.iter_mut()) {
        if seconds <= *bound {
            *count += 1;
        }
    }
}

/// Every backend's and operation's counts so far.
pub fn provider_calls() -> BTreeMap<Key, CallStats> {
    let calls = PROVIDER_CALLS.lock().unwrap();
    calls.iter().flat_map(|(backend, by_op)| by_op.iter().map(|(op, stats)| ((backend.clone(), *op), stats.clone()))).collect()
}

/// Throttled answers seen from one backend, all operations together.
pub fn throttled(backend: &str) -> u64 {
    PROVIDER_CALLS.lock().unwrap().get(backend).map(|by_op| by_op.values().map(|s| s.throttled).sum()).unwrap_or(0)
}

/// A label value with the characters Prometheus escapes replaced.
fn clean(value: &str) -> String {
    value.replace(['"', '\\', '\n'], "_")
}

/// Every metric in Prometheus text exposition format.
pub fn render() -> String {
    let calls = provider_calls();
    let mut out = String::new();
    out.push_str("# HELP mfa_recall_users Users of each recall on each backend, by state (recall progress).\n");
    out.push_str("# TYPE mfa_recall_users gauge\n");
    for ((recall, backend), c) in RECALL_PROGRESS.lock().unwrap().iter() {
        let states = [
            ("targeted", c.targeted),
            ("invalidated", c.invalidated),
            ("excluded", c.excluded),
            ("failed", c.failed),
            ("reEnrolled", c.re_enrolled),
            ("pending", c.pending),
            ("disabled", c.disabled),
        ];
        for (state, n) in states {
            let _ = writeln!(out, "mfa_recall_users{{recall=\"{}\",backend=\"{}\",state=\"{state}\"}} {n}", clean(recall), clean(backend));
        }
    }
    out.push_str("# HELP mfa_recall_reconcile_errors_total Reconcile errors by controller and category.\n");
    out.push_str("# TYPE mfa_recall_reconcile_errors_total counter\n");
    for ((controller, category), n) in RECONCILE_ERRORS.lock().unwrap().iter() {
        let _ = writeln!(out, "mfa_recall_reconcile_errors_total{{controller=\"{controller}\",category=\"{category}\"}} {n}");
    }
    let label = |(backend, op): &Key| format!("backend=\"{}\",operation=\"{op}\"", clean(backend));
    out.push_str("# HELP mfa_recall_provider_requests_total Requests sent to identity providers, by answer class.\n");
    out.push_str("# TYPE mfa_recall_provider_requests_total counter\n");
    for (key, stats) in &calls {
        for (class, n) in stats.by_class.iter().enumerate().filter(|(_, n)| **n > 0) {
            let class = if class == 0 { "none".to_string() } else { format!("{class}xx") };
            let _ = writeln!(out, "mfa_recall_provider_requests_total{{{},class=\"{class}\"}} {n}", label(key));
        }
    }
    out.push_str("# HELP mfa_recall_provider_throttled_total Answers from identity providers that meant slow down (429 or quota errors).\n");
    out.push_str("# TYPE mfa_recall_provider_throttled_total counter\n");
    for (key, stats) in &calls {
        let _ = writeln!(out, "mfa_recall_provider_throttled_total{{{}}} {}", label(key), stats.throttled);
    }
    out.push_str("# HELP mfa_recall_provider_request_duration_seconds Latency of requests to identity providers, retries counted apart.\n");
    out.push_str("# TYPE mfa_recall_provider_request_duration_seconds histogram\n");
    for (key, stats) in &calls {
        let labels = label(key);
        for (bound, count) in LATENCY_BUCKETS.iter().zip(stats.latency_buckets) {
            let _ = writeln!(out, "mfa_recall_provider_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "mfa_recall_provider_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", stats.requests);
        let _ = writeln!(out, "mfa_recall_provider_request_duration_seconds_sum{{{labels}}} {}", stats.latency_sum);
        let _ = writeln!(out, "mfa_recall_provider_request_duration_seconds_count{{{labels}}} {}", stats.requests);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_class_and_bucket() {
        provider_call("ns/metrics-test", "list_users", Some(200), false, Duration::from_millis(20));
        provider_call("ns/metrics-test", "list_users", Some(429), true, Duration::from_millis(400));
        provider_call("ns/metrics-test", "list_users", None, false, Duration::from_secs(30));
        let stats = provider_calls()[&("ns/metrics-test".to_string(), "list_users")].clone();
        assert_eq!(stats.requests, 3);
        assert_eq!(stats.by_class[2], 1);
        assert_eq!(stats.by_class[4], 1);
        assert_eq!(stats.by_class[0], 1);
        assert_eq!(stats.throttled, 1);
        assert_eq!(stats.latency_buckets[2], 1, "20 ms falls in the 25 ms bucket");
        assert_eq!(stats.latency_buckets[LATENCY_BUCKETS.len() - 1], 2, "30 s is above every bound");
        assert_eq!(throttled("ns/metrics-test"), 1);
        let text = render();
        assert!(text.contains(r#"mfa_recall_provider_throttled_total{backend="ns/metrics-test",operation="list_users"} 1"#), "{text}");
    }
}
