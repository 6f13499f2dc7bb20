//! The admission policy in crds/identitybackend-secret-access.yaml, on the real apiserver with two
//! users: only one who may `get` a Secret may name it in an IdentityBackend, on create and on
//! update (so nobody can point someone else's backend, and its Secret, at a server of theirs).

mod support;


use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt};
use mfa_recall::api::{IdentityBackend, MfaBypass};
use serde::Deserialize;
use serde_json::{Value, json};
use support::Parts;

const POLICY: &str = include_str!("../crds/identitybackend-secret-access.yaml");

fn policy_documents() -> Vec<Value> {
    serde_norway::Deserializer::from_str(POLICY).map(|d| serde_json::to_value(serde_norway::Value::deserialize(d).unwrap()).unwrap()).collect()
}

/// The policy lists the provider blocks by hand (CEL reads the object, not our enum): it must
/// find the Secret of every block the CRD has.
#[test]
fn the_policy_reads_the_secret_of_every_provider_block() {
    let crd = serde_json::to_value(IdentityBackend::crd()).unwrap();
    let blocks: Vec<String> = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["required"][0].as_str().unwrap().to_string())
        .collect();
    let expression = policy_documents()[0]["spec"]["variables"][0]["expression"].as_str().unwrap().to_string();
    for block in &blocks {
        assert!(expression.contains(&format!("has(object.spec.{block}) ? object.spec.{block}.credentialsSecretRef.name")), "{block} missing from {expression}");
    }
    assert_eq!(expression.matches("has(object.spec.").count(), blocks.len());
}

/// A client that acts as `user` (the admin's client impersonating them).
fn backend(name: &str, secret: &str, url: &str) -> IdentityBackend {
    serde_json::from_value(json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "IdentityBackend",
        "metadata": { "name": name },
        "spec": { "okta": { "url": url, "credentialsSecretRef": { "name": secret } } }
    }))
    .unwrap()
}

