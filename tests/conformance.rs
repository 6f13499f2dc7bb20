//! One conformance suite for every adapter: the same cases against each provider simulator, run
//! in-process through the engine (the operator-level cases, with a real apiserver, are in
//! `recall_providers.rs`). Each case checks the recall against the provider's own state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mfa_recall::api::{BackendLimits, FactorKind, RecallCounts};
use mfa_recall::audit::AuditLog;
use mfa_recall::backends::{self, IdentityProvider, ProviderError, ScopeSelector};
use mfa_recall::engine::{RecallJob, RunEnd, Runner, SharedProgress};
use mfa_recall::ledger::MemoryLedger;
use mfa_recall::simulator::{Faults, GroupSeed, RateLimits, Seed, username};
use mfa_recall::testbed::sims::SimSubject;
use serde_json::Value;
use tokio::sync::watch;

/// A simulator, the adapter connected to it, and a scratch audit trail.
struct Bench {
    subject: SimSubject,
    provider: Arc<dyn IdentityProvider>,
    audit_path: PathBuf,
    audit: AuditLog,
    ledger: MemoryLedger,
}

impl Bench {
    async fn start(kind: &str, seed: &Seed, limits: BackendLimits) -> Bench {
        let subject = SimSubject::start(kind).await.unwrap_or_else(|e| panic!("starting the {kind} simulator: {e}"));
        subject.sim.provider.seed(seed);
        let backend = subject.backend("conformance", kind, limits);
        let secret = subject.secret_object(&format!("{kind}-credentials"), &subject.secret);
        let provider = backends::connect(&backend, Some(&secret)).unwrap_or_else(|e| panic!("connecting to the {kind} simulator: {e}"));
        let audit_path = std::env::temp_dir().join(format!("mfa-recall-conformance-{kind}-{:016x}.jsonl", fastrand::u64(..)));
        let audit = AuditLog::open(Some(&audit_path), "conformance", false).unwrap();
        Bench { subject, provider, audit_path, audit, ledger: MemoryLedger::default() }
    }

    fn job(&self, scope: ScopeSelector, cutoff: jiff::Timestamp) -> RecallJob {
        RecallJob {
            recall: "conformance/recall".into(),
            backend: self.subject.kind.into(),
            scope,
            exclude_users: vec![],
            exclude_groups: vec![],
            kinds: vec![FactorKind::All],
            revoke_sessions: true,
            cutoff,
            concurrency: 8,
        }
    }

