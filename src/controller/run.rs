//! The long-running work of one recall, as a task per recall: revoke on every backend, then
//! watch for re-enrollment until everyone re-enrolled or the deadline passed. Status is written
//! at most once a second from the engine's live counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Context, status};
use crate::api::{BackendProgress, DeadlineAction, IdentityBackend, MfaRecall, MfaRecallStatus, RecallPhase, ReEnrollment};
use crate::audit::{AuditEvent, AuditLog};
use crate::backends::{IdentityProvider, Membership, ScopeSelector};
use crate::engine::{Progress, RecallJob, RunEnd, Runner, SharedProgress};
use crate::ledger::ConfigMapLedger;
use crate::{Error, Result, duration};

/// How often status is written while a recall makes progress.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// A phase change is written sooner than the interval, but never within this of the last write,
/// so status writes stay at most two a second.
const STATUS_MIN_GAP: Duration = Duration::from_millis(500);
/// Names that matched nobody, shown per backend in status (the audit trail has every one).
const NOT_FOUND_SHOWN: usize = 100;
/// Between passes over users waiting for a provider's logs: soon after the first is ready, and
/// never so long that a stop or a status change waits on it.
const SETTLE_MIN_WAIT: Duration = Duration::from_millis(500);
const SETTLE_MAX_WAIT: Duration = Duration::from_secs(30);

/// Recalls being worked on by this process, keyed by `namespace/name`.
#[derive(Default)]
pub struct Runs {
    inner: Mutex<HashMap<String, RunHandle>>,
}

struct RunHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Runs {
    /// True while a task for `key` is alive.
    pub fn is_running(&self, key: &str) -> bool {
        let mut inner = self.inner.lock().unwrap();
        match inner.get(key) {
            Some(handle) if !handle.task.is_finished() => true,
            Some(_) => {
                inner.remove(key);
                false
            }
            None => false,
        }
    }

    pub fn start(&self, key: &str, recall: Arc<MfaRecall>, ctx: Arc<Context>) {
        let (stop, stop_rx) = watch::channel(false);
        // Every log line of this run carries the recall and one trace id.
        let span = tracing::info_span!("recall_run", recall = %key, trace_id = %crate::telemetry::trace_id());
        let task = tokio::spawn(tracing::Instrument::instrument(run(recall, ctx, stop_rx), span));
        self.inner.lock().unwrap().insert(key.to_string(), RunHandle { stop, task });
    }

    /// Asks the task to stop at a checkpoint and waits for it (in-flight users finish first).
    pub async fn stop(&self, key: &str, timeout: Duration) {
        let handle = self.inner.lock().unwrap().remove(key);
        if let Some(handle) = handle {
            let _ = handle.stop.send(true);
            if tokio::time::timeout(timeout, handle.task).await.is_err() {
                tracing::warn!(recall = key, "recall did not stop in time; its unfinished users resume on the next start");
            }
        }
    }

    pub async fn stop_all(&self, timeout: Duration) {
        let handles: Vec<RunHandle> = self.inner.lock().unwrap().drain().map(|(_, h)| h).collect();
        for handle in &handles {
            let _ = handle.stop.send(true);
        }
        let all = futures::future::join_all(handles.into_iter().map(|h| h.task));
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("some recalls did not stop in time; their unfinished users resume on the next start");
        }
    }
}

/// One backend of a running recall.
struct BackendRun {
    job: RecallJob,
    provider: Arc<dyn IdentityProvider>,
    progress: SharedProgress,
}

/// Shared between the work and the status writer.
struct Live {
    base: Mutex<MfaRecallStatus>,
    backends: Vec<(String, SharedProgress, Arc<dyn IdentityProvider>)>,
    /// Told of each phase change, so the status writer reports it without waiting out its interval.
    phase_changed: tokio::sync::Notify,
}

impl Live {
    fn status(&self, generation: Option<i64>) -> MfaRecallStatus {
        let mut status = self.base.lock().unwrap().clone();
        status.backends = self
            .backends
            .iter()
            .map(|(name, progress, provider)| {
                // Read each time: some limits show only while working (a plan without an endpoint).
                let not_supported = provider.capabilities().limitations;
                let p = progress.lock().unwrap();
                let not_found = p.unresolved.iter().take(NOT_FOUND_SHOWN).cloned().collect();
                BackendProgress { name: name.clone(), listed: p.listed, counts: p.counts.clone(), not_supported, not_found, kept_factors: p.kept_factors.clone(), lost_factors: p.lost_factors.clone() }
            })
            .collect();
        status.counts = status::totals(&status.backends);
        status.observed_generation = generation;
        status::set_conditions(&mut status, generation);
        status
    }

