//! HTTP plumbing shared by every adapter: pacing to a request budget, a concurrency cap,
//! retries with backoff and jitter on 429/5xx/timeouts (honouring `Retry-After`), OAuth
//! client-credentials tokens, and secret values that cannot be printed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use reqwest::{Method, Request, Response, StatusCode};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use super::ProviderError;
use crate::api::BackendLimits;

/// A credential value. Debug and Display never show it; only `expose` does, at the point of use.
#[derive(Clone)]
pub struct SecretString(String);

impl SecretString {
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
    name: &'a str,
}

impl<'a> SecretKeys<'a> {
    pub fn new(secret: &'a Secret, name: &'a str) -> Self {
        Self { secret, name }
    }

    pub fn get(&self, key: &str) -> Result<SecretString, ProviderError> {
        let from_data = self.secret.data.as_ref().and_then(|d| d.get(key)).map(|v| String::from_utf8(v.0.clone()));
        let from_string_data = self.secret.string_data.as_ref().and_then(|d| d.get(key)).cloned().map(Ok);
        match from_data.or(from_string_data) {
            Some(Ok(value)) if !value.trim().is_empty() => Ok(SecretString(value.trim().to_string())),
            Some(Ok(_)) => Err(ProviderError::Config(format!("Secret {}: key {key} is empty", self.name))),
            Some(Err(_)) => Err(ProviderError::Config(format!("Secret {}: key {key} is not UTF-8 text", self.name))),
            None => Err(ProviderError::Config(format!("Secret {}: key {key} is missing", self.name))),
        }
    }
}

/// Request budget of one backend.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub requests_per_second: u32,
    pub max_concurrency: u32,
}

impl From<&BackendLimits> for Limits {
    fn from(l: &BackendLimits) -> Self {
        Self { requests_per_second: l.requests_per_second.max(1) as u32, max_concurrency: l.max_concurrency.max(1) as u32 }
    }
}

/// Spaces requests evenly so the provider never sees more than its budget.
struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    fn new(requests_per_second: u32) -> Self {
        Self { interval: Duration::from_secs_f64(1.0 / requests_per_second as f64), next: Mutex::new(Instant::now()) }
    }

    async fn wait_turn(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// How often a failing request is tried before the user is reported failed.
const MAX_ATTEMPTS: u32 = 6;
const BASE_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client of one backend: paced, capped and retrying.
#[derive(Clone)]
pub struct ProviderHttp {
    client: reqwest::Client,
    pacer: Arc<Pacer>,
    in_flight: Arc<Semaphore>,
    /// `namespace/name` of the IdentityBackend, for error messages.
    pub backend: String,
}

impl ProviderHttp {
    pub fn new(backend: &str, limits: Limits) -> Result<Self, ProviderError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ProviderError::Config(format!("IdentityBackend {backend}: HTTP client: {e}")))?;
        Ok(Self {
            client,
            pacer: Arc::new(Pacer::new(limits.requests_per_second)),
            in_flight: Arc::new(Semaphore::new(limits.max_concurrency as usize)),
            backend: backend.to_string(),
        })
    }

    pub fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends `request`, retrying transient failures with exponential backoff and full jitter.
    /// Returns the final response whatever its status (callers map 4xx themselves); errors only
    /// when the provider stayed unavailable through every attempt.
    pub async fn send(&self, request: Request) -> Result<Response, ProviderError> {
        let what = format!("{} {}", request.method(), request.url().path());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let this_try = request.try_clone().expect("provider requests have buffered bodies");
            let outcome = {
                let _permit = self.in_flight.acquire().await.expect("semaphore never closed");
                self.pacer.wait_turn().await;
                self.client.execute(this_try).await
            };
            let (retry_after, problem) = match outcome {
                Ok(response) if is_transient(response.status()) => {
                    (retry_after(&response), format!("{} from {what}", response.status()))
                }
                Ok(response) => return Ok(response),
                Err(e) if e.is_timeout() || e.is_connect() || e.is_request() => (None, format!("{what}: {}", describe(&e))),
                Err(e) => return Err(ProviderError::Unavailable(format!("IdentityBackend {}: {what}: {}", self.backend, describe(&e)))),
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(ProviderError::Unavailable(format!(
                    "IdentityBackend {}: {problem} (gave up after {attempt} attempts)",
                    self.backend
                )));
            }
            let wait = retry_after.unwrap_or_else(|| backoff(attempt));
            tracing::debug!(backend = %self.backend, %problem, attempt, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

/// `Retry-After` in seconds, capped so a confused provider cannot stall a recall for hours.
fn retry_after(response: &Response) -> Option<Duration> {
    let seconds: u64 = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(120)))
}

