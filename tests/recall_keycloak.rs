//! End-to-end recalls on real parts: kube-apiserver + etcd, a real Keycloak, the operator binary.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use kube::Api;
use mfa_recall::api::{IdentityBackend, MfaRecall, RecallPhase};
use mfa_recall::audit::{self, Verification};
use testkit::{self, USERS_WITH_PASSWORD, cluster, seeded_types, username};
use serde_json::json;
use support::{Operator, Parts, as_factor_kinds, audit_lines};

const CLIENT_SECRET: &str = "mfacanary-test-client-secret-7f3a";
const USERS: usize = 300;

/// Seeds a realm and opens sessions for the users the direct grant lets in (no OTP to type).
async fn seed(parts: &Parts, realm: &str, users: usize) -> testkit::KeycloakAdmin {
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
    let (parts, client, ns, realm) = support::scenario("full").await;
    let (ns, realm) = (ns.as_str(), realm.as_str());
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
                 "reEnrollment": {"gracePeriod": "1h", "checkInterval": "10s"}}
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
    testkit::enroll_totp_by_browser(&parts.keycloak_url, realm, &username(0)).await.unwrap();
    let recall = cluster::wait_for(&recalls, "breach", Duration::from_secs(60), |r| r.status.as_ref().is_some_and(|s| s.counts.re_enrolled == 1))
        .await
        .unwrap();
    assert_eq!(recall.status.unwrap().counts.pending, users_with_factors - 1);

    // The audit trail verifies and names every revoked factor once.
    assert_eq!(audit::verify(&audit_file, &audit::ChainKey::default(), None).unwrap(), Verification::Intact { lines: audit_lines(&audit_file).len() as u64, unkeyed: 0 });
    let lines = audit_lines(&audit_file);
    let revoked = lines.iter().filter(|l| l["action"] == "factor.revoke").count() as i64;
    assert_eq!(revoked, before.values().sum::<i64>());
    assert!(revoked_twice(&lines).is_empty());
    assert!(lines.iter().any(|l| l["action"] == "reenrollment.seen" && l["user"] == "user0000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_recall_resumes_exactly_and_keeps_a_factor_enrolled_meanwhile() {
    let (parts, client, ns, realm) = support::scenario("kill").await;
    let (ns, realm) = (ns.as_str(), realm.as_str());
    let keycloak = seed(&parts, realm, USERS).await;
    let breakglass = ["breakglass-1", "breakglass-2"];
    let (before, sessions_before) = keycloak.census(realm, i64::MAX, &breakglass).await.unwrap();

    let audit_file = parts.file("kill-audit.jsonl");
    let log_file = parts.file("kill-operator.log");
    let mut operator = Operator::start(ns, &audit_file, &log_file);
    // A slow budget keeps the recall running long enough to enroll and kill in the middle of it.
    cluster::create_keycloak_backend(&client, ns, "corp-keycloak", &parts.keycloak_url, realm, CLIENT_SECRET, 40).await.unwrap();
    backend_ready(&client, ns, "corp-keycloak").await;
    cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "breach"},
        "spec": {"reason": "INC-2 crash test", "backends": ["corp-keycloak"], "scope": {"allUsers": true,
                 "exclude": {"groups": ["admins"]}}, "reEnrollment": {"gracePeriod": "1h", "checkInterval": "10s"}}
    }))
    .await
    .unwrap();

    // As soon as user0000 has lost its factors, they sign in and enroll a new TOTP while the
    // recall is still working through the rest of the same page of users...
    let user0 = keycloak.user_id(realm, &username(0)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let user = keycloak.get(&format!("/{realm}/users/{user0}")).await.unwrap();
        let required = user["requiredActions"].as_array().is_some_and(|a| a.iter().any(|x| x == "CONFIGURE_TOTP"));
        if required && keycloak.mfa_credentials(realm, &user0).await.unwrap().is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "user0000 was never invalidated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    testkit::enroll_totp_by_browser(&parts.keycloak_url, realm, &username(0)).await.unwrap();
    let new_factor = keycloak.mfa_credentials(realm, &user0).await.unwrap();
    assert_eq!(new_factor.len(), 1, "enrollment created no credential");

    // ...then the operator dies without warning, mid-page.
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let mid = recalls.get("breach").await.unwrap().status.unwrap_or_default();
    operator.kill();
    assert_eq!(mid.phase, RecallPhase::Revoking, "the recall finished before the kill; the test proves nothing");
    assert!(mid.counts.invalidated < USERS as i64, "{:?}", mid.counts);

    let mut operator = Operator::start(ns, &audit_file, &log_file);
    let recall = cluster::wait_for(&recalls, "breach", Duration::from_secs(300), |r| phase(r) == RecallPhase::AwaitingReEnrollment).await.unwrap();
    assert!(operator.is_running());
    let status = recall.status.unwrap();
    let c = &status.counts;
    let cutoff_ms = status.cutoff.unwrap().as_millisecond();

    // The factor enrolled after the cutoff survived the resume.
    let now_held = keycloak.mfa_credentials(realm, &user0).await.unwrap();
    assert_eq!(now_held, new_factor, "the re-enrolled TOTP was touched");
    assert!(new_factor[0].2 >= cutoff_ms);
    let user = keycloak.get(&format!("/{realm}/users/{user0}")).await.unwrap();
    assert!(!user["requiredActions"].as_array().unwrap().iter().any(|a| a == "CONFIGURE_TOTP"), "re-enrolled user asked to enroll again");

    // Counts are exact across the crash and match Keycloak.
    assert_eq!(c.targeted, USERS as i64 + 2);
    assert_eq!(c.invalidated + c.excluded + c.failed, c.targeted);
    assert_eq!(c.failed, 0);
    assert_eq!(c.factors_revoked, as_factor_kinds(&before));
    assert_eq!(c.sessions_revoked, sessions_before);
    let (after, sessions_after) = keycloak.census(realm, cutoff_ms, &breakglass).await.unwrap();
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(sessions_after, 0);
    let recall = cluster::wait_for(&recalls, "breach", Duration::from_secs(30), |r| r.status.as_ref().is_some_and(|s| s.counts.re_enrolled == 1)).await.unwrap();
    assert_eq!(recall.status.unwrap().counts.re_enrolled, 1);

    // The chain continues across the crash; no factor was revoked twice.
    let lines = audit_lines(&audit_file);
    assert_eq!(audit::verify(&audit_file, &audit::ChainKey::default(), None).unwrap(), Verification::Intact { lines: lines.len() as u64, unkeyed: 0 });
    assert!(revoked_twice(&lines).is_empty(), "revoked twice: {:?}", revoked_twice(&lines));
    let actors: std::collections::BTreeSet<&str> = lines.iter().filter_map(|l| l["actor"].as_str()).collect();
    assert_eq!(actors.len(), 1);
    // user0000 was finished before the kill: the resumed run took that from the trail and did
    // not sign them out or work on them again.
    let of_user0 = |action: &str| lines.iter().filter(|l| l["action"] == action && l["user"] == "user0000").count();
    assert_eq!((of_user0("session.revoke"), of_user0("enrollment.require")), (1, 1), "user0000 was worked on again after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_recalls_are_rejected_or_explained_and_nothing_is_lost() {
    let (parts, client, ns, realm) = support::scenario("invalid").await;
    let (ns, realm) = (ns.as_str(), realm.as_str());
    let recall = |name: &str, spec: serde_json::Value| json!({"apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": name}, "spec": spec});

    // The apiserver rejects what is wrong in the object itself, saying what to fix.
    let cases = [
        (json!({"backends": ["kc"], "scope": {"allUsers": true}}), "reason"),
        (json!({"reason": "   ", "backends": ["kc"], "scope": {"allUsers": true}}), "reason must say why"),
        (json!({"reason": "INC-3", "backends": ["kc"], "scope": {}}), "scope must name users or groups"),
        (json!({"reason": "INC-3", "backends": ["kc"], "scope": {"allUsers": true, "users": ["a"]}}), "not both"),
        (json!({"reason": "INC-3", "backends": [], "scope": {"allUsers": true}}), "backends"),
        (json!({"reason": "INC-3", "backends": ["kc"], "scope": {"users": ["a"]}, "reEnrollment": {"gracePeriod": "3 days"}}), "gracePeriod must be a duration"),
        (json!({"reason": "INC-3", "backends": ["kc"], "scope": {"users": ["a"]}, "factors": ["sms", "carrierPigeon"]}), "carrierPigeon"),
    ];
    for (n, (spec, expected)) in cases.into_iter().enumerate() {
        let error = cluster::create_recall(&client, ns, recall(&format!("bad-{n}"), spec.clone())).await.expect_err(&format!("accepted {spec}"));
        assert!(error.contains(expected), "rejection of {spec} does not mention {expected:?}: {error}");
    }

    // What is recalled cannot change once the recall exists; suspend can.
    let api: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    cluster::create_recall(&client, ns, recall("typo", json!({"reason": "INC-3", "backends": ["kc-typo"], "scope": {"users": [username(1)]},
        "reEnrollment": {"checkInterval": "10s"}}))).await.unwrap();
    let params = kube::api::PatchParams::default();
    let change = api.patch("typo", &params, &kube::api::Patch::Merge(json!({"spec": {"scope": {"users": [username(2)]}}}))).await;
    assert!(change.unwrap_err().to_string().contains("fixed once a recall exists"));

    // A reference to a backend that does not exist is explained in a condition...
    let audit_file = parts.file("invalid-audit.jsonl");
    let _operator = Operator::start(ns, &audit_file, &parts.file("invalid-operator.log"));
    let waiting = cluster::wait_for(&api, "typo", Duration::from_secs(60), |r| {
        r.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "BackendNotFound"))
    })
    .await
    .unwrap();
    let ready = waiting.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("kc-typo") && ready.message.contains("create it"), "{}", ready.message);

    // ...and once the backend exists the same recall runs, with nothing lost.
    let keycloak = parts.keycloak().await;
    keycloak.create_realm(realm, 5, &[], CLIENT_SECRET).await.unwrap();
    cluster::create_keycloak_backend(&client, ns, "kc-typo", &parts.keycloak_url, realm, CLIENT_SECRET, 100).await.unwrap();
    let done = cluster::wait_for(&api, "typo", Duration::from_secs(90), |r| {
        matches!(phase(r), RecallPhase::AwaitingReEnrollment | RecallPhase::Completed)
    })
    .await
    .unwrap();
    let c = done.status.unwrap().counts;
    assert_eq!((c.targeted, c.invalidated, c.failed), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_give_a_clear_condition_and_never_leak() {
    let (parts, client, ns, realm) = support::scenario("creds").await;
    let (ns, realm) = (ns.as_str(), realm.as_str());
    let keycloak = parts.keycloak().await;
    keycloak.create_realm(realm, 3, &[], CLIENT_SECRET).await.unwrap();
    let wrong_secret = "mfacanary-wrong-secret-do-not-print-8d1c";
    let log_file = parts.file("creds-operator.log");
    let audit_file = parts.file("creds-audit.jsonl");
    let mut operator = Operator::start(ns, &audit_file, &log_file);
    cluster::create_keycloak_backend(&client, ns, "kc", &parts.keycloak_url, realm, wrong_secret, 50).await.unwrap();
    let backends: Api<IdentityBackend> = Api::namespaced(client.clone(), ns);
    let backend = cluster::wait_for(&backends, "kc", Duration::from_secs(60), |b| {
        b.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "False"))
    })
    .await
    .unwrap();
    let ready = backend.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "AuthenticationFailed");
    assert!(ready.message.contains(&format!("Secret {ns}/kc-credentials")) && ready.message.contains("client-secret"), "{}", ready.message);

    // A recall on it waits with the same explanation instead of failing users.
    cluster::create_recall(&client, ns, json!({"apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "r"},
        "spec": {"reason": "INC-4", "backends": ["kc"], "scope": {"allUsers": true}}})).await.unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let recall = cluster::wait_for(&recalls, "r", Duration::from_secs(60), |r| {
        r.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "BackendAuthFailed"))
    })
    .await
    .unwrap();
    assert_eq!(recall.status.unwrap().counts.failed, 0);

    // No crash loop, and the secret appears nowhere: logs, status, events, audit trail. The
    // recall's warning is the last thing published: once it is there, everything is.
    cluster::wait_for_event(&client, ns, "BackendAuthFailed", Duration::from_secs(30)).await.unwrap();
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns).list(&Default::default()).await.unwrap();
    assert!(operator.is_running());
    let everything = format!(
        "{}{}{}{}",
        operator.log(),
        serde_json::to_string(&events.items).unwrap(),
        serde_json::to_string(&backends.get("kc").await.unwrap()).unwrap(),
        std::fs::read_to_string(&audit_file).unwrap_or_default()
    );
    assert!(!everything.contains(wrong_secret), "the secret leaked");
    assert!(!everything.contains(CLIENT_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_resume_cancel_and_delete_stop_cleanly() {
    let (parts, client, ns, realm) = support::scenario("control").await;
    let (ns, realm) = (ns.as_str(), realm.as_str());
    parts.keycloak().await.create_realm(realm, 150, &[], CLIENT_SECRET).await.unwrap();
    let audit_file = parts.file("control-audit.jsonl");
    let _operator = Operator::start(ns, &audit_file, &parts.file("control-operator.log"));
    cluster::create_keycloak_backend(&client, ns, "kc", &parts.keycloak_url, realm, CLIENT_SECRET, 20).await.unwrap();
    backend_ready(&client, ns, "kc").await;
    cluster::create_recall(&client, ns, json!({"apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "r"},
        "spec": {"reason": "INC-5", "backends": ["kc"], "scope": {"allUsers": true}}})).await.unwrap();
    let api: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let invalidated = |r: &MfaRecall| r.status.as_ref().map(|s| s.counts.invalidated).unwrap_or(0);
    let merge = |spec: serde_json::Value| kube::api::Patch::Merge(json!({"spec": spec}));
    let params = kube::api::PatchParams::default();

    cluster::wait_for(&api, "r", Duration::from_secs(60), |r| invalidated(r) >= 5).await.unwrap();
    api.patch("r", &params, &merge(json!({"suspend": true}))).await.unwrap();
    let suspended = cluster::wait_for(&api, "r", Duration::from_secs(30), |r| phase(r) == RecallPhase::Suspended).await.unwrap();
    let at_suspend = invalidated(&suspended);
    assert!(at_suspend < 150);
    assert_eq!(invalidated(&api.get("r").await.unwrap()), at_suspend);

    api.patch("r", &params, &merge(json!({"suspend": false}))).await.unwrap();
    cluster::wait_for(&api, "r", Duration::from_secs(60), |r| phase(r) == RecallPhase::Revoking && invalidated(r) > at_suspend).await.unwrap();

    api.patch("r", &params, &merge(json!({"cancel": true}))).await.unwrap();
    let cancelled = cluster::wait_for(&api, "r", Duration::from_secs(30), |r| phase(r) == RecallPhase::Cancelled).await.unwrap();
    assert!(invalidated(&cancelled) < 150, "finished before the cancel; the test proves nothing");
    assert!(cancelled.metadata.finalizers.unwrap_or_default().contains(&"mfarecall.io/stop-recall".to_string()));

    // Deleting goes through the finalizer and the object disappears.
    let uid = api.get("r").await.unwrap().metadata.uid.unwrap();
    api.delete("r", &Default::default()).await.unwrap();
    let gone = kube::runtime::wait::await_condition(api.clone(), "r", kube::runtime::wait::conditions::is_deleted(&uid));
    tokio::time::timeout(Duration::from_secs(30), gone).await.expect("the recall is released by its finalizer").unwrap();
    let lines = audit_lines(&audit_file);
    assert_eq!(audit::verify(&audit_file, &audit::ChainKey::default(), None).unwrap(), Verification::Intact { lines: lines.len() as u64, unkeyed: 0 });
    let phases: Vec<&str> = lines.iter().filter(|l| l["action"] == "recall.phase").filter_map(|l| l["outcome"].as_str()).collect();
    assert_eq!(phases, ["Revoking", "Suspended", "Revoking", "Cancelled"]);
    // The trail orders everything the operator did: nothing was revoked between the suspension
    // and the resumption, and nothing after the cancellation.
    let phase_at = |outcome: &str, from: usize| from + lines[from..].iter().position(|l| l["action"] == "recall.phase" && l["outcome"] == outcome).unwrap();
    let suspended_at = phase_at("Suspended", 0);
    let resumed_at = phase_at("Revoking", suspended_at);
    let cancelled_at = phase_at("Cancelled", resumed_at);
    let revoked_in = |range: &[serde_json::Value]| range.iter().filter(|l| l["action"] == "factor.revoke").count();
    assert_eq!(revoked_in(&lines[suspended_at..resumed_at]), 0, "factors were revoked while suspended");
    assert_eq!(revoked_in(&lines[cancelled_at..]), 0, "factors were revoked after the cancel");
    assert!(revoked_in(&lines[resumed_at..cancelled_at]) > 0, "the resumed run revoked nothing; the test proves nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_scope_and_deadline_disable_those_who_did_not_re_enroll() {
    let (parts, client, ns, realm) = support::scenario("deadline").await;
    let (ns, realm) = (ns.as_str(), realm.as_str());
    let keycloak = parts.keycloak().await;
    keycloak.create_realm(realm, 10, &[], CLIENT_SECRET).await.unwrap();
    let _operator = Operator::start(ns, &parts.file("deadline-audit.jsonl"), &parts.file("deadline-operator.log"));
    cluster::create_keycloak_backend(&client, ns, "kc", &parts.keycloak_url, realm, CLIENT_SECRET, 100).await.unwrap();
    backend_ready(&client, ns, "kc").await;
    cluster::create_recall(&client, ns, json!({"apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "r"},
        "spec": {"reason": "INC-6", "backends": ["kc"], "scope": {"groups": ["/staff"]},
                 "reEnrollment": {"gracePeriod": "5s", "onDeadline": "Disable", "checkInterval": "10s"}}})).await.unwrap();
    let api: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let done = cluster::wait_for(&api, "r", Duration::from_secs(60), |r| phase(r) == RecallPhase::Completed).await.unwrap();
    let c = done.status.unwrap().counts;
    // Seeded users with an even index are in /staff; all five of them held factors.
    assert_eq!((c.targeted, c.invalidated, c.disabled, c.pending), (5, 5, 5, 5), "{c:?}");
    for i in 0..10 {
        let user = keycloak.get(&format!("/{realm}/users/{}", keycloak.user_id(realm, &username(i)).await.unwrap())).await.unwrap();
        assert_eq!(user["enabled"], json!(i % 2 == 1), "{} enabled={}", username(i), user["enabled"]);
    }
}

/// Through the operator: a missing exclusion group keeps the recall Pending with a reason that
/// names it, touching nobody; a scope mixing groups and names runs as their union, with the name
/// that matched nobody in status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_problems_are_named_in_status() {
    let (parts, client, ns, realm) = support::scenario("scope").await;
    let (ns, realm) = (ns.as_str(), realm.as_str());
    let keycloak = parts.keycloak().await;
    keycloak.create_realm(realm, 10, &[], CLIENT_SECRET).await.unwrap();
    let (before, _) = keycloak.census(realm, i64::MAX, &[]).await.unwrap();
    let _operator = Operator::start(ns, &parts.file("scope-audit.jsonl"), &parts.file("scope-operator.log"));
    cluster::create_keycloak_backend(&client, ns, "kc", &parts.keycloak_url, realm, CLIENT_SECRET, 100).await.unwrap();
    backend_ready(&client, ns, "kc").await;
    let api: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let recall = |name: &str, scope: serde_json::Value| {
        json!({"apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": name},
               "spec": {"reason": "INC-7", "backends": ["kc"], "scope": scope, "reEnrollment": {"checkInterval": "10s"}}})
    };

    cluster::create_recall(&client, ns, recall("typo", json!({"allUsers": true, "exclude": {"groups": ["admns"]}}))).await.unwrap();
    let waiting = cluster::wait_for(&api, "typo", Duration::from_secs(60), |r| {
        r.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "ExclusionGroupNotFound"))
    })
    .await
    .unwrap();
    let status = waiting.status.unwrap();
    assert_eq!(status.phase, RecallPhase::Pending, "nothing started");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("admns") && ready.message.contains("exclude.groups"), "{}", ready.message);
    assert_eq!(keycloak.census(realm, i64::MAX, &[]).await.unwrap().0, before, "nobody touched");
    api.delete("typo", &Default::default()).await.unwrap();

    let names = [username(1).to_uppercase(), username(1), username(2), "ghost".to_string()];
    cluster::create_recall(&client, ns, recall("mixed", json!({"groups": ["/staff"], "users": names}))).await.unwrap();
    let done = cluster::wait_for(&api, "mixed", Duration::from_secs(90), |r| {
        matches!(phase(r), RecallPhase::AwaitingReEnrollment | RecallPhase::Completed)
    })
    .await
    .unwrap();
    let status = done.status.unwrap();
    // Even users are /staff (user0002 among them); user0001 named twice counts once.
    assert_eq!((status.counts.targeted, status.counts.invalidated, status.counts.names_not_found), (6, 6, 1), "{:?}", status.counts);
    assert_eq!(status.backends[0].not_found, ["user ghost"]);
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "NamesNotFound"), "{degraded:?}");
}
