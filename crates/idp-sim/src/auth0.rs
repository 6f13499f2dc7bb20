//! Auth0 Management API v2 simulator (`/api/v2`), with the client-credentials token endpoint
//! (`/oauth/token`) and the export files a users-export job produces (`/exports/...`, standing in
//! for the signed storage URL Auth0 hands out).
//!
//! Quirks reproduced: `GET /users` reaches only the first 1,000 records (400 `invalid_paging`
//! beyond), so a complete listing needs an export job; authentication methods that share a link
//! (`link_id`, here a push method and its recovery code) are deleted together; the session and
//! refresh-token endpoints exist only on the Enterprise plan (403 otherwise: the Management API
//! reference names the plan, not an error code, so none is sent); answers carry `x-ratelimit-*` headers and a 429 `too_many_requests` beyond them.
//!
//! Sources, each rule from the Auth0 docs page named (auth0.com/docs): the 1,000-record reach of
//! `GET /users`, "Retrieve Users with the Get Users Endpoint"; export jobs, "Bulk User Exports";
//! authentication methods, Management API "Users" reference (list and delete authentication
//! methods); sessions and refresh tokens on the Enterprise plan, Management API "Sessions" and
//! "Refresh Tokens" references; `x-ratelimit-*` and 429, "Management API Endpoint Rate Limits";
//! client credentials, "Get Management API Access Tokens for Production"; the log by checkpoint
//! (`from`/`take`, ordered by `log_id`, other parameters ignored, a `Link` next relation that
//! repeats itself when nothing is newer) and by search, "Retrieve Log Events Using the
//! Management API"; entry fields, Management API "Get a log event by id"; type codes
//! (`s`, `gd_enrollment_complete`, `gd_auth_rejected`, `sapi`), "Log Event Type Codes"; a login's
//! risk assessment, "Adaptive MFA Log Events"; retention by plan, "Log Data Retention".
//!
//! Users exist only through `seed`, named `simulator::username(i)`, so the email index is
//! arithmetic and ids are numbers rendered on the way out: a million users fit in little memory.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Census, FactorView, Provider, Seed, SimRequest, SimResponse, UserView, rfc3339, username};
use crate::{Act, Activity, FactorKind, place_of};

/// The tenant's subscription: the session and refresh-token endpoints are Enterprise-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Free,
    Essentials,
    Professional,
    Enterprise,
}

/// `GET /users` pages through at most this many records.
const SEARCH_LIMIT: usize = 1000;
const MAX_PER_PAGE: usize = 100;
/// How long an export job stays pending before its file is written.
const EXPORT_DELAY: Duration = Duration::from_millis(20);
const TOKEN_LIFETIME_SECONDS: i64 = 86_400;
const CONNECTION: &str = "Username-Password-Authentication";

/// Auth0's authentication method types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MethodType {
    Password,
    RecoveryCode,
    Totp,
    Push,
    Phone,
    Email,
    WebauthnRoaming,
    WebauthnPlatform,
    Passkey,
}

impl MethodType {
    fn name(self) -> &'static str {
        match self {
            MethodType::Password => "password",
            MethodType::RecoveryCode => "recovery-code",
            MethodType::Totp => "totp",
            MethodType::Push => "push",
            MethodType::Phone => "phone",
            MethodType::Email => "email",
            MethodType::WebauthnRoaming => "webauthn-roaming",
            MethodType::WebauthnPlatform => "webauthn-platform",
            MethodType::Passkey => "passkey",
        }
    }

    /// The factor kind a method counts as in the census (the password is not a second factor).
    fn kind(self) -> Option<FactorKind> {
        match self {
            MethodType::Password => None,
            MethodType::RecoveryCode => Some(FactorKind::RecoveryCodes),
            MethodType::Totp => Some(FactorKind::Totp),
            MethodType::Push => Some(FactorKind::Push),
            MethodType::Phone => Some(FactorKind::Sms),
            MethodType::Email => Some(FactorKind::Email),
            MethodType::WebauthnRoaming => Some(FactorKind::Webauthn),
            MethodType::WebauthnPlatform | MethodType::Passkey => Some(FactorKind::Passkey),
        }
    }

    /// The type a seeded or enrolled factor of `kind` gets; Auth0 has no HOTP, hardware OTP,
    /// security questions or app passwords.
    fn for_kind(kind: FactorKind) -> Option<Self> {
        match kind {
            FactorKind::Totp => Some(MethodType::Totp),
            FactorKind::Webauthn => Some(MethodType::WebauthnRoaming),
            FactorKind::Passkey => Some(MethodType::Passkey),
            FactorKind::RecoveryCodes => Some(MethodType::RecoveryCode),
            FactorKind::Sms => Some(MethodType::Phone),
            FactorKind::Email => Some(MethodType::Email),
            FactorKind::Push => Some(MethodType::Push),
            _ => None,
        }
    }
}

struct Method {
    key: u64,
    kind: MethodType,
    created_ms: i64,
    /// Key of the method deleted together with this one.
    link: Option<u64>,
}

impl Method {
    fn id(&self) -> String {
        method_id(self.kind, self.key)
    }
}

fn method_id(kind: MethodType, key: u64) -> String {
    format!("{}|dev_{key:016x}", kind.name())
}

struct User {
    key: u64,
    blocked: bool,
    methods: Vec<Method>,
    sessions: u32,
    refresh_tokens: u32,
    /// Browsers the user told MFA to remember (skipping the challenge there for a while).
    remembered_browsers: bool,
    created_ms: i64,
}

struct Role {
    id: String,
    name: String,
    members: Vec<u32>,
}

struct ExportJob {
    created: Instant,
    created_at: jiff::Timestamp,
    fields: Vec<String>,
    /// Part of the download URL, as a storage signature would be.
    signature: String,
    file: Option<Arc<Vec<u8>>>,
}

struct LogEntry {
    log_id: String,
    date: jiff::Timestamp,
    type_: &'static str,
    /// The user the entry is about; for a `sapi` entry, the user the administrator acted on.
    user: u32,
    ip: String,
    user_agent: String,
    /// The dashboard administrator (their email) behind a `sapi` entry, who is then its `user_id`.
    admin: Option<String>,
    details: Value,
}

struct State {
    /// First eight hex digits of every user id in this tenant.
    tenant: u32,
    users: Vec<User>,
    by_key: HashMap<u64, u32>,
    roles: Vec<Role>,
    tokens: HashMap<String, i64>,
    jobs: HashMap<String, ExportJob>,
    logs: Vec<LogEntry>,
    logs_by_user: HashMap<u32, Vec<usize>>,
    plan: Plan,
    /// `GET /guardian/policies`: `all-applications` when MFA is required at every login.
    mfa_policies: Vec<String>,
    /// Enrollment tickets mailed to users (`send_mail`), by user, as their mailbox would hold them.
    mailed: HashMap<u32, Vec<String>>,
}

impl State {
    fn user_id(&self, index: u32) -> String {
        format!("auth0|{:08x}{:016x}", self.tenant, self.users[index as usize].key)
    }

    fn find(&self, user_id: &str) -> Option<u32> {
        let hex = user_id.strip_prefix("auth0|")?;
        if hex.len() != 24 || u32::from_str_radix(&hex[..8], 16).ok()? != self.tenant {
            return None;
        }
        self.by_key.get(&u64::from_str_radix(&hex[8..], 16).ok()?).copied()
    }

    fn find_by_email(&self, email: &str) -> Option<u32> {
        let number: u32 = email.to_ascii_lowercase().strip_prefix("user")?.strip_suffix("@example.com")?.parse().ok()?;
        (number < self.users.len() as u32 && username(number).eq_ignore_ascii_case(email)).then_some(number)
    }

