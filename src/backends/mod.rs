//! Identity provider adapters behind one trait. Shared HTTP plumbing (tokens, pacing, retries)
//! lives in `http`; each provider module only knows its own paths and shapes.

pub mod auth;
pub mod auth0;
pub mod duo;
pub mod entra;
pub mod google;
pub mod http;
pub mod keycloak;
pub mod okta;

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// What the scope asks for on one backend. The engine resolves it: the adapter only answers
/// "every user", "who is in this group" and "who is this user".
#[derive(Clone, Debug)]
pub enum ScopeSelector {
    AllUsers,
    /// The union of these groups' members and these users, each user once.
    Listed { groups: Vec<String>, users: Vec<String>, membership: Membership },
}

impl ScopeSelector {
    /// Every member of `groups` (subgroups included) and every user of `users`.
    pub fn listed(groups: Vec<String>, users: Vec<String>) -> Self {
        ScopeSelector::Listed { groups, users, membership: Membership::Transitive }
    }
}

/// Who counts as a member of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// Members of the group and of its subgroups, at any depth (flat where the provider's groups
    /// do not nest).
    Transitive,
    /// The group's own members only.
    Direct,
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
    /// The first factor the user already held from at or after the cutoff, where the listing
    /// shows it: such a user is not asked to enroll again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_since_cutoff: Option<Enrollment>,
}

/// A new factor seen after the cutoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub kind: FactorKind,
    pub at: jiff::Timestamp,
    /// Where the enrollment came from, when the provider's event log says (kept for anomaly detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<EnrollmentOrigin>,
}

/// The client that enrolled a factor, as the provider's event log recorded it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentOrigin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Country, region and city as given, joined by `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
}

impl std::fmt::Display for EnrollmentOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            self.ip.as_ref().map(|ip| format!("ip {ip}")),
            self.geo.as_ref().map(|g| format!("geo {g}")),
            self.asn.map(|a| format!("asn {a}")),
            self.user_agent.as_ref().map(|ua| format!("agent {:?}", ua.chars().take(120).collect::<String>())),
        ]
        .into_iter()
        .flatten()
        .collect();
        f.write_str(&parts.join(", "))
    }
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
    /// The provider tells how many sessions and tokens a user has; without it, sessionsRevoked
    /// counts one revocation per user.
    pub count_sessions: bool,
    pub force_re_enrollment: bool,
    pub enrollment_detection: bool,
    pub disable_user: bool,
    /// Groups contain groups, and transitive membership reaches their members; false where the
    /// provider's groups are flat.
    pub nested_groups: bool,
    /// How the provider compares the names people give users by (username, login, email).
    pub name_match: NameMatch,
    /// Factor kinds the provider can only revoke together: a recall asking for some kinds of a
    /// set but not all of them is refused before anything is touched.
    pub inseparable: Vec<Inseparable>,
    /// What the provider cannot do, each as "area: why" (for example "sessions: Duo has no API to
    /// end sessions"). Copied into each recall's per-backend status.
    pub limitations: Vec<String>,
}

/// Kinds of factor a provider cannot tell apart or revoke one without the others.
#[derive(Clone, Debug)]
pub struct Inseparable {
    pub kinds: &'static [FactorKind],
    /// Why, for the condition that refuses the recall.
    pub why: &'static str,
}

/// How a provider compares user names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NameMatch {
    /// `Alice` and `alice` are one user (the provider stores or compares names case-folded).
    #[default]
    CaseInsensitive,
    Exact,
}

impl NameMatch {
    /// The form two names are compared in.
    pub fn key(self, name: &str) -> String {
        match self {
            NameMatch::CaseInsensitive => name.to_lowercase(),
            NameMatch::Exact => name.to_string(),
        }
    }
}

impl Capabilities {
    /// The kinds asked for that this provider cannot revoke apart from kinds not asked for, with why.
    pub fn refused_kinds(&self, asked: &[FactorKind]) -> Option<String> {
        if asked.contains(&FactorKind::All) {
            return None;
        }
        let problems: Vec<String> = self
            .inseparable
            .iter()
            .filter(|set| set.kinds.iter().any(|k| asked.contains(k)) && !set.kinds.iter().all(|k| asked.contains(k)))
            .map(|set| {
                let kinds: Vec<&str> = set.kinds.iter().map(|k| k.as_str()).collect();
                format!("{} go together ({}): ask for all of them, or for all", kinds.join(", "), set.why)
            })
            .collect();
        (!problems.is_empty()).then(|| problems.join("; "))
    }

