//! Duo Admin API (`/admin/v1`, `/admin/v2`): every request signed with the integration's secret
//! key (signature v5 as Duo's reference client duo_client_python makes it: HMAC-SHA512 over date,
//! method, host, path, query parameters, the body's SHA-512 and the SHA-512 of the `X-Duo-*`
//! headers, sent as HTTP Basic) and a `Date` within five minutes; POST bodies in JSON; answers in the `{stat, response, metadata}` envelope; `limit`/`offset`
//! paging; 429 `{code: 42901}` when throttled, with no limit headers.
//!
//! Quirks kept: phones and hardware tokens show no creation time (WebAuthn credentials show
//! `date_added`, bypass codes `created`, both in epoch seconds); there is no session API;
//! authentication-log records (enrollments included) appear only after a delay (two minutes at
//! Duo; a setting here so tests need not wait); devices an administrator adds are recorded only in
//! the administrator log, named by phone number or token type and serial. Every factor keeps its true creation time for the
//! census. Census mapping: a phone with Duo Mobile activated is `push`, one without is `sms`;
//! tokens by type (`t6`/`t8` totp, `h6`/`h8` hotp, others hardwareToken); each WebAuthn
//! credential is `webauthn`; each bypass code is `recoveryCodes`.
//!
//! Sources, each rule from the page named (https://duo.com/docs/adminapi unless said): signing,
//! from duo_client_python's `canonicalize` and `sign` (github.com/duosecurity/duo_client_python);
//! envelope, `limit`/`offset` paging and 429 with code 42901, "API Details"; users and their
//! phones, tokens and WebAuthn credentials as "Retrieve Users" shows them (no creation time on
//! phones or tokens); `date_added` and bypass `created`, "WebAuthn Credentials" and "Bypass
//! Codes"; the authentication log's two-minute delay, `mintime`/`maxtime` in milliseconds,
//! `limit` up to 1000, `next_offset` as "timestamp,txid", `sort` by `ts:desc` (the default) or
//! `ts:asc`, the `users`, `event_types` and `results` filters, `result` and `reason` values
//! (`user_approved`, `user_mistake`, `user_marked_fraud`) and `access_device.location` as city,
//! state and country without coordinates, "Authentication Logs" (v2); the
//! administrator log's earliest 1000 records from `mintime` in seconds and its `object`
//! spellings, "Administrator Logs".

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::{Census, FactorView, Provider, Seed, SimRequest, SimResponse, UserView, username};
use crate::{Act, Activity, FactorKind, place_of};

/// How late authentication-log records become visible at Duo.
pub const DUO_LOG_DELAY: Duration = Duration::from_secs(120);
/// How far the request's `Date` may be from the server's clock.
const DATE_SKEW_SECONDS: i64 = 300;
const USERS_MAX_LIMIT: usize = 300;
const GROUPS_MAX_LIMIT: usize = 100;
const GROUP_USERS_MAX_LIMIT: usize = 500;
const LOGS_MAX_LIMIT: usize = 1000;
const ADMIN_EMAIL: &str = "secadmin@example.com";

const ID_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Characters of an id that carry the owning user's index (30 bits, a billion users).
const OWNER_CHARS: usize = 6;

/// A Duo-style object id: a two-letter prefix and 18 upper-case characters. Ids are opaque to
/// clients, so the simulator hides the owning user's index in the first six (the rest random):
/// lookups need no map, and seeding a million users stays fast.
fn duo_id(prefix: &str, owner: usize) -> String {
    let mut id = String::with_capacity(prefix.len() + 18);
    id.push_str(prefix);
    for shift in 0..OWNER_CHARS {
        id.push(ID_ALPHABET[(owner >> (5 * shift)) & 31] as char);
    }
    let mut bits = fastrand::u64(..);
    for _ in OWNER_CHARS..18 {
        id.push(ID_ALPHABET[(bits & 31) as usize] as char);
        bits >>= 5;
    }
    id
}

/// The user index hidden in an id made by `duo_id` (the caller checks the id really exists).
fn owner_of(id: &str) -> Option<usize> {
    let body = id.get(2..2 + OWNER_CHARS)?;
    body.bytes().enumerate().try_fold(0usize, |acc, (shift, c)| Some(acc | (ID_ALPHABET.iter().position(|&a| a == c)? << (5 * shift))))
}

struct Phone {
    id: String,
    number: String,
    /// Duo Mobile is activated on it (push); otherwise SMS and voice only.
    activated: bool,
    created: jiff::Timestamp,
}

struct HardwareToken {
    id: String,
    serial: String,
    type_: &'static str,
    created: jiff::Timestamp,
}

struct WebauthnCredential {
    key: String,
    name: &'static str,
    created: jiff::Timestamp,
}

struct BypassCode {
    id: String,
    created: jiff::Timestamp,
    /// The code a user types, for codes generated through the API (seeded ones have none to type).
    code: Option<String>,
    /// None: never expires (valid_secs 0).
    expires: Option<jiff::Timestamp>,
    /// Uses left; None: unlimited (reuse_count 0).
    remaining_uses: Option<u32>,
}

struct User {
    id: String,
    username: String,
    status: &'static str,
    created: jiff::Timestamp,
    phones: Vec<Phone>,
    tokens: Vec<HardwareToken>,
    webauthn: Vec<WebauthnCredential>,
    bypass_codes: Vec<BypassCode>,
    groups: Vec<usize>,
}

struct Group {
    id: String,
    name: String,
    members: Vec<usize>,
}

/// One administrator-log record: an administrator acted on `object` (Duo Admin API,
/// Administrator Logs: "(555) 713-6275 x456" for phones, "HOTP 8-digit 123456" for tokens).
struct AdminLog {
    time: jiff::Timestamp,
    action: &'static str,
    object: String,
    /// Serialized JSON, as the log carries it.
    description: String,
    /// The administrator's name; "API" for what was done through the Admin API.
    by: String,
}

