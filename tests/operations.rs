//! Running the operator as production does, on a real kube-apiserver: two replicas with leader
//! election (one acts; the other takes over when the leader is SIGKILLed), the metrics and health
//! endpoints, and SIGTERM (checkpoint, flush, exit within the grace period, resume exactly).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use mfa_recall::api::{BackendLimits, MfaRecall, RecallPhase};
use mfa_recall::audit::{self, Verification};
use idp_sim::{Census, Seed};
use testkit::cluster;
use testkit::sims::{SimBackend, SimSubject};
use serde_json::json;
use support::{Operator, audit_lines, free_addr, get};

const USERS: u32 = 600;

fn phase(recall: &MfaRecall) -> RecallPhase {
    recall.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn invalidated(recall: &MfaRecall) -> i64 {
    recall.status.as_ref().map(|s| s.counts.invalidated).unwrap_or(0)
}

/// A simulated Okta with `USERS` users behind a backend slow enough to stop mid-recall, and a recall on it.
async fn setup(client: &kube::Client, ns: &str) -> (SimSubject, jiff::Timestamp, Census) {
    let subject = SimSubject::start("okta").await.unwrap();
    subject.sim.provider.seed(&Seed { users: USERS, ..Seed::default() });
    let limits = BackendLimits { requests_per_second: 200, max_concurrency: 8, ..Default::default() };
    cluster::create_backend(client, ns, "corp-okta", subject.backend_spec("corp-okta-credentials", limits), &subject.secret).await.unwrap();
    let cutoff = jiff::Timestamp::now();
    let before = subject.sim.provider.census(Some(cutoff));
    (subject, cutoff, before)
}

async fn create_recall(client: &kube::Client, ns: &str, cutoff: jiff::Timestamp) {
    cluster::create_recall(client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "breach"},
        "spec": {"reason": "INC-9 operations test", "backends": ["corp-okta"], "cutoff": cutoff.to_string(),
                 "scope": {"allUsers": true}, "reEnrollment": {"gracePeriod": "1h", "checkInterval": "10s"}}
    }))
    .await
    .unwrap();
}

