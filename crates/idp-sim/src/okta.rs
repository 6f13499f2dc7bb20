//! Okta Management API (`/api/v1`) as documented, for the paths a recall uses: users (Link
//! paging, lookup by id or login, lifecycle), groups, factors and Identity Engine authenticator
//! enrollments, sessions, OAuth grants and refresh tokens, and the System Log. Authentication is
//! `SSWS {api token}` or an OAuth service app (`private_key_jwt` at `/oauth2/v1/token`, scoped).
//!
//! Quirks reproduced:
//! - `GET /factors` is filtered by the enrollment policy: Okta FastPass (`signed_nonce`) is not a
//!   Classic factor and only shows in `GET /authenticator-enrollments`; Classic-only third-party
//!   factors (`token`, `web`) only show in `/factors`. Same ids in both lists.
//! - Deleting a `push` or `signed_nonce` factor removes every Okta Verify factor on that device
//!   (same `profile.deviceToken`); a later delete of one of them answers 404 E0000007.
//! - `POST /lifecycle/reset_factors` removes every factor whatever its age (it exists; a recall
//!   must never call it).
//! - `GET /users` without a filter leaves out DEPROVISIONED users.
//! - Every answer carries `X-Rate-Limit-*` for its bucket (users, groups, logs, token); 429 E0000047 beyond.
//!
//! Sources, each rule from the Okta Management API reference page named (developer.okta.com):
//! Link paging and DEPROVISIONED users left out without a filter, "Users: List all users";
//! Classic factors, "User Factors"; authenticator enrollments, "User Authenticator Enrollments";
//! sessions, grants and refresh tokens, "User Sessions", "User Grants", "User OAuth 2.0 Token
//! Management"; `X-Rate-Limit-*` and 429 E0000047, "Rate limits"; 404 E0000007, "Error codes";
//! the System Log, "System Log"; `private_key_jwt`, "Implement OAuth for Okta with a service app".
//!
//! Okta has no API that lists a user's sign-in sessions or remembered devices: the simulator keeps
//! them (they count in the census) but only `DELETE /users/{id}/sessions` reaches them.
//!
//! Seeding (`Seed.factors`, in Okta's own types): Totp → Google Authenticator
//! `token:software:totp`; Webauthn → `webauthn`; Passkey → FastPass `signed_nonce`; Push → Okta
//! Verify `push`; Sms, Email, SecurityQuestion, Hotp, HardwareToken → `sms`, `email`, `question`,
//! `token:hotp`, `token:hardware`. Okta has no recovery codes: RecoveryCodes seeds what stands in
//! for "a second way in on a phone", an Okta Verify enrollment with `push` and FastPass
//! `signed_nonce` on one device, so every seeded user exercises the cascade and the policy filter.
//! Each seeded session is an Okta session plus a refresh token of the "Corporate Portal" OIDC app,
//! whose consent is one grant.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::{Census, FactorView, Provider, Seed, SimRequest, SimResponse, UserView, new_id, rfc3339};
use crate::{Act, Activity, FactorKind, place_of};

/// Users per page unless `limit` says less; Okta's maximum for `/users`.
const USERS_PAGE_MAX: usize = 200;
const MEMBERS_PAGE_MAX: usize = 1000;
const LOGS_PAGE_MAX: usize = 1000;
const PORTAL_CLIENT: &str = "0oaportal0000000000x7";
/// Scopes a service app may be granted for what a recall does.
const KNOWN_SCOPES: [&str; 5] = ["okta.users.read", "okta.users.manage", "okta.groups.read", "okta.logs.read", "okta.groups.manage"];

/// Factor types the enrollment policy leaves out of `GET /factors`.
const HIDDEN_FROM_FACTORS: [&str; 1] = ["signed_nonce"];
/// Classic-only factor types that are no Identity Engine authenticator.
const HIDDEN_FROM_ENROLLMENTS: [&str; 2] = ["token", "web"];

struct Factor {
    id: String,
    factor_type: &'static str,
    provider: &'static str,
    created: Timestamp,
    /// The Okta Verify device (`profile.deviceToken`); deleting push or signed_nonce removes all of its factors.
    device: Option<String>,
}

struct User {
    id: String,
    login: String,
    status: &'static str,
    created: Timestamp,
    factors: Vec<Factor>,
    sessions: u32,
    refresh_tokens: Vec<(String, Timestamp)>,
    grants: Vec<(String, Timestamp)>,
    remembered_devices: u32,
}

struct Group {
    id: String,
    name: String,
    created: Timestamp,
    /// Indexes into `State::users`, ascending.
    members: Vec<usize>,
}

/// One System Log entry, kept compact (a million-user recall writes millions) and rendered as
/// Okta's JSON when listed.
struct LogEvent {
    uuid: u128,
    published: Timestamp,
    event_type: &'static str,
    /// The user the event is about (its first target; its actor unless `by_admin`).
    user: usize,
    /// The factor the event is about, and its type; None for sign-ins and reports.
    factor: Option<(String, &'static str)>,
    /// Client IP and user agent of a person's own action; None for an admin API call.
    from: Option<(String, String)>,
    /// The administrator who acted for the user (their login), or `system@okta.com`.
    by_admin: Option<String>,
    /// The Okta Verify device of an enrollment or a push.
    device: Option<String>,
    /// `outcome.result`: SUCCESS, FAILURE, DENY.
    result: &'static str,
}

#[derive(Default)]
struct State {
    users: Vec<User>,
    by_id: HashMap<String, usize>,
    by_login: HashMap<String, usize>,
    groups: Vec<Group>,
    logs: Vec<LogEvent>,
    /// Log entries by the user they are about.
    logs_by_user: HashMap<usize, Vec<usize>>,
    /// Access tokens the token endpoint issued: scopes and expiry.
    access_tokens: HashMap<String, (Vec<String>, Timestamp)>,
    /// Password-reset links mailed to users (`sendEmail=true`), by user.
    mailed: HashMap<usize, Vec<String>>,
}

/// A service app allowed to use `private_key_jwt`.
struct ServiceApp {
    client_id: String,
    public_key: Vec<u8>,
    key_id: Option<String>,
}

pub struct Okta {
    api_token: Option<String>,
    app: Option<ServiceApp>,
    state: Mutex<State>,
}

impl Okta {
    /// Accepts the keys of an Okta credentials Secret: `api-token`, and/or `client-id` with
    /// `private-key` (the simulator keeps only its public half) and optional `key-id`.
    pub fn new(credentials: &Value) -> Result<Self, String> {
        let key = |k: &str| credentials.get(k).and_then(Value::as_str).map(String::from);
        let app = match (key("client-id"), key("private-key")) {
            (Some(client_id), Some(pem)) => Some(ServiceApp { client_id, public_key: public_key_of(&pem)?, key_id: key("key-id") }),
            _ => None,
        };
        let api_token = key("api-token");
        if api_token.is_none() && app.is_none() {
            return Err("okta simulator: credentials need api-token, or client-id and private-key".into());
        }
        Ok(Self { api_token, app, state: Mutex::default() })
    }
}

/// The DER public key (PKCS #1) of a PEM RSA private key.
fn public_key_of(pem: &str) -> Result<Vec<u8>, String> {
    use aws_lc_rs::signature::KeyPair;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    let der = STANDARD.decode(body).map_err(|_| "okta simulator: private-key is not PEM".to_string())?;
    let pair = if pem.contains("BEGIN RSA PRIVATE KEY") {
        aws_lc_rs::signature::RsaKeyPair::from_der(&der)
    } else {
        aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&der)
    }
    .map_err(|e| format!("okta simulator: private-key is not an RSA key ({e})"))?;
    Ok(pair.public_key().as_ref().to_vec())
}

