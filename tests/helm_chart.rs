//! The Helm chart with the real `helm` binary: lint, rendered manifests (restricted Pod Security,
//! least-privilege RBAC in both modes), the values schema; then installed into the real test
//! apiserver, where the operator runs under the chart's ServiceAccount and completes a recall, an
//! access review proves what that ServiceAccount (and the console's) may and may not do, and
//! uninstall keeps the CRDs.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use mfa_recall::api::{BackendLimits, MfaRecall, RecallPhase};
use idp_sim::{Seed, username};
use testkit::cluster;
use testkit::sims::{SimBackend, SimSubject};
use serde::Deserialize;
use serde_json::{Value, json};
use support::Operator;

const RELEASE: &str = "mfa-recall-operator";
const CRDS: [&str; 5] = ["identitybackends.mfarecall.io", "mfarecalls.mfarecall.io", "mfarecallpolicies.mfarecall.io", "mfabypasses.mfarecall.io", "recallledgersegments.mfarecall.io"];

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/mfa-recall-operator")
}

/// The helm binary built by hack/parts.sh; these tests never skip without it.
fn helm_binary() -> PathBuf {
    let path = std::env::var("MFA_RECALL_HELM").unwrap_or_else(|_| {
        panic!(
            "MFA_RECALL_HELM is not set: the chart tests need the real helm binary. Build it with `hack/parts.sh helm` \
             and export MFA_RECALL_HELM=\"$(hack/parts.sh env | sed -n \"s/^export MFA_RECALL_HELM='\\(.*\\)'/\\1/p\")\", \
             or source the env file of `hack/localparts.sh start DIR` (hack/test.sh does all of this)."
        )
    });
    let path = PathBuf::from(path);
    assert!(path.is_file(), "MFA_RECALL_HELM={} does not exist: run `hack/parts.sh helm`", path.display());
    path
}

fn helm(args: &[&str]) -> Output {
    Command::new(helm_binary()).args(args).output().expect("run helm")
}

fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(out.status.success(), "helm {args:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Rendered without a cluster, the chart needs the ledger key's Secret named (it cannot see the
/// one it made before).
const OWN_LEDGER_KEY: &str = "ledger.keySecret=mfa-recall-ledger-key";

/// `helm template` with `--set` pairs (and OWN_LEDGER_KEY), parsed into one JSON value per manifest.
fn render(namespace: &str, sets: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", RELEASE, chart.to_str().unwrap(), "--namespace", namespace, "--set", OWN_LEDGER_KEY];
    for set in sets {
        args.extend(["--set", set]);
    }
    let yaml = helm_ok(&args);
    serde_norway::Deserializer::from_str(&yaml)
        .map(|doc| serde_norway::Value::deserialize(doc).expect("rendered YAML parses"))
        .map(|doc| serde_json::to_value(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// What each component may do, by (apiGroup, resource): the whole list, nothing beyond it. The
/// operator impersonates no one; the console reads nothing but acts as the person signed in.
fn allowed_verbs(component: &str) -> BTreeMap<(&'static str, &'static str), BTreeSet<&'static str>> {
    let own = ["get", "list", "watch", "patch", "update"];
    let status = ["get", "patch", "update"];
    let operator = [
        (("mfarecall.io", "identitybackends"), &own[..]),
        (("mfarecall.io", "mfarecalls"), &["get", "list", "watch", "patch", "update", "create"][..]),
        (("mfarecall.io", "mfarecallpolicies"), &["get", "list", "watch"][..]),
        (("mfarecall.io", "mfarecallpolicies/status"), &status[..]),
        (("mfarecall.io", "identitybackends/status"), &status[..]),
        (("mfarecall.io", "mfarecalls/status"), &status[..]),
        (("mfarecall.io", "mfabypasses"), &["get", "list", "watch"][..]),
        (("mfarecall.io", "mfabypasses/status"), &status[..]),
        (("mfarecall.io", "mfarecalls/finalizers"), &["update"][..]),
        (("mfarecall.io", "recallledgersegments"), &["get", "list", "create", "patch"][..]),
        (("events.k8s.io", "events"), &["create", "patch"][..]),
        (("", "secrets"), &["get", "list", "watch"][..]),
        (("coordination.k8s.io", "leases"), &["get", "create", "update"][..]),
    ];
    let console = [
        (("", "users"), &["impersonate"][..]),
        (("", "groups"), &["impersonate"][..]),
        (("", "serviceaccounts"), &["impersonate"][..]),
        (("authentication.k8s.io", "tokenreviews"), &["create"][..]),
        (("authorization.k8s.io", "subjectaccessreviews"), &["create"][..]),
    ];
    let table: &[_] = match component {
        "operator" => &operator,
        "console" => &console,
        other => panic!("a Role of an unknown component {other:?}: give it a table here"),
    };
    table.iter().map(|(k, v)| (*k, v.iter().copied().collect())).collect()
}

/// The console's ClusterRole, rule for rule: the same as tests/console.rs grants it.
fn console_rules() -> Value {
    json!([
        {"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"], "verbs": ["impersonate"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ])
}

fn component(doc: &Value) -> &str {
    doc["metadata"]["labels"]["app.kubernetes.io/component"].as_str().unwrap_or_default()
}

/// Every rule of every Role and ClusterRole stays inside `allowed_verbs` of its component, without
/// wildcards; the console's ClusterRole holds exactly `console_rules`.
fn check_rbac(docs: &[Value]) {
    let roles: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole").collect();
    assert!(!roles.is_empty(), "the chart renders RBAC");
    for role in roles {
        let name = role["metadata"]["name"].as_str().unwrap_or_default();
        let allowed = allowed_verbs(component(role));
        if component(role) == "console" {
            assert_eq!(role["kind"], "ClusterRole", "{name}: impersonation and the reviews are cluster-scoped");
            assert_eq!(role["rules"], console_rules(), "{name}: the console's rules, and nothing else");
        }
        assert!(role.get("aggregationRule").is_none(), "{name}: no aggregation");
        for rule in role["rules"].as_array().expect("rules") {
            assert!(rule.get("nonResourceURLs").is_none(), "{name}: no non-resource URLs: {rule}");
            let (groups, resources, verbs) = (strings(&rule["apiGroups"]), strings(&rule["resources"]), strings(&rule["verbs"]));
            for list in [&groups, &resources, &verbs] {
                assert!(!list.is_empty() && !list.iter().any(|s| s.contains('*')), "{name}: a wildcard or empty list in {rule}");
            }
            for group in &groups {
                for resource in &resources {
                    let may = allowed.get(&(group.as_str(), resource.as_str())).unwrap_or_else(|| panic!("{name}: {group}/{resource} is not needed"));
                    for verb in &verbs {
                        assert!(may.contains(verb.as_str()), "{name}: {verb} on {group}/{resource} is not needed");
                    }
                    if resource == "secrets" {
                        assert!(verbs.iter().all(|v| ["get", "list", "watch"].contains(&v.as_str())), "{name}: Secrets are read-only");
                    }
                }
            }
        }
    }
}

/// The restricted Pod Security level, for the pod spec of `deployment`.
fn check_restricted(deployment: &Value) {
    let pod = &deployment["spec"]["template"]["spec"];
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod.get(host).is_none_or(|v| v == false), "{host}");
    }
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        assert!(volume.get("hostPath").is_none(), "no hostPath volume: {volume}");
    }
    let pod_sc = &pod["securityContext"];
    let containers: Vec<&Value> = ["initContainers", "containers"].iter().flat_map(|k| pod[k].as_array().into_iter().flatten()).collect();
    assert!(!containers.is_empty());
    for c in containers {
        let name = &c["name"];
        let sc = &c["securityContext"];
        let either = |key: &str| if sc.get(key).is_some() { sc[key].clone() } else { pod_sc[key].clone() };
        assert_eq!(either("runAsNonRoot"), json!(true), "{name}: runAsNonRoot");
        assert_eq!(either("runAsUser"), json!(65532), "{name}: runAsUser");
        assert_eq!(either("seccompProfile")["type"], "RuntimeDefault", "{name}: seccompProfile");
        assert_eq!(sc["allowPrivilegeEscalation"], json!(false), "{name}: allowPrivilegeEscalation");
        assert_eq!(sc["readOnlyRootFilesystem"], json!(true), "{name}: readOnlyRootFilesystem");
        assert!(sc.get("privileged").is_none_or(|p| p == false), "{name}: privileged");
        assert_eq!(strings(&sc["capabilities"]["drop"]), vec!["ALL"], "{name}: capabilities drop ALL");
        assert!(strings(&sc["capabilities"]["add"]).is_empty(), "{name}: no capability added");
        assert!(c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object(), "{name}: resources");
    }
}

/// The chart's files/ holds copies of crds/ (Helm reads only files inside the chart).
fn assert_chart_holds_the_committed(file: &str) {
    let committed = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds").join(file)).unwrap();
    let in_chart = std::fs::read_to_string(chart().join("files").join(file)).unwrap();
    assert!(committed == in_chart, "charts/mfa-recall-operator/files/{file} differs from crds/{file}: run `cp crds/{file} charts/mfa-recall-operator/files/` and commit it");
}

#[test]
fn chart_crds_are_the_committed_crds() {
    assert_chart_holds_the_committed("mfarecall.io.yaml");
}

/// The not-me endpoint is off unless asked for; asked for, it has its own argument, port, Service
/// and (with the NetworkPolicy) an ingress rule of its own.
#[test]
fn the_not_me_endpoint_is_served_only_when_enabled() {
    let off = render("security", &[]);
    let args = |docs: &[Value]| strings(&of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(!args(&off).iter().any(|a| a.starts_with("--not-me-addr")));
    assert_eq!(of_kind(&off, "Service").len(), 1, "only the metrics Service");
    let on = render("security", &["notMe.enabled=true", "networkPolicy.enabled=true"]);
    assert!(args(&on).contains(&"--not-me-addr=0.0.0.0:8443".to_string()), "{:?}", args(&on));
    let services = of_kind(&on, "Service");
    assert!(services.iter().any(|s| s["spec"]["ports"][0]["targetPort"] == "not-me"), "{services:?}");
    let policy = of_kind(&on, "NetworkPolicy")[0];
    assert!(policy["spec"]["ingress"].as_array().unwrap().iter().any(|rule| rule["ports"][0]["port"] == "not-me"), "{policy}");
}

#[test]
fn chart_admission_policy_is_the_committed_one() {
    assert_chart_holds_the_committed("identitybackend-secret-access.yaml");
    assert_chart_holds_the_committed("mfarecall-requester.yaml");
    assert_chart_holds_the_committed("mfabypass-dual-control.yaml");
    assert_chart_holds_the_committed("mfarecallpolicy-secret-access.yaml");
}

#[test]
fn helm_lint_is_clean_in_every_mode() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    helm_ok(&["lint", "--strict", chart, "--set", OWN_LEDGER_KEY]);
    helm_ok(&[
        "lint", "--strict", chart, "--set", OWN_LEDGER_KEY, "--set", "watchNamespace=security", "--set", "networkPolicy.enabled=true",
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "audit.file=/var/lib/mfa-recall/audit.jsonl",
        "--set", "replicas=1", "--set", "crds.install=false",
    ]);
    helm_ok(&[
        "lint", "--strict", chart, "--set", OWN_LEDGER_KEY, "--set", "console.enabled=true", "--set", "console.publicUrl=https://mfa-recall.example.com",
        "--set", "console.oidc.issuer=https://sso.example.com/realms/corp", "--set", "console.oidc.clientSecret.existingSecret=console-oidc",
        "--set", "console.replicas=2", "--set", "watchNamespace=security", "--set", "networkPolicy.enabled=true",
    ]);
}

#[test]
fn cluster_wide_rendering_is_restricted_and_least_privilege() {
    let docs = render("ops", &[]);
    check_rbac(&docs);
    assert_eq!(of_kind(&docs, "ClusterRole").len(), 1, "one ClusterRole for the work in every namespace");
    assert_eq!(of_kind(&docs, "ClusterRoleBinding").len(), 1);
    let leases = of_kind(&docs, "Role");
    assert_eq!(leases.len(), 1, "only the lease Role is namespaced");
    assert_eq!(leases[0]["metadata"]["namespace"], "ops", "leases live in the release namespace");

    // The CRDs, kept on uninstall, exactly the committed ones apart from the added metadata.
    let crds = of_kind(&docs, "CustomResourceDefinition");
    let names: Vec<&str> = crds.iter().map(|c| c["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, CRDS);
    let committed: Vec<Value> = serde_norway::Deserializer::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/mfarecall.io.yaml")).unwrap())
        .map(|d| serde_json::to_value(serde_norway::Value::deserialize(d).unwrap()).unwrap())
        .collect();
    for (crd, committed) in crds.iter().zip(&committed) {
        assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
        assert_eq!(crd["spec"], committed["spec"], "the chart installs the committed CRD");
    }
    assert!(of_kind(&render("ops", &["crds.install=false"]), "CustomResourceDefinition").is_empty());

    let deployments = of_kind(&docs, "Deployment");
    let deployment = deployments[0];
    check_restricted(deployment);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/mfa-recall/mfa-recall:0.1.0");
    let args = strings(&container["args"]);
    assert_eq!(args[0], "operator");
    assert!(!args.iter().any(|a| a.starts_with("--namespace")), "cluster-wide: no --namespace: {args:?}");
    for expected in ["--leader-election", "--lease-name=mfa-recall-operator", "--lease-namespace=$(POD_NAMESPACE)", "--metrics-addr=0.0.0.0:8080", "--instance=$(POD_NAME)"] {
        assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
    }
    let env: BTreeMap<String, Value> = container["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap().to_string(), e.clone())).collect();
    assert_eq!(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
    assert_eq!(env["MFA_RECALL_LOG"]["value"], "info");
    assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/livez", "port": "metrics"}));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "metrics"}));
    assert_eq!(container["ports"][0], json!({"name": "metrics", "containerPort": 8080, "protocol": "TCP"}));
    // The ledger key from the Secret named (the chart makes one when installed into a cluster:
    // tested by the install below), mounted read-only; none is made.
    assert!(args.iter().any(|a| a == "--ledger-key-file=/etc/mfa-recall/ledger-key/key"), "{args:?}");
    assert_eq!(container["volumeMounts"], json!([{"name": "ledger-key", "mountPath": "/etc/mfa-recall/ledger-key", "readOnly": true}]), "no audit volume without audit.file");
    assert_eq!(pod["volumes"], json!([{"name": "ledger-key", "secret": {"secretName": "mfa-recall-ledger-key", "items": [{"key": "key", "path": "key"}]}}]));
    assert!(of_kind(&docs, "Secret").is_empty());
    // Without it, a render that cannot see the cluster would make a new key at each render
    // (Argo CD, Flux): refused, saying what to do.
    let unnamed = helm(&["template", RELEASE, chart().to_str().unwrap(), "--namespace", "ops"]);
    let stderr = String::from_utf8_lossy(&unnamed.stderr);
    assert!(!unnamed.status.success() && stderr.contains("ledger.keySecret is required when the chart is rendered without a cluster"), "{stderr}");

    assert_eq!(of_kind(&docs, "Service")[0]["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(of_kind(&docs, "PodDisruptionBudget")[0]["spec"]["minAvailable"], 1);
    assert!(of_kind(&docs, "ServiceMonitor").is_empty() && of_kind(&docs, "NetworkPolicy").is_empty(), "both optional, off by default");
    let single = render("ops", &["replicas=1"]);
    assert!(of_kind(&single, "PodDisruptionBudget").is_empty(), "a PDB on one replica would block every drain");
    let without_election = helm(&["template", RELEASE, chart().to_str().unwrap(), "--set", OWN_LEDGER_KEY, "--set", "leaderElection.enabled=false"]);
    assert!(!without_election.status.success() && String::from_utf8_lossy(&without_election.stderr).contains("leaderElection"), "two replicas without leader election are refused: {without_election:?}");
}

#[test]
fn namespace_scoped_rendering_grants_nothing_cluster_wide() {
    let docs = render("ops", &[
        "watchNamespace=security", "audit.file=/var/lib/mfa-recall/audit.jsonl", "networkPolicy.enabled=true",
        "metrics.serviceMonitor.enabled=true", "image.tag=9.9.9",
    ]);
    check_rbac(&docs);
    // The CRDs are installed by Helm with the user's credentials: the operator needs nothing cluster-wide.
    assert!(of_kind(&docs, "ClusterRole").is_empty() && of_kind(&docs, "ClusterRoleBinding").is_empty(), "nothing cluster-wide");
    let mut role_namespaces: Vec<(String, String)> = of_kind(&docs, "Role")
        .iter()
        .map(|r| (r["metadata"]["name"].as_str().unwrap().to_string(), r["metadata"]["namespace"].as_str().unwrap().to_string()))
        .collect();
    role_namespaces.sort();
    assert_eq!(role_namespaces, [("mfa-recall-operator".to_string(), "security".to_string()), ("mfa-recall-operator-leader-election".to_string(), "ops".to_string())]);
    for binding in of_kind(&docs, "RoleBinding") {
        assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": RELEASE, "namespace": "ops"}]));
    }

    let deployment = of_kind(&docs, "Deployment")[0];
    check_restricted(deployment);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/mfa-recall/mfa-recall:9.9.9");
    let args = strings(&container["args"]);
    assert!(args.contains(&"--namespace=security".to_string()) && args.contains(&"--audit-file=/var/lib/mfa-recall/audit.jsonl".to_string()), "{args:?}");
    assert!(!args.contains(&"--audit-file-persistent".to_string()), "an emptyDir trail is not kept across pods: {args:?}");
    assert_eq!(container["volumeMounts"][1], json!({"name": "audit", "mountPath": "/var/lib/mfa-recall"}));
    assert_eq!(pod["volumes"][1]["name"], "audit");
    assert!(pod["volumes"][1]["emptyDir"].is_object());

    let policy = of_kind(&docs, "NetworkPolicy")[0];
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(ingress[0]["ports"], json!([{"port": "metrics", "protocol": "TCP"}]), "ingress only to the metrics port");
    assert!(ingress[0]["from"].as_array().is_some_and(|f| !f.is_empty()), "from configured peers only");
    assert_eq!(strings(&policy["spec"]["policyTypes"]), ["Ingress", "Egress"]);
    let monitors = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitors[0]["spec"]["endpoints"][0]["port"], "metrics");
}

#[test]
fn values_schema_rejects_bad_values() {
    let chart = chart();
    for (set, mention) in [("replicas=two", "replicas"), ("replica=2", "replica"), ("metrics.port=0", "port"), ("image.pullPolicy=Sometimes", "pullPolicy"), ("maxBypassLifetime=2d", "maxBypassLifetime"), ("maxBypassLifetime=25h", "maxBypassLifetime"), ("maxBypassLifetime=0m", "maxBypassLifetime"),
        ("console.replicas=0", "/console/replicas"), ("console.enable=true", "'enable' not allowed"), ("console.publicUrl=mfa-recall.example.com", "/console/publicUrl"),
        ("console.oidc.issuer=http://sso.example.com", "/console/oidc/issuer"), ("console.service.port=70000", "/console/service/port"),
        ("console.sessionLifetime=8 hours", "/console/sessionLifetime"), ("console.oidc.clientSecret.existingSecret=Console_OIDC", "/console/oidc/clientSecret/existingSecret")] {
        let out = helm(&["template", RELEASE, chart.to_str().unwrap(), "--set", OWN_LEDGER_KEY, "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} must be refused");
        assert!(stderr.contains("values don't meet the specifications of the schema") && stderr.contains(mention), "--set {set}: {stderr}");
    }
    for (sets, mention) in [
        (&["audit.file=relative/audit.jsonl"][..], "audit/file"),
        (&["audit.persistence.enabled=true"], "needs audit.file"),
        (&["audit.persistence.enabled=true", "audit.file=/var/lib/mfa-recall/audit.jsonl"], "needs replicas: 1"),
    ] {
        let mut args = vec!["template", RELEASE, chart.to_str().unwrap(), "--set", OWN_LEDGER_KEY];
        sets.iter().for_each(|set| args.extend(["--set", set]));
        let out = helm(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(mention), "{sets:?} must be refused naming {mention:?}: {stderr}");
    }
}

/// The trail on a claim that outlives the pod (kept on uninstall), and its chain keyed from a
/// Secret mounted read-only: the key reaches the operator as a file, never through its RBAC.
#[test]
fn audit_trail_on_a_claim_with_a_keyed_chain() {
    let docs = render("ops", &[
        "replicas=1", "audit.file=/var/lib/mfa-recall/audit.jsonl", "audit.persistence.enabled=true", "audit.persistence.size=20Gi",
        "audit.keySecret=mfa-recall-audit-key",
    ]);
    check_rbac(&docs);
    let claim = of_kind(&docs, "PersistentVolumeClaim")[0];
    assert_eq!(claim["metadata"]["name"], "mfa-recall-operator-audit");
    assert_eq!(claim["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "20Gi");
    let deployment = of_kind(&docs, "Deployment")[0];
    check_restricted(deployment);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert!(strings(&container["args"]).contains(&"--audit-key-file=/etc/mfa-recall/audit-key/key".to_string()));
    assert!(strings(&container["args"]).contains(&"--audit-file-persistent".to_string()), "a resume that finds the claim's trail cut stops");
    assert_eq!(container["volumeMounts"], json!([
        {"name": "ledger-key", "mountPath": "/etc/mfa-recall/ledger-key", "readOnly": true},
        {"name": "audit", "mountPath": "/var/lib/mfa-recall"},
        {"name": "audit-key", "mountPath": "/etc/mfa-recall/audit-key", "readOnly": true},
    ]));
    assert_eq!(pod["volumes"], json!([
        {"name": "ledger-key", "secret": {"secretName": "mfa-recall-ledger-key", "items": [{"key": "key", "path": "key"}]}},
        {"name": "audit", "persistentVolumeClaim": {"claimName": "mfa-recall-operator-audit"}},
        {"name": "audit-key", "secret": {"secretName": "mfa-recall-audit-key", "items": [{"key": "key", "path": "key"}]}},
    ]));
    // A claim of one's own is used as it is.
    let docs = render("ops", &["replicas=1", "audit.file=/var/lib/mfa-recall/audit.jsonl", "audit.persistence.enabled=true", "audit.persistence.existingClaim=evidence"]);
    assert!(of_kind(&docs, "PersistentVolumeClaim").is_empty());
    assert_eq!(of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"], "evidence");
}

/// The console, off unless asked for; asked for, a restricted Deployment of the same image under
/// a ServiceAccount of its own, whose one ClusterRole lets it impersonate and ask reviews and read
/// nothing, not even the Secret of its OpenID Connect client (the kubelet mounts that).
#[test]
fn the_console_runs_restricted_under_its_own_service_account_that_reads_no_secret() {
    let off = render("ops", &[]);
    assert!(off.iter().all(|d| component(d) != "console"), "off by default");

    const PUBLIC_URL: &str = "console.publicUrl=https://mfa-recall.example.com";
    let docs = render("ops", &[
        "console.enabled=true", PUBLIC_URL, "watchNamespace=security", "networkPolicy.enabled=true",
        "console.oidc.issuer=https://sso.example.com/realms/corp", "console.oidc.clientSecret.existingSecret=console-oidc",
    ]);
    check_rbac(&docs);
    let console_sa = "mfa-recall-operator-console";
    let accounts: Vec<&str> = of_kind(&docs, "ServiceAccount").iter().map(|a| a["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(accounts, [console_sa, RELEASE], "a ServiceAccount of its own beside the operator's");

    // Its one ClusterRole even with watchNamespace set (impersonation has no namespace), bound to
    // its ServiceAccount only; nothing else binds that ServiceAccount, and no other role impersonates.
    let cluster_roles = of_kind(&docs, "ClusterRole");
    assert_eq!(cluster_roles.len(), 1, "the operator's rules are a Role in security");
    assert_eq!(cluster_roles[0]["metadata"]["name"], console_sa);
    assert_eq!(cluster_roles[0]["rules"], console_rules());
    for binding in docs.iter().filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding") {
        let binds_console = binding["subjects"].as_array().unwrap().iter().any(|s| s["name"] == console_sa);
        let to_console = binding["roleRef"]["name"] == console_sa;
        assert_eq!(binds_console, to_console, "the console's ServiceAccount is bound to its own ClusterRole and nothing else: {binding}");
        if to_console {
            assert_eq!(binding["kind"], "ClusterRoleBinding");
            assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": console_sa, "namespace": "ops"}]));
        }
    }
    for role in docs.iter().filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole") {
        for rule in role["rules"].as_array().unwrap() {
            if component(role) == "console" {
                assert!(!strings(&rule["resources"]).iter().any(|r| r.starts_with("secrets")), "no Secret access for the console: {rule}");
                assert!(!strings(&rule["apiGroups"]).iter().any(|g| g == "mfarecall.io"), "no mfarecall.io access of its own: {rule}");
            } else {
                assert!(!strings(&rule["verbs"]).iter().any(|v| v == "impersonate"), "the operator impersonates no one: {rule}");
            }
        }
    }

    let deployments = of_kind(&docs, "Deployment");
    assert_eq!(deployments.len(), 2);
    let operator = deployments.iter().find(|d| d["metadata"]["name"] == RELEASE).unwrap();
    let console = deployments.iter().find(|d| d["metadata"]["name"] == console_sa).unwrap();
    check_restricted(console);
    assert_eq!(console["spec"]["replicas"], 1, "sessions are in memory: one replica unless asked");
    // Neither's selectors pick the other's pods (the operator's Service, PDB and NetworkPolicy).
    let selects = |selector: &Value, pod_of: &Value| selector.as_object().unwrap().iter().all(|(k, v)| pod_of["spec"]["template"]["metadata"]["labels"][k] == *v);
    assert!(!selects(&operator["spec"]["selector"]["matchLabels"], console) && !selects(&console["spec"]["selector"]["matchLabels"], operator));
    assert!(selects(&console["spec"]["selector"]["matchLabels"], console));
    let pod = &console["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], console_sa);
    let container = &pod["containers"][0];
    assert_eq!(container["image"], operator["spec"]["template"]["spec"]["containers"][0]["image"], "the same image");
    assert_eq!(container["command"], json!(["/mfa-recall-console"]));
    let args = strings(&container["args"]);
    for expected in [
        "--listen=0.0.0.0:8080", "--public-url=https://mfa-recall.example.com", "--namespace=security", "--oidc-issuer=https://sso.example.com/realms/corp",
        "--oidc-client-id=mfa-recall-console", "--oidc-client-secret-file=/etc/mfa-recall/oidc-client-secret/client-secret",
        "--oidc-username-prefix=oidc:", "--oidc-groups-prefix=oidc:", "--broad-scope-users=100",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
    }
    assert_eq!(container["ports"], json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]));
    assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "http"}));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/healthz", "port": "http"}));
    assert_eq!(container["volumeMounts"], json!([{"name": "oidc-client-secret", "mountPath": "/etc/mfa-recall/oidc-client-secret", "readOnly": true}]));
    assert_eq!(pod["volumes"], json!([{"name": "oidc-client-secret", "secret": {"secretName": "console-oidc", "items": [{"key": "client-secret", "path": "client-secret"}]}}]));

    let service = of_kind(&docs, "Service").into_iter().find(|s| s["metadata"]["name"] == console_sa).expect("the console's Service");
    assert_eq!(service["spec"]["ports"], json!([{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]));
    assert_eq!(service["spec"]["selector"], console["spec"]["selector"]["matchLabels"]);
    let policies = of_kind(&docs, "NetworkPolicy");
    let policy = policies.iter().find(|p| p["metadata"]["name"] == console_sa).expect("the console's NetworkPolicy");
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], console["spec"]["selector"]["matchLabels"]);
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(ingress[0]["ports"], json!([{"port": "http", "protocol": "TCP"}]), "ingress only to the console's port");
    assert!(ingress[0]["from"].as_array().is_some_and(|f| !f.is_empty()), "from configured peers only");
    let operator_policy = policies.iter().find(|p| p["metadata"]["name"] == RELEASE).unwrap();
    assert_eq!(operator_policy["spec"]["ingress"].as_array().unwrap().len(), 1, "the operator's pods still take only metrics");

    // A public client (PKCE alone) mounts nothing; the namespace shown follows watchNamespace, else the release's.
    let public = render("ops", &["console.enabled=true", PUBLIC_URL, "console.namespace=incidents"]);
    let console = of_kind(&public, "Deployment").into_iter().find(|d| d["metadata"]["name"] == console_sa).unwrap();
    let args = strings(&console["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(args.contains(&"--namespace=incidents".to_string()) && !args.iter().any(|a| a.starts_with("--oidc-client-secret-file") || a.starts_with("--oidc-issuer") || a.starts_with("--trusted-proxy")), "{args:?}");
    assert!(console["spec"]["template"]["spec"].get("volumes").is_none());
    let proxied = render("ops", &["console.enabled=true", PUBLIC_URL, "console.trustedProxies={10.0.0.7,fd00::7}"]);
    let console = of_kind(&proxied, "Deployment").into_iter().find(|d| d["metadata"]["name"] == console_sa).unwrap();
    assert!(strings(&console["spec"]["template"]["spec"]["containers"][0]["args"]).contains(&"--trusted-proxy=10.0.0.7,fd00::7".to_string()));
    let release_ns = render("ops", &["console.enabled=true", PUBLIC_URL]);
    let console = of_kind(&release_ns, "Deployment").into_iter().find(|d| d["metadata"]["name"] == console_sa).unwrap();
    assert!(strings(&console["spec"]["template"]["spec"]["containers"][0]["args"]).contains(&"--namespace=ops".to_string()));

    // Without the address people reach it at, it cannot check a form's origin nor redirect a sign-in.
    let unnamed = helm(&["template", RELEASE, chart().to_str().unwrap(), "--set", OWN_LEDGER_KEY, "--set", "console.enabled=true"]);
    let stderr = String::from_utf8_lossy(&unnamed.stderr);
    assert!(!unnamed.status.success() && stderr.contains("console.publicUrl is required when console.enabled is true"), "{stderr}");
}

/// Uninstalls the test's release if the test stops before it does.
struct Release {
    namespace: String,
    installed: bool,
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.installed {
            let _ = helm(&["uninstall", RELEASE, "--namespace", &self.namespace]);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

async fn client_from(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).unwrap();
    Client::try_from(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap()).unwrap()
}

/// Whether `user` may do `verb` on `group/resource[/subresource]` (named `name`) in `namespace`.
async fn may(client: &Client, user: &str, namespace: &str, verb: &str, group: &str, resource: &str, name: Option<&str>) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let sa_namespace = user.split(':').nth(2).unwrap();
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            groups: Some(vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{sa_namespace}"), "system:authenticated".into()]),
            resource_attributes: Some(ResourceAttributes {
                namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                name: name.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let review = Api::<SubjectAccessReview>::all(client.clone()).create(&PostParams::default(), &review).await.expect("SubjectAccessReview");
    review.status.expect("a review status").allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn installed_chart_runs_a_recall_under_its_service_account_and_uninstall_keeps_the_crds() {
    let (parts, client, ns, _) = support::scenario("helm").await;
    let ns = ns.as_str();
    let chart = chart();

    // Pod Security admission enforces the restricted level on this namespace.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labels = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}}});
    namespaces.patch(ns, &PatchParams::default(), &Patch::Merge(&labels)).await.unwrap();

    // The CRDs exist already (every test installs them): let this release adopt them, as a user
    // moving from `kubectl apply -f crds/` to the chart does.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let adopt = json!({"metadata": {
        "labels": {"app.kubernetes.io/managed-by": "Helm"},
        "annotations": {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": ns}}});
    for crd in CRDS {
        crds.patch(crd, &PatchParams::default(), &Patch::Merge(&adopt)).await.unwrap();
    }
    // So are the admission policies, where `kubectl apply -f crds/` put them.
    for policy in ["identitybackends.mfarecall.io-secret-access", "mfarecalls.mfarecall.io-requester", "mfabypasses.mfarecall.io-dual-control", "mfarecallpolicies.mfarecall.io-secret-access"] {
        let adopted = Api::<ValidatingAdmissionPolicy>::all(client.clone()).patch(policy, &PatchParams::default(), &Patch::Merge(&adopt)).await;
        assert!(adopted.is_ok() || matches!(&adopted, Err(kube::Error::Api(s)) if s.code == 404), "{adopted:?}");
        let adopted = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone()).patch(policy, &PatchParams::default(), &Patch::Merge(&adopt)).await;
        assert!(adopted.is_ok() || matches!(&adopted, Err(kube::Error::Api(s)) if s.code == 404), "{adopted:?}");
    }

    let mut release = Release { namespace: ns.to_string(), installed: true };
    let install = helm(&[
        "install", RELEASE, chart.to_str().unwrap(), "--namespace", ns, "--set", &format!("watchNamespace={ns}"),
        "--set", "networkPolicy.enabled=true", "--set", "audit.file=/var/lib/mfa-recall/audit.jsonl",
        "--set", "console.enabled=true", "--set", "console.publicUrl=https://mfa-recall.example.com",
    ]);
    let stderr = String::from_utf8_lossy(&install.stderr);
    assert!(install.status.success(), "helm install failed:\n{}{stderr}", String::from_utf8_lossy(&install.stdout));
    assert!(!stderr.contains("PodSecurity"), "the Deployments' pod templates meet the restricted level: {stderr}");
    let notes = String::from_utf8_lossy(&install.stdout);
    assert!(notes.contains("kubectl apply") && notes.contains("get mfarecalls"), "NOTES tell what to apply next:\n{notes}");
    assert!(notes.contains("https://mfa-recall.example.com"), "NOTES say where the console is served:\n{notes}");
    for crd in CRDS {
        let installed = crds.get(crd).await.unwrap();
        assert_eq!(installed.metadata.annotations.unwrap()["helm.sh/resource-policy"], "keep", "{crd} is the chart's now");
    }

    // Admission enforces the restricted level on the Deployments' pods: a dry-run Pod from each
    // template is accepted, and the same Pod with privilege escalation is refused.
    let manifest = helm_ok(&["get", "manifest", RELEASE, "--namespace", ns]);
    let manifest: Vec<Value> = serde_norway::Deserializer::from_str(&manifest).map(|d| serde_json::to_value(serde_norway::Value::deserialize(d).unwrap()).unwrap()).collect();
    let console_sa = format!("{RELEASE}-console");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for name in [RELEASE, console_sa.as_str()] {
        let deployment = manifest.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == name).unwrap_or_else(|| panic!("the Deployment {name}"));
        let mut pod: Pod = serde_json::from_value(json!({"metadata": {"name": "restricted-check"}, "spec": deployment["spec"]["template"]["spec"]})).unwrap();
        pods.create(&PostParams { dry_run: true, ..Default::default() }, &pod).await.unwrap_or_else(|e| panic!("the restricted level admits {name}'s pod: {e}"));
        pod.spec.as_mut().unwrap().containers[0].security_context.as_mut().unwrap().allow_privilege_escalation = Some(true);
        let refused = pods.create(&PostParams { dry_run: true, ..Default::default() }, &pod).await;
        assert!(matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403), "Pod Security enforcement is on: {refused:?}");
    }

    // The access review: what the operator needs, and nothing else.
    let sa = format!("system:serviceaccount:{ns}:{RELEASE}");
    let lease = Some("mfa-recall-operator");
    let needed = [
        ("list", "mfarecall.io", "mfarecalls", None),
        ("watch", "mfarecall.io", "identitybackends", None),
        ("patch", "mfarecall.io", "mfarecalls", None),
        ("patch", "mfarecall.io", "mfarecalls/status", None),
        ("patch", "mfarecall.io", "identitybackends/status", None),
        ("update", "mfarecall.io", "mfarecalls/finalizers", None),
        ("watch", "mfarecall.io", "mfabypasses", None),
        ("patch", "mfarecall.io", "mfabypasses/status", None),
        ("create", "events.k8s.io", "events", None),
        ("patch", "events.k8s.io", "events", None),
        ("get", "", "secrets", Some("corp-okta-credentials")),
        ("create", "mfarecall.io", "recallledgersegments", None),
        ("patch", "mfarecall.io", "recallledgersegments", None),
        ("list", "mfarecall.io", "recallledgersegments", None),
        ("get", "mfarecall.io", "recallledgersegments", None),
        ("create", "coordination.k8s.io", "leases", None),
        ("get", "coordination.k8s.io", "leases", lease),
        ("update", "coordination.k8s.io", "leases", lease),
    ];
    for (verb, group, resource, name) in needed {
        assert!(may(&client, &sa, ns, verb, group, resource, name).await, "the ServiceAccount must be allowed to {verb} {group}/{resource}");
    }
    let other = "default";
    let refused = [
        (ns, "create", "", "secrets", None),
        (ns, "update", "", "secrets", Some("corp-okta-credentials")),
        (ns, "patch", "", "secrets", Some("corp-okta-credentials")),
        (ns, "delete", "", "secrets", Some("corp-okta-credentials")),
        (ns, "list", "", "secrets", None),
        (ns, "watch", "", "secrets", None),
        // Recalls it creates for policies (create); it never deletes one, nor writes a policy.
        (ns, "delete", "mfarecall.io", "mfarecalls", None),
        (ns, "create", "mfarecall.io", "mfarecallpolicies", None),
        (ns, "patch", "mfarecall.io", "mfarecallpolicies", None),
        (ns, "create", "mfarecall.io", "identitybackends", None),
        // Bypasses are requested and approved by people; the operator never writes their spec.
        (ns, "create", "mfarecall.io", "mfabypasses", None),
        (ns, "patch", "mfarecall.io", "mfabypasses", None),
        (ns, "get", "", "pods", None),
        (ns, "create", "", "pods", None),
        (ns, "delete", "mfarecall.io", "recallledgersegments", None),
        (ns, "update", "mfarecall.io", "recallledgersegments", None),
        (ns, "create", "", "configmaps", None),
        (ns, "update", "", "configmaps", None),
        (ns, "get", "", "configmaps", None),
        (ns, "create", "", "events", None),
        (ns, "update", "coordination.k8s.io", "leases", Some("someone-elses-lease")),
        (ns, "delete", "coordination.k8s.io", "leases", lease),
        (ns, "create", "rbac.authorization.k8s.io", "rolebindings", None),
        (other, "get", "", "secrets", Some("corp-okta-credentials")),
        (other, "list", "mfarecall.io", "mfarecalls", None),
        (other, "patch", "mfarecall.io", "mfarecalls/status", None),
        (other, "create", "mfarecall.io", "recallledgersegments", None),
        (other, "create", "events.k8s.io", "events", None),
        ("", "list", "mfarecall.io", "mfarecalls", None),
        ("", "create", "apiextensions.k8s.io", "customresourcedefinitions", None),
        ("", "update", "apiextensions.k8s.io", "customresourcedefinitions", Some(CRDS[1])),
    ];
    for (namespace, verb, group, resource, name) in refused {
        assert!(!may(&client, &sa, namespace, verb, group, resource, name).await, "the ServiceAccount must be refused {verb} {group}/{resource} in {namespace:?}");
    }
    // The console's: impersonate people and ask who a token is and what someone may do; nothing
    // it could read or write on its own, and none of the operator's rights.
    let console = format!("system:serviceaccount:{ns}:{console_sa}");
    let needed = [
        ("impersonate", "", "users", Some("oidc:alice")),
        ("impersonate", "", "groups", Some("oidc:incident-commanders")),
        ("impersonate", "", "serviceaccounts", Some("automation")),
        ("create", "authentication.k8s.io", "tokenreviews", None),
        ("create", "authorization.k8s.io", "subjectaccessreviews", None),
    ];
    for (verb, group, resource, name) in needed {
        assert!(may(&client, &console, "", verb, group, resource, name).await, "the console must be allowed to {verb} {group}/{resource}");
    }
    let refused = [
        (ns, "get", "", "secrets", Some("corp-okta-credentials")),
        (ns, "list", "", "secrets", None),
        (other, "get", "", "secrets", None),
        (ns, "get", "mfarecall.io", "mfarecalls", None),
        (ns, "list", "mfarecall.io", "mfarecalls", None),
        (ns, "create", "mfarecall.io", "mfarecalls", None),
        (ns, "patch", "mfarecall.io", "mfabypasses/status", None),
        (ns, "create", "mfarecall.io", "mfabypasses", None),
        (ns, "create", "events.k8s.io", "events", None),
        (ns, "create", "coordination.k8s.io", "leases", None),
        (ns, "create", "", "pods", None),
        ("", "impersonate", "authentication.k8s.io", "userextras", None),
        ("", "create", "rbac.authorization.k8s.io", "clusterrolebindings", None),
    ];
    for (namespace, verb, group, resource, name) in refused {
        assert!(!may(&client, &console, namespace, verb, group, resource, name).await, "the console must be refused {verb} {group}/{resource} in {namespace:?}");
    }

    // The operator itself, run here under the ServiceAccount's identity (no kubelet runs the
    // Deployment in this test cluster), completes a recall against a simulated Okta.
    let kubeconfig = parts.file("helm-sa.kubeconfig");
    support::service_account_kubeconfig(&client, ns, RELEASE, &kubeconfig).await;
    let as_operator = client_from(&kubeconfig).await;
    let denied = Api::<Secret>::namespaced(as_operator.clone(), ns)
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "planted"}})).unwrap())
        .await;
    assert!(matches!(&denied, Err(kube::Error::Api(s)) if s.code == 403), "writing a Secret is refused for real: {denied:?}");
    Api::<MfaRecall>::namespaced(as_operator.clone(), ns).list(&ListParams::default()).await.expect("listing recalls works for real");

    const USERS: u32 = 60;
    let subject = SimSubject::start("okta").await.unwrap();
    subject.sim.provider.seed(&Seed { users: USERS, ..Seed::default() });
    let limits = BackendLimits { requests_per_second: 500, max_concurrency: 8, ..Default::default() };
    cluster::create_backend(&client, ns, "corp-okta", subject.backend_spec("corp-okta-credentials", limits), &subject.secret).await.unwrap();
    let audit_file = parts.file("helm-audit.jsonl");
    let log_file = parts.file("helm-operator.log");
    // As the Deployment runs it: with leader election on the chart's Lease, the health
    // endpoints, and the ledger key from the Secret the chart made (as the kubelet mounts it).
    let addr = support::free_addr();
    let ledger_key = Api::<Secret>::namespaced(client.clone(), ns).get("mfa-recall-operator-ledger-key").await.expect("the chart made the ledger key");
    assert_eq!(ledger_key.metadata.annotations.as_ref().unwrap()["helm.sh/resource-policy"], "keep", "recalls under way still need it after an uninstall");
    assert!(ledger_key.data.as_ref().unwrap()["key"].0.len() >= mfa_recall::keys::MIN_KEY_BYTES);
    let ledger_key_file = parts.file("helm-ledger.key");
    std::fs::write(&ledger_key_file, &ledger_key.data.unwrap()["key"].0).unwrap();
    let operator = Operator::start_with_kubeconfig(
        ns,
        &audit_file,
        &log_file,
        &kubeconfig,
        &["--leader-election", "--lease-name", "mfa-recall-operator", "--lease-namespace", ns, "--metrics-addr", &addr, "--ledger-key-file", ledger_key_file.to_str().unwrap()],
    );

    let cutoff = jiff::Timestamp::now();
    let before = subject.sim.provider.census(Some(cutoff));
    cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "helm-installed"},
        "spec": {"reason": "INC-9 the chart's ServiceAccount runs a recall", "backends": ["corp-okta"], "cutoff": cutoff.to_string(),
                 "scope": {"allUsers": true, "exclude": {"users": [username(7)]}},
                 "reEnrollment": {"gracePeriod": "1h", "checkInterval": "10s"}}
    }))
    .await
    .unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), ns);
    let recall = cluster::wait_for(&recalls, "helm-installed", Duration::from_secs(120), |r| {
        r.status.as_ref().is_some_and(|s| s.phase == RecallPhase::AwaitingReEnrollment)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let counts = recall.status.unwrap().counts;
    assert_eq!((counts.targeted, counts.invalidated, counts.excluded, counts.failed), (USERS as i64, USERS as i64 - 1, 1, 0), "{counts:?}");
    let after = subject.sim.provider.census(Some(cutoff));
    let lost: BTreeMap<String, i64> = before
        .factors_before_cutoff
        .iter()
        .map(|(k, n)| (k.clone(), (*n - after.factors_before_cutoff.get(k).copied().unwrap_or(0)) as i64))
        .filter(|(_, n)| *n > 0)
        .collect();
    let revoked: BTreeMap<String, i64> = counts.factors_revoked.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k.as_str().to_string(), *n)).collect();
    assert_eq!(revoked, lost, "counts equal what the provider lost");
    let log = operator.log();
    assert!(!log.contains("forbidden") && !log.contains("Forbidden"), "the operator was refused something it needs:\n{log}");
    assert!(log.contains("became the leader"), "the chart's Lease permissions suffice for leader election:\n{log}");
    assert_eq!(support::get(&format!("http://{addr}/readyz")).await.0, 200);
    assert_eq!(support::get(&format!("http://{addr}/livez")).await.0, 200);
    drop(operator);

    // Upgrade to a newer chart version: the CRDs are upgraded with it (Helm's crds/ folder would
    // leave them as first installed).
    let newer = parts.work_dir.join(format!("chart-{ns}"));
    copy_dir(&chart, &newer);
    let chart_yaml = std::fs::read_to_string(newer.join("Chart.yaml")).unwrap().replace("\nversion: 0.1.0\n", "\nversion: 0.1.1\n");
    std::fs::write(newer.join("Chart.yaml"), chart_yaml).unwrap();
    helm_ok(&["upgrade", RELEASE, newer.to_str().unwrap(), "--namespace", ns, "--reuse-values"]);
    std::fs::remove_dir_all(&newer).unwrap();
    for crd in CRDS {
        let labels = crds.get(crd).await.unwrap().metadata.labels.unwrap();
        assert_eq!(labels["helm.sh/chart"], "mfa-recall-operator-0.1.1", "{crd} is upgraded with the release");
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let upgraded_key = secrets.get("mfa-recall-operator-ledger-key").await.unwrap().data.unwrap()["key"].0.clone();
    assert_eq!(upgraded_key, std::fs::read(&ledger_key_file).unwrap(), "an upgrade keeps the ledger key: the ledger written before reads back");

    // Uninstall: the release's objects go, the CRDs and the recall history stay.
    helm_ok(&["uninstall", RELEASE, "--namespace", ns]);
    release.installed = false;
    let roles: Api<Role> = Api::namespaced(client.clone(), ns);
    assert!(roles.get_opt(RELEASE).await.unwrap().is_none(), "the release's Role is gone");
    assert!(Api::<ClusterRole>::all(client.clone()).get_opt(&console_sa).await.unwrap().is_none(), "so is the console's ClusterRole");
    for crd in CRDS {
        assert!(crds.get_opt(crd).await.unwrap().is_some(), "{crd} survives helm uninstall");
    }
    assert!(recalls.get_opt("helm-installed").await.unwrap().is_some(), "the recall's history survives helm uninstall");
    assert!(secrets.get_opt("mfa-recall-operator-ledger-key").await.unwrap().is_some(), "so does the key its ledger is read with");
}