/// One authentication-log record: an enrollment or an authentication.
struct AuthLog {
    user: usize,
    time: jiff::Timestamp,
    txid: String,
    /// `enrollment` or `authentication`.
    event_type: &'static str,
    /// `success`, `denied`, `fraud`.
    result: &'static str,
    reason: &'static str,
    factor: &'static str,
    ip: String,
    /// `auth_device.name`: the phone or device the factor was used on, where one was.
    device: Option<String>,
}

#[derive(Default)]
struct State {
    users: Vec<User>,
    by_username: HashMap<String, usize>,
    groups: Vec<Group>,
    logs: Vec<AuthLog>,
    admin_logs: Vec<AdminLog>,
}

impl State {
    /// The user with id `id`.
    fn user_index(&self, id: &str) -> Option<usize> {
        owner_of(id).filter(|&i| self.users.get(i).is_some_and(|u| u.id == id))
    }
}

pub struct Duo {
    integration_key: String,
    secret_key: String,
    log_delay: Mutex<Duration>,
    state: Mutex<State>,
}

impl Duo {
    /// From the Secret's `integration-key` and `secret-key`; log records are delayed as at Duo.
    pub fn new(credentials: &Value) -> Result<Self, String> {
        let key = |name: &str| credentials.get(name).and_then(Value::as_str).map(String::from).ok_or(format!("duo: credentials need {name}"));
        Ok(Self {
            integration_key: key("integration-key")?,
            secret_key: key("secret-key")?,
            log_delay: Mutex::new(DUO_LOG_DELAY),
            state: Mutex::default(),
        })
    }

    /// How late authentication-log records appear (zero for tests that cannot wait two minutes).
    pub fn with_log_delay(self, delay: Duration) -> Self {
        *self.log_delay.lock().unwrap() = delay;
        self
    }

    /// Checks the request's signature exactly as Duo does, from what was received.
    fn authenticate(&self, request: &SimRequest) -> Result<(), SimResponse> {
        let (Some(authorization), Some(date)) = (request.authorization("Basic"), request.header("date")) else {
            return Err(fail(401, 40101, "Missing request credentials"));
        };
        let decoded = STANDARD.decode(authorization).ok().and_then(|b| String::from_utf8(b).ok()).unwrap_or_default();
        let Some((ikey, _)) = decoded.split_once(':') else { return Err(fail(401, 40101, "Missing request credentials")) };
        if ikey != self.integration_key {
            return Err(fail(401, 40102, "Invalid integration key in request credentials"));
        }
        let Some((_, signature)) = decoded.split_once(':') else { return Err(fail(401, 40101, "Missing request credentials")) };
        if self.v5_signature(request, date) != signature {
            return Err(fail(401, 40103, "Invalid signature in request credentials"));
        }
        let sent = jiff::fmt::rfc2822::parse(date).map(|z| z.timestamp().as_second());
        if sent.is_err() || sent.is_ok_and(|s| (s - jiff::Timestamp::now().as_second()).abs() > DATE_SKEW_SECONDS) {
            return Err(fail(401, 40105, "Request date out of range"));
        }
        Ok(())
    }

