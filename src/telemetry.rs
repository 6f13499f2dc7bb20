//! Logging: JSON lines on stderr (stdout carries the audit trail), level from MFA_RECALL_LOG.
//! Lines logged while working on a recall carry its span: the recall's name and a trace id.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("MFA_RECALL_LOG").unwrap_or_else(|_| EnvFilter::new("info,kube=warn,hyper=warn,reqwest=warn"));
    tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).with_current_span(true).with_span_list(false).init();
}

/// A fresh W3C-style trace id (32 hex digits) tying together the log lines of one piece of work.
pub fn trace_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}