/// Counts equal what the provider lost, and no factor was revoked twice across every trail.
fn assert_exact(recall: &MfaRecall, subject: &SimSubject, cutoff: jiff::Timestamp, before: &Census, trails: &[&std::path::PathBuf]) {
    let c = &recall.status.as_ref().unwrap().counts;
    assert_eq!((c.targeted, c.invalidated, c.failed), (USERS as i64, USERS as i64, 0), "{c:?}");
    let after = subject.sim.provider.census(Some(cutoff));
    assert!(after.factors_before_cutoff.is_empty(), "{after:?}");
    let revoked: u64 = c.factors_revoked.values().sum::<i64>() as u64;
    assert_eq!(revoked, before.factors_before_cutoff.values().sum::<u64>());
    let mut seen: HashMap<String, u32> = HashMap::new();
    for trail in trails {
        for line in audit_lines(trail).iter().filter(|l| l["action"] == "factor.revoke" && l["outcome"] == "revoked") {
            *seen.entry(line["factorId"].as_str().unwrap().to_string()).or_default() += 1;
        }
        assert!(matches!(audit::verify(trail, &audit::ChainKey::default(), None).unwrap(), Verification::Intact { .. }), "{} is intact", trail.display());
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "revoked twice: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_one_acts_and_the_other_takes_over_when_the_leader_dies() {
    let (parts, client, ns, _) = support::scenario("leader").await;
    let ns = ns.as_str();
    let (subject, cutoff, before) = setup(&client, ns).await;
    let lease_args = |addr: &str| -> Vec<String> {
        ["--leader-election", "--lease-name", "recall-leader", "--lease-namespace", ns, "--lease-seconds", "6", "--metrics-addr", addr]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let (audit_a, audit_b) = (parts.file("leader-a-audit.jsonl"), parts.file("leader-b-audit.jsonl"));
    let log_file = parts.file("leader-operators.log");
    let args_a = lease_args(&addr_a);
    let mut a = Operator::start_with(ns, &audit_a, &log_file, "replica-a", &args_a.iter().map(String::as_str).collect::<Vec<_>>());
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let holder = |l: &Lease| l.spec.as_ref().and_then(|s| s.holder_identity.clone()).unwrap_or_default();
    cluster::wait_for(&leases, "recall-leader", Duration::from_secs(30), |l| holder(l) == "replica-a").await.unwrap();
    let args_b = lease_args(&addr_b);
    let mut b = Operator::start_with(ns, &audit_b, &log_file, "replica-b", &args_b.iter().map(String::as_str).collect::<Vec<_>>());

    // The standby is live and ready (to take over) and does no work; the leader is ready once its
    // caches have synced, which may come after the standby's readiness.
    for _ in 0..50 {
        if get(&format!("http://{addr_b}/readyz")).await.0 == 200 && get(&format!("http://{addr_a}/readyz")).await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(&format!("http://{addr_b}/livez")).await.0, 200);
    assert_eq!(get(&format!("http://{addr_b}/readyz")).await.0, 200, "a standby is ready to take over");
    assert_eq!(get(&format!("http://{addr_a}/readyz")).await.0, 200, "the leader's caches synced");

    create_recall(&client, ns, cutoff).await;
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    cluster::wait_for(&recalls, "breach", Duration::from_secs(120), |r| invalidated(r) >= USERS as i64 / 3).await.unwrap();
    assert!(std::fs::read_to_string(&audit_b).unwrap_or_default().is_empty(), "only the leader acts");
    let metrics = get(&format!("http://{addr_a}/metrics")).await.1;
    assert!(metrics.contains(&format!("mfa_recall_users{{namespace=\"{ns}\",name=\"breach\",backend=\"corp-okta\",state=\"invalidated\"}}")), "recall progress is exported");
    assert!(metrics.contains("mfa_recall_provider_requests_total{backend=\"") && metrics.contains("operation=\"delete_factor\""), "provider requests are exported");
    assert!(!metrics.contains("@example.com"), "no user names in metrics");

    // SIGKILL the leader: the standby takes the lease once it expires, and finishes the recall.
    a.kill();
    let at_kill = invalidated(&recalls.get("breach").await.unwrap());
    assert!(at_kill < USERS as i64 - 50, "the kill came too late to prove a takeover ({at_kill} done)");
    cluster::wait_for(&leases, "recall-leader", Duration::from_secs(6 * 3), |l| holder(l) == "replica-b")
        .await
        .unwrap_or_else(|e| panic!("the standby did not take over within the lease time: {e}\n{}", b.log()));
    let recall = cluster::wait_for(&recalls, "breach", Duration::from_secs(180), |r| phase(r) == RecallPhase::AwaitingReEnrollment)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
    assert!(!audit_lines(&audit_b).is_empty(), "the new leader acted");
    // The killed leader's trail may end in a line cut short; opening it, as a restarted operator
    // does, drops that line (its action was reported nowhere and was done again by the standby).
    drop(audit::AuditLog::open(Some(&audit_a), "recovery", false).unwrap());
    assert_exact(&recall, &subject, cutoff, &before, &[&audit_a, &audit_b]);
    assert!(b.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_checkpoints_and_exits_within_the_grace_period_then_resumes_exactly() {
    let (parts, client, ns, _) = support::scenario("sigterm").await;
    let ns = ns.as_str();
    let (subject, cutoff, before) = setup(&client, ns).await;
    let audit_file = parts.file("sigterm-audit.jsonl");
    let log_file = parts.file("sigterm-operator.log");
    let mut operator = Operator::start(ns, &audit_file, &log_file);
    create_recall(&client, ns, cutoff).await;
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    cluster::wait_for(&recalls, "breach", Duration::from_secs(120), |r| invalidated(r) >= USERS as i64 / 3).await.unwrap();

    // The kubelet's default grace period is 30 s.
    let exit = operator.terminate(Duration::from_secs(30)).unwrap_or_else(|| panic!("still running 30 s after SIGTERM\n{}", operator.log()));
    assert!(exit.success(), "a clean exit after SIGTERM: {exit}\n{}", operator.log());
    let log = operator.log();
    assert!(log.contains("stopping recalls at a checkpoint") && log.contains("\"stopped\""), "{log}");
    assert!(!log.contains("did not stop in time"), "{log}");
    // Log lines about the recall carry its name and a trace id.
    let run_line = log.lines().find(|l| l.contains("\"name\":\"recall_run\"")).unwrap_or_else(|| panic!("no recall log line:\n{log}"));
    let line: serde_json::Value = serde_json::from_str(run_line).unwrap();
    assert_eq!(line["span"]["recall"], format!("{ns}/breach"));
    assert_eq!(line["span"]["trace_id"].as_str().unwrap().len(), 32, "{line}");
    // What status says at exit is what was done: never more than the provider lost.
    let stopped = recalls.get("breach").await.unwrap();
    let done = invalidated(&stopped);
    assert!(done > 0 && done < USERS as i64, "stopped mid-recall ({done})");
    let lost_so_far: u64 = before.factors_before_cutoff.values().sum::<u64>() - subject.sim.provider.census(Some(cutoff)).factors_before_cutoff.values().sum::<u64>();
    let counted: u64 = stopped.status.as_ref().unwrap().counts.factors_revoked.values().sum::<i64>() as u64;
    assert_eq!(counted, lost_so_far, "status flushed at exit equals what the provider lost");
    assert!(matches!(audit::verify(&audit_file, &audit::ChainKey::default(), None).unwrap(), Verification::Intact { .. }));

    let _operator = Operator::start(ns, &audit_file, &log_file);
    let recall = cluster::wait_for(&recalls, "breach", Duration::from_secs(180), |r| phase(r) == RecallPhase::AwaitingReEnrollment)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(&log_file).unwrap_or_default()));
    assert_exact(&recall, &subject, cutoff, &before, &[&audit_file]);
}

/// An upgrade from an operator that kept its ledger in ConfigMaps, mid-recall: the new operator
/// stops the recall rather than list its users again as if untouched, says what to do, and after
/// `mfa-recall ledger import-configmaps` and a nudge of the spec the recall goes on where it
/// was, with its counts, and without a second request to the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recall_with_a_configmap_ledger_stops_and_resumes_after_import() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
    use mfa_recall::api::{LedgerPart, RecallLedgerSegment};

    const SEEDED: u32 = 40;
    let (parts, client, ns, _) = support::scenario("upgrade").await;
    let ns = ns.as_str();
    let subject = SimSubject::start("okta").await.unwrap();
    subject.sim.provider.seed(&Seed { users: SEEDED, ..Seed::default() });
    cluster::create_backend(&client, ns, "corp-okta", subject.backend_spec("corp-okta-credentials", BackendLimits::default()), &subject.secret).await.unwrap();
    let (audit_file, log_file) = (parts.file("upgrade-audit.jsonl"), parts.file("upgrade-operator.log"));
    let mut operator = Operator::start(ns, &audit_file, &log_file);
    cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "upgrade"},
        "spec": {"reason": "INC-11 upgraded mid-recall", "backends": ["corp-okta"], "scope": {"allUsers": true}, "reEnrollment": {"gracePeriod": "1h", "checkInterval": "10s"}}
    }))
    .await
    .unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let recall = cluster::wait_for(&recalls, "upgrade", Duration::from_secs(60), |r| phase(r) == RecallPhase::AwaitingReEnrollment).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let counted = recall.status.unwrap().counts;
    assert_eq!(counted.invalidated, SEEDED as i64);
    operator.kill();

    // The ledger as an earlier operator left it: the same data, in ConfigMaps of the same names.
    let uid = recall.metadata.uid.unwrap();
    let segments: Api<RecallLedgerSegment> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let written = segments.list(&ListParams::default().labels(&format!("{}={uid}", mfa_recall::ledger::RECALL_UID_LABEL))).await.unwrap();
    assert!(!written.items.is_empty());
    for segment in &written.items {
        let key = if segment.spec.part == LedgerPart::Users { "segment.json.gz" } else { "outcomes.json.gz" };
        let legacy = ConfigMap {
            metadata: kube::api::ObjectMeta { name: segment.metadata.name.clone(), labels: segment.metadata.labels.clone(), ..Default::default() },
            binary_data: Some([(key.to_string(), segment.spec.data.clone())].into()),
            ..Default::default()
        };
        config_maps.create(&PostParams::default(), &legacy).await.unwrap();
        segments.delete(segment.metadata.name.as_deref().unwrap(), &DeleteParams::default()).await.unwrap();
    }
    subject.sim.record_requests();

    let mut operator = Operator::start(ns, &audit_file, &log_file);
    let failed = cluster::wait_for(&recalls, "upgrade", Duration::from_secs(60), |r| phase(r) == RecallPhase::Failed).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let ready = failed.status.clone().unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "LedgerShrunk", "{}", ready.message);
    assert_eq!(failed.status.as_ref().unwrap().counts.targeted, SEEDED as i64, "the counts published before stay: they are what the provider lost");
    assert!(ready.message.contains(&format!("holds 0 users where this recall's status counted {SEEDED}")) && ready.message.contains("docs/upgrading.md"), "{}", ready.message);

    let import = std::process::Command::new(env!("CARGO_BIN_EXE_mfa-recall"))
        .args(["ledger", "import-configmaps", "upgrade", "--namespace", ns, "--key-file"])
        .arg(support::ledger_key_file(audit_file.parent().unwrap()))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&import.stdout);
    assert!(import.status.success(), "{said}{}", String::from_utf8_lossy(&import.stderr));
    assert!(said.contains(&format!("corp-okta: {SEEDED} users in ")) && said.contains(&format!("(status counted {SEEDED})")), "{said}");
    // Imported once: a second import would mix two ledgers.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_mfa-recall"))
        .args(["ledger", "import-configmaps", "upgrade", "--namespace", ns, "--key-file"])
        .arg(support::ledger_key_file(audit_file.parent().unwrap()))
        .output()
        .unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already has a signed ledger"), "{again:?}");

    // A failed recall waits for its spec to change: suspended and released, it goes on.
    let nudge = |suspend: bool| json!({"spec": {"suspend": suspend}});
    recalls.patch("upgrade", &PatchParams::default(), &Patch::Merge(nudge(true))).await.unwrap();
    cluster::wait_for(&recalls, "upgrade", Duration::from_secs(60), |r| phase(r) == RecallPhase::Suspended).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    recalls.patch("upgrade", &PatchParams::default(), &Patch::Merge(nudge(false))).await.unwrap();
    let resumed = cluster::wait_for(&recalls, "upgrade", Duration::from_secs(60), |r| phase(r) == RecallPhase::AwaitingReEnrollment).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let counts = resumed.status.unwrap().counts;
    assert_eq!((counts.targeted, counts.invalidated, counts.pending, &counts.factors_revoked, counts.sessions_revoked), (counted.targeted, counted.invalidated, counted.pending, &counted.factors_revoked, counted.sessions_revoked));
    let writes: Vec<_> = subject.sim.recorded_requests().into_iter().filter(|r| r.method != "GET").collect();
    assert!(writes.is_empty(), "nothing was revoked a second time: {writes:?}");
    operator.kill();
}

