//! The operator against every simulated provider at once, on a real kube-apiserver: one MfaRecall
//! over five backends, the operator SIGKILLed mid-recall and restarted, per-backend and total counts
//! checked against each simulator's state; and wrong credentials turned into a clear condition.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kube::Api;
use mfa_recall::api::{BackendLimits, BypassPhase, FactorKind, IdentityBackend, MfaBypass, MfaRecall, RecallCounts, RecallPhase};
use mfa_recall::audit::{self, Verification};
use idp_sim::{Census, GroupSeed, Seed, username};
use testkit::cluster;
use testkit::sims::{SIMULATED, SimBackend, SimSubject};
use serde_json::json;
use support::{Operator, audit_lines};

const USERS: u32 = 400;

fn phase(recall: &MfaRecall) -> RecallPhase {
    recall.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn ready_condition(backend: &IdentityBackend) -> Option<(String, String, String)> {
    let c = backend.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// A simulated provider of `kind` seeded with `seed`, and an IdentityBackend `name` in `ns` for
/// it, with room to go fast.
async fn simulated_backend(client: &kube::Client, ns: &str, kind: &str, name: &str, seed: &Seed) -> SimSubject {
    let subject = SimSubject::start(kind).await.unwrap();
    subject.sim.provider.seed(seed);
    let limits = BackendLimits { requests_per_second: 500, max_concurrency: 8, ..Default::default() };
    cluster::create_backend(client, ns, name, subject.backend_spec(&format!("{name}-credentials"), limits), &subject.secret).await.unwrap();
    subject
}

fn invalidated(recall: &MfaRecall) -> i64 {
    recall.status.as_ref().map(|s| s.counts.invalidated).unwrap_or(0)
}

fn as_u64(map: &BTreeMap<FactorKind, i64>) -> BTreeMap<String, u64> {
    map.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k.as_str().to_string(), *n as u64)).collect()
}

/// `before - after`, by kind.
fn lost(before: &Census, after: &Census) -> BTreeMap<String, u64> {
    before
        .factors_before_cutoff
        .iter()
        .map(|(k, n)| (k.clone(), n - after.factors_before_cutoff.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_recall_over_five_providers_survives_a_kill_with_exact_counts() {
    let (parts, client, ns, _) = support::scenario("multi").await;
    let ns = ns.as_str();
    let seed = Seed { users: USERS, groups: vec![GroupSeed::new("admins", 50)], ..Seed::default() };
    let mut subjects = Vec::new();
    for kind in SIMULATED {
        let subject = SimSubject::start(kind).await.unwrap();
        subject.sim.provider.seed(&seed);
        // Slow enough that the kill lands mid-recall on every backend.
        let limits = BackendLimits { requests_per_second: 150, max_concurrency: 8, ..Default::default() };
        let name = format!("corp-{kind}");
        cluster::create_backend(&client, ns, &name, subject.backend_spec(&format!("{name}-credentials"), limits), &subject.secret).await.unwrap();
        subjects.push((name, subject));
    }

    let audit_file = parts.file("multi-audit.jsonl");
    let log_file = parts.file("multi-operator.log");
    let mut operator = Operator::start(ns, &audit_file, &log_file);
    let backends: Api<IdentityBackend> = Api::namespaced(client.clone(), ns);
    for (name, _) in &subjects {
        let ready = cluster::wait_for(&backends, name, Duration::from_secs(60), |b| ready_condition(b).is_some()).await.unwrap();
        assert_eq!(ready_condition(&ready).unwrap().0, "True", "{name}: {:?}\n{}", ready_condition(&ready), operator.log());
        let status = ready.status.unwrap();
        assert!(!status.capabilities.is_empty(), "{name} lists its capabilities");
        if name == "corp-duo" {
            assert!(status.limitations.iter().any(|l| l.starts_with("sessions:")), "{name} names what it cannot do: {:?}", status.limitations);
        }
    }

    let cutoff = jiff::Timestamp::now();
    let before: HashMap<String, Census> = subjects.iter().map(|(n, s)| (n.clone(), s.sim.provider.census(Some(cutoff)))).collect();
    let names: Vec<&String> = subjects.iter().map(|(n, _)| n).collect();
    cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "vendor-breach"},
        "spec": {"reason": "INC-7 support-system breach", "backends": names, "cutoff": cutoff.to_string(),
                 "scope": {"allUsers": true, "exclude": {"users": [username(3)], "groups": ["admins"]}},
                 "reEnrollment": {"gracePeriod": "1h", "checkInterval": "10s"}}
    }))
    .await
    .unwrap();

    // Kill the operator once about a third of all users are done, then start it again.
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let total_users = USERS as i64 * subjects.len() as i64;
    cluster::wait_for(&recalls, "vendor-breach", Duration::from_secs(120), |r| invalidated(r) >= total_users / 3).await.unwrap();
    operator.kill();
    let at_kill = invalidated(&recalls.get("vendor-breach").await.unwrap());
    assert!(at_kill < total_users - 100, "the kill came too late to prove a resume ({at_kill} of {total_users} done)");
    let _operator = Operator::start(ns, &audit_file, &log_file);
    let recall = cluster::wait_for(&recalls, "vendor-breach", Duration::from_secs(300), |r| phase(r) == RecallPhase::AwaitingReEnrollment)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(&log_file).unwrap_or_default()));
    let status = recall.status.unwrap();

    // Per backend: coverage, exclusions by rule, exact factor counts against the provider's state.
    // user 3 by name, and the admins group (every 50th user: 0, 50, ...).
    let excluded_per_backend = 1 + (0..USERS).filter(|i| i % 50 == 0).count() as i64;
    let mut expected_total = RecallCounts::default();
    for (name, subject) in &subjects {
        let progress = status.backends.iter().find(|b| &b.name == name).unwrap_or_else(|| panic!("{name} missing from status"));
        let c = &progress.counts;
        assert!(progress.listed, "{name}");
        assert_eq!((c.targeted, c.excluded, c.failed), (USERS as i64, excluded_per_backend, 0), "{name}: {c:?}");
        assert_eq!(c.invalidated + c.excluded + c.failed, c.targeted, "{name}: coverage is total");
        let after = subject.sim.provider.census(Some(cutoff));
        assert_eq!(as_u64(&c.factors_revoked), lost(&before[name], &after), "{name}: counts equal what the provider lost");
        // What is left older than the cutoff belongs to the excluded users only.
        let kept: u64 = after.factors_before_cutoff.values().sum();
        let per_user: u64 = before[name].factors_before_cutoff.values().sum::<u64>() / USERS as u64;
        assert_eq!(kept, per_user * excluded_per_backend as u64, "{name}: only excluded users keep old factors");
        expected_total.add(c);
    }
    assert_eq!(status.counts.targeted, expected_total.targeted);
    assert_eq!(status.counts.invalidated, expected_total.invalidated);
    assert_eq!(status.counts.factors_revoked, expected_total.factors_revoked, "totals are the sum of the backends");
    let duo = status.backends.iter().find(|b| b.name == "corp-duo").unwrap();
    assert!(duo.not_supported.iter().any(|n| n.starts_with("sessions:")), "Duo cannot end sessions and status says so: {:?}", duo.not_supported);

    // Across the kill: nothing revoked twice, the chain intact.
    let lines = audit_lines(&audit_file);
    let mut revoked: HashMap<String, u32> = HashMap::new();
    for line in lines.iter().filter(|l| l["action"] == "factor.revoke" && l["outcome"] == "revoked") {
        *revoked.entry(format!("{}/{}", line["backend"], line["factorId"])).or_default() += 1;
    }
    let twice: Vec<_> = revoked.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "revoked twice: {twice:?}");
    assert!(matches!(audit::verify(&audit_file, &audit::ChainKey::default(), None).unwrap(), Verification::Intact { .. }));

    // The report, from the signed ledger: one row per targeted user, adding up to status.
    let report_file = parts.file("multi-report.csv");
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_mfa-recall"))
        .args(["report", "vendor-breach", "--namespace", ns, "--format", "csv", "--output"])
        .arg(&report_file)
        .arg("--key-file")
        .arg(support::ledger_key_file(audit_file.parent().unwrap()))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&report.stderr);
    assert!(report.status.success(), "report: {said}");
    for (name, _) in &subjects {
        assert!(said.contains(&format!("{name}: {USERS} users; the rows add up to the counts in status")), "{name}: {said}");
    }
    let mut rows = csv::Reader::from_path(&report_file).unwrap();
    let mut by_backend: HashMap<String, (u32, u32)> = HashMap::new();
    for row in rows.records().map(Result::unwrap) {
        let entry = by_backend.entry(row[0].to_string()).or_default();
        entry.0 += 1;
        if &row[3] == "excluded" {
            entry.1 += 1;
            assert!(!row[4].is_empty(), "an exclusion names its rule: {row:?}");
        }
    }
    for (name, _) in &subjects {
        assert_eq!(by_backend.get(name), Some(&(USERS as u32, excluded_per_backend as u32)), "{name}: rows and exclusions");
    }
}