    /// The v5 signature of the request as received, written from duo_client_python's
    /// `canonicalize` and `sign` (not from the adapter).
    fn v5_signature(&self, request: &SimRequest, date: &str) -> String {
        use hmac::Mac;
        use sha2::{Digest, Sha512};
        let encode = |text: &str| -> String {
            text.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
        };
        let mut pairs: Vec<(String, String)> = request.query.iter().map(|(k, v)| (encode(k), encode(v))).collect();
        pairs.sort();
        let params = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let mut duo_headers: Vec<(String, &str)> =
            request.headers.iter().filter(|(name, _)| name.as_str().starts_with("x-duo-")).map(|(name, value)| (name.as_str().to_string(), value.to_str().unwrap_or_default())).collect();
        duo_headers.sort();
        let duo_headers = duo_headers.iter().flat_map(|(name, value)| [name.as_str(), *value]).collect::<Vec<_>>().join("\0");
        let host = request.header("host").unwrap_or_default().to_lowercase();
        let canonical = [
            date,
            request.method.as_str(),
            &host,
            &request.path,
            &params,
            &hex::encode(Sha512::digest(&request.body)),
            &hex::encode(Sha512::digest(duo_headers.as_bytes())),
        ]
        .join("\n");
        let mut mac = hmac::Hmac::<Sha512>::new_from_slice(self.secret_key.as_bytes()).expect("any key length");
        mac.update(canonical.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

fn ok(response: Value) -> SimResponse {
    SimResponse::json(200, &json!({ "stat": "OK", "response": response }))
}

/// A page of `items` with Duo's paging metadata.
fn page(items: Vec<Value>, offset: usize, total: usize) -> SimResponse {
    let mut metadata = json!({ "total_objects": total });
    if offset + items.len() < total {
        metadata["next_offset"] = json!(offset + items.len());
    }
    if offset > 0 {
        metadata["prev_offset"] = json!(offset.saturating_sub(items.len().max(1)));
    }
    SimResponse::json(200, &json!({ "stat": "OK", "response": items, "metadata": metadata }))
}

fn fail(status: u16, code: u32, message: &str) -> SimResponse {
    SimResponse::json(status, &json!({ "stat": "FAIL", "code": code, "message": message }))
}

fn not_found() -> SimResponse {
    fail(404, 40401, "Resource not found")
}

fn invalid(detail: &str) -> SimResponse {
    SimResponse::json(400, &json!({ "stat": "FAIL", "code": 40003, "message": "Invalid request parameters", "message_detail": detail }))
}

/// `limit` and `offset`, Duo's defaults and caps.
fn paging(request: &SimRequest, default: usize, max: usize) -> Result<(usize, usize), SimResponse> {
    let number = |name: &str, fallback: usize| match request.query(name) {
        None => Ok(fallback),
        Some(v) => v.parse::<usize>().map_err(|_| invalid(name)),
    };
    Ok((number("limit", default)?.clamp(1, max), number("offset", 0)?))
}

fn epoch(t: jiff::Timestamp) -> i64 {
    t.as_second()
}

fn phone_json(p: &Phone) -> Value {
    let capabilities: &[&str] = if p.activated { &["auto", "push", "sms", "phone", "mobile_otp"] } else { &["sms", "phone"] };
    json!({
        "phone_id": p.id, "number": p.number, "extension": "", "name": "", "postdelay": null, "predelay": null,
        "type": "Mobile", "platform": if p.activated { "Apple iOS" } else { "Unknown" }, "activated": p.activated,
        "sms_passcodes_sent": false, "capabilities": capabilities,
        "encrypted": if p.activated { "Encrypted" } else { "" }, "fingerprint": if p.activated { "Configured" } else { "" },
        "screenlock": if p.activated { "Locked" } else { "" }, "tampered": if p.activated { "Not tampered" } else { "" },
        "model": if p.activated { "Apple iPhone 15" } else { "Unknown" }, "last_seen": "",
    })
}

fn token_json(t: &HardwareToken) -> Value {
    let step = if t.type_.starts_with('t') { json!(30) } else { Value::Null };
    json!({ "token_id": t.id, "serial": t.serial, "type": t.type_, "totp_step": step })
}

fn webauthn_json(w: &WebauthnCredential) -> Value {
    json!({ "webauthnkey": w.key, "credential_name": w.name, "label": "Security Key", "date_added": epoch(w.created) })
}

fn group_json(g: &Group) -> Value {
    json!({
        "group_id": g.id, "name": g.name, "desc": "", "status": "Active",
        "push_enabled": true, "sms_enabled": true, "voice_enabled": true, "mobile_otp_enabled": true,
    })
}

fn user_brief(u: &User) -> Value {
    json!({ "user_id": u.id, "username": u.username, "realname": realname(&u.username), "email": u.username, "status": u.status, "created": epoch(u.created), "last_login": null })
}

fn realname(username: &str) -> String {
    username.split('@').next().unwrap_or(username).to_string()
}

fn user_json(state: &State, u: &User) -> Value {
    let name = realname(&u.username);
    json!({
        "user_id": u.id, "username": u.username, "realname": name, "firstname": name, "lastname": "",
        "email": u.username, "status": u.status, "created": epoch(u.created), "last_login": null,
        "is_enrolled": !(u.phones.is_empty() && u.tokens.is_empty() && u.webauthn.is_empty()),
        "alias1": null, "alias2": null, "alias3": null, "alias4": null, "aliases": {}, "notes": "", "last_directory_sync": null,
        "phones": u.phones.iter().map(phone_json).collect::<Vec<_>>(),
        "tokens": u.tokens.iter().map(token_json).collect::<Vec<_>>(),
        "webauthncredentials": u.webauthn.iter().map(webauthn_json).collect::<Vec<_>>(),
        "u2ftokens": [], "desktoptokens": [],
        "groups": u.groups.iter().map(|&g| group_json(&state.groups[g])).collect::<Vec<_>>(),
    })
}

fn bypass_json(u: &User, b: &BypassCode) -> Value {
    json!({
        "bypass_code_id": b.id, "admin_email": ADMIN_EMAIL, "created": epoch(b.created), "expiration": b.expires.map(epoch),
        "remaining_uses": b.remaining_uses, "reuse_count": b.remaining_uses, "user": user_brief(u),
    })
}

/// POST /admin/v1/users/{user_id}/bypass_codes (Duo Admin API, "Create Bypass Codes for User",
/// https://duo.com/docs/adminapi#create-bypass-codes-for-user):
/// `count` codes (default 10, at most 10), each good `reuse_count` times (default 1; 0 without
/// limit) for `valid_secs` (default 0: without expiry); they replace the user's other codes unless
/// `preserve_existing`. The answer lists the new codes themselves, shown this once.
fn create_bypass_codes(request: &SimRequest, state: &mut State, i: usize) -> SimResponse {
    let param = |name: &str| -> Option<String> {
        match request.header("content-type") {
            Some(t) if t.starts_with("application/json") => request.json().and_then(|b| b.get(name).map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string()))),
            _ => request.form_value(name),
        }
    };
    let number = |name: &str, default: u64| -> Result<u64, SimResponse> { param(name).map_or(Ok(default), |v| v.parse().map_err(|_| invalid(name))) };
    let (count, reuse, valid_secs) = match (number("count", 10), number("reuse_count", 1), number("valid_secs", 0)) {
        (Ok(c), Ok(r), Ok(v)) => match u32::try_from(r) {
            Ok(r) => (c, r, v),
            Err(_) => return invalid("reuse_count"),
        },
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
    };
    if !(1..=10).contains(&count) {
        return invalid("count");
    }
    let now = jiff::Timestamp::now();
    let user = &mut state.users[i];
    if param("preserve_existing").as_deref() != Some("true") {
        user.bypass_codes.clear();
    }
    let mut codes = Vec::new();
    for _ in 0..count {
        let code = format!("{:09}", fastrand::u32(..1_000_000_000));
        let expires = (valid_secs > 0).then(|| now.checked_add(jiff::SignedDuration::from_secs(valid_secs.min(i64::MAX as u64) as i64)).unwrap_or(jiff::Timestamp::MAX));
        user.bypass_codes.push(BypassCode { id: duo_id("DB", i), created: now, code: Some(code.clone()), expires, remaining_uses: (reuse > 0).then_some(reuse) });
        codes.push(Value::String(code));
    }
    ok(Value::Array(codes))
}

/// A sub-list of one user (`/phones`, `/tokens`...), paged.
fn user_list(request: &SimRequest, items: Vec<Value>) -> SimResponse {
    match paging(request, 100, 500) {
        Ok((limit, offset)) => {
            let total = items.len();
            page(items.into_iter().skip(offset).take(limit).collect(), offset, total)
        }
        Err(e) => e,
    }
}

impl Duo {
    fn api(&self, request: &SimRequest, state: &mut State) -> SimResponse {
        let segments = request.segments();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (request.method.as_str(), segments.as_slice()) {
            ("GET", ["admin", "v1", "users"]) => list_users(request, state),
            ("GET" | "POST" | "DELETE", ["admin", "v1", "users", id, rest @ ..]) => {
                let Some(i) = state.user_index(id) else { return not_found() };
                user_call(request, state, i, rest)
            }
            ("DELETE", ["admin", "v1", "webauthncredentials", key]) => {
                let Some(user) = owner_of(key).and_then(|i| state.users.get_mut(i)) else { return not_found() };
                let before = user.webauthn.len();
                user.webauthn.retain(|w| w.key != *key);
                if user.webauthn.len() == before { not_found() } else { ok(json!("")) }
            }
            ("DELETE", ["admin", "v1", "bypass_codes", id]) => {
                let Some(user) = owner_of(id).and_then(|i| state.users.get_mut(i)) else { return not_found() };
                let before = user.bypass_codes.len();
                user.bypass_codes.retain(|b| b.id != *id);
                if user.bypass_codes.len() == before { not_found() } else { ok(json!("")) }
            }
            ("GET", ["admin", "v1", "groups"]) => match paging(request, 100, GROUPS_MAX_LIMIT) {
                Ok((limit, offset)) => {
                    let items = state.groups.iter().skip(offset).take(limit).map(group_json).collect();
                    page(items, offset, state.groups.len())
                }
                Err(e) => e,
            },
            ("GET", ["admin", "v2", "groups", id, "users"]) => {
                let Some(group) = state.groups.iter().find(|g| g.id == *id) else { return not_found() };
                match paging(request, 100, GROUP_USERS_MAX_LIMIT) {
                    Ok((limit, offset)) => {
                        let items = group
                            .members
                            .iter()
                            .skip(offset)
                            .take(limit)
                            .map(|&i| json!({ "user_id": state.users[i].id, "username": state.users[i].username }))
                            .collect();
                        page(items, offset, group.members.len())
                    }
                    Err(e) => e,
                }
            }
            ("GET", ["admin", "v2", "logs", "authentication"]) => self.authentication_logs(request, state),
            ("GET", ["admin", "v1", "logs", "administrator"]) => self.administrator_logs(request, state),
            _ => not_found(),
        }
    }

