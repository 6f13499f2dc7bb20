//! Google Workspace through the Admin SDK (Directory and Reports APIs), as a service account
//! acting for an administrator (domain-wide delegation, JWT bearer grant).
//!
//! Google lists no second factors: a user only says `isEnrolledIn2Sv`. So a recall invalidates
//! the whole 2-Step Verification enrollment (`twoStepVerification/turnOff`, one pseudo-factor of
//! kind TwoStepVerification), the backup codes (invalidated as one set) and each app-specific
//! password, and ends sessions by deleting the user's OAuth tokens and signing them out.
//!
//! Invariant 1 without creation times: the 2SV enrollment and the backup codes are recorded as of
//! unknown age, and judged from the Reports API's `2sv_enroll` events once its lag has passed
//! since the snapshot (`factor_ages`): a user who enrolled since the cutoff keeps the enrollment
//! and their codes (kept and counted: no log dates codes), anyone else loses both; `turnOff` is
//! checked against the log once more right before. Backup codes are recorded by a fingerprint of the set and invalidated only
//! while that set is still the one the user holds. App passwords show their creation time.
//!
//! The re-enrollment window reads the Reports API's login audit for everyone, only up to its lag
//! ago (`logDelay`): Google may still add events behind that line, and a cursor past them would
//! never see them.

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::auth::{Grant, RsaSigner, TokenSource};
use super::http::{HttpReply, Op, ProviderHttp, SecretKeys, SecretString};
use super::{
    Age, BypassSupport, Capabilities, IssuedBypass, Enrollment, EnrollmentOrigin, FactorRef, IdentityProvider, Inseparable, LoggedAge, Membership, NameMatch, ErrorKind, ProviderError, Record, RevokeOutcome, Shown, UserPage,
    UserRef, UserSnapshot, enc, selected, split,
};
use crate::api::{FactorKind, GoogleProvider};
use crate::watch::{Actor, ClientInfo, EventKind, EventPage, EventQuery, Geo, IdentityEvent};

/// What a recall needs, least privilege: read users and groups, act on user security, read logs.
const SCOPES: &str = "https://www.googleapis.com/auth/admin.directory.user.security https://www.googleapis.com/auth/admin.directory.user.readonly https://www.googleapis.com/auth/admin.directory.group.readonly https://www.googleapis.com/auth/admin.reports.audit.readonly";
/// Suspending a user needs write access to users; asked for only when a deadline disables someone.
const SCOPE_USER_WRITE: &str = "https://www.googleapis.com/auth/admin.directory.user";

const DEFAULT_URL: &str = "https://admin.googleapis.com";
/// Users per listing request (the Directory API's maximum).
const USERS_PAGE: usize = 500;
/// Group members per request (the Directory API's maximum).
const MEMBERS_PAGE: usize = 200;

const PROVIDER_TYPE_2SV: &str = "twoStepVerification";
const PROVIDER_TYPE_CODES: &str = "verificationCodes";
const PROVIDER_TYPE_ASP: &str = "asp";
/// Google's `lastLoginTime` for a user who never signed in.
const NEVER: &str = "1970-01-01T00:00:00.000Z";
/// How long the Reports API may take to show a `2sv_enroll`: Google's "Data retention and lag
/// times" gives most log events "near real time (couple of minutes)" and warns of rare longer
/// delays; `logDelay` on the IdentityBackend raises it.
const LOG_DELAY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

// Rate-limit buckets: the Directory and Reports APIs have separate quotas.
const LIST_USERS: Op = Op::new("list_users", "directory");
const GET_USER: Op = Op::new("get_user", "directory");
const LIST_MEMBERS: Op = Op::new("list_members", "directory");
const LIST_FACTORS: Op = Op::new("list_factors", "directory");
const DELETE_FACTOR: Op = Op::new("delete_factor", "directory");
const LIST_SESSIONS: Op = Op::new("list_sessions", "directory");
const REVOKE_SESSIONS: Op = Op::new("revoke_sessions", "directory");
const UPDATE_USER: Op = Op::new("update_user", "directory");
const ISSUE_BYPASS: Op = Op::new("issue_bypass", "directory");
const ENROLLMENT_EVENTS: Op = Op::new("enrollment_events", "reports");
const LOGIN_AUDIT: Op = Op::new("login_audit", "reports");
/// Activities per Reports API page (its maximum).
const ACTIVITIES_PAGE: usize = 1000;
/// Login audit events the window reads for everyone; a user's sign-ins are read only for their
/// own history (there are too many to stream).
const WATCHED_EVENTS: &str = "2sv_enroll,2sv_disable,recovery_phone_edit,suspicious_login,login_challenge";

/// Where the window's reading of the login audit is: from `since`, and the read under way (up to
/// `end`, on page `page`).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct LoginCursor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page: Option<String>,
}