    pub fn names(&self) -> Vec<String> {
        [
            (self.list_factors, "listFactors"),
            (self.factor_creation_time, "factorCreationTime"),
            (self.delete_factor, "deleteFactor"),
            (self.revoke_sessions, "revokeSessions"),
            (self.count_sessions, "countSessions"),
            (self.force_re_enrollment, "forceReEnrollment"),
            (self.enrollment_detection, "enrollmentDetection"),
            (self.disable_user, "disableUser"),
            (self.nested_groups, "nestedGroups"),
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
    /// One page of every user; `cursor` is what the previous page returned.
    async fn list_users(&self, cursor: Option<&str>) -> Result<UserPage, ProviderError>;
    /// One page of the members of `group` (named as the provider names groups); `NotFound`
    /// when there is no such group.
    async fn group_members(&self, group: &str, membership: Membership, cursor: Option<&str>) -> Result<UserPage, ProviderError>;
    /// Every member of `group`, for exclusions. Strict: where part of the group cannot be read
    /// the call fails, rather than spare fewer users than the group holds.
    async fn all_group_members(&self, group: &str, membership: Membership) -> Result<Vec<UserRef>, ProviderError> {
        let (mut members, mut cursor, mut cursors) = (Vec::new(), None::<String>, PageCursors::default());
        loop {
            let page = self.group_members(group, membership, cursor.as_deref()).await?;
            members.extend(page.users);
            cursors.take(page.next.as_deref())?;
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(members),
            }
        }
    }
    /// The users a person means by `name`: any identifier the provider knows users by (id,
    /// username or login, email), compared the way the provider compares it. Usually one;
    /// several where accounts share the identifier (an email on two Auth0 connections); none
    /// when nobody has it.
    async fn find_user(&self, name: &str) -> Result<Vec<UserRef>, ProviderError>;
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

/// The next-page cursors one listing was handed. One that is empty, or that comes back, would
/// list the same pages for ever. Kept hashed: a cursor can be long (Keycloak's carries a group's
/// tree).
#[derive(Debug, Default)]
pub struct PageCursors(std::collections::HashSet<u64>);

impl PageCursors {
    /// A cursor handed out before (a recorded one, on resume).
    pub fn remember(&mut self, cursor: &str) {
        self.0.insert(Self::hash(cursor));
    }

    /// The next cursor a page was answered with; an error when it cannot lead anywhere new.
    pub fn take(&mut self, next: Option<&str>) -> Result<(), ProviderError> {
        match next {
            Some(next) if next.is_empty() || !self.0.insert(Self::hash(next)) => {
                Err(ProviderError::Rejected(format!("the next-page cursor {next:?} came back (or was empty): the listing would never end")))
            }
            _ => Ok(()),
        }
    }

    fn hash(cursor: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        cursor.hash(&mut hasher);
        hasher.finish()
    }
}

/// Builds the adapter an IdentityBackend describes, with its credentials from `secret`.
pub fn connect(backend: &IdentityBackend, secret: Option<&Secret>) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    let name = format!("{}/{}", kube::ResourceExt::namespace(backend).unwrap_or_default(), kube::ResourceExt::name_any(backend));
    let namespace = kube::ResourceExt::namespace(backend).unwrap_or_default();
    let limits = http::Limits::from(&backend.spec.limits);
    let (Some(secret_ref), Some(kind)) = (credentials_secret_name(backend), provider_type(backend)) else {
        return Err(ProviderError::Config(format!("IdentityBackend {name}: no provider block is set")));
    };
    let secret_name = format!("{namespace}/{secret_ref}");
    let secret = secret.ok_or_else(|| {
        ProviderError::Config(format!("IdentityBackend {name}: Secret {secret_name} not found: create it with {}", credential_keys(kind)))
    })?;
    let keys = http::SecretKeys::new(secret, &secret_name);
    let spec = &backend.spec;
    let adapter: Arc<dyn IdentityProvider> = if let Some(p) = &spec.keycloak {
        Arc::new(keycloak::Keycloak::new(&name, p, &keys, limits)?)
    } else if let Some(p) = &spec.entra {
        Arc::new(entra::Entra::new(&name, p, &keys, limits)?)
    } else if let Some(p) = &spec.auth0 {
        Arc::new(auth0::Auth0::new(&name, p, &keys, limits)?)
    } else if let Some(p) = &spec.okta {
        Arc::new(okta::Okta::new(&name, p, &keys, limits)?)
    } else if let Some(p) = &spec.google {
        Arc::new(google::Google::new(&name, p, &keys, limits)?)
    } else if let Some(p) = &spec.duo {
        Arc::new(duo::Duo::new(&name, p, &keys, limits)?)
    } else {
        return Err(ProviderError::Config(format!("IdentityBackend {name}: provider {kind} is not built into this operator yet")));
    };
    Ok(adapter)
}

/// The keys each provider's credentials Secret holds, for error messages.
fn credential_keys(kind: &str) -> &'static str {
    match kind {
        "keycloak" | "entra" | "auth0" => "keys client-id and client-secret",
        "okta" => "key api-token, or keys client-id and private-key",
        "google" => "key service-account.json",
        "duo" => "keys integration-key and secret-key",
        _ => "the provider's credential keys",
    }
}

