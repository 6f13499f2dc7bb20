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
pub mod pacing;
pub mod webhook;

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{FactorKind, IdentityBackend, ProviderBlock};
use crate::metrics::ProviderMetrics;
use crate::watch::{EventPage, EventQuery};

/// A user as the provider names it: the stable id for API calls, the username for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: String,
    pub username: String,
}

/// One page of users in scope; `next` is an opaque cursor for the following page.
#[derive(Debug, Default)]
pub struct UserPage {
    pub users: Vec<UserRef>,
    pub next: Option<String>,
    /// Records on the page that did not decode, each as `Unreadable` describes it: those users
    /// fail, the rest of the page goes on.
    pub unreadable: Vec<Unreadable>,
}

/// A record of a listing that did not decode: what identifies it, as far as it shows, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// The first identifier the record shows (id, login, email...), else a placeholder.
    pub label: String,
    pub why: String,
}

/// One record of a listing, decoded on its own, so that one the provider sent malformed fails
/// that user and not the page: `Vec<Record<User>>` where a page would be `Vec<User>`.
#[derive(Debug)]
pub enum Record<T> {
    Read(T),
    Unreadable(Unreadable),
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Record<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(match T::deserialize(&value) {
            Ok(read) => Record::Read(read),
            Err(e) => Record::Unreadable(Unreadable::of(&value, &e)),
        })
    }
}

impl Unreadable {
    /// Fields providers identify users by, in the order they are looked for.
    const IDENTIFIERS: [&str; 8] = ["/id", "/user_id", "/username", "/login", "/profile/login", "/userPrincipalName", "/primaryEmail", "/email"];

    pub fn of(value: &Value, error: &serde_json::Error) -> Self {
        let label = Self::IDENTIFIERS
            .iter()
            .find_map(|p| match value.pointer(p)? {
                Value::String(s) if !s.is_empty() => Some(s.chars().take(100).collect::<String>()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| "(a record with no identifier)".to_string());
        Unreadable::because(label, error)
    }

    /// A record known by `label` that `error` kept from decoding.
    pub fn because(label: String, error: &serde_json::Error) -> Self {
        let why = format!("the provider's record of this user could not be read: {}", error.to_string().chars().take(200).collect::<String>());
        Unreadable { label, why }
    }

    /// Why an exclusion group with this member cannot be used: exclusions are read whole or
    /// not at all, as sparing fewer users than the group holds would recall one it means to spare.
    pub fn as_member_of(&self, group: &str) -> String {
        format!("a member of group {group} could not be read ({}: {}): an exclusion group is read whole or the recall waits", self.label, self.why)
    }
}

/// The records that decoded, and the ones that did not.
pub fn split<T>(records: Vec<Record<T>>) -> (Vec<T>, Vec<Unreadable>) {
    let (mut read, mut unreadable) = (Vec::with_capacity(records.len()), Vec::new());
    for record in records {
        match record {
            Record::Read(r) => read.push(r),
            Record::Unreadable(u) => unreadable.push(u),
        }
    }
    (read, unreadable)
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
    /// The provider does not say when it was created: it is deleted only once the provider's
    /// logs show it predates the cutoff (`IdentityProvider::factor_ages`), else kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown_age: bool,
}

impl FactorRef {
    /// A recorded factor whose creation time the provider gave (before the cutoff).
    pub fn new(id: impl Into<String>, kind: FactorKind, provider_type: impl Into<String>) -> Self {
        Self { id: id.into(), kind, provider_type: provider_type.into(), unknown_age: false }
    }

    /// A recorded factor of `age`: before the cutoff, or unknown.
    pub fn aged(id: impl Into<String>, kind: FactorKind, provider_type: impl Into<String>, age: Age) -> Self {
        Self { unknown_age: age == Age::Unknown, ..Self::new(id, kind, provider_type) }
    }
}

/// A factor's creation time against the cutoff, as far as the provider shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Age {
    Before,
    /// At or after the cutoff (at the provider's precision): a new factor, never touched.
    Since,
    /// The provider does not say.
    Unknown,
}

impl Age {
    pub fn of(created: Option<Shown>, cutoff: jiff::Timestamp) -> Age {
        match created {
            None => Age::Unknown,
            Some(shown) if shown.since(cutoff) => Age::Since,
            Some(_) => Age::Before,
        }
    }
}

/// A time as a provider shows it, with the precision it shows it at: a factor shown in the same
/// second as the cutoff, by a provider that shows whole seconds, may be after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shown {
    pub at: jiff::Timestamp,
    /// The unit of the last digit shown, in nanoseconds.
    unit: i64,
}

