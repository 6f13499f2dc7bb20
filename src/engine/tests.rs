//! The engine against an in-memory provider: invariants without any network.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::*;
use crate::audit::Action;
use crate::backends::{Capabilities, Enrollment, ErrorKind, FactorRef, Membership, Unreadable, UserPage, UserSnapshot};
use crate::ledger::MemoryLedger;

const CUTOFF_MS: i64 = 1_000_000;

/// Users with factors (id, kind, created ms); `broken` users fail every write.
#[derive(Default)]
struct FakeProvider {
    factors: Mutex<HashMap<String, Vec<(String, FactorKind, i64)>>>,
    broken: Vec<String>,
    deletes: Mutex<Vec<String>>,
    /// Users whose sessions were ended, once per call.
    sessions_ended: Mutex<Vec<String>>,
    /// Ask the engine to stop once this many users have been invalidated.
    stop_after: Mutex<Option<(usize, watch::Sender<bool>)>>,
    /// When set: users whose snapshot is durable in the ledger; touching anyone else is a bug.
    recorded: Option<Arc<Mutex<HashSet<String>>>>,
    /// Users per page.
    page: usize,
    /// When set, every snapshot and revocation takes this long, so calls overlap.
    call_time: Option<Duration>,
    /// Calls under way now, and the most there ever were at once.
    in_call: AtomicUsize,
    most_in_call: AtomicUsize,
    /// Groups: their direct members (user ids) and their subgroups.
    groups: HashMap<String, (Vec<String>, Vec<String>)>,
    /// Users asked to enroll again.
    required: Mutex<Vec<String>>,
    /// The last page of all users points back to the first, as a broken provider might.
    wraps_around: bool,
    /// Asking who enrolled since the cutoff fails (its log unreadable).
    enrollment_log_down: bool,
    /// Factors the provider shows no creation time for, with the time its log has them
    /// registered at; and how late the log is.
    undated: HashMap<String, i64>,
    log_delay: Option<Duration>,
    /// The log cannot be read (no permission).
    log_forbidden: bool,
    /// Factors whose deletion fails; factors already gone when deleted; factors refused while
    /// the user holds others (`AfterOthers`), and factors refused always.
    failing: Vec<String>,
    gone: Vec<String>,
    refused_while_others: Vec<String>,
    /// The page of all users starting here cannot be read (a next link to another host).
    unreadable_page_at: Option<usize>,
    /// Records on the first page of every listing (all users, or a group's members) that did
    /// not decode.
    malformed: Vec<Unreadable>,
    /// The organisation's event log, served as a stream two events a page when `stream` is set.
    stream: bool,
    /// Events a page of the stream holds (2 unless set).
    events_per_page: usize,
    events: Mutex<Vec<crate::watch::IdentityEvent>>,
    /// Users asked about one by one (`enrolled_since`).
    asked: Mutex<Vec<String>>,
}

impl FakeProvider {
    /// Counts the call as under way for `call_time`.
    async fn take_time(&self) {
        let Some(time) = self.call_time else { return };
        let now = self.in_call.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_call.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(time).await;
        self.in_call.fetch_sub(1, Ordering::SeqCst);
    }

    fn assert_recorded(&self, user: &UserRef) {
        if let Some(recorded) = &self.recorded {
            assert!(recorded.lock().unwrap().contains(&user.id), "{} touched before its snapshot was recorded", user.id);
        }
    }
}

/// A ledger that tells which users' snapshots it holds, and can fail one segment's first write
/// (as a crash right before it would).
struct WatchedLedger {
    inner: MemoryLedger,
    recorded: Arc<Mutex<HashSet<String>>>,
    fail_first_write_of: Mutex<Option<u32>>,
}

#[async_trait]
impl LedgerStore for WatchedLedger {
    async fn read_watch(&self, backend: &str) -> Result<Option<crate::watch::WatchState>> {
        self.inner.read_watch(backend).await
    }
    async fn write_watch(&self, state: &crate::watch::WatchState) -> Result<()> {
        self.inner.write_watch(state).await
    }
    fn pseudonym(&self, value: &str) -> String {
        self.inner.pseudonym(value)
    }
    async fn segments(&self, backend: &str) -> Result<Vec<u32>> {
        self.inner.segments(backend).await
    }
    async fn read(&self, backend: &str, index: u32) -> Result<Segment> {
        self.inner.read(backend, index).await
    }
    async fn write(&self, segment: &Segment) -> Result<()> {
        // Slow enough that a run which waited on it between pages would show.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        if self.fail_first_write_of.lock().unwrap().take_if(|index| *index == segment.index).is_some() {
            return Err(crate::Error::Ledger { name: format!("fake/{}", segment.index), message: "crashed".into() });
        }
        self.inner.write(segment).await?;
        let mut recorded = self.recorded.lock().unwrap();
        recorded.extend(segment.users.iter().filter(|r| r.snapshot.is_some()).map(|r| r.user.id.clone()));
        Ok(())
    }
}

impl FakeProvider {
    fn with_users(n: usize) -> Self {
        let factors = (0..n)
            .map(|i| (format!("u{i:03}"), vec![(format!("u{i:03}-totp"), FactorKind::Totp, 10), (format!("u{i:03}-key"), FactorKind::Webauthn, 20)]))
            .collect();
        Self { factors: Mutex::new(factors), page: 10, events_per_page: 2, ..Default::default() }
    }
}