/// The provider block an IdentityBackend sets, for status.
pub fn provider_type(backend: &IdentityBackend) -> Option<&'static str> {
    let s = &backend.spec;
    [
        (s.keycloak.is_some(), "keycloak"),
        (s.okta.is_some(), "okta"),
        (s.entra.is_some(), "entra"),
        (s.auth0.is_some(), "auth0"),
        (s.google.is_some(), "google"),
        (s.duo.is_some(), "duo"),
    ]
    .into_iter()
    .find_map(|(set, kind)| set.then_some(kind))
}

/// The Secret an IdentityBackend reads its credentials from.
pub fn credentials_secret_name(backend: &IdentityBackend) -> Option<&str> {
    let s = &backend.spec;
    s.keycloak
        .as_ref()
        .map(|p| &p.credentials_secret_ref)
        .or(s.okta.as_ref().map(|p| &p.credentials_secret_ref))
        .or(s.entra.as_ref().map(|p| &p.credentials_secret_ref))
        .or(s.auth0.as_ref().map(|p| &p.credentials_secret_ref))
        .or(s.google.as_ref().map(|p| &p.credentials_secret_ref))
        .or(s.duo.as_ref().map(|p| &p.credentials_secret_ref))
        .map(|r| r.name.as_str())
}

/// Whether `kind` is among the kinds a recall asks for.
pub fn selected(kind: FactorKind, kinds: &[FactorKind]) -> bool {
    kinds.contains(&FactorKind::All) || kinds.contains(&kind)
}

/// A short, secret-free rendering of a provider's error body: the texts at `pointers` (JSON
/// pointers such as `/error/message`) that are present, joined, else the whole body; at most 200
/// characters. Error bodies describe the request, never our credentials.
pub fn brief(value: &Value, pointers: &[&str]) -> String {
    let parts: Vec<String> = pointers
        .iter()
        .filter_map(|p| match value.pointer(p)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect();
    let text = if parts.is_empty() { value.to_string() } else { parts.join(": ") };
    text.chars().take(200).collect()
}

/// The second factor created first at or after `cutoff`, from a listing's kinds and creation
/// times: a user holding one is not asked to enroll again.
pub fn first_enrolled_since(held: impl IntoIterator<Item = (FactorKind, jiff::Timestamp)>, cutoff: jiff::Timestamp) -> Option<Enrollment> {
    held.into_iter().filter(|(_, at)| *at >= cutoff).min_by_key(|(_, at)| *at).map(|(kind, at)| Enrollment { kind, at, origin: None })
}

/// Percent-encodes one URL path segment.
pub fn enc(segment: &str) -> String {
    auth::duo_encode(segment)
}
