//! The owner of one recall: a task per recall that runs it and alone writes its status, so a
//! phase is set in one place (`change_phase`) and written by one writer (`Live::flush`). A run
//! reads as validate → fetch → build → apply (revoke on every backend, then watch for
//! re-enrollment until everyone re-enrolled or the deadline passed) → status, which every way
//! out goes through. Status is written at most once a second from the engine's live counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::recall::key;
use super::{Context, status};
use k8s_openapi::api::core::v1::Secret;

use crate::api::{self, BackendProgress, DeadlineAction, IdentityBackend, MfaRecall, MfaRecallSpec, MfaRecallStatus, Notifications, Reason, RecallMode, RecallPhase, ReEnrollment, ReEnrollmentVia, SmtpSecurity};
use crate::keys::HmacKey;
use crate::notify::{NotMeLinks, Notices, SmtpSink, WebhookSink};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::backends::{EnrollmentChannel, IdentityProvider, Membership, ScopeSelector, ErrorKind};
use crate::engine::{Progress, RecallJob, RunEnd, Runner, SharedProgress, WindowSettings};
use crate::watch::Thresholds;
use crate::ledger::{LedgerStore, ResourceLedger};
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
/// After a run stopped on an error that may fix itself, the pause before it is tried again.
const RETRY_PAUSE: Duration = Duration::from_secs(15);

/// This process's run of one recall, as reconcile sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// None alive: never started here, or ended.
    Idle,
    Running,
    /// The last run stopped on an error that may fix itself; this much of its pause is left.
    Waiting(Duration),
}

/// The owners of the recalls this process works on, keyed by `namespace/name`.
#[derive(Default)]
pub struct Runs {
    inner: Mutex<HashMap<String, Slot>>,
    /// The phase each recall (by UID) last entered in this process: a run tried again from a
    /// status the cache has not caught up with yet does not audit or announce it again.
    entered: Mutex<HashMap<String, RecallPhase>>,
}

enum Slot {
    Owned(Owner),
    /// Tried again from this instant.
    Waiting(Instant),
}

struct Owner {
    stop: watch::Sender<bool>,
    /// The phase the owner records as it stops (suspended, cancelled); unset when the recall is deleted.
    record: Arc<OnceLock<RecallPhase>>,
    task: JoinHandle<End>,
}

/// How an owner ended.
enum End {
    /// Done, stopped, or failed for good: the next reconcile decides.
    Over,
    /// On an error that may fix itself: tried again from this instant.
    RetryFrom(Instant),
}

impl Runs {
    /// Forgets the phase a deleted recall entered.
    pub fn forget(&self, uid: &str) {
        self.entered.lock().unwrap().remove(uid);
    }

    pub fn state(&self, key: &str) -> Run {
        let mut inner = self.inner.lock().unwrap();
        let now = Instant::now();
        let retry_from = match inner.get_mut(key) {
            None => return Run::Idle,
            Some(Slot::Owned(owner)) if !owner.task.is_finished() => return Run::Running,
            Some(Slot::Owned(owner)) => match (&mut owner.task).now_or_never() {
                Some(Ok(End::RetryFrom(at))) => Some(at),
                Some(Ok(End::Over)) | None => None,
                // Not likely to pass at once either: paused like an error.
                Some(Err(e)) => {
                    tracing::error!(recall = key, error = %e, "recall run ended abnormally");
                    Some(now + RETRY_PAUSE)
                }
            },
            Some(Slot::Waiting(at)) => Some(*at),
        };
        match retry_from.filter(|at| *at > now) {
            Some(at) => {
                inner.insert(key.to_string(), Slot::Waiting(at));
                Run::Waiting(at - now)
            }
            None => {
                inner.remove(key);
                Run::Idle
            }
        }
    }

    /// Starts the owner of a recall. With `record` it only records that phase (a recall suspended
    /// or cancelled while no run was alive), so the phase has the same writer either way.
    pub fn start(&self, key: &str, recall: Arc<MfaRecall>, ctx: Arc<Context>, record: Option<RecallPhase>) {
        let (stop, stop_rx) = watch::channel(record.is_some());
        let phase = Arc::new(OnceLock::new());
        if let Some(p) = record {
            let _ = phase.set(p);
        }
        // Every log line of this run carries the recall and one trace id.
        let span = tracing::info_span!("recall_run", recall = %key, trace_id = %crate::telemetry::trace_id());
        let task = tokio::spawn(tracing::Instrument::instrument(own(recall, ctx, stop_rx, phase.clone()), span));
        let previous = self.inner.lock().unwrap().insert(key.to_string(), Slot::Owned(Owner { stop, record: phase, task }));
        // Reconcile starts only a recall it found idle; were that ever wrong, the older run goes.
        if let Some(Slot::Owned(previous)) = previous
            && !previous.task.is_finished()
        {
            tracing::error!(recall = key, "a second run of this recall was started: the first is aborted");
            previous.task.abort();
        }
    }

    /// Asks the run to stop at a checkpoint, recording `record` on its way out, and waits for it
    /// (in-flight users finish first). One that does not stop in time is aborted, so two runs of
    /// one recall never exist side by side. True when a run stopped by itself (and recorded the
    /// phase); false when there was none or it was aborted, and the phase is not recorded.
    pub async fn stop(&self, key: &str, record: Option<RecallPhase>, timeout: Duration) -> bool {
        let Some(Slot::Owned(mut owner)) = self.inner.lock().unwrap().remove(key) else { return false };
        if owner.task.is_finished() {
            return false;
        }
        if let Some(phase) = record {
            let _ = owner.record.set(phase);
        }
        let _ = owner.stop.send(true);
        if tokio::time::timeout(timeout, &mut owner.task).await.is_ok() {
            return true;
        }
        tracing::warn!(recall = key, "recall run did not stop within {timeout:?}: aborted; its unfinished users resume from the ledger on the next start");
        owner.task.abort();
        let _ = owner.task.await;
        false
    }

    pub async fn stop_all(&self, timeout: Duration) {
        let owners: Vec<(String, Owner)> = self
            .inner
            .lock()
            .unwrap()
            .drain()
            .filter_map(|(key, slot)| match slot {
                Slot::Owned(owner) => Some((key, owner)),
                Slot::Waiting(_) => None,
            })
            .collect();
        for (_, owner) in &owners {
            let _ = owner.stop.send(true);
        }
        let deadline = Instant::now() + timeout;
        for (key, mut owner) in owners {
            if tokio::time::timeout_at(deadline, &mut owner.task).await.is_err() {
                tracing::warn!(recall = %key, "recall run did not stop in time: aborted; its unfinished users resume from the ledger on the next start");
                owner.task.abort();
                let _ = owner.task.await;
            }
        }
    }
}

/// One backend of a running recall.
pub(super) struct BackendRun {
    pub(super) job: RecallJob,
    provider: Arc<dyn IdentityProvider>,
    /// The IdentityBackend's privileged groups: a rollout's first wave.
    privileged_groups: Vec<String>,
    pub(super) progress: SharedProgress,
    /// Where revocation continues, read from the ledger when the run began; taken by the first
    /// revocation, so the ledger is not read (nor the trail replayed) twice.
    pub(super) restored: std::sync::Mutex<Option<crate::engine::Restored>>,
}

