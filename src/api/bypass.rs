use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A temporary way back in for one user of one recall (docs/bypass.md): requested by one person,
/// approved by another, issued by the provider's own mechanism, delivered to the user's address on
/// file, and withdrawn at its lifetime's end or when revoked. The admission policy
/// crds/mfabypass-dual-control.yaml makes requestedBy, approvedBy and revokedBy the names
/// Kubernetes authenticated each change with, and refuses an approval by the requester.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mfarecall.io",
    version = "v1alpha1",
    kind = "MfaBypass",
    namespaced,
    shortname = "mfab",
    category = "mfa",
    status = "MfaBypassStatus",
    doc = "A time-limited bypass for one recalled user, under dual control: one person requests it, another approves it.",
    printcolumn(name = "Recall", type_ = "string", json_path = ".spec.recall"),
    printcolumn(name = "User", type_ = "string", json_path = ".spec.user"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Requested-By", type_ = "string", json_path = ".spec.requestedBy"),
    printcolumn(name = "Approved-By", type_ = "string", json_path = ".spec.approvedBy"),
    printcolumn(name = "Expires", type_ = "date", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new(
    "self.recall == oldSelf.recall && self.backend == oldSelf.backend && self.user == oldSelf.user && self.lifetime == oldSelf.lifetime && self.reason == oldSelf.reason && self.requestedBy == oldSelf.requestedBy"
).message("recall, backend, user, lifetime, reason and requestedBy are fixed once a bypass is requested: create a new MfaBypass instead (approvedBy and revoked can change)"))]
#[x_kube(validation = Rule::new("!has(oldSelf.approvedBy) || (has(self.approvedBy) && self.approvedBy == oldSelf.approvedBy)").message("approvedBy is set once and never changed: it records who approved"))]
#[x_kube(validation = Rule::new("!oldSelf.revoked || self.revoked").message("a revoked bypass stays revoked: request a new one"))]
#[x_kube(validation = Rule::new("!has(oldSelf.revokedBy) || (has(self.revokedBy) && self.revokedBy == oldSelf.revokedBy)").message("revokedBy is set once and never changed: it records who revoked"))]
#[x_kube(validation = Rule::new("self.revoked == has(self.revokedBy)").message("set revoked: true and revokedBy (your Kubernetes user name) together"))]
#[serde(rename_all = "camelCase")]
pub struct MfaBypassSpec {
    /// The MfaRecall in this namespace that recalled the user.
    #[schemars(length(min = 1, max = 253))]
    pub recall: String,
    /// The recall's IdentityBackend the bypass is issued on.
    #[schemars(length(min = 1, max = 253))]
    pub backend: String,
    /// The recalled user, as the recall's report names them (username or id).
    #[schemars(length(min = 1, max = 512))]
    pub user: String,
    /// How long the bypass works once issued, such as 30m or 2h: no longer than the operator's --max-bypass-lifetime, and within what the provider allows (its capabilities say).
    #[serde(default = "default_lifetime")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?$') && size(self) > 0 && duration(self) >= duration('1m') && duration(self) <= duration('24h')").message("lifetime must be whole hours and minutes from 1m to 24h, such as 30m or 1h30m"))]
    pub lifetime: String,
    /// Why, for the audit trail (for example: user verified by video call, ticket 4711).
    #[x_kube(validation = Rule::new("self.matches('\\\\S')").message("reason must say why the user needs a bypass, for example how they were verified"))]
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// Your Kubernetes user name (kubectl auth whoami): the admission policy checks it.
    #[schemars(length(min = 1, max = 512))]
    pub requested_by: String,
    /// Set by a second person to approve: their Kubernetes user name, never the requester's. The bypass is issued once this is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub approved_by: Option<String>,
    /// Set to true to withdraw the bypass at the provider now (with revokedBy).
    #[serde(default)]
    pub revoked: bool,
    /// Who revoked it: your Kubernetes user name, set with revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub revoked_by: Option<String>,
}

fn default_lifetime() -> String {
    "1h".into()
}

/// Where a bypass is.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BypassPhase {
    /// Requested; waiting for a second person to set approvedBy.
    #[default]
    AwaitingApproval,
    /// Approved; the provider is being asked for it and the user told.
    Issuing,
    /// Issued and delivered to the user; works until expiresAt (or its one use).
    Active,
    /// The user signed in with it (where the provider tells); what is left of it was withdrawn.
    Used,
    /// Its lifetime ended; withdrawn at the provider where it does not end by itself.
    Expired,
    /// Withdrawn at the provider on request (spec.revoked).
    Revoked,
    /// Could not be issued or delivered; the message says why and what to change. Nothing usable was left at the provider.
    Failed,
    /// The backend's provider has no temporary bypass this operator can issue; the message says what it has instead.
    Unsupported,
}

impl BypassPhase {
    /// Nothing more happens to a bypass in this phase.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Used | Self::Expired | Self::Revoked | Self::Failed | Self::Unsupported)
    }
}

/// What became of a bypass. Never holds the pass, code or link itself.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MfaBypassStatus {
    #[serde(default)]
    pub phase: BypassPhase,
    /// What the provider issued, for example "Entra Temporary Access Pass, usable once".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<String>,
    /// The provider's id of the user, as the recall's ledger has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The user's name at the provider, as the recall's ledger has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// When the operator asked the provider for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<jiff::Timestamp>,
    /// When it stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<jiff::Timestamp>,
    /// When the operator saw it used (checked every 15 seconds while it works).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<jiff::Timestamp>,
    /// When it stopped working: used, expired, revoked, or withdrawn after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<jiff::Timestamp>,
    /// What tells the issued one apart at the provider where it needs telling (Google: a fingerprint of the code set, which does not reveal the codes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Where it went: the user's address on file, partly masked, or the provider's own mail to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_to: Option<String>,
    /// What happened last, and what to do where something failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
