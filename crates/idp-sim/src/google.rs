//! Google Workspace: the Admin SDK Directory API (`/admin/directory/v1`), the Reports API
//! (`/admin/reports/v1`) and the OAuth token endpoint (`/token`) a service account reaches with
//! the JWT bearer grant (domain-wide delegation).
//!
//! Quirks kept: no API lists second factors (a user only shows `isEnrolledIn2Sv`); backup codes
//! and OAuth tokens carry no creation time, app-specific passwords do; `turnOff` wipes the whole
//! 2-Step Verification enrollment; quota answers are 403 with reason `userRateLimitExceeded`;
//! web sessions cannot be seen, only ended all at once with `signOut`. Internally every factor
//! keeps its true creation time for the census.
//!
//! Census mapping: the 2SV enrollment is one factor (`twoStepVerification`), the backup-code set
//! one (`recoveryCodes`), each app password one (`appPassword`); OAuth tokens are grants; a
//! user's web sign-in (all browsers at once, as `signOut` ends it) is one session.
//!
//! Sources, each rule from the Admin SDK reference page named (developers.google.com/admin-sdk):
//! `isEnrolledIn2Sv` and paging with `maxResults` up to 500, Directory "users.list"; turnOff,
//! "twoStepVerification.turnOff"; backup codes, "verificationCodes"; app passwords with
//! `creationTime` in milliseconds, "asps"; OAuth grants, "tokens"; ending sessions,
//! "users.signOut"; login activities (`2sv_enroll`, `login_success` with `is_suspicious`,
//! `login_challenge` with `login_challenge_method` and `login_challenge_status`), Reports
//! "activities.list" (`userKey` `all` or one user, `eventName` as a comma list, `startTime`,
//! `endTime`, `maxResults` up to 1000, `pageToken`, newest first, `networkInfo` with the ASN and
//! region) and the login application's event list; their lag and 180-day reach, Google Workspace
//! Admin Help "Data retention and lag times" and the Reports API's login activity guide; 403 `userRateLimitExceeded`, Directory API "Limits and quotas"; the token endpoint,
//! "Using OAuth 2.0 for Server to Server Applications" (JWT bearer grant, domain-wide delegation).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hyper::Method;
use serde_json::{Value, json};

use super::{Act, Activity, Census, FactorView, Provider, Seed, SimRequest, SimResponse, UserView, new_id, place_of, rfc3339, username};
use crate::FactorKind;

pub const SCOPE_USER: &str = "https://www.googleapis.com/auth/admin.directory.user";
pub const SCOPE_USER_READONLY: &str = "https://www.googleapis.com/auth/admin.directory.user.readonly";
pub const SCOPE_USER_SECURITY: &str = "https://www.googleapis.com/auth/admin.directory.user.security";
pub const SCOPE_GROUP_READONLY: &str = "https://www.googleapis.com/auth/admin.directory.group.readonly";
pub const SCOPE_REPORTS: &str = "https://www.googleapis.com/auth/admin.reports.audit.readonly";

/// Scopes the simulated Admin console allows the service account (domain-wide delegation).
const DELEGATED_SCOPES: [&str; 5] = [SCOPE_USER, SCOPE_USER_READONLY, SCOPE_USER_SECURITY, SCOPE_GROUP_READONLY, SCOPE_REPORTS];

const DOMAIN: &str = "example.com";
const CUSTOMER_ID: &str = "C03az79cb";
const USERS_MAX_RESULTS: usize = 500;
const MEMBERS_MAX_RESULTS: usize = 200;
const BACKUP_CODES: usize = 10;
/// Activities per Reports API page, at most and by default.
const ACTIVITIES_MAX_RESULTS: usize = 1000;
/// How far back the login activity report reaches.
const REPORT_DAYS: i64 = 180;

/// Third-party apps a seeded user has granted access (OAuth tokens).
const CLIENTS: [(&str, &str); 3] = [
    ("1234567890-mail.apps.googleusercontent.com", "Mail Sync"),
    ("2345678901-calendar.apps.googleusercontent.com", "Calendar Planner"),
    ("3456789012-drive.apps.googleusercontent.com", "Drive Backup"),
];

struct Asp {
    code_id: i64,
    name: &'static str,
    created: jiff::Timestamp,
    last_used: Option<jiff::Timestamp>,
}

struct BackupCodes {
    id: String,
    created: jiff::Timestamp,
    /// The codes are derived from this seed when listed, so a million users cost no strings.
    seed: u64,
    /// Codes signed in with: each is good once.
    used: Vec<String>,
}

impl BackupCodes {
    fn fresh(created: jiff::Timestamp) -> Self {
        Self { id: new_id("codes-"), created, seed: fastrand::u64(..), used: Vec::new() }
    }

    fn codes(&self) -> Vec<String> {
        let mut rng = fastrand::Rng::with_seed(self.seed);
        (0..BACKUP_CODES).map(|_| format!("{:08}", rng.u32(0..100_000_000))).filter(|c| !self.used.contains(c)).collect()
    }
}

struct OAuthGrant {
    client_id: String,
    display_text: String,
}

/// One Reports API login activity.
struct LoginEvent {
    user: usize,
    time: jiff::Timestamp,
    unique_qualifier: i64,
    ip: String,
    name: &'static str,
    /// The event's parameters, each `{name, value | boolValue | multiValue}`.
    parameters: Vec<Value>,
}

struct User {
    id: String,
    email: String,
    suspended: bool,
    created: jiff::Timestamp,
    last_login: Option<jiff::Timestamp>,
    /// The 2SV enrollment: its id and true enrollment time.
    two_sv: Option<(String, jiff::Timestamp)>,
    backup_codes: Option<BackupCodes>,
    asps: Vec<Asp>,
    grants: Vec<OAuthGrant>,
    signed_in: bool,
    events: Vec<usize>,
}