    fn user_json(&self, index: u32) -> Value {
        let user = &self.users[index as usize];
        let email = username(index);
        let created = rfc3339(timestamp(user.created_ms));
        let mut value = json!({
            "user_id": self.user_id(index),
            "email": email,
            "email_verified": true,
            "name": email,
            "nickname": email.split('@').next().unwrap_or_default(),
            "picture": "https://s.gravatar.com/avatar/00000000000000000000000000000000?s=480&r=pg&d=mp.png",
            "created_at": created,
            "updated_at": created,
            "identities": [{ "connection": CONNECTION, "provider": "auth0", "user_id": format!("{:08x}{:016x}", self.tenant, user.key), "isSocial": false }],
            "logins_count": 1,
        });
        if user.methods.iter().any(|m| m.kind != MethodType::Password) {
            value["multifactor"] = json!(["guardian"]);
        }
        if user.blocked {
            value["blocked"] = json!(true);
        }
        value
    }

    fn method_json(&self, index: u32, method: &Method) -> Value {
        let user = &self.users[index as usize];
        let created = rfc3339(timestamp(method.created_ms));
        let mut value = json!({ "id": method.id(), "type": method.kind.name(), "confirmed": true, "created_at": created });
        if method.kind != MethodType::Password {
            value["enrolled_at"] = json!(created);
            value["last_auth_at"] = json!(created);
        }
        match method.kind {
            MethodType::Phone => {
                value["phone_number"] = json!(format!("+1555{:07}", index % 10_000_000));
                value["preferred_authentication_method"] = json!("sms");
            }
            MethodType::Email => value["email"] = json!(username(index)),
            MethodType::WebauthnRoaming | MethodType::WebauthnPlatform | MethodType::Passkey => {
                value["name"] = json!(if method.kind == MethodType::WebauthnRoaming { "Security Key" } else { "Passkey" });
                value["key_id"] = json!(format!("{:016x}{:016x}", method.key, user.key));
                value["public_key"] = json!("pQECAyYgASFYIA");
                value["relying_party_identifier"] = json!("example.com");
            }
            MethodType::Push => value["name"] = json!("iPhone"),
            _ => {}
        }
        if let Some(linked) = method.link.and_then(|key| user.methods.iter().find(|m| m.key == key)) {
            value["link_id"] = json!(linked.id());
        }
        value
    }

    fn view(&self, index: u32) -> UserView {
        let user = &self.users[index as usize];
        UserView {
            id: self.user_id(index),
            username: username(index),
            active: !user.blocked,
            factors: user
                .methods
                .iter()
                .filter_map(|m| Some(FactorView { id: m.id(), kind: m.kind.kind()?, created: timestamp(m.created_ms) }))
                .collect(),
            sessions: user.sessions,
            grants: user.refresh_tokens,
        }
    }

    /// Appends an entry about user `user`, dated now; the entry, for callers to date or detail it.
    fn add_log(&mut self, type_: &'static str, user: u32, ip: &str, user_agent: &str) -> &mut LogEntry {
        // Auth0 log ids are fixed-length digits that grow with time, so a checkpoint compares as text.
        let log_id = format!("900{:026}", self.logs.len() + 1);
        self.logs_by_user.entry(user).or_default().push(self.logs.len());
        self.logs.push(LogEntry { log_id, date: jiff::Timestamp::now(), type_, user, ip: ip.to_string(), user_agent: user_agent.to_string(), admin: None, details: json!({}) });
        self.logs.last_mut().expect("just pushed")
    }

    fn log_json(&self, entry: &LogEntry) -> Value {
        let place = place_of(&entry.ip);
        let (country_code3, time_zone, continent_code) = geo_extra(place.country_code);
        let description = match entry.type_ {
            "gd_enrollment_complete" => "Guardian - Enrollment complete",
            "gd_start_enroll" => "Guardian - Enrollment started",
            "gd_auth_rejected" => "User rejected a multi-factor authentication request via push-notification",
            "s" => "Success Login",
            "sapi" => "Create an authentication method",
            _ => "",
        };
        let (user_id, user_name) = match &entry.admin {
            // A Management API call is logged under the administrator who made it.
            Some(admin) => (admin_id(admin), admin.clone()),
            None => (self.user_id(entry.user), username(entry.user)),
        };
        json!({
            "log_id": entry.log_id,
            "date": rfc3339(entry.date),
            "type": entry.type_,
            "description": description,
            "connection": CONNECTION,
            "client_id": "cKYr0EAR0UJkz4BkKtl8j8ZtnJ9Q3Z2t",
            "client_name": "Default App",
            "ip": entry.ip,
            "user_agent": entry.user_agent,
            "user_id": user_id,
            "user_name": user_name,
            "details": entry.details,
            "isMobile": false,
            "location_info": {
                "country_code": place.country_code,
                "country_code3": country_code3,
                "country_name": place.country,
                "city_name": place.city,
                "latitude": place.lat,
                "longitude": place.lon,
                "time_zone": time_zone,
                "continent_code": continent_code,
            },
        })
    }
}

/// What `location_info` says besides the place table: (country_code3, time_zone, continent_code).
fn geo_extra(country_code: &str) -> (&'static str, &'static str, &'static str) {
    match country_code {
        "US" => ("USA", "America/Los_Angeles", "NA"),
        "DE" => ("DEU", "Europe/Berlin", "EU"),
        "JP" => ("JPN", "Asia/Tokyo", "AS"),
        "NG" => ("NGA", "Africa/Lagos", "AF"),
        "NL" => ("NLD", "Europe/Amsterdam", "EU"),
        "RO" => ("ROU", "Europe/Bucharest", "EU"),
        _ => ("", "", ""),
    }
}

/// The user id of a dashboard administrator, from their email.
fn admin_id(email: &str) -> String {
    let hash = email.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    format!("auth0|{hash:024x}")
}

/// How long the tenant's logs are kept ("Log Data Retention": by subscription).
fn retention(plan: Plan) -> jiff::SignedDuration {
    let days = match plan {
        Plan::Free => 1,
        Plan::Essentials => 5,
        Plan::Professional => 10,
        Plan::Enterprise => 30,
    };
    jiff::SignedDuration::from_hours(24 * days)
}

/// The log type of an activity (Log Event Type Codes); Err for what Auth0's log has no entry for.
fn activity_type(what: Act) -> Result<&'static str, String> {
    match what {
        Act::Enroll { .. } => Ok("gd_enrollment_complete"),
        // A login, with Adaptive MFA's risk assessment in its details when judged risky.
        Act::SignIn | Act::RiskySignIn => Ok("s"),
        Act::PushDenied => Ok("gd_auth_rejected"),
        Act::FraudReported => Err("Auth0's logs have no entry for a user reporting fraud: Guardian only lets the user reject a push".into()),
        Act::BypassIssued => Err("Auth0 issues no bypass codes (only a regenerated recovery code, which its log shows as an API call)".into()),
        Act::SecondStepWeakened => Err("Auth0's log shows a removed enrollment as a Management API call, which the window does not read".into()),
    }
}

fn timestamp(ms: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn random_text(len: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(len).collect()
}

/// An Auth0 API error body.
fn error(status: u16, message: &str, code: Option<&str>) -> SimResponse {
    let reason = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    };
    let mut body = json!({ "statusCode": status, "error": reason, "message": message });
    if let Some(code) = code {
        body["errorCode"] = json!(code);
    }
    SimResponse::json(status, &body)
}

fn no_user() -> SimResponse {
    error(404, "The user does not exist.", Some("inexistent_user"))
}

fn enterprise_only() -> SimResponse {
    error(403, "This feature is not available on your plan", None)
}

