//! An in-house identity store reached through the backend protocol (docs/backend-protocol.md):
//! version 1 of `application/vnd.mfa-recall.backend+json`, negotiated before first use
//! (`prepare`), authenticated by the IdentityBackend's Secret: a bearer token (key `token`), a
//! client certificate for mutual TLS (`tls.crt`, `tls.key`), or both; `ca.crt`, when present, is
//! the only authority trusted for the store's own certificate. The store lists
//! and does; the cutoff, the ledger and the counts stay here, as for every provider: a factor the
//! store dates at or after the cutoff is never asked to be deleted, and one it cannot date is kept.

use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{HttpReply, Op, ProviderHttp, SecretKeys, SecretString};
use super::{
    Age, BypassSupport, Capabilities, EnrollmentChannel, Enrollment, EnrollmentOrigin, ErrorKind, FactorRef, IdentityProvider, IssuedBypass, Membership, NameMatch, ProviderError, Record, RevokeOutcome, Shown, UserPage,
    UserRef, UserSnapshot, enc, first_enrolled_since, selected, split,
};
use crate::api::{FactorKind, WebhookProvider};
use crate::watch::{Actor, ClientInfo, EventKind, EventPage, EventQuery, Geo, IdentityEvent};

/// The media type of the protocol version this operator speaks.
pub const MEDIA_TYPE: &str = "application/vnd.mfa-recall.backend+json;version=1";
const PAGE: &str = "500";
/// What a store may say in its own words, kept to a size a status can hold.
const MAX_LIMITATIONS: usize = 20;
const MAX_LIMITATION_CHARS: usize = 300;

const NEGOTIATE: Op = Op::new("negotiate", "store");
const LIST_USERS: Op = Op::new("list_users", "store");
const GROUP_MEMBERS: Op = Op::new("group_members", "store");
const READ_USER: Op = Op::new("read_user", "store");
const LIST_FACTORS: Op = Op::new("list_factors", "store");
const REVOKE_FACTOR: Op = Op::new("revoke_factor", "store");
const REVOKE_SESSIONS: Op = Op::new("revoke_sessions", "store");
const REQUIRE_ENROLLMENT: Op = Op::new("require_enrollment", "store");
const ENROLLED_SINCE: Op = Op::new("enrolled_since", "store");
const SET_ENABLED: Op = Op::new("set_enabled", "store");
const READ_EVENTS: Op = Op::new("read_events", "events");
const BYPASS: Op = Op::new("bypass", "store");

pub struct Webhook {
    http: ProviderHttp,
    base: String,
    /// None where the store authenticates the operator by its client certificate alone.
    token: Option<SecretString>,
    /// A client certificate is presented (mutual TLS).
    client_certificate: bool,
    /// The Secret shapes the TLS connection: a client certificate, or the authorities trusted.
    tls_from_secret: bool,
    secret_name: String,
    /// What the store said it can do at the last negotiation (asked again at every check).
    offered: RwLock<Option<Offered>>,
}

/// What the store said it can do, at negotiation.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Offered {
    #[serde(default)]
    factor_creation_time: bool,
    #[serde(default)]
    revoke_sessions: bool,
    #[serde(default)]
    count_sessions: bool,
    #[serde(default)]
    require_enrollment: bool,
    #[serde(default)]
    enrollment_detection: bool,
    #[serde(default)]
    event_stream: bool,
    #[serde(default)]
    disable_user: bool,
    #[serde(default)]
    nested_groups: bool,
    #[serde(default)]
    name_match: Option<String>,
    #[serde(default)]
    bypass: Option<OfferedBypass>,
    #[serde(default)]
    limitations: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OfferedBypass {
    min_lifetime_seconds: u64,
    max_lifetime_seconds: u64,
    #[serde(default)]
    sent_by_backend: bool,
    #[serde(default)]
    withdrawable: bool,
}

#[derive(Deserialize)]
struct Negotiation {
    protocol: String,
    capabilities: Offered,
}

