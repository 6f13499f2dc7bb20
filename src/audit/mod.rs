//! Append-only audit trail: one JSON line per action, each carrying the hash of the line before,
//! so removing or editing a line breaks the chain. An action is appended here before it is
//! counted, and the trail is synced to disk before anything that counts it is reported.

mod journal;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// The hash of a line: SHA-256 over the previous hash, a newline, and the JSON array
/// `[seq, time, actor, event]`.
fn chain_hash(prev: &str, seq: u64, time: &jiff::Timestamp, actor: &str, event: &AuditEvent) -> String {
    let time = serde_json::to_vec(time).expect("timestamps serialize");
    let actor = serde_json::to_vec(actor).expect("strings serialize");
    let event = serde_json::to_vec(event).expect("audit events serialize");
    let hash = hash_fields(prev, [seq.to_string().as_bytes(), &time, &actor, &event]);
    String::from_utf8(hash.to_vec()).expect("hex is ASCII")
}

/// SHA-256 over `prev`, a newline, and the fields (each already JSON) as one JSON array; in hex.
fn hash_fields(prev: &str, fields: [&[u8]; 4]) -> [u8; 64] {
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(b"\n[");
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            hasher.update(b",");
        }
        hasher.update(field);
    }
    hasher.update(b"]");
    let mut hash = [0; 64];
    hex::encode_to_slice(hasher.finalize(), &mut hash).expect("64 hex digits for 32 bytes");
    hash
}

/// Where the next line links in.
struct Chain {
    seq: u64,
    prev: String,
}

/// How long a line may wait in the journal before it is written to the trail file even though
/// nothing is reported: whoever follows the file sees each action within this.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The audit trail of this operator process: stdout, a file that survives restarts (the chain
/// continues from its last complete line), or both.
///
/// `record` chains the line and, under the chain's lock so lines land in chain order, puts it
/// where it survives the operator being killed before it returns: into the trail file's journal
/// (`journal`: a copy into mapped page-cache memory) or, with no file, one `write` to stdout.
/// The action may then be counted in memory. Before anything is *reported* (the ledger, status,
/// events), the reporter calls `sync`, which moves the journal's lines into the trail and makes
/// every line so far durable with one `fdatasync`, shared by reporters that ask at once: so
/// "audited before reported" holds across a machine crash too, at a few syncs a second instead of
/// one per line. Between reports, a thread moves the journal's lines into the trail every
/// `FLUSH_EVERY`.
pub struct AuditLog {
    actor: String,
    tip: Arc<Mutex<Tip>>,
    /// The trail file again (a second descriptor), synced off the runtime's threads.
    sync_file: Option<Arc<std::fs::File>>,
    /// Lines before this sequence number are durable. Held while syncing, so reporters that
    /// arrive meanwhile find their lines covered by the sync just done.
    durable: tokio::sync::Mutex<u64>,
}

/// The end of the chain and where lines go.
struct Tip {
    chain: Chain,
    trail: Option<Trail>,
    stdout: bool,
    /// Set when a write or sync failed: later lines would link to one that may not be on disk,
    /// so the trail refuses them until the operator restarts and resumes from the last complete line.
    broken: bool,
    /// The line being built, reused from line to line.
    line: Vec<u8>,
}

/// The trail file and its journal, where lines wait to be written to it in batches.
struct Trail {
    file: std::fs::File,
    journal: journal::Journal,
}

impl AuditLog {
    /// Opens the trail. A line cut short by a crash is dropped: the action it described was not
    /// counted, so the resumed recall repeats and audits it again. Lines the journal holds that
    /// the trail does not (the operator was killed before they were written to it) are moved
    /// into the trail first.
    pub fn open(path: Option<&Path>, actor: &str, stdout: bool) -> std::io::Result<Self> {
        let mut chain = Chain { seq: 0, prev: GENESIS.to_string() };
        let mut trail = None;
        if let Some(path) = path {
            let valid_len = repair_tail(path)?;
            if let Some(last) = last_record(path)? {
                chain.seq = last.seq + 1;
                chain.prev = last.hash;
            }
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            file.set_len(valid_len)?;
            let (journal, left) = journal::Journal::open(&journal::path_for(path))?;
            let recovered = recover(&left, &mut chain);
            if !recovered.is_empty() {
                file.write_all(recovered)?;
                file.sync_data()?;
                if stdout {
                    std::io::stdout().lock().write_all(recovered)?;
                }
            }
            trail = Some(Trail { file, journal });
        }
        Self::writing_to(trail, chain, actor, stdout)
    }