#[derive(Default)]
struct State {
    users: Vec<User>,
    by_email: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
    /// Group email → indexes of its direct user members.
    groups: BTreeMap<String, Vec<usize>>,
    /// Group email → emails of the groups that are its direct members.
    subgroups: BTreeMap<String, Vec<String>>,
    /// Access token → (expiry epoch s, granted scopes).
    tokens: HashMap<String, (i64, Vec<String>)>,
    events: Vec<LoginEvent>,
    next_code_id: i64,
}

impl State {
    fn find(&self, key: &str) -> Option<usize> {
        self.by_id.get(key).or_else(|| self.by_email.get(&key.to_lowercase())).copied()
    }
}

/// The service account the simulator trusts: its email, key id and RSA public key.
struct ServiceAccount {
    client_email: String,
    key_id: String,
    token_uri: String,
    public_key: Vec<u8>,
}

pub struct Google {
    account: ServiceAccount,
    state: Mutex<State>,
    /// How late Reports API activities appear ("Data retention and lag times": login events can
    /// take hours); zero unless a test sets it.
    reports_lag: Mutex<std::time::Duration>,
}

impl Google {
    /// From the Secret's `service-account.json` (a service-account key); the public key is
    /// derived from its private key.
    pub fn new(credentials: &Value) -> Result<Self, String> {
        let text = credentials.get("service-account.json").and_then(Value::as_str).ok_or("google: credentials need service-account.json")?;
        let key: Value = serde_json::from_str(text).map_err(|e| format!("google: service-account.json: {e}"))?;
        let field = |name: &str| key.get(name).and_then(Value::as_str).map(String::from).ok_or(format!("google: service-account.json has no {name}"));
        let pem = field("private_key")?;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
        let der = STANDARD.decode(body).map_err(|_| "google: private_key is not PEM".to_string())?;
        let pair = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&der).map_err(|e| format!("google: private_key: {e}"))?;
        use aws_lc_rs::signature::KeyPair;
        Ok(Self {
            account: ServiceAccount {
                client_email: field("client_email")?,
                key_id: field("private_key_id")?,
                token_uri: field("token_uri")?,
                public_key: pair.public_key().as_ref().to_vec(),
            },
            state: Mutex::default(),
            reports_lag: Mutex::default(),
        })
    }

    /// `POST /token`: the JWT bearer grant, verified as Google does (signature, iss, aud, exp, sub, scopes).
    fn token(&self, request: &SimRequest, state: &mut State) -> SimResponse {
        let fail = |status: u16, error: &str, description: &str| SimResponse::json(status, &json!({ "error": error, "error_description": description }));
        let form = request.form();
        let value = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        if value("grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            return fail(400, "unsupported_grant_type", "Invalid grant_type: ");
        }
        let Some(assertion) = value("assertion") else { return fail(400, "invalid_request", "Missing required parameter: assertion") };
        let parts: Vec<&str> = assertion.split('.').collect();
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let (Some(header), Some(claims), Some(signature)) =
            (parts.first().and_then(|h| decode(h)), parts.get(1).and_then(|c| decode(c)), parts.get(2).and_then(|s| URL_SAFE_NO_PAD.decode(s).ok()))
        else {
            return fail(400, "invalid_grant", "Invalid JWT: could not be parsed.");
        };
        let public = aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, &self.account.public_key);
        let signed = format!("{}.{}", parts[0], parts[1]);
        let kid_ok = header.get("kid").and_then(Value::as_str).is_none_or(|kid| kid == self.account.key_id);
        if header["alg"] != "RS256" || !kid_ok || public.verify(signed.as_bytes(), &signature).is_err() {
            return fail(400, "invalid_grant", "Invalid JWT Signature.");
        }
        let claim = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or_default();
        if claim("iss") != self.account.client_email {
            return fail(400, "invalid_grant", "Invalid grant: account not found");
        }
        // The audience is the token endpoint as the client reached it.
        let reached = request.header("host").map(|h| format!("http://{h}/token"));
        if claim("aud") != self.account.token_uri && Some(claim("aud")) != reached.as_deref() {
            return fail(400, "invalid_grant", "Invalid JWT: Failed audience check.");
        }
        let now = jiff::Timestamp::now().as_second();
        let (iat, exp) = (claims["iat"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0));
        if exp <= now || iat > now + 300 || exp - iat > 3600 {
            return fail(
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
            );
        }
        if claim("sub").rsplit_once('@').is_none_or(|(_, domain)| domain != DOMAIN) {
            return fail(400, "invalid_grant", "Invalid email or User ID");
        }
        let scopes: Vec<String> = claim("scope").split_whitespace().map(String::from).collect();
        if scopes.is_empty() || scopes.iter().any(|s| !DELEGATED_SCOPES.contains(&s.as_str())) {
            return fail(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
            );
        }
        let token = format!("ya29.{}", std::iter::repeat_with(fastrand::alphanumeric).take(60).collect::<String>());
        state.tokens.insert(token.clone(), (now + 3599, scopes));
        SimResponse::json(200, &json!({ "access_token": token, "expires_in": 3599, "token_type": "Bearer" }))
    }

    fn user_json(user: &User) -> Value {
        let (given, family) = user.email.split_once('@').map(|(local, _)| (local.to_string(), "Example".to_string())).unwrap_or_default();
        json!({
            "kind": "admin#directory#user",
            "id": user.id,
            "etag": format!("\"{}\"", &user.id[..8]),
            "primaryEmail": user.email,
            "name": { "givenName": given, "familyName": family, "fullName": format!("{given} {family}") },
            "isAdmin": false,
            "isDelegatedAdmin": false,
            "lastLoginTime": rfc3339(user.last_login.unwrap_or(jiff::Timestamp::UNIX_EPOCH)),
            "creationTime": rfc3339(user.created),
            "agreedToTerms": true,
            "suspended": user.suspended,
            "archived": false,
            "changePasswordAtNextLogin": false,
            "ipWhitelisted": false,
            "emails": [{ "address": user.email, "primary": true }],
            // The user's own address outside the domain, for account recovery (users resource,
            // recoveryEmail: developers.google.com/admin-sdk/directory/reference/rest/v1/users).
            "recoveryEmail": format!("{}@home.example", user.email.split('@').next().unwrap_or_default()),
            "customerId": CUSTOMER_ID,
            "orgUnitPath": "/",
            "isMailboxSetup": true,
            "isEnrolledIn2Sv": user.two_sv.is_some(),
            "isEnforcedIn2Sv": false,
            "includeInGlobalAddressList": true,
        })
    }

    fn api(&self, request: &SimRequest, state: &mut State) -> SimResponse {
        let segments = request.segments();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = &request.method;
        match segments.as_slice() {
            ["admin", "directory", "v1", "users"] if method == Method::GET => list_users(request, state),
            ["admin", "directory", "v1", "users", key, rest @ ..] => {
                let Some(i) = state.find(key) else { return not_found("userKey") };
                user_call(request, state, i, rest)
            }
            ["admin", "directory", "v1", "groups", key, "members"] if method == Method::GET => list_members(request, state, key),
            ["admin", "reports", "v1", "activity", "users", key, "applications", application] if method == Method::GET => {
                let visible_until = jiff::Timestamp::now() - *self.reports_lag.lock().unwrap();
                login_activities(request, state, key, application, visible_until)
            }
            _ => google_error(404, "Not Found", "notFound", "NOT_FOUND"),
        }
    }
}