#[derive(Deserialize)]
struct UsersAnswer {
    users: Vec<Record<UserRef>>,
    /// Required, null on the last page: a page without it is not taken for the last (a listing
    /// cut short would spare members of an exclusion group, or miss users in scope).
    #[serde(deserialize_with = "Option::deserialize")]
    next: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FactorRecord {
    id: String,
    kind: String,
    #[serde(rename = "type", default)]
    type_: String,
    #[serde(default, deserialize_with = "super::shown_text")]
    created_at: Option<Shown>,
}

#[derive(Deserialize)]
struct FactorsAnswer {
    factors: Vec<FactorRecord>,
    #[serde(default)]
    sessions: u64,
}

#[derive(Deserialize)]
struct UserAnswer {
    /// Required: a break-glass account is taken as working only when the store says it is enabled.
    enabled: bool,
    #[serde(default)]
    address: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventRecord {
    id: String,
    at: String,
    user_id: String,
    #[serde(rename = "type")]
    type_: String,
    #[serde(default)]
    factor_kind: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    asn: Option<u32>,
}

#[derive(Deserialize)]
struct EventsAnswer {
    events: Vec<Value>,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BypassAnswer {
    #[serde(default)]
    secret: Option<String>,
    expires_at: String,
    reference: String,
}

/// A factor kind as the protocol names it: the recall's own names (voice codes are `sms`).
fn kind_of(name: &str) -> Option<FactorKind> {
    Some(match name {
        "totp" => FactorKind::Totp,
        "hotp" => FactorKind::Hotp,
        "webauthn" => FactorKind::Webauthn,
        "passkey" => FactorKind::Passkey,
        "recoveryCodes" => FactorKind::RecoveryCodes,
        "sms" => FactorKind::Sms,
        "email" => FactorKind::Email,
        "push" => FactorKind::Push,
        "hardwareToken" => FactorKind::HardwareToken,
        "securityQuestion" => FactorKind::SecurityQuestion,
        "appPassword" => FactorKind::AppPassword,
        _ => return None,
    })
}

fn event_kind(name: &str) -> Option<EventKind> {
    Some(match name {
        "factorEnrolled" => EventKind::FactorEnrolled,
        "factorRemoved" => EventKind::FactorRemoved,
        "signIn" => EventKind::SignIn,
        "mfaChallenge" => EventKind::MfaChallenge,
        "pushDenied" => EventKind::PushDenied,
        "bypassIssued" => EventKind::BypassIssued,
        "bypassUsed" => EventKind::BypassUsed,
        "fraudReported" => EventKind::FraudReported,
        "riskySignIn" => EventKind::RiskySignIn,
        _ => return None,
    })
}

/// Text a store wrote, kept short and on one line.
fn clip(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

impl Webhook {
    pub fn new(http: ProviderHttp, provider: &WebhookProvider, keys: &SecretKeys) -> Result<Self, ProviderError> {
        let token = keys.get_opt("token")?;
        let identity = match (keys.get_opt("tls.crt")?, keys.get_opt("tls.key")?) {
            (Some(certificate), Some(key)) => Some(format!("{}\n{}", certificate.expose(), key.expose())),
            (None, None) => None,
            _ => return Err(http.error(ErrorKind::Config, format!("Secret {} holds one of tls.crt and tls.key: a client certificate needs both", keys.name))),
        };
        if token.is_none() && identity.is_none() {
            return Err(http.error(ErrorKind::Config, format!("Secret {} holds neither token nor tls.crt and tls.key: the store needs one to know the operator", keys.name)));
        }
        let base = provider.url.trim_end_matches('/').to_string();
        let roots = keys.get_opt("ca.crt")?;
        if (identity.is_some() || roots.is_some()) && !base.to_ascii_lowercase().starts_with("https://") {
            let given = if identity.is_some() { "a client certificate (tls.crt, tls.key)" } else { "ca.crt" };
            return Err(http.error(ErrorKind::Config, format!("Secret {} holds {given}, which only TLS uses: spec.webhook.url must be https://, not {base}", keys.name)));
        }
        let http = if identity.is_some() || roots.is_some() { http.with_client_tls(identity.as_deref().map(str::as_bytes), roots.as_ref().map(|r| r.expose().as_bytes()))? } else { http };
        Ok(Self { http, base, token, client_certificate: identity.is_some(), tls_from_secret: identity.is_some() || roots.is_some(), secret_name: keys.name.to_string(), offered: RwLock::new(None) })
    }

    fn offered(&self) -> Option<Offered> {
        self.offered.read().unwrap().clone()
    }

    /// Sends a request and reads its answer: its status and body. A 2xx or a 404 is the caller's
    /// to read; any other status is an error saying what the store said.
    async fn call(&self, op: Op, method: Method, path: &str, query: &[(&str, String)], body: Option<Value>) -> Result<(StatusCode, Value), ProviderError> {
        self.exchange(op, method, path, query, body).await.map(|(status, value, _)| (status, value))
    }

    /// As `call`, with the answer's Content-Type.
    async fn exchange(&self, op: Op, method: Method, path: &str, query: &[(&str, String)], body: Option<Value>) -> Result<(StatusCode, Value, String), ProviderError> {
        let url = format!("{}{path}", self.base);
        let build = || {
            let mut request = self.http.request(method.clone(), &url).query(query).header(ACCEPT, MEDIA_TYPE);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token.expose());
            }
            if let Some(body) = &body {
                request = request.header(CONTENT_TYPE, MEDIA_TYPE).body(body.to_string());
            }
            request
        };
        let reply: HttpReply = self.http.send(op, build).await?;
        let status = reply.status;
        let value = reply.value();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            let content_type = reply.header(CONTENT_TYPE).unwrap_or_default().to_string();
            return Ok((status, value, content_type));
        }
        let said = format!("{}: {}", clip(value["error"].as_str().unwrap_or("no error code"), 40), clip(value["message"].as_str().unwrap_or_default(), 300));
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let credentials = match (&self.token, self.client_certificate) {
                    (Some(_), true) => "the token and the client certificate",
                    (Some(_), false) => "the token",
                    (None, _) => "the client certificate",
                };
                self.http.error(ErrorKind::Auth, format!("{status} from {method} {path} ({said}): check {credentials} in Secret {} against what the store expects", self.secret_name))
            }
            StatusCode::NOT_ACCEPTABLE => self.http.error(ErrorKind::Config, format!("406 from {method} {path} ({said}): the store does not speak {MEDIA_TYPE}")),
            _ => self.http.error(ErrorKind::Rejected, format!("{status} from {method} {path}: {said}")),
        })
    }

    /// An answer read as the protocol shapes it. The error is clipped: it may quote the answer,
    /// which could be a whole page of something else, or (for a bypass) a code.
    fn parse<T: serde::de::DeserializeOwned>(&self, what: &str, value: Value) -> Result<T, ProviderError> {
        serde_json::from_value(value).map_err(|e| self.http.error(ErrorKind::Rejected, format!("the store's answer to {what} is not what the protocol says: {}", clip(&e.to_string(), 200))))
    }

    /// A write done: 204, or 200 with a JSON object (a proxy's 200 login page is not a deletion).
    fn done(&self, what: &str, status: StatusCode, value: &Value) -> Result<(), ProviderError> {
        if status == StatusCode::NO_CONTENT || (status == StatusCode::OK && value.is_object()) {
            return Ok(());
        }
        Err(self.http.error(ErrorKind::Rejected, format!("{status} from {what} is not an answer of the backend protocol")))
    }

    /// A 404 for a user-scoped call: the user is gone.
    fn no_user(&self, user: &UserRef) -> ProviderError {
        self.http.error(ErrorKind::NotFound, format!("the store has no user {} (id {})", user.username, user.id))
    }

    /// `/users/{id}`; an id URL parsing would rewrite (a dot segment), or an unbounded one, is refused.
    fn user_path(&self, user: &UserRef) -> Result<String, ProviderError> {
        Ok(format!("/users/{}", self.segment("user id", &user.id)?))
    }

    fn segment(&self, what: &str, id: &str) -> Result<String, ProviderError> {
        if id.is_empty() || id == "." || id == ".." || id.len() > 256 {
            return Err(self.http.error(ErrorKind::Rejected, format!("the store's {what} {:?} cannot be used in a path", clip(id, 40))));
        }
        Ok(enc(id))
    }

    async fn negotiate(&self) -> Result<Offered, ProviderError> {
        let (status, value, content_type) = self.exchange(NEGOTIATE, Method::GET, "/", &[], None).await.map_err(|e| self.handshake_hint(e))?;
        if status != StatusCode::OK {
            return Err(self.http.error(ErrorKind::Config, format!("{status} from GET /: the store does not serve the backend protocol at {}", self.base)));
        }
        // The version the store will speak is the one its answer names.
        let speaks = |t: &str| t.split(';').map(|p| p.trim().to_ascii_lowercase()).collect::<Vec<_>>() == ["application/vnd.mfa-recall.backend+json", "version=1"];
        if !speaks(&content_type) {
            return Err(self.http.error(ErrorKind::Config, format!("GET / answered Content-Type {:?}: the store must answer {MEDIA_TYPE}, the version it speaks", clip(&content_type, 80))));
        }
        let negotiation: Negotiation = self.parse("GET /", value)?;
        if negotiation.protocol != "mfa-recall-backend" {
            return Err(self.http.error(ErrorKind::Config, format!("GET / names protocol {:?}, not mfa-recall-backend", clip(&negotiation.protocol, 60))));
        }
        Ok(negotiation.capabilities)
    }

    /// A store that cannot be reached at all, when TLS is of the Secret's making (a client
    /// certificate, or ca.crt): says where to look, as a refused token would.
    fn handshake_hint(&self, error: ProviderError) -> ProviderError {
        if error.kind() != ErrorKind::Unavailable || !self.tls_from_secret {
            return error;
        }
        self.http.error(ErrorKind::Unavailable, format!("{}: if the TLS handshake was refused, check tls.crt, tls.key and ca.crt in Secret {} against the store's certificate and the authority it trusts", error.message(), self.secret_name))
    }

    async fn users_page(&self, op: Op, path: &str, query: &[(&str, String)]) -> Result<Option<UserPage>, ProviderError> {
        let (status, value) = self.call(op, Method::GET, path, query, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let answer: UsersAnswer = self.parse(path, value)?;
        let (users, unreadable) = split(answer.users);
        Ok(Some(UserPage { users, next: answer.next.filter(|n| !n.is_empty()), unreadable }))
    }

    async fn user(&self, user: &UserRef) -> Result<UserAnswer, ProviderError> {
        let (status, value) = self.call(READ_USER, Method::GET, &self.user_path(user)?, &[], None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.no_user(user));
        }
        self.parse("GET /users/{id}", value)
    }

    async fn post(&self, op: Op, user: &UserRef, action: &str, body: Option<Value>) -> Result<Value, ProviderError> {
        let (status, value) = self.call(op, Method::POST, &format!("{}/{action}", self.user_path(user)?), &[], body).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.no_user(user));
        }
        self.done(&format!("POST /users/{{id}}/{action}"), status, &value)?;
        Ok(value)
    }

    /// The first factor the user holds from `since` on, from their factors' creation times.
    async fn first_factor_since(&self, user: &UserRef, since: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError> {
        Ok(self.snapshot(user, &[FactorKind::All], since).await?.enrolled_since_cutoff)
    }
}

