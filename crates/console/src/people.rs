//! Kubernetes clients that act as a person: the console's own credentials with Impersonate-User
//! and Impersonate-Group, so the apiserver authorises each request as the person and records
//! their name. The console's own client is used only to ask who a token belongs to and what a
//! person may do (TokenReview, SubjectAccessReview).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::auth::Person;

/// Clients kept at most; past it they are built again.
const MAX_CLIENTS: usize = 256;

pub struct People {
    config: kube::Config,
    own: Client,
    clients: Mutex<HashMap<Person, Client>>,
}

impl People {
    pub fn new(config: kube::Config) -> Result<Self, String> {
        let own = Client::try_from(config.clone()).map_err(|e| format!("a Kubernetes client from the console's own credentials: {e}"))?;
        Ok(Self { config, own, clients: Mutex::default() })
    }

    pub fn own(&self) -> &Client {
        &self.own
    }

    /// A client whose every request the apiserver takes as the person's.
    pub fn client(&self, person: &Person) -> Result<Client, Response> {
        if let Some(client) = self.clients.lock().unwrap().get(person) {
            return Ok(client.clone());
        }
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(person.username.clone());
        config.auth_info.impersonate_groups = (!person.groups.is_empty()).then(|| person.groups.clone());
        config.auth_info.impersonate_uid = None;
        config.auth_info.impersonate_user_extra = None;
        let client = Client::try_from(config).map_err(|e| {
            tracing::error!(error = %e, "building an impersonating client");
            (StatusCode::INTERNAL_SERVER_ERROR, "the console could not build a Kubernetes client").into_response()
        })?;
        let mut clients = self.clients.lock().unwrap();
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(person.clone(), client.clone());
        Ok(client)
    }

    /// Whether Kubernetes lets the person `verb` the `resource` (of mfarecall.io) in `namespace`,
    /// and why not.
    pub async fn may(&self, person: &Person, verb: &str, resource: &str, namespace: &str, name: Option<&str>) -> Result<(bool, String), kube::Error> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(person.username.clone()),
                groups: Some(person.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("mfarecall.io".into()),
                    resource: Some(resource.into()),
                    verb: Some(verb.into()),
                    namespace: Some(namespace.into()),
                    name: name.map(str::to_string),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.own.clone()).create(&PostParams::default(), &review).await?;
        let status = answer.status.unwrap_or_default();
        Ok((status.allowed, status.reason.unwrap_or_default()))
    }
}
