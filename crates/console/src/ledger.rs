//! A recall's users as its ledger records them, a page (one ledger segment) at a time, or those
//! whose name or id holds a search text. Read as the person (RBAC on RecallLedgerSegments
//! decides) and shown as recorded: the console has no ledger key, so it cannot check the
//! objects' signatures; `kubectl mfa-recall report` does.

use kube::Api;
use mfa_recall::api::{MfaRecall, RecallLedgerSegment};
use mfa_recall::ledger::read_unchecked;
use mfa_recall::report::Row;
use serde::Serialize;

/// Matches shown at most for a search, and segments read at most to find them.
const MAX_MATCHES: usize = 100;
const MAX_SEGMENTS_SEARCHED: u32 = 200;

/// Which users to show: a search text, or a page (ledger segment) of one backend.
#[derive(serde::Deserialize, Default)]
pub struct UsersQuery {
    pub q: Option<String>,
    pub backend: Option<String>,
    #[serde(default)]
    pub page: u32,
}

#[derive(Serialize)]
pub struct Users {
    pub rows: Vec<serde_json::Value>,
    /// The backend and page shown (when not searching).
    pub backend: String,
    pub page: u32,
    pub has_next: bool,
    /// A search stopped before reading every segment.
    pub truncated: bool,
}

pub async fn users(client: kube::Client, namespace: &str, recall: &MfaRecall, query: &UsersQuery) -> Result<Users, String> {
    let (backend, page, search) = (query.backend.as_deref(), query.page, query.q.as_deref());
    let api: Api<RecallLedgerSegment> = Api::namespaced(client, namespace);
    let uid = recall.metadata.uid.clone().unwrap_or_default();
    let backends: Vec<String> = recall.spec.backends.clone();
    let row = |backend: &str, record: &mfa_recall::ledger::UserRecord| serde_json::to_value(Row::of(backend, record, "")).unwrap_or_default();
    let failed = |e: mfa_recall::Error| format!("reading the ledger: {e}");
    match search.map(str::trim).filter(|s| !s.is_empty()) {
        Some(text) => {
            let text = text.to_lowercase();
            let mut rows = Vec::new();
            let mut read = 0;
            for backend in &backends {
                let mut index = 0;
                while let Some(segment) = read_unchecked(&api, &uid, backend, index).await.map_err(failed)? {
                    read += 1;
                    for record in segment.users.iter().filter(|r| r.user.username.to_lowercase().contains(&text) || r.user.id.to_lowercase().contains(&text)) {
                        rows.push(row(backend, record));
                    }
                    if rows.len() >= MAX_MATCHES || read >= MAX_SEGMENTS_SEARCHED {
                        rows.truncate(MAX_MATCHES);
                        return Ok(Users { rows, backend: String::new(), page: 0, has_next: false, truncated: true });
                    }
                    index += 1;
                }
            }
            Ok(Users { rows, backend: String::new(), page: 0, has_next: false, truncated: false })
        }
        None => {
            let backend = backend.filter(|b| backends.iter().any(|n| n == b)).or(backends.first().map(String::as_str)).unwrap_or_default().to_string();
            let Some(segment) = read_unchecked(&api, &uid, &backend, page).await.map_err(failed)? else {
                return Ok(Users { rows: Vec::new(), backend, page, has_next: false, truncated: false });
            };
            let rows = segment.users.iter().map(|r| row(&backend, r)).collect();
            let has_next = api.get_opt(&mfa_recall::ledger::segment_name(&uid, &backend, page + 1)).await.map_err(|e| format!("reading the ledger: {e}"))?.is_some();
            Ok(Users { rows, backend, page, has_next, truncated: false })
        }
    }
}