#[async_trait]
impl IdentityProvider for Webhook {
    fn capabilities(&self) -> Capabilities {
        let Some(offered) = self.offered() else {
            return Capabilities { limitations: vec!["protocol: the store has not been asked yet what it can do (GET /)".into()], ..Default::default() };
        };
        let mut limitations: Vec<String> = offered.limitations.iter().take(MAX_LIMITATIONS).map(|l| clip(l, MAX_LIMITATION_CHARS)).collect();
        for (has, said) in [
            (offered.factor_creation_time, "cutoff: the store does not date factors; every factor is kept (counted in keptUnknownAge)"),
            (offered.revoke_sessions, "sessions: the store does not end sessions"),
            (offered.require_enrollment, "enrollment: the store cannot require a new enrollment at the next sign-in"),
            (offered.enrollment_detection || offered.factor_creation_time, "detection: the store cannot tell who enrolled again"),
            (offered.disable_user, "disable: the store cannot disable users"),
            (offered.nested_groups, "groups: the store's groups do not nest; a group's members are its direct members"),
        ] {
            if !has {
                limitations.push(said.into());
            }
        }
        Capabilities {
            list_factors: true,
            revoking_ends_enrollments: &[],
            factor_creation_time: offered.factor_creation_time,
            delete_factor: true,
            revoke_sessions: offered.revoke_sessions,
            count_sessions: offered.count_sessions,
            force_re_enrollment: offered.require_enrollment,
            // Asked directly where the store answers it, else read from the factors' creation times.
            enrollment_detection: offered.enrollment_detection || offered.factor_creation_time,
            event_stream: offered.event_stream,
            disable_user: offered.disable_user,
            nested_groups: offered.nested_groups,
            name_match: if offered.name_match.as_deref() == Some("exact") { NameMatch::Exact } else { NameMatch::CaseInsensitive },
            // The store's own log: no delay to wait out, and no evidence of age beyond createdAt.
            log_delay: None,
            inseparable: Vec::new(),
            enrollment_link: None,
            bypass: offered.bypass.as_ref().map(|b| BypassSupport {
                mechanism: "the in-house store's own bypass (backend protocol)",
                lifetimes: Duration::from_secs(b.min_lifetime_seconds)..=Duration::from_secs(b.max_lifetime_seconds.max(b.min_lifetime_seconds)),
                sent_by_provider: b.sent_by_backend,
                withdrawable: b.withdrawable,
            }),
            limitations,
        }
    }

