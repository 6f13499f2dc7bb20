//! End-to-end recalls on real parts: kube-apiserver + etcd, a real Keycloak, the operator binary.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use kube::Api;
use mfa_recall::api::{IdentityBackend, MfaRecall, RecallPhase};
use mfa_recall::audit::{self, Verification};
use mfa_recall::testbed::{self, USERS_WITH_PASSWORD, cluster, seeded_types, username};
use serde_json::json;
use support::{Operator, Parts, as_factor_kinds, audit_lines};

const CLIENT_SECRET: &str = "test-client-secret-7f3a";
const USERS: usize = 300;

/// Seeds a realm and opens sessions for the users the direct grant lets in (no OTP to type).
async fn seed(parts: &Parts, realm: &str, users: usize) -> testbed::KeycloakAdmin {
    let keycloak = parts.keycloak().await;
    keycloak.create_realm(realm, users, &["breakglass-1", "breakglass-2"], CLIENT_SECRET).await.unwrap();
    for i in 0..USERS_WITH_PASSWORD.min(users) {
        if !seeded_types(i).contains(&"otp") {
            keycloak.open_sessions(realm, &username(i), 2, i % 4 == 2).await.unwrap();
        }
    }
    keycloak
}

fn phase(recall: &MfaRecall) -> RecallPhase {
    recall.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

async fn backend_ready(client: &kube::Client, namespace: &str, name: &str) {
    let api: Api<IdentityBackend> = Api::namespaced(client.clone(), namespace);
    cluster::wait_for(&api, name, Duration::from_secs(60), |b| {
        b.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await
    .unwrap();
}

/// Factor ids revoked more than once (outcome "revoked" twice) in an audit trail.
fn revoked_twice(lines: &[serde_json::Value]) -> Vec<String> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    for line in lines.iter().filter(|l| l["action"] == "factor.revoke" && l["outcome"] == "revoked") {
        *seen.entry(line["factorId"].as_str().unwrap().to_string()).or_default() += 1;
    }
    seen.into_iter().filter(|(_, n)| *n > 1).map(|(id, _)| id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_recall_matches_keycloak_then_a_user_re_enrolls() {
    let parts = Parts::from_env();
    let client = parts.client().await;
    let (ns, realm) = (&support::unique("recall-full"), &support::unique("full"));
    cluster::create_namespace(&client, ns).await.unwrap();
    let keycloak = seed(&parts, realm, USERS).await;
    let breakglass = ["breakglass-1", "breakglass-2"];
    let (before, sessions_before) = keycloak.census(realm, i64::MAX, &breakglass).await.unwrap();
    assert!(sessions_before > 0, "seeding opened no sessions");

    let audit_file = parts.file("full-audit.jsonl");
    let _operator = Operator::start(ns, &audit_file, &parts.file("full-operator.log"));
    cluster::create_keycloak_backend(&client, ns, "corp-keycloak", &parts.keycloak_url, realm, CLIENT_SECRET, 200).await.unwrap();
    backend_ready(&client, ns, "corp-keycloak").await;

    cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "breach"},
        "spec": {"reason": "INC-1 test breach", "backends": ["corp-keycloak"], "scope": {"allUsers": true,
                 "exclude": {"users": ["breakglass-1"], "groups": ["admins"]}},
                 "reEnrollment": {"gracePeriod": "1h", "checkInterval": "1s"}}
    }))
    .await
    .unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let recall = cluster::wait_for(&recalls, "breach", Duration::from_secs(300), |r| phase(r) == RecallPhase::AwaitingReEnrollment).await.unwrap();
    let status = recall.status.unwrap();
    let c = &status.counts;
    let cutoff_ms = status.cutoff.unwrap().as_millisecond();

    // Coverage is total: every targeted user is accounted for.
    assert_eq!(c.targeted, USERS as i64 + 2, "{c:?}");
    assert_eq!(c.excluded, 2);
    assert_eq!(c.failed, 0);
    assert_eq!(c.invalidated + c.excluded + c.failed, c.targeted);
    // Counts equal what Keycloak showed before, and nothing older than the cutoff remains.
    assert_eq!(c.factors_revoked, as_factor_kinds(&before), "status {c:?} vs Keycloak {before:?}");
    assert_eq!(c.sessions_revoked, sessions_before);
    let (after, sessions_after) = keycloak.census(realm, cutoff_ms, &breakglass).await.unwrap();
    assert!(after.is_empty(), "credentials older than the cutoff remain: {after:?}");
    assert_eq!(sessions_after, 0);
    let users_with_factors = (0..USERS).filter(|i| !seeded_types(*i).is_empty()).count() as i64;
    assert_eq!(c.pending, users_with_factors);
    // Excluded users are untouched.
    for name in breakglass {
        let id = keycloak.user_id(realm, name).await.unwrap();
        assert_eq!(keycloak.mfa_credentials(realm, &id).await.unwrap().len(), 1, "{name} lost its TOTP");
    }
    // Re-enrollment is required for the kinds each user lost, merged with what was there.
    let user0 = keycloak.get(&format!("/{realm}/users/{}", keycloak.user_id(realm, &username(0)).await.unwrap())).await.unwrap();
    let actions: Vec<&str> = user0["requiredActions"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert!(actions.contains(&"CONFIGURE_TOTP") && actions.contains(&"CONFIGURE_RECOVERY_AUTHN_CODES"), "{actions:?}");

    // A person signs in, is made to set up a new authenticator, and the recall counts it.
    testbed::enroll_totp_by_browser(&parts.keycloak_url, realm, &username(0)).await.unwrap();
    let recall = cluster::wait_for(&recalls, "breach", Duration::from_secs(60), |r| r.status.as_ref().is_some_and(|s| s.counts.re_enrolled == 1))
        .await
        .unwrap();
    assert_eq!(recall.status.unwrap().counts.pending, users_with_factors - 1);

    // The audit trail verifies and names every revoked factor once.
    assert_eq!(audit::verify(&audit_file).unwrap(), Verification::Intact { lines: audit_lines(&audit_file).len() as u64 });
    let lines = audit_lines(&audit_file);
    let revoked = lines.iter().filter(|l| l["action"] == "factor.revoke").count() as i64;
    assert_eq!(revoked, before.values().sum::<i64>());
    assert!(revoked_twice(&lines).is_empty());
    assert!(lines.iter().any(|l| l["action"] == "reenrollment.seen" && l["user"] == "user0000"));
}
