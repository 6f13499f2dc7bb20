//! Reconcile loops: thin I/O around the engine. `State` lives as long as the process and hands
//! each reconcile a `Context`.

mod backend;
mod bypass;
#[cfg(test)]
mod fixtures;
pub mod health;
pub mod leader;
mod listener;
mod lockout;
mod not_me;
pub mod policy;
mod recall;
mod rollout;
pub(crate) mod run;
mod status;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{Mutex, watch};

use crate::api::{self, IdentityBackend, MfaBypass, MfaRecall, MfaRecallPolicy, Reason};
use crate::metrics::Metrics;
use crate::audit::AuditLog;
use crate::backends::{self, IdentityProvider, ErrorKind, ProviderError};

pub const FIELD_MANAGER: &str = "mfa-recall";

/// Operator settings from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace; all namespaces when None.
    pub namespace: Option<String>,
    /// Audit trail file that survives restarts, in addition to stdout.
    pub audit_file: Option<PathBuf>,
    /// The audit file outlives the process: marks it lacks mean lost lines.
    pub audit_file_persistent: bool,
    pub audit_stdout: bool,
    /// The key the audit chain is hashed under (HMAC-SHA-256); plain SHA-256 when None.
    pub audit_key_file: Option<PathBuf>,
    /// The key every ledger object is signed with (HMAC-SHA-256), shared by all replicas.
    pub ledger_key_file: PathBuf,
    /// This instance's name (pod name), recorded as the actor of every audit line.
    pub instance: String,
    /// Recalls reconciled at once.
    pub concurrency: u16,
    /// Recalls that list and revoke at once; the rest wait in line.
    pub max_revoking_recalls: u16,
    /// The longest an MfaBypass may work once issued.
    pub max_bypass_lifetime: Duration,
    /// Where `/metrics`, `/livez` and `/readyz` are served; not served when None.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where the not-me endpoint listens (what spec.notifications.notMeUrl reaches); None for none.
    pub not_me_addr: Option<std::net::SocketAddr>,
    /// Where the MfaRecallPolicy signal receivers listen; None for none.
    pub signals_addr: Option<std::net::SocketAddr>,
    /// Of several replicas, only the holder of this Lease works; None runs without election.
    pub leader_election: Option<LeaseSettings>,
}

/// The Lease replicas elect their leader with.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub duration: Duration,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub audit: Arc<AuditLog>,
    /// Signs and checks every ledger object.
    pub ledger_key: crate::keys::HmacKey,
    pub settings: Settings,
    pub runs: run::Runs,
    /// Turns to revoke, shared by every recall of this process.
    pub turns: run::Turns,
    pub metrics: Metrics,
    /// The policies armed for the signal receivers.
    pub policies: policy::Policies,
    providers: Mutex<HashMap<String, CachedProvider>>,
}

/// One adapter per IdentityBackend, so its request budget is shared by every recall using it.
struct CachedProvider {
    fingerprint: String,
    provider: Arc<dyn IdentityProvider>,
}

/// How long an adapter may take to learn what its provider can do before it is used.
const PREPARE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

