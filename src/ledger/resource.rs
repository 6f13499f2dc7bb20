//! Segments stored as RecallLedgerSegment objects owned by the MfaRecall, gzip-compressed, so a
//! rescheduled pod continues without a PersistentVolume. Labelled with the recall's UID so a
//! recreated recall of the same name never inherits an old ledger.
//!
//! A segment is written whole once, with its users' snapshots, before any of them is touched.
//! What changes afterwards (states, notes, re-enrollments, suspensions) goes to a second, small
//! object of outcomes, so recording a finished segment does not make the apiserver store its
//! snapshots (most of its size) again; reading a segment applies its outcomes when there are any.
//!
//! Each object carries an HMAC under the operator's ledger key over what it is (recall, backend,
//! index, part) and what it holds. Whoever can write these objects without the key can neither
//! forge one nor move one to another recall or place: reading it fails, and the recall stops
//! with nothing the object names revoked.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use hmac::Mac;
use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use super::{LedgerStore, Outcomes, Segment, decode, decode_at_most, encode};
use crate::Result;
use crate::api::{LedgerPart, RecallLedgerSegment, RecallLedgerSegmentSpec};
use crate::keys::HmacKey;
use crate::watch::{NotMe, WatchState};

pub const RECALL_UID_LABEL: &str = "mfarecall.io/recall-uid";
pub const BACKEND_LABEL: &str = "mfarecall.io/backend";
pub const SEGMENT_LABEL: &str = "mfarecall.io/segment";
/// On a segment's outcomes, in place of SEGMENT_LABEL (so listing the segments passes them by).
pub const OUTCOMES_OF_LABEL: &str = "mfarecall.io/outcomes-of";
/// On a backend's watch state, in place of SEGMENT_LABEL.
pub const WATCH_LABEL: &str = "mfarecall.io/watch";
pub const REPORTS_LABEL: &str = "mfarecall.io/reports";
const FIELD_MANAGER: &str = "mfa-recall-ledger";
/// Names the ledger key in errors.
pub const KEY_NAME: &str = "the ledger key";

pub struct ResourceLedger {
    api: Api<RecallLedgerSegment>,
    /// Writes go through these rather than `api`, so the apiserver's answer (the object again,
    /// base64) is not decoded: a 2xx is all a write needs to know.
    client: Client,
    requests: kube::core::Request,
    recall_uid: String,
    owner: OwnerReference,
    key: HmacKey,
    /// Objects known to exist (written or read by this process): a segment here gets its
    /// outcomes written, an outcomes object here is replaced without trying to create it.
    stored: Mutex<HashSet<String>>,
}

impl ResourceLedger {
    pub fn new(client: Client, namespace: &str, owner: OwnerReference, key: HmacKey) -> Self {
        let requests = kube::core::Request::new(<RecallLedgerSegment as kube::Resource>::url_path(&(), Some(namespace)));
        Self { api: Api::namespaced(client.clone(), namespace), client, requests, recall_uid: owner.uid.clone(), owner, key, stored: Mutex::default() }
    }

    fn name(&self, backend: &str, index: u32) -> String {
        segment_name(&self.recall_uid, backend, index)
    }

    fn known(&self, name: &str) -> bool {
        self.stored.lock().unwrap().contains(name)
    }

    /// The object `name` holding `part` of segment `index` of `backend`, signed.
    fn object(&self, name: &str, backend: &str, index: u32, part: LedgerPart, data: Vec<u8>) -> RecallLedgerSegment {
        let label = match part {
            LedgerPart::Users => SEGMENT_LABEL,
            LedgerPart::Outcomes => OUTCOMES_OF_LABEL,
            LedgerPart::Watch => WATCH_LABEL,
            LedgerPart::Reports => REPORTS_LABEL,
        };
        let labels = BTreeMap::from([
            (RECALL_UID_LABEL.to_string(), self.recall_uid.clone()),
            (BACKEND_LABEL.to_string(), label_value(backend)),
            (label.to_string(), index.to_string()),
            ("app.kubernetes.io/managed-by".to_string(), "mfa-recall".to_string()),
        ]);
        let mac = hex::encode(self.mac(backend, index, part, &data).finalize().into_bytes());
        let spec = RecallLedgerSegmentSpec { recall_uid: self.recall_uid.clone(), backend: backend.to_string(), index, part, data: ByteString(data), mac };
        RecallLedgerSegment {
            metadata: ObjectMeta { name: Some(name.to_string()), labels: Some(labels), owner_references: Some(vec![self.owner.clone()]), ..Default::default() },
            spec,
        }
    }