    async fn prepare(&self) -> Result<(), ProviderError> {
        if self.offered().is_none() {
            self.check().await?;
        }
        Ok(())
    }

    /// Negotiates again: what the store can do is taken up at every readiness check.
    async fn check(&self) -> Result<(), ProviderError> {
        let offered = self.negotiate().await?;
        *self.offered.write().unwrap() = Some(offered);
        Ok(())
    }

    async fn list_users(&self, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        let mut query = vec![("limit", PAGE.to_string())];
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_string()));
        }
        self.users_page(LIST_USERS, "/users", &query).await?.ok_or_else(|| self.http.error(ErrorKind::Rejected, "404 from GET /users: the store serves no user list"))
    }

    async fn group_members(&self, group: &str, membership: Membership, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        let mut query = vec![("limit", PAGE.to_string()), ("direct", (membership == Membership::Direct).to_string())];
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_string()));
        }
        self.users_page(GROUP_MEMBERS, &format!("/groups/{}/members", enc(group)), &query).await?.ok_or_else(|| self.http.error(ErrorKind::NotFound, format!("the store has no group {group}")))
    }

    async fn find_user(&self, name: &str) -> Result<Vec<UserRef>, ProviderError> {
        const MAX_NAMED: usize = 100;
        let page = self.users_page(LIST_USERS, "/users", &[("name", name.to_string())]).await?.unwrap_or_default();
        // A store that ignored `name` would answer with a page of everyone: refused, not recalled.
        if page.next.is_some() || page.users.len() > MAX_NAMED || !page.unreadable.is_empty() {
            return Err(self.http.error(ErrorKind::Rejected, format!("GET /users?name= for {name:?} answered {} users{}: not an answer to a name (the store must answer only the users the name names, on one page)", page.users.len(), if page.next.is_some() { " and a next page" } else { "" })));
        }
        Ok(page.users)
    }

    async fn snapshot(&self, user: &UserRef, kinds: &[FactorKind], cutoff: jiff::Timestamp) -> Result<UserSnapshot, ProviderError> {
        let (status, value) = self.call(LIST_FACTORS, Method::GET, &format!("{}/factors", self.user_path(user)?), &[], None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.no_user(user));
        }
        let answer: FactorsAnswer = self.parse("GET /users/{id}/factors", value)?;
        let mut held = Vec::new();
        let mut factors = Vec::new();
        for record in answer.factors {
            // A kind the recall has no name for is not guessed at: the user fails, named.
            let kind = kind_of(&record.kind).ok_or_else(|| self.http.error(ErrorKind::Rejected, format!("factor {} of user {} is of kind {:?}, not one the backend protocol names", clip(&record.id, 80), user.username, clip(&record.kind, 40))))?;
            if let Some(shown) = record.created_at {
                held.push((kind, shown));
            }
            let age = Age::of(record.created_at, cutoff);
            if selected(kind, kinds) && age != Age::Since {
                self.segment("factor id", &record.id)?;
                factors.push(FactorRef::aged(record.id, kind, clip(&record.type_, 80), age));
            }
        }
        Ok(UserSnapshot { factors, sessions: answer.sessions, enrolled_since_cutoff: first_enrolled_since(held, cutoff), ..Default::default() })
    }

    async fn revoke_sessions(&self, user: &UserRef, _snapshot: &UserSnapshot) -> Result<(), ProviderError> {
        self.post(REVOKE_SESSIONS, user, "sessions/revoke", None).await.map(drop)
    }

    async fn revoke_factor(&self, user: &UserRef, factor: &FactorRef) -> Result<RevokeOutcome, ProviderError> {
        let path = format!("{}/factors/{}", self.user_path(user)?, self.segment("factor id", &factor.id)?);
        match self.call(REVOKE_FACTOR, Method::DELETE, &path, &[], None).await? {
            (StatusCode::NOT_FOUND, value) if value["error"] == "alreadyGone" => Ok(RevokeOutcome::AlreadyGone),
            (StatusCode::NOT_FOUND, _) => Err(self.no_user(user)),
            (status, value) => self.done("DELETE /users/{id}/factors/{factorId}", status, &value).map(|()| RevokeOutcome::Revoked),
        }
    }

    async fn require_enrollment(&self, user: &UserRef, lost: &[FactorRef], channel: EnrollmentChannel) -> Result<(), ProviderError> {
        if channel != EnrollmentChannel::NextSignIn {
            return Err(self.http.error(ErrorKind::Config, "the backend protocol has no re-enrollment link: use reEnrollment.via NextSignIn"));
        }
        let mut kinds: Vec<&str> = lost.iter().map(|f| f.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        self.post(REQUIRE_ENROLLMENT, user, "require-enrollment", Some(json!({ "kinds": kinds }))).await.map(drop)
    }

    async fn enrolled_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError> {
        if !self.offered().is_some_and(|o| o.enrollment_detection) {
            return self.first_factor_since(user, cutoff).await;
        }
        let (status, value) = self.call(ENROLLED_SINCE, Method::GET, &format!("{}/enrollments", self.user_path(user)?), &[("since", cutoff.to_string())], None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.no_user(user));
        }
        let enrollment = &value["enrollment"];
        if enrollment.is_null() {
            return Ok(None);
        }
        let kind = enrollment["kind"].as_str().and_then(kind_of);
        let at = enrollment["at"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
        match (kind, at) {
            (Some(kind), Some(at)) => Ok(Some(Enrollment { kind, at, origin: origin_of(enrollment) })),
            _ => Err(self.http.error(ErrorKind::Rejected, format!("the store's enrollment of user {} has no known kind or time", user.username))),
        }
    }

    async fn disable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        self.post(SET_ENABLED, user, "disable", None).await.map(drop)
    }

    async fn enable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        self.post(SET_ENABLED, user, "enable", None).await.map(drop)
    }

    async fn enabled(&self, user: &UserRef) -> Result<Option<bool>, ProviderError> {
        Ok(Some(self.user(user).await?.enabled))
    }

    async fn address(&self, user: &UserRef) -> Result<Option<String>, ProviderError> {
        Ok(self.user(user).await?.address.filter(|a| !a.is_empty()))
    }

    async fn bypass_address(&self, user: &UserRef) -> Result<Option<String>, ProviderError> {
        self.address(user).await
    }

    async fn read_events(&self, query: &EventQuery<'_>) -> Result<EventPage, ProviderError> {
        let mut params = vec![("limit", PAGE.to_string())];
        match query.cursor {
            Some(cursor) => params.push(("cursor", cursor.to_string())),
            None => params.push(("from", query.from.to_string())),
        }
        if let Some(until) = query.until {
            params.push(("until", until.to_string()));
        }
        if let Some(user) = query.user {
            params.push(("user", user.id.clone()));
        }
        let (_, value) = self.call(READ_EVENTS, Method::GET, "/events", &params, None).await?;
        let answer: EventsAnswer = self.parse("GET /events", value)?;
        let mut page = EventPage { cursor: answer.next.filter(|n| !n.is_empty()).or_else(|| query.cursor.map(str::to_string)), more: answer.more, ..Default::default() };
        for entry in answer.events {
            // What was asked is checked here too: a store that ignored `user` or `until` would
            // hand other users' or later events to the anomaly rules.
            let read = read_event(entry).map(|event| event.filter(|e| query.user.is_none_or(|u| u.id == e.user_id) && query.until.is_none_or(|until| e.at < until)));
            page.take(read);
        }
        Ok(page)
    }

    async fn issue_bypass(&self, user: &UserRef, lifetime: Duration) -> Result<IssuedBypass, ProviderError> {
        let (status, value) = self.call(BYPASS, Method::POST, &format!("{}/bypasses", self.user_path(user)?), &[], Some(json!({ "lifetimeSeconds": lifetime.as_secs() }))).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.no_user(user));
        }
        // 201 with the bypass (a 200 with a JSON object is taken too, as for every write).
        if status != StatusCode::CREATED {
            self.done("POST /users/{id}/bypasses", status, &value)?;
        }
        // Never quoted in an error: the answer holds the code.
        let answer: BypassAnswer = serde_json::from_value(value).map_err(|_| self.http.error(ErrorKind::Rejected, "the store's answer to POST /users/{id}/bypasses is not what the protocol says"))?;
        let expires_at = answer.expires_at.parse().map_err(|_| self.http.error(ErrorKind::Rejected, "the store's bypass has no readable expiresAt"))?;
        // Kept whole: a reference cut short would withdraw nothing later.
        self.segment("bypass reference", &answer.reference)?;
        Ok(IssuedBypass { secret: answer.secret.filter(|s| !s.is_empty()).map(SecretString::new), expires_at, reference: Some(answer.reference) })
    }

    async fn bypass_used(&self, user: &UserRef, _issued_at: jiff::Timestamp, reference: Option<&str>) -> Result<Option<bool>, ProviderError> {
        let Some(reference) = reference else { return Ok(None) };
        let (status, value) = self.call(BYPASS, Method::GET, &format!("{}/bypasses/{}", self.user_path(user)?, self.segment("bypass reference", reference)?), &[], None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(value["used"].as_bool())
    }

    async fn revoke_bypass(&self, user: &UserRef, _issued_at: jiff::Timestamp, reference: Option<&str>) -> Result<(), ProviderError> {
        let Some(reference) = reference else { return Err(self.http.error(ErrorKind::Rejected, "the bypass has no reference to withdraw it by")) };
        let path = format!("{}/bypasses/{}", self.user_path(user)?, self.segment("bypass reference", reference)?);
        match self.call(BYPASS, Method::DELETE, &path, &[], None).await? {
            // Gone already, which is what was asked; any other 404 (a proxy's, a missing route) is not taken for it.
            (StatusCode::NOT_FOUND, value) if value["error"] == "alreadyGone" => Ok(()),
            (status, value) => self.done("DELETE /users/{id}/bypasses/{reference}", status, &value),
        }
    }
}