/// Okta's error body.
fn error(status: u16, code: &str, summary: &str) -> SimResponse {
    SimResponse::json(
        status,
        &json!({ "errorCode": code, "errorSummary": summary, "errorLink": code, "errorId": new_id("oae"), "errorCauses": [] }),
    )
}

fn not_found(what: &str, kind: &str) -> SimResponse {
    error(404, "E0000007", &format!("Not found: Resource not found: {what} ({kind})"))
}

fn invalid_token() -> SimResponse {
    error(401, "E0000011", "Invalid token provided")
}

fn forbidden() -> SimResponse {
    error(403, "E0000006", "You do not have permission to perform the requested action")
}

/// An Okta-style id: a three-letter prefix and 17 alphanumerics.
fn okta_id(prefix: &str) -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(20);
    id.push_str(prefix);
    // Two random words give 17 base-62 digits with one call each (seeding a million users is quick).
    let (mut high, mut low) = (fastrand::u64(..), fastrand::u64(..));
    for i in 0..17 {
        let word = if i < 9 { &mut high } else { &mut low };
        id.push(DIGITS[(*word % 62) as usize] as char);
        *word /= 62;
    }
    id
}

/// Factors of one seeded or enrolled `kind`, in Okta's types: (type, provider, device).
fn okta_factors(kind: FactorKind) -> Vec<(&'static str, &'static str, Option<String>)> {
    let device = || Some(okta_id("dvt"));
    match kind {
        FactorKind::Totp => vec![("token:software:totp", "GOOGLE", None)],
        FactorKind::Hotp => vec![("token:hotp", "CUSTOM", None)],
        FactorKind::Webauthn => vec![("webauthn", "FIDO", None)],
        FactorKind::HardwareToken => vec![("token:hardware", "YUBICO", None)],
        FactorKind::Passkey => vec![("signed_nonce", "OKTA", device())],
        FactorKind::Push => vec![("push", "OKTA", device())],
        FactorKind::Sms => vec![("sms", "OKTA", None)],
        FactorKind::Email => vec![("email", "OKTA", None)],
        FactorKind::SecurityQuestion => vec![("question", "OKTA", None)],
        FactorKind::RecoveryCodes => {
            let device = device();
            vec![("push", "OKTA", device.clone()), ("signed_nonce", "OKTA", device)]
        }
        FactorKind::AppPassword | FactorKind::TwoStepVerification => vec![],
    }
}

/// The census kind of an Okta factor type, by the seeding table above and Okta's "User Factors"
/// reference for the third-party Classic factors (`web`: Duo Security's push; `token`: RSA
/// SecurID and Symantec VIP codes).
fn census_kind(factor_type: &str) -> Option<FactorKind> {
    Some(match factor_type {
        "token:software:totp" => FactorKind::Totp,
        "token:hotp" => FactorKind::Hotp,
        "token:hardware" | "token" => FactorKind::HardwareToken,
        "webauthn" | "u2f" => FactorKind::Webauthn,
        "signed_nonce" => FactorKind::Passkey,
        "push" | "web" => FactorKind::Push,
        "sms" | "call" => FactorKind::Sms,
        "email" => FactorKind::Email,
        "question" => FactorKind::SecurityQuestion,
        _ => return None,
    })
}

fn id_prefix(factor_type: &str) -> &'static str {
    match factor_type {
        "token:software:totp" => "uft",
        "webauthn" | "u2f" => "fwf",
        "push" => "opf",
        "signed_nonce" => "crp",
        "sms" | "call" => "mbl",
        "email" => "emf",
        "question" => "ufs",
        _ => "ost",
    }
}

fn new_factor(kind_entry: (&'static str, &'static str, Option<String>), created: Timestamp) -> Factor {
    let (factor_type, provider, device) = kind_entry;
    Factor { id: okta_id(id_prefix(factor_type)), factor_type, provider, created, device }
}

fn vendor_name(f: &Factor) -> &'static str {
    match f.provider {
        "GOOGLE" => "GOOGLE",
        "FIDO" => "FIDO",
        "YUBICO" => "YUBICO",
        "CUSTOM" => "Custom HOTP",
        _ => "OKTA",
    }
}

fn factor_profile(user: &User, f: &Factor) -> Value {
    match f.factor_type {
        "push" | "signed_nonce" => json!({
            "credentialId": user.login, "deviceType": "SmartPhone_IPhone", "name": "iPhone 15",
            "platform": "IOS", "version": "17.4", "deviceToken": f.device,
        }),
        "webauthn" | "u2f" => json!({ "authenticatorName": "YubiKey 5 NFC", "credentialId": format!("cred-{}", &f.id[3..]) }),
        "sms" | "call" => json!({ "phoneNumber": "+1-555-0100" }),
        "email" => json!({ "email": user.login }),
        "question" => json!({ "question": "favorite_art_piece", "questionText": "What is your favorite piece of art?" }),
        "token:hardware" => json!({ "credentialId": "cccccceukngdfgkukfctkcvfidnetljjiknckkcjulji" }),
        _ => json!({ "credentialId": user.login }),
    }
}

fn factor_json(user: &User, f: &Factor) -> Value {
    json!({
        "id": f.id, "factorType": f.factor_type, "provider": f.provider, "vendorName": vendor_name(f),
        "status": "ACTIVE", "created": rfc3339(f.created), "lastUpdated": rfc3339(f.created),
        "profile": factor_profile(user, f),
        "_links": { "user": { "href": format!("/api/v1/users/{}", user.id) } },
    })
}