/// After each SIGKILL the resumed recall works again only on the users that were in flight: a
/// user finished before the kill is neither signed out again nor sent a deletion again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_kills_redo_at_most_the_users_in_flight() {
    const KILLS: i64 = 3;
    const IN_FLIGHT: i32 = 8;
    let (parts, client, ns, _) = support::scenario("kills").await;
    let ns = ns.as_str();
    let subject = SimSubject::start("okta").await.unwrap();
    subject.sim.provider.seed(&Seed { users: USERS, ..Seed::default() });
    subject.sim.count_writes();
    let limits = BackendLimits { requests_per_second: 120, max_concurrency: IN_FLIGHT, ..Default::default() };
    cluster::create_backend(&client, ns, "corp-okta", subject.backend_spec("corp-okta-credentials", limits), &subject.secret).await.unwrap();
    let audit_file = parts.file("kills-audit.jsonl");
    let log_file = parts.file("kills-operator.log");
    // The chain keyed, as the chart sets it up from a Secret.
    let key_file = parts.file("kills-audit.key");
    std::fs::write(&key_file, format!("{}\n", support::unique("audit-key-0123456789abcdef0123456789"))).unwrap();
    let keyed = ["--audit-key-file", key_file.to_str().unwrap()];
    let instance = format!("op-{ns}");
    let mut operator = Operator::start_with(ns, &audit_file, &log_file, &instance, &keyed);
    let cutoff = jiff::Timestamp::now();
    cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "kills"},
        "spec": {"reason": "INC-9 three restarts", "backends": ["corp-okta"], "cutoff": cutoff.to_string(), "scope": {"allUsers": true}}
    }))
    .await
    .unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    for kill in 1..=KILLS {
        let mark = USERS as i64 * kill / (KILLS + 1);
        cluster::wait_for(&recalls, "kills", Duration::from_secs(120), |r| invalidated(r) >= mark).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
        operator.kill();
        let at_kill = invalidated(&recalls.get("kills").await.unwrap());
        assert!(at_kill < USERS as i64 - 20, "kill {kill} came too late to prove a resume ({at_kill} done)");
        operator = Operator::start_with(ns, &audit_file, &log_file, &instance, &keyed);
    }
    let recall = cluster::wait_for(&recalls, "kills", Duration::from_secs(300), |r| phase(r) == RecallPhase::AwaitingReEnrollment)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let status = recall.status.unwrap();
    let counts = status.counts;
    assert_eq!((counts.targeted, counts.invalidated, counts.failed), (USERS as i64, USERS as i64, 0), "{counts:?}");
    assert!(subject.sim.provider.census(Some(cutoff)).factors_before_cutoff.is_empty(), "every old factor is gone");

    // Okta's paths name the user: /api/v1/users/{id}/...
    let repeated = subject.sim.repeated_writes();
    let users_again: std::collections::BTreeSet<&str> = repeated.iter().filter_map(|(write, _)| write.split("/users/").nth(1)?.split('/').next()).collect();
    assert!(users_again.len() as i64 <= IN_FLIGHT as i64 * KILLS, "{} users saw a second request (at most {} were in flight at the kills): {repeated:?}", users_again.len(), IN_FLIGHT as i64 * KILLS);

    // Every line keyed, and the head status published is in the trail.
    let head = status.audit_head.expect("status publishes the trail's head");
    assert_eq!(head.instance, instance);
    let head: audit::Head = head.line.parse().unwrap();
    let key = audit::ChainKey::from_file(&key_file).unwrap();
    let lines = audit_lines(&audit_file).len() as u64;
    assert_eq!(audit::verify(&audit_file, &key, Some(&head)).unwrap(), Verification::Intact { lines, unkeyed: 0 });
    assert!(matches!(audit::verify(&audit_file, &audit::ChainKey::default(), None).unwrap(), Verification::Broken { line: 1, .. }), "without the key nothing verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_credentials_give_a_clear_condition_on_every_provider() {
    let (parts, client, ns, _) = support::scenario("wrongcreds").await;
    let ns = ns.as_str();
    let mut subjects = Vec::new();
    for kind in SIMULATED {
        let subject = SimSubject::start(kind).await.unwrap();
        let name = format!("bad-{kind}");
        let wrong = subject.wrong_secret();
        cluster::create_backend(&client, ns, &name, subject.backend_spec(&format!("{name}-credentials"), BackendLimits::default()), &wrong).await.unwrap();
        subjects.push((name, subject, wrong));
    }
    // Right credentials in a Secret that does not name the backend among those that may use it.
    let okta = SimSubject::start("okta").await.unwrap();
    cluster::create_backend(&client, ns, "not-opted-in", okta.backend_spec("not-opted-in-credentials", BackendLimits::default()), &okta.secret).await.unwrap();
    let unmark = json!({ "metadata": { "annotations": { mfa_recall::api::SECRET_OPT_IN: "someone-else" } } });
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns).patch("not-opted-in-credentials", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&unmark)).await.unwrap();
    let log_file = parts.file("wrongcreds-operator.log");
    let operator = Operator::start(ns, &parts.file("wrongcreds-audit.jsonl"), &log_file);
    let backends: Api<IdentityBackend> = Api::namespaced(client.clone(), ns);
    for (name, subject, wrong) in &subjects {
        let backend = cluster::wait_for(&backends, name, Duration::from_secs(60), |b| ready_condition(b).is_some()).await.unwrap();
        let (status, reason, message) = ready_condition(&backend).unwrap();
        assert_eq!((status.as_str(), reason.as_str()), ("False", "AuthenticationFailed"), "{name}: {message}");
        assert!(message.contains(&format!("{ns}/{name}-credentials")), "{name}: the message names the Secret: {message}");
        let shown = serde_json::to_string(&backend.status).unwrap() + &operator.log();
        for value in wrong.values().chain(subject.secret.values()) {
            for line in value.lines().filter(|l| l.len() >= 12) {
                assert!(!shown.contains(line), "{name}: a credential leaked into status or logs");
            }
        }
    }
    let backend = cluster::wait_for(&backends, "not-opted-in", Duration::from_secs(60), |b| ready_condition(b).is_some()).await.unwrap();
    let (status, reason, message) = ready_condition(&backend).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidConfiguration"), "{message}");
    assert!(message.contains(&format!("Secret {ns}/not-opted-in-credentials does not let this IdentityBackend use it: annotate it mfarecall.io/identity-backends: not-opted-in")), "{message}");
    assert_eq!(okta.sim.stats().requests, 0, "nothing was sent to the provider");
}

