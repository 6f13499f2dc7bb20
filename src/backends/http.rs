//! HTTP plumbing shared by every HTTP adapter: each request admitted by the backend's `Throttle`
//! (`pacing`), with the budget the provider announces in its rate-limit headers; retries with
//! backoff and jitter on throttling, 5xx and timeouts (honouring `Retry-After`), per-operation
//! metrics, and secret values that cannot be printed. Token acquisition lives in `auth`.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::core::v1::Secret;
use reqwest::header::HeaderMap;
use reqwest::header::{CONTENT_TYPE, HeaderName, LOCATION, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use super::pacing::{Announced, Limits, Throttle};
use crate::metrics::ProviderMetrics;
use super::{ErrorKind, ProviderError};

/// A credential value. Debug and Display never show it; only `expose` does, at the point of use.
#[derive(Clone)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }


    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

/// Reads keys of a credentials Secret, with errors that name the Secret and key but never a value.
pub struct SecretKeys<'a> {
    secret: &'a Secret,
    /// `namespace/name` of the Secret.
    pub name: &'a str,
}

impl<'a> SecretKeys<'a> {
    pub fn new(secret: &'a Secret, name: &'a str) -> Self {
        Self { secret, name }
    }

    /// The key's value, or None when the key is absent (for credentials that come in alternatives).
    pub fn get_opt(&self, key: &str) -> Result<Option<SecretString>, ProviderError> {
        let present = self.secret.data.as_ref().is_some_and(|d| d.contains_key(key))
            || self.secret.string_data.as_ref().is_some_and(|d| d.contains_key(key));
        if present { self.get(key).map(Some) } else { Ok(None) }
    }

    pub fn get(&self, key: &str) -> Result<SecretString, ProviderError> {
        let from_data = self.secret.data.as_ref().and_then(|d| d.get(key)).map(|v| String::from_utf8(v.0.clone()));
        let from_string_data = self.secret.string_data.as_ref().and_then(|d| d.get(key)).cloned().map(Ok);
        match from_data.or(from_string_data) {
            Some(Ok(value)) if !value.trim().is_empty() => Ok(SecretString(value.trim().to_string())),
            Some(Ok(_)) => Err(ProviderError::new(ErrorKind::Config, format!("Secret {}: key {key} is empty", self.name))),
            Some(Err(_)) => Err(ProviderError::new(ErrorKind::Config, format!("Secret {}: key {key} is not UTF-8 text", self.name))),
            None => Err(ProviderError::new(ErrorKind::Config, format!("Secret {}: key {key} is missing", self.name))),
        }
    }
}

/// How often a failing request is tried before the user is reported failed.
const MAX_ATTEMPTS: u32 = 6;
/// Throttled answers come from a provider that is up and asks us to wait, so they have a budget
/// of their own: a burst of them must not use up the attempts left for real failures.
const MAX_THROTTLED: u32 = 12;
const BASE_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One kind of provider call: `name` labels metrics, `bucket` is the provider's rate-limit
/// bucket it counts against (calls in one bucket share the budget the provider announces).
#[derive(Clone, Copy, Debug)]
pub struct Op {
    pub name: &'static str,
    pub bucket: &'static str,
}

impl Op {
    pub const fn new(name: &'static str, bucket: &'static str) -> Self {
        Self { name, bucket }
    }
}

/// A provider's answer, read whole: status, headers and body.
#[derive(Debug)]
pub struct HttpReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpReply {
    /// The body as JSON; an empty body is `null`.
    pub fn value(&self) -> Value {
        if self.body.is_empty() { Value::Null } else { serde_json::from_slice(&self.body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into())) }
    }

    /// A header as text; by a `HeaderName` made once on paths taken for every answer (looking
    /// one up by `&str` parses the name each time).
    pub fn header(&self, name: impl reqwest::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Decides whether an answer means "slow down" (429 for most providers; Google says 403 with a
/// quota reason).
pub type ThrottleTest = fn(&HttpReply) -> bool;

fn throttled_by_429(reply: &HttpReply) -> bool {
    reply.status == StatusCode::TOO_MANY_REQUESTS
}

/// The HTTP client of one backend: paced, capped, budget-aware and retrying.
#[derive(Clone)]
pub struct ProviderHttp {
    client: reqwest::Client,
    throttle: Throttle,
    throttled: ThrottleTest,
    log_delay: Option<Duration>,
    /// `namespace/name` of the IdentityBackend, for error messages and metrics.
    pub backend: String,
    metrics: ProviderMetrics,
    max_response_bytes: usize,
    /// The IdentityBackend's `insecure`: http:// to hosts other than loopback.
    plain_http_anywhere: bool,
}

tokio::task_local! {
    /// Set when a request that changes something may have taken effect without its answer
    /// reaching us: see `noting_unanswered_writes`.
    static UNANSWERED_WRITE: std::cell::Cell<bool>;
}

/// Runs `call`, and says whether a request of it that changes something may have taken effect
/// at the provider without its answer arriving (a connection cut or a timeout after the request
/// went, a success whose body was cut off), so that what a retry then finds gone is most likely
/// the call's own doing.
pub async fn noting_unanswered_writes<T>(call: impl std::future::Future<Output = T>) -> (T, bool) {
    UNANSWERED_WRITE.scope(std::cell::Cell::new(false), async { (call.await, UNANSWERED_WRITE.with(std::cell::Cell::get)) }).await
}

/// Notes an attempt of a request that changes something whose answer did not arrive whole.
fn note_unanswered(method: &reqwest::Method) {
    if method != reqwest::Method::GET && method != reqwest::Method::HEAD {
        let _ = UNANSWERED_WRITE.try_with(|unanswered| unanswered.set(true));
    }
}

/// Every provider's client: connections time out, and a redirect is never followed (on 307 and
/// 308 it would send a token request's body, a client secret or a signed assertion, to whatever
/// host Location names, and a foreign host's answer would be taken as the provider's).
fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).redirect(reqwest::redirect::Policy::none())
}