/// (type, key, name) of the Identity Engine authenticator a factor belongs to.
fn authenticator(f: &Factor) -> (&'static str, &'static str, &'static str) {
    match (f.factor_type, f.provider) {
        ("token:software:totp", "OKTA") | ("push", _) | ("signed_nonce", _) => ("app", "okta_verify", "Okta Verify"),
        ("token:software:totp", _) => ("app", "google_otp", "Google Authenticator"),
        ("token:hotp", _) => ("app", "custom_otp", "Custom OTP"),
        ("token:hardware", _) => ("security_key", "yubikey_token", "YubiKey"),
        ("webauthn", _) | ("u2f", _) => ("security_key", "webauthn", "Security Key or Biometric"),
        ("sms", _) | ("call", _) => ("phone", "phone_number", "Phone"),
        ("email", _) => ("email", "okta_email", "Email"),
        _ => ("security_question", "security_question", "Security Question"),
    }
}

fn enrollment_json(user: &User, f: &Factor) -> Value {
    let (type_, key, name) = authenticator(f);
    let profile = match key {
        "okta_verify" => json!({ "deviceToken": f.device, "deviceName": "iPhone 15", "methods": [f.factor_type.trim_start_matches("token:software:")] }),
        _ => factor_profile(user, f),
    };
    json!({
        "id": f.id, "type": type_, "key": key, "status": "ACTIVE", "name": name,
        "created": rfc3339(f.created), "lastUpdated": rfc3339(f.created), "profile": profile,
    })
}

fn user_json(u: &User) -> Value {
    let (first, last) = u.login.split_once('@').unwrap_or((&u.login, ""));
    json!({
        "id": u.id, "status": u.status, "created": rfc3339(u.created), "activated": rfc3339(u.created),
        "statusChanged": rfc3339(u.created), "lastLogin": null, "lastUpdated": rfc3339(u.created),
        "passwordChanged": rfc3339(u.created), "type": { "id": "oty1defaultusertype0" },
        "profile": { "firstName": first, "lastName": last, "mobilePhone": null, "secondEmail": null, "login": u.login, "email": u.login },
        "credentials": { "password": {}, "provider": { "type": "OKTA", "name": "OKTA" } },
        "_links": { "self": { "href": format!("/api/v1/users/{}", u.id) } },
    })
}

fn group_json(g: &Group) -> Value {
    json!({
        "id": g.id, "created": rfc3339(g.created), "lastUpdated": rfc3339(g.created), "lastMembershipUpdated": rfc3339(g.created),
        "objectClass": ["okta:user_group"], "type": "OKTA_GROUP", "profile": { "name": g.name, "description": null },
    })
}

/// Link header of one page: `self` and, when there is more, `next` with the `after` cursor.
fn link_header(base: &str, path: &str, limit: usize, extra: &str, after: Option<&str>, next: Option<&str>) -> String {
    let url = |after: Option<&str>| {
        let mut q = format!("limit={limit}{extra}");
        if let Some(a) = after {
            q.push_str(&format!("&after={}", crate::percent_encode(a)));
        }
        format!("<{base}{path}?{q}>")
    };
    let mut links = vec![format!("{}; rel=\"self\"", url(after))];
    if let Some(n) = next {
        links.push(format!("{}; rel=\"next\"", url(Some(n))));
    }
    links.join(", ")
}

fn page_limit(request: &SimRequest, default: usize, max: usize) -> usize {
    request.query("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(default).clamp(1, max)
}

/// Which scope a request needs when made with an OAuth access token.
fn required_scope(method: &str, path: &str) -> &'static str {
    match (method, path) {
        (_, p) if p.starts_with("/api/v1/logs") => "okta.logs.read",
        ("GET", p) if p.starts_with("/api/v1/groups") => "okta.groups.read",
        (_, p) if p.starts_with("/api/v1/groups") => "okta.groups.manage",
        ("GET", _) => "okta.users.read",
        _ => "okta.users.manage",
    }
}

impl Okta {
    fn base(request: &SimRequest) -> String {
        format!("http://{}", request.header("host").unwrap_or("127.0.0.1"))
    }

    /// `Ok(())` when the request carries a valid SSWS token or an access token with the needed scope.
    fn authenticate(&self, request: &SimRequest, state: &mut State) -> Result<(), SimResponse> {
        if let Some(token) = request.authorization("SSWS") {
            return if self.api_token.as_deref() == Some(token) { Ok(()) } else { Err(invalid_token()) };
        }
        let Some(token) = request.authorization("Bearer") else { return Err(invalid_token()) };
        let Some((scopes, expires)) = state.access_tokens.get(token) else { return Err(invalid_token()) };
        if *expires <= Timestamp::now() {
            state.access_tokens.remove(token);
            return Err(invalid_token());
        }
        let needed = required_scope(request.method.as_str(), &request.path);
        if !scopes.iter().any(|s| s == needed) {
            return Err(forbidden().with_header("WWW-Authenticate", format!("Bearer error=\"insufficient_scope\", scope=\"{needed}\"")));
        }
        Ok(())
    }

    /// `POST /oauth2/v1/token`: client credentials with a `private_key_jwt` client assertion.
    fn token(&self, request: &SimRequest, state: &mut State) -> SimResponse {
        let oauth_error = |status: u16, code: &str, description: &str| {
            SimResponse::json(status, &json!({ "error": code, "error_description": description }))
        };
        if request.form_value("grant_type").as_deref() != Some("client_credentials") {
            return oauth_error(400, "unsupported_grant_type", "The authorization grant type is not supported by the authorization server.");
        }
        let Some(app) = &self.app else { return oauth_error(401, "invalid_client", "Client authentication failed.") };
        if request.form_value("client_assertion_type").as_deref() != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
            return oauth_error(401, "invalid_client", "The client_assertion_type is invalid.");
        }
        let assertion = request.form_value("client_assertion").unwrap_or_default();
        let audience = format!("{}/oauth2/v1/token", Self::base(request));
        if let Err(why) = verify_assertion(app, &assertion, &audience) {
            return oauth_error(401, "invalid_client", why);
        }
        let scopes: Vec<String> = request.form_value("scope").unwrap_or_default().split_whitespace().map(String::from).collect();
        if scopes.is_empty() {
            return oauth_error(400, "invalid_scope", "The authorization server requires a scope for client credentials.");
        }
        if let Some(unknown) = scopes.iter().find(|s| !KNOWN_SCOPES.contains(&s.as_str())) {
            return oauth_error(400, "invalid_scope", &format!("The following scopes are not allowed: {unknown}"));
        }
        let access_token = format!("eyJ{}", std::iter::repeat_with(fastrand::alphanumeric).take(60).collect::<String>());
        state.access_tokens.insert(access_token.clone(), (scopes.clone(), Timestamp::now() + jiff::SignedDuration::from_secs(3600)));
        SimResponse::json(200, &json!({ "token_type": "Bearer", "expires_in": 3600, "access_token": access_token, "scope": scopes.join(" ") }))
    }

    fn route(&self, request: &SimRequest, state: &mut State) -> SimResponse {
        let segments = request.segments();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = request.method.as_str();
        match (method, segments.as_slice()) {
            ("GET", ["api", "v1", "users"]) => list_users(request, state),
            ("GET", ["api", "v1", "groups"]) => {
                let q = request.query("q").unwrap_or_default();
                let limit = page_limit(request, 10_000, 10_000);
                let found: Vec<Value> = state.groups.iter().filter(|g| g.name.starts_with(q)).take(limit).map(group_json).collect();
                SimResponse::json(200, &Value::Array(found))
            }
            ("GET", ["api", "v1", "groups", id, "users"]) => list_members(request, state, id),
            ("GET", ["api", "v1", "logs"]) => list_logs(request, state),
            (_, ["api", "v1", "users", who, rest @ ..]) => {
                // "ID of an existing Okta user, or login": the login as stored (the docs promise
                // no case folding here; `search` is the documented case-insensitive way).
                let Some(&index) = state.by_id.get(*who).or_else(|| state.by_login.get(*who)) else {
                    return not_found(who, "User");
                };
                user_route(request, state, index, method, rest)
            }
            _ => error(404, "E0000022", &format!("The endpoint does not support the provided HTTP method: {method} {}", request.path)),
        }
    }
}

