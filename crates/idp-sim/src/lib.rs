//! Simulators of the SaaS identity providers that cannot run here (Okta, Entra ID, Auth0, Google
//! Workspace, Duo). Each follows its provider's documented paths, JSON shapes, paging, auth scheme
//! and quirks (see IDP-NOTES.md); this module gives them what they share: an HTTP server on a
//! loopback port, per-bucket rate limits with the provider's own throttling answer, fault
//! injection, request counts, and a control API (`/_sim/...`) for tests and benchmarks running
//! the simulator as its own process.
//!
//! State is in memory and kept per user in maps, so a simulator serves a million users.

pub mod activity;
pub mod auth0;
pub mod duo;
pub mod entra;
pub mod google;
pub mod okta;
pub mod server;
pub mod subject;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::{HeaderMap, Method};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use activity::{Act, Activity, Place, place_of};
pub use server::{Running, serve};

/// The login every simulator gives user `i`.
/// Marks every credential a test hands the operator; the canary sweep after the suite
/// (`mfa-recall-canary-sweep`) fails on any output that holds it.
pub const CANARY: &str = "mfacanary";

pub fn username(i: u32) -> String {
    format!("user{i:06}@example.com")
}

/// A request as a simulator sees it: read whole.
#[derive(Debug)]
pub struct SimRequest {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl SimRequest {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The path split on `/`, without the empty first segment, percent-decoded.
    pub fn segments(&self) -> Vec<String> {
        self.path.trim_start_matches('/').split('/').map(percent_decode).collect()
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form(&self) -> Vec<(String, String)> {
        parse_query(&String::from_utf8_lossy(&self.body))
    }

    pub fn form_value(&self, key: &str) -> Option<String> {
        self.form().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The token of `Authorization: <scheme> <token>`.
    pub fn authorization(&self, scheme: &str) -> Option<&str> {
        let value = self.header("authorization")?;
        let (given, token) = value.split_once(' ')?;
        given.eq_ignore_ascii_case(scheme).then_some(token.trim())
    }
}

/// A simulator's answer.
#[derive(Clone, Debug)]
pub struct SimResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SimResponse {
    pub fn json(status: u16, body: &Value) -> Self {
        Self { status, headers: vec![("content-type".into(), "application/json".into())], body: body.to_string().into_bytes() }
    }

    pub fn empty(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: Vec::new() }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// A kind of factor, in the words tests use to seed and enroll them and census to count them.
/// Each simulator maps it to its provider's own factor types from the provider's documentation;
/// the operator's adapters map the same types back on their own, so neither can hide the other's
/// mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FactorKind {
    Totp,
    Hotp,
    Webauthn,
    Passkey,
    RecoveryCodes,
    Sms,
    Email,
    Push,
    HardwareToken,
    SecurityQuestion,
    AppPassword,
    TwoStepVerification,
}

impl FactorKind {
    /// The camelCase name, as census counts are keyed.
    pub fn as_str(self) -> &'static str {
        match self {
            FactorKind::Totp => "totp",
            FactorKind::Hotp => "hotp",
            FactorKind::Webauthn => "webauthn",
            FactorKind::Passkey => "passkey",
            FactorKind::RecoveryCodes => "recoveryCodes",
            FactorKind::Sms => "sms",
            FactorKind::Email => "email",
            FactorKind::Push => "push",
            FactorKind::HardwareToken => "hardwareToken",
            FactorKind::SecurityQuestion => "securityQuestion",
            FactorKind::AppPassword => "appPassword",
            FactorKind::TwoStepVerification => "twoStepVerification",
        }
    }
}

/// Users, factors and sessions to create. Every user gets one factor of each kind in `factors`
/// (in the provider's own types) created `factor_age_hours` ago, and `sessions` live sessions.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Seed {
    pub users: u32,
    pub factors: Vec<FactorKind>,
    pub sessions: u32,
    /// Groups and which users are in them: user `i` is a member when `i % every == 0`.
    pub groups: Vec<GroupSeed>,
    pub factor_age_hours: u32,
}

impl Default for Seed {
    fn default() -> Self {
        Self {
            users: 100,
            factors: vec![FactorKind::Totp, FactorKind::Webauthn, FactorKind::RecoveryCodes],
            sessions: 1,
            groups: Vec::new(),
            factor_age_hours: 24 * 30,
        }
    }
}

/// A group: user `i` is a direct member when `i % every == offset`. A group with a `parent` is
/// nested in it, where the provider's groups nest; providers with flat groups keep it as a group
/// of its own.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSeed {
    pub name: String,
    pub every: u32,
    #[serde(default)]
    pub offset: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

impl GroupSeed {
    pub fn new(name: &str, every: u32) -> Self {
        Self { name: name.to_string(), every, offset: 0, parent: None }
    }

