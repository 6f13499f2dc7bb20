use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
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
#[x_kube(validation = Rule::new("[has(self.keycloak), has(self.okta), has(self.entra), has(self.auth0), has(self.google), has(self.duo), has(self.webhook)].filter(x, x).size() == 1").message("set exactly one provider block: keycloak, okta, entra, auth0, google, duo or webhook"))]
#[serde(rename_all = "camelCase")]
pub struct IdentityBackendSpec {
    /// The provider and how to reach it: one block, named after the provider.
    #[serde(flatten)]
    pub provider: ProviderBlock,
    /// Client-side limits on the requests the operator sends to this provider.
    #[serde(default)]
    pub limits: BackendLimits,
    /// Allow http:// URLs to hosts other than loopback. Credentials, tokens and every answer then cross the network in clear, readable and changeable by anyone on the path: for a test lab only. The IdentityBackend's status names it among its limitations.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// How long this provider's logs take to show an event, as a duration such as 2m. A factor whose creation time the provider does not give is deleted only once its logs, this long after the user's factors were listed, show it predates the cutoff. Defaults to the delay the provider documents; set it lower only for a test double.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_delay: Option<String>,
    /// Break-glass accounts: the organisation's way in when everything else fails. No recall touches them (they are excluded as exclude.users would), and before a recall revokes anything it checks that each exists, is enabled and holds a factor; one that does not stops the recall (reason LockoutRisk) until it is fixed or the recall sets acknowledgeLockoutRisk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub break_glass: Vec<String>,
    /// Groups whose members run the organisation (administrators). A recall that reaches any of their members, at any depth, waits (reason LockoutRisk) unless this backend names a working break-glass account or the recall sets acknowledgeLockoutRisk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub privileged_groups: Vec<String>,
}

/// The providers the operator can recall from, one block each. Every list of providers in the
/// operator is a match on this enum, so adding one is a compile error everywhere it must be handled.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum ProviderBlock {
    /// A Keycloak realm, reached through its Admin REST API with a confidential client's service account.
    Keycloak(KeycloakProvider),
    /// An Okta org, reached through its Management API.
    Okta(OktaProvider),
    /// A Microsoft Entra ID tenant, reached through Microsoft Graph with an app registration.
    Entra(EntraProvider),
    /// An Auth0 tenant, reached through its Management API v2 with a machine-to-machine application.
    Auth0(Auth0Provider),
    /// A Google Workspace domain, reached through the Admin SDK with a service account and domain-wide delegation.
    Google(GoogleProvider),
    /// A Duo account, reached through its Admin API.
    Duo(DuoProvider),
    /// An in-house identity store, reached through the backend protocol (docs/backend-protocol.md).
    Webhook(WebhookProvider),
}

impl ProviderBlock {
    /// The block's name in the spec, for status and messages.
    pub fn name(&self) -> &'static str {
        match self {
            ProviderBlock::Keycloak(_) => "keycloak",
            ProviderBlock::Okta(_) => "okta",
            ProviderBlock::Entra(_) => "entra",
            ProviderBlock::Auth0(_) => "auth0",
            ProviderBlock::Google(_) => "google",
            ProviderBlock::Duo(_) => "duo",
            ProviderBlock::Webhook(_) => "webhook",
        }
    }

    /// Every URL the block configures, with the field that sets it (defaults are https).
    pub fn urls(&self) -> Vec<(&'static str, &str)> {
        match self {
            ProviderBlock::Keycloak(p) => vec![("spec.keycloak.url", &p.url)],
            ProviderBlock::Okta(p) => vec![("spec.okta.url", &p.url)],
            ProviderBlock::Entra(p) => [("spec.entra.graphUrl", &p.graph_url), ("spec.entra.loginUrl", &p.login_url)].into_iter().filter_map(|(f, u)| Some((f, u.as_deref()?))).collect(),
            ProviderBlock::Auth0(p) => vec![("spec.auth0.url", &p.url)],
            ProviderBlock::Google(p) => p.url.as_deref().map(|u| ("spec.google.url", u)).into_iter().collect(),
            ProviderBlock::Duo(p) => vec![("spec.duo.url", &p.url)],
            ProviderBlock::Webhook(p) => vec![("spec.webhook.url", &p.url)],
        }
    }

    /// The Secret the provider's credentials are read from.
    pub fn credentials_secret_ref(&self) -> &SecretRef {
        match self {
            ProviderBlock::Keycloak(p) => &p.credentials_secret_ref,
            ProviderBlock::Okta(p) => &p.credentials_secret_ref,
            ProviderBlock::Entra(p) => &p.credentials_secret_ref,
            ProviderBlock::Auth0(p) => &p.credentials_secret_ref,
            ProviderBlock::Google(p) => &p.credentials_secret_ref,
            ProviderBlock::Duo(p) => &p.credentials_secret_ref,
            ProviderBlock::Webhook(p) => &p.credentials_secret_ref,
        }
    }
}