/// Checks an RS256 client assertion: signature, `iss` = `sub` = client id, audience, expiry.
fn verify_assertion(app: &ServiceApp, assertion: &str, audience: &str) -> Result<(), &'static str> {
    let mut parts = assertion.split('.');
    let (Some(header), Some(claims), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("The client_assertion is not a valid JWT.");
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).ok();
    let header: Value = decode(header).and_then(|b| serde_json::from_slice(&b).ok()).ok_or("The client_assertion is not a valid JWT.")?;
    let claims: Value = decode(claims).and_then(|b| serde_json::from_slice(&b).ok()).ok_or("The client_assertion is not a valid JWT.")?;
    if header["alg"] != "RS256" {
        return Err("The client_assertion signature algorithm is not supported.");
    }
    if let Some(kid) = &app.key_id
        && header["kid"].as_str() != Some(kid)
    {
        return Err("The client_assertion kid does not match a registered key.");
    }
    let signed = &assertion[..assertion.rfind('.').unwrap_or(0)];
    let public = aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, &app.public_key);
    let signature = decode(signature).ok_or("The client_assertion signature is invalid.")?;
    public.verify(signed.as_bytes(), &signature).map_err(|_| "The client_assertion signature is invalid.")?;
    if claims["iss"].as_str() != Some(&app.client_id) || claims["sub"].as_str() != Some(&app.client_id) {
        return Err("The client_assertion iss and sub must be the client_id.");
    }
    if claims["aud"].as_str() != Some(audience) {
        return Err("The audience claim for client_assertion must be the endpoint invoked for the request.");
    }
    if claims["exp"].as_i64().is_none_or(|exp| exp <= Timestamp::now().as_second()) {
        return Err("The client_assertion token is expired.");
    }
    Ok(())
}

/// `search=` with `profile.email eq "…"` and `profile.login eq "…"` clauses joined by `or`: the
/// expressions the simulator knows (developer.okta.com/docs/reference/user-query, "Search
/// users"). `search` compares email and login regardless of letter case, unlike `filter`
/// (support.okta.com, "Case Sensitivity in Okta Users API: filter vs search").
fn search_users(request: &SimRequest, state: &State, search: &str) -> SimResponse {
    let clause = |clause: &str| {
        let (property, value) = clause.split_once(" eq ")?;
        let value = value.trim().strip_prefix('"')?.strip_suffix('"')?;
        matches!(property.trim(), "profile.email" | "profile.login").then(|| value.to_lowercase())
    };
    let Some(wanted) = search.split(" or ").map(clause).collect::<Option<Vec<String>>>() else {
        return error(400, "E0000031", "Invalid search criteria: the simulator supports profile.email eq and profile.login eq, joined by or");
    };
    let limit = page_limit(request, USERS_PAGE_MAX, USERS_PAGE_MAX);
    // The simulator's email is its login.
    let found: Vec<Value> = state.users.iter().filter(|u| wanted.contains(&u.login.to_lowercase())).take(limit).map(user_json).collect();
    SimResponse::json(200, &Value::Array(found))
}

fn list_users(request: &SimRequest, state: &State) -> SimResponse {
    if let Some(search) = request.query("search") {
        return search_users(request, state, search);
    }
    if request.query("filter").is_some() || request.query("q").is_some() {
        return error(400, "E0000031", "Invalid search criteria: the simulator supports plain listing and search only");
    }
    let limit = page_limit(request, USERS_PAGE_MAX, USERS_PAGE_MAX);
    let start = match request.query("after") {
        Some(after) => match state.by_id.get(after) {
            Some(&i) => i + 1,
            None => return error(400, "E0000031", "Invalid search criteria: after"),
        },
        None => 0,
    };
    // Without a filter Okta lists every user except DEPROVISIONED ones.
    let mut page = Vec::with_capacity(limit);
    let mut last = None;
    let mut i = start;
    while i < state.users.len() && page.len() < limit {
        let u = &state.users[i];
        if u.status != "DEPROVISIONED" {
            page.push(user_json(u));
            last = Some(u.id.as_str());
        }
        i += 1;
    }
    let more = state.users[i.min(state.users.len())..].iter().any(|u| u.status != "DEPROVISIONED");
    let link = link_header(&Okta::base(request), "/api/v1/users", limit, "", request.query("after"), more.then_some(last).flatten());
    SimResponse::json(200, &Value::Array(page)).with_header("Link", link)
}

fn list_members(request: &SimRequest, state: &State, group_id: &str) -> SimResponse {
    let Some(group) = state.groups.iter().find(|g| g.id == group_id) else { return not_found(group_id, "UserGroup") };
    let limit = page_limit(request, MEMBERS_PAGE_MAX, MEMBERS_PAGE_MAX);
    let start = match request.query("after") {
        Some(after) => match state.by_id.get(after) {
            Some(i) => group.members.partition_point(|m| m <= i),
            None => return error(400, "E0000031", "Invalid search criteria: after"),
        },
        None => 0,
    };
    let slice = &group.members[start.min(group.members.len())..];
    let page: Vec<Value> = slice.iter().take(limit).map(|&i| user_json(&state.users[i])).collect();
    let next = (slice.len() > limit).then(|| state.users[slice[limit - 1]].id.as_str());
    let link = link_header(&Okta::base(request), &format!("/api/v1/groups/{group_id}/users"), limit, "", request.query("after"), next);
    SimResponse::json(200, &Value::Array(page)).with_header("Link", link)
}