    /// `/admin/v2/logs/authentication`: records between `mintime` and `maxtime` (ms), newest
    /// first, filtered by `users` and `event_types`, paged by `next_offset` ("ts,txid").
    fn authentication_logs(&self, request: &SimRequest, state: &State) -> SimResponse {
        let time = |name: &str| request.query(name).and_then(|v| v.parse::<i64>().ok());
        let (Some(mintime), Some(maxtime)) = (time("mintime"), time("maxtime")) else { return invalid("mintime and maxtime are required") };
        let limit = match request.query("limit").map(str::parse::<usize>) {
            None => 100,
            Some(Ok(l)) if (1..=LOGS_MAX_LIMIT).contains(&l) => l,
            Some(_) => return invalid("limit"),
        };
        let visible_until = (jiff::Timestamp::now() - *self.log_delay.lock().unwrap()).as_millisecond();
        let users: Vec<usize> = request.query.iter().filter(|(k, _)| k == "users").filter_map(|(_, v)| state.user_index(v)).collect();
        let wanted_users = request.query.iter().any(|(k, _)| k == "users");
        let event_types: Vec<&str> = request.query.iter().filter(|(k, _)| k == "event_types").map(|(_, v)| v.as_str()).collect();
        let results: Vec<&str> = request.query.iter().filter(|(k, _)| k == "results").map(|(_, v)| v.as_str()).collect();
        let ascending = match request.query("sort") {
            None | Some("ts:desc") => false,
            Some("ts:asc") => true,
            Some(_) => return invalid("sort"),
        };
        let after: Option<(i64, String)> = match request.query("next_offset") {
            None => None,
            Some(o) => match o.split_once(',').and_then(|(ts, txid)| Some((ts.parse().ok()?, txid.to_string()))) {
                Some(after) => Some(after),
                None => return invalid("next_offset"),
            },
        };
        let mut matching: Vec<&AuthLog> = state
            .logs
            .iter()
            .filter(|l| {
                let ms = l.time.as_millisecond();
                ms >= mintime && ms <= maxtime && ms <= visible_until
            })
            .filter(|l| !wanted_users || users.contains(&l.user))
            .filter(|l| event_types.is_empty() || event_types.contains(&l.event_type))
            .filter(|l| results.is_empty() || results.contains(&l.result))
            .collect();
        matching.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.txid.cmp(&b.txid)));
        if !ascending {
            matching.reverse();
        }
        let total = matching.len();
        if let Some((ts, txid)) = &after {
            // Past the record the offset names, in the order asked for.
            matching.retain(|l| {
                let key = (l.time.as_millisecond(), &l.txid);
                if ascending { key > (*ts, txid) } else { key < (*ts, txid) }
            });
        }
        let more = matching.len() > limit;
        matching.truncate(limit);
        let authlogs: Vec<Value> = matching.iter().map(|l| log_json(state, l)).collect();
        let next = if more { matching.last().map(|l| json!([l.time.as_millisecond().to_string(), l.txid])) } else { None };
        SimResponse::json(
            200,
            &json!({ "stat": "OK", "response": { "authlogs": authlogs, "metadata": { "next_offset": next, "total_objects": total } } }),
        )
    }
}

impl Duo {
    /// `/admin/v1/logs/administrator`: the earliest 1000 records at or after `mintime` (epoch
    /// seconds, optional), oldest first, as a plain list (Duo Admin API, Administrator Logs: "call
    /// this multiple times with mintime to page through the entire log"). Duo documents no delay
    /// for this log (only for the authentication log), so none is modelled. `username` is the
    /// administrator's name ("API" for actions taken through the API) and `description`
    /// serialized JSON, as the page says.
    fn administrator_logs(&self, request: &SimRequest, state: &State) -> SimResponse {
        let mintime = match request.query("mintime").map(str::parse::<i64>) {
            None => 0,
            Some(Ok(t)) => t,
            Some(Err(_)) => return invalid("mintime"),
        };
        let mut records: Vec<&AdminLog> = state.admin_logs.iter().filter(|l| l.time.as_second() >= mintime).collect();
        records.sort_by_key(|l| l.time);
        let items: Vec<Value> = records
            .iter()
            .take(LOGS_MAX_LIMIT)
            .map(|l| {
                json!({
                    "action": l.action, "object": l.object, "username": l.by, "description": l.description,
                    "timestamp": l.time.as_second(), "isotimestamp": l.time.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
                })
            })
            .collect();
        ok(json!(items))
    }
}

