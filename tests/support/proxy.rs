//! A loopback proxy in front of a real server (Keycloak) that keeps the shape of every request
//! passing through it, as the simulators do (`Simulator::record_requests`): what a published API
//! description judges, values left out (they may be credentials).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use idp_sim::{RecordedRequest, parse_query};
use tokio::net::TcpListener;

pub struct RecordingProxy {
    pub url: String,
    recorded: Arc<Mutex<BTreeSet<RecordedRequest>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RecordingProxy {
    /// Forwards every request to `upstream` (its origin), recording its shape.
    pub async fn start(upstream: &str) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let recorded: Arc<Mutex<BTreeSet<RecordedRequest>>> = Arc::default();
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let (upstream, kept) = (upstream.trim_end_matches('/').to_string(), recorded.clone());
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (client, upstream, kept) = (client.clone(), upstream.clone(), kept.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| forward(client.clone(), upstream.clone(), kept.clone(), request));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        RecordingProxy { url, recorded, server }
    }

    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.recorded.lock().unwrap().iter().cloned().collect()
    }
}

async fn forward(
    client: reqwest::Client,
    upstream: String,
    kept: Arc<Mutex<BTreeSet<RecordedRequest>>>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut query: Vec<String> = parts.uri.query().map(parse_query).unwrap_or_default().into_iter().map(|(k, _)| k).collect();
    query.sort();
    query.dedup();
    let mut headers: Vec<String> = parts.headers.keys().map(|h| h.as_str().to_string()).collect();
    headers.sort();
    headers.dedup();
    kept.lock().unwrap().insert(RecordedRequest { method: parts.method.to_string(), path: parts.uri.path().to_string(), query, headers });
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
    Ok(response.body(Full::new(bytes)).unwrap())
}