    fn runner(&self, progress: SharedProgress, stop: watch::Receiver<bool>) -> Runner<'_> {
        Runner { provider: self.provider.as_ref(), ledger: &self.ledger, audit: &self.audit, progress, stop }
    }

    /// Runs the revocation to the end; the counts.
    async fn revoke(&self, job: &RecallJob) -> RecallCounts {
        let progress = SharedProgress::default();
        let (_stop, stop_rx) = watch::channel(false);
        let end = self.runner(progress.clone(), stop_rx).revoke(job).await.unwrap_or_else(|e| panic!("{}: recall failed: {e}", self.subject.kind));
        assert_eq!(end, RunEnd::Finished);
        let counts = progress.lock().unwrap().counts.clone();
        counts
    }

    fn audit_events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn revoked_factor_ids(&self) -> Vec<String> {
        self.audit_events()
            .into_iter()
            .filter(|e| e["action"] == "factor.revoke" && e["outcome"] == "revoked")
            .map(|e| e["factorId"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn can_revoke_sessions(&self) -> bool {
        self.provider.capabilities().revoke_sessions
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.audit_path);
    }
}

fn fast() -> BackendLimits {
    BackendLimits { requests_per_second: 5000, max_concurrency: 16 }
}

fn seed(users: u32) -> Seed {
    Seed { users, groups: vec![GroupSeed { name: "staff".into(), every: 2 }, GroupSeed { name: "admins".into(), every: 10 }], ..Seed::default() }
}

fn total(map: &BTreeMap<String, u64>) -> u64 {
    map.values().sum()
}

/// Every user invalidated; counts equal what the provider lost; nothing older than the cutoff left.
async fn full_recall(kind: &str) {
    let bench = Bench::start(kind, &seed(250), fast()).await;
    let cutoff = jiff::Timestamp::now();
    let before = bench.subject.sim.provider.census(Some(cutoff));
    assert!(total(&before.factors_before_cutoff) >= 250, "{kind}: the seed gave too few factors: {before:?}");
    let counts = bench.revoke(&bench.job(ScopeSelector::AllUsers, cutoff)).await;
    let after = bench.subject.sim.provider.census(Some(cutoff));

    assert_eq!((counts.targeted, counts.invalidated, counts.failed, counts.excluded), (250, 250, 0, 0), "{kind}: {counts:?}");
    assert!(after.factors_before_cutoff.is_empty(), "{kind}: factors older than the cutoff remain: {after:?}");
    let revoked: BTreeMap<String, u64> = counts.factors_revoked.iter().map(|(k, v)| (k.clone(), *v as u64)).collect();
    assert_eq!(revoked, before.factors_before_cutoff, "{kind}: factors revoked by kind differ from what the provider lost");
    // Every recorded factor has its audit line; a linked factor that went with another (Okta Verify,
    // Auth0 link_id) is audited as alreadyGone, so both outcomes count.
    let audited = bench.audit_events().into_iter().filter(|e| e["action"] == "factor.revoke").count();
    assert_eq!(audited as u64, total(&before.factors_before_cutoff), "{kind}: audit and provider disagree");
    if bench.can_revoke_sessions() {
        assert_eq!(after.sessions, 0, "{kind}: sessions remain");
        assert_eq!(after.grants, 0, "{kind}: tokens or grants remain");
        assert_eq!(counts.sessions_revoked as u64, before.sessions + before.grants, "{kind}: sessions counted wrong");
    }
    assert_eq!(counts.pending, 250, "{kind}: every user lost a factor and has to re-enroll");
    assert_eq!(after.active_users, 250, "{kind}: a recall must not disable anyone before the deadline");
}

/// A user who enrolls after the cutoff keeps the new factor: before being reached, and mid-recall.
async fn cutoff_respected(kind: &str) {
    let bench = Bench::start(kind, &seed(120), BackendLimits { requests_per_second: 400, max_concurrency: 4 }).await;
    let cutoff = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let early = username(60);
    let early_new = bench.subject.sim.provider.enroll(&early, FactorKind::Webauthn, "203.0.113.9").expect("enroll");

    let job = bench.job(ScopeSelector::AllUsers, cutoff);
    let progress = SharedProgress::default();
    let (_stop, stop_rx) = watch::channel(false);
    let late = username(119);
    let mut late_new = None;
    {
        let runner = bench.runner(progress.clone(), stop_rx);
        let run = runner.revoke(&job);
        tokio::pin!(run);
        loop {
            tokio::select! {
                end = &mut run => { assert_eq!(end.unwrap(), RunEnd::Finished); break; }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if late_new.is_none() && progress.lock().unwrap().counts.invalidated >= 10 {
                        late_new = bench.subject.sim.provider.enroll(&late, FactorKind::Webauthn, "203.0.113.10");
                    }
                }
            }
        }
    }
    let late_new = late_new.expect("the recall ended before the mid-recall enrollment");
    for (name, new_id) in [(&early, &early_new), (&late, &late_new)] {
        let user = bench.subject.sim.provider.user(name).unwrap();
        assert!(user.factors.iter().any(|f| &f.id == new_id), "{kind}: {name} lost the factor enrolled after the cutoff: {user:?}");
        assert!(user.factors.iter().all(|f| f.created >= cutoff), "{kind}: {name} kept a factor older than the cutoff: {user:?}");
    }
    assert!(!bench.revoked_factor_ids().contains(&early_new) && !bench.revoked_factor_ids().contains(&late_new));

    // Re-enrollment is seen for both, with where it came from where the provider logs it.
    if bench.provider.capabilities().enrollment_detection {
        let (_stop, stop_rx) = watch::channel(false);
        bench.runner(progress.clone(), stop_rx).check_re_enrollment(&job).await.unwrap();
        let counts = progress.lock().unwrap().counts.clone();
        assert_eq!(counts.re_enrolled, 2, "{kind}: {counts:?}");
        let seen: Vec<Value> = bench.audit_events().into_iter().filter(|e| e["action"] == "reenrollment.seen").collect();
        assert_eq!(seen.len(), 2, "{kind}: {seen:?}");
    }
}

