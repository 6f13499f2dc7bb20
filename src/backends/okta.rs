//! Okta Management API (`{url}/api/v1`), authenticated with an API token (`SSWS`) or as an OAuth
//! service app (`private_key_jwt`). Factors carry `created`, so the cutoff is compared directly.
//!
//! What Okta makes awkward, and how this adapter copes:
//! - `GET /users/{id}/factors` is filtered by the enrollment policy (Okta FastPass is missing from
//!   it), and Identity Engine's `GET /users/{id}/authenticator-enrollments` misses Classic-only
//!   factors: both are read and merged by id. A factor only the enrollment list shows is deleted
//!   through that list (its `provider_type` starts with `enrollment/`).
//! - Deleting an Okta Verify `push` or `signed_nonce` factor removes every Okta Verify factor on
//!   that device. The snapshot therefore records those linked factors too (the user loses them,
//!   whatever kinds the recall asked for), puts the deleting one first, and refuses the user when
//!   one of them was enrolled after the cutoff. The linked ones then answer 404: AlreadyGone.
//! - `lifecycle/reset_factors` ignores any cutoff and is never called.
//! - There is no per-user "enroll again" API besides that reset: the enrollment policy makes
//!   users enroll at their next sign-in.
//! - Rate limits are per endpoint family; every call names its bucket (users, groups, logs, token)
//!   so the budget Okta announces in `X-Rate-Limit-*` is followed per family.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::auth::{Grant, RsaSigner, TokenSource};
use super::http::{HttpReply, Op, ProviderHttp, SecretKeys, check_json};
use super::{
    Age, Capabilities, Enrollment, EnrollmentOrigin, FactorRef, IdentityProvider, Membership, NameMatch, ErrorKind, ProviderError, Record, RevokeOutcome, Shown, Unreadable, UserPage,
    UserRef, UserSnapshot, enc, first_enrolled_since, selected, split,
};
use crate::api::{FactorKind, OktaProvider};
use crate::watch::{Actor, ClientInfo, EventKind, EventPage, EventQuery, Geo, IdentityEvent, Personal};

/// Users per listing request: Okta's maximum for `/users`.
const USERS_PAGE: usize = 200;
/// Group members per request: Okta's maximum for `/groups/{id}/users`.
const MEMBERS_PAGE: usize = 1000;
const OAUTH_SCOPES: &str = "okta.users.read okta.users.manage okta.groups.read okta.logs.read";
/// `provider_type` prefix of a factor that only the authenticator-enrollment list shows.
const ENROLLMENT_ONLY: &str = "enrollment/";
/// Marks, in `provider_type`, a factor that lives on an Okta Verify device deleted with the factor
/// before it in the plan: Okta deletes it along.
const ON_DELETED_DEVICE: &str = "device/";
/// System Log entries per request: Okta's maximum for `/logs`.
const LOG_PAGE: usize = 1000;
/// What the window watch reads from the org's System Log: enrollments and what should make one
/// suspect. Sign-ins and removals are read only in a user's own history, where the rules need
/// them: the recall's own removals would otherwise fill the stream with millions of entries.
const WATCHED_EVENT_TYPES: [&str; 5] = [
    "user.mfa.factor.activate",
    "user.mfa.okta_verify.deny_push",
    "user.account.report_suspicious_activity_by_enduser",
    "user.risk.detect",
    "security.threat.detected",
];

const LIST_USERS: Op = Op::new("list_users", "users");
const GET_USER: Op = Op::new("get_user", "users");
const LIST_FACTORS: Op = Op::new("list_factors", "users");
const DELETE_FACTOR: Op = Op::new("delete_factor", "users");
const REVOKE_SESSIONS: Op = Op::new("revoke_sessions", "users");
const UPDATE_STATUS: Op = Op::new("update_status", "users");
const SEND_LINK: Op = Op::new("send_link", "users");
const FIND_GROUP: Op = Op::new("find_group", "groups");
const LIST_MEMBERS: Op = Op::new("list_members", "groups");
const READ_LOG: Op = Op::new("read_log", "logs");

enum Credentials {
    /// The whole `Authorization` value, built once and marked sensitive so it never prints.
    ApiToken(HeaderValue),
    ServiceApp(Box<TokenSource>),
}

pub struct Okta {
    http: ProviderHttp,
    credentials: Credentials,
    /// The org URL without a trailing slash.
    base: String,
    /// `namespace/name` of the credentials Secret.
    secret_name: String,
    /// The System Log was refused once: said once, then factor creation times are used.
    log_refused: AtomicBool,
}

/// Okta's factor types, as our kinds (the simulator reports its state with the same mapping).
fn factor_kind(factor_type: &str) -> Option<FactorKind> {
    Some(match factor_type {
        "token:software:totp" => FactorKind::Totp,
        "token:hotp" => FactorKind::Hotp,
        "token:hardware" | "token" => FactorKind::HardwareToken,
        "webauthn" | "u2f" => FactorKind::Webauthn,
        // Okta FastPass: a device-bound passwordless credential.
        "signed_nonce" => FactorKind::Passkey,
        // `web` is Duo Security as an Okta factor: a push to the Duo app.
        "push" | "web" => FactorKind::Push,
        "sms" | "call" => FactorKind::Sms,
        "email" => FactorKind::Email,
        "question" => FactorKind::SecurityQuestion,
        // A Temporary Access Code is a bypass credential.
        "tac" => FactorKind::RecoveryCodes,
        _ => return None,
    })
}

/// The factor type an Identity Engine authenticator enrollment stands for; None for the password
/// and for enrollments that hold no secret of the user's (federated, proximity).
fn enrollment_factor_type(type_: &str, key: &str, profile: Option<&FactorProfile>) -> Option<&'static str> {
    let method = |m: &str| profile.and_then(|p| p.methods.as_array()).is_some_and(|ms| ms.iter().any(|v| v == m));
    Some(match (type_, key) {
        // Removing the Okta Verify enrollment removes all its methods, FastPass included.
        ("app", "okta_verify") if method("signed_nonce") => "signed_nonce",
        ("app", "okta_verify") if method("push") => "push",
        ("app", "custom_otp") => "token:hotp",
        ("app", _) => "token:software:totp",
        ("security_key", "yubikey_token") => "token:hardware",
        ("security_key", _) => "webauthn",
        ("phone", _) => "sms",
        ("email", _) => "email",
        ("security_question", _) => "question",
        ("tac", _) => "tac",
        _ => return None,
    })
}

/// Deleting one of these removes every Okta Verify factor on the same device.
fn deletes_device(factor_type: &str) -> bool {
    matches!(factor_type, "push" | "signed_nonce")
}

#[derive(Deserialize)]
struct OktaUser {
    id: String,
    profile: UserProfile,
    #[serde(default)]
    status: String,
}

