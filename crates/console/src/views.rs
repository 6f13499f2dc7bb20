//! What the console shows of a recall, a bypass and a policy: one shape each, rendered into the
//! pages, sent by server-sent events for the pages' scripts to update in place, and returned by
//! the API. Built from the objects' status only: they never hold a secret.

use mfa_recall::api::{MfaBypass, MfaRecall, MfaRecallPolicy, RecallMode, RecallPhase};
use serde::Serialize;

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecallView {
    pub name: String,
    pub phase: String,
    pub mode: &'static str,
    pub reason: String,
    /// The Ready condition's message: what the recall is doing or waiting for.
    pub message: String,
    pub backends_named: Vec<String>,
    pub scope: String,
    pub requested_by: Option<String>,
    pub approved_by: Option<String>,
    /// Waiting for a second person's approval.
    pub awaits_approval: bool,
    /// A plan the person can start.
    pub startable: bool,
    pub created: Option<String>,
    pub started_at: Option<String>,
    pub revoked_at: Option<String>,
    pub deadline: Option<String>,
    /// Users dealt with (invalidated, excluded or failed) of those targeted, over every backend.
    pub done: i64,
    pub targeted: i64,
    pub percent: i64,
    pub counts: serde_json::Value,
    pub backends: Vec<BackendView>,
    pub plan: Option<PlanView>,
    pub rollout: Option<String>,
    pub audit_head: Option<String>,
    /// The status describes the current spec (a change just made is not taken up yet otherwise).
    pub current: bool,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendView {
    pub name: String,
    pub targeted: i64,
    pub done: i64,
    pub percent: i64,
    /// Still listing users: the total may grow.
    pub listing: bool,
    pub invalidated: i64,
    pub excluded: i64,
    pub failed: i64,
    pub re_enrolled: i64,
    pub pending: i64,
    pub at_risk: i64,
    pub anomalies: i64,
    pub sessions_revoked: i64,
    /// What the provider could not do (not supported, names it does not know, factors kept or lost).
    pub not_supported: Vec<String>,
    pub not_found: Vec<String>,
    pub kept_factors: Vec<String>,
    pub lost_factors: Vec<String>,
    /// Users an anomaly rule flagged, to review.
    pub flagged: Vec<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    pub users: i64,
    pub factors: String,
    pub factors_of_unknown_age: i64,
    pub sessions: i64,
    pub already_enrolled: i64,
    pub at_risk: i64,
    pub privileged: i64,
    pub excluded: i64,
    pub sample: Vec<String>,
    pub lockout_risk: Option<String>,
}

fn time(t: Option<jiff::Timestamp>) -> Option<String> {
    t.map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
}

fn percent(done: i64, of: i64) -> i64 {
    if of > 0 { (done * 100 / of).clamp(0, 100) } else { 0 }
}

pub fn recall(object: &MfaRecall) -> RecallView {
    let status = object.status.clone().unwrap_or_default();
    let spec = &object.spec;
    let message = status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.message.clone()).unwrap_or_default();
    let backends: Vec<BackendView> = status
        .backends
        .iter()
        .map(|b| {
            let c = &b.counts;
            let done = c.invalidated + c.excluded + c.failed;
            BackendView {
                name: b.name.clone(),
                targeted: c.targeted,
                done,
                percent: percent(done, c.targeted),
                listing: !b.listed,
                invalidated: c.invalidated,
                excluded: c.excluded,
                failed: c.failed,
                re_enrolled: c.re_enrolled,
                pending: c.pending,
                at_risk: c.at_risk,
                anomalies: c.anomalies,
                sessions_revoked: c.sessions_revoked,
                not_supported: b.not_supported.clone(),
                not_found: b.not_found.clone(),
                kept_factors: b.kept_factors.clone(),
                lost_factors: b.lost_factors.clone(),
                flagged: b.flagged.clone(),
            }
        })
        .collect();
    let c = &status.counts;
    let done = c.invalidated + c.excluded + c.failed;
    let scope = if spec.scope.all_users == Some(true) {
        "all users".to_string()
    } else {
        let mut parts = Vec::new();
        if !spec.scope.users.is_empty() {
            // A long list is cut on the page; the MfaRecall holds it whole.
            const SHOWN: usize = 10;
            let shown = spec.scope.users.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
            let more = spec.scope.users.len().saturating_sub(SHOWN);
            parts.push(if more > 0 { format!("users {shown} and {more} more") } else { format!("users {shown}") });
        }
        if !spec.scope.groups.is_empty() {
            parts.push(format!("groups {}", spec.scope.groups.join(", ")));
        }
        parts.join("; ")
    };
    let scope = if spec.scope.exclude.users.is_empty() && spec.scope.exclude.groups.is_empty() {
        scope
    } else {
        format!("{scope}; except {}", spec.scope.exclude.users.iter().chain(&spec.scope.exclude.groups).cloned().collect::<Vec<_>>().join(", "))
    };
    let phase = status.phase;
    let approval = spec.approval.as_ref();
    let plan = status.plan.as_ref().map(|p| PlanView {
        users: p.users,
        factors: if p.factors.is_empty() { "none".into() } else { p.factors.iter().map(|(k, n)| format!("{n} {}", k.as_str())).collect::<Vec<_>>().join(", ") },
        factors_of_unknown_age: p.factors_of_unknown_age,
        sessions: p.sessions,
        already_enrolled: p.already_enrolled,
        at_risk: p.at_risk,
        privileged: p.privileged,
        excluded: c.excluded,
        sample: p.sample.clone(),
        lockout_risk: p.lockout_risk.clone(),
    });
    let current = status.observed_generation == object.metadata.generation;
    RecallView {
        name: object.metadata.name.clone().unwrap_or_default(),
        phase: format!("{phase:?}"),
        mode: match spec.mode {
            RecallMode::Plan => "Plan",
            RecallMode::Execute => "Execute",
        },
        reason: spec.reason.clone(),
        message,
        backends_named: spec.backends.clone(),
        scope,
        requested_by: approval.map(|a| a.requested_by.clone()),
        approved_by: approval.and_then(|a| a.approved_by.clone()),
        awaits_approval: phase == RecallPhase::AwaitingApproval && approval.is_some_and(|a| a.approved_by.is_none()),
        startable: spec.mode == RecallMode::Plan && phase == RecallPhase::Planned && current,
        created: time(object.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        started_at: time(status.started_at),
        revoked_at: time(status.revoked_at),
        deadline: time(status.deadline),
        done,
        targeted: c.targeted,
        percent: percent(done, c.targeted),
        counts: serde_json::to_value(c).unwrap_or_default(),
        backends,
        plan,
        rollout: status.rollout.as_ref().map(|r| match (r.wave, r.paused_at_wave) {
            (_, Some(w)) => format!("paused at wave {w} of {}: {}", r.waves, r.paused_because),
            (Some(w), None) => format!("wave {w} of {}", r.waves),
            (None, None) => format!("{} waves", r.waves),
        }),
        audit_head: status.audit_head.as_ref().map(|h| format!("{} line {}", h.instance, h.line)),
        current,
    }
}

/// A recall whose start or approval needs a fresh sign-in: over all users, naming more users
/// than `broad`, whose plan finds more, or with no plan yet to tell.
pub fn is_broad(object: &MfaRecall, broad: i64) -> bool {
    let plan = object.status.as_ref().and_then(|s| s.plan.as_ref());
    object.spec.scope.all_users == Some(true) || object.spec.scope.users.len() as i64 > broad || plan.is_none_or(|p| p.users > broad)
}

/// Why the recall cannot be started now: only a plan the operator has finished for the current
/// spec runs as it was shown.
pub fn refuse_start(object: &MfaRecall) -> Option<String> {
    (!recall(object).startable).then(|| "only a finished plan can be started: this recall is not one (or its plan is being made again); reload to see where it is".to_string())
}

/// Why `me` cannot approve the recall now.
pub fn refuse_approve(object: &MfaRecall, me: &str) -> Option<String> {
    let view = recall(object);
    if !view.awaits_approval {
        return Some("this recall is not waiting for an approval".into());
    }
    (view.requested_by.as_deref() == Some(me)).then(|| "you requested this recall, so you cannot approve it: a second person must".to_string())
}

#[derive(Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct BypassView {
    pub name: String,
    pub recall: String,
    pub backend: String,
    pub user: String,
    pub lifetime: String,
    pub reason: String,
    pub requested_by: String,
    pub approved_by: Option<String>,
    pub phase: String,
    pub message: String,
    pub expires_at: Option<String>,
    pub awaits_approval: bool,
}