impl Shown {
    /// An RFC 3339 text; its precision is that of its last field: a fraction of a second, whole
    /// seconds, or (a time written without them, which the parser takes) minutes or hours.
    pub fn text(text: &str) -> Option<Shown> {
        let at: jiff::Timestamp = text.parse().ok()?;
        let time = text.split_once(['T', 't', ' ']).map(|(_, time)| time).unwrap_or_default();
        let clock = time.split(['Z', 'z', '+', '-']).next().unwrap_or_default();
        let fraction = clock.split_once(['.', ',']).map_or(0, |(_, f)| f.bytes().take_while(u8::is_ascii_digit).count());
        let unit = match clock.matches(':').count() {
            0 => 3_600_000_000_000,
            1 => 60_000_000_000,
            _ => 10i64.pow(9 - fraction.min(9) as u32),
        };
        Some(Shown { at, unit })
    }

    pub fn seconds(seconds: i64) -> Option<Shown> {
        Some(Shown { at: jiff::Timestamp::from_second(seconds).ok()?, unit: 1_000_000_000 })
    }

    pub fn millis(millis: i64) -> Option<Shown> {
        Some(Shown { at: jiff::Timestamp::from_millisecond(millis).ok()?, unit: 1_000_000 })
    }

    /// At or after `cutoff` as far as this precision tells: the cutoff is rounded down to it.
    pub fn since(&self, cutoff: jiff::Timestamp) -> bool {
        let nanos = cutoff.as_nanosecond();
        let floor = nanos - nanos.rem_euclid(i128::from(self.unit));
        self.at.as_nanosecond() >= floor
    }
}

/// For `#[serde(default, deserialize_with = "...")]`: an RFC 3339 time as shown; one missing,
/// null or unreadable is None (a factor of unknown age), never a body that fails to decode.
pub fn shown_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Shown>, D::Error> {
    let text: Option<Value> = Option::deserialize(deserializer)?;
    Ok(text.as_ref().and_then(Value::as_str).and_then(Shown::text))
}

/// Dates factors of unknown age from the registrations a log shows since the cutoff, where an
/// entry tells what a registration may have been (`may_be`) but not which factor: a factor no
/// registration may be is old; one among as many candidates as registrations that may be it is
/// new; where there are fewer registrations than candidates, which are new the log cannot tell.
pub fn date_from_log<R>(factors: &[FactorRef], logged: &[R], may_be: impl Fn(&R, &FactorRef) -> bool) -> Vec<LoggedAge> {
    factors
        .iter()
        .map(|f| {
            let registrations = logged.iter().filter(|r| may_be(r, f)).count();
            let candidates = factors.iter().filter(|g| logged.iter().any(|r| may_be(r, f) && may_be(r, g))).count();
            match registrations {
                0 => LoggedAge::Before,
                n if n >= candidates => LoggedAge::Since,
                _ => LoggedAge::Unknown,
            }
        })
        .collect()
}

