//! Duo Admin API, every request signed with the Admin API application's integration and secret
//! keys (signature v5: HMAC-SHA512 over the canonical request, body hash and `Date`).
//!
//! Duo shows creation times only for WebAuthn credentials (`date_added`) and bypass codes
//! (`created`), in whole seconds. Phones and hardware tokens have none: they are recorded as of
//! unknown age, and deleted only when the account's logs, read from the cutoff once their
//! documented delay has passed since the snapshot, show no registration of them: neither an
//! enrollment of a device of that kind by the user (authentication log) nor an administrator
//! creating or changing that phone number or token serial (administrator log). Both logs are read
//! account-wide, once for many users (`DeviceLog`), because Duo limits log requests tightly.
//! Duo has no session API, so sessions are left to the applications it protects.
//! The window's event stream is the authentication log, oldest first (`sort=ts:asc`), from the
//! last record read (Duo's `next_offset`, "timestamp,txid"); a user's own history narrows it with
//! `users`. Duo lists a record only once its two minutes have passed, in time order, so reading
//! on from the last record read misses none.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::auth::{duo_authorization, duo_canonical_params};
use super::http::{Op, ProviderHttp, SecretKeys, SecretString};
use super::{
    Age, BypassSupport, Capabilities, IssuedBypass, Enrollment, EnrollmentOrigin, FactorRef, IdentityProvider, Inseparable, LoggedAge, Membership, NameMatch, ErrorKind, ProviderError, Record, RevokeOutcome, Shown, Unreadable, UserPage,
    UserRef, UserSnapshot, enc, selected, split,
};
use crate::api::{DuoProvider, FactorKind};
use crate::watch::{Actor, ClientInfo, EventKind, EventPage, EventQuery, Geo, IdentityEvent, Personal};

/// Users per listing request (Duo's maximum).
const USERS_PAGE: usize = 300;
const GROUPS_PAGE: usize = 100;
const GROUP_USERS_PAGE: usize = 500;
const LOGS_PAGE: usize = 1000;
/// Duo: "authentication log records ... may take up to two minutes to become available"
/// (Admin API, Authentication Logs): a record younger than this may not be listed yet.
const LOG_DELAY: std::time::Duration = std::time::Duration::from_secs(120);

const PROVIDER_TYPE_PHONE: &str = "phone";
const PROVIDER_TYPE_TOKEN: &str = "token";
const PROVIDER_TYPE_WEBAUTHN: &str = "webauthn";
const PROVIDER_TYPE_BYPASS: &str = "bypass_code";

const LIST_USERS: Op = Op::new("list_users", "admin");
const GET_USER: Op = Op::new("get_user", "admin");
const FIND_GROUP: Op = Op::new("find_group", "admin");
const LIST_MEMBERS: Op = Op::new("list_members", "admin");
const LIST_FACTORS: Op = Op::new("list_factors", "admin");
const DELETE_FACTOR: Op = Op::new("delete_factor", "admin");
const UPDATE_USER: Op = Op::new("update_user", "admin");
const ISSUE_BYPASS: Op = Op::new("issue_bypass", "admin");
const ENROLLMENT_EVENTS: Op = Op::new("enrollment_events", "logs");
const READ_EVENTS: Op = Op::new("read_events", "logs");
/// What the stream keeps: enrollments and what should make one suspect (successful sign-ins are
/// read only in a user's own history, where the rules need them).
const STREAMED: [EventKind; 4] = [EventKind::FactorEnrolled, EventKind::PushDenied, EventKind::FraudReported, EventKind::BypassUsed];
/// The administrator-log action that issues a user bypass codes (Administrator Logs).
const BYPASS_CREATED: &str = "bypass_create";
/// How far past this machine's clock an administrator-log record may be dated and still move the
/// stream on (a record from further on would skip what is logged until then).
const CLOCK_SKEW_SECONDS: i64 = 300;
/// Reasons of a denied authentication that mean a push or call the user denied or let expire.
const DENIED_PUSH: [&str; 3] = ["user_mistake", "no_response", "anomalous_push"];
const ADMIN_EVENTS: Op = Op::new("admin_events", "logs");
/// The administrator log answers with at most this many records, the earliest from `mintime`.
const ADMIN_LOG_PAGE: usize = 1000;
/// Administrator-log actions on a device, by the device class their `object` names (a phone
/// number, or a token's type and serial). Duo Admin API, Administrator Logs: `object` is "the
/// object that was acted on", for example "(555) 713-6275 x456" for phones or "HOTP 8-digit
/// 123456" for tokens. Creating or attaching one makes it new; changing one (its number, a new
/// Duo Mobile activation) leaves its age unknown.
const PHONE_CREATED: [&str; 2] = ["phone_create", "phone_associate"];
const PHONE_CHANGED: [&str; 3] = ["phone_update", "regen_mobile", "regen_sms"];
const TOKEN_CREATED: [&str; 1] = ["hardtoken_create"];
const TOKEN_CHANGED: [&str; 1] = ["hardtoken_update"];
/// How long a failed read of the logs is answered with its error before the logs are read again.
const FAILED_READ_HELD: std::time::Duration = std::time::Duration::from_secs(10);
/// How stale the account's log may be when asked who enrolled.
const LOG_REREAD: std::time::Duration = std::time::Duration::from_secs(60);
/// Pages of one log read, at most (a million records): a provider that pages for ever is refused.
const LOG_PAGES: usize = 1000;

#[derive(Deserialize)]
struct User {
    user_id: String,
    username: String,
    #[serde(default)]
    phones: Vec<Phone>,
    #[serde(default)]
    tokens: Vec<Token>,
    #[serde(default)]
    webauthncredentials: Vec<WebauthnCredential>,
    /// Epoch seconds.
    #[serde(default)]
    created: Option<i64>,
}

impl User {
    fn into_ref(self) -> UserRef {
        UserRef { id: self.user_id, username: self.username }
    }
}

#[derive(Deserialize)]
struct Phone {
    phone_id: String,
    #[serde(default)]
    number: Option<String>,
    #[serde(default)]
    activated: bool,
    #[serde(default)]
    capabilities: Vec<String>,
}

#[derive(Deserialize)]
struct Token {
    token_id: String,
    #[serde(rename = "type", default)]
    type_: String,
    #[serde(default)]
    serial: Option<String>,
}

#[derive(Deserialize)]
struct WebauthnCredential {
    webauthnkey: String,
    /// Epoch seconds.
    date_added: Option<i64>,
}

#[derive(Deserialize)]
struct BypassCode {
    bypass_code_id: String,
    /// Epoch seconds.
    created: Option<i64>,
}

#[derive(Deserialize)]
struct Group {
    group_id: String,
    name: String,
}

#[derive(Deserialize)]
struct GroupMember {
    user_id: String,
    username: String,
}

#[derive(Deserialize)]
struct AuthLogs {
    #[serde(default)]
    authlogs: Vec<AuthLog>,
    #[serde(default)]
    metadata: Option<LogMetadata>,
}

#[derive(Deserialize)]
struct LogMetadata {
    /// `[timestamp_ms, txid]` of the last record, to continue after it.
    next_offset: Option<Vec<String>>,
}

#[derive(Clone, Deserialize)]
struct AuthLog {
    #[serde(default)]
    txid: Option<String>,
    #[serde(default)]
    user: Option<LogUser>,
    /// Epoch seconds.
    timestamp: i64,
    isotimestamp: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    factor: Option<String>,
    #[serde(default)]
    access_device: Option<AccessDevice>,
}

#[derive(Clone, Deserialize)]
struct LogUser {
    key: Option<String>,
}

/// One administrator-log record: documented fields only.
#[derive(Deserialize)]
struct AdminLog {
    #[serde(default)]
    action: String,
    #[serde(default)]
    object: Option<String>,
    /// Epoch seconds.
    timestamp: i64,
}

#[derive(Clone, Deserialize)]
struct AccessDevice {
    ip: Option<String>,
    location: Option<Location>,
    browser: Option<String>,
    browser_version: Option<String>,
    os: Option<String>,
    os_version: Option<String>,
}

#[derive(Clone, Deserialize)]
struct Location {
    city: Option<String>,
    state: Option<String>,
    country: Option<String>,
}

/// Duo's answer envelope: `{stat, response, metadata}`.
struct Envelope {
    response: Value,
    next_offset: Option<usize>,
}

pub struct Duo {
    http: ProviderHttp,
    base: String,
    /// host[:port] as signed (lower case).
    host: String,
    integration_key: String,
    secret_key: SecretString,
    secret_name: String,
    /// Shared by every user's `factor_ages`: one refresh at a time, the others wait and reuse it.
    device_log: tokio::sync::Mutex<DeviceLog>,
}

/// Device registrations in the account since one cutoff, from both logs, complete up to a time.
#[derive(Default)]
struct DeviceLog {
    cutoff: Option<jiff::Timestamp>,
    /// Every record up to here has been read: the last read's time less the log delay.
    complete_until: Option<jiff::Timestamp>,
    /// The authentication log's enrollment records, by Duo user id ("" when the record names no
    /// user: it may be anyone's).
    enrolled: HashMap<String, Vec<AuthLog>>,
    /// Phone numbers (digits) and token serials an administrator created or attached, and those
    /// an administrator changed.
    admin_phones: Vec<String>,
    admin_tokens: Vec<String>,
    changed_phones: Vec<String>,
    changed_tokens: Vec<String>,
    /// An administrator acted on a phone (token) the record does not identify: no phone (token)
    /// of unknown age can be dated.
    unidentified_phone: bool,
    unidentified_token: bool,
    /// Records already taken: successive reads overlap by the log delay.
    seen: HashSet<String>,
    /// The last read that failed, and when: the users waiting on the read get its error instead
    /// of each reading the whole log again.
    failed: Option<(jiff::Timestamp, ProviderError)>,
}