/// `page`/`per_page` paging of a list: a plain array, or with `include_totals` an object with the
/// totals and the items under `key`.
fn paged(request: &SimRequest, items: Vec<Value>, key: &str, default_per_page: usize) -> SimResponse {
    let (page, per_page) = match page_params(request, default_per_page) {
        Ok(p) => p,
        Err(response) => return response,
    };
    let total = items.len();
    let start = (page * per_page).min(total);
    let slice: Vec<Value> = items.into_iter().skip(start).take(per_page).collect();
    if request.query("include_totals") == Some("true") {
        SimResponse::json(200, &json!({ "start": start, "limit": per_page, "length": slice.len(), "total": total, key: slice }))
    } else {
        SimResponse::json(200, &Value::Array(slice))
    }
}

fn page_params(request: &SimRequest, default_per_page: usize) -> Result<(usize, usize), SimResponse> {
    let number = |key: &str, default: usize| match request.query(key) {
        None => Ok(default),
        Some(v) => v.parse::<usize>().map_err(|_| {
            error(400, &format!("Query validation error: 'Invalid type: string (expected integer)' on property {key}"), Some("invalid_query_string"))
        }),
    };
    let page = number("page", 0)?;
    let per_page = number("per_page", default_per_page)?;
    if per_page > MAX_PER_PAGE {
        return Err(error(
            400,
            &format!("Query validation error: 'Too big: {per_page} (expected maximum {MAX_PER_PAGE})' on property per_page"),
            Some("invalid_query_string"),
        ));
    }
    Ok((page, per_page))
}

/// `from`/`take` checkpoint paging over `total` items: the range to answer and the next checkpoint.
fn checkpoint(request: &SimRequest, total: usize) -> Result<(std::ops::Range<usize>, Option<String>), SimResponse> {
    let take = match request.query("take") {
        None => 50,
        Some(t) => t.parse::<usize>().ok().filter(|t| (1..=MAX_PER_PAGE).contains(t)).ok_or_else(|| {
            error(400, "Query validation error: 'take' must be an integer between 1 and 100", Some("invalid_query_string"))
        })?,
    };
    let from = match request.query("from") {
        None | Some("") => 0,
        Some(f) => decode_checkpoint(f).ok_or_else(|| error(400, "Invalid value for from parameter", Some("invalid_query_string")))?,
    };
    let end = (from + take).min(total);
    Ok((from.min(total)..end, (end < total).then(|| encode_checkpoint(end))))
}

/// Checkpoints are opaque to clients.
fn encode_checkpoint(position: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("pos:{position}"))
}

fn decode_checkpoint(text: &str) -> Option<usize> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
    String::from_utf8(bytes).ok()?.strip_prefix("pos:")?.parse().ok()
}

/// One term of Auth0's Lucene-style log and user search: `field:"value"` or `field:[from TO to]`.
#[derive(Debug, PartialEq)]
enum Term {
    Equals(String, String),
    Range(String, Option<String>, Option<String>),
}

fn parse_query(q: &str) -> Option<Vec<Term>> {
    q.split(" AND ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|term| {
            let (field, value) = term.split_once(':')?;
            let field = field.trim().to_string();
            let value = value.trim();
            if let Some(range) = value.strip_prefix('[').or_else(|| value.strip_prefix('{')) {
                let range = range.strip_suffix(']').or_else(|| range.strip_suffix('}'))?;
                let (from, to) = range.split_once(" TO ")?;
                let bound = |b: &str| (b.trim() != "*").then(|| b.trim().trim_matches('"').to_string());
                Some(Term::Range(field, bound(from), bound(to)))
            } else {
                Some(Term::Equals(field, value.trim_matches('"').to_string()))
            }
        })
        .collect()
}

/// The simulated tenant.
pub struct Auth0 {
    client_id: String,
    client_secret: String,
    state: Mutex<State>,
}

impl Auth0 {
    /// A tenant accepting the `client-id` and `client-secret` in `credentials`.
    pub fn new(credentials: &Value) -> Result<Self, String> {
        let key = |k: &str| credentials.get(k).and_then(Value::as_str).map(String::from).ok_or_else(|| format!("auth0 simulator: credentials need {k}"));
        Ok(Self {
            client_id: key("client-id")?,
            client_secret: key("client-secret")?,
            state: Mutex::new(State {
                tenant: fastrand::u32(..),
                users: Vec::new(),
                by_key: HashMap::new(),
                roles: Vec::new(),
                tokens: HashMap::new(),
                jobs: HashMap::new(),
                logs: Vec::new(),
                logs_by_user: HashMap::new(),
                plan: Plan::Enterprise,
                mfa_policies: vec!["all-applications".to_string()],
                mailed: HashMap::new(),
            }),
        })
    }

    /// Moves the tenant to another plan (the session endpoints answer 403 below Enterprise).
    pub fn set_plan(&self, plan: Plan) {
        self.state.lock().unwrap().plan = plan;
    }

    /// Sets the MFA policy (`Require Multi-factor Auth`): `true` is "Always".
    pub fn set_mfa_required(&self, required: bool) {
        self.state.lock().unwrap().mfa_policies = if required { vec!["all-applications".into()] } else { Vec::new() };
    }

    /// Whether the user still has browsers remembered for MFA (not visible through the API).
    pub fn remembers_browsers(&self, name: &str) -> Option<bool> {
        let state = self.state.lock().unwrap();
        state.find_by_email(name).map(|i| state.users[i as usize].remembered_browsers)
    }

    fn token(&self, request: &SimRequest) -> SimResponse {
        let json_body = request.header("content-type").is_some_and(|t| t.contains("json"));
        let field = |key: &str| -> Option<String> {
            if json_body { request.json()?.get(key)?.as_str().map(String::from) } else { request.form_value(key) }
        };
        let oauth_error = |status: u16, code: &str, description: &str| SimResponse::json(status, &json!({ "error": code, "error_description": description }));
        if field("grant_type").as_deref() != Some("client_credentials") {
            return oauth_error(403, "unauthorized_client", "Grant type not allowed for the client.");
        }
        if field("client_id").as_deref() != Some(self.client_id.as_str()) || field("client_secret").as_deref() != Some(self.client_secret.as_str()) {
            return oauth_error(401, "access_denied", "Unauthorized");
        }
        let Some(audience) = field("audience") else {
            return oauth_error(403, "access_denied", "No audience parameter was provided, and no default audience has been configured");
        };
        // The audience is the tenant's own Management API.
        let expected = request.header("host").map(|host| format!("http://{host}/api/v2/"));
        if expected.is_none_or(|e| e != audience) {
            return oauth_error(403, "access_denied", &format!("Service not enabled within domain: {audience}"));
        }
        let token = random_text(48);
        let expires = jiff::Timestamp::now().as_second() + TOKEN_LIFETIME_SECONDS;
        self.state.lock().unwrap().tokens.insert(token.clone(), expires);
        SimResponse::json(
            200,
            &json!({
                "access_token": token,
                "scope": "read:users update:users read:roles read:authentication_methods delete:authentication_methods delete:sessions read:sessions delete:refresh_tokens read:refresh_tokens read:logs read:guardian_factors create:guardian_enrollment_tickets",
                "expires_in": TOKEN_LIFETIME_SECONDS,
                "token_type": "Bearer",
            }),
        )
    }

    fn authorized(&self, request: &SimRequest) -> Result<(), SimResponse> {
        let Some(token) = request.authorization("Bearer") else { return Err(error(401, "Missing authentication", None)) };
        let state = self.state.lock().unwrap();
        match state.tokens.get(token) {
            Some(expires) if *expires > jiff::Timestamp::now().as_second() => Ok(()),
            Some(_) => Err(error(401, "Expired token received for JSON Web Token validation", None)),
            None => Err(error(401, "Invalid token", None)),
        }
    }