/// Exponential backoff with full jitter: uniformly random in [0, min(cap, base * 2^attempt)].
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BASE_BACKOFF.saturating_mul(1 << attempt.min(16)).min(MAX_BACKOFF);
    ceiling.mul_f64(fastrand::f64()).max(Duration::from_millis(10))
}

/// A reqwest error without the URL's query string, which could carry a credential for some providers.
fn describe(e: &reqwest::Error) -> String {
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

/// OAuth 2.0 client-credentials tokens, fetched once and reused until shortly before expiry.
pub struct ClientCredentials {
    pub token_url: String,
    pub client_id: SecretString,
    pub client_secret: SecretString,
    /// Where the credentials live, to say what to fix when they are refused.
    pub secret_name: String,
    cached: Mutex<Option<(SecretString, Instant)>>,
}

impl ClientCredentials {
    pub fn new(token_url: String, client_id: SecretString, client_secret: SecretString, secret_name: String) -> Self {
        Self { token_url, client_id, client_secret, secret_name, cached: Mutex::new(None) }
    }

    /// A valid access token; fetches a new one when none is cached or it is about to expire.
    pub async fn bearer(&self, http: &ProviderHttp) -> Result<SecretString, ProviderError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && Instant::now() + Duration::from_secs(15) < *expires
        {
            return Ok(token.clone());
        }
        let request = http
            .request(Method::POST, &self.token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.expose()),
                ("client_secret", self.client_secret.expose()),
            ])
            .build()
            .map_err(|e| ProviderError::Config(format!("IdentityBackend {}: token request: {}", http.backend, describe(&e))))?;
        let response = http.send(request).await?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST || status == StatusCode::FORBIDDEN {
            return Err(ProviderError::Auth(format!(
                "IdentityBackend {}: the token endpoint refused the client credentials ({status}): check client-id and client-secret in Secret {}",
                http.backend, self.secret_name
            )));
        }
        if !status.is_success() {
            return Err(ProviderError::Unavailable(format!(
                "IdentityBackend {}: token endpoint answered {status}: check the url and realm",
                http.backend
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            access_token: String,
            #[serde(default = "default_expiry")]
            expires_in: u64,
        }
        fn default_expiry() -> u64 {
            60
        }
        let body: TokenResponse = response.json().await.map_err(|e| {
            ProviderError::Unavailable(format!("IdentityBackend {}: token response: {}", http.backend, describe(&e)))
        })?;
        let token = SecretString(body.access_token);
        *cached = Some((token.clone(), Instant::now() + Duration::from_secs(body.expires_in)));
        Ok(token)
    }

    /// Drops the cached token after the provider refused it (revoked or expired early).
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_never_prints() {
        let s = SecretString("hunter2".into());
        assert_eq!(format!("{s:?}"), "SecretString(***)");
    }

    #[test]
    fn backoff_stays_within_cap() {
        for attempt in 1..20 {
            assert!(backoff(attempt) <= MAX_BACKOFF);
        }
    }

    /// A loopback server that answers the given statuses in order, then 200.
    async fn scripted_server(statuses: Vec<u16>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let status = statuses.get(n).copied().unwrap_or(200);
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let extra = if status == 429 { "Retry-After: 0\r\n" } else { "" };
                let reply = format!("HTTP/1.1 {status} X\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        (url, hits)
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_permanent_ones_reported() {
        let http = ProviderHttp::new("ns/test", Limits { requests_per_second: 1000, max_concurrency: 2 }).unwrap();
        let (url, hits) = scripted_server(vec![429, 503, 502]).await;
        let response = http.send(http.request(Method::GET, &url).build().unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 4);

        let (url, hits) = scripted_server(vec![500; 100]).await;
        let error = http.send(http.request(Method::GET, &url).build().unwrap()).await.unwrap_err();
        assert!(error.to_string().contains("gave up after 6 attempts"), "{error}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), MAX_ATTEMPTS as usize);

        // A 4xx is the caller's to interpret, never retried.
        let (url, hits) = scripted_server(vec![404]).await;
        let response = http.send(http.request(Method::GET, &url).build().unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_requests_to_the_budget() {
        let pacer = Pacer::new(10);
        let start = Instant::now();
        for _ in 0..11 {
            pacer.wait_turn().await;
        }
        // 11 turns at 10 per second: the last one starts one second after the first.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