/// The trail a recall's ledger marks, cut while the operator was down (the same file: its first
/// line is still there): the resumed recall stops and says why, rather than act again on users
/// whose finished steps it can no longer see.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trail_cut_while_the_operator_was_down_stops_the_recall() {
    let (parts, client, ns, _) = support::scenario("trailcut").await;
    let ns = ns.as_str();
    let (subject, cutoff, _) = setup(&client, ns).await;
    let (audit_file, log_file) = (parts.file("trailcut-audit.jsonl"), parts.file("trailcut-operator.log"));
    let instance = format!("op-{ns}");
    let mut operator = Operator::start_with(ns, &audit_file, &log_file, &instance, &[]);
    create_recall(&client, ns, cutoff).await;
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    cluster::wait_for(&recalls, "breach", Duration::from_secs(60), |r| invalidated(r) >= 100).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    operator.kill();
    let at_kill = recalls.get("breach").await.unwrap().status.unwrap().counts;
    assert!(at_kill.invalidated < USERS as i64 - 50, "killed too late to prove anything ({} done)", at_kill.invalidated);
    let text = std::fs::read_to_string(&audit_file).unwrap();
    std::fs::write(&audit_file, text.lines().next().unwrap().to_string() + "\n").unwrap();
    subject.sim.record_requests();

    let operator = Operator::start_with(ns, &audit_file, &log_file, &instance, &[]);
    let failed = cluster::wait_for(&recalls, "breach", Duration::from_secs(60), |r| phase(r) == RecallPhase::Failed).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let status = failed.status.unwrap();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "AuditTrailLost", "{}", ready.message);
    assert!(ready.message.contains("this trail") && ready.message.contains("restored"), "{}", ready.message);
    assert_eq!(status.counts.invalidated, at_kill.invalidated, "counts stay as published");
    let writes: Vec<_> = subject.sim.recorded_requests().into_iter().filter(|r| r.method != "GET").collect();
    assert!(writes.is_empty(), "nothing was sent again unaudited: {writes:?}");
}