    fn api(&self, request: &SimRequest, path: &[&str]) -> SimResponse {
        match (request.method.as_str(), path) {
            ("GET", ["users"]) => self.list_users(request),
            ("GET", ["users-by-email"]) => self.users_by_email(request),
            ("GET", ["users", id]) => self.with_user(id, |state, i| SimResponse::json(200, &state.user_json(i))),
            ("PATCH", ["users", id]) => self.update_user(id, request),
            ("GET", ["users", id, "authentication-methods"]) => self.with_user(id, |state, i| {
                let methods = state.users[i as usize].methods.iter().map(|m| state.method_json(i, m)).collect();
                paged(request, methods, "authenticators", 50)
            }),
            ("DELETE", ["users", id, "authentication-methods"]) => self.with_user_mut(id, |state, i| {
                // Every MFA method; the password stays.
                state.users[i as usize].methods.retain(|m| m.kind == MethodType::Password);
                SimResponse::empty(204)
            }),
            ("DELETE", ["users", id, "authentication-methods", method]) => self.with_user_mut(id, |state, i| delete_method(state, i, method)),
            ("POST", ["users", id, "multifactor", "actions", "invalidate-remember-browser"]) => self.with_user_mut(id, |state, i| {
                state.users[i as usize].remembered_browsers = false;
                SimResponse::empty(204)
            }),
            ("GET" | "DELETE", ["users", id, what @ ("sessions" | "refresh-tokens")]) => self.sessions(request, id, what),
            ("POST", ["jobs", "users-exports"]) => self.create_export(request),
            ("GET", ["jobs", id]) => self.export_status(request, id),
            ("GET", ["roles"]) => self.list_roles(request),
            ("GET", ["roles", id, "users"]) => self.role_users(request, id),
            ("GET", ["logs"]) => self.logs(request),
            ("GET", ["guardian", "policies"]) => SimResponse::json(200, &json!(self.state.lock().unwrap().mfa_policies)),
            ("POST", ["guardian", "enrollments", "ticket"]) => self.enrollment_ticket(request),
            _ => error(404, "Not Found", None),
        }
    }

    fn with_user(&self, id: &str, answer: impl FnOnce(&State, u32) -> SimResponse) -> SimResponse {
        let state = self.state.lock().unwrap();
        match state.find(id) {
            Some(i) => answer(&state, i),
            None => no_user(),
        }
    }

    fn with_user_mut(&self, id: &str, answer: impl FnOnce(&mut State, u32) -> SimResponse) -> SimResponse {
        let mut state = self.state.lock().unwrap();
        match state.find(id) {
            Some(i) => answer(&mut state, i),
            None => no_user(),
        }
    }

    fn list_users(&self, request: &SimRequest) -> SimResponse {
        if request.query("search_engine").is_some_and(|e| e != "v3") {
            return error(400, "The search_engine v1 and v2 are no longer supported, use v3", Some("invalid_query_string"));
        }
        let (page, per_page) = match page_params(request, 50) {
            Ok(p) => p,
            Err(response) => return response,
        };
        if (page + 1) * per_page > SEARCH_LIMIT {
            return error(
                400,
                "You can only page through the first 1000 records. See https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation",
                Some("invalid_paging"),
            );
        }
        let state = self.state.lock().unwrap();
        let terms = match request.query("q").filter(|q| !q.trim().is_empty()).map(parse_query) {
            None => Vec::new(),
            Some(Some(terms)) => terms,
            Some(None) => return error(400, "Query validation error: invalid query string", Some("invalid_query_string")),
        };
        let matches = |i: u32| {
            terms.iter().all(|t| match t {
                Term::Equals(f, v) if f == "email" => username(i).eq_ignore_ascii_case(v),
                Term::Equals(f, v) if f == "user_id" => state.find(v) == Some(i),
                Term::Equals(f, v) if f == "blocked" => state.users[i as usize].blocked == (v == "true"),
                _ => false,
            })
        };
        let (total, selected): (usize, Vec<u32>) = if terms.is_empty() {
            let total = state.users.len();
            (total, ((page * per_page).min(total)..((page + 1) * per_page).min(total)).map(|i| i as u32).collect())
        } else {
            let all: Vec<u32> = (0..state.users.len() as u32).filter(|i| matches(*i)).collect();
            (all.len(), all.into_iter().skip(page * per_page).take(per_page).collect())
        };
        let users: Vec<Value> = selected.into_iter().map(|i| state.user_json(i)).collect();
        if request.query("include_totals") == Some("true") {
            SimResponse::json(200, &json!({ "start": page * per_page, "limit": per_page, "length": users.len(), "total": total, "users": users }))
        } else {
            SimResponse::json(200, &Value::Array(users))
        }
    }

    fn users_by_email(&self, request: &SimRequest) -> SimResponse {
        let Some(email) = request.query("email").filter(|e| !e.is_empty()) else {
            return error(400, "Query validation error: 'Missing required property: email' on property email", Some("invalid_query_string"));
        };
        let state = self.state.lock().unwrap();
        // "The search looks for an exact match to the provided email address and is
        // case-sensitive"; Auth0 stores the emails of its own users in lower case
        // (auth0.com/docs/manage-users/user-search/retrieve-users-with-get-users-by-email-endpoint,
        // auth0.com/docs/api/management/v2/users-by-email/get-users-by-email).
        let found: Vec<Value> = state.find_by_email(email).filter(|i| username(*i) == email).map(|i| state.user_json(i)).into_iter().collect();
        SimResponse::json(200, &Value::Array(found))
    }

    fn update_user(&self, id: &str, request: &SimRequest) -> SimResponse {
        let Some(body) = request.json().filter(Value::is_object) else {
            return error(400, "Payload validation error: 'Expected type object but found type null'.", Some("invalid_body"));
        };
        self.with_user_mut(id, |state, i| {
            if let Some(blocked) = body.get("blocked") {
                let Some(blocked) = blocked.as_bool() else {
                    return error(400, "Payload validation error: 'Expected type boolean but found type string' on property blocked.", Some("invalid_body"));
                };
                state.users[i as usize].blocked = blocked;
            }
            SimResponse::json(200, &state.user_json(i))
        })
    }

    fn sessions(&self, request: &SimRequest, id: &str, what: &str) -> SimResponse {
        let mut state = self.state.lock().unwrap();
        if state.plan != Plan::Enterprise {
            return enterprise_only();
        }
        let Some(i) = state.find(id) else { return no_user() };
        let user_id = state.user_id(i);
        let user = &mut state.users[i as usize];
        if request.method == hyper::Method::DELETE {
            // Accepted and processed asynchronously by Auth0; done at once here.
            if what == "sessions" {
                user.sessions = 0;
            } else {
                user.refresh_tokens = 0;
            }
            return SimResponse::empty(202);
        }
        let total = if what == "sessions" { user.sessions } else { user.refresh_tokens } as usize;
        let (range, next) = match checkpoint(request, total) {
            Ok(c) => c,
            Err(response) => return response,
        };
        let created = rfc3339(timestamp(user.created_ms));
        let key = user.key;
        let items: Vec<Value> = range
            .map(|n| {
                let session_id = format!("{key:016x}{n:08x}");
                if what == "sessions" {
                    json!({
                        "id": session_id, "user_id": user_id, "created_at": created, "updated_at": created, "authenticated_at": created,
                        "device": { "initial_ip": "192.0.2.10", "initial_user_agent": "Mozilla/5.0", "last_ip": "192.0.2.10", "last_user_agent": "Mozilla/5.0" },
                        "clients": [{ "client_id": "cKYr0EAR0UJkz4BkKtl8j8ZtnJ9Q3Z2t" }],
                        "authentication": { "methods": [{ "name": "pwd", "timestamp": created }, { "name": "mfa", "timestamp": created }] },
                    })
                } else {
                    json!({
                        "id": format!("rt_{session_id}"), "user_id": user_id, "created_at": created, "client_id": "cKYr0EAR0UJkz4BkKtl8j8ZtnJ9Q3Z2t",
                        "session_id": session_id, "rotating": true, "resource_servers": [{ "audience": "https://api.example.com/", "scopes": "offline_access" }],
                    })
                }
            })
            .collect();
        let list = if what == "sessions" { "sessions" } else { "tokens" };
        let mut body = json!({ list: items });
        if let Some(next) = next {
            body["next"] = json!(next);
        }
        SimResponse::json(200, &body)
    }

