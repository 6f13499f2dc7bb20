//! Reconcile of MfaRecall: the finalizer, then the phase decision (`decide`, a pure function of
//! the spec and what is observed: the recorded phase, whether the spec changed since, deletion,
//! and this process's run), carried out by starting or stopping the recall's owner (`run`), the
//! one task that runs a recall and writes its status.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event, finalizer};
use tracing::Instrument;
use kube::{Api, ResourceExt};

use super::Context;
use super::run::Run;
use crate::api::{MfaRecall, MfaRecallSpec, Reason, RecallPhase};
use crate::{Error, Result};

pub const FINALIZER: &str = "mfarecall.io/stop-recall";

/// Time a stopping run gets to finish its in-flight users before it is aborted.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// A running recall is looked at this often; its owner writes progress meanwhile.
const WATCH_INTERVAL: Duration = Duration::from_secs(20);

pub async fn reconcile(recall: Arc<MfaRecall>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = recall.namespace().unwrap_or_default();
    let api: Api<MfaRecall> = Api::namespaced(ctx.client.clone(), &namespace);
    let span = tracing::info_span!("reconcile", recall = %key(&recall), trace_id = %crate::telemetry::trace_id());
    finalizer(&api, FINALIZER, recall, |event| async {
        match event {
            Event::Apply(recall) => apply(recall, &ctx).await,
            Event::Cleanup(recall) => cleanup(recall, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Errors here are the apiserver's (the owner reports the run's own in status): tried again,
/// except one that only a change of the object can fix.
pub fn error_policy(recall: Arc<MfaRecall>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(recall = %recall.name_any(), %error, "reconcile failed");
    ctx.metrics.reconcile_error("mfarecall", error.category());
    if error.is_permanent() { Action::await_change() } else { Action::requeue(Duration::from_secs(15)) }
}

pub(super) fn key(recall: &MfaRecall) -> String {
    format!("{}/{}", recall.namespace().unwrap_or_default(), recall.name_any())
}

/// What reconcile sees of a recall besides its spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The phase recorded in status.
    pub phase: RecallPhase,
    /// The spec changed since the status was written (generation past observedGeneration).
    pub spec_changed: bool,
    /// The object is being deleted.
    pub deleting: bool,
    /// This process's run of the recall.
    pub run: Run,
}

impl Observed {
    fn of(recall: &MfaRecall, run: Run) -> Self {
        let status = recall.status.as_ref();
        Self {
            phase: status.map(|s| s.phase).unwrap_or_default(),
            spec_changed: status.and_then(|s| s.observed_generation) != recall.metadata.generation,
            deleting: recall.metadata.deletion_timestamp.is_some(),
            run,
        }
    }
}

/// What a reconcile does with a recall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ended (completed, cancelled, or failed on this very spec): nothing to do until the object changes.
    Leave,
    /// Stop the run, recording `record` (cancelled or suspended) unless it is recorded already
    /// or the recall is being deleted.
    Stop { record: Option<RecallPhase> },
    /// Start the run: fresh, after a restart, unsuspended, after an error, or on a failed
    /// recall's changed spec (it continues from the ledger either way).
    Start,
    /// The last run stopped on an error that may fix itself (a backend not there or not
    /// answering yet): start again after this pause.
    Wait(Duration),
    /// The run is alive and writes its own status: look again later.
    Watch,
}

/// The decision. Deletion wins over everything, cancel over suspend; a completed or cancelled
/// recall stays ended whatever the spec says, a failed one until its spec changes.
pub fn decide(spec: &MfaRecallSpec, observed: &Observed) -> Decision {
    if observed.deleting {
        return Decision::Stop { record: None };
    }
    match observed.phase {
        RecallPhase::Completed | RecallPhase::Cancelled => return Decision::Leave,
        RecallPhase::Failed if !observed.spec_changed => return Decision::Leave,
        // Planned, or waiting for approval: the run ended; a change of the spec (mode: Execute,
        // approvedBy) takes it up again.
        RecallPhase::Planned | RecallPhase::AwaitingApproval | RecallPhase::Paused if !observed.spec_changed && observed.run == Run::Idle => return Decision::Leave,
        _ => {}
    }
    if spec.cancel || spec.suspend {
        let target = if spec.cancel { RecallPhase::Cancelled } else { RecallPhase::Suspended };
        return Decision::Stop { record: (observed.phase != target).then_some(target) };
    }
    match observed.run {
        Run::Running => Decision::Watch,
        Run::Waiting(pause) => Decision::Wait(pause),
        Run::Idle => Decision::Start,
    }
}

async fn apply(recall: Arc<MfaRecall>, ctx: &Arc<Context>) -> Result<Action> {
    let key = key(&recall);
    match decide(&recall.spec, &Observed::of(&recall, ctx.runs.state(&key))) {
        Decision::Leave => Ok(Action::await_change()),
        Decision::Wait(pause) => Ok(Action::requeue(pause)),
        Decision::Watch => Ok(Action::requeue(WATCH_INTERVAL)),
        Decision::Stop { record } => {
            // A run that stopped by itself recorded the phase on its way out; otherwise an owner
            // is started only to record it, so the phase has one writer either way.
            let Some(phase) = record else { return Ok(Action::await_change()) };
            if !ctx.runs.stop(&key, record, STOP_TIMEOUT).await {
                let latest = latest(&recall, ctx).await?;
                if decide(&latest.spec, &Observed::of(&latest, Run::Idle)) == (Decision::Stop { record: Some(phase) }) {
                    ctx.runs.start(&key, Arc::new(latest), ctx.clone(), record);
                }
            }
            // Looked at again should the phase not get recorded (the audit trail or the apiserver failing).
            Ok(Action::requeue(WATCH_INTERVAL))
        }
        Decision::Start => {
            let latest = latest(&recall, ctx).await?;
            match decide(&latest.spec, &Observed::of(&latest, Run::Idle)) {
                Decision::Start => {}
                Decision::Leave => return Ok(Action::await_change()),
                // Switched since the cache was filled: taken up on the next look.
                Decision::Stop { .. } | Decision::Wait(_) | Decision::Watch => return Ok(Action::requeue(Duration::from_secs(1))),
            }
            tracing::info!(recall = %key, phase = ?latest.status.as_ref().map(|s| s.phase).unwrap_or_default(), "starting recall run");
            ctx.runs.start(&key, Arc::new(latest), ctx.clone(), None);
            Ok(Action::requeue(WATCH_INTERVAL))
        }
    }
}

/// The recall as the apiserver has it now: the cache can lag what the last run wrote (a reconcile
/// woken by a run's last status write still sees the old phase).
async fn latest(recall: &MfaRecall, ctx: &Context) -> Result<MfaRecall> {
    Ok(Api::<MfaRecall>::namespaced(ctx.client.clone(), &recall.namespace().unwrap_or_default()).get_status(&recall.name_any()).await?)
}

/// Deleting a recall stops its run at a checkpoint; what was done stays audited.
async fn cleanup(recall: Arc<MfaRecall>, ctx: &Arc<Context>) -> Result<Action> {
    let key = key(&recall);
    if let Decision::Stop { record } = decide(&recall.spec, &Observed::of(&recall, ctx.runs.state(&key))) {
        ctx.runs.stop(&key, record, STOP_TIMEOUT).await;
    }
    ctx.metrics.forget_recall(&recall.namespace().unwrap_or_default(), &recall.name_any());
    ctx.runs.forget(&recall.uid().unwrap_or_default());
    ctx.publish(&*recall, EventType::Normal, Reason::Deleted, "recall deleted; its run stopped".into()).await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::{ErrorKind, ProviderError};

    fn spec(cancel: bool, suspend: bool) -> MfaRecallSpec {
        let mut spec: MfaRecallSpec = serde_json::from_value(serde_json::json!({ "reason": "INC-1", "backends": ["kc"], "scope": { "allUsers": true } })).unwrap();
        (spec.cancel, spec.suspend) = (cancel, suspend);
        spec
    }

    fn seen(phase: RecallPhase, run: Run) -> Observed {
        Observed { phase, spec_changed: false, deleting: false, run }
    }

    #[test]
    fn pending_a_new_recall_starts() {
        let new = Observed { spec_changed: true, ..seen(RecallPhase::Pending, Run::Idle) };
        assert_eq!(decide(&spec(false, false), &new), Decision::Start);
    }

    #[test]
    fn a_running_recall_is_watched() {
        assert_eq!(decide(&spec(false, false), &seen(RecallPhase::Revoking, Run::Running)), Decision::Watch);
        assert_eq!(decide(&spec(false, false), &seen(RecallPhase::AwaitingReEnrollment, Run::Running)), Decision::Watch);
    }

    #[test]
    fn a_run_lost_to_a_restart_starts_again() {
        for phase in [RecallPhase::Pending, RecallPhase::Revoking, RecallPhase::AwaitingReEnrollment] {
            assert_eq!(decide(&spec(false, false), &seen(phase, Run::Idle)), Decision::Start, "{phase:?}");
        }
    }

    /// A missing IdentityBackend may yet be created, an unreachable one come back: the recall
    /// keeps its phase and is tried again after a pause, not failed.
    #[test]
    fn backends_not_ready_waits_then_starts_again() {
        let pause = Duration::from_secs(7);
        assert_eq!(decide(&spec(false, false), &seen(RecallPhase::Pending, Run::Waiting(pause))), Decision::Wait(pause));
        assert_eq!(decide(&spec(false, false), &seen(RecallPhase::Revoking, Run::Waiting(pause))), Decision::Wait(pause));
        assert_eq!(decide(&spec(false, false), &seen(RecallPhase::Pending, Run::Idle)), Decision::Start, "once the pause is over");
        assert_eq!(decide(&spec(false, true), &seen(RecallPhase::Pending, Run::Waiting(pause))), Decision::Stop { record: Some(RecallPhase::Suspended) }, "suspend does not wait");
    }

    #[test]
    fn suspend_stops_the_run_and_is_recorded_once() {
        assert_eq!(decide(&spec(false, true), &seen(RecallPhase::Revoking, Run::Running)), Decision::Stop { record: Some(RecallPhase::Suspended) });
        assert_eq!(decide(&spec(false, true), &seen(RecallPhase::Pending, Run::Idle)), Decision::Stop { record: Some(RecallPhase::Suspended) }, "created suspended");
        assert_eq!(decide(&spec(false, true), &seen(RecallPhase::Suspended, Run::Idle)), Decision::Stop { record: None });
    }

    /// A plan, a recall waiting for approval, or a paused rollout is left until its spec changes
    /// (mode set to Execute, approvedBy set, rollout edited); then it runs again, from its plan.
    #[test]
    fn a_planned_or_unapproved_recall_waits_for_its_spec_to_change() {
        for phase in [RecallPhase::Planned, RecallPhase::AwaitingApproval, RecallPhase::Paused] {
            assert_eq!(decide(&spec(false, false), &seen(phase, Run::Idle)), Decision::Leave, "{phase:?}");
            let changed = Observed { spec_changed: true, ..seen(phase, Run::Idle) };
            assert_eq!(decide(&spec(false, false), &changed), Decision::Start, "{phase:?}");
            assert_eq!(decide(&spec(true, false), &changed), Decision::Stop { record: Some(RecallPhase::Cancelled) }, "{phase:?}");
        }
    }

    #[test]
    fn resume_after_suspend_starts() {
        assert_eq!(decide(&spec(false, false), &seen(RecallPhase::Suspended, Run::Idle)), Decision::Start);
    }

    #[test]
    fn cancel_wins_over_suspend_and_is_recorded_once() {
        assert_eq!(decide(&spec(true, true), &seen(RecallPhase::Suspended, Run::Idle)), Decision::Stop { record: Some(RecallPhase::Cancelled) });
        assert_eq!(decide(&spec(true, false), &seen(RecallPhase::AwaitingReEnrollment, Run::Running)), Decision::Stop { record: Some(RecallPhase::Cancelled) });
        assert_eq!(decide(&spec(true, false), &seen(RecallPhase::Cancelled, Run::Idle)), Decision::Leave);
    }

    /// The object is going away: the run stops, and no phase is written to it.
    #[test]
    fn delete_mid_run_stops_without_recording_a_phase() {
        for (phase, run) in [(RecallPhase::Revoking, Run::Running), (RecallPhase::AwaitingReEnrollment, Run::Running), (RecallPhase::Completed, Run::Idle), (RecallPhase::Failed, Run::Idle)] {
            for (cancel, suspend) in [(false, false), (true, false), (false, true)] {
                let deleting = Observed { deleting: true, ..seen(phase, run) };
                assert_eq!(decide(&spec(cancel, suspend), &deleting), Decision::Stop { record: None }, "{phase:?} cancel={cancel} suspend={suspend}");
            }
        }
    }

    /// Failed on this spec: left until the object changes (no retry every few seconds); a
    /// changed spec is decided again like any other.
    #[test]
    fn permanent_configuration_error_waits_for_a_spec_change() {
        for (cancel, suspend) in [(false, false), (true, false), (false, true)] {
            assert_eq!(decide(&spec(cancel, suspend), &seen(RecallPhase::Failed, Run::Idle)), Decision::Leave);
        }
        let changed = Observed { spec_changed: true, ..seen(RecallPhase::Failed, Run::Idle) };
        assert_eq!(decide(&spec(false, false), &changed), Decision::Start);
        assert_eq!(decide(&spec(false, true), &changed), Decision::Stop { record: Some(RecallPhase::Suspended) });
    }

    #[test]
    fn a_completed_or_cancelled_recall_stays_ended_whatever_the_spec_says() {
        for phase in [RecallPhase::Completed, RecallPhase::Cancelled] {
            for (cancel, suspend, spec_changed) in [(false, false, false), (true, false, true), (false, true, true)] {
                let ended = Observed { spec_changed, ..seen(phase, Run::Idle) };
                assert_eq!(decide(&spec(cancel, suspend), &ended), Decision::Leave, "{phase:?} cancel={cancel} suspend={suspend}");
            }
        }
    }

    #[test]
    fn observed_reads_the_status_generation_and_deletion() {
        let mut recall = MfaRecall::new("r", spec(false, false));
        recall.metadata.generation = Some(2);
        assert_eq!(Observed::of(&recall, Run::Idle), Observed { phase: RecallPhase::Pending, spec_changed: true, deleting: false, run: Run::Idle });
        recall.status = Some(crate::api::MfaRecallStatus { phase: RecallPhase::Failed, observed_generation: Some(2), ..Default::default() });
        recall.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
        assert_eq!(Observed::of(&recall, Run::Running), Observed { phase: RecallPhase::Failed, spec_changed: false, deleting: true, run: Run::Running });
    }

    /// Only a change of the object mends these; everything else is tried again. Errors keep their
    /// own category through the finalizer, so metrics do not count them all as invalid.
    #[test]
    fn only_errors_that_cannot_fix_themselves_are_permanent() {
        for e in [Error::Invalid("gracePeriod".into()), Error::Refused("totp alone".into()), Error::ListingFailed("loop".into())] {
            assert!(e.is_permanent(), "{e}");
        }
        for e in [
            Error::BackendNotFound("kc".into()),
            Error::ExclusionGroupNotFound("admins".into()),
            Error::Provider(ProviderError::new(ErrorKind::Unavailable, "503")),
            Error::Provider(ProviderError::new(ErrorKind::Auth, "401")),
            Error::Provider(ProviderError::new(ErrorKind::Config, "no url")),
            Error::Ledger { name: "l".into(), message: "conflict".into() },
        ] {
            assert!(!e.is_permanent(), "{e}");
        }
        let wrapped = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::ApplyFailed(Error::BackendNotFound("kc".into()))));
        assert_eq!((wrapped.category(), wrapped.is_permanent()), ("backendNotFound", false));
        let wrapped = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::ApplyFailed(Error::Invalid("x".into()))));
        assert_eq!((wrapped.category(), wrapped.is_permanent()), ("invalid", true));
        let unnamed = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::UnnamedObject));
        assert_eq!((unnamed.category(), unnamed.is_permanent()), ("finalizer", false));
    }
}