/// The status of a recall as its owner keeps it, shared with the status writer.
pub(super) struct Live {
    pub(super) base: Mutex<MfaRecallStatus>,
    /// Set once the run is built; until then the counts are those last written.
    /// Each backend's name, progress, adapter, and how its users re-enroll.
    backends: OnceLock<Vec<(String, SharedProgress, Arc<dyn IdentityProvider>, String)>>,
    /// Why the run stopped, shown in Ready over what the phase says.
    problem: Mutex<Option<(Reason, String)>>,
    /// The status last written, so an unchanged one is not written again.
    written: Mutex<Option<MfaRecallStatus>>,
    /// Told of each phase change, so the status writer reports it without waiting out its interval.
    phase_changed: tokio::sync::Notify,
}

impl Live {
    fn new(status: MfaRecallStatus) -> Self {
        Self { base: Mutex::new(status), backends: OnceLock::new(), problem: Mutex::new(None), written: Mutex::new(None), phase_changed: tokio::sync::Notify::new() }
    }

    /// Takes the checked instants and the backends' progress into the status.
    fn begin(&self, plan: &Plan, runs: &[BackendRun], spec: &MfaRecallSpec) {
        {
            let mut base = self.base.lock().unwrap();
            base.cutoff = Some(plan.cutoff);
            base.started_at = Some(plan.started);
            base.deadline = Some(plan.deadline);
            // A rollout's waves and pauses do not eat into the users' time to enroll: theirs
            // counts from the end of revocation.
            if spec.rollout.is_some()
                && let Some(revoked) = base.revoked_at
            {
                base.deadline = revoked.checked_add(plan.grace).ok();
            }
        }
        let _ = self.backends.set(runs.iter().map(|r| (r.job.backend.clone(), r.progress.clone(), r.provider.clone(), channel_text(&spec.re_enrollment, &r.job.channel, &*r.provider))).collect());
    }

    pub(super) fn status(&self, generation: Option<i64>) -> MfaRecallStatus {
        let mut status = self.base.lock().unwrap().clone();
        if let Some(backends) = self.backends.get() {
            let previous = std::mem::take(&mut status.backends);
            status.backends = backends
                .iter()
                .map(|(name, progress, provider, via)| {
                    // Read each time: some limits show only while working (a plan without an endpoint).
                    let not_supported = provider.capabilities().limitations;
                    let p = progress.lock().unwrap();
                    let not_found = p.unresolved.iter().take(NOT_FOUND_SHOWN).cloned().collect();
                    // A plan is kept as made: one made by an earlier run is in the status it wrote.
                    let plan = p.plan.clone().or_else(|| previous.iter().find(|b| b.name == *name).and_then(|b| b.plan.clone()));
                    BackendProgress { name: name.clone(), listed: p.listed, counts: p.counts.clone(), not_supported, not_found, kept_factors: p.kept_factors.clone(), lost_factors: p.lost_factors.clone(), flagged: p.flagged.clone(), re_enrollment_via: Some(via.clone()), plan, events_skipped: p.events_skipped }
                })
                .collect();
            status.counts = status::totals(&status.backends);
            // A plan still being made is the sum of what its backends found so far.
            if status.plan.as_ref().is_none_or(|p| p.planned_at.is_none()) && status.backends.iter().any(|b| b.plan.is_some()) {
                let mut total = api::RecallPlan::default();
                status.backends.iter().filter_map(|b| b.plan.as_ref()).for_each(|p| total.add(p));
                status.plan = Some(total);
            }
        }
        status.observed_generation = generation;
        status::set_conditions(&mut status, generation);
        if let Some((reason, message)) = self.problem.lock().unwrap().clone() {
            api::set_condition(&mut status.conditions, api::READY, false, reason, message, generation);
        }
        status
    }

    fn set_queued(&self, place: Option<i32>) {
        let mut base = self.base.lock().unwrap();
        if base.queue_position != place {
            base.queue_position = place;
            drop(base);
            self.phase_changed.notify_one();
        }
    }

    fn set_phase(&self, phase: RecallPhase) {
        self.base.lock().unwrap().phase = phase;
        self.phase_changed.notify_one();
    }

    /// The one status writer of a recall: writes the status if it changed since the last write,
    /// once the audit lines behind its counts are durable. True when it wrote.
    pub(super) async fn flush(&self, api: &Api<MfaRecall>, recall: &MfaRecall, ctx: &Context) -> Result<bool> {
        let status = self.status(recall.metadata.generation);
        if self.written.lock().unwrap().as_ref() == Some(&status) {
            return Ok(false);
        }
        // Taken before the sync, the head names a line on disk once it returns. Left out of
        // `written`: other recalls' lines move it, and are no reason to write this status.
        let head = ctx.audit.head().map(|head| api::AuditHead { instance: ctx.settings.instance.clone(), line: head.to_string() });
        ctx.audit.sync().await?;
        let published = MfaRecallStatus { audit_head: head.or_else(|| status.audit_head.clone()), ..status.clone() };
        status::write(api, recall, &published).await?;
        let namespace = recall.namespace().unwrap_or_default();
        for backend in &status.backends {
            ctx.metrics.recall_progress(&namespace, &recall.name_any(), &backend.name, &backend.counts);
        }
        // Conditions kept as written, so their transition times hold until a status flips.
        self.base.lock().unwrap().conditions = status.conditions.clone();
        *self.written.lock().unwrap() = Some(status);
        Ok(true)
    }
}

/// Owns one recall until its run ends: runs it unless told to stop already, records the phase it
/// stopped in, and writes the status last.
async fn own(recall: Arc<MfaRecall>, ctx: Arc<Context>, stop: watch::Receiver<bool>, record: Arc<OnceLock<RecallPhase>>) -> End {
    let api: Api<MfaRecall> = Api::namespaced(ctx.client.clone(), &recall.namespace().unwrap_or_default());
    let live = Arc::new(Live::new(recall.status.clone().unwrap_or_default()));
    let stopped = *stop.borrow();
    let outcome = if stopped { Ok(()) } else { execute(&recall, &ctx, &live, stop).await };
    let end = match outcome {
        Ok(()) => End::Over,
        Err(e) => stopped_on(&recall, &ctx, &live, e).await,
    };
    if let Some(&phase) = record.get()
        && let Err(e) = change_phase(&recall, &ctx, &live, phase).await
    {
        tracing::warn!(error = %e, "could not record the phase; it is recorded on the next reconcile");
    }
    if let Err(e) = live.flush(&api, &recall, &ctx).await {
        tracing::warn!(error = %e, "could not write status");
    }
    end
}

/// The status step of a run that stopped on an error: Ready and an event say why. One that
/// cannot fix itself ends the recall as Failed until its spec changes; one that can is tried
/// again after a pause.
async fn stopped_on(recall: &MfaRecall, ctx: &Context, live: &Live, e: Error) -> End {
    let reason = reason(&e);
    let message = match &e {
        Error::Invalid(_) => format!("{e}: fix it in the spec, and the recall runs again"),
        Error::Refused(_) => format!("{e}; spec.factors cannot change: create a new MfaRecall that asks for kinds the backend can revoke"),
        _ => e.to_string(),
    };
    *live.problem.lock().unwrap() = Some((reason, message.clone()));
    ctx.publish(recall, EventType::Warning, reason, message).await;
    if !e.is_permanent() {
        tracing::warn!(error = %e, "recall run stopped on an error; it is tried again in {RETRY_PAUSE:?}");
        return End::RetryFrom(Instant::now() + RETRY_PAUSE);
    }
    tracing::warn!(error = %e, "recall failed; it waits for its spec to change");
    if let Err(e) = change_phase(recall, ctx, live, RecallPhase::Failed).await {
        tracing::warn!(error = %e, "could not record the failure; tried again in {RETRY_PAUSE:?}");
        return End::RetryFrom(Instant::now() + RETRY_PAUSE);
    }
    End::Over
}