/// Group scope with user and group exclusions: excluded users are untouched and counted.
async fn exclusions(kind: &str) {
    let bench = Bench::start(kind, &seed(60), fast()).await;
    let cutoff = jiff::Timestamp::now();
    let mut job = bench.job(ScopeSelector::Groups(vec!["staff".into()]), cutoff);
    job.exclude_users = vec![username(2)];
    job.exclude_groups = vec!["admins".into()];
    let untouched_before: Vec<_> = [0, 2, 10, 1, 3].iter().map(|i| bench.subject.sim.provider.user(&username(*i)).unwrap()).collect();
    let counts = bench.revoke(&job).await;

    // staff = even users (30); admins = multiples of 10 (6, all staff); plus user 2.
    assert_eq!((counts.targeted, counts.excluded, counts.invalidated, counts.failed), (30, 7, 23, 0), "{kind}: {counts:?}");
    for before in &untouched_before {
        let after = bench.subject.sim.provider.user(&before.username).unwrap();
        assert_eq!(&after, before, "{kind}: {} is excluded or out of scope and must be untouched", before.username);
    }
    let excluded: Vec<Value> = bench.audit_events().into_iter().filter(|e| e["action"] == "user.exclude").collect();
    assert!(excluded.iter().any(|e| e["detail"].as_str().unwrap_or_default().contains("admins")), "{kind}: the rule is named: {excluded:?}");
}

/// Stopped mid-recall and started again: finishes, counts exact, no factor revoked twice.
async fn resume(kind: &str) {
    let bench = Bench::start(kind, &seed(300), BackendLimits { requests_per_second: 600, max_concurrency: 8 }).await;
    let cutoff = jiff::Timestamp::now();
    let before = bench.subject.sim.provider.census(Some(cutoff));
    let job = bench.job(ScopeSelector::AllUsers, cutoff);
    let (stop, stop_rx) = watch::channel(false);
    let progress = SharedProgress::default();
    {
        let runner = bench.runner(progress.clone(), stop_rx);
        let run = runner.revoke(&job);
        tokio::pin!(run);
        let end = loop {
            tokio::select! {
                end = &mut run => break end.unwrap(),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    if progress.lock().unwrap().counts.invalidated >= 130 { let _ = stop.send(true); }
                }
            }
        };
        assert_eq!(end, RunEnd::Stopped, "{kind}: the run should stop when asked");
    }
    let counts = bench.revoke(&job).await;
    let after = bench.subject.sim.provider.census(Some(cutoff));
    assert_eq!((counts.targeted, counts.invalidated, counts.failed), (300, 300, 0), "{kind}: {counts:?}");
    assert!(after.factors_before_cutoff.is_empty(), "{kind}: {after:?}");
    let ids = bench.revoked_factor_ids();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{kind}: a factor was revoked twice");
    assert_eq!(counts.factors_revoked.values().sum::<i64>() as u64, total(&before.factors_before_cutoff), "{kind}: {counts:?}");
}