    fn writing_to(trail: Option<Trail>, chain: Chain, actor: &str, stdout: bool) -> std::io::Result<Self> {
        let sync_file = trail.as_ref().map(|t| t.file.try_clone().map(Arc::new)).transpose()?;
        let durable = tokio::sync::Mutex::new(chain.seq);
        let tip = Arc::new(Mutex::new(Tip { chain, trail, stdout, broken: false, line: Vec::with_capacity(512) }));
        if sync_file.is_some() {
            let tip = Arc::downgrade(&tip);
            std::thread::Builder::new().name("audit-flush".into()).spawn(move || flush_every(tip))?;
        }
        Ok(Self { actor: actor.to_string(), tip, sync_file, durable })
    }

    /// Appends one event; returns once it survives the operator being killed (not yet synced:
    /// see `sync`). Done here rather than handed to a thread: a copy into the journal takes
    /// nanoseconds, and a write to stdout microseconds (as the operator's log lines do: a
    /// stalled log reader stalls both alike).
    pub fn record(&self, event: AuditEvent) -> std::io::Result<()> {
        let mut tip = self.tip.lock().unwrap();
        if tip.broken {
            return Err(trail_broken());
        }
        let time = jiff::Timestamp::now();
        let Tip { chain, line, .. } = &mut *tip;
        let hash = chain_line(line, chain, &time, &self.actor, &event);
        if let Err(e) = tip.append() {
            tip.broken = true;
            return Err(e);
        }
        tip.chain.seq += 1;
        tip.chain.prev.clear();
        tip.chain.prev.push_str(std::str::from_utf8(&hash).expect("hex is ASCII"));
        Ok(())
    }

    /// Returns once every line recorded before the call is on disk. Call it before reporting
    /// what those lines describe.
    pub async fn sync(&self) -> std::io::Result<()> {
        let wanted = self.tip.lock().unwrap().written()?;
        let mut durable = self.durable.lock().await;
        if *durable >= wanted {
            return Ok(());
        }
        // Everything recorded by now is covered by this sync, not only what this caller wanted.
        let through = {
            let mut tip = self.tip.lock().unwrap();
            let written = tip.written()?;
            if let Err(e) = tip.flush() {
                tip.broken = true;
                return Err(e);
            }
            written
        };
        if let Some(file) = self.sync_file.clone() {
            let synced = tokio::task::spawn_blocking(move || file.sync_data()).await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if let Err(e) = synced {
                self.tip.lock().unwrap().broken = true;
                return Err(e);
            }
        }
        *durable = through;
        Ok(())
    }
}

impl Tip {
    /// The sequence number of the next line: every line before it has been recorded.
    fn written(&self) -> std::io::Result<u64> {
        if self.broken { Err(trail_broken()) } else { Ok(self.chain.seq) }
    }

    /// Puts the line just built where it survives the process: the journal, or stdout.
    fn append(&mut self) -> std::io::Result<()> {
        let Some(trail) = &mut self.trail else {
            if self.stdout {
                // Stdout is line-buffered: a whole line goes out at once.
                std::io::stdout().lock().write_all(&self.line)?;
            }
            return Ok(());
        };
        if trail.journal.push(&self.line) {
            return Ok(());
        }
        self.flush()?;
        let trail = self.trail.as_mut().expect("checked above");
        if !trail.journal.push(&self.line) {
            // Longer than the whole journal: straight to the trail (and stdout), as it stands.
            trail.file.write_all(&self.line)?;
            if self.stdout {
                std::io::stdout().lock().write_all(&self.line)?;
            }
        }
        Ok(())
    }