fn reason(e: &Error) -> Reason {
    match e {
        Error::Provider(e) => match e.kind() {
            ErrorKind::Auth => Reason::BackendAuthFailed,
            ErrorKind::Config => Reason::BackendMisconfigured,
            ErrorKind::Unavailable | ErrorKind::Rejected | ErrorKind::NotFound => Reason::BackendUnavailable,
        },
        Error::BackendNotFound(_) => Reason::BackendNotFound,
        Error::ExclusionGroupNotFound(_) => Reason::ExclusionGroupNotFound,
        Error::Refused(_) => Reason::FactorKindsInseparable,
        Error::LockoutRisk(_) => Reason::LockoutRisk,
        Error::ListingFailed(_) => Reason::ListingFailed,
        Error::LedgerRejected { .. } => Reason::LedgerRejected,
        Error::TrailLost(_) => Reason::AuditTrailLost,
        Error::LedgerShrunk { .. } => Reason::LedgerShrunk,
        Error::Invalid(_) => Reason::InvalidSpec,
        _ => Reason::RunError,
    }
}

/// validate → fetch → build → apply; the caller does the status step.
async fn execute(recall: &Arc<MfaRecall>, ctx: &Arc<Context>, live: &Arc<Live>, stop: watch::Receiver<bool>) -> Result<()> {
    let started = live.base.lock().unwrap().started_at;
    let plan = validate(recall, started, jiff::Timestamp::now())?;
    // Failed on an earlier spec: this one passed, so the recall is pending again.
    if live.base.lock().unwrap().phase == RecallPhase::Failed {
        change_phase(recall, ctx, live, RecallPhase::Pending).await?;
    }
    let fetched = fetch(recall, ctx).await?;
    // Once revocation began, the checks were passed: a resumed recall goes on. Until then (a
    // plan's ledger is no revocation) they are made again, whatever the phase says.
    let mut lockout_risk = None;
    if !fetched.revocation_began {
        refuse_inseparable_kinds(recall, &fetched)?;
        match super::lockout::check(recall, &fetched.backends).await {
            Ok(()) => {}
            // A plan shows the risk; only revoking waits for it to be fixed or acknowledged.
            Err(Error::LockoutRisk(why)) if needs_plan(&recall.spec) => lockout_risk = Some(why),
            Err(e) => return Err(e),
        }
    }
    let revocation_began = fetched.revocation_began;
    let ledger = fetched.ledger.clone();
    let runs = build(recall, &plan, fetched.backends, fetched.notices);
    // Before the runs' counts are published, so counts never go backwards, and a ledger that
    // is refused leaves the counts published before as they were.
    for r in &runs {
        let restored = runner(r, &ledger, ctx, stop.clone()).restore(&r.job).await?;
        *r.restored.lock().unwrap() = Some(restored);
        let recorded = r.progress.lock().unwrap().counts.targeted;
        refuse_shrunk_ledger(recall, &r.job.backend, recorded)?;
    }
    live.begin(&plan, &runs, &recall.spec);
    // A plan made earlier (mode Plan, switched to Execute since) is let go the same way.
    let planned_before = live.base.lock().unwrap().plan.is_some();
    let plan_first = !revocation_began && (needs_plan(&recall.spec) || planned_before);
    apply(recall, ctx, live, &runs, &ledger, stop, plan.check_interval, plan_first.then_some(lockout_risk)).await
}

/// A recall planned before anything is revoked: one in mode Plan, one that may need approval, or
/// one rolled out in waves (which its plan sets out).
fn needs_plan(spec: &MfaRecallSpec) -> bool {
    spec.mode == RecallMode::Plan || spec.approval.is_some() || spec.rollout.is_some()
}

/// What a spec says once checked: the instants and the interval the run keeps to.
#[derive(Debug, PartialEq)]
pub(crate) struct Plan {
    cutoff: jiff::Timestamp,
    started: jiff::Timestamp,
    deadline: jiff::Timestamp,
    grace: jiff::SignedDuration,
    check_interval: Duration,
    window: WindowSettings,
    link_lifetime: Duration,
}

/// Checks what the apiserver's rules cannot (a duration's size), before anything is fetched.
/// `started` is when an earlier run started, kept so the deadline does not move.
pub(crate) fn validate(recall: &MfaRecall, started: Option<jiff::Timestamp>, now: jiff::Timestamp) -> Result<Plan> {
    let spec = &recall.spec;
    let created = recall.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let started = started.unwrap_or(now);
    let grace = grace_period(&spec.re_enrollment)?;
    let deadline = started.checked_add(grace).map_err(|e| Error::Invalid(format!("reEnrollment.gracePeriod {:?} is too long: {e}", spec.re_enrollment.grace_period)))?;
    let check_interval = duration::CHECK_INTERVAL.parse(&spec.re_enrollment.check_interval).map_err(Error::Invalid)?;
    let window = window_settings(spec, started)?;
    let link_lifetime = duration::LINK_LIFETIME.parse(&spec.re_enrollment.link_lifetime).map_err(Error::Invalid)?;
    Ok(Plan { cutoff: spec.cutoff.unwrap_or(created), started, deadline, grace, check_interval, window, link_lifetime })
}

/// The recall's clearances as the apiserver has them now; None when it cannot be read (the
/// check goes on with those it had).
async fn current_clearances(recall: &MfaRecall, ctx: &Context) -> Option<Vec<api::Clearance>> {
    let api: Api<MfaRecall> = Api::namespaced(ctx.client.clone(), &recall.namespace().unwrap_or_default());
    match api.get_opt(&recall.name_any()).await {
        Ok(Some(current)) => Some(current.spec.clearances),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(recall = %key(recall), error = %e, "the recall's clearances could not be read; checking with those known");
            None
        }
    }
}

/// The anomaly thresholds and the sweep, from the spec.
fn window_settings(spec: &MfaRecallSpec, started: jiff::Timestamp) -> Result<WindowSettings> {
    let a = &spec.anomalies;
    let signed = |bounds: &duration::Bounds, text: &str| -> Result<jiff::SignedDuration> {
        let d = bounds.parse(text).map_err(Error::Invalid)?;
        jiff::SignedDuration::try_from(d).map_err(|e| Error::Invalid(format!("{} {text:?}: {e}", bounds.field)))
    };
    let count = |n: i32| usize::try_from(n).unwrap_or(0);
    let thresholds = Thresholds {
        travel_kmh: f64::from(a.travel_kmh),
        travel_exempt_asns: a.travel_exempt_asns.iter().copied().collect(),
        shared_device_users: count(a.shared_device_users),
        burst_enrollments: count(a.burst_enrollments),
        burst_within: signed(&duration::BURST_WITHIN, &a.burst_within)?,
        push_denials: count(a.push_denials),
        push_within: signed(&duration::PUSH_WITHIN, &a.push_within)?,
        disabled: a.disabled_rules.iter().copied().collect(),
        ..Thresholds::default()
    };
    Ok(WindowSettings {
        started: Some(started),
        thresholds,
        baseline: signed(&duration::BASELINE, &a.baseline)?,
        sweep_per_check: count(spec.re_enrollment.sweep_per_check),
        action: a.action,
        clearances: spec.clearances.clone(),
        own_bypasses: Vec::new(),
    })
}