impl DeviceLog {
    /// The user's enrollment records since `since` (the log may reach back further).
    fn enrollments_of<'a>(&'a self, user: &UserRef, since: jiff::Timestamp) -> impl Iterator<Item = &'a AuthLog> + 'a {
        let records = self.enrolled.get(&user.id).into_iter().flatten();
        records.filter(move |record| logged_at(record).is_none_or(|at| at.since(since)))
    }

    /// What the logs say of `factors` of `user`: enrolled by the user (a device of its class),
    /// or created or changed by an administrator (that number or serial), since the cutoff.
    fn ages(&self, user: &UserRef, factors: &[FactorRef], cutoff: jiff::Timestamp) -> Vec<LoggedAge> {
        let anyone = self.enrolled.get("").into_iter().flatten();
        let enrolled: Vec<&str> = self.enrollments_of(user, cutoff).chain(anyone).map(|record| record.factor.as_deref().unwrap_or_default()).collect();
        let by_user = super::date_from_log(factors, &enrolled, |logged, f| may_be_of(logged, f.kind));
        factors
            .iter()
            .zip(by_user)
            .map(|(factor, age)| {
                // A device with no number or serial (a tablet, an older ledger's record) cannot be
                // matched: any administrator record of its class leaves it unknown.
                let (by_admin, unidentified) = match Device::of(factor) {
                    Device::Phone(digits) => (
                        self.admin_phones.iter().any(|logged| same_number(logged, digits)),
                        self.unidentified_phone
                            || self.changed_phones.iter().any(|logged| same_number(logged, digits))
                            || (digits.is_empty() && !(self.admin_phones.is_empty() && self.changed_phones.is_empty())),
                    ),
                    Device::Token(serial) => (
                        self.admin_tokens.iter().any(|logged| logged == serial),
                        self.unidentified_token || self.changed_tokens.iter().any(|logged| logged == serial) || (serial.is_empty() && !(self.admin_tokens.is_empty() && self.changed_tokens.is_empty())),
                    ),
                    Device::Other => (false, false),
                };
                match age {
                    LoggedAge::Since => LoggedAge::Since,
                    _ if by_admin => LoggedAge::Since,
                    LoggedAge::Before if unidentified => LoggedAge::Unknown,
                    age => age,
                }
            })
            .collect()
    }

    fn note_admin_action(&mut self, record: &AdminLog) {
        let object = record.object.as_deref().unwrap_or_default();
        let action = record.action.as_str();
        if PHONE_CREATED.contains(&action) || PHONE_CHANGED.contains(&action) {
            let digits = phone_digits(object);
            match (digits.len() >= MIN_NUMBER_DIGITS, PHONE_CREATED.contains(&action)) {
                (false, _) => self.unidentified_phone = true,
                (true, true) => self.admin_phones.push(digits),
                (true, false) => self.changed_phones.push(digits),
            }
        } else if TOKEN_CREATED.contains(&action) || TOKEN_CHANGED.contains(&action) {
            // The object names the token's type in words, then its serial: every word may be it.
            let words = object.split_whitespace().map(String::from);
            match (object.trim().is_empty(), TOKEN_CREATED.contains(&action)) {
                (true, _) => self.unidentified_token = true,
                (false, true) => self.admin_tokens.extend(words),
                (false, false) => self.changed_tokens.extend(words),
            }
        }
    }
}

/// When an authentication-log record was made, at the precision it shows (None: unreadable,
/// taken as since any time).
fn logged_at(record: &AuthLog) -> Option<Shown> {
    record.isotimestamp.as_deref().and_then(Shown::text).or_else(|| Shown::seconds(record.timestamp))
}

/// What identifies a device of unknown age in the logs, from its recorded provider type.
enum Device<'a> {
    Phone(&'a str),
    Token(&'a str),
    Other,
}

impl<'a> Device<'a> {
    fn of(factor: &'a FactorRef) -> Self {
        let mut parts = factor.provider_type.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(PROVIDER_TYPE_PHONE), digits, _) => Device::Phone(digits.unwrap_or_default()),
            (Some(PROVIDER_TYPE_TOKEN), _, serial) => Device::Token(serial.unwrap_or_default()),
            _ => Device::Other,
        }
    }
}

/// Fewer digits than this name no phone number.
const MIN_NUMBER_DIGITS: usize = 7;

/// A phone number's digits, without its extension ("(555) 713-6275 x456" gives 5557136275).
fn phone_digits(number: &str) -> String {
    number.split('x').next().unwrap_or_default().chars().filter(char::is_ascii_digit).collect()
}

/// Whether two numbers' digits are one phone: equal, or one the other with a country code before it.
fn same_number(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short.len() >= MIN_NUMBER_DIGITS && long.ends_with(short)
}