/// The scopes that allow a request (any one of them).
fn required_scopes(request: &SimRequest) -> &'static [&'static str] {
    let path = request.path.as_str();
    if path.starts_with("/admin/reports/") {
        &[SCOPE_REPORTS]
    } else if path.contains("/groups/") {
        &[SCOPE_GROUP_READONLY]
    } else if ["/asps", "/tokens", "/verificationCodes", "/twoStepVerification/", "/signOut"].iter().any(|p| path.contains(p)) {
        &[SCOPE_USER_SECURITY]
    } else if request.method == Method::GET {
        &[SCOPE_USER_READONLY, SCOPE_USER]
    } else {
        &[SCOPE_USER]
    }
}

/// Google's error envelope.
fn google_error(code: u16, message: &str, reason: &str, status: &str) -> SimResponse {
    SimResponse::json(
        code,
        &json!({ "error": { "code": code, "message": message, "errors": [{ "message": message, "domain": "global", "reason": reason }], "status": status } }),
    )
}

fn not_found(what: &str) -> SimResponse {
    google_error(404, &format!("Resource Not Found: {what}"), "notFound", "NOT_FOUND")
}

/// Page tokens are opaque to clients; here they carry the offset.
fn page_token(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("o{offset}"))
}

fn page_offset(request: &SimRequest) -> Result<usize, SimResponse> {
    let Some(token) = request.query("pageToken").filter(|t| !t.is_empty()) else { return Ok(0) };
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix('o').and_then(|n| n.parse().ok()))
        .ok_or_else(|| google_error(400, "Invalid Input: pageToken", "invalid", "INVALID_ARGUMENT"))
}

fn max_results(request: &SimRequest, cap: usize) -> usize {
    request.query("maxResults").and_then(|m| m.parse::<usize>().ok()).unwrap_or(100).clamp(1, cap)
}

fn list_users(request: &SimRequest, state: &State) -> SimResponse {
    match (request.query("customer"), request.query("domain")) {
        (Some("my_customer") | Some(CUSTOMER_ID), _) | (None, Some(DOMAIN)) => {}
        (None, None) => return google_error(400, "Bad Request", "badRequest", "INVALID_ARGUMENT"),
        _ => return google_error(404, "Domain not found.", "notFound", "NOT_FOUND"),
    }
    let offset = match page_offset(request) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let size = max_results(request, USERS_MAX_RESULTS);
    let page: Vec<Value> = state.users.iter().skip(offset).take(size).map(Google::user_json).collect();
    let mut body = json!({ "kind": "admin#directory#users", "etag": "\"users\"", "users": page });
    if offset + size < state.users.len() {
        body["nextPageToken"] = json!(page_token(offset + size));
    }
    SimResponse::json(200, &body)
}