/// A factor kind a provider can only revoke with others, asked for alone, is refused before
/// anything is touched: the recall fails with a reason and a message that says what to ask for.
/// Also when it was created suspended and released later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_factor_kind_the_provider_cannot_revoke_alone_is_refused() {
    let (parts, client, ns, _) = support::scenario("inseparable").await;
    let ns = ns.as_str();
    let subject = SimSubject::start("google").await.unwrap();
    subject.sim.provider.seed(&Seed { users: 5, ..Seed::default() });
    let limits = BackendLimits { requests_per_second: 100, max_concurrency: 4, ..Default::default() };
    cluster::create_backend(&client, ns, "corp-google", subject.backend_spec("corp-google-credentials", limits), &subject.secret).await.unwrap();
    let _operator = Operator::start(ns, &parts.file("inseparable-audit.jsonl"), &parts.file("inseparable-operator.log"));
    let before = subject.sim.provider.census(Some(jiff::Timestamp::now()));
    cluster::create_recall(&client, ns, json!({"apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "totp-only"},
        "spec": {"reason": "INC-8 authenticator app vendor breach", "backends": ["corp-google"], "scope": {"allUsers": true}, "factors": ["totp"], "suspend": true}}))
    .await
    .unwrap();
    let api: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    cluster::wait_for(&api, "totp-only", Duration::from_secs(60), |r| phase(r) == RecallPhase::Suspended).await.unwrap();
    api.patch("totp-only", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(json!({"spec": {"suspend": false}}))).await.unwrap();
    let failed = cluster::wait_for(&api, "totp-only", Duration::from_secs(60), |r| phase(r) == RecallPhase::Failed).await.unwrap();
    let ready = failed.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "FactorKindsInseparable");
    assert!(ready.message.contains("corp-google") && ready.message.contains("twoStepVerification"), "{}", ready.message);
    assert_eq!(subject.sim.provider.census(Some(jiff::Timestamp::now())).factors, before.factors, "nothing touched");
}

/// A ledger object made by someone who may write the operator's ledger resource but does not
/// hold its key (here it names the real factors of a user the recall leaves out) stops the
/// recall with a condition that says what to do, and nothing it names is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_ledger_segment_stops_the_recall_and_nothing_it_names_is_touched() {
    use mfa_recall::api::{LedgerPart, RecallLedgerSegment, RecallLedgerSegmentSpec};
    use mfa_recall::backends::{FactorRef, UserRef, UserSnapshot};
    use mfa_recall::ledger::{self, Segment, UserRecord};

    let (parts, client, ns, _) = support::scenario("forged").await;
    let ns = ns.as_str();
    let subject = SimSubject::start("okta").await.unwrap();
    subject.sim.provider.seed(&Seed { users: 6, ..Seed::default() });
    cluster::create_backend(&client, ns, "corp-okta", subject.backend_spec("corp-okta-credentials", BackendLimits::default()), &subject.secret).await.unwrap();
    cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "forged"},
        "spec": {"reason": "INC-10 a forged ledger", "backends": ["corp-okta"], "scope": {"users": [username(1), username(2)]}}
    }))
    .await
    .unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let recall = recalls.get("forged").await.unwrap();
    let uid = recall.metadata.uid.clone().unwrap();

    // The real id and factors of a user out of scope, as anyone with an API token reads them.
    let http = reqwest::Client::new();
    let token = format!("SSWS {}", subject.secret["api-token"]);
    let users: serde_json::Value = http.get(format!("{}/api/v1/users?limit=200", subject.running.url)).header("Authorization", &token).send().await.unwrap().json().await.unwrap();
    let victim = users.as_array().unwrap().iter().find(|u| u["profile"]["login"] == username(0)).expect("the victim is listed");
    let victim_id = victim["id"].as_str().unwrap().to_string();
    let factors: serde_json::Value = http.get(format!("{}/api/v1/users/{victim_id}/factors", subject.running.url)).header("Authorization", &token).send().await.unwrap().json().await.unwrap();
    let factors: Vec<FactorRef> = factors.as_array().unwrap().iter().map(|f| FactorRef::new(f["id"].as_str().unwrap(), FactorKind::Totp, f["factorType"].as_str().unwrap())).collect();
    assert!(!factors.is_empty(), "the victim holds factors to lose");
    let mut record = UserRecord::planned(UserRef { id: victim_id.clone(), username: username(0) });
    record.snapshot = Some(UserSnapshot { factors, sessions: 1, ..Default::default() });
    let forged = Segment::fresh("corp-okta", 0, None, vec![record]);
    let name = ledger::segment_name(&uid, "corp-okta", 0);
    let object = RecallLedgerSegment {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            labels: Some([(ledger::RECALL_UID_LABEL, uid.as_str()), (ledger::BACKEND_LABEL, "corp-okta"), (ledger::SEGMENT_LABEL, "0")].map(|(k, v)| (k.to_string(), v.to_string())).into()),
            ..Default::default()
        },
        spec: RecallLedgerSegmentSpec { recall_uid: uid.clone(), backend: "corp-okta".into(), index: 0, part: LedgerPart::Users, data: k8s_openapi::ByteString(ledger::encode(&forged).unwrap()), mac: "ab".repeat(32) },
    };
    Api::<RecallLedgerSegment>::namespaced(client.clone(), ns).create(&Default::default(), &object).await.unwrap();
    let census = subject.sim.provider.census(None);
    // From here on, only the operator sends requests.
    subject.sim.record_requests();

    let operator = Operator::start(ns, &parts.file("forged-audit.jsonl"), &parts.file("forged-operator.log"));
    let failed = cluster::wait_for(&recalls, "forged", Duration::from_secs(60), |r| phase(r) == RecallPhase::Failed).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let ready = failed.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "LedgerRejected"), "{}", ready.message);
    assert!(ready.message.contains(&name) && ready.message.contains("its HMAC does not match") && ready.message.contains("Nothing it names was acted on"), "{}", ready.message);
    let writes: Vec<_> = subject.sim.recorded_requests().into_iter().filter(|r| r.method != "GET").collect();
    assert!(writes.is_empty(), "nothing was revoked, ended or required: {writes:?}");
    assert!(subject.sim.recorded_requests().iter().all(|r| !r.path.contains(&victim_id)), "the forged user was not even read");
    assert_eq!(subject.sim.provider.census(None).factors, census.factors);
}