    /// A subgroup of `parent`, its direct members the users with `i % every == offset`.
    pub fn nested(name: &str, every: u32, offset: u32, parent: &str) -> Self {
        Self { name: name.to_string(), every, offset, parent: Some(parent.to_string()) }
    }

    pub fn has_member(&self, i: u32) -> bool {
        self.every > 0 && i % self.every == self.offset
    }
}

impl Seed {
    /// When seeded factors were created.
    pub fn factor_created(&self) -> jiff::Timestamp {
        jiff::Timestamp::now() - jiff::SignedDuration::from_hours(self.factor_age_hours as i64)
    }

    /// Names of the groups user `i` belongs to directly.
    pub fn groups_of(&self, i: u32) -> impl Iterator<Item = &str> {
        self.groups.iter().filter(move |g| g.has_member(i)).map(|g| g.name.as_str())
    }

    /// Indexes of the groups nested in group `index`, at any depth, parents first.
    pub fn subgroups(&self, index: usize) -> Vec<usize> {
        let mut tree = vec![index];
        let mut next = 0;
        while next < tree.len() {
            let parent = &self.groups[tree[next]].name;
            let children: Vec<usize> = (0..self.groups.len()).filter(|g| self.groups[*g].parent.as_ref() == Some(parent) && !tree.contains(g)).collect();
            tree.extend(children);
            next += 1;
        }
        tree.remove(0);
        tree
    }

    /// Whether user `i` is a member of group `name`, or (when `transitive`) of a group nested in it.
    pub fn is_member(&self, i: u32, name: &str, transitive: bool) -> bool {
        let Some(index) = self.groups.iter().position(|g| g.name == name) else { return false };
        let nested = if transitive { self.subgroups(index) } else { Vec::new() };
        std::iter::once(index).chain(nested).any(|g| self.groups[g].has_member(i))
    }
}

/// One factor as the simulator knows it, with its true creation time even where the provider's
/// API does not show one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FactorView {
    pub id: String,
    pub kind: FactorKind,
    pub created: jiff::Timestamp,
}

/// One user's state, for tests that compare the recall with the provider.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub active: bool,
    pub factors: Vec<FactorView>,
    pub sessions: u32,
    /// Tokens, grants, app passwords or remembered devices still alive.
    pub grants: u32,
}

/// Totals over every user.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Census {
    pub users: u64,
    pub active_users: u64,
    /// Factors by kind (`FactorKind::as_str`).
    pub factors: BTreeMap<String, u64>,
    /// Factors created before the cutoff asked for, by kind.
    pub factors_before_cutoff: BTreeMap<String, u64>,
    pub sessions: u64,
    pub grants: u64,
    /// Users holding at least one factor created before the cutoff.
    pub users_with_old_factors: u64,
}

impl Census {
    /// Adds one user to the totals.
    pub fn count(&mut self, user: &UserView, cutoff: Option<jiff::Timestamp>) {
        self.users += 1;
        self.active_users += user.active as u64;
        self.sessions += user.sessions as u64;
        self.grants += user.grants as u64;
        let mut old = false;
        for f in &user.factors {
            *self.factors.entry(f.kind.as_str().to_string()).or_default() += 1;
            if cutoff.is_some_and(|c| f.created < c) {
                *self.factors_before_cutoff.entry(f.kind.as_str().to_string()).or_default() += 1;
                old = true;
            }
        }
        self.users_with_old_factors += old as u64;
    }
}