/// What the provider's logs say about a factor of unknown age.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoggedAge {
    /// The logs, complete from the cutoff to the snapshot, show no registration of it, or show
    /// it registered before the cutoff: it may be deleted.
    Before,
    /// The logs show it (or a factor it cannot be told from) registered since the cutoff: kept
    /// as the user's new factor.
    Since,
    /// The logs cannot tell (no permission, retention shorter than the time since the cutoff):
    /// kept, counted and named.
    Unknown,
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
    /// Why the provider will not make this user enroll the kinds lost again once the recall is
    /// done (an Entra user who keeps a method of a kind not recalled), as the adapter saw it when
    /// it listed the factors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_risk: Option<String>,
    /// When the factors were listed (set by the engine): the provider's logs must be complete up
    /// to here before a factor of unknown age is judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<jiff::Timestamp>,
}

/// A new factor seen after the cutoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub kind: FactorKind,
    pub at: jiff::Timestamp,
    /// Where the enrollment came from, when the provider's event log says: written to the audit
    /// line for anomaly review, never stored in the ledger (which holds only what a resume needs).
    #[serde(skip)]
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    /// Revoked, and the provider took with it factors enrolled since the cutoff that were not
    /// recorded (Google's turnOff ends app passwords), as `<kind> <id>`: it offers no way to keep
    /// them, so they are counted and named.
    RevokedTaking(Vec<String>),
    /// The factor was already gone (a previous attempt of this recall, or the user).
    AlreadyGone,
    /// Gone because it is linked to a factor deleted before it (one device, one link): lost to
    /// this recall when the user's step deleted that one.
    WentWithLinked,
    /// The provider refuses it while the user holds other factors (an Entra default method): to
    /// be asked again after the others; the provider's refusal, for when it refuses again.
    AfterOthers(ProviderError),
}

/// What a provider lets a recall do. Listed in IdentityBackend status; missing ones are named in
/// the recall's status instead of being silently skipped.
#[derive(Clone, Debug, Default)]
pub struct Capabilities {
    pub list_factors: bool,
    /// Kinds whose revocation ends every enrollment the user holds (Google's 2-Step
    /// Verification turnOff): a re-enrollment counts only after the recall revoked one.
    pub revoking_ends_enrollments: &'static [FactorKind],
    pub factor_creation_time: bool,
    pub delete_factor: bool,
    pub revoke_sessions: bool,
    /// The provider tells how many sessions and tokens a user has; without it, sessionsRevoked
    /// counts one revocation per user.
    pub count_sessions: bool,
    pub force_re_enrollment: bool,
    pub enrollment_detection: bool,
    /// The provider's event log can be read for the whole organisation from a cursor
    /// (`IdentityProvider::read_events`): re-enrollment is watched from it rather than by asking
    /// about each pending user, and the anomaly rules read it.
    pub event_stream: bool,
    pub disable_user: bool,
    /// Groups contain groups, and transitive membership reaches their members; false where the
    /// provider's groups are flat.
    pub nested_groups: bool,
    /// How the provider compares the names people give users by (username, login, email).
    pub name_match: NameMatch,
    /// How long after a registration the provider's logs show it, where `factor_ages` reads
    /// them; None where they give no evidence of age (factors of unknown age are then kept).
    pub log_delay: Option<std::time::Duration>,
    /// Factor kinds the provider can only revoke together: a recall asking for some kinds of a
    /// set but not all of them is refused before anything is touched.
    pub inseparable: Vec<Inseparable>,
    /// The provider's link to the user's address on file through which they set up a factor
    /// again (reEnrollment.via VerifiedLink); None where it has none.
    pub enrollment_link: Option<EnrollmentLink>,
    /// The provider's own temporary way in for a recalled user, which an MfaBypass issues; None
    /// where it has none (a limitation then says what it has instead).
    pub bypass: Option<BypassSupport>,
    /// What the provider cannot do, each as "area: why" (for example "sessions: Duo has no API to
    /// end sessions"). Copied into each recall's per-backend status.
    pub limitations: Vec<String>,
}