    /// Writes the journal's lines to the trail file (then stdout) and starts the journal over.
    fn flush(&mut self) -> std::io::Result<()> {
        let Some(trail) = &mut self.trail else { return Ok(()) };
        let pending = trail.journal.pending();
        if pending.is_empty() {
            return Ok(());
        }
        trail.file.write_all(pending)?;
        if self.stdout {
            std::io::stdout().lock().write_all(pending)?;
        }
        trail.journal.clear();
        Ok(())
    }
}

/// Moves the journal's lines into the trail every `FLUSH_EVERY`, until the trail is dropped.
fn flush_every(tip: Weak<Mutex<Tip>>) {
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let Some(tip) = tip.upgrade() else { return };
        let mut tip = tip.lock().unwrap();
        if !tip.broken
            && let Err(e) = tip.flush()
        {
            tracing::error!(error = %e, "the audit trail could not be written; no further action is taken until the operator restarts");
            tip.broken = true;
        }
    }
}

impl Drop for Tip {
    /// A clean stop leaves no line in the journal only.
    fn drop(&mut self) {
        if !self.broken {
            let _ = self.flush();
        }
    }
}

/// The lines of `left` (what an earlier process left in the journal) that continue `chain`,
/// which follows them. The journal starts with its newest batch; lines of it that reached the
/// trail before the crash come first and are passed over, and what follows the batch (left
/// from older ones, or a line cut short) does not continue the chain: recovery stops there.
/// Each line's hash is checked, so nothing but lines this trail wrote is taken.
fn recover<'a>(left: &'a [u8], chain: &mut Chain) -> &'a [u8] {
    let (mut start, mut end) = (None, 0);
    let mut offset = 0;
    for line in left.split_inclusive(|b| *b == b'\n') {
        let at = offset;
        offset += line.len();
        let Some(text) = line.strip_suffix(b"\n") else { break };
        let Ok(record) = serde_json::from_slice::<AuditRecord>(text) else { break };
        if start.is_none() && record.seq < chain.seq {
            continue;
        }
        let follows = record.seq == chain.seq
            && record.prev == chain.prev
            && chain_hash(&record.prev, record.seq, &record.time, &record.actor, &record.event) == record.hash;
        if !follows {
            break;
        }
        start.get_or_insert(at);
        end = offset;
        chain.seq += 1;
        chain.prev = record.hash;
    }
    start.map_or(&[][..], |start| &left[start..end])
}

/// Builds the next line of the chain into `line`; returns its hash. Built in one buffer: the
/// event is serialised once, hashed in place as part of the hash body (what `chain_hash`
/// computes), then its braces become the line's (what serialising an `AuditRecord` gives,
/// `#[serde(flatten)]` putting the event's fields between actor and prev). A recall writes
/// thousands of these a second.
fn chain_line(line: &mut Vec<u8>, chain: &Chain, time: &jiff::Timestamp, actor: &str, event: &AuditEvent) -> [u8; 64] {
    line.clear();
    line.extend_from_slice(b"{\"seq\":");
    let seq = push_json(line, &chain.seq);
    line.extend_from_slice(b",\"time\":");
    let time = push_json(line, time);
    line.extend_from_slice(b",\"actor\":");
    let actor = push_json(line, &actor);
    let event = push_json(line, event);

    let hash = hash_fields(&chain.prev, [&line[seq], &line[time], &line[actor], &line[event.clone()]]);

    // `{"recall":...}` becomes `,"recall":...` followed by the chain fields.
    line[event.start] = b',';
    line.truncate(event.end - 1);
    line.extend_from_slice(b",\"prev\":\"");
    line.extend_from_slice(chain.prev.as_bytes());
    line.extend_from_slice(b"\",\"hash\":\"");
    line.extend_from_slice(&hash);
    line.extend_from_slice(b"\"}\n");
    hash
}

/// Appends `value` as JSON; where it landed in `line`.
fn push_json(line: &mut Vec<u8>, value: &impl Serialize) -> std::ops::Range<usize> {
    let start = line.len();
    serde_json::to_writer(&mut *line, value).expect("audit fields serialize");
    start..line.len()
}