    fn set_phase(&self, phase: RecallPhase) {
        self.base.lock().unwrap().phase = phase;
        self.phase_changed.notify_one();
    }
}

async fn run(recall: Arc<MfaRecall>, ctx: Arc<Context>, stop: watch::Receiver<bool>) {
    let key = format!("{}/{}", recall.namespace().unwrap_or_default(), recall.name_any());
    if let Err(e) = execute(&recall, &ctx, stop).await {
        tracing::warn!(recall = %key, error = %e, "recall run stopped on an error; it resumes on the next reconcile");
        let api: Api<MfaRecall> = Api::namespaced(ctx.client.clone(), &recall.namespace().unwrap_or_default());
        let mut status = recall.status.clone().unwrap_or_default();
        if let Ok(latest) = api.get_status(&recall.name_any()).await {
            status = latest.status.unwrap_or(status);
        }
        let reason = match &e {
            Error::Provider(crate::backends::ProviderError::Auth(_)) => "BackendAuthFailed",
            Error::Provider(crate::backends::ProviderError::Config(_)) => "BackendMisconfigured",
            Error::Provider(_) => "BackendUnavailable",
            Error::BackendNotFound(_) => "BackendNotFound",
            Error::ExclusionGroupNotFound(_) => "ExclusionGroupNotFound",
            Error::Refused(_) => "FactorKindsInseparable",
            Error::ListingFailed(_) => "ListingFailed",
            Error::Invalid(_) => "InvalidSpec",
            _ => "RunError",
        };
        // A refusal cannot pass later (what is refused is immutable), nor can a listing that
        // failed its bounded retries: the recall ends here.
        if matches!(e, Error::Refused(_) | Error::ListingFailed(_)) {
            status.phase = RecallPhase::Failed;
        }
        crate::api::set_condition(&mut status.conditions, crate::api::READY, false, reason, e.to_string(), recall.metadata.generation);
        if let Err(write_error) = status::write(&api, &recall, &status).await {
            tracing::warn!(recall = %key, error = %write_error, "could not write status");
        }
        ctx.publish(&*recall, EventType::Warning, reason, e.to_string()).await;
    }
}

/// The scope of one backend as the engine sees it: every user, or the union of the groups'
/// members and the named users.
fn scope_selector(recall: &MfaRecall) -> ScopeSelector {
    let scope = &recall.spec.scope;
    if scope.all_users == Some(true) {
        ScopeSelector::AllUsers
    } else {
        let membership = if scope.direct_members_only { Membership::Direct } else { Membership::Transitive };
        ScopeSelector::Listed { groups: scope.groups.clone(), users: scope.users.clone(), membership }
    }
}

async fn execute(recall: &Arc<MfaRecall>, ctx: &Arc<Context>, stop: watch::Receiver<bool>) -> Result<()> {
    let namespace = recall.namespace().unwrap_or_default();
    let name = recall.name_any();
    let key = format!("{namespace}/{name}");
    let api: Api<MfaRecall> = Api::namespaced(ctx.client.clone(), &namespace);
    let spec = &recall.spec;

    let mut base = recall.status.clone().unwrap_or_default();
    let created = recall.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or_else(jiff::Timestamp::now);
    let cutoff = spec.cutoff.unwrap_or(created);
    base.cutoff = Some(cutoff);
    let started = *base.started_at.get_or_insert_with(jiff::Timestamp::now);
    let grace = grace_period(&spec.re_enrollment)?;
    base.deadline = Some(started.checked_add(grace).map_err(|e| Error::Invalid(format!("gracePeriod: {e}")))?);
    let check_interval = duration::parse(&spec.re_enrollment.check_interval)
        .ok_or_else(|| Error::Invalid(format!("reEnrollment.checkInterval {:?} is not a duration", spec.re_enrollment.check_interval)))?;

    // Dereference every backend before touching anyone, so a typo fails fast and nothing is half-done.
    let backends_api: Api<IdentityBackend> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut runs = Vec::new();
    for backend_name in &spec.backends {
        let backend = backends_api.get_opt(backend_name).await?.ok_or_else(|| {
            Error::BackendNotFound(format!("IdentityBackend {namespace}/{backend_name} not found: create it or fix spec.backends"))
        })?;
        let provider = ctx.provider(&backend).await?;
        let caps = provider.capabilities();
        let job = RecallJob {
            recall: key.clone(),
            backend: backend_name.clone(),
            scope: scope_selector(recall),
            exclude_users: spec.scope.exclude.users.clone(),
            exclude_groups: spec.scope.exclude.groups.clone(),
            kinds: spec.factors.clone(),
            revoke_sessions: spec.revoke_sessions && caps.revoke_sessions,
            cutoff,
            concurrency: backend.spec.limits.max_concurrency.max(1) as usize,
        };
        runs.push(BackendRun { job, provider, progress: Arc::new(Mutex::new(Progress::default())) });
    }

    let owner = recall
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Invalid("the recall has no uid yet".into()))?;
    let ledger = Arc::new(ConfigMapLedger::new(ctx.client.clone(), &namespace, owner));
    refuse_inseparable_kinds(&namespace, spec, &runs, &ledger).await?;
    let live = Arc::new(Live {
        base: Mutex::new(base),
        backends: runs.iter().map(|r| (r.job.backend.clone(), r.progress.clone(), r.provider.clone())).collect(),
        phase_changed: tokio::sync::Notify::new(),
    });

    // Restore counts from the ledger before the first status write, so counts never go backwards.
    for r in &runs {
        runner(r, &ledger, ctx, stop.clone()).restore(&r.job).await?;
    }

    let writer = StatusWriter::spawn(api.clone(), recall.clone(), live.clone(), ctx.audit.clone());
    let outcome = work(recall, ctx, &runs, &ledger, &live, stop, check_interval).await;
    // The counts reached are written even when the run ended on an error (its condition follows).
    writer.finish().await;
    outcome
}