#[async_trait]
impl IdentityProvider for FakeProvider {
    fn capabilities(&self) -> Capabilities {
        Capabilities { list_factors: true, delete_factor: true, log_delay: self.log_delay, event_stream: self.stream, ..Default::default() }
    }
    async fn read_events(&self, query: &crate::watch::EventQuery<'_>) -> Result<crate::watch::EventPage, ProviderError> {
        let events = self.events.lock().unwrap();
        let start: usize = query.cursor.map_or(0, |c| c.parse().unwrap());
        let fits = |e: &crate::watch::IdentityEvent| e.at >= query.from && query.until.is_none_or(|u| e.at < u) && query.user.is_none_or(|u| u.id == e.user_id);
        let page: Vec<_> = events[start.min(events.len())..].iter().take(self.events_per_page).cloned().collect();
        let next = (start + page.len()).to_string();
        let more = start + page.len() < events.len();
        Ok(crate::watch::EventPage { events: page.into_iter().filter(fits).collect(), skipped: Vec::new(), cursor: Some(next), more })
    }
    async fn factor_ages(&self, _: &UserRef, factors: &[FactorRef], cutoff: jiff::Timestamp, _: jiff::Timestamp) -> Result<Vec<crate::backends::LoggedAge>, ProviderError> {
        if self.log_forbidden {
            return Err(ProviderError::new(ErrorKind::Auth, "403 from GET /logs: grant the log permission"));
        }
        use crate::backends::LoggedAge;
        Ok(factors.iter().map(|f| if self.undated[&f.id] >= cutoff.as_millisecond() { LoggedAge::Since } else { LoggedAge::Before }).collect())
    }
    async fn check(&self) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn list_users(&self, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        let mut names: Vec<String> = self.factors.lock().unwrap().keys().cloned().collect();
        names.sort();
        let start: usize = cursor.map(|c| c.parse().unwrap()).unwrap_or(0);
        if self.unreadable_page_at == Some(start) {
            return Err(ProviderError::new(ErrorKind::Rejected, "a next page link outside https://api.example"));
        }
        let page: Vec<UserRef> = names.iter().skip(start).take(self.page).map(|n| user(n)).collect();
        let next = if start + page.len() < names.len() {
            Some((start + page.len()).to_string())
        } else {
            self.wraps_around.then(|| "0".to_string())
        };
        let unreadable = if start == 0 { self.malformed.clone() } else { Vec::new() };
        Ok(UserPage { users: page, next, unreadable })
    }
    /// The group's own members, then each subgroup's, `page` at a time. Cursor:
    /// "<group in the tree>:<offset>".
    async fn group_members(&self, group: &str, membership: Membership, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        let mut tree = vec![group.to_string()];
        let mut next = 0;
        while membership == Membership::Transitive && next < tree.len() {
            let subgroups = self.groups.get(&tree[next]).map(|g| g.1.clone()).unwrap_or_default();
            tree.extend(subgroups);
            next += 1;
        }
        let (index, offset) = cursor.and_then(|c| c.split_once(':')).map(|(i, o)| (i.parse().unwrap(), o.parse().unwrap())).unwrap_or((0, 0));
        let (members, _) = self.groups.get(&tree[index]).ok_or_else(|| ProviderError::new(ErrorKind::NotFound, format!("group {group} not found")))?;
        let page: Vec<UserRef> = members.iter().skip(offset).take(self.page).map(|id| user(id)).collect();
        let next = if offset + page.len() < members.len() {
            Some(format!("{index}:{}", offset + page.len()))
        } else {
            (index + 1 < tree.len()).then(|| format!("{}:0", index + 1))
        };
        let unreadable = if cursor.is_none() { self.malformed.clone() } else { Vec::new() };
        Ok(UserPage { users: page, next, unreadable })
    }
    async fn find_user(&self, name: &str) -> Result<Vec<UserRef>, ProviderError> {
        let id = name.to_lowercase();
        Ok(self.factors.lock().unwrap().contains_key(&id).then(|| user(&id)).into_iter().collect())
    }
    async fn snapshot(&self, user: &UserRef, _: &[FactorKind], cutoff: jiff::Timestamp) -> Result<UserSnapshot, ProviderError> {
        self.take_time().await;
        let held = self.factors.lock().unwrap()[&user.id].clone();
        let factors = held
            .iter()
            .filter(|(id, _, created)| self.undated.contains_key(id) || *created < cutoff.as_millisecond())
            .map(|(id, kind, _)| FactorRef { unknown_age: self.undated.contains_key(id), ..FactorRef::new(id.clone(), *kind, kind.as_str()) })
            .collect();
        let enrolled_since_cutoff = held
            .iter()
            .find(|(id, _, created)| !self.undated.contains_key(id) && *created >= cutoff.as_millisecond())
            .map(|(_, kind, created)| Enrollment { kind: *kind, at: jiff::Timestamp::from_millisecond(*created).unwrap(), origin: None });
        Ok(UserSnapshot { factors, sessions: 1, enrolled_since_cutoff, ..Default::default() })
    }
    async fn revoke_sessions(&self, user: &UserRef, _: &UserSnapshot) -> Result<(), ProviderError> {
        self.assert_recorded(user);
        self.take_time().await;
        if self.broken.contains(&user.id) {
            return Err(ProviderError::new(ErrorKind::Rejected, format!("{}: 500 from POST /logout", user.id)));
        }
        self.sessions_ended.lock().unwrap().push(user.id.clone());
        Ok(())
    }
    async fn revoke_factor(&self, user: &UserRef, factor: &FactorRef) -> Result<RevokeOutcome, ProviderError> {
        self.assert_recorded(user);
        self.take_time().await;
        if self.failing.contains(&factor.id) {
            return Err(ProviderError::new(ErrorKind::Rejected, format!("500 from DELETE /factors/{}", factor.id)));
        }
        let mut all = self.factors.lock().unwrap();
        let held = all.get_mut(&user.id).unwrap();
        if self.refused_while_others.contains(&factor.id) && held.len() > 1 {
            return Ok(RevokeOutcome::AfterOthers(ProviderError::new(ErrorKind::Rejected, format!("400 from DELETE /factors/{}: the default method", factor.id))));
        }
        if self.gone.contains(&factor.id) {
            held.retain(|(id, _, _)| id != &factor.id);
            return Ok(RevokeOutcome::AlreadyGone);
        }
        self.deletes.lock().unwrap().push(factor.id.clone());
        let before = held.len();
        held.retain(|(id, _, _)| id != &factor.id);
        Ok(if held.len() < before { RevokeOutcome::Revoked } else { RevokeOutcome::AlreadyGone })
    }
    async fn require_enrollment(&self, user: &UserRef, _: &[FactorRef], _channel: crate::backends::EnrollmentChannel) -> Result<(), ProviderError> {
        self.required.lock().unwrap().push(user.id.clone());
        if let Some((after, stop)) = &*self.stop_after.lock().unwrap()
            && self.deletes.lock().unwrap().len() >= after * 2
        {
            let _ = stop.send(true);
        }
        Ok(())
    }
    async fn enrolled_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError> {
        self.asked.lock().unwrap().push(user.id.clone());
        if self.enrollment_log_down {
            return Err(ProviderError::new(ErrorKind::Unavailable, "503 from GET /logs"));
        }
        Ok(self.factors.lock().unwrap()[&user.id]
            .iter()
            .find(|(_, _, created)| *created >= cutoff.as_millisecond())
            .map(|(_, kind, created)| Enrollment { kind: *kind, at: jiff::Timestamp::from_millisecond(*created).unwrap(), origin: None }))
    }
    async fn disable_user(&self, _: &UserRef) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// The fake's users: the id is the username in lower case, as the provider stores it.
fn user(id: &str) -> UserRef {
    UserRef { id: id.to_string(), username: id.to_string() }
}

fn job() -> RecallJob {
    RecallJob {
        recall: "ns/r".into(),
        backend: "fake".into(),
        scope: ScopeSelector::AllUsers,
        exclude_users: vec!["u003".into()],
        exclude_groups: vec![],
        kinds: vec![FactorKind::All],
        revoke_sessions: true,
        cutoff: jiff::Timestamp::from_millisecond(CUTOFF_MS).unwrap(),
        concurrency: 4,
        window: Default::default(),
        notices: None,
        channel: Default::default(),
        plan_only: false,
        rollout: None,
        exclusions_now: None,
    }
}

fn audit() -> Arc<AuditLog> {
    Arc::new(AuditLog::open(None, "test", false).unwrap())
}

// Two runtime threads: the users go to two worker tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_is_accounted_for_and_failures_carry_their_error() {
    let mut provider = FakeProvider::with_users(25);
    provider.broken = vec!["u007".into()];
    let provider = Arc::new(provider);
    let ledger = Arc::new(MemoryLedger::default());
    let audit = audit();
    let (_stop, stop_rx) = watch::channel(false);
    let progress = SharedProgress::default();
    let runner = Runner { provider: provider.clone(), ledger: ledger.clone(), audit: audit.clone(), progress: progress.clone(), stop: stop_rx };
    assert_eq!(runner.revoke(&job()).await.unwrap(), RunEnd::Finished);
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.targeted, c.invalidated, c.excluded, c.failed), (25, 23, 1, 1));
    assert_eq!(c.factors_revoked.get(&FactorKind::Totp), Some(&23));
    let failed = ledger.read("fake", 0).await.unwrap().users.into_iter().find(|r| r.user.id == "u007").unwrap();
    assert!(failed.note.unwrap().contains("500 from POST /logout"));
    // The excluded user keeps everything.
    assert_eq!(provider.factors.lock().unwrap()["u003"].len(), 2);
}

/// A ledger that, at each write, finds in the trail file the audit lines of everything the
/// segment counts: a kill loses only lines the ledger does not count.
struct AuditedLedger {
    inner: MemoryLedger,
    trail: std::path::PathBuf,
    checked: AtomicUsize,
}