/// A phone number as the administrator log names it: "(555) 713-6275" for a North American one.
fn logged_number(number: &str) -> String {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    match digits.strip_prefix('1') {
        Some(n) if n.len() == 10 => format!("({}) {}-{}", &n[..3], &n[3..6], &n[6..]),
        _ => number.to_string(),
    }
}

/// A token as the administrator log names it: its type spelled out, then its serial. The page's
/// one example is "HOTP 8-digit 123456"; the other types' words follow its pattern and are not
/// quoted from Duo (the adapter matches the serial, any word of the object).
fn logged_token(token: &HardwareToken) -> String {
    let type_ = match token.type_ {
        "h6" => "HOTP 6-digit",
        "h8" => "HOTP 8-digit",
        "t6" => "TOTP 6-digit",
        "t8" => "TOTP 8-digit",
        "yk" => "YubiKey AES",
        "d1" => "Duo-D100",
        other => other,
    };
    format!("{type_} {}", token.serial)
}

fn log_json(state: &State, l: &AuthLog) -> Value {
    let user = &state.users[l.user];
    // Duo places an address by city, state and country, without coordinates.
    let place = place_of(&l.ip);
    let location = json!({ "city": place.city, "state": place.region, "country": place.country });
    json!({
        "txid": l.txid,
        "timestamp": l.time.as_second(),
        "isotimestamp": l.time.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string(),
        "event_type": l.event_type,
        "factor": l.factor,
        "result": l.result,
        "reason": l.reason,
        "email": user.username,
        "user": { "key": user.id, "name": user.username, "groups": user.groups.iter().map(|&g| state.groups[g].name.clone()).collect::<Vec<_>>() },
        "application": { "key": "DIY231J8BR23QK4UKBY8", "name": "Corporate VPN" },
        "access_device": {
            "ip": l.ip, "location": location, "browser": "Chrome", "browser_version": "131.0.6778.86",
            "os": "Mac OS X", "os_version": "15.1", "hostname": null, "epkey": null,
        },
        "auth_device": { "ip": l.ip, "location": location, "name": l.device },
        "alias": "",
        "trusted_endpoint_status": "not trusted",
        "ood_software": null,
    })
}

fn list_users(request: &SimRequest, state: &State) -> SimResponse {
    if let Some(name) = request.query("username") {
        let found: Vec<Value> = state.by_username.get(&name.to_lowercase()).map(|&i| user_json(state, &state.users[i])).into_iter().collect();
        return ok(json!(found));
    }
    match paging(request, 100, USERS_MAX_LIMIT) {
        Ok((limit, offset)) => {
            let items = state.users.iter().skip(offset).take(limit).map(|u| user_json(state, u)).collect();
            page(items, offset, state.users.len())
        }
        Err(e) => e,
    }
}

/// `/admin/v1/users/{user_id}` and what hangs below it.
fn user_call(request: &SimRequest, state: &mut State, i: usize, rest: &[&str]) -> SimResponse {
    match (request.method.as_str(), rest) {
        ("GET", []) => ok(user_json(state, &state.users[i])),
        ("POST", []) => {
            // Signature v5 sends the parameters as JSON; older signatures as a form.
            let status = match request.header("content-type") {
                Some(t) if t.starts_with("application/json") => request.json().and_then(|body| body["status"].as_str().map(String::from)),
                _ => request.form_value("status"),
            };
            match status.as_deref() {
                None => {}
                Some("active") => state.users[i].status = "active",
                Some("disabled") => state.users[i].status = "disabled",
                Some("bypass") => state.users[i].status = "bypass",
                Some(_) => return invalid("status"),
            }
            ok(user_json(state, &state.users[i]))
        }
        ("GET", ["phones"]) => user_list(request, state.users[i].phones.iter().map(phone_json).collect()),
        ("GET", ["tokens"]) => user_list(request, state.users[i].tokens.iter().map(token_json).collect()),
        ("GET", ["webauthncredentials"]) => user_list(request, state.users[i].webauthn.iter().map(webauthn_json).collect()),
        ("GET", ["bypass_codes"]) => {
            let user = &state.users[i];
            user_list(request, user.bypass_codes.iter().map(|b| bypass_json(user, b)).collect())
        }
        ("POST", ["bypass_codes"]) => create_bypass_codes(request, state, i),
        ("GET", ["groups"]) => user_list(request, state.users[i].groups.iter().map(|&g| group_json(&state.groups[g])).collect()),
        ("DELETE", ["phones", phone_id]) => {
            let phones = &mut state.users[i].phones;
            let before = phones.len();
            phones.retain(|p| p.id != *phone_id);
            if phones.len() == before { not_found() } else { ok(json!("")) }
        }
        ("DELETE", ["tokens", token_id]) => {
            let tokens = &mut state.users[i].tokens;
            let before = tokens.len();
            tokens.retain(|t| t.id != *token_id);
            if tokens.len() == before { not_found() } else { ok(json!("")) }
        }
        _ => not_found(),
    }
}

