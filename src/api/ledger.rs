use kube::CustomResource;
use k8s_openapi::ByteString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One part of one segment of a recall's ledger: the operator's own record of what it did, read
/// when a recall resumes. Written and read by the operator only, signed with its ledger key: an
/// object edited or created by anyone else stops its recall, and nothing it names is revoked.
/// Not part of the built-in view and edit roles.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "mfarecall.io",
    version = "v1alpha1",
    kind = "RecallLedgerSegment",
    namespaced,
    doc = "Part of an MfaRecall's ledger, written by the operator for crash-safe resume. Do not edit: an edited segment stops its recall.",
    printcolumn(name = "Backend", type_ = "string", json_path = ".spec.backend"),
    printcolumn(name = "Index", type_ = "integer", json_path = ".spec.index"),
    printcolumn(name = "Part", type_ = "string", json_path = ".spec.part"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct RecallLedgerSegmentSpec {
    /// The UID of the MfaRecall this segment belongs to.
    pub recall_uid: String,
    /// The IdentityBackend whose users the segment holds.
    pub backend: String,
    /// The segment's place in the backend's ledger, from 0.
    pub index: u32,
    /// Users (written once) or Outcomes (rewritten as the users are worked on).
    pub part: LedgerPart,
    /// The part as gzip-compressed JSON.
    #[schemars(with = "String", extend("format" = "byte"))]
    pub data: ByteString,
    /// HMAC-SHA-256 in hex under the operator's ledger key, over the recall UID, backend, index,
    /// part and data.
    pub mac: String,
}

/// What a ledger object holds of its segment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LedgerPart {
    /// The users with what each held before anything was touched; written once.
    Users,
    /// What was done to those users so far; rewritten as they are worked on.
    Outcomes,
    /// The backend's re-enrollment watch: where its event stream goes on (index 0).
    Watch,
    /// Users who said, from the notice of a new factor, that it was not them (index 0).
    Reports,
}

impl LedgerPart {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerPart::Users => "Users",
            LedgerPart::Outcomes => "Outcomes",
            LedgerPart::Watch => "Watch",
            LedgerPart::Reports => "Reports",
        }
    }
}