/// Reconcile against a mocked apiserver: the finalizer, status and event calls of the main
/// scenarios, in the order they are made.
#[cfg(test)]
mod scenarios {
    use std::sync::atomic::{AtomicBool, Ordering};

    use serde_json::json;

    use super::*;
    use crate::controller::fixtures::{self, NAMESPACE};

    const KEY: &str = "security/r";

    fn ready(status: &serde_json::Value) -> &serde_json::Value {
        status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").expect("a Ready condition")
    }

    /// A reconcile that asks the apiserver for nothing: one that did would wait for an answer.
    async fn quietly(recall: MfaRecall, ctx: &Arc<Context>) -> Action {
        tokio::time::timeout(Duration::from_secs(5), reconcile(Arc::new(recall), ctx.clone())).await.expect("reconcile asked the apiserver for something").unwrap()
    }

    /// Waits for the owner started by a reconcile to end.
    async fn settled(ctx: &Context) -> Run {
        loop {
            match ctx.runs.state(KEY) {
                Run::Running => tokio::time::sleep(Duration::from_millis(5)).await,
                run => return run,
            }
        }
    }

    #[tokio::test]
    async fn a_new_recall_gets_its_finalizer_added_and_nothing_else() {
        let (ctx, mut server, trail) = Context::test();
        let recall = fixtures::recall("r", json!({}), true);
        let reconciled = tokio::spawn(reconcile(Arc::new(recall.clone()), ctx.clone()));
        server.finalizer_added(&recall).await;
        assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
        server.quiet().await;
        assert_eq!(ctx.runs.state(KEY), Run::Idle, "the patch brings the next reconcile; nothing runs before");
        assert!(trail.actions().is_empty());
    }