pub fn bypass(object: &MfaBypass) -> BypassView {
    let status = object.status.clone().unwrap_or_default();
    BypassView {
        name: object.metadata.name.clone().unwrap_or_default(),
        recall: object.spec.recall.clone(),
        backend: object.spec.backend.clone(),
        user: object.spec.user.clone(),
        lifetime: object.spec.lifetime.clone(),
        reason: object.spec.reason.clone(),
        requested_by: object.spec.requested_by.clone(),
        approved_by: object.spec.approved_by.clone(),
        phase: format!("{:?}", status.phase),
        message: status.message.clone(),
        expires_at: time(status.expires_at),
        awaits_approval: status.phase == mfa_recall::api::BypassPhase::AwaitingApproval && object.spec.approved_by.is_none() && !object.spec.revoked,
    }
}

#[derive(Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub name: String,
    pub suspended: bool,
    pub ready: String,
    pub signals: i64,
    pub recalls_created: i64,
    pub last_recall: Option<String>,
    pub outcomes: String,
    pub last_signals: Vec<serde_json::Value>,
}

pub fn policy(object: &MfaRecallPolicy) -> PolicyView {
    let status = object.status.clone().unwrap_or_default();
    PolicyView {
        name: object.metadata.name.clone().unwrap_or_default(),
        suspended: object.spec.suspend,
        ready: status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| format!("{}: {}", c.status, c.message)).unwrap_or_default(),
        signals: status.signals,
        recalls_created: status.recalls_created,
        last_recall: status.last_recall.clone(),
        outcomes: status.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
        last_signals: status.last_signals.iter().take(5).map(|s| serde_json::json!({ "at": time(Some(s.at)), "source": s.source, "outcome": s.outcome, "recall": s.recall, "detail": s.detail })).collect(),
    }
}
