//! The custom resources of group `mfarecall.io/v1alpha1`: types only, no behaviour.

mod backend;
mod conditions;
mod recall;

pub use backend::*;
pub use conditions::*;
pub use recall::*;

pub const GROUP: &str = "mfarecall.io";

/// The CRDs as one YAML stream, as committed in `crds/`.
pub fn crds_yaml() -> String {
    use kube::CustomResourceExt;
    let mut out = String::new();
    for crd in [IdentityBackend::crd(), MfaRecall::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("CRDs serialize"));
    }
    out
}