#[derive(Deserialize)]
struct UserProfile {
    login: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OktaFactor {
    id: String,
    factor_type: String,
    #[serde(default, deserialize_with = "super::shown_text")]
    created: Option<Shown>,
    #[serde(default)]
    profile: Option<FactorProfile>,
}

/// What we read of a factor's or an enrollment's `profile`; its other fields are skipped
/// unparsed, so a snapshot does not build a map per factor.
#[derive(Deserialize)]
struct FactorProfile {
    /// The Okta Verify device a factor lives on.
    #[serde(default, rename = "deviceToken")]
    device_token: Value,
    /// An Okta Verify enrollment's methods (`push`, `signed_nonce`).
    #[serde(default)]
    methods: Value,
}

#[derive(Deserialize)]
struct AuthenticatorEnrollment {
    id: String,
    #[serde(rename = "type")]
    type_: String,
    #[serde(default)]
    key: String,
    #[serde(default, deserialize_with = "super::shown_text")]
    created: Option<Shown>,
    #[serde(default)]
    profile: Option<FactorProfile>,
}

#[derive(Deserialize)]
struct OktaGroup {
    id: String,
    profile: GroupProfile,
}

#[derive(Deserialize)]
struct GroupProfile {
    name: String,
}

/// One factor the user holds, from either list.
#[derive(Clone, Debug, PartialEq)]
struct Held {
    id: String,
    factor_type: String,
    kind: FactorKind,
    created: Option<Shown>,
    /// The Okta Verify device it lives on (`profile.deviceToken`).
    device: Option<String>,
    enrollment_only: bool,
}

impl Held {
    /// Okta documents `created` on every factor; one without it is of unknown age, and kept.
    fn age(&self, cutoff: jiff::Timestamp) -> Age {
        Age::of(self.created, cutoff)
    }

    fn to_ref(&self, cutoff: jiff::Timestamp) -> FactorRef {
        let provider_type = if self.enrollment_only { format!("{ENROLLMENT_ONLY}{}", self.factor_type) } else { self.factor_type.clone() };
        FactorRef::aged(self.id.clone(), self.kind, provider_type, self.age(cutoff))
    }
}

fn device_of(profile: Option<&FactorProfile>) -> Option<String> {
    profile?.device_token.as_str().filter(|d| !d.is_empty()).map(String::from)
}

/// Both lists merged by id; the factors API wins where both show a factor.
fn merge(factors: Vec<OktaFactor>, enrollments: Vec<AuthenticatorEnrollment>) -> Vec<Held> {
    let mut held: Vec<Held> = factors
        .into_iter()
        .filter_map(|f| {
            let kind = factor_kind(&f.factor_type)?;
            Some(Held { device: device_of(f.profile.as_ref()), id: f.id, kind, created: f.created, factor_type: f.factor_type, enrollment_only: false })
        })
        .collect();
    for e in enrollments {
        if held.iter().any(|h| h.id == e.id) {
            continue;
        }
        let Some(factor_type) = enrollment_factor_type(&e.type_, &e.key, e.profile.as_ref()) else { continue };
        let Some(kind) = factor_kind(factor_type) else { continue };
        held.push(Held { device: device_of(e.profile.as_ref()), id: e.id, kind, created: e.created, factor_type: factor_type.into(), enrollment_only: true });
    }
    held
}

/// The factors to record for a recall of `kinds`: those older than the cutoff, plus every factor
/// Okta will remove along with them (Okta Verify on the same device), each device's deleting
/// factor first. Err names a linked factor enrolled after the cutoff.
fn plan(held: &[Held], kinds: &[FactorKind], cutoff: jiff::Timestamp) -> Result<Vec<FactorRef>, String> {
    let mut chosen: Vec<&Held> = held.iter().filter(|h| h.age(cutoff) != Age::Since && selected(h.kind, kinds)).collect();
    let devices: Vec<String> = chosen.iter().filter(|h| deletes_device(&h.factor_type)).filter_map(|h| h.device.clone()).collect();
    for device in &devices {
        for linked in held.iter().filter(|h| h.device.as_ref() == Some(device)) {
            if linked.age(cutoff) != Age::Before {
                return Err(format!(
                    "deleting its Okta Verify factors would also delete factor {} ({}) enrolled after the cutoff or at an unknown time; remove the old Okta Verify factors by hand",
                    linked.id, linked.factor_type
                ));
            }
            if !chosen.iter().any(|c| c.id == linked.id) {
                chosen.push(linked);
            }
        }
    }
    let mut ordered: Vec<FactorRef> = Vec::with_capacity(chosen.len());
    for h in &chosen {
        match h.device.as_ref().filter(|d| devices.contains(d)) {
            None => ordered.push(h.to_ref(cutoff)),
            Some(device) if !ordered.iter().any(|o| o.id == h.id) => {
                let group: Vec<&&Held> = chosen.iter().filter(|c| c.device.as_ref() == Some(device)).collect();
                let first = group.iter().find(|c| deletes_device(&c.factor_type)).expect("a device is listed for its deleting factor");
                ordered.push(first.to_ref(cutoff));
                ordered.extend(group.iter().filter(|c| c.id != first.id).map(|c| {
                    let linked = c.to_ref(cutoff);
                    FactorRef { provider_type: format!("{ON_DELETED_DEVICE}{}", linked.provider_type), ..linked }
                }));
            }
            Some(_) => {}
        }
    }
    Ok(ordered)
}

/// The URL of `rel="next"` in Okta's `Link` headers (one header per relation, or one joined by commas).
fn next_link(reply: &HttpReply) -> Option<String> {
    reply
        .headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| {
            let (url, params) = part.trim().split_once(';')?;
            let next = params.split(';').any(|p| p.trim().replace(' ', "").eq_ignore_ascii_case("rel=\"next\""));
            next.then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_string())
        })
}

/// The `after` cursor of a next link.
fn after_of(next: &str) -> Option<String> {
    Url::parse(next).ok()?.query_pairs().find(|(k, _)| k == "after").map(|(_, v)| v.into_owned())
}

/// Okta's error code and summary, without anything secret (Okta never echoes the token).
fn brief(value: &Value) -> String {
    super::brief(value, &["/errorCode", "/errorSummary"])
}

