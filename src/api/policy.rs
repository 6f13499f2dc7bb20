use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{Anomalies, Exclusions, FactorKind, Notifications, ReEnrollment};

/// When a recall starts by itself (docs/policies.md): the signals a policy hears, a CEL condition
/// over each, and the MfaRecall it creates, with guard rails: one recall per incident within the
/// cooldown, and at most so many an hour.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mfarecall.io",
    version = "v1alpha1",
    kind = "MfaRecallPolicy",
    namespaced,
    shortname = "mfarp",
    category = "mfa",
    status = "MfaRecallPolicyStatus",
    doc = "A policy that starts MFA recalls from signals (alerts, signed webhooks), with a cooldown per incident and a cap per hour.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Signals", type_ = "integer", json_path = ".status.signals"),
    printcolumn(name = "Recalls", type_ = "integer", json_path = ".status.recallsCreated"),
    printcolumn(name = "Last-Recall", type_ = "string", json_path = ".status.lastRecall"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MfaRecallPolicySpec {
    /// Where signals come from. Each source listens at a path of its own on the operator's signals port, listed in status.endpoints.
    pub signals: SignalSources,
    /// A CEL expression over `signal` that must be true for a recall to start, for example `signal.labels.severity == "critical"`. The signal has source, status (firing or resolved), fingerprint, labels, annotations (maps of strings), subjects (the users it names) and summary. A resolved signal never starts a recall. Default: every firing signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub condition: Option<String>,
    /// A CEL expression over `signal` giving the string one incident is known by: a second signal with the same key within the cooldown starts nothing. Default: `signal.fingerprint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub dedupe_by: Option<String>,
    /// How long after a recall a signal of the same incident starts nothing, as a duration from 1m to 720h (default 1h).
    #[serde(default = "default_cooldown")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?$') && size(self) > 0 && duration(self) >= duration('1m') && duration(self) <= duration('720h')").message("cooldown must be whole hours and minutes from 1m to 720h, such as 1h or 30m"))]
    pub cooldown: String,
    /// The most recalls this policy starts in any hour; signals past it are refused (capReached) and counted (default 3).
    #[serde(default = "default_max_per_hour")]
    #[schemars(range(min = 1, max = 100))]
    pub max_recalls_per_hour: i32,
    /// The MfaRecall a matching signal creates.
    pub template: RecallTemplate,
    /// Hear and count signals but start nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

fn default_cooldown() -> String {
    "1h".into()
}

fn default_max_per_hour() -> i32 {
    3
}

/// The receivers a policy listens on; at least one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.alertmanager) || has(self.webhook) || has(self.sharedSignals) || has(self.oktaEventHook)").message("signals must name at least one source: alertmanager, webhook, sharedSignals or oktaEventHook"))]
#[serde(rename_all = "camelCase")]
pub struct SignalSources {
    /// Prometheus Alertmanager's webhook (payload version 4), each alert one signal, authenticated by a bearer token (the receiver's http_config.authorization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<AlertmanagerSource>,
    /// A generic JSON webhook signed with HMAC-SHA256 over "<X-Timestamp>.<body>" in X-Signature (sha256=<hex>), refused once older than five minutes or seen before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSource>,
    /// An OpenID Shared Signals transmitter: Security Event Tokens signed with its keys, pushed to this receiver (RFC 8935) and/or polled from it (RFC 8936). CAEP session-revoked and credential-change and RISC credential-compromise and account-disabled are signals with labels event (the event's name), issuer and the event's own text fields (credential_type, change_type, reason, ...), and the users their subject names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_signals: Option<SharedSignalsSource>,
    /// An Okta event hook: each System Log event it delivers is a signal with labels eventType, severity and outcome, naming the users among its targets (or its actor, when no user is a target). The hook's one-time verification is answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub okta_event_hook: Option<OktaEventHookSource>,
}

/// An Okta event hook as a source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OktaEventHookSource {
    /// The Secret whose key `authorization` holds the hook's authentication secret, which Okta sends in the header named by header (at least 32 characters).
    pub authorization_secret_ref: SignalSecretRef,
    /// The header Okta sends the secret in: the hook's Authentication field (default Authorization).
    #[serde(default = "default_okta_header")]
    #[schemars(length(min = 1, max = 256))]
    pub header: String,
}

fn default_okta_header() -> String {
    "Authorization".into()
}

/// A Shared Signals transmitter as a source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.push) || has(self.poll)").message("sharedSignals needs push, poll or both"))]
#[serde(rename_all = "camelCase")]
pub struct SharedSignalsSource {
    /// The transmitter's issuer: every SET's iss must equal it. Its keys are found from <issuer>/.well-known/ssf-configuration unless jwksUri is given. https, or http to loopback.
    #[schemars(length(min = 1, max = 2048))]
    pub issuer: String,
    /// The audience this receiver was registered with: every SET's aud must name it.
    #[schemars(length(min = 1, max = 2048))]
    pub audience: String,
    /// Where the transmitter's signing keys (JWKS) are; default: the jwks_uri of its configuration. https, or http to loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub jwks_uri: Option<String>,
    /// Push delivery: the transmitter POSTs each SET to this policy's ssf endpoint (status.endpoints) with the Authorization header value held in the Secret's key `authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<SsfPush>,
    /// Poll delivery: the operator asks the transmitter's poll endpoint for SETs and acknowledges them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<SsfPoll>,
}

/// Push delivery (RFC 8935).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SsfPush {
    /// The Secret whose key `authorization` holds the Authorization header the transmitter sends (at least 32 characters).
    pub authorization_secret_ref: SignalSecretRef,
}

