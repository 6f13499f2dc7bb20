//! The operator's view of a simulator under test: the IdentityBackend and Secret objects that
//! reach it, typed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use mfa_recall::api::{BackendLimits, IdentityBackend, IdentityBackendSpec};
use serde_json::json;

pub use idp_sim::subject::{SIMULATED, Subject as SimSubject, generate_rsa_pem};

/// IdentityBackend and Secret objects for a simulator under test.
pub trait SimBackend {
    /// The IdentityBackend spec that reaches this simulator with `credentials_secret` and `limits`.
    fn backend_spec(&self, credentials_secret: &str, limits: BackendLimits) -> IdentityBackendSpec;
    /// An IdentityBackend object (not stored anywhere) for in-process use with `backends::connect`.
    fn backend(&self, namespace: &str, name: &str, limits: BackendLimits) -> IdentityBackend;
    /// The credentials Secret as an object (not stored anywhere).
    fn secret_object(&self, name: &str, data: &BTreeMap<String, String>) -> Secret;
}

impl SimBackend for SimSubject {
    fn backend_spec(&self, credentials_secret: &str, limits: BackendLimits) -> IdentityBackendSpec {
        let limits = serde_json::to_value(limits).expect("limits serialize");
        serde_json::from_value(self.backend_spec_json(credentials_secret, limits)).expect("provider blocks match the API types")
    }

    fn backend(&self, namespace: &str, name: &str, limits: BackendLimits) -> IdentityBackend {
        let mut backend = IdentityBackend::new(name, self.backend_spec(&format!("{name}-credentials"), limits));
        backend.metadata.namespace = Some(namespace.to_string());
        backend
    }

    fn secret_object(&self, name: &str, data: &BTreeMap<String, String>) -> Secret {
        serde_json::from_value(json!({ "metadata": { "name": name }, "stringData": data })).expect("a Secret from strings")
    }
}