/// How a recalled user is let back in to enroll again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EnrollmentChannel {
    /// At their next sign-in with the password (required actions or the provider's policy).
    #[default]
    NextSignIn,
    /// A link to the address on file that works for `lifetime`; with `reset_password`, the
    /// current password stops working and the link sets a new one.
    Link { lifetime: std::time::Duration, reset_password: bool },
}

/// A provider's re-enrollment link, as status names it and the channel can use it.
#[derive(Clone, Copy, Debug)]
pub struct EnrollmentLink {
    /// What it is (for example "Keycloak's execute-actions email").
    pub mechanism: &'static str,
    /// The link works for the lifetime asked; otherwise for what the provider's settings say.
    pub sets_lifetime: bool,
    /// The current password can be made to stop working with it, the link setting a new one.
    pub resets_password: bool,
    /// The link comes only with a password reset (Okta's reset email): without
    /// reEnrollment.resetPassword there is none.
    pub needs_password_reset: bool,
}

/// A provider's temporary bypass, as an MfaBypass's status and checks need to know it.
#[derive(Clone, Debug)]
pub struct BypassSupport {
    /// What it is, for the bypass's status (for example "Entra Temporary Access Pass, usable once").
    pub mechanism: &'static str,
    /// The lifetimes the provider accepts.
    pub lifetimes: std::ops::RangeInclusive<std::time::Duration>,
    /// The provider mails it to the user's address on file itself (Keycloak's execute-actions
    /// email), so the operator never holds it.
    pub sent_by_provider: bool,
    /// The provider can withdraw it before its end (`revoke_bypass`); otherwise it works until
    /// its lifetime ends, whatever happens.
    pub withdrawable: bool,
}

/// What a provider issued. The pass or code is shown once: delivered to the user, then dropped.
pub struct IssuedBypass {
    /// For the user alone; None where the provider sent it to them itself.
    pub secret: Option<http::SecretString>,
    /// When the provider stops taking it. The operator withdraws it then too, for providers whose
    /// codes do not expire by themselves.
    pub expires_at: jiff::Timestamp,
    /// What tells exactly this one apart at withdrawal, where the provider needs it (Google's set
    /// of backup codes, as a fingerprint that does not reveal them).
    pub reference: Option<String>,
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
            (self.event_stream, "eventStream"),
            (self.disable_user, "disableUser"),
            (self.nested_groups, "nestedGroups"),
            (self.bypass.is_some(), "bypass"),
        ]
        .into_iter()
        .filter(|(has, _)| *has)
        .map(|(_, name)| name.to_string())
        .collect()
    }
}

/// An error from a provider: what kind it is (which decides what the engine and reconcile do), the
/// IdentityBackend it came from, set once, and a message a human can act on that never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    kind: ErrorKind,
    backend: Option<String>,
    message: String,
}

/// What went wrong at a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Credentials were rejected or lack permissions.
    Auth,
    /// The endpoint could not be reached or keeps failing (5xx, 429, timeouts) after retries.
    Unavailable,
    /// A request the provider refused for this user or object, or an answer that cannot be used.
    Rejected,
    /// The configuration (IdentityBackend or its Secret) is wrong.
    Config,
    NotFound,
}

