//! Reconcile of MfaRecall: finalizer, the phase decision (`decide`, a pure function of the spec,
//! the recorded phase and whether the run is alive: cancel, suspend, start, resume), and
//! starting or stopping the recall's run task. The work itself happens in `run`.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event, finalizer};
use tracing::Instrument;
use kube::{Api, ResourceExt};

use super::{Context, status};
use crate::api::{MfaRecall, MfaRecallSpec, RecallPhase};
use crate::audit::AuditEvent;
use crate::{Error, Result};

pub const FINALIZER: &str = "mfarecall.io/stop-recall";

/// Time a stopping run gets to finish its in-flight users.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

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

/// Tried again, except an error that only a change of the object can fix.
pub fn error_policy(recall: Arc<MfaRecall>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(recall = %recall.name_any(), %error, "reconcile failed");
    crate::metrics::reconcile_error("mfarecall", error.category());
    if error.is_permanent() { Action::await_change() } else { Action::requeue(Duration::from_secs(15)) }
}

fn key(recall: &MfaRecall) -> String {
    format!("{}/{}", recall.namespace().unwrap_or_default(), recall.name_any())
}

/// What a reconcile does with a recall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ended (completed, cancelled or failed): nothing to do until the object changes.
    Leave,
    /// Stop the run, and record `phase` (cancelled or suspended) unless it is recorded already.
    Stop { phase: RecallPhase, record: bool },
    /// Start the run: fresh, after a restart, unsuspended, or after an error (it continues from
    /// the ledger either way).
    Start,
    /// The run is alive and writes its own status: look again later.
    Watch,
}

/// The decision, from the spec's switches, the phase recorded and whether this process runs the
/// recall. Cancel wins over suspend; an ended recall stays ended whatever the spec says.
pub fn decide(spec: &MfaRecallSpec, phase: RecallPhase, running: bool) -> Decision {
    if matches!(phase, RecallPhase::Completed | RecallPhase::Cancelled | RecallPhase::Failed) {
        return Decision::Leave;
    }
    if spec.cancel || spec.suspend {
        let target = if spec.cancel { RecallPhase::Cancelled } else { RecallPhase::Suspended };
        return Decision::Stop { phase: target, record: phase != target };
    }
    if running { Decision::Watch } else { Decision::Start }
}

async fn apply(recall: Arc<MfaRecall>, ctx: &Arc<Context>) -> Result<Action> {
    let key = key(&recall);
    let phase = recall.status.as_ref().map(|s| s.phase).unwrap_or_default();
    match decide(&recall.spec, phase, ctx.runs.is_running(&key)) {
        Decision::Leave => Ok(Action::await_change()),
        Decision::Stop { phase: target, record } => {
            ctx.runs.stop(&key, STOP_TIMEOUT).await;
            if record {
                set_phase(&recall, ctx, target, if target == RecallPhase::Cancelled { "cancelled" } else { "suspended" }).await?;
            }
            Ok(Action::await_change())
        }
        Decision::Start => {
            // The cache can lag what the last run wrote: decided again on the latest status.
            let latest = Api::<MfaRecall>::namespaced(ctx.client.clone(), &recall.namespace().unwrap_or_default()).get_status(&recall.name_any()).await?;
            let latest_phase = latest.status.as_ref().map(|s| s.phase).unwrap_or_default();
            match decide(&latest.spec, latest_phase, false) {
                Decision::Start => {}
                Decision::Leave => return Ok(Action::await_change()),
                // Switched since the cache was filled: taken up on the next look.
                Decision::Stop { .. } | Decision::Watch => return Ok(Action::requeue(Duration::from_secs(1))),
            }
            tracing::info!(recall = %key, phase = ?latest_phase, "starting recall run");
            ctx.runs.start(&key, Arc::new(latest), ctx.clone());
            Ok(Action::requeue(Duration::from_secs(20)))
        }
        // The run writes progress itself; this requeue restarts it if it stopped on an error.
        Decision::Watch => Ok(Action::requeue(Duration::from_secs(20))),
    }
}