/// Under a known limit the recall keeps to it: at most a handful of throttled answers.
async fn keeps_under_the_limit(kind: &str) {
    // Providers that announce their budget are paced by it even when the configured rate is far
    // higher; the others must be configured at (here 90 % of) their published limit.
    let limit_per_second = 100;
    let bench = Bench::start(kind, &seed(150), fast()).await;
    let announces = bench.subject.sim.provider.announces_limits();
    let bench = if announces { bench } else { Bench::start(kind, &seed(150), BackendLimits { requests_per_second: 90, max_concurrency: 16 }).await };
    bench.subject.sim.set_limits(RateLimits { window_seconds: 1, default: Some(limit_per_second), ..RateLimits::default() });
    let counts = bench.revoke(&bench.job(ScopeSelector::AllUsers, jiff::Timestamp::now())).await;
    let stats = bench.subject.sim.stats();
    assert_eq!((counts.invalidated, counts.failed), (150, 0), "{kind}: {counts:?}");
    assert!(stats.throttled <= 5, "{kind}: {} of {} requests were throttled", stats.throttled, stats.requests);
}

/// Transient faults are retried to success; a permanent one fails only that user, with its error.
async fn faults(kind: &str) {
    let bench = Bench::start(kind, &seed(80), fast()).await;
    bench.subject.sim.set_faults(Faults {
        throttle_next: 5,
        error_rate: 0.08,
        drop_rate: 0.03,
        malformed_rate: 0.03,
        slow_rate: 0.05,
        slow_ms: 200,
        ..Faults::default()
    });
    let counts = bench.revoke(&bench.job(ScopeSelector::AllUsers, jiff::Timestamp::now())).await;
    assert_eq!((counts.invalidated, counts.failed), (80, 0), "{kind}: transient faults must be retried: {counts:?}");
    assert!(bench.subject.sim.stats().faults > 10, "{kind}: too few faults were injected to prove anything");

    let bench = Bench::start(kind, &seed(20), fast()).await;
    let broken = bench.subject.sim.provider.user(&username(7)).unwrap();
    bench.subject.sim.set_faults(Faults { failing_paths: vec![broken.id.clone()], ..Faults::default() });
    let counts = bench.revoke(&bench.job(ScopeSelector::AllUsers, jiff::Timestamp::now())).await;
    assert_eq!((counts.targeted, counts.invalidated, counts.failed), (20, 19, 1), "{kind}: {counts:?}");
    let failure = bench.audit_events().into_iter().find(|e| e["action"] == "user.fail").expect("the failure is audited");
    assert_eq!(failure["user"], username(7).as_str());
    assert!(failure["detail"].as_str().unwrap().contains("500"), "{kind}: the error is named: {failure}");
}

/// Wrong credentials: the check says so and names the Secret, never a secret value.
async fn wrong_credentials(kind: &str) {
    let subject = SimSubject::start(kind).await.unwrap();
    let backend = subject.backend("conformance", kind, fast());
    let wrong = subject.wrong_secret();
    let secret = subject.secret_object(&format!("{kind}-credentials"), &wrong);
    let error = match backends::connect(&backend, Some(&secret)) {
        Ok(provider) => provider.check().await.expect_err("wrong credentials must fail the check"),
        Err(e) => e,
    };
    assert!(matches!(error, ProviderError::Auth(_)), "{kind}: expected an authentication error, got {error:?}");
    let message = error.to_string();
    assert!(message.contains(&format!("conformance/{kind}-credentials")), "{kind}: the Secret is named: {message}");
    for value in wrong.values().chain(subject.secret.values()) {
        for line in value.lines().filter(|l| l.len() >= 12) {
            assert!(!message.contains(line), "{kind}: the error leaks a credential");
        }
    }
}

macro_rules! conformance {
    ($($kind:ident),*) => {$(
        mod $kind {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn full_recall() { super::full_recall(stringify!($kind)).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cutoff_respected() { super::cutoff_respected(stringify!($kind)).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn exclusions() { super::exclusions(stringify!($kind)).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn resume() { super::resume(stringify!($kind)).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn keeps_under_the_limit() { super::keeps_under_the_limit(stringify!($kind)).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn faults() { super::faults(stringify!($kind)).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn wrong_credentials() { super::wrong_credentials(stringify!($kind)).await }
        }
    )*};
}

conformance!(okta, entra, auth0, google, duo);
