//! The operator's HTTP endpoints: `/metrics` (OpenMetrics text), `/livez` (fails when a watch has
//! failed for a minute without progress) and `/readyz` (true once the caches synced, or while standing by as
//! a replica that is not the leader).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// A watch failing this long without one success means it no longer makes progress.
const STALL: Duration = Duration::from_secs(60);

#[derive(Default)]
struct WatchState {
    synced: bool,
    failing_since: Option<Instant>,
}

/// Liveness and readiness, fed by the controllers.
#[derive(Default)]
pub struct Health {
    standby: AtomicBool,
    watches: Mutex<BTreeMap<&'static str, WatchState>>,
}

impl Health {
    /// One event from a watch: `Ok(initial_list_done)` is progress, `Err` an error (the watcher
    /// retries with backoff).
    pub fn watch_event(&self, watch: &'static str, event: Result<bool, ()>) {
        let mut watches = self.watches.lock().unwrap();
        let state = watches.entry(watch).or_default();
        match event {
            Ok(list_done) => {
                state.failing_since = None;
                state.synced |= list_done;
            }
            Err(()) => {
                state.failing_since.get_or_insert_with(Instant::now);
            }
        }
    }

    /// A replica waiting for the leader lease is ready: ready to take over.
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::SeqCst);
    }

    /// Standing by, or every watch has listed its objects once (the caches are synced).
    pub fn ready(&self) -> bool {
        let watches = self.watches.lock().unwrap();
        self.standby.load(Ordering::SeqCst) || (!watches.is_empty() && watches.values().all(|w| w.synced))
    }

    /// Why the process is not live, if it is not.
    pub fn not_live(&self) -> Option<String> {
        let watches = self.watches.lock().unwrap();
        watches.iter().find_map(|(name, state)| {
            let since = state.failing_since?;
            (since.elapsed() >= STALL).then(|| format!("the {name} watch has failed for {} s without progress", since.elapsed().as_secs()))
        })
    }

    fn answer(&self, path: &str) -> (u16, &'static str, String) {
        match path {
            "/livez" => match self.not_live() {
                None => (200, "text/plain", "ok\n".into()),
                Some(why) => (503, "text/plain", format!("{why}\n")),
            },
            "/readyz" if self.ready() => (200, "text/plain", "ok\n".into()),
            "/readyz" => (503, "text/plain", "caches not synced yet\n".into()),
            _ => (404, "text/plain", "not found: /metrics, /livez, /readyz\n".into()),
        }
    }
}

/// Serves the endpoints on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, health: Arc<Health>, metrics: Metrics) -> std::io::Result<()> {
    super::listener::serve(addr, "/metrics, /livez and /readyz", move |request| {
        let (status, content_type, body) = match request.uri().path() {
            "/metrics" => (200, crate::metrics::CONTENT_TYPE, metrics.render()),
            path => health.answer(path),
        };
        let mut response = hyper::Response::new(Full::new(bytes::Bytes::from(body)));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
        async move { response }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_watch_failing_without_progress_is_not_live() {
        let health = Health::default();
        assert_eq!(health.answer("/readyz").0, 503, "nothing listed yet");
        health.watch_event("mfarecalls", Ok(false));
        assert_eq!(health.not_live(), None);
        health.watch_event("mfarecalls", Ok(true));
        assert_eq!(health.answer("/readyz").0, 200, "every watch listed once");
        health.watch_event("mfarecalls", Err(()));
        tokio::time::advance(STALL / 2).await;
        health.watch_event("mfarecalls", Err(()));
        assert_eq!(health.not_live(), None, "a short outage is retried, not fatal");
        tokio::time::advance(STALL).await;
        assert!(health.not_live().unwrap().contains("mfarecalls"));
        assert_eq!(health.answer("/livez").0, 503);
        health.watch_event("mfarecalls", Ok(false));
        assert_eq!(health.not_live(), None);
        health.watch_event("identitybackends", Ok(false));
        assert_eq!(health.answer("/readyz").0, 503, "a watch that has not listed yet");
        health.set_standby(true);
        assert_eq!(health.answer("/readyz").0, 200);
    }
}
