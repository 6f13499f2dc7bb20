//! The committed CRDs in crds/ must be exactly what the Rust types generate.

#[test]
fn committed_crds_match_the_rust_types() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/mfarecall.io.yaml")).unwrap();
    let generated = mfa_recall::api::crds_yaml();
    assert!(
        committed == generated,
        "crds/mfarecall.io.yaml is out of date: run `cargo run -- crds > crds/mfarecall.io.yaml` and commit it"
    );
}

/// `kubectl explain` shows descriptions as written: each is paragraphs, never a line broken
/// mid-sentence where the doc comment was wrapped.
#[test]
fn descriptions_are_paragraphs_for_kubectl_explain() {
    fn walk(path: &str, value: &serde_json::Value, broken: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map {
                    match child.as_str() {
                        Some(text) if key == "description" && text.replace("\n\n", "").contains('\n') => broken.push(path.to_string()),
                        _ => walk(&format!("{path}.{key}"), child, broken),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(path, i, broken)),
            _ => {}
        }
    }
    let mut broken = Vec::new();
    for crd in mfa_recall::api::crds() {
        walk(&crd.spec.names.kind, &serde_json::to_value(&crd).unwrap(), &mut broken);
    }
    assert!(broken.is_empty(), "descriptions with a line break inside a paragraph: {broken:?}");
}

#[test]
fn every_schema_field_has_a_description_for_kubectl_explain() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, sub) in props {
                let here = format!("{path}.{name}");
                let is_meta = matches!(name.as_str(), "metadata" | "apiVersion" | "kind");
                // Conditions are the standard metav1.Condition, documented upstream.
                if !is_meta && sub.get("description").is_none() && !path.ends_with("conditions") {
                    missing.push(here.clone());
                }
                if name != "conditions" {
                    walk(&here, sub, missing);
                }
            }
        }
        if let Some(items) = schema.get("items") {
            walk(path, items, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in mfa_recall::api::crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema).unwrap();
        walk(&crd.spec.names.kind, &schema, &mut missing);
    }
    assert!(missing.is_empty(), "fields without a doc comment: {missing:?}");
}

/// Every example in examples/ parses as the types it claims to be, so the docs cannot drift from the API.
#[test]
fn examples_match_the_api() {
    use serde::Deserialize;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut backends = Vec::new();
    let (mut secrets, mut uses) = (std::collections::HashMap::new(), Vec::new());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = serde_norway::Value::deserialize(document).unwrap();
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
            let checked = match kind.as_str() {
                "IdentityBackend" => serde_norway::from_value::<mfa_recall::api::IdentityBackend>(value).map(|b| {
                    backends.push(b.spec.provider.name());
                    uses.push((kube::ResourceExt::name_any(&b), b.spec.provider.credentials_secret_ref().name.clone()));
                }),
                "MfaRecall" => serde_norway::from_value::<mfa_recall::api::MfaRecall>(value).map(|_| ()),
                "MfaBypass" => serde_norway::from_value::<mfa_recall::api::MfaBypass>(value).map(|_| ()),
                "MfaRecallPolicy" => serde_norway::from_value::<mfa_recall::api::MfaRecallPolicy>(value).map(|_| ()),
                "Role" => serde_norway::from_value::<k8s_openapi::api::rbac::v1::Role>(value).map(|_| ()),
                "Secret" => serde_norway::from_value::<k8s_openapi::api::core::v1::Secret>(value).map(|s| {
                    secrets.insert(kube::ResourceExt::name_any(&s), s);
                }),
                other => panic!("{}: unexpected kind {other:?}", path.display()),
            };
            checked.unwrap_or_else(|e| panic!("{}: {kind} does not match the API: {e}", path.display()));
        }
    }
    backends.sort();
    assert_eq!(backends, ["auth0", "duo", "entra", "google", "keycloak", "okta"], "one example IdentityBackend per provider");
    for (backend, secret) in uses {
        assert!(mfa_recall::api::secret_opts_in(&secrets[&secret], &backend), "the example Secret {secret} lets {backend} use it");
    }
}

/// crds/ is Kustomize-ready (`kubectl apply -k crds/`, or a GitOps tool pointed at it): its
/// Kustomization (named without an extension, so `kubectl apply -f crds/` reads it not) lists
/// every manifest in the folder, and kustomize builds exactly their objects.
#[test]
fn the_crds_folder_builds_with_kustomize_to_the_same_objects() {
    use serde::Deserialize;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
    let kustomization: serde_json::Value = serde_norway::from_str(&std::fs::read_to_string(format!("{dir}/Kustomization")).unwrap()).unwrap();
    let listed: std::collections::BTreeSet<String> = kustomization["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
    let mut files = std::collections::BTreeSet::new();
    let mut objects = std::collections::BTreeSet::new();
    let identity = |v: &serde_json::Value| format!("{}/{}", v["kind"].as_str().unwrap_or_default(), v["metadata"]["name"].as_str().unwrap_or_default());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            files.insert(path.file_name().unwrap().to_string_lossy().into_owned());
            for document in serde_norway::Deserializer::from_str(&std::fs::read_to_string(&path).unwrap()) {
                let value = serde_json::to_value(serde_norway::Value::deserialize(document).unwrap()).unwrap();
                if !value.is_null() {
                    objects.insert(identity(&value));
                }
            }
        }
    }
    assert_eq!(listed, files, "crds/Kustomization lists every manifest in crds/");
    let kubectl = std::env::var("MFA_RECALL_KUBECTL").unwrap_or_else(|_| panic!("MFA_RECALL_KUBECTL is not set: this test runs `kubectl kustomize`; build kubectl with `hack/parts.sh all` and source the env file of `hack/localparts.sh start DIR` (hack/test.sh does both)"));
    let out = std::process::Command::new(&kubectl).args(["kustomize", dir]).output().unwrap_or_else(|e| panic!("{kubectl}: {e}"));
    assert!(out.status.success(), "kubectl kustomize crds/: {}", String::from_utf8_lossy(&out.stderr));
    let built: std::collections::BTreeSet<String> = serde_norway::Deserializer::from_str(&String::from_utf8(out.stdout).unwrap())
        .map(|d| identity(&serde_json::to_value(serde_norway::Value::deserialize(d).unwrap()).unwrap()))
        .collect();
    assert_eq!(built, objects, "kustomize builds the same objects as the folder holds");
    assert!(built.contains("CustomResourceDefinition/mfabypasses.mfarecall.io") && built.contains("ValidatingAdmissionPolicy/mfabypasses.mfarecall.io-dual-control"), "{built:?}");
}