/// Where an enrollment came from, as the store's answer names it (clipped; None when it names nothing).
fn origin_of(enrollment: &Value) -> Option<EnrollmentOrigin> {
    let text = |field: &str, max: usize| enrollment[field].as_str().map(|t| clip(t, max));
    let origin = EnrollmentOrigin {
        ip: enrollment["ip"].as_str().and_then(|ip| ip.parse::<std::net::IpAddr>().ok()).map(|ip| ip.to_string()),
        user_agent: text("userAgent", 300),
        geo: text("country", 60),
        asn: enrollment["asn"].as_u64().and_then(|a| u32::try_from(a).ok()),
    };
    (origin != EnrollmentOrigin::default()).then_some(origin)
}

/// One event of the store's log; None for a type not watched, Err (skipped and counted) for one that does not read.
fn read_event(entry: Value) -> Result<Option<IdentityEvent>, String> {
    let record: EventRecord = serde_json::from_value(entry).map_err(|e| format!("an event of the store's log does not read: {e}"))?;
    let Some(kind) = event_kind(&record.type_) else { return Ok(None) };
    let at = record.at.parse().map_err(|_| format!("event {} has no readable time", clip(&record.id, 80)))?;
    let client = ClientInfo {
        ip: ClientInfo::ip_of(record.ip.as_deref()),
        user_agent: record.user_agent.map(|a| clip(&a, 300)),
        geo: record.country.map(|c| Geo { country: Some(clip(&c, 60)), ..Default::default() }),
        asn: record.asn,
        proxy: false,
    };
    Ok(Some(IdentityEvent { id: clip(&record.id, 200), at, user_id: record.user_id, kind, actor: Actor::Unknown, client, factor: record.factor_kind.as_deref().and_then(kind_of), device: None }))
}

