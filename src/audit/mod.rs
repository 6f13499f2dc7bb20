//! Append-only audit trail: one JSON line per action, each carrying the hash of the line before,
//! so removing or editing a line breaks the chain. An action is appended here before it is
//! counted, and the trail is synced to disk before anything that counts it is reported.

use std::io::{BufRead, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use hmac::Mac;
use sha2::{Digest, Sha256};

use crate::api::{FactorKind, RecallPhase};
use crate::keys::HmacKey;

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
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor_kind: Option<AuditedKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor_id: Option<String>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the operator did, as the trail names it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum Action {
    #[serde(rename = "session.revoke")]
    SessionRevoke,
    #[default]
    #[serde(rename = "factor.revoke")]
    FactorRevoke,
    /// A factor left in place (enrolled since the cutoff, or of an age nothing shows).
    #[serde(rename = "factor.keep")]
    FactorKeep,
    /// A factor enrolled since the cutoff that the provider removed with one the recall revoked.
    #[serde(rename = "factor.lostWithRevoked")]
    FactorLostWithRevoked,
    #[serde(rename = "enrollment.require")]
    EnrollmentRequire,
    #[serde(rename = "reenrollment.seen")]
    ReenrollmentSeen,
    /// An anomaly rule tripped on a recalled user's event in the re-enrollment window.
    #[serde(rename = "anomaly.flagged")]
    AnomalyFlagged,
    #[serde(rename = "user.fail")]
    UserFail,
    #[serde(rename = "user.exclude")]
    UserExclude,
    #[serde(rename = "user.disable")]
    UserDisable,
    /// A flag quarantined the user: factors revoked, sessions ended, account disabled.
    #[serde(rename = "user.quarantine")]
    UserQuarantine,
    /// A user was told of a new factor (the sinks and how each went).
    #[serde(rename = "notice.send")]
    NoticeSend,
    /// A user said, from the notice of a new factor, that it was not them.
    #[serde(rename = "user.notMe")]
    NotMeReported,
    /// A person cleared a quarantined user, who is enabled again.
    #[serde(rename = "user.clear")]
    UserClear,
    /// An MfaBypass's steps: asked for, approved by a second person, issued by the provider,
    /// delivered to the user, withdrawn at its end or on request, or given up.
    #[serde(rename = "bypass.request")]
    BypassRequest,
    #[serde(rename = "bypass.approve")]
    BypassApprove,
    #[serde(rename = "bypass.issue")]
    BypassIssue,
    #[serde(rename = "bypass.deliver")]
    BypassDeliver,
    #[serde(rename = "bypass.use")]
    BypassUse,
    #[serde(rename = "bypass.expire")]
    BypassExpire,
    #[serde(rename = "bypass.revoke")]
    BypassRevoke,
    #[serde(rename = "bypass.fail")]
    BypassFail,
    /// A second person approved the recall (spec.approval.approvedBy), with its plan.
    #[serde(rename = "recall.approve")]
    RecallApprove,
    /// An MfaRecallPolicy created this recall from a signal.
    #[serde(rename = "policy.recall")]
    PolicyRecall,
    /// A name in the scope that matched nobody.
    #[serde(rename = "scope.unresolved")]
    ScopeUnresolved,
    #[serde(rename = "recall.phase")]
    RecallPhase,
    /// An action this version does not write, read from an older trail: kept as written, so the
    /// line's hash still verifies.
    #[serde(untagged)]
    Other(String),
}

/// How an action ended, or the phase a recall entered.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    #[default]
    Revoked,
    /// Revoked by the provider with a factor the recall deleted just before (one device, one link).
    RevokedWithLinked,
    AlreadyGone,
    /// Gone when a resumed recall came to delete it, or when a deletion whose answer was lost was
    /// retried: most likely deleted by this recall's own attempt before; counted as revoked.
    GoneSinceEarlierAttempt,
    Done,
    Skipped,
    Failed,
    Excluded,
    NotFound,
    Lost,
    RegisteredSinceCutoff,
    UnknownAge,
    #[serde(untagged)]
    Phase(RecallPhase),
    /// As `Action::Other`.
    #[serde(untagged)]
    Other(String),
}

/// A factor kind as the trail names it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum AuditedKind {
    Kind(FactorKind),
    /// As `Action::Other` (a kind a newer operator wrote).
    Other(String),
}

impl From<FactorKind> for AuditedKind {
    fn from(kind: FactorKind) -> Self {
        AuditedKind::Kind(kind)
    }
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

/// What a line's hash is computed with: SHA-256 alone, which anyone can recompute (so a trail
/// rewritten whole, hashes and all, still verifies), or HMAC-SHA-256 under the operator's audit
/// key, which only the key's holder can.
#[derive(Clone, Default)]
pub struct ChainKey(Option<HmacKey>);

const WHAT: &str = "the audit key";

impl ChainKey {
    pub fn hmac(key: &[u8]) -> std::io::Result<Self> {
        HmacKey::new(key, WHAT).map(|key| Self(Some(key)))
    }

    /// The key in a file (as a Secret is mounted), without a trailing newline.
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        HmacKey::from_file(path, WHAT).map(|key| Self(Some(key)))
    }

    pub fn is_keyed(&self) -> bool {
        self.0.is_some()
    }
}

/// The hash of a line: SHA-256 (or HMAC-SHA-256 under `key`) over the previous hash, a newline,
/// and the JSON array `[seq, time, actor, event]`.
fn chain_hash(key: &ChainKey, prev: &str, seq: u64, time: &jiff::Timestamp, actor: &str, event: &AuditEvent) -> String {
    let time = serde_json::to_vec(time).expect("timestamps serialize");
    let actor = serde_json::to_vec(actor).expect("strings serialize");
    let event = serde_json::to_vec(event).expect("audit events serialize");
    let hash = hash_fields(key, prev, [seq.to_string().as_bytes(), &time, &actor, &event]);
    String::from_utf8(hash.to_vec()).expect("hex is ASCII")
}