/// A System Log entry as an identity event; None for what the watch does not read (other types,
/// attempts that failed); Err says why the entry cannot be read (it is skipped and counted).
fn identity_event(entry: &Value) -> Result<Option<IdentityEvent>, String> {
    let text = |v: &Value| v.as_str().map(str::trim).filter(|s| !s.is_empty()).map(String::from);
    let id = text(&entry["uuid"]).ok_or("a System Log entry without a uuid")?;
    let at: jiff::Timestamp = entry["published"].as_str().and_then(|p| p.parse().ok()).ok_or_else(|| format!("System Log entry {id}: no readable published time"))?;
    let event_type = entry["eventType"].as_str().unwrap_or_default();
    let result = entry["outcome"]["result"].as_str().unwrap_or("SUCCESS");
    let kind = match (event_type, result) {
        (_, "FAILURE" | "DENY") if event_type != "user.mfa.okta_verify.deny_push" => return Ok(None),
        ("user.mfa.factor.activate", _) => EventKind::FactorEnrolled,
        ("user.mfa.factor.deactivate" | "user.mfa.factor.reset_all", _) => EventKind::FactorRemoved,
        ("user.session.start", _) => EventKind::SignIn,
        ("user.authentication.auth_via_mfa", _) => EventKind::MfaChallenge,
        ("user.mfa.okta_verify.deny_push", _) => EventKind::PushDenied,
        ("user.account.report_suspicious_activity_by_enduser", _) => EventKind::FraudReported,
        ("user.risk.detect" | "security.threat.detected", _) => EventKind::RiskySignIn,
        _ => return Ok(None),
    };
    let targets = entry["target"].as_array().map(Vec::as_slice).unwrap_or_default();
    let actor = &entry["actor"];
    // The user is the target of type User; a sign-in or a report has none, and is the actor's own.
    let user_id = targets
        .iter()
        .find(|t| t["type"] == "User")
        .or((actor["type"] == "User").then_some(actor))
        .and_then(|u| text(&u["id"]))
        .ok_or_else(|| format!("System Log entry {id}: names no user"))?;
    let actor = match (text(&actor["id"]), text(&actor["alternateId"])) {
        (_, Some(alt)) if alt.eq_ignore_ascii_case("system@okta.com") || actor["type"] == "SystemPrincipal" => Actor::Provider(alt),
        (Some(actor_id), _) if actor_id == user_id => Actor::User,
        (Some(actor_id), alt) => Actor::Other(alt.unwrap_or(actor_id)),
        (None, _) => Actor::Unknown,
    };
    let client = &entry["client"];
    let geo = &client["geographicalContext"];
    let place = Geo {
        country: text(&geo["country"]),
        region: text(&geo["state"]),
        city: text(&geo["city"]),
        point: Geo::point_of(geo["geolocation"]["lat"].as_f64(), geo["geolocation"]["lon"].as_f64()),
    };
    let has_place = place.country.is_some() || place.city.is_some() || place.point.is_some();
    let security = &entry["securityContext"];
    let factor_type = entry["debugContext"]["debugData"]["factor"].as_str().or_else(|| targets.iter().find(|t| t["type"] == "AuthenticatorEnrollment").and_then(|t| t["displayName"].as_str()));
    Ok(Some(IdentityEvent {
        id,
        at,
        user_id,
        kind,
        actor,
        client: ClientInfo {
            ip: ClientInfo::ip_of(client["ipAddress"].as_str()),
            user_agent: text(&client["userAgent"]["rawUserAgent"]),
            geo: has_place.then_some(place),
            asn: security["asNumber"].as_u64().and_then(|n| u32::try_from(n).ok()),
            proxy: security["isProxy"] == true,
        },
        factor: factor_type.and_then(factor_kind),
        device: entry["device"]["id"].as_str().and_then(Personal::new),
    }))
}

fn origin_of(event: &Value) -> EnrollmentOrigin {
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(String::from);
    let client = &event["client"];
    let geo = &client["geographicalContext"];
    let parts: Vec<String> = ["country", "state", "city"].iter().filter_map(|k| text(&geo[*k])).collect();
    EnrollmentOrigin {
        ip: text(&client["ipAddress"]),
        user_agent: text(&client["userAgent"]["rawUserAgent"]),
        geo: (!parts.is_empty()).then(|| parts.join("/")),
        asn: event["securityContext"]["asNumber"].as_u64().and_then(|n| u32::try_from(n).ok()),
    }
}

