//! Watching the re-enrollment window: the providers' event logs read as one stream per backend
//! (`event`), the anomaly rules judged over it (`rules`), and what a backend's watch keeps
//! durably between checks (`WatchState`). The engine's `Runner::watch_window` drives them.

pub mod event;
pub mod rules;

use serde::{Deserialize, Serialize};

pub use event::{Actor, ClientInfo, EventKind, EventPage, EventQuery, Geo, IdentityEvent, Personal};
pub use rules::{Finding, OwnBypass, Recent, Rule, Thresholds};

/// What a backend's watch keeps in the ledger between checks: where its stream goes on, where the
/// slow sweep goes on, and the recent enrollments the rules that compare users need. Written
/// after the users a stretch of the stream named are recorded, so a restart reads that stretch
/// again at worst: re-enrollments and flags are kept per user and are not counted twice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchState {
    pub backend: String,
    /// The provider's cursor after the last page dealt with; None before the first read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Where the stream started.
    pub from: Option<jiff::Timestamp>,
    /// The next user of the slow sweep: segment and position.
    #[serde(default)]
    pub sweep_at: (u32, usize),
    /// Sweeps finished over every pending user.
    #[serde(default)]
    pub sweeps: u64,
    /// Enrollments seen in the window, newest last, at most `RECENT_KEPT`, pseudonymised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<Recent>,
    #[serde(default)]
    pub events_read: u64,
    /// Log entries that could not be read and were passed by.
    #[serde(default)]
    pub events_skipped: u64,
    /// Clearances of spec.clearances already acted on (`clearance_keys`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleared: Vec<String>,
    /// Not-me reports already acted on (`NotMe::key`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports_handled: Vec<String>,
}

/// A user's word, from the link in the notice of a new factor, that the factor was not theirs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotMe {
    pub backend: String,
    pub user_id: String,
    pub at: jiff::Timestamp,
}

impl NotMe {
    pub fn key(&self) -> String {
        format!("{}\u{0}{}", self.user_id, self.at)
    }
}

/// A key per clearance: its content and, for identical entries, which one it is; so each entry
/// is acted on once, whatever is appended after it.
pub fn clearance_keys(clearances: &[crate::api::Clearance]) -> Vec<String> {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    clearances
        .iter()
        .map(|c| {
            let content = format!("{}\u{0}{}\u{0}{}", c.user.to_lowercase(), c.cleared_by, c.note);
            let n = seen.entry(content.clone()).or_default();
            *n += 1;
            format!("{content}\u{0}{n}")
        })
        .collect()
}

/// Enrollments kept for the rules that compare users (shared device, burst): enough for a burst
/// window of a busy morning; older ones fall out first.
pub const RECENT_KEPT: usize = 20_000;

impl WatchState {
    pub fn new(backend: &str, from: jiff::Timestamp) -> Self {
        Self { backend: backend.to_string(), from: Some(from), ..Default::default() }
    }

    /// Keeps an enrollment for later comparisons, once.
    pub fn remember(&mut self, recent: Recent) {
        if self.recent.iter().any(|r| r.event_id == recent.event_id) {
            return;
        }
        self.recent.push(recent);
        if self.recent.len() > RECENT_KEPT {
            let over = self.recent.len() - RECENT_KEPT;
            self.recent.drain(..over);
        }
    }
}

/// A rule that tripped for a user, as the ledger keeps it: by the event it tripped on, so the
/// same event read again after a restart is not flagged twice. The evidence is in the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flag {
    pub rule: Rule,
    pub event_id: String,
    pub at: jiff::Timestamp,
}
