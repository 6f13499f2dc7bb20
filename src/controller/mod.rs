//! Reconcile loops: thin I/O around the engine. `State` lives as long as the process and hands
//! each reconcile a `Context`.

mod backend;
mod recall;
mod run;
mod status;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::Mutex;

use crate::api::{IdentityBackend, MfaRecall};
use crate::audit::AuditLog;
use crate::backends::{self, IdentityProvider, ProviderError};

pub const FIELD_MANAGER: &str = "mfa-recall";

/// Operator settings from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace; all namespaces when None.
    pub namespace: Option<String>,
    /// Audit trail file that survives restarts, in addition to stdout.
    pub audit_file: Option<PathBuf>,
    pub audit_stdout: bool,
    /// This instance's name (pod name), recorded as the actor of every audit line.
    pub instance: String,
    /// Recalls reconciled at once.
    pub concurrency: u16,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub audit: Arc<AuditLog>,
    pub settings: Settings,
    pub runs: run::Runs,
    providers: Mutex<HashMap<String, CachedProvider>>,
}

/// One adapter per IdentityBackend, so its request budget is shared by every recall using it.
struct CachedProvider {
    fingerprint: String,
    provider: Arc<dyn IdentityProvider>,
}

impl Context {
    /// The adapter for an IdentityBackend, rebuilt when its spec or Secret changed.
    pub async fn provider(&self, backend: &IdentityBackend) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
        let namespace = backend.namespace().unwrap_or_default();
        let key = format!("{namespace}/{}", backend.name_any());
        let secret = match backends::credentials_secret_name(backend) {
            Some(name) => Api::<Secret>::namespaced(self.client.clone(), &namespace)
                .get_opt(name)
                .await
                .map_err(|e| ProviderError::Unavailable(format!("reading Secret {namespace}/{name}: {e}")))?,
            None => None,
        };
        let fingerprint = format!(
            "{}/{}",
            backend.metadata.generation.unwrap_or_default(),
            secret.as_ref().and_then(|s| s.metadata.resource_version.clone()).unwrap_or_default()
        );
        let mut cache = self.providers.lock().await;
        if let Some(cached) = cache.get(&key)
            && cached.fingerprint == fingerprint
        {
            return Ok(cached.provider.clone());
        }
        let provider = backends::connect(backend, secret.as_ref())?;
        cache.insert(key, CachedProvider { fingerprint, provider: provider.clone() });
        Ok(provider)
    }

    pub async fn publish<K: Resource<DynamicType = ()>>(&self, object: &K, type_: EventType, reason: &str, note: String) {
        let event = Event { type_, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None };
        if let Err(e) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %e, "could not publish event");
        }
    }
}

/// Runs both controllers until SIGTERM or Ctrl-C, then stops recalls at a checkpoint.
pub async fn run(client: Client, settings: Settings) -> crate::Result<()> {
    let audit = Arc::new(AuditLog::open(settings.audit_file.as_deref(), &settings.instance, settings.audit_stdout)?);
    let recorder = Recorder::new(client.clone(), Reporter { controller: "mfa-recall".into(), instance: Some(settings.instance.clone()) });
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        audit,
        settings: settings.clone(),
        runs: run::Runs::default(),
        providers: Mutex::new(HashMap::new()),
    });
    let (recalls, backends_api) = match &settings.namespace {
        Some(ns) => (Api::<MfaRecall>::namespaced(client.clone(), ns), Api::<IdentityBackend>::namespaced(client.clone(), ns)),
        None => (Api::<MfaRecall>::all(client.clone()), Api::<IdentityBackend>::all(client.clone())),
    };
    let config = Config::default().concurrency(settings.concurrency);
    let shutdown = shutdown_signal();
    let recall_controller = Controller::new(recalls, watcher::Config::default())
        .with_config(config.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(recall::reconcile, recall::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "recall reconcile");
            }
        });
    let backend_controller = Controller::new(backends_api, watcher::Config::default())
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(backend::reconcile, backend::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "backend reconcile");
            }
        });
    tracing::info!(instance = %settings.instance, namespace = settings.namespace.as_deref().unwrap_or("*"), "operator started");
    tokio::join!(recall_controller, backend_controller);
    tracing::info!("shutting down: stopping recalls at a checkpoint");
    ctx.runs.stop_all(Duration::from_secs(25)).await;
    tracing::info!("stopped");
    Ok(())
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