impl ProviderHttp {
    pub fn new(backend: &str, limits: Limits, metrics: ProviderMetrics) -> Result<Self, ProviderError> {
        // REQUEST_TIMEOUT is applied around each exchange in `send_reading`.
        let client = client_builder().build().map_err(|e| ProviderError::new(ErrorKind::Config, format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            throttle: Throttle::new(&limits),
            throttled: throttled_by_429,
            log_delay: limits.log_delay,
            backend: backend.to_string(),
            metrics,
            max_response_bytes: limits.max_response_bytes,
            plain_http_anywhere: false,
        })
    }

    /// Presents a client certificate (`identity`: a PEM certificate chain and its private key)
    /// and, with `roots` (PEM), trusts only those certificate authorities for the server's
    /// certificate: an in-house store behind mutual TLS and a private CA.
    pub fn with_client_tls(mut self, identity: Option<&[u8]>, roots: Option<&[u8]>) -> Result<Self, ProviderError> {
        let mut builder = client_builder();
        if let Some(pem) = identity {
            let identity = reqwest::Identity::from_pem(pem).map_err(|_| self.error(ErrorKind::Config, "the client certificate and key do not read as PEM (tls.crt, then tls.key)"))?;
            builder = builder.identity(identity);
        }
        if let Some(pem) = roots {
            let roots = reqwest::Certificate::from_pem_bundle(pem).map_err(|_| self.error(ErrorKind::Config, "ca.crt does not read as PEM certificates"))?;
            if roots.is_empty() {
                return Err(self.error(ErrorKind::Config, "ca.crt holds no certificate"));
            }
            builder = builder.tls_certs_only(roots);
        }
        self.client = builder.build().map_err(|e| self.error(ErrorKind::Config, format!("HTTP client with the client certificate: {e}")))?;
        Ok(self)
    }

    /// Lets credentials go over http:// to any host (the IdentityBackend's `insecure`).
    pub fn allowing_plain_http(mut self, anywhere: bool) -> Self {
        self.plain_http_anywhere = anywhere;
        self
    }