/// The hash over `prev`, a newline, and the fields (each already JSON) as one JSON array; in hex.
fn hash_fields(key: &ChainKey, prev: &str, fields: [&[u8]; 4]) -> [u8; 64] {
    fn feed(prev: &str, fields: [&[u8]; 4], mut update: impl FnMut(&[u8])) {
        update(prev.as_bytes());
        update(b"\n[");
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                update(b",");
            }
            update(field);
        }
        update(b"]");
    }
    let digest: [u8; 32] = match &key.0 {
        None => {
            let mut hasher = Sha256::new();
            feed(prev, fields, |bytes| hasher.update(bytes));
            hasher.finalize().into()
        }
        Some(key) => {
            let mut mac = key.mac();
            feed(prev, fields, |bytes| mac.update(bytes));
            mac.finalize().into_bytes().into()
        }
    };
    let mut hash = [0; 64];
    hex::encode_to_slice(digest, &mut hash).expect("64 hex digits for 32 bytes");
    hash
}

/// Where the next line links in.
struct Chain {
    seq: u64,
    prev: String,
}

/// How long a line may wait in memory before it is written to the trail file even though
/// nothing is reported: whoever follows the file sees each action within this.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Lines wait in memory until this many bytes have gathered, then go to the trail in one write.
const BATCH: usize = 64 * 1024;

/// The audit trail of this operator process: stdout, a file that survives restarts (the chain
/// continues from its last complete line), or both. One process writes a trail: the file is
/// locked while open.
///
/// `record` chains the line and, under the chain's lock so lines land in chain order, adds it to
/// the lines waiting in memory (with no file: one `write` to stdout). The action may then be
/// counted in memory, never reported. Before anything is *reported* (the ledger, status, events),
/// the reporter calls `sync`, which writes the waiting lines to the trail and makes every line so
/// far durable with one `fdatasync`, shared by reporters that ask at once: so "audited before
/// reported" holds across a machine crash too, at a few syncs a second instead of one per line.
/// A kill loses only lines still waiting; their actions were reported nowhere, so the ledger
/// does not count them and the resumed recall does them again and audits them again. Between
/// reports, a thread writes and syncs the waiting lines every `FLUSH_EVERY`.
pub struct AuditLog {
    actor: String,
    key: ChainKey,
    tip: Arc<Mutex<Tip>>,
    /// The trail file again (a second descriptor), synced off the runtime's threads.
    sync_file: Option<Arc<std::fs::File>>,
    /// Lines before this sequence number are durable. Held while syncing, so reporters that
    /// arrive meanwhile find their lines covered by the sync just done.
    durable: tokio::sync::Mutex<u64>,
    /// The trail file outlives the process (a PersistentVolume): a mark not found in it means
    /// lines were lost, never that the mark came from another process's trail.
    persistent: bool,
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
    /// The hash of the trail file's first line: which trail this is. A trail deleted and begun
    /// again has another (its first line's time differs).
    first: Option<String>,
}

/// The trail file and the lines waiting to be written to it.
struct Trail {
    file: std::fs::File,
    pending: Vec<u8>,
    /// Bytes written to the file: where the waiting lines will start.
    len: u64,
}

/// A place in a trail file: the line numbered `seq`, linking to `prev`, starts `offset` bytes
/// in. Kept with what the lines after it describe (a ledger segment), so those lines can be
/// found again without reading the trail from its start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailMark {
    pub seq: u64,
    pub offset: u64,
    pub prev: String,
    /// The hash of the first line of the trail the mark was taken in; None in marks of earlier
    /// operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trail: Option<String>,
    /// The trail outlived its process (a PersistentVolume) when the mark was taken.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persistent: bool,
}

/// What `read_since` found at a mark.
#[derive(Debug, PartialEq, Eq)]
pub enum Since {
    /// Every line from the mark on was handed over, each following from the one before.
    Read,
    /// The mark is from another trail (another pod's, on an emptyDir): nothing was handed over.
    OtherTrail,
    /// The marked line is there, but does not verify under the audit key (the key changed, or
    /// the line was rewritten): nothing was handed over.
    Unverified,
    /// The mark is from this trail, or from a trail kept on a persistent volume, and the marked
    /// line is not there: the trail was cut, replaced or deleted since. Says what was found.
    Lost(String),
}

impl AuditLog {
    /// Opens the trail, or fails when another process has it open. A line cut short by a crash
    /// is dropped: the action it described was not counted, so the resumed recall repeats and
    /// audits it again. Only the end of the file is read, to find where the chain goes on.
    pub fn open(path: Option<&Path>, actor: &str, stdout: bool) -> std::io::Result<Self> {
        let mut chain = Chain { seq: 0, prev: GENESIS.to_string() };
        let mut trail = None;
        let mut first = None;
        if let Some(path) = path {
            let file = std::fs::OpenOptions::new().read(true).append(true).create(true).open(path)?;
            // Before the tail is cut: a second writer would cut the first one's line in flight.
            lock(&file, path)?;
            let (valid_len, last) = tail(&file, file.metadata()?.len(), TAIL_WINDOW)?;
            file.set_len(valid_len)?;
            first = first_line_hash(&file, valid_len)?;
            if let Some(last) = last {
                chain.seq = last.seq + 1;
                chain.prev = last.hash;
            }
            trail = Some(Trail { file, pending: Vec::with_capacity(BATCH), len: valid_len });
        }
        Self::writing_to(trail, chain, first, actor, stdout)
    }

    fn writing_to(trail: Option<Trail>, chain: Chain, first: Option<String>, actor: &str, stdout: bool) -> std::io::Result<Self> {
        let sync_file = trail.as_ref().map(|t| t.file.try_clone().map(Arc::new)).transpose()?;
        let durable = tokio::sync::Mutex::new(chain.seq);
        let tip = Arc::new(Mutex::new(Tip { chain, trail, stdout, broken: false, line: Vec::with_capacity(512), first }));
        if let Some(file) = &sync_file {
            let (tip, file) = (Arc::downgrade(&tip), Arc::downgrade(file));
            std::thread::Builder::new().name("audit-flush".into()).spawn(move || flush_every(tip, file))?;
        }
        Ok(Self { actor: actor.to_string(), key: ChainKey::default(), tip, sync_file, durable, persistent: false })
    }