/// Writes a phase decided here (suspend, cancel) after the run has stopped, and audits it.
async fn set_phase(recall: &MfaRecall, ctx: &Context, phase: RecallPhase, outcome: &str) -> Result<()> {
    let api: Api<MfaRecall> = Api::namespaced(ctx.client.clone(), &recall.namespace().unwrap_or_default());
    let latest = api.get_status(&recall.name_any()).await?;
    let mut status = latest.status.unwrap_or_default();
    // The cache can lag the status just written (a reconcile woken by the run's last status
    // write still sees the old phase): decided and recorded already, so not audited twice.
    if status.phase == phase {
        return Ok(());
    }
    ctx.audit
        .record(AuditEvent { recall: key(recall), action: "recall.phase".into(), outcome: serde_json::to_value(phase)?.as_str().unwrap_or(outcome).to_string(), ..Default::default() })?;
    ctx.audit.sync().await?;
    status.phase = phase;
    status.observed_generation = recall.metadata.generation;
    status::set_conditions(&mut status, recall.metadata.generation);
    status::write(&api, recall, &status).await?;
    ctx.publish(recall, EventType::Normal, &format!("{phase:?}"), format!("recall {outcome}")).await;
    Ok(())
}

/// Deleting a recall stops its run at a checkpoint; what was done stays audited.
async fn cleanup(recall: Arc<MfaRecall>, ctx: &Arc<Context>) -> Result<Action> {
    ctx.runs.stop(&key(&recall), STOP_TIMEOUT).await;
    crate::metrics::forget_recall(&key(&recall));
    ctx.publish(&*recall, EventType::Normal, "Deleted", "recall deleted; its run stopped".into()).await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::ProviderError;

    fn spec(cancel: bool, suspend: bool) -> MfaRecallSpec {
        let mut spec: MfaRecallSpec = serde_json::from_value(serde_json::json!({ "reason": "INC-1", "backends": ["kc"], "scope": { "allUsers": true } })).unwrap();
        (spec.cancel, spec.suspend) = (cancel, suspend);
        spec
    }

    #[test]
    fn a_new_recall_starts_and_a_running_one_is_watched() {
        assert_eq!(decide(&spec(false, false), RecallPhase::Pending, false), Decision::Start);
        assert_eq!(decide(&spec(false, false), RecallPhase::Revoking, true), Decision::Watch);
        assert_eq!(decide(&spec(false, false), RecallPhase::AwaitingReEnrollment, true), Decision::Watch);
    }

    #[test]
    fn a_run_that_stopped_on_an_error_or_a_restart_starts_again() {
        for phase in [RecallPhase::Pending, RecallPhase::Revoking, RecallPhase::AwaitingReEnrollment] {
            assert_eq!(decide(&spec(false, false), phase, false), Decision::Start, "{phase:?}");
        }
    }

    #[test]
    fn suspend_stops_the_run_and_is_recorded_once() {
        assert_eq!(decide(&spec(false, true), RecallPhase::Revoking, true), Decision::Stop { phase: RecallPhase::Suspended, record: true });
        assert_eq!(decide(&spec(false, true), RecallPhase::Suspended, false), Decision::Stop { phase: RecallPhase::Suspended, record: false });
    }

    #[test]
    fn unsuspending_resumes() {
        assert_eq!(decide(&spec(false, false), RecallPhase::Suspended, false), Decision::Start);
    }

    #[test]
    fn cancel_wins_over_suspend_and_is_recorded_once() {
        assert_eq!(decide(&spec(true, true), RecallPhase::Suspended, false), Decision::Stop { phase: RecallPhase::Cancelled, record: true });
        assert_eq!(decide(&spec(true, false), RecallPhase::AwaitingReEnrollment, true), Decision::Stop { phase: RecallPhase::Cancelled, record: true });
    }

    #[test]
    fn an_ended_recall_stays_ended_whatever_the_spec_says() {
        for phase in [RecallPhase::Completed, RecallPhase::Cancelled, RecallPhase::Failed] {
            for (cancel, suspend) in [(false, false), (true, false), (false, true)] {
                assert_eq!(decide(&spec(cancel, suspend), phase, false), Decision::Leave, "{phase:?} cancel={cancel} suspend={suspend}");
            }
        }
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
            Error::Provider(ProviderError::Unavailable("503".into())),
            Error::Provider(ProviderError::Auth("401".into())),
            Error::Provider(ProviderError::Config("no url".into())),
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