impl Duo {
    pub fn new(http: ProviderHttp, spec: &DuoProvider, keys: &SecretKeys) -> Result<Self, ProviderError> {
        let base = spec.url.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base).map_err(|e| ProviderError::new(ErrorKind::Config, format!("spec.duo.url is not a URL: {e}")))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(ProviderError::new(ErrorKind::Config, "spec.duo.url has no host")),
        };
        Ok(Self {
            http,
            base,
            host: host.to_lowercase(),
            integration_key: keys.get("integration-key")?.expose().to_string(),
            secret_key: keys.get("secret-key")?,
            secret_name: keys.name.to_string(),
            device_log: tokio::sync::Mutex::default(),
        })
    }

    /// One signed Admin API call (signature v5). GET and DELETE carry the parameters in the query,
    /// in Duo's canonical encoding so the signed text is exactly what is sent; POST in a JSON body
    /// with sorted keys, as Duo's reference client sends it. Returns the envelope, or None on a
    /// status in `tolerated` (404 for things already gone).
    async fn call(&self, op: Op, method: Method, path: &str, params: &[(&str, String)], tolerated: &[StatusCode]) -> Result<Option<Envelope>, ProviderError> {
        let in_body = method == Method::POST || method == Method::PUT;
        let (query, body): (Vec<(String, String)>, String) = if in_body {
            let fields: std::collections::BTreeMap<&str, &str> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            (Vec::new(), serde_json::to_string(&fields).map_err(|e| self.http.error(ErrorKind::Config, format!("encoding a request body: {e}")))?)
        } else {
            (params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(), String::new())
        };
        let canonical = duo_canonical_params(&query);
        let date = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_string(&jiff::Timestamp::now())
            .map_err(|e| self.http.error(ErrorKind::Config, format!("formatting the Date header: {e}")))?;
        let authorization = duo_authorization(&self.integration_key, &self.secret_key, &date, method.as_str(), &self.host, path, &query, &body);
        let url = if canonical.is_empty() { format!("{}{path}", self.base) } else { format!("{}{path}?{canonical}", self.base) };
        let build = || {
            let builder = self.http.request(method.clone(), &url).header("authorization", &authorization).header("date", &date);
            if in_body { builder.header("content-type", "application/json").body(body.clone()) } else { builder }
        };
        // The Date is signed once, before the first attempt; retries stay well inside Duo's five-minute window.
        let reply = self.http.send(op, build).await?;
        let status = reply.status;
        let value = reply.value();
        if status.is_success() && value["stat"] == "OK" {
            let next_offset = value["metadata"]["next_offset"].as_u64().map(|n| n as usize);
            return Ok(Some(Envelope { response: value["response"].clone(), next_offset }));
        }
        if tolerated.contains(&status) {
            return Ok(None);
        }
        let detail = brief(&value);
        Err(match status {
            StatusCode::UNAUTHORIZED => self.http.error(ErrorKind::Auth, format!(
                "401 from {method} {path} ({detail}): check integration-key and secret-key in Secret {} and the API hostname in spec.duo.url; Duo also refuses a clock more than 5 minutes off", self.secret_name
            )),
            StatusCode::FORBIDDEN => self.http.error(ErrorKind::Auth, format!(
                "403 from {method} {path} ({detail}): grant the Admin API application \"Grant read resource\", \"Grant write resource\" and \"Grant read log\"")),
            _ => self.http.error(ErrorKind::Rejected, format!("{status} from {method} {path}: {detail}")),
        })
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, path: &str, value: Value) -> Result<T, ProviderError> {
        serde_json::from_value(value).map_err(|e| self.http.error(ErrorKind::Rejected, format!("unexpected body from {path}: {e}")))
    }

    fn user_gone(&self, user: &UserRef) -> ProviderError {
        self.http.error(ErrorKind::NotFound, format!("user {} no longer exists", user.username))
    }

    async fn user(&self, user: &UserRef) -> Result<User, ProviderError> {
        let path = format!("/admin/v1/users/{}", enc(&user.id));
        let envelope = self.call(GET_USER, Method::GET, &path, &[], &[StatusCode::NOT_FOUND]).await?.ok_or_else(|| self.user_gone(user))?;
        self.parse(&path, envelope.response)
    }

    /// The group's id, looked up by name (Duo lists groups, it does not search them).
    async fn find_group(&self, name: &str) -> Result<String, ProviderError> {
        let mut offset = 0;
        loop {
            let envelope = self
                .call(FIND_GROUP, Method::GET, "/admin/v1/groups", &[("limit", GROUPS_PAGE.to_string()), ("offset", offset.to_string())], &[])
                .await?
                .unwrap_or(Envelope { response: Value::Null, next_offset: None });
            let groups: Vec<Group> = self.parse("/admin/v1/groups", envelope.response)?;
            if let Some(group) = groups.into_iter().find(|g| g.name == name) {
                return Ok(group.group_id);
            }
            match envelope.next_offset {
                Some(next) => offset = next,
                None => return Err(self.http.error(ErrorKind::NotFound, format!("group {name} not found"))),
            }
        }
    }

    async fn members_page(&self, group_id: &str, offset: usize) -> Result<(Vec<UserRef>, Vec<Unreadable>, Option<usize>), ProviderError> {
        let path = format!("/admin/v2/groups/{}/users", enc(group_id));
        let envelope = self
            .call(LIST_MEMBERS, Method::GET, &path, &[("limit", GROUP_USERS_PAGE.to_string()), ("offset", offset.to_string())], &[StatusCode::NOT_FOUND])
            .await?
            .ok_or_else(|| self.http.error(ErrorKind::NotFound, format!("group {group_id} no longer exists")))?;
        let (members, unreadable) = split(self.parse::<Vec<Record<GroupMember>>>(&path, envelope.response)?);
        Ok((members.into_iter().map(|m| UserRef { id: m.user_id, username: m.username }).collect(), unreadable, envelope.next_offset))
    }

    /// The account's enrollment records in the authentication log from `since` to `until`. Duo
    /// shows records about two minutes late, so an empty answer is not proof of no enrollment.
    async fn enrollments(&self, since: jiff::Timestamp, until: jiff::Timestamp) -> Result<Vec<AuthLog>, ProviderError> {
        let path = "/admin/v2/logs/authentication";
        let mut found = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..LOG_PAGES {
            let mut params = vec![("mintime", since.as_millisecond().to_string()), ("maxtime", until.as_millisecond().to_string())];
            params.extend([("event_types", "enrollment".to_string()), ("limit", LOGS_PAGE.to_string())]);
            if let Some(offset) = &next {
                params.push(("next_offset", offset.clone()));
            }
            let envelope = self.call(ENROLLMENT_EVENTS, Method::GET, path, &params, &[]).await?.unwrap_or(Envelope { response: Value::Null, next_offset: None });
            let page: AuthLogs = self.parse(path, envelope.response)?;
            found.extend(page.authlogs.into_iter().filter(|l| l.event_type.as_deref() == Some("enrollment")));
            // Duo: call again "as long as the result metadata has next_offset values".
            let after = page.metadata.and_then(|m| m.next_offset).filter(|o| !o.is_empty()).map(|o| o.join(","));
            if after.is_none() || after == next {
                return Ok(found);
            }
            next = after;
        }
        Err(self.http.error(ErrorKind::Rejected, format!("the authentication log went on for more than {LOG_PAGES} pages")))
    }

    /// The account's device registrations since `since` (or earlier), complete at least up to
    /// `complete_by`: read again (from where the last read was complete) only when it is not yet.
    async fn device_log(&self, since: jiff::Timestamp, complete_by: jiff::Timestamp) -> Result<tokio::sync::MutexGuard<'_, DeviceLog>, ProviderError> {
        let mut log = self.device_log.lock().await;
        if log.cutoff.is_none_or(|cutoff| cutoff > since) {
            *log = DeviceLog { cutoff: Some(since), ..DeviceLog::default() };
        }
        if log.complete_until.is_some_and(|complete| complete >= complete_by) {
            return Ok(log);
        }
        let now = jiff::Timestamp::now();
        if let Some((at, error)) = &log.failed
            && now.duration_since(*at) < jiff::SignedDuration::try_from(FAILED_READ_HELD).unwrap_or_default()
        {
            return Err(error.clone());
        }
        match self.read_device_log(&mut log, now).await {
            Ok(()) => {
                log.failed = None;
                Ok(log)
            }
            Err(e) => {
                log.failed = Some((now, e.clone()));
                Err(e)
            }
        }
    }

    /// Enrollment records the event stream read, added to the device log being kept for this
    /// cutoff: a re-enrollment the stream shows is then known without reading the log again (more
    /// enrollments only keep more devices of unknown age).
    async fn note_enrollments(&self, records: &[Value]) {
        let mut log = self.device_log.lock().await;
        let Some(cutoff) = log.cutoff else { return };
        for value in records.iter().filter(|r| r["event_type"].as_str().is_some_and(|t| t.trim().eq_ignore_ascii_case("enrollment"))) {
            let Ok(record) = serde_json::from_value::<AuthLog>(value.clone()) else { continue };
            let Some(txid) = record.txid.clone() else { continue };
            if logged_at(&record).is_some_and(|at| at.since(cutoff)) && log.seen.insert(txid) {
                let user = record.user.as_ref().and_then(|u| u.key.clone()).unwrap_or_default();
                log.enrolled.entry(user).or_default().push(record);
            }
        }
    }

    /// Reads both logs from where `log` is complete up to `now`.
    async fn read_device_log(&self, log: &mut DeviceLog, now: jiff::Timestamp) -> Result<(), ProviderError> {
        let cutoff = log.cutoff.unwrap_or(now);
        let from = log.complete_until.unwrap_or(cutoff);
        for record in self.enrollments(from, now).await? {
            // Without a txid a record cannot be told from a repeat: it is kept again, which only
            // keeps more devices.
            if record.txid.as_ref().is_none_or(|txid| log.seen.insert(txid.clone())) {
                let user = record.user.as_ref().and_then(|u| u.key.clone()).unwrap_or_default();
                log.enrolled.entry(user).or_default().push(record);
            }
        }
        // Seconds: a record in the cutoff's own second counts as since the cutoff.
        let mut mintime = from.as_second();
        let latest_possible = now.as_second() + 300;
        for page in 0.. {
            if page == LOG_PAGES {
                return Err(self.http.error(ErrorKind::Rejected, format!("the administrator log went on for more than {LOG_PAGES} pages")));
            }
            let path = "/admin/v1/logs/administrator";
            let envelope = self.call(ADMIN_EVENTS, Method::GET, path, &[("mintime", mintime.to_string())], &[]).await?;
            let records: Vec<AdminLog> = self.parse(path, envelope.map(|e| e.response).unwrap_or(Value::Array(vec![])))?;
            let full = records.len() >= ADMIN_LOG_PAGE;
            let last = records.iter().map(|r| r.timestamp).max().unwrap_or(mintime);
            for record in &records {
                if log.seen.insert(format!("admin\0{}\0{}\0{:?}", record.timestamp, record.action, record.object)) {
                    log.note_admin_action(record);
                }
            }
            if !full {
                break;
            }
            if last <= mintime || last > latest_possible {
                return Err(self.http.error(ErrorKind::Rejected, format!(
                    "the administrator log cannot be paged on from {mintime} (more than {ADMIN_LOG_PAGE} records in one second, or records from the future)")));
            }
            mintime = last;
        }
        let delay = jiff::SignedDuration::try_from(self.http.log_delay(LOG_DELAY)).unwrap_or(jiff::SignedDuration::MAX);
        log.complete_until = Some(now.checked_sub(delay).unwrap_or(cutoff));
        Ok(())
    }
}