#[async_trait]
impl LedgerStore for AuditedLedger {
    async fn read_watch(&self, backend: &str) -> Result<Option<crate::watch::WatchState>> {
        self.inner.read_watch(backend).await
    }
    async fn write_watch(&self, state: &crate::watch::WatchState) -> Result<()> {
        self.inner.write_watch(state).await
    }
    fn pseudonym(&self, value: &str) -> String {
        self.inner.pseudonym(value)
    }
    async fn segments(&self, backend: &str) -> Result<Vec<u32>> {
        self.inner.segments(backend).await
    }
    async fn read(&self, backend: &str, index: u32) -> Result<Segment> {
        self.inner.read(backend, index).await
    }
    async fn write(&self, segment: &Segment) -> Result<()> {
        let lines: Vec<crate::audit::AuditRecord> = std::fs::read_to_string(&self.trail).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let audited = |user: &str, action: Action, factor: Option<&str>| {
            lines.iter().any(|l| l.event.user.as_deref() == Some(user) && l.event.action == action && (factor.is_none() || l.event.factor_id.as_deref() == factor))
        };
        for record in segment.users.iter().filter(|r| r.state != UserState::Planned) {
            let name = &record.user.username;
            let finished = match record.state {
                UserState::Invalidated => Action::EnrollmentRequire,
                UserState::Excluded => Action::UserExclude,
                UserState::Failed => Action::UserFail,
                _ => continue,
            };
            assert!(audited(name, finished, None), "{name} counted as {:?} before its audit line was in the trail", record.state);
            for factor in record.lost() {
                assert!(audited(name, Action::FactorRevoke, Some(&factor.id)), "{} counted as revoked before its audit line was in the trail", factor.id);
            }
            self.checked.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.write(segment).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_counts_only_what_is_already_in_the_trail_file() {
    let dir = std::env::temp_dir().join(format!("mfa-engine-audited-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trail = dir.join("audit.jsonl");
    crate::audit::remove(&trail).unwrap();
    let mut provider = FakeProvider::with_users(25);
    provider.broken = vec!["u007".into()];
    let provider = Arc::new(provider);
    let ledger = Arc::new(AuditedLedger { inner: MemoryLedger::default(), trail: trail.clone(), checked: AtomicUsize::new(0) });
    let audit = Arc::new(AuditLog::open(Some(&trail), "test", false).unwrap());
    let runner = Runner { provider, ledger: ledger.clone(), audit, progress: SharedProgress::default(), stop: watch::channel(false).1 };
    assert_eq!(runner.revoke(&job()).await.unwrap(), RunEnd::Finished);
    assert!(ledger.checked.load(Ordering::SeqCst) >= 25, "every user's lines were checked");
    drop(runner);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A ledger that keeps only the first write of each segment, as an operator killed before
/// recording any finished segment leaves it: every user still planned.
#[derive(Default)]
struct FirstWritesOnly(MemoryLedger);

#[async_trait]
impl LedgerStore for FirstWritesOnly {
    async fn read_watch(&self, backend: &str) -> Result<Option<crate::watch::WatchState>> {
        self.0.read_watch(backend).await
    }
    async fn write_watch(&self, state: &crate::watch::WatchState) -> Result<()> {
        self.0.write_watch(state).await
    }
    fn pseudonym(&self, value: &str) -> String {
        self.0.pseudonym(value)
    }
    async fn segments(&self, backend: &str) -> Result<Vec<u32>> {
        self.0.segments(backend).await
    }
    async fn read(&self, backend: &str, index: u32) -> Result<Segment> {
        self.0.read(backend, index).await
    }
    async fn write(&self, segment: &Segment) -> Result<()> {
        if !self.0.segments(&segment.backend).await?.contains(&segment.index) {
            self.0.write(segment).await?;
        }
        Ok(())
    }
}

/// Ids of the calls made more than once.
fn repeated(calls: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut twice: Vec<String> = calls.iter().filter(|c| !seen.insert(*c)).cloned().collect();
    twice.sort();
    twice.dedup();
    twice
}

// After a restart, users the ledger still shows as planned are taken up from the audit trail:
// those whose lines all reached the trail are not touched again, one whose last lines were lost
// goes on from the steps that reached it, and the counts come out the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_takes_up_finished_users_from_the_trail_and_redoes_only_those_cut_short() {
    let dir = std::env::temp_dir().join(format!("mfa-engine-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let trail = dir.join("audit.jsonl");
    let provider = Arc::new(FakeProvider::with_users(30));
    let ledger = Arc::new(FirstWritesOnly::default());
    let run = |audit: Arc<AuditLog>, progress: SharedProgress| Runner { provider: provider.clone(), ledger: ledger.clone(), audit, progress, stop: watch::channel(false).1 };
    let first = SharedProgress::default();
    assert_eq!(run(Arc::new(AuditLog::open(Some(&trail), "first", false).unwrap()), first.clone()).revoke(&job()).await.unwrap(), RunEnd::Finished);
    let done = first.lock().unwrap().counts.clone();
    assert_eq!((done.invalidated, done.excluded, done.sessions_revoked), (29, 1, 29));
    let segments = ledger.0.segments("fake").await.unwrap();
    for index in &segments {
        let segment = ledger.0.read("fake", *index).await.unwrap();
        assert!(segment.users.iter().all(|r| r.state != UserState::Invalidated), "the ledger keeps no finished user");
        assert!(segment.audit_from.is_some(), "each segment marks where its users' lines start");
    }

    // The last lines of the trail are lost too: their users were in flight.
    let text = std::fs::read_to_string(&trail).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (kept, cut) = lines.split_at(lines.len() - 3);
    std::fs::write(&trail, kept.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let cut_users: HashSet<String> = cut.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["user"].as_str().unwrap().to_string()).collect();
    let before = (provider.sessions_ended.lock().unwrap().len(), provider.deletes.lock().unwrap().len());

    let second = SharedProgress::default();
    assert_eq!(run(Arc::new(AuditLog::open(Some(&trail), "second", false).unwrap()), second.clone()).revoke(&job()).await.unwrap(), RunEnd::Finished);
    assert_eq!(second.lock().unwrap().counts, done, "the resumed run counts what the first did");
    let sessions = provider.sessions_ended.lock().unwrap().clone();
    let deletes = provider.deletes.lock().unwrap().clone();
    assert!(sessions.len() - before.0 + deletes.len() - before.1 <= 3, "only the steps whose lines were cut are done again");
    let required = provider.required.lock().unwrap().clone();
    let again: HashSet<String> = [repeated(&sessions), repeated(&required), repeated(&deletes).into_iter().map(|f| f[..4].to_string()).collect()].concat().into_iter().collect();
    assert!(again.is_subset(&cut_users), "{again:?} worked on again; only {cut_users:?} were cut short");

    // Beside another trail (another operator process's), the segment is redone from the
    // provider's answers: every factor is found gone and counted as this recall's.
    let third = SharedProgress::default();
    let other = dir.join("other.jsonl");
    assert_eq!(run(Arc::new(AuditLog::open(Some(&other), "third", false).unwrap()), third.clone()).revoke(&job()).await.unwrap(), RunEnd::Finished);
    assert_eq!(third.lock().unwrap().counts.factors_revoked, done.factors_revoked);
    std::fs::remove_dir_all(&dir).unwrap();
}

// Two runtime threads: the users go to two worker tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_resumes_without_redoing_or_losing_anything_and_keeps_new_factors() {
    let (stop, stop_rx) = watch::channel(false);
    let provider = FakeProvider::with_users(30);
    *provider.stop_after.lock().unwrap() = Some((14, stop));
    let provider = Arc::new(provider);
    let ledger = Arc::new(MemoryLedger::default());
    let audit = audit();
    let first = Runner { provider: provider.clone(), ledger: ledger.clone(), audit: audit.clone(), progress: SharedProgress::default(), stop: stop_rx };
    assert_eq!(first.revoke(&job()).await.unwrap(), RunEnd::Stopped);

    // Meanwhile a user who was already done enrolls a new factor after the cutoff.
    provider.factors.lock().unwrap().get_mut("u000").unwrap().push(("u000-new".into(), FactorKind::Totp, CUTOFF_MS + 5));
    *provider.stop_after.lock().unwrap() = None;
    let (_stop, stop_rx) = watch::channel(false);
    let progress = SharedProgress::default();
    let second = Runner { provider: provider.clone(), ledger: ledger.clone(), audit: audit.clone(), progress: progress.clone(), stop: stop_rx };
    assert_eq!(second.revoke(&job()).await.unwrap(), RunEnd::Finished);

    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.targeted, c.invalidated, c.excluded, c.failed), (30, 29, 1, 0));
    assert_eq!(c.factors_revoked.values().sum::<i64>(), 58);
    let deletes = provider.deletes.lock().unwrap().clone();
    let unique: std::collections::HashSet<&String> = deletes.iter().collect();
    assert_eq!(unique.len(), deletes.len(), "a factor was deleted twice");
    assert!(!deletes.contains(&"u000-new".to_string()));
    assert_eq!(provider.factors.lock().unwrap()["u000"], vec![("u000-new".to_string(), FactorKind::Totp, CUTOFF_MS + 5)]);

    // Re-enrollment is then seen for that user only.
    assert_eq!(second.check_re_enrollment(&job()).await.unwrap(), RunEnd::Finished);
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.re_enrolled, c.pending), (1, 28));
}

#[tokio::test]
async fn sessions_left_alone_are_not_counted_as_ended() {
    let provider = FakeProvider::with_users(5);
    let provider = Arc::new(provider);
    let ledger = Arc::new(MemoryLedger::default());
    let audit = audit();
    let (_stop, stop_rx) = watch::channel(false);
    let progress = SharedProgress::default();
    let runner = Runner { provider: provider.clone(), ledger: ledger.clone(), audit: audit.clone(), progress: progress.clone(), stop: stop_rx };
    let job = RecallJob { revoke_sessions: false, ..job() };
    assert_eq!(runner.revoke(&job).await.unwrap(), RunEnd::Finished);
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.invalidated, c.sessions_revoked), (4, 0));
}