impl Provider for Duo {
    fn name(&self) -> &'static str {
        "duo"
    }

    fn bucket(&self, request: &SimRequest) -> &'static str {
        if request.path.starts_with("/admin/v2/logs/") || request.path.starts_with("/admin/v1/logs/") { "logs" } else { "admin" }
    }

    fn handle(&self, request: &SimRequest) -> SimResponse {
        if let Err(refused) = self.authenticate(request) {
            return refused;
        }
        let mut state = self.state.lock().unwrap();
        self.api(request, &mut state)
    }

    fn throttled(&self, _reset: i64) -> SimResponse {
        fail(429, 42901, "Too Many Requests")
    }

    fn seed(&self, seed: &Seed) {
        let created = seed.factor_created();
        let groups = seed.groups.iter().map(|g| Group { id: duo_id("DG", 0), name: g.name.clone(), members: Vec::new() }).collect();
        let mut state = State { groups, ..State::default() };
        state.users.reserve(seed.users as usize);
        for i in 0..seed.users {
            let index = i as usize;
            let name = username(i);
            let id = duo_id("DU", index);
            // Every user has Duo Mobile on a phone; the seed's kinds map to Duo's own devices.
            let mut user = User {
                id: id.clone(),
                username: name.clone(),
                status: "active",
                created,
                phones: vec![Phone { id: duo_id("DP", index), number: format!("+1555{:07}", i % 10_000_000), activated: true, created }],
                tokens: Vec::new(),
                webauthn: Vec::new(),
                bypass_codes: Vec::new(),
                groups: Vec::new(),
            };
            // The phone above already carries push.
            for kind in seed.factors.iter().filter(|k| **k != FactorKind::Push) {
                add_factor(&mut user, index, *kind, created);
            }
            for (g, group) in state.groups.iter_mut().enumerate() {
                if seed.groups_of(i).any(|n| n == group.name) {
                    group.members.push(index);
                    user.groups.push(g);
                }
            }
            state.by_username.insert(name, index);
            state.users.push(user);
        }
        *self.state.lock().unwrap() = state;
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
        state.by_username.get(&username.to_lowercase()).map(|&i| view(&state.users[i]))
    }

    fn set_log_delay(&self, delay: Duration) {
        *self.log_delay.lock().unwrap() = delay;
    }

    fn enroll(&self, username: &str, kind: FactorKind, from_ip: &str) -> Option<String> {
        if kind == FactorKind::RecoveryCodes {
            // Bypass codes are issued by an administrator, not enrolled: no log record.
            let mut state = self.state.lock().unwrap();
            let i = *state.by_username.get(&username.to_lowercase())?;
            return add_factor(&mut state.users[i], i, kind, jiff::Timestamp::now()).map(|(id, _)| id);
        }
        self.act(username, &Activity::new(Act::Enroll { factor: kind }, from_ip)).ok().flatten()
    }

    fn act(&self, username: &str, activity: &Activity) -> Result<Option<String>, String> {
        let mut state = self.state.lock().unwrap();
        let i = *state.by_username.get(&username.to_lowercase()).ok_or("no such user")?;
        let at = activity.at();
        let ip = activity.ip.clone();
        let record = |event_type: &'static str, result: &'static str, reason: &'static str, factor: &'static str, device: Option<String>| AuthLog { user: i, time: at, txid: uuid(), event_type, result, reason, factor, ip: ip.clone(), device };
        let phone = |state: &State| state.users[i].phones.first().map(|p| p.number.clone());
        match activity.what {
            Act::Enroll { .. } if activity.by_admin.is_some() => {
                Err("Duo's authentication log has no entry for a device an administrator adds, and its administrator log names the phone or token, not the user".into())
            }
            Act::Enroll { factor } => {
                let (id, logged) = add_factor(&mut state.users[i], i, factor, at).ok_or_else(|| format!("Duo has no device of kind {}", factor.as_str()))?;
                let device = activity.device.clone().or_else(|| state.users[i].phones.iter().find(|p| p.id == id).map(|p| p.number.clone()));
                state.logs.push(record("enrollment", "success", "user_marked_enrolled", logged, device));
                Ok(Some(id))
            }
            Act::SignIn => {
                let device = activity.device.clone().or_else(|| phone(&state));
                state.logs.push(record("authentication", "success", "user_approved", "duo_push", device));
                Ok(None)
            }
            // The user tapped Deny and said it was a mistake; reporting it as fraud is FraudReported.
            Act::PushDenied => {
                let device = activity.device.clone().or_else(|| phone(&state));
                state.logs.push(record("authentication", "denied", "user_mistake", "duo_push", device));
                Ok(None)
            }
            Act::FraudReported => {
                let device = activity.device.clone().or_else(|| phone(&state));
                state.logs.push(record("authentication", "fraud", "user_marked_fraud", "duo_push", device));
                Ok(None)
            }
            Act::RiskySignIn => Err("Duo's authentication log gives no risk verdict on a sign-in".into()),
            Act::SecondStepWeakened => Err("Duo's authentication log has no entry for a removed device".into()),
            // An administrator's bypass codes are in the administrator log, under the user's name.
            Act::BypassIssued => {
                let (id, _) = add_factor(&mut state.users[i], i, FactorKind::RecoveryCodes, at).ok_or("no bypass code")?;
                let user_id = state.users[i].id.clone();
                let object = state.users[i].username.clone();
                let description = json!({ "bypass": "", "count": 1, "valid_secs": 3600, "remaining_uses": 1, "user_id": user_id, "bypass_code_ids": [id] }).to_string();
                let by = activity.by_admin.clone().unwrap_or_else(|| "API".into());
                state.admin_logs.push(AdminLog { time: at, action: "bypass_create", object, description, by });
                Ok(Some(id))
            }
        }
    }

    fn sign_in_with_bypass(&self, username: &str, code: &str) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        let i = *state.by_username.get(&username.to_lowercase()).ok_or("no such user")?;
        let codes = &mut state.users[i].bypass_codes;
        let at = codes.iter().position(|b| b.code.as_deref() == Some(code)).ok_or("Incorrect passcode. Please try again.")?;
        if codes[at].expires.is_some_and(|e| e <= jiff::Timestamp::now()) {
            return Err("Incorrect passcode. Please try again. (the bypass code expired)".into());
        }
        // A code with no uses left is gone from the user's list.
        if let Some(left) = codes[at].remaining_uses.as_mut() {
            *left -= 1;
            if *left == 0 {
                codes.remove(at);
            }
        }
        Ok(())
    }

    fn add_by_admin(&self, username: &str, kind: FactorKind) -> Option<String> {
        let mut state = self.state.lock().unwrap();
        let i = *state.by_username.get(&username.to_lowercase())?;
        let now = jiff::Timestamp::now();
        // Only phones and hardware tokens are added by an administrator.
        if !matches!(kind, FactorKind::Push | FactorKind::Sms | FactorKind::Totp | FactorKind::Hotp | FactorKind::HardwareToken) {
            return None;
        }
        let (id, _) = add_factor(&mut state.users[i], i, kind, now)?;
        let user = &state.users[i];
        let record = match user.phones.iter().find(|p| p.id == id) {
            Some(phone) => AdminLog { time: now, action: "phone_create", object: logged_number(&phone.number), description: "{}".into(), by: "API".into() },
            None => AdminLog { time: now, action: "hardtoken_create", object: logged_token(user.tokens.iter().find(|t| t.id == id)?), description: "{}".into(), by: "API".into() },
        };
        state.admin_logs.push(record);
        Some(id)
    }
}