/// Duo user ids: `DU` and 18 more upper-case letters and digits.
fn looks_like_user_id(name: &str) -> bool {
    name.len() == 20 && name.starts_with("DU") && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// What a phone is as a factor: Duo Mobile (push) when activated, else SMS and voice codes.
fn phone_kind(phone: &Phone) -> FactorKind {
    if phone.activated || phone.capabilities.iter().any(|c| c == "push") { FactorKind::Push } else { FactorKind::Sms }
}

fn token_kind(type_: &str) -> FactorKind {
    match type_ {
        "t6" | "t8" => FactorKind::Totp,
        "h6" | "h8" => FactorKind::Hotp,
        // yk (YubiKey OTP), d1 (Duo-D100) and anything newer.
        _ => FactorKind::HardwareToken,
    }
}

const PHONE_KINDS: [FactorKind; 2] = [FactorKind::Push, FactorKind::Sms];
const TOKEN_KINDS: [FactorKind; 3] = [FactorKind::Totp, FactorKind::Hotp, FactorKind::HardwareToken];

/// Whether factors of kinds `a` and `b` are devices of one class (phones, tokens).
fn may_be_same_device(a: FactorKind, b: FactorKind) -> bool {
    a == b || [&PHONE_KINDS[..], &TOKEN_KINDS[..]].iter().any(|class| class.contains(&a) && class.contains(&b))
}

/// Whether an enrollment the log names by `factor` may have been of a device of `kind`: a
/// phone carries push and SMS together, a token any one-time code; a name not known may be any.
fn may_be_of(factor: &str, kind: FactorKind) -> bool {
    let logged = match factor {
        f if f.contains("webauthn") || f.contains("u2f") => FactorKind::Webauthn,
        f if f.contains("bypass") => FactorKind::RecoveryCodes,
        f if f.contains("push") || f.contains("duo_mobile") || f.contains("sms") || f.contains("phone_call") => FactorKind::Push,
        f if f.contains("yubikey") || f.contains("token") => FactorKind::HardwareToken,
        // A bare "passcode" may come from a token or from Duo Mobile on a phone; anything else unknown may be any device.
        _ => return true,
    };
    may_be_same_device(logged, kind)
}

fn log_kind(factor: &str) -> FactorKind {
    match factor {
        f if f.contains("webauthn") || f.contains("u2f") => FactorKind::Webauthn,
        f if f.contains("push") || f.contains("duo_mobile") => FactorKind::Push,
        f if f.contains("sms") || f.contains("phone_call") => FactorKind::Sms,
        f if f.contains("yubikey") => FactorKind::HardwareToken,
        f if f.contains("bypass") => FactorKind::RecoveryCodes,
        _ => FactorKind::HardwareToken,
    }
}

/// The factor an authentication-log `factor` names, where it is clear.
fn event_factor(factor: &str) -> Option<FactorKind> {
    match factor {
        f if f.contains("webauthn") || f.contains("u2f") => Some(FactorKind::Webauthn),
        f if f.contains("push") => Some(FactorKind::Push),
        f if f.contains("sms") || f.contains("phone_call") => Some(FactorKind::Sms),
        f if f.contains("yubikey") || f.contains("hardware_token") => Some(FactorKind::HardwareToken),
        f if f.contains("bypass") => Some(FactorKind::RecoveryCodes),
        _ => None,
    }
}

/// An authentication-log record as an identity event; None for what the watch does not read
/// (failures other than denied pushes, other event types); Err says why the record cannot be read
/// (it is skipped and counted).
fn identity_event(record: &Value) -> Result<Option<IdentityEvent>, String> {
    let text = |v: &Value| v.as_str().map(str::trim).filter(|s| !s.is_empty()).map(String::from);
    let lower = |v: &Value| v.as_str().map(|s| s.trim().to_ascii_lowercase()).unwrap_or_default();
    let id = text(&record["txid"]).ok_or("an authentication-log record without a txid")?;
    let at = record["isotimestamp"]
        .as_str()
        .and_then(|t| t.trim().parse::<jiff::Timestamp>().ok())
        .or_else(|| record["timestamp"].as_i64().and_then(|s| jiff::Timestamp::from_second(s).ok()))
        .ok_or_else(|| format!("authentication-log record {id}: no readable time"))?;
    let (event_type, result, reason, factor) = (lower(&record["event_type"]), lower(&record["result"]), lower(&record["reason"]), lower(&record["factor"]));
    let kind = match (event_type.as_str(), result.as_str()) {
        ("enrollment", "success") => EventKind::FactorEnrolled,
        ("authentication", _) if result == "fraud" || reason == "user_marked_fraud" => EventKind::FraudReported,
        ("authentication", "success") if reason == "bypass_user" => EventKind::BypassUsed,
        ("authentication", "success") => EventKind::MfaChallenge,
        ("authentication", "denied" | "failure") if DENIED_PUSH.contains(&reason.as_str()) => EventKind::PushDenied,
        _ => return Ok(None),
    };
    let user_id = text(&record["user"]["key"]).ok_or_else(|| format!("authentication-log record {id}: names no user"))?;
    let device = &record["access_device"];
    let location = &device["location"];
    // Duo places an address by city, state and country, without coordinates.
    let place = Geo { country: text(&location["country"]), region: text(&location["state"]), city: text(&location["city"]), point: None };
    let has_place = place.country.is_some() || place.city.is_some();
    let agent: Vec<String> = [("browser", "browser_version"), ("os", "os_version")]
        .into_iter()
        .filter_map(|(name, version)| text(&device[name]).map(|n| format!("{n} {}", text(&device[version]).unwrap_or_default()).trim().to_string()))
        .collect();
    Ok(Some(IdentityEvent {
        id,
        at,
        user_id,
        kind,
        // The authentication log records what the user did; an administrator's acts are in the administrator log.
        actor: Actor::User,
        client: ClientInfo {
            ip: ClientInfo::ip_of(device["ip"].as_str()),
            user_agent: (!agent.is_empty()).then(|| agent.join("; ")),
            geo: has_place.then_some(place),
            asn: None,
            proxy: false,
        },
        factor: event_factor(&factor),
        // The phone or device the factor was used on (its name carries the number).
        device: record["auth_device"]["name"].as_str().and_then(Personal::new),
    }))
}

/// An administrator-log record as an event: bypass codes issued to a user, by the administrator
/// it names ("API" for the Admin API). `description` is serialized JSON naming the user's id.
fn admin_event(record: &Value, digest: String) -> Result<Option<IdentityEvent>, String> {
    if !record["action"].as_str().is_some_and(|a| a.trim().eq_ignore_ascii_case(BYPASS_CREATED)) {
        return Ok(None);
    }
    let at = record["timestamp"].as_i64().and_then(|s| jiff::Timestamp::from_second(s).ok()).ok_or("an administrator-log record without a readable time")?;
    let description = match &record["description"] {
        Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        other => other.clone(),
    };
    let user_id = description["user_id"].as_str().map(str::trim).filter(|id| !id.is_empty()).ok_or_else(|| format!("administrator-log {BYPASS_CREATED} at {at}: its description names no user_id"))?;
    let actor = record["username"].as_str().map(str::trim).filter(|n| !n.is_empty()).map_or(Actor::Unknown, |n| Actor::Other(n.to_string()));
    Ok(Some(IdentityEvent {
        id: format!("admin-{digest}"),
        at,
        user_id: user_id.to_string(),
        kind: EventKind::BypassIssued,
        actor,
        // The administrator log names no client.
        client: ClientInfo::default(),
        factor: Some(FactorKind::RecoveryCodes),
        device: None,
    }))
}

/// A Duo `next_offset` ("timestamp_ms,txid") worth sending back.
fn usable_offset(cursor: &str) -> Option<(i64, &str)> {
    let (ms, txid) = cursor.split_once(',')?;
    let ok = !txid.is_empty() && txid.len() <= 64 && txid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then_some(())?;
    Some((ms.parse().ok().filter(|ms: &i64| *ms >= 0)?, txid))
}

fn origin(device: &AccessDevice) -> EnrollmentOrigin {
    let geo: Vec<&str> =
        device.location.as_ref().map(|l| [&l.country, &l.state, &l.city].into_iter().filter_map(|p| p.as_deref().filter(|s| !s.is_empty())).collect()).unwrap_or_default();
    let agent: Vec<String> = [(&device.browser, &device.browser_version), (&device.os, &device.os_version)]
        .into_iter()
        .filter_map(|(name, version)| name.as_ref().map(|n| format!("{n} {}", version.as_deref().unwrap_or_default()).trim().to_string()))
        .collect();
    EnrollmentOrigin {
        ip: device.ip.clone(),
        user_agent: (!agent.is_empty()).then(|| agent.join("; ")),
        geo: (!geo.is_empty()).then(|| geo.join("/")),
        asn: None,
    }
}

impl Duo {
    /// Never "bypass": that status skips MFA altogether.
    async fn set_status(&self, user: &UserRef, status: &str) -> Result<(), ProviderError> {
        let path = format!("/admin/v1/users/{}", enc(&user.id));
        self.call(UPDATE_USER, Method::POST, &path, &[("status", status.to_string())], &[StatusCode::NOT_FOUND]).await?.ok_or_else(|| self.user_gone(user))?;
        Ok(())
    }
}

#[async_trait]
impl IdentityProvider for Duo {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list_factors: true,
            revoking_ends_enrollments: &[],
            factor_creation_time: false,
            delete_factor: true,
            revoke_sessions: false,
            count_sessions: false,
            force_re_enrollment: false,
            enrollment_detection: true,
            event_stream: true,
            disable_user: true,
            nested_groups: false,
            name_match: NameMatch::CaseInsensitive,
            log_delay: Some(self.http.log_delay(LOG_DELAY)),
            inseparable: vec![Inseparable {
                kinds: &[FactorKind::Push, FactorKind::Sms],
                why: "a Duo phone carries Duo Push, SMS and voice passcodes together, and deleting it ends all of them",
            }],
            enrollment_link: None,
            bypass: Some(BypassSupport {
                mechanism: "Duo bypass code, usable once",
                lifetimes: std::time::Duration::from_secs(60)..=std::time::Duration::from_secs(365 * 24 * 3600),
                sent_by_provider: false,
                withdrawable: true,
            }),
            limitations: vec![
                "groups: Duo groups do not nest; a group's members are its direct members".into(),
                "sessions: Duo has no API to end sessions; end them in the applications Duo protects".into(),
                "sessions: Duo has no API to forget remembered devices; lower or turn off the remembered-devices policy in the Admin Panel".into(),
                "enrollment: no per-user API; a user left without devices enrolls at the next sign-in only if the new-user policy is \"Require enrollment\" (check it: \"Allow access without 2FA\" would let them in with the password alone)".into(),
                "cutoff: phones and hardware tokens show no creation time; one is deleted only when the account's logs, read two minutes after the user was reached, show neither the user enrolling a device of its kind nor an administrator creating or changing that phone number or token serial since the cutoff; it is kept (counted in keptUnknownAge) when the logs cannot be read or an administrator's record does not say which device it was".into(),
                "detection: the authentication log shows enrollments about two minutes late, and is read for the whole account at most once a minute (Duo's advice), so a re-enrollment is seen up to about three minutes after it".into(),
                "events: the window reads the authentication log, about two minutes late, and the administrator log for bypass codes an administrator issues (one more request per check); it places addresses by city and country only (no coordinates, ASN or proxy verdict), and a device an administrator adds is named in the administrator log by its number or serial, not by its user, so it is not flagged from the window".into(),
            ],
        }
    }

    async fn check(&self) -> Result<(), ProviderError> {
        self.call(LIST_USERS, Method::GET, "/admin/v1/users", &[("limit", "1".to_string())], &[]).await?;
        Ok(())
    }

    async fn list_users(&self, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        // Cursor: the offset of the next page.
        let offset = cursor.and_then(|c| c.parse::<usize>().ok()).unwrap_or(0);
        let path = "/admin/v1/users";
        let envelope = self
            .call(LIST_USERS, Method::GET, path, &[("limit", USERS_PAGE.to_string()), ("offset", offset.to_string())], &[])
            .await?
            .unwrap_or(Envelope { response: Value::Null, next_offset: None });
        let (users, unreadable) = split(self.parse::<Vec<Record<User>>>(path, envelope.response)?);
        Ok(UserPage { users: users.into_iter().map(User::into_ref).collect(), next: envelope.next_offset.map(|n| n.to_string()), unreadable })
    }

    async fn group_members(&self, group: &str, _: Membership, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        // Duo groups do not nest. Cursor: "<offset>:<group id>".
        let (offset, group_id) = match cursor.and_then(|c| c.split_once(':')) {
            Some((offset, id)) => (offset.parse::<usize>().unwrap_or(0), id.to_string()),
            None => (0, self.find_group(group).await?),
        };
        let (users, unreadable, next_offset) = self.members_page(&group_id, offset).await?;
        Ok(UserPage { users, next: next_offset.map(|n| format!("{n}:{group_id}")), unreadable })
    }

    async fn find_user(&self, name: &str) -> Result<Vec<UserRef>, ProviderError> {
        // A Duo user id, then a username or username alias, which Duo matches case-insensitively.
        if looks_like_user_id(name) {
            let path = format!("/admin/v1/users/{}", enc(name));
            if let Some(envelope) = self.call(GET_USER, Method::GET, &path, &[], &[StatusCode::NOT_FOUND]).await? {
                let user: User = self.parse(&path, envelope.response)?;
                return Ok(vec![user.into_ref()]);
            }
        }
        let path = "/admin/v1/users";
        let envelope = self.call(GET_USER, Method::GET, path, &[("username", name.to_string())], &[]).await?;
        let found: Vec<User> = self.parse(path, envelope.map(|e| e.response).unwrap_or(Value::Array(vec![])))?;
        Ok(found.into_iter().map(User::into_ref).collect())
    }

    async fn snapshot(&self, user: &UserRef, kinds: &[FactorKind], cutoff: jiff::Timestamp) -> Result<UserSnapshot, ProviderError> {
        // The user object carries its phones, tokens and WebAuthn credentials.
        let profile = self.user(user).await?;
        // Of what Duo dates, a security key from the cutoff's second on.
        let enrolled_since_cutoff =
            super::first_enrolled_since(profile.webauthncredentials.iter().filter_map(|c| Some((FactorKind::Webauthn, Shown::seconds(c.date_added?)?))), cutoff);
        let mut factors = Vec::new();
        // A user created since the cutoff holds nothing older than it.
        let user_is_new = profile.created.and_then(Shown::seconds).is_some_and(|created| created.since(cutoff));
        // Phones and tokens carry what the administrator log names them by (factor_ages).
        for phone in profile.phones.into_iter().filter(|_| !user_is_new) {
            let kind = phone_kind(&phone);
            if selected(kind, kinds) {
                let digits = phone.number.as_deref().map(phone_digits).unwrap_or_default();
                factors.push(FactorRef::aged(phone.phone_id, kind, format!("{PROVIDER_TYPE_PHONE}:{digits}"), Age::Unknown));
            }
        }
        for token in profile.tokens.into_iter().filter(|_| !user_is_new) {
            let kind = token_kind(&token.type_);
            if selected(kind, kinds) {
                let serial = token.serial.unwrap_or_default();
                factors.push(FactorRef::aged(token.token_id, kind, format!("{PROVIDER_TYPE_TOKEN}:{}:{serial}", token.type_), Age::Unknown));
            }
        }
        if selected(FactorKind::Webauthn, kinds) {
            for credential in profile.webauthncredentials {
                let age = Age::of(credential.date_added.and_then(Shown::seconds), cutoff);
                if age != Age::Since {
                    factors.push(FactorRef::aged(credential.webauthnkey, FactorKind::Webauthn, PROVIDER_TYPE_WEBAUTHN, age));
                }
            }
        }
        if selected(FactorKind::RecoveryCodes, kinds) {
            let path = format!("/admin/v1/users/{}/bypass_codes", enc(&user.id));
            let envelope = self.call(LIST_FACTORS, Method::GET, &path, &[("limit", "500".to_string())], &[StatusCode::NOT_FOUND]).await?.ok_or_else(|| self.user_gone(user))?;
            let codes: Vec<BypassCode> = self.parse(&path, envelope.response)?;
            for code in codes {
                let age = Age::of(code.created.and_then(Shown::seconds), cutoff);
                if age != Age::Since {
                    factors.push(FactorRef::aged(code.bypass_code_id, FactorKind::RecoveryCodes, PROVIDER_TYPE_BYPASS, age));
                }
            }
        }
        Ok(UserSnapshot { factors, enrolled_since_cutoff, ..Default::default() })
    }

    async fn factor_ages(&self, user: &UserRef, factors: &[FactorRef], cutoff: jiff::Timestamp, taken_at: jiff::Timestamp) -> Result<Vec<LoggedAge>, ProviderError> {
        Ok(self.device_log(cutoff, taken_at).await?.ages(user, factors, cutoff))
    }

    async fn revoke_sessions(&self, _user: &UserRef, _snapshot: &UserSnapshot) -> Result<(), ProviderError> {
        // Duo has no session API (see limitations); there is nothing to end here.
        Ok(())
    }

    async fn revoke_factor(&self, user: &UserRef, factor: &FactorRef) -> Result<RevokeOutcome, ProviderError> {
        let path = match factor.provider_type.split(':').next().unwrap_or_default() {
            PROVIDER_TYPE_PHONE => format!("/admin/v1/users/{}/phones/{}", enc(&user.id), enc(&factor.id)),
            PROVIDER_TYPE_TOKEN => format!("/admin/v1/users/{}/tokens/{}", enc(&user.id), enc(&factor.id)),
            PROVIDER_TYPE_WEBAUTHN => format!("/admin/v1/webauthncredentials/{}", enc(&factor.id)),
            PROVIDER_TYPE_BYPASS => format!("/admin/v1/bypass_codes/{}", enc(&factor.id)),
            other => return Err(self.http.error(ErrorKind::Rejected, format!("unknown Duo factor type {other}"))),
        };
        let done = self.call(DELETE_FACTOR, Method::DELETE, &path, &[], &[StatusCode::NOT_FOUND]).await?;
        Ok(if done.is_some() { RevokeOutcome::Revoked } else { RevokeOutcome::AlreadyGone })
    }

    async fn require_enrollment(&self, _user: &UserRef, _lost: &[FactorRef], _channel: super::EnrollmentChannel) -> Result<(), ProviderError> {
        // Duo's new-user policy asks a user without devices to enroll (see limitations).
        Ok(())
    }

    async fn enrolled_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError> {
        // From the account's log, read again at most once a minute (Duo: "We recommend requesting
        // logs no more than once per minute"), not once per user.
        let delay = jiff::SignedDuration::try_from(self.http.log_delay(LOG_DELAY) + LOG_REREAD).unwrap_or(jiff::SignedDuration::MAX);
        let complete_by = jiff::Timestamp::now().checked_sub(delay).unwrap_or(cutoff);
        let logged = {
            let log = self.device_log(cutoff, complete_by).await?;
            log.enrollments_of(user, cutoff).filter_map(|l| Some((logged_at(l)?.at, l.clone()))).min_by_key(|(at, _)| *at)
        };
        if let Some((at, log)) = logged {
            return Ok(Some(Enrollment { kind: log_kind(log.factor.as_deref().unwrap_or_default()), at: at.max(cutoff), origin: log.access_device.as_ref().map(origin) }));
        }
        // The log lags; a WebAuthn credential's own date shows an enrollment at once.
        let profile = self.user(user).await?;
        let newest = profile
            .webauthncredentials
            .iter()
            .filter_map(|w| w.date_added)
            .filter(|added| (added + 1) * 1000 > cutoff.as_millisecond())
            .min()
            .and_then(|added| jiff::Timestamp::from_second(added).ok());
        Ok(newest.map(|at| Enrollment { kind: FactorKind::Webauthn, at: at.max(cutoff), origin: None }))
    }

    async fn read_events(&self, query: &EventQuery<'_>) -> Result<EventPage, ProviderError> {
        if query.user.is_some() {
            return self.read_authentication_log(query, query.cursor).await;
        }
        // The organisation's stream: the authentication log, and the administrator log for the
        // bypass codes an administrator issues (which the authentication log shows only in use).
        let mut cursor = StreamCursor::read(query.cursor);
        let mut page = self.read_authentication_log(query, cursor.authentication.as_deref()).await?;
        cursor.authentication = page.cursor.take();
        let mut admin = cursor.administrator.take().unwrap_or(AdminPosition { second: query.from.as_second(), read: Vec::new() });
        page.more |= self.read_administrator_log(&mut admin, &mut page).await?;
        cursor.administrator = Some(admin);
        page.cursor = Some(serde_json::to_string(&cursor).expect("strings and numbers"));
        Ok(page)
    }

    async fn disable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        self.set_status(user, "disabled").await
    }

    async fn enabled(&self, user: &UserRef) -> Result<Option<bool>, ProviderError> {
        let path = format!("/admin/v1/users/{}", enc(&user.id));
        let envelope = self.call(GET_USER, Method::GET, &path, &[], &[StatusCode::NOT_FOUND]).await?.ok_or_else(|| self.user_gone(user))?;
        // Duo's statuses: active, bypass (no second factor asked), disabled, locked out, pending deletion.
        Ok(envelope.response["status"].as_str().map(|s| matches!(s, "active" | "bypass")))
    }

    async fn enable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        self.set_status(user, "active").await
    }

    async fn issue_bypass(&self, user: &UserRef, lifetime: std::time::Duration) -> Result<IssuedBypass, ProviderError> {
        // One code, one use, expiring by itself; generating replaces the user's other codes
        // (Duo's default without preserve_existing), ours from a try cut short among them. A
        // valid_secs of 0 would never expire.
        if lifetime.as_secs() == 0 {
            return Err(self.http.error(ErrorKind::Config, "a Duo bypass code needs a lifetime of a second or more"));
        }
        let path = format!("/admin/v1/users/{}/bypass_codes", enc(&user.id));
        let params = [("count", "1".to_string()), ("reuse_count", "1".to_string()), ("valid_secs", lifetime.as_secs().to_string())];
        let issued_at = jiff::Timestamp::now();
        let envelope = self.call(ISSUE_BYPASS, Method::POST, &path, &params, &[StatusCode::NOT_FOUND]).await?.ok_or_else(|| self.user_gone(user))?;
        // Read by hand: the parser's message would quote a code were it of another type.
        let codes: Vec<&str> = envelope.response.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let [code] = <[&str; 1]>::try_from(codes).map_err(|codes| self.http.error(ErrorKind::Rejected, format!("Duo returned {} bypass codes for a request of one", codes.len())))?;
        let expires_at = issued_at.checked_add(jiff::SignedDuration::try_from(lifetime).unwrap_or(jiff::SignedDuration::ZERO)).unwrap_or(issued_at);
        Ok(IssuedBypass { secret: Some(SecretString::new(code)), expires_at, reference: None })
    }

    async fn bypass_used(&self, user: &UserRef, issued_at: jiff::Timestamp, _reference: Option<&str>) -> Result<Option<bool>, ProviderError> {
        // A code good once is gone from the user's list once used; before its end nothing else
        // removes it but an administrator.
        let path = format!("/admin/v1/users/{}/bypass_codes", enc(&user.id));
        let Some(envelope) = self.call(LIST_FACTORS, Method::GET, &path, &[("limit", "500".into())], &[StatusCode::NOT_FOUND]).await? else { return Ok(None) };
        let codes: Vec<BypassCode> = self.parse(&path, envelope.response)?;
        let from = issued_at.as_second() - CLOCK_SKEW_SECONDS;
        Ok(Some(!codes.iter().any(|c| c.created.is_none_or(|created| created >= from))))
    }

    async fn revoke_bypass(&self, user: &UserRef, issued_at: jiff::Timestamp, _reference: Option<&str>) -> Result<(), ProviderError> {
        // The codes made from the issuing on, allowing for Duo's clock (their ids were not returned).
        let path = format!("/admin/v1/users/{}/bypass_codes", enc(&user.id));
        let Some(envelope) = self.call(LIST_FACTORS, Method::GET, &path, &[("limit", "500".into())], &[StatusCode::NOT_FOUND]).await? else { return Ok(()) };
        let codes: Vec<BypassCode> = self.parse(&path, envelope.response)?;
        let from = issued_at.as_second() - CLOCK_SKEW_SECONDS;
        for code in codes.into_iter().filter(|c| c.created.is_none_or(|created| created >= from)) {
            self.call(DELETE_FACTOR, Method::DELETE, &format!("/admin/v1/bypass_codes/{}", enc(&code.bypass_code_id)), &[], &[StatusCode::NOT_FOUND]).await?;
        }
        Ok(())
    }
}