// Two runtime threads: the users go to two worker tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_overlap_without_touching_anyone_before_their_snapshot_is_recorded() {
    let recorded = Arc::new(Mutex::new(HashSet::new()));
    let (stop, stop_rx) = watch::channel(false);
    let mut provider = FakeProvider::with_users(950);
    provider.page = 50;
    provider.recorded = Some(recorded.clone());
    *provider.stop_after.lock().unwrap() = Some((470, stop));
    let provider = Arc::new(provider);
    let ledger = Arc::new(WatchedLedger { inner: MemoryLedger::default(), recorded, fail_first_write_of: Mutex::default() });
    let audit = audit();
    let job = RecallJob { concurrency: 8, ..job() };
    let first = Runner { provider: provider.clone(), ledger: ledger.clone(), audit: audit.clone(), progress: SharedProgress::default(), stop: stop_rx };
    assert_eq!(first.revoke(&job).await.unwrap(), RunEnd::Stopped);
    let restored = first.restore(&job).await.unwrap();
    assert!(!restored.unfinished.is_empty(), "a stop mid-run leaves work to resume");

    *provider.stop_after.lock().unwrap() = None;
    let (_stop, stop_rx) = watch::channel(false);
    let progress = SharedProgress::default();
    let second = Runner { provider: provider.clone(), ledger: ledger.clone(), audit: audit.clone(), progress: progress.clone(), stop: stop_rx };
    assert_eq!(second.revoke(&job).await.unwrap(), RunEnd::Finished);
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.targeted, c.invalidated, c.excluded, c.failed, c.pending), (950, 949, 1, 0, 949));
    assert!(progress.lock().unwrap().listed);
    // Every segment is recorded complete, in order, and nothing was deleted twice. Pages of 50:
    // the first page's head of 20, then 230 users (its rest and four pages: at least 200), 400,
    // and the last 300 (segments grow to 1,000 users).
    let segments = ledger.segments("fake").await.unwrap();
    assert_eq!(segments, vec![0, 1, 2, 3]);
    let sizes: Vec<usize> = futures::future::join_all(segments.iter().map(|i| ledger.read("fake", *i))).await.into_iter().map(|s| s.unwrap().users.len()).collect();
    assert_eq!(sizes, vec![20, 230, 400, 300]);
    for index in segments {
        assert!(ledger.read("fake", index).await.unwrap().complete, "segment {index} left incomplete");
    }
    let deletes = provider.deletes.lock().unwrap().clone();
    assert_eq!(deletes.len(), deletes.iter().collect::<HashSet<_>>().len(), "a factor was deleted twice");
    assert_eq!(deletes.len(), 949 * 2);
}

// Listing ahead and working users share the backend's concurrency: together they never keep more
// than `concurrency` users at the provider, so its cap on requests in flight is never queued on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_revocations_together_stay_within_the_concurrency() {
    let mut provider = FakeProvider::with_users(400);
    provider.page = 50;
    provider.call_time = Some(Duration::from_millis(2));
    let provider = Arc::new(provider);
    let (_stop, stop_rx) = watch::channel(false);
    let progress = SharedProgress::default();
    let runner = Runner { provider: provider.clone(), ledger: Arc::new(MemoryLedger::default()), audit: audit(), progress: progress.clone(), stop: stop_rx };
    let job = RecallJob { concurrency: 8, ..job() };
    assert_eq!(runner.revoke(&job).await.unwrap(), RunEnd::Finished);
    assert_eq!(progress.lock().unwrap().counts.invalidated, 399);
    let most = provider.most_in_call.load(Ordering::SeqCst);
    assert!(most <= 8, "{most} calls at the provider at once with a concurrency of 8");
    assert!(most >= 6, "only {most} calls at once: the run did not use its concurrency");
}

// The first page is recorded as a short head and the rest; a crash between the two lists the page
// again on resume, leaving out the head's users, so nobody is recorded or worked on twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_head_of_the_first_page_resumes_the_rest_of_it_once() {
    let recorded = Arc::new(Mutex::new(HashSet::new()));
    let mut provider = FakeProvider::with_users(70);
    provider.page = 50;
    provider.recorded = Some(recorded.clone());
    let provider = Arc::new(provider);
    let ledger = Arc::new(WatchedLedger { inner: MemoryLedger::default(), recorded, fail_first_write_of: Mutex::new(Some(1)) });
    let audit = audit();
    let (_stop, stop_rx) = watch::channel(false);
    let first = Runner { provider: provider.clone(), ledger: ledger.clone(), audit: audit.clone(), progress: SharedProgress::default(), stop: stop_rx.clone() };
    assert!(first.revoke(&job()).await.is_err(), "the failed write of the page's rest ends the run");
    let head = ledger.read("fake", 0).await.unwrap();
    assert_eq!(head.users.len(), HEAD_USERS);
    assert_eq!(head.head_of_page, Some(PageStart { cursor: None }));
    assert_eq!(ledger.segments("fake").await.unwrap(), vec![0], "only the head was recorded");
    let restored = first.restore(&job()).await.unwrap();
    assert_eq!((restored.cursor.as_deref(), restored.listed, restored.recorded_of_next_page.len()), (None, false, HEAD_USERS));

    let progress = SharedProgress::default();
    let second = Runner { provider: provider.clone(), ledger: ledger.clone(), audit, progress: progress.clone(), stop: stop_rx };
    assert_eq!(second.revoke(&job()).await.unwrap(), RunEnd::Finished);
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.targeted, c.invalidated, c.excluded, c.failed), (70, 69, 1, 0));
    // The head, then the rest of the first page with the second: each user in exactly one segment.
    let segments = ledger.segments("fake").await.unwrap();
    assert_eq!(segments, vec![0, 1]);
    let mut seen = HashSet::new();
    for index in segments {
        let segment = ledger.read("fake", index).await.unwrap();
        assert!(segment.complete, "segment {index} left incomplete");
        for record in segment.users {
            assert!(seen.insert(record.user.id.clone()), "{} recorded twice", record.user.id);
        }
    }
    assert_eq!(seen.len(), 70);
    let deletes = provider.deletes.lock().unwrap().clone();
    assert_eq!(deletes.len(), deletes.iter().collect::<HashSet<_>>().len(), "a factor was deleted twice");
    assert_eq!(deletes.len(), 69 * 2);
}