    /// Appends one event to the chain; it reaches the file by the next `sync` at the latest.
    /// Done here rather than handed to a thread: adding to the waiting lines is a copy, and a
    /// write to stdout a system call (as the operator's log lines are: a stalled log reader
    /// stalls both alike).
    pub fn record(&self, event: AuditEvent) -> std::io::Result<()> {
        let mut tip = self.tip.lock().unwrap();
        if tip.broken {
            return Err(trail_broken());
        }
        let time = jiff::Timestamp::now();
        let Tip { chain, line, .. } = &mut *tip;
        let hash = chain_line(&self.key, line, chain, &time, &self.actor, &event);
        if let Err(e) = tip.append() {
            tip.broken = true;
            return Err(e);
        }
        let hash = std::str::from_utf8(&hash).expect("hex is ASCII");
        // An empty trail begins at 0: this line is its first.
        if tip.chain.seq == 0 && tip.trail.is_some() {
            tip.first = Some(hash.to_string());
        }
        tip.chain.seq += 1;
        tip.chain.prev.clear();
        tip.chain.prev.push_str(hash);
        Ok(())
    }

    /// The trail file outlives the process (on a PersistentVolume): a resumed recall whose
    /// marks it does not hold stops rather than take up its users from the provider's answers.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Lines from now on are hashed under `key`. A trail that was not keyed before goes on
    /// keyed; `verify` tells how many lines came first unkeyed.
    pub fn keyed(mut self, key: ChainKey) -> Self {
        self.key = key;
        self
    }

    /// The last line recorded (its sequence number and hash); None before the first. Taken
    /// before a `sync`, it names a line that is on disk once the sync returns.
    pub fn head(&self) -> Option<Head> {
        let tip = self.tip.lock().unwrap();
        let seq = tip.chain.seq.checked_sub(1)?;
        Some(Head { seq, hash: tip.chain.prev.clone() })
    }

    /// Where the next line will go; None without a trail file, or before its first line (a
    /// mark at the start of a trail would match the start of any other).
    pub fn mark(&self) -> Option<TrailMark> {
        let tip = self.tip.lock().unwrap();
        let trail = tip.trail.as_ref()?;
        let first = tip.first.clone()?;
        Some(TrailMark { seq: tip.chain.seq, offset: trail.len + trail.pending.len() as u64, prev: tip.chain.prev.clone(), trail: Some(first), persistent: self.persistent })
    }

    /// Writes the waiting lines to the trail file, without waiting for the disk: they then
    /// survive the operator being killed (not the machine crashing). Called as each user is
    /// finished, so a restart finds every finished user's lines.
    pub fn write_out(&self) -> std::io::Result<()> {
        self.tip.lock().unwrap().write_waiting().map(drop)
    }

    /// Hands `each` every line of the trail file from `mark` on, each checked to follow from the
    /// one before. When the line at `mark` is not the one marked, nothing is handed over, and
    /// the mark is either from another trail (another pod's, on an emptyDir) or the trail lost
    /// lines (`Since`). A line further on that does not follow is an error: the trail was damaged.
    pub fn read_since(&self, mark: &TrailMark, mut each: impl FnMut(AuditRecord)) -> std::io::Result<Since> {
        let (file, end, ours, at_tip) = {
            let mut tip = self.tip.lock().unwrap();
            tip.write_waiting()?;
            let at_tip = tip.chain.seq == mark.seq && tip.chain.prev == mark.prev;
            match (&self.sync_file, &tip.trail) {
                (Some(file), Some(trail)) => (file.clone(), trail.len, mark.trail.is_some() && mark.trail == tip.first, at_tip),
                _ => return Ok(Since::OtherTrail),
            }
        };
        let not_here = |found: String| {
            if ours || mark.persistent {
                let whose = if ours { "this trail (its first line is the one the mark names)" } else { "a trail kept on a persistent volume" };
                Since::Lost(format!("the ledger marks line {} at byte {} of {whose}, and {found}", mark.seq, mark.offset))
            } else {
                Since::OtherTrail
            }
        };
        if mark.offset > end {
            return Ok(not_here(format!("the trail ends at byte {end}")));
        }
        if mark.offset == end {
            // Recorded, then stopped before another line: the trail's last line is the marked one's predecessor.
            return Ok(if at_tip { Since::Read } else { not_here("the trail ends there, after another line".to_string()) });
        }
        let reader = std::io::BufReader::with_capacity(64 * 1024, At { file: &file, offset: mark.offset, end });
        let mut prev = mark.prev.clone();
        for (n, line) in reader.lines().enumerate() {
            let line = line?;
            let record: Option<AuditRecord> = serde_json::from_str(&line).ok();
            // The mark is read from the ledger: its sequence number is not trusted to add up.
            let follows = record.as_ref().is_some_and(|r| Some(r.seq) == mark.seq.checked_add(n as u64) && r.prev == prev && hashed(&self.key, r) != Hashed::Wrong);
            match record {
                Some(record) if follows => {
                    prev.clone_from(&record.hash);
                    each(record);
                }
                Some(record) if n == 0 && record.seq == mark.seq && record.prev == mark.prev => return Ok(Since::Unverified),
                _ if n == 0 => return Ok(not_here("another line is there".to_string())),
                _ => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("the audit trail does not follow on at line {} after the mark at sequence {}: it was damaged", n, mark.seq))),
            }
        }
        Ok(Since::Read)
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
        let through = self.tip.lock().unwrap().write_waiting()?;
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

impl Drop for AuditLog {
    /// A clean stop writes and syncs what waits, and frees the trail for the next process at
    /// once, even while the flush thread still holds it for a moment.
    fn drop(&mut self) {
        let mut tip = self.tip.lock().unwrap_or_else(|e| e.into_inner());
        if !tip.broken && tip.flush().is_ok()
            && let Some(file) = &self.sync_file
        {
            let _ = file.sync_data();
        }
        tip.trail = None;
        drop(tip);
        if let Some(file) = &self.sync_file {
            let _ = file.unlock();
        }
    }
}

/// One writer per trail: two would each continue the chain from the same line.
fn lock(file: &std::fs::File, path: &Path) -> std::io::Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!("the audit trail {} is open in another process; each operator process needs a trail file of its own", path.display()),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

impl Tip {
    /// The sequence number of the next line: every line before it has been recorded.
    fn written(&self) -> std::io::Result<u64> {
        if self.broken { Err(trail_broken()) } else { Ok(self.chain.seq) }
    }

    /// Writes the waiting lines to the file; the sequence number of the next line, every line
    /// before it now written. A failed write breaks the trail.
    fn write_waiting(&mut self) -> std::io::Result<u64> {
        let written = self.written()?;
        if let Err(e) = self.flush() {
            self.broken = true;
            return Err(e);
        }
        Ok(written)
    }