impl Context {
    /// The adapter for an IdentityBackend, rebuilt when its spec or Secret changed.
    pub async fn provider(&self, backend: &IdentityBackend) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
        let namespace = backend.namespace().unwrap_or_default();
        let key = format!("{namespace}/{}", backend.name_any());
        let name = &backend.spec.provider.credentials_secret_ref().name;
        let secret = Api::<Secret>::namespaced(self.client.clone(), &namespace)
            .get_opt(name)
            .await
            .map_err(|e| ProviderError::new(ErrorKind::Unavailable, format!("reading Secret {namespace}/{name}: {e}")).of(&key))?;
        // The Secret's owner says which backends may use it: whoever may create an IdentityBackend
        // cannot have a Secret meant for something else sent where the backend points.
        if let Some(secret) = &secret
            && !api::secret_opts_in(secret, &backend.name_any())
        {
            return Err(ProviderError::new(
                ErrorKind::Config,
                format!(
                    "Secret {namespace}/{name} does not let this IdentityBackend use it: annotate it {}: {} (a comma-separated list of IdentityBackends, or *)",
                    api::SECRET_OPT_IN,
                    backend.name_any()
                ),
            )
            .of(&key));
        }
        let fingerprint = format!(
            "{}/{}",
            backend.metadata.generation.unwrap_or_default(),
            secret.as_ref().and_then(|s| s.metadata.resource_version.clone()).unwrap_or_default()
        );
        if let Some(cached) = self.providers.lock().await.get(&key)
            && cached.fingerprint == fingerprint
        {
            return Ok(cached.provider.clone());
        }
        // Made and prepared outside the cache's lock: a store slow to negotiate holds up only
        // what needs it, not every other backend.
        let provider = backends::connect(backend, secret.as_ref(), &self.metrics.provider)?;
        match tokio::time::timeout(PREPARE_DEADLINE, provider.prepare()).await {
            Ok(prepared) => prepared.map_err(|e| e.of(&key))?,
            Err(_) => return Err(ProviderError::new(ErrorKind::Unavailable, format!("no answer to what it can do within {} s", PREPARE_DEADLINE.as_secs())).of(&key)),
        }
        let mut cache = self.providers.lock().await;
        // Another task may have made one meanwhile: the first one stays, so all share it.
        let cached = cache.entry(key).or_insert(CachedProvider { fingerprint: fingerprint.clone(), provider: provider.clone() });
        if cached.fingerprint != fingerprint {
            *cached = CachedProvider { fingerprint, provider: provider.clone() };
        }
        Ok(cached.provider.clone())
    }

    pub async fn publish<K: Resource<DynamicType = ()>>(&self, object: &K, type_: EventType, reason: Reason, note: String) {
        let event = Event { type_, reason: reason.as_str().into(), note: Some(note), action: reason.as_str().into(), secondary: None };
        if let Err(e) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %e, "could not publish event");
        }
    }
}