/// `GET /api/v1/logs` with `since`, `until`, `limit`, `after` and a `filter` of `field eq "value"`
/// terms (fields eventType, target.id, actor.id) joined by `and`, and those joined by `or` ("and"
/// binds first, as in Okta's filter expressions). Without `until` it is a polling request: the
/// answer always has a next link, from where the page ended, to ask again later ("Polling
/// requests" in the System Log reference).
fn list_logs(request: &SimRequest, state: &State) -> SimResponse {
    let parse_time = |key: &str| request.query(key).map(|t| t.parse::<Timestamp>().map_err(|_| error(400, "E0000001", &format!("Api validation failed: {key}"))));
    let since = match parse_time("since") {
        Some(Err(e)) => return e,
        Some(Ok(t)) => t,
        None => Timestamp::now() - jiff::SignedDuration::from_mins(15),
    };
    let until = match parse_time("until") {
        Some(Err(e)) => return e,
        Some(Ok(t)) => Some(t),
        None => None,
    };
    // Alternatives, each a list of (field, value) terms that must all hold.
    let mut alternatives: Vec<Vec<(String, String)>> = Vec::new();
    if let Some(filter) = request.query("filter") {
        for alternative in filter.split(" or ") {
            let mut terms = Vec::new();
            for term in alternative.split(" and ") {
                let mut words = term.trim().splitn(3, ' ');
                let (Some(field), Some("eq"), Some(value)) = (words.next(), words.next(), words.next()) else {
                    return error(400, "E0000031", "Invalid search criteria: filter");
                };
                if !["eventType", "target.id", "actor.id"].contains(&field) || !value.starts_with('"') || !value.ends_with('"') || value.len() < 2 {
                    return error(400, "E0000031", "Invalid search criteria: filter");
                }
                terms.push((field.to_string(), value[1..value.len() - 1].to_string()));
            }
            alternatives.push(terms);
        }
    }
    let limit = page_limit(request, 100, LOGS_PAGE_MAX);
    // A user id that every alternative asks for (as target or actor) narrows the search to that user's entries.
    let user_of = |terms: &Vec<(String, String)>| terms.iter().find(|(f, _)| f == "target.id" || f == "actor.id").and_then(|(_, id)| state.by_id.get(id).copied());
    let first_user = alternatives.first().and_then(user_of);
    let user_target = first_user.filter(|u| alternatives.iter().all(|terms| user_of(terms) == Some(*u)));
    let candidates: Box<dyn Iterator<Item = usize>> = match user_target {
        Some(user) => Box::new(state.logs_by_user.get(&user).into_iter().flatten().copied()),
        None => Box::new(0..state.logs.len()),
    };
    let after = request.query("after");
    let after_uuid = after.and_then(|a| u128::from_str_radix(a, 16).ok());
    let mut past_after = after.is_none();
    let mut page = Vec::new();
    let mut more = false;
    for i in candidates {
        let e = &state.logs[i];
        if !past_after {
            past_after = Some(e.uuid) == after_uuid;
            continue;
        }
        let holds = |(field, value): &(String, String)| match field.as_str() {
            "eventType" => e.event_type == value,
            "target.id" => names_user_as_target(e) && state.users[e.user].id == *value || e.factor.as_ref().is_some_and(|(id, _)| id == value),
            _ => e.by_admin.is_none() && state.users[e.user].id == *value,
        };
        let matches = e.published >= since
            && until.is_none_or(|u| e.published < u)
            && (alternatives.is_empty() || alternatives.iter().any(|terms| terms.iter().all(holds)));
        if matches {
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(e);
        }
    }
    let last = page.last().map(|e| format!("{:032x}", e.uuid));
    let polling = until.is_none();
    let next = if more || polling { last.as_deref().or(after) } else { None };
    let extra: String = ["since", "until", "filter", "sortOrder"]
        .iter()
        .filter_map(|k| request.query(k).map(|v| format!("&{k}={}", crate::percent_encode(v))))
        .collect();
    let mut link = link_header(&Okta::base(request), "/api/v1/logs", limit, &extra, after, next);
    if polling && next.is_none() {
        // Nothing read yet: ask again from the same place.
        link.push_str(&format!(", <{}/api/v1/logs?limit={limit}{extra}>; rel=\"next\"", Okta::base(request)));
    }
    SimResponse::json(200, &Value::Array(page.iter().map(|e| log_json(state, e)).collect())).with_header("Link", link)
}