/// The annotation by which a Secret lets IdentityBackends use it: a comma-separated list of
/// their names in the Secret's namespace, or `*` for any. A Secret without it is used by none.
pub const SECRET_OPT_IN: &str = "mfarecall.io/identity-backends";

/// Whether `secret`'s annotation lets the IdentityBackend `backend` use it.
pub fn secret_opts_in(secret: &k8s_openapi::api::core::v1::Secret, backend: &str) -> bool {
    let Some(allowed) = secret.metadata.annotations.as_ref().and_then(|a| a.get(SECRET_OPT_IN)) else { return false };
    allowed.split(',').map(str::trim).any(|name| name == "*" || name == backend)
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

/// Connection to one Okta org.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OktaProvider {
    /// The org URL, for example https://example.okta.com.
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("url must start with https:// or http://"))]
    pub url: String,
    /// Secret in this namespace with either `api-token` (an SSWS API token of an admin who can manage
    /// users and read the System Log), or `client-id` and `private-key` (PEM; optional `key-id`) of an
    /// API service app granted okta.users.read, okta.users.manage, okta.groups.read and okta.logs.read.
    pub credentials_secret_ref: SecretRef,
}

/// Connection to one Microsoft Entra ID tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EntraProvider {
    /// Directory (tenant) ID or a verified domain.
    #[schemars(length(min = 1))]
    pub tenant_id: String,
    /// Microsoft Graph endpoint; default https://graph.microsoft.com (national clouds differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("graphUrl must start with https:// or http://"))]
    pub graph_url: Option<String>,
    /// Token authority; default https://login.microsoftonline.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("loginUrl must start with https:// or http://"))]
    pub login_url: Option<String>,
    /// Secret in this namespace with `client-id` and `client-secret` of an app registration granted the
    /// application permissions User.Read.All, GroupMember.Read.All, UserAuthenticationMethod.ReadWrite.All,
    /// User.RevokeSessions.All and AuditLog.Read.All (admin consent given).
    pub credentials_secret_ref: SecretRef,
}

/// Connection to one Auth0 tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Auth0Provider {
    /// The tenant URL, for example https://example.eu.auth0.com.
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("url must start with https:// or http://"))]
    pub url: String,
    /// Secret in this namespace with `client-id` and `client-secret` of a machine-to-machine application
    /// authorized for the Management API with read:users, update:users, read:roles,
    /// read:authentication_methods, delete:authentication_methods, read:sessions, delete:sessions,
    /// read:refresh_tokens, delete:refresh_tokens, read:mfa_policies and read:logs.
    pub credentials_secret_ref: SecretRef,
}

/// Connection to one Google Workspace domain.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GoogleProvider {
    /// An administrator the service account acts as (domain-wide delegation), for example secadmin@example.com.
    #[schemars(length(min = 3))]
    pub admin_email: String,
    /// Customer ID; default my_customer (the administrator's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// Admin SDK endpoint; default https://admin.googleapis.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("url must start with https:// or http://"))]
    pub url: Option<String>,
    /// Secret in this namespace with key `service-account.json`: the service account's JSON key, its
    /// client ID allowed in the Admin console (domain-wide delegation) the scopes
    /// admin.directory.user.security, admin.directory.user.readonly, admin.directory.group.readonly and
    /// admin.reports.audit.readonly (and admin.directory.user when reEnrollment.onDeadline is Disable).
    pub credentials_secret_ref: SecretRef,
}

/// Connection to one Duo account.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DuoProvider {
    /// The API hostname as a URL, for example https://api-XXXXXXXX.duosecurity.com.
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("url must start with https:// or http://"))]
    pub url: String,
    /// Secret in this namespace with `integration-key` and `secret-key` of an Admin API application
    /// granted "Grant read resource", "Grant write resource" and "Grant read log".
    pub credentials_secret_ref: SecretRef,
}