    #[tokio::test]
    async fn a_suspended_recall_gets_phase_suspended_by_server_side_apply() {
        let (ctx, mut server, trail) = Context::test();
        let recall = fixtures::recall("r", json!({ "suspend": true }), false);
        let reconciled = tokio::spawn(reconcile(Arc::new(recall.clone()), ctx.clone()));
        server.status_read(&recall).await;
        let event = server.event().await;
        assert_eq!((&event["type"], &event["reason"], &event["regarding"]["name"]), (&json!("Normal"), &json!("Suspended"), &json!("r")));
        let status = server.status_applied(&recall).await;
        assert_eq!((&status["phase"], &status["observedGeneration"]), (&json!("Suspended"), &json!(1)));
        assert_eq!((&ready(&status)["status"], &ready(&status)["reason"]), (&json!("False"), &json!("Suspended")));
        assert_eq!(reconciled.await.unwrap().unwrap(), Action::requeue(WATCH_INTERVAL));
        assert_eq!(settled(&ctx).await, Run::Idle);
        assert_eq!(trail.actions(), ["recall.phase: Suspended"]);

        // Recorded: the next look does nothing, and audits nothing again.
        let mut suspended = recall.clone();
        suspended.status = Some(serde_json::from_value(status).unwrap());
        assert_eq!(quietly(suspended, &ctx).await, Action::await_change());
        server.quiet().await;
        assert_eq!(trail.actions().len(), 1);
    }