#[test]
fn a_factor_listed_twice_is_kept_once_in_order() {
    let factor = |id: &str| crate::backends::FactorRef::new(id, FactorKind::Totp, "otp");
    let mut factors = vec![factor("a"), factor("b"), factor("a"), factor("c"), factor("b")];
    dedup_factors(&mut factors);
    assert_eq!(factors.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
}

/// Groups as real directories look: `staff` and `ops` overlap, `admins` holds `breakglass`
/// two levels down.
fn with_groups(users: usize) -> FakeProvider {
    let ids = |range: std::ops::Range<usize>| range.map(|i| format!("u{i:03}")).collect::<Vec<_>>();
    let groups = [
        ("staff", ids(0..12), vec![]),
        ("ops", ids(8..16), vec!["ops-oncall".to_string()]),
        ("ops-oncall", ids(16..18), vec![]),
        ("admins", ids(20..22), vec!["admins-platform".to_string()]),
        ("admins-platform", ids(22..23), vec!["breakglass".to_string()]),
        ("breakglass", ids(23..24), vec![]),
    ];
    let groups = groups.into_iter().map(|(name, members, subgroups)| (name.to_string(), (members, subgroups))).collect();
    FakeProvider { groups, ..FakeProvider::with_users(users) }
}

fn runner_for(provider: &Arc<FakeProvider>, ledger: &Arc<MemoryLedger>, progress: &SharedProgress, stop: watch::Receiver<bool>) -> (Runner, Arc<AuditLog>) {
    let audit = audit();
    (Runner { provider: provider.clone(), ledger: ledger.clone(), audit: audit.clone(), progress: progress.clone(), stop }, audit)
}

/// Groups and names together: the union, each user once however often they are found, with
/// every name and group that matched nobody named in the progress and the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_scope_is_the_union_of_groups_and_names_each_user_once() {
    let provider = Arc::new(with_groups(40));
    let ledger = Arc::new(MemoryLedger::default());
    let progress = SharedProgress::default();
    let (_stop, stop_rx) = watch::channel(false);
    let (runner, _audit) = runner_for(&provider, &ledger, &progress, stop_rx);
    let names = ["U030", "u030", "u031", "u005", "ghost"].map(String::from).to_vec();
    let job = RecallJob { scope: ScopeSelector::listed(vec!["staff".into(), "ops".into(), "nope".into()], names), exclude_users: vec![], ..job() };
    assert_eq!(runner.revoke(&job).await.unwrap(), RunEnd::Finished);

    // staff 0-11, ops 8-15 and its subgroup 16-17, then u030 and u031 (u005 is in staff).
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.targeted, c.invalidated, c.names_not_found), (20, 20, 2), "{c:?}");
    assert_eq!(c.factors_revoked.values().sum::<i64>(), 40, "each user's two factors, once");
    let unresolved: Vec<String> = progress.lock().unwrap().unresolved.iter().cloned().collect();
    assert_eq!(unresolved, ["group nope", "user ghost"]);
    let deletes = provider.deletes.lock().unwrap().clone();
    assert_eq!(deletes.len(), deletes.iter().collect::<HashSet<_>>().len(), "a factor was deleted twice");

    // Counts and names come back whole from the ledger.
    let restored = SharedProgress::default();
    let (again, _) = runner_for(&provider, &ledger, &restored, watch::channel(false).1);
    again.restore(&job).await.unwrap();
    assert_eq!(restored.lock().unwrap().counts, c);
    assert_eq!(restored.lock().unwrap().unresolved.len(), 2);
}

/// Direct membership narrows a scope group to its own members.
#[tokio::test]
async fn direct_members_only_leaves_subgroups_out_of_scope() {
    let provider = Arc::new(with_groups(40));
    let progress = SharedProgress::default();
    let (runner, _audit) = runner_for(&provider, &Arc::default(), &progress, watch::channel(false).1);
    let scope = ScopeSelector::Listed { groups: vec!["ops".into()], users: vec![], membership: Membership::Direct };
    runner.revoke(&RecallJob { scope, exclude_users: vec![], ..job() }).await.unwrap();
    assert_eq!(progress.lock().unwrap().counts.targeted, 8, "u008-u015, not ops-oncall's");
}

/// Exclusions reach a break-glass account in a subgroup of a subgroup of an excluded group, and
/// match a name in any letter case; each rule's spares are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusions_reach_nested_groups_and_any_letter_case() {
    let provider = Arc::new(with_groups(30));
    let progress = SharedProgress::default();
    let (runner, _audit) = runner_for(&provider, &Arc::default(), &progress, watch::channel(false).1);
    let job = RecallJob { exclude_users: vec!["U004".into(), "nobody".into()], exclude_groups: vec!["admins".into()], ..job() };
    runner.revoke(&job).await.unwrap();
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.targeted, c.excluded, c.invalidated, c.names_not_found), (30, 5, 25, 1), "{c:?}");
    let by_rule: Vec<(&str, i64)> = c.excluded_by.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(by_rule, [("exclude.groups: admins", 4), ("exclude.users", 1)]);
    let factors = provider.factors.lock().unwrap();
    for spared in ["u004", "u020", "u021", "u022", "u023"] {
        assert_eq!(factors[spared].len(), 2, "{spared} must keep every factor");
    }
    assert_eq!(progress.lock().unwrap().unresolved.iter().collect::<Vec<_>>(), ["exclude.users: nobody"]);
}

/// An exclusion group that does not exist stops the recall before anyone is touched.
#[tokio::test]
async fn a_missing_exclusion_group_fails_before_anything_is_touched() {
    let provider = Arc::new(with_groups(10));
    let (runner, _audit) = runner_for(&provider, &Arc::default(), &SharedProgress::default(), watch::channel(false).1);
    let error = runner.revoke(&RecallJob { exclude_groups: vec!["admns".into()], ..job() }).await.unwrap_err();
    assert!(matches!(error, crate::Error::ExclusionGroupNotFound(_)), "{error:?}");
    assert!(error.to_string().contains("admns") && error.to_string().contains("exclude.groups"), "{error}");
    assert!(provider.deletes.lock().unwrap().is_empty());
}

/// Two records of the first page do not decode (one shows an id, one nothing): those two users
/// fail, named as far as they show, and every other user of the page and after goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_decode_fails_that_user_and_the_rest_go_on() {
    let value = serde_json::json!({ "id": "00u-ghost", "profile": 7 });
    let error = serde_json::from_value::<UserRef>(value.clone()).unwrap_err();
    let ghost = Unreadable::of(&value, &error);
    let nameless = Unreadable::of(&serde_json::json!({ "status": "ACTIVE" }), &error);
    assert_eq!((ghost.label.as_str(), nameless.label.as_str()), ("00u-ghost", "(a record with no identifier)"));
    let provider = Arc::new(FakeProvider { malformed: vec![ghost, nameless], ..FakeProvider::with_users(25) });
    let ledger = Arc::new(MemoryLedger::default());
    let progress = SharedProgress::default();
    let (runner, audit) = runner_for(&provider, &ledger, &progress, watch::channel(false).1);
    assert_eq!(runner.revoke(&job()).await.unwrap(), RunEnd::Finished);
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.targeted, c.invalidated, c.excluded, c.failed), (27, 24, 1, 2), "{c:?}");
    assert_eq!(provider.deletes.lock().unwrap().len(), 48, "every readable user's two factors");
    audit.sync().await.unwrap();
    let mut failed = Vec::new();
    for index in ledger.segments("fake").await.unwrap() {
        failed.extend(ledger.read("fake", index).await.unwrap().users.into_iter().filter(|r| r.state == UserState::Failed));
    }
    assert_eq!(failed.iter().map(|r| r.user.username.as_str()).collect::<Vec<_>>(), ["00u-ghost", "(a record with no identifier)"]);
    assert!(failed.iter().all(|r| r.note.as_deref().unwrap().starts_with("the provider's record of this user could not be read")));
}

/// An exclusion group is read whole: one member that does not decode stops the recall before
/// anyone is touched, rather than recall a user it was told to spare.
#[tokio::test]
async fn an_exclusion_group_with_a_member_that_does_not_decode_stops_the_recall_first() {
    let value = serde_json::json!({ "id": "u-admin" });
    let error = serde_json::from_value::<Vec<u8>>(value.clone()).unwrap_err();
    let provider = Arc::new(FakeProvider { malformed: vec![Unreadable::of(&value, &error)], ..with_groups(10) });
    let (runner, _audit) = runner_for(&provider, &Arc::default(), &SharedProgress::default(), watch::channel(false).1);
    let error = runner.revoke(&RecallJob { exclude_groups: vec!["admins".into()], ..job() }).await.unwrap_err();
    assert!(error.to_string().contains("a member of group admins could not be read (u-admin"), "{error}");
    assert!(provider.deletes.lock().unwrap().is_empty());
}

/// Gives u001 a key enrolled at the cutoff, then recalls every user; the runner and its progress.
async fn recall_with_u001_enrolled_at_the_cutoff(provider: FakeProvider) -> (Arc<FakeProvider>, Runner, SharedProgress) {
    provider.factors.lock().unwrap().get_mut("u001").unwrap().push(("u001-new".into(), FactorKind::Webauthn, CUTOFF_MS));
    let provider = Arc::new(provider);
    let progress = SharedProgress::default();
    let (runner, _audit) = runner_for(&provider, &Arc::default(), &progress, watch::channel(false).1);
    runner.revoke(&RecallJob { exclude_users: vec![], ..job() }).await.unwrap();
    (provider, runner, progress)
}

