//! `kubectl mfa-recall` (the kubectl-mfa_recall binary) on a real kube-apiserver with the operator
//! and a simulated Okta: plan, approve in another person's name, start, watch, report, and audit
//! verify, each as a person would run it, with their own kubeconfig.

mod support;

use std::process::Command;
use std::time::Duration;

use idp_sim::{Seed, username};
use kube::Api;
use mfa_recall::api::{BackendLimits, MfaRecall, RecallPhase};
use serde_json::json;
use support::Operator;
use testkit::cluster;
use testkit::sims::{SimBackend, SimSubject};

fn plugin(kubeconfig: Option<&std::path::Path>, args: &[&str]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubectl-mfa_recall"));
    command.args(args);
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    let out = command.output().expect("kubectl-mfa_recall runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_plans_another_approves_and_the_recall_is_watched_to_its_end() {
    let (parts, client, ns, _) = support::scenario("kubectl").await;
    let ns = ns.as_str();
    let subject = SimSubject::start("okta").await.unwrap();
    subject.sim.provider.seed(&Seed { users: 12, ..Seed::default() });
    let limits = BackendLimits { requests_per_second: 500, max_concurrency: 8, ..Default::default() };
    cluster::create_backend(&client, ns, "corp-okta", subject.backend_spec("corp-okta-credentials", limits), &subject.secret).await.unwrap();
    let audit_file = parts.file("kubectl-audit.jsonl");
    let operator = Operator::start(ns, &audit_file, &parts.file("kubectl-operator.log"));
    let before = subject.sim.provider.census(None);

    let (alice, bob) = (username(1), username(2));
    let (ok, said) = plugin(None, &["plan", "inc-77", "-n", ns, "--reason", "INC-77 phished", "--backend", "corp-okta", "--user", &alice, "--user", &bob.to_uppercase(), "--approval"]);
    assert!(ok, "{said}\n{}", operator.log());
    assert!(said.contains("created as a plan") && said.contains("plan: 2 users") && said.contains("Planned") && said.contains("once someone else has run `kubectl mfa-recall approve`"), "{said}");
    assert!(said.contains("corp-okta") && said.contains("0/2"), "a bar per backend: {said}");
    assert_eq!(subject.sim.provider.census(None), before, "a plan changes nothing");

    // Approved in another person's name: a kubeconfig that impersonates bob, with the right to patch recalls.
    support::grant(&client, ns, "approver", json!([{ "apiGroups": ["mfarecall.io"], "resources": ["mfarecalls"], "verbs": ["get", "patch"] }]), &["security-lead"]).await;
    let own = std::fs::read_to_string(std::env::var("KUBECONFIG").unwrap()).unwrap();
    let mut config: serde_json::Value = serde_json::to_value(serde_norway::from_str::<serde_norway::Value>(&own).unwrap()).unwrap();
    for user in config["users"].as_array_mut().unwrap() {
        user["user"]["as"] = json!("security-lead");
    }
    let lead = parts.file("kubectl-lead.kubeconfig");
    std::fs::write(&lead, serde_json::to_string(&config).unwrap()).unwrap();
    let (ok, said) = plugin(Some(&lead), &["approve", "inc-77", "-n", ns]);
    assert!(ok && said.contains("approved by security-lead"), "{said}");
    let (ok, said) = plugin(None, &["start", "inc-77", "-n", ns]);
    assert!(ok && said.contains("set to Execute"), "{said}");

    // Watched until every user is dealt with.
    let (ok, said) = plugin(None, &["watch", "inc-77", "-n", ns]);
    assert!(ok, "{said}\n{}", operator.log());
    assert!(said.contains("AwaitingReEnrollment") && said.contains("2/2"), "{said}");
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let done = cluster::wait_for(&recalls, "inc-77", Duration::from_secs(30), |r| r.status.as_ref().is_some_and(|s| s.phase == RecallPhase::AwaitingReEnrollment)).await.unwrap();
    assert_eq!(done.status.unwrap().counts.invalidated, 2);
    let (ok, said) = plugin(None, &["watch", "inc-77", "-n", ns, "--once"]);
    assert!(ok && said.contains("[##############################] 100%"), "{said}");

    // A plan started later: `start` runs exactly it.
    let (ok, said) = plugin(None, &["plan", "inc-78", "-n", ns, "--reason", "INC-78", "--backend", "corp-okta", "--user", &username(3)]);
    assert!(ok && said.contains("Planned") && said.contains("plan: 1 users"), "{said}");
    let (ok, said) = plugin(None, &["start", "inc-78", "-n", ns]);
    assert!(ok && said.contains("set to Execute"), "{said}");
    cluster::wait_for(&recalls, "inc-78", Duration::from_secs(60), |r| r.status.as_ref().is_some_and(|s| s.phase == RecallPhase::AwaitingReEnrollment)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));

    // Bad input says what to fix, and nothing is created.
    let (ok, said) = plugin(None, &["plan", "inc-79", "-n", ns, "--backend", "corp-okta", "--user", "x"]);
    assert!(!ok && said.contains("--reason is required"), "{said}");
    assert!(recalls.get_opt("inc-79").await.unwrap().is_none());

    // The report and the audit trail, as the operator's own commands give them.
    let (ok, said) = plugin(None, &["report", "inc-77", "-n", ns, "--format", "json", "--key-file", support::ledger_key_file(audit_file.parent().unwrap()).to_str().unwrap()]);
    assert!(ok && said.contains("corp-okta: 2 users; the rows add up to the counts in status"), "{said}");
    let (ok, said) = plugin(None, &["audit", "verify", audit_file.to_str().unwrap()]);
    assert!(ok && said.contains(": intact,"), "{said}");
}