/// A ledger segment deleted while later ones remain (someone with write access to the ledger
/// resource hiding what the recall did to its users): the resumed recall stops and names the
/// missing segment, rather than list those users again as untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_ledger_segment_stops_the_recall() {
    use kube::api::{DeleteParams, ListParams};
    use mfa_recall::api::RecallLedgerSegment;

    let (parts, client, ns, _) = support::scenario("deletedseg").await;
    let ns = ns.as_str();
    let subject = SimSubject::start("okta").await.unwrap();
    // More than the first, small segment holds: the ledger has two.
    subject.sim.provider.seed(&Seed { users: 40, ..Seed::default() });
    cluster::create_backend(&client, ns, "corp-okta", subject.backend_spec("corp-okta-credentials", BackendLimits::default()), &subject.secret).await.unwrap();
    let (audit_file, log_file) = (parts.file("deletedseg-audit.jsonl"), parts.file("deletedseg-operator.log"));
    let mut operator = Operator::start(ns, &audit_file, &log_file);
    cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "deleted"},
        "spec": {"reason": "INC-12 a ledger segment deleted", "backends": ["corp-okta"], "scope": {"allUsers": true}, "reEnrollment": {"gracePeriod": "1h", "checkInterval": "10s"}}
    }))
    .await
    .unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let recall = cluster::wait_for(&recalls, "deleted", Duration::from_secs(60), |r| phase(r) == RecallPhase::AwaitingReEnrollment).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    operator.kill();
    let uid = recall.metadata.uid.unwrap();
    let segments: Api<RecallLedgerSegment> = Api::namespaced(client.clone(), ns);
    let listed = segments.list(&ListParams::default().labels(&format!("{}={uid}", mfa_recall::ledger::RECALL_UID_LABEL))).await.unwrap();
    assert!(listed.items.iter().any(|s| s.spec.index == 1), "the ledger has a second segment");
    let first = mfa_recall::ledger::segment_name(&uid, "corp-okta", 0);
    for name in [first.clone(), format!("{first}-outcomes")] {
        segments.delete(&name, &DeleteParams::default()).await.unwrap();
    }
    subject.sim.record_requests();

    let operator = Operator::start(ns, &audit_file, &log_file);
    let failed = cluster::wait_for(&recalls, "deleted", Duration::from_secs(60), |r| phase(r) == RecallPhase::Failed).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let status = failed.status.unwrap();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "LedgerRejected", "{}", ready.message);
    assert!(ready.message.contains(&first) && ready.message.contains("is missing while later segments of its backend are there"), "{}", ready.message);
    assert_eq!(status.counts.invalidated, 40, "counts stay as published");
    let writes: Vec<_> = subject.sim.recorded_requests().into_iter().filter(|r| r.method != "GET").collect();
    assert!(writes.is_empty(), "nobody was worked on again: {writes:?}");
}

/// The window watched from Okta's System Log by the operator itself, killed (SIGKILL) twice while
/// users re-enroll: after each restart it reads on from the cursor in its ledger, so every
/// re-enrollment is counted once (one `reenrollment.seen` line each) and every flag raised once,
/// whether the enrollment came before a kill, between two, or after the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_window_stream_survives_kills_with_nothing_missed_or_counted_twice() {
    let (parts, client, ns, _) = support::scenario("windowkills").await;
    let ns = ns.as_str();
    let subject = simulated_backend(&client, ns, "okta", "corp-okta", &Seed { users: 60, ..Seed::default() }).await;
    // Before the recall, everyone who will enroll signs in from their home network (each their
    // own, in San Francisco: many enrollments from one address would be a burst).
    let home = |i: u32| format!("198.51.100.{}", 10 + i);
    for i in 0..30 {
        subject.sim.provider.act(&username(i), &idp_sim::Activity::new(idp_sim::Act::SignIn, &home(i))).unwrap();
    }
    let audit_file = parts.file("windowkills-audit.jsonl");
    let log_file = parts.file("windowkills-operator.log");
    let instance = format!("op-{ns}");
    let mut operator = Operator::start_with(ns, &audit_file, &log_file, &instance, &[]);
    let cutoff = jiff::Timestamp::now();
    cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "window"},
        "spec": {"reason": "INC-12 window", "backends": ["corp-okta"], "cutoff": cutoff.to_string(), "scope": {"allUsers": true},
                 "reEnrollment": {"checkInterval": "10s", "sweepPerCheck": 0}, "anomalies": {"baseline": "1h"}}
    }))
    .await
    .unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    cluster::wait_for(&recalls, "window", Duration::from_secs(120), |r| phase(r) == RecallPhase::AwaitingReEnrollment).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let re_enrolled = |r: &MfaRecall| r.status.as_ref().map_or(0, |s| s.counts.re_enrolled);
    // Three rounds of ten enrollments, a kill after each of the first two; one in five from Lagos.
    for round in 0..3u32 {
        for i in round * 10..round * 10 + 10 {
            let from = if i % 5 == 0 { format!("100.64.7.{i}") } else { home(i) };
            subject.sim.provider.act(&username(i), &idp_sim::Activity::new(idp_sim::Act::Enroll { factor: idp_sim::FactorKind::Totp }, &from)).unwrap();
        }
        let want = i64::from(round * 10 + 10);
        cluster::wait_for(&recalls, "window", Duration::from_secs(120), |r| re_enrolled(r) >= want).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
        if round < 2 {
            operator.kill();
            operator = Operator::start_with(ns, &audit_file, &log_file, &instance, &[]);
        }
    }
    // Two more checks after the last enrollment (each reads the System Log once): nothing more may be counted.
    let log_reads = || subject.sim.stats().by_bucket.get("GET logs").copied().unwrap_or(0);
    let reads_then = log_reads();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    while log_reads() < reads_then + 2 {
        assert!(tokio::time::Instant::now() < give_up, "no further check within a minute\n{}", operator.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counts = recalls.get("window").await.unwrap().status.unwrap().counts;
    assert_eq!((counts.re_enrolled, counts.anomalies), (30, 6 * 2), "every enrollment once; six from Lagos, each newNetwork and impossibleTravel: {counts:?}");
    let lines = audit_lines(&audit_file);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in lines.iter().filter(|l| l["action"] == "reenrollment.seen") {
        *seen.entry(line["user"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    assert_eq!(seen.len(), 30, "{seen:?}");
    assert!(seen.values().all(|n| *n == 1), "a re-enrollment audited twice: {seen:?}");
    let flags = lines.iter().filter(|l| l["action"] == "anomaly.flagged").count();
    assert_eq!(flags, 12, "each flag audited once");
}

/// The notice's not-me link, end to end through the operator: a re-enrolled user is told by a
/// signed webhook; opening the link shows a page that does nothing by itself; pressing its button
/// keeps the report, and the recall's next check flags and quarantines the user (account
/// disabled, the new factor gone). A link for another user, or a forged one, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_who_says_not_me_is_quarantined() {
    let (parts, client, ns, _) = support::scenario("notme").await;
    let ns = ns.as_str();
    let subject = simulated_backend(&client, ns, "okta", "corp-okta", &Seed { users: 20, ..Seed::default() }).await;
    let receiver = support::notices::WebhookReceiver::start().await;
    let hook = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "notice-webhook" }, "stringData": { "hmac-key": "mfacanary-webhook-key-0123456789abcdef" } });
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns).create(&kube::api::PostParams::default(), &serde_json::from_value(hook).unwrap()).await.unwrap();
    let not_me_addr = support::free_addr();
    let audit_file = parts.file("notme-audit.jsonl");
    let operator = Operator::start_with(ns, &audit_file, &parts.file("notme-operator.log"), &format!("op-{ns}"), &["--not-me-addr", &not_me_addr]);
    let cutoff = jiff::Timestamp::now();
    cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "notme"},
        "spec": {"reason": "INC-13 not me", "backends": ["corp-okta"], "cutoff": cutoff.to_string(), "scope": {"allUsers": true},
                 "reEnrollment": {"checkInterval": "10s", "sweepPerCheck": 0},
                 "notifications": {"webhook": {"url": receiver.url, "secretRef": {"name": "notice-webhook"}}, "notMeUrl": format!("http://{not_me_addr}/v1/not-me")}}
    }))
    .await
    .unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    cluster::wait_for(&recalls, "notme", Duration::from_secs(120), |r| phase(r) == RecallPhase::AwaitingReEnrollment).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let victim = username(4);
    let factor = subject.sim.provider.act(&victim, &idp_sim::Activity::new(idp_sim::Act::Enroll { factor: idp_sim::FactorKind::Totp }, "100.64.9.9")).unwrap().unwrap();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    let link = loop {
        if let Some(delivery) = receiver.deliveries.lock().unwrap().first() {
            let body: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
            break body["notMeUrl"].as_str().expect("a not-me link in the notice").to_string();
        }
        assert!(tokio::time::Instant::now() < give_up, "no notice within a minute\n{}", operator.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let http = reqwest::Client::new();
    // Opening the link changes nothing; its page posts the same fields back.
    let page = http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<form method=\"post\">") && html.contains("This was not me"), "{html}");
    assert!(subject.sim.provider.user(&victim).unwrap().active, "a GET locks nobody");
    let url: reqwest::Url = link.parse().unwrap();
    let fields: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    // Someone else's user, or a forged token: refused.
    let forged: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.clone(), if k == "user" { "00uSomeoneElse".into() } else { v.clone() })).collect();
    let post = |form: Vec<(String, String)>| http.post(format!("http://{not_me_addr}/v1/not-me")).form(&form).send();
    assert_eq!(post(forged).await.unwrap().status(), 404);
    let answer = post(fields).await.unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    let recall = cluster::wait_for(&recalls, "notme", Duration::from_secs(60), |r| r.status.as_ref().is_some_and(|s| s.counts.quarantined == 1))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let counts = recall.status.unwrap().counts;
    assert_eq!((counts.re_enrolled, counts.quarantined), (0, 1), "the reported enrollment is undone: {counts:?}");
    let held = subject.sim.provider.user(&victim).unwrap();
    assert!(!held.active && held.factors.iter().all(|f| f.id != factor), "{victim} is disabled and the factor gone: {held:?}");
    let lines = audit_lines(&audit_file);
    for action in ["user.notMe", "anomaly.flagged", "user.quarantine"] {
        assert_eq!(lines.iter().filter(|l| l["action"] == action).count(), 1, "one {action} line");
    }
    // The same link again: one report per user, nothing counted twice.
    let again = post(url.query_pairs().into_owned().collect()).await.unwrap();
    assert_eq!(again.status(), 200);
    // A person clears the user while the recall runs: the running operator acts on it.
    let clearance = json!({ "spec": { "clearances": [{ "user": victim.to_uppercase(), "clearedBy": "alice", "note": "spoke with the user" }] } });
    recalls.patch("notme", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&clearance)).await.unwrap();
    let recall = cluster::wait_for(&recalls, "notme", Duration::from_secs(60), |r| r.status.as_ref().is_some_and(|s| s.counts.quarantined == 0))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    assert!(subject.sim.provider.user(&victim).unwrap().active, "{victim} is enabled again once cleared");
    let counts = recall.status.unwrap().counts;
    assert_eq!(counts.anomalies, 1, "one flag for one report: {counts:?}");
    let lines = audit_lines(&audit_file);
    let clears: Vec<&serde_json::Value> = lines.iter().filter(|l| l["action"] == "user.clear").collect();
    assert_eq!(clears.len(), 1, "{clears:?}");
    assert!(clears[0]["detail"].as_str().unwrap().starts_with("cleared by alice"), "{clears:?}");
    assert_eq!(lines.iter().filter(|l| l["action"] == "user.notMe").count(), 1, "the second post is no second report");
    assert!(!std::fs::read_to_string(parts.file("notme-operator.log")).unwrap_or_default().contains("mfacanary-webhook-key"), "the webhook key never shows");
}