/// A group's members: its users and the groups in it (`type` GROUP); with
/// `includeDerivedMembership=true` ("Whether to list indirect memberships. Default: false",
/// developers.google.com/admin-sdk/directory/reference/rest/v1/members/list), also every user of
/// the groups nested in it, at any depth.
fn list_members(request: &SimRequest, state: &State, key: &str) -> SimResponse {
    let key = key.to_lowercase();
    let Some(direct) = state.groups.get(&key) else { return not_found("groupKey") };
    let offset = match page_offset(request) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let user = |i: usize| {
        let u = &state.users[i];
        json!({ "kind": "admin#directory#member", "etag": "\"m\"", "id": u.id, "email": u.email, "role": "MEMBER", "type": "USER", "status": "ACTIVE" })
    };
    let group = |email: &String| json!({ "kind": "admin#directory#member", "etag": "\"m\"", "id": format!("g-{email}"), "email": email, "role": "MEMBER", "type": "GROUP", "status": "ACTIVE" });
    let mut members: Vec<Value> = direct.iter().map(|&i| user(i)).collect();
    let children = state.subgroups.get(&key).cloned().unwrap_or_default();
    members.extend(children.iter().map(group));
    if request.query("includeDerivedMembership") == Some("true") {
        let mut seen: std::collections::HashSet<usize> = direct.iter().copied().collect();
        let (mut pending, mut visited) = (children, std::collections::HashSet::new());
        while let Some(child) = pending.pop() {
            if !visited.insert(child.clone()) {
                continue;
            }
            for &i in state.groups.get(&child).into_iter().flatten() {
                if seen.insert(i) {
                    members.push(user(i));
                }
            }
            pending.extend(state.subgroups.get(&child).cloned().unwrap_or_default());
        }
    }
    let size = max_results(request, MEMBERS_MAX_RESULTS);
    let page: Vec<Value> = members.iter().skip(offset).take(size).cloned().collect();
    let mut body = json!({ "kind": "admin#directory#members", "etag": "\"members\"", "members": page });
    if offset + size < members.len() {
        body["nextPageToken"] = json!(page_token(offset + size));
    }
    SimResponse::json(200, &body)
}

/// `/users/{key}` and what hangs below it.
fn user_call(request: &SimRequest, state: &mut State, i: usize, rest: &[&str]) -> SimResponse {
    let method = request.method.as_str();
    let user_id = state.users[i].id.clone();
    match (method, rest) {
        ("GET", []) => SimResponse::json(200, &Google::user_json(&state.users[i])),
        ("PUT" | "PATCH", []) => {
            let body = request.json().unwrap_or(Value::Null);
            if let Some(suspended) = body.get("suspended").and_then(Value::as_bool) {
                state.users[i].suspended = suspended;
            }
            SimResponse::json(200, &Google::user_json(&state.users[i]))
        }
        ("POST", ["signOut"]) => {
            state.users[i].signed_in = false;
            SimResponse::empty(204)
        }
        ("GET", ["asps"]) => {
            let items: Vec<Value> = state.users[i]
                .asps
                .iter()
                .map(|a| {
                    json!({
                        "kind": "admin#directory#asp", "etag": "\"asp\"", "codeId": a.code_id, "name": a.name,
                        "creationTime": a.created.as_millisecond().to_string(),
                        "lastTimeUsed": a.last_used.map(|t| t.as_millisecond()).unwrap_or(0).to_string(),
                        "userKey": user_id,
                    })
                })
                .collect();
            SimResponse::json(200, &json!({ "kind": "admin#directory#asps", "etag": "\"asps\"", "items": items }))
        }
        ("DELETE", ["asps", code_id]) => {
            let asps = &mut state.users[i].asps;
            match asps.iter().position(|a| code_id.parse() == Ok(a.code_id)) {
                Some(at) => {
                    asps.remove(at);
                    SimResponse::empty(204)
                }
                None => not_found("codeId"),
            }
        }
        ("GET", ["tokens"]) => {
            let items: Vec<Value> = state.users[i]
                .grants
                .iter()
                .map(|g| {
                    json!({
                        "kind": "admin#directory#token", "etag": "\"token\"", "clientId": g.client_id, "displayText": g.display_text,
                        "anonymous": false, "nativeApp": false, "userKey": user_id,
                        "scopes": ["https://www.googleapis.com/auth/userinfo.email", "openid"],
                    })
                })
                .collect();
            SimResponse::json(200, &json!({ "kind": "admin#directory#tokenList", "etag": "\"tokens\"", "items": items }))
        }
        ("DELETE", ["tokens", client_id]) => {
            let grants = &mut state.users[i].grants;
            match grants.iter().position(|g| g.client_id == *client_id) {
                Some(at) => {
                    grants.remove(at);
                    SimResponse::empty(204)
                }
                None => not_found("clientId"),
            }
        }
        ("GET", ["verificationCodes"]) => {
            let items: Vec<Value> = state.users[i]
                .backup_codes
                .iter()
                .flat_map(BackupCodes::codes)
                .map(|code| json!({ "kind": "admin#directory#verificationCode", "etag": "\"code\"", "userId": user_id, "verificationCode": code }))
                .collect();
            SimResponse::json(200, &json!({ "kind": "admin#directory#verificationCodesList", "etag": "\"codes\"", "items": items }))
        }
        ("POST", ["verificationCodes", "invalidate"]) => {
            state.users[i].backup_codes = None;
            SimResponse::empty(204)
        }
        ("POST", ["verificationCodes", "generate"]) => {
            state.users[i].backup_codes = Some(BackupCodes::fresh(jiff::Timestamp::now()));
            SimResponse::empty(204)
        }
        ("POST", ["twoStepVerification", "turnOff"]) => {
            let user = &mut state.users[i];
            if user.two_sv.is_none() {
                return google_error(400, "2-Step Verification is not enabled for this user.", "failedPrecondition", "FAILED_PRECONDITION");
            }
            // The whole enrollment goes, with what lives inside it: backup codes and app passwords.
            user.two_sv = None;
            user.backup_codes = None;
            user.asps.clear();
            SimResponse::empty(204)
        }
        _ => google_error(404, "Not Found", "notFound", "NOT_FOUND"),
    }
}