    /// The HMAC over what an object is and holds, each field length-prefixed so no two
    /// different objects feed the same bytes.
    fn mac(&self, backend: &str, index: u32, part: LedgerPart, data: &[u8]) -> hmac::Hmac<sha2::Sha256> {
        let mut mac = self.key.mac();
        for field in [b"mfa-recall ledger v1".as_slice(), self.recall_uid.as_bytes(), backend.as_bytes(), index.to_string().as_bytes(), part.as_str().as_bytes(), data] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac
    }

    /// The data of `object` if it is the `part` of segment `index` of `backend` of this recall,
    /// signed under this operator's key; else why not.
    fn verified<'a>(&self, object: &'a RecallLedgerSegment, backend: &str, index: u32, part: LedgerPart) -> std::result::Result<&'a [u8], String> {
        let data = object.spec.data.0.as_slice();
        let given = hex::decode(&object.spec.mac).unwrap_or_default();
        // verify_slice compares in constant time.
        if self.mac(backend, index, part, data).verify_slice(&given).is_err() {
            return Err(format!(
                "its HMAC does not match what it holds as the {} of segment {index} of backend {backend} of this recall: it was edited, made by someone other than this operator, copied from another place, or written under another ledger key",
                part.as_str().to_lowercase()
            ));
        }
        Ok(data)
    }

    /// Stores `object` as `name`: overwritten when known to exist, else created. True when it
    /// overwrote one this process did not know of (written before a restart). Create and a
    /// merge patch of the whole object, not server-side apply: the apiserver parses an apply
    /// body as YAML and diffs managed fields, which for a segment cost it several times the work
    /// of storing it. Not a replace either: a custom resource is replaced only at a known
    /// resourceVersion, and these objects are ours alone, so overwriting one whole loses nothing.
    async fn put(&self, name: &str, object: &RecallLedgerSegment) -> Result<bool> {
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_string()), ..Default::default() };
        let patch_params = PatchParams { field_manager: Some(FIELD_MANAGER.to_string()), ..Default::default() };
        let overwrite = || self.requests.patch(name, &patch_params, &Patch::Merge(object));
        let body = serde_json::to_vec(object)?;
        let replaced_unknown = if self.known(name) {
            // One gone meanwhile is created.
            match self.send(overwrite()).await {
                Err(kube::Error::Api(s)) if s.code == 404 => self.send(self.requests.create(&params, body)).await?,
                other => other?,
            }
            false
        } else {
            match self.send(self.requests.create(&params, body)).await {
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    self.send(overwrite()).await?;
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

    fn selector(&self, backend: &str) -> String {
        format!("{RECALL_UID_LABEL}={},{BACKEND_LABEL}={}", self.recall_uid, label_value(backend))
    }
}

/// The name of segment `index` of `backend` in the ledger of recall `recall_uid`; its outcomes
/// are `<name>-outcomes`.
pub fn segment_name(recall_uid: &str, backend: &str, index: u32) -> String {
    // Backend names can be long; a short stable hash keeps the name within 253 characters.
    let backend_hash = &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(backend.as_bytes()))[..10];
    format!("mfar-ledger-{recall_uid}-{backend_hash}-{index:06}")
}

/// Label values are at most 63 characters; long backend names are cut and hashed.
fn label_value(text: &str) -> String {
    if text.len() <= 63 {
        return text.to_string();
    }
    let hash = &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()))[..10];
    // Names of IdentityBackends are ASCII; a name read from elsewhere might not cut at 52.
    format!("{}-{hash}", text.get(..52).unwrap_or("backend"))
}

