//! MfaRecallPolicy on a real kube-apiserver: a real Prometheus Alertmanager fires an alert into the
//! operator's receiver, which starts exactly one recall (of the users the alert names) and then
//! none for the same alert within the cooldown, nothing for a resolved alert or one the condition
//! does not match; signed webhooks that are forged, stale, replayed or too large create nothing.

mod support;

use std::time::Duration;

use hmac::Mac;
use idp_sim::{Seed, username};
use kube::Api;
use kube::api::{ListParams, PostParams};
use mfa_recall::api::{BackendLimits, MfaRecall, MfaRecallPolicy};
use serde_json::json;
use support::{Alertmanager, Operator, audit_lines};
use testkit::cluster;
use testkit::sims::{SimBackend, SimSubject};

/// Tokens carry the canary marker: the sweep after the suite finds them wherever they leaked.
const TOKEN: &str = "mfacanary-alertmanager-bearer-token-0123456789";
const HMAC_KEY: &str = "mfacanary-webhook-hmac-key-0123456789abcdef";

/// A file removed when dropped.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn secret(client: &kube::Client, ns: &str, name: &str, key: &str, value: &str) {
    let secret = serde_json::from_value(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name }, "stringData": { key: value } })).unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &secret).await.unwrap();
}

async fn policy(client: &kube::Client, ns: &str, spec: serde_json::Value) -> MfaRecallPolicy {
    let policy: MfaRecallPolicy = serde_json::from_value(json!({ "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecallPolicy", "metadata": { "name": "leak" }, "spec": spec })).unwrap();
    let policies: Api<MfaRecallPolicy> = Api::namespaced(client.clone(), ns);
    policies.create(&PostParams::default(), &policy).await.unwrap();
    cluster::wait_for(&policies, "leak", Duration::from_secs(60), |p| {
        p.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await
    .unwrap()
}

async fn recalls_of_policy(client: &kube::Client, ns: &str) -> Vec<MfaRecall> {
    Api::<MfaRecall>::namespaced(client.clone(), ns).list(&ListParams::default().labels("mfarecall.io/policy=leak")).await.unwrap().items
}

fn outcome(policy: &MfaRecallPolicy, name: &str) -> i64 {
    policy.status.as_ref().and_then(|s| s.outcomes.get(name).copied()).unwrap_or(0)
}

async fn backend(client: &kube::Client, ns: &str) -> SimSubject {
    let subject = SimSubject::start("okta").await.unwrap();
    subject.sim.provider.seed(&Seed { users: 12, ..Seed::default() });
    let limits = BackendLimits { requests_per_second: 500, max_concurrency: 8, ..Default::default() };
    cluster::create_backend(client, ns, "corp-okta", subject.backend_spec("corp-okta-credentials", limits), &subject.secret).await.unwrap();
    subject
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_firing_alert_from_alertmanager_starts_one_recall_of_the_users_it_names() {
    let (parts, client, ns, _) = support::scenario("signal-am").await;
    let ns = ns.as_str();
    let _okta = backend(&client, ns).await;
    secret(&client, ns, "am-token", "token", TOKEN).await;
    let (signals_addr, metrics_addr) = (support::free_addr(), support::free_addr());
    let audit_file = parts.file("signal-am-audit.jsonl");
    let operator = Operator::start_with(ns, &audit_file, &parts.file("signal-am-operator.log"), &format!("op-{ns}"), &["--signals-addr", &signals_addr, "--metrics-addr", &metrics_addr]);
    let armed = policy(&client, ns, json!({
        "signals": { "alertmanager": { "tokenSecretRef": { "name": "am-token" } } },
        "condition": "signal.labels.severity == \"critical\"",
        "cooldown": "1h",
        "template": { "reason": "credential leak runbook RB-12", "backends": ["corp-okta"], "scope": { "usersFromSignal": true },
                      "reEnrollment": { "checkInterval": "10s", "sweepPerCheck": 0 } }
    }))
    .await;
    let endpoint = format!("/v1/signals/{ns}/leak/alertmanager");
    assert_eq!(armed.status.as_ref().unwrap().endpoints, [endpoint.clone()]);

    // Alertmanager sends the firing group at once, then again every few seconds while it fires.
    // Alertmanager's copy of the token is kept outside the parts folder, which the canary sweep
    // searches for credentials that leaked from the operator; removed when the test ends.
    let token_file = TempFile(std::env::temp_dir().join(support::unique("mfa-recall-am-token")));
    std::fs::write(&token_file.0, TOKEN).unwrap();
    let alertmanager = Alertmanager::start(&parts.work_dir, &format!(
        "route: {{receiver: mfa-recall, group_by: [alertname], group_wait: 0s, group_interval: 1s, repeat_interval: 2s}}\n\
         receivers:\n- name: mfa-recall\n  webhook_configs:\n  - url: http://{signals_addr}{endpoint}\n    send_resolved: true\n    http_config: {{authorization: {{type: Bearer, credentials_file: {}}}}}\n",
        token_file.0.display()
    ))
    .await;
    let (alice, bob) = (username(3), username(5));
    let starts = jiff::Timestamp::now();
    let leak = json!([{ "labels": { "alertname": "CredentialLeak", "severity": "critical", "user": format!("{} , {bob}", alice.to_uppercase()) },
                        "annotations": { "summary": "credentials in a paste-site dump" }, "startsAt": starts.to_string() }]);
    alertmanager.fire(leak.clone()).await;
    // One that does not match the condition, in a group of its own.
    alertmanager.fire(json!([{ "labels": { "alertname": "OddLogin", "severity": "warning", "user": username(7) }, "startsAt": starts.to_string() }])).await;

    let policies: Api<MfaRecallPolicy> = Api::namespaced(client.clone(), ns);
    let repeated = cluster::wait_for(&policies, "leak", Duration::from_secs(60), |p| outcome(p, "duplicate") >= 2 && outcome(p, "conditionFalse") >= 1)
        .await
        .unwrap_or_else(|e| panic!("{e}\noperator:\n{}\nalertmanager:\n{}", operator.log(), alertmanager.log()));
    let created = recalls_of_policy(&client, ns).await;
    assert_eq!(created.len(), 1, "one incident, one recall: {:?}", repeated.status);
    let recall = &created[0];
    assert_eq!(recall.spec.scope.users, [alice.to_uppercase(), bob.clone()], "the users the alert names, as it names them");
    assert!(recall.spec.reason.starts_with("credential leak runbook RB-12 (from alertmanager signal "), "{}", recall.spec.reason);
    let status = repeated.status.as_ref().unwrap();
    assert_eq!((status.recalls_created, status.outcomes.get("created").copied()), (1, Some(1)));
    assert_eq!(status.last_recall.as_deref(), Some(recall.metadata.name.as_deref().unwrap()));
    assert!(status.last_signals.iter().any(|s| s.outcome == "duplicate" && s.recall == recall.metadata.name), "{:?}", status.last_signals);

    // The recall it started runs like any other.
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let name = recall.metadata.name.clone().unwrap();
    let done = cluster::wait_for(&recalls, &name, Duration::from_secs(60), |r| r.status.as_ref().is_some_and(|s| s.counts.invalidated == 2)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    assert_eq!(done.status.unwrap().counts.targeted, 2);

    // Resolved: Alertmanager says so, and nothing starts.
    let ended = jiff::Timestamp::now();
    let mut resolved = leak.clone();
    resolved[0]["endsAt"] = json!(ended.to_string());
    alertmanager.fire(resolved).await;
    cluster::wait_for(&policies, "leak", Duration::from_secs(60), |p| outcome(p, "resolved") >= 1).await.unwrap_or_else(|e| panic!("{e}\n{}", alertmanager.log()));
    assert_eq!(recalls_of_policy(&client, ns).await.len(), 1);

    // Without the token, or with another, the receiver refuses before reading the body.
    let http = reqwest::Client::new();
    let url = format!("http://{signals_addr}{endpoint}");
    for auth in [None, Some("Bearer not-the-token-but-long-enough-to-look-real")] {
        let mut request = http.post(&url).body(leak.to_string());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        assert_eq!(request.send().await.unwrap().status().as_u16(), 401);
    }
    let wrong_policy = http.post(format!("http://{signals_addr}/v1/signals/{ns}/nothing/alertmanager")).bearer_auth(TOKEN).body("{}").send().await.unwrap();
    assert_eq!(wrong_policy.status().as_u16(), 404);
    cluster::wait_for(&policies, "leak", Duration::from_secs(30), |p| outcome(p, "unauthenticated") == 2).await.unwrap();
    let (_, metrics) = support::get(&format!("http://{metrics_addr}/metrics")).await;
    assert!(metrics.contains("mfa_recall_signals_total{source=\"alertmanager\",outcome=\"unauthenticated\"} 2"), "{metrics}");
    assert!(metrics.contains("mfa_recall_signals_total{source=\"alertmanager\",outcome=\"created\"} 1"), "{metrics}");
    assert_eq!(recalls_of_policy(&client, ns).await.len(), 1);

    // The trail says which policy started the recall, from which signal.
    let trail = audit_lines(&audit_file);
    let started: Vec<_> = trail.iter().filter(|l| l["action"] == "policy.recall").collect();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["recall"], format!("{ns}/{name}"));
    assert!(started[0]["detail"].as_str().unwrap().contains(&format!("MfaRecallPolicy {ns}/leak from alertmanager signal")));
    assert!(!operator.log().contains(TOKEN) && !std::fs::read_to_string(&audit_file).unwrap().contains(TOKEN));
}

fn signed(key: &str, stamp: i64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{stamp}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_webhook_starts_a_recall_and_forged_stale_replayed_or_oversized_ones_nothing() {
    let (parts, client, ns, _) = support::scenario("signal-hook").await;
    let ns = ns.as_str();
    let _okta = backend(&client, ns).await;
    secret(&client, ns, "hook-key", "hmac-key", HMAC_KEY).await;
    let signals_addr = support::free_addr();
    let operator = Operator::start_with(ns, &parts.file("signal-hook-audit.jsonl"), &parts.file("signal-hook-operator.log"), &format!("op-{ns}"), &["--signals-addr", &signals_addr]);
    policy(&client, ns, json!({
        "signals": { "webhook": { "secretRef": { "name": "hook-key" } } },
        "dedupeBy": "signal.labels.case",
        "maxRecallsPerHour": 2,
        "template": { "reason": "SIEM rule 44", "backends": ["corp-okta"], "scope": { "usersFromSignal": true, "exclude": { "users": [username(2)] } } }
    }))
    .await;
    let url = format!("http://{signals_addr}/v1/signals/{ns}/leak/webhook");
    let http = reqwest::Client::new();
    let send = async |stamp: i64, body: &str, signature: String| -> (u16, serde_json::Value) {
        let response = http.post(&url).header("x-timestamp", stamp.to_string()).header("x-signature", signature).body(body.to_string()).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or_default())
    };
    let now = jiff::Timestamp::now().as_second();
    let body = json!({ "id": "siem-1", "labels": { "case": "C-1" }, "subjects": [username(1), username(2)], "summary": "impossible travel then MFA reset" }).to_string();

    let forged = send(now, &body, signed("mfacanary-some-other-key-0123456789abcdef", now, &body)).await;
    assert_eq!(forged.0, 401, "{forged:?}");
    let stale = send(now - 600, &body, signed(HMAC_KEY, now - 600, &body)).await;
    assert_eq!(stale.0, 401, "{stale:?}");
    let huge = format!("{{\"id\":\"x\",\"summary\":\"{}\"}}", "a".repeat(2 << 20));
    assert_eq!(send(now, &huge, signed(HMAC_KEY, now, &huge)).await.0, 413);
    let malformed = "{\"subjects\": \"one\"}";
    assert_eq!(send(now, malformed, signed(HMAC_KEY, now, malformed)).await.0, 400);
    assert!(recalls_of_policy(&client, ns).await.is_empty(), "nothing created by a refused signal");

    let (status, answer) = send(now, &body, signed(HMAC_KEY, now, &body)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["signals"][0]["outcome"], "created");
    let replayed = send(now, &body, signed(HMAC_KEY, now, &body)).await;
    assert_eq!(replayed.0, 401, "the same signed request again: {replayed:?}");
    // Another report of the same case, naming a user its recall named, is the same incident.
    let again = json!({ "id": "siem-2", "labels": { "case": "C-1" }, "subjects": [username(1).to_uppercase()] }).to_string();
    let (status, answer) = send(now, &again, signed(HMAC_KEY, now, &again)).await;
    assert_eq!((status, &answer["signals"][0]["outcome"]), (200, &json!("duplicate")));

    let created = recalls_of_policy(&client, ns).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].spec.scope.users, [username(1), username(2)]);
    assert_eq!(created[0].spec.scope.exclude.users, [username(2)], "the template's exclusions hold whatever the signal names");

    // Two recalls an hour at most.
    for case in ["C-2", "C-3"] {
        let next = json!({ "labels": { "case": case }, "subjects": [username(6)] }).to_string();
        let (_, answer) = send(now, &next, signed(HMAC_KEY, now, &next)).await;
        let expected = if case == "C-2" { "created" } else { "capReached" };
        assert_eq!(answer["signals"][0]["outcome"], expected, "{case}: {answer}");
    }
    assert_eq!(recalls_of_policy(&client, ns).await.len(), 2);
    let policies: Api<MfaRecallPolicy> = Api::namespaced(client.clone(), ns);
    let seen = cluster::wait_for(&policies, "leak", Duration::from_secs(30), |p| outcome(p, "capReached") == 1).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let outcomes = seen.status.unwrap().outcomes;
    for (name, n) in [("badSignature", 1), ("stale", 1), ("tooLarge", 1), ("malformed", 1), ("replayed", 1), ("created", 2), ("duplicate", 1)] {
        assert_eq!(outcomes.get(name).copied(), Some(n), "{name}: {outcomes:?}");
    }
}

/// A policy kept in git: applied with `kubectl apply --server-side` under the tool's own field
/// manager, re-applied on every sync without a conflict while the operator writes its status;
/// its Argo CD health from the status the operator wrote, Healthy when armed and Degraded with
/// the reason when its condition is not valid CEL (and then it takes no signal).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_applied_by_a_gitops_tool_is_never_fought_over_and_reports_its_health() {
    let (parts, client, ns, _) = support::scenario("signal-gitops").await;
    let ns = ns.as_str();
    secret(&client, ns, "hook-key", "hmac-key", HMAC_KEY).await;
    let signals_addr = support::free_addr();
    let operator = Operator::start_with(ns, &parts.file("signal-gitops-audit.jsonl"), &parts.file("signal-gitops-operator.log"), &format!("op-{ns}"), &["--signals-addr", &signals_addr]);
    let kubectl = std::env::var("MFA_RECALL_KUBECTL").expect("MFA_RECALL_KUBECTL: the real kubectl, from hack/parts.sh (source the env of hack/localparts.sh)");
    let apply = |name: &str, condition: &str| {
        let manifest = json!({ "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecallPolicy", "metadata": { "name": name, "namespace": ns },
            "spec": { "signals": { "webhook": { "secretRef": { "name": "hook-key" } } }, "condition": condition,
                      "template": { "reason": "SIEM rule 44", "backends": ["corp-okta"], "scope": { "usersFromSignal": true } } } });
        let mut child = std::process::Command::new(&kubectl)
            .args(["apply", "--server-side", "--field-manager=argocd-controller", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(manifest.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "kubectl apply --server-side: {}", String::from_utf8_lossy(&out.stderr));
    };
    apply("leak", "signal.labels.severity == \"critical\"");
    apply("broken", "signal.labels.severity ==");
    let policies: Api<MfaRecallPolicy> = Api::namespaced(client.clone(), ns);
    let has_ready = |p: &MfaRecallPolicy| p.status.as_ref().is_some_and(|s| s.observed_generation == p.metadata.generation && s.conditions.iter().any(|c| c.type_ == "Ready"));
    let broken = cluster::wait_for(&policies, "broken", Duration::from_secs(60), has_ready).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let (health, said) = support::argocd_health(&serde_json::to_value(&broken).unwrap());
    assert_eq!(health, "Degraded");
    assert!(said.contains("spec.condition is not valid CEL"), "{said}");
    let refused = reqwest::Client::new().post(format!("http://{signals_addr}/v1/signals/{ns}/broken/webhook")).body("{}").send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 503, "a policy that is not ready takes no signal, and the sender is told to retry");

    // A signal the condition does not match, so status changes after the first write.
    let now = jiff::Timestamp::now().as_second();
    let body = json!({ "labels": { "severity": "low" }, "subjects": ["x"] }).to_string();
    let sent = reqwest::Client::new().post(format!("http://{signals_addr}/v1/signals/{ns}/leak/webhook")).header("x-timestamp", now.to_string()).header("x-signature", signed(HMAC_KEY, now, &body)).body(body).send().await.unwrap();
    assert_eq!(sent.status().as_u16(), 200);
    let heard = cluster::wait_for(&policies, "leak", Duration::from_secs(30), |p| has_ready(p) && outcome(p, "conditionFalse") == 1).await.unwrap();
    let (health, said) = support::argocd_health(&serde_json::to_value(&heard).unwrap());
    assert_eq!((health.as_str(), said.as_str()), ("Healthy", "1 signals, 0 recalls started"));
    for entry in heard.metadata.managed_fields.clone().unwrap_or_default() {
        let fields = serde_json::to_value(&entry.fields_v1).unwrap();
        if entry.manager.as_deref() == Some("argocd-controller") {
            assert!(fields["f:spec"].is_object(), "the tool owns the spec: {fields}");
        } else {
            assert!(fields.get("f:spec").is_none(), "{:?} owns part of the spec: {fields}", entry.manager);
        }
    }
    // The tool syncs again: no conflict, nothing changed, and the operator's status stays.
    apply("leak", "signal.labels.severity == \"critical\"");
    let again = policies.get("leak").await.unwrap();
    assert_eq!(again.metadata.generation, heard.metadata.generation);
    assert_eq!(again.status.map(|s| s.signals), Some(1));
}

/// A policy over every user: the recall it starts is planned and waits for approval; the
/// operator, named as its requester, cannot approve it (nor can anyone acting in its name); a
/// second person can, and the recall then does exactly what its plan counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_over_every_user_waits_for_an_approval_its_own_identity_cannot_give() {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let (parts, client, ns, _) = support::scenario("signal-approval").await;
    let ns = ns.as_str();
    let okta = backend(&client, ns).await;
    secret(&client, ns, "hook-key", "hmac-key", HMAC_KEY).await;
    let admission = support::AdmissionPolicy::install(&client, include_str!("../crds/mfarecall-requester.yaml")).await;
    support::grant(&client, ns, "recall-approver", json!([{ "apiGroups": ["mfarecall.io"], "resources": ["mfarecalls"], "verbs": ["get", "patch"] }]), &["bob"]).await;
    // Active once it refuses a recall asked for in someone else's name.
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    support::refused_once_active("the requester admission policy", |attempt| {
        let probe: MfaRecall = serde_json::from_value(json!({ "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": { "name": format!("probe-{attempt}") },
            "spec": { "reason": "probe", "backends": ["nowhere"], "scope": { "users": ["x"] }, "suspend": true, "approval": { "requestedBy": "someone-else" } } })).unwrap();
        let recalls = recalls.clone();
        async move { recalls.create(&PostParams::default(), &probe).await }
    })
    .await;

    let signals_addr = support::free_addr();
    let audit_file = parts.file("signal-approval-audit.jsonl");
    let operator = Operator::start_with(ns, &audit_file, &parts.file("signal-approval-operator.log"), &format!("op-{ns}"), &["--signals-addr", &signals_addr]);
    policy(&client, ns, json!({
        "signals": { "webhook": { "secretRef": { "name": "hook-key" } } },
        "template": { "reason": "tenant-wide credential stuffing", "backends": ["corp-okta"], "scope": { "allUsers": true, "exclude": { "users": [username(2)] } },
                      "requireApproval": {}, "reEnrollment": { "checkInterval": "10s", "sweepPerCheck": 0 } }
    }))
    .await;
    let before = okta.sim.provider.census(None);
    let now = jiff::Timestamp::now().as_second();
    let body = json!({ "id": "stuffing-1", "summary": "credential stuffing from a botnet" }).to_string();
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{signals_addr}/v1/signals/{ns}/leak/webhook"))
        .header("x-timestamp", now.to_string())
        .header("x-signature", signed(HMAC_KEY, now, &body))
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["signals"][0]["outcome"], "created", "{answer}\n{}", operator.log());
    let name = answer["signals"][0]["recall"].as_str().unwrap().to_string();
    let phase_is = |phase: mfa_recall::api::RecallPhase| move |r: &MfaRecall| r.status.as_ref().is_some_and(|s| s.phase == phase);
    let waiting = cluster::wait_for(&recalls, &name, Duration::from_secs(60), phase_is(mfa_recall::api::RecallPhase::AwaitingApproval)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let operator_name = Api::<SelfSubjectReview>::all(client.clone()).create(&PostParams::default(), &SelfSubjectReview::default()).await.unwrap().status.unwrap().user_info.unwrap().username.unwrap();
    assert_eq!(waiting.spec.approval.as_ref().map(|a| a.requested_by.clone()), Some(operator_name.clone()), "the operator asks in its own name");
    let status = waiting.status.unwrap();
    let plan = status.plan.clone().expect("the plan it waits with");
    assert_eq!((plan.users, status.counts.excluded, status.counts.invalidated), (11, 1, 0));
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("planned: 11 users") && ready.message.contains("waiting for a second person"), "{}", ready.message);
    assert_eq!(okta.sim.provider.census(None), before, "nothing is revoked before approval");
    // Suspended and resumed, it waits for approval again: a pause is no way around it.
    let suspend = |on: bool| kube::api::Patch::Merge(json!({ "spec": { "suspend": on } }));
    recalls.patch(&name, &kube::api::PatchParams::default(), &suspend(true)).await.unwrap();
    cluster::wait_for(&recalls, &name, Duration::from_secs(60), phase_is(mfa_recall::api::RecallPhase::Suspended)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    recalls.patch(&name, &kube::api::PatchParams::default(), &suspend(false)).await.unwrap();
    cluster::wait_for(&recalls, &name, Duration::from_secs(60), phase_is(mfa_recall::api::RecallPhase::AwaitingApproval)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    assert_eq!(okta.sim.provider.census(None), before, "still nothing revoked");

    // The policy's identity cannot approve what it asked for.
    let approve = |by: &str| kube::api::Patch::Merge(json!({ "spec": { "approval": { "approvedBy": by } } }));
    let error = recalls.patch(&name, &kube::api::PatchParams::default(), &approve(&operator_name)).await.unwrap_err().to_string();
    assert!(error.contains("you requested this recall, so you cannot approve it"), "{error}");
    let as_bob = Api::<MfaRecall>::namespaced(support::acting_as("bob").await, ns);
    as_bob.patch(&name, &kube::api::PatchParams::default(), &approve("bob")).await.expect("a second person approves");
    let done = cluster::wait_for(&recalls, &name, Duration::from_secs(120), phase_is(mfa_recall::api::RecallPhase::AwaitingReEnrollment)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let counts = done.status.unwrap().counts;
    assert_eq!((counts.invalidated, counts.excluded, counts.failed), (plan.users, 1, 0));
    assert_eq!((counts.factors_revoked.clone(), counts.sessions_revoked), (plan.factors.clone(), plan.sessions), "exactly what the plan counted");
    let approved: Vec<_> = audit_lines(&audit_file).into_iter().filter(|l| l["action"] == "recall.approve").collect();
    assert_eq!(approved.len(), 1);
    assert!(approved[0]["detail"].as_str().unwrap().contains(&format!("approved by bob (requested by {operator_name})")), "{}", approved[0]);
    admission.remove().await;
}

/// A Shared Signals transmitter (the test kit's, signing with a real ES256 key): a RISC
/// credential-compromise for two users, in one poll, recalls those two in one recall and is
/// acknowledged; a forged SET, one for another audience, one of another issuer and one not typed
/// as a SET are refused (reported in setErrs when polled, 400 with the RFC 8935 error when
/// pushed) and create nothing; a pushed one naming a user the recall missed starts a follow-up
/// of that user alone; the transmitter's stream verification is answered and starts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_signals_for_two_users_recall_those_two_and_forged_sets_nothing() {
    let (parts, client, ns, _) = support::scenario("signal-ssf").await;
    let ns = ns.as_str();
    let _okta = backend(&client, ns).await;
    const PUSH: &str = "Bearer mfacanary-ssf-push-authorization-0123456789";
    const POLL: &str = "Bearer mfacanary-ssf-poll-authorization-0123456789";
    secret(&client, ns, "ssf-push", "authorization", PUSH).await;
    secret(&client, ns, "ssf-poll", "authorization", POLL).await;
    let transmitter = testkit::ssf::Transmitter::start(POLL).await;
    let audience = format!("https://mfa-recall.example/{ns}");
    let signals_addr = support::free_addr();
    let audit_file = parts.file("signal-ssf-audit.jsonl");
    let operator = Operator::start_with(ns, &audit_file, &parts.file("signal-ssf-operator.log"), &format!("op-{ns}"), &["--signals-addr", &signals_addr]);
    let policies: Api<MfaRecallPolicy> = Api::namespaced(client.clone(), ns);
    let armed = policy(&client, ns, json!({
        "signals": { "sharedSignals": { "issuer": transmitter.issuer, "audience": audience,
                                        "push": { "authorizationSecretRef": { "name": "ssf-push" } },
                                        "poll": { "endpoint": format!("{}/poll", transmitter.issuer), "authorizationSecretRef": { "name": "ssf-poll" }, "interval": "5s" } } },
        "condition": "signal.labels.event == \"credential-compromise\"",
        "dedupeBy": "signal.labels.event",
        "template": { "reason": "RISC credential compromise", "backends": ["corp-okta"], "scope": { "usersFromSignal": true } }
    }))
    .await;
    let push_url = format!("http://{signals_addr}/v1/signals/{ns}/leak/ssf");
    assert_eq!(armed.status.unwrap().endpoints, [format!("/v1/signals/{ns}/leak/ssf")]);

    let email = |i: u32| json!({ "format": "email", "email": format!("{}@example.com", username(i)) });
    let compromise = json!({ "credential_type": "password" });
    use testkit::ssf::{CREDENTIAL_COMPROMISE, SESSION_REVOKED, VERIFICATION};
    // One poll's answer: the two users, and four that must be refused.
    transmitter.queue("c-1", transmitter.set(&audience, "c-1", CREDENTIAL_COMPROMISE, compromise.clone(), email(1)));
    transmitter.queue("c-2", transmitter.set(&audience, "c-2", CREDENTIAL_COMPROMISE, compromise.clone(), email(2)));
    transmitter.queue("forged", transmitter.forged(&audience, "forged", CREDENTIAL_COMPROMISE, compromise.clone(), email(9)));
    transmitter.queue("elsewhere", transmitter.set("https://someone-else.example", "elsewhere", CREDENTIAL_COMPROMISE, compromise.clone(), email(9)));
    let stranger = transmitter.claims("https://evil.example", &audience, "stranger", CREDENTIAL_COMPROMISE, compromise.clone(), email(9));
    transmitter.queue("stranger", transmitter.signed("secevent+jwt", &stranger));
    let untyped = transmitter.claims(&transmitter.issuer, &audience, "untyped", CREDENTIAL_COMPROMISE, compromise.clone(), email(9));
    transmitter.queue("untyped", transmitter.signed("JWT", &untyped));
    support::eventually("the operator polls the transmitter, acknowledging two SETs and refusing four", || async { transmitter.acknowledged().1.len() == 4 && transmitter.acknowledged().0.len() == 2 }).await;
    let (acknowledged, refused) = transmitter.acknowledged();
    assert_eq!(acknowledged.iter().collect::<std::collections::BTreeSet<_>>(), ["c-1", "c-2"].iter().map(|s| s.to_string()).collect::<Vec<_>>().iter().collect());
    let errs: std::collections::BTreeMap<&str, &str> = refused.iter().map(|(jti, e)| (jti.as_str(), e["err"].as_str().unwrap())).collect();
    assert_eq!(errs, [("elsewhere", "invalid_audience"), ("forged", "invalid_key"), ("stranger", "invalid_issuer"), ("untyped", "invalid_request")].into());
    let created = recalls_of_policy(&client, ns).await;
    assert_eq!(created.len(), 1, "one recall of the two");
    assert_eq!(created[0].spec.scope.users, [format!("{}@example.com", username(1)), format!("{}@example.com", username(2))]);

    // Pushed: refused without the Authorization the stream was set up with, or forged.
    let forged = transmitter.forged(&audience, "p-forged", CREDENTIAL_COMPROMISE, compromise.clone(), email(9));
    let (status, body) = transmitter.push(&push_url, PUSH, &forged).await;
    assert_eq!((status, body["err"].as_str()), (400, Some("invalid_key")));
    let genuine = transmitter.set(&audience, "p-3", CREDENTIAL_COMPROMISE, compromise.clone(), email(3));
    let (status, body) = transmitter.push(&push_url, "Bearer not-it", &genuine).await;
    assert_eq!((status, body["err"].as_str()), (401, Some("authentication_failed")));
    // A stream verification, and an event the condition leaves alone: nothing starts.
    let verification = transmitter.set(&audience, "v-1", VERIFICATION, json!({ "state": "VGhpcyBpcyBhbiBleGFtcGxlIHN0YXRlIHZhbHVlLgo=" }), json!({ "format": "opaque", "id": "stream-1" }));
    assert_eq!(transmitter.push(&push_url, PUSH, &verification).await.0, 202);
    let revoked = transmitter.set(&audience, "s-1", SESSION_REVOKED, json!({}), email(4));
    assert_eq!(transmitter.push(&push_url, PUSH, &revoked).await.0, 202);
    assert_eq!(recalls_of_policy(&client, ns).await.len(), 1);
    // The same incident naming a user its recall missed: a follow-up of that user alone.
    assert_eq!(transmitter.push(&push_url, PUSH, &genuine).await.0, 202);
    let again = transmitter.set(&audience, "p-4", CREDENTIAL_COMPROMISE, compromise.clone(), email(1));
    assert_eq!(transmitter.push(&push_url, PUSH, &again).await.0, 202);
    let mut created = recalls_of_policy(&client, ns).await;
    created.sort_by_key(|r| r.metadata.creation_timestamp.clone().map(|t| t.0));
    assert_eq!(created.len(), 2, "user 1 again is a duplicate; user 3 is new");
    assert!(created.iter().any(|r| r.spec.scope.users == [format!("{}@example.com", username(3))]), "{:?}", created.iter().map(|r| &r.spec.scope.users).collect::<Vec<_>>());
    let seen = cluster::wait_for(&policies, "leak", Duration::from_secs(30), |p| outcome(p, "duplicate") == 1).await.unwrap();
    let outcomes = seen.status.unwrap().outcomes;
    for (name, n) in [("created", 2), ("merged", 1), ("badSignature", 2), ("wrongAudience", 1), ("unknownIssuer", 1), ("malformed", 1), ("unauthenticated", 1), ("verification", 1), ("conditionFalse", 1)] {
        assert_eq!(outcomes.get(name).copied(), Some(n), "{name}: {outcomes:?}");
    }
    assert!(!operator.log().contains("mfacanary-ssf"), "no authorization in the operator's log");
}

/// An Okta event hook, shaped as Okta's event hooks guide shows: the one-time verification is
/// echoed; a delivery without the hook's secret is refused; a user's report of suspicious
/// activity recalls that user, and an event the condition leaves alone starts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_okta_event_hook_is_verified_and_a_users_report_recalls_them() {
    let (parts, client, ns, _) = support::scenario("signal-okta").await;
    let ns = ns.as_str();
    let _okta = backend(&client, ns).await;
    const SECRET: &str = "mfacanary-okta-event-hook-secret-0123456789";
    secret(&client, ns, "okta-hook", "authorization", SECRET).await;
    let signals_addr = support::free_addr();
    let operator = Operator::start_with(ns, &parts.file("signal-okta-audit.jsonl"), &parts.file("signal-okta-operator.log"), &format!("op-{ns}"), &["--signals-addr", &signals_addr]);
    policy(&client, ns, json!({
        "signals": { "oktaEventHook": { "authorizationSecretRef": { "name": "okta-hook" } } },
        "condition": "signal.labels.eventType == \"user.account.report_suspicious_activity_by_enduser\"",
        "template": { "reason": "a user reported activity that was not theirs", "backends": ["corp-okta"], "scope": { "usersFromSignal": true } }
    }))
    .await;
    let url = format!("http://{signals_addr}/v1/signals/{ns}/leak/okta");
    let http = reqwest::Client::new();
    let verified: serde_json::Value = http.get(&url).header("x-okta-verification-challenge", "K7-challenge").send().await.unwrap().json().await.unwrap();
    assert_eq!(verified, json!({ "verification": "K7-challenge" }));
    let event = |uuid: &str, event_type: &str, user: &str| json!({
        "uuid": uuid, "published": jiff::Timestamp::now().to_string(), "eventType": event_type, "version": "0", "displayMessage": event_type, "severity": "WARN",
        "actor": { "id": "00u1", "type": "User", "alternateId": user, "displayName": user }, "client": { "ipAddress": "198.51.100.7" }, "outcome": { "result": "SUCCESS" }, "target": []
    });
    let delivery = json!({ "eventType": "com.okta.event_hook", "eventTypeVersion": "1.0", "cloudEventsVersion": "0.1", "source": "https://corp.okta.com/api/v1/eventHooks/who1", "eventId": "d-1",
        "eventTime": jiff::Timestamp::now().to_string(), "contentType": "application/json",
        "data": { "events": [event("e-1", "user.account.report_suspicious_activity_by_enduser", &username(5)), event("e-2", "user.session.start", &username(6))] } });
    let refused = http.post(&url).header("authorization", "mfacanary-not-the-secret-at-all-0123456789").json(&delivery).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert!(recalls_of_policy(&client, ns).await.is_empty());
    let taken: serde_json::Value = http.post(&url).header("authorization", SECRET).json(&delivery).send().await.unwrap().json().await.unwrap();
    assert_eq!((&taken["signals"][0]["outcome"], &taken["signals"][1]["outcome"]), (&json!("created"), &json!("conditionFalse")), "{taken}\n{}", operator.log());
    let created = recalls_of_policy(&client, ns).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].spec.scope.users, [username(5)]);
}