/// Reports API login activities of one user (or `all`), newest first, paged by `pageToken`; what
/// is later than the lag allows is not there yet, and nothing older than the report's reach.
fn login_activities(request: &SimRequest, state: &State, key: &str, application: &str, visible_until: jiff::Timestamp) -> SimResponse {
    if application != "login" {
        return google_error(400, "Bad Request", "badRequest", "INVALID_ARGUMENT");
    }
    let user = match key {
        "all" => None,
        key => match state.find(key) {
            Some(i) => Some(i),
            None => return google_error(400, "Bad Request", "badRequest", "INVALID_ARGUMENT"),
        },
    };
    let bound = |name: &str| -> Result<Option<jiff::Timestamp>, SimResponse> {
        match request.query(name) {
            None => Ok(None),
            Some(t) => t.parse().map(Some).map_err(|_| google_error(400, &format!("Invalid value '{t}'. Values must match the following regular expression: '(\\d\\d\\d\\d)-(\\d\\d)-(\\d\\d)T(\\d\\d):(\\d\\d):(\\d\\d)(?:\\.(\\d+))?(?:(Z)|([-+])(\\d\\d):(\\d\\d))'"), "invalid", "INVALID_ARGUMENT")),
        }
    };
    let (start, end) = match (bound("startTime"), bound("endTime")) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return google_error(400, "Start time must be less than or equal to the end time.", "invalid", "INVALID_ARGUMENT");
    }
    let max = match request.query("maxResults").map(str::parse::<usize>) {
        None => ACTIVITIES_MAX_RESULTS,
        Some(Ok(n)) if (1..=ACTIVITIES_MAX_RESULTS).contains(&n) => n,
        Some(_) => return google_error(400, "Invalid value for maxResults", "invalid", "INVALID_ARGUMENT"),
    };
    let offset = match page_offset(request) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let wanted: Option<Vec<&str>> = request.query("eventName").map(|w| w.split(',').map(str::trim).collect());
    let reach = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * REPORT_DAYS);
    let candidates: Box<dyn Iterator<Item = usize>> = match user {
        Some(i) => Box::new(state.users[i].events.iter().copied()),
        None => Box::new(0..state.events.len()),
    };
    let mut matching: Vec<&LoginEvent> = candidates
        .map(|e| &state.events[e])
        .filter(|e| e.time <= visible_until && e.time >= reach)
        .filter(|e| start.is_none_or(|s| e.time >= s) && end.is_none_or(|end| e.time < end))
        .filter(|e| wanted.as_ref().is_none_or(|w| w.contains(&e.name)))
        .collect();
    matching.sort_by_key(|e| std::cmp::Reverse((e.time, e.unique_qualifier)));
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(max)
        .map(|e| {
            let place = place_of(&e.ip);
            let kind = match e.name {
                "2sv_enroll" | "2sv_disable" => "2sv_change",
                "recovery_phone_edit" => "recovery_info_change",
                _ => "login",
            };
            json!({
                "kind": "admin#reports#activity",
                "id": { "time": rfc3339(e.time), "uniqueQualifier": e.unique_qualifier.to_string(), "applicationName": "login", "customerId": CUSTOMER_ID },
                "etag": "\"activity\"",
                "actor": { "email": state.users[e.user].email, "profileId": state.users[e.user].id },
                "ipAddress": e.ip,
                "networkInfo": { "ipAsn": [place.asn], "regionCode": place.country_code, "subdivisionCode": format!("{}-{}", place.country_code, &place.region[..2].to_uppercase()) },
                "events": [{ "type": kind, "name": e.name, "parameters": e.parameters }],
            })
        })
        .collect();
    let mut body = json!({ "kind": "admin#reports#activities", "etag": "\"activities\"" });
    if !page.is_empty() {
        body["items"] = json!(page);
    }
    if matching.len() > offset + max {
        body["nextPageToken"] = json!(page_token(offset + max));
    }
    SimResponse::json(200, &body)
}

/// Appends a login activity about user `i`.
fn log_event(state: &mut State, i: usize, time: jiff::Timestamp, ip: &str, name: &'static str, parameters: Vec<Value>) {
    let event = state.events.len();
    state.events.push(LoginEvent { user: i, time, unique_qualifier: -(fastrand::i64(1..i64::MAX)), ip: ip.to_string(), name, parameters });
    state.users[i].events.push(event);
}