/// One provider's API over its in-memory state.
pub trait Provider: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The rate-limit bucket a request counts against (Okta, for one, limits per endpoint).
    fn bucket(&self, _request: &SimRequest) -> &'static str {
        "default"
    }
    /// Answers one request, authentication included.
    fn handle(&self, request: &SimRequest) -> SimResponse;
    /// The provider's answer when a bucket's limit is reached; `reset` is the window's end (epoch s).
    fn throttled(&self, reset: i64) -> SimResponse;
    /// Whether answers carry `X-Rate-Limit-Limit/-Remaining/-Reset` (Okta, Auth0).
    fn announces_limits(&self) -> bool {
        false
    }
    /// How the provider spells its rate-limit headers, before `-Limit/-Remaining/-Reset`
    /// (Okta `X-Rate-Limit`, Auth0 `x-ratelimit`).
    fn limit_header_prefix(&self) -> &'static str {
        "X-Rate-Limit"
    }
    /// Creates users per `seed`, replacing what was there.
    fn seed(&self, seed: &Seed);
    /// Every user, for totals; `cutoff` splits factors by creation time.
    fn census(&self, cutoff: Option<jiff::Timestamp>) -> Census;
    fn user(&self, username: &str) -> Option<UserView>;
    /// The user enrolls a new factor of `kind` now (as they would at the sign-in page); its id.
    fn enroll(&self, username: &str, kind: FactorKind, from_ip: &str) -> Option<String>;
    /// An administrator adds a device of `kind` to the user now (not the user enrolling it);
    /// its id. None where the provider has no such path.
    fn add_by_admin(&self, _username: &str, _kind: FactorKind) -> Option<String> {
        None
    }
    /// How late the provider's logs show what happened, where it has such a lag.
    fn set_log_delay(&self, _delay: std::time::Duration) {}
    /// Whether the tenant holds the licence its premium logs need (Entra ID P1/P2 for sign-ins
    /// and risk detections); providers without such tiers ignore it.
    fn set_premium(&self, _licensed: bool) {}
    /// Records what a person did in the provider's log (an enrollment also adds the factor): the
    /// id of the factor enrolled, if any. Err says why the provider's log has no such entry.
    fn act(&self, _username: &str, _activity: &Activity) -> Result<Option<String>, String> {
        Err(format!("the {} simulator records no such activity", self.name()))
    }
    /// The user signs in with a pass or code an administrator issued them, as the provider's
    /// sign-in page takes it: Ok when it lets them in (using it up where it is good once), Err
    /// with the provider's reason when not (unknown, expired, used).
    fn sign_in_with_bypass(&self, _username: &str, _code: &str) -> Result<(), String> {
        Err(format!("the {} simulator has no bypass to sign in with", self.name()))
    }
    /// The links the provider mailed the user itself (an enrollment ticket), oldest first.
    fn links_mailed(&self, _username: &str) -> Vec<String> {
        Vec::new()
    }
}

/// Faults to inject, for tests of retries and of what a recall reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// The next this many requests are answered as throttled (a 429 burst).
    pub throttle_next: u32,
    /// Share of requests answered 503.
    pub error_rate: f64,
    /// Share of requests answered after `slow_ms`.
    pub slow_rate: f64,
    pub slow_ms: u64,
    /// Share of requests whose connection is closed without an answer.
    pub drop_rate: f64,
    /// Share of requests answered 200 with a JSON body cut off mid-way.
    pub malformed_rate: f64,
    /// Share of requests carried out, their connection then closed before the answer (a write
    /// that took effect, its answer lost on the way).
    pub lost_rate: f64,
    /// Requests whose path contains one of these always get 500 (a permanent failure).
    pub failing_paths: Vec<String>,
    /// Links in answers (next pages) point at another host, as a compromised or misconfigured
    /// provider might send: a client must not follow them with its credentials.
    pub foreign_links: bool,
}

/// What a fault does to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    /// A 500, every time (`failing_paths`).
    Permanent,
    /// The provider's own throttled answer.
    Throttled,
    /// The connection closed without an answer.
    Dropped,
    /// A 503.
    Unavailable,
    /// A 200 whose JSON body is cut off mid-way (`MALFORMED_BODY`).
    Malformed,
    /// Carried out, then the connection closed before the answer.
    Lost,
}

/// The body of a malformed answer.
pub const MALFORMED_BODY: &[u8] = b"{\"id\": \"trunc";