/// A user who already holds a factor from after the cutoff when reached loses the old ones, is
/// counted apart, and is not asked to enroll again.
#[tokio::test]
async fn users_already_enrolled_are_counted_apart_and_not_asked_to_enroll() {
    let (provider, runner, progress) = recall_with_u001_enrolled_at_the_cutoff(FakeProvider::with_users(6)).await;
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.invalidated, c.already_enrolled, c.re_enrolled, c.pending), (6, 1, 0, 5), "{c:?}");
    assert!(!provider.required.lock().unwrap().contains(&"u001".to_string()));
    assert_eq!(provider.factors.lock().unwrap()["u001"], vec![("u001-new".to_string(), FactorKind::Webauthn, CUTOFF_MS)]);
    // The re-enrollment pass does not count them again.
    runner.check_re_enrollment(&RecallJob { exclude_users: vec![], ..job() }).await.unwrap();
    assert_eq!(progress.lock().unwrap().counts.re_enrolled, 0);
}

/// Where an enrollment came from is only looked up for the audit line: a provider log that
/// cannot be read does not fail a user whose factors are already gone.
#[tokio::test]
async fn an_unreadable_enrollment_log_does_not_fail_an_already_enrolled_user() {
    let (_provider, _runner, progress) = recall_with_u001_enrolled_at_the_cutoff(FakeProvider { enrollment_log_down: true, ..FakeProvider::with_users(3) }).await;
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.invalidated, c.failed, c.already_enrolled), (3, 0, 1), "{c:?}");
}

/// A listed scope stopped mid-way resumes without targeting anyone twice, even one found again
/// through another group after the restart; the first page is long enough to be recorded as a
/// head and the rest, and group cursors hold colons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_scope_resumes_without_targeting_anyone_twice() {
    let (stop, stop_rx) = watch::channel(false);
    let ids = |range: std::ops::Range<usize>| range.map(|i| format!("u{i:03}")).collect::<Vec<_>>();
    let groups = [("evens", (0..120).step_by(2).map(|i| format!("u{i:03}")).collect(), vec!["late".to_string()]), ("late", ids(100..130), vec![]), ("threes", (0..120).step_by(3).map(|i| format!("u{i:03}")).collect(), vec![])];
    let mut provider = FakeProvider { groups: groups.into_iter().map(|(n, m, s)| (n.to_string(), (m, s))).collect(), ..FakeProvider::with_users(130) };
    provider.page = 25;
    *provider.stop_after.lock().unwrap() = Some((30, stop));
    let provider = Arc::new(provider);
    let ledger = Arc::new(MemoryLedger::default());
    let job = RecallJob { scope: ScopeSelector::listed(vec!["evens".into(), "threes".into()], vec!["U009".into(), "u001".into()]), exclude_users: vec![], concurrency: 2, ..job() };
    let (first, _audit) = runner_for(&provider, &ledger, &SharedProgress::default(), stop_rx);
    assert_eq!(first.revoke(&job).await.unwrap(), RunEnd::Stopped);
    *provider.stop_after.lock().unwrap() = None;
    let progress = SharedProgress::default();
    let (second, _audit) = runner_for(&provider, &ledger, &progress, watch::channel(false).1);
    assert_eq!(second.revoke(&job).await.unwrap(), RunEnd::Finished);
    // Evens 0-118 with late 100-129 nested in it, threes, u009 (a three) and u001.
    let expected = (0..130).filter(|i| i % 2 == 0 && *i < 120 || (100..130).contains(i) || i % 3 == 0 && *i < 120 || *i == 1).count() as i64;
    assert_eq!(expected, 98);
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.targeted, c.invalidated), (expected, expected), "{c:?}");
    let mut seen = HashSet::new();
    let segments = ledger.segments("fake").await.unwrap();
    assert!(ledger.read("fake", 0).await.unwrap().head_of_page.is_some(), "the first page was recorded as a head and its rest");
    for index in segments {
        for record in ledger.read("fake", index).await.unwrap().users {
            assert!(seen.insert(record.user.id.clone()), "{} recorded twice", record.user.id);
        }
    }
    let deletes = provider.deletes.lock().unwrap().clone();
    assert_eq!(deletes.len(), deletes.iter().collect::<HashSet<_>>().len(), "a factor was deleted twice");
    assert_eq!(deletes.len() as i64, expected * 2);
}

/// A provider whose pages lead back to where they started would be listed for ever: the run
/// ends with an error naming the cursor; the users listed before it are recorded and worked on,
/// nobody twice, and nobody touched before being recorded.
#[tokio::test]
async fn a_listing_that_comes_back_to_a_page_ends_with_an_error() {
    // 500 users, 10 a page: segments of 10, 200 and 400 users, so a retry that forgot the
    // cursors already recorded would fill a segment with users recorded before.
    let provider = Arc::new(FakeProvider { wraps_around: true, ..FakeProvider::with_users(500) });
    let ledger = Arc::new(MemoryLedger::default());
    let (runner, _audit) = runner_for(&provider, &ledger, &SharedProgress::default(), watch::channel(false).1);
    let error = runner.revoke(&RecallJob { exclude_users: vec![], ..job() }).await.unwrap_err();
    assert!(error.to_string().contains("came back"), "{error}");
    // The retry, from the ledger, stops as soon too: the cursors recorded are remembered.
    let (retry, _audit) = runner_for(&provider, &ledger, &SharedProgress::default(), watch::channel(false).1);
    let error = retry.revoke(&RecallJob { exclude_users: vec![], ..job() }).await.unwrap_err();
    assert!(error.to_string().contains("came back"), "{error}");
    let mut seen = HashSet::new();
    for index in ledger.segments("fake").await.unwrap() {
        for record in ledger.read("fake", index).await.unwrap().users {
            assert!(seen.insert(record.user.id.clone()), "{} recorded twice", record.user.id);
        }
    }
    assert_eq!(seen.len(), 500, "every user listed before the cursor came back, each once");
    for deleted in provider.deletes.lock().unwrap().iter() {
        assert!(seen.contains(deleted.split('-').next().unwrap()), "{deleted} deleted without its user recorded");
    }
}

/// Five users; u000 and u001 each hold a code the provider shows no creation time for: u000's
/// registered long before the cutoff, u001's after it (before the recall reached them).
fn with_undated_codes(log_delay: Duration) -> FakeProvider {
    let provider = FakeProvider { log_delay: Some(log_delay), ..FakeProvider::with_users(5) };
    let mut factors = provider.factors.lock().unwrap().clone();
    let mut undated = HashMap::new();
    for (user, registered) in [("u000", 10), ("u001", CUTOFF_MS + 5)] {
        let id = format!("{user}-undated");
        factors.get_mut(user).unwrap().push((id.clone(), FactorKind::Sms, 0));
        undated.insert(id, registered);
    }
    *provider.factors.lock().unwrap() = factors;
    FakeProvider { undated, ..provider }
}

#[tokio::test]
async fn factors_of_unknown_age_wait_for_the_log_and_only_old_ones_go() {
    let provider = Arc::new(with_undated_codes(Duration::from_millis(300)));
    let ledger = Arc::new(MemoryLedger::default());
    let progress = SharedProgress::default();
    let (runner, _audit) = runner_for(&provider, &ledger, &progress, watch::channel(false).1);
    let job = RecallJob { exclude_users: vec![], ..job() };
    assert_eq!(runner.revoke(&job).await.unwrap(), RunEnd::Finished);
    // Sessions and dated factors went at once; the two users wait for the log.
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.invalidated, c.awaiting_logs, c.factors_revoked.values().sum::<i64>()), (3, 2, 10));
    assert!(!provider.deletes.lock().unwrap().iter().any(|d| d.ends_with("-undated")), "nothing undated goes before the log is complete");
    let ready = runner.settle(&job).await.unwrap().expect("two users still wait");
    assert!(ready > jiff::Timestamp::now());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(runner.settle(&job).await.unwrap(), None);
    let deletes = provider.deletes.lock().unwrap().clone();
    assert!(deletes.contains(&"u000-undated".to_string()) && !deletes.contains(&"u001-undated".to_string()), "{deletes:?}");
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.invalidated, c.awaiting_logs, c.kept_unknown_age), (5, 0, 0));
    assert_eq!((c.factors_revoked.get(&FactorKind::Sms), c.already_enrolled), (Some(&1), 1), "u001 is counted as enrolled anew");
    assert_eq!(provider.factors.lock().unwrap()["u001"].iter().map(|f| f.0.as_str()).collect::<Vec<_>>(), ["u001-undated"]);
}