fn grace_period(rules: &ReEnrollment) -> Result<jiff::SignedDuration> {
    let grace = duration::GRACE_PERIOD.parse(&rules.grace_period).map_err(Error::Invalid)?;
    jiff::SignedDuration::try_from(grace).map_err(|e| Error::Invalid(format!("reEnrollment.gracePeriod {:?} is too long: {e}", rules.grace_period)))
}

/// What a recall points at: its IdentityBackends with their adapters, and its ledger.
struct Fetched {
    backends: Vec<(IdentityBackend, Arc<dyn IdentityProvider>)>,
    ledger: Arc<ResourceLedger>,
    /// A user may have been touched: the ledger holds a segment recorded for revoking (a
    /// plan's segments are recorded as planned only until they are worked).
    revocation_began: bool,
    notices: Option<Arc<Notices>>,
}

/// Every backend is dereferenced before anyone is touched, so a typo fails fast and nothing is half-done.
async fn fetch(recall: &MfaRecall, ctx: &Context) -> Result<Fetched> {
    let namespace = recall.namespace().unwrap_or_default();
    let backends_api: Api<IdentityBackend> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut backends = Vec::new();
    for name in &recall.spec.backends {
        let backend = backends_api
            .get_opt(name)
            .await?
            .ok_or_else(|| Error::BackendNotFound(format!("IdentityBackend {namespace}/{name} not found: create it or fix spec.backends")))?;
        let provider = ctx.provider(&backend).await?;
        backends.push((backend, provider));
    }
    let owner = recall.controller_owner_ref(&()).ok_or_else(|| Error::Invalid("the recall has no uid yet".into()))?;
    let ledger = Arc::new(ResourceLedger::new(ctx.client.clone(), &namespace, owner, ctx.ledger_key.clone()));
    // Segments are taken up in order, and each is recorded for revoking before its first user
    // is touched: the first segment of each backend tells.
    let mut revocation_began = false;
    for name in &recall.spec.backends {
        if let Some(first) = ledger.segments(name).await?.first()
            && !ledger.read(name, *first).await?.planned_only
        {
            revocation_began = true;
            break;
        }
    }
    let notices = match &recall.spec.notifications {
        Some(spec) => match notices(spec, &namespace, recall.metadata.uid.as_deref(), ctx).await? {
            Ok(notices) => Some(Arc::new(notices)),
            // A sink's Secret gone or wrong must not stop the recall itself: it goes on, and says so.
            Err(why) => {
                ctx.publish(recall, EventType::Warning, Reason::NoticesUnavailable, format!("users will not be told of new factors: {why}")).await;
                tracing::warn!(recall = %key(recall), error = %why, "notices unavailable");
                None
            }
        },
        None => None,
    };
    Ok(Fetched { backends, ledger, revocation_began, notices })
}

/// The recall's notice sinks with their Secrets read, or why they cannot be used.
/// Err is a spec to fix (the recall fails with InvalidSpec); Ok(Err) a Secret that cannot be used
/// (the recall goes on without notices, and says so).
pub(super) async fn notices(spec: &Notifications, namespace: &str, recall_uid: Option<&str>, ctx: &Context) -> Result<std::result::Result<Notices, String>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let read = async |name: &str, keys: &[&str]| -> std::result::Result<Vec<String>, String> {
        let secret = secrets.get_opt(name).await.map_err(|e| format!("reading Secret {namespace}/{name}: {e}"))?.ok_or_else(|| format!("Secret {namespace}/{name} named in spec.notifications not found: create it"))?;
        let data = secret.data.unwrap_or_default();
        keys.iter()
            .map(|k| {
                let value = data.get(*k).ok_or_else(|| format!("Secret {namespace}/{name} has no key {k}, which spec.notifications needs"))?;
                String::from_utf8(value.0.clone()).map(|v| v.trim_end().to_string()).map_err(|_| format!("Secret {namespace}/{name}: key {k} is not text"))
            })
            .collect()
    };
    // Credentials leave the cluster only over TLS, unless the other end is on this host.
    let loopback = crate::notify::is_loopback;
    let checked_url = |field: &str, text: &str| crate::notify::checked_url(field, text).map_err(Error::Invalid);
    let mut notices = Notices::default();
    if let Some(smtp) = &spec.smtp {
        let (host, port) = smtp.server.rsplit_once(':').and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?))).ok_or_else(|| Error::Invalid(format!("spec.notifications.smtp.server {:?} must be host:port", smtp.server)))?;
        if smtp.security == SmtpSecurity::None && !loopback(&host) {
            return Err(Error::Invalid(format!("spec.notifications.smtp.security None sends mail in clear: only to a server on loopback, not {host}; use StartTls or Tls")));
        }
        let from = smtp.from.parse().map_err(|e| Error::Invalid(format!("spec.notifications.smtp.from {:?} is not a mail address: {e}", smtp.from)))?;
        let credentials = match &smtp.credentials_secret_ref {
            Some(r) => match read(&r.name, &["username", "password"]).await {
                Ok(pair) => {
                    let mut pair = pair.into_iter();
                    Some((pair.next().unwrap_or_default(), pair.next().unwrap_or_default()))
                }
                Err(why) => return Ok(Err(why)),
            },
            None => None,
        };
        notices.smtp = Some(SmtpSink { host, port, security: smtp.security, from, credentials });
    }
    if let Some(webhook) = &spec.webhook {
        let url = checked_url("spec.notifications.webhook.url", &webhook.url)?;
        let key = match read(&webhook.secret_ref.name, &["hmac-key"]).await {
            Ok(mut keys) => keys.remove(0),
            Err(why) => return Ok(Err(why)),
        };
        let key = match HmacKey::new(key.as_bytes(), &format!("key hmac-key of Secret {namespace}/{}", webhook.secret_ref.name)) {
            Ok(key) => key,
            Err(e) => return Ok(Err(e.to_string())),
        };
        notices.webhook = Some(WebhookSink { url, key, http: crate::notify::webhook_client() });
    }
    if let Some(url) = &spec.not_me_url {
        // Signed with the ledger key: only this operator makes links it will act on.
        let recall_uid = recall_uid.ok_or_else(|| Error::Invalid("the recall has no uid yet".into()))?;
        notices.not_me = Some(NotMeLinks { base: checked_url("spec.notifications.notMeUrl", url)?, key: ctx.ledger_key.clone(), recall_uid: recall_uid.to_string() });
    }
    Ok(Ok(notices))
}

/// A recall asking for some of the factor kinds a backend can only revoke together is refused
/// before anything is recorded on any backend. One already under way (an operator upgraded in
/// between) goes on as it was recorded.
fn refuse_inseparable_kinds(recall: &MfaRecall, fetched: &Fetched) -> Result<()> {
    if fetched.revocation_began {
        return Ok(());
    }
    for (backend, provider) in &fetched.backends {
        if let Some(why) = provider.capabilities().refused_kinds(&recall.spec.factors) {
            let (namespace, name) = (recall.namespace().unwrap_or_default(), backend.name_any());
            return Err(Error::Refused(format!("IdentityBackend {namespace}/{name} cannot revoke spec.factors as asked: {why}")));
        }
    }
    Ok(())
}

/// The channel a backend's users re-enroll through: the link where asked for and the backend has
/// one, else the next sign-in.
fn channel(spec: &ReEnrollment, provider: &dyn IdentityProvider, link_lifetime: Duration) -> EnrollmentChannel {
    match (spec.via, provider.capabilities().enrollment_link) {
        (ReEnrollmentVia::VerifiedLink, Some(link)) if spec.reset_password || !link.needs_password_reset => {
            EnrollmentChannel::Link { lifetime: link_lifetime, reset_password: spec.reset_password && link.resets_password }
        }
        _ => EnrollmentChannel::NextSignIn,
    }
}