/// `mfa-recall backend check URL`: the calls the operator makes of a store, each said ok or what
/// is wrong, for anyone implementing the protocol. It reads, and makes one write that changes
/// nothing: with --user, it asks to delete a factor id no store holds, which must be answered
/// `alreadyGone` (a recall repeats deletes after a crash).
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The store's base URL (https; http only to loopback, or with --insecure).
    pub url: String,
    /// A file holding the bearer token the store expects.
    #[arg(long, required_unless_present = "cert_file")]
    pub token_file: Option<std::path::PathBuf>,
    /// A PEM file with the client certificate for mutual TLS (with --key-file).
    #[arg(long, requires = "key_file")]
    pub cert_file: Option<std::path::PathBuf>,
    /// The client certificate's PEM private key.
    #[arg(long, requires = "cert_file")]
    pub key_file: Option<std::path::PathBuf>,
    /// PEM certificates of the only authorities trusted for the store's certificate.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// A user to look up by name (username, email or id): their factors, sessions and enrollments are read.
    #[arg(long)]
    pub user: Option<String>,
    /// A group whose members are listed, directly and with its subgroups.
    #[arg(long)]
    pub group: Option<String>,
    /// Allow plain http to a host other than loopback (a test lab only).
    #[arg(long)]
    pub insecure: bool,
}

