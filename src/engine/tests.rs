//! The engine against an in-memory provider: invariants without any network.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::*;
use crate::backends::{Capabilities, Enrollment, FactorRef, UserPage, UserSnapshot};
use crate::ledger::MemoryLedger;

const CUTOFF_MS: i64 = 1_000_000;

/// Users with factors (id, kind, created ms); `broken` users fail every write.
#[derive(Default)]
struct FakeProvider {
    factors: Mutex<HashMap<String, Vec<(String, FactorKind, i64)>>>,
    broken: Vec<String>,
    deletes: Mutex<Vec<String>>,
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
        Self { factors: Mutex::new(factors), page: 10, ..Default::default() }
    }
}

#[async_trait]
impl IdentityProvider for FakeProvider {
    fn capabilities(&self) -> Capabilities {
        Capabilities { list_factors: true, delete_factor: true, ..Default::default() }
    }
    async fn check(&self) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn list_users(&self, _: &ScopeSelector, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        let mut names: Vec<String> = self.factors.lock().unwrap().keys().cloned().collect();
        names.sort();
        let start: usize = cursor.map(|c| c.parse().unwrap()).unwrap_or(0);
        let page: Vec<UserRef> = names.iter().skip(start).take(self.page).map(|n| UserRef { id: n.clone(), username: n.clone() }).collect();
        let next = (start + page.len() < names.len()).then(|| (start + page.len()).to_string());
        Ok(UserPage { users: page, next })
    }
    async fn group_members(&self, _: &str) -> Result<Vec<UserRef>, ProviderError> {
        Ok(vec![])
    }
    async fn snapshot(&self, user: &UserRef, _: &[FactorKind], cutoff: jiff::Timestamp) -> Result<UserSnapshot, ProviderError> {
        self.take_time().await;
        let factors = self.factors.lock().unwrap()[&user.id]
            .iter()
            .filter(|(_, _, created)| *created < cutoff.as_millisecond())
            .map(|(id, kind, _)| FactorRef { id: id.clone(), kind: *kind, provider_type: kind.as_str().into() })
            .collect();
        Ok(UserSnapshot { factors, sessions: 1, session_handles: vec![] })
    }
    async fn revoke_sessions(&self, user: &UserRef, _: &UserSnapshot) -> Result<(), ProviderError> {
        self.assert_recorded(user);
        self.take_time().await;
        if self.broken.contains(&user.id) {
            return Err(ProviderError::Rejected(format!("{}: 500 from POST /logout", user.id)));
        }
        Ok(())
    }
    async fn revoke_factor(&self, user: &UserRef, factor: &FactorRef) -> Result<RevokeOutcome, ProviderError> {
        self.assert_recorded(user);
        self.take_time().await;
        self.deletes.lock().unwrap().push(factor.id.clone());
        let mut all = self.factors.lock().unwrap();
        let held = all.get_mut(&user.id).unwrap();
        let before = held.len();
        held.retain(|(id, _, _)| id != &factor.id);
        Ok(if held.len() < before { RevokeOutcome::Revoked } else { RevokeOutcome::AlreadyGone })
    }
    async fn require_enrollment(&self, _: &UserRef, _: &[FactorRef]) -> Result<(), ProviderError> {
        if let Some((after, stop)) = &*self.stop_after.lock().unwrap()
            && self.deletes.lock().unwrap().len() >= after * 2
        {
            let _ = stop.send(true);
        }
        Ok(())
    }
    async fn enrolled_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError> {
        Ok(self.factors.lock().unwrap()[&user.id]
            .iter()
            .find(|(_, _, created)| *created >= cutoff.as_millisecond())
            .map(|(_, kind, created)| Enrollment { kind: *kind, at: jiff::Timestamp::from_millisecond(*created).unwrap(), origin: None }))
    }
    async fn disable_user(&self, _: &UserRef) -> Result<(), ProviderError> {
        Ok(())
    }
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
    assert_eq!(c.factors_revoked.get("totp"), Some(&23));
    let failed = ledger.read("fake", 0).await.unwrap().users.into_iter().find(|r| r.user.id == "u007").unwrap();
    assert!(failed.note.unwrap().contains("500 from POST /logout"));
    // The excluded user keeps everything.
    assert_eq!(provider.factors.lock().unwrap()["u003"].len(), 2);
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