/// A stop while users are taken up from the log's wait: those not begun keep waiting, and the
/// next pass finishes them with nothing deleted twice.
#[tokio::test]
async fn a_stop_while_judging_by_the_log_leaves_the_rest_waiting_for_the_next_pass() {
    let mut provider = FakeProvider { log_delay: Some(Duration::from_millis(200)), ..FakeProvider::with_users(20) };
    for (user, held) in provider.factors.get_mut().unwrap().iter_mut() {
        let id = format!("{user}-undated");
        held.push((id.clone(), FactorKind::Sms, 0));
        provider.undated.insert(id, 10);
    }
    let (stop, stop_rx) = watch::channel(false);
    // Every user's two dated factors go in the revoke; the stop comes with the second user judged by the log.
    *provider.stop_after.lock().unwrap() = Some((21, stop));
    let provider = Arc::new(provider);
    let ledger = Arc::new(MemoryLedger::default());
    let job = RecallJob { exclude_users: vec![], ..job() };
    let progress = SharedProgress::default();
    let (first, _audit) = runner_for(&provider, &ledger, &progress, stop_rx);
    assert_eq!(first.revoke(&job).await.unwrap(), RunEnd::Finished);
    assert_eq!(progress.lock().unwrap().counts.awaiting_logs, 20);
    // Nobody is ready yet: the pass only says when the log will be.
    let ready = first.settle(&job).await.unwrap().expect("every user waits for the log");
    tokio::time::sleep(Duration::try_from(ready.duration_since(jiff::Timestamp::now())).unwrap_or_default()).await;
    assert!(first.settle(&job).await.unwrap().is_some(), "users not begun before the stop still wait");
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.invalidated, c.awaiting_logs, c.factors_revoked.values().sum::<i64>()), (2, 18, 42), "{c:?}");

    *provider.stop_after.lock().unwrap() = None;
    let progress = SharedProgress::default();
    let (second, _audit) = runner_for(&provider, &ledger, &progress, watch::channel(false).1);
    assert_eq!(second.revoke(&job).await.unwrap(), RunEnd::Finished);
    assert_eq!(second.settle(&job).await.unwrap(), None);
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.invalidated, c.awaiting_logs, c.factors_revoked.values().sum::<i64>()), (20, 0, 60), "{c:?}");
    let deletes = provider.deletes.lock().unwrap().clone();
    assert_eq!(deletes.iter().collect::<HashSet<_>>().len(), deletes.len(), "a factor was deleted twice: {deletes:?}");
    assert_eq!(deletes.len(), 60);
}

#[tokio::test]
async fn factors_whose_age_the_log_cannot_tell_are_kept_counted_and_named() {
    let provider = Arc::new(FakeProvider { log_forbidden: true, ..with_undated_codes(Duration::ZERO) });
    let ledger = Arc::new(MemoryLedger::default());
    let progress = SharedProgress::default();
    let (runner, _audit) = runner_for(&provider, &ledger, &progress, watch::channel(false).1);
    let job = RecallJob { exclude_users: vec![], ..job() };
    assert_eq!(runner.revoke(&job).await.unwrap(), RunEnd::Finished);
    assert_eq!(runner.settle(&job).await.unwrap(), None);
    assert!(!provider.deletes.lock().unwrap().iter().any(|d| d.ends_with("-undated")));
    let p = progress.lock().unwrap().clone();
    assert_eq!((p.counts.invalidated, p.counts.kept_unknown_age), (5, 2));
    assert_eq!(p.kept_factors, ["u000: sms u000-undated", "u001: sms u001-undated"]);
}

#[tokio::test]
async fn counts_are_what_the_provider_lost_for_failed_users_too() {
    // u001's second factor cannot be deleted (after its sessions and first factor went); u002's
    // first factor was already gone when the recall came to it.
    let provider = Arc::new(FakeProvider { failing: vec!["u001-key".into()], gone: vec!["u002-totp".into()], ..FakeProvider::with_users(3) });
    let ledger = Arc::new(MemoryLedger::default());
    let progress = SharedProgress::default();
    let (runner, _audit) = runner_for(&provider, &ledger, &progress, watch::channel(false).1);
    assert_eq!(runner.revoke(&RecallJob { exclude_users: vec![], ..job() }).await.unwrap(), RunEnd::Finished);
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.invalidated, c.failed, c.sessions_revoked), (2, 1, 3));
    assert_eq!((c.factors_revoked.get(&FactorKind::Totp), c.factors_revoked.get(&FactorKind::Webauthn)), (Some(&2), Some(&2)), "{:?}", c.factors_revoked);
    assert_eq!(c.factors_revoked.values().sum::<i64>() as usize, provider.deletes.lock().unwrap().len(), "one count per deletion");
    // The same counts from the ledger.
    let restored = SharedProgress::default();
    let (again, _audit) = runner_for(&provider, &ledger, &restored, watch::channel(false).1);
    again.restore(&RecallJob { exclude_users: vec![], ..job() }).await.unwrap();
    assert_eq!(restored.lock().unwrap().counts, c);
}

#[tokio::test]
async fn a_factor_refused_while_others_remain_goes_after_them_or_fails_the_user() {
    let mut provider = FakeProvider::with_users(2);
    // u000's code goes once its key is gone; u001's key is refused whatever is left (its code
    // enrolled after the cutoff stays).
    provider.refused_while_others = vec!["u000-totp".into(), "u001-key".into()];
    provider.factors.lock().unwrap().get_mut("u001").unwrap().push(("u001-new".into(), FactorKind::Totp, CUTOFF_MS + 5));
    let provider = Arc::new(provider);
    let ledger = Arc::new(MemoryLedger::default());
    let progress = SharedProgress::default();
    let (runner, _audit) = runner_for(&provider, &ledger, &progress, watch::channel(false).1);
    assert_eq!(runner.revoke(&RecallJob { exclude_users: vec![], ..job() }).await.unwrap(), RunEnd::Finished);
    assert_eq!(*provider.deletes.lock().unwrap(), ["u000-key", "u000-totp", "u001-totp"]);
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.invalidated, c.failed, c.factors_revoked.values().sum::<i64>()), (1, 1, 3));
    let failed = ledger.read("fake", 0).await.unwrap().users.into_iter().find(|r| r.user.id == "u001").unwrap();
    assert!(failed.note.as_deref().unwrap().contains("refused again"), "{failed:?}");
}