impl Faults {
    /// The fault a request to `path` meets, if any, and how long it is held first.
    pub fn pick(&mut self, path: &str) -> (Option<Injected>, Option<Duration>) {
        // Ids such as Auth0's `auth0|…` arrive percent-encoded in the path: match both spellings.
        let decoded = if self.failing_paths.is_empty() { String::new() } else { percent_decode(path) };
        if self.failing_paths.iter().any(|p| path.contains(p.as_str()) || decoded.contains(p.as_str())) {
            return (Some(Injected::Permanent), None);
        }
        if self.throttle_next > 0 {
            self.throttle_next -= 1;
            return (Some(Injected::Throttled), None);
        }
        let slow = (self.slow_rate > 0.0 && fastrand::f64() < self.slow_rate).then(|| Duration::from_millis(self.slow_ms));
        let fault = if self.drop_rate > 0.0 && fastrand::f64() < self.drop_rate {
            Some(Injected::Dropped)
        } else if self.error_rate > 0.0 && fastrand::f64() < self.error_rate {
            Some(Injected::Unavailable)
        } else if self.malformed_rate > 0.0 && fastrand::f64() < self.malformed_rate {
            Some(Injected::Malformed)
        } else if self.lost_rate > 0.0 && fastrand::f64() < self.lost_rate {
            Some(Injected::Lost)
        } else {
            None
        };
        (fault, slow)
    }
}

/// Where `foreign_links` sends links: a loopback address nothing listens on.
pub const FOREIGN_ORIGIN: &str = "http://127.0.0.2:9";

/// Rate limits: requests per window, per bucket.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RateLimits {
    pub window_seconds: u64,
    /// Limit per bucket; a bucket not named here is not limited unless `default` is set.
    pub buckets: BTreeMap<String, u64>,
    pub default: Option<u64>,
}

/// What the simulator served.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimStats {
    pub requests: u64,
    pub throttled: u64,
    pub faults: u64,
    /// Requests by `METHOD bucket`.
    pub by_bucket: BTreeMap<String, u64>,
    /// When the first request that changes state arrived (epoch ms): a recall's first revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_write_ms: Option<i64>,
    /// Requests served up to and including the last one that changed state: a recall's own
    /// requests, without the re-enrollment checks (reads only) that follow its last revocation.
    #[serde(default)]
    pub requests_to_last_write: u64,
    /// Every rate-limit window a limited bucket has seen, oldest first: what share of each
    /// window's budget a client used is read from here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<WindowUse>,
}

/// One bucket's use of one rate-limit window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowUse {
    pub bucket: String,
    /// Start and end of the window (epoch s).
    pub start: i64,
    pub end: i64,
    pub limit: u64,
    /// Requests served within the limit.
    pub used: u64,
    /// Requests answered "too many".
    pub throttled: u64,
}

/// Every window each limited bucket has seen, by (window index, bucket): the current window's
/// count decides throttling, and all of them are reported in `SimStats::windows`.
type Windows = BTreeMap<(u64, &'static str), WindowUse>;

/// A provider behind the shared rate limiting, faults and statistics.
pub struct Simulator {
    pub provider: Arc<dyn Provider>,
    limits: Mutex<RateLimits>,
    windows: Mutex<Windows>,
    faults: Mutex<Faults>,
    stats: Mutex<SimStats>,
    /// Each distinct request shape served, when asked to keep them (`record_requests`).
    recorded: Mutex<Option<std::collections::BTreeSet<RecordedRequest>>>,
    /// Requests that change state the provider answered, as `METHOD path` with how many times,
    /// kept from `count_writes` on.
    writes: Mutex<Option<BTreeMap<String, u32>>>,
}

/// The shape of one request as it reached the simulator: what a published API description
/// judges. Values are left out (they may be credentials).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Query parameter names, sorted, each once.
    pub query: Vec<String>,
    /// Header names, lower case, sorted.
    pub headers: Vec<String>,
}

/// What to do with a request.
pub enum Disposition {
    Answer(SimResponse),
    /// Close the connection without answering.
    Drop,
}

impl Simulator {
    pub fn new(provider: Arc<dyn Provider>) -> Arc<Self> {
        Arc::new(Self {
            provider,
            limits: Mutex::default(),
            windows: Mutex::default(),
            faults: Mutex::default(),
            stats: Mutex::default(),
            recorded: Mutex::default(),
            writes: Mutex::default(),
        })
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }

    pub fn set_limits(&self, limits: RateLimits) {
        *self.limits.lock().unwrap() = limits;
        *self.windows.lock().unwrap() = Windows::default();
    }