#[tokio::test]
async fn only_someone_who_may_get_a_secret_may_name_it_in_an_identity_backend() {
    let admin = Parts::from_env().client().await;
    let apply = PatchParams::apply("mfa-recall-tests").force();
    let admission = support::AdmissionPolicy::install(&admin, POLICY).await;

    let namespace = support::unique("admission");
    testkit::cluster::create_namespace(&admin, &namespace).await.unwrap();
    let secret = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "corp-okta" }, "stringData": { "api-token": "mfacanary-admission" } });
    Api::<Secret>::namespaced(admin.clone(), &namespace).patch("corp-okta", &apply, &Patch::Apply(secret)).await.unwrap();
    // Both may write IdentityBackends; only alice may read the Secret.
    support::grant(&admin, &namespace, "backend-author", json!([{ "apiGroups": ["mfarecall.io"], "resources": ["identitybackends"], "verbs": ["get", "create", "update", "patch"] }]), &["alice", "mallory"]).await;
    support::grant(&admin, &namespace, "okta-secret-reader", json!([{ "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["corp-okta"], "verbs": ["get"] }]), &["alice"]).await;

    let as_mallory = Api::<IdentityBackend>::namespaced(support::acting_as("mallory").await, &namespace);
    let as_alice = Api::<IdentityBackend>::namespaced(support::acting_as("alice").await, &namespace);
    let as_admin = Api::<IdentityBackend>::namespaced(admin.clone(), &namespace);
    // The apiserver takes up a new policy within a second or so: until mallory is refused, what
    // she created is removed and she tries again.
    let refused = support::refused_once_active("the Secret access admission policy", |attempt| {
        let (as_mallory, as_admin) = (as_mallory.clone(), as_admin.clone());
        async move {
            let made = as_mallory.create(&PostParams::default(), &backend(&format!("mallory-{attempt}"), "corp-okta", "https://collector.example.net")).await;
            if made.is_ok() {
                as_admin.delete(&format!("mallory-{attempt}"), &DeleteParams::default()).await.unwrap();
            }
            made
        }
    })
    .await;
    assert!(
        refused.contains(&format!("names Secret corp-okta, which you may not get in namespace {namespace}")),
        "the refusal says which Secret and why: {refused}"
    );
    assert!(!refused.contains("canary-admission"), "the refusal holds no secret");

    // alice may read it, so she may name it.
    as_alice.create(&PostParams::default(), &backend("alice-okta", "corp-okta", "https://corp.okta.com")).await.expect("alice may name a Secret she may read");
    // mallory may update IdentityBackends, but not point alice's at her server: the Secret it names is one she may not read.
    let mut moved = as_mallory.get("alice-okta").await.unwrap();
    if let mfa_recall::api::ProviderBlock::Okta(okta) = &mut moved.spec.provider {
        okta.url = "https://collector.example.net".into();
    }
    let error = as_mallory.replace("alice-okta", &PostParams::default(), &moved).await.unwrap_err().to_string();
    assert!(error.contains("names Secret corp-okta, which you may not get"), "{error}");
    assert_eq!(as_admin.get("alice-okta").await.unwrap().spec, backend("alice-okta", "corp-okta", "https://corp.okta.com").spec, "alice's backend is unchanged");

    admission.remove().await;
}

const CLEARANCES: &str = include_str!("../crds/mfarecall-requester.yaml");

/// The requester policy in crds/mfarecall-requester.yaml, on the real apiserver with two users: a
/// clearance of a quarantined user must name, as clearedBy, the person Kubernetes authenticated
/// the request with, and a clearance once made is never removed or edited; a recall under dual
/// control is asked for in one's own name and approved only by someone else, in theirs.
#[tokio::test]
async fn a_clearance_names_the_person_who_made_it_and_stays() {
    let admin = Parts::from_env().client().await;
    let admission = support::AdmissionPolicy::install(&admin, CLEARANCES).await;

    let namespace = support::unique("clearances");
    testkit::cluster::create_namespace(&admin, &namespace).await.unwrap();
    support::grant(&admin, &namespace, "recall-editor", json!([{ "apiGroups": ["mfarecall.io"], "resources": ["mfarecalls"], "verbs": ["get", "create", "update", "patch"] }]), &["alice", "mallory"]).await;
    let recall: mfa_recall::api::MfaRecall = serde_json::from_value(json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": { "name": "incident-42" },
        "spec": { "reason": "INC-42", "backends": ["okta"], "scope": { "users": ["User0001@Example.com"] }, "anomalies": { "action": "Quarantine" } }
    }))
    .unwrap();
    Api::<mfa_recall::api::MfaRecall>::namespaced(admin.clone(), &namespace).create(&PostParams::default(), &recall).await.unwrap();
    let as_alice = Api::<mfa_recall::api::MfaRecall>::namespaced(support::acting_as("alice").await, &namespace);
    let as_mallory = Api::<mfa_recall::api::MfaRecall>::namespaced(support::acting_as("mallory").await, &namespace);
    let clear = |clearances: Value| Patch::Merge(json!({ "spec": { "clearances": clearances } }));

    // The apiserver takes up a new policy within a second or so: mallory creates throwaway recalls
    // that clear a user in alice's name until she is refused.
    let in_alices_name = json!([{ "user": "user0001@example.com", "clearedBy": "alice", "note": "it was her" }]);
    let refused = support::refused_once_active("the requester admission policy", |attempt| {
        let mut probe = recall.clone();
        probe.metadata.name = Some(format!("probe-{attempt}"));
        probe.spec.clearances = serde_json::from_value(in_alices_name.clone()).unwrap();
        let as_mallory = as_mallory.clone();
        async move { as_mallory.create(&PostParams::default(), &probe).await }
    })
    .await;
    assert!(refused.contains("must name you as clearedBy: mallory"), "the refusal says what to write: {refused}");
    let error = as_mallory.patch("incident-42", &PatchParams::default(), &clear(in_alices_name)).await.unwrap_err().to_string();
    assert!(error.contains("must name you as clearedBy: mallory"), "{error}");

    // alice clears in her own name; the clearance is kept as made.
    let by_alice = json!([{ "user": "user0001@example.com", "clearedBy": "alice", "note": "confirmed by phone" }]);
    as_alice.patch("incident-42", &PatchParams::default(), &clear(by_alice.clone())).await.expect("alice may clear in her own name");
    // Nobody removes or rewrites it, not even alice.
    let error = as_mallory.patch("incident-42", &PatchParams::default(), &clear(json!([]))).await.unwrap_err().to_string();
    assert!(error.contains("never removed or edited"), "{error}");
    let rewritten = json!([{ "user": "user0001@example.com", "clearedBy": "alice", "note": "never mind" }]);
    let error = as_alice.patch("incident-42", &PatchParams::default(), &clear(rewritten)).await.unwrap_err().to_string();
    assert!(error.contains("never removed or edited"), "{error}");
    // A copy of alice's clearance is a second one in her name: mallory may not add it.
    let copied = json!([by_alice[0].clone(), by_alice[0].clone()]);
    let error = as_mallory.patch("incident-42", &PatchParams::default(), &clear(copied)).await.unwrap_err().to_string();
    assert!(error.contains("must name you as clearedBy: mallory"), "{error}");
    let kept = as_alice.get("incident-42").await.unwrap();
    assert_eq!(serde_json::to_value(&kept.spec.clearances).unwrap(), by_alice);

    // A recall under dual control: asked for in one's own name, approved by another in theirs,
    // and who did which never changes.
    let dual = |name: &str, requested_by: &str, approved_by: Option<&str>| -> mfa_recall::api::MfaRecall {
        let mut recall = recall.clone();
        recall.metadata.name = Some(name.into());
        recall.spec.approval = Some(serde_json::from_value(json!({ "requestedBy": requested_by, "approvedBy": approved_by })).unwrap());
        recall
    };
    let error = as_mallory.create(&PostParams::default(), &dual("in-alices-name", "alice", None)).await.unwrap_err().to_string();
    assert!(error.contains("spec.approval.requestedBy must be your own Kubernetes user name, mallory"), "{error}");
    let error = as_alice.create(&PostParams::default(), &dual("pre-approved", "alice", Some("mallory"))).await.unwrap_err().to_string();
    assert!(error.contains("created without approvedBy"), "{error}");
    as_alice.create(&PostParams::default(), &dual("incident-43", "alice", None)).await.expect("alice asks in her own name");
    let approve = |by: &str| Patch::Merge(json!({ "spec": { "approval": { "approvedBy": by } } }));
    let error = as_alice.patch("incident-43", &PatchParams::default(), &approve("alice")).await.unwrap_err().to_string();
    assert!(error.contains("you requested this recall, so you cannot approve it"), "{error}");
    let error = as_mallory.patch("incident-43", &PatchParams::default(), &approve("alice")).await.unwrap_err().to_string();
    assert!(error.contains("spec.approval.approvedBy must be your own Kubernetes user name, mallory"), "{error}");
    as_mallory.patch("incident-43", &PatchParams::default(), &approve("mallory")).await.expect("a second person approves in their own name");
    let error = as_alice.patch("incident-43", &PatchParams::default(), &approve("alice")).await.unwrap_err().to_string();
    assert!(error.contains("approvedBy is set once by the approver"), "{error}");
    let dropped = Patch::Merge(json!({ "spec": { "approval": null } }));
    let error = as_alice.patch("incident-43", &PatchParams::default(), &dropped).await.unwrap_err().to_string();
    assert!(error.contains("approval is fixed once a recall exists"), "{error}");
    let approval = as_alice.get("incident-43").await.unwrap().spec.approval.unwrap();
    assert_eq!((approval.requested_by.as_str(), approval.approved_by.as_deref()), ("alice", Some("mallory")));

    admission.remove().await;
}

const DUAL_CONTROL: &str = include_str!("../crds/mfabypass-dual-control.yaml");

/// The bypass policy in crds/mfabypass-dual-control.yaml and the MfaBypass CRD's own rules, on the
/// real apiserver with two users bound to different roles: a bypass is requested in one's own
/// name, approved only by someone else in theirs, and what records who did what never changes.
#[tokio::test]
async fn a_bypass_is_requested_by_one_person_and_approved_by_another() {
    let admin = Parts::from_env().client().await;
    let admission = support::AdmissionPolicy::install(&admin, DUAL_CONTROL).await;

    let namespace = support::unique("bypasses");
    testkit::cluster::create_namespace(&admin, &namespace).await.unwrap();
    // alice is on the helpdesk (she may request, and patch to revoke); bob is a security lead (he
    // may approve). alice's patch would reach approvedBy too: the policy keeps her from approving her own.
    for (name, verbs, users) in [("bypass-requester", json!(["get", "create", "patch"]), &["alice"][..]), ("bypass-approver", json!(["get", "update", "patch"]), &["bob"][..])] {
        support::grant(&admin, &namespace, name, json!([{ "apiGroups": ["mfarecall.io"], "resources": ["mfabypasses"], "verbs": verbs }]), users).await;
    }
    let bypass = |name: &str, requested_by: &str| -> MfaBypass {
        serde_json::from_value(json!({
            "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaBypass", "metadata": { "name": name },
            "spec": { "recall": "incident-42", "backend": "entra", "user": "Megan.Bowen@contoso.example", "lifetime": "30m",
                      "reason": "verified on a video call, ticket 4711", "requestedBy": requested_by }
        }))
        .unwrap()
    };
    let as_alice = Api::<MfaBypass>::namespaced(support::acting_as("alice").await, &namespace);
    let as_bob = Api::<MfaBypass>::namespaced(support::acting_as("bob").await, &namespace);

    // The apiserver takes up a new policy within a second or so: alice asks in bob's name until refused.
    let refused = support::refused_once_active("the dual-control admission policy", |attempt| {
        let (as_alice, probe) = (as_alice.clone(), bypass(&format!("probe-{attempt}"), "bob"));
        async move { as_alice.create(&PostParams::default(), &probe).await }
    })
    .await;
    assert!(refused.contains("requestedBy must be your own Kubernetes user name, alice"), "the refusal says what to write: {refused}");
    // Nobody creates one already approved, not even in the other's name.
    let mut pre_approved = bypass("pre-approved", "alice");
    pre_approved.spec.approved_by = Some("bob".into());
    let error = as_alice.create(&PostParams::default(), &pre_approved).await.unwrap_err().to_string();
    assert!(error.contains("created without approvedBy"), "{error}");

    as_alice.create(&PostParams::default(), &bypass("megan", "alice")).await.expect("alice asks in her own name");
    let approve = |by: &str| Patch::Merge(json!({ "spec": { "approvedBy": by } }));
    // Self-approval is refused, whatever name she writes.
    let error = as_alice.patch("megan", &PatchParams::default(), &approve("alice")).await.unwrap_err().to_string();
    assert!(error.contains("you requested this bypass, so you cannot approve it"), "{error}");
    let error = as_alice.patch("megan", &PatchParams::default(), &approve("bob")).await.unwrap_err().to_string();
    assert!(error.contains("approvedBy must be your own Kubernetes user name, alice"), "{error}");
    assert_eq!(as_bob.get("megan").await.unwrap().spec.approved_by, None, "nothing was approved");
    // bob approves in his own name; the approval then stays as made.
    as_bob.patch("megan", &PatchParams::default(), &approve("bob")).await.expect("a second person approves");
    let error = as_bob.patch("megan", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "approvedBy": null } }))).await.unwrap_err().to_string();
    assert!(error.contains("approvedBy is set once and never changed"), "{error}");
    let error = as_bob.patch("megan", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "lifetime": "24h" } }))).await.unwrap_err().to_string();
    assert!(error.contains("fixed once a bypass is requested"), "{error}");

    // Revoking names who revoked, and sticks.
    let revoke = |by: &str| Patch::Merge(json!({ "spec": { "revoked": true, "revokedBy": by } }));
    let error = as_alice.patch("megan", &PatchParams::default(), &revoke("bob")).await.unwrap_err().to_string();
    assert!(error.contains("revokedBy must be your own Kubernetes user name, alice"), "{error}");
    let error = as_alice.patch("megan", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "revoked": true } }))).await.unwrap_err().to_string();
    assert!(error.contains("set revoked: true and revokedBy"), "{error}");
    as_alice.patch("megan", &PatchParams::default(), &revoke("alice")).await.expect("either may revoke in their own name");
    let error = as_bob.patch("megan", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "revoked": false, "revokedBy": null } }))).await.unwrap_err().to_string();
    assert!(error.contains("a revoked bypass stays revoked"), "{error}");
    let kept = as_bob.get("megan").await.unwrap().spec;
    assert_eq!((kept.requested_by.as_str(), kept.approved_by.as_deref(), kept.revoked, kept.revoked_by.as_deref()), ("alice", Some("bob"), true, Some("alice")));

    admission.remove().await;
}