impl Okta {
    pub fn new(http: ProviderHttp, spec: &OktaProvider, keys: &SecretKeys) -> Result<Self, ProviderError> {
        let base = spec.url.trim_end_matches('/').to_string();
        let credentials = match keys.get_opt("api-token")? {
            Some(token) => {
                let mut header = HeaderValue::from_str(&format!("SSWS {}", token.expose()))
                    .map_err(|_| ProviderError::new(ErrorKind::Config, format!("Secret {} key api-token holds characters no HTTP header allows", keys.name)))?;
                header.set_sensitive(true);
                Credentials::ApiToken(header)
            }
            None => {
                let (Some(client_id), Some(pem)) = (keys.get_opt("client-id")?, keys.get_opt("private-key")?) else {
                    return Err(ProviderError::new(ErrorKind::Config, format!(
                        "Secret {} needs key api-token, or keys client-id and private-key",
                        keys.name
                    )));
                };
                let key = RsaSigner::from_pem(pem.expose())
                    .map_err(|why| ProviderError::new(ErrorKind::Config, format!("Secret {} key private-key: {why}", keys.name)))?;
                let key_id = keys.get_opt("key-id")?.map(|k| k.expose().to_string());
                Credentials::ServiceApp(Box::new(TokenSource::new(
                    format!("{base}/oauth2/v1/token"),
                    Grant::PrivateKeyJwt { client_id, key, key_id },
                    vec![("scope", OAUTH_SCOPES.to_string())],
                    keys.name.to_string(),
                )))
            }
        };
        Ok(Self {
            http,
            credentials,
            base,
            secret_name: keys.name.to_string(),
            log_refused: AtomicBool::new(false),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// One API call. Answers with a 2xx status or one of `accepted` are returned; 401 and 403 are
    /// authentication errors naming the Secret; anything else is refused with Okta's error code.
    /// With a service app, a 401 fetches a new access token once.
    async fn call(&self, op: Op, method: Method, url: &str, query: &[(&str, String)], accepted: &[StatusCode]) -> Result<HttpReply, ProviderError> {
        Ok(self.call_reading(op, method, url, query, accepted, check_json).await?.0)
    }

    /// `call`, decoding a 2xx body with `read` in the pass that checks it (see `ProviderHttp::send_reading`).
    async fn call_reading<T>(
        &self,
        op: Op,
        method: Method,
        url: &str,
        query: &[(&str, String)],
        accepted: &[StatusCode],
        read: impl Fn(&HttpReply) -> Option<serde_json::Result<T>>,
    ) -> Result<(HttpReply, Option<serde_json::Result<T>>), ProviderError> {
        // For messages only: borrowed, no copy per request.
        let path = url.strip_prefix(&self.base).unwrap_or(url).split('?').next().unwrap_or_default();
        let build = || {
            let builder = self.http.request(method.clone(), url).header(reqwest::header::ACCEPT, HeaderValue::from_static("application/json"));
            // An empty query would still be serialised into the URL and taken out again.
            if query.is_empty() { builder } else { builder.query(query) }
        };
        let (reply, body) = match &self.credentials {
            Credentials::ApiToken(header) => self.http.send_reading(op, || build().header(reqwest::header::AUTHORIZATION, header.clone()), read).await?,
            Credentials::ServiceApp(source) => source.send_reading(&self.http, op, build, read).await?,
        };
        let status = reply.status;
        if status.is_success() || accepted.contains(&status) {
            return Ok((reply, body));
        }
        let detail = brief(&reply.value());
        Err(match status {
            StatusCode::UNAUTHORIZED => self.http.error(ErrorKind::Auth, format!(
                "401 from {method} {path} ({detail}): the credentials were refused; check {} in Secret {}",
                match self.credentials {
                    Credentials::ApiToken(_) => "key api-token",
                    Credentials::ServiceApp(_) => "keys client-id and private-key",
                },
                self.secret_name
            )),
            StatusCode::FORBIDDEN => self.http.error(ErrorKind::Auth, format!(
                "403 from {method} {path} ({detail}): the credentials in Secret {} lack a permission: the API token's admin needs a role that manages users and reads the System Log; a service app needs the scopes {OAUTH_SCOPES} and an admin role", self.secret_name
            )),
            _ => self.http.error(ErrorKind::Rejected, format!("{status} from {method} {path}: {detail}")),
        })
    }

    /// GET one page: the body and the next page's URL; None when Okta answers 404.
    async fn get_page<T: DeserializeOwned>(&self, op: Op, url: &str, query: &[(&str, String)]) -> Result<Option<(T, Option<String>)>, ProviderError> {
        let (reply, body) = self.call_reading(op, Method::GET, url, query, &[StatusCode::NOT_FOUND], |r| Some(serde_json::from_slice::<T>(&r.body))).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let why = match body {
            Some(Ok(body)) => return Ok(Some((body, next_link(&reply)))),
            Some(Err(e)) => e.to_string(),
            // Only 2xx bodies are read, and the 404 went above.
            None => format!("{} unread", reply.status),
        };
        Err(self.http.error(ErrorKind::Rejected, format!("unexpected body from GET {}: {why}", url.strip_prefix(&self.base).unwrap_or(url))))
    }

    /// Every page of a list, following `Link: rel="next"`; None when the first page is 404.
    async fn get_all<T: DeserializeOwned>(&self, op: Op, url: &str) -> Result<Option<Vec<T>>, ProviderError> {
        let Some((mut items, mut next)) = self.get_page::<Vec<T>>(op, url, &[]).await? else { return Ok(None) };
        while let Some(url) = next {
            self.check_same_org(&url)?;
            let (more, after) = self.get_page::<Vec<T>>(op, &url, &[]).await?.unwrap_or_default();
            items.extend(more);
            next = after;
        }
        Ok(Some(items))
    }

    /// A next link must point back at the org: the credentials are never sent elsewhere.
    fn check_same_org(&self, url: &str) -> Result<(), ProviderError> {
        let origin = |u: &str| Url::parse(u).ok().map(|u| u.origin());
        if origin(url).is_some() && origin(url) == origin(&self.base) {
            Ok(())
        } else {
            Err(self.http.error(ErrorKind::Rejected, "Okta sent a next-page link outside the org URL; not followed"))
        }
    }

    /// A lifecycle operation that moves the user to `status`; a user already there is done (Okta
    /// answers 400 to suspending a suspended user, or unsuspending an active one).
    async fn lifecycle(&self, user: &UserRef, operation: &str, status: &str) -> Result<(), ProviderError> {
        let reply = self.call(UPDATE_STATUS, Method::POST, &self.user_url(user, &format!("/lifecycle/{operation}")), &[], &[StatusCode::NOT_FOUND, StatusCode::BAD_REQUEST]).await?;
        match reply.status {
            StatusCode::NOT_FOUND => Err(self.user_gone(user)),
            StatusCode::BAD_REQUEST => {
                let (current, _) = self.get_page::<OktaUser>(GET_USER, &self.user_url(user, ""), &[]).await?.ok_or_else(|| self.user_gone(user))?;
                if current.status == status {
                    Ok(())
                } else {
                    Err(self.http.error(ErrorKind::Rejected, format!("user {} is {} and cannot {operation}: {}", user.username, current.status, brief(&reply.value()))))
                }
            }
            _ => Ok(()),
        }
    }

    fn user_gone(&self, user: &UserRef) -> ProviderError {
        self.http.error(ErrorKind::NotFound, format!("user {} no longer exists", user.username))
    }

    /// `{org}/api/v1/users/{id}{rest}`, formatted once per request.
    fn user_url(&self, user: &UserRef, rest: &str) -> String {
        format!("{}/api/v1/users/{}{rest}", self.base, enc(&user.id))
    }

    /// The user's factors from both lists, merged.
    async fn held(&self, user: &UserRef) -> Result<Vec<Held>, ProviderError> {
        let factors: Vec<OktaFactor> = self.get_all(LIST_FACTORS, &self.user_url(user, "/factors")).await?.ok_or_else(|| self.user_gone(user))?;
        // The user exists (the factors answered), so a 404 here is an org without Identity Engine.
        let enrollments: Vec<AuthenticatorEnrollment> =
            self.get_all(LIST_FACTORS, &self.user_url(user, "/authenticator-enrollments")).await?.unwrap_or_default();
        Ok(merge(factors, enrollments))
    }

    async fn find_group(&self, name: &str) -> Result<String, ProviderError> {
        // `q` matches names by prefix: keep exact matches only.
        let groups: Vec<OktaGroup> = self
            .get_page(FIND_GROUP, &self.url("/api/v1/groups"), &[("q", name.to_string()), ("limit", "200".into())])
            .await?
            .map(|(groups, _)| groups)
            .unwrap_or_default();
        let exact: Vec<&OktaGroup> = groups.iter().filter(|g| g.profile.name == name).collect();
        match exact.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => Err(self.http.error(ErrorKind::NotFound, format!("group {name} not found"))),
            _ => Err(self.http.error(ErrorKind::Config, format!(
                "{} groups are named {name} (app groups can share a name with Okta groups): rename one",
                exact.len()
            ))),
        }
    }

    async fn members_page(&self, group_id: &str, after: Option<&str>) -> Result<(Vec<UserRef>, Vec<Unreadable>, Option<String>), ProviderError> {
        let mut query = vec![("limit", MEMBERS_PAGE.to_string())];
        query.extend(after.map(|a| ("after", a.to_string())));
        let (records, next) = self
            .get_page::<Vec<Record<OktaUser>>>(LIST_MEMBERS, &self.url(&format!("/api/v1/groups/{}/users", enc(group_id))), &query)
            .await?
            .ok_or_else(|| self.http.error(ErrorKind::NotFound, format!("group {group_id} no longer exists")))?;
        let (users, unreadable) = split(records);
        Ok((users.into_iter().map(to_ref).collect(), unreadable, next.as_deref().and_then(after_of)))
    }

    /// The first `user.mfa.factor.activate` event for the user since the cutoff, from the System Log.
    async fn first_activation(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Value>, ProviderError> {
        let filter = format!("eventType eq \"user.mfa.factor.activate\" and target.id eq \"{}\"", user.id.replace('"', ""));
        let query = [
            ("since", cutoff.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
            ("filter", filter),
            ("sortOrder", "ASCENDING".to_string()),
            ("limit", "20".to_string()),
        ];
        let events: Vec<Value> = self.get_page(READ_LOG, &self.url("/api/v1/logs"), &query).await?.map(|(events, _)| events).unwrap_or_default();
        // Okta keeps milliseconds: compare with the cutoff at that precision, as `since` did.
        let since = jiff::Timestamp::from_millisecond(cutoff.as_millisecond()).unwrap_or(cutoff);
        Ok(events.into_iter().find(|e| e["published"].as_str().and_then(|p| p.parse::<jiff::Timestamp>().ok()).is_some_and(|at| at >= since)))
    }
}

fn to_ref(user: OktaUser) -> UserRef {
    UserRef { id: user.id, username: user.profile.login }
}

#[async_trait]
impl IdentityProvider for Okta {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list_factors: true,
            revoking_ends_enrollments: &[],
            factor_creation_time: true,
            delete_factor: true,
            revoke_sessions: true,
            count_sessions: false,
            force_re_enrollment: false,
            enrollment_detection: true,
            event_stream: true,
            disable_user: true,
            nested_groups: false,
            // Okta logins are unique case-insensitively, and looked up so.
            name_match: NameMatch::CaseInsensitive,
            // Every factor shows `created`: the logs are not needed to tell a factor's age.
            log_delay: None,
            inseparable: Vec::new(),
            // resetPassword: Okta mails a reset link and the user is in RECOVERY (no sign-in) until
            // they use it; the enrollment policy then asks for factors.
            enrollment_link: Some(super::EnrollmentLink { mechanism: "Okta's password-reset email, mailed by Okta (the enrollment policy then asks for factors)", sets_lifetime: false, resets_password: true, needs_password_reset: true }),
            bypass: None,
            limitations: vec![
                "bypass: Okta's Temporary Access Code (Identity Engine, limited availability) has no documented Management API call to issue one for a user, and a temporary password (expire_password_with_temp_password) passes no MFA: issue a code in the Admin Console where the org has it".into(),
                "groups: Okta groups do not nest; a group's members are its direct members".into(),
                "enrollment: enforced by the Okta authenticator enrollment policy, not per user".into(),
                "sessions: Okta has no API that lists a user's sign-in sessions or remembered devices; they are ended with the user's OAuth tokens and grants, and counted as one revocation per user".into(),
            ],
        }
    }

    async fn check(&self) -> Result<(), ProviderError> {
        self.call(LIST_USERS, Method::GET, &self.url("/api/v1/users"), &[("limit", "1".into())], &[]).await.map(|_| ())
    }

    async fn list_users(&self, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        // Cursor: Okta's `after`. Without a filter Okta leaves out DEPROVISIONED users, who
        // cannot sign in at all.
        let mut query = vec![("limit", USERS_PAGE.to_string())];
        query.extend(cursor.map(|c| ("after", c.to_string())));
        let (records, next) = self.get_page::<Vec<Record<OktaUser>>>(LIST_USERS, &self.url("/api/v1/users"), &query).await?.unwrap_or_default();
        let (users, unreadable) = split(records);
        Ok(UserPage { users: users.into_iter().map(to_ref).collect(), next: next.as_deref().and_then(after_of), unreadable })
    }

    async fn group_members(&self, group: &str, _: Membership, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        // Okta groups do not nest: every member is a direct one. Cursor: "<group id>:<after>".
        let (group_id, after) = match cursor.and_then(|c| c.split_once(':')) {
            Some((id, after)) => (id.to_string(), Some(after).filter(|a| !a.is_empty())),
            None => (self.find_group(group).await?, None),
        };
        let (users, unreadable, after) = self.members_page(&group_id, after).await?;
        Ok(UserPage { users, next: after.map(|after| format!("{group_id}:{after}")), unreadable })
    }

    async fn find_user(&self, name: &str) -> Result<Vec<UserRef>, ProviderError> {
        // Okta takes the id, the login or its short form where the id goes.
        if let Some((user, _)) = self.get_page::<OktaUser>(GET_USER, &self.url(&format!("/api/v1/users/{}", enc(name))), &[]).await? {
            return Ok(vec![to_ref(user)]);
        }
        // Then the login or primary email in any letter case (`search` compares them so, unlike
        // `filter`); the email may differ from the login, and users may share it.
        let quoted = name.replace(['"', '\\'], "");
        let search = format!("profile.login eq \"{quoted}\" or profile.email eq \"{quoted}\"");
        let query = [("search", search), ("limit", USERS_PAGE.to_string())];
        let (found, _) = self.get_page::<Vec<OktaUser>>(LIST_USERS, &self.url("/api/v1/users"), &query).await?.unwrap_or_default();
        Ok(found.into_iter().map(to_ref).collect())
    }

    async fn snapshot(&self, user: &UserRef, kinds: &[FactorKind], cutoff: jiff::Timestamp) -> Result<UserSnapshot, ProviderError> {
        let held = self.held(user).await?;
        let factors = plan(&held, kinds, cutoff)
            .map_err(|why| self.http.error(ErrorKind::Rejected, format!("user {}: {why}", user.username)))?;
        // Okta cannot list sessions: one revocation per user is what gets counted.
        let enrolled_since_cutoff = first_enrolled_since(held.iter().filter_map(|h| Some((h.kind, h.created?))), cutoff);
        Ok(UserSnapshot { factors, sessions: 1, enrolled_since_cutoff, ..Default::default() })
    }

    async fn revoke_sessions(&self, user: &UserRef, _snapshot: &UserSnapshot) -> Result<(), ProviderError> {
        // Ends Okta sessions, revokes OAuth access and refresh tokens, forgets remembered devices;
        // then the consent grants, which outlive the sessions.
        for rest in ["/sessions?oauthTokens=true&forgetDevices=true", "/grants"] {
            let reply = self.call(REVOKE_SESSIONS, Method::DELETE, &self.user_url(user, rest), &[], &[StatusCode::NOT_FOUND]).await?;
            if reply.status == StatusCode::NOT_FOUND {
                return Err(self.user_gone(user));
            }
        }
        Ok(())
    }

    async fn revoke_factor(&self, user: &UserRef, factor: &FactorRef) -> Result<RevokeOutcome, ProviderError> {
        let on_device = factor.provider_type.strip_prefix(ON_DELETED_DEVICE);
        let list = if on_device.unwrap_or(&factor.provider_type).starts_with(ENROLLMENT_ONLY) { "authenticator-enrollments" } else { "factors" };
        let url = format!("{}/api/v1/users/{}/{list}/{}", self.base, enc(&user.id), enc(&factor.id));
        let reply = self.call(DELETE_FACTOR, Method::DELETE, &url, &[], &[StatusCode::NOT_FOUND]).await?;
        // 404: gone already: with its Okta Verify device, or by an earlier attempt or the user.
        Ok(match reply.status {
            StatusCode::NOT_FOUND if on_device.is_some() => RevokeOutcome::WentWithLinked,
            StatusCode::NOT_FOUND => RevokeOutcome::AlreadyGone,
            _ => RevokeOutcome::Revoked,
        })
    }

    async fn require_enrollment(&self, user: &UserRef, _lost: &[FactorRef], channel: super::EnrollmentChannel) -> Result<(), ProviderError> {
        // The authenticator enrollment policy asks users without factors to enroll at their next
        // sign-in. The only per-user API, lifecycle/reset_factors, would delete factors enrolled
        // after the cutoff.
        if let super::EnrollmentChannel::Link { reset_password: true, .. } = channel {
            // RECOVERY: the stolen password no longer signs in; Okta mails the user a reset link.
            let query = [("sendEmail", "true".to_string()), ("revokeSessions", "true".to_string())];
            let reply = self.call(SEND_LINK, Method::POST, &self.user_url(user, "/lifecycle/reset_password"), &query, &[StatusCode::NOT_FOUND]).await?;
            if reply.status == StatusCode::NOT_FOUND {
                return Err(self.user_gone(user));
            }
        }
        Ok(())
    }

    async fn enrolled_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError> {
        if user.id.is_empty() {
            return Ok(None);
        }
        let event = if self.log_refused.load(Ordering::Relaxed) {
            None
        } else {
            match self.first_activation(user, cutoff).await {
                Ok(event) => event,
                Err(why) if why.kind() == ErrorKind::Auth => {
                    if !self.log_refused.swap(true, Ordering::Relaxed) {
                        tracing::warn!(backend = %self.http.backend, %why, "System Log refused; re-enrollment is detected from factor creation times, without origin");
                    }
                    None
                }
                Err(e) => return Err(e),
            }
        };
        let mut held = None;
        if let Some(event) = event {
            let at = event["published"].as_str().and_then(|p| p.parse().ok()).unwrap_or(cutoff);
            let mut kind = event["debugContext"]["debugData"]["factor"].as_str().and_then(factor_kind);
            if kind.is_none() {
                // The entry does not say which type: its enrollment target does.
                let factor_id = event["target"].as_array().and_then(|ts| ts.iter().find(|t| t["type"] != "User")).and_then(|t| t["id"].as_str());
                let listed = held.insert(self.held(user).await?);
                kind = listed.iter().find(|h| Some(h.id.as_str()) == factor_id).map(|h| h.kind);
            }
            if let Some(kind) = kind {
                return Ok(Some(Enrollment { kind, at, origin: Some(origin_of(&event)) }));
            }
        }
        // The log has nothing (it lags, or cannot be read): factor creation times tell.
        let held = match held {
            Some(held) => held,
            None => self.held(user).await?,
        };
        Ok(first_enrolled_since(held.into_iter().filter_map(|h| Some((h.kind, h.created?))), cutoff))
    }

    async fn read_events(&self, query: &EventQuery<'_>) -> Result<EventPage, ProviderError> {
        // A polling request (no `until`) or a bounded one; the cursor is Okta's `after`, taken from
        // the next link, which Okta gives a polling request even when it has nothing new.
        let filter = match query.user {
            // A sign-in has the user as its actor and no target; an enrollment has them as target.
            Some(user) => {
                let id = user.id.replace('"', "");
                format!("target.id eq \"{id}\" or actor.id eq \"{id}\"")
            }
            None => WATCHED_EVENT_TYPES.iter().map(|t| format!("eventType eq \"{t}\"")).collect::<Vec<_>>().join(" or "),
        };
        let stamp = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let mut params = vec![("since", stamp(query.from)), ("filter", filter), ("sortOrder", "ASCENDING".to_string()), ("limit", LOG_PAGE.to_string())];
        params.extend(query.until.map(|u| ("until", stamp(u))));
        params.extend(query.cursor.map(|c| ("after", c.to_string())));
        let (entries, next) = self.get_page::<Vec<Value>>(READ_LOG, &self.url("/api/v1/logs"), &params).await?.unwrap_or_default();
        if let Some(next) = &next {
            self.check_same_org(next)?;
        }
        let mut page = EventPage { more: entries.len() >= LOG_PAGE, cursor: next.as_deref().and_then(after_of).or(query.cursor.map(String::from)), ..Default::default() };
        for entry in &entries {
            page.take(identity_event(entry));
        }
        if next.is_none() {
            page.more = false;
        }
        Ok(page)
    }

    async fn holds_factor_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError> {
        if user.id.is_empty() {
            return Ok(None);
        }
        Ok(first_enrolled_since(self.held(user).await?.into_iter().filter_map(|h| Some((h.kind, h.created?))), cutoff))
    }

    async fn disable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        // Suspended, not deactivated: an admin can unsuspend the user with factors and group
        // memberships intact once they have re-enrolled.
        self.lifecycle(user, "suspend", "SUSPENDED").await
    }

    async fn enabled(&self, user: &UserRef) -> Result<Option<bool>, ProviderError> {
        let (current, _) = self.get_page::<OktaUser>(GET_USER, &self.user_url(user, ""), &[]).await?.ok_or_else(|| self.user_gone(user))?;
        // Okta's user statuses: only these can sign in (PASSWORD_EXPIRED and RECOVERY after a reset).
        Ok(Some(matches!(current.status.as_str(), "ACTIVE" | "PASSWORD_EXPIRED" | "RECOVERY")))
    }

    async fn enable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        self.lifecycle(user, "unsuspend", "ACTIVE").await
    }
}

