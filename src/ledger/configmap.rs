//! Segments stored as ConfigMaps owned by the MfaRecall, gzip-compressed, so a rescheduled pod
//! continues without a PersistentVolume. Labelled with the recall's UID so a recreated recall of
//! the same name never inherits an old ledger.
//!
//! A segment is written whole once, with its users' snapshots, before any of them is touched.
//! What changes afterwards (states, notes, re-enrollments, suspensions) goes to a second, small
//! ConfigMap of outcomes, so recording a finished segment does not make the apiserver store its
//! snapshots (most of its size) again; reading a segment applies its outcomes when there are any.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

use super::{LedgerStore, Outcomes, Segment, decode, encode};
use crate::Result;

pub const RECALL_UID_LABEL: &str = "mfarecall.io/recall-uid";
pub const BACKEND_LABEL: &str = "mfarecall.io/backend";
pub const SEGMENT_LABEL: &str = "mfarecall.io/segment";
/// On a segment's outcomes, in place of SEGMENT_LABEL (so listing the segments passes them by).
pub const OUTCOMES_OF_LABEL: &str = "mfarecall.io/outcomes-of";
const DATA_KEY: &str = "segment.json.gz";
const OUTCOMES_KEY: &str = "outcomes.json.gz";
const FIELD_MANAGER: &str = "mfa-recall-ledger";

pub struct ConfigMapLedger {
    api: Api<ConfigMap>,
    /// Writes go through these rather than `api`, so the apiserver's answer (the ConfigMap again,
    /// base64) is not decoded: a 2xx is all a write needs to know.
    client: Client,
    requests: kube::core::Request,
    recall_uid: String,
    owner: OwnerReference,
    /// ConfigMaps known to exist (written or read by this process): a segment here gets its
    /// outcomes written, an outcomes ConfigMap here is replaced without trying to create it.
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

    fn known(&self, name: &str) -> bool {
        self.stored.lock().unwrap().contains(name)
    }

    /// The ConfigMap `name` holding `data` under `key`, labelled `label` = the segment's index.
    fn config_map(&self, name: &str, segment: &Segment, label: &str, key: &str, data: Vec<u8>) -> ConfigMap {
        let labels = BTreeMap::from([
            (RECALL_UID_LABEL.to_string(), self.recall_uid.clone()),
            (BACKEND_LABEL.to_string(), label_value(&segment.backend)),
            (label.to_string(), segment.index.to_string()),
            ("app.kubernetes.io/managed-by".to_string(), "mfa-recall".to_string()),
        ]);
        ConfigMap {
            metadata: ObjectMeta { name: Some(name.to_string()), labels: Some(labels), owner_references: Some(vec![self.owner.clone()]), ..Default::default() },
            binary_data: Some(BTreeMap::from([(key.to_string(), ByteString(data))])),
            ..Default::default()
        }
    }

    /// Stores `cm` as `name`: replaced when known to exist, else created. True when it replaced
    /// one this process did not know of (written before a restart). Plain create and replace,
    /// not server-side apply: the apiserver parses an apply body as YAML and diffs managed
    /// fields, which for a segment cost it several times the work of storing it. The objects
    /// are ours alone, so replacing one whole loses nothing.
    async fn put(&self, name: &str, cm: &ConfigMap) -> Result<bool> {
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_string()), ..Default::default() };
        let body = serde_json::to_vec(cm)?;
        let replaced_unknown = if self.known(name) {
            // Replaced unconditionally (no resourceVersion); one gone meanwhile is created.
            match self.send(self.requests.replace(name, &params, body.clone())).await {
                Err(kube::Error::Api(s)) if s.code == 404 => self.send(self.requests.create(&params, body)).await?,
                other => other?,
            }
            false
        } else {
            match self.send(self.requests.create(&params, body.clone())).await {
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    self.send(self.requests.replace(name, &params, body)).await?;
                    true
                }
                other => {
                    other?;
                    false
                }
            }
        };
        self.stored.lock().unwrap().insert(name.to_string());
        Ok(replaced_unknown)
    }

    /// Sends a write; errors are the apiserver's `Status` as `kube::Error::Api`, as from `Api`.
    async fn send(&self, request: std::result::Result<http::Request<Vec<u8>>, kube::core::request::Error>) -> kube::Result<()> {
        self.client.request_text(request.map_err(kube::Error::BuildRequest)?).await.map(drop)
    }

    /// The data under `key` of a ledger ConfigMap.
    fn data<'a>(cm: &'a ConfigMap, name: &str, key: &str) -> Result<&'a [u8]> {
        cm.binary_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
            .ok_or_else(|| ledger_error(name, format!("has no {key}")))
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
        let mut segment: Segment = decode(Self::data(&cm, &name, DATA_KEY)?).map_err(|e| ledger_error(&name, e.to_string()))?;
        let outcomes_name = outcomes_name(&name);
        if let Some(cm) = self.api.get_opt(&outcomes_name).await? {
            let outcomes: Outcomes = decode(Self::data(&cm, &outcomes_name, OUTCOMES_KEY)?).map_err(|e| ledger_error(&outcomes_name, e.to_string()))?;
            segment.apply(outcomes).map_err(|message| ledger_error(&outcomes_name, message))?;
            self.stored.lock().unwrap().insert(outcomes_name);
        }
        self.stored.lock().unwrap().insert(name);
        Ok(segment)
    }

    async fn write(&self, segment: &Segment) -> Result<()> {
        let name = self.name(&segment.backend, segment.index);
        if !self.known(&name) {
            let whole = self.config_map(&name, segment, SEGMENT_LABEL, DATA_KEY, encode(segment)?);
            if !self.put(&name, &whole).await? {
                return Ok(());
            }
            // A segment of this index was there already: outcomes recorded for that one must
            // not be applied to this one, so this one's are written too.
        }
        let outcomes_name = outcomes_name(&name);
        let outcomes = self.config_map(&outcomes_name, segment, OUTCOMES_OF_LABEL, OUTCOMES_KEY, encode(&segment.outcomes())?);
        self.put(&outcomes_name, &outcomes).await?;
        Ok(())
    }
}

/// A ledger ConfigMap that cannot be used as stored.
fn ledger_error(name: &str, message: String) -> crate::Error {
    crate::Error::Ledger { name: name.to_string(), message }
}

fn outcomes_name(segment_name: &str) -> String {
    format!("{segment_name}-outcomes")
}