    /// From now on, keeps the shape of every request served (each distinct one once).
    pub fn record_requests(&self) {
        self.recorded.lock().unwrap().get_or_insert_with(Default::default);
    }

    /// The request shapes kept since `record_requests`.
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        self.recorded.lock().unwrap().iter().flatten().cloned().collect()
    }

    /// From now on, counts each request that changes state, by method and path.
    pub fn count_writes(&self) {
        self.writes.lock().unwrap().get_or_insert_with(Default::default);
    }

    /// The requests that changed state more than once since `count_writes` (the same deletion
    /// sent again, a user's sessions ended twice), with how many times each came.
    pub fn repeated_writes(&self) -> Vec<(String, u32)> {
        self.writes.lock().unwrap().iter().flatten().filter(|(_, n)| **n > 1).map(|(w, n)| (w.clone(), *n)).collect()
    }

    pub fn stats(&self) -> SimStats {
        let mut stats = self.stats.lock().unwrap().clone();
        stats.windows = self.windows.lock().unwrap().values().cloned().collect();
        stats
    }

    /// Decides the fate of one request: control API, injected fault, throttling, or the provider.
    pub async fn dispatch(&self, request: SimRequest) -> Disposition {
        if let Some(path) = request.path.strip_prefix("/_sim/") {
            return Disposition::Answer(self.control(path, &request));
        }
        if let Some(recorded) = self.recorded.lock().unwrap().as_mut() {
            let mut query: Vec<String> = request.query.iter().map(|(k, _)| k.clone()).collect();
            query.sort();
            query.dedup();
            let mut headers: Vec<String> = request.headers.keys().map(|h| h.as_str().to_string()).collect();
            headers.sort();
            headers.dedup();
            recorded.insert(RecordedRequest { method: request.method.to_string(), path: request.path.clone(), query, headers });
        }
        let bucket = self.provider.bucket(&request);
        {
            let mut stats = self.stats.lock().unwrap();
            stats.requests += 1;
            *stats.by_bucket.entry(format!("{} {bucket}", request.method)).or_default() += 1;
            if request.method != Method::GET && bucket != "token" {
                stats.first_write_ms.get_or_insert_with(|| jiff::Timestamp::now().as_millisecond());
                stats.requests_to_last_write = stats.requests;
            }
        }
        let (fault, slow, lost) = self.pick_fault(&request);
        if let Some(slow) = slow {
            tokio::time::sleep(slow).await;
        }
        if let Some(fault) = fault {
            self.stats.lock().unwrap().faults += 1;
            return fault;
        }
        let (throttled, announce) = self.take_from_window(bucket);
        if let Some(reset) = throttled {
            self.stats.lock().unwrap().throttled += 1;
            let mut response = self.provider.throttled(reset);
            if let Some((limit, remaining, reset)) = announce {
                response = with_limit_headers(response, self.provider.limit_header_prefix(), limit, remaining, reset);
            }
            return Disposition::Answer(response);
        }
        let mut response = self.provider.handle(&request);
        if request.method != Method::GET && bucket != "token"
            && let Some(writes) = self.writes.lock().unwrap().as_mut()
        {
            *writes.entry(format!("{} {}", request.method, request.path)).or_default() += 1;
        }
        if lost {
            self.stats.lock().unwrap().faults += 1;
            return Disposition::Drop;
        }
        if self.faults.lock().unwrap().foreign_links
            && let Some(host) = request.header("host")
        {
            response = with_links_to(response, &format!("http://{host}"), FOREIGN_ORIGIN);
        }
        if let Some((limit, remaining, reset)) = announce {
            response = with_limit_headers(response, self.provider.limit_header_prefix(), limit, remaining, reset);
        }
        Disposition::Answer(response)
    }

    /// The answer a fault gives instead of the provider's, and how long it is held; `Lost` gives
    /// none here (the request is carried out first, see `dispatch`).
    fn pick_fault(&self, request: &SimRequest) -> (Option<Disposition>, Option<Duration>, bool) {
        let (fault, slow) = self.faults.lock().unwrap().pick(&request.path);
        let lost = fault == Some(Injected::Lost);
        let disposition = fault.filter(|_| !lost).map(|fault| match fault {
            Injected::Permanent => Disposition::Answer(SimResponse::json(500, &json!({ "error": "injected permanent failure" }))),
            Injected::Throttled => Disposition::Answer(self.provider.throttled(jiff::Timestamp::now().as_second() + 1)),
            Injected::Dropped => Disposition::Drop,
            Injected::Unavailable => Disposition::Answer(SimResponse::json(503, &json!({ "error": "injected unavailability" }))),
            Injected::Malformed => Disposition::Answer(SimResponse { status: 200, headers: vec![("content-type".into(), "application/json".into())], body: MALFORMED_BODY.to_vec() }),
            Injected::Lost => Disposition::Drop,
        });
        (disposition, slow, lost)
    }

    /// Counts the request against its bucket's window. Returns the reset (epoch s) when the
    /// limit is reached, and the limit headers to send when the provider announces them.
    fn take_from_window(&self, bucket: &'static str) -> (Option<i64>, Option<(u64, u64, i64)>) {
        let limits = self.limits.lock().unwrap();
        let Some(limit) = limits.buckets.get(bucket).copied().or(limits.default) else { return (None, None) };
        let window = limits.window_seconds.max(1);
        let now_ms = jiff::Timestamp::now().as_millisecond() as u64;
        let index = now_ms / (window * 1000);
        let reset = ((index + 1) * window) as i64;
        let mut windows = self.windows.lock().unwrap();
        let start = (index * window) as i64;
        let current = windows.entry((index, bucket)).or_insert_with(|| WindowUse { bucket: bucket.to_string(), start, end: reset, limit, ..Default::default() });
        let announce = |remaining| self.provider.announces_limits().then_some((limit, remaining, reset));
        if current.used >= limit {
            current.throttled += 1;
            return (Some(reset), announce(0));
        }
        current.used += 1;
        (None, announce(limit - current.used))
    }

    /// `/_sim/...`: seed, census, users, faults, limits and stats, for out-of-process drivers.
    fn control(&self, path: &str, request: &SimRequest) -> SimResponse {
        let body = || request.json().unwrap_or(Value::Null);
        let bad = |what: &str| SimResponse::json(400, &json!({ "error": what }));
        match (request.method.as_str(), path.split('/').collect::<Vec<_>>().as_slice()) {
            ("POST", ["seed"]) => match serde_json::from_value::<Seed>(body()) {
                Ok(seed) => {
                    self.provider.seed(&seed);
                    SimResponse::json(200, &json!({ "seeded": seed.users }))
                }
                Err(e) => bad(&e.to_string()),
            },
            ("GET", ["census"]) => {
                let cutoff = request.query("cutoff").and_then(|c| c.parse().ok());
                SimResponse::json(200, &serde_json::to_value(self.provider.census(cutoff)).unwrap())
            }
            ("GET", ["stats"]) => SimResponse::json(200, &serde_json::to_value(self.stats()).unwrap()),
            ("PUT", ["faults"]) => match serde_json::from_value(body()) {
                Ok(faults) => {
                    self.set_faults(faults);
                    SimResponse::empty(204)
                }
                Err(e) => bad(&e.to_string()),
            },
            ("PUT", ["limits"]) => match serde_json::from_value(body()) {
                Ok(limits) => {
                    self.set_limits(limits);
                    SimResponse::empty(204)
                }
                Err(e) => bad(&e.to_string()),
            },
            ("GET", ["users", name]) => match self.provider.user(&percent_decode(name)) {
                Some(user) => SimResponse::json(200, &serde_json::to_value(user).unwrap()),
                None => SimResponse::json(404, &json!({ "error": "no such user" })),
            },
            ("POST", ["users", name, "enroll"]) => {
                let kind = request.query("kind").and_then(|k| serde_json::from_value(json!(k)).ok()).unwrap_or(FactorKind::Totp);
                match self.provider.enroll(&percent_decode(name), kind, request.query("ip").unwrap_or("198.51.100.7")) {
                    Some(id) => SimResponse::json(200, &json!({ "id": id })),
                    None => SimResponse::json(404, &json!({ "error": "no such user or kind" })),
                }
            }
            ("POST", ["users", name, "activity"]) => match serde_json::from_value::<Activity>(body()) {
                Ok(activity) => match self.provider.act(&percent_decode(name), &activity) {
                    Ok(id) => SimResponse::json(200, &json!({ "id": id })),
                    Err(why) => SimResponse::json(404, &json!({ "error": why })),
                },
                Err(e) => bad(&e.to_string()),
            },
            _ => SimResponse::json(404, &json!({ "error": "unknown control path" })),
        }
    }
}

