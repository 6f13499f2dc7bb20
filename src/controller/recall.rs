//! Reconcile of MfaRecall: finalizer, phase decisions (cancel, suspend, start, resume), and
//! starting or stopping the recall's run task. The work itself happens in `run`.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event, finalizer};
use tracing::Instrument;
use kube::{Api, ResourceExt};

use super::{Context, status};
use crate::api::{MfaRecall, RecallPhase};
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
    .map_err(|e| Error::Invalid(format!("finalizer: {e}")))
}

pub fn error_policy(recall: Arc<MfaRecall>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(recall = %recall.name_any(), %error, "reconcile failed");
    crate::metrics::reconcile_error("mfarecall", error.category());
    Action::requeue(Duration::from_secs(15))
}

fn key(recall: &MfaRecall) -> String {
    format!("{}/{}", recall.namespace().unwrap_or_default(), recall.name_any())
}

async fn apply(recall: Arc<MfaRecall>, ctx: &Arc<Context>) -> Result<Action> {
    let key = key(&recall);
    let phase = recall.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if matches!(phase, RecallPhase::Completed | RecallPhase::Cancelled | RecallPhase::Failed) {
        return Ok(Action::await_change());
    }
    if recall.spec.cancel || recall.spec.suspend {
        let (target, action) = if recall.spec.cancel { (RecallPhase::Cancelled, "cancelled") } else { (RecallPhase::Suspended, "suspended") };
        ctx.runs.stop(&key, STOP_TIMEOUT).await;
        if phase != target {
            set_phase(&recall, ctx, target, action).await?;
        }
        return Ok(Action::await_change());
    }
    if !ctx.runs.is_running(&key) {
        // Fresh, resumed after a restart, unsuspended, or retrying after an error: the run
        // continues from the ledger either way.
        let latest = Api::<MfaRecall>::namespaced(ctx.client.clone(), &recall.namespace().unwrap_or_default()).get_status(&recall.name_any()).await?;
        let latest_phase = latest.status.as_ref().map(|s| s.phase).unwrap_or_default();
        if matches!(latest_phase, RecallPhase::Completed | RecallPhase::Cancelled | RecallPhase::Failed) {
            return Ok(Action::await_change());
        }
        tracing::info!(recall = %key, phase = ?latest_phase, "starting recall run");
        ctx.runs.start(&key, Arc::new(latest), ctx.clone());
    }
    // The run writes progress itself; this requeue restarts it if it stopped on an error.
    Ok(Action::requeue(Duration::from_secs(20)))
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