#[tokio::test]
async fn a_page_that_cannot_be_read_ends_the_listing_after_a_few_tries_with_the_users_before_it_done() {
    let provider = Arc::new(FakeProvider { unreadable_page_at: Some(20), ..FakeProvider::with_users(40) });
    let ledger = Arc::new(MemoryLedger::default());
    let progress = SharedProgress::default();
    let (runner, _audit) = runner_for(&provider, &ledger, &progress, watch::channel(false).1);
    let started = std::time::Instant::now();
    let error = runner.revoke(&RecallJob { exclude_users: vec![], ..job() }).await.unwrap_err();
    assert!(matches!(error, crate::Error::ListingFailed(_)), "{error}");
    assert!(error.to_string().contains("failed 3 times") && error.to_string().contains("outside"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let c = progress.lock().unwrap().counts.clone();
    assert_eq!((c.targeted, c.invalidated), (20, 20), "the users of the first two pages were worked on");
}

fn logged(id: &str, user: &str, kind: crate::watch::EventKind, at_ms: i64, ip: &str, country: &str) -> crate::watch::IdentityEvent {
    use crate::watch::{Actor, ClientInfo, Geo, IdentityEvent};
    IdentityEvent {
        id: id.into(),
        at: jiff::Timestamp::from_millisecond(at_ms).unwrap(),
        user_id: user.into(),
        kind,
        actor: Actor::User,
        client: ClientInfo { ip: ip.parse().ok(), geo: Some(Geo { country: Some(country.into()), ..Default::default() }), ..Default::default() },
        factor: Some(FactorKind::Totp),
        device: None,
    }
}

/// An enrollment burst is judged by time, not by the order the log first names users in: the
/// third user's own factor removal (logged by the recall) comes first in the read, and their
/// enrollment, the third from one address, is still flagged; the two before it are not.
#[tokio::test]
async fn a_burst_is_judged_by_time_whatever_order_the_log_names_users_in() {
    use crate::watch::{EventKind, Rule, Thresholds};
    let provider = Arc::new(FakeProvider { stream: true, ..FakeProvider::with_users(30) });
    let ledger = Arc::new(MemoryLedger::default());
    let progress = SharedProgress::default();
    let runner = Runner { provider: provider.clone(), ledger: ledger.clone(), audit: audit(), progress: progress.clone(), stop: watch::channel(false).1 };
    let window = WindowSettings { sweep_per_check: 0, thresholds: Thresholds { burst_enrollments: 3, ..Thresholds::default() }, ..Default::default() };
    let job = RecallJob { window, ..job() };
    assert_eq!(runner.revoke(&job).await.unwrap(), RunEnd::Finished);
    let after = CUTOFF_MS + 60_000;
    *provider.events.lock().unwrap() = vec![
        logged("r7", "u007", EventKind::FactorRemoved, after, "203.0.113.200", "NL"),
        logged("e3", "u003", EventKind::FactorEnrolled, after + 1_000, "192.0.2.50", "DE"),
        logged("e5", "u005", EventKind::FactorEnrolled, after + 2_000, "192.0.2.50", "DE"),
        logged("e7", "u007", EventKind::FactorEnrolled, after + 3_000, "192.0.2.50", "DE"),
    ];
    for (user, at) in [("u003", after + 1_000), ("u005", after + 2_000), ("u007", after + 3_000)] {
        provider.factors.lock().unwrap().get_mut(user).unwrap().push((format!("{user}-new"), FactorKind::Totp, at));
    }
    assert_eq!(runner.check_re_enrollment(&job).await.unwrap(), RunEnd::Finished);
    let flagged = progress.lock().unwrap().flagged.clone();
    assert_eq!(flagged, [format!("u007: {}", Rule::EnrollmentBurst.as_str())]);
}

/// A read with more enrollments than are remembered between checks: the earliest are still
/// judged against those before them (the cap applies once the read is judged), so a burst at the
/// start of a mass re-enrollment is flagged.
#[tokio::test]
async fn a_burst_at_the_start_of_a_read_larger_than_what_is_remembered_is_flagged() {
    use crate::watch::{EventKind, RECENT_KEPT, Rule, Thresholds};
    let provider = Arc::new(FakeProvider { stream: true, events_per_page: 1_000, ..FakeProvider::with_users(30) });
    let ledger = Arc::new(MemoryLedger::default());
    let progress = SharedProgress::default();
    let runner = Runner { provider: provider.clone(), ledger: ledger.clone(), audit: audit(), progress: progress.clone(), stop: watch::channel(false).1 };
    let window = WindowSettings { sweep_per_check: 0, thresholds: Thresholds { burst_enrollments: 3, ..Thresholds::default() }, ..Default::default() };
    let job = RecallJob { window, ..job() };
    assert_eq!(runner.revoke(&job).await.unwrap(), RunEnd::Finished);
    let after = CUTOFF_MS + 60_000;
    let mut events = vec![
        logged("e3", "u003", EventKind::FactorEnrolled, after + 1_000, "192.0.2.50", "DE"),
        logged("e5", "u005", EventKind::FactorEnrolled, after + 2_000, "192.0.2.50", "DE"),
        logged("e7", "u007", EventKind::FactorEnrolled, after + 3_000, "192.0.2.50", "DE"),
    ];
    // Then more enrollments than are remembered, by users of other recalls, from elsewhere.
    events.extend((0..RECENT_KEPT + 10).map(|n| logged(&format!("x{n}"), &format!("other-{n}"), EventKind::FactorEnrolled, after + 10_000 + n as i64, &format!("198.51.100.{}", n % 200), "US")));
    *provider.events.lock().unwrap() = events;
    for (user, at) in [("u003", after + 1_000), ("u005", after + 2_000), ("u007", after + 3_000)] {
        provider.factors.lock().unwrap().get_mut(user).unwrap().push((format!("{user}-new"), FactorKind::Totp, at));
    }
    assert_eq!(runner.check_re_enrollment(&job).await.unwrap(), RunEnd::Finished);
    let flagged = progress.lock().unwrap().flagged.clone();
    assert_eq!(flagged, [format!("u007: {}", Rule::EnrollmentBurst.as_str())]);
    assert_eq!(ledger.read_watch("fake").await.unwrap().unwrap().recent.len(), RECENT_KEPT, "what is remembered stays capped");
}

/// The stream names who enrolled: only they are asked about (plus the sweep's few), each flag is
/// audited and counted once, and the cursor kept in the ledger means a second check reads nothing again.
#[tokio::test]
async fn the_window_is_watched_from_the_stream_and_a_second_check_counts_nothing_twice() {
    use crate::watch::EventKind;
    let provider = Arc::new(FakeProvider { stream: true, ..FakeProvider::with_users(30) });
    let ledger = Arc::new(MemoryLedger::default());
    let audit = audit();
    let progress = SharedProgress::default();
    let runner = Runner { provider: provider.clone(), ledger: ledger.clone(), audit: audit.clone(), progress: progress.clone(), stop: watch::channel(false).1 };
    let job = RecallJob { window: WindowSettings { sweep_per_check: 0, ..Default::default() }, ..job() };
    assert_eq!(runner.revoke(&job).await.unwrap(), RunEnd::Finished);
    let pending_before = progress.lock().unwrap().counts.pending;
    // u004 signed in from NL before the cutoff, enrolls from NL; u005 the same, but enrolls from NG.
    let after = CUTOFF_MS + 60_000;
    *provider.events.lock().unwrap() = vec![
        logged("b4", "u004", EventKind::SignIn, CUTOFF_MS - 86_400_000, "203.0.113.4", "NL"),
        logged("b5", "u005", EventKind::SignIn, CUTOFF_MS - 86_400_000, "203.0.113.5", "NL"),
        logged("e4", "u004", EventKind::FactorEnrolled, after, "203.0.113.4", "NL"),
        logged("e5", "u005", EventKind::FactorEnrolled, after + 1, "198.51.100.5", "NG"),
        logged("f9", "u009", EventKind::FraudReported, after + 2, "203.0.113.9", "NL"),
    ];
    for user in ["u004", "u005"] {
        provider.factors.lock().unwrap().get_mut(user).unwrap().push((format!("{user}-new"), FactorKind::Totp, after));
    }
    provider.asked.lock().unwrap().clear();
    // The stream starts at the cutoff here (no start time): the baseline events are before it.
    assert_eq!(runner.check_re_enrollment(&job).await.unwrap(), RunEnd::Finished);
    assert_eq!(*provider.asked.lock().unwrap(), ["u004", "u005"], "only the users the stream named were asked about");
    let counts = progress.lock().unwrap().counts.clone();
    assert_eq!((counts.re_enrolled, counts.pending, counts.anomalies), (2, pending_before - 2, 2));
    let flagged = progress.lock().unwrap().flagged.clone();
    assert_eq!(flagged, ["u005: newNetwork", "u009: fraudReported"]);

    // Read again (a restart) from the ledger's cursor: nothing new, nothing counted twice.
    provider.asked.lock().unwrap().clear();
    let again = SharedProgress::default();
    let second = Runner { provider: provider.clone(), ledger: ledger.clone(), audit: audit.clone(), progress: again.clone(), stop: watch::channel(false).1 };
    assert_eq!(second.restore(&job).await.map(|_| ()).unwrap(), ());
    assert_eq!(second.check_re_enrollment(&job).await.unwrap(), RunEnd::Finished);
    assert!(provider.asked.lock().unwrap().is_empty());
    let counts = again.lock().unwrap().counts.clone();
    assert_eq!((counts.re_enrolled, counts.anomalies), (2, 2), "counts rebuilt from the ledger");
    let state = ledger.read_watch("fake").await.unwrap().unwrap();
    assert_eq!((state.cursor.as_deref(), state.events_read), (Some("5"), 3), "the two sign-ins before the stream's start are not part of it");
    assert_eq!(state.recent.len(), 2, "both enrollments kept for the rules that compare users");
    assert!(state.recent.iter().all(|r| r.address.as_deref().is_some_and(|a| !a.contains('.'))), "addresses kept only as pseudonyms");

    // With the cursor lost, the same events read again flag nobody twice.
    let mut lost = state.clone();
    lost.cursor = None;
    ledger.write_watch(&lost).await.unwrap();
    let third = SharedProgress::default();
    let runner = Runner { provider: provider.clone(), ledger: ledger.clone(), audit, progress: third.clone(), stop: watch::channel(false).1 };
    runner.restore(&job).await.unwrap();
    runner.check_re_enrollment(&job).await.unwrap();
    assert_eq!(third.lock().unwrap().counts.anomalies, 2);
}
