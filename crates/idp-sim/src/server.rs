//! The simulators' HTTP/1.1 server on a loopback port.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{Disposition, SimRequest, Simulator, parse_query};

/// A simulator serving on `url` until dropped.
pub struct Running {
    pub url: String,
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A connection closed on purpose (the drop fault).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// Serves `simulator` on `addr` (port 0 picks a free one) until the returned handle is dropped.
pub async fn serve(simulator: Arc<Simulator>, addr: SocketAddr) -> std::io::Result<Running> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.changed() => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let _ = stream.set_nodelay(true);
            let simulator = simulator.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(simulator.clone(), request));
                let connection = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = connection => {}
                    _ = stopped.changed() => {}
                }
            });
        }
    });
    Ok(Running { url: format!("http://{addr}"), addr, stop })
}

async fn answer(simulator: Arc<Simulator>, request: hyper::Request<Incoming>) -> Result<hyper::Response<Full<bytes::Bytes>>, Dropped> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let request = SimRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(parse_query).unwrap_or_default(),
        headers: parts.headers,
        body,
    };
    match simulator.dispatch(request).await {
        Disposition::Drop => Err(Dropped),
        Disposition::Answer(response) => {
            let mut builder = hyper::Response::builder().status(response.status);
            for (name, value) in &response.headers {
                builder = builder.header(name, value);
            }
            Ok(builder.body(Full::new(bytes::Bytes::from(response.body))).unwrap_or_else(|_| {
                let mut fallback = hyper::Response::new(Full::new(bytes::Bytes::new()));
                *fallback.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                fallback
            }))
        }
    }
}