    /// Deleted while its run works: the run is stopped first, then the finalizer goes; no phase
    /// is written to an object on its way out.
    #[tokio::test]
    async fn a_recall_deleted_mid_run_is_stopped_and_has_its_finalizer_removed() {
        let (ctx, mut server, trail) = Context::test();
        let mut recall = fixtures::recall("r", json!({}), false);
        recall.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
        recall.status = Some(crate::api::MfaRecallStatus { phase: RecallPhase::Revoking, observed_generation: Some(1), ..Default::default() });
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = stopped.clone();
        ctx.runs.adopt(KEY, move |mut stop| async move {
            let _ = stop.wait_for(|s| *s).await;
            flag.store(true, Ordering::SeqCst);
        });
        assert_eq!(ctx.runs.state(KEY), Run::Running);
        let reconciled = tokio::spawn(reconcile(Arc::new(recall.clone()), ctx.clone()));
        let event = server.event().await;
        assert!(stopped.load(Ordering::SeqCst), "the run was still working when the deletion was announced");
        assert_eq!(event["reason"], "Deleted");
        server.finalizer_removed(&recall).await;
        assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
        assert_eq!(ctx.runs.state(KEY), Run::Idle);
        assert!(trail.actions().is_empty());
    }

    /// A spec no run can keep to ends the recall as Failed, saying what to change, and then
    /// waits for the object to change instead of trying again every few seconds.
    #[tokio::test]
    async fn a_permanently_invalid_recall_fails_with_a_message_and_waits_for_a_change() {
        let (ctx, mut server, trail) = Context::test();
        let recall = fixtures::recall("r", json!({ "reEnrollment": { "checkInterval": "0s" } }), false);
        let reconciled = tokio::spawn(reconcile(Arc::new(recall.clone()), ctx.clone()));
        server.status_read(&recall).await;
        let event = server.event().await;
        assert_eq!((&event["type"], &event["reason"]), (&json!("Warning"), &json!("InvalidSpec")));
        let status = server.status_applied(&recall).await;
        assert_eq!((&status["phase"], &status["observedGeneration"]), (&json!("Failed"), &json!(1)));
        let message = ready(&status)["message"].as_str().unwrap();
        assert_eq!(ready(&status)["reason"], "InvalidSpec");
        assert!(message.contains("reEnrollment.checkInterval") && message.contains("fix it in the spec"), "{message}");
        assert_eq!(reconciled.await.unwrap().unwrap(), Action::requeue(WATCH_INTERVAL));
        assert_eq!(settled(&ctx).await, Run::Idle, "not retried after a pause");
        assert_eq!(trail.actions(), ["recall.phase: Failed"]);

        let mut failed = recall.clone();
        failed.status = Some(serde_json::from_value(status).unwrap());
        assert_eq!(quietly(failed, &ctx).await, Action::await_change());
        server.quiet().await;
    }