fn uuid() -> String {
    let n = fastrand::u128(..);
    let hex = format!("{n:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Gives `user` a device of `kind` created at `created`; its id and the log's factor name.
fn add_factor(user: &mut User, index: usize, kind: FactorKind, created: jiff::Timestamp) -> Option<(String, &'static str)> {
    let token = |type_: &'static str| HardwareToken { id: duo_id("DH", index), serial: format!("{:010}", fastrand::u64(..10_000_000_000)), type_, created };
    match kind {
        FactorKind::Totp => push_token(user, token("t6"), "hardware_token"),
        FactorKind::Hotp => push_token(user, token("h6"), "hardware_token"),
        FactorKind::HardwareToken => push_token(user, token("yk"), "yubikey_code"),
        FactorKind::Webauthn | FactorKind::Passkey => {
            let key = duo_id("WA", index);
            user.webauthn.push(WebauthnCredential { key: key.clone(), name: "Security Key", created });
            Some((key, "webauthn_security_key"))
        }
        FactorKind::RecoveryCodes => {
            let id = duo_id("DB", index);
            user.bypass_codes.push(BypassCode { id: id.clone(), created, code: None, expires: None, remaining_uses: Some(1) });
            Some((id, "bypass_code"))
        }
        FactorKind::Push | FactorKind::Sms => {
            let activated = kind == FactorKind::Push;
            let id = duo_id("DP", index);
            user.phones.push(Phone { id: id.clone(), number: format!("+1555{:07}", fastrand::u32(..10_000_000)), activated, created });
            Some((id, if activated { "duo_push" } else { "sms_passcode" }))
        }
        // Duo has no email codes, security questions, app passwords or whole-2SV enrollments.
        _ => None,
    }
}

fn push_token(user: &mut User, token: HardwareToken, factor: &'static str) -> Option<(String, &'static str)> {
    let id = token.id.clone();
    user.tokens.push(token);
    Some((id, factor))
}

/// The census kind of a token type, as the adapter maps it.
fn token_kind(type_: &str) -> FactorKind {
    match type_ {
        "t6" | "t8" => FactorKind::Totp,
        "h6" | "h8" => FactorKind::Hotp,
        _ => FactorKind::HardwareToken,
    }
}

fn view(user: &User) -> UserView {
    let mut factors = Vec::new();
    for p in &user.phones {
        factors.push(FactorView { id: p.id.clone(), kind: if p.activated { FactorKind::Push } else { FactorKind::Sms }, created: p.created });
    }
    for t in &user.tokens {
        factors.push(FactorView { id: t.id.clone(), kind: token_kind(t.type_), created: t.created });
    }
    for w in &user.webauthn {
        factors.push(FactorView { id: w.key.clone(), kind: FactorKind::Webauthn, created: w.created });
    }
    for b in &user.bypass_codes {
        factors.push(FactorView { id: b.id.clone(), kind: FactorKind::RecoveryCodes, created: b.created });
    }
    UserView { id: user.id.clone(), username: user.username.clone(), active: user.status != "disabled", factors, sessions: 0, grants: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_query;
    use hyper::Method;

    fn duo() -> Duo {
        Duo::new(&json!({ "integration-key": "DIWJ8X6AEYOR5OMC6TQ1", "secret-key": "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep" })).unwrap().with_log_delay(Duration::ZERO)
    }

    /// `request` signed with `secret` by the simulator's own v5 canonicalisation (the adapter's
    /// signing is checked against the simulator by the conformance suite, and against Duo's
    /// reference client in backends::auth).
    fn sign(duo: &Duo, mut request: SimRequest, secret: &str) -> SimRequest {
        let date = jiff::fmt::rfc2822::DateTimePrinter::new().timestamp_to_string(&jiff::Timestamp::now()).unwrap();
        request.headers.insert("date", date.parse().unwrap());
        request.headers.insert("host", "api-test.duosecurity.com".parse().unwrap());
        let signer = Duo::new(&json!({ "integration-key": duo.integration_key, "secret-key": secret })).unwrap();
        let signature = signer.v5_signature(&request, &date);
        let auth = format!("Basic {}", STANDARD.encode(format!("{}:{signature}", duo.integration_key)));
        request.headers.insert("authorization", auth.parse().unwrap());
        request
    }

    fn signed(duo: &Duo, method: Method, path: &str, query: &str, secret: &str) -> SimRequest {
        sign(duo, SimRequest { method, path: path.into(), query: parse_query(query), headers: hyper::HeaderMap::new(), body: Default::default() }, secret)
    }

    fn body(response: &SimResponse) -> Value {
        serde_json::from_slice(&response.body).unwrap()
    }

    #[test]
    fn signatures_are_checked_and_users_paged() {
        let duo = duo();
        duo.seed(&Seed { users: 5, ..Seed::default() });
        let good = duo.handle(&signed(&duo, Method::GET, "/admin/v1/users", "limit=2&offset=2", "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep"));
        let page = body(&good);
        assert_eq!(page["stat"], "OK");
        assert_eq!(page["response"][0]["username"], username(2));
        assert_eq!(page["metadata"]["next_offset"], 4);
        let bad = duo.handle(&signed(&duo, Method::GET, "/admin/v1/users", "limit=2", "not-the-secret"));
        assert_eq!(bad.status, 401);
        assert_eq!(body(&bad)["code"], 40103);
        // The body is signed: a JSON body changed after signing is refused.
        let id = duo.user(&username(1)).unwrap().id;
        let path = format!("/admin/v1/users/{id}");
        let post = |signed_body: &'static str, sent_body: &'static str| {
            let mut headers = hyper::HeaderMap::new();
            headers.insert("content-type", "application/json".parse().unwrap());
            let mut request = sign(&duo, SimRequest { method: Method::POST, path: path.clone(), query: vec![], headers, body: signed_body.as_bytes().into() }, &duo.secret_key);
            request.body = sent_body.as_bytes().into();
            duo.handle(&request)
        };
        assert_eq!(post(r#"{"status":"active"}"#, r#"{"status":"bypass"}"#).status, 401);
        assert_eq!(body(&post(r#"{"status":"disabled"}"#, r#"{"status":"disabled"}"#))["response"]["status"], "disabled");
    }

    #[test]
    fn enrollments_reach_the_log_after_the_delay() {
        let duo = duo().with_log_delay(Duration::from_secs(120));
        duo.seed(&Seed { users: 1, ..Seed::default() });
        let id = duo.user(&username(0)).unwrap().id;
        duo.enroll(&username(0), FactorKind::Push, "203.0.113.7").unwrap();
        let now = jiff::Timestamp::now().as_millisecond();
        let query = format!("mintime={}&maxtime={now}&users={id}&limit=1000", now - 60_000);
        let hidden = duo.handle(&signed(&duo, Method::GET, "/admin/v2/logs/authentication", &query, "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep"));
        assert_eq!(body(&hidden)["response"]["authlogs"].as_array().unwrap().len(), 0);
        *duo.log_delay.lock().unwrap() = Duration::ZERO;
        let shown = duo.handle(&signed(&duo, Method::GET, "/admin/v2/logs/authentication", &query, "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep"));
        let log = &body(&shown)["response"]["authlogs"][0];
        assert_eq!(log["event_type"], "enrollment");
        assert_eq!(log["access_device"]["ip"], "203.0.113.7");
    }

    #[test]
    fn authentication_log_pages_in_either_order_and_filters() {
        let duo = duo();
        duo.seed(&Seed { users: 2, ..Seed::default() });
        let start = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(10);
        let at = |m: i64| Some(start + jiff::SignedDuration::from_mins(m));
        duo.act(&username(0), &Activity { at: at(1), ..Activity::new(Act::SignIn, "198.51.100.20") }).unwrap();
        duo.act(&username(0), &Activity { at: at(2), ..Activity::new(Act::PushDenied, "100.64.7.7") }).unwrap();
        duo.act(&username(1), &Activity { at: at(3), ..Activity::new(Act::FraudReported, "198.51.100.21") }).unwrap();
        duo.act(&username(1), &Activity { at: at(4), ..Activity::new(Act::Enroll { factor: FactorKind::Push }, "198.19.0.9") }).unwrap();
        assert!(duo.act(&username(1), &Activity { by_admin: Some("helpdesk@example.com".into()), ..Activity::new(Act::Enroll { factor: FactorKind::Push }, "198.51.100.21") }).is_err());
        assert!(duo.act(&username(1), &Activity::new(Act::RiskySignIn, "198.51.100.21")).is_err());
        let secret = "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep";
        let window = format!("mintime={}&maxtime={}", start.as_millisecond(), jiff::Timestamp::now().as_millisecond());
        let read = |extra: &str| body(&duo.handle(&signed(&duo, Method::GET, "/admin/v2/logs/authentication", &format!("{window}&{extra}"), secret)))["response"].clone();
        // Oldest first, two a page, each next_offset going on from the page's last record.
        let mut offset: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let page = read(&format!("sort=ts:asc&limit=2{}", offset.as_ref().map(|o| format!("&next_offset={o}")).unwrap_or_default()));
            seen.extend(page["authlogs"].as_array().unwrap().iter().map(|l| (l["result"].as_str().unwrap().to_string(), l["reason"].as_str().unwrap().to_string())));
            match page["metadata"]["next_offset"].as_array() {
                Some(next) => offset = Some(format!("{},{}", next[0].as_str().unwrap(), next[1].as_str().unwrap())),
                None => break,
            }
        }
        let want: Vec<(String, String)> = [("success", "user_approved"), ("denied", "user_mistake"), ("fraud", "user_marked_fraud"), ("success", "user_marked_enrolled")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(seen, want);
        let newest = read("limit=1");
        assert_eq!(newest["authlogs"][0]["event_type"], "enrollment");
        assert_eq!(newest["authlogs"][0]["access_device"]["location"]["country"], "Romania");
        assert!(newest["authlogs"][0]["access_device"]["location"].get("latitude").is_none());
        let id = duo.user(&username(0)).unwrap().id;
        let own = read(&format!("users={id}&sort=ts:asc"));
        let own: Vec<&str> = own["authlogs"].as_array().unwrap().iter().map(|l| l["result"].as_str().unwrap()).collect();
        assert_eq!(own, ["success", "denied"]);
        let enrollments = read("event_types=enrollment");
        assert_eq!(enrollments["authlogs"].as_array().unwrap().len(), 1);
        // A bypass code is in the administrator log, under the user's name.
        duo.act(&username(0), &Activity::new(Act::BypassIssued, "198.51.100.20")).unwrap().unwrap();
        let admin = body(&duo.handle(&signed(&duo, Method::GET, "/admin/v1/logs/administrator", "", secret)));
        let record = admin["response"].as_array().unwrap().iter().find(|r| r["action"] == "bypass_create").unwrap().clone();
        assert_eq!(record["object"], username(0));
        let description: Value = serde_json::from_str(record["description"].as_str().unwrap()).unwrap();
        assert_eq!(description["user_id"], id.as_str());
    }

    #[test]
    fn ids_carry_their_owner() {
        for owner in [0, 1, 31, 32, 999_999, (1 << 30) - 1] {
            let id = duo_id("DU", owner);
            assert_eq!(id.len(), 20);
            assert_eq!(owner_of(&id), Some(owner));
        }
        assert_eq!(owner_of("DU1"), None);
    }

    #[test]
    fn seeded_devices_map_to_census_kinds() {
        let duo = duo();
        duo.seed(&Seed { users: 1, ..Seed::default() });
        let kinds: Vec<FactorKind> = duo.user(&username(0)).unwrap().factors.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec![FactorKind::Push, FactorKind::Totp, FactorKind::Webauthn, FactorKind::RecoveryCodes]);
    }
}