    fn create_export(&self, request: &SimRequest) -> SimResponse {
        let body = request.json().unwrap_or(Value::Null);
        let format = body.get("format").and_then(Value::as_str).unwrap_or("csv");
        if format != "json" && format != "csv" {
            return error(400, "Payload validation error: 'No enum match for: \"xml\"' on property format.", Some("invalid_body"));
        }
        let fields: Vec<String> = body
            .get("fields")
            .and_then(Value::as_array)
            .map(|f| f.iter().filter_map(|f| f.get("name")?.as_str().map(String::from)).collect())
            .unwrap_or_else(|| vec!["user_id".into(), "email".into()]);
        let id = format!("job_{}", random_text(16));
        let now = jiff::Timestamp::now();
        let job = ExportJob { created: Instant::now(), created_at: now, fields: fields.clone(), signature: random_text(32), file: None };
        self.state.lock().unwrap().jobs.insert(id.clone(), job);
        SimResponse::json(
            201,
            &json!({
                "id": id, "type": "users_export", "status": "pending", "format": format, "created_at": rfc3339(now),
                "fields": fields.iter().map(|f| json!({ "name": f })).collect::<Vec<_>>(),
            }),
        )
    }

    fn export_status(&self, request: &SimRequest, id: &str) -> SimResponse {
        let due = {
            let state = self.state.lock().unwrap();
            let Some(job) = state.jobs.get(id) else { return error(404, "The job does not exist.", Some("inexistent_job")) };
            if job.file.is_none() && job.created.elapsed() >= EXPORT_DELAY {
                // Copy what is needed and write the file without holding the tenant.
                let rows: Vec<(u64, bool)> = state.users.iter().map(|u| (u.key, u.blocked)).collect();
                Some((state.tenant, rows, job.fields.clone()))
            } else {
                None
            }
        };
        if let Some((tenant, rows, fields)) = due {
            let file = Arc::new(export_file(tenant, &rows, &fields));
            if let Some(job) = self.state.lock().unwrap().jobs.get_mut(id) {
                job.file.get_or_insert(file);
            }
        }
        let state = self.state.lock().unwrap();
        let Some(job) = state.jobs.get(id) else { return error(404, "The job does not exist.", Some("inexistent_job")) };
        let mut body = json!({
            "id": id, "type": "users_export", "format": "json", "created_at": rfc3339(job.created_at),
            "fields": job.fields.iter().map(|f| json!({ "name": f })).collect::<Vec<_>>(),
        });
        if job.file.is_some() {
            let host = request.header("host").unwrap_or("127.0.0.1");
            body["status"] = json!("completed");
            body["location"] = json!(format!("http://{host}/exports/{id}.json.gz?X-Amz-Signature={}", job.signature));
        } else {
            body["status"] = json!("pending");
            body["percentage_done"] = json!(0);
            body["time_left_seconds"] = json!(1);
        }
        SimResponse::json(200, &body)
    }

    /// The export file: gzipped newline-delimited JSON, as the signed storage URL serves it.
    fn download(&self, file: &str, request: &SimRequest) -> SimResponse {
        let state = self.state.lock().unwrap();
        let job = file.strip_suffix(".json.gz").and_then(|id| state.jobs.get(id));
        match job {
            Some(job) if request.query("X-Amz-Signature") == Some(job.signature.as_str()) => match &job.file {
                Some(bytes) => SimResponse { status: 200, headers: vec![("content-type".into(), "application/gzip".into())], body: bytes.to_vec() },
                None => s3_error(404, "NoSuchKey", "The specified key does not exist."),
            },
            Some(_) => s3_error(403, "AccessDenied", "Request has expired or the signature does not match"),
            None => s3_error(404, "NoSuchKey", "The specified key does not exist."),
        }
    }

    fn list_roles(&self, request: &SimRequest) -> SimResponse {
        let state = self.state.lock().unwrap();
        // name_filter matches case-insensitively anywhere in the name.
        let filter = request.query("name_filter").map(str::to_lowercase);
        let roles = state
            .roles
            .iter()
            .filter(|r| filter.as_deref().is_none_or(|f| r.name.to_lowercase().contains(f)))
            .map(|r| json!({ "id": r.id, "name": r.name, "description": format!("Members of {}", r.name) }))
            .collect();
        paged(request, roles, "roles", 50)
    }

    fn role_users(&self, request: &SimRequest, id: &str) -> SimResponse {
        let state = self.state.lock().unwrap();
        let Some(role) = state.roles.iter().find(|r| r.id == id) else { return error(404, "The role does not exist.", Some("inexistent_role")) };
        let member_json = |i: u32| json!({ "user_id": state.user_id(i), "email": username(i), "name": username(i), "picture": "https://s.gravatar.com/avatar/0" });
        if request.query("take").is_none() && request.query("from").is_none() {
            return paged(request, role.members.iter().map(|i| member_json(*i)).collect(), "users", 50);
        }
        let (range, next) = match checkpoint(request, role.members.len()) {
            Ok(c) => c,
            Err(response) => return response,
        };
        let mut body = json!({ "users": role.members[range].iter().map(|i| member_json(*i)).collect::<Vec<_>>() });
        if let Some(next) = next {
            body["next"] = json!(next);
        }
        SimResponse::json(200, &body)
    }