    /// Adds the line just built to the waiting lines (a batch's worth goes on to the file), or
    /// with no file writes it to stdout.
    fn append(&mut self) -> std::io::Result<()> {
        let Some(trail) = &mut self.trail else {
            if self.stdout {
                // Stdout is line-buffered: a whole line goes out at once.
                std::io::stdout().lock().write_all(&self.line)?;
            }
            return Ok(());
        };
        trail.pending.extend_from_slice(&self.line);
        if trail.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the waiting lines to the trail file (then stdout); not synced.
    fn flush(&mut self) -> std::io::Result<()> {
        let Some(trail) = &mut self.trail else { return Ok(()) };
        if trail.pending.is_empty() {
            return Ok(());
        }
        trail.file.write_all(&trail.pending)?;
        trail.len += trail.pending.len() as u64;
        if self.stdout {
            std::io::stdout().lock().write_all(&trail.pending)?;
        }
        trail.pending.clear();
        // A line far longer than a batch does not keep its memory.
        trail.pending.shrink_to(BATCH);
        Ok(())
    }
}

/// Writes and syncs the waiting lines every `FLUSH_EVERY`, until the trail is dropped. The sync
/// runs outside the chain's lock, so recording never waits on the disk.
fn flush_every(tip: Weak<Mutex<Tip>>, file: Weak<std::fs::File>) {
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let Some(tip) = tip.upgrade() else { return };
        let wrote = {
            let mut tip = tip.lock().unwrap();
            let waiting = tip.trail.as_ref().is_some_and(|t| !t.pending.is_empty());
            if tip.broken || !waiting {
                continue;
            }
            tip.flush()
        };
        let synced = wrote.and_then(|()| file.upgrade().map_or(Ok(()), |f| f.sync_data()));
        if let Err(e) = synced {
            tracing::error!(error = %e, "the audit trail could not be written; no further action is taken until the operator restarts");
            tip.lock().unwrap().broken = true;
        }
    }
}

/// Builds the next line of the chain into `line`; returns its hash. Built in one buffer: the
/// event is serialised once, hashed in place as part of the hash body (what `chain_hash`
/// computes), then its braces become the line's (what serialising an `AuditRecord` gives,
/// `#[serde(flatten)]` putting the event's fields between actor and prev). A recall writes
/// thousands of these a second.
fn chain_line(key: &ChainKey, line: &mut Vec<u8>, chain: &Chain, time: &jiff::Timestamp, actor: &str, event: &AuditEvent) -> [u8; 64] {
    line.clear();
    line.extend_from_slice(b"{\"seq\":");
    let seq = push_json(line, &chain.seq);
    line.extend_from_slice(b",\"time\":");
    let time = push_json(line, time);
    line.extend_from_slice(b",\"actor\":");
    let actor = push_json(line, &actor);
    let event = push_json(line, event);

    let hash = hash_fields(key, &chain.prev, [&line[seq], &line[time], &line[actor], &line[event.clone()]]);

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

/// How a line's hash was made, as far as `key` tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hashed {
    /// Under `key` (plain SHA-256 when `key` is not keyed).
    WithKey,
    /// Without a key, where `key` is keyed: a line written before the trail was keyed.
    Unkeyed,
    /// Neither: the line was changed.
    Wrong,
}

fn hashed(key: &ChainKey, record: &AuditRecord) -> Hashed {
    let hash = |key: &ChainKey| chain_hash(key, &record.prev, record.seq, &record.time, &record.actor, &record.event);
    if hash(key) == record.hash {
        Hashed::WithKey
    } else if key.is_keyed() && hash(&ChainKey::default()) == record.hash {
        Hashed::Unkeyed
    } else {
        Hashed::Wrong
    }
}

/// The bytes of a file from `offset` up to `end`, read by position (the file is also being
/// appended to).
struct At<'a> {
    file: &'a std::fs::File,
    offset: u64,
    end: u64,
}

impl std::io::Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = usize::try_from(self.end - self.offset).unwrap_or(usize::MAX).min(buf.len());
        let n = self.file.read_at(&mut buf[..room], self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

fn trail_broken() -> std::io::Error {
    std::io::Error::other("the audit trail could not be written; restart the operator to resume from its last complete line")
}

/// Bytes read from the end of the trail at first when opening it; more only when the last
/// complete line is longer, or not a record.
const TAIL_WINDOW: u64 = 64 * 1024;

/// Of a trail `len` bytes long: the length up to its last complete line, and the last record
/// among its complete lines. Reads from the end, `window` bytes and twice as many each time
/// that is not enough, so a trail of any size opens in little memory.
/// The hash of the first line of a trail of `len` valid bytes; None when it is empty or its
/// first line cannot be read as a line of the trail.
fn first_line_hash(file: &impl FileExt, len: u64) -> std::io::Result<Option<String>> {
    const MAX_LINE: u64 = 1 << 20;
    let mut bytes = vec![0; len.min(MAX_LINE) as usize];
    file.read_exact_at(&mut bytes, 0)?;
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    Ok(serde_json::from_slice::<AuditRecord>(line).ok().map(|record| record.hash))
}

fn tail(file: &impl FileExt, len: u64, window: u64) -> std::io::Result<(u64, Option<AuditRecord>)> {
    let mut window = window.max(1);
    loop {
        let start = len.saturating_sub(window);
        let mut bytes = vec![0; (len - start) as usize];
        file.read_exact_at(&mut bytes, start)?;
        // Lines run up to a newline; the first piece of a window that starts past the file's
        // start may be the end of a longer line.
        if let Some(last_newline) = bytes.iter().rposition(|b| *b == b'\n') {
            let valid_len = start + last_newline as u64 + 1;
            let mut rest = &bytes[..last_newline];
            loop {
                let (line, before) = match rest.iter().rposition(|b| *b == b'\n') {
                    Some(i) => (&rest[i + 1..], Some(&rest[..i])),
                    None if start == 0 => (rest, None),
                    None => break,
                };
                if let Ok(record) = serde_json::from_slice::<AuditRecord>(line) {
                    return Ok((valid_len, Some(record)));
                }
                match before {
                    Some(before) => rest = before,
                    None => return Ok((valid_len, None)),
                }
            }
        } else if start == 0 {
            return Ok((0, None));
        }
        window = window.saturating_mul(2);
    }
}

/// Removes the trail at `path`, and the `.journal` beside it that operators before this one
/// kept (a trail that is no longer wanted, such as a test's); what is already gone is not an
/// error.
pub fn remove(path: &Path) -> std::io::Result<()> {
    for file in [path.to_path_buf(), legacy_journal_path(path)] {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Where operators before this one kept lines before writing them to the trail at `path`.
fn legacy_journal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// The journal an operator before this one left beside the trail at `path`, if any. Lines only
/// there were reported nowhere (a report waited for them to reach the trail), so the recall
/// repeated and audited those actions again; the file is not read and only kept for people.
pub fn legacy_journal(path: &Path) -> Option<PathBuf> {
    Some(legacy_journal_path(path)).filter(|p| p.exists())
}

/// A line of a trail named by its sequence number and hash, as each MfaRecall's status
/// publishes the head of the operator's trail: written as `SEQ:HASH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl std::str::FromStr for Head {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (seq, hash) = text.split_once(':').ok_or_else(|| format!("{text:?} is not SEQ:HASH (as status.auditHead gives it)"))?;
        let seq = seq.parse().map_err(|e| format!("the sequence number {seq:?}: {e}"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("the hash {hash:?} is not 64 hex digits"));
        }
        Ok(Self { seq, hash: hash.to_ascii_lowercase() })
    }
}

/// Result of checking a chain.
#[derive(Debug, PartialEq)]
pub enum Verification {
    /// `unkeyed`: lines at the start written before the trail was keyed.
    Intact { lines: u64, unkeyed: u64 },
    /// 1-based line number of the first line that does not follow from the one before.
    Broken { line: u64, why: String },
}

/// `audit verify`, as the operator's binary and `kubectl mfa-recall` both offer it.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    pub file: std::path::PathBuf,
    /// The operator's audit key, for a keyed trail.
    #[arg(long)]
    pub key_file: Option<std::path::PathBuf>,
    /// The trail must hold this line, as an MfaRecall's status.auditHead names it (SEQ:HASH):
    /// detects a trail cut at its end or rewritten whole.
    #[arg(long)]
    pub expect_head: Option<Head>,
}