fn user_route(request: &SimRequest, state: &mut State, index: usize, method: &str, rest: &[&str]) -> SimResponse {
    let base = Okta::base(request);
    match (method, rest) {
        ("GET", []) => SimResponse::json(200, &user_json(&state.users[index])),
        ("GET", ["factors"]) => {
            let u = &state.users[index];
            let listed: Vec<Value> = u.factors.iter().filter(|f| !HIDDEN_FROM_FACTORS.contains(&f.factor_type)).map(|f| factor_json(u, f)).collect();
            SimResponse::json(200, &Value::Array(listed))
        }
        ("GET", ["factors", factor_id]) => {
            let u = &state.users[index];
            match u.factors.iter().find(|f| f.id == *factor_id) {
                Some(f) => SimResponse::json(200, &factor_json(u, f)),
                None => not_found(factor_id, "UserFactor"),
            }
        }
        ("GET", ["authenticator-enrollments"]) => {
            let u = &state.users[index];
            let password = json!({
                "id": format!("lae{}", &u.id[3..]), "type": "password", "key": "okta_password", "status": "ACTIVE",
                "name": "Password", "created": rfc3339(u.created), "lastUpdated": rfc3339(u.created), "profile": {},
            });
            let listed: Vec<Value> = std::iter::once(password)
                .chain(u.factors.iter().filter(|f| !HIDDEN_FROM_ENROLLMENTS.contains(&f.factor_type)).map(|f| enrollment_json(u, f)))
                .collect();
            SimResponse::json(200, &Value::Array(listed))
        }
        ("DELETE", ["factors", factor_id]) | ("DELETE", ["authenticator-enrollments", factor_id]) => {
            match delete_factor(state, index, factor_id) {
                true => SimResponse::empty(204),
                false => not_found(factor_id, if rest[0] == "factors" { "UserFactor" } else { "AuthenticatorEnrollment" }),
            }
        }
        ("POST", ["lifecycle", "reset_factors"]) => {
            let removed: Vec<Factor> = state.users[index].factors.drain(..).collect();
            for f in removed {
                record(state, index, "user.mfa.factor.reset_all", Some((&f.id, f.factor_type)), None);
            }
            SimResponse::json(200, &json!({}))
        }
        // resetPassword (okta-management-openapi-spec, management-minimal.yaml, operationId
        // resetPassword): sendEmail is required; the user is in RECOVERY, unable
        // to sign in, until they complete the reset; with sendEmail=true Okta mails the link.
        ("POST", ["lifecycle", "reset_password"]) => {
            let send = match request.query("sendEmail") {
                Some("true") => true,
                Some("false") => false,
                _ => return error(400, "E0000001", "Api validation failed: sendEmail"),
            };
            if matches!(state.users[index].status, "SUSPENDED" | "DEPROVISIONED") {
                return error(403, "E0000038", "This operation is not allowed in the user's current status.");
            }
            let token: String = (0..20).map(|_| fastrand::alphanumeric()).collect();
            let url = format!("http://{}/reset_password/{token}", request.header("host").unwrap_or("127.0.0.1"));
            let u = &mut state.users[index];
            u.status = "RECOVERY";
            if request.query("revokeSessions") == Some("true") {
                u.sessions = 0;
            }
            if send {
                state.mailed.entry(index).or_default().push(url);
                SimResponse::json(200, &json!({}))
            } else {
                SimResponse::json(200, &json!({ "resetPasswordUrl": url }))
            }
        }
        ("POST", ["lifecycle", "suspend"]) => {
            let u = &mut state.users[index];
            if u.status != "ACTIVE" {
                return error(400, "E0000001", "Api validation failed: Cannot suspend a user that is not active");
            }
            u.status = "SUSPENDED";
            SimResponse::json(200, &json!({}))
        }
        ("POST", ["lifecycle", "unsuspend"]) => {
            let u = &mut state.users[index];
            if u.status != "SUSPENDED" {
                return error(400, "E0000001", "Api validation failed: Cannot unsuspend a user that is not suspended");
            }
            u.status = "ACTIVE";
            SimResponse::json(200, &json!({}))
        }
        ("DELETE", ["sessions"]) => {
            let u = &mut state.users[index];
            u.sessions = 0;
            // Okta's defaults: oauthTokens=false, forgetDevices=true.
            if request.query("oauthTokens") == Some("true") {
                u.refresh_tokens.clear();
            }
            if request.query("forgetDevices") != Some("false") {
                u.remembered_devices = 0;
            }
            SimResponse::empty(204)
        }
        ("GET", ["grants"]) => {
            let u = &state.users[index];
            let limit = page_limit(request, 20, 200);
            let start = match request.query("after") {
                Some(after) => u.grants.iter().position(|(id, _)| id == after).map(|p| p + 1).unwrap_or(u.grants.len()),
                None => 0,
            };
            let slice = &u.grants[start..];
            let page: Vec<Value> = slice
                .iter()
                .take(limit)
                .map(|(id, created)| {
                    json!({
                        "id": id, "status": "ACTIVE", "created": rfc3339(*created), "lastUpdated": rfc3339(*created),
                        "issuer": format!("{base}/oauth2/default"), "clientId": PORTAL_CLIENT, "userId": u.id,
                        "scopeId": "scpofflineaccess0x7", "source": "END_USER",
                    })
                })
                .collect();
            let next = (slice.len() > limit).then(|| slice[limit - 1].0.as_str());
            let link = link_header(&base, &format!("/api/v1/users/{}/grants", u.id), limit, "", request.query("after"), next);
            SimResponse::json(200, &Value::Array(page)).with_header("Link", link)
        }
        ("DELETE", ["grants"]) => {
            state.users[index].grants.clear();
            SimResponse::empty(204)
        }
        ("GET", ["clients"]) => {
            let u = &state.users[index];
            let clients = if u.refresh_tokens.is_empty() && u.grants.is_empty() {
                vec![]
            } else {
                vec![json!({ "client_id": PORTAL_CLIENT, "client_name": "Corporate Portal", "client_uri": null, "logo_uri": null })]
            };
            SimResponse::json(200, &Value::Array(clients))
        }
        ("GET", ["clients", client_id, "tokens"]) => {
            let u = &state.users[index];
            let tokens: Vec<Value> = if *client_id == PORTAL_CLIENT {
                u.refresh_tokens
                    .iter()
                    .map(|(id, created)| {
                        json!({
                            "id": id, "status": "ACTIVE", "created": rfc3339(*created), "lastUpdated": rfc3339(*created),
                            "expiresAt": rfc3339(*created + jiff::SignedDuration::from_hours(24 * 90)),
                            "issuer": format!("{base}/oauth2/default"), "clientId": PORTAL_CLIENT, "userId": u.id,
                            "scopes": ["openid", "offline_access"],
                        })
                    })
                    .collect()
            } else {
                vec![]
            };
            SimResponse::json(200, &Value::Array(tokens))
        }
        _ => error(404, "E0000022", &format!("The endpoint does not support the provided HTTP method: {method} {}", request.path)),
    }
}

/// Removes a factor, and with a push or signed_nonce every Okta Verify factor on the same device.
/// False when there was no such factor.
fn delete_factor(state: &mut State, index: usize, factor_id: &str) -> bool {
    let user = &mut state.users[index];
    let Some(position) = user.factors.iter().position(|f| f.id == factor_id) else { return false };
    let target = user.factors.remove(position);
    let mut removed = vec![(target.id.clone(), target.factor_type)];
    if matches!(target.factor_type, "push" | "signed_nonce")
        && let Some(device) = &target.device
    {
        user.factors.retain(|f| {
            let linked = f.device.as_ref() == Some(device);
            if linked {
                removed.push((f.id.clone(), f.factor_type));
            }
            !linked
        });
    }
    for (id, factor_type) in removed {
        record(state, index, "user.mfa.factor.deactivate", Some((&id, factor_type)), None);
    }
    true
}

/// Appends a System Log entry about user `index` (and a factor); `from` is the client IP and user
/// agent for events a person caused (an admin API call has the operator's address, left out
/// here). The entry, for callers to add an actor, a device, an outcome or an earlier time.
fn record<'s>(state: &'s mut State, index: usize, event_type: &'static str, factor: Option<(&str, &'static str)>, from: Option<(&str, &str)>) -> &'s mut LogEvent {
    let at = state.logs.len();
    state.logs_by_user.entry(index).or_default().push(at);
    state.logs.push(LogEvent {
        uuid: fastrand::u128(..),
        published: Timestamp::now(),
        event_type,
        user: index,
        factor: factor.map(|(id, factor_type)| (id.to_string(), factor_type)),
        from: from.map(|(ip, agent)| (ip.to_string(), agent.to_string())),
        by_admin: None,
        device: None,
        result: "SUCCESS",
    });
    state.logs.last_mut().expect("just pushed")
}

