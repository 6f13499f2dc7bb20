//! Server-sent events from Kubernetes watches, made as the person: a page's script (or an API
//! client) is told of each change to the recalls it shows as the operator writes their status,
//! with no polling and no reload.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use kube::Api;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use mfa_recall::api::MfaRecall;

use crate::auth::Caller;
use crate::{Shared, pages, views};

/// A stream lasts at most this long; the page's EventSource then connects again, and is asked
/// again who it is, so a stream never outlives its session or the person's rights by more.
const STREAM_FOR: Duration = Duration::from_secs(300);

pub async fn recalls(State(console): State<Shared>, caller: Caller) -> Response {
    page_stream(&console, &caller, None).await
}

pub async fn recall(State(console): State<Shared>, Path(name): Path<String>, caller: Caller) -> Response {
    if !pages::is_object_name(&name) {
        return (axum::http::StatusCode::BAD_REQUEST, "not a recall's name").into_response();
    }
    page_stream(&console, &caller, Some(&name)).await
}

async fn page_stream(console: &Shared, caller: &Caller, name: Option<&str>) -> Response {
    let namespace = &console.cli.namespace;
    // A watch the person may not make would be retried for ever and say nothing: asked first.
    match console.people.may(&caller.person, "watch", "mfarecalls", namespace, name).await {
        Ok((true, _)) => {}
        Ok((false, _)) => return (axum::http::StatusCode::FORBIDDEN, "you may not watch these recalls").into_response(),
        Err(e) => return pages::kube_error(console, Some(caller), e),
    }
    let client = match console.people.client(&caller.person) {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    changes(Api::namespaced(client, namespace), name, console.stopping.clone()).await.unwrap_or_else(|e| pages::kube_error(console, Some(caller), e))
}

/// A stream of `recall` events (a RecallView as JSON) for each change to the recalls of `api`
/// (or the one named), and `gone` (its name) for one deleted. Refused with the apiserver's
/// answer when the person may not list or watch them.
pub async fn changes(api: Api<MfaRecall>, name: Option<&str>, mut stopping: tokio::sync::watch::Receiver<bool>) -> Result<Response, kube::Error> {
    let mut config = watcher::Config::default();
    let mut probe = ListParams::default().limit(1);
    if let Some(name) = name {
        config = config.fields(&format!("metadata.name={name}"));
        probe = probe.fields(&format!("metadata.name={name}"));
    }
    // Asked once before the stream starts, so a refusal is an HTTP status, not a stream that retries.
    api.list_metadata(&probe).await?;
    let stopped = async move {
        tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => {}
            _ = tokio::time::sleep(STREAM_FOR) => {}
        }
    };
    Ok(Sse::new(events(api, config).take_until(stopped)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

fn events(api: Api<MfaRecall>, config: watcher::Config) -> impl Stream<Item = Result<Event, Infallible>> {
    let mut shown: HashMap<String, views::RecallView> = HashMap::new();
    // A refusal (the person's rights were taken away meanwhile) ends the stream rather than being retried.
    let refused = |e: &watcher::Error| matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) | watcher::Error::WatchStartFailed(kube::Error::Api(s)) | watcher::Error::WatchFailed(kube::Error::Api(s)) if s.code == 401 || s.code == 403);
    watcher(api, config).take_while(move |event| std::future::ready(!event.as_ref().err().is_some_and(refused))).default_backoff().filter_map(move |event| {
        let out = match event {
            Ok(watcher::Event::Apply(recall) | watcher::Event::InitApply(recall)) => {
                let view = views::recall(&recall);
                // Status is written often; only what the page shows changing is sent.
                if shown.get(&view.name) == Some(&view) {
                    None
                } else {
                    shown.insert(view.name.clone(), view.clone());
                    Event::default().event("recall").json_data(&view).ok()
                }
            }
            Ok(watcher::Event::Delete(recall)) => {
                let name = recall.metadata.name.unwrap_or_default();
                shown.remove(&name);
                Some(Event::default().event("gone").data(name))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => {
                tracing::warn!(error = %e, "a watch for the console failed; retried with backoff");
                None
            }
        };
        std::future::ready(out.map(Ok))
    })
}