impl VerifyArgs {
    /// Checks the trail and says what it found: the exit code (0 intact, 1 broken, 2 unreadable).
    pub fn run(&self) -> u8 {
        let verdict = self.key_file.as_deref().map(ChainKey::from_file).transpose().and_then(|key| verify(&self.file, &key.unwrap_or_default(), self.expect_head.as_ref()));
        match verdict {
            Ok(verdict) => {
                verdict.describe(&self.file, self.expect_head.is_some()).iter().for_each(|line| println!("{line}"));
                u8::from(!matches!(verdict, Verification::Intact { .. }))
            }
            Err(e) => {
                eprintln!("{}: {e}", self.file.display());
                2
            }
        }
    }
}

impl Verification {
    /// What to tell whoever checked `file`: the verdict, and what it does not prove.
    pub fn describe(&self, file: &Path, with_head: bool) -> Vec<String> {
        match self {
            Verification::Intact { lines, unkeyed } => {
                let mut said = vec![format!("{}: intact, {lines} lines", file.display())];
                if *unkeyed > 0 {
                    said.push(format!("  the first {unkeyed} lines were written before the trail was keyed: anyone could have rewritten those"));
                }
                if !with_head {
                    said.push("  without --expect-head, a trail cut at its end also verifies: pass the head from an MfaRecall's status.auditHead".into());
                }
                if let Some(journal) = legacy_journal(file) {
                    said.push(format!("  {} was left by an older operator and is not part of the chain: what only it holds was reported nowhere, and was done and audited again", journal.display()));
                }
                said
            }
            Verification::Broken { line, why } => vec![format!("{}: broken at line {line}: {why}", file.display())],
        }
    }
}