impl ProviderError {
    /// An error not yet attributed to an IdentityBackend (`of` does that).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, backend: None, message: message.into() }
    }

    /// Attributed to the IdentityBackend `namespace/name`, unless it already is.
    pub fn of(mut self, backend: &str) -> Self {
        self.backend.get_or_insert_with(|| backend.to_string());
        self
    }

    /// The same error, its message rewritten by `f` (to say what was being done).
    pub fn reworded(mut self, f: impl FnOnce(&str) -> String) -> Self {
        self.message = f(&self.message);
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the IdentityBackend it came from.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Some(backend) => write!(f, "IdentityBackend {backend}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ProviderError {}

/// One identity provider, seen by the engine. Every call is per user and idempotent, so a resumed
/// recall can repeat the steps of a user that was in flight.
#[async_trait]
pub trait IdentityProvider: Send + Sync {
    fn capabilities(&self) -> Capabilities;
    /// What must be learnt from the provider before `capabilities` can be trusted (an in-house
    /// store's negotiation); done once, when the adapter is made.
    async fn prepare(&self) -> Result<(), ProviderError> {
        Ok(())
    }
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
            if let Some(bad) = page.unreadable.first() {
                return Err(ProviderError::new(ErrorKind::Rejected, bad.as_member_of(group)));
            }
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
    /// What the provider's logs say about each of `factors` (all of unknown age, listed for the
    /// snapshot taken at `taken_at`), read from `cutoff`: called once `log_delay` has passed since
    /// `taken_at`. By default the provider has no such logs and every factor stays unknown.
    async fn factor_ages(&self, _user: &UserRef, factors: &[FactorRef], _cutoff: jiff::Timestamp, _taken_at: jiff::Timestamp) -> Result<Vec<LoggedAge>, ProviderError> {
        Ok(vec![LoggedAge::Unknown; factors.len()])
    }
    /// Make the user enroll again the kinds they lost, through `channel` (a Link only where
    /// `capabilities().enrollment_link`).
    async fn require_enrollment(&self, user: &UserRef, lost: &[FactorRef], channel: EnrollmentChannel) -> Result<(), ProviderError>;
    /// The first factor the user enrolled at or after `cutoff`, if any.
    async fn enrolled_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError>;
    /// `enrolled_since` for the window watch, which knows where an enrollment came from from the
    /// stream already: a provider whose `enrolled_since` also reads its log for the origin
    /// answers from the user's factors alone, sparing the log's smaller budget.
    async fn holds_factor_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError> {
        self.enrolled_since(user, cutoff).await
    }
    async fn disable_user(&self, user: &UserRef) -> Result<(), ProviderError>;
    /// The user's address on file, where notices go: by default the username when it is a mail
    /// address (Okta logins, Entra and Google principal names, Auth0 and Duo emails).
    async fn address(&self, user: &UserRef) -> Result<Option<String>, ProviderError> {
        Ok(user.username.contains('@').then(|| user.username.clone()))
    }
    /// Whether the account may sign in (not disabled, suspended, blocked or locked); None where
    /// the adapter cannot tell.
    async fn enabled(&self, _user: &UserRef) -> Result<Option<bool>, ProviderError> {
        Ok(None)
    }
    /// Where a bypass code goes: an address the user reads without signing in to the account it
    /// unlocks. By default the address on file; where that is the account's own mailbox (Entra
    /// principal names, Google primary emails), the alternate address the user gave.
    async fn bypass_address(&self, user: &UserRef) -> Result<Option<String>, ProviderError> {
        self.address(user).await
    }
    /// Lets a user disabled by `disable_user` sign in again (a quarantine cleared).
    async fn enable_user(&self, _user: &UserRef) -> Result<(), ProviderError> {
        Err(ProviderError::new(ErrorKind::Config, "this adapter cannot enable a user again: enable them in the provider's console"))
    }
    /// One page of the organisation's identity events (or one user's), oldest first, from
    /// `query.cursor` or else from `query.from`. Only where `capabilities().event_stream`.
    async fn read_events(&self, _query: &EventQuery<'_>) -> Result<EventPage, ProviderError> {
        Err(ProviderError::new(ErrorKind::Config, "this provider's event log cannot be read as a stream"))
    }
    /// Issues the provider's temporary way in for `user`, working for `lifetime` (within
    /// `capabilities().bypass`). What the operator issued to the user before (a retry after a
    /// crash) is withdrawn first, so one stays. Only where `capabilities().bypass`.
    async fn issue_bypass(&self, _user: &UserRef, _lifetime: std::time::Duration) -> Result<IssuedBypass, ProviderError> {
        Err(ProviderError::new(ErrorKind::Config, "this provider has no temporary bypass the operator can issue"))
    }
    /// Whether the user has used what `issue_bypass` issued at `issued_at` (with its
    /// `reference`), where the provider tells; None where it does not.
    async fn bypass_used(&self, _user: &UserRef, _issued_at: jiff::Timestamp, _reference: Option<&str>) -> Result<Option<bool>, ProviderError> {
        Ok(None)
    }
    /// Withdraws what `issue_bypass` issued to `user` at `issued_at` (with its `reference`); Ok
    /// when nothing is left of it (used, expired or withdrawn before). Never what the user set up
    /// since.
    async fn revoke_bypass(&self, _user: &UserRef, _issued_at: jiff::Timestamp, _reference: Option<&str>) -> Result<(), ProviderError> {
        Err(ProviderError::new(ErrorKind::Config, "this provider has no temporary bypass the operator can withdraw"))
    }
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

    /// Pages one listing may have: far past any directory (tens of millions of users at the
    /// smallest page size an adapter asks for), and an end to a provider that pages for ever
    /// with cursors that never repeat.
    pub const MAX_PAGES: usize = 200_000;

    /// The next cursor a page was answered with; an error when it cannot lead anywhere new.
    pub fn take(&mut self, next: Option<&str>) -> Result<(), ProviderError> {
        let Some(next) = next else { return Ok(()) };
        let shown: String = next.chars().take(100).collect();
        if next.is_empty() || !self.0.insert(Self::hash(next)) {
            return Err(ProviderError::new(ErrorKind::Rejected, format!("the next-page cursor {shown:?} came back (or was empty): the listing would never end")));
        }
        if self.0.len() > Self::MAX_PAGES {
            return Err(ProviderError::new(ErrorKind::Rejected, format!("the listing went past {} pages (the last cursor {shown:?}): a provider that pages without end", Self::MAX_PAGES)));
        }
        Ok(())
    }

    fn hash(cursor: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        cursor.hash(&mut hasher);
        hasher.finish()
    }
}

/// Builds the adapter an IdentityBackend describes, with its credentials from `secret`; its calls
/// are counted in `metrics`.
pub fn connect(backend: &IdentityBackend, secret: Option<&Secret>, metrics: &ProviderMetrics) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    let namespace = kube::ResourceExt::namespace(backend).unwrap_or_default();
    let name = format!("{namespace}/{}", kube::ResourceExt::name_any(backend));
    adapter(backend, secret, &namespace, &name, metrics).map_err(|e| e.of(&name))
}

fn adapter(backend: &IdentityBackend, secret: Option<&Secret>, namespace: &str, name: &str, metrics: &ProviderMetrics) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    let mut limits = pacing::Limits::from(&backend.spec.limits);
    if let Some(text) = &backend.spec.log_delay {
        limits.log_delay = Some(crate::duration::LOG_DELAY.parse(text).map_err(|e| ProviderError::new(ErrorKind::Config, e))?);
    }
    let provider = &backend.spec.provider;
    let secret_name = format!("{namespace}/{}", provider.credentials_secret_ref().name);
    let secret = secret.ok_or_else(|| {
        ProviderError::new(ErrorKind::Config, format!("Secret {secret_name} not found: create it with {}", credential_keys(provider)))
    })?;
    let keys = http::SecretKeys::new(secret, &secret_name);
    let http = http::ProviderHttp::new(name, limits, metrics.clone())?.allowing_plain_http(backend.spec.insecure);
    for (field, url) in provider.urls() {
        http.check_transport(field, url)?;
    }
    Ok(match provider {
        ProviderBlock::Keycloak(p) => Arc::new(keycloak::Keycloak::new(http, p, &keys)?),
        ProviderBlock::Okta(p) => Arc::new(okta::Okta::new(http, p, &keys)?),
        ProviderBlock::Entra(p) => Arc::new(entra::Entra::new(http, p, &keys)?),
        ProviderBlock::Auth0(p) => Arc::new(auth0::Auth0::new(http, p, &keys)?),
        ProviderBlock::Google(p) => Arc::new(google::Google::new(http, p, &keys)?),
        ProviderBlock::Duo(p) => Arc::new(duo::Duo::new(http, p, &keys)?),
        ProviderBlock::Webhook(p) => Arc::new(webhook::Webhook::new(http, p, &keys)?),
    })
}