/// Every answer shape this adapter decodes, for the fuzz target `provider_json`.
pub(crate) fn decode_answers(data: &[u8]) {
    crate::fuzzing::decode::<Vec<Record<OktaUser>>>(data);
    crate::fuzzing::decode::<Vec<Record<OktaFactor>>>(data);
    crate::fuzzing::decode::<Vec<AuthenticatorEnrollment>>(data);
    crate::fuzzing::decode::<Vec<OktaGroup>>(data);
    crate::fuzzing::decode::<OktaUser>(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use idp_sim::FactorKind as Sim;
    use serde_json::json;

    fn ts(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    fn factor(id: &str, factor_type: &str, created: &str, device: Option<&str>) -> OktaFactor {
        OktaFactor { id: id.into(), factor_type: factor_type.into(), created: Shown::text(created), profile: serde_json::from_value(json!({ "deviceToken": device })).unwrap() }
    }

    fn enrollment(id: &str, type_: &str, key: &str, created: &str, profile: Value) -> AuthenticatorEnrollment {
        AuthenticatorEnrollment { id: id.into(), type_: type_.into(), key: key.into(), created: Shown::text(created), profile: serde_json::from_value(profile).unwrap() }
    }

    const OLD: &str = "2026-01-01T00:00:00Z";
    const NEW: &str = "2026-12-01T00:00:00Z";
    const CUTOFF: &str = "2026-11-01T00:00:00Z";

    #[test]
    fn both_lists_are_merged_by_id_and_the_password_is_no_factor() {
        let factors = vec![factor("uft1", "token:software:totp", OLD, None), factor("opf1", "push", OLD, Some("d1")), factor("rsa1", "token", OLD, None)];
        let enrollments = vec![
            enrollment("lae1", "password", "okta_password", OLD, json!({})),
            enrollment("uft1", "app", "google_otp", OLD, json!({})),
            enrollment("opf1", "app", "okta_verify", OLD, json!({ "deviceToken": "d1", "methods": ["push"] })),
            enrollment("crp1", "app", "okta_verify", OLD, json!({ "deviceToken": "d1", "methods": ["signed_nonce"] })),
        ];
        let held = merge(factors, enrollments);
        let ids: Vec<(&str, FactorKind, bool)> = held.iter().map(|h| (h.id.as_str(), h.kind, h.enrollment_only)).collect();
        assert_eq!(
            ids,
            vec![
                ("uft1", FactorKind::Totp, false),
                ("opf1", FactorKind::Push, false),
                ("rsa1", FactorKind::HardwareToken, false),
                ("crp1", FactorKind::Passkey, true),
            ]
        );
        assert_eq!(held[3].to_ref(ts(CUTOFF)).provider_type, "enrollment/signed_nonce");
    }

    #[test]
    fn plan_keeps_new_factors_and_adds_what_goes_with_okta_verify() {
        let held = merge(
            vec![factor("opf1", "push", OLD, Some("d1")), factor("fwf1", "webauthn", OLD, None), factor("fwf2", "webauthn", NEW, None)],
            vec![enrollment("crp1", "app", "okta_verify", OLD, json!({ "deviceToken": "d1", "methods": ["signed_nonce"] }))],
        );
        // Asked for passkeys only: FastPass goes first, and the push on its device with it.
        let planned = plan(&held, &[FactorKind::Passkey], ts(CUTOFF)).unwrap();
        let ids: Vec<&str> = planned.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, vec!["crp1", "opf1"]);
        // Everything: the key enrolled after the cutoff stays.
        let planned = plan(&held, &[FactorKind::All], ts(CUTOFF)).unwrap();
        let ids: Vec<&str> = planned.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, vec!["opf1", "crp1", "fwf1"]);
    }

    #[test]
    fn plan_refuses_to_take_a_new_factor_down_with_an_old_device() {
        let held = merge(vec![factor("opf1", "push", OLD, Some("d1")), factor("crp1", "signed_nonce", NEW, Some("d1"))], vec![]);
        let why = plan(&held, &[FactorKind::All], ts(CUTOFF)).unwrap_err();
        assert!(why.contains("crp1"), "{why}");
    }

    #[test]
    fn link_headers_give_the_next_cursor() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append("link", "<https://x.okta.com/api/v1/users?limit=200>; rel=\"self\"".parse().unwrap());
        headers.append("link", "<https://x.okta.com/api/v1/users?limit=200&after=00u1abc>; rel=\"next\"".parse().unwrap());
        let reply = HttpReply { status: StatusCode::OK, headers, body: Default::default() };
        let next = next_link(&reply).unwrap();
        assert_eq!(after_of(&next).as_deref(), Some("00u1abc"));

        let mut joined = reqwest::header::HeaderMap::new();
        joined.insert("link", "<https://x/a?limit=2>; rel=\"self\", <https://x/a?limit=2&after=z%2By>; rel=\"next\"".parse().unwrap());
        let reply = HttpReply { status: StatusCode::OK, headers: joined, body: Default::default() };
        assert_eq!(after_of(&next_link(&reply).unwrap()).as_deref(), Some("z+y"));
    }

    #[test]
    fn log_entries_become_origins() {
        let event = json!({
            "client": { "ipAddress": "203.0.113.9", "userAgent": { "rawUserAgent": "Mozilla/5.0" },
                        "geographicalContext": { "country": "Germany", "state": "Berlin", "city": "Berlin" } },
            "securityContext": { "asNumber": 64500 },
        });
        let origin = origin_of(&event);
        assert_eq!(origin.ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(origin.geo.as_deref(), Some("Germany/Berlin/Berlin"));
        assert_eq!(origin.asn, Some(64500));
        assert_eq!(origin.user_agent.as_deref(), Some("Mozilla/5.0"));
    }

    #[test]
    fn system_log_entries_become_identity_events_and_garbage_is_named() {
        let admin_enrolled = json!({
            "uuid": "a1", "published": "2026-12-02T09:00:00.000Z", "eventType": "user.mfa.factor.activate", "outcome": { "result": "SUCCESS" },
            "actor": { "id": "00uadmin", "type": "User", "alternateId": "Helpdesk@Example.com" },
            "target": [{ "id": "00uuser", "type": "User" }, { "id": "sms1", "type": "AuthenticatorEnrollment", "displayName": "sms" }],
            "client": { "ipAddress": " 100.64.7.7 ", "geographicalContext": { "country": "Nigeria", "geolocation": { "lat": 6.52, "lon": 3.38 } } },
            "securityContext": { "asNumber": 64505, "isProxy": true },
            "device": { "id": "dvc-1" },
            "debugContext": { "debugData": {} },
        });
        let event = identity_event(&admin_enrolled).unwrap().unwrap();
        assert_eq!((event.kind, event.user_id.as_str(), event.factor), (EventKind::FactorEnrolled, "00uuser", Some(FactorKind::Sms)));
        assert_eq!(event.actor, Actor::Other("Helpdesk@Example.com".into()));
        assert_eq!(event.client.ip, "100.64.7.7".parse().ok());
        assert_eq!(event.client.geo.as_ref().and_then(|g| g.point), Some((6.52, 3.38)));
        assert!(event.client.proxy && event.device.is_some());
        // A sign-in has no target: the actor is the user. Okta's 0,0 is no place.
        let sign_in = json!({ "uuid": "s1", "published": "2026-12-02T08:00:00Z", "eventType": "user.session.start", "actor": { "id": "00uuser", "type": "User" },
                              "target": null, "client": { "ipAddress": "garbage", "geographicalContext": { "geolocation": { "lat": 0.0, "lon": 0.0 } } } });
        let event = identity_event(&sign_in).unwrap().unwrap();
        assert_eq!((event.kind, event.actor, event.client.ip, event.client.geo), (EventKind::SignIn, Actor::User, None, None));
        let support = json!({ "uuid": "r1", "published": "2026-12-02T08:00:00Z", "eventType": "user.mfa.factor.reset_all", "actor": { "id": "x", "type": "SystemPrincipal", "alternateId": "system@okta.com" }, "target": [{ "id": "00uuser", "type": "User" }] });
        assert_eq!(identity_event(&support).unwrap().unwrap().actor, Actor::Provider("system@okta.com".into()));
        // Failed attempts and other types are not read; entries without what a reader needs are named.
        let failed = json!({ "uuid": "f1", "published": "2026-12-02T08:00:00Z", "eventType": "user.session.start", "outcome": { "result": "FAILURE" }, "actor": { "id": "u", "type": "User" } });
        assert!(identity_event(&failed).unwrap().is_none());
        assert!(identity_event(&json!({ "uuid": "o1", "published": "2026-12-02T08:00:00Z", "eventType": "app.oauth2.token.grant" })).unwrap().is_none());
        assert!(identity_event(&json!({ "published": "2026-12-02T08:00:00Z" })).is_err());
        assert!(identity_event(&json!({ "uuid": "t1", "published": "yesterday", "eventType": "user.session.start" })).unwrap_err().contains("t1"));
        assert!(identity_event(&json!({ "uuid": "n1", "published": "2026-12-02T08:00:00Z", "eventType": "user.mfa.factor.activate", "actor": { "type": "PublicClientApp" } })).unwrap_err().contains("names no user"));
    }

    /// The service-app path end to end against the simulator: a signed client assertion buys a
    /// scoped token, reused across calls; a key Okta does not know is refused with the Secret named.
    #[tokio::test]
    async fn service_app_signs_in_with_private_key_jwt() {
        use idp_sim::{self as simulator, Seed, Simulator};
        let pem = idp_sim::subject::generate_rsa_pem();
        let provider = simulator::build("okta", &json!({ "client-id": "0oaservice", "private-key": pem, "key-id": "k1" })).unwrap();
        provider.seed(&Seed { users: 3, ..Seed::default() });
        let sim = Simulator::new(provider);
        let running = simulator::serve(sim.clone(), std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let spec: OktaProvider = serde_json::from_value(json!({ "url": running.url, "credentialsSecretRef": { "name": "okta-app" } })).unwrap();
        let limits = crate::backends::pacing::Limits { requests_per_second: 1000, max_concurrency: 4, log_delay: None, ..Default::default() };
        let connect = |key: &str| {
            let secret: k8s_openapi::api::core::v1::Secret =
                serde_json::from_value(json!({ "metadata": { "name": "okta-app" }, "stringData": { "client-id": "0oaservice", "private-key": key, "key-id": "k1" } }))
                    .unwrap();
            Okta::new(ProviderHttp::new("sec/okta", limits, Default::default()).unwrap(), &spec, &SecretKeys::new(&secret, "sec/okta-app")).unwrap()
        };

        let okta = connect(&pem);
        okta.check().await.unwrap();
        let page = okta.list_users(None).await.unwrap();
        assert_eq!(page.users.len(), 3);
        let cutoff = jiff::Timestamp::now();
        let snapshot = okta.snapshot(&page.users[0], &[FactorKind::All], cutoff).await.unwrap();
        assert_eq!(snapshot.factors.len(), 4, "totp, webauthn, push and the FastPass only the enrollments show: {snapshot:?}");
        assert!(okta.enrolled_since(&page.users[0], cutoff).await.unwrap().is_none(), "the System Log is readable with the logs scope");
        assert_eq!(sim.stats().by_bucket.get("POST token"), Some(&1), "one token for every call: {:?}", sim.stats());

        let error = connect(&idp_sim::subject::generate_rsa_pem()).check().await.unwrap_err();
        assert!(error.kind() == ErrorKind::Auth, "{error:?}");
        assert!(error.to_string().contains("sec/okta-app"), "{error}");
    }

    /// A users page whose second record has no `id` (as the independent Okta implementation
    /// answered): the two readable users are listed, the unreadable one is named by its login,
    /// and the page's next link is kept.
    #[tokio::test]
    async fn a_users_page_with_a_record_missing_its_id_lists_the_rest() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let next = format!("<{url}/api/v1/users?after=00u3&limit=200>; rel=\"next\"");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let next = next.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let body = r#"[{"id":"00u1","profile":{"login":"ann@example.com"}},{"profile":{"login":"ghost@example.com"}},{"id":"00u3","profile":{"login":"cy@example.com"}}]"#;
                    let reply = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLink: {next}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        let spec: OktaProvider = serde_json::from_value(json!({ "url": url, "credentialsSecretRef": { "name": "okta" } })).unwrap();
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({ "metadata": { "name": "okta" }, "stringData": { "api-token": "00canary" } })).unwrap();
        let okta = Okta::new(ProviderHttp::new("sec/okta", Default::default(), Default::default()).unwrap(), &spec, &SecretKeys::new(&secret, "sec/okta")).unwrap();
        let page = okta.list_users(None).await.unwrap();
        assert_eq!(page.users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), ["00u1", "00u3"]);
        assert_eq!(page.unreadable.len(), 1);
        assert_eq!(page.unreadable[0].label, "ghost@example.com");
        assert!(page.unreadable[0].why.contains("missing field `id`"), "{:?}", page.unreadable);
        assert_eq!(page.next.as_deref(), Some("00u3"));
    }

    /// Against the simulator with an API token: the linked FastPass is recorded, goes with its push
    /// (AlreadyGone afterwards), a factor enrolled after the cutoff stays, and the re-enrollment is
    /// found in the System Log with where it came from.
    #[tokio::test]
    async fn cascade_and_re_enrollment_through_the_api() {
        use idp_sim::{self as simulator, Seed, Simulator};
        let provider = simulator::build("okta", &json!({ "api-token": "00token" })).unwrap();
        provider.seed(&Seed { users: 2, ..Seed::default() });
        let sim = Simulator::new(provider.clone());
        let running = simulator::serve(sim, std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let spec: OktaProvider = serde_json::from_value(json!({ "url": running.url, "credentialsSecretRef": { "name": "okta" } })).unwrap();
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({ "metadata": { "name": "okta" }, "stringData": { "api-token": "00token" } })).unwrap();
        let http = ProviderHttp::new("sec/okta", crate::backends::pacing::Limits { requests_per_second: 1000, max_concurrency: 4, log_delay: None, ..Default::default() }, Default::default()).unwrap();
        let okta = Okta::new(http, &spec, &SecretKeys::new(&secret, "sec/okta")).unwrap();

        let cutoff = jiff::Timestamp::now();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let login = simulator::username(1);
        let new_key = provider.enroll(&login, Sim::Webauthn, "203.0.113.9").unwrap();
        let user = okta.find_user(&login.to_uppercase()).await.unwrap().remove(0);
        assert_eq!(user.username, login, "logins are found whatever their case");

        // Only push was asked for: the FastPass on the same phone is lost too, so it is recorded.
        let snapshot = okta.snapshot(&user, &[FactorKind::Push], cutoff).await.unwrap();
        let recorded: Vec<(FactorKind, &str)> = snapshot.factors.iter().map(|f| (f.kind, f.provider_type.as_str())).collect();
        assert_eq!(recorded, vec![(FactorKind::Push, "push"), (FactorKind::Passkey, "device/enrollment/signed_nonce")]);
        let outcomes = [okta.revoke_factor(&user, &snapshot.factors[0]).await.unwrap(), okta.revoke_factor(&user, &snapshot.factors[1]).await.unwrap()];
        assert_eq!(outcomes, [RevokeOutcome::Revoked, RevokeOutcome::WentWithLinked]);
        let left: Vec<Sim> = provider.user(&login).unwrap().factors.iter().map(|f| f.kind).collect();
        assert_eq!(left, vec![Sim::Totp, Sim::Webauthn, Sim::Webauthn]);

        let all = okta.snapshot(&user, &[FactorKind::All], cutoff).await.unwrap();
        assert!(all.factors.iter().all(|f| f.id != new_key), "the key enrolled after the cutoff is never recorded");
        let seen = okta.enrolled_since(&user, cutoff).await.unwrap().expect("the enrollment is seen");
        assert_eq!(seen.kind, FactorKind::Webauthn);
        let origin = seen.origin.expect("the System Log says where from");
        assert_eq!(origin.ip.as_deref(), Some("203.0.113.9"));
        assert!(origin.geo.is_some() && origin.asn.is_some() && origin.user_agent.is_some(), "{origin:?}");

        assert!(okta.find_user("nobody@example.com").await.unwrap().is_empty());
        okta.disable_user(&user).await.unwrap();
        okta.disable_user(&user).await.unwrap();
        assert!(!provider.user(&login).unwrap().active, "suspended");
    }
}