/// A factor id the check asks to delete: no store holds it.
const ABSENT_FACTOR: &str = "mfa-recall-check-absent-factor";

impl CheckArgs {
    /// Runs the check, printing a line per call; true when every call answered as the protocol says.
    pub async fn run(&self) -> bool {
        // The Secret an IdentityBackend would hold, from the files given.
        let mut data = std::collections::BTreeMap::new();
        for (key, file) in [("token", &self.token_file), ("tls.crt", &self.cert_file), ("tls.key", &self.key_file), ("ca.crt", &self.ca_file)] {
            let Some(file) = file else { continue };
            match std::fs::read_to_string(file) {
                Ok(text) => data.insert(key.to_string(), k8s_openapi::ByteString(if key == "token" { text.trim().as_bytes().to_vec() } else { text.into_bytes() })),
                Err(e) => {
                    println!("FAIL {key}: {}: {e}", file.display());
                    return false;
                }
            };
        }
        let backend: crate::api::IdentityBackend = match serde_json::from_value(json!({
            "apiVersion": "mfarecall.io/v1alpha1", "kind": "IdentityBackend", "metadata": { "name": "check", "namespace": "check" },
            "spec": { "webhook": { "url": self.url, "credentialsSecretRef": { "name": "check" } }, "insecure": self.insecure }
        })) {
            Ok(b) => b,
            Err(e) => {
                println!("FAIL url: {e}");
                return false;
            }
        };
        let secret = k8s_openapi::api::core::v1::Secret { metadata: kube::api::ObjectMeta { name: Some("check".into()), ..Default::default() }, data: Some(data), ..Default::default() };
        let provider = match super::connect(&backend, Some(&secret), &crate::metrics::ProviderMetrics::default()) {
            Ok(p) => p,
            Err(e) => {
                println!("FAIL connect: {e}");
                return false;
            }
        };
        let mut ok = true;
        let mut say = |what: &str, result: Result<String, ProviderError>| match result {
            Ok(text) => println!("ok   {what}: {text}"),
            Err(e) => {
                ok = false;
                println!("FAIL {what}: {e}");
            }
        };
        if let Err(e) = provider.prepare().await {
            say("GET / (negotiation)", Err(e));
            return false;
        }
        let capabilities = provider.capabilities();
        say("GET / (negotiation)", Ok(format!("{MEDIA_TYPE}; can: {}", capabilities.names().join(", "))));
        for limitation in &capabilities.limitations {
            println!("     says it cannot: {limitation}");
        }
        say("GET /users", provider.list_users(None).await.map(|page| format!("{} users on the first page{}{}", page.users.len(), if page.next.is_some() { ", more after" } else { ", the last page" }, if page.unreadable.is_empty() { String::new() } else { format!(", {} unreadable", page.unreadable.len()) })));
        if let Some(group) = &self.group {
            for membership in [Membership::Direct, Membership::Transitive] {
                say(&format!("GET /groups/{group}/members ({membership:?})"), provider.all_group_members(group, membership).await.map(|members| format!("{} members", members.len())));
            }
        }
        if let Some(name) = &self.user {
            let found = provider.find_user(name).await;
            let user = match &found {
                Ok(users) if users.len() == 1 => Some(users[0].clone()),
                _ => None,
            };
            say(&format!("GET /users?name={name}"), found.and_then(|users| match users.len() {
                1 => Ok(format!("{} (id {})", users[0].username, users[0].id)),
                n => Err(ProviderError::new(ErrorKind::NotFound, format!("{n} users answer to it; name one user"))),
            }));
            if let Some(user) = user {
                let now = jiff::Timestamp::now();
                say("GET /users/{id}/factors", provider.snapshot(&user, &[FactorKind::All], now).await.map(|s| {
                    let unknown = s.factors.iter().filter(|f| f.unknown_age).count();
                    format!("{} factors ({unknown} of unknown age), {} sessions", s.factors.len(), s.sessions)
                }));
                say("GET /users/{id}/enrollments", provider.enrolled_since(&user, now - jiff::SignedDuration::from_hours(24 * 30)).await.map(|e| match e {
                    Some(e) => format!("a {} factor on {}", e.kind.as_str(), e.at),
                    None => "none in the last 30 days".into(),
                }));
                say("GET /users/{id}", provider.enabled(&user).await.map(|enabled| format!("enabled: {}", enabled.unwrap_or(true))));
                let absent = FactorRef::new(ABSENT_FACTOR, FactorKind::Totp, "check");
                say("DELETE /users/{id}/factors/{absent}", provider.revoke_factor(&user, &absent).await.and_then(|outcome| match outcome {
                    RevokeOutcome::AlreadyGone => Ok("alreadyGone, as a repeated delete must be".into()),
                    other => Err(ProviderError::new(ErrorKind::Rejected, format!("answered {other:?} for a factor no store holds: a repeated delete must answer 404 alreadyGone"))),
                }));
            }
        }
        if capabilities.event_stream {
            let from = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
            let query = EventQuery { cursor: None, from, until: None, user: None };
            say("GET /events", provider.read_events(&query).await.map(|page| format!("{} events in the last hour, {} skipped, cursor {}", page.events.len(), page.skipped.len(), if page.cursor.is_some() { "given" } else { "MISSING" })));
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A store on loopback that answers every request with `content_type` and `body`.
    async fn store(content_type: &'static str, body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 8192];
                    let _ = socket.read(&mut request).await;
                    let answer = format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn adapter(url: &str) -> Arc<dyn IdentityProvider> {
        let backend: crate::api::IdentityBackend = serde_json::from_value(json!({ "metadata": { "name": "store", "namespace": "ns" }, "spec": { "webhook": { "url": url, "credentialsSecretRef": { "name": "s" } } } })).unwrap();
        let secret = k8s_openapi::api::core::v1::Secret { data: Some([("token".to_string(), k8s_openapi::ByteString(b"t0ken".to_vec()))].into()), ..Default::default() };
        super::super::connect(&backend, Some(&secret), &crate::metrics::ProviderMetrics::default()).unwrap()
    }

    const NEGOTIATION: &str = r#"{"protocol":"mfa-recall-backend","capabilities":{"factorCreationTime":true,"revokeSessions":true}}"#;

    #[tokio::test]
    async fn a_store_is_used_only_once_it_names_the_version_it_speaks() {
        let fresh = adapter(&store(MEDIA_TYPE, NEGOTIATION).await);
        assert!(!fresh.capabilities().factor_creation_time, "nothing is assumed before negotiation");
        fresh.prepare().await.unwrap();
        let capabilities = fresh.capabilities();
        assert!(capabilities.factor_creation_time && capabilities.revoke_sessions && !capabilities.event_stream);
        assert!(capabilities.limitations.iter().any(|l| l.starts_with("disable:")), "what it lacks is named: {:?}", capabilities.limitations);
        let unnamed = adapter(&store("application/json", NEGOTIATION).await);
        let refused = unnamed.prepare().await.unwrap_err();
        assert!(refused.to_string().contains("Content-Type"), "{refused}");
    }

    #[tokio::test]
    async fn a_name_answered_with_a_page_of_everyone_is_refused() {
        let everyone = adapter(&store(MEDIA_TYPE, r#"{"users":[{"id":"u1","username":"alice"},{"id":"u2","username":"bob"}],"next":"u2"}"#).await);
        let refused = everyone.find_user("alice").await.unwrap_err();
        assert!(refused.to_string().contains("not an answer to a name"), "{refused}");
        let no_next = adapter(&store(MEDIA_TYPE, r#"{"users":[{"id":"u1","username":"alice"}]}"#).await);
        assert!(no_next.list_users(None).await.is_err(), "a page without next is not taken for the last");
    }

    #[tokio::test]
    async fn factors_are_dated_as_shown_and_an_unknown_kind_fails_its_user() {
        let cutoff: jiff::Timestamp = "2026-12-07T03:00:30Z".parse().unwrap();
        let user = UserRef { id: "u1".into(), username: "alice".into() };
        let held = adapter(&store(MEDIA_TYPE, r#"{"factors":[{"id":"old","kind":"totp","type":"app","createdAt":"2026-10-01T00:00:00Z"},{"id":"minute","kind":"webauthn","type":"key","createdAt":"2026-12-07T03:00Z"},{"id":"undated","kind":"sms","type":"phone","createdAt":null}],"sessions":2}"#).await);
        let snapshot = held.snapshot(&user, &[FactorKind::All], cutoff).await.unwrap();
        let ids: Vec<(&str, bool)> = snapshot.factors.iter().map(|f| (f.id.as_str(), f.unknown_age)).collect();
        assert_eq!(ids, [("old", false), ("undated", true)], "the factor shown at the cutoff's minute may be after it: kept, and not recorded");
        assert_eq!(snapshot.enrolled_since_cutoff.map(|e| e.kind), Some(FactorKind::Webauthn));
        let strange = adapter(&store(MEDIA_TYPE, r#"{"factors":[{"id":"x","kind":"carrierPigeon","type":"bird","createdAt":"2026-10-01T00:00:00Z"}],"sessions":0}"#).await);
        assert!(strange.snapshot(&user, &[FactorKind::All], cutoff).await.unwrap_err().to_string().contains("carrierPigeon"));
    }
}
