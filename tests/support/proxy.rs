//! A loopback proxy in front of a real server (Keycloak, the reference in-house backend) that
//! keeps the shape of every request passing through it, as the simulators do
//! (`Simulator::record_requests`): what a published API description judges, values left out (they
//! may be credentials). It injects the simulators' faults too (`idp_sim::Faults`), standing for
//! the network and load balancers between the operator and a server that cannot fail on request.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use idp_sim::{Faults, Injected, RateLimits, RecordedRequest, parse_query};
use tokio::net::TcpListener;

pub struct RecordingProxy {
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    recorded: Mutex<BTreeSet<RecordedRequest>>,
    faults: Mutex<Faults>,
    injected: AtomicU64,
    /// One quota over every request (`RateLimits::default` per `window_seconds`), as a gateway in
    /// front of a store keeps it: the window's start (epoch s) and the requests it has taken.
    limits: Mutex<Option<RateLimits>>,
    window: Mutex<(u64, u64)>,
    throttled: AtomicU64,
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A request the proxy closed without an answer (`Faults::drop_rate`, `Faults::lost_rate`).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("connection dropped by the proxy's fault injection")
    }
}

impl std::error::Error for Dropped {}

impl RecordingProxy {
    /// Forwards every request to `upstream` (its origin), recording its shape.
    pub async fn start(upstream: &str) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared: Arc<Shared> = Arc::default();
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let (upstream, kept) = (upstream.trim_end_matches('/').to_string(), shared.clone());
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (client, upstream, kept) = (client.clone(), upstream.clone(), kept.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| forward(client.clone(), upstream.clone(), kept.clone(), request));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        RecordingProxy { url, shared, server }
    }

    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.shared.recorded.lock().unwrap().iter().cloned().collect()
    }

    /// Faults for the requests from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// How many requests met a fault.
    pub fn faults_injected(&self) -> u64 {
        self.shared.injected.load(Ordering::Relaxed)
    }

    /// A quota from now on: `limits.default` requests per `limits.window_seconds`, windows aligned
    /// to the clock; over it, 429 with Retry-After to the window's end. Announced nowhere.
    pub fn set_limits(&self, limits: RateLimits) {
        *self.shared.limits.lock().unwrap() = limits.default.is_some().then_some(limits);
    }

    /// How many requests were answered 429 for the quota.
    pub fn throttled(&self) -> u64 {
        self.shared.throttled.load(Ordering::Relaxed)
    }
}

impl Shared {
    /// Seconds until the quota's window ends, when this request is over it.
    fn over_quota(&self) -> Option<u64> {
        let limits = self.limits.lock().unwrap().clone()?;
        let (window, limit) = (limits.window_seconds.max(1), limits.default?);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let start = now - now % window;
        let mut current = self.window.lock().unwrap();
        if current.0 != start {
            *current = (start, 0);
        }
        if current.1 >= limit {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            return Some(start + window - now);
        }
        current.1 += 1;
        None
    }
}

fn answer(status: u16, content_type: &str, body: &[u8]) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder().status(status).header("content-type", content_type).body(Full::new(Bytes::copy_from_slice(body))).unwrap()
}

async fn forward(client: reqwest::Client, upstream: String, shared: Arc<Shared>, request: hyper::Request<Incoming>) -> Result<hyper::Response<Full<Bytes>>, Dropped> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut query: Vec<String> = parts.uri.query().map(parse_query).unwrap_or_default().into_iter().map(|(k, _)| k).collect();
    query.sort();
    query.dedup();
    let mut headers: Vec<String> = parts.headers.keys().map(|h| h.as_str().to_string()).collect();
    headers.sort();
    headers.dedup();
    shared.recorded.lock().unwrap().insert(RecordedRequest { method: parts.method.to_string(), path: parts.uri.path().to_string(), query, headers });

    if let Some(wait) = shared.over_quota() {
        let mut throttled = answer(429, "application/json", br#"{"error": "throttled", "message": "over the quota"}"#);
        throttled.headers_mut().insert("retry-after", hyper::header::HeaderValue::from(wait.max(1)));
        return Ok(throttled);
    }
    let (fault, slow) = shared.faults.lock().unwrap().pick(parts.uri.path());
    if let Some(slow) = slow {
        tokio::time::sleep(slow).await;
    }
    let lost = fault == Some(Injected::Lost);
    if let Some(fault) = fault.filter(|_| !lost) {
        shared.injected.fetch_add(1, Ordering::Relaxed);
        return match fault {
            Injected::Permanent => Ok(answer(500, "application/json", br#"{"error": "injected permanent failure"}"#)),
            Injected::Throttled => {
                let mut throttled = answer(429, "application/json", br#"{"error": "throttled", "message": "injected"}"#);
                throttled.headers_mut().insert("retry-after", hyper::header::HeaderValue::from_static("1"));
                Ok(throttled)
            }
            Injected::Dropped => Err(Dropped),
            Injected::Unavailable => Ok(answer(503, "application/json", br#"{"error": "unavailable", "message": "injected"}"#)),
            // Cut off in the server's own media type, so the client reads it as the answer it asked for.
            Injected::Malformed => Ok(answer(200, parts.headers.get("accept").and_then(|a| a.to_str().ok()).filter(|a| !a.contains(',') && !a.contains('*')).unwrap_or("application/json"), idp_sim::MALFORMED_BODY)),
            Injected::Lost => unreachable!("a lost answer is forwarded first"),
        };
    }

    let target = format!("{upstream}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut outgoing = client.request(parts.method.clone(), &target).body(body);
    for (name, value) in parts.headers.iter().filter(|(name, _)| *name != hyper::header::HOST) {
        outgoing = outgoing.header(name, value);
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => return Ok(hyper::Response::builder().status(502).body(Full::new(Bytes::from(e.to_string()))).unwrap()),
    };
    let mut response = hyper::Response::builder().status(answer.status());
    for (name, value) in answer.headers().iter().filter(|(name, _)| *name != hyper::header::TRANSFER_ENCODING && *name != hyper::header::CONTENT_LENGTH) {
        response = response.header(name, value);
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    // Carried out by the server; its answer lost on the way back.
    if lost {
        shared.injected.fetch_add(1, Ordering::Relaxed);
        return Err(Dropped);
    }
    Ok(response.body(Full::new(bytes)).unwrap())
}