/// Checks every line of a trail: parseable, sequence numbers consecutive, each `prev` equal to
/// the previous `hash`, and each `hash` recomputed from the line's content (under `key` when
/// given: only lines before the first keyed one may be unkeyed). With `expect`, the trail must
/// also hold that line, as published in status: a trail cut at its end, or rewritten whole, does
/// not. Reads one line at a time.
pub fn verify(path: &Path, key: &ChainKey, expect: Option<&Head>) -> std::io::Result<Verification> {
    let file = std::fs::File::open(path)?;
    let mut prev = GENESIS.to_string();
    let mut expected_seq = 0;
    let mut number = 0;
    let (mut unkeyed, mut keyed_seen) = (0, false);
    let mut expected_found = false;
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
        match hashed(key, &record) {
            Hashed::WithKey => keyed_seen |= key.is_keyed(),
            Hashed::Unkeyed if !keyed_seen => unkeyed += 1,
            Hashed::Unkeyed | Hashed::Wrong => {
                let why = match (key.is_keyed(), keyed_seen) {
                    (false, _) => "hash does not match the line's content (a keyed trail is verified with the operator's audit key)",
                    (true, true) => "hash does not match the line's content under the audit key: the line was changed or written without the key",
                    (true, false) => "hash does not match the line's content, under the audit key or without one",
                };
                return Ok(Verification::Broken { line: number, why: why.into() });
            }
        }
        if let Some(head) = expect
            && head.seq == record.seq
        {
            if head.hash != record.hash {
                return Ok(Verification::Broken { line: number, why: format!("line {} is not the head published in status ({head}): the trail was rewritten", record.seq) });
            }
            expected_found = true;
        }
        prev = record.hash;
        expected_seq += 1;
    }
    if let Some(head) = expect
        && !expected_found
    {
        let ends = match number.checked_sub(1) {
            Some(last) => format!("the trail ends at sequence {last}"),
            None => "the trail is empty".to_string(),
        };
        return Ok(Verification::Broken { line: number + 1, why: format!("{ends}, before the head published in status ({head}): lines were cut from its end") });
    }
    Ok(Verification::Intact { lines: number, unkeyed })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trail's words for actions and outcomes are the ones it always wrote; a word this
    /// version does not know (an older or newer trail's) reads back as written, so its hash verifies.
    #[test]
    fn actions_and_outcomes_are_written_as_the_trail_spells_them() {
        let phase = AuditEvent { recall: "ns/r".into(), action: Action::RecallPhase, outcome: Outcome::Phase(RecallPhase::Revoking), ..Default::default() };
        let text = serde_json::to_string(&phase).unwrap();
        assert_eq!(text, r#"{"recall":"ns/r","action":"recall.phase","outcome":"Revoking"}"#);
        assert_eq!(serde_json::from_str::<AuditEvent>(&text).unwrap(), phase);
        let factor = AuditEvent { action: Action::FactorKeep, outcome: Outcome::RegisteredSinceCutoff, factor_kind: Some(FactorKind::RecoveryCodes.into()), ..phase };
        let text = serde_json::to_string(&factor).unwrap();
        assert!(text.contains(r#""action":"factor.keep","factorKind":"recoveryCodes","outcome":"registeredSinceCutoff""#), "{text}");
        let older = r#"{"recall":"ns/r","action":"user.archive","factorKind":"holographic","outcome":"archivedLater"}"#;
        let read: AuditEvent = serde_json::from_str(older).unwrap();
        assert_eq!((&read.action, &read.outcome), (&Action::Other("user.archive".into()), &Outcome::Other("archivedLater".into())));
        assert_eq!(read.factor_kind, Some(AuditedKind::Other("holographic".into())));
        assert_eq!(serde_json::to_string(&read).unwrap(), older);
    }

    fn event(n: u32) -> AuditEvent {
        AuditEvent { recall: "ns/r".into(), user: Some(format!("user{n}")), action: Action::FactorRevoke, outcome: Outcome::Revoked, ..Default::default() }
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
        assert_eq!(verify(&path, &ChainKey::default(), None).unwrap(), Verification::Intact { lines: 4, unkeyed: 0 });

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("user1", "user9", 1)).unwrap();
        match verify(&path, &ChainKey::default(), None).unwrap() {
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
        full.factor_kind = Some(FactorKind::Totp.into());
        let mut line = b"left from the line before".to_vec();
        for event in [event(1), full] {
            let hash = String::from_utf8(chain_line(&ChainKey::default(), &mut line, &chain, &time, "pod-\"a\"", &event).to_vec()).unwrap();
            let record = AuditRecord { seq: 7, time, actor: "pod-\"a\"".into(), event: event.clone(), prev: GENESIS.into(), hash: hash.clone() };
            assert_eq!(String::from_utf8(line.clone()).unwrap(), serde_json::to_string(&record).unwrap() + "\n");
            assert_eq!(hash, chain_hash(&ChainKey::default(), GENESIS, 7, &time, "pod-\"a\"", &event));
            // The format on disk: the hash body is the tuple serialised as one JSON array.
            let body = serde_json::to_string(&(7, time, "pod-\"a\"", &event)).unwrap();
            assert_eq!(hash, hex::encode(Sha256::digest(format!("{GENESIS}\n{body}"))));
        }
    }

    /// A resumed recall reads its users' lines from the marks in its ledger. A mark the trail
    /// does not hold is another pod's (emptyDir) unless the trail is the one the mark was taken
    /// in, or lives on a persistent volume: then lines were lost, and the caller must stop.
    #[test]
    fn a_mark_the_trail_lost_is_told_from_a_mark_of_another_trail() {
        let dir = scratch("marks");
        let path = dir.join("audit.jsonl");
        let (mark, at_end) = {
            let log = AuditLog::open(Some(&path), "test", false).unwrap();
            assert_eq!(log.mark(), None, "no mark before the first line: it would match the start of any trail");
            log.record(event(0)).unwrap();
            let mark = log.mark().unwrap();
            log.record(event(1)).unwrap();
            log.record(event(2)).unwrap();
            log.write_out().unwrap();
            (mark, log.mark().unwrap())
        };
        assert!(mark.trail.is_some(), "a mark names its trail by the first line's hash");
        let read_keyed = |path: &Path, mark: &TrailMark, key: ChainKey| {
            let log = AuditLog::open(Some(path), "test", false).unwrap().keyed(key);
            let mut users = Vec::new();
            let since = log.read_since(mark, |line| users.push(line.event.user.unwrap())).unwrap();
            (since, users)
        };
        let read = |path: &Path, mark: &TrailMark| read_keyed(path, mark, ChainKey::default());
        assert_eq!(read(&path, &mark), (Since::Read, vec!["user1".to_string(), "user2".to_string()]));
        assert_eq!(read(&path, &at_end), (Since::Read, vec![]), "recorded, then stopped before another line");
        // The key changed since (or the lines were rewritten): nothing is taken from them, and
        // nothing was lost either.
        let other_key = ChainKey::hmac(b"an audit key the trail was not written under").unwrap();
        let keyed_dir = scratch("marks-keyed");
        let keyed_path = keyed_dir.join("audit.jsonl");
        let keyed_mark = {
            let log = AuditLog::open(Some(&keyed_path), "test", false).unwrap().keyed(ChainKey::hmac(b"the audit key the trail was written under").unwrap());
            log.record(event(0)).unwrap();
            let mark = log.mark().unwrap();
            log.record(event(1)).unwrap();
            mark
        };
        assert_eq!(read_keyed(&keyed_path, &keyed_mark, other_key), (Since::Unverified, vec![]));
        std::fs::remove_dir_all(&keyed_dir).unwrap();

        // Cut below the mark: the same trail (same first line) lost the lines.
        let text = std::fs::read_to_string(&path).unwrap();
        let first_line = text.lines().next().unwrap().to_string() + "\n";
        std::fs::write(&path, &first_line).unwrap();
        match read(&path, &at_end) {
            (Since::Lost(why), users) => assert!(users.is_empty() && why.contains("this trail") && why.contains("the trail ends at byte"), "{why}"),
            other => panic!("a cut trail was not noticed: {other:?}"),
        }

        // Another trail (another pod's emptyDir, or one begun again) where the mark should be.
        std::fs::remove_file(&path).unwrap();
        let persistent_mark = {
            let log = AuditLog::open(Some(&path), "other-pod", false).unwrap().persistent(true);
            for n in 0..5 {
                log.record(event(n)).unwrap();
            }
            log.mark().unwrap()
        };
        assert_eq!(read(&path, &mark), (Since::OtherTrail, vec![]), "on an emptyDir: taken up from the providers' answers");
        // A mark taken in a trail on a persistent volume, which has since been begun again.
        std::fs::remove_file(&path).unwrap();
        {
            let log = AuditLog::open(Some(&path), "after-restore", false).unwrap().persistent(true);
            for n in 0..9 {
                log.record(event(n)).unwrap();
            }
        }
        match read(&path, &persistent_mark) {
            (Since::Lost(why), _) => assert!(why.contains("persistent volume") && why.contains("another line is there"), "{why}"),
            other => panic!("a replaced trail on a persistent volume was not noticed: {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
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
    /// thread, too, stops), and the lines waiting in memory are lost.
    fn kill(log: AuditLog) {
        log.tip.lock().unwrap().broken = true;
    }

    #[tokio::test]
    async fn a_killed_operator_loses_only_lines_recorded_since_the_last_sync_and_the_chain_goes_on() {
        let dir = scratch("killed");
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(Some(&path), "before", false).unwrap();
        for n in 0..5 {
            log.record(event(n)).unwrap();
        }
        assert_eq!(lines_in(&path), 0, "recorded lines wait in memory until a sync");
        log.sync().await.unwrap();
        assert_eq!(lines_in(&path), 5, "a sync writes every line recorded before it");
        for n in 5..8 {
            log.record(event(n)).unwrap();
        }
        kill(log);
        assert_eq!(lines_in(&path), 5, "lines recorded after the last sync, whose actions nothing reported, are lost");

        let log = AuditLog::open(Some(&path), "after", false).unwrap();
        log.record(event(5)).unwrap();
        log.sync().await.unwrap();
        assert_eq!(verify(&path, &ChainKey::default(), None).unwrap(), Verification::Intact { lines: 6, unkeyed: 0 });
        let last: AuditRecord = serde_json::from_str(std::fs::read_to_string(&path).unwrap().lines().last().unwrap()).unwrap();
        assert_eq!((last.seq, last.actor.as_str()), (5, "after"), "the chain goes on from the last synced line");
        drop(log);
        // Opened again after a clean stop: the chain goes on after the last line.
        let log = AuditLog::open(Some(&path), "again", false).unwrap();
        log.record(event(6)).unwrap();
        drop(log);
        assert_eq!(verify(&path, &ChainKey::default(), None).unwrap(), Verification::Intact { lines: 7, unkeyed: 0 });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Rewrites a trail line by line with `change`, every hash recomputed without a key: what
    /// someone who can write the file but does not hold the key can do.
    fn rewrite(path: &Path, change: impl Fn(&mut AuditRecord)) {
        let mut prev = GENESIS.to_string();
        let mut out = String::new();
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let mut record: AuditRecord = serde_json::from_str(line).unwrap();
            change(&mut record);
            record.prev = prev;
            record.hash = chain_hash(&ChainKey::default(), &record.prev, record.seq, &record.time, &record.actor, &record.event);
            prev = record.hash.clone();
            out.push_str(&serde_json::to_string(&record).unwrap());
            out.push('\n');
        }
        std::fs::write(path, out).unwrap();
    }

    #[tokio::test]
    async fn a_keyed_trail_with_its_published_head_finds_a_cut_end_and_a_whole_rewrite() {
        let dir = scratch("keyed");
        let path = dir.join("audit.jsonl");
        let key = ChainKey::hmac(b"0123456789abcdef0123456789abcdef").unwrap();
        assert!(ChainKey::hmac(b"short").err().unwrap().to_string().contains("at least 32"));
        // Two lines from before the trail was keyed, then keyed ones.
        let log = AuditLog::open(Some(&path), "test", false).unwrap();
        (0..2).for_each(|n| log.record(event(n)).unwrap());
        drop(log);
        let log = AuditLog::open(Some(&path), "test", false).unwrap().keyed(key.clone());
        (2..6).for_each(|n| log.record(event(n)).unwrap());
        let head = log.head().unwrap();
        assert_eq!(head.seq, 5);
        drop(log);
        let intact = verify(&path, &key, Some(&head)).unwrap();
        assert_eq!(intact, Verification::Intact { lines: 6, unkeyed: 2 });
        assert!(matches!(verify(&path, &ChainKey::default(), None).unwrap(), Verification::Broken { line: 3, .. }), "keyed lines do not verify without the key");
        assert_eq!(head.to_string().parse::<Head>().unwrap(), head);
        assert!("5:xyz".parse::<Head>().is_err() && "five".parse::<Head>().is_err());

        // Cut at its end: the chain that is left is whole, but the published head is missing.
        let text = std::fs::read_to_string(&path).unwrap();
        let cut: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, &cut).unwrap();
        assert_eq!(verify(&path, &key, None).unwrap(), Verification::Intact { lines: 4, unkeyed: 2 });
        match verify(&path, &key, Some(&head)).unwrap() {
            Verification::Broken { line: 5, why } => assert!(why.contains("cut from its end"), "{why}"),
            other => panic!("a cut end went unnoticed: {other:?}"),
        }

        // Rewritten whole without the key: every hash recomputed, so only the key or the head tells.
        std::fs::write(&path, &text).unwrap();
        rewrite(&path, |record| {
            if record.seq == 3 {
                record.event.user = Some("someone-else".into());
            }
        });
        assert_eq!(verify(&path, &ChainKey::default(), None).unwrap(), Verification::Intact { lines: 6, unkeyed: 0 }, "unkeyed, a rewrite verifies");
        match verify(&path, &ChainKey::default(), Some(&head)).unwrap() {
            Verification::Broken { line: 6, why } => assert!(why.contains("rewritten"), "{why}"),
            other => panic!("a rewrite went unnoticed by the head: {other:?}"),
        }
        // Under the key, every line shows as written before the trail was keyed (which the
        // command reports), and the published head breaks it.
        assert_eq!(verify(&path, &key, None).unwrap(), Verification::Intact { lines: 6, unkeyed: 6 });
        assert!(matches!(verify(&path, &key, Some(&head)).unwrap(), Verification::Broken { line: 6, .. }));
        // A line changed after the keyed ones begin, without the key, breaks the chain there.
        std::fs::write(&path, &text).unwrap();
        let changed: String = text.lines().enumerate().map(|(i, l)| if i == 4 { l.replacen("user4", "user9", 1) } else { l.to_string() } + "\n").collect();
        std::fs::write(&path, changed).unwrap();
        assert!(matches!(verify(&path, &key, None).unwrap(), Verification::Broken { line: 5, .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_trail_open_in_one_place_cannot_be_opened_in_another() {
        let dir = scratch("locked");
        let path = dir.join("audit.jsonl");
        let first = AuditLog::open(Some(&path), "first", false).unwrap();
        first.record(event(0)).unwrap();
        // A second open file description conflicts as a second process's would.
        let refused = AuditLog::open(Some(&path), "second", false).err().expect("a second writer is refused");
        assert_eq!(refused.kind(), std::io::ErrorKind::WouldBlock);
        assert!(refused.to_string().contains("open in another process") && refused.to_string().contains("audit.jsonl"), "{refused}");
        drop(first);
        assert_eq!(lines_in(&path), 1, "the refused open cut nothing");
        drop(AuditLog::open(Some(&path), "second", false).expect("free once the first is closed"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file in memory that counts the bytes read from it.
    struct Counted {
        bytes: Vec<u8>,
        read: std::sync::atomic::AtomicU64,
    }

    impl FileExt for Counted {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
            let from = (offset as usize).min(self.bytes.len());
            let n = buf.len().min(self.bytes.len() - from);
            buf[..n].copy_from_slice(&self.bytes[from..from + n]);
            self.read.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(n)
        }
        fn write_at(&self, _: &[u8], _: u64) -> std::io::Result<usize> {
            unreachable!("the tail is only read")
        }
    }

    /// `n` chained lines, as a trail holds them.
    fn trail_of(n: u64, detail: impl Fn(u64) -> Option<String>) -> Vec<u8> {
        let mut chain = Chain { seq: 0, prev: GENESIS.to_string() };
        let (mut bytes, mut line) = (Vec::new(), Vec::new());
        for seq in 0..n {
            let mut event = event(seq as u32);
            event.detail = detail(seq);
            let hash = chain_line(&ChainKey::default(), &mut line, &chain, &jiff::Timestamp::now(), "test", &event);
            bytes.extend_from_slice(&line);
            chain = Chain { seq: seq + 1, prev: String::from_utf8(hash.to_vec()).unwrap() };
        }
        bytes
    }

    fn tail_of(bytes: &[u8], window: u64) -> (u64, Option<u64>, u64) {
        let file = Counted { bytes: bytes.to_vec(), read: Default::default() };
        let (valid, last) = tail(&file, bytes.len() as u64, window).unwrap();
        (valid, last.map(|r| r.seq), file.read.into_inner())
    }

    #[test]
    fn opening_reads_only_the_end_of_the_trail() {
        let trail = trail_of(20_000, |_| None);
        assert!(trail.len() as u64 > 20 * TAIL_WINDOW);
        let (valid, last, read) = tail_of(&trail, TAIL_WINDOW);
        assert_eq!((valid, last), (trail.len() as u64, Some(19_999)));
        assert!(read <= TAIL_WINDOW, "read {read} bytes of {}", trail.len());

        // A line cut short is left out; the window grows past lines longer than it.
        let mut cut = trail_of(3, |seq| (seq == 1).then(|| "x".repeat(1000)));
        let whole = cut.len() as u64;
        cut.extend_from_slice(b"{\"seq\":3,\"ti");
        let (valid, last, _) = tail_of(&cut, 16);
        assert_eq!((valid, last), (whole, Some(2)));
        let long_last = trail_of(3, |seq| (seq == 2).then(|| "x".repeat(1000)));
        let (valid, last, _) = tail_of(&long_last, 16);
        assert_eq!((valid, last), (long_last.len() as u64, Some(2)));

        // A complete line that is no record (a file damaged by hand) is passed over.
        let mut damaged = trail_of(2, |_| None);
        damaged.extend_from_slice(b"not a record\n");
        let (valid, last, _) = tail_of(&damaged, 8);
        assert_eq!((valid, last), (damaged.len() as u64, Some(1)));

        for (bytes, valid) in [(&b""[..], 0), (b"{\"seq\":0", 0), (b"garbage\n", 8), (b"garbage\n{\"se", 8)] {
            let (found, last, _) = tail_of(bytes, 4);
            assert_eq!((found, last), (valid, None), "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn removing_a_trail_leaves_neither_it_nor_an_old_journal() {
        let dir = scratch("removed");
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(Some(&path), "test", false).unwrap();
        log.record(event(0)).unwrap();
        drop(log);
        assert!(legacy_journal(&path).is_none(), "no journal is kept any more");
        std::fs::write(legacy_journal_path(&path), b"left by an older operator").unwrap();
        assert_eq!(legacy_journal(&path), Some(legacy_journal_path(&path)));
        remove(&path).unwrap();
        assert!(!path.exists() && !legacy_journal_path(&path).exists());
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
        assert_eq!(lines_in(&path), 1, "the line waited in memory for longer than FLUSH_EVERY");
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_line_longer_than_a_batch_goes_to_the_trail_in_order() {
        let dir = scratch("long");
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(Some(&path), "test", false).unwrap();
        log.record(event(0)).unwrap();
        let mut long = event(1);
        long.detail = Some("x".repeat(BATCH + 1));
        log.record(long).unwrap();
        log.record(event(2)).unwrap();
        log.sync().await.unwrap();
        assert_eq!(verify(&path, &ChainKey::default(), None).unwrap(), Verification::Intact { lines: 3, unkeyed: 0 });
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
        assert_eq!(verify(&path, &ChainKey::default(), None).unwrap(), Verification::Intact { lines: 64 * 50, unkeyed: 0 });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_fails_its_callers_and_every_later_line() {
        let dir = scratch("full");
        // /dev/full refuses every write with ENOSPC, as a full volume would: the line waits in
        // memory, and the sync that would write it to the trail fails.
        let file = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let log = AuditLog::writing_to(Some(Trail { file, pending: Vec::new(), len: 0 }), Chain { seq: 0, prev: GENESIS.into() }, None, "test", false).unwrap();
        log.record(event(1)).unwrap();
        let failed = log.sync().await.unwrap_err();
        assert!(failed.to_string().contains("space"), "{failed}");
        let later = log.record(event(2)).unwrap_err();
        assert!(later.to_string().contains("restart the operator"), "{later}");
        assert!(log.sync().await.is_err(), "nothing is reported after a failed line");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
