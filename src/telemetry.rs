//! Logging: JSON lines on stderr (stdout carries the audit trail), level from MFA_RECALL_LOG.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("MFA_RECALL_LOG").unwrap_or_else(|_| EnvFilter::new("info,kube=warn,hyper=warn,reqwest=warn"));
    tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).with_current_span(false).init();
}