/// The channel as status names it, with what of the spec the backend could not do.
fn channel_text(spec: &ReEnrollment, channel: &EnrollmentChannel, provider: &dyn IdentityProvider) -> String {
    let link = provider.capabilities().enrollment_link;
    match (channel, link) {
        (EnrollmentChannel::Link { lifetime, reset_password }, Some(link)) => {
            let good_for = if link.sets_lifetime { format!(", good for {}", crate::duration::text(*lifetime)) } else { ", good for as long as the provider's settings say (it sets no lifetime)".into() };
            let password = match (reset_password, spec.reset_password) {
                (true, _) => ", the password reset with it",
                (false, true) => ", the password not reset (this provider cannot with the link)",
                (false, false) => "",
            };
            format!("VerifiedLink: {}{good_for}{password}", link.mechanism)
        }
        (_, None) if spec.via == ReEnrollmentVia::VerifiedLink => "NextSignIn: this provider has no link to send".into(),
        (_, Some(link)) if spec.via == ReEnrollmentVia::VerifiedLink && link.needs_password_reset => {
            format!("NextSignIn: this provider's only link is {}, which comes with a password reset: set reEnrollment.resetPassword to use it", link.mechanism)
        }
        _ => "NextSignIn".into(),
    }
}

/// One engine job per backend.
fn build(recall: &MfaRecall, plan: &Plan, backends: Vec<(IdentityBackend, Arc<dyn IdentityProvider>)>, notices: Option<Arc<Notices>>) -> Vec<BackendRun> {
    let spec = &recall.spec;
    backends
        .into_iter()
        .map(|(backend, provider)| {
            let job = RecallJob {
                recall: key(recall),
                backend: backend.name_any(),
                scope: scope_selector(spec),
                // Break-glass accounts are never recalled.
                exclude_users: spec.scope.exclude.users.iter().chain(&backend.spec.break_glass).cloned().collect(),
                exclude_groups: spec.scope.exclude.groups.clone(),
                kinds: spec.factors.clone(),
                revoke_sessions: spec.revoke_sessions && provider.capabilities().revoke_sessions,
                cutoff: plan.cutoff,
                concurrency: backend.spec.limits.max_concurrency.max(1) as usize,
                window: plan.window.clone(),
                notices: notices.clone(),
                channel: channel(&spec.re_enrollment, &*provider, plan.link_lifetime),
                plan_only: false,
                rollout: None,
                exclusions_now: None,
            };
            BackendRun { job, provider, privileged_groups: backend.spec.privileged_groups.clone(), progress: Arc::new(Mutex::new(Progress::default())), restored: Default::default() }
        })
        .collect()
}

/// The scope of one backend as the engine sees it: every user, or the union of the groups'
/// members and the named users.
fn scope_selector(spec: &MfaRecallSpec) -> ScopeSelector {
    let scope = &spec.scope;
    if scope.all_users == Some(true) {
        ScopeSelector::AllUsers
    } else {
        let membership = if scope.direct_members_only { Membership::Direct } else { Membership::Transitive };
        ScopeSelector::Listed { groups: scope.groups.clone(), users: scope.users.clone(), membership }
    }
}

/// Works with the status writer beside it.
async fn apply(
    recall: &Arc<MfaRecall>,
    ctx: &Arc<Context>,
    live: &Arc<Live>,
    runs: &[BackendRun],
    ledger: &Arc<ResourceLedger>,
    stop: watch::Receiver<bool>,
    check_interval: Duration,
    plan_first: Option<Option<String>>,
) -> Result<()> {
    let api = Api::namespaced(ctx.client.clone(), &recall.namespace().unwrap_or_default());
    let writer = StatusWriter::spawn(api, recall.clone(), live.clone(), ctx.clone());
    let outcome = work(recall, ctx, runs, ledger, live, stop, check_interval, plan_first).await;
    // The counts reached are written even when the run ended on an error (its condition follows).
    writer.finish().await;
    outcome
}

/// A backend's users are counted in status only once their segment is in the ledger, so a
/// ledger holding fewer users than status counted lost segments: deleted by someone, or kept
/// where this version does not look (ConfigMaps, before the ledger had its own resource).
/// Going on would list those users again as if untouched.
fn refuse_shrunk_ledger(recall: &MfaRecall, backend: &str, recorded: i64) -> Result<()> {
    let published = recall.status.as_ref().and_then(|s| s.backends.iter().find(|b| b.name == backend)).map_or(0, |b| b.counts.targeted);
    if published <= recorded {
        return Ok(());
    }
    Err(Error::LedgerShrunk { backend: backend.to_string(), recorded, counted: published })
}

pub(super) fn runner(r: &BackendRun, ledger: &Arc<ResourceLedger>, ctx: &Context, stop: watch::Receiver<bool>) -> Runner {
    Runner { provider: r.provider.clone(), ledger: ledger.clone(), audit: ctx.audit.clone(), progress: r.progress.clone(), stop }
}