#[async_trait]
impl LedgerStore for ResourceLedger {
    async fn segments(&self, backend: &str) -> Result<Vec<u32>> {
        let mut indexes: Vec<u32> = Vec::new();
        let mut params = ListParams::default().labels(&self.selector(backend)).limit(500);
        loop {
            let page = self.api.list_metadata(&params).await?;
            // By label, and only under the name the index gives: an object that merely carries
            // the labels is never read.
            let index = |o: &kube::core::PartialObjectMeta<RecallLedgerSegment>| o.metadata.labels.as_ref()?.get(SEGMENT_LABEL)?.parse::<u32>().ok();
            indexes.extend(page.items.iter().filter_map(|o| index(o).filter(|i| o.metadata.name.as_deref() == Some(&self.name(backend, *i)))));
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
        indexes.sort_unstable();
        // Segments are stored 0, 1, 2, ...: a gap is one deleted, whose users a resume would
        // list again as untouched.
        if let Some((expected, _)) = indexes.iter().enumerate().find(|(expected, index)| *expected as u32 != **index) {
            return Err(rejected(&self.name(backend, expected as u32), "is missing while later segments of its backend are there: it was deleted".to_string()));
        }
        Ok(indexes)
    }

    async fn read(&self, backend: &str, index: u32) -> Result<Segment> {
        let name = self.name(backend, index);
        let object = self.api.get(&name).await?;
        let data = self.verified(&object, backend, index, LedgerPart::Users).map_err(|why| rejected(&name, why))?;
        let mut segment: Segment = decode(data).map_err(|e| rejected(&name, format!("signed, but does not decode: {e}")))?;
        let outcomes_name = outcomes_name(&name);
        if let Some(object) = self.api.get_opt(&outcomes_name).await? {
            let data = self.verified(&object, backend, index, LedgerPart::Outcomes).map_err(|why| rejected(&outcomes_name, why))?;
            let outcomes: Outcomes = decode(data).map_err(|e| rejected(&outcomes_name, format!("signed, but does not decode: {e}")))?;
            segment.apply(outcomes).map_err(|message| rejected(&outcomes_name, message))?;
            self.stored.lock().unwrap().insert(outcomes_name);
        }
        self.stored.lock().unwrap().insert(name);
        Ok(segment)
    }

    async fn write(&self, segment: &Segment) -> Result<()> {
        let name = self.name(&segment.backend, segment.index);
        if !self.known(&name) {
            let whole = self.object(&name, &segment.backend, segment.index, LedgerPart::Users, encode(segment)?);
            if !self.put(&name, &whole).await? {
                return Ok(());
            }
            // A segment of this index was there already: outcomes recorded for that one must
            // not be applied to this one, so this one's are written too.
        }
        let outcomes_name = outcomes_name(&name);
        let outcomes = self.object(&outcomes_name, &segment.backend, segment.index, LedgerPart::Outcomes, encode(&segment.outcomes())?);
        self.put(&outcomes_name, &outcomes).await?;
        Ok(())
    }

    async fn read_watch(&self, backend: &str) -> Result<Option<WatchState>> {
        let name = watch_name(&self.name(backend, 0));
        let Some(object) = self.api.get_opt(&name).await? else { return Ok(None) };
        let data = self.verified(&object, backend, 0, LedgerPart::Watch).map_err(|why| rejected(&name, why))?;
        let state: WatchState = decode(data).map_err(|e| rejected(&name, format!("signed, but does not decode: {e}")))?;
        if state.backend != backend {
            return Err(rejected(&name, format!("holds the watch of backend {}", state.backend)));
        }
        self.stored.lock().unwrap().insert(name);
        Ok(Some(state))
    }

    async fn write_watch(&self, state: &WatchState) -> Result<()> {
        let name = watch_name(&self.name(&state.backend, 0));
        let object = self.object(&name, &state.backend, 0, LedgerPart::Watch, encode(state)?);
        self.put(&name, &object).await?;
        Ok(())
    }

    fn pseudonym(&self, value: &str) -> String {
        super::pseudonym(&self.key, value)
    }

    async fn read_reports(&self, backend: &str) -> Result<Vec<NotMe>> {
        let name = format!("{}-reports", self.name(backend, 0));
        let Some(object) = self.api.get_opt(&name).await? else { return Ok(Vec::new()) };
        let data = self.verified(&object, backend, 0, LedgerPart::Reports).map_err(|why| rejected(&name, why))?;
        let reports: Vec<NotMe> = decode(data).map_err(|e| rejected(&name, format!("signed, but does not decode: {e}")))?;
        self.stored.lock().unwrap().insert(name);
        Ok(reports.into_iter().filter(|r| r.backend == backend).collect())
    }

    async fn add_report(&self, report: &NotMe) -> Result<bool> {
        // The not-me endpoint is this object's only writer, one report at a time.
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _turn = ONE_AT_A_TIME.lock().await;
        let mut reports = self.read_reports(&report.backend).await?;
        // One report per user: the same link again, or a reload, adds nothing (and the object
        // grows by recalled users at most).
        if reports.iter().any(|r| r.user_id == report.user_id) {
            return Ok(false);
        }
        reports.push(report.clone());
        let name = format!("{}-reports", self.name(&report.backend, 0));
        let object = self.object(&name, &report.backend, 0, LedgerPart::Reports, encode(&reports)?);
        self.put(&name, &object).await?;
        Ok(true)
    }
}

/// The name of a backend's watch state, beside its first segment's.
fn watch_name(first_segment_name: &str) -> String {
    format!("{first_segment_name}-watch")
}

/// Segment `index` of `backend` of a recall as its objects hold it, with its outcomes applied,
/// WITHOUT checking their HMACs (that needs the ledger key): for showing people who may read
/// these objects where a recall stands (the console), never for acting on. None when the
/// segment is not there.
pub async fn read_unchecked(api: &Api<RecallLedgerSegment>, recall_uid: &str, backend: &str, index: u32) -> Result<Option<Segment>> {
    // Far above what the operator writes in one object; unsigned bytes are not expanded past it.
    const MAX_JSON: u64 = 16 << 20;
    let name = segment_name(recall_uid, backend, index);
    let Some(object) = api.get_opt(&name).await? else { return Ok(None) };
    let mut segment: Segment = decode_at_most(&object.spec.data.0, MAX_JSON).map_err(|e| rejected(&name, format!("does not decode: {e}")))?;
    if let Some(outcomes) = api.get_opt(&outcomes_name(&name)).await? {
        let outcomes: Outcomes = decode_at_most(&outcomes.spec.data.0, MAX_JSON).map_err(|e| rejected(&name, format!("its outcomes do not decode: {e}")))?;
        segment.apply(outcomes).map_err(|why| rejected(&name, why))?;
    }
    Ok(Some(segment))
}

/// A ledger object this operator cannot vouch for.
fn rejected(name: &str, why: String) -> crate::Error {
    crate::Error::LedgerRejected { name: name.to_string(), why }
}

fn outcomes_name(segment_name: &str) -> String {
    format!("{segment_name}-outcomes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{UserRecord, UserState};
    use crate::backends::UserRef;

    const KEY: &[u8] = b"ledger key of the resource tests, 32+ bytes";

    /// A ledger whose client is never called: signing and checking need no apiserver.
    fn ledger(recall_uid: &str, key: &[u8]) -> ResourceLedger {
        let (service, _handle) = tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let owner = OwnerReference { api_version: "mfarecall.io/v1alpha1".into(), kind: "MfaRecall".into(), name: "r".into(), uid: recall_uid.into(), ..Default::default() };
        ResourceLedger::new(Client::new(service, "default"), "ns", owner, HmacKey::new(key, KEY_NAME).unwrap())
    }

    fn segment(index: u32) -> Segment {
        let users = ["Alice", "bob"].map(|name| UserRecord::planned(UserRef { id: format!("id-{name}"), username: name.into() })).to_vec();
        Segment::fresh("corp-okta", index, None, users)
    }

    fn signed(ledger: &ResourceLedger, segment: &Segment, part: LedgerPart) -> RecallLedgerSegment {
        let data = match part {
            LedgerPart::Users => encode(segment).unwrap(),
            LedgerPart::Outcomes | LedgerPart::Watch | LedgerPart::Reports => encode(&segment.outcomes()).unwrap(),
        };
        ledger.object("name", &segment.backend, segment.index, part, data)
    }

    #[tokio::test]
    async fn a_segment_signed_by_this_operator_reads_back() {
        let ledger = ledger("uid-1", KEY);
        for part in [LedgerPart::Users, LedgerPart::Outcomes] {
            let object = signed(&ledger, &segment(3), part);
            assert!(ledger.verified(&object, "corp-okta", 3, part).is_ok(), "{part:?}");
        }
    }

    #[tokio::test]
    async fn an_edited_moved_or_foreign_segment_is_refused() {
        let ours = ledger("uid-1", KEY);
        let object = signed(&ours, &segment(3), LedgerPart::Users);
        let refused = |object: &RecallLedgerSegment, backend: &str, index: u32, part: LedgerPart| ours.verified(object, backend, index, part).is_err();

        // Its users edited, the MAC kept.
        let mut edited = object.clone();
        let mut other = segment(3);
        other.users[1].state = UserState::Planned;
        other.users[1].user.id = "id-break-glass".into();
        edited.spec.data = ByteString(encode(&other).unwrap());
        assert!(refused(&edited, "corp-okta", 3, LedgerPart::Users), "edited users");

        // Read as another place: index, backend or part.
        assert!(refused(&object, "corp-okta", 4, LedgerPart::Users), "another index");
        assert!(refused(&object, "corp-entra", 3, LedgerPart::Users), "another backend");
        assert!(refused(&object, "corp-okta", 3, LedgerPart::Outcomes), "another part");

        // Signed for another recall, or under another key, or with no MAC worth the name.
        let foreign = signed(&ledger("uid-2", KEY), &segment(3), LedgerPart::Users);
        assert!(refused(&foreign, "corp-okta", 3, LedgerPart::Users), "another recall");
        let other_key = signed(&ledger("uid-1", b"another ledger key, also 32+ bytes long"), &segment(3), LedgerPart::Users);
        assert!(refused(&other_key, "corp-okta", 3, LedgerPart::Users), "another key");
        for mac in ["", "not hex", &object.spec.mac[..62]] {
            let mut bad = object.clone();
            bad.spec.mac = mac.to_string();
            assert!(refused(&bad, "corp-okta", 3, LedgerPart::Users), "mac {mac:?}");
        }
        assert!(!refused(&object, "corp-okta", 3, LedgerPart::Users), "the original still reads");
    }
}
