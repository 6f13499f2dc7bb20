//! Auth0 Management API v2 (`{url}/api/v2`), authenticated as a machine-to-machine application
//! (client credentials with the Management API as audience).
//!
//! How Auth0's shape maps onto a recall:
//! - All users: `GET /users` reaches only the first 1,000 records, so the complete list comes from a
//!   users-export job (`POST /jobs/users-exports`), whose gzipped NDJSON file is read page by page.
//!   The cursor names the job and an offset; a resumed recall downloads the file again by job id.
//! - Groups: Auth0 has no groups, so `scope.groups` and `exclude.groups` name Auth0 roles.
//! - Factors are authentication methods with `created_at`, compared with the cutoff. Methods that
//!   share a link (`link_id`, such as Guardian push and its recovery code) are deleted together, so
//!   a snapshot records the whole linked set and the second deletion's 404 counts as revoked.
//! - Sessions and refresh tokens can be listed and ended only on the Enterprise plan; elsewhere that
//!   is recorded as a limitation and the recall still removes factors and remembered browsers.
//! - Re-enrollment: Auth0 has no per-user "must enroll" flag. With the MFA policy "Always", a user
//!   left without factors must enroll at the next login; the policy is checked and a gap named.
//!   Enrollment tickets are not created: the ticket URL is a credential with no safe channel here.
//! - Re-enrollment is read from the authentication methods created at or after the cutoff, and its
//!   origin (IP, user agent, geo; Auth0 gives no ASN) from the `gd_enrollment_complete` log events.
//! - The window's event stream is the tenant log read by checkpoint (`from` = the last `log_id`
//!   read, `take`), started by a date search; a user's own history is a search on `user_id` and
//!   date. An administrator creating a method is a `sapi` entry under the administrator, naming
//!   the user in its request path.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Cursor};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use flate2::read::GzDecoder;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Grant, TokenSource};
use super::http::{Op, ProviderHttp, SecretKeys};
use super::{
    Age, Capabilities, Enrollment, EnrollmentLink, EnrollmentOrigin, FactorRef, IdentityProvider, Membership, NameMatch, ErrorKind, ProviderError, Record, RevokeOutcome, Shown, Unreadable, UserPage, UserRef,
    UserSnapshot, enc, selected, split,
};
use crate::api::{Auth0Provider, FactorKind};
use crate::watch::{Actor, ClientInfo, EventKind, EventPage, EventQuery, Geo, IdentityEvent};

/// Users per page handed to the engine, and records per Management API request (Auth0's maximum).
const PAGE_SIZE: usize = 100;
/// The longest line of a users export read: a record holds an id and an email.
const MAX_EXPORT_LINE: u64 = 64 * 1024;
/// Export jobs of large tenants take minutes; poll gently and give up after this long.
const EXPORT_POLL_MAX: Duration = Duration::from_secs(5);
const EXPORT_DEADLINE: Duration = Duration::from_secs(2 * 3600);
const SESSIONS_LIMITATION: &str =
    "sessions: not available on this Auth0 plan (Enterprise only); sessions and refresh tokens stay valid until they expire";
/// The MFA policy that makes every login require MFA, and so enrollment when no factor is left.
const MFA_ALWAYS: &str = "all-applications";

/// Rate-limit buckets: Auth0 announces one budget for the Management API; the export file comes
/// from storage outside it.
const API: &str = "api";

/// Auth0 authentication method types that are second factors. `password` never is.
fn factor_kind(method_type: &str) -> Option<FactorKind> {
    match method_type {
        "totp" => Some(FactorKind::Totp),
        "webauthn-roaming" => Some(FactorKind::Webauthn),
        "webauthn-platform" | "passkey" => Some(FactorKind::Passkey),
        "recovery-code" => Some(FactorKind::RecoveryCodes),
        "push" | "guardian" => Some(FactorKind::Push),
        "phone" | "sms" => Some(FactorKind::Sms),
        "email" => Some(FactorKind::Email),
        _ => None,
    }
}

/// `FactorRef::provider_type` carries the method type and, for linked methods, the ids deleted
/// with it (`push;linked=recovery-code|dev_…`): the ledger keeps it across restarts.
const LINKED: &str = ";linked=";

fn provider_type(method_type: &str, linked: &[String]) -> String {
    if linked.is_empty() { method_type.to_string() } else { format!("{method_type}{LINKED}{}", linked.join(",")) }
}

fn linked_ids(provider_type: &str) -> Vec<&str> {
    provider_type.split_once(LINKED).map(|(_, ids)| ids.split(',').filter(|id| !id.is_empty()).collect()).unwrap_or_default()
}

fn method_type(provider_type: &str) -> &str {
    provider_type.split_once(LINKED).map_or(provider_type, |(t, _)| t)
}

#[derive(Deserialize)]
struct AuthMethod {
    id: String,
    #[serde(rename = "type")]
    type_: String,
    #[serde(default, deserialize_with = "super::shown_text")]
    created_at: Option<Shown>,
    #[serde(default)]
    link_id: Option<String>,
}

#[derive(Deserialize)]
struct User {
    user_id: String,
    #[serde(default)]
    email: Option<String>,
}

impl From<User> for UserRef {
    fn from(u: User) -> Self {
        let username = u.email.filter(|e| !e.is_empty()).unwrap_or_else(|| u.user_id.clone());
        UserRef { id: u.user_id, username }
    }
}

#[derive(Deserialize)]
struct Role {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct RoleMembers {
    #[serde(default)]
    users: Vec<Record<User>>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct Job {
    #[serde(default)]
    status: String,
    #[serde(default)]
    location: Option<String>,
}

#[derive(Deserialize)]
struct LogEvent {
    date: jiff::Timestamp,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    location_info: Option<Location>,
}

#[derive(Deserialize)]
struct Location {
    #[serde(default)]
    country_code: Option<String>,
    #[serde(default)]
    subdivision_code: Option<String>,
    #[serde(default)]
    city_name: Option<String>,
}

/// The export file being read, positioned at `offset` users.
struct ExportReader {
    job: String,
    offset: usize,
    lines: BufReader<GzDecoder<Cursor<Bytes>>>,
}

pub struct Auth0 {
    http: ProviderHttp,
    auth: TokenSource,
    api: String,
    export: tokio::sync::Mutex<Option<ExportReader>>,
    roles: Mutex<HashMap<String, String>>,
    /// (user id, method id) of methods that went with a linked method this process deleted.
    deleted_with_link: Mutex<HashSet<(String, String)>>,
    /// What this tenant turned out not to allow, as `Capabilities::limitations` lines.
    limitations: Mutex<Vec<String>>,
    /// Whether the MFA policy makes users without factors enroll; None until read.
    mfa_required: tokio::sync::Mutex<Option<bool>>,
}

impl Auth0 {
    pub fn new(http: ProviderHttp, spec: &Auth0Provider, keys: &SecretKeys) -> Result<Self, ProviderError> {
        let base = spec.url.trim_end_matches('/');
        let grant = Grant::ClientSecret { client_id: keys.get("client-id")?, client_secret: keys.get("client-secret")? };
        Ok(Self {
            http,
            auth: TokenSource::new(format!("{base}/oauth/token"), grant, vec![("audience", format!("{base}/api/v2/"))], keys.name.to_string()),
            api: format!("{base}/api/v2"),
            export: tokio::sync::Mutex::new(None),
            roles: Mutex::default(),
            deleted_with_link: Mutex::default(),
            limitations: Mutex::default(),
            mfa_required: tokio::sync::Mutex::new(None),
        })
    }

    fn backend(&self) -> &str {
        &self.http.backend
    }

    fn limit(&self, limitation: &str) {
        let mut limitations = self.limitations.lock().unwrap();
        if !limitations.iter().any(|l| l == limitation) {
            tracing::warn!(backend = %self.backend(), limitation, "Auth0 tenant limitation");
            limitations.push(limitation.to_string());
        }
    }

    fn sessions_unavailable(&self) -> bool {
        self.limitations.lock().unwrap().iter().any(|l| l == SESSIONS_LIMITATION)
    }

