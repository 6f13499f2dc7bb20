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
    use kube::CustomResourceExt;
    let mut missing = Vec::new();
    for crd in [mfa_recall::api::IdentityBackend::crd(), mfa_recall::api::MfaRecall::crd()] {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema).unwrap();
        walk(&crd.spec.names.kind, &schema, &mut missing);
    }
    assert!(missing.is_empty(), "fields without a doc comment: {missing:?}");
}