async fn work(
    recall: &Arc<MfaRecall>,
    ctx: &Arc<Context>,
    runs: &[BackendRun],
    ledger: &Arc<ResourceLedger>,
    live: &Arc<Live>,
    stop: watch::Receiver<bool>,
    check_interval: Duration,
    plan_first: Option<Option<String>>,
) -> Result<()> {
    let phase = live.base.lock().unwrap().phase;
    // Planned first (with what the lockout guard found) while revocation has not begun: a
    // suspended, failed or restarted recall goes through its plan and approval again.
    if let Some(lockout_risk) = plan_first {
        match planned(recall, ctx, runs, ledger, live, stop.clone(), lockout_risk).await? {
            Planned::Execute => {}
            Planned::Wait(phase) => return change_phase(recall, ctx, live, phase).await,
            Planned::Stopped => return Ok(()),
        }
    }
    if !matches!(phase, RecallPhase::AwaitingReEnrollment) {
        // Exclusions first, on every backend: one that cannot be resolved keeps the recall
        // Pending, with nobody touched anywhere.
        let exclusions = futures::future::try_join_all(runs.iter().map(|r| async { runner(r, ledger, ctx, stop.clone()).resolve_exclusions(&r.job).await })).await?;
        // Held until revocation is over: a recall waiting for re-enrollment holds no turn.
        let Some(_turn) = ctx.turns.take(&key(recall), live, stop.clone()).await else { return Ok(()) };
        change_phase(recall, ctx, live, RecallPhase::Revoking).await?;
        if recall.spec.rollout.is_some() {
            match super::rollout::waves(recall, ctx, live, runs, ledger, &exclusions, stop.clone()).await? {
                super::rollout::Waves::Done => {}
                super::rollout::Waves::Paused => return change_phase(recall, ctx, live, RecallPhase::Paused).await,
                super::rollout::Waves::Stopped => return Ok(()),
            }
        } else {
            let ends = futures::future::try_join_all(
                runs.iter().zip(&exclusions).map(|(r, exclusions)| async {
                    let restored = r.restored.lock().unwrap().take();
                    runner(r, ledger, ctx, stop.clone()).revoke_with(&r.job, exclusions, restored).await
                }),
            )
            .await?;
            if ends.contains(&RunEnd::Stopped) {
                return Ok(());
            }
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
        {
            let mut base = live.base.lock().unwrap();
            let now = jiff::Timestamp::now();
            base.revoked_at = Some(now);
            if recall.spec.rollout.is_some() {
                base.deadline = now.checked_add(grace_period(&recall.spec.re_enrollment)?).ok();
            }
        }
        change_phase(recall, ctx, live, RecallPhase::AwaitingReEnrollment).await?;
    }

    let deadline = live.base.lock().unwrap().deadline;
    let mut stop_wait = stop.clone();
    loop {
        // Backends are checked side by side: a slow provider must not delay what another has seen.
        // Clearances are added while the recall runs: each check acts on the spec as it is now.
        let clearances = current_clearances(recall, ctx).await;
        let bypasses = super::bypass::issued_for(recall, ctx).await;
        let ends = futures::future::try_join_all(runs.iter().map(|r| {
            let (clearances, stop) = (clearances.clone(), stop.clone());
            let own_bypasses = bypasses.get(&r.job.backend).cloned().unwrap_or_default();
            async move {
                let mut job = r.job.clone();
                if let Some(clearances) = clearances {
                    job.window.clearances = clearances;
                }
                job.window.own_bypasses = own_bypasses;
                runner(r, ledger, ctx, stop).check_re_enrollment(&job).await
            }
        }))
        .await?;
        if ends.contains(&RunEnd::Stopped) {
            return Ok(());
        }
        // A quarantined user waits for a person's clearance, then to enroll: the recall is not over.
        let counts = live.status(None).counts;
        match after_check(counts.pending + counts.quarantined, deadline, jiff::Timestamp::now(), recall.spec.re_enrollment.on_deadline) {
            AfterCheck::Complete => break,
            AfterCheck::DisableThenComplete => {
                let ends = futures::future::try_join_all(runs.iter().map(|r| async { runner(r, ledger, ctx, stop.clone()).disable_pending(&r.job).await })).await?;
                if ends.contains(&RunEnd::Stopped) {
                    return Ok(());
                }
                break;
            }
            AfterCheck::CheckAgain => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(check_interval) => {}
            _ = stop_wait.changed() => return Ok(()),
        }
    }
    change_phase(recall, ctx, live, RecallPhase::Completed).await
}

/// Where a recall that is planned first goes once its plan is made.
enum Planned {
    Execute,
    /// Planned (mode Plan) or AwaitingApproval: the run ends, and the recall waits for its spec to change.
    Wait(RecallPhase),
    Stopped,
}

/// Makes the recall's plan unless it is made already, then decides: wait in Planned or
/// AwaitingApproval, or go on to revoke (audited as approved where it was). Revocation's clock
/// (started, deadline) starts when it is let go, not when it was planned.
async fn planned(recall: &MfaRecall, ctx: &Context, runs: &[BackendRun], ledger: &Arc<ResourceLedger>, live: &Live, stop: watch::Receiver<bool>, lockout_risk: Option<String>) -> Result<Planned> {
    let made = live.base.lock().unwrap().plan.as_ref().is_some_and(|p| p.planned_at.is_some());
    if !made {
        let exclusions = futures::future::try_join_all(runs.iter().map(|r| async { runner(r, ledger, ctx, stop.clone()).resolve_exclusions(&r.job).await })).await?;
        // Planning lists and snapshots as revoking does: it waits for a turn like revoking.
        let Some(_turn) = ctx.turns.take(&key(recall), live, stop.clone()).await else { return Ok(Planned::Stopped) };
        let ends = futures::future::try_join_all(runs.iter().zip(&exclusions).map(|(r, exclusions)| async {
            let restored = r.restored.lock().unwrap().take();
            // A rollout's plan records who is privileged: they make its first wave.
            let mut job = r.job.clone();
            if recall.spec.rollout.is_some() {
                let mut privileged = std::collections::HashSet::new();
                for group in &r.privileged_groups {
                    let members = r.provider.all_group_members(group, Membership::Transitive).await.map_err(|e| e.reworded(|m| format!("privileged group {group} of the rollout's first wave: {m}")).of(&r.job.backend_key()))?;
                    privileged.extend(members.into_iter().map(|u| u.id));
                }
                job.rollout = Some(Arc::new(crate::engine::RolloutGate { privileged, ..Default::default() }));
            }
            runner(r, ledger, ctx, stop.clone()).plan(&job, exclusions, restored).await
        }))
        .await?;
        if ends.contains(&RunEnd::Stopped) {
            return Ok(Planned::Stopped);
        }
        let mut total = api::RecallPlan::default();
        for r in runs {
            if let Some(plan) = &r.progress.lock().unwrap().plan {
                total.add(plan);
            }
        }
        total.lockout_risk = lockout_risk.clone();
        total.planned_at = Some(jiff::Timestamp::now());
        live.base.lock().unwrap().plan = Some(total);
    }
    let users = live.base.lock().unwrap().plan.as_ref().map_or(0, |p| p.users);
    let spec = &recall.spec;
    if spec.mode == RecallMode::Plan {
        return Ok(Planned::Wait(RecallPhase::Planned));
    }
    let approval = spec.approval.as_ref().filter(|a| a.needed_for(users));
    if approval.is_some_and(|a| !a.approved()) {
        return Ok(Planned::Wait(RecallPhase::AwaitingApproval));
    }
    // Planned with the risk shown; revoking waits until it is fixed or acknowledged.
    if let Some(why) = lockout_risk {
        return Err(Error::LockoutRisk(why));
    }
    // Audited once revocation is let go (a crash before its first segment is worked may write it again).
    if let Some(approval) = approval {
        let approver = approval.approved_by.clone().unwrap_or_default();
        ctx.audit.record(AuditEvent {
            recall: key(recall),
            action: Action::RecallApprove,
            outcome: Outcome::Done,
            detail: Some(format!("approved by {approver} (requested by {}) with its plan of {users} users", approval.requested_by)),
            ..Default::default()
        })?;
    }
    let now = jiff::Timestamp::now();
    let grace = grace_period(&spec.re_enrollment)?;
    let mut base = live.base.lock().unwrap();
    base.started_at = Some(now);
    base.deadline = Some(now.checked_add(grace).map_err(|e| Error::Invalid(format!("reEnrollment.gracePeriod {:?} is too long: {e}", spec.re_enrollment.grace_period)))?);
    Ok(Planned::Execute)
}

/// What the re-enrollment watch does after a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterCheck {
    /// Everyone re-enrolled, or the deadline passed with onDeadline Keep.
    Complete,
    /// The deadline passed with onDeadline Disable: those still pending are disabled first.
    DisableThenComplete,
    CheckAgain,
}

fn after_check(pending: i64, deadline: Option<jiff::Timestamp>, now: jiff::Timestamp, on_deadline: DeadlineAction) -> AfterCheck {
    if pending == 0 {
        AfterCheck::Complete
    } else if deadline.is_some_and(|d| now >= d) {
        if on_deadline == DeadlineAction::Disable { AfterCheck::DisableThenComplete } else { AfterCheck::Complete }
    } else {
        AfterCheck::CheckAgain
    }
}

/// Turns to list and revoke: at most `cap` recalls at once, the others in line in the order they
/// asked, so a large recall cannot hold back every other one and the machine and the providers'
/// budgets are not split among any number of them.
pub struct Turns {
    slots: Arc<tokio::sync::Semaphore>,
    /// Recalls waiting, first in line first.
    line: Mutex<std::collections::VecDeque<String>>,
}

impl Turns {
    pub fn new(cap: u16) -> Self {
        Self { slots: Arc::new(tokio::sync::Semaphore::new(usize::from(cap.max(1)))), line: Mutex::default() }
    }