    /// Checks that `url` (named `what` in the error) may receive credentials: https, or http to
    /// a loopback host (a simulator or a proxy on this machine), or anywhere when the
    /// IdentityBackend sets `insecure`. The one rule for every provider's URLs and token endpoints.
    pub fn check_transport(&self, what: &str, url: &str) -> Result<(), ProviderError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| self.error(ErrorKind::Config, format!("{what} is not a URL: {e}")))?;
        let Some(host) = parsed.host_str().map(str::to_ascii_lowercase) else {
            return Err(self.error(ErrorKind::Config, format!("{what} has no host")));
        };
        let loopback = match host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => host == "localhost" || host.ends_with(".localhost"),
        };
        match parsed.scheme() {
            "https" => Ok(()),
            "http" if loopback || self.plain_http_anywhere => Ok(()),
            "http" => Err(self.error(
                ErrorKind::Config,
                format!(
                    "{what} is http:// to {host}: credentials would cross the network in clear; use https (or, for a test lab only, set spec.insecure: true)"
                ),
            )),
            other => Err(self.error(ErrorKind::Config, format!("{what} has the scheme {other:?}: only https (and http on loopback) is spoken"))),
        }
    }

    /// An error of `kind` from this provider, attributed to its IdentityBackend.
    pub fn error(&self, kind: ErrorKind, message: impl Into<String>) -> ProviderError {
        ProviderError::new(kind, message).of(&self.backend)
    }

    /// How long the provider's logs take to show an event: the IdentityBackend's `logDelay`,
    /// else what the provider documents.
    pub fn log_delay(&self, documented: Duration) -> Duration {
        self.log_delay.unwrap_or(documented)
    }

    /// For providers that signal throttling other than with 429.
    pub fn with_throttle_test(mut self, test: ThrottleTest) -> Self {
        self.throttled = test;
        self
    }

    pub fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// A request with a query and, when given, a JSON body: the shape of most admin API calls.
    pub fn json_request(&self, method: &Method, url: &str, query: &[(&str, String)], body: Option<&Value>) -> reqwest::RequestBuilder {
        let builder = self.client.request(method.clone(), url).query(query);
        if let Some(body) = body { builder.json(body) } else { builder }
    }

    /// Sends the request `build` makes, retrying transient failures (throttling, 5xx, timeouts,
    /// dropped connections, a success whose JSON body is cut off) with exponential backoff and
    /// full jitter, or as long as the provider asks. Each attempt builds its request afresh (no
    /// copy of a request kept for retries). Returns the final answer whatever its status (callers
    /// map 4xx themselves); errors only when the provider stayed unavailable.
    pub async fn send(&self, op: Op, build: impl Fn() -> reqwest::RequestBuilder) -> Result<HttpReply, ProviderError> {
        Ok(self.send_reading(op, build, check_json).await?.0)
    }

    /// `send`, for a caller that decodes the body: `read` decodes a 2xx answer, and that one
    /// pass is also the check that the body is whole (a JSON body cut off is retried, as by
    /// `send`; only when `read` fails is the body parsed again, to tell a cut from a shape the
    /// caller did not expect). The decoded body comes back with the answer; None for other statuses.
    pub async fn send_reading<T>(&self, op: Op, build: impl Fn() -> reqwest::RequestBuilder, read: impl Fn(&HttpReply) -> Option<serde_json::Result<T>>) -> Result<(HttpReply, Option<serde_json::Result<T>>), ProviderError> {
        // Named in messages only, so built and formatted only for them.
        let what = || match build().build() {
            Ok(request) => format!("{} {}", request.method(), request.url().path()),
            Err(_) => op.name.to_string(),
        };
        let mut attempt = 0;
        let mut throttled_answers = 0;
        let deadline = Instant::now() + CALL_DEADLINE;
        loop {
            attempt += 1;
            let this_try = build()
                .build()
                .map_err(|e| self.error(ErrorKind::Config, format!("building a {} request: {}", op.name, describe(&e))))?;
            let started = Instant::now();
            let method = this_try.method().clone();
            let outcome = {
                let admission = self.throttle.admit(op.bucket).await;
                // One timer for the whole exchange, answer and body: reqwest's own total timeout
                // would arm one for each.
                let outcome = tokio::time::timeout(REQUEST_TIMEOUT, async { read_whole(self.client.execute(this_try).await, self.max_response_bytes).await }).await;
                admission.settle(outcome.as_ref().ok().and_then(|o| o.as_ref().ok()).and_then(announced_budget));
                outcome
            };
            let mut was_throttled = false;
            let (wait, problem) = match outcome {
                Ok(Ok(reply)) => {
                    let throttled = (self.throttled)(&reply);
                    self.metrics.call(&self.backend, op.name, Some(reply.status.as_u16()), throttled, started.elapsed());
                    if throttled {
                        was_throttled = true;
                        throttled_answers += 1;
                        let wait = self.throttle_wait(op.bucket, &reply);
                        if wait.is_none() {
                            self.throttle.slow_down(started);
                        }
                        (wait, format!("{} (throttled) from {}", reply.status, what()))
                    } else if is_transient(reply.status) {
                        (retry_after(&reply), format!("{} from {}", reply.status, what()))
                    } else if reply.status.is_redirection() {
                        let target: String = reply.header(LOCATION).unwrap_or("nowhere").chars().take(200).collect();
                        return Err(self.error(
                            ErrorKind::Rejected,
                            format!("{} from {}: a redirect to {target:?}, which is not followed; point the IdentityBackend at the URL that answers", reply.status, what()),
                        ));
                    } else if !reply.status.is_success() {
                        self.throttle.recover();
                        return Ok((reply, None));
                    } else {
                        self.throttle.recover();
                        let body = read(&reply);
                        match &body {
                            Some(Err(_)) if is_cut_off_json(&reply) => {
                                note_unanswered(&method);
                                (None, format!("malformed JSON body from {}", what()))
                            }
                            _ => return Ok((reply, body)),
                        }
                    }
                }
                Ok(Err(ReadError::TooLong)) => {
                    self.metrics.call(&self.backend, op.name, None, false, started.elapsed());
                    return Err(self.error(
                        ErrorKind::Rejected,
                        format!("{}: the answer is longer than {} bytes (spec.limits.maxResponseBytes)", what(), self.max_response_bytes),
                    ));
                }
                Ok(Err(ReadError::Http(e))) => {
                    self.metrics.call(&self.backend, op.name, None, false, started.elapsed());
                    if !(e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() || e.is_decode()) {
                        return Err(self.error(ErrorKind::Unavailable, format!("{}: {}", what(), describe(&e))));
                    }
                    // Not connected: the request never went. Otherwise it may have.
                    if !e.is_connect() {
                        note_unanswered(&method);
                    }
                    (None, format!("{}: {}", what(), describe(&e)))
                }
                Err(_elapsed) => {
                    self.metrics.call(&self.backend, op.name, None, false, started.elapsed());
                    note_unanswered(&method);
                    (None, format!("{}: no answer within {} s", what(), REQUEST_TIMEOUT.as_secs()))
                }
            };
            let failures = attempt - throttled_answers;
            if failures >= MAX_ATTEMPTS || throttled_answers >= MAX_THROTTLED {
                return Err(self.error(ErrorKind::Unavailable, format!(
                    "{problem} (gave up after {attempt} attempts)")));
            }
            // Throttling and failures each back off on their own count.
            let wait = wait.unwrap_or_else(|| backoff(if was_throttled { throttled_answers } else { failures }));
            if Instant::now() + wait > deadline {
                return Err(self.error(ErrorKind::Unavailable, format!(
                    "{problem} (gave up after {attempt} attempts: the next would start more than {} s after the first)", CALL_DEADLINE.as_secs())));
            }
            tracing::debug!(backend = %self.backend, %problem, attempt, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// How long to wait after being throttled: what the provider asks for (`Retry-After`, or the
    /// announced reset), else backoff.
    fn throttle_wait(&self, bucket: &'static str, reply: &HttpReply) -> Option<Duration> {
        if let Some(wait) = retry_after(reply) {
            return Some(wait);
        }
        let reset = announced_budget(reply)?.reset;
        self.throttle.spent(bucket);
        Some(reset.saturating_duration_since(Instant::now()) + Duration::from_millis(fastrand::u64(0..250)))
    }
}

pub(crate) enum ReadError {
    Http(reqwest::Error),
    /// The body went past the cap.
    TooLong,
}

/// Sends `request` with `client` and reads its answer as JSON: the status and the value (`null`
/// for a body that is not JSON, so an error page still gives its status), at most `cap` bytes
/// within `timeout`. Errors name the URL, never the request's headers or body.
pub async fn json_answer(client: &reqwest::Client, request: reqwest::Request, cap: usize, timeout: Duration) -> Result<(StatusCode, Value), String> {
    let url = request.url().clone();
    let reply = tokio::time::timeout(timeout, read_whole(client.execute(request).await, cap))
        .await
        .map_err(|_| format!("{url}: no answer within {} s", timeout.as_secs()))?
        .map_err(|e| match e {
            ReadError::Http(e) => format!("{url}: {}", describe(&e)),
            ReadError::TooLong => format!("{url}: the answer is longer than {cap} bytes"),
        })?;
    Ok((reply.status, serde_json::from_slice(&reply.body).unwrap_or(Value::Null)))
}

/// The whole answer, its body read up to `cap` bytes.
pub(crate) async fn read_whole(outcome: Result<Response, reqwest::Error>, cap: usize) -> Result<HttpReply, ReadError> {
    // Taken apart rather than borrowed, so the headers are moved, not copied.
    let (head, body) = http::Response::from(outcome.map_err(ReadError::Http)?).into_parts();
    let body = match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, cap)).await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Err(match e.downcast::<reqwest::Error>() {
                Ok(e) => ReadError::Http(*e),
                Err(_) => ReadError::TooLong,
            });
        }
    };
    Ok(HttpReply { status: head.status, headers: head.headers, body })
}