/// An MfaBypass on the real apiserver with the operator running: nothing is issued until a second
/// person approves; then the provider's own code (Duo's bypass code, one use) reaches the user's
/// address on file through the real mail server, works once, and is gone at the provider once
/// revoked or expired. Every step is in the audit trail; no code is in status, events, the
/// operator's log or the trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bypass_is_issued_once_approved_mailed_and_withdrawn() {
    let (parts, client, ns, _) = support::scenario("bypass").await;
    let ns = ns.as_str();
    let subject = simulated_backend(&client, ns, "duo", "corp-duo", &Seed { users: 12, ..Seed::default() }).await;
    let mail = support::notices::MailServer::from_env();
    let audit_file = parts.file("bypass-audit.jsonl");
    let log_file = parts.file("bypass-operator.log");
    let operator = Operator::start_with(ns, &audit_file, &log_file, &format!("op-{ns}"), &[]);
    let sender = format!("{}@corp.example", support::unique("security"));
    cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "inc-7"},
        "spec": {"reason": "INC-7", "backends": ["corp-duo"], "scope": {"users": [username(3), username(5)]},
                 "reEnrollment": {"checkInterval": "10s", "sweepPerCheck": 0},
                 "notifications": {"smtp": {"server": mail.server, "from": format!("Security <{sender}>"), "security": "None"}}}
    }))
    .await
    .unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    cluster::wait_for(&recalls, "inc-7", Duration::from_secs(120), |r| phase(r) == RecallPhase::AwaitingReEnrollment).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));

    let bypasses: Api<MfaBypass> = Api::namespaced(client.clone(), ns);
    let request = |name: &str, user: &str, lifetime: &str| -> MfaBypass {
        serde_json::from_value(json!({
            "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaBypass", "metadata": { "name": name },
            "spec": { "recall": "inc-7", "backend": "corp-duo", "user": user.to_uppercase(), "lifetime": lifetime, "reason": "verified on a video call", "requestedBy": "alice" }
        }))
        .unwrap()
    };
    let phase_of = |b: &MfaBypass| b.status.as_ref().map(|s| s.phase);
    let approve = |by: &str| kube::api::Patch::Merge(json!({ "spec": { "approvedBy": by } }));
    let patch = kube::api::PatchParams::default();
    let victim = username(3);
    let ours = || -> Vec<String> { mail.messages(&victim).into_iter().map(|m| support::notices::quoted_printable(&m)).filter(|m| m.contains(&sender)).collect() };
    // The mail server accepts a message, then delivers it to the mailbox.
    let mail_count = async |n: usize| -> Vec<String> {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
        while ours().len() < n {
            assert!(tokio::time::Instant::now() < give_up, "mail {n} never reached {victim}'s mailbox");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ours()
    };
    let code_in = |message: &str| message.lines().map(str::trim).find(|l| l.len() == 9 && l.bytes().all(|b| b.is_ascii_digit())).unwrap_or_else(|| panic!("no code in {message}")).to_string();

    // Requested: nothing is issued until someone approves.
    bypasses.create(&kube::api::PostParams::default(), &request("first", &victim, "30m")).await.unwrap();
    cluster::wait_for(&bypasses, "first", Duration::from_secs(30), |b| phase_of(b) == Some(BypassPhase::AwaitingApproval)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(ours().is_empty(), "nothing is sent before approval");
    bypasses.patch("first", &patch, &approve("bob")).await.unwrap();
    let first = cluster::wait_for(&bypasses, "first", Duration::from_secs(60), |b| phase_of(b) == Some(BypassPhase::Active)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let status = first.status.clone().unwrap();
    assert_eq!(status.mechanism.as_deref(), Some("Duo bypass code, usable once"));
    assert_eq!(status.delivered_to.as_deref(), Some("u***@example.com"));
    let expires = status.expires_at.unwrap();
    assert!(expires.duration_since(status.issued_at.unwrap() + jiff::SignedDuration::from_mins(30)).abs() < jiff::SignedDuration::from_secs(5), "{status:?}");
    let messages = mail_count(1).await;
    assert_eq!(messages.len(), 1, "one mail: {messages:?}");
    let code = code_in(&messages[0]);
    subject.sim.provider.sign_in_with_bypass(&victim, &code).expect("the user signs in with the code");
    assert!(subject.sim.provider.sign_in_with_bypass(&victim, &code).is_err(), "good once");
    let used = cluster::wait_for(&bypasses, "first", Duration::from_secs(60), |b| phase_of(b) == Some(BypassPhase::Used)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    assert!(used.status.unwrap().used_at.is_some());

    // A second one, then revoked: gone at the provider.
    bypasses.create(&kube::api::PostParams::default(), &request("second", &victim, "30m")).await.unwrap();
    bypasses.patch("second", &patch, &approve("bob")).await.unwrap();
    cluster::wait_for(&bypasses, "second", Duration::from_secs(60), |b| phase_of(b) == Some(BypassPhase::Active)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let second = code_in(&mail_count(2).await[1]);
    // One at a time per user: a second approval while one works would take the first with it.
    bypasses.create(&kube::api::PostParams::default(), &request("overlap", &victim, "30m")).await.unwrap();
    bypasses.patch("overlap", &patch, &approve("bob")).await.unwrap();
    let overlap = cluster::wait_for(&bypasses, "overlap", Duration::from_secs(60), |b| phase_of(b) == Some(BypassPhase::Failed)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    assert!(overlap.status.unwrap().message.contains("MfaBypass second still works for this user"));
    // Without the admission policy (not installed here) the operator still refuses self-approval.
    bypasses.create(&kube::api::PostParams::default(), &request("selfish", &victim, "30m")).await.unwrap();
    bypasses.patch("selfish", &patch, &approve("alice")).await.unwrap();
    let selfish = cluster::wait_for(&bypasses, "selfish", Duration::from_secs(60), |b| phase_of(b) == Some(BypassPhase::Failed)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    assert!(selfish.status.unwrap().message.contains("approved by its own requester alice"));
    assert_eq!(mail_count(2).await.len(), 2, "neither sent anything");
    bypasses.patch("second", &patch, &kube::api::Patch::Merge(json!({ "spec": { "revoked": true, "revokedBy": "alice" } }))).await.unwrap();
    let revoked = cluster::wait_for(&bypasses, "second", Duration::from_secs(60), |b| phase_of(b) == Some(BypassPhase::Revoked)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    assert!(revoked.status.unwrap().message.contains("revoked by alice; withdrawn at the provider"));
    assert!(subject.sim.provider.sign_in_with_bypass(&victim, &second).is_err(), "a revoked code is gone at the provider");

    // A third, left to expire: withdrawn at its end, and refused after.
    bypasses.create(&kube::api::PostParams::default(), &request("third", &victim, "1m")).await.unwrap();
    bypasses.patch("third", &patch, &approve("bob")).await.unwrap();
    cluster::wait_for(&bypasses, "third", Duration::from_secs(60), |b| phase_of(b) == Some(BypassPhase::Active)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let third = code_in(&mail_count(3).await[2]);
    cluster::wait_for(&bypasses, "third", Duration::from_secs(120), |b| phase_of(b) == Some(BypassPhase::Expired)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    assert!(subject.sim.provider.sign_in_with_bypass(&victim, &third).is_err(), "an expired code is refused");

    // A user the recall did not reach gets none, and the status says why.
    let stranger_before = subject.sim.provider.user(&username(8)).unwrap();
    bypasses.create(&kube::api::PostParams::default(), &request("stranger", &username(8), "30m")).await.unwrap();
    bypasses.patch("stranger", &patch, &approve("bob")).await.unwrap();
    let refused = cluster::wait_for(&bypasses, "stranger", Duration::from_secs(60), |b| phase_of(b) == Some(BypassPhase::Failed)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    assert!(refused.status.unwrap().message.contains("is not among the users MfaRecall inc-7 reached"), "says why");
    assert_eq!(subject.sim.provider.user(&username(8)).unwrap(), stranger_before, "nothing issued to a stranger");

    // Each step in the trail; no code anywhere but the user's mailbox.
    let lines = audit_lines(&audit_file);
    let steps: Vec<String> = lines.iter().filter(|l| l["detail"].as_str().is_some_and(|d| d.starts_with("MfaBypass first:"))).map(|l| l["action"].as_str().unwrap().to_string()).collect();
    assert_eq!(steps, ["bypass.request", "bypass.approve", "bypass.issue", "bypass.deliver", "bypass.use"], "{steps:?}");
    assert!(lines.iter().any(|l| l["action"] == "bypass.revoke" && l["detail"].as_str().unwrap().contains("second")));
    assert!(lines.iter().any(|l| l["action"] == "bypass.expire" && l["detail"].as_str().unwrap().contains("third")));
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns).list(&Default::default()).await.unwrap();
    let seen = [
        serde_json::to_string(&bypasses.list(&Default::default()).await.unwrap()).unwrap(),
        serde_json::to_string(&events).unwrap(),
        std::fs::read_to_string(&audit_file).unwrap(),
        std::fs::read_to_string(&log_file).unwrap_or_default(),
    ];
    // Who re-registered: the report names each user's bypasses, and holds no code either.
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_mfa-recall"))
        .args(["report", "inc-7", "--namespace", ns, "--format", "json", "--key-file"])
        .arg(support::ledger_key_file(audit_file.parent().unwrap()))
        .output()
        .unwrap();
    assert!(report.status.success(), "report: {}", String::from_utf8_lossy(&report.stderr));
    let rows = String::from_utf8(report.stdout).unwrap();
    let row: serde_json::Value = rows.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|r| r["username"].as_str().is_some_and(|u| u.eq_ignore_ascii_case(&victim))).expect("the user's row");
    let listed = row["bypasses"].as_str().unwrap();
    for part in ["Used first at", "Revoked second", "Expired third"] {
        assert!(listed.contains(part), "{part}: {listed}");
    }
    for code in [&code, &second, &third] {
        for (what, text) in ["status", "events", "audit trail", "operator log", "report"].iter().zip(seen.iter().chain([&rows])) {
            assert!(!text.contains(code.as_str()), "a bypass code is in the {what}");
        }
    }
}

/// The lockout guard on the real apiserver: a recall that reaches administrators (members of a
/// subgroup of a privileged group included) waits with a LockoutRisk condition that says what to
/// change, and touches nobody, while the backend's break-glass account does not exist; once a
/// working one is named, the recall runs and leaves that account alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lockout_guard_holds_a_recall_of_admins_until_a_break_glass_account_works() {
    let (parts, client, ns, _) = support::scenario("lockout").await;
    let ns = ns.as_str();
    let subject = SimSubject::start("entra").await.unwrap();
    let groups = vec![GroupSeed::new("staff", 2), GroupSeed::new("admins", 10), GroupSeed::nested("platform", 7, 3, "admins")];
    subject.sim.provider.seed(&Seed { users: 30, groups, ..Seed::default() });
    let limits = BackendLimits { requests_per_second: 500, max_concurrency: 8, ..Default::default() };
    let mut spec = subject.backend_spec("corp-entra-credentials", limits);
    spec.privileged_groups = vec!["admins".into()];
    spec.break_glass = vec!["nobody@example.com".into()];
    cluster::create_backend(&client, ns, "corp-entra", spec, &subject.secret).await.unwrap();
    let operator = Operator::start(ns, &parts.file("lockout-audit.jsonl"), &parts.file("lockout-operator.log"));
    let before = subject.sim.provider.census(None);
    cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "staff"},
        "spec": {"reason": "INC-9", "backends": ["corp-entra"], "scope": {"groups": ["staff"]}, "reEnrollment": {"via": "VerifiedLink"}}
    }))
    .await
    .unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let ready = |r: &MfaRecall| r.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").map(|c| (c.reason.clone(), c.message.clone())));
    let held = cluster::wait_for(&recalls, "staff", Duration::from_secs(60), |r| ready(r).is_some_and(|(reason, _)| reason == "LockoutRisk")).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let (_, message) = ready(&held).unwrap();
    for part in ["break-glass account nobody@example.com does not exist", "reaches members of the privileged group admins", "spec.breakGlass", "spec.acknowledgeLockoutRisk: true"] {
        assert!(message.contains(part), "the condition says {part:?}: {message}");
    }
    assert_eq!(phase(&held), RecallPhase::Pending);
    assert_eq!(subject.sim.provider.census(None), before, "nothing was touched");
    // Argo CD's health check says why it waits.
    let (health, said) = support::argocd_health(&serde_json::to_value(&held).unwrap());
    assert_eq!(health, "Degraded");
    assert!(said.contains("privileged group admins"), "{said}");

    // User 24 is in staff and in platform, a subgroup of admins: a working break-glass account,
    // never recalled though the scope holds it.
    let keeper = username(24);
    let backends: Api<IdentityBackend> = Api::namespaced(client.clone(), ns);
    backends.patch("corp-entra", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(json!({ "spec": { "breakGlass": [keeper.to_uppercase()] } }))).await.unwrap();
    let done = cluster::wait_for(&recalls, "staff", Duration::from_secs(120), |r| phase(r) == RecallPhase::AwaitingReEnrollment).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    assert_eq!(support::argocd_health(&serde_json::to_value(&done).unwrap()).0, "Healthy", "every user dealt with");
    let status = done.status.unwrap();
    let counts = status.counts;
    assert!(counts.invalidated > 10 && counts.excluded >= 1, "{counts:?}");
    // Entra has no link to send: status says the users enroll at their next sign-in.
    let via = status.backends[0].re_enrollment_via.clone().unwrap_or_default();
    assert!(via.starts_with("NextSignIn: this provider has no link"), "{via}");
    let kept = subject.sim.provider.user(&keeper).unwrap();
    assert!(!kept.factors.is_empty() && kept.active, "the break-glass account keeps its factors: {kept:?}");
}

/// GitOps: a recall applied by a GitOps tool (server-side apply under its own field manager) is
/// never fought over: the operator's writes own only status and its finalizer, so the tool
/// re-applies the same manifest, after the recall ran, without a conflict and without force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recall_applied_by_a_gitops_tool_is_never_fought_over() {
    let (parts, client, ns, _) = support::scenario("gitops").await;
    let ns = ns.as_str();
    let _simulator = simulated_backend(&client, ns, "okta", "corp-okta", &Seed { users: 12, ..Seed::default() }).await;
    let operator = Operator::start(ns, &parts.file("gitops-audit.jsonl"), &parts.file("gitops-operator.log"));
    let manifest = json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "from-git"},
        "spec": {"reason": "INC-11, from git", "backends": ["corp-okta"], "scope": {"allUsers": true}, "reEnrollment": {"checkInterval": "10s"}}
    });
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let as_gitops = kube::api::PatchParams::apply("argocd-controller");
    recalls.patch("from-git", &as_gitops, &kube::api::Patch::Apply(&manifest)).await.unwrap();
    let done = cluster::wait_for(&recalls, "from-git", Duration::from_secs(120), |r| phase(r) == RecallPhase::AwaitingReEnrollment).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    // What each manager owns: the operator nothing of the spec.
    for entry in done.metadata.managed_fields.clone().unwrap_or_default() {
        let fields = serde_json::to_value(&entry.fields_v1).unwrap();
        if entry.manager.as_deref() == Some("argocd-controller") {
            assert!(fields["f:spec"].is_object(), "the tool owns the spec: {fields}");
        } else {
            assert!(fields.get("f:spec").is_none(), "{:?} owns part of the spec: {fields}", entry.manager);
        }
    }
    // The tool re-applies, as it does on every sync: no conflict, no force, nothing changed.
    let again = recalls.patch("from-git", &as_gitops, &kube::api::Patch::Apply(&manifest)).await.expect("re-applied without a conflict");
    assert_eq!(again.spec, done.spec);
    assert_eq!(again.metadata.generation, done.metadata.generation, "the spec did not change");
    let status = recalls.get_status("from-git").await.unwrap().status.unwrap();
    assert_eq!(status.counts.invalidated, 12, "{:?}", status.counts);
}