/// The keys each provider's credentials Secret holds, for error messages.
fn credential_keys(provider: &ProviderBlock) -> &'static str {
    match provider {
        ProviderBlock::Keycloak(_) | ProviderBlock::Entra(_) | ProviderBlock::Auth0(_) => "keys client-id and client-secret",
        ProviderBlock::Okta(_) => "key api-token, or keys client-id and private-key",
        ProviderBlock::Google(_) => "key service-account.json",
        ProviderBlock::Duo(_) => "keys integration-key and secret-key",
        ProviderBlock::Webhook(_) => "key token (the bearer token the store expects)",
    }
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
pub fn first_enrolled_since(held: impl IntoIterator<Item = (FactorKind, Shown)>, cutoff: jiff::Timestamp) -> Option<Enrollment> {
    held.into_iter().filter(|(_, shown)| shown.since(cutoff)).min_by_key(|(_, shown)| shown.at).map(|(kind, shown)| Enrollment { kind, at: shown.at, origin: None })
}

/// Percent-encodes one URL path segment.
pub fn enc(segment: &str) -> String {
    auth::duo_encode(segment)
}

/// The adapter connected to a simulator under test, as an IdentityBackend written for it would be.
#[cfg(test)]
pub(crate) fn connect_to_sim(subject: &idp_sim::subject::Subject) -> Arc<dyn IdentityProvider> {
    let limits = serde_json::json!({ "requestsPerSecond": 1000, "maxConcurrency": 4 });
    let spec = serde_json::from_value(subject.backend_spec_json("credentials", limits)).expect("the simulator writes the API's provider block");
    let mut backend = IdentityBackend::new(subject.kind, spec);
    backend.metadata.namespace = Some("test".into());
    let secret: Secret = serde_json::from_value(serde_json::json!({ "metadata": { "name": "credentials" }, "stringData": subject.secret })).expect("a Secret from strings");
    connect(&backend, Some(&secret), &ProviderMetrics::default()).expect("the adapter connects to its simulator")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_shown_in_the_cutoffs_own_unit_counts_as_since() {
        let cutoff: jiff::Timestamp = "2026-11-27T18:00:00.200Z".parse().unwrap();
        // Whole seconds: the key registered 200 ms after the cutoff shows as 18:00:00.
        assert!(Shown::text("2026-11-27T18:00:00Z").unwrap().since(cutoff));
        assert!(!Shown::text("2026-11-27T17:59:59Z").unwrap().since(cutoff));
        assert!(Shown::text("2026-11-27T18:00:00.2Z").unwrap().since(cutoff));
        assert!(!Shown::text("2026-11-27T18:00:00.199Z").unwrap().since(cutoff));
        assert!(Shown::text("2026-11-27T18:00:00.199999999+00:00").is_some_and(|s| !s.since(cutoff)));
        assert!(Shown::seconds(cutoff.as_second()).unwrap().since(cutoff));
        assert!(Shown::millis(cutoff.as_millisecond()).unwrap().since(cutoff));
        assert!(!Shown::millis(cutoff.as_millisecond() - 1).unwrap().since(cutoff));
        assert_eq!(Age::of(None, cutoff), Age::Unknown);
        assert_eq!(Age::of(Shown::seconds(cutoff.as_second() - 1), cutoff), Age::Before);
    }

    /// A time written without seconds (which the parser takes) is as precise as its last field:
    /// a factor made at 18:00:45 and shown as 18:00 is not taken for one before an 18:00:30 cutoff.
    #[test]
    fn a_time_without_seconds_is_as_precise_as_its_minutes_or_hours() {
        let cutoff: jiff::Timestamp = "2026-11-27T18:00:30Z".parse().unwrap();
        assert!(Shown::text("2026-11-27T18:00Z").is_some_and(|s| s.since(cutoff)), "minutes");
        assert!(Shown::text("2026-11-27T18Z").is_none_or(|s| s.since(cutoff)), "hours, where the parser takes them");
        assert!(Shown::text("2026-11-27T17:59Z").is_some_and(|s| !s.since(cutoff)));
        assert!(Shown::text("2026-11-27T18:00:29+00:00").is_some_and(|s| !s.since(cutoff)), "an offset's colon is not a field");
    }

    /// Every URL of a block goes through the transport rule before any credential is read into
    /// a request; `insecure` lifts it for a test lab.
    #[test]
    fn a_backend_that_would_send_credentials_in_clear_does_not_connect() {
        let secret: Secret = serde_json::from_value(serde_json::json!({ "metadata": { "name": "c" }, "stringData": { "api-token": "canary", "client-id": "id", "client-secret": "canary" } })).unwrap();
        let backend = |spec: serde_json::Value| {
            let mut b = IdentityBackend::new("corp", serde_json::from_value(spec).unwrap());
            b.metadata.namespace = Some("sec".into());
            b
        };
        let plain = backend(serde_json::json!({ "okta": { "url": "http://corp.okta.com", "credentialsSecretRef": { "name": "c" } } }));
        let error = connect(&plain, Some(&secret), &ProviderMetrics::default()).err().unwrap();
        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().starts_with("IdentityBackend sec/corp: spec.okta.url is http:// to corp.okta.com"), "{error}");
        let login = backend(serde_json::json!({ "entra": { "tenantId": "t", "loginUrl": "http://login.example.net", "credentialsSecretRef": { "name": "c" } } }));
        assert!(connect(&login, Some(&secret), &ProviderMetrics::default()).err().unwrap().to_string().contains("spec.entra.loginUrl is http://"));
        let lab = backend(serde_json::json!({ "okta": { "url": "http://corp.okta.com", "credentialsSecretRef": { "name": "c" } }, "insecure": true }));
        assert!(connect(&lab, Some(&secret), &ProviderMetrics::default()).is_ok());
    }

    #[test]
    fn a_listing_ends_on_a_cursor_that_comes_back_or_past_the_page_cap() {
        let mut cursors = PageCursors::default();
        assert!(cursors.take(Some("a")).is_ok() && cursors.take(None).is_ok());
        assert!(cursors.take(Some("a")).unwrap_err().to_string().contains("came back"));
        assert!(cursors.take(Some("")).is_err());
        let mut endless = PageCursors::default();
        let ended = (0..=PageCursors::MAX_PAGES + 1).map(|i| endless.take(Some(&i.to_string()))).position(|r| r.is_err());
        assert_eq!(ended, Some(PageCursors::MAX_PAGES));
        let long = "x".repeat(10_000);
        assert!(endless.take(Some(&long)).unwrap_err().to_string().len() < 400, "a cursor is quoted cut short");
    }

    #[test]
    fn a_log_that_names_only_the_kind_dates_what_it_can_and_no_more() {
        let factor = |id: &str, kind| FactorRef::aged(id, kind, "t", Age::Unknown);
        let factors = [factor("p1", FactorKind::Sms), factor("p2", FactorKind::Sms), factor("t1", FactorKind::Totp), factor("k1", FactorKind::Webauthn)];
        // One SMS registration, two phones; two TOTP registrations, one token; no key registered.
        let logged = [FactorKind::Sms, FactorKind::Totp, FactorKind::Totp];
        let ages = date_from_log(&factors, &logged, |r, f| *r == f.kind);
        assert_eq!(ages, [LoggedAge::Unknown, LoggedAge::Unknown, LoggedAge::Since, LoggedAge::Before]);
    }
}