fn trail_broken() -> std::io::Error {
    std::io::Error::other("the audit trail could not be written; restart the operator to resume from its last complete line")
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

/// Removes the trail at `path` and its journal (a trail that is no longer wanted, such as a
/// test's); what is already gone is not an error.
pub fn remove(path: &Path) -> std::io::Result<()> {
    for file in [path.to_path_buf(), journal::path_for(path)] {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Lines of the trail at `path` that wait in its journal: written by an operator that stopped
/// before moving them into the file. They continue the file's chain and are moved into it when
/// an operator opens the trail again.
pub fn journal_pending(path: &Path) -> std::io::Result<u64> {
    let left = match std::fs::read(journal::path_for(path)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut chain = match last_record(path)? {
        Some(last) => Chain { seq: last.seq + 1, prev: last.hash },
        None => Chain { seq: 0, prev: GENESIS.to_string() },
    };
    let start = chain.seq;
    recover(&left, &mut chain);
    Ok(chain.seq - start)
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
                log.record(event(n)).unwrap();
            }
        }
        // A crash mid-write leaves a partial line; reopening drops it and continues the chain.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"seq\":3,\"ti").unwrap();
        {
            let log = AuditLog::open(Some(&path), "test", false).unwrap();
            log.record(event(3)).unwrap();
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

    #[test]
    fn a_line_is_what_serialising_the_record_gives_and_its_hash_verifies() {
        let chain = Chain { seq: 7, prev: GENESIS.to_string() };
        let time = jiff::Timestamp::now();
        let mut full = event(3);
        full.detail = Some("quote \" and newline \n".into());
        full.factor_kind = Some("totp".into());
        let mut line = b"left from the line before".to_vec();
        for event in [event(1), full] {
            let hash = String::from_utf8(chain_line(&mut line, &chain, &time, "pod-\"a\"", &event).to_vec()).unwrap();
            let record = AuditRecord { seq: 7, time, actor: "pod-\"a\"".into(), event: event.clone(), prev: GENESIS.into(), hash: hash.clone() };
            assert_eq!(String::from_utf8(line.clone()).unwrap(), serde_json::to_string(&record).unwrap() + "\n");
            assert_eq!(hash, chain_hash(GENESIS, 7, &time, "pod-\"a\"", &event));
            // The format on disk: the hash body is the tuple serialised as one JSON array.
            let body = serde_json::to_string(&(7, time, "pod-\"a\"", &event)).unwrap();
            assert_eq!(hash, hex::encode(Sha256::digest(format!("{GENESIS}\n{body}"))));
        }
    }

    /// A fresh folder for one test's trail.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mfa-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn lines_in(path: &Path) -> usize {
        std::fs::read_to_string(path).unwrap_or_default().lines().count()
    }

    /// As the operator being killed leaves its trail: nothing more is written to the file (the
    /// thread, too, stops), and the journal keeps what it holds.
    fn kill(log: AuditLog) {
        log.tip.lock().unwrap().broken = true;
    }

    #[tokio::test]
    async fn lines_of_a_killed_operator_are_moved_from_the_journal_into_the_trail() {
        let dir = scratch("killed");
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(Some(&path), "before", false).unwrap();
        for n in 0..5 {
            log.record(event(n)).unwrap();
        }
        kill(log);
        assert_eq!(lines_in(&path), 0, "recorded lines wait in the journal, not the trail");
        assert_eq!(journal_pending(&path).unwrap(), 5, "the lines waiting in the journal are told");

        let log = AuditLog::open(Some(&path), "after", false).unwrap();
        assert_eq!(lines_in(&path), 5, "opening the trail moves the journal's lines into it");
        assert_eq!(journal_pending(&path).unwrap(), 0);
        log.record(event(5)).unwrap();
        log.sync().await.unwrap();
        assert_eq!(verify(&path).unwrap(), Verification::Intact { lines: 6 });
        drop(log);
        // Opened again after a clean stop: nothing is taken twice.
        drop(AuditLog::open(Some(&path), "again", false).unwrap());
        assert_eq!(verify(&path).unwrap(), Verification::Intact { lines: 6 });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn recovery_takes_the_newest_batch_and_stops_at_a_line_cut_short() {
        let dir = scratch("batches");
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(Some(&path), "test", false).unwrap();
        // Enough lines to fill the journal more than once: the trail holds the older batches, and
        // the journal its newest batch followed by what is left of the one before.
        let total = 3 * journal::CAPACITY / 120;
        for n in 0..total {
            log.record(event(n as u32)).unwrap();
        }
        kill(log);
        let in_trail = lines_in(&path);
        assert!(in_trail > 0 && in_trail < total, "{in_trail} of {total} lines in the trail");

        // The newest batch's last line cut short, as a kill in the middle of copying it leaves it:
        // its hash no longer matches, and the lines after it are from an older batch.
        let journal_path = journal::path_for(&path);
        let mut bytes = std::fs::read(&journal_path).unwrap();
        let last = format!("\"seq\":{},", total - 1);
        let at = bytes.windows(last.len()).position(|w| w == last.as_bytes()).expect("the last line is in the journal");
        let end = at + bytes[at..].iter().position(|b| *b == b'\n').unwrap();
        bytes[end - 3] = b'x';
        std::fs::write(&journal_path, &bytes).unwrap();

        drop(AuditLog::open(Some(&path), "test", false).unwrap());
        assert_eq!(verify(&path).unwrap(), Verification::Intact { lines: total as u64 - 1 });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn removing_a_trail_leaves_neither_it_nor_its_journal() {
        let dir = scratch("removed");
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(Some(&path), "test", false).unwrap();
        log.record(event(0)).unwrap();
        drop(log);
        assert!(journal::path_for(&path).exists(), "the journal stays for crash recovery until removed");
        remove(&path).unwrap();
        assert!(!path.exists() && !journal::path_for(&path).exists());
        remove(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lines_reach_the_trail_within_a_second_when_nothing_is_reported() {
        let dir = scratch("flushed");
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(Some(&path), "test", false).unwrap();
        log.record(event(0)).unwrap();
        assert_eq!(lines_in(&path), 0);
        std::thread::sleep(FLUSH_EVERY * 2);
        assert_eq!(lines_in(&path), 1, "the line waited in the journal for longer than FLUSH_EVERY");
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_line_longer_than_the_journal_goes_to_the_trail_in_order() {
        let dir = scratch("long");
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(Some(&path), "test", false).unwrap();
        log.record(event(0)).unwrap();
        let mut long = event(1);
        long.detail = Some("x".repeat(journal::CAPACITY + 1));
        log.record(long).unwrap();
        log.record(event(2)).unwrap();
        log.sync().await.unwrap();
        assert_eq!(verify(&path).unwrap(), Verification::Intact { lines: 3 });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_keep_one_chain() {
        let dir = std::env::temp_dir().join(format!("mfa-audit-concurrent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let _ = std::fs::remove_file(&path);
        let log = Arc::new(AuditLog::open(Some(&path), "test", false).unwrap());
        let writers: Vec<_> = (0..64)
            .map(|w| {
                let log = log.clone();
                tokio::spawn(async move {
                    for n in 0..50 {
                        log.record(event(w * 1000 + n)).unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        log.sync().await.unwrap();
        assert_eq!(verify(&path).unwrap(), Verification::Intact { lines: 64 * 50 });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_fails_its_callers_and_every_later_line() {
        let dir = scratch("full");
        let (journal, _) = journal::Journal::open(&dir.join("audit.jsonl.journal")).unwrap();
        // /dev/full refuses every write with ENOSPC, as a full volume would: the line waits in the
        // journal, and the sync that would write it to the trail fails.
        let file = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let log = AuditLog::writing_to(Some(Trail { file, journal }), Chain { seq: 0, prev: GENESIS.into() }, "test", false).unwrap();
        log.record(event(1)).unwrap();
        let failed = log.sync().await.unwrap_err();
        assert!(failed.to_string().contains("space"), "{failed}");
        let later = log.record(event(2)).unwrap_err();
        assert!(later.to_string().contains("restart the operator"), "{later}");
        assert!(log.sync().await.is_err(), "nothing is reported after a failed line");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