    fn logs(&self, request: &SimRequest) -> SimResponse {
        let state = self.state.lock().unwrap();
        // Entries past the plan's retention are gone.
        let kept_since = jiff::Timestamp::now() - retention(state.plan);
        if let Some(from) = request.query("from") {
            // Checkpoint paging: entries after `from` in log_id order, every other parameter
            // ignored, and a Link header whose next relation goes on from the last one returned
            // (the same URL when there was nothing newer).
            let take = request.query("take").and_then(|t| t.parse::<usize>().ok()).unwrap_or(50).min(MAX_PER_PAGE);
            let start = state.logs.partition_point(|e| e.log_id.as_str() <= from);
            let page: Vec<&LogEntry> = state.logs[start..].iter().filter(|e| e.date >= kept_since).take(take).collect();
            let next = page.last().map_or(from, |e| e.log_id.as_str());
            let host = request.header("host").unwrap_or("127.0.0.1");
            let link = format!("<http://{host}/api/v2/logs?from={next}&take={take}>; rel=\"next\"");
            let entries: Vec<Value> = page.into_iter().map(|e| state.log_json(e)).collect();
            return SimResponse::json(200, &Value::Array(entries)).with_header("Link", link);
        }
        let terms = match request.query("q").filter(|q| !q.trim().is_empty()).map(parse_query) {
            None => Vec::new(),
            Some(Some(terms)) => terms,
            Some(None) => return error(400, "Query validation error: invalid query string", Some("invalid_query_string")),
        };
        let user = terms.iter().find_map(|t| match t {
            Term::Equals(f, v) if f == "user_id" => Some(state.find(v)),
            _ => None,
        });
        let candidates: Vec<usize> = match user {
            Some(Some(i)) => state.logs_by_user.get(&i).cloned().unwrap_or_default(),
            Some(None) => Vec::new(),
            None => (0..state.logs.len()).collect(),
        };
        let mut unsupported = None;
        let mut found: Vec<&LogEntry> = candidates
            .into_iter()
            .map(|n| &state.logs[n])
            .filter(|e| e.date >= kept_since)
            .filter(|e| {
                terms.iter().all(|t| match t {
                    Term::Equals(f, v) if f == "type" => e.type_ == v,
                    Term::Equals(f, v) if f == "user_id" => &state.user_id(e.user) == v,
                    Term::Equals(f, v) if f == "user_name" => username(e.user).eq_ignore_ascii_case(v),
                    Term::Equals(f, v) if f == "ip" => &e.ip == v,
                    Term::Range(f, from, to) if f == "date" => {
                        let bound = |b: &Option<String>| b.as_ref().map(|b| b.parse::<jiff::Timestamp>());
                        match (bound(from), bound(to)) {
                            (Some(Err(_)), _) | (_, Some(Err(_))) => {
                                unsupported = Some("date");
                                false
                            }
                            (from, to) => from.is_none_or(|f| f.is_ok_and(|f| e.date >= f)) && to.is_none_or(|t| t.is_ok_and(|t| e.date <= t)),
                        }
                    }
                    _ => {
                        unsupported = Some("field");
                        false
                    }
                })
            })
            .collect();
        if let Some(what) = unsupported {
            return error(400, &format!("Query validation error: unsupported {what} in q"), Some("invalid_query_string"));
        }
        found.sort_by_key(|e| e.date);
        match request.query("sort") {
            Some("date:1") => {}
            None | Some("date:-1") => found.reverse(),
            Some(_) => return error(400, "Query validation error: invalid sort", Some("invalid_query_string")),
        }
        let entries = found.into_iter().map(|e| state.log_json(e)).collect();
        paged(request, entries, "logs", 50)
    }

    fn enrollment_ticket(&self, request: &SimRequest) -> SimResponse {
        let body = request.json().unwrap_or(Value::Null);
        let user_id = body.get("user_id").and_then(Value::as_str).unwrap_or_default();
        let mut state = self.state.lock().unwrap();
        let Some(i) = state.find(user_id) else { return no_user() };
        let ticket = random_text(32);
        let host = request.header("host").unwrap_or("127.0.0.1");
        let url = format!("http://{host}/guardian/enroll?ticket={ticket}");
        // "send_mail: Send an email to the user to start the enrollment."
        // (auth0.com/docs/api/management/v2/guardian/post-ticket)
        if body.get("send_mail").and_then(Value::as_bool) == Some(true) {
            state.mailed.entry(i).or_default().push(url.clone());
        }
        SimResponse::json(200, &json!({ "ticket_id": ticket, "ticket_url": url }))
    }
}

fn s3_error(status: u16, code: &str, message: &str) -> SimResponse {
    SimResponse {
        status,
        headers: vec![("content-type".into(), "application/xml".into())],
        body: format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>").into_bytes(),
    }
}

/// Deletes one method and those linked to it; the password cannot be removed this way.
fn delete_method(state: &mut State, index: u32, id: &str) -> SimResponse {
    let user = &mut state.users[index as usize];
    let Some(position) = user.methods.iter().position(|m| m.id() == id) else {
        return error(404, "Authentication method not found", Some("inexistent_authentication_method"));
    };
    if user.methods[position].kind == MethodType::Password {
        return error(400, "Cannot delete the password authentication method", Some("operation_not_supported"));
    }
    let key = user.methods[position].key;
    let link = user.methods[position].link;
    user.methods.retain(|m| m.key != key && Some(m.key) != link && m.link != Some(key));
    SimResponse::empty(204)
}

/// Users `(key, blocked)` of `tenant`, in index order, one JSON object per line with `fields`.
fn export_file(tenant: u32, rows: &[(u64, bool)], fields: &[String]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(rows.len() * 16), flate2::Compression::fast());
    let mut line = String::with_capacity(128);
    for (i, (key, blocked)) in rows.iter().enumerate() {
        use std::fmt::Write as _;
        line.clear();
        line.push('{');
        for field in fields {
            // Ids and seeded emails need no JSON escaping.
            let _ = match field.as_str() {
                "user_id" => write!(line, "\"user_id\":\"auth0|{tenant:08x}{key:016x}\","),
                "email" | "name" => write!(line, "\"{field}\":\"{}\",", username(i as u32)),
                "blocked" => write!(line, "\"blocked\":{blocked},"),
                _ => Ok(()),
            };
        }
        if line.ends_with(',') {
            line.pop();
        }
        line.push_str("}\n");
        let _ = encoder.write_all(line.as_bytes());
    }
    encoder.finish().unwrap_or_default()
}