/// Runs both controllers until SIGTERM or Ctrl-C, then stops recalls at a checkpoint. With
/// leader election, waits to hold the Lease first, and stops at once if it is lost.
pub async fn run(client: Client, settings: Settings) -> crate::Result<()> {
    // Read first: a replica without its keys must fail now, not once it leads.
    let ledger_key = crate::keys::HmacKey::from_file(&settings.ledger_key_file, crate::ledger::KEY_NAME)?;
    let key = settings.audit_key_file.as_deref().map(crate::audit::ChainKey::from_file).transpose()?.unwrap_or_default();
    let health = Arc::new(health::Health::default());
    let metrics = Metrics::default();
    if let Some(addr) = settings.metrics_addr {
        health::serve(addr, health.clone(), metrics.clone()).await?;
    }
    let (terminate, terminated) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("termination signal received");
        let _ = terminate.send(true);
    });

    let (lost_tx, lost) = watch::channel(false);
    let lease = match &settings.leader_election {
        Some(l) => {
            let lock = Arc::new(leader::LeaseLock::new(client.clone(), &l.namespace, &l.name, &settings.instance, l.duration));
            // A standby is healthy and ready to take over; it only does no work.
            health.set_standby(true);
            if lock.acquire(terminated.clone()).await.is_none() {
                tracing::info!("stopped while standing by");
                return Ok(());
            }
            health.set_standby(false);
            tokio::spawn({
                let lock = lock.clone();
                let terminated = terminated.clone();
                async move { lock.keep(terminated, lost_tx).await }
            });
            Some(lock)
        }
        None => None,
    };


    let audit = Arc::new(AuditLog::open(settings.audit_file.as_deref(), &settings.instance, settings.audit_stdout)?.keyed(key).persistent(settings.audit_file_persistent));
    let recorder = Recorder::new(client.clone(), Reporter { controller: "mfa-recall".into(), instance: Some(settings.instance.clone()) });
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        audit,
        ledger_key,
        settings: settings.clone(),
        runs: run::Runs::default(),
        turns: run::Turns::new(settings.max_revoking_recalls),
        metrics,
        policies: Default::default(),
        providers: Mutex::new(HashMap::new()),
    });
    // Only the leader serves it: the reports object has one writer.
    if let Some(addr) = settings.not_me_addr {
        not_me::serve(addr, ctx.clone()).await?;
    }
    let (recalls, backends_api, bypasses, policies) = match &settings.namespace {
        Some(ns) => (Api::<MfaRecall>::namespaced(client.clone(), ns), Api::<IdentityBackend>::namespaced(client.clone(), ns), Api::<MfaBypass>::namespaced(client.clone(), ns), Api::<MfaRecallPolicy>::namespaced(client.clone(), ns)),
        None => (Api::<MfaRecall>::all(client.clone()), Api::<IdentityBackend>::all(client.clone()), Api::<MfaBypass>::all(client.clone()), Api::<MfaRecallPolicy>::all(client.clone())),
    };
    let shutdown = {
        use futures::FutureExt;
        let (mut terminated, mut lost) = (terminated.clone(), lost.clone());
        async move {
            tokio::select! {
                _ = terminated.wait_for(|t| *t) => {},
                _ = lost.wait_for(|l| *l) => {},
            }
        }
        .boxed()
        .shared()
    };
    let config = Config::default().concurrency(settings.concurrency);
    let (recall_store, recall_stream) = watched(recalls, "mfarecalls", health.clone());
    let (backend_store, backend_stream) = watched(backends_api, "identitybackends", health.clone());
    let recall_controller = Controller::for_stream(recall_stream, recall_store)
        .with_config(config.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(recall::reconcile, recall::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "recall reconcile");
            }
        });
    let backend_controller = Controller::for_stream(backend_stream, backend_store)
        .with_config(config.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(backend::reconcile, backend::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "backend reconcile");
            }
        });
    let (bypass_store, bypass_stream) = watched(bypasses, "mfabypasses", health.clone());
    let bypass_controller = Controller::for_stream(bypass_stream, bypass_store)
        .with_config(config.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(bypass::reconcile, bypass::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "bypass reconcile");
            }
        });
    let (policy_store, policy_stream) = watched(policies, "mfarecallpolicies", health.clone());
    // Only the leader serves and polls them: each policy's guard against duplicates lives in one process.
    ctx.policies.watch(policy_store.clone());
    tokio::spawn(policy::flush_statuses(ctx.clone()));
    tokio::spawn(policy::poll_transmitters(ctx.clone()));
    if let Some(addr) = settings.signals_addr {
        policy::serve(addr, ctx.clone()).await?;
    }
    // Reconciled when the spec changes (and each minute, for rotated Secrets), not on every
    // status write: a policy's status changes with each signal received.
    let policy_stream = policy_stream.predicate_filter(kube::runtime::predicates::generation, Default::default());
    let policy_controller = Controller::for_stream(policy_stream, policy_store)
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(policy::reconcile, policy::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "policy reconcile");
            }
        });
    tracing::info!(instance = %settings.instance, namespace = settings.namespace.as_deref().unwrap_or("*"), "operator started");
    tokio::join!(recall_controller, backend_controller, bypass_controller, policy_controller);
    if *lost.borrow() {
        // Another replica may start any moment: stop now. Users in flight resume from the ledger.
        ctx.runs.stop_all(Duration::from_secs(1)).await;
        return Err(crate::Error::Invalid("lost the leader lease; exiting so a restart stands by".into()));
    }
    tracing::info!("shutting down: stopping recalls at a checkpoint");
    ctx.runs.stop_all(Duration::from_secs(25)).await;
    if let Some(lock) = lease {
        lock.release().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// A reflector-backed watch whose progress and errors feed liveness.
fn watched<K>(api: Api<K>, name: &'static str, health: Arc<health::Health>) -> (Store<K>, impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        // Watched here rather than through Store::wait_until_ready, which wakes only one waiter
        // and the controller already waits on it.
        .inspect(move |event| health.watch_event(name, event.as_ref().map(|e| matches!(e, watcher::Event::InitDone)).map_err(|_| ())))
        .default_backoff()
        .touched_objects();
    (reader, stream)
}

/// Resolves on SIGTERM or SIGINT; cloneable so both controllers share it.
fn shutdown_signal() -> futures::future::Shared<futures::future::BoxFuture<'static, ()>> {
    use futures::FutureExt;
    async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    .boxed()
    .shared()
}