    /// One Management API call; a 401 refreshes the token once. Success, 404 and the plan's 403
    /// (`operation_not_supported`, or any 403 but a missing scope from an endpoint the
    /// documentation gates by plan) are answers for the caller; anything else is an error.
    async fn call(&self, op: &'static str, method: Method, path: &str, query: &[(&str, String)], body: Option<&Value>) -> Result<(StatusCode, Value), ProviderError> {
        let url = format!("{}{path}", self.api);
        let reply = self
            .auth
            .send(&self.http, Op::new(op, API), || self.http.json_request(&method, &url, query, body))
            .await?;
        let status = reply.status;
        let value = reply.value();
        match status {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok((s, value)),
            StatusCode::FORBIDDEN if error_code(&value) == Some("operation_not_supported") => Ok((status, value)),
            StatusCode::FORBIDDEN if plan_gated(path) && error_code(&value) != Some("insufficient_scope") => Ok((status, value)),
            StatusCode::UNAUTHORIZED => Err(self.http.error(ErrorKind::Auth, format!(
                "401 from {method} {path}: the access token was refused; check the application in Secret {}",
                self.auth.secret_name
            ))),
            StatusCode::FORBIDDEN => Err(self.http.error(ErrorKind::Auth, format!(
                "403 from {method} {path} ({}): {} the application in Secret {} (Applications > APIs > Auth0 Management API > Machine to Machine Applications)",
                brief(&value),
                if error_code(&value) == Some("insufficient_scope") { "grant that scope to" } else { "check the permissions of" },
                self.auth.secret_name
            ))),
            _ => Err(self.http.error(ErrorKind::Rejected, format!("{status} from {method} {path}: {}", brief(&value)))),
        }
    }