impl Provider for Auth0 {
    fn name(&self) -> &'static str {
        "auth0"
    }

    fn bucket(&self, request: &SimRequest) -> &'static str {
        if request.path.starts_with("/oauth/") {
            "token"
        } else if request.path.starts_with("/exports/") {
            "exports"
        } else {
            "api"
        }
    }

    fn handle(&self, request: &SimRequest) -> SimResponse {
        let segments = request.segments();
        let path: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (request.method.as_str(), path.as_slice()) {
            ("POST", ["oauth", "token"]) => self.token(request),
            ("GET", ["exports", file]) => self.download(file, request),
            (_, ["api", "v2", rest @ ..]) => match self.authorized(request) {
                Ok(()) => self.api(request, rest),
                Err(response) => response,
            },
            _ => error(404, "Not Found", None),
        }
    }

    fn throttled(&self, _reset: i64) -> SimResponse {
        error(429, "Global limit has been reached", Some("too_many_requests"))
    }

    fn announces_limits(&self) -> bool {
        true
    }

    fn limit_header_prefix(&self) -> &'static str {
        "x-ratelimit"
    }

    fn seed(&self, seed: &Seed) {
        let created_ms = seed.factor_created().as_millisecond();
        let mut types: Vec<MethodType> = Vec::new();
        for kind in &seed.factors {
            if let Some(t) = MethodType::for_kind(*kind)
                && !types.contains(&t)
            {
                types.push(t);
            }
        }
        // Push comes with a recovery code linked to it, as Guardian enrolls them.
        let linked = types.contains(&MethodType::Push) && types.contains(&MethodType::RecoveryCode);
        let mut state = self.state.lock().unwrap();
        state.users = Vec::with_capacity(seed.users as usize);
        state.by_key = HashMap::with_capacity(seed.users as usize);
        state.logs.clear();
        state.logs_by_user.clear();
        state.jobs.clear();
        for i in 0..seed.users {
            let mut key = fastrand::u64(..);
            while state.by_key.contains_key(&key) {
                key = fastrand::u64(..);
            }
            state.by_key.insert(key, i);
            let mut methods = Vec::with_capacity(types.len() + 1);
            methods.push(Method { key: fastrand::u64(..), kind: MethodType::Password, created_ms, link: None });
            for t in &types {
                // Passkeys come as synced passkeys or as platform authenticators (Touch ID, Windows Hello).
                let kind = if *t == MethodType::Passkey && i % 2 == 1 { MethodType::WebauthnPlatform } else { *t };
                methods.push(Method { key: fastrand::u64(..), kind, created_ms, link: None });
            }
            if linked {
                let push = methods.iter().find(|m| m.kind == MethodType::Push).map(|m| m.key);
                let code = methods.iter().find(|m| m.kind == MethodType::RecoveryCode).map(|m| m.key);
                for m in methods.iter_mut() {
                    m.link = match m.kind {
                        MethodType::Push => code,
                        MethodType::RecoveryCode => push,
                        _ => None,
                    };
                }
            }
            state.users.push(User {
                key,
                blocked: false,
                methods,
                sessions: seed.sessions,
                refresh_tokens: seed.sessions,
                remembered_browsers: true,
                created_ms,
            });
        }
        state.roles = seed
            .groups
            .iter()
            .map(|g| Role {
                id: format!("rol_{}", random_text(16)),
                name: g.name.clone(),
                members: (0..seed.users).filter(|i| seed.groups_of(*i).any(|n| n == g.name)).collect(),
            })
            .collect();
    }

    fn census(&self, cutoff: Option<jiff::Timestamp>) -> Census {
        let state = self.state.lock().unwrap();
        let mut census = Census::default();
        for i in 0..state.users.len() as u32 {
            census.count(&state.view(i), cutoff);
        }
        census
    }

    fn user(&self, name: &str) -> Option<UserView> {
        let state = self.state.lock().unwrap();
        state.find_by_email(name).map(|i| state.view(i))
    }

    fn links_mailed(&self, name: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.find_by_email(name).and_then(|i| state.mailed.get(&i).cloned()).unwrap_or_default()
    }

    fn enroll(&self, name: &str, kind: FactorKind, from_ip: &str) -> Option<String> {
        let agent = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15";
        self.act(name, &Activity { user_agent: agent.into(), ..Activity::new(Act::Enroll { factor: kind }, from_ip) }).ok().flatten()
    }

    fn act(&self, name: &str, activity: &Activity) -> Result<Option<String>, String> {
        let type_ = activity_type(activity.what)?;
        let at = activity.at();
        let mut state = self.state.lock().unwrap();
        let i = state.find_by_email(name).ok_or("no such user")?;
        let (ip, agent) = (activity.ip.as_str(), activity.user_agent.as_str());
        let Act::Enroll { factor } = activity.what else {
            let entry = state.add_log(type_, i, ip, agent);
            entry.date = at;
            if activity.what == Act::RiskySignIn {
                // Adaptive MFA's assessment of a login it does not trust ("Adaptive MFA Log Events").
                entry.details = json!({ "riskAssessment": { "confidence": "low", "version": "1", "assessments": {
                    "UntrustedIP": { "confidence": "low", "code": "found_on_deny_list" },
                    "NewDevice": { "confidence": "low", "code": "no_match" },
                    "ImpossibleTravel": { "confidence": "low", "code": "impossible_travel_from_last_login" },
                } } });
            }
            return Ok(None);
        };
        let kind = MethodType::for_kind(factor).ok_or_else(|| format!("Auth0 has no authentication method of kind {}", factor.as_str()))?;
        let method = Method { key: fastrand::u64(..), kind, created_ms: at.as_millisecond(), link: None };
        let id = method.id();
        state.users[i as usize].methods.push(method);
        match &activity.by_admin {
            // An administrator creates the method through the Management API: a `sapi` entry
            // under the administrator, naming the user in the request path.
            Some(admin) => {
                let user_id = state.user_id(i);
                let entry = state.add_log("sapi", i, ip, agent);
                entry.date = at;
                entry.admin = Some(admin.clone());
                entry.details = json!({
                    "request": {
                        "method": "post", "path": format!("/api/v2/users/{user_id}/authentication-methods"), "query": {},
                        "userAgent": agent, "body": { "type": kind.name() }, "channel": "https://manage.auth0.com/", "ip": ip,
                        "auth": { "user": { "user_id": admin_id(admin), "name": admin, "email": admin }, "strategy": "jwt", "credentials": { "scopes": ["create:authentication_methods"] } },
                    },
                    "response": { "statusCode": 201, "body": { "id": id, "type": kind.name(), "created_at": rfc3339(at) } },
                });
            }
            None => {
                state.add_log("gd_start_enroll", i, ip, agent).date = at;
                state.add_log("gd_enrollment_complete", i, ip, agent).date = at;
            }
        }
        Ok(Some(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GroupSeed, parse_query as parse_pairs};

    fn sim(users: u32, factors: Vec<FactorKind>) -> Auth0 {
        let sim = Auth0::new(&json!({ "client-id": "id", "client-secret": "secret" })).unwrap();
        sim.seed(&Seed { users, factors, groups: vec![GroupSeed::new("staff", 2)], ..Seed::default() });
        sim
    }

    fn call(sim: &Auth0, method: &str, target: &str, body: Option<Value>) -> SimResponse {
        let token = {
            let mut state = sim.state.lock().unwrap();
            state.tokens.insert("t".into(), i64::MAX);
            "t"
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut headers = hyper::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        headers.insert("host", "127.0.0.1:9".parse().unwrap());
        if body.is_some() {
            headers.insert("content-type", "application/json".parse().unwrap());
        }
        sim.handle(&SimRequest {
            method: method.parse().unwrap(),
            path: path.to_string(),
            query: parse_pairs(query),
            headers,
            body: body.map(|b| b.to_string().into()).unwrap_or_default(),
        })
    }

    fn body(response: &SimResponse) -> Value {
        serde_json::from_slice(&response.body).unwrap()
    }

    #[test]
    fn user_search_stops_at_the_first_thousand_records() {
        let sim = sim(1200, vec![FactorKind::Totp]);
        let ok = call(&sim, "GET", "/api/v2/users?page=9&per_page=100&include_totals=true", None);
        assert_eq!(ok.status, 200);
        assert_eq!(body(&ok)["total"], 1200);
        let beyond = call(&sim, "GET", "/api/v2/users?page=10&per_page=100", None);
        assert_eq!(beyond.status, 400);
        assert_eq!(body(&beyond)["errorCode"], "invalid_paging");
    }

    #[test]
    fn linked_methods_are_deleted_together_and_the_password_stays() {
        let sim = sim(1, vec![FactorKind::Push, FactorKind::RecoveryCodes, FactorKind::Totp]);
        let user = sim.user(&username(0)).unwrap();
        let methods = body(&call(&sim, "GET", &format!("/api/v2/users/{}/authentication-methods", user.id), None));
        let push = methods.as_array().unwrap().iter().find(|m| m["type"] == "push").unwrap().clone();
        let code = methods.as_array().unwrap().iter().find(|m| m["type"] == "recovery-code").unwrap().clone();
        assert_eq!(push["link_id"], code["id"]);
        let path = format!("/api/v2/users/{}/authentication-methods/{}", enc(&user.id), enc(push["id"].as_str().unwrap()));
        assert_eq!(call(&sim, "DELETE", &path, None).status, 204);
        assert_eq!(call(&sim, "DELETE", &path, None).status, 404);
        let kinds: Vec<FactorKind> = sim.user(&username(0)).unwrap().factors.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec![FactorKind::Totp]);
        let left = body(&call(&sim, "GET", &format!("/api/v2/users/{}/authentication-methods", user.id), None));
        assert!(left.as_array().unwrap().iter().any(|m| m["type"] == "password"));
    }

    #[test]
    fn sessions_are_enterprise_only() {
        let sim = sim(1, vec![FactorKind::Totp]);
        let user = sim.user(&username(0)).unwrap();
        let path = format!("/api/v2/users/{}/sessions", user.id);
        assert_eq!(body(&call(&sim, "GET", &path, None))["sessions"].as_array().unwrap().len(), 1);
        sim.set_plan(Plan::Professional);
        let refused = call(&sim, "DELETE", &path, None);
        assert_eq!((refused.status, body(&refused)["errorCode"].clone()), (403, Value::Null));
        sim.set_plan(Plan::Enterprise);
        assert_eq!(call(&sim, "DELETE", &path, None).status, 202);
        assert_eq!(sim.user(&username(0)).unwrap().sessions, 0);
    }

    #[test]
    fn export_job_writes_every_user_as_gzipped_ndjson() {
        let sim = sim(1500, vec![FactorKind::Totp]);
        let job = body(&call(&sim, "POST", "/api/v2/jobs/users-exports", Some(json!({ "format": "json", "fields": [{ "name": "user_id" }, { "name": "email" }] }))));
        std::thread::sleep(EXPORT_DELAY);
        let done = body(&call(&sim, "GET", &format!("/api/v2/jobs/{}", job["id"].as_str().unwrap()), None));
        assert_eq!(done["status"], "completed");
        let location = done["location"].as_str().unwrap().trim_start_matches("http://127.0.0.1:9");
        let file = call(&sim, "GET", location, None);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&file.body[..]), &mut text).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 1500);
        assert_eq!(lines[1499]["email"], username(1499));
        let tampered = call(&sim, "GET", &location.replace("Signature=", "Signature=x"), None);
        assert_eq!(tampered.status, 403);
    }

    #[test]
    fn log_search_by_type_user_and_date() {
        let sim = sim(3, vec![FactorKind::Totp]);
        let before = jiff::Timestamp::now();
        sim.enroll(&username(1), FactorKind::Webauthn, "203.0.113.9").unwrap();
        sim.enroll(&username(2), FactorKind::Totp, "198.51.100.1").unwrap();
        let user = sim.user(&username(1)).unwrap();
        let q = format!("type:\"gd_enrollment_complete\" AND user_id:\"{}\" AND date:[{} TO *]", user.id, before);
        let found = body(&call(&sim, "GET", &format!("/api/v2/logs?q={}&sort=date:1", enc(&q)), None));
        let found = found.as_array().unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["ip"], "203.0.113.9");
        assert_eq!(found[0]["location_info"]["country_code"], "JP");
        let later = body(&call(&sim, "GET", &format!("/api/v2/logs?q={}", enc("date:[2999-01-01T00:00:00Z TO *]")), None));
        assert!(later.as_array().unwrap().is_empty());
        let all = body(&call(&sim, "GET", "/api/v2/logs?from=0&take=100", None));
        assert_eq!(all.as_array().unwrap().len(), 4);
    }

    #[test]
    fn activities_are_logged_in_auth0_shapes_and_read_by_checkpoint() {
        let sim = sim(3, vec![FactorKind::Totp]);
        let earlier = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(30);
        sim.act(&username(0), &Activity { at: Some(earlier), ..Activity::new(Act::SignIn, "198.51.100.20") }).unwrap();
        sim.act(&username(0), &Activity::new(Act::PushDenied, "100.64.7.7")).unwrap();
        sim.act(&username(1), &Activity::new(Act::RiskySignIn, "198.19.0.9")).unwrap();
        let id = sim.act(&username(2), &Activity { by_admin: Some("helpdesk@example.com".into()), ..Activity::new(Act::Enroll { factor: FactorKind::Totp }, "192.0.2.4") }).unwrap().unwrap();
        assert!(sim.act(&username(0), &Activity::new(Act::FraudReported, "198.51.100.20")).is_err());
        assert!(sim.user(&username(2)).unwrap().factors.iter().any(|f| f.id == id));
        // Checkpoint paging: two at a time, each next link going on from the last entry.
        let mut from = "0".to_string();
        let mut entries = Vec::new();
        loop {
            let page = call(&sim, "GET", &format!("/api/v2/logs?from={from}&take=2"), None);
            let link = page.headers.iter().find(|(k, _)| k == "Link").map(|(_, v)| v.clone()).unwrap();
            let got = body(&page).as_array().unwrap().clone();
            if got.is_empty() {
                assert!(link.contains(&format!("from={from}&")), "an empty page links to itself: {link}");
                break;
            }
            from = got.last().unwrap()["log_id"].as_str().unwrap().to_string();
            assert!(link.contains(&format!("from={from}&take=2")), "{link}");
            entries.extend(got);
        }
        let types: Vec<&str> = entries.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["s", "gd_auth_rejected", "s", "sapi"]);
        let user0 = sim.user(&username(0)).unwrap().id;
        assert_eq!((entries[0]["date"].as_str().unwrap(), entries[0]["user_id"].as_str().unwrap()), (rfc3339(earlier).as_str(), user0.as_str()));
        assert_eq!(entries[1]["location_info"]["country_code"], "NG");
        assert_eq!(entries[1]["location_info"]["latitude"], 6.5244);
        assert_eq!(entries[2]["details"]["riskAssessment"]["confidence"], "low");
        let admin = &entries[3];
        let user2 = sim.user(&username(2)).unwrap().id;
        assert_eq!(admin["user_name"], "helpdesk@example.com");
        assert_eq!(admin["details"]["request"]["path"], format!("/api/v2/users/{user2}/authentication-methods"));
        assert_eq!(admin["details"]["response"]["body"]["id"], id.as_str());
        // A user's own entries by search, oldest first.
        let q = format!("user_id:\"{user0}\"");
        let own = body(&call(&sim, "GET", &format!("/api/v2/logs?q={}&sort=date:1&per_page=100", enc(&q)), None));
        let own: Vec<&str> = own.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(own, ["s", "gd_auth_rejected"]);
    }

    #[test]
    fn logs_past_the_plans_retention_are_gone() {
        let sim = sim(1, vec![]);
        let two_days_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48);
        sim.act(&username(0), &Activity { at: Some(two_days_ago), ..Activity::new(Act::SignIn, "198.51.100.20") }).unwrap();
        assert_eq!(body(&call(&sim, "GET", "/api/v2/logs?from=0&take=100", None)).as_array().unwrap().len(), 1);
        sim.set_plan(Plan::Free);
        assert_eq!(body(&call(&sim, "GET", "/api/v2/logs?from=0&take=100", None)).as_array().unwrap().len(), 0);
        assert_eq!(body(&call(&sim, "GET", "/api/v2/logs", None)).as_array().unwrap().len(), 0);
    }

    #[test]
    fn wrong_token_and_wrong_secret_are_refused_as_auth0_does() {
        let sim = sim(1, vec![]);
        let mut request = SimRequest {
            method: hyper::Method::GET,
            path: "/api/v2/users".into(),
            query: vec![],
            headers: hyper::HeaderMap::new(),
            body: Default::default(),
        };
        request.headers.insert("authorization", "Bearer nope".parse().unwrap());
        let refused = sim.handle(&request);
        assert_eq!((refused.status, body(&refused)["message"].clone()), (401, json!("Invalid token")));
        let token = SimRequest {
            method: hyper::Method::POST,
            path: "/oauth/token".into(),
            query: vec![],
            headers: hyper::HeaderMap::new(),
            body: "grant_type=client_credentials&client_id=id&client_secret=wrong&audience=http%3A%2F%2Fx%2Fapi%2Fv2%2F".into(),
        };
        let refused = sim.handle(&token);
        assert_eq!((refused.status, body(&refused)["error"].clone()), (401, json!("access_denied")));
    }

    #[test]
    fn role_members_page_by_checkpoint() {
        let sim = sim(250, vec![]);
        let roles = body(&call(&sim, "GET", "/api/v2/roles?name_filter=STAFF", None));
        let id = roles[0]["id"].as_str().unwrap().to_string();
        let mut from = String::new();
        let mut seen = 0;
        loop {
            let page = body(&call(&sim, "GET", &format!("/api/v2/roles/{id}/users?take=100&from={from}"), None));
            seen += page["users"].as_array().unwrap().len();
            match page["next"].as_str() {
                Some(next) => from = next.to_string(),
                None => break,
            }
        }
        assert_eq!(seen, 125);
    }

    fn enc(text: &str) -> String {
        crate::percent_encode(text)
    }
}