/// A parameter of a login audit event, by name.
fn parameter<'a>(event: &'a Value, name: &str) -> Option<&'a Value> {
    event["parameters"].as_array()?.iter().find(|p| p["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
}

/// A parameter's text (`value`, or the first of `multiValue`), lower case.
fn parameter_text(event: &Value, name: &str) -> Option<String> {
    let p = parameter(event, name)?;
    p["value"].as_str().or_else(|| p["multiValue"].as_array()?.first()?.as_str()).map(|v| v.trim().to_lowercase())
}

fn parameter_true(event: &Value, name: &str) -> bool {
    parameter(event, name).is_some_and(|p| p["boolValue"] == true || p["value"].as_str().is_some_and(|v| v.trim().eq_ignore_ascii_case("true")))
}

/// What one login audit event is to the window; None for what it does not read.
fn login_kind(event: &Value) -> Option<EventKind> {
    let name = event["name"].as_str()?.trim().to_lowercase();
    Some(match name.as_str() {
        "2sv_enroll" => EventKind::FactorEnrolled,
        "2sv_disable" | "recovery_phone_edit" => EventKind::SecondStepWeakened,
        "suspicious_login" | "suspicious_login_less_secure_app" | "suspicious_programmatic_login" => EventKind::RiskySignIn,
        "login_success" if parameter_true(event, "is_suspicious") => EventKind::RiskySignIn,
        "login_success" => EventKind::SignIn,
        // A Google prompt the user refused (or let lapse) fails the challenge by that method.
        "login_challenge" => {
            let status = parameter_text(event, "login_challenge_status").unwrap_or_default();
            let method = parameter_text(event, "login_challenge_method").unwrap_or_default();
            match (status.contains("pass"), status.contains("fail")) {
                (true, _) => EventKind::MfaChallenge,
                (_, true) if method.contains("prompt") => EventKind::PushDenied,
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// A login audit activity as identity events (one per event it holds that the window reads); Err
/// says why the activity cannot be read. The actor is the user: what an administrator changed
/// for someone else (`affected_email_address` naming another) is left out, since it names that
/// user by email only.
fn login_events(activity: &Value) -> Result<Vec<IdentityEvent>, String> {
    let text = |v: &Value| v.as_str().map(str::trim).filter(|s| !s.is_empty()).map(String::from);
    let qualifier = match &activity["id"]["uniqueQualifier"] {
        Value::Number(n) => Some(n.to_string()),
        other => text(other),
    };
    let qualifier = qualifier.ok_or("a login activity without id.uniqueQualifier")?;
    let at: jiff::Timestamp = activity["id"]["time"].as_str().and_then(|t| t.trim().parse().ok()).ok_or_else(|| format!("login activity {qualifier}: no readable id.time"))?;
    let events = activity["events"].as_array().map(Vec::as_slice).unwrap_or_default();
    let actor_email = text(&activity["actor"]["email"]);
    let mut found = Vec::new();
    for (n, event) in events.iter().enumerate() {
        let Some(kind) = login_kind(event) else { continue };
        let affected = parameter_text(event, "affected_email_address");
        if affected.is_some_and(|a| actor_email.as_ref().is_none_or(|e| !e.eq_ignore_ascii_case(&a))) {
            continue;
        }
        let user_id = text(&activity["actor"]["profileId"]).ok_or_else(|| format!("login activity {qualifier}: no actor.profileId"))?;
        let network = &activity["networkInfo"];
        let geo = Geo { country: text(&network["regionCode"]).map(|c| c.to_uppercase()), region: text(&network["subdivisionCode"]), city: None, point: None };
        let has_geo = geo.country.is_some() || geo.region.is_some();
        found.push(IdentityEvent {
            id: if n == 0 { qualifier.clone() } else { format!("{qualifier}:{n}") },
            at,
            user_id,
            kind,
            actor: Actor::User,
            client: ClientInfo {
                ip: ClientInfo::ip_of(activity["ipAddress"].as_str()),
                user_agent: None,
                geo: has_geo.then_some(geo),
                asn: network["ipAsn"].as_array().and_then(|a| a.first()).and_then(|a| a.as_u64().or_else(|| a.as_str()?.parse().ok())).and_then(|a| u32::try_from(a).ok()),
                proxy: false,
            },
            factor: (kind == EventKind::FactorEnrolled).then_some(FactorKind::TwoStepVerification),
            device: None,
        });
    }
    Ok(found)
}

/// The service-account key file, as the Cloud console downloads it.
#[derive(Deserialize)]
struct ServiceAccountKey {
    #[serde(rename = "type")]
    type_: Option<String>,
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
    token_uri: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    id: String,
    primary_email: String,
    #[serde(default)]
    is_enrolled_in2_sv: bool,
    #[serde(default)]
    last_login_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserList {
    #[serde(default)]
    users: Vec<Record<User>>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Member {
    id: String,
    #[serde(default)]
    email: String,
    #[serde(rename = "type", default)]
    type_: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemberList {
    #[serde(default)]
    members: Vec<Record<Member>>,
    next_page_token: Option<String>,
}

/// `items` of the Directory API's list answers (ASPs, tokens, verification codes); absent when empty.
#[derive(Deserialize)]
struct Items<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Asp {
    code_id: i64,
    /// Milliseconds since the epoch, as a string (Google's int64 encoding).
    #[serde(default)]
    creation_time: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OAuthToken {
    client_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationCode {
    verification_code: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Activities {
    #[serde(default)]
    items: Vec<Activity>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Activity {
    id: ActivityId,
    ip_address: Option<String>,
    network_info: Option<NetworkInfo>,
}

#[derive(Deserialize)]
struct ActivityId {
    time: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetworkInfo {
    #[serde(default)]
    ip_asn: Vec<u32>,
    region_code: Option<String>,
    subdivision_code: Option<String>,
}

pub struct Google {
    http: ProviderHttp,
    /// Tokens with the recall's scopes.
    auth: TokenSource,
    /// Tokens that may also suspend users (deadline action only).
    admin_auth: TokenSource,
    base: String,
    customer: String,
    /// The administrator's domain, for group names given without one.
    domain: String,
    admin_email: String,
}

impl Google {
    pub fn new(http: ProviderHttp, spec: &GoogleProvider, keys: &SecretKeys) -> Result<Self, ProviderError> {
        let unusable = |why: &str| {
            ProviderError::new(ErrorKind::Config, format!(
                "Secret {}: key service-account.json {why}: store the service account's JSON key as downloaded",
                keys.name
            ))
        };
        let raw = keys.get("service-account.json")?;
        let key: ServiceAccountKey = serde_json::from_str(raw.expose()).map_err(|_| unusable("is not a service-account key (JSON with client_email, private_key and token_uri)"))?;
        if key.type_.as_deref().is_some_and(|t| t != "service_account") {
            return Err(unusable("is not of type service_account"));
        }
        http.check_transport(&format!("the token_uri of service-account.json in Secret {}", keys.name), &key.token_uri)?;
        let (_, domain) = spec
            .admin_email
            .rsplit_once('@')
            .ok_or_else(|| ProviderError::new(ErrorKind::Config, "spec.google.adminEmail must be an email address"))?;
        let grant = |scope_key: &ServiceAccountKey| -> Result<Grant, ProviderError> {
            let signer = RsaSigner::from_pem(&scope_key.private_key).map_err(|why| unusable(&format!("holds no usable private_key: {why}")))?;
            Ok(Grant::JwtBearer { issuer: scope_key.client_email.clone(), subject: spec.admin_email.clone(), key: signer, key_id: scope_key.private_key_id.clone() })
        };
        let source = |scope: &str| -> Result<TokenSource, ProviderError> {
            Ok(TokenSource::new(key.token_uri.clone(), grant(&key)?, vec![("scope", scope.to_string())], keys.name.to_string()))
        };
        Ok(Self {
            http: http.with_throttle_test(throttled),
            auth: source(SCOPES)?,
            admin_auth: source(SCOPE_USER_WRITE)?,
            base: spec.url.as_deref().unwrap_or(DEFAULT_URL).trim_end_matches('/').to_string(),
            customer: spec.customer.clone().unwrap_or_else(|| "my_customer".to_string()),
            domain: domain.to_lowercase(),
            admin_email: spec.admin_email.clone(),
        })
    }

    /// One API call with a delegated token; a 401 refreshes the token once. Success and the
    /// statuses in `tolerated` come back to the caller; everything else is an error.
    #[allow(clippy::too_many_arguments)] // one shape for every Directory and Reports request
    async fn call(
        &self,
        op: Op,
        auth: &TokenSource,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        tolerated: &[StatusCode],
    ) -> Result<(StatusCode, Value), ProviderError> {
        let url = format!("{}{path}", self.base);
        let reply = auth
            .send(&self.http, op, || {
                let builder = self.http.json_request(&method, &url, query, body);
                // Google wants a length on a POST without a body.
                if body.is_none() && method == Method::POST { builder.header("content-length", "0") } else { builder }
            })
            .await?;
        let status = reply.status;
        let value = reply.value();
        match status {
            s if s.is_success() || tolerated.contains(&s) => Ok((s, value)),
            StatusCode::UNAUTHORIZED => Err(self.http.error(ErrorKind::Auth, format!(
                "401 from {method} {path}: the access token was refused; check the service account in Secret {}", auth.secret_name
            ))),
            StatusCode::FORBIDDEN => Err(self.http.error(ErrorKind::Auth, format!(
                "403 from {method} {path} ({}): allow the service account's client ID the scopes {} under domain-wide delegation in the Admin console, and make {} an administrator who may manage user security",
                brief(&value),
                if std::ptr::eq(auth, &self.admin_auth) { SCOPE_USER_WRITE } else { SCOPES },
                self.admin_email
            ))),
            _ => Err(self.http.error(ErrorKind::Rejected, format!("{status} from {method} {path}: {}", brief(&value)))),
        }
    }

    /// A GET whose body is parsed; None on 404.
    async fn get<T: serde::de::DeserializeOwned>(&self, op: Op, path: &str, query: &[(&str, String)]) -> Result<Option<T>, ProviderError> {
        let (status, value) = self.call(op, &self.auth, Method::GET, path, query, None, &[StatusCode::NOT_FOUND]).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| self.http.error(ErrorKind::Rejected, format!("unexpected body from GET {path}: {e}")))
    }

    fn user_path(&self, user: &UserRef, rest: &str) -> String {
        format!("/admin/directory/v1/users/{}{rest}", enc(&user.id))
    }

    fn user_gone(&self, user: &UserRef) -> ProviderError {
        self.http.error(ErrorKind::NotFound, format!("user {} no longer exists", user.username))
    }

    /// A group's key: its email; a plain name is taken to be in the administrator's domain.
    fn group_key(&self, group: &str) -> String {
        if group.contains('@') { group.to_string() } else { format!("{group}@{}", self.domain) }
    }

    async fn members_page(&self, group: &str, membership: Membership, page_token: Option<&str>) -> Result<UserPage, ProviderError> {
        let derived = membership == Membership::Transitive;
        let mut query = vec![("maxResults", MEMBERS_PAGE.to_string()), ("includeDerivedMembership", derived.to_string())];
        if let Some(token) = page_token {
            query.push(("pageToken", token.to_string()));
        }
        let key = self.group_key(group);
        let page: MemberList = self
            .get(LIST_MEMBERS, &format!("/admin/directory/v1/groups/{}/members", enc(&key)), &query)
            .await?
            .ok_or_else(|| self.http.error(ErrorKind::NotFound, format!("group {key} not found")))?;
        let (members, unreadable) = split(page.members);
        let users = members.into_iter().filter(|m| m.type_ == "USER").map(|m| UserRef { id: m.id, username: m.email }).collect();
        Ok(UserPage { users, next: page.next_page_token.filter(|t| !t.is_empty()), unreadable })
    }

    /// The user's `2sv_enroll` events at or after `since`, from the Reports API (newest first).
    async fn enrollments_since(&self, user: &UserRef, since: jiff::Timestamp) -> Result<Vec<Activity>, ProviderError> {
        let path = format!("/admin/reports/v1/activity/users/{}/applications/login", enc(&user.id));
        let mut found = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![("eventName", "2sv_enroll".to_string()), ("startTime", since.to_string())];
            if let Some(token) = &page_token {
                query.push(("pageToken", token.clone()));
            }
            let page: Activities = self.get(ENROLLMENT_EVENTS, &path, &query).await?.ok_or_else(|| self.user_gone(user))?;
            found.extend(page.items);
            page_token = page.next_page_token.filter(|t| !t.is_empty());
            if page_token.is_none() {
                return Ok(found);
            }
        }
    }

    async fn backup_codes(&self, user: &UserRef) -> Result<Vec<String>, ProviderError> {
        let path = self.user_path(user, "/verificationCodes");
        let (status, value) = self.call(LIST_FACTORS, &self.auth, Method::GET, &path, &[], None, &[StatusCode::NOT_FOUND]).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.user_gone(user));
        }
        // A fixed message: the parser's would quote a code were it of another type.
        let codes: Items<VerificationCode> = serde_json::from_value(value).map_err(|_| self.http.error(ErrorKind::Rejected, format!("unexpected body from GET {path}")))?;
        Ok(codes.items.into_iter().map(|c| c.verification_code).collect())
    }
}

/// Google says "slow down" with 403 and a quota reason, sometimes with 429; other 403s are
/// permission errors and must not be retried.
fn throttled(reply: &HttpReply) -> bool {
    if reply.status == StatusCode::TOO_MANY_REQUESTS {
        return true;
    }
    reply.status == StatusCode::FORBIDDEN
        && reply.value()["error"]["errors"]
            .as_array()
            .is_some_and(|errors| errors.iter().any(|e| matches!(e["reason"].as_str(), Some("userRateLimitExceeded" | "rateLimitExceeded" | "quotaExceeded"))))
}

/// The kinds of second step a 2-Step Verification enrollment holds, which Google removes only
/// all at once (its security keys are WebAuthn keys; it has no HOTP or hardware OTP tokens).
const TWO_STEP_KINDS: &[FactorKind] =
    &[FactorKind::TwoStepVerification, FactorKind::Totp, FactorKind::Webauthn, FactorKind::Passkey, FactorKind::Push, FactorKind::Sms];

/// Whether a recall asking for `kinds` invalidates the 2SV enrollment. A recall that asks for
/// some of its kinds but not all is refused before it starts (see `Capabilities::inseparable`).
fn two_sv_selected(kinds: &[FactorKind]) -> bool {
    kinds.iter().any(|k| *k == FactorKind::All || TWO_STEP_KINDS.contains(k))
}

/// The first `2sv_enroll` at or after the cutoff, with where it came from.
fn earliest_enrollment(activities: Vec<Activity>, cutoff: jiff::Timestamp) -> Option<Enrollment> {
    activities
        .into_iter()
        .filter_map(|a| Some((a.id.time.parse::<jiff::Timestamp>().ok()?, a)))
        .filter(|(at, _)| *at >= cutoff)
        .min_by_key(|(at, _)| *at)
        .map(|(at, activity)| Enrollment { kind: FactorKind::TwoStepVerification, at, origin: Some(origin(&activity)) })
}

/// An id naming the backup-code set without holding a code: a short digest of the sorted codes.
fn codes_fingerprint(codes: &[String]) -> String {
    let mut sorted: Vec<&str> = codes.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let digest = Sha256::digest(sorted.join(",").as_bytes());
    format!("backupCodes:{}", &hex::encode(digest)[..16])
}

/// The pseudo-factor of `user`'s 2SV enrollment older than `cutoff`; the cutoff travels in the
/// id so the re-enrollment check before `turnOff` can be repeated after a resume.
fn two_sv_factor(user: &UserRef, cutoff: jiff::Timestamp) -> FactorRef {
    FactorRef::aged(format!("2sv:{}:before:{cutoff}", user.id), FactorKind::TwoStepVerification, PROVIDER_TYPE_2SV, Age::Unknown)
}

fn cutoff_of(factor: &FactorRef) -> Option<jiff::Timestamp> {
    factor.id.rsplit_once(":before:")?.1.parse().ok()
}

fn millis(value: &Option<Value>) -> Option<i64> {
    match value.as_ref()? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn origin(activity: &Activity) -> EnrollmentOrigin {
    let network = activity.network_info.as_ref();
    let geo: Vec<&str> = network.map(|n| [n.region_code.as_deref(), n.subdivision_code.as_deref()].into_iter().flatten().collect()).unwrap_or_default();
    EnrollmentOrigin {
        ip: activity.ip_address.clone(),
        user_agent: None,
        geo: (!geo.is_empty()).then(|| geo.join("/")),
        asn: network.and_then(|n| n.ip_asn.first().copied()),
    }
}

impl Google {
    async fn set_suspended(&self, user: &UserRef, suspended: bool) -> Result<(), ProviderError> {
        let (status, _) = self
            .call(UPDATE_USER, &self.admin_auth, Method::PUT, &self.user_path(user, ""), &[], Some(&json!({ "suspended": suspended })), &[StatusCode::NOT_FOUND])
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.user_gone(user));
        }
        Ok(())
    }
}

#[async_trait]
impl IdentityProvider for Google {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list_factors: false,
            revoking_ends_enrollments: &[FactorKind::TwoStepVerification],
            factor_creation_time: false,
            delete_factor: false,
            revoke_sessions: true,
            // OAuth tokens are listed; web sessions are inferred (see the limitation).
            count_sessions: true,
            force_re_enrollment: false,
            enrollment_detection: true,
            event_stream: true,
            disable_user: true,
            nested_groups: true,
            // Primary emails and aliases are case-insensitive.
            name_match: NameMatch::CaseInsensitive,
            log_delay: Some(self.http.log_delay(LOG_DELAY)),
            inseparable: vec![Inseparable {
                kinds: TWO_STEP_KINDS,
                why: "Google lists no second factors and turns 2-Step Verification off as a whole",
            }],
            // Google's codes do not expire: the operator invalidates the set at the lifetime's end.
            enrollment_link: None,
            bypass: Some(BypassSupport {
                mechanism: "Google backup verification code (one of a new set, invalidated at expiry)",
                lifetimes: std::time::Duration::from_secs(60)..=std::time::Duration::from_secs(365 * 24 * 3600),
                sent_by_provider: false,
                withdrawable: true,
            }),
            limitations: vec![
                "bypass: a backup code works for a user whose 2-Step Verification is on; a user whose enrollment the recall turned off signs in with the password inside the organisation's enrollment period instead, where a code adds nothing".into(),
                "factors: Google lists no second factors; the whole 2-Step Verification enrollment is turned off, backup codes are invalidated as a set and app passwords deleted one by one".into(),
                "cutoff: only app passwords carry a creation time; 2-Step Verification re-enrollment is read from the Reports API (2sv_enroll), which can lag, so a re-enrollment just before the user is reached may not be seen; backup codes generated after the cutoff but before the user is reached are invalidated too; app passwords created since the cutoff end with 2-Step Verification when it is turned off (Google offers no way to keep them): counted in newFactorsLost and named in lostFactors".into(),
                "enrollment: enforced by the Workspace 2-Step Verification policy (Admin console), not per user".into(),
                "sessions: Google shows no web sessions; signOut ends all of a user's at once and counts as one session for a user who has signed in".into(),
                "disable: suspending users at the deadline needs the scope admin.directory.user besides the recall's scopes".into(),
                "window: the stream is the login audit's 2sv_enroll, 2sv_disable, recovery_phone_edit, suspicious logins and login challenges of everyone, read only up to logDelay ago (events may still appear behind that), so flags come that much after the fact; a user's sign-ins (the new-network baseline, is_suspicious) are read only for a user who enrolls".into(),
                "window: the login audit gives an address with its ASN and region but no coordinates and no proxy verdict (no impossible travel or anonymising-proxy rule), has no event for a user reporting fraud, and 2-Step Verification is enrolled by the user only; a denied Google prompt is read from a login challenge failed by that method; a change an administrator makes for another user (affected_email_address) is not read".into(),
            ],
        }
    }

    async fn check(&self) -> Result<(), ProviderError> {
        let query = [("customer", self.customer.clone()), ("maxResults", "1".to_string())];
        let (status, _) = self.call(LIST_USERS, &self.auth, Method::GET, "/admin/directory/v1/users", &query, None, &[StatusCode::NOT_FOUND]).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.http.error(ErrorKind::Config, format!("customer {} not found: check spec.google.customer", self.customer)));
        }
        Ok(())
    }

    async fn list_users(&self, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        // Cursor: Google's page token.
        let mut query = vec![("customer", self.customer.clone()), ("maxResults", USERS_PAGE.to_string()), ("projection", "basic".to_string())];
        if let Some(token) = cursor {
            query.push(("pageToken", token.to_string()));
        }
        let page: UserList = self.get(LIST_USERS, "/admin/directory/v1/users", &query).await?.ok_or_else(|| {
            self.http.error(ErrorKind::Config, format!("customer {} not found: check spec.google.customer", self.customer))
        })?;
        let (users, unreadable) = split(page.users);
        let users = users.into_iter().map(|u| UserRef { id: u.id, username: u.primary_email }).collect();
        Ok(UserPage { users, next: page.next_page_token.filter(|t| !t.is_empty()), unreadable })
    }

    async fn group_members(&self, group: &str, membership: Membership, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        // Cursor: Google's page token. Google resolves nesting itself (includeDerivedMembership).
        self.members_page(group, membership, cursor).await
    }

    async fn find_user(&self, name: &str) -> Result<Vec<UserRef>, ProviderError> {
        // Google takes the primary email, an alias or the unique id as the user key, emails
        // case-insensitively.
        let found: Option<User> = self.get(GET_USER, &format!("/admin/directory/v1/users/{}", enc(name)), &[("projection", "basic".into())]).await?;
        Ok(found.map(|u| UserRef { id: u.id, username: u.primary_email }).into_iter().collect())
    }

    async fn snapshot(&self, user: &UserRef, kinds: &[FactorKind], cutoff: jiff::Timestamp) -> Result<UserSnapshot, ProviderError> {
        let profile: User = self.get(GET_USER, &self.user_path(user, ""), &[("projection", "basic".into())]).await?.ok_or_else(|| self.user_gone(user))?;
        // Order matters: turnOff takes codes and app passwords with it, so they go first and
        // each is accounted for on its own.
        let mut factors = Vec::new();
        if selected(FactorKind::RecoveryCodes, kinds) {
            let codes = self.backup_codes(user).await?;
            if !codes.is_empty() {
                factors.push(FactorRef::aged(codes_fingerprint(&codes), FactorKind::RecoveryCodes, PROVIDER_TYPE_CODES, Age::Unknown));
            }
        }
        if selected(FactorKind::AppPassword, kinds) {
            let asps: Items<Asp> = self.get(LIST_FACTORS, &self.user_path(user, "/asps"), &[]).await?.ok_or_else(|| self.user_gone(user))?;
            for asp in asps.items {
                // Without a creation time an app password is of unknown age, and kept.
                let age = Age::of(millis(&asp.creation_time).and_then(Shown::millis), cutoff);
                if age != Age::Since {
                    factors.push(FactorRef::aged(asp.code_id.to_string(), FactorKind::AppPassword, PROVIDER_TYPE_ASP, age));
                }
            }
        }
        // A 2SV enrollment since the cutoff is kept (whatever its entry says, even a time that
        // does not parse), and, where its time is known, the user counted as already enrolled.
        let mut enrolled_since_cutoff = None;
        if two_sv_selected(kinds) && profile.is_enrolled_in2_sv {
            let enrolled = self.enrollments_since(user, cutoff).await?;
            if enrolled.is_empty() {
                factors.push(two_sv_factor(user, cutoff));
            }
            enrolled_since_cutoff = earliest_enrollment(enrolled, cutoff);
        }
        let tokens: Items<OAuthToken> = self.get(LIST_SESSIONS, &self.user_path(user, "/tokens"), &[]).await?.ok_or_else(|| self.user_gone(user))?;
        let signed_in = profile.last_login_time.as_deref().is_some_and(|t| t != NEVER);
        let handles: Vec<String> = tokens.items.into_iter().map(|t| t.client_id).collect();
        Ok(UserSnapshot { factors, sessions: handles.len() as u64 + signed_in as u64, session_handles: handles, enrolled_since_cutoff, at_risk: None, taken_at: None })
    }

    async fn revoke_sessions(&self, user: &UserRef, snapshot: &UserSnapshot) -> Result<(), ProviderError> {
        for client in &snapshot.session_handles {
            // Deleting the token revokes the app's access and refresh tokens; 404: already gone.
            self.call(REVOKE_SESSIONS, &self.auth, Method::DELETE, &self.user_path(user, &format!("/tokens/{}", enc(client))), &[], None, &[StatusCode::NOT_FOUND])
                .await?;
        }
        // Ends every web and device session and resets sign-in cookies, remembered 2SV devices included.
        let (status, _) =
            self.call(REVOKE_SESSIONS, &self.auth, Method::POST, &self.user_path(user, "/signOut"), &[], None, &[StatusCode::NOT_FOUND]).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.user_gone(user));
        }
        Ok(())
    }

    async fn revoke_factor(&self, user: &UserRef, factor: &FactorRef) -> Result<RevokeOutcome, ProviderError> {
        let gone_if = |status: StatusCode| if status.is_success() { RevokeOutcome::Revoked } else { RevokeOutcome::AlreadyGone };
        match factor.provider_type.as_str() {
            PROVIDER_TYPE_CODES => {
                // Generating codes replaces the old set: a different set means the recorded one is gone.
                let codes = self.backup_codes(user).await?;
                if codes.is_empty() || codes_fingerprint(&codes) != factor.id {
                    return Ok(RevokeOutcome::AlreadyGone);
                }
                let (status, _) = self
                    .call(DELETE_FACTOR, &self.auth, Method::POST, &self.user_path(user, "/verificationCodes/invalidate"), &[], None, &[StatusCode::NOT_FOUND])
                    .await?;
                Ok(gone_if(status))
            }
            PROVIDER_TYPE_ASP => {
                let path = self.user_path(user, &format!("/asps/{}", enc(&factor.id)));
                let (status, _) = self.call(DELETE_FACTOR, &self.auth, Method::DELETE, &path, &[], None, &[StatusCode::NOT_FOUND]).await?;
                Ok(gone_if(status))
            }
            PROVIDER_TYPE_2SV => {
                let cutoff = cutoff_of(factor).ok_or_else(|| {
                    self.http.error(ErrorKind::Rejected, format!("unreadable 2-Step Verification record {}", factor.id))
                })?;
                // The enrollment recorded may have been replaced by a re-enrollment since: never turn that off.
                if !self.enrollments_since(user, cutoff).await?.is_empty() {
                    return Ok(RevokeOutcome::AlreadyGone);
                }
                // turnOff ends the user's app passwords too, with no way to keep one: those not
                // shown to predate the cutoff are named as lost with it.
                let asps: Items<Asp> = self.get(LIST_FACTORS, &self.user_path(user, "/asps"), &[]).await?.ok_or_else(|| self.user_gone(user))?;
                let taken: Vec<String> = asps
                    .items
                    .iter()
                    .filter(|asp| Age::of(millis(&asp.creation_time).and_then(Shown::millis), cutoff) != Age::Before)
                    .map(|asp| format!("{} {}", FactorKind::AppPassword.as_str(), asp.code_id))
                    .collect();
                let path = self.user_path(user, "/twoStepVerification/turnOff");
                // 400: the user is not enrolled (any more).
                let (status, _) =
                    self.call(DELETE_FACTOR, &self.auth, Method::POST, &path, &[], None, &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND]).await?;
                Ok(match gone_if(status) {
                    RevokeOutcome::Revoked if !taken.is_empty() => RevokeOutcome::RevokedTaking(taken),
                    outcome => outcome,
                })
            }
            other => Err(self.http.error(ErrorKind::Rejected, format!("unknown Google factor type {other}"))),
        }
    }

    async fn factor_ages(&self, user: &UserRef, factors: &[FactorRef], cutoff: jiff::Timestamp, _taken_at: jiff::Timestamp) -> Result<Vec<LoggedAge>, ProviderError> {
        // With no 2SV enrollment since the cutoff, the enrollment and its codes are old. With one,
        // the enrollment is new; the codes, which no log dates, may be new or the old set.
        let enrolled = !self.enrollments_since(user, cutoff).await?.is_empty();
        Ok(factors
            .iter()
            .map(|f| match (enrolled, f.provider_type.as_str()) {
                (false, _) => LoggedAge::Before,
                (true, PROVIDER_TYPE_2SV) => LoggedAge::Since,
                (true, _) => LoggedAge::Unknown,
            })
            .collect())
    }

    async fn require_enrollment(&self, _user: &UserRef, _lost: &[FactorRef], _channel: super::EnrollmentChannel) -> Result<(), ProviderError> {
        // Only the Admin console's 2-Step Verification enforcement can require enrollment (see limitations).
        Ok(())
    }

    async fn enrolled_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError> {
        Ok(earliest_enrollment(self.enrollments_since(user, cutoff).await?, cutoff))
    }

    async fn read_events(&self, query: &EventQuery<'_>) -> Result<EventPage, ProviderError> {
        let mut page = EventPage::default();
        let (path, mut params, mut cursor) = match query.user {
            // A user's own history: every login event, bounded, paged by the token in the cursor.
            Some(user) => {
                let cursor = LoginCursor { since: Some(query.from), end: query.until, page: query.cursor.map(String::from) };
                (format!("/admin/reports/v1/activity/users/{}/applications/login", enc(&user.id)), Vec::new(), cursor)
            }
            None => {
                let mut cursor: LoginCursor = query.cursor.and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
                let since = *cursor.since.get_or_insert(query.from);
                if cursor.end.is_none() {
                    // Never past what Google may still add: up to its lag ago, and no later than asked.
                    let lag = jiff::SignedDuration::try_from(self.http.log_delay(LOG_DELAY)).unwrap_or(jiff::SignedDuration::from_mins(15));
                    let end = jiff::Timestamp::now() - lag;
                    let end = query.until.map_or(end, |u| u.min(end));
                    if end <= since {
                        page.cursor = Some(serde_json::to_string(&cursor).expect("times and text"));
                        return Ok(page);
                    }
                    cursor.end = Some(end);
                }
                ("/admin/reports/v1/activity/users/all/applications/login".to_string(), vec![("eventName", WATCHED_EVENTS.to_string())], cursor)
            }
        };
        let stamp = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        params.extend(cursor.since.map(|t| ("startTime", stamp(t))));
        params.extend(cursor.end.map(|t| ("endTime", stamp(t))));
        params.push(("maxResults", ACTIVITIES_PAGE.to_string()));
        params.extend(cursor.page.clone().map(|t| ("pageToken", t)));
        let (status, value) = self.call(LOGIN_AUDIT, &self.auth, Method::GET, &path, &params, None, &[StatusCode::NOT_FOUND]).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.http.error(ErrorKind::NotFound, format!("GET {path}: 404 ({})", brief(&value))));
        }
        for activity in value["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
            match login_events(activity) {
                Ok(events) => page.events.extend(events),
                Err(why) => page.skipped.push(why),
            }
        }
        // The Reports API lists newest first; the watch reads oldest first (several in one
        // second keep their order so).
        page.events.reverse();
        let next = value["nextPageToken"].as_str().map(str::trim).filter(|t| !t.is_empty()).map(String::from);
        page.more = next.is_some();
        if query.user.is_some() {
            page.cursor = next;
            return Ok(page);
        }
        match next {
            Some(token) => cursor.page = Some(token),
            // The read is done: the next begins where this one ended.
            None => cursor = LoginCursor { since: cursor.end, end: None, page: None },
        }
        page.cursor = Some(serde_json::to_string(&cursor).expect("times and text"));
        Ok(page)
    }

    async fn disable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        self.set_suspended(user, true).await
    }

    async fn enabled(&self, user: &UserRef) -> Result<Option<bool>, ProviderError> {
        let found: Value = self.get(GET_USER, &self.user_path(user, ""), &[("projection", "basic".into())]).await?.ok_or_else(|| self.user_gone(user))?;
        Ok(Some(!found["suspended"].as_bool().unwrap_or(false)))
    }

    async fn enable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        self.set_suspended(user, false).await
    }

    async fn bypass_address(&self, user: &UserRef) -> Result<Option<String>, ProviderError> {
        // The primary email is the mailbox the code unlocks: the recovery email is the user's own elsewhere.
        let found: Value = self.get(GET_USER, &self.user_path(user, ""), &[("projection", "basic".into())]).await?.ok_or_else(|| self.user_gone(user))?;
        Ok(found["recoveryEmail"].as_str().map(str::trim).filter(|a| a.contains('@')).map(String::from))
    }

    async fn issue_bypass(&self, user: &UserRef, lifetime: std::time::Duration) -> Result<IssuedBypass, ProviderError> {
        // Generating replaces the user's set (ours from a try cut short among them); one code of
        // the new set goes to the user, and the set is invalidated at expiry: Google's codes do
        // not expire by themselves.
        let issued_at = jiff::Timestamp::now();
        let (status, _) = self.call(ISSUE_BYPASS, &self.auth, Method::POST, &self.user_path(user, "/verificationCodes/generate"), &[], None, &[StatusCode::NOT_FOUND]).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.user_gone(user));
        }
        let codes = self.backup_codes(user).await?;
        let code = codes.first().filter(|c| !c.is_empty()).cloned().ok_or_else(|| self.http.error(ErrorKind::Rejected, "Google generated backup codes but listed none"))?;
        let expires_at = issued_at.checked_add(jiff::SignedDuration::try_from(lifetime).unwrap_or(jiff::SignedDuration::ZERO)).unwrap_or(issued_at);
        // The set as issued, and as it is once the delivered code is used: what tells this set
        // from one the user generates later. Neither reveals a code.
        let reference = format!("{} {}", codes_fingerprint(&codes), codes_fingerprint(&codes[1..]));
        Ok(IssuedBypass { secret: Some(SecretString::new(code)), expires_at, reference: Some(reference) })
    }

    async fn bypass_used(&self, user: &UserRef, _issued_at: jiff::Timestamp, reference: Option<&str>) -> Result<Option<bool>, ProviderError> {
        // Google lists the codes still valid: the issued set without the delivered code is what
        // is left once the user signed in with it.
        let Some((_, used)) = reference.and_then(|r| r.split_once(' ')) else { return Ok(None) };
        let codes = self.backup_codes(user).await?;
        Ok(Some(codes_fingerprint(&codes) == used))
    }

    async fn revoke_bypass(&self, user: &UserRef, _issued_at: jiff::Timestamp, reference: Option<&str>) -> Result<(), ProviderError> {
        // Only the set issued: one the user generated since (after enrolling anew) is theirs, and
        // without the reference nothing tells the two apart.
        let Some(reference) = reference else { return Ok(()) };
        let codes = match self.backup_codes(user).await {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            codes => codes?,
        };
        let current = codes_fingerprint(&codes);
        if codes.is_empty() || !reference.split(' ').any(|issued| issued == current) {
            return Ok(());
        }
        self.call(DELETE_FACTOR, &self.auth, Method::POST, &self.user_path(user, "/verificationCodes/invalidate"), &[], None, &[StatusCode::NOT_FOUND]).await?;
        Ok(())
    }
}

