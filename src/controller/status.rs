//! Status of an MfaRecall, built from the run's progress and written by server-side apply.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::FIELD_MANAGER;
use crate::api::{self, BackendProgress, MfaRecall, MfaRecallStatus, Reason, RecallCounts, RecallPhase};

/// Sums per-backend counts into the recall's totals.
pub fn totals(backends: &[BackendProgress]) -> RecallCounts {
    let mut total = RecallCounts::default();
    for b in backends {
        total.add(&b.counts);
    }
    total
}

/// Sets Ready, Progressing and Degraded to match the phase and counts.
pub fn set_conditions(status: &mut MfaRecallStatus, generation: Option<i64>) {
    let c = status.counts.clone();
    let mut reason = Reason::from(status.phase);
    let (ready, message) = match status.phase {
        _ if let Some(place) = status.queue_position => {
            reason = Reason::Queued;
            (false, format!("waiting for a turn to revoke, number {place} in line: the operator lets a set number of recalls revoke at once (--max-revoking-recalls)"))
        }
        RecallPhase::Pending if status.plan.is_some() => (false, format!("planning: {} users found so far; nothing is changed until the plan is complete", status.plan.as_ref().map_or(0, |p| p.users))),
        RecallPhase::Pending => (false, "waiting to start".to_string()),
        RecallPhase::Planned => (true, format!("{}; nothing was changed: set spec.mode to Execute to run exactly this plan", plan_text(status))),
        RecallPhase::AwaitingApproval => (false, format!("{}; waiting for a second person to approve (spec.approval.approvedBy set to their own Kubernetes user name)", plan_text(status))),
        RecallPhase::Revoking if c.awaiting_logs > 0 => (
            false,
            format!("{} of {} users done so far; {} wait for their provider's log to tell the age of factors it shows no creation time for", c.invalidated + c.excluded + c.failed, c.targeted, c.awaiting_logs),
        ),
        RecallPhase::Revoking if let Some(rollout) = &status.rollout => (
            false,
            format!("wave {} of {} (0 is the privileged users'): {} of {} users done so far", rollout.wave.unwrap_or(0), rollout.waves.saturating_sub(1), c.invalidated + c.excluded + c.failed, c.targeted),
        ),
        RecallPhase::Revoking => (false, format!("{} of {} users done so far", c.invalidated + c.excluded + c.failed, c.targeted)),
        RecallPhase::Paused => (
            false,
            match &status.rollout {
                Some(rollout) => format!("rollout paused: {}; to go on, set spec.rollout.continueAfterWave to {} or raise the threshold", rollout.paused_because, rollout.paused_at_wave.unwrap_or(0)),
                None => "rollout paused".into(),
            },
        ),
        RecallPhase::AwaitingReEnrollment => (
            false,
            format!("all {} users invalidated, excluded or failed; {} re-enrolled, {} pending", c.targeted, c.re_enrolled, c.pending),
        ),
        RecallPhase::Completed => (true, format!("{} invalidated, {} re-enrolled, {} failed, {} excluded", c.invalidated, c.re_enrolled, c.failed, c.excluded)),
        RecallPhase::Suspended => (false, "suspended by spec.suspend; set it to false to resume".to_string()),
        RecallPhase::Cancelled => (false, "cancelled by spec.cancel; what was done stays done and audited".to_string()),
        RecallPhase::Failed => (false, "the recall could not run".to_string()),
    };
    api::set_condition(&mut status.conditions, api::READY, ready, reason, message.clone(), generation);
    let progressing = matches!(status.phase, RecallPhase::Pending | RecallPhase::Revoking | RecallPhase::AwaitingReEnrollment);
    api::set_condition(&mut status.conditions, api::PROGRESSING, progressing, reason, message, generation);
    let failed = (c.failed > 0).then(|| format!("{} users could not be invalidated: the audit trail names each with its error (action user.fail)", c.failed));
    let not_found = (c.names_not_found > 0).then(|| {
        format!("{} names or groups matched nobody: see notFound per backend and the audit trail (action scope.unresolved)", c.names_not_found)
    });
    let kept = (c.kept_unknown_age > 0).then(|| {
        format!(
            "{} factors were kept because neither the provider nor its logs tell when they were created: see keptFactors per backend and the audit trail (action factor.keep, outcome unknownAge), and remove those that predate the cutoff by hand",
            c.kept_unknown_age
        )
    });
    let lost = (c.new_factors_lost > 0).then(|| {
        format!(
            "{} factors enrolled since the cutoff went with a factor this recall revoked, which the provider offers no way to keep them from: see lostFactors per backend and the audit trail (action factor.lostWithRevoked), and tell their users to set them up again",
            c.new_factors_lost
        )
    });
    // The first problem names the reason; the message tells them all.
    let problems: Vec<(Reason, String)> = [(Reason::UsersFailed, failed), (Reason::NamesNotFound, not_found), (Reason::FactorsOfUnknownAgeKept, kept), (Reason::NewFactorsLostWithRevoked, lost)]
        .into_iter()
        .filter_map(|(reason, message)| Some((reason, message?)))
        .collect();
    match problems.first() {
        None => api::set_condition(&mut status.conditions, api::DEGRADED, false, Reason::NoFailures, "no user failed", generation),
        Some((reason, _)) => {
            let message: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
            api::set_condition(&mut status.conditions, api::DEGRADED, true, *reason, message.join("; "), generation)
        }
    }
}

/// A plan in a sentence: users, factors by kind, sessions, exclusions, lockout risk.
fn plan_text(status: &MfaRecallStatus) -> String {
    let Some(plan) = &status.plan else { return "planned".into() };
    let factors: Vec<String> = plan.factors.iter().map(|(kind, n)| format!("{n} {}", kind.as_str())).collect();
    let mut text = format!(
        "planned: {} users, {} factors ({}), {} sessions; {} excluded, {} could not be read",
        plan.users,
        plan.factors.values().sum::<i64>(),
        if factors.is_empty() { "none".into() } else { factors.join(", ") },
        plan.sessions,
        status.counts.excluded,
        status.counts.failed
    );
    if plan.factors_of_unknown_age > 0 {
        text.push_str(&format!("; {} factors of unknown age, revoked only if the provider's logs show they predate the cutoff", plan.factors_of_unknown_age));
    }
    if let Some(risk) = &plan.lockout_risk {
        text.push_str(&format!("; LOCKOUT RISK: {risk}"));
    }
    text
}

/// Writes the whole status with server-side apply under the operator's field manager.
pub async fn write(api: &Api<MfaRecall>, recall: &MfaRecall, status: &MfaRecallStatus) -> kube::Result<()> {
    let patch = json!({
        "apiVersion": "mfarecall.io/v1alpha1",
        "kind": "MfaRecall",
        "status": status,
    });
    api.patch_status(&recall.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}