/// Where the organisation's stream stands in each of Duo's logs.
#[derive(Default, Serialize, Deserialize)]
struct StreamCursor {
    /// The authentication log's `next_offset` ("timestamp_ms,txid").
    authentication: Option<String>,
    administrator: Option<AdminPosition>,
}

/// The administrator log is dated in seconds and listed from a `mintime` second on, so the
/// position keeps which records of its second were read.
#[derive(Serialize, Deserialize)]
struct AdminPosition {
    second: i64,
    /// Digests of the records of `second` already read.
    read: Vec<String>,
}

impl StreamCursor {
    /// A cursor of this form, or an authentication-log offset alone as the stream kept it before
    /// it read the administrator log.
    fn read(cursor: Option<&str>) -> StreamCursor {
        match cursor.map(str::trim) {
            Some(c) if c.starts_with('{') => serde_json::from_str(c).unwrap_or_default(),
            Some(c) => StreamCursor { authentication: Some(c.to_string()), administrator: None },
            None => StreamCursor::default(),
        }
    }
}

impl Duo {
    /// One page of the administrator log from `position` on, its bypass codes as events; whether
    /// the page was full (more to read now).
    async fn read_administrator_log(&self, position: &mut AdminPosition, page: &mut EventPage) -> Result<bool, ProviderError> {
        let path = "/admin/v1/logs/administrator";
        let envelope = self.call(ADMIN_EVENTS, Method::GET, path, &[("mintime", position.second.to_string())], &[]).await?;
        let mut records: Vec<Value> = self.parse(path, envelope.map(|e| e.response).unwrap_or(Value::Array(vec![])))?;
        let full = records.len() >= ADMIN_LOG_PAGE;
        let started = position.second;
        let latest_possible = jiff::Timestamp::now().as_second() + CLOCK_SKEW_SECONDS;
        records.sort_by_key(|r| r["timestamp"].as_i64());
        for record in &records {
            let Some(second) = record["timestamp"].as_i64().filter(|s| (position.second..=latest_possible).contains(s)) else {
                page.skipped.push(format!("an administrator-log record dated {} (reading from {}): skipped", record["timestamp"], position.second));
                continue;
            };
            let digest = hex::encode(&Sha256::digest(record.to_string().as_bytes())[..12]);
            if second > position.second {
                position.second = second;
                position.read.clear();
            } else if position.read.contains(&digest) {
                continue;
            }
            position.read.push(digest.clone());
            page.take(admin_event(record, digest));
        }
        if full && position.second == started {
            return Err(self.http.error(ErrorKind::Rejected, format!("the administrator log cannot be paged on from {started}: more than {ADMIN_LOG_PAGE} records in one second")));
        }
        Ok(full)
    }