impl Provider for Google {
    fn name(&self) -> &'static str {
        "google"
    }

    fn bucket(&self, request: &SimRequest) -> &'static str {
        if request.path == "/token" {
            "token"
        } else if request.path.starts_with("/admin/reports/") {
            "reports"
        } else {
            "directory"
        }
    }

    fn handle(&self, request: &SimRequest) -> SimResponse {
        let mut state = self.state.lock().unwrap();
        if request.path == "/token" && request.method == Method::POST {
            return self.token(request, &mut state);
        }
        let now = jiff::Timestamp::now().as_second();
        let granted = request.authorization("Bearer").and_then(|t| state.tokens.get(t)).filter(|(expires, _)| *expires > now).map(|(_, scopes)| scopes);
        let Some(granted) = granted else {
            let mut response = SimResponse::json(
                401,
                &json!({ "error": {
                    "code": 401,
                    "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
                    "errors": [{ "message": "Invalid Credentials", "domain": "global", "reason": "authError", "location": "Authorization", "locationType": "header" }],
                    "status": "UNAUTHENTICATED",
                } }),
            );
            response.headers.push(("www-authenticate".into(), "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"".into()));
            return response;
        };
        if !required_scopes(request).iter().any(|s| granted.iter().any(|g| g == s)) {
            return google_error(403, "Request had insufficient authentication scopes.", "insufficientPermissions", "PERMISSION_DENIED");
        }
        self.api(request, &mut state)
    }

    fn throttled(&self, _reset: i64) -> SimResponse {
        SimResponse::json(
            403,
            &json!({ "error": {
                "code": 403,
                "message": "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' of service 'admin.googleapis.com'.",
                "errors": [{ "message": "Quota exceeded for quota metric 'Queries'.", "domain": "usageLimits", "reason": "userRateLimitExceeded" }],
                "status": "PERMISSION_DENIED",
            } }),
        )
    }

    fn seed(&self, seed: &Seed) {
        let created = seed.factor_created();
        let two_sv = seed.factors.iter().any(|k| is_second_step(*k));
        let codes = seed.factors.contains(&FactorKind::RecoveryCodes);
        let mut state = State::default();
        let mut groups: BTreeMap<String, Vec<usize>> = seed.groups.iter().map(|g| (format!("{}@{DOMAIN}", g.name.to_lowercase()), Vec::new())).collect();
        state.users.reserve(seed.users as usize);
        for i in 0..seed.users {
            let index = i as usize;
            let email = username(i);
            let id = format!("1{:020}", fastrand::u64(..));
            let asps = if two_sv || seed.factors.contains(&FactorKind::AppPassword) {
                state.next_code_id += 1;
                vec![Asp { code_id: state.next_code_id, name: "Mail client", created, last_used: None }]
            } else {
                Vec::new()
            };
            let grants = (0..seed.sessions as usize)
                .map(|s| {
                    let (client, name) = CLIENTS[s % CLIENTS.len()];
                    OAuthGrant { client_id: if s < CLIENTS.len() { client.to_string() } else { format!("{s}{client}") }, display_text: name.to_string() }
                })
                .collect();
            state.users.push(User {
                id: id.clone(),
                email: email.clone(),
                suspended: false,
                created,
                last_login: (seed.sessions > 0).then(|| jiff::Timestamp::now() - jiff::SignedDuration::from_mins(30)),
                two_sv: two_sv.then(|| (new_id("2sv-"), created)),
                backup_codes: codes.then(|| BackupCodes::fresh(created)),
                asps,
                grants,
                signed_in: seed.sessions > 0,
                events: Vec::new(),
            });
            state.by_email.insert(email, index);
            state.by_id.insert(id, index);
            for group in seed.groups_of(i) {
                groups.get_mut(&format!("{}@{DOMAIN}", group.to_lowercase())).expect("declared above").push(index);
            }
        }
        state.groups = groups;
        for g in &seed.groups {
            if let Some(parent) = &g.parent {
                let key = |name: &str| format!("{}@{DOMAIN}", name.to_lowercase());
                state.subgroups.entry(key(parent)).or_default().push(key(&g.name));
            }
        }
        let mut current = self.state.lock().unwrap();
        // Access tokens outlive a reseed, as they would outlive a change of directory data.
        state.tokens = std::mem::take(&mut current.tokens);
        *current = state;
    }

    fn census(&self, cutoff: Option<jiff::Timestamp>) -> Census {
        let state = self.state.lock().unwrap();
        let mut census = Census::default();
        for user in &state.users {
            census.count(&view(user), cutoff);
        }
        census
    }

    fn user(&self, username: &str) -> Option<UserView> {
        let state = self.state.lock().unwrap();
        state.find(username).map(|i| view(&state.users[i]))
    }

    fn set_log_delay(&self, delay: std::time::Duration) {
        *self.reports_lag.lock().unwrap() = delay;
    }

    fn enroll(&self, username: &str, kind: FactorKind, from_ip: &str) -> Option<String> {
        self.act(username, &Activity::new(Act::Enroll { factor: kind }, from_ip)).ok().flatten()
    }

    /// A backup code is asked for at sign-in only while 2-Step Verification is on, and is good once
    /// (support.google.com/accounts/answer/1187538: "each backup code can be used only once");
    /// verificationCodes.list returns "the current set of valid backup verification codes"
    /// (developers.google.com/admin-sdk/directory/reference/rest/v1/verificationCodes/list).
    fn sign_in_with_bypass(&self, username: &str, code: &str) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        let i = state.find(username).ok_or("no such user")?;
        let user = &mut state.users[i];
        if user.two_sv.is_none() {
            return Err("2-Step Verification is off for this user: the sign-in asks for no backup code".into());
        }
        let codes = user.backup_codes.as_mut().filter(|b| b.codes().iter().any(|c| c == code)).ok_or("Wrong code. Try again.")?;
        codes.used.push(code.to_string());
        Ok(())
    }

    fn act(&self, username: &str, activity: &Activity) -> Result<Option<String>, String> {
        let mut state = self.state.lock().unwrap();
        let i = state.find(username).ok_or("no such user")?;
        let at = activity.at();
        let ip = activity.ip.as_str();
        let login_type = json!({ "name": "login_type", "value": "google_password" });
        match activity.what {
            // Only the user enrolls in 2-Step Verification; an administrator cannot do it for them.
            Act::Enroll { .. } if activity.by_admin.is_some() => Err("Google's login audit shows 2-Step Verification enrollment by the user only: an administrator cannot enroll a user".into()),
            Act::Enroll { factor: FactorKind::RecoveryCodes } => {
                let codes = BackupCodes::fresh(at);
                let id = codes.id.clone();
                state.users[i].backup_codes = Some(codes);
                Ok(Some(id))
            }
            Act::Enroll { factor: FactorKind::AppPassword } => {
                state.users[i].two_sv.as_ref().ok_or("app passwords need 2-Step Verification")?;
                state.next_code_id += 1;
                let code_id = state.next_code_id;
                state.users[i].asps.push(Asp { code_id, name: "New device", created: at, last_used: None });
                Ok(Some(code_id.to_string()))
            }
            // Any second step: the user (re-)enrolls in 2SV, which Reports logs as `2sv_enroll`.
            Act::Enroll { .. } => {
                let id = new_id("2sv-");
                state.users[i].two_sv = Some((id.clone(), at));
                log_event(&mut state, i, at, ip, "2sv_enroll", Vec::new());
                Ok(Some(id))
            }
            Act::SignIn | Act::RiskySignIn => {
                let suspicious = activity.what == Act::RiskySignIn;
                let parameters = vec![
                    login_type,
                    json!({ "name": "login_challenge_method", "multiValue": ["password", "google_prompt"] }),
                    json!({ "name": "is_second_factor", "boolValue": false }),
                    json!({ "name": "is_suspicious", "boolValue": suspicious }),
                ];
                state.users[i].last_login = Some(at);
                log_event(&mut state, i, at, ip, "login_success", parameters);
                Ok(None)
            }
            // A Google prompt the user said no to: a failed login challenge by that method.
            Act::PushDenied => {
                let parameters = vec![
                    login_type,
                    json!({ "name": "login_challenge_method", "value": "google_prompt" }),
                    json!({ "name": "login_challenge_status", "value": "Challenge Failed" }),
                ];
                log_event(&mut state, i, at, ip, "login_challenge", parameters);
                Ok(None)
            }
            Act::FraudReported => Err("Google's login audit has no event for a user reporting a sign-in as not theirs".into()),
            Act::BypassIssued => Err("backup codes an administrator generates are not in the login audit".into()),
            // A new recovery phone is `recovery_phone_edit` (type recovery_info_change); turning
            // 2-Step Verification off is `2sv_disable` (type 2sv_change). Neither has parameters.
            Act::SecondStepWeakened if activity.device.is_some() => {
                log_event(&mut state, i, at, ip, "recovery_phone_edit", Vec::new());
                Ok(None)
            }
            Act::SecondStepWeakened => {
                state.users[i].two_sv.take().ok_or("2-Step Verification is already off")?;
                log_event(&mut state, i, at, ip, "2sv_disable", Vec::new());
                Ok(None)
            }
        }
    }
}