fn says_json(reply: &HttpReply) -> bool {
    reply.header(CONTENT_TYPE).is_some_and(|t| t.contains("json"))
}

/// The check `send` makes of a 2xx body it does not decode: a body that says it is JSON parses.
pub(crate) fn check_json(reply: &HttpReply) -> Option<serde_json::Result<()>> {
    (says_json(reply) && !reply.body.is_empty()).then(|| serde_json::from_slice::<serde::de::IgnoredAny>(&reply.body).map(drop))
}

/// A body that says it is JSON but does not parse (a proxy cut it off, say). Asked only when a
/// read failed, which may have been a decoder refusing a shape before it reached the cut; JSON
/// of an unexpected shape is the caller's to report.
fn is_cut_off_json(reply: &HttpReply) -> bool {
    matches!(check_json(reply), Some(Err(_)))
}

/// `X-Rate-Limit-Remaining`, `-Limit` and `-Reset` (Okta; Auth0 spells them `x-ratelimit-*`),
/// the reset as a local instant. The provider's `Date` header is preferred to our clock, so
/// clock skew cannot make us early.
fn announced_budget(reply: &HttpReply) -> Option<Announced> {
    const REMAINING: [HeaderName; 2] = [HeaderName::from_static("x-rate-limit-remaining"), HeaderName::from_static("x-ratelimit-remaining")];
    const LIMIT: [HeaderName; 2] = [HeaderName::from_static("x-rate-limit-limit"), HeaderName::from_static("x-ratelimit-limit")];
    const RESET: [HeaderName; 2] = [HeaderName::from_static("x-rate-limit-reset"), HeaderName::from_static("x-ratelimit-reset")];
    let number = |names: &[HeaderName; 2]| names.iter().find_map(|n| reply.header(n)?.trim().parse::<u64>().ok());
    let remaining = number(&REMAINING)?;
    let reset_epoch = i64::try_from(number(&RESET)?).unwrap_or(i64::MAX);
    // Date has whole seconds, so the window may end up to a second later than we think: safe side.
    let left = reset_epoch.saturating_sub(provider_now(reply).as_second()).max(0).saturating_add(1);
    Some(Announced { remaining, limit: number(&LIMIT), reset: Instant::now() + Duration::from_secs(left.unsigned_abs()).min(MAX_RESET_WAIT) })
}