/// Poll delivery (RFC 8936).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SsfPoll {
    /// The transmitter's poll endpoint for this stream. https, or http to loopback; redirects are not followed.
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: String,
    /// The Secret whose key `authorization` holds the Authorization header sent with each poll (only to endpoint).
    pub authorization_secret_ref: SignalSecretRef,
    /// How long to wait between polls when the transmitter has nothing more, as a duration from 5s to 1h (default 30s).
    #[serde(default = "default_poll_interval")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && size(self) > 0 && duration(self) >= duration('5s') && duration(self) <= duration('1h')").message("poll.interval must be a duration from 5s to 1h, such as 30s or 2m"))]
    pub interval: String,
}

fn default_poll_interval() -> String {
    "30s".into()
}

/// Alertmanager as a source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerSource {
    /// The Secret in this namespace whose key `token` holds the bearer token Alertmanager sends (at least 32 characters).
    pub token_secret_ref: SignalSecretRef,
    /// Labels and annotations of an alert that name the users it concerns, their values split at commas and spaces into signal.subjects (default: user, users).
    #[serde(default = "default_subject_labels")]
    #[schemars(length(max = 16))]
    pub subject_labels: Vec<String>,
}

fn default_subject_labels() -> Vec<String> {
    vec!["user".into(), "users".into()]
}

/// The generic webhook as a source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSource {
    /// The Secret in this namespace whose key `hmac-key` holds the shared HMAC key (at least 32 bytes).
    pub secret_ref: SignalSecretRef,
}

/// A Secret in the policy's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SignalSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What a policy's recall recalls: the fields of an MfaRecall's spec, with the users a signal names joined to the scope where asked.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecallTemplate {
    /// The recall's reason; the signal that started it is appended (source, fingerprint, summary).
    #[x_kube(validation = Rule::new("self.matches('\\\\S')").message("template.reason must say why such a recall happens, for example the runbook"))]
    #[schemars(length(min = 1, max = 512))]
    pub reason: String,
    /// Names of IdentityBackends in this namespace.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.all(b, size(b) > 0 && size(b) <= 253)").message("backend names must be non-empty IdentityBackend names"))]
    pub backends: Vec<String>,
    /// Who is recalled.
    pub scope: TemplateScope,
    /// Factor kinds to invalidate, as in an MfaRecall (default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16))]
    pub factors: Option<Vec<FactorKind>>,
    /// End the users' sessions too, as in an MfaRecall (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_sessions: Option<bool>,
    /// As in an MfaRecall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re_enrollment: Option<ReEnrollment>,
    /// As in an MfaRecall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomalies: Option<Anomalies>,
    /// As in an MfaRecall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Notifications>,
    /// Dual control over the recalls this policy starts: such a recall is planned first and waits in AwaitingApproval, with its plan, until a person approves it (spec.approval.approvedBy). The operator is its requester, so it can never approve one itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval: Option<RequireApproval>,
}

/// When a policy's recall waits for a person's approval.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequireApproval {
    /// A recall of every user (scope.allUsers) always waits for approval (default true).
    #[serde(default = "default_true")]
    pub all_users: bool,
    /// A recall whose plan finds more users than this, on all its backends together, waits for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub above_users: Option<i64>,
}

fn default_true() -> bool {
    true
}

/// A template's scope: every user, or named users and groups, and/or the users the signal names.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.allUsers) && self.allUsers) != (size(self.groups) > 0 || size(self.users) > 0 || self.usersFromSignal)").message("template.scope must name users or groups, take usersFromSignal, or set allUsers: true (not both)"))]
#[serde(rename_all = "camelCase")]
pub struct TemplateScope {
    /// Recall every user of each backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_users: Option<bool>,
    /// Groups whose members are recalled, as in an MfaRecall's scope.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub groups: Vec<String>,
    /// Users always recalled, as in an MfaRecall's scope.
    #[serde(default)]
    #[schemars(length(max = 10000))]
    pub users: Vec<String>,
    /// Add the users the signal names (signal.subjects); a signal that names nobody then starts nothing unless users or groups are named too.
    #[serde(default)]
    pub users_from_signal: bool,
    /// Only the groups' own members count.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct_members_only: bool,
    /// Users never touched, as in an MfaRecall's scope.
    #[serde(default)]
    pub exclude: Exclusions,
}

/// What a policy heard and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MfaRecallPolicyStatus {
    /// Where each source listens, as paths on the operator's signals port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Signals received, refused ones included.
    #[serde(default)]
    pub signals: i64,
    /// Recalls this policy created.
    #[serde(default)]
    pub recalls_created: i64,
    /// The last recall it created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recall: Option<String>,
    /// Signals by what became of them: created, merged (into the recall of another signal of the same incident in one delivery), duplicate, conditionFalse, conditionError, resolved, noSubjects, capReached, suspended, createFailed, verification (a Shared Signals stream check); and those refused before they were read: unauthenticated, badSignature, stale, replayed, malformed, tooLarge, unknownIssuer, wrongAudience; and pollFailed (a poll of a Shared Signals transmitter that failed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outcomes: BTreeMap<String, i64>,
    /// The latest signals, newest first (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_signals: Vec<SignalSeen>,
    /// Ready: the condition compiled and every source's Secret is usable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One signal as the policy saw it. Never holds a token or signature.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SignalSeen {
    /// When it arrived.
    pub at: jiff::Timestamp,
    /// alertmanager, webhook, sharedSignals or oktaEventHook.
    pub source: String,
    /// The signal's fingerprint, where it could be read.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
    /// What became of it (see outcomes).
    pub outcome: String,
    /// The recall it created, or the one it was a duplicate of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall: Option<String>,
    /// Why, where there is more to say.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}
