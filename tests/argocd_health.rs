//! The Argo CD health check for MfaRecall (charts/mfa-recall-operator/argocd/mfarecall-health.lua),
//! run by a real Lua interpreter on statuses of every phase as the operator writes them (Ready's
//! reason is the phase, or Queued, unless something stops the recall). The lockout test in
//! recall_providers.rs runs it on status objects the operator wrote on the real apiserver.

mod support;

use serde_json::{Value, json};

fn recall(phase: Option<&str>, ready: (&str, &str, &str), degraded: Option<(&str, &str)>) -> Value {
    let Some(phase) = phase else { return json!({ "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": { "name": "new" }, "spec": {} }) };
    let mut conditions = vec![json!({ "type": "Ready", "status": ready.0, "reason": ready.1, "message": ready.2 })];
    if let Some((status, message)) = degraded {
        conditions.push(json!({ "type": "Degraded", "status": status, "reason": "UsersFailed", "message": message }));
    }
    json!({ "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": { "name": "inc-1" }, "spec": {},
            "status": { "phase": phase, "counts": { "targeted": 10, "failed": 0 }, "conditions": conditions } })
}

#[test]
fn each_phase_has_the_health_argo_cd_expects() {
    let cases = [
        (recall(None, ("", "", ""), None), "Progressing", "waiting for the operator"),
        (recall(Some("Pending"), ("False", "Pending", "waiting to start"), None), "Progressing", "waiting to start"),
        (recall(Some("Pending"), ("False", "Queued", "waiting for a turn to revoke, number 2 in line"), None), "Progressing", "number 2 in line"),
        (recall(Some("Revoking"), ("False", "Revoking", "4 of 10 users done so far"), Some(("True", "1 users could not be invalidated"))), "Progressing", "4 of 10 users done"),
        (recall(Some("Pending"), ("False", "LockoutRisk", "corp: the recall reaches members of the privileged group admins"), None), "Degraded", "privileged group admins"),
        (recall(Some("Revoking"), ("False", "BackendAuthFailed", "401 from GET /users: check the Secret"), None), "Degraded", "401 from GET /users"),
        (recall(Some("Failed"), ("False", "InvalidSpec", "reEnrollment.gracePeriod \"2y\" is not a duration"), None), "Degraded", "gracePeriod"),
        (recall(Some("AwaitingReEnrollment"), ("False", "AwaitingReEnrollment", "all 10 users invalidated"), Some(("False", "no user failed"))), "Healthy", "all 10 users"),
        (recall(Some("AwaitingReEnrollment"), ("False", "AwaitingReEnrollment", "all 10 users invalidated"), Some(("True", "2 users could not be invalidated"))), "Degraded", "2 users could not"),
        (recall(Some("Completed"), ("True", "Completed", "10 invalidated, 9 re-enrolled"), None), "Healthy", "9 re-enrolled"),
        (recall(Some("Suspended"), ("False", "Suspended", "suspended by spec.suspend"), None), "Suspended", "spec.suspend"),
        (recall(Some("Cancelled"), ("False", "Cancelled", "cancelled by spec.cancel"), None), "Suspended", "spec.cancel"),
        (recall(Some("Planned"), ("True", "Planned", "planned: 10 users, 12 factors (12 totp), 3 sessions"), None), "Suspended", "planned: 10 users"),
        (recall(Some("AwaitingApproval"), ("False", "AwaitingApproval", "planned: 10 users; waiting for a second person to approve"), None), "Suspended", "second person"),
        (recall(Some("Paused"), ("False", "Paused", "rollout paused: wave 2: 3 of its 10 users failed"), None), "Suspended", "wave 2"),
    ];
    for (object, status, says) in cases {
        let (got, message) = support::argocd_health(&object);
        assert_eq!(got, status, "{object}");
        assert!(message.contains(says), "{message:?} should say {says:?}");
    }
}

#[test]
fn quotes_and_newlines_in_a_message_reach_argo_cd_intact() {
    let object = recall(Some("Failed"), ("False", "InvalidSpec", "reason \"x\"\\y\nnext line"), None);
    assert_eq!(support::argocd_health(&object), ("Degraded".to_string(), "reason \"x\"\\y\nnext line".to_string()));
}