    /// Waits for a turn, keeping the recall's place in line in `live` (and so in status); None
    /// when the run is told to stop first.
    async fn take(&self, key: &str, live: &Live, mut stop: watch::Receiver<bool>) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(turn) = self.slots.clone().try_acquire_owned() {
            return Some(turn);
        }
        self.line.lock().unwrap().push_back(key.to_string());
        // The semaphore is fair: waiting on one acquire keeps the place in line.
        let turn = self.slots.clone().acquire_owned();
        tokio::pin!(turn);
        let mut look = tokio::time::interval(Duration::from_secs(1));
        let taken = loop {
            tokio::select! {
                turn = &mut turn => break turn.ok(),
                _ = look.tick() => {
                    let place = self.line.lock().unwrap().iter().position(|k| k == key).map_or(1, |i| i + 1);
                    live.set_queued(Some(i32::try_from(place).unwrap_or(i32::MAX)));
                }
                _ = stop.wait_for(|s| *s) => break None,
            }
        };
        self.line.lock().unwrap().retain(|k| k != key);
        live.set_queued(None);
        taken
    }
}

/// The one place a phase is set: audited durably first, then recorded for the status writer
/// and announced.
async fn change_phase(recall: &MfaRecall, ctx: &Context, live: &Live, phase: RecallPhase) -> Result<()> {
    let previous = live.base.lock().unwrap().phase;
    if previous == phase {
        return Ok(());
    }
    let uid = recall.uid().unwrap_or_default();
    if ctx.runs.entered.lock().unwrap().get(&uid) == Some(&phase) {
        live.set_phase(phase);
        return Ok(());
    }
    let counts = live.status(None).counts;
    let key = key(recall);
    let outcome = serde_json::to_value(phase)?.as_str().unwrap_or_default().to_string();
    ctx.audit
        .record(AuditEvent {
            recall: key.clone(),
            action: Action::RecallPhase,
            outcome: Outcome::Phase(phase),
            detail: Some(format!("reason: {}", recall.spec.reason)),
            ..Default::default()
        })?;
    ctx.audit.sync().await?;
    ctx.runs.entered.lock().unwrap().insert(uid, phase);
    live.set_phase(phase);
    tracing::info!(recall = %key, phase = %outcome, targeted = counts.targeted, invalidated = counts.invalidated, "phase changed");
    // A failure is announced by its own warning, which says why.
    if phase != RecallPhase::Failed {
        let note = format!("{outcome}: {} targeted, {} invalidated, {} re-enrolled, {} failed", counts.targeted, counts.invalidated, counts.re_enrolled, counts.failed);
        ctx.publish(recall, EventType::Normal, Reason::from(phase), note).await;
    }
    Ok(())
}