    /// A GET whose 404 is None; the plan's 403 is an error here.
    async fn get<T: serde::de::DeserializeOwned>(&self, op: &'static str, path: &str, query: &[(&str, String)]) -> Result<Option<T>, ProviderError> {
        let (status, value) = self.call(op, Method::GET, path, query, None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::FORBIDDEN => Err(self.refused(path, &value)),
            _ => self.parse(path, value).map(Some),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, path: &str, value: Value) -> Result<T, ProviderError> {
        serde_json::from_value(value).map_err(|e| self.http.error(ErrorKind::Rejected, format!("unexpected body from GET {path}: {e}")))
    }

    fn refused(&self, path: &str, value: &Value) -> ProviderError {
        self.http.error(ErrorKind::Rejected, format!("403 from {path}: {}", brief(value)))
    }

    fn user_gone(&self, user: &UserRef) -> ProviderError {
        self.http.error(ErrorKind::NotFound, format!("user {} no longer exists", user.username))
    }

    fn user_path(user: &UserRef, rest: &str) -> String {
        format!("/users/{}{rest}", enc(&user.id))
    }

    /// Every authentication method of the user (`page`/`per_page`, plain array).
    async fn methods(&self, user: &UserRef) -> Result<Vec<AuthMethod>, ProviderError> {
        let path = Self::user_path(user, "/authentication-methods");
        let mut all = Vec::new();
        for page in 0.. {
            let query = [("page", page.to_string()), ("per_page", PAGE_SIZE.to_string())];
            let batch: Vec<AuthMethod> = self.get("list_factors", &path, &query).await?.ok_or_else(|| self.user_gone(user))?;
            let full = batch.len() == PAGE_SIZE;
            all.extend(batch);
            if !full {
                break;
            }
        }
        Ok(all)
    }

    /// Counts the user's sessions or refresh tokens (`from`/`take` checkpoints, at most `pages`);
    /// None when the plan has no such endpoint.
    async fn count_sessions(&self, user: &UserRef, what: &str, list: &str, pages: Option<usize>) -> Result<Option<u64>, ProviderError> {
        let path = Self::user_path(user, &format!("/{what}"));
        let mut count = 0;
        let mut from = String::new();
        for _ in 0..pages.unwrap_or(usize::MAX) {
            let mut query = vec![("take", PAGE_SIZE.to_string())];
            if !from.is_empty() {
                query.push(("from", from.clone()));
            }
            let (status, value) = self.call("list_sessions", Method::GET, &path, &query, None).await?;
            match status {
                StatusCode::NOT_FOUND => return Err(self.user_gone(user)),
                StatusCode::FORBIDDEN => {
                    self.limit(SESSIONS_LIMITATION);
                    return Ok(None);
                }
                _ => {}
            }
            let items = value.get(list).and_then(Value::as_array).map_or(0, Vec::len);
            count += items as u64;
            match value.get("next").and_then(Value::as_str) {
                Some(next) if items > 0 && !next.is_empty() => from = next.to_string(),
                _ => break,
            }
        }
        Ok(Some(count))
    }

    /// Ends the user's sessions or refresh tokens; Auth0 accepts (202) and finishes asynchronously.
    async fn end_sessions(&self, user: &UserRef, what: &str) -> Result<(), ProviderError> {
        let (status, _) = self.call("revoke_sessions", Method::DELETE, &Self::user_path(user, &format!("/{what}")), &[], None).await?;
        match status {
            StatusCode::NOT_FOUND => Err(self.user_gone(user)),
            StatusCode::FORBIDDEN => {
                self.limit(SESSIONS_LIMITATION);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Starts a users export of every connection; the job id.
    async fn start_export(&self) -> Result<String, ProviderError> {
        let body = json!({ "format": "json", "fields": [{ "name": "user_id" }, { "name": "email" }] });
        let (status, value) = self.call("export_users", Method::POST, "/jobs/users-exports", &[], Some(&body)).await?;
        let id = value.get("id").and_then(Value::as_str).filter(|_| status.is_success()).ok_or_else(|| {
            self.http.error(ErrorKind::Rejected, format!("{status} from POST /jobs/users-exports: {}", brief(&value)))
        })?;
        Ok(id.to_string())
    }

    /// Waits until the export job is done; its file, downloaded whole (gzipped, so small).
    async fn download_export(&self, job: &str) -> Result<Bytes, ProviderError> {
        let path = format!("/jobs/{}", enc(job));
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(100);
        let location = loop {
            let Some(state) = self.get::<Job>("export_users", &path, &[]).await? else {
                return Err(self.export_gone(job));
            };
            match state.status.as_str() {
                "completed" => break state.location.ok_or_else(|| self.export_gone(job))?,
                "failed" => {
                    return Err(self.http.error(ErrorKind::Unavailable, format!("the users export job {job} failed; the recall will try again")));
                }
                _ if started.elapsed() > EXPORT_DEADLINE => {
                    return Err(self.http.error(ErrorKind::Unavailable, format!("the users export job {job} did not finish in two hours")));
                }
                _ => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(EXPORT_POLL_MAX);
                }
            }
        };
        // The location is a signed storage URL: no bearer token, and never logged or quoted.
        if self.http.check_transport("the users export's download location", &location).is_err() {
            return Err(self.http.error(ErrorKind::Rejected, format!("the users export job {job} gave an unusable download location (not an https URL)")));
        }
        let reply = self.http.send(Op::new("download_export", "exports"), || self.http.request(Method::GET, &location)).await?;
        if !reply.status.is_success() {
            return Err(self.export_gone(job));
        }
        Ok(reply.body)
    }

    fn export_gone(&self, job: &str) -> ProviderError {
        self.http.error(ErrorKind::Unavailable, format!(
            "the users export job {job} or its file is no longer available (Auth0 keeps them for a limited time), so listing cannot continue where it stopped; create a new MfaRecall with the same cutoff: users already done keep their new factors"))
    }

    /// `PAGE_SIZE` users of export `job` from `offset`, and whether the file has more.
    async fn export_page(&self, job: &str, offset: usize) -> Result<UserPage, ProviderError> {
        let mut cached = self.export.lock().await;
        let positioned = cached.as_ref().is_some_and(|r| r.job == job && r.offset == offset);
        if !positioned {
            // First page, or a resumed recall: read the file again from the start.
            let bytes = self.download_export(job).await?;
            let mut reader = ExportReader { job: job.to_string(), offset: 0, lines: BufReader::new(GzDecoder::new(Cursor::new(bytes))) };
            while reader.offset < offset && self.next_exported(&mut reader)?.is_some() {}
            *cached = Some(reader);
        }
        let reader = cached.as_mut().expect("positioned above");
        let mut records = Vec::with_capacity(PAGE_SIZE);
        while records.len() < PAGE_SIZE {
            match self.next_exported(reader)? {
                Some(record) => records.push(record),
                None => break,
            }
        }
        let more = !reader.lines.fill_buf().map_err(|e| self.bad_export(job, &e.to_string()))?.is_empty();
        if !more {
            *cached = None;
        }
        // The next page starts after every line read, readable or not.
        let next = more.then(|| format!("export:{job}:{}", offset + records.len()));
        let (users, unreadable) = split(records);
        Ok(UserPage { users: users.into_iter().map(UserRef::from).collect(), next, unreadable })
    }

    /// The next user in the export file, None at its end. A line is read up to
    /// `MAX_EXPORT_LINE` bytes, so a file that decompresses to one endless line cannot fill the
    /// memory; a line that is not a user record fails that user only.
    fn next_exported(&self, reader: &mut ExportReader) -> Result<Option<Record<User>>, ProviderError> {
        next_export_line(reader).map_err(|why| self.bad_export(&reader.job, &why))
    }

    fn bad_export(&self, job: &str, why: &str) -> ProviderError {
        self.http.error(ErrorKind::Rejected, format!("the users export file of job {job} is unreadable: {why}"))
    }

    /// The id of the role named `name` (Auth0 roles stand for groups).
    async fn find_role(&self, name: &str) -> Result<String, ProviderError> {
        if let Some(id) = self.roles.lock().unwrap().get(name) {
            return Ok(id.clone());
        }
        // name_filter matches parts of names without regard to case: pick the exact name.
        let roles: Vec<Role> =
            self.get("find_role", "/roles", &[("name_filter", name.to_string()), ("per_page", PAGE_SIZE.to_string())]).await?.unwrap_or_default();
        let id = roles
            .iter()
            .find(|r| r.name == name)
            .or_else(|| {
                let folded: Vec<&Role> = roles.iter().filter(|r| r.name.eq_ignore_ascii_case(name)).collect();
                (folded.len() == 1).then(|| folded[0])
            })
            .map(|r| r.id.clone())
            .ok_or_else(|| {
                self.http.error(ErrorKind::NotFound, format!(
                    "no Auth0 role named {name} (Auth0 has no groups: group names in a recall are role names)"))
            })?;
        self.roles.lock().unwrap().insert(name.to_string(), id.clone());
        Ok(id)
    }

    /// One page of a role's members from `checkpoint` (empty: the start); the next checkpoint.
    async fn role_page(&self, role: &str, checkpoint: &str) -> Result<(Vec<UserRef>, Vec<Unreadable>, Option<String>), ProviderError> {
        let mut query = vec![("take", PAGE_SIZE.to_string())];
        if !checkpoint.is_empty() {
            query.push(("from", checkpoint.to_string()));
        }
        let path = format!("/roles/{}/users", enc(role));
        let page: RoleMembers = self.get("list_users", &path, &query).await?.ok_or_else(|| {
            self.http.error(ErrorKind::NotFound, format!("the role {role} was deleted while the recall was listing it"))
        })?;
        let next = page.next.filter(|n| !n.is_empty() && !page.users.is_empty());
        let (users, unreadable) = split(page.users);
        Ok((users.into_iter().map(UserRef::from).collect(), unreadable, next))
    }

    /// Whether the tenant requires MFA at every login (so users without factors must enroll).
    /// Read once; an unreadable policy is named as a limitation rather than failing users.
    async fn mfa_required(&self) -> bool {
        let mut known = self.mfa_required.lock().await;
        if let Some(required) = *known {
            return required;
        }
        let required = match self.get::<Vec<String>>("read_mfa_policy", "/guardian/policies", &[]).await {
            Ok(policies) => {
                let required = policies.unwrap_or_default().iter().any(|p| p == MFA_ALWAYS);
                if !required {
                    self.limit("enrollment: the tenant's MFA policy is not \"Always\", so users left without factors are not asked to enroll; set Security > Multi-factor Auth > Require Multi-factor Auth to Always");
                }
                required
            }
            Err(e) => {
                tracing::warn!(backend = %self.backend(), error = %e, "could not read the MFA policy");
                self.limit("enrollment: the MFA policy could not be read (grant the read:mfa_policies scope), so it is unknown whether users without factors must enroll");
                true
            }
        };
        *known = Some(required);
        required
    }

    /// Where a re-enrollment at `at` came from, from the Guardian enrollment log events.
    async fn enrollment_origin(&self, user: &UserRef, cutoff: jiff::Timestamp, at: jiff::Timestamp) -> Option<EnrollmentOrigin> {
        let q = format!("type:\"gd_enrollment_complete\" AND user_id:\"{}\" AND date:[{} TO *]", user.id, cutoff);
        let query = [("q", q), ("sort", "date:1".to_string()), ("per_page", PAGE_SIZE.to_string())];
        let events: Vec<LogEvent> = match self.get("read_logs", "/logs", &query).await {
            Ok(events) => events.unwrap_or_default(),
            Err(e) => {
                // Logs add where it came from; the enrollment itself was seen in the methods.
                tracing::debug!(backend = %self.backend(), error = %e, "enrollment log events unavailable");
                return None;
            }
        };
        // Only an event of this user close to the method's creation is its enrollment: the search
        // may answer more than asked, and another enrollment's origin is worse than none.
        let event = events
            .into_iter()
            .filter(|e| e.user_id.as_deref() == Some(user.id.as_str()) && e.date.duration_since(at).abs() <= ORIGIN_WITHIN)
            .min_by_key(|e| e.date.duration_since(at).abs())?;
        let geo = event.location_info.map(|l| {
            [l.country_code, l.subdivision_code, l.city_name].into_iter().flatten().filter(|p| !p.is_empty()).collect::<Vec<_>>().join("/")
        });
        Some(EnrollmentOrigin { ip: event.ip, user_agent: event.user_agent, geo: geo.filter(|g| !g.is_empty()), asn: None })
    }
}

/// Log entries per request: Auth0's maximum for `take` and `per_page`.
const LOG_PAGE: usize = 100;
/// A log search reaches this many entries, no further.
const LOG_SEARCH_LIMIT: usize = 1000;
/// What the stream keeps: enrollments, removals, rejected pushes and logins Adaptive MFA did not
/// trust (other logins are read only in a user's own history, where the rules need them).
const STREAMED: [EventKind; 4] = [EventKind::FactorEnrolled, EventKind::FactorRemoved, EventKind::PushDenied, EventKind::RiskySignIn];

/// Percent-decoding of a path segment (a user id `auth0|…` may be logged encoded).
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The user an administrator created an authentication method for, from a `sapi` entry's request
/// (`POST /api/v2/users/{id}/authentication-methods` answered 2xx); None for any other call.
fn method_created_for(details: &Value) -> Option<String> {
    let request = &details["request"];
    if !request["method"].as_str().is_some_and(|m| m.eq_ignore_ascii_case("post")) {
        return None;
    }
    let status = details["response"]["statusCode"].as_u64()?;
    if !(200..300).contains(&status) {
        return None;
    }
    let path = request["path"].as_str()?.split('?').next()?;
    let id = path.strip_prefix("/api/v2/users/")?.strip_suffix("/authentication-methods")?;
    let id = percent_decoded(id)?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// A tenant log entry as an identity event; None for what the watch does not read (other types,
/// failures, trusted logins where only risky ones are wanted); Err says why the entry cannot be
/// read (it is skipped and counted).
fn identity_event(entry: &Value) -> Result<Option<IdentityEvent>, String> {
    let text = |v: &Value| v.as_str().map(str::trim).filter(|s| !s.is_empty()).map(String::from);
    let id = text(&entry["log_id"]).ok_or("a log entry without a log_id")?;
    let at: jiff::Timestamp = entry["date"].as_str().and_then(|d| d.trim().parse().ok()).ok_or_else(|| format!("log entry {id}: no readable date"))?;
    let log_type = entry["type"].as_str().unwrap_or_default().trim().to_ascii_lowercase();
    let details = &entry["details"];
    // Adaptive MFA's verdict on a login: "low" confidence is a login it did not trust.
    let risky = details["riskAssessment"]["confidence"].as_str().is_some_and(|c| c.trim().eq_ignore_ascii_case("low"));
    let mut factor = None;
    let (kind, user_id, actor) = match log_type.as_str() {
        "sapi" => {
            let Some(user_id) = method_created_for(details) else { return Ok(None) };
            let auth = &details["request"]["auth"];
            let admin = text(&auth["user"]["email"]).or_else(|| text(&auth["user"]["name"])).or_else(|| text(&auth["user"]["user_id"]));
            let admin_id = text(&auth["user"]["user_id"]);
            factor = details["request"]["body"]["type"].as_str().and_then(factor_kind);
            let actor = match (admin, admin_id) {
                (_, Some(admin_id)) if admin_id == user_id => Actor::User,
                (Some(admin), _) => Actor::Other(admin),
                // A machine-to-machine application: someone other than the user all the same.
                (None, _) => Actor::Other(text(&entry["client_id"]).map_or_else(|| "a Management API client".to_string(), |c| format!("the Management API client {c}"))),
            };
            (EventKind::FactorEnrolled, user_id, actor)
        }
        other => {
            let kind = match other {
                "gd_enrollment_complete" => EventKind::FactorEnrolled,
                "gd_unenroll" => EventKind::FactorRemoved,
                "gd_auth_rejected" => EventKind::PushDenied,
                "gd_auth_succeed" => EventKind::MfaChallenge,
                "s" if risky => EventKind::RiskySignIn,
                "s" => EventKind::SignIn,
                "mfar" if risky => EventKind::RiskySignIn,
                _ => return Ok(None),
            };
            let user_id = text(&entry["user_id"]).ok_or_else(|| format!("log entry {id}: names no user"))?;
            (kind, user_id, Actor::User)
        }
    };
    let location = &entry["location_info"];
    let number = |v: &Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
    let place = Geo {
        country: text(&location["country_code"]).map(|c| c.to_ascii_uppercase()),
        region: text(&location["subdivision_code"]),
        city: text(&location["city_name"]),
        point: Geo::point_of(number(&location["latitude"]), number(&location["longitude"])),
    };
    let has_place = place.country.is_some() || place.city.is_some() || place.point.is_some();
    Ok(Some(IdentityEvent {
        id,
        at,
        user_id,
        kind,
        actor,
        client: ClientInfo {
            ip: ClientInfo::ip_of(entry["ip"].as_str()),
            user_agent: text(&entry["user_agent"]),
            geo: has_place.then_some(place),
            // Auth0's log gives neither an ASN nor a proxy verdict.
            asn: None,
            proxy: false,
        },
        factor,
        device: None,
    }))
}

/// A checkpoint worth sending back: Auth0's log ids are digits (letters allowed, nothing else).
fn usable_checkpoint(cursor: &str) -> bool {
    !cursor.is_empty() && cursor.len() <= 128 && cursor.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// How far from a method's creation time its enrollment's log event may be.
const ORIGIN_WITHIN: jiff::SignedDuration = jiff::SignedDuration::from_secs(120);

/// Said of every tenant: how long the log that feeds the window is there, and what it shows.
const EVENTS_KEPT: &str = "events: Auth0 keeps its log for the plan's retention only (a day on the free plan, up to 30 days on Enterprise) and indexes it with some delay; a window not checked within the retention loses events, and a user's earlier events are read by search, which reaches 1,000 entries";
const NO_BYPASS: &str = "bypass: the only code Auth0 lets an administrator issue is a regenerated recovery code, which works only for a user still enrolled in MFA, and a recalled user is not";
const EVENTS_SHOW: &str = "events: Auth0's log gives no ASN, no proxy verdict and no user fraud report, so anonymising proxies and reported fraud are not flagged from it";

/// Said of every tenant: a recall's groups are Auth0 roles.
const ROLES_ARE_FLAT: &str = "groups: a recall's groups are Auth0 roles, which do not nest; a role's members are the users it is assigned to";

impl Auth0 {
    async fn set_blocked(&self, user: &UserRef, blocked: bool) -> Result<(), ProviderError> {
        let (status, value) = self.call("update_user", Method::PATCH, &Self::user_path(user, ""), &[], Some(&json!({ "blocked": blocked }))).await?;
        match status {
            StatusCode::NOT_FOUND => Err(self.user_gone(user)),
            StatusCode::FORBIDDEN => Err(self.refused("/users", &value)),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl IdentityProvider for Auth0 {
    fn capabilities(&self) -> Capabilities {
        let mut limitations = vec![ROLES_ARE_FLAT.to_string(), EVENTS_KEPT.to_string(), EVENTS_SHOW.to_string(), NO_BYPASS.to_string()];
        limitations.extend(self.limitations.lock().unwrap().iter().cloned());
        Capabilities {
            list_factors: true,
            revoking_ends_enrollments: &[],
            factor_creation_time: true,
            delete_factor: true,
            // Remembered browsers can be forgotten on every plan; the Enterprise-only session
            // and refresh-token endpoints are named in the limitations when missing.
            revoke_sessions: true,
            count_sessions: !limitations.iter().any(|l| l.starts_with("sessions:")),
            force_re_enrollment: !limitations.iter().any(|l| l.starts_with("enrollment: the tenant's MFA policy")),
            enrollment_detection: true,
            event_stream: true,
            disable_user: true,
            nested_groups: false,
            // Auth0 stores emails in lower case; user ids are matched as given.
            name_match: NameMatch::CaseInsensitive,
            // Methods show `created_at`; the logs are not needed to tell a method's age.
            log_delay: None,
            inseparable: Vec::new(),
            // Auth0 sets the ticket's lifetime, and a password-change ticket is not mailed by Auth0.
            enrollment_link: Some(EnrollmentLink { mechanism: "Auth0 MFA enrollment ticket, mailed by Auth0", sets_lifetime: false, resets_password: false, needs_password_reset: false }),
            bypass: None,
            limitations,
        }
    }

    async fn check(&self) -> Result<(), ProviderError> {
        let (status, value) = self.call("check", Method::GET, "/users", &[("per_page", "1".into()), ("page", "0".into())], None).await?;
        if !status.is_success() {
            return Err(self.http.error(ErrorKind::Config, format!(
                "{status} from GET /api/v2/users ({}): check spec.auth0.url",
                brief(&value)
            )));
        }
        // Whether the plan has the session endpoints, so the gap shows before a recall starts;
        // never a reason for the backend not to be Ready (recalls do everything else).
        let users: Vec<User> = self.parse("/users", value)?;
        if let Some(user) = users.into_iter().next().map(UserRef::from)
            && let Err(e) = self.count_sessions(&user, "sessions", "sessions", Some(1)).await
        {
            tracing::warn!(backend = %self.backend(), error = %e, "the session endpoints could not be tried; recalls will find out");
        }
        Ok(())
    }

    async fn list_users(&self, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        // Cursor: "export:<job id>:<offset>".
        let (job, offset) = match cursor.and_then(|c| c.strip_prefix("export:")).and_then(|c| c.rsplit_once(':')) {
            Some((job, offset)) => (job.to_string(), offset.parse().unwrap_or(0)),
            None => (self.start_export().await?, 0),
        };
        self.export_page(&job, offset).await
    }

    async fn group_members(&self, role: &str, _: Membership, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        // A recall's groups are Auth0 roles, which do not nest. Cursor: "<role id>:<checkpoint>".
        let (id, checkpoint) = match cursor.and_then(|c| c.split_once(':')) {
            Some((id, checkpoint)) => (id.to_string(), checkpoint.to_string()),
            None => (self.find_role(role).await?, String::new()),
        };
        let (users, unreadable, next) = self.role_page(&id, &checkpoint).await?;
        Ok(UserPage { users, next: next.map(|checkpoint| format!("{id}:{checkpoint}")), unreadable })
    }

    async fn find_user(&self, name: &str) -> Result<Vec<UserRef>, ProviderError> {
        // An Auth0 user id (`auth0|…`), or an email address, which several connections may
        // share (each such account is meant).
        if name.contains('|') {
            let user: Option<User> = self.get("get_user", &format!("/users/{}", enc(name)), &[]).await?;
            return Ok(user.map(UserRef::from).into_iter().collect());
        }
        // The lookup by email is exact and case-sensitive. Auth0 stores its own users' emails
        // in lower case, other identity providers' as they send them: both spellings are asked
        // (the engine keeps each user once).
        let mut found: Vec<UserRef> = Vec::new();
        let lower = name.to_lowercase();
        for email in std::iter::once(name).chain((lower != name).then_some(lower.as_str())) {
            let users: Vec<User> = self.get("find_user", "/users-by-email", &[("email", email.to_string())]).await?.unwrap_or_default();
            found.extend(users.into_iter().map(UserRef::from));
        }
        Ok(found)
    }

    async fn snapshot(&self, user: &UserRef, kinds: &[FactorKind], cutoff: jiff::Timestamp) -> Result<UserSnapshot, ProviderError> {
        let methods = self.methods(user).await?;
        let enrolled_since_cutoff = first_since(&methods, cutoff);
        let factors = recallable(&methods, kinds, cutoff, |m| {
            tracing::warn!(backend = %self.backend(), user = %user.username, method = %m, "kept: linked to a method enrolled after the cutoff");
        });
        let mut sessions = 0;
        if !self.sessions_unavailable() {
            for (what, list) in [("sessions", "sessions"), ("refresh-tokens", "tokens")] {
                sessions += self.count_sessions(user, what, list, None).await?.unwrap_or(0);
            }
        }
        Ok(UserSnapshot { factors, sessions, enrolled_since_cutoff, ..Default::default() })
    }

    async fn revoke_sessions(&self, user: &UserRef, _snapshot: &UserSnapshot) -> Result<(), ProviderError> {
        // Remembered browsers skip the MFA prompt; forgetting them works on every plan.
        let path = Self::user_path(user, "/multifactor/actions/invalidate-remember-browser");
        let (status, _) = self.call("revoke_sessions", Method::POST, &path, &[], None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.user_gone(user));
        }
        if !self.sessions_unavailable() {
            self.end_sessions(user, "sessions").await?;
        }
        if !self.sessions_unavailable() {
            self.end_sessions(user, "refresh-tokens").await?;
        }
        Ok(())
    }

    async fn revoke_factor(&self, user: &UserRef, factor: &FactorRef) -> Result<RevokeOutcome, ProviderError> {
        if factor_kind(method_type(&factor.provider_type)).is_none() {
            return Err(self.http.error(ErrorKind::Rejected, format!(
                "refusing to delete {} method {}: not a second factor",
                method_type(&factor.provider_type),
                factor.id
            )));
        }
        let path = Self::user_path(user, &format!("/authentication-methods/{}", enc(&factor.id)));
        let (status, value) = self.call("delete_factor", Method::DELETE, &path, &[], None).await?;
        if status == StatusCode::NOT_FOUND {
            if error_code(&value) == Some("inexistent_user") {
                return Err(self.user_gone(user));
            }
            // Gone with a linked method deleted a moment ago by this recall: that deletion removed it.
            let taken = self.deleted_with_link.lock().unwrap().remove(&(user.id.clone(), factor.id.clone()));
            return Ok(if taken { RevokeOutcome::Revoked } else { RevokeOutcome::AlreadyGone });
        }
        if status == StatusCode::FORBIDDEN {
            return Err(self.refused(&path, &value));
        }
        let mut taken = self.deleted_with_link.lock().unwrap();
        for linked in linked_ids(&factor.provider_type) {
            taken.insert((user.id.clone(), linked.to_string()));
        }
        Ok(RevokeOutcome::Revoked)
    }

    async fn require_enrollment(&self, user: &UserRef, _lost: &[FactorRef], channel: super::EnrollmentChannel) -> Result<(), ProviderError> {
        // Auth0 has no per-user flag: the tenant's MFA policy makes a user without factors enroll
        // at the next login. A gap is named in the limitations, not held against each user.
        self.mfa_required().await;
        if let super::EnrollmentChannel::Link { .. } = channel {
            let body = json!({ "user_id": user.id, "send_mail": true });
            let (status, value) = self.call("send_link", Method::POST, "/guardian/enrollments/ticket", &[], Some(&body)).await?;
            match status {
                StatusCode::NOT_FOUND => return Err(self.user_gone(user)),
                StatusCode::FORBIDDEN => return Err(self.refused("/guardian/enrollments/ticket", &value)),
                s if !s.is_success() => return Err(self.http.error(ErrorKind::Rejected, format!("{s} from POST /api/v2/guardian/enrollments/ticket: {}", brief(&value)))),
                _ => {}
            }
        }
        Ok(())
    }

    async fn enrolled_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError> {
        let Some(Enrollment { kind, at, .. }) = first_since(&self.methods(user).await?, cutoff) else { return Ok(None) };
        let origin = self.enrollment_origin(user, cutoff, at).await;
        Ok(Some(Enrollment { kind, at, origin }))
    }

    async fn read_events(&self, query: &EventQuery<'_>) -> Result<EventPage, ProviderError> {
        let stamp = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let checkpoint = query.cursor.filter(|c| usable_checkpoint(c));
        let (params, search_page) = match (query.user, checkpoint) {
            // A user's own history: a search, paged by number (the cursor) up to its reach.
            (Some(user), _) => {
                let page: usize = query.cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
                let id = user.id.replace(['"', '\\'], "");
                let until = query.until.map_or_else(|| "*".to_string(), stamp);
                let q = format!("user_id:\"{id}\" AND date:[{} TO {until}]", stamp(query.from));
                (vec![("q", q), ("sort", "date:1".to_string()), ("page", page.to_string()), ("per_page", LOG_PAGE.to_string())], Some(page))
            }
            // The stream goes on by checkpoint: entries after the last log id read.
            (None, Some(from)) => (vec![("from", from.to_string()), ("take", LOG_PAGE.to_string())], None),
            // No checkpoint yet: the first entries from the window's start, by date.
            (None, None) => (vec![("q", format!("date:[{} TO *]", stamp(query.from))), ("sort", "date:1".to_string()), ("page", "0".to_string()), ("per_page", LOG_PAGE.to_string())], None),
        };
        let entries: Vec<Value> = self.get("read_logs", "/logs", &params).await?.unwrap_or_default();
        let full = entries.len() >= LOG_PAGE;
        let mut page = EventPage::default();
        match search_page {
            Some(number) => {
                page.more = full && (number + 1) * LOG_PAGE < LOG_SEARCH_LIMIT;
                page.cursor = page.more.then(|| (number + 1).to_string());
            }
            None => {
                page.more = full;
                let last = entries.iter().rev().find_map(|e| e["log_id"].as_str().filter(|id| usable_checkpoint(id)));
                page.cursor = last.map(String::from).or(checkpoint.map(String::from));
            }
        }
        for entry in &entries {
            match identity_event(entry) {
                Ok(Some(event)) if query.user.is_some() || STREAMED.contains(&event.kind) => page.events.push(event),
                Ok(_) => {}
                Err(why) => page.skipped.push(why),
            }
        }
        Ok(page)
    }

    async fn disable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        self.set_blocked(user, true).await
    }

    async fn enabled(&self, user: &UserRef) -> Result<Option<bool>, ProviderError> {
        let found: Option<Value> = self.get("get_user", &Self::user_path(user, ""), &[]).await?;
        let found = found.ok_or_else(|| self.user_gone(user))?;
        Ok(Some(!found["blocked"].as_bool().unwrap_or(false)))
    }

    async fn enable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        self.set_blocked(user, false).await
    }
}

/// The second factor created first at or after the cutoff. Recovery codes are issued with the
/// factor a user enrolls: they are the kind only when nothing else was enrolled.
fn first_since(methods: &[AuthMethod], cutoff: jiff::Timestamp) -> Option<Enrollment> {
    let since = |codes: bool| {
        super::first_enrolled_since(
            methods.iter().filter_map(|m| Some((factor_kind(&m.type_)?, m.created_at?))).filter(|(kind, _)| (*kind == FactorKind::RecoveryCodes) == codes),
            cutoff,
        )
    };
    since(false).or_else(|| since(true))
}

/// The methods to delete: second factors of `kinds` created before `cutoff` or at an unknown
/// time (recorded as of unknown age: kept unless the logs date them), each with the methods
/// linked to it. Linked methods go together, so a selected method brings its partners along, and
/// a set with a member enrolled at or after the cutoff, or at an unknown time, is kept whole
/// (`kept` hears of each old method left for that).
fn recallable(methods: &[AuthMethod], kinds: &[FactorKind], cutoff: jiff::Timestamp, mut kept: impl FnMut(&str)) -> Vec<FactorRef> {
    let by_id: HashMap<&str, &AuthMethod> = methods.iter().map(|m| (m.id.as_str(), m)).collect();
    // Links are declared on one side or both: make them symmetric.
    let mut links: HashMap<&str, Vec<&str>> = HashMap::new();
    for m in methods {
        if let Some(other) = m.link_id.as_deref().filter(|l| by_id.contains_key(l) && *l != m.id) {
            links.entry(m.id.as_str()).or_default().push(other);
            links.entry(other).or_default().push(m.id.as_str());
        }
    }
    let age = |m: &AuthMethod| Age::of(m.created_at, cutoff);
    let wanted = |m: &AuthMethod| factor_kind(&m.type_).is_some_and(|k| selected(k, kinds));
    let mut factors = Vec::new();
    for m in methods {
        let Some(kind) = factor_kind(&m.type_) else { continue };
        let mut partners: Vec<&str> = links.get(m.id.as_str()).cloned().unwrap_or_default();
        partners.sort_unstable();
        partners.dedup();
        let partner_methods: Vec<&AuthMethod> = partners.iter().filter_map(|id| by_id.get(id).copied()).collect();
        if !(wanted(m) || partner_methods.iter().any(|p| wanted(p))) {
            continue;
        }
        if age(m) == Age::Since {
            continue;
        }
        if !partner_methods.is_empty() && partner_methods.iter().chain([&m]).any(|p| age(p) != Age::Before) {
            kept(&m.id);
            continue;
        }
        let linked: Vec<String> = partner_methods.iter().filter(|p| factor_kind(&p.type_).is_some()).map(|p| p.id.clone()).collect();
        factors.push(FactorRef::aged(m.id.clone(), kind, provider_type(&m.type_, &linked), age(m)));
    }
    factors
}

/// The user session and refresh-token endpoints, which Auth0 documents as available on
/// Enterprise plans only: a 403 from them (other than a missing scope) is the plan's answer,
/// whatever its error code.
fn plan_gated(path: &str) -> bool {
    path.starts_with("/users/") && (path.ends_with("/sessions") || path.ends_with("/refresh-tokens"))
}

fn error_code(value: &Value) -> Option<&str> {
    value.get("errorCode").and_then(Value::as_str)
}

/// A short, secret-free rendering of an error body.
fn brief(value: &Value) -> String {
    super::brief(value, &["/error", "/message", "/error_description"])
}

/// The next user of an export, up to `MAX_EXPORT_LINE` bytes a line; the error says what is
/// wrong with the file.
fn next_export_line(reader: &mut ExportReader) -> Result<Option<Record<User>>, String> {
    let mut line = String::new();
    loop {
        line.clear();
        let read = std::io::Read::take(&mut reader.lines, MAX_EXPORT_LINE).read_line(&mut line).map_err(|e| e.to_string())?;
        if read == 0 {
            return Ok(None);
        }
        if !line.ends_with('\n') && read as u64 == MAX_EXPORT_LINE {
            return Err(format!("a line is longer than {MAX_EXPORT_LINE} bytes"));
        }
        if line.trim().is_empty() {
            continue;
        }
        reader.offset += 1;
        return Ok(Some(serde_json::from_str(line.trim()).unwrap_or_else(|e| Record::Unreadable(Unreadable::because(format!("(line {} of the users export)", reader.offset), &e)))));
    }
}

/// `data` read as a users export, for the fuzz target `auth0_export`.
pub(crate) fn read_export(data: &[u8]) {
    let mut reader = ExportReader { job: "fuzz".into(), offset: 0, lines: BufReader::new(GzDecoder::new(Cursor::new(Bytes::copy_from_slice(data)))) };
    while let Ok(Some(_)) = next_export_line(&mut reader) {}
}

/// Every answer shape this adapter decodes, for the fuzz target `provider_json`.
pub(crate) fn decode_answers(data: &[u8]) {
    crate::fuzzing::decode::<Vec<Record<User>>>(data);
    crate::fuzzing::decode::<Vec<AuthMethod>>(data);
    crate::fuzzing::decode::<Vec<Role>>(data);
    crate::fuzzing::decode::<RoleMembers>(data);
    crate::fuzzing::decode::<Job>(data);
    crate::fuzzing::decode::<Vec<LogEvent>>(data);
    // Log entries as the event stream reads them: never a panic, whatever a field holds.
    if let Ok(entries) = serde_json::from_slice::<Vec<Value>>(data) {
        for entry in &entries {
            let _ = identity_event(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Secret;

    use super::*;
    use crate::api::SecretRef;
    use idp_sim::auth0::{Auth0 as Tenant, Plan};
    use idp_sim::FactorKind as Sim;
    use idp_sim::{GroupSeed, Provider, Running, Seed, Simulator, serve, username};

    const SECRET: &str = "client-secret-for-tests-0123456789";

    struct Bench {
        tenant: Arc<Tenant>,
        running: Running,
    }

    async fn bench(users: u32, factors: Vec<Sim>) -> Bench {
        let tenant = Arc::new(Tenant::new(&json!({ "client-id": "client", "client-secret": SECRET })).unwrap());
        tenant.seed(&Seed { users, factors, groups: vec![GroupSeed::new("staff", 2)], ..Seed::default() });
        let running = serve(Simulator::new(tenant.clone()), ([127, 0, 0, 1], 0).into()).await.unwrap();
        Bench { tenant, running }
    }

    impl Bench {
        /// A new adapter, as a restarted operator would build it.
        fn adapter(&self) -> Auth0 {
            let secret: Secret =
                serde_json::from_value(json!({ "metadata": { "name": "auth0" }, "stringData": { "client-id": "client", "client-secret": SECRET } })).unwrap();
            let keys = SecretKeys::new(&secret, "test/auth0");
            let spec = Auth0Provider { url: self.running.url.clone(), credentials_secret_ref: SecretRef { name: "auth0".into() } };
            let http = ProviderHttp::new("test/auth0", crate::backends::pacing::Limits { requests_per_second: 5000, max_concurrency: 8, log_delay: None, ..Default::default() }, Default::default()).unwrap();
            Auth0::new(http, &spec, &keys).unwrap()
        }

        fn user(&self, i: u32) -> UserRef {
            let view = self.tenant.user(&username(i)).unwrap();
            UserRef { id: view.id, username: view.username }
        }
    }

    #[tokio::test]
    async fn all_users_come_from_an_export_past_the_search_limit_and_resume_from_a_cursor() {
        let bench = bench(1250, vec![]).await;
        let adapter = bench.adapter();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..4 {
            let page = adapter.list_users(cursor.as_deref()).await.unwrap();
            seen.extend(page.users.into_iter().map(|u| u.username));
            cursor = page.next;
        }
        // The rest from a fresh adapter: it downloads the same export again by job id.
        let resumed = bench.adapter();
        while let Some(c) = cursor {
            let page = resumed.list_users(Some(&c)).await.unwrap();
            seen.extend(page.users.into_iter().map(|u| u.username));
            cursor = page.next;
        }
        let expected: Vec<String> = (0..1250).map(username).collect();
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn roles_stand_for_groups() {
        let bench = bench(250, vec![]).await;
        let adapter = bench.adapter();
        let (mut members, mut cursor) = (Vec::new(), None);
        loop {
            let page = adapter.group_members("staff", Membership::Transitive, cursor.as_deref()).await.unwrap();
            assert!(page.users.len() <= 100, "paged");
            members.extend(page.users);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(members.len(), 125);
        let missing = adapter.group_members("nobody", Membership::Transitive, None).await.unwrap_err();
        assert!(missing.kind() == ErrorKind::NotFound && missing.to_string().contains("role"), "{missing}");
        // Emails are stored in lower case and looked up exactly: a name with capitals is found.
        let shouted = username(3).to_uppercase();
        assert_eq!(adapter.find_user(&shouted).await.unwrap(), vec![bench.user(3)]);
        assert_eq!(adapter.find_user(&bench.user(3).id).await.unwrap(), vec![bench.user(3)], "by Auth0 user id");
        assert!(adapter.find_user("ghost@example.com").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn linked_methods_go_together_and_each_counts_as_revoked_once() {
        let bench = bench(2, vec![Sim::Push, Sim::RecoveryCodes, Sim::Totp]).await;
        let adapter = bench.adapter();
        let user = bench.user(0);
        // Asking for push alone still records its recovery code: deleting one removes both.
        let snapshot = adapter.snapshot(&user, &[FactorKind::Push], jiff::Timestamp::now()).await.unwrap();
        let mut kinds: Vec<FactorKind> = snapshot.factors.iter().map(|f| f.kind).collect();
        kinds.sort();
        assert_eq!(kinds, vec![FactorKind::RecoveryCodes, FactorKind::Push]);
        for factor in &snapshot.factors {
            assert_eq!(adapter.revoke_factor(&user, factor).await.unwrap(), RevokeOutcome::Revoked);
        }
        let left: Vec<Sim> = bench.tenant.user(&username(0)).unwrap().factors.iter().map(|f| f.kind).collect();
        assert_eq!(left, vec![Sim::Totp]);
        // After a restart nothing is claimed twice.
        let restarted = bench.adapter();
        for factor in &snapshot.factors {
            assert_eq!(restarted.revoke_factor(&user, factor).await.unwrap(), RevokeOutcome::AlreadyGone);
        }
    }

    #[tokio::test]
    async fn without_enterprise_the_recall_names_the_session_gap_and_still_removes_factors() {
        use crate::audit::AuditLog;
        use crate::engine::{RunEnd, Runner, SharedProgress};
        use crate::ledger::MemoryLedger;

        let bench = bench(30, vec![Sim::Totp, Sim::Webauthn, Sim::RecoveryCodes]).await;
        bench.tenant.set_plan(Plan::Professional);
        let adapter = Arc::new(bench.adapter());
        let cutoff = jiff::Timestamp::now();
        let job = recall_job(cutoff);
        let (ledger, audit, progress) = (Arc::new(MemoryLedger::default()), Arc::new(AuditLog::open(None, "test", false).unwrap()), SharedProgress::default());
        let (_stop, stop) = tokio::sync::watch::channel(false);
        let runner = Runner { provider: adapter.clone(), ledger: ledger.clone(), audit: audit.clone(), progress: progress.clone(), stop };
        assert_eq!(runner.revoke(&job).await.unwrap(), RunEnd::Finished);
        let counts = progress.lock().unwrap().counts.clone();
        assert_eq!((counts.invalidated, counts.failed, counts.sessions_revoked), (30, 0, 0), "{counts:?}");
        let census = bench.tenant.census(Some(cutoff));
        assert!(census.factors_before_cutoff.is_empty(), "{census:?}");
        assert_eq!(census.sessions, 30, "sessions cannot be ended on this plan");
        assert_eq!(bench.tenant.remembers_browsers(&username(7)), Some(false), "remembered browsers are forgotten on every plan");
        let capabilities = adapter.capabilities();
        assert!(capabilities.limitations.iter().any(|l| l.starts_with("sessions: not available on this Auth0 plan (Enterprise only)")), "{capabilities:?}");
        // The check finds the gap before any recall.
        let fresh = bench.adapter();
        assert_eq!(fresh.capabilities().limitations, ALWAYS_SAID);
        fresh.check().await.unwrap();
        assert!(fresh.capabilities().limitations.iter().any(|l| l.starts_with("sessions:")));
    }

    /// What every tenant's capabilities say before anything is learnt from it.
    const ALWAYS_SAID: [&str; 4] = [ROLES_ARE_FLAT, EVENTS_KEPT, EVENTS_SHOW, NO_BYPASS];

    /// A recall of every user and kind on this tenant, as the engine gets it.
    fn recall_job(cutoff: jiff::Timestamp) -> crate::engine::RecallJob {
        crate::engine::RecallJob {
            recall: "test/recall".into(),
            backend: "auth0".into(),
            scope: crate::backends::ScopeSelector::AllUsers,
            exclude_users: vec![],
            exclude_groups: vec![],
            kinds: vec![FactorKind::All],
            revoke_sessions: true,
            cutoff,
            concurrency: 4,
            window: Default::default(),
            notices: None,
            channel: Default::default(),
            plan_only: false,
            rollout: None,
            exclusions_now: None,
        }
    }

    /// Every Auth0 kind, push linked to its recovery code: the engine's counts and audit trail
    /// agree with what the tenant lost.
    #[tokio::test]
    async fn every_kind_counts_exactly_through_the_engine() {
        use crate::audit::AuditLog;
        use crate::engine::{RunEnd, Runner, SharedProgress};
        use crate::ledger::MemoryLedger;

        let kinds = vec![Sim::Totp, Sim::Webauthn, Sim::Passkey, Sim::RecoveryCodes, Sim::Push, Sim::Sms, Sim::Email, Sim::Hotp];
        let bench = bench(40, kinds).await;
        let adapter = Arc::new(bench.adapter());
        let cutoff = jiff::Timestamp::now();
        let before = bench.tenant.census(Some(cutoff));
        assert_eq!(before.factors_before_cutoff.values().sum::<u64>(), 40 * 7, "Auth0 has no HOTP: {before:?}");
        let job = recall_job(cutoff);
        let audit_path = std::env::temp_dir().join(format!("mfa-recall-auth0-{:016x}.jsonl", fastrand::u64(..)));
        let (ledger, audit, progress) = (Arc::new(MemoryLedger::default()), Arc::new(AuditLog::open(Some(&audit_path), "test", false).unwrap()), SharedProgress::default());
        let (_stop, stop) = tokio::sync::watch::channel(false);
        let runner = Runner { provider: adapter.clone(), ledger: ledger.clone(), audit: audit.clone(), progress: progress.clone(), stop };
        assert_eq!(runner.revoke(&job).await.unwrap(), RunEnd::Finished);
        let counts = progress.lock().unwrap().counts.clone();
        let revoked: std::collections::BTreeMap<String, u64> = counts.factors_revoked.iter().map(|(k, v)| (k.as_str().to_string(), *v as u64)).collect();
        assert_eq!(revoked, before.factors_before_cutoff);
        assert_eq!(counts.sessions_revoked as u64, before.sessions + before.grants);
        let audited = std::fs::read_to_string(&audit_path).unwrap();
        crate::audit::remove(&audit_path).unwrap();
        let revoked_events = audited.lines().filter(|l| l.contains("\"factor.revoke\"") && l.contains("\"revoked\"")).count();
        assert_eq!(revoked_events as u64, 40 * 7, "each method is audited as revoked once, linked ones included");
        let after = bench.tenant.census(Some(cutoff));
        assert!(after.factors_before_cutoff.is_empty() && after.sessions == 0 && after.grants == 0, "{after:?}");
    }

    #[tokio::test]
    async fn on_enterprise_sessions_and_refresh_tokens_are_counted_and_ended() {
        let bench = bench(1, vec![Sim::Totp]).await;
        let adapter = bench.adapter();
        let user = bench.user(0);
        let snapshot = adapter.snapshot(&user, &[FactorKind::All], jiff::Timestamp::now()).await.unwrap();
        assert_eq!(snapshot.sessions, 2, "one session and one refresh token");
        adapter.revoke_sessions(&user, &snapshot).await.unwrap();
        let after = bench.tenant.user(&username(0)).unwrap();
        assert_eq!((after.sessions, after.grants), (0, 0));
        assert_eq!(adapter.capabilities().limitations, ALWAYS_SAID, "nothing learnt from the tenant");
    }

    #[tokio::test]
    async fn re_enrollment_is_seen_with_where_it_came_from() {
        let bench = bench(3, vec![Sim::Totp]).await;
        let adapter = bench.adapter();
        let cutoff = jiff::Timestamp::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        bench.tenant.enroll(&username(1), Sim::Webauthn, "203.0.113.9").unwrap();
        let seen = adapter.enrolled_since(&bench.user(1), cutoff).await.unwrap().expect("enrolled");
        assert_eq!(seen.kind, FactorKind::Webauthn);
        let origin = seen.origin.expect("origin from the log events");
        assert_eq!((origin.ip.as_deref(), origin.geo.as_deref(), origin.asn), (Some("203.0.113.9"), Some("JP/Tokyo"), None));
        assert!(origin.user_agent.is_some_and(|ua| ua.contains("Mozilla")));
        assert_eq!(adapter.enrolled_since(&bench.user(2), cutoff).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_mfa_policy_other_than_always_is_named() {
        let bench = bench(1, vec![Sim::Totp]).await;
        let adapter = bench.adapter();
        adapter.require_enrollment(&bench.user(0), &[], Default::default()).await.unwrap();
        assert!(adapter.capabilities().force_re_enrollment);
        bench.tenant.set_mfa_required(false);
        let adapter = bench.adapter();
        adapter.require_enrollment(&bench.user(0), &[], Default::default()).await.unwrap();
        let capabilities = adapter.capabilities();
        assert!(!capabilities.force_re_enrollment);
        assert!(capabilities.limitations.iter().any(|l| l.starts_with("enrollment:")));
    }

    fn method(id: &str, type_: &str, created: &str, link: Option<&str>) -> AuthMethod {
        AuthMethod { id: id.into(), type_: type_.into(), created_at: Shown::text(created), link_id: link.map(String::from) }
    }

    #[test]
    fn cutoff_and_links_decide_what_is_recalled() {
        let cutoff: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let methods = vec![
            method("password|1", "password", "2020-01-01T00:00:00Z", None),
            method("totp|old", "totp", "2025-01-01T00:00:00Z", None),
            method("totp|new", "totp", "2026-01-02T00:00:00Z", None),
            method("webauthn-roaming|undated", "webauthn-roaming", "", None),
            // An old recovery code linked to a push enrolled after the cutoff stays with it.
            method("push|new", "push", "2026-01-02T00:00:00Z", Some("recovery-code|old")),
            method("recovery-code|old", "recovery-code", "2025-01-01T00:00:00Z", None),
        ];
        let mut kept = Vec::new();
        let factors = recallable(&methods, &[FactorKind::All], cutoff, |id| kept.push(id.to_string()));
        let ids: Vec<&str> = factors.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, vec!["totp|old", "webauthn-roaming|undated"]);
        assert_eq!(kept, vec!["recovery-code|old"]);

        let linked = vec![method("push|a", "push", "2025-01-01T00:00:00Z", Some("recovery-code|b")), method("recovery-code|b", "recovery-code", "2025-01-01T00:00:00Z", None)];
        let factors = recallable(&linked, &[FactorKind::RecoveryCodes], cutoff, |_| {});
        assert_eq!(factors.len(), 2);
        assert_eq!(linked_ids(&factors[0].provider_type), vec!["recovery-code|b"]);
        assert_eq!(method_type(&factors[1].provider_type), "recovery-code");
        assert_eq!(linked_ids(&factors[1].provider_type), vec!["push|a"]);
    }

    #[test]
    fn password_is_never_a_factor() {
        assert_eq!(factor_kind("password"), None);
        assert_eq!(factor_kind("webauthn-platform"), Some(FactorKind::Passkey));
        assert_eq!(factor_kind("phone"), Some(FactorKind::Sms));
    }

    fn entry(log_type: &str) -> Value {
        json!({
            "log_id": "90020261206031500000000000000000001", "date": "2026-12-06T03:15:00.123Z", "type": log_type,
            "description": "", "client_id": "cKYr0EAR0UJkz4BkKtl8j8ZtnJ9Q3Z2t", "ip": "100.64.7.7",
            "user_agent": "Chrome 120.0.0 / Mac OS X 10.15.7", "user_id": "auth0|5f1b2c3d4e5f6a7b8c9d0e1f", "details": {},
            "location_info": { "country_code": "ng", "country_code3": "NGA", "country_name": "Nigeria", "city_name": "Lagos", "latitude": 6.5244, "longitude": 3.3792, "time_zone": "Africa/Lagos", "continent_code": "AF" },
        })
    }

    #[test]
    fn log_entries_read_as_identity_events() {
        let enrolled = identity_event(&entry("gd_enrollment_complete")).unwrap().unwrap();
        assert_eq!((enrolled.kind, enrolled.user_id.as_str(), &enrolled.actor), (EventKind::FactorEnrolled, "auth0|5f1b2c3d4e5f6a7b8c9d0e1f", &Actor::User));
        assert_eq!(enrolled.client.ip, Some("100.64.7.7".parse().unwrap()));
        let geo = enrolled.client.geo.unwrap();
        assert_eq!((geo.country.as_deref(), geo.city.as_deref(), geo.point), (Some("NG"), Some("Lagos"), Some((6.5244, 3.3792))));
        assert_eq!(identity_event(&entry("GD_AUTH_REJECTED")).unwrap().unwrap().kind, EventKind::PushDenied);
        assert_eq!(identity_event(&entry("s")).unwrap().unwrap().kind, EventKind::SignIn);
        let mut risky = entry("s");
        risky["details"] = json!({ "riskAssessment": { "confidence": "LOW", "version": "1" } });
        assert_eq!(identity_event(&risky).unwrap().unwrap().kind, EventKind::RiskySignIn);
        risky["type"] = json!("mfar");
        assert_eq!(identity_event(&risky).unwrap().unwrap().kind, EventKind::RiskySignIn);
        // Failures, other types and trusted MFA prompts are not read.
        for other in ["f", "fp", "gd_auth_failed", "gd_start_enroll", "mfar", "sapi", "", "seacft"] {
            assert_eq!(identity_event(&entry(other)).unwrap(), None, "{other}");
        }
    }

    #[test]
    fn an_administrators_method_is_an_enrollment_by_someone_else() {
        let mut call = entry("sapi");
        call["user_id"] = json!("auth0|admin0000000000000000001");
        call["details"] = json!({
            "request": { "method": "post", "path": "/api/v2/users/auth0%7C5f1b2c3d4e5f6a7b8c9d0e1f/authentication-methods", "body": { "type": "totp" },
                "auth": { "user": { "user_id": "auth0|admin0000000000000000001", "email": "helpdesk@example.com", "name": "Help Desk" }, "strategy": "jwt" } },
            "response": { "statusCode": 201, "body": {} },
        });
        let event = identity_event(&call).unwrap().unwrap();
        assert_eq!((event.kind, event.user_id.as_str(), event.factor), (EventKind::FactorEnrolled, "auth0|5f1b2c3d4e5f6a7b8c9d0e1f", Some(FactorKind::Totp)));
        assert_eq!(event.actor, Actor::Other("helpdesk@example.com".into()));
        // Refused, other calls, other paths: not an enrollment.
        for (pointer, value) in [("/details/response/statusCode", json!(400)), ("/details/request/method", json!("delete")), ("/details/request/path", json!("/api/v2/users/auth0%7Cx/roles")), ("/details/request/path", json!("/api/v2/users/a%ZZ/authentication-methods"))] {
            let mut other = call.clone();
            *other.pointer_mut(pointer).unwrap() = value;
            assert_eq!(identity_event(&other).unwrap(), None, "{pointer}");
        }
        // A machine-to-machine call names no person, and is still not the user.
        call["details"]["request"]["auth"] = json!({ "strategy": "jwt" });
        assert!(matches!(identity_event(&call).unwrap().unwrap().actor, Actor::Other(_)));
    }

    #[test]
    fn malformed_log_entries_are_skipped_or_read_without_what_is_garbage() {
        let mut no_id = entry("s");
        no_id["log_id"] = json!(null);
        assert!(identity_event(&no_id).is_err());
        let mut bad_date = entry("s");
        bad_date["date"] = json!("yesterday");
        assert!(identity_event(&bad_date).unwrap_err().contains("date"));
        let mut nobody = entry("gd_enrollment_complete");
        nobody["user_id"] = json!("  ");
        assert!(identity_event(&nobody).unwrap_err().contains("names no user"));
        let mut garbage = entry("s");
        garbage["ip"] = json!("999.1.2.3");
        garbage["location_info"] = json!({ "country_code": 7, "latitude": 0.0, "longitude": 0.0 });
        garbage["details"] = json!("not an object");
        let event = identity_event(&garbage).unwrap().unwrap();
        assert_eq!((event.client.ip, event.client.geo), (None, None));
        garbage["location_info"] = json!({ "latitude": "52.52", "longitude": "13.405", "city_name": "Berlin" });
        assert_eq!(identity_event(&garbage).unwrap().unwrap().client.geo.unwrap().point, Some((52.52, 13.405)));
        garbage["location_info"] = json!("nowhere");
        assert_eq!(identity_event(&garbage).unwrap().unwrap().client.geo, None);
        assert!(identity_event(&json!([1, 2])).is_err());
        assert!(!usable_checkpoint("90020261206/../x") && !usable_checkpoint("") && usable_checkpoint("90020261206031500000000000000000001"));
    }
}