/// A recall asking for some of the factor kinds a backend can only revoke together is refused
/// before anything is recorded on any backend. One already under way (an operator upgraded in
/// between) goes on as it was recorded.
async fn refuse_inseparable_kinds(namespace: &str, spec: &crate::api::MfaRecallSpec, runs: &[BackendRun], ledger: &ConfigMapLedger) -> Result<()> {
    use crate::ledger::LedgerStore;
    for r in runs {
        if !ledger.segments(&r.job.backend).await?.is_empty() {
            return Ok(());
        }
    }
    for r in runs {
        if let Some(why) = r.provider.capabilities().refused_kinds(&spec.factors) {
            return Err(Error::Refused(format!("IdentityBackend {namespace}/{} cannot revoke spec.factors as asked: {why}", r.job.backend)));
        }
    }
    Ok(())
}

fn runner(r: &BackendRun, ledger: &Arc<ConfigMapLedger>, ctx: &Context, stop: watch::Receiver<bool>) -> Runner {
    Runner { provider: r.provider.clone(), ledger: ledger.clone(), audit: ctx.audit.clone(), progress: r.progress.clone(), stop }
}

fn grace_period(rules: &ReEnrollment) -> Result<jiff::SignedDuration> {
    let grace = duration::parse(&rules.grace_period)
        .ok_or_else(|| Error::Invalid(format!("reEnrollment.gracePeriod {:?} is not a duration such as 72h", rules.grace_period)))?;
    jiff::SignedDuration::try_from(grace).map_err(|e| Error::Invalid(format!("gracePeriod: {e}")))
}