/// A recall made as a plan lists and counts, changes nothing at the provider, and keeps its
/// plan in status (a bounded sample; the report lists every user); switched to Execute, it
/// revokes exactly what it counted, for exactly the users it planned, and cannot go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_changes_nothing_and_its_execution_does_exactly_what_it_counted() {
    let (parts, client, ns, _) = support::scenario("plan").await;
    let ns = ns.as_str();
    let seed = Seed { users: 40, groups: vec![GroupSeed::new("admins", 10)], ..Seed::default() };
    let subject = simulated_backend(&client, ns, "okta", "corp-okta", &seed).await;
    let audit_file = parts.file("plan-audit.jsonl");
    let operator = Operator::start(ns, &audit_file, &parts.file("plan-operator.log"));
    let cutoff = jiff::Timestamp::now();
    let before = subject.sim.provider.census(Some(cutoff));
    cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "what-if"},
        "spec": {"reason": "INC-12, planned first", "backends": ["corp-okta"], "cutoff": cutoff.to_string(), "mode": "Plan",
                 "scope": {"allUsers": true, "exclude": {"users": [username(3).to_uppercase()], "groups": ["admins"]}},
                 "reEnrollment": {"checkInterval": "10s", "sweepPerCheck": 0}}
    }))
    .await
    .unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let planned = cluster::wait_for(&recalls, "what-if", Duration::from_secs(60), |r| phase(r) == RecallPhase::Planned).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let status = planned.status.unwrap();
    let plan = status.plan.clone().expect("the plan in status");
    // Admins are every 10th user (0, 10, 20, 30), and user 3 by name.
    assert_eq!((plan.users, status.counts.excluded, status.counts.invalidated), (35, 5, 0), "{plan:?}");
    assert_eq!(plan.sample.len(), mfa_recall::api::PLAN_SAMPLE, "a bounded sample");
    assert!(plan.planned_at.is_some() && plan.lockout_risk.is_none());
    assert!(plan.factors.values().sum::<i64>() >= 35, "every one of the 35 holds a factor: {plan:?}");
    assert_eq!(status.backends[0].plan.as_ref().map(|p| p.users), Some(35));
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Planned"));
    assert!(ready.message.contains("planned: 35 users") && ready.message.contains("set spec.mode to Execute"), "{}", ready.message);
    assert_eq!(subject.sim.provider.census(Some(cutoff)), before, "a plan changes nothing at the provider");
    assert!(!audit_lines(&audit_file).iter().any(|l| l["action"] == "factor.revoke" || l["action"] == "session.revoke"));
    // The report lists every planned user.
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_mfa-recall"))
        .args(["report", "what-if", "--namespace", ns, "--format", "json", "--key-file"])
        .arg(support::ledger_key_file(audit_file.parent().unwrap()))
        .output()
        .unwrap();
    assert!(report.status.success(), "report: {}", String::from_utf8_lossy(&report.stderr));
    let rows: Vec<serde_json::Value> = String::from_utf8(report.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((rows.len(), rows.iter().filter(|r| r["state"] == "planned").count()), (40, 35));

    // Executed: exactly the plan.
    let execute = kube::api::Patch::Merge(json!({ "spec": { "mode": "Execute" } }));
    recalls.patch("what-if", &kube::api::PatchParams::default(), &execute).await.unwrap();
    let done = cluster::wait_for(&recalls, "what-if", Duration::from_secs(120), |r| phase(r) == RecallPhase::AwaitingReEnrollment).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let status = done.status.unwrap();
    assert_eq!((status.counts.invalidated, status.counts.excluded, status.counts.failed), (plan.users, 5, 0));
    assert_eq!(status.counts.factors_revoked, plan.factors);
    assert_eq!(status.counts.sessions_revoked, plan.sessions);
    assert_eq!(lost(&before, &subject.sim.provider.census(Some(cutoff))), as_u64(&plan.factors));
    assert_eq!(status.plan.as_ref().map(|p| p.users), Some(35), "the plan stays as it was made");
    assert!(status.started_at.unwrap() > plan.planned_at.unwrap(), "revocation's clock starts when it is let go");
    let error = recalls.patch("what-if", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(json!({ "spec": { "mode": "Plan" } }))).await.unwrap_err().to_string();
    assert!(error.contains("cannot go back to Plan"), "{error}");
}

