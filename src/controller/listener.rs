//! The one accept loop of the operator's HTTP endpoints (metrics and health, the not-me page):
//! HTTP/1 on a plain listener, each connection cut off when slow or idle, and only so many served
//! at once, so a client cannot take the operator's sockets.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

/// A client has this long to send a request's head; a whole connection three times this.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 256;

/// Binds `addr` and answers each request with `respond` until the process ends; `what` names the
/// endpoint in logs.
pub async fn serve<F, Fut>(addr: SocketAddr, what: &'static str, respond: F) -> std::io::Result<()>
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving {what}");
    let respond = Arc::new(respond);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "{what}: accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let respond = respond.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = service_fn(move |request| {
                    let answer = respond(request);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let connection = http1::Builder::new().timer(TokioTimer::new()).header_read_timeout(READ_TIMEOUT).serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(READ_TIMEOUT * 3, connection).await;
            });
        }
    });
    Ok(())
}
