//! Segments stored as ConfigMaps owned by the MfaRecall, gzip-compressed, so a rescheduled pod
//! continues without a PersistentVolume. Labelled with the recall's UID so a recreated recall of
//! the same name never inherits an old ledger.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

use super::{LedgerStore, Segment, decode, encode};
use crate::Result;

pub const RECALL_UID_LABEL: &str = "mfarecall.io/recall-uid";
pub const BACKEND_LABEL: &str = "mfarecall.io/backend";
pub const SEGMENT_LABEL: &str = "mfarecall.io/segment";
const DATA_KEY: &str = "segment.json.gz";
const FIELD_MANAGER: &str = "mfa-recall-ledger";

pub struct ConfigMapLedger {
    api: Api<ConfigMap>,
    /// Writes go through these rather than `api`, so the apiserver's answer (the segment again,
    /// base64) is not decoded: a 2xx is all a write needs to know.
    client: Client,
    requests: kube::core::Request,
    recall_uid: String,
    owner: OwnerReference,
    /// Segments this process has stored, so their next write replaces without trying to create.
    stored: Mutex<HashSet<String>>,
}

impl ConfigMapLedger {
    pub fn new(client: Client, namespace: &str, owner: OwnerReference) -> Self {
        let requests = kube::core::Request::new(<ConfigMap as kube::Resource>::url_path(&(), Some(namespace)));
        Self { api: Api::namespaced(client.clone(), namespace), client, requests, recall_uid: owner.uid.clone(), owner, stored: Mutex::default() }
    }

    fn name(&self, backend: &str, index: u32) -> String {
        // Backend names can be long; a short stable hash keeps the name within 253 characters.
        let backend_hash = &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(backend.as_bytes()))[..10];
        format!("mfar-ledger-{}-{backend_hash}-{index:06}", self.recall_uid)
    }

    /// Creates a segment (`body`: the ConfigMap as JSON); one already there (written before a
    /// restart) is replaced.
    async fn create(&self, name: &str, params: &PostParams, body: &[u8]) -> kube::Result<()> {
        match self.send(self.requests.create(params, body.to_vec())).await {
            Err(kube::Error::Api(s)) if s.code == 409 => self.send(self.requests.replace(name, params, body.to_vec())).await,
            other => other,
        }
    }

    /// Replaces a segment unconditionally (no resourceVersion); one gone meanwhile is created.
    async fn replace(&self, name: &str, params: &PostParams, body: &[u8]) -> kube::Result<()> {
        match self.send(self.requests.replace(name, params, body.to_vec())).await {
            Err(kube::Error::Api(s)) if s.code == 404 => self.send(self.requests.create(params, body.to_vec())).await,
            other => other,
        }
    }

    /// Sends a write; errors are the apiserver's `Status` as `kube::Error::Api`, as from `Api`.
    async fn send(&self, request: std::result::Result<http::Request<Vec<u8>>, kube::core::request::Error>) -> kube::Result<()> {
        self.client.request_text(request.map_err(kube::Error::BuildRequest)?).await.map(drop)
    }

    fn selector(&self, backend: &str) -> String {
        format!("{RECALL_UID_LABEL}={},{BACKEND_LABEL}={}", self.recall_uid, label_value(backend))
    }
}

/// Label values are at most 63 characters; long backend names are cut and hashed.
fn label_value(text: &str) -> String {
    if text.len() <= 63 {
        return text.to_string();
    }
    let hash = &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()))[..10];
    format!("{}-{hash}", &text[..52])
}

#[async_trait]
impl LedgerStore for ConfigMapLedger {
    async fn segments(&self, backend: &str) -> Result<Vec<u32>> {
        let mut indexes: Vec<u32> = Vec::new();
        let mut params = ListParams::default().labels(&self.selector(backend)).limit(500);
        loop {
            let page = self.api.list_metadata(&params).await?;
            indexes.extend(page.items.iter().filter_map(|cm| cm.metadata.labels.as_ref()?.get(SEGMENT_LABEL)?.parse::<u32>().ok()));
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
        indexes.sort_unstable();
        Ok(indexes)
    }

    async fn read(&self, backend: &str, index: u32) -> Result<Segment> {
        let name = self.name(backend, index);
        let cm = self.api.get(&name).await?;
        let bytes = cm
            .binary_data
            .as_ref()
            .and_then(|d| d.get(DATA_KEY))
            .ok_or_else(|| crate::Error::Ledger { name: name.clone(), message: format!("has no {DATA_KEY}") })?;
        decode(&bytes.0).map_err(|e| crate::Error::Ledger { name, message: e.to_string() })
    }

    async fn write(&self, segment: &Segment) -> Result<()> {
        let name = self.name(&segment.backend, segment.index);
        let labels = BTreeMap::from([
            (RECALL_UID_LABEL.to_string(), self.recall_uid.clone()),
            (BACKEND_LABEL.to_string(), label_value(&segment.backend)),
            (SEGMENT_LABEL.to_string(), segment.index.to_string()),
            ("app.kubernetes.io/managed-by".to_string(), "mfa-recall".to_string()),
        ]);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                owner_references: Some(vec![self.owner.clone()]),
                ..Default::default()
            },
            binary_data: Some(BTreeMap::from([(DATA_KEY.to_string(), ByteString(encode(segment)?))])),
            ..Default::default()
        };
        // Plain create and replace, not server-side apply: the apiserver parses an apply body as
        // YAML and diffs managed fields, which for a segment of this size cost it several times
        // the work of storing it. The segment is ours alone, so replacing it whole loses nothing.
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_string()), ..Default::default() };
        let body = serde_json::to_vec(&cm)?;
        let known = self.stored.lock().unwrap().contains(&name);
        let stored = if known { self.replace(&name, &params, &body).await } else { self.create(&name, &params, &body).await };
        stored?;
        self.stored.lock().unwrap().insert(name);
        Ok(())
    }
}
