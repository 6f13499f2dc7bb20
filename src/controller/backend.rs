//! Reconcile of IdentityBackend: can we reach the provider with these credentials? The answer
//! goes in the Ready condition with a reason a human can act on, never the secret itself.
//! Failures are status, not reconcile errors, so a bad backend never crash-loops anything.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Context, FIELD_MANAGER};
use crate::api::{self, IdentityBackend, Reason};
use crate::backends::{ErrorKind, ProviderError};
use crate::{Error, Result};

const HEALTHY_RECHECK: Duration = Duration::from_secs(300);
const UNHEALTHY_RECHECK: Duration = Duration::from_secs(30);

/// The longest a readiness check may take, its retries included.
const CHECK_DEADLINE: Duration = Duration::from_secs(60);

/// Named among the limitations of a backend that sets `insecure`.
const INSECURE: &str = "transport: spec.insecure allows http:// to hosts other than loopback: credentials, tokens and answers cross the network in clear";

pub async fn reconcile(backend: Arc<IdentityBackend>, ctx: Arc<Context>) -> Result<Action> {
    let generation = backend.metadata.generation;
    let checked = match ctx.provider(&backend).await {
        // Inside the reconcile: a provider that keeps it waiting must not hold the others' checks.
        Ok(provider) => match tokio::time::timeout(CHECK_DEADLINE, provider.check()).await {
            Ok(checked) => checked.map(|()| provider.capabilities()),
            Err(_) => Err(ProviderError::new(ErrorKind::Unavailable, format!("no answer to the readiness check within {} s", CHECK_DEADLINE.as_secs()))
                .of(&format!("{}/{}", backend.namespace().unwrap_or_default(), backend.name_any()))),
        },
        Err(e) => Err(e),
    };
    let mut status = backend.status.clone().unwrap_or_default();
    let previous_ready = api::condition(&status.conditions, api::READY).map(|c| (c.status.clone(), c.reason.clone()));
    status.observed_generation = generation;
    status.provider_type = Some(backend.spec.provider.name().to_string());
    let requeue = match &checked {
        Ok(capabilities) => {
            status.capabilities = capabilities.names();
            status.limitations = capabilities.limitations.clone();
            if backend.spec.insecure {
                status.limitations.push(INSECURE.to_string());
            }
            api::set_condition(&mut status.conditions, api::READY, true, Reason::Reachable, "the provider answered and accepted the credentials", generation);
            HEALTHY_RECHECK
        }
        Err(e) => {
            let reason = match e.kind() {
                ErrorKind::Auth => Reason::AuthenticationFailed,
                ErrorKind::Config => Reason::InvalidConfiguration,
                ErrorKind::NotFound => Reason::NotFound,
                ErrorKind::Unavailable => Reason::Unreachable,
                ErrorKind::Rejected => Reason::Rejected,
            };
            api::set_condition(&mut status.conditions, api::READY, false, reason, e.to_string(), generation);
            UNHEALTHY_RECHECK
        }
    };
    let now_ready = api::condition(&status.conditions, api::READY).map(|c| (c.status.clone(), c.reason.clone()));
    if backend.status.as_ref() != Some(&status) {
        let api: Api<IdentityBackend> = Api::namespaced(ctx.client.clone(), &backend.namespace().unwrap_or_default());
        let patch = json!({ "apiVersion": "mfarecall.io/v1alpha1", "kind": "IdentityBackend", "status": status });
        api.patch_status(&backend.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    }
    if previous_ready != now_ready {
        let (type_, reason) = if checked.is_ok() { (EventType::Normal, Reason::Reachable) } else { (EventType::Warning, Reason::NotReady) };
        let note = match &checked {
            Ok(_) => "provider reachable, credentials accepted".to_string(),
            Err(e) => e.to_string(),
        };
        tracing::info!(backend = %backend.name_any(), %reason, "backend readiness changed");
        ctx.publish(&*backend, type_, reason, note).await;
    }
    Ok(Action::requeue(requeue))
}

pub fn error_policy(backend: Arc<IdentityBackend>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(backend = %backend.name_any(), %error, "backend reconcile failed");
    ctx.metrics.reconcile_error("identitybackend", error.category());
    Action::requeue(UNHEALTHY_RECHECK)
}
