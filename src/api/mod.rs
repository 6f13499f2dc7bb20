//! The custom resources of group `mfarecall.io/v1alpha1`: types only, no behaviour.

mod backend;
mod bypass;
mod conditions;
mod ledger;
mod policy;
mod recall;

pub use backend::*;
pub use bypass::*;
pub use conditions::*;
pub use ledger::*;
pub use policy::*;
pub use recall::*;

pub const GROUP: &str = "mfarecall.io";

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The CRDs, their field descriptions as paragraphs: doc comments are wrapped for the source,
/// and `kubectl explain` would show those line breaks mid-sentence.
pub fn crds() -> [CustomResourceDefinition; 5] {
    use kube::CustomResourceExt;
    [IdentityBackend::crd(), MfaRecall::crd(), MfaRecallPolicy::crd(), MfaBypass::crd(), RecallLedgerSegment::crd()].map(|crd| {
        let mut value = serde_json::to_value(&crd).expect("CRDs serialize");
        unwrap_descriptions(&mut value);
        serde_json::from_value(value).expect("CRDs deserialize")
    })
}

/// Joins the lines of every `description` into paragraphs: a single line break becomes a space,
/// a blank line stays a paragraph break.
fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match child {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = text.split("\n\n").map(|paragraph| paragraph.split('\n').map(str::trim).collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n\n");
                    }
                    _ => unwrap_descriptions(child),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// The CRDs as one YAML stream, as committed in `crds/`.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd).expect("CRDs serialize"));
    }
    out
}