const POLICY_SECRETS: &str = include_str!("../crds/mfarecallpolicy-secret-access.yaml");

/// crds/mfarecallpolicy-secret-access.yaml on the real apiserver: whoever may write an
/// MfaRecallPolicy but not read a Secret cannot have the operator use it, neither as a source's
/// token nor in the notifications of the recalls the policy creates; whoever may read it can.
#[tokio::test]
async fn only_someone_who_may_get_a_secret_may_name_it_in_a_policy() {
    let admin = Parts::from_env().client().await;
    let admission = support::AdmissionPolicy::install(&admin, POLICY_SECRETS).await;
    let namespace = support::unique("policy-secrets");
    testkit::cluster::create_namespace(&admin, &namespace).await.unwrap();
    support::grant(&admin, &namespace, "policy-author", json!([{ "apiGroups": ["mfarecall.io"], "resources": ["mfarecallpolicies"], "verbs": ["get", "create", "update", "patch"] }]), &["alice", "mallory"]).await;
    support::grant(&admin, &namespace, "smtp-reader", json!([{ "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["corp-smtp", "am-token"], "verbs": ["get"] }]), &["alice"]).await;
    let policy = |name: &str, token: &str, smtp: &str| -> mfa_recall::api::MfaRecallPolicy {
        serde_json::from_value(json!({ "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecallPolicy", "metadata": { "name": name },
            "spec": { "signals": { "alertmanager": { "tokenSecretRef": { "name": token } } },
                      "template": { "reason": "leak", "backends": ["okta"], "scope": { "usersFromSignal": true },
                                    "notifications": { "smtp": { "server": "mail.attacker.example:25", "from": "x@attacker.example", "security": "StartTls", "credentialsSecretRef": { "name": smtp } } } } } }))
        .unwrap()
    };
    let as_mallory = Api::<mfa_recall::api::MfaRecallPolicy>::namespaced(support::acting_as("mallory").await, &namespace);
    let as_alice = Api::<mfa_recall::api::MfaRecallPolicy>::namespaced(support::acting_as("alice").await, &namespace);
    let refused = support::refused_once_active("the policy Secret access admission policy", |attempt| {
        let (as_mallory, probe) = (as_mallory.clone(), policy(&format!("probe-{attempt}"), "am-token", "corp-smtp"));
        async move { as_mallory.create(&PostParams::default(), &probe).await }
    })
    .await;
    assert!(refused.contains("names a Secret you may not get"), "{refused}");
    let error = as_mallory.create(&PostParams::default(), &policy("tokens", "corp-smtp", "corp-smtp")).await.unwrap_err().to_string();
    assert!(error.contains("names a Secret you may not get"), "a source's Secret too: {error}");
    as_alice.create(&PostParams::default(), &policy("by-alice", "am-token", "corp-smtp")).await.expect("alice may read both Secrets");
    admission.remove().await;
}