/// A short, secret-free rendering of a Google error body: its reason and message.
fn brief(value: &Value) -> String {
    super::brief(value, &["/error/errors/0/reason", "/error/message"])
}

/// Every answer shape this adapter decodes, for the fuzz target `provider_json`.
pub(crate) fn decode_answers(data: &[u8]) {
    crate::fuzzing::decode::<UserList>(data);
    crate::fuzzing::decode::<MemberList>(data);
    crate::fuzzing::decode::<Items<Asp>>(data);
    crate::fuzzing::decode::<Items<OAuthToken>>(data);
    crate::fuzzing::decode::<Items<VerificationCode>>(data);
    crate::fuzzing::decode::<Activities>(data);
    crate::fuzzing::decode::<ServiceAccountKey>(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use idp_sim::FactorKind as Sim;
    use bytes::Bytes;
    use reqwest::header::HeaderMap;

    fn reply(status: u16, body: Value) -> HttpReply {
        HttpReply { status: StatusCode::from_u16(status).unwrap(), headers: HeaderMap::new(), body: Bytes::from(body.to_string()) }
    }

    #[test]
    fn quota_403s_are_throttling_and_permission_403s_are_not() {
        let quota = |reason: &str| reply(403, json!({ "error": { "code": 403, "errors": [{ "reason": reason }] } }));
        assert!(throttled(&quota("userRateLimitExceeded")));
        assert!(throttled(&quota("rateLimitExceeded")));
        assert!(throttled(&quota("quotaExceeded")));
        assert!(!throttled(&quota("insufficientPermissions")));
        assert!(!throttled(&quota("forbidden")));
        assert!(throttled(&reply(429, json!({}))));
    }

    #[test]
    fn any_second_step_kind_selects_the_whole_enrollment() {
        assert!(two_sv_selected(&[FactorKind::All]));
        assert!(two_sv_selected(&[FactorKind::Webauthn]));
        assert!(two_sv_selected(&[FactorKind::TwoStepVerification]));
        assert!(!two_sv_selected(&[FactorKind::RecoveryCodes, FactorKind::AppPassword]));
    }

    #[test]
    fn the_2sv_record_carries_its_cutoff() {
        let cutoff: jiff::Timestamp = "2026-11-27T18:00:00.123Z".parse().unwrap();
        let user = UserRef { id: "104857600000000000001".into(), username: "a@example.com".into() };
        assert_eq!(cutoff_of(&two_sv_factor(&user, cutoff)), Some(cutoff));
    }

    #[test]
    fn the_codes_fingerprint_hides_the_codes_and_ignores_order() {
        let codes = vec!["12345678".to_string(), "87654321".to_string()];
        let id = codes_fingerprint(&codes);
        assert_eq!(id, codes_fingerprint(&[codes[1].clone(), codes[0].clone()]));
        assert!(!id.contains("12345678") && !id.contains("87654321"));
        assert_ne!(id, codes_fingerprint(&["12345679".to_string(), "87654321".to_string()]));
    }

    /// The adapter connected to a fresh simulator with `users` seeded users.
    async fn connected(users: u32) -> (idp_sim::subject::Subject, std::sync::Arc<dyn IdentityProvider>) {
        let subject = idp_sim::subject::Subject::start("google").await.unwrap();
        subject.sim.provider.seed(&idp_sim::Seed { users, ..Default::default() });
        let provider = crate::backends::connect_to_sim(&subject);
        (subject, provider)
    }

    #[tokio::test]
    async fn what_the_user_renews_after_the_snapshot_is_never_destroyed() {
        let (subject, google) = connected(2).await;
        let cutoff = jiff::Timestamp::now();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let user = google.list_users(None).await.unwrap().users.remove(0);
        assert_eq!(google.find_user(&user.username.to_uppercase()).await.unwrap(), vec![user.clone()], "emails are case-insensitive");
        assert!(google.find_user("nobody@example.com").await.unwrap().is_empty());
        let snapshot = google.snapshot(&user, &[FactorKind::All], cutoff).await.unwrap();
        let kinds: Vec<FactorKind> = snapshot.factors.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [FactorKind::RecoveryCodes, FactorKind::AppPassword, FactorKind::TwoStepVerification]);
        assert_eq!(snapshot.sessions, 2, "one OAuth token and the web sign-in");

        // The user generates new backup codes and re-enrolls in 2SV before the recall reaches them.
        let provider = &subject.sim.provider;
        let new_codes = provider.enroll(&user.username, Sim::RecoveryCodes, "203.0.113.5").unwrap();
        let new_2sv = provider.enroll(&user.username, Sim::Totp, "203.0.113.5").unwrap();
        let mut outcomes = Vec::new();
        for factor in &snapshot.factors {
            outcomes.push(google.revoke_factor(&user, factor).await.unwrap());
        }
        assert_eq!(outcomes, [RevokeOutcome::AlreadyGone, RevokeOutcome::Revoked, RevokeOutcome::AlreadyGone]);
        let kept: Vec<String> = provider.user(&user.username).unwrap().factors.into_iter().map(|f| f.id).collect();
        assert_eq!(kept, [new_2sv, new_codes]);

        let seen = google.enrolled_since(&user, cutoff).await.unwrap().expect("the re-enrollment is in Reports");
        assert_eq!(seen.kind, FactorKind::TwoStepVerification);
        assert_eq!(seen.origin.and_then(|o| o.ip).as_deref(), Some("203.0.113.5"));
        // Re-run (a resumed recall): nothing left to do, nothing destroyed.
        assert_eq!(google.revoke_factor(&user, &snapshot.factors[2]).await.unwrap(), RevokeOutcome::AlreadyGone);
    }

    #[tokio::test]
    async fn groups_are_named_with_or_without_the_domain() {
        let subject = idp_sim::subject::Subject::start("google").await.unwrap();
        let seed = idp_sim::Seed { users: 450, groups: vec![idp_sim::GroupSeed::new("staff", 2)], ..Default::default() };
        subject.sim.provider.seed(&seed);
        let google = crate::backends::connect_to_sim(&subject);
        // 225 members, 200 per page, named either way.
        for name in ["staff", "staff@example.com"] {
            assert_eq!(google.all_group_members(name, Membership::Transitive).await.unwrap().len(), 225, "{name}");
        }
        assert!(matches!(google.group_members("nobody", Membership::Transitive, None).await, Err(e) if e.kind() == ErrorKind::NotFound));
    }

    #[test]
    fn reports_network_info_becomes_the_origin() {
        let activity: Activity = serde_json::from_value(json!({
            "id": { "time": "2026-11-27T18:01:00.000Z", "uniqueQualifier": "-1", "applicationName": "login" },
            "ipAddress": "203.0.113.9",
            "networkInfo": { "ipAsn": [64496], "regionCode": "US", "subdivisionCode": "US-CA" },
            "events": [{ "name": "2sv_enroll" }],
        }))
        .unwrap();
        let origin = origin(&activity);
        assert_eq!(origin.ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(origin.geo.as_deref(), Some("US/US-CA"));
        assert_eq!(origin.asn, Some(64496));
    }

    fn login(name: &str, parameters: Value) -> Value {
        json!({
            "kind": "admin#reports#activity",
            "id": { "time": "2026-11-28T10:00:00.000Z", "uniqueQualifier": "-4285713052116290813", "applicationName": "login", "customerId": "C03az79cb" },
            "actor": { "email": "alex@example.com", "profileId": "104857600000000000001" },
            "ipAddress": "100.64.7.7",
            "networkInfo": { "ipAsn": [64505], "regionCode": "ng", "subdivisionCode": "NG-LA" },
            "events": [{ "type": "login", "name": name, "parameters": parameters }],
        })
    }

    fn kinds(activity: &Value) -> Vec<EventKind> {
        login_events(activity).unwrap().into_iter().map(|e| e.kind).collect()
    }

    #[test]
    fn login_audit_events_become_identity_events() {
        let enrolled = login_events(&login("2sv_enroll", json!([]))).unwrap().remove(0);
        assert_eq!((enrolled.kind, enrolled.factor, enrolled.actor.clone()), (EventKind::FactorEnrolled, Some(FactorKind::TwoStepVerification), Actor::User));
        assert_eq!((enrolled.id.as_str(), enrolled.user_id.as_str()), ("-4285713052116290813", "104857600000000000001"));
        assert_eq!(enrolled.client.ip, Some("100.64.7.7".parse().unwrap()));
        assert_eq!((enrolled.client.asn, enrolled.client.geo.as_ref().and_then(|g| g.country.as_deref())), (Some(64505), Some("NG")));
        assert_eq!(kinds(&login("2SV_DISABLE", json!([]))), [EventKind::SecondStepWeakened]);
        assert_eq!(kinds(&login("recovery_phone_edit", json!([]))), [EventKind::SecondStepWeakened]);
        assert_eq!(kinds(&login("suspicious_login", json!([]))), [EventKind::RiskySignIn]);
        assert_eq!(kinds(&login("login_success", json!([{ "name": "is_suspicious", "boolValue": false }]))), [EventKind::SignIn]);
        assert_eq!(kinds(&login("login_success", json!([{ "name": "is_suspicious", "boolValue": true }]))), [EventKind::RiskySignIn]);
        assert_eq!(kinds(&login("login_success", json!([{ "name": "IS_SUSPICIOUS", "value": "True" }]))), [EventKind::RiskySignIn]);
        let challenge = |method: &str, status: &str| login("login_challenge", json!([{ "name": "login_challenge_method", "value": method }, { "name": "login_challenge_status", "value": status }]));
        assert_eq!(kinds(&challenge("google_prompt", "Challenge Failed")), [EventKind::PushDenied]);
        assert_eq!(kinds(&challenge("google_prompt", "Challenge Passed.")), [EventKind::MfaChallenge]);
        assert!(kinds(&challenge("google_authenticator", "Challenge Failed")).is_empty(), "a mistyped code is not a denied push");
        assert!(kinds(&login("login_failure", json!([{ "name": "login_failure_type", "value": "login_failure_invalid_password" }]))).is_empty());
        assert!(kinds(&login("password_edit", json!([]))).is_empty());
    }

    #[test]
    fn unreadable_or_foreign_login_activities_are_told_apart() {
        let mut two = login("2sv_enroll", json!([]));
        two["events"].as_array_mut().unwrap().push(json!({ "name": "login_success" }));
        let ids: Vec<String> = login_events(&two).unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["-4285713052116290813", "-4285713052116290813:1"], "one id per event");
        let mut garbage = login("2sv_enroll", json!(null));
        garbage["ipAddress"] = json!("2001:db8::zz");
        garbage["networkInfo"] = json!({ "ipAsn": ["x"], "regionCode": "" });
        let event = login_events(&garbage).unwrap().remove(0);
        assert_eq!((event.client.ip, event.client.asn, event.client.geo), (None, None, None));
        let mut numeric = login("2sv_enroll", json!([]));
        numeric["id"]["uniqueQualifier"] = json!(-42);
        assert_eq!(login_events(&numeric).unwrap()[0].id, "-42");
        let mut no_time = login("2sv_enroll", json!([]));
        no_time["id"]["time"] = json!("soon");
        assert!(login_events(&no_time).is_err());
        let mut no_id = login("2sv_enroll", json!([]));
        no_id["id"] = json!({});
        assert!(login_events(&no_id).is_err());
        let mut no_profile = login("2sv_enroll", json!([]));
        no_profile["actor"] = json!({ "email": "alex@example.com" });
        assert!(login_events(&no_profile).unwrap_err().contains("profileId"));
        // Nothing read: no profile needed.
        let mut unwatched = login("password_edit", json!([]));
        unwatched["actor"] = json!({});
        assert!(login_events(&unwatched).unwrap().is_empty());
        // An administrator's change for another user names that user by email only.
        let by_admin = login("2sv_disable", json!([{ "name": "affected_email_address", "value": "someone@example.com" }]));
        assert!(login_events(&by_admin).unwrap().is_empty());
        let own = login("2sv_disable", json!([{ "name": "affected_email_address", "value": "Alex@Example.com" }]));
        assert_eq!(kinds(&own), [EventKind::SecondStepWeakened]);
    }

    #[tokio::test]
    async fn the_stream_never_reads_past_the_lag() {
        use idp_sim::{Act, Activity};
        let (subject, google) = connected(3).await;
        assert!(google.capabilities().event_stream);
        let from = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(30);
        let provider = &subject.sim.provider;
        let early = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(20);
        for i in 0..3 {
            provider.act(&idp_sim::username(i), &Activity { at: Some(early), ..Activity::new(Act::Enroll { factor: Sim::Totp }, "203.0.113.5") }).unwrap();
            provider.act(&idp_sim::username(i), &Activity { at: Some(early), ..Activity::new(Act::SignIn, "203.0.113.5") }).unwrap();
        }
        // Just now: within the lag (logDelay, one second here), not read yet.
        provider.act(&idp_sim::username(0), &Activity::new(Act::PushDenied, "203.0.113.5")).unwrap();
        let page = google.read_events(&EventQuery { cursor: None, from, until: None, user: None }).await.unwrap();
        assert_eq!(page.events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::FactorEnrolled; 3], "sign-ins are not streamed, and nothing within the lag");
        assert!(!page.more);
        let cursor: LoginCursor = serde_json::from_str(page.cursor.as_deref().unwrap()).unwrap();
        assert!(cursor.since.is_some_and(|s| s <= jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1)) && cursor.end.is_none(), "{cursor:?}");
        // Once the lag has passed the denied prompt is read, from where the last read ended.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let next = google.read_events(&EventQuery { cursor: page.cursor.as_deref(), from, until: None, user: None }).await.unwrap();
        assert_eq!(next.events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::PushDenied]);
        // A user's own history, bounded.
        let user = google.find_user(&idp_sim::username(0)).await.unwrap().remove(0);
        let history = google.read_events(&EventQuery { cursor: None, from, until: Some(jiff::Timestamp::now()), user: Some(&user) }).await.unwrap();
        let mut kinds: Vec<&str> = history.events.iter().map(|e| e.kind.as_str()).collect();
        kinds.sort();
        assert_eq!(kinds, ["factorEnrolled", "pushDenied", "signIn"]);
    }
}