/// The System Log's event type of an activity (System Log event types reference); None for what
/// Okta's log has no entry for.
fn activity_event(what: Act) -> Option<&'static str> {
    Some(match what {
        Act::Enroll { .. } => "user.mfa.factor.activate",
        Act::SignIn => "user.session.start",
        Act::PushDenied => "user.mfa.okta_verify.deny_push",
        Act::FraudReported => "user.account.report_suspicious_activity_by_enduser",
        Act::RiskySignIn => "user.risk.detect",
        Act::BypassIssued | Act::SecondStepWeakened => return None,
    })
}

fn display_message(event_type: &str) -> &'static str {
    match event_type {
        "user.mfa.factor.activate" => "Activate factor or authenticator",
        "user.mfa.factor.deactivate" | "user.mfa.factor.reset_all" => "Reset factor or authenticator",
        "user.session.start" => "User login to Okta",
        "user.mfa.okta_verify.deny_push" => "User rejected Okta push verify",
        "user.account.report_suspicious_activity_by_enduser" => "User report suspicious activity",
        "user.risk.detect" => "User risk detected",
        _ => "Okta event",
    }
}

/// Whether an entry lists its user among its targets: a factor's or an administrator's act on
/// them, or a risk detection about them.
fn names_user_as_target(e: &LogEvent) -> bool {
    e.factor.is_some() || e.by_admin.is_some() || e.event_type == "user.risk.detect"
}

/// A System Log entry as Okta returns it.
fn log_json(state: &State, e: &LogEvent) -> Value {
    let user = &state.users[e.user];
    let (ip, agent) = e.from.as_ref().map(|(ip, agent)| (ip.as_str(), agent.as_str())).unwrap_or(("192.0.2.1", "mfa-recall"));
    let place = place_of(ip);
    let actor = match &e.by_admin {
        Some(admin) if admin == "system@okta.com" => json!({ "id": "0oa1oktasystem", "type": "SystemPrincipal", "alternateId": admin, "displayName": "Okta System" }),
        Some(admin) => {
            let id = admin.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
            json!({ "id": format!("00u{id:017x}"), "type": "User", "alternateId": admin, "displayName": admin })
        }
        None => json!({ "id": user.id, "type": "User", "alternateId": user.login, "displayName": user.login }),
    };
    // A person's own sign-in, push answer or report has them as its actor and no target; a risk
    // detection names the user as its target ("Identity Threat Protection Event Types", user.risk.detect).
    let mut target = Vec::new();
    if names_user_as_target(e) {
        target.push(json!({ "id": user.id, "type": "User", "alternateId": user.login, "displayName": user.login }));
    }
    if let Some((id, factor_type)) = &e.factor {
        target.push(json!({ "id": id, "type": "AuthenticatorEnrollment", "alternateId": "unknown", "displayName": factor_type }));
    }
    json!({
        "uuid": format!("{:032x}", e.uuid), "published": rfc3339(e.published), "eventType": e.event_type, "version": "0", "severity": "INFO",
        "displayMessage": display_message(e.event_type),
        "actor": actor,
        "client": {
            "ipAddress": ip, "device": "Computer", "zone": "null",
            "userAgent": { "rawUserAgent": agent, "os": "Mac OS X", "browser": "CHROME" },
            "geographicalContext": { "country": place.country, "state": place.region, "city": place.city, "postalCode": null, "geolocation": { "lat": place.lat, "lon": place.lon } },
        },
        "device": e.device.as_ref().map(|id| json!({ "id": id, "name": "iPhone 15", "os_platform": "IOS", "managed": false })),
        "securityContext": { "asNumber": place.asn, "asOrg": place.org, "isp": place.org, "domain": null, "isProxy": place.proxy },
        "outcome": { "result": e.result, "reason": null },
        "target": if target.is_empty() { Value::Null } else { Value::Array(target) },
        "debugContext": { "debugData": { "factor": e.factor.as_ref().map(|(_, t)| *t), "requestUri": "/idp/idx/challenge/answer" } },
    })
}

