//! Identity provider adapters behind one trait. Shared HTTP plumbing (tokens, pacing, retries)
//! lives in `http`; each provider module only knows its own paths and shapes.

pub mod http;
pub mod keycloak;

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use serde::{Deserialize, Serialize};

use crate::api::{FactorKind, IdentityBackend};

/// A user as the provider names it: the stable id for API calls, the username for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: String,
    pub username: String,
}

/// One page of users in scope; `next` is an opaque cursor for the following page.
#[derive(Debug)]
pub struct UserPage {
    pub users: Vec<UserRef>,
    pub next: Option<String>,
}

/// What the scope asks for on one backend.
#[derive(Clone, Debug)]
pub enum ScopeSelector {
    AllUsers,
    Groups(Vec<String>),
    Users(Vec<String>),
}

/// One factor that existed before the cutoff and is to be invalidated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactorRef {
    pub id: String,
    pub kind: FactorKind,
    /// The provider's own type name (for example `otp`), needed to re-enroll the same kind.
    pub provider_type: String,
}

/// What a user holds before anything is touched: recorded durably so a resumed recall deletes
/// only these factors and counts exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSnapshot {
    pub factors: Vec<FactorRef>,
    /// Sessions and offline grants alive at snapshot time.
    pub sessions: u64,
    /// Provider-specific handles needed to end those sessions (for Keycloak, clients with offline tokens).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub session_handles: Vec<String>,
}

/// A new factor seen after the cutoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub kind: FactorKind,
    pub at: jiff::Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    /// The factor was already gone (a previous attempt of this recall, or the user).
    AlreadyGone,
}

/// What a provider lets a recall do. Listed in IdentityBackend status; missing ones are named in
/// the recall's status instead of being silently skipped.
#[derive(Clone, Debug, Default)]
pub struct Capabilities {
    pub list_factors: bool,
    pub factor_creation_time: bool,
    pub delete_factor: bool,
    pub revoke_sessions: bool,
    pub force_re_enrollment: bool,
    pub enrollment_detection: bool,
    pub disable_user: bool,
}

impl Capabilities {
    pub fn names(&self) -> Vec<String> {
        [
            (self.list_factors, "listFactors"),
            (self.factor_creation_time, "factorCreationTime"),
            (self.delete_factor, "deleteFactor"),
            (self.revoke_sessions, "revokeSessions"),
            (self.force_re_enrollment, "forceReEnrollment"),
            (self.enrollment_detection, "enrollmentDetection"),
            (self.disable_user, "disableUser"),
        ]
        .into_iter()
        .filter(|(has, _)| *has)
        .map(|(_, name)| name.to_string())
        .collect()
    }
}

/// Errors from a provider, each with context a human can act on and never a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Credentials were rejected or lack permissions.
    #[error("{0}")]
    Auth(String),
    /// The endpoint could not be reached or keeps failing (5xx, 429, timeouts) after retries.
    #[error("{0}")]
    Unavailable(String),
    /// A request the provider refused for this user or object.
    #[error("{0}")]
    Rejected(String),
    /// The configuration (IdentityBackend or its Secret) is wrong.
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    NotFound(String),
}

/// One identity provider, seen by the engine. Every call is per user and idempotent, so a resumed
/// recall can repeat the steps of a user that was in flight.
#[async_trait]
pub trait IdentityProvider: Send + Sync {
    fn capabilities(&self) -> Capabilities;
    /// Reachability and credentials, for the IdentityBackend's Ready condition.
    async fn check(&self) -> Result<(), ProviderError>;
    /// One page of the users selected by `scope`; `cursor` is what the previous page returned.
    async fn list_users(&self, scope: &ScopeSelector, cursor: Option<&str>) -> Result<UserPage, ProviderError>;
    /// Usernames that are members of `group`, for group exclusions.
    async fn group_members(&self, group: &str) -> Result<Vec<UserRef>, ProviderError>;
    /// The user's factors of `kinds` created before `cutoff`, and their live sessions.
    async fn snapshot(&self, user: &UserRef, kinds: &[FactorKind], cutoff: jiff::Timestamp) -> Result<UserSnapshot, ProviderError>;
    async fn revoke_sessions(&self, user: &UserRef, snapshot: &UserSnapshot) -> Result<(), ProviderError>;
    async fn revoke_factor(&self, user: &UserRef, factor: &FactorRef) -> Result<RevokeOutcome, ProviderError>;
    /// Make the user enroll again the kinds they lost at their next sign-in.
    async fn require_enrollment(&self, user: &UserRef, lost: &[FactorRef]) -> Result<(), ProviderError>;
    /// The first factor the user enrolled at or after `cutoff`, if any.
    async fn enrolled_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError>;
    async fn disable_user(&self, user: &UserRef) -> Result<(), ProviderError>;
}

/// Builds the adapter an IdentityBackend describes, with its credentials from `secret`.
pub fn connect(backend: &IdentityBackend, secret: Option<&Secret>) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    let name = kube::ResourceExt::name_any(backend);
    let namespace = kube::ResourceExt::namespace(backend).unwrap_or_default();
    let limits = http::Limits::from(&backend.spec.limits);
    if let Some(keycloak) = &backend.spec.keycloak {
        let secret_name = format!("{namespace}/{}", keycloak.credentials_secret_ref.name);
        let secret = secret.ok_or_else(|| {
            ProviderError::Config(format!("IdentityBackend {namespace}/{name}: Secret {secret_name} not found: create it with keys client-id and client-secret"))
        })?;
        let credentials = http::SecretKeys::new(secret, &secret_name);
        let client_id = credentials.get("client-id")?;
        let client_secret = credentials.get("client-secret")?;
        let adapter = keycloak::Keycloak::new(&format!("{namespace}/{name}"), keycloak, client_id, client_secret, limits, &secret_name)?;
        return Ok(Arc::new(adapter));
    }
    Err(ProviderError::Config(format!("IdentityBackend {namespace}/{name}: no provider block is set")))
}

/// The provider block an IdentityBackend sets, for status.
pub fn provider_type(backend: &IdentityBackend) -> Option<&'static str> {
    backend.spec.keycloak.as_ref().map(|_| "keycloak")
}

/// The Secret an IdentityBackend reads its credentials from.
pub fn credentials_secret_name(backend: &IdentityBackend) -> Option<&str> {
    backend.spec.keycloak.as_ref().map(|k| k.credentials_secret_ref.name.as_str())
}