    async fn read_authentication_log(&self, query: &EventQuery<'_>, cursor: Option<&str>) -> Result<EventPage, ProviderError> {
        let path = "/admin/v2/logs/authentication";
        let offset = cursor.and_then(usable_offset);
        // Oldest first, on from the last record read; Duo lists a record only after its delay, in
        // time order, so nothing older than that record can still appear.
        let from = offset.map_or(query.from.as_millisecond(), |(ms, _)| ms.max(query.from.as_millisecond()));
        let until = query.until.unwrap_or_else(jiff::Timestamp::now).as_millisecond().max(from + 1);
        let mut params = vec![("mintime", from.to_string()), ("maxtime", until.to_string()), ("sort", "ts:asc".to_string()), ("limit", LOGS_PAGE.to_string())];
        if let Some(user) = query.user {
            params.push(("users", user.id.clone()));
        }
        if let Some((ms, txid)) = offset {
            params.push(("next_offset", format!("{ms},{txid}")));
        }
        let envelope = self.call(READ_EVENTS, Method::GET, path, &params, &[]).await?.unwrap_or(Envelope { response: Value::Null, next_offset: None });
        let records = envelope.response["authlogs"].as_array().cloned().unwrap_or_default();
        // Duo: call again "as long as the result metadata has next_offset values".
        let next = envelope.response["metadata"]["next_offset"].as_array().map(|o| o.iter().filter_map(|v| v.as_str().map(String::from).or_else(|| v.as_i64().map(|n| n.to_string()))).collect::<Vec<_>>().join(","));
        let next = next.filter(|n| usable_offset(n).is_some());
        let last = records.iter().rev().find_map(|r| {
            let at = r["isotimestamp"].as_str().and_then(|t| t.trim().parse::<jiff::Timestamp>().ok())?;
            let cursor = format!("{},{}", at.as_millisecond(), r["txid"].as_str()?.trim());
            usable_offset(&cursor).is_some().then_some(cursor)
        });
        let mut page = EventPage { more: next.is_some() && next.as_deref() != cursor, ..Default::default() };
        page.cursor = next.or(last).or(cursor.filter(|c| usable_offset(c).is_some()).map(String::from));
        self.note_enrollments(&records).await;
        for record in &records {
            if offset.is_some_and(|(ms, txid)| record["txid"].as_str().is_some_and(|t| t.trim() == txid) && record["isotimestamp"].as_str().and_then(|t| t.trim().parse::<jiff::Timestamp>().ok()).is_some_and(|at| at.as_millisecond() == ms)) {
                // The record the cursor names was read before.
                continue;
            }
            match identity_event(record) {
                Ok(Some(event)) if query.user.is_some() || STREAMED.contains(&event.kind) => page.events.push(event),
                Ok(_) => {}
                Err(why) => page.skipped.push(why),
            }
        }
        Ok(page)
    }
}