/// Every header parser and the body check, on one answer: for the fuzz targets.
pub(crate) fn read_provider_headers(reply: &HttpReply) {
    let _ = (retry_after(reply), announced_budget(reply), provider_now(reply), is_cut_off_json(reply));
}

/// The provider's clock, from its `Date` header, else ours: waits it asks for in its own time
/// are counted from it, so clock skew cannot make us early.
fn provider_now(reply: &HttpReply) -> jiff::Timestamp {
    reply.header("date").and_then(|d| jiff::fmt::rfc2822::parse(d).ok()).map_or_else(jiff::Timestamp::now, |z| z.timestamp())
}

fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

/// The longest wait a provider's `Retry-After` is taken for, so a confused provider cannot stall
/// a recall for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// The furthest a rate-limit window's reset is taken to be: providers' windows are a minute or
/// two; a reset an hour away would hold every call of the backend that long.
const MAX_RESET_WAIT: Duration = Duration::from_secs(300);
/// How long one call may take, its retries and the waits asked for between them together;
/// past it the user is failed with the reason, and the recall goes on.
const CALL_DEADLINE: Duration = Duration::from_secs(600);

/// `Retry-After` as seconds or as an HTTP-date (counted from the provider's `Date`, else our
/// clock), capped; None for anything else.
fn retry_after(reply: &HttpReply) -> Option<Duration> {
    let text = reply.header(RETRY_AFTER)?.trim();
    let wait = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() => Duration::from_secs_f64(seconds.clamp(0.0, MAX_RETRY_AFTER.as_secs_f64())),
        Ok(_) => return None,
        Err(_) => {
            let at = jiff::fmt::rfc2822::parse(text).ok()?.timestamp();
            Duration::try_from(at.duration_since(provider_now(reply))).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Exponential backoff with full jitter: uniformly random in [0, min(cap, base * 2^attempt)].
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BASE_BACKOFF.saturating_mul(1 << attempt.min(16)).min(MAX_BACKOFF);
    ceiling.mul_f64(fastrand::f64()).max(Duration::from_millis(10))
}

/// A reqwest error without the URL's query string, which could carry a credential for some providers.
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_decode() {
        "response could not be decoded"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut root = String::new();
    while let Some(s) = source {
        root = s.to_string();
        source = s.source();
    }
    if root.is_empty() { kind.to_string() } else { format!("{kind} ({root})") }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The client against a simulated provider that answers everything with `{"ok": true}`.
    mod against_an_echo {
        use super::*;
        use serde_json::json;

        /// Answers every request with `{"ok": true}`; announces its limits like Okta.
        struct Echo;

        impl idp_sim::Provider for Echo {
            fn name(&self) -> &'static str {
                "echo"
            }
            fn handle(&self, _: &idp_sim::SimRequest) -> idp_sim::SimResponse {
                idp_sim::SimResponse::json(200, &json!({ "ok": true }))
            }
            fn throttled(&self, _reset: i64) -> idp_sim::SimResponse {
                idp_sim::SimResponse::json(429, &json!({ "errorCode": "E0000047" }))
            }
            fn announces_limits(&self) -> bool {
                true
            }
            fn seed(&self, _: &idp_sim::Seed) {}
            fn census(&self, _: Option<jiff::Timestamp>) -> idp_sim::Census {
                idp_sim::Census::default()
            }
            fn user(&self, _: &str) -> Option<idp_sim::UserView> {
                None
            }
            fn enroll(&self, _: &str, _: idp_sim::FactorKind, _: &str) -> Option<String> {
                None
            }
        }

        async fn echo() -> (Arc<idp_sim::Simulator>, idp_sim::Running, ProviderHttp) {
            let sim = idp_sim::Simulator::new(Arc::new(Echo));
            let running = idp_sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
            // Far more than the simulator allows: only the announced budget can keep the client inside it.
            let http = ProviderHttp::new("ns/echo", Limits { requests_per_second: 10_000, max_concurrency: 8, log_delay: None, ..Default::default() }, ProviderMetrics::default()).unwrap();
            (sim, running, http)
        }

        async fn fire(http: &ProviderHttp, url: &str, n: usize) -> Vec<u16> {
            let op = Op::new("echo", "default");
            futures::future::join_all((0..n).map(|_| async {
                http.send(op, || http.request(Method::GET, &format!("{url}/x"))).await.map(|r| r.status.as_u16()).unwrap_or(0)
            }))
            .await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_client_paces_itself_to_the_announced_budget() {
            let (sim, running, http) = echo().await;
            sim.set_limits(idp_sim::RateLimits { window_seconds: 1, default: Some(40), ..idp_sim::RateLimits::default() });
            let statuses = fire(&http, &running.url, 120).await;
            assert!(statuses.iter().all(|s| *s == 200), "every request ends in success: {statuses:?}");
            let stats = sim.stats();
            // The first window is spent before the first answer tells the budget: at most the
            // concurrency cap can overshoot once; after that the client stays inside.
            assert!(stats.throttled <= 8, "{} of {} requests were throttled", stats.throttled, stats.requests);
            // Each window's use is on record: every request in exactly one window, none over its limit.
            assert!(stats.windows.len() >= 2, "{:?}", stats.windows);
            assert_eq!(stats.windows.iter().map(|w| w.used + w.throttled).sum::<u64>(), stats.requests);
            assert!(stats.windows.iter().all(|w| w.used <= w.limit && w.end - w.start == 1 && w.bucket == "default"), "{:?}", stats.windows);
            assert_eq!(stats.windows.iter().map(|w| w.throttled).sum::<u64>(), stats.throttled);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn injected_faults_are_survived_by_retries_and_counted() {
            let (sim, running, http) = echo().await;
            // About one attempt in nine fails: a request failing all six attempts is a one-in-a-million
            // event, so the test does not flake, while 400 requests meet some 45 faults (12 or fewer
            // is five standard deviations below: once, 200 requests met only 11).
            sim.set_faults(idp_sim::Faults { throttle_next: 3, error_rate: 0.05, drop_rate: 0.03, malformed_rate: 0.03, ..idp_sim::Faults::default() });
            let statuses = fire(&http, &running.url, 400).await;
            assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
            assert!(sim.stats().faults >= 12, "{:?}", sim.stats());
            assert!(http.metrics.throttled("ns/echo", "echo") >= 3, "throttled answers are counted");
        }
    }

    const TEST_OP: Op = Op::new("test", "default");

    #[test]
    fn secret_string_never_prints() {
        let s = SecretString("hunter2".into());
        assert_eq!(format!("{s:?}"), "SecretString(***)");
    }

    fn reply_with(headers: &[(&str, &str)]) -> HttpReply {
        let headers = headers.iter().map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap())).collect();
        HttpReply { status: StatusCode::TOO_MANY_REQUESTS, headers, body: Bytes::new() }
    }

    #[test]
    fn credentials_go_over_https_or_to_loopback_unless_the_backend_says_insecure() {
        let http = ProviderHttp::new("ns/test", Limits::default(), ProviderMetrics::default()).unwrap();
        for url in ["https://example.okta.com", "http://127.0.0.1:8080/x", "http://127.3.2.1", "http://[::1]:9/", "http://localhost:1", "http://Keycloak.LOCALHOST"] {
            assert!(http.check_transport("spec.x.url", url).is_ok(), "{url}");
        }
        for (url, says) in [
            ("http://okta.example.com", "spec.x.url is http:// to okta.example.com: credentials would cross the network in clear"),
            ("http://10.0.0.7:8080", "spec.x.url is http:// to 10.0.0.7"),
            ("http://localhost.example.com", "is http:// to localhost.example.com"),
            ("ftp://example.com", "has the scheme \"ftp\""),
            ("not a url", "spec.x.url is not a URL"),
        ] {
            let error = http.check_transport("spec.x.url", url).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Config);
            assert!(error.to_string().starts_with("IdentityBackend ns/test: ") && error.to_string().contains(says), "{url}: {error}");
        }
        let lab = http.clone().allowing_plain_http(true);
        assert!(lab.check_transport("spec.x.url", "http://okta.example.com").is_ok());
        assert!(lab.check_transport("spec.x.url", "ftp://example.com").is_err());
    }

    /// Provider headers are untrusted: none of these may panic, and waits stay bounded.
    #[test]
    fn a_retry_after_that_is_not_a_sane_number_is_ignored_or_capped() {
        let date = "Sat, 05 Dec 2026 08:00:00 GMT";
        for (value, wait) in [
            ("NaN", None),
            ("inf", None),
            ("-5", Some(Duration::ZERO)),
            ("1e9", Some(MAX_RETRY_AFTER)),
            ("1.5", Some(Duration::from_millis(1500))),
            ("soon", None),
            ("Sat, 05 Dec 2026 08:00:30 GMT", Some(Duration::from_secs(30))),
            ("Sat, 05 Dec 2026 07:00:00 GMT", Some(Duration::ZERO)),
            ("Tue, 01 Jan 2126 00:00:00 GMT", Some(MAX_RETRY_AFTER)),
            // Past the last instant the clock library represents: not a date, so ignored.
            ("Fri, 31 Dec 9999 23:59:59 GMT", None),
        ] {
            assert_eq!(retry_after(&reply_with(&[("retry-after", value), ("date", date)])), wait, "Retry-After: {value}");
        }
    }

    #[test]
    fn rate_limit_headers_at_the_edges_of_u64_give_a_bounded_budget() {
        for (remaining, reset, date) in [
            ("4294967296", "18446744073709551615", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("18446744073709551615", "0", "Sat, 05 Dec 2026 08:00:00 GMT"),
            ("5", "1000", "Mon, 01 Jan 1900 00:00:00 GMT"),
        ] {
            let reply = reply_with(&[("x-rate-limit-remaining", remaining), ("x-rate-limit-limit", remaining), ("x-rate-limit-reset", reset), ("date", date)]);
            let announced = announced_budget(&reply).unwrap();
            assert_eq!((announced.remaining, announced.limit), (remaining.parse::<u64>().unwrap(), remaining.parse().ok()));
            assert!(announced.reset <= Instant::now() + MAX_RESET_WAIT);
        }
    }

    #[test]
    fn backoff_stays_within_cap() {
        for attempt in 1..20 {
            assert!(backoff(attempt) <= MAX_BACKOFF);
        }
    }

    /// A loopback server that answers the given statuses in order, then 200.
    async fn scripted_server(statuses: Vec<u16>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        scripted_answers(statuses.into_iter().map(|s| (s, "")).collect()).await
    }

    /// A loopback server that gives the given answers in order (a body is sent as JSON), then an empty 200.
    async fn scripted_answers(answers: Vec<(u16, &'static str)>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loopback(move |n, mut socket| {
            let (status, body) = answers.get(n).copied().unwrap_or((200, ""));
            async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let mut extra = if status == 429 { "Retry-After: 0\r\n" } else { "" }.to_string();
                if !body.is_empty() {
                    extra.push_str("Content-Type: application/json\r\n");
                }
                let reply = format!("HTTP/1.1 {status} X\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        })
        .await
    }

    /// A loopback server handing each connection, numbered from 0, to `serve`: its URL and how
    /// many connections it took.
    async fn loopback<F, Fut>(serve: F) -> (String, Arc<std::sync::atomic::AtomicUsize>)
    where
        F: Fn(usize, tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst), socket));
            }
        });
        (url, hits)
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_permanent_ones_reported() {
        let http = ProviderHttp::new("ns/test", Limits { requests_per_second: 1000, max_concurrency: 2, log_delay: None, ..Default::default() }, ProviderMetrics::default()).unwrap();
        let (url, hits) = scripted_server(vec![429, 503, 502]).await;
        let response = http.send(TEST_OP, || http.request(Method::GET, &url)).await.unwrap();
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 4);

        // A burst of throttling leaves the attempts for real failures intact.
        let (url, hits) = scripted_server(vec![429, 429, 429, 429, 429, 503, 502, 503]).await;
        let response = http.send(TEST_OP, || http.request(Method::GET, &url)).await.unwrap();
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 9);

        let (url, hits) = scripted_server(vec![500; 100]).await;
        let error = http.send(TEST_OP, || http.request(Method::GET, &url)).await.unwrap_err();
        assert!(error.to_string().contains("gave up after 6 attempts"), "{error}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), MAX_ATTEMPTS as usize);

        // A 4xx is the caller's to interpret, never retried.
        let (url, hits) = scripted_server(vec![404]).await;
        let response = http.send(TEST_OP, || http.request(Method::GET, &url)).await.unwrap();
        assert_eq!(response.status, StatusCode::NOT_FOUND);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A write whose first attempt was read and then cut off without an answer may have taken
    /// effect: the call says so (what its retry finds gone is most likely its own doing). A read
    /// cut off, or a write answered with an error, says nothing of the kind.
    #[tokio::test]
    async fn a_write_whose_answer_was_lost_is_noted() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let http = ProviderHttp::new("ns/test", Limits { requests_per_second: 1000, max_concurrency: 2, log_delay: None, ..Default::default() }, ProviderMetrics::default()).unwrap();
        // The first connection reads the request and closes; the next answers 404.
        let cut_then_gone = || loopback(|n, mut socket| async move {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            if n > 0 {
                let _ = socket.write_all(b"HTTP/1.1 404 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
            }
        });
        let (url, _) = cut_then_gone().await;
        let (reply, unanswered) = noting_unanswered_writes(http.send(TEST_OP, || http.request(Method::DELETE, &url))).await;
        assert_eq!((reply.unwrap().status, unanswered), (StatusCode::NOT_FOUND, true));
        let (url, _) = cut_then_gone().await;
        let (reply, unanswered) = noting_unanswered_writes(http.send(TEST_OP, || http.request(Method::GET, &url))).await;
        assert_eq!((reply.unwrap().status, unanswered), (StatusCode::NOT_FOUND, false), "a read changes nothing");
        let (url, _) = scripted_server(vec![503]).await;
        let (reply, unanswered) = noting_unanswered_writes(http.send(TEST_OP, || http.request(Method::DELETE, &url))).await;
        assert_eq!((reply.unwrap().status, unanswered), (StatusCode::OK, false), "an error answer is an answer");
    }

    /// A redirect could carry a token request's body to another host and make that host's answer
    /// count as the provider's: it is an error that names where it pointed, sent nowhere else.
    #[tokio::test]
    async fn a_redirect_is_an_error_naming_its_target_and_is_never_followed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (elsewhere, taken) = scripted_answers(vec![(200, "[]")]).await;
        let location = elsewhere.clone();
        let (url, hits) = loopback(move |_, mut socket| {
            let location = location.clone();
            async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let reply = format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        })
        .await;
        let http = ProviderHttp::new("ns/test", Limits::default(), ProviderMetrics::default()).unwrap();
        let error = http.send(TEST_OP, || http.request(Method::POST, &url).body("client_secret=canary")).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Rejected);
        assert!(error.to_string().starts_with("IdentityBackend ns/test: 307 Temporary Redirect from POST /x: a redirect to") && error.to_string().contains(&elsewhere), "{error}");
        assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 0, "the other host got nothing");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "not retried");
    }

    /// An answer longer than the backend's cap fails the call; under a larger cap it is read.
    #[tokio::test]
    async fn an_answer_longer_than_the_cap_fails_the_call_it_answers() {
        let body: &'static str = Box::leak(format!("[{}1]", "1,".repeat(40_000)).into_boxed_str());
        let small = ProviderHttp::new("ns/test", Limits { max_response_bytes: 65_536, ..Limits::default() }, ProviderMetrics::default()).unwrap();
        let (url, hits) = scripted_answers(vec![(200, body)]).await;
        let error = small.send(TEST_OP, || small.request(Method::GET, &url)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Rejected);
        assert!(error.to_string().contains("the answer is longer than 65536 bytes (spec.limits.maxResponseBytes)"), "{error}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "not retried");
        let large = ProviderHttp::new("ns/test", Limits::default(), ProviderMetrics::default()).unwrap();
        let (url, _) = scripted_answers(vec![(200, body)]).await;
        assert_eq!(large.send(TEST_OP, || large.request(Method::GET, &url)).await.unwrap().body.len(), body.len());
    }

    /// A provider that keeps asking for two minutes' patience: the call gives up once the next
    /// attempt would start past its deadline, with the reason, rather than wait out twelve.
    #[tokio::test(start_paused = true)]
    async fn a_call_gives_up_at_its_deadline_however_patient_the_provider_asks_it_to_be() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (url, hits) = loopback(|_, mut socket| async move {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b"HTTP/1.1 429 X\r\nRetry-After: 120\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
        })
        .await;
        let http = ProviderHttp::new("ns/test", Limits::default(), ProviderMetrics::default()).unwrap();
        let started = Instant::now();
        let error = http.send(TEST_OP, || http.request(Method::GET, &url)).await.unwrap_err();
        assert!(error.to_string().contains("429") && error.to_string().contains("more than 600 s after the first"), "{error}");
        assert!(started.elapsed() <= CALL_DEADLINE, "{:?}", started.elapsed());
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 6, "attempts at 0, 2, 4, 6, 8 and 10 minutes");
    }

    /// A provider that takes requests and never answers: each attempt gives up after
    /// REQUEST_TIMEOUT (on a paused clock, which runs ahead whenever everything waits).
    #[tokio::test(start_paused = true)]
    async fn a_provider_that_never_answers_times_out_on_every_attempt() {
        use tokio::io::AsyncReadExt;
        let (url, held) = loopback(|_, mut socket| async move {
            let mut buf = [0u8; 4096];
            while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        let http = ProviderHttp::new("ns/test", Limits { requests_per_second: 1000, max_concurrency: 2, log_delay: None, ..Default::default() }, ProviderMetrics::default()).unwrap();
        let started = Instant::now();
        let error = http.send(TEST_OP, || http.request(Method::GET, &url)).await.unwrap_err();
        assert!(error.to_string().contains("no answer within 30 s (gave up after 6 attempts)"), "{error}");
        assert!(started.elapsed() >= REQUEST_TIMEOUT * MAX_ATTEMPTS, "{:?}", started.elapsed());
        assert_eq!(held.load(std::sync::atomic::Ordering::SeqCst), MAX_ATTEMPTS as usize, "a timed-out connection is not reused");
    }

    #[tokio::test]
    async fn a_decoded_body_cut_off_is_retried_and_an_unexpected_shape_is_returned() {
        let http = ProviderHttp::new("ns/test", Limits { requests_per_second: 1000, max_concurrency: 2, log_delay: None, ..Default::default() }, ProviderMetrics::default()).unwrap();
        let numbers = |r: &HttpReply| Some(serde_json::from_slice::<Vec<u32>>(&r.body));
        // Cut off where the decoder stops at the shape, and where it runs out of input.
        let (url, hits) = scripted_answers(vec![(200, r#"{"id": "tru"#), (200, "[1, 2"), (200, "[1, 2]")]).await;
        let (reply, body) = http.send_reading(TEST_OP, || http.request(Method::GET, &url), numbers).await.unwrap();
        assert_eq!((reply.status, body.unwrap().unwrap()), (StatusCode::OK, vec![1, 2]));
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);

        // Whole JSON of another shape is the caller's to report: not retried.
        let (url, hits) = scripted_answers(vec![(200, r#"{"id": "x"}"#)]).await;
        let (_, body) = http.send_reading(TEST_OP, || http.request(Method::GET, &url), numbers).await.unwrap();
        assert!(body.unwrap().unwrap_err().is_data());
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);

        // Other statuses are not read.
        let (url, _) = scripted_answers(vec![(404, r#"{"errorCode": "E0000007"}"#)]).await;
        let (reply, body) = http.send_reading(TEST_OP, || http.request(Method::GET, &url), numbers).await.unwrap();
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert!(body.is_none());
    }

}