/// Kinds that are a second step inside Google's 2SV enrollment.
fn is_second_step(kind: FactorKind) -> bool {
    !matches!(kind, FactorKind::RecoveryCodes | FactorKind::AppPassword)
}

fn view(user: &User) -> UserView {
    let mut factors = Vec::new();
    if let Some((id, created)) = &user.two_sv {
        factors.push(FactorView { id: id.clone(), kind: FactorKind::TwoStepVerification, created: *created });
    }
    if let Some(codes) = &user.backup_codes {
        factors.push(FactorView { id: codes.id.clone(), kind: FactorKind::RecoveryCodes, created: codes.created });
    }
    for asp in &user.asps {
        factors.push(FactorView { id: asp.code_id.to_string(), kind: FactorKind::AppPassword, created: asp.created });
    }
    UserView {
        id: user.id.clone(),
        username: user.email.clone(),
        active: !user.suspended,
        factors,
        sessions: user.signed_in as u32,
        grants: user.grants.len() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_query;

    fn request(method: Method, path_and_query: &str, token: Option<&str>) -> SimRequest {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let mut headers = hyper::HeaderMap::new();
        if let Some(t) = token {
            headers.insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        SimRequest { method, path: path.into(), query: parse_query(query), headers, body: Default::default() }
    }

    fn simulator_with_token(scopes: &[&str]) -> (Google, String) {
        let key = json!({
            "private_key": crate::subject::generate_rsa_pem(), "client_email": "sa@p.iam.gserviceaccount.com",
            "private_key_id": "k1", "token_uri": "http://127.0.0.1:1/token",
        });
        let google = Google::new(&json!({ "service-account.json": key.to_string() })).unwrap();
        let token = "ya29.test".to_string();
        google.state.lock().unwrap().tokens.insert(token.clone(), (i64::MAX, scopes.iter().map(|s| s.to_string()).collect()));
        (google, token)
    }

    #[test]
    fn users_page_with_opaque_tokens_and_2sv_flags() {
        let (google, token) = simulator_with_token(&[SCOPE_USER_READONLY]);
        google.seed(&Seed { users: 3, ..Seed::default() });
        let first = google.handle(&request(Method::GET, "/admin/directory/v1/users?customer=my_customer&maxResults=2", Some(&token)));
        let body: Value = serde_json::from_slice(&first.body).unwrap();
        assert_eq!(body["users"].as_array().unwrap().len(), 2);
        assert_eq!(body["users"][0]["isEnrolledIn2Sv"], true);
        let next = body["nextPageToken"].as_str().unwrap();
        let second = google.handle(&request(Method::GET, &format!("/admin/directory/v1/users?customer=my_customer&maxResults=2&pageToken={next}"), Some(&token)));
        let body: Value = serde_json::from_slice(&second.body).unwrap();
        assert_eq!(body["users"][0]["primaryEmail"], username(2));
        assert!(body.get("nextPageToken").is_none());
    }

    #[test]
    fn a_missing_scope_is_403_and_a_bad_token_401() {
        let (google, token) = simulator_with_token(&[SCOPE_USER_READONLY]);
        google.seed(&Seed { users: 1, ..Seed::default() });
        let id = google.user(&username(0)).unwrap().id;
        let denied = google.handle(&request(Method::POST, &format!("/admin/directory/v1/users/{id}/signOut"), Some(&token)));
        assert_eq!(denied.status, 403);
        let refused = google.handle(&request(Method::GET, "/admin/directory/v1/users?customer=my_customer", Some("ya29.forged")));
        assert_eq!(refused.status, 401);
        assert_eq!(serde_json::from_slice::<Value>(&refused.body).unwrap()["error"]["status"], "UNAUTHENTICATED");
    }

    #[test]
    fn turn_off_wipes_the_enrollment_and_reports_log_re_enrollment() {
        let (google, token) = simulator_with_token(&[SCOPE_USER_SECURITY, SCOPE_REPORTS]);
        google.seed(&Seed { users: 1, ..Seed::default() });
        let id = google.user(&username(0)).unwrap().id;
        let turn_off = || google.handle(&request(Method::POST, &format!("/admin/directory/v1/users/{id}/twoStepVerification/turnOff"), Some(&token)));
        assert_eq!(turn_off().status, 204);
        assert!(google.user(&username(0)).unwrap().factors.is_empty());
        assert_eq!(turn_off().status, 400);
        google.enroll(&username(0), FactorKind::Totp, "203.0.113.5").unwrap();
        let reports = google.handle(&request(
            Method::GET,
            &format!("/admin/reports/v1/activity/users/{id}/applications/login?eventName=2sv_enroll&startTime=2020-01-01T00:00:00Z"),
            Some(&token),
        ));
        let body: Value = serde_json::from_slice(&reports.body).unwrap();
        assert_eq!(body["items"][0]["ipAddress"], "203.0.113.5");
        assert_eq!(body["items"][0]["events"][0]["name"], "2sv_enroll");
    }

    fn activities(google: &Google, token: &str, query: &str) -> (Vec<Value>, Option<String>) {
        let reply = google.handle(&request(Method::GET, &format!("/admin/reports/v1/activity/users/all/applications/login?{query}"), Some(token)));
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        (body["items"].as_array().cloned().unwrap_or_default(), body["nextPageToken"].as_str().map(String::from))
    }

    #[test]
    fn turning_2sv_off_takes_it_away_and_a_new_recovery_phone_leaves_it() {
        let (google, token) = simulator_with_token(&[SCOPE_REPORTS]);
        google.seed(&Seed { users: 1, ..Seed::default() });
        google.act(&username(0), &Activity::new(Act::Enroll { factor: FactorKind::Push }, "203.0.113.5")).unwrap();
        google.act(&username(0), &Activity { device: Some("+1 555 0100".into()), ..Activity::new(Act::SecondStepWeakened, "203.0.113.5") }).unwrap();
        assert!(google.state.lock().unwrap().users[0].two_sv.is_some());
        google.act(&username(0), &Activity::new(Act::SecondStepWeakened, "203.0.113.5")).unwrap();
        assert!(google.state.lock().unwrap().users[0].two_sv.is_none());
        assert!(google.act(&username(0), &Activity::new(Act::SecondStepWeakened, "203.0.113.5")).is_err(), "2SV is already off");
        let (all, _) = activities(&google, &token, "startTime=2020-01-01T00:00:00Z&eventName=2sv_disable,recovery_phone_edit");
        let kinds: Vec<(&str, &str)> = all.iter().map(|a| (a["events"][0]["type"].as_str().unwrap(), a["events"][0]["name"].as_str().unwrap())).collect();
        assert_eq!(kinds, [("2sv_change", "2sv_disable"), ("recovery_info_change", "recovery_phone_edit")]);
    }

    #[test]
    fn the_login_audit_shows_what_people_did_for_everyone_newest_first_and_late() {
        let (google, token) = simulator_with_token(&[SCOPE_REPORTS]);
        google.seed(&Seed { users: 3, ..Seed::default() });
        let earlier = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(30);
        google.act(&username(0), &Activity { at: Some(earlier), ..Activity::new(Act::SignIn, "192.0.2.8") }).unwrap();
        google.act(&username(1), &Activity::new(Act::RiskySignIn, "100.64.1.1")).unwrap();
        google.act(&username(1), &Activity::new(Act::PushDenied, "100.64.1.1")).unwrap();
        google.act(&username(2), &Activity::new(Act::Enroll { factor: FactorKind::Push }, "203.0.113.5")).unwrap();
        assert!(google.act(&username(2), &Activity { by_admin: Some("admin@example.com".into()), ..Activity::new(Act::Enroll { factor: FactorKind::Totp }, "203.0.113.5") }).is_err());
        assert!(google.act(&username(2), &Activity::new(Act::FraudReported, "203.0.113.5")).is_err());

        let (all, next) = activities(&google, &token, "startTime=2020-01-01T00:00:00Z");
        assert!(next.is_none());
        let names: Vec<&str> = all.iter().map(|a| a["events"][0]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["2sv_enroll", "login_challenge", "login_success", "login_success"], "newest first");
        assert_eq!(all[3]["networkInfo"]["regionCode"], "DE");
        assert_eq!(all[3]["actor"]["email"], username(0));
        let suspicious = all[2]["events"][0]["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "is_suspicious").unwrap();
        assert_eq!(suspicious["boolValue"], true);
        let status = all[1]["events"][0]["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "login_challenge_status").unwrap();
        assert_eq!(status["value"], "Challenge Failed");

        // A comma list of event names, one page at a time.
        let (first, next) = activities(&google, &token, "eventName=login_success,2sv_enroll&maxResults=2");
        assert_eq!(first.len(), 2);
        let (rest, last) = activities(&google, &token, &format!("eventName=login_success,2sv_enroll&maxResults=2&pageToken={}", next.unwrap()));
        assert_eq!((rest.len(), last), (1, None));
        assert_eq!(rest[0]["events"][0]["name"], "login_success");
        // Bounded in time, and late: what happened in the last minute is not there yet.
        let (before, _) = activities(&google, &token, &format!("endTime={}", rfc3339(earlier + jiff::SignedDuration::from_secs(1))));
        assert_eq!(before.len(), 1);
        google.set_log_delay(std::time::Duration::from_secs(60));
        assert_eq!(activities(&google, &token, "").0.len(), 1);
        let bad = google.handle(&request(Method::GET, "/admin/reports/v1/activity/users/all/applications/login?maxResults=1001", Some(&token)));
        assert_eq!(bad.status, 400);
    }
}
