use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// One identity provider the operator can recall MFA factors from. Set exactly one provider block.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mfarecall.io",
    version = "v1alpha1",
    kind = "IdentityBackend",
    namespaced,
    shortname = "idb",
    category = "mfa",
    status = "IdentityBackendStatus",
    doc = "An identity provider connection used by MfaRecalls: endpoint, credentials Secret and request limits.",
    printcolumn(name = "Type", type_ = "string", json_path = ".status.providerType"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("[has(self.keycloak)].filter(x, x).size() == 1").message("set exactly one provider block: keycloak"))]
#[serde(rename_all = "camelCase")]
pub struct IdentityBackendSpec {
    /// A Keycloak realm, reached through its Admin REST API with a confidential client's service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keycloak: Option<KeycloakProvider>,
    /// Client-side limits on the requests the operator sends to this provider.
    #[serde(default)]
    pub limits: BackendLimits,
}

/// Connection to one Keycloak realm.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeycloakProvider {
    /// Base URL of the Keycloak server, for example https://sso.example.com (no /admin suffix).
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("url must start with https:// or http://"))]
    pub url: String,
    /// Realm whose users are recalled.
    #[schemars(length(min = 1))]
    pub realm: String,
    /// Realm the client authenticates in; defaults to `realm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_realm: Option<String>,
    /// Secret in this namespace with keys `client-id` and `client-secret` of a confidential client
    /// whose service account holds the realm-management roles view-users, manage-users and view-events.
    pub credentials_secret_ref: SecretRef,
}

/// A reference to a Secret in the IdentityBackend's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Limits that keep the recall inside what the provider tolerates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendLimits {
    /// Requests per second sent to the provider, all recalls together.
    #[serde(default = "default_rps")]
    #[schemars(range(min = 1, max = 100000))]
    pub requests_per_second: i32,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_concurrency: i32,
}

impl Default for BackendLimits {
    fn default() -> Self {
        Self { requests_per_second: default_rps(), max_concurrency: default_concurrency() }
    }
}

fn default_rps() -> i32 {
    50
}
fn default_concurrency() -> i32 {
    8
}

/// What the operator last saw of this provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IdentityBackendStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The provider block that is set, for example keycloak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_type: Option<String>,
    /// What this provider lets a recall do (listFactors, factorCreationTime, deleteFactor, revokeSessions, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Ready says whether the endpoint answered and the credentials were accepted, with a reason to act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