/// Writes status about once a second while the recall runs, a phase change within half a second,
/// and once more at the end. Dropped with its owner, even an aborted one.
struct StatusWriter {
    done: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl StatusWriter {
    fn spawn(api: Api<MfaRecall>, recall: Arc<MfaRecall>, live: Arc<Live>, ctx: Arc<Context>) -> Self {
        let (done, mut done_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut last_write = Instant::now();
            loop {
                let finished = *done_rx.borrow();
                match live.flush(&api, &recall, &ctx).await {
                    Ok(true) => last_write = Instant::now(),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(recall = %recall.name_any(), error = %e, "status write failed; retrying"),
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
    async fn finish(mut self) {
        let _ = self.done.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
impl Runs {
    /// Puts a stand-in run under `key`; it is handed the stop signal.
    pub(super) fn adopt<F>(&self, key: &str, run: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop, stop_rx) = watch::channel(false);
        let run = run(stop_rx);
        let task = tokio::spawn(async move {
            run.await;
            End::Over
        });
        self.inner.lock().unwrap().insert(key.to_string(), Slot::Owned(Owner { stop, record: Arc::new(OnceLock::new()), task }));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn recall(re_enrollment: serde_json::Value) -> MfaRecall {
        let spec = serde_json::from_value(serde_json::json!({ "reason": "INC-1", "backends": ["kc"], "scope": { "allUsers": true }, "reEnrollment": re_enrollment })).unwrap();
        let mut recall = MfaRecall::new("r", spec);
        recall.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-11-27T18:00:00Z".parse().unwrap()));
        recall
    }

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_valid_spec_gives_the_cutoff_deadline_and_interval() {
        let plan = validate(&recall(serde_json::json!({ "gracePeriod": "1h30m", "checkInterval": "15s" })), None, at("2026-11-28T00:00:00Z")).unwrap();
        assert_eq!(plan, Plan { cutoff: at("2026-11-27T18:00:00Z"), started: at("2026-11-28T00:00:00Z"), deadline: at("2026-11-28T01:30:00Z"), grace: jiff::SignedDuration::from_mins(90), check_interval: Duration::from_secs(15), window: plan.window.clone(), link_lifetime: Duration::from_secs(24 * 3600) });
        assert_eq!(plan.window.started, Some(at("2026-11-28T00:00:00Z")));
        assert_eq!(plan.window.thresholds, crate::watch::Thresholds::default(), "the spec's defaults are the rules' defaults");
    }

    /// Status counts a backend's users only once their segment is recorded: a ledger holding
    /// fewer stops the recall (its users would be listed again as if untouched).
    #[test]
    fn a_ledger_holding_fewer_users_than_status_counted_stops_the_recall() {
        let mut recall = recall(serde_json::json!({}));
        assert!(refuse_shrunk_ledger(&recall, "kc", 0).is_ok(), "a new recall");
        let counted = crate::api::RecallCounts { targeted: 120, ..Default::default() };
        recall.status = Some(MfaRecallStatus { backends: vec![BackendProgress { name: "kc".into(), counts: counted, ..Default::default() }], ..Default::default() });
        assert!(refuse_shrunk_ledger(&recall, "kc", 120).is_ok());
        assert!(refuse_shrunk_ledger(&recall, "kc", 150).is_ok(), "listed further since the status was written");
        assert!(refuse_shrunk_ledger(&recall, "other", 0).is_ok(), "a backend status has not counted yet");
        let e = refuse_shrunk_ledger(&recall, "kc", 80).unwrap_err();
        assert!(e.is_permanent());
        assert_eq!(reason(&e), Reason::LedgerShrunk);
        assert!(e.to_string().contains("holds 80 users where this recall's status counted 120") && e.to_string().contains("docs/upgrading.md"), "{e}");
    }

    /// A run that starts again keeps the first start, so the deadline does not move.
    #[test]
    fn a_restarted_run_keeps_its_deadline() {
        let plan = validate(&recall(serde_json::json!({ "gracePeriod": "1h" })), Some(at("2026-11-28T00:00:00Z")), at("2026-11-28T00:40:00Z")).unwrap();
        assert_eq!(plan.deadline, at("2026-11-28T01:00:00Z"));
    }

    /// Durations the apiserver's pattern lets through but a run cannot keep to are permanent
    /// errors that name the field.
    #[test]
    fn permanent_configuration_error_for_durations_a_run_cannot_keep() {
        for (re_enrollment, field) in [
            (serde_json::json!({ "gracePeriod": "soon" }), "gracePeriod"),
            (serde_json::json!({ "checkInterval": "0s" }), "checkInterval"),
            (serde_json::json!({ "checkInterval": "0.5s" }), "checkInterval"),
            (serde_json::json!({ "checkInterval": "5" }), "checkInterval"),
            (serde_json::json!({ "checkInterval": "9s" }), "checkInterval"),
            (serde_json::json!({ "gracePeriod": "9999999999999999h" }), "gracePeriod"),
        ] {
            let e = validate(&recall(re_enrollment.clone()), None, at("2026-11-28T00:00:00Z")).unwrap_err();
            assert!(e.is_permanent() && e.to_string().contains(field), "{re_enrollment}: {e}");
            assert_eq!(reason(&e), Reason::InvalidSpec);
        }
    }

    #[test]
    fn deadline_reached_disables_the_pending_or_keeps_them_as_asked() {
        let (before, after, deadline) = (at("2026-11-28T00:59:59Z"), at("2026-11-28T01:00:00Z"), Some(at("2026-11-28T01:00:00Z")));
        assert_eq!(after_check(3, deadline, after, DeadlineAction::Disable), AfterCheck::DisableThenComplete);
        assert_eq!(after_check(3, deadline, after, DeadlineAction::Keep), AfterCheck::Complete);
        assert_eq!(after_check(3, deadline, before, DeadlineAction::Disable), AfterCheck::CheckAgain);
    }

    #[test]
    fn everyone_re_enrolled_completes_before_the_deadline() {
        assert_eq!(after_check(0, Some(at("2026-11-28T01:00:00Z")), at("2026-11-28T00:00:00Z"), DeadlineAction::Disable), AfterCheck::Complete);
    }

    /// Raises its flag when dropped: shows a task was ended, not left running.
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A run that does not stop in time is aborted, not detached, so an un-suspend cannot start
    /// a second run beside it.
    #[tokio::test]
    async fn a_stop_that_times_out_aborts_the_run() {
        let runs = Runs::default();
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        runs.adopt("ns/r", move |_stop| async move {
            let _guard = guard;
            std::future::pending::<()>().await
        });
        assert_eq!(runs.state("ns/r"), Run::Running);
        assert!(!runs.stop("ns/r", Some(RecallPhase::Suspended), Duration::from_millis(20)).await, "an aborted run recorded nothing");
        assert!(dropped.load(Ordering::SeqCst), "the run is still alive");
        assert_eq!(runs.state("ns/r"), Run::Idle);
    }

    #[tokio::test]
    async fn a_run_that_stops_in_time_is_waited_for() {
        let runs = Runs::default();
        runs.adopt("ns/r", |mut stop| async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        assert!(runs.stop("ns/r", None, Duration::from_secs(5)).await);
        assert!(!runs.stop("ns/r", None, Duration::from_secs(5)).await, "nothing left to stop");
        assert_eq!(runs.state("ns/r"), Run::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_all_aborts_the_runs_that_do_not_stop() {
        let runs = Runs::default();
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        runs.adopt("ns/stuck", move |_stop| async move {
            let _guard = guard;
            std::future::pending::<()>().await
        });
        runs.adopt("ns/willing", |mut stop| async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        runs.stop_all(Duration::from_secs(25)).await;
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!((runs.state("ns/stuck"), runs.state("ns/willing")), (Run::Idle, Run::Idle));
    }

    /// Backends not ready: the run ended on an error that may fix itself, and reconcile sees the
    /// pause that is left, then an idle recall to start again.
    /// One turn to revoke: the first recall takes it at once, the next two wait in line with their
    /// places in status, a stopped one leaves the line, and turns go in the order asked.
    #[tokio::test(start_paused = true)]
    async fn recalls_past_the_cap_wait_in_line_with_their_place_in_status() {
        let turns = Arc::new(Turns::new(1));
        let lives: Vec<Arc<Live>> = (0..3).map(|_| Arc::new(Live::new(MfaRecallStatus::default()))).collect();
        let (_keep, running) = watch::channel(false);
        let first = turns.take("ns/a", &lives[0], running.clone()).await.expect("a free turn is taken at once");
        let place = |i: usize| lives[i].base.lock().unwrap().queue_position;
        assert_eq!(place(0), None);
        let (stop_c, stopped) = watch::channel(false);
        let b = tokio::spawn({
            let (turns, live, running) = (turns.clone(), lives[1].clone(), running.clone());
            async move { turns.take("ns/b", &live, running).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let c = tokio::spawn({
            let (turns, live) = (turns.clone(), lives[2].clone());
            async move { turns.take("ns/c", &live, stopped).await }
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!((place(1), place(2)), (Some(1), Some(2)));
        let status = lives[2].status(None);
        let ready = status.conditions.iter().find(|c| c.type_ == api::READY).unwrap();
        assert_eq!(ready.reason, "Queued");
        assert!(ready.message.contains("number 2 in line"), "{}", ready.message);

        stop_c.send(true).unwrap();
        assert!(c.await.unwrap().is_none(), "a stopped recall leaves the line without a turn");
        assert_eq!(place(2), None);
        drop(first);
        let second = b.await.unwrap().expect("the next in line gets the turn");
        assert_eq!(place(1), None);
        assert!(turns.line.lock().unwrap().is_empty());
        drop(second);
    }

    /// A run tried again from a status the cache has not caught up with (still Pending) enters
    /// Revoking without a second audit line or event.
    #[tokio::test]
    async fn a_phase_is_audited_once_when_entered_not_once_per_retry() {
        let (ctx, mut server, trail) = crate::controller::Context::test();
        let recall = crate::controller::fixtures::recall("r", serde_json::json!({}), false);
        let first = Live::new(MfaRecallStatus::default());
        let (entered, event) = tokio::join!(change_phase(&recall, &ctx, &first, RecallPhase::Revoking), server.event());
        entered.unwrap();
        assert_eq!(event["reason"], "Revoking");
        for _ in 0..3 {
            let retry = Live::new(MfaRecallStatus::default());
            // An event published again would wait for the mocked apiserver's answer.
            tokio::time::timeout(Duration::from_secs(2), change_phase(&recall, &ctx, &retry, RecallPhase::Revoking)).await.expect("the retry announced the phase again").unwrap();
            assert_eq!(retry.base.lock().unwrap().phase, RecallPhase::Revoking);
        }
        server.quiet().await;
        ctx.audit.sync().await.unwrap();
        assert_eq!(trail.actions(), ["recall.phase: Revoking"]);
        // Entered again after another phase, it is audited again.
        let (left, _) = tokio::join!(change_phase(&recall, &ctx, &first, RecallPhase::Suspended), server.event());
        left.unwrap();
        let (back, _) = tokio::join!(change_phase(&recall, &ctx, &first, RecallPhase::Revoking), server.event_repeated());
        back.unwrap();
        ctx.audit.sync().await.unwrap();
        assert_eq!(trail.actions(), ["recall.phase: Revoking", "recall.phase: Suspended", "recall.phase: Revoking"]);
    }

    #[tokio::test(start_paused = true)]
    async fn backends_not_ready_the_run_waits_out_its_pause() {
        let runs = Runs::default();
        let (stop, _) = watch::channel(false);
        let task = tokio::spawn(async { End::RetryFrom(Instant::now() + RETRY_PAUSE) });
        runs.inner.lock().unwrap().insert("ns/r".into(), Slot::Owned(Owner { stop, record: Arc::new(OnceLock::new()), task }));
        while matches!(runs.state("ns/r"), Run::Running) {
            tokio::task::yield_now().await;
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(runs.state("ns/r"), Run::Waiting(RETRY_PAUSE - Duration::from_secs(5)));
        tokio::time::advance(RETRY_PAUSE).await;
        assert_eq!(runs.state("ns/r"), Run::Idle);
    }
}