async fn work(
    recall: &Arc<MfaRecall>,
    ctx: &Arc<Context>,
    runs: &[BackendRun],
    ledger: &Arc<ConfigMapLedger>,
    live: &Arc<Live>,
    stop: watch::Receiver<bool>,
    check_interval: Duration,
) -> Result<()> {
    let phase = live.base.lock().unwrap().phase;
    if !matches!(phase, RecallPhase::AwaitingReEnrollment) {
        // Exclusions first, on every backend: one that cannot be resolved keeps the recall
        // Pending, with nobody touched anywhere.
        let exclusions = futures::future::try_join_all(runs.iter().map(|r| async { runner(r, ledger, ctx, stop.clone()).resolve_exclusions(&r.job).await })).await?;
        change_phase(recall, ctx, live, RecallPhase::Revoking).await?;
        let ends = futures::future::try_join_all(
            runs.iter().zip(&exclusions).map(|(r, exclusions)| async { runner(r, ledger, ctx, stop.clone()).revoke_with(&r.job, exclusions).await }),
        )
        .await?;
        if ends.contains(&RunEnd::Stopped) {
            return Ok(());
        }
        // Factors of unknown age wait until the providers' logs can tell their age: the recall
        // is revoking until every one is judged.
        let mut stop_wait = stop.clone();
        loop {
            let ready = futures::future::try_join_all(runs.iter().map(|r| async { runner(r, ledger, ctx, stop.clone()).settle(&r.job).await })).await?;
            let Some(next) = ready.into_iter().flatten().min() else { break };
            let wait = Duration::try_from(next.duration_since(jiff::Timestamp::now())).unwrap_or(SETTLE_MIN_WAIT).clamp(SETTLE_MIN_WAIT, SETTLE_MAX_WAIT);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop_wait.changed() => return Ok(()),
            }
        }
        live.base.lock().unwrap().revoked_at = Some(jiff::Timestamp::now());
        change_phase(recall, ctx, live, RecallPhase::AwaitingReEnrollment).await?;
    }

    let deadline = live.base.lock().unwrap().deadline;
    let mut stop_wait = stop.clone();
    loop {
        // Backends are checked side by side: a slow provider must not delay what another has seen.
        let ends = futures::future::try_join_all(runs.iter().map(|r| async { runner(r, ledger, ctx, stop.clone()).check_re_enrollment(&r.job).await })).await?;
        if ends.contains(&RunEnd::Stopped) {
            return Ok(());
        }
        if live.status(None).counts.pending == 0 {
            break;
        }
        if deadline.is_some_and(|d| jiff::Timestamp::now() >= d) {
            if recall.spec.re_enrollment.on_deadline == DeadlineAction::Disable {
                let ends = futures::future::try_join_all(runs.iter().map(|r| async { runner(r, ledger, ctx, stop.clone()).disable_pending(&r.job).await })).await?;
                if ends.contains(&RunEnd::Stopped) {
                    return Ok(());
                }
            }
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(check_interval) => {}
            _ = stop_wait.changed() => return Ok(()),
        }
    }
    change_phase(recall, ctx, live, RecallPhase::Completed).await
}

/// Audits, records and announces a phase change.
async fn change_phase(recall: &MfaRecall, ctx: &Context, live: &Live, phase: RecallPhase) -> Result<()> {
    let previous = live.base.lock().unwrap().phase;
    if previous == phase {
        return Ok(());
    }
    let counts = live.status(None).counts;
    let key = format!("{}/{}", recall.namespace().unwrap_or_default(), recall.name_any());
    let outcome = serde_json::to_value(phase)?.as_str().unwrap_or_default().to_string();
    ctx.audit
        .record(AuditEvent {
            recall: key.clone(),
            action: "recall.phase".into(),
            outcome: outcome.clone(),
            detail: Some(format!("reason: {}", recall.spec.reason)),
            ..Default::default()
        })?;
    ctx.audit.sync().await?;
    live.set_phase(phase);
    tracing::info!(recall = %key, phase = %outcome, targeted = counts.targeted, invalidated = counts.invalidated, "phase changed");
    let note = format!("{outcome}: {} targeted, {} invalidated, {} re-enrolled, {} failed", counts.targeted, counts.invalidated, counts.re_enrolled, counts.failed);
    ctx.publish(recall, EventType::Normal, &outcome, note).await;
    Ok(())
}

/// Writes status about once a second while the recall runs, a phase change within half a second,
/// and once more at the end.
struct StatusWriter {
    done: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl StatusWriter {
    fn spawn(api: Api<MfaRecall>, recall: Arc<MfaRecall>, live: Arc<Live>, audit: Arc<AuditLog>) -> Self {
        let (done, mut done_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut last: Option<MfaRecallStatus> = None;
            let mut last_write = tokio::time::Instant::now();
            loop {
                let finished = *done_rx.borrow();
                let status = live.status(recall.metadata.generation);
                if last.as_ref() != Some(&status) {
                    // Counts are reported only once the audit lines behind them are durable.
                    let written = match audit.sync().await {
                        Ok(()) => status::write(&api, &recall, &status).await.map_err(Error::from),
                        Err(e) => Err(Error::Audit(e)),
                    };
                    match written {
                        Ok(()) => {
                            let key = format!("{}/{}", recall.namespace().unwrap_or_default(), recall.name_any());
                            for backend in &status.backends {
                                crate::metrics::recall_progress(&key, &backend.name, &backend.counts);
                            }
                            last = Some(status);
                            last_write = tokio::time::Instant::now();
                        }
                        Err(e) => tracing::warn!(recall = %recall.name_any(), error = %e, "status write failed; retrying"),
                    }
                }
                if finished {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(STATUS_INTERVAL) => {}
                    _ = done_rx.changed() => {}
                    _ = live.phase_changed.notified() => tokio::time::sleep_until(last_write + STATUS_MIN_GAP).await,
                }
            }
        });
        Self { done, task }
    }

    /// Flushes the final status.
    async fn finish(self) {
        let _ = self.done.send(true);
        let _ = self.task.await;
    }
}
