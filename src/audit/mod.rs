//! Append-only audit trail: one JSON line per action, each carrying the hash of the line before,
//! so removing or editing a line breaks the chain. An action is written (and flushed) here before
//! it is counted anywhere else.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

/// The hash that starts a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, without the chain fields.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// `namespace/name` of the MfaRecall.
    pub recall: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// session.revoke, factor.revoke, enrollment.require, reenrollment.seen, user.fail,
    /// user.exclude, user.disable, recall.phase.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor_id: Option<String>,
    /// revoked, alreadyGone, done, failed, excluded, or the new phase.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One line of the trail.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub seq: u64,
    pub time: jiff::Timestamp,
    /// The operator instance that acted (pod name).
    pub actor: String,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev: String,
    pub hash: String,
}

fn chain_hash(prev: &str, seq: u64, time: &jiff::Timestamp, actor: &str, event: &AuditEvent) -> String {
    let body = serde_json::to_string(&(seq, time, actor, event)).expect("audit events serialize");
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(b"\n");
    hasher.update(body.as_bytes());
    hex::encode(hasher.finalize())
}

struct Chain {
    seq: u64,
    prev: String,
    file: Option<std::fs::File>,
}

/// The audit trail of this operator process: stdout always, plus an optional file that survives
/// restarts (the chain continues from its last complete line).
pub struct AuditLog {
    actor: String,
    chain: Mutex<Chain>,
    stdout: bool,
}

impl AuditLog {
    /// Opens the trail. A line cut short by a crash is dropped: the action it described was not
    /// counted, so the resumed recall repeats and audits it again.
    pub fn open(path: Option<&Path>, actor: &str, stdout: bool) -> std::io::Result<Self> {
        let mut chain = Chain { seq: 0, prev: GENESIS.to_string(), file: None };
        if let Some(path) = path {
            let valid_len = repair_tail(path)?;
            if let Some(last) = last_record(path)? {
                chain.seq = last.seq + 1;
                chain.prev = last.hash;
            }
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            file.set_len(valid_len)?;
            chain.file = Some(file);
        }
        Ok(Self { actor: actor.to_string(), chain: Mutex::new(chain), stdout })
    }

    /// Writes one event and returns once it is on disk.
    pub async fn record(&self, event: AuditEvent) -> std::io::Result<()> {
        let mut chain = self.chain.lock().await;
        let time = jiff::Timestamp::now();
        let hash = chain_hash(&chain.prev, chain.seq, &time, &self.actor, &event);
        let record = AuditRecord { seq: chain.seq, time, actor: self.actor.clone(), event, prev: chain.prev.clone(), hash: hash.clone() };
        let mut line = serde_json::to_string(&record).expect("audit records serialize");
        line.push('\n');
        if let Some(file) = chain.file.as_mut() {
            file.write_all(line.as_bytes())?;
            file.sync_data()?;
        }
        if self.stdout {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes())?;
            out.flush()?;
        }
        chain.seq += 1;
        chain.prev = hash;
        Ok(())
    }
}

/// Length of the file up to its last complete line.
fn repair_tail(path: &Path) -> std::io::Result<u64> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    Ok(bytes.iter().rposition(|b| *b == b'\n').map(|i| i as u64 + 1).unwrap_or(0))
}

fn last_record(path: &Path) -> std::io::Result<Option<AuditRecord>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut last = None;
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if let Ok(record) = serde_json::from_str::<AuditRecord>(&line) {
            last = Some(record);
        }
    }
    Ok(last)
}

/// Result of checking a chain.
#[derive(Debug, PartialEq)]
pub enum Verification {
    Intact { lines: u64 },
    /// 1-based line number of the first line that does not follow from the one before.
    Broken { line: u64, why: String },
}

/// Checks every line of a trail: parseable, sequence numbers consecutive, each `prev` equal to
/// the previous `hash`, and each `hash` recomputed from the line's content.
pub fn verify(path: &PathBuf) -> std::io::Result<Verification> {
    let file = std::fs::File::open(path)?;
    let mut prev = GENESIS.to_string();
    let mut expected_seq = 0;
    let mut number = 0;
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        number += 1;
        let record: AuditRecord = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => return Ok(Verification::Broken { line: number, why: format!("not an audit record: {e}") }),
        };
        if record.seq != expected_seq {
            return Ok(Verification::Broken { line: number, why: format!("sequence {} where {expected_seq} was expected", record.seq) });
        }
        if record.prev != prev {
            return Ok(Verification::Broken { line: number, why: "prev does not match the hash of the line before".into() });
        }
        let hash = chain_hash(&record.prev, record.seq, &record.time, &record.actor, &record.event);
        if hash != record.hash {
            return Ok(Verification::Broken { line: number, why: "hash does not match the line's content".into() });
        }
        prev = record.hash;
        expected_seq += 1;
    }
    Ok(Verification::Intact { lines: number })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> AuditEvent {
        AuditEvent { recall: "ns/r".into(), user: Some(format!("user{n}")), action: "factor.revoke".into(), outcome: "revoked".into(), ..Default::default() }
    }

    #[tokio::test]
    async fn chain_verifies_continues_across_reopen_and_names_a_tampered_line() {
        let dir = std::env::temp_dir().join(format!("mfa-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let _ = std::fs::remove_file(&path);
        {
            let log = AuditLog::open(Some(&path), "test", false).unwrap();
            for n in 0..3 {
                log.record(event(n)).await.unwrap();
            }
        }
        // A crash mid-write leaves a partial line; reopening drops it and continues the chain.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"seq\":3,\"ti").unwrap();
        {
            let log = AuditLog::open(Some(&path), "test", false).unwrap();
            log.record(event(3)).await.unwrap();
        }
        assert_eq!(verify(&path).unwrap(), Verification::Intact { lines: 4 });

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("user1", "user9", 1)).unwrap();
        match verify(&path).unwrap() {
            Verification::Broken { line, .. } => assert_eq!(line, 2),
            other => panic!("tampering not detected: {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