    /// Fixed, the failed recall runs again and is pending; a backend that does not exist yet is
    /// named in Ready and tried again after a pause, never failed.
    #[tokio::test]
    async fn a_failed_recall_runs_again_when_its_spec_changes_and_waits_for_a_missing_backend() {
        let (ctx, mut server, trail) = Context::test();
        let mut recall = fixtures::recall("r", json!({}), false);
        recall.metadata.generation = Some(2);
        recall.status = Some(crate::api::MfaRecallStatus { phase: RecallPhase::Failed, observed_generation: Some(1), ..Default::default() });
        let reconciled = tokio::spawn(reconcile(Arc::new(recall.clone()), ctx.clone()));
        server.status_read(&recall).await;
        assert_eq!(server.event().await["reason"], "Pending");
        server.not_found(&format!("/apis/mfarecall.io/v1alpha1/namespaces/{NAMESPACE}/identitybackends/kc")).await;
        let event = server.event().await;
        assert_eq!((&event["type"], &event["reason"]), (&json!("Warning"), &json!("BackendNotFound")));
        let status = server.status_applied(&recall).await;
        assert_eq!((&status["phase"], &status["observedGeneration"]), (&json!("Pending"), &json!(2)));
        assert_eq!(ready(&status)["reason"], "BackendNotFound");
        assert!(ready(&status)["message"].as_str().unwrap().contains("IdentityBackend security/kc not found"));
        reconciled.await.unwrap().unwrap();
        assert!(matches!(settled(&ctx).await, Run::Waiting(_)));
        assert_eq!(trail.actions(), ["recall.phase: Pending"]);

        let mut waiting = recall.clone();
        waiting.status = Some(serde_json::from_value(status).unwrap());
        assert_ne!(quietly(waiting, &ctx).await, Action::await_change());
        server.quiet().await;
    }
}