/// The answer with every link to `own` (in the body or a header) pointing at `foreign` instead.
fn with_links_to(mut response: SimResponse, own: &str, foreign: &str) -> SimResponse {
    for (_, value) in &mut response.headers {
        *value = value.replace(own, foreign);
    }
    if let Ok(body) = std::str::from_utf8(&response.body) {
        // JSON escapes `/` optionally: both spellings.
        response.body = body.replace(own, foreign).replace(&own.replace('/', "\\/"), foreign).into_bytes();
    }
    response
}

fn with_limit_headers(response: SimResponse, prefix: &str, limit: u64, remaining: u64, reset: i64) -> SimResponse {
    response
        .with_header(&format!("{prefix}-Limit"), limit.to_string())
        .with_header(&format!("{prefix}-Remaining"), remaining.to_string())
        .with_header(&format!("{prefix}-Reset"), reset.to_string())
}

/// Splits `a=1&b=2`, percent-decoding keys and values (`+` is a space, as forms send it).
pub fn parse_query(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(text: &str) -> String {
    text.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fresh opaque id, provider-styled by `prefix`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{:016x}", fastrand::u64(..))
}

/// RFC 3339 text of a timestamp, milliseconds kept.
pub fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The simulator of `provider`, accepting `credentials` (the same keys as the provider's Secret).
pub fn build(provider: &str, credentials: &Value) -> Result<Arc<dyn Provider>, String> {
    match provider {
        "auth0" => Ok(Arc::new(auth0::Auth0::new(credentials)?)),
        "entra" => Ok(Arc::new(entra::Entra::new(credentials)?)),
        "okta" => Ok(Arc::new(okta::Okta::new(credentials)?)),
        "google" => Ok(Arc::new(google::Google::new(credentials)?)),
        "duo" => Ok(Arc::new(duo::Duo::new(credentials)?)),
        _ => Err(format!("no simulator named {provider:?}: use okta, entra, auth0, google or duo")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every request with `{"ok": true}`.
    struct Echo;

    impl Provider for Echo {
        fn name(&self) -> &'static str {
            "echo"
        }
        fn handle(&self, _: &SimRequest) -> SimResponse {
            SimResponse::json(200, &json!({ "ok": true }))
        }
        fn throttled(&self, _reset: i64) -> SimResponse {
            SimResponse::json(429, &json!({ "errorCode": "E0000047" }))
        }
        fn seed(&self, _: &Seed) {}
        fn census(&self, _: Option<jiff::Timestamp>) -> Census {
            Census::default()
        }
        fn user(&self, _: &str) -> Option<UserView> {
            None
        }
        fn enroll(&self, _: &str, _: FactorKind, _: &str) -> Option<String> {
            None
        }
    }

    #[tokio::test]
    async fn the_control_api_sets_faults_and_reports_stats() {
        let sim = Simulator::new(Arc::new(Echo));
        let running = serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let client = reqwest::Client::new();
        let put = client.put(format!("{}/_sim/faults", running.url)).json(&json!({ "failingPaths": ["/x"] })).send().await.unwrap();
        assert_eq!(put.status(), 204);
        assert_eq!(client.get(format!("{}/x", running.url)).send().await.unwrap().status(), 500);
        let stats: SimStats = client.get(format!("{}/_sim/stats", running.url)).send().await.unwrap().json().await.unwrap();
        assert_eq!((stats.requests, stats.faults), (1, 1));
        assert_eq!(sim.stats().requests, 1);
        let bad = client.put(format!("{}/_sim/limits", running.url)).json(&json!({ "windowSeconds": "soon" })).send().await.unwrap();
        assert_eq!(bad.status(), 400);
    }

    #[test]
    fn queries_and_forms_are_decoded_and_encoded() {
        assert_eq!(parse_query("a=1&b=x%20y+z&c"), vec![("a".into(), "1".into()), ("b".into(), "x y z".into()), ("c".into(), "".into())]);
        assert_eq!(percent_decode("%E2%9C%93%"), "✓%");
        assert_eq!(percent_encode("a b/✓~"), "a%20b%2F%E2%9C%93~");
    }
}