/// Waves: the privileged users first, then ten at a time with a pause between; a wave in which
/// more than 20 % of its users fail pauses the rollout, saying why, with the later waves
/// untouched; set to go on past that wave, the rollout finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wave_with_too_many_failures_pauses_the_rollout_until_let_through() {
    let (parts, client, ns, _) = support::scenario("waves").await;
    let ns = ns.as_str();
    let subject = SimSubject::start("okta").await.unwrap();
    subject.sim.provider.seed(&Seed { users: 30, groups: vec![GroupSeed::new("admins", 10)], ..Seed::default() });
    let limits = BackendLimits { requests_per_second: 500, max_concurrency: 8, ..Default::default() };
    let mut spec = subject.backend_spec("corp-okta-credentials", limits);
    spec.privileged_groups = vec!["admins".into()];
    cluster::create_backend(&client, ns, "corp-okta", spec, &subject.secret).await.unwrap();
    let audit_file = parts.file("waves-audit.jsonl");
    let operator = Operator::start(ns, &audit_file, &parts.file("waves-operator.log"));
    cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "in-waves"},
        "spec": {"reason": "INC-13, in waves", "backends": ["corp-okta"], "scope": {"allUsers": true}, "mode": "Plan", "acknowledgeLockoutRisk": true,
                 "rollout": {"waveSize": "10", "pause": "1s", "maxFailedPercent": 20},
                 "reEnrollment": {"checkInterval": "10s", "sweepPerCheck": 0}}
    }))
    .await
    .unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let planned = cluster::wait_for(&recalls, "in-waves", Duration::from_secs(60), |r| phase(r) == RecallPhase::Planned).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let plan = planned.status.unwrap().plan.unwrap();
    assert_eq!((plan.users, plan.privileged), (30, 3), "admins are every 10th user");
    // The plan's sample is the listing's order: the users who are not admins, in order, make
    // waves 1 (the first ten), 2 (the next ten) and 3. Three of wave 2 will fail.
    let admins: Vec<String> = [0, 10, 20].iter().map(|i| username(*i)).collect();
    let others: Vec<&String> = plan.sample.iter().filter(|u| !admins.iter().any(|a| a.eq_ignore_ascii_case(u))).collect();
    assert!(others.len() >= 13, "{:?}", plan.sample);
    let failing: Vec<String> = others[10..13].iter().map(|u| subject.sim.provider.user(u).unwrap().id).collect();
    subject.sim.set_faults(idp_sim::Faults { failing_paths: failing.clone(), ..Default::default() });

    recalls.patch("in-waves", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(json!({ "spec": { "mode": "Execute" } }))).await.unwrap();
    let paused = cluster::wait_for(&recalls, "in-waves", Duration::from_secs(60), |r| phase(r) == RecallPhase::Paused).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let status = paused.status.unwrap();
    let rollout = status.rollout.clone().unwrap();
    assert_eq!((rollout.waves, rollout.paused_at_wave), (4, Some(2)));
    assert!(rollout.paused_because.contains("wave 2: 3 of its 10 users failed"), "{}", rollout.paused_because);
    assert_eq!((status.counts.invalidated, status.counts.failed), (3 + 10 + 7, 3), "waves 0 to 2 done, wave 3 untouched");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.reason == "Paused" && ready.message.contains("set spec.rollout.continueAfterWave to 2"), "{ready:?}");
    assert_eq!(support::argocd_health(&serde_json::to_value(&recalls.get("in-waves").await.unwrap()).unwrap()).0, "Suspended");
    // The admins went first.
    let trail = audit_lines(&audit_file);
    let mut first_users: Vec<String> = Vec::new();
    for line in trail.iter().filter(|l| l["action"] == "session.revoke") {
        let user = line["user"].as_str().unwrap().to_lowercase();
        if !first_users.contains(&user) {
            first_users.push(user);
        }
    }
    let mut first_three = first_users[..3].to_vec();
    first_three.sort();
    assert_eq!(first_three, admins.iter().map(|a| a.to_lowercase()).collect::<Vec<_>>(), "wave 0 is the privileged users");
    // Signed out: the 20 invalidated of waves 0 to 2 (the 3 that failed were refused at their
    // sessions already); nobody of wave 3, the last seven of the listing.
    assert_eq!(first_users.len(), 20, "{first_users:?}");
    assert!((23..30).all(|i| !first_users.contains(&username(i).to_lowercase())), "wave 3 untouched: {first_users:?}");

    // Let wave 2 through: the rollout finishes.
    recalls.patch("in-waves", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(json!({ "spec": { "rollout": { "continueAfterWave": 2 } } }))).await.unwrap();
    let done = cluster::wait_for(&recalls, "in-waves", Duration::from_secs(60), |r| phase(r) == RecallPhase::AwaitingReEnrollment).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let status = done.status.unwrap();
    assert_eq!((status.counts.invalidated, status.counts.failed, status.counts.targeted), (27, 3, 30));
    assert_eq!(status.rollout.unwrap().wave, Some(3));
}
