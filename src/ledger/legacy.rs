//! Ledgers left in ConfigMaps by operators before the ledger had its own resource, brought into
//! it by a person who vouches for them (`mfa-recall ledger import-configmaps`): the operator no
//! longer reads or writes ConfigMaps, and cannot tell a ConfigMap it wrote from a forged one.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::{Api, Client, Resource, ResourceExt};

use super::{LedgerStore, Outcomes, ResourceLedger, Segment, decode};
use crate::api::MfaRecall;
use crate::keys::HmacKey;
use crate::{Error, Result};

const DATA_KEY: &str = "segment.json.gz";
const OUTCOMES_KEY: &str = "outcomes.json.gz";

/// What an import brought over, per backend: segments and users.
#[derive(Debug, Default, PartialEq)]
pub struct Imported {
    pub backends: std::collections::BTreeMap<String, (usize, usize)>,
}

/// Signs the ledger ConfigMaps of `recall` into its own resource under `key`. Refused when the
/// recall has a signed ledger already, so two ledgers are never mixed.
pub async fn import_configmaps(client: Client, recall: &MfaRecall, key: HmacKey) -> Result<Imported> {
    let namespace = recall.namespace().unwrap_or_default();
    let owner = recall.controller_owner_ref(&()).ok_or_else(|| Error::Invalid("the recall has no uid".into()))?;
    let uid = owner.uid.clone();
    let ledger = ResourceLedger::new(client.clone(), &namespace, owner, key);
    for backend in &recall.spec.backends {
        if !ledger.segments(backend).await?.is_empty() {
            return Err(Error::Invalid(format!(
                "recall {namespace}/{} already has a signed ledger for backend {backend}: nothing imported. Only if it is what an import cut short left: kubectl delete recallledgersegments -n {namespace} -l {}={uid}, then import again",
                recall.name_any(),
                super::RECALL_UID_LABEL
            )));
        }
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let listed = config_maps.list(&ListParams::default().labels(&format!("{}={uid},{}", super::RECALL_UID_LABEL, super::SEGMENT_LABEL))).await?;
    let mut segments = Vec::new();
    for cm in &listed.items {
        let name = cm.name_any();
        let mut segment: Segment = decode(data(cm, DATA_KEY)?).map_err(|e| legacy_error(&name, e.to_string()))?;
        if let Some(outcomes) = config_maps.get_opt(&format!("{name}-outcomes")).await? {
            let applied: Outcomes = decode(data(&outcomes, OUTCOMES_KEY)?).map_err(|e| legacy_error(&name, e.to_string()))?;
            segment.apply(applied).map_err(|message| legacy_error(&name, message))?;
        }
        if !recall.spec.backends.contains(&segment.backend) {
            return Err(legacy_error(&name, format!("holds users of backend {}, which the recall does not name: nothing imported", segment.backend)));
        }
        // The operator named each ConfigMap after what it held: one that holds something else
        // was not written by it.
        if name != super::segment_name(&uid, &segment.backend, segment.index) {
            return Err(legacy_error(&name, format!("holds segment {} of backend {}, which the operator never stored under this name: nothing imported", segment.index, segment.backend)));
        }
        segments.push(segment);
    }
    segments.sort_by(|a, b| (&a.backend, a.index).cmp(&(&b.backend, b.index)));
    // Each backend's segments were written 0, 1, 2, ...: a gap is a segment missing.
    let mut expected: std::collections::BTreeMap<&str, u32> = Default::default();
    for segment in &segments {
        let next = expected.entry(&segment.backend).or_default();
        if segment.index != *next {
            return Err(Error::Ledger { name: format!("ConfigMaps of backend {}", segment.backend), message: format!("segment {next} is missing: nothing imported") });
        }
        *next += 1;
    }
    let mut imported = Imported::default();
    for segment in &segments {
        // Written through the operator's own path: re-encoded, so what the ledger no longer
        // keeps (where enrollments came from) is left behind.
        ledger.write(segment).await?;
        let entry = imported.backends.entry(segment.backend.clone()).or_default();
        entry.0 += 1;
        entry.1 += segment.users.len();
    }
    Ok(imported)
}

fn data<'a>(cm: &'a ConfigMap, key: &str) -> Result<&'a [u8]> {
    cm.binary_data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.as_slice()).ok_or_else(|| legacy_error(&cm.name_any(), format!("has no {key}")))
}

fn legacy_error(name: &str, message: String) -> Error {
    Error::Ledger { name: format!("ConfigMap {name}"), message }
}