impl Provider for Okta {
    fn name(&self) -> &'static str {
        "okta"
    }

    fn bucket(&self, request: &SimRequest) -> &'static str {
        let path = request.path.as_str();
        if path.starts_with("/api/v1/users") {
            "users"
        } else if path.starts_with("/api/v1/groups") {
            "groups"
        } else if path.starts_with("/api/v1/logs") {
            "logs"
        } else if path.starts_with("/oauth2/v1/token") {
            "token"
        } else {
            "default"
        }
    }

    fn handle(&self, request: &SimRequest) -> SimResponse {
        let mut state = self.state.lock().unwrap();
        if request.method == hyper::Method::POST && request.path == "/oauth2/v1/token" {
            return self.token(request, &mut state);
        }
        if let Err(refused) = self.authenticate(request, &mut state) {
            return refused;
        }
        self.route(request, &mut state)
    }

    fn throttled(&self, _reset: i64) -> SimResponse {
        error(429, "E0000047", "API call exceeded rate limit due to too many requests.")
    }

    fn announces_limits(&self) -> bool {
        true
    }

    fn seed(&self, seed: &Seed) {
        let created = seed.factor_created();
        let user_created = created - jiff::SignedDuration::from_hours(24);
        let mut state = State::default();
        state.users.reserve(seed.users as usize);
        state.by_id.reserve(seed.users as usize);
        state.by_login.reserve(seed.users as usize);
        for i in 0..seed.users {
            let login = super::username(i);
            let factors = seed.factors.iter().flat_map(|k| okta_factors(*k)).map(|entry| new_factor(entry, created)).collect();
            let refresh_tokens = (0..seed.sessions).map(|_| (okta_id("oar"), created)).collect();
            let grants = if seed.sessions > 0 { vec![(okta_id("oag"), created)] } else { vec![] };
            let user = User {
                id: okta_id("00u"),
                login: login.clone(),
                status: "ACTIVE",
                created: user_created,
                factors,
                sessions: seed.sessions,
                refresh_tokens,
                grants,
                remembered_devices: 0,
            };
            state.by_id.insert(user.id.clone(), i as usize);
            state.by_login.insert(login, i as usize);
            state.users.push(user);
        }
        for g in &seed.groups {
            let members = (0..seed.users).filter(|i| g.has_member(*i)).map(|i| i as usize).collect();
            state.groups.push(Group { id: okta_id("00g"), name: g.name.clone(), created: user_created, members });
        }
        *self.state.lock().unwrap() = state;
    }

    fn census(&self, cutoff: Option<Timestamp>) -> Census {
        let state = self.state.lock().unwrap();
        let mut census = Census::default();
        for u in &state.users {
            census.count(&view(u), cutoff);
        }
        census
    }

    fn user(&self, username: &str) -> Option<UserView> {
        let state = self.state.lock().unwrap();
        state.by_login.get(username).map(|&i| view(&state.users[i]))
    }

    fn links_mailed(&self, username: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.by_login.get(username).and_then(|i| state.mailed.get(i).cloned()).unwrap_or_default()
    }

    fn enroll(&self, username: &str, kind: FactorKind, from_ip: &str) -> Option<String> {
        self.act(username, &Activity::new(Act::Enroll { factor: kind }, from_ip)).ok().flatten()
    }

    fn act(&self, username: &str, activity: &Activity) -> Result<Option<String>, String> {
        let event_type = activity_event(activity.what).ok_or("the System Log entries this simulator writes have none for a bypass code or a weakened second step")?;
        let mut state = self.state.lock().unwrap();
        let index = *state.by_login.get(username).ok_or("no such user")?;
        let at = activity.at();
        let mut factors: Vec<(String, &'static str)> = Vec::new();
        let mut first = None;
        if let Act::Enroll { factor } = activity.what {
            let mut added: Vec<Factor> = okta_factors(factor).into_iter().map(|entry| new_factor(entry, at)).collect();
            if added.is_empty() {
                return Err(format!("Okta has no factor of kind {}", factor.as_str()));
            }
            for f in &mut added {
                // The test's device stands for the Okta Verify install the factor lives on.
                if f.device.is_some() {
                    if let Some(device) = &activity.device {
                        f.device = Some(device.clone());
                    }
                }
            }
            first = Some(added[0].id.clone());
            factors = added.iter().map(|f| (f.id.clone(), f.factor_type)).collect();
            state.users[index].factors.extend(added);
        }
        let entries: Vec<Option<(String, &'static str)>> = if factors.is_empty() { vec![None] } else { factors.into_iter().map(Some).collect() };
        for factor in entries {
            let entry = record(&mut state, index, event_type, factor.as_ref().map(|(id, t)| (id.as_str(), *t)), Some((&activity.ip, &activity.user_agent)));
            entry.published = at;
            entry.by_admin = activity.by_admin.clone();
            entry.device = activity.device.clone();
            if activity.what == Act::PushDenied {
                entry.result = "DENY";
            }
        }
        Ok(first)
    }
}

fn view(u: &User) -> UserView {
    UserView {
        id: u.id.clone(),
        username: u.login.clone(),
        active: u.status == "ACTIVE",
        factors: u
            .factors
            .iter()
            .filter_map(|f| Some(FactorView { id: f.id.clone(), kind: census_kind(f.factor_type)?, created: f.created }))
            .collect(),
        sessions: u.sessions,
        grants: (u.refresh_tokens.len() + u.grants.len()) as u32 + u.remembered_devices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::{HeaderMap, Method};

    fn okta() -> Okta {
        let okta = Okta::new(&json!({ "api-token": "00secret" })).unwrap();
        okta.seed(&Seed { users: 5, ..Seed::default() });
        okta
    }

    fn call(okta: &Okta, method: Method, path_and_query: &str) -> SimResponse {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "SSWS 00secret".parse().unwrap());
        headers.insert("host", "okta.test".parse().unwrap());
        let request = SimRequest { method, path: path.into(), query: crate::parse_query(query), headers, body: Default::default() };
        okta.handle(&request)
    }

    fn body(response: &SimResponse) -> Value {
        serde_json::from_slice(&response.body).unwrap()
    }

    #[test]
    fn wrong_token_gets_okta_error_body() {
        let okta = okta();
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "SSWS nope".parse().unwrap());
        let request = SimRequest { method: Method::GET, path: "/api/v1/users".into(), query: vec![], headers, body: Default::default() };
        let response = okta.handle(&request);
        assert_eq!(response.status, 401);
        assert_eq!(body(&response)["errorCode"], "E0000011");
        assert_eq!(body(&response)["errorSummary"], "Invalid token provided");
    }

    #[test]
    fn users_page_by_link_and_skip_deprovisioned() {
        let okta = okta();
        okta.state.lock().unwrap().users[3].status = "DEPROVISIONED";
        let first = call(&okta, Method::GET, "/api/v1/users?limit=2");
        let link = first.headers.iter().find(|(k, _)| k == "Link").unwrap().1.clone();
        assert!(link.contains("rel=\"self\"") && link.contains("rel=\"next\""), "{link}");
        let after = link.split("after=").nth(1).unwrap().split('>').next().unwrap().to_string();
        let second = call(&okta, Method::GET, &format!("/api/v1/users?limit=2&after={after}"));
        let logins: Vec<String> = body(&second).as_array().unwrap().iter().map(|u| u["profile"]["login"].as_str().unwrap().to_string()).collect();
        assert_eq!(logins, vec![crate::username(2), crate::username(4)]);
        let link = second.headers.iter().find(|(k, _)| k == "Link").unwrap().1.clone();
        assert!(!link.contains("rel=\"next\""), "{link}");
    }

    #[test]
    fn fastpass_hidden_from_factors_and_cascade_on_delete() {
        let okta = okta();
        let user = okta.user(&crate::username(0)).unwrap();
        let factors = body(&call(&okta, Method::GET, &format!("/api/v1/users/{}/factors", user.id)));
        let types: Vec<&str> = factors.as_array().unwrap().iter().map(|f| f["factorType"].as_str().unwrap()).collect();
        assert_eq!(types, vec!["token:software:totp", "webauthn", "push"]);
        let enrollments = body(&call(&okta, Method::GET, &format!("/api/v1/users/{}/authenticator-enrollments", user.id)));
        assert!(enrollments.as_array().unwrap().iter().any(|e| e["profile"]["methods"][0] == "signed_nonce"));
        let push = factors.as_array().unwrap().iter().find(|f| f["factorType"] == "push").unwrap()["id"].as_str().unwrap().to_string();
        assert_eq!(call(&okta, Method::DELETE, &format!("/api/v1/users/{}/factors/{push}", user.id)).status, 204);
        let left = okta.user(&crate::username(0)).unwrap();
        assert_eq!(left.factors.len(), 2, "push and its FastPass went together: {left:?}");
        assert_eq!(call(&okta, Method::DELETE, &format!("/api/v1/users/{}/factors/{push}", user.id)).status, 404);
    }
}