/// Connection to an in-house identity store that serves the backend protocol.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookProvider {
    /// Base URL of the store's backend-protocol endpoint, for example https://auth-backend.internal:8443 (https; http only to loopback, or with spec.insecure).
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("url must start with https:// or http://"))]
    pub url: String,
    /// Secret in this namespace with what the store knows the operator by: key `token` (a bearer token), keys `tls.crt` and `tls.key` (a client certificate for mutual TLS; https only), or both; with `ca.crt`, the only authorities trusted for the store's certificate.
    pub credentials_secret_ref: SecretRef,
}

/// A reference to a Secret in the IdentityBackend's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret. The Secret names the IdentityBackends that may use it in its annotation mfarecall.io/identity-backends (comma-separated, or *); one that does not name this backend is not used.
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
    /// The longest answer read from the provider, in bytes (default 16 MiB); a longer one fails the call it answers instead of filling the operator's memory.
    #[serde(default = "default_max_response_bytes")]
    #[schemars(range(min = 65536, max = 1073741824))]
    pub max_response_bytes: i64,
    /// The percentage of a rate limit the provider announces (`X-Rate-Limit-Limit`) that recalls may use; the rest is left to the organisation's other clients of the same quota (provisioning, SSO integrations). See docs/providers.md.
    #[serde(default = "default_budget_share")]
    #[schemars(range(min = 1, max = 100))]
    pub budget_share: i32,
}

impl Default for BackendLimits {
    fn default() -> Self {
        Self { requests_per_second: default_rps(), max_concurrency: default_concurrency(), max_response_bytes: default_max_response_bytes(), budget_share: default_budget_share() }
    }
}

fn default_max_response_bytes() -> i64 {
    16 << 20
}

fn default_budget_share() -> i32 {
    75
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
    /// What this provider cannot do, each as "area: why"; recalls on it still do everything else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limitations: Vec<String>,
    /// Ready says whether the endpoint answered and the credentials were accepted, with a reason to act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn a_secret_is_used_only_by_the_backends_its_annotation_names() {
        let secret = |annotation: Option<&str>| -> k8s_openapi::api::core::v1::Secret {
            let annotations = annotation.map(|a| serde_json::json!({ SECRET_OPT_IN: a })).unwrap_or(serde_json::json!({}));
            serde_json::from_value(serde_json::json!({ "metadata": { "name": "s", "annotations": annotations } })).unwrap()
        };
        assert!(!secret_opts_in(&secret(None), "corp-okta"), "no annotation: no backend");
        assert!(secret_opts_in(&secret(Some("corp-okta")), "corp-okta"));
        assert!(secret_opts_in(&secret(Some("legacy, corp-okta ,other")), "corp-okta"));
        assert!(secret_opts_in(&secret(Some("*")), "anything"));
        assert!(!secret_opts_in(&secret(Some("corp-okta-2,okta")), "corp-okta"), "names are matched whole");
        assert!(!secret_opts_in(&secret(Some("")), "corp-okta"));
    }

    /// The CRD's rule that one block is set lists the blocks by hand (CEL cannot read the enum):
    /// it must name each block the schema has, and no other.
    #[test]
    fn the_one_block_rule_names_every_provider_block() {
        let crd = serde_json::to_value(IdentityBackend::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let blocks: Vec<&str> = spec["oneOf"].as_array().expect("the schema lets exactly one block be set").iter().map(|b| b["required"][0].as_str().unwrap()).collect();
        let rule = spec["x-kubernetes-validations"][0]["rule"].as_str().unwrap();
        let named: Vec<&str> = rule.match_indices("has(self.").map(|(at, _)| rule[at + 9..].split(')').next().unwrap()).collect();
        assert_eq!(blocks, named);
        assert_eq!(blocks.len(), 7);
        for block in &blocks {
            assert!(spec["properties"][block].is_object(), "{block} is a property of spec");
        }
    }

    #[test]
    fn a_spec_reads_its_one_block_and_refuses_none() {
        let spec: IdentityBackendSpec = serde_json::from_value(serde_json::json!({ "duo": { "url": "https://api-1.duosecurity.com", "credentialsSecretRef": { "name": "d" } }, "limits": { "requestsPerSecond": 5 } })).unwrap();
        assert_eq!(spec.provider.name(), "duo");
        assert_eq!(spec.provider.credentials_secret_ref().name, "d");
        assert_eq!(spec.limits.requests_per_second, 5);
        assert_eq!(serde_json::to_value(&spec).unwrap()["duo"]["url"], "https://api-1.duosecurity.com");
        assert!(serde_json::from_value::<IdentityBackendSpec>(serde_json::json!({ "limits": {} })).is_err());
    }
}