/// A short, secret-free rendering of a Duo error: its code, message and detail.
fn brief(value: &Value) -> String {
    super::brief(value, &["/code", "/message", "/message_detail"])
}

/// Every answer shape this adapter decodes, for the fuzz target `provider_json`.
pub(crate) fn decode_answers(data: &[u8]) {
    crate::fuzzing::decode::<Vec<Record<User>>>(data);
    crate::fuzzing::decode::<Vec<Record<GroupMember>>>(data);
    crate::fuzzing::decode::<Vec<Group>>(data);
    crate::fuzzing::decode::<Vec<Phone>>(data);
    crate::fuzzing::decode::<Vec<Token>>(data);
    crate::fuzzing::decode::<Vec<WebauthnCredential>>(data);
    crate::fuzzing::decode::<Vec<BypassCode>>(data);
    crate::fuzzing::decode::<AuthLogs>(data);
    crate::fuzzing::decode::<Vec<AdminLog>>(data);
    crate::fuzzing::decode::<User>(data);
    // Log records as the event stream reads them: never a panic, whatever a field holds.
    if let Ok(records) = serde_json::from_slice::<Vec<Value>>(data) {
        for record in &records {
            let _ = identity_event(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idp_sim::FactorKind as Sim;
    use serde_json::json;

    #[test]
    fn tokens_map_by_type_and_phones_by_activation() {
        assert_eq!(token_kind("t6"), FactorKind::Totp);
        assert_eq!(token_kind("h8"), FactorKind::Hotp);
        assert_eq!(token_kind("yk"), FactorKind::HardwareToken);
        let phone = |activated: bool, capabilities: &[&str]| Phone { phone_id: "DP1".into(), number: None, activated, capabilities: capabilities.iter().map(|c| c.to_string()).collect() };
        assert_eq!(phone_kind(&phone(true, &[])), FactorKind::Push);
        assert_eq!(phone_kind(&phone(false, &["sms", "phone"])), FactorKind::Sms);
    }

    #[test]
    fn a_logged_enrollment_dates_every_device_it_may_be() {
        assert!(may_be_of("duo_push", FactorKind::Sms), "a phone carries both");
        assert!(may_be_of("yubikey_code", FactorKind::Totp));
        assert!(!may_be_of("webauthn_security_key", FactorKind::Push));
        assert!(may_be_of("something_new", FactorKind::Hotp), "an unknown name may be any device");
    }

    #[test]
    fn the_log_gives_ip_geo_and_agent() {
        let log: AuthLog = serde_json::from_value(serde_json::json!({
            "timestamp": 1_700_000_000, "isotimestamp": "2023-11-14T22:13:20.000000+00:00", "event_type": "enrollment", "factor": "duo_push",
            "access_device": { "ip": "203.0.113.7", "browser": "Chrome", "browser_version": "131", "os": "Mac OS X", "os_version": "15.1",
                "location": { "city": "Ann Arbor", "state": "Michigan", "country": "United States" } },
        }))
        .unwrap();
        let origin = origin(log.access_device.as_ref().unwrap());
        assert_eq!(origin.ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(origin.geo.as_deref(), Some("United States/Michigan/Ann Arbor"));
        assert_eq!(origin.user_agent.as_deref(), Some("Chrome 131; Mac OS X 15.1"));
    }

    #[tokio::test]
    async fn undated_devices_are_deleted_only_by_recorded_id() {
        let subject = idp_sim::subject::Subject::start("duo").await.unwrap();
        subject.sim.provider.seed(&idp_sim::Seed { users: 3, ..Default::default() });
        let duo = crate::backends::connect_to_sim(&subject);
        let users = duo.list_users(None).await.unwrap().users;
        // Named users: the username travels in the signed query.
        assert_eq!(duo.find_user(&users[1].username).await.unwrap(), vec![users[1].clone()]);
        assert_eq!(duo.find_user(&users[1].id).await.unwrap(), vec![users[1].clone()], "by Duo user id");
        assert!(duo.find_user("nobody@example.com").await.unwrap().is_empty());
        let cutoff = jiff::Timestamp::now();
        let provider = &subject.sim.provider;

        // A phone enrolled after the snapshot has an id that was never recorded: it stays.
        let snapshot = duo.snapshot(&users[0], &[FactorKind::All], cutoff).await.unwrap();
        assert_eq!(snapshot.factors.len(), 4);
        let new_phone = provider.enroll(&users[0].username, Sim::Push, "203.0.113.7").unwrap();
        for factor in &snapshot.factors {
            assert_eq!(duo.revoke_factor(&users[0], factor).await.unwrap(), RevokeOutcome::Revoked);
            assert_eq!(duo.revoke_factor(&users[0], factor).await.unwrap(), RevokeOutcome::AlreadyGone);
        }
        let left: Vec<String> = provider.user(&users[0].username).unwrap().factors.into_iter().map(|f| f.id).collect();
        assert_eq!(left, [new_phone]);
        let seen = duo.enrolled_since(&users[0], cutoff).await.unwrap().expect("the log shows the enrollment");
        assert_eq!((seen.kind, seen.origin.and_then(|o| o.ip)), (FactorKind::Push, Some("203.0.113.7".to_string())));

        // A phone enrolled after the cutoff but before the snapshot has no date: with the old
        // phone beside it, the log cannot tell which is new, so both are of unknown age; the
        // tokens are old.
        provider.enroll(&users[1].username, Sim::Sms, "203.0.113.8").unwrap();
        let snapshot = duo.snapshot(&users[1], &[FactorKind::All], cutoff).await.unwrap();
        let undated: Vec<FactorRef> = snapshot.factors.iter().filter(|f| f.unknown_age).cloned().collect();
        let ages = duo.factor_ages(&users[1], &undated, cutoff, jiff::Timestamp::now()).await.unwrap();
        for (factor, age) in undated.iter().zip(ages) {
            let phone = factor.provider_type.starts_with(PROVIDER_TYPE_PHONE);
            assert_eq!(age, if phone { LoggedAge::Unknown } else { LoggedAge::Before }, "{factor:?}");
        }
        // A new WebAuthn credential carries its date: the old devices are recorded, the new one is not.
        let key = provider.enroll(&users[2].username, Sim::Webauthn, "203.0.113.9").unwrap();
        let snapshot = duo.snapshot(&users[2], &[FactorKind::All], cutoff).await.unwrap();
        assert_eq!(snapshot.factors.len(), 4);
        assert!(snapshot.factors.iter().all(|f| f.id != key));

        // A POST: its JSON body is signed with the request.
        duo.disable_user(&users[2]).await.unwrap();
        assert!(!provider.user(&users[2].username).unwrap().active);
    }

    #[test]
    fn a_bypass_an_administrator_creates_names_its_user_and_who_did_it() {
        let record = |description: Value, username: Value| json!({ "action": "BYPASS_CREATE ", "object": "Jane.Doe@Example.com", "username": username, "timestamp": 1_780_000_000, "description": description });
        let text = json!({ "bypass": "", "count": 1, "valid_secs": 3600, "user_id": "DUABCDEFGHIJKLMNOPQR" }).to_string();
        let event = admin_event(&record(Value::String(text), json!("Helpdesk Agent")), "d".into()).unwrap().unwrap();
        assert_eq!((event.kind, event.user_id.as_str(), event.actor.clone(), event.id.as_str()), (EventKind::BypassIssued, "DUABCDEFGHIJKLMNOPQR", Actor::Other("Helpdesk Agent".into()), "admin-d"));
        // A description already parsed, and no administrator named.
        let event = admin_event(&record(json!({ "user_id": "DUABCDEFGHIJKLMNOPQR" }), Value::Null), "d".into()).unwrap().unwrap();
        assert_eq!(event.actor, Actor::Unknown);
        // Garbage is skipped with why; other actions are not events.
        assert!(admin_event(&record(json!("not json"), json!("API")), "d".into()).unwrap_err().contains("names no user_id"));
        assert!(admin_event(&json!({ "action": "bypass_create", "timestamp": "soon" }), "d".into()).is_err());
        assert!(admin_event(&json!({ "action": "phone_create", "timestamp": 1 }), "d".into()).unwrap().is_none());
    }

    #[test]
    fn a_stream_cursor_reads_its_own_form_and_the_older_offset_alone() {
        let old = StreamCursor::read(Some("1780000000000,txid-1"));
        assert_eq!((old.authentication.as_deref(), old.administrator.is_none()), (Some("1780000000000,txid-1"), true));
        let kept = serde_json::to_string(&StreamCursor { authentication: Some("1,a".into()), administrator: Some(AdminPosition { second: 7, read: vec!["x".into()] }) }).unwrap();
        let back = StreamCursor::read(Some(&kept));
        assert_eq!((back.authentication.as_deref(), back.administrator.map(|a| (a.second, a.read))), (Some("1,a"), Some((7, vec!["x".to_string()]))));
        assert!(StreamCursor::read(Some("{damaged")).authentication.is_none());
    }

    #[test]
    fn administrators_records_date_the_phone_or_token_they_name() {
        let user = UserRef { id: "DU1".into(), username: "a@example.com".into() };
        let phone = |id: &str, digits: &str| FactorRef::aged(id, FactorKind::Push, format!("phone:{digits}"), Age::Unknown);
        let token = |id: &str, serial: &str| FactorRef::aged(id, FactorKind::HardwareToken, format!("token:yk:{serial}"), Age::Unknown);
        let factors = [phone("DP1", "15557136275"), phone("DP2", "15550000001"), token("DH1", "0012345678"), token("DH2", "0099999999")];
        let record = |action: &str, object: &str| AdminLog { action: action.into(), object: Some(object.into()), timestamp: 0 };
        let mut log = DeviceLog::default();
        for r in [record("phone_create", "(555) 713-6275 x456"), record("hardtoken_create", "YubiKey AES 0012345678"), record("phone_delete", "(555) 000-0001"), record("user_update", "a@example.com")] {
            log.note_admin_action(&r);
        }
        assert_eq!(log.ages(&user, &factors, jiff::Timestamp::UNIX_EPOCH), [LoggedAge::Since, LoggedAge::Before, LoggedAge::Since, LoggedAge::Before]);
        // A record that does not say which phone: no phone can be dated; tokens still can.
        log.note_admin_action(&AdminLog { action: "phone_associate".into(), object: None, timestamp: 0 });
        assert_eq!(log.ages(&user, &factors, jiff::Timestamp::UNIX_EPOCH), [LoggedAge::Since, LoggedAge::Unknown, LoggedAge::Since, LoggedAge::Before]);
        // A phone without a number (a tablet, or an older ledger's record) cannot be matched: old
        // unless an administrator acted on some phone.
        assert_eq!(DeviceLog { admin_phones: vec!["5557136275".into()], ..DeviceLog::default() }.ages(&user, &[phone("DP3", "")], jiff::Timestamp::UNIX_EPOCH), [LoggedAge::Unknown]);
        assert_eq!(DeviceLog::default().ages(&user, &[phone("DP3", "")], jiff::Timestamp::UNIX_EPOCH), [LoggedAge::Before]);
        // An administrator changing a phone or token leaves its age unknown rather than new.
        let mut changed = DeviceLog::default();
        changed.note_admin_action(&record("phone_update", "(555) 000-0001"));
        changed.note_admin_action(&record("hardtoken_update", "YubiKey AES 0099999999"));
        assert_eq!(changed.ages(&user, &factors, jiff::Timestamp::UNIX_EPOCH), [LoggedAge::Before, LoggedAge::Unknown, LoggedAge::Before, LoggedAge::Unknown]);
        // An enrollment the log holds from before the cutoff (read for an earlier one) dates nothing.
        let enrolled = |timestamp: i64| AuthLog { txid: None, user: None, timestamp, isotimestamp: None, event_type: Some("enrollment".into()), factor: Some("duo_push".into()), access_device: None };
        let cutoff = jiff::Timestamp::from_second(1_000).unwrap();
        let log = DeviceLog { enrolled: HashMap::from([("DU1".to_string(), vec![enrolled(999)])]), ..DeviceLog::default() };
        assert_eq!(log.ages(&user, &factors[..1], cutoff), [LoggedAge::Before]);
        let log = DeviceLog { enrolled: HashMap::from([("DU1".to_string(), vec![enrolled(999), enrolled(1_000)])]), ..DeviceLog::default() };
        assert_eq!(log.ages(&user, &factors[..1], cutoff), [LoggedAge::Since], "the cutoff's own second counts as since");
        assert!(same_number("5557136275", "15557136275") && !same_number("136275", "15557136275") && !same_number("5557136276", "15557136275"));
    }

    #[test]
    fn errors_name_duo_code_and_message() {
        let body = serde_json::json!({ "stat": "FAIL", "code": 40103, "message": "Invalid signature in request credentials" });
        assert_eq!(brief(&body), "40103: Invalid signature in request credentials");
    }

    fn record(event_type: &str, result: &str, reason: &str) -> Value {
        serde_json::json!({
            "txid": "340a23e3-23f3-4bb0-a5f6-2b6cb0e0a9b2", "timestamp": 1_796_526_900, "isotimestamp": "2026-12-06T03:15:00.123456+00:00",
            "event_type": event_type, "result": result, "reason": reason, "factor": "duo_push",
            "user": { "key": "DU3KC77WJ06Y5HIV7XKQ", "name": "narroway@example.com", "groups": ["Duo Users"] },
            "access_device": { "ip": "100.64.7.7", "browser": "Chrome", "browser_version": "131.0", "os": "Mac OS X", "os_version": "15.1",
                "location": { "city": "Lagos", "state": "Lagos", "country": "Nigeria" } },
            "auth_device": { "ip": "100.64.7.8", "name": "My iPhone (734-555-2342)", "location": { "city": "Lagos", "state": "Lagos", "country": "Nigeria" } },
        })
    }

    #[test]
    fn authentication_log_records_read_as_identity_events() {
        let enrolled = identity_event(&record("enrollment", "success", "user_marked_enrolled")).unwrap().unwrap();
        assert_eq!((enrolled.kind, enrolled.user_id.as_str(), &enrolled.actor, enrolled.factor), (EventKind::FactorEnrolled, "DU3KC77WJ06Y5HIV7XKQ", &Actor::User, Some(FactorKind::Push)));
        assert_eq!(enrolled.at, "2026-12-06T03:15:00.123456Z".parse().unwrap());
        assert_eq!(enrolled.client.ip, Some("100.64.7.7".parse().unwrap()));
        let geo = enrolled.client.geo.clone().unwrap();
        assert_eq!((geo.country.as_deref(), geo.city.as_deref(), geo.point), (Some("Nigeria"), Some("Lagos"), None));
        assert_eq!(enrolled.client.user_agent.as_deref(), Some("Chrome 131.0; Mac OS X 15.1"));
        assert!(enrolled.device.is_some());
        let kind = |r: Value| identity_event(&r).unwrap().map(|e| e.kind);
        assert_eq!(kind(record("authentication", "FRAUD", "user_marked_fraud")), Some(EventKind::FraudReported));
        assert_eq!(kind(record("authentication", "denied", "User_Mistake")), Some(EventKind::PushDenied));
        assert_eq!(kind(record("authentication", "denied", "no_response")), Some(EventKind::PushDenied));
        assert_eq!(kind(record("authentication", "success", "user_approved")), Some(EventKind::MfaChallenge));
        assert_eq!(kind(record("authentication", "success", "bypass_user")), Some(EventKind::BypassUsed));
        // Other failures and other event types are not read.
        assert_eq!(kind(record("authentication", "denied", "invalid_passcode")), None);
        assert_eq!(kind(record("enrollment", "denied", "error")), None);
        assert_eq!(kind(record("administrator_login", "success", "")), None);
    }

    #[test]
    fn malformed_authentication_log_records_are_skipped_or_read_without_the_garbage() {
        let mut no_txid = record("enrollment", "success", "");
        no_txid["txid"] = serde_json::json!(" ");
        assert!(identity_event(&no_txid).is_err());
        let mut nobody = record("enrollment", "success", "");
        nobody["user"] = serde_json::json!({ "name": "x" });
        assert!(identity_event(&nobody).unwrap_err().contains("names no user"));
        let mut undated = record("enrollment", "success", "");
        undated["isotimestamp"] = serde_json::json!("soon");
        assert_eq!(identity_event(&undated).unwrap().unwrap().at, jiff::Timestamp::from_second(1_796_526_900).unwrap());
        undated["timestamp"] = serde_json::json!("soon");
        assert!(identity_event(&undated).unwrap_err().contains("time"));
        let mut garbage = record("enrollment", "success", "");
        garbage["access_device"] = serde_json::json!({ "ip": "10.0.0.300", "location": { "country": "", "city": 5 } });
        garbage["auth_device"] = serde_json::json!(null);
        garbage["factor"] = serde_json::json!(42);
        let event = identity_event(&garbage).unwrap().unwrap();
        assert_eq!((event.client.ip, event.client.geo, event.device, event.factor), (None, None, None, None));
        assert!(identity_event(&serde_json::json!("text")).is_err());
        assert_eq!(usable_offset("1796526900123,340a23e3-23f3"), Some((1_796_526_900_123, "340a23e3-23f3")));
        for bad in ["", "x,y", "-5,abc", "1796526900123,", "1796526900123,a&b=c"] {
            assert_eq!(usable_offset(bad), None, "{bad}");
        }
    }
}
