use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One MFA recall: invalidate the factors and sessions of the users in scope on the named
/// backends, force re-enrollment, and track who re-enrolled.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mfarecall.io",
    version = "v1alpha1",
    kind = "MfaRecall",
    namespaced,
    shortname = "mfar",
    category = "mfa",
    status = "MfaRecallStatus",
    doc = "An MFA recall: invalidates MFA factors and sessions of the users in scope and tracks re-enrollment.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Targeted", type_ = "integer", json_path = ".status.counts.targeted"),
    printcolumn(name = "Invalidated", type_ = "integer", json_path = ".status.counts.invalidated"),
    printcolumn(name = "Re-enrolled", type_ = "integer", json_path = ".status.counts.reEnrolled"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.counts.failed", priority = 1),
    printcolumn(name = "Anomalies", type_ = "integer", json_path = ".status.counts.anomalies"),
    printcolumn(name = "Quarantined", type_ = "integer", json_path = ".status.counts.quarantined", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new(
    "self.reason == oldSelf.reason && self.backends == oldSelf.backends && self.scope == oldSelf.scope && self.factors == oldSelf.factors && self.revokeSessions == oldSelf.revokeSessions && has(self.cutoff) == has(oldSelf.cutoff) && (!has(self.cutoff) || self.cutoff == oldSelf.cutoff)"
).message("reason, backends, scope, factors, revokeSessions and cutoff are fixed once a recall exists: create a new MfaRecall instead (suspend, cancel and reEnrollment can change)"))]
#[x_kube(validation = Rule::new("oldSelf.mode != 'Execute' || self.mode == 'Execute'").message("a recall that executes cannot go back to Plan: create a new MfaRecall with mode: Plan"))]
#[x_kube(validation = Rule::new(
    "has(self.approval) == has(oldSelf.approval) && (!has(self.approval) || (self.approval.requestedBy == oldSelf.approval.requestedBy && has(self.approval.aboveUsers) == has(oldSelf.approval.aboveUsers) && (!has(self.approval.aboveUsers) || self.approval.aboveUsers == oldSelf.approval.aboveUsers) && (!has(oldSelf.approval.approvedBy) || (has(self.approval.approvedBy) && self.approval.approvedBy == oldSelf.approval.approvedBy))))"
).message("approval is fixed once a recall exists, except that approvedBy is set once by the approver: create a new MfaRecall to ask otherwise"))]
#[x_kube(validation = Rule::new(
    "has(self.rollout) == has(oldSelf.rollout) && (!has(self.rollout) || (self.rollout.waveSize == oldSelf.rollout.waveSize && self.rollout.privilegedFirst == oldSelf.rollout.privilegedFirst))"
).message("rollout, its waveSize and privilegedFirst are fixed once a recall exists (its plan places each user in a wave): pause, the thresholds and continueAfterWave can change"))]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.approval) || !has(oldSelf.approval.approvedBy) || (has(self.acknowledgeLockoutRisk) && self.acknowledgeLockoutRisk) == (has(oldSelf.acknowledgeLockoutRisk) && oldSelf.acknowledgeLockoutRisk)"
).message("acknowledgeLockoutRisk cannot change once the recall is approved: the approval was given for the plan and the risk it showed"))]
#[serde(rename_all = "camelCase")]
pub struct MfaRecallSpec {
    /// Why this recall happens, for the audit trail (for example the incident number). Required.
    #[x_kube(validation = Rule::new("self.matches('\\\\S')").message("reason must say why the recall happens, for example the incident id"))]
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// Names of IdentityBackends in this namespace to recall from.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.all(b, size(b) > 0 && size(b) <= 253)").message("backend names must be non-empty IdentityBackend names"))]
    pub backends: Vec<String>,
    /// Which users are recalled. Name them, name groups, or say allUsers: true.
    pub scope: RecallScope,
    /// Factor kinds to invalidate; default all. Kinds come from the provider's own sub-types (a Keycloak OTP credential is totp or hotp by its policy). A backend that can only revoke some kinds together (Google's 2-Step Verification, Duo's phones) refuses a recall that asks for some of them but not all: the recall fails before anything is touched.
    #[serde(default = "default_factors")]
    #[schemars(length(min = 1, max = 16))]
    pub factors: Vec<FactorKind>,
    /// Also end the users' sessions and revoke offline/refresh tokens (default true): a stolen
    /// session has already passed MFA.
    #[serde(default = "default_true")]
    pub revoke_sessions: bool,
    /// Factors created before this instant are invalidated; factors created at or after it are
    /// kept, whatever happens. Default: when the recall was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutoff: Option<jiff::Timestamp>,
    /// How users re-enroll and what happens to those who have not by the deadline.
    #[serde(default)]
    pub re_enrollment: ReEnrollment,
    /// The anomaly rules judged over re-enrollment, where a backend's event log can be read as a stream (its capabilities list eventStream): thresholds, and rules to leave out.
    #[serde(default)]
    pub anomalies: Anomalies,
    /// Where each recalled user who enrolls a new factor is told of it (mail to their address on file, and/or a signed webhook), with a link to say it was not them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Notifications>,
    /// Quarantined users a person has cleared: each is enabled again (to enroll anew) and the clearance audited with who made it. Entries are added, never edited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub clearances: Vec<Clearance>,
    /// Run even though the lockout guard found a risk (a backend's break-glass account missing, disabled or without a factor, or privileged users recalled with none): the person who sets it accepts that the organisation may lose its way in. Can be set after the recall was created.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acknowledge_lockout_risk: bool,
    /// Execute (default) runs the recall. Plan lists the users in scope on every backend and counts what would be revoked (status.plan) without changing anything at the providers; set it to Execute afterwards to run exactly that plan, with its scope and cutoff (`mfa-recall report` lists every user planned).
    #[serde(default)]
    pub mode: RecallMode,
    /// A second person must approve the recall before anything is revoked: it is planned first and waits in AwaitingApproval with its plan. The admission policy crds/mfarecall-requester.yaml makes requestedBy and approvedBy the names Kubernetes authenticated each change with, and refuses an approval by the requester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// Revoke in waves (docs/policies.md): the backends' privileged users first, then batches of a count or a share of the users, with a pause between; a wave whose failures (or the anomalies flagged in the pause after it) pass a threshold pauses the rollout. The recall is planned first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Pause the recall; it resumes where it stopped when set back to false.
    #[serde(default)]
    pub suspend: bool,
    /// Stop the recall for good; what was already done stays done and audited.
    #[serde(default)]
    pub cancel: bool,
}

/// Waves of a recall.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The members of each backend's privileged groups (its spec.privilegedGroups) make the first wave (default true): the accounts an attacker wants most are closed first.
    #[serde(default = "default_true")]
    pub privileged_first: bool,
    /// Users in each later wave, per backend: a count such as 500, or a share of the backend's planned users such as 10%.
    #[x_kube(validation = Rule::new("self.matches('^[1-9][0-9]{0,8}%?$') && (!self.endsWith('%') || int(self.replace('%', '')) <= 100)").message("waveSize must be a count such as 500 or a share from 1% to 100%"))]
    pub wave_size: String,
    /// The wait after each wave before the next, as a duration from 0s to 24h (default 5m).
    #[serde(default = "default_wave_pause")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && size(self) > 0 && duration(self) <= duration('24h')").message("pause must be a duration from 0s to 24h, such as 5m"))]
    pub pause: String,
    /// A wave in which more than this percentage of its users failed pauses the rollout (default 10).
    #[serde(default = "default_max_failed_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub max_failed_percent: i32,
    /// More anomalies than this flagged during the pause after a wave pause the rollout; unset, anomalies do not pause it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_anomalies: Option<i32>,
    /// To go on after the rollout paused at a wave: that wave's number (status.rollout.pausedAtWave). Raising the thresholds goes on as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub continue_after_wave: Option<i32>,
}

fn default_wave_pause() -> String {
    "5m".into()
}

fn default_max_failed_percent() -> i32 {
    10
}

/// Where a rolled-out recall is.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The waves, the privileged one counted (the most over the backends).
    pub waves: i32,
    /// The wave revoking or last revoked (0 is the privileged users' wave).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<i32>,
    /// Users done (invalidated or failed) when the wave began: the wave is judged by what it adds.
    #[serde(default)]
    pub done_before_wave: i64,
    /// Users failed when the wave began.
    #[serde(default)]
    pub failed_before_wave: i64,
    /// Anomalies flagged when the wave began.
    #[serde(default)]
    pub anomalies_before_wave: i64,
    /// The wave at which the rollout paused; set spec.rollout.continueAfterWave to it (or raise the threshold) to go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at_wave: Option<i32>,
    /// Why the rollout paused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub paused_because: String,
}

/// Plan or run.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecallMode {
    #[default]
    Execute,
    Plan,
}

/// Dual control over a recall (docs/policies.md).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// Your Kubernetes user name (kubectl auth whoami); for a policy's recall, the operator's.
    #[schemars(length(min = 1, max = 512))]
    pub requested_by: String,
    /// Ask for approval only when the plan finds more users than this on all backends together; unset, always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub above_users: Option<i64>,
    /// Set by a second person to approve: their Kubernetes user name, never the requester's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub approved_by: Option<String>,
}

impl Approval {
    /// Whether the plan's `users` need a second person's approval before anything is revoked.
    pub fn needed_for(&self, users: i64) -> bool {
        self.above_users.is_none_or(|above| users > above)
    }

    /// Approved by someone other than the requester (the admission policy sees to that; the
    /// operator checks again).
    pub fn approved(&self) -> bool {
        self.approved_by.as_ref().is_some_and(|by| *by != self.requested_by)
    }
}

/// The users a recall targets: every user, or the union of the groups' members and the named
/// users. Each user is recalled and counted once, however often they are found (in two groups,
/// named twice, in two letter cases, by id and by email). Names and groups that match nobody on
/// a backend are listed in that backend's status (notFound) and the audit trail.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.allUsers) && self.allUsers) != (size(self.groups) > 0 || size(self.users) > 0)").message("scope must name users or groups, or set allUsers: true (not both): an empty scope recalls nobody by accident"))]
#[serde(rename_all = "camelCase")]
pub struct RecallScope {
    /// Recall every user of each backend (then groups and users must be empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_users: Option<bool>,
    /// Recall the members of these groups, members of their subgroups included at any depth where the provider's groups nest (see directMembersOnly). Groups are named as the provider names them: Keycloak by name or path such as /staff/ops, Okta and Duo by name, Entra ID by display name or object id, Google by email or name, Auth0 by role name.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub groups: Vec<String>,
    /// Recall these users, each named by any identifier the provider knows them by (id, username or login, email), compared the way the provider compares it (case-insensitively on every provider supported).
    #[serde(default)]
    #[schemars(length(max = 10000))]
    pub users: Vec<String>,
    /// Only the groups' own members count, not members of their subgroups. Exclusion groups always include their subgroups: nothing narrows an exclusion.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct_members_only: bool,
    /// Users never touched even when in scope, such as break-glass accounts.
    #[serde(default)]
    pub exclude: Exclusions,
}

/// Users left untouched; each is counted as excluded, with the rule that excluded it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Exclusions {
    /// Users to leave alone, each named by any identifier the provider knows them by (id, username or login, email), in any letter case; a name that matches nobody is listed in the backend's notFound.
    #[serde(default)]
    #[schemars(length(max = 10000))]
    pub users: Vec<String>,
    /// Groups whose members are left alone, members of their subgroups included at any depth (nothing narrows an exclusion). A group that does not exist stops the recall before anyone is touched (reason ExclusionGroupNotFound).
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub groups: Vec<String>,
}

/// A kind of second factor, across providers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum FactorKind {
    /// Every kind below.
    All,
    /// Time-based one-time passwords (authenticator apps).
    Totp,
    /// Counter-based one-time passwords.
    Hotp,
    /// WebAuthn / FIDO2 security keys used as a second factor.
    Webauthn,
    /// Passkeys (WebAuthn used passwordless).
    Passkey,
    /// Recovery, backup or bypass codes (Entra temporary access passes, Duo bypass codes included).
    RecoveryCodes,
    /// SMS or voice codes.
    Sms,
    /// Email codes.
    Email,
    /// Push approvals to a phone app.
    Push,
    /// Hardware OTP tokens.
    HardwareToken,
    /// Security questions used as a factor (Okta).
    SecurityQuestion,
    /// App-specific passwords that skip the second step (Google).
    AppPassword,
    /// A whole second-step enrollment where the provider cannot list factors one by one (Google
    /// 2-Step Verification): invalidated when any second-factor kind is asked for.
    TwoStepVerification,
}

impl FactorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FactorKind::All => "all",
            FactorKind::Totp => "totp",
            FactorKind::Hotp => "hotp",
            FactorKind::Webauthn => "webauthn",
            FactorKind::Passkey => "passkey",
            FactorKind::RecoveryCodes => "recoveryCodes",
            FactorKind::Sms => "sms",
            FactorKind::Email => "email",
            FactorKind::Push => "push",
            FactorKind::HardwareToken => "hardwareToken",
            FactorKind::SecurityQuestion => "securityQuestion",
            FactorKind::AppPassword => "appPassword",
            FactorKind::TwoStepVerification => "twoStepVerification",
        }
    }
}

/// Re-enrollment rules.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReEnrollment {
    /// Time users have to re-enroll, counted from the recall's start, as a duration such as 72h or 30m; from 1s to 8760h (365 days).
    #[serde(default = "default_grace")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]{1,9})?h|([0-9]+h)?[0-9]+(\\\\.[0-9]{1,9})?m|([0-9]+h)?([0-9]+m)?[0-9]+(\\\\.[0-9]{1,9})?s)$') && duration(self) >= duration('1s') && duration(self) <= duration('8760h')").message("gracePeriod must be a duration from 1s to 8760h (365 days), such as 72h, 90m or 1h30m: hours, minutes, seconds in that order, a fraction only on the last"))]
    pub grace_period: String,
    /// What happens to users who have not re-enrolled when the grace period ends.
    #[serde(default)]
    pub on_deadline: DeadlineAction,
    /// How often re-enrollment is checked, as a duration from 10s to 24h (default 60s).
    #[serde(default = "default_check_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]{1,9})?h|([0-9]+h)?[0-9]+(\\\\.[0-9]{1,9})?m|([0-9]+h)?([0-9]+m)?[0-9]+(\\\\.[0-9]{1,9})?s)$') && duration(self) >= duration('10s') && duration(self) <= duration('24h')").message("checkInterval must be a duration from 10s to 24h, such as 30s or 5m: hours, minutes, seconds in that order, a fraction only on the last"))]
    pub check_interval: String,
    /// Where a backend's event log is read as a stream, pending users are also asked about directly, this many per check, going round (default 1; 0 for never): what a log with gaps missed is found by the time the sweep comes round.
    #[serde(default = "default_sweep")]
    #[schemars(range(min = 0, max = 100000))]
    pub sweep_per_check: i32,
    /// How recalled users get back in to enroll: NextSignIn (default: at their next sign-in with the password, so whoever holds the password can enroll first) or VerifiedLink (a time-limited link to their address on file, where the backend has one; its status says which channel each backend used, and a backend without a link stays at NextSignIn).
    #[serde(default)]
    pub via: ReEnrollmentVia,
    /// How long a VerifiedLink works, as a duration from 10m to 720h (default 24h).
    #[serde(default = "default_link_lifetime")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?$') && size(self) > 0 && duration(self) >= duration('10m') && duration(self) <= duration('720h')").message("linkLifetime must be whole hours and minutes from 10m to 720h, such as 24h"))]
    pub link_lifetime: String,
    /// With VerifiedLink: also make the current password stop working, the link setting a new one, for when the password may be compromised too (the stolen password then lets nobody enroll).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset_password: bool,
}

/// The channel through which recalled users enroll again.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReEnrollmentVia {
    #[default]
    NextSignIn,
    VerifiedLink,
}

fn default_link_lifetime() -> String {
    "24h".into()
}

impl Default for ReEnrollment {
    fn default() -> Self {
        Self {
            grace_period: default_grace(),
            on_deadline: DeadlineAction::default(),
            check_interval: default_check_interval(),
            sweep_per_check: default_sweep(),
            via: ReEnrollmentVia::default(),
            link_lifetime: default_link_lifetime(),
            reset_password: false,
        }
    }
}

/// Thresholds of the anomaly rules (docs/anomalies.md). Every flag is written to the audit trail with its evidence, counted in counts.anomalies, and the user named in the backend's status (flagged).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Anomalies {
    /// How far before the cutoff a user's usual places (countries, networks, ASNs) are read from, as a duration from 1h to 8760h (default 720h, 30 days).
    #[serde(default = "default_baseline")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]{1,9})?h|([0-9]+h)?[0-9]+(\\\\.[0-9]{1,9})?m|([0-9]+h)?([0-9]+m)?[0-9]+(\\\\.[0-9]{1,9})?s)$') && duration(self) >= duration('1h') && duration(self) <= duration('8760h')").message("anomalies.baseline must be a duration from 1h to 8760h, such as 720h"))]
    pub baseline: String,
    /// Travel faster than this, in km/h, between the last sign-in and an enrollment is impossible travel (default 900).
    #[serde(default = "default_travel_kmh")]
    #[schemars(range(min = 100, max = 20000))]
    pub travel_kmh: i32,
    /// Autonomous system numbers whose addresses are placed far from their users (company VPNs, satellite links): no travel is judged from or to them.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub travel_exempt_asns: Vec<u32>,
    /// Users enrolling one phone number or device that make it shared (default 2).
    #[serde(default = "default_shared_device_users")]
    #[schemars(range(min = 2, max = 1000))]
    pub shared_device_users: i32,
    /// Enrollments from one address within burstWithin that make a burst (default 5).
    #[serde(default = "default_burst_enrollments")]
    #[schemars(range(min = 2, max = 100000))]
    pub burst_enrollments: i32,
    /// The burst window, as a duration from 1m to 24h (default 10m).
    #[serde(default = "default_ten_minutes")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]{1,9})?h|([0-9]+h)?[0-9]+(\\\\.[0-9]{1,9})?m|([0-9]+h)?([0-9]+m)?[0-9]+(\\\\.[0-9]{1,9})?s)$') && duration(self) >= duration('1m') && duration(self) <= duration('24h')").message("anomalies.burstWithin must be a duration from 1m to 24h, such as 10m"))]
    pub burst_within: String,
    /// Pushes denied or ignored within pushWithin before an enrollment that make push fatigue (default 10).
    #[serde(default = "default_push_denials")]
    #[schemars(range(min = 1, max = 10000))]
    pub push_denials: i32,
    /// The push-fatigue window, as a duration from 1m to 24h (default 10m).
    #[serde(default = "default_ten_minutes")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]{1,9})?h|([0-9]+h)?[0-9]+(\\\\.[0-9]{1,9})?m|([0-9]+h)?([0-9]+m)?[0-9]+(\\\\.[0-9]{1,9})?s)$') && duration(self) >= duration('1m') && duration(self) <= duration('24h')").message("anomalies.pushWithin must be a duration from 1m to 24h, such as 10m"))]
    pub push_within: String,
    /// Rules not to judge.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub disabled_rules: Vec<crate::watch::Rule>,
    /// What a flag does: Flag (default) records it for review; Quarantine also revokes every factor the user holds (the flagged new one included: the one exception to keeping factors enrolled after the cutoff, which this setting asks for), ends their sessions and disables the account until a person clears it in spec.clearances.
    #[serde(default)]
    pub action: AnomalyAction,
}

/// What a flag does to the user.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AnomalyAction {
    #[default]
    Flag,
    Quarantine,
}

/// Sinks for the notice of a new factor (docs/anomalies.md, Notices).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.smtp) || has(self.webhook)").message("notifications needs smtp or webhook (or both)"))]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    /// Mail to each user's address on file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpNotifications>,
    /// A signed JSON POST per notice, for whatever the organisation routes notices through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookNotifications>,
    /// Where the operator's not-me endpoint is reached from users' browsers (https, or http on loopback), for example https://mfa-recall.example.com/v1/not-me. Without it, notices tell users to call the security team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub not_me_url: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SmtpNotifications {
    /// The mail server as host:port.
    #[schemars(length(min = 3, max = 512))]
    pub server: String,
    /// The sender, for example "Security <security@example.com>".
    #[schemars(length(min = 3, max = 512))]
    pub from: String,
    /// Tls (implicit, usually port 465), StartTls (usually 587; default), or None (only to a server on loopback).
    #[serde(default)]
    pub security: SmtpSecurity,
    /// A Secret in this namespace with keys username and password, if the server asks for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<NotificationSecretRef>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SmtpSecurity {
    Tls,
    #[default]
    StartTls,
    None,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookNotifications {
    /// Where notices are POSTed as JSON (https, or http on loopback); redirects are not followed.
    #[schemars(length(min = 8, max = 2048))]
    pub url: String,
    /// A Secret in this namespace whose key hmac-key (32 bytes or more) signs each notice: X-Mfa-Recall-Signature is sha256= and the hex HMAC-SHA-256 of X-Mfa-Recall-Timestamp, a dot and the body.
    pub secret_ref: NotificationSecretRef,
}

/// A Secret in the MfaRecall's namespace; the admission policy crds/mfarecall-requester.yaml lets only someone who may get it name it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NotificationSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A person's decision that a quarantined user may sign in again. The admission policy
/// crds/mfarecall-requester.yaml requires clearedBy to be the name Kubernetes authenticated the
/// request that added it with, so the audit trail names who cleared whom.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Clearance {
    /// The quarantined user, as the backend's status names them.
    #[schemars(length(min = 1, max = 512))]
    pub user: String,
    /// Your Kubernetes user name (kubectl auth whoami); the admission policy checks it.
    #[schemars(length(min = 1, max = 512))]
    pub cleared_by: String,
    /// Why, for the audit trail (for example: confirmed with the user by phone).
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub note: String,
}

impl Default for Anomalies {
    fn default() -> Self {
        Self {
            baseline: default_baseline(),
            travel_kmh: default_travel_kmh(),
            travel_exempt_asns: Vec::new(),
            shared_device_users: default_shared_device_users(),
            burst_enrollments: default_burst_enrollments(),
            burst_within: default_ten_minutes(),
            push_denials: default_push_denials(),
            push_within: default_ten_minutes(),
            disabled_rules: Vec::new(),
            action: AnomalyAction::Flag,
        }
    }
}

fn default_baseline() -> String {
    "720h".into()
}
fn default_travel_kmh() -> i32 {
    900
}
fn default_shared_device_users() -> i32 {
    2
}
fn default_burst_enrollments() -> i32 {
    5
}
fn default_push_denials() -> i32 {
    10
}
fn default_ten_minutes() -> String {
    "10m".into()
}
/// One user a check: with the default interval, the sweep's two factor-list reads stay within
/// 1 % of Okta's `/users` limit (docs/benchmarks.md, the re-enrollment window).
pub const DEFAULT_SWEEP_PER_CHECK: i32 = 1;

fn default_sweep() -> i32 {
    DEFAULT_SWEEP_PER_CHECK
}

/// The action at the re-enrollment deadline.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeadlineAction {
    /// Leave users who did not re-enroll as they are (their re-enrollment stays required).
    #[default]
    Keep,
    /// Disable the accounts of users who did not re-enroll.
    Disable,
}

fn default_factors() -> Vec<FactorKind> {
    vec![FactorKind::All]
}
fn default_true() -> bool {
    true
}
fn default_grace() -> String {
    "72h".into()
}
/// A minute: the stream's one log read a check stays within 1 % of Okta's `/logs` limit.
fn default_check_interval() -> String {
    "60s".into()
}

/// Where a recall is.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecallPhase {
    /// Accepted, waiting for its backends to be ready (or listing users for its plan).
    #[default]
    Pending,
    /// mode Plan: the plan is in status.plan and nothing was changed; set mode: Execute to run it.
    Planned,
    /// Planned; waiting for a second person to set approval.approvedBy.
    AwaitingApproval,
    /// A rollout wave passed a threshold (status.rollout says which and why); edit spec.rollout to go on.
    Paused,
    /// Invalidating factors and sessions.
    Revoking,
    /// Everything invalidated; waiting for users to re-enroll.
    AwaitingReEnrollment,
    /// Done: every user re-enrolled or the deadline passed.
    Completed,
    /// Paused by spec.suspend.
    Suspended,
    /// Stopped by spec.cancel.
    Cancelled,
    /// Could not run; the Ready condition says why.
    Failed,
}

/// Progress and outcome of a recall.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MfaRecallStatus {
    /// Where the recall is.
    #[serde(default)]
    pub phase: RecallPhase,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The cutoff in force (spec.cutoff or the creation time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutoff: Option<jiff::Timestamp>,
    /// When revocation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<jiff::Timestamp>,
    /// When every targeted user was invalidated, excluded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<jiff::Timestamp>,
    /// Users who have not re-enrolled by then are handled per reEnrollment.onDeadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<jiff::Timestamp>,
    /// Totals over all backends.
    #[serde(default)]
    pub counts: RecallCounts,
    /// The same counts per backend, with what that backend could not do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendProgress>,
    /// Ready, Progressing and Degraded, each with a reason and a message to act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What the recall would do or did do, as planned before anything was revoked (mode Plan, or a recall that needs approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<RecallPlan>,
    /// Where a rolled-out recall's waves are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Waiting for a turn to revoke: the recall's place in line (1 is next). The operator lets a
    /// set number of recalls revoke at once (`--max-revoking-recalls`). Absent when not waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i32>,
    /// The last line of the operator's audit trail when this status was written, durable by
    /// then: `mfa-recall audit verify FILE --expect-head SEQ:HASH` finds a trail cut at its end
    /// or rewritten whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<AuditHead>,
}

/// A recall's plan: who is in scope and what would be revoked, counted before anything is changed. Excluded, failed (snapshot refused), at risk and names not found are in counts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecallPlan {
    /// Users the recall would invalidate.
    pub users: i64,
    /// Factors it would revoke, by kind.
    #[serde(default, deserialize_with = "counts_of_known_kinds")]
    #[schemars(with = "BTreeMap<String, i64>")]
    pub factors: BTreeMap<FactorKind, i64>,
    /// Factors whose creation time the provider does not give: revoked only if its logs show they predate the cutoff, else kept.
    #[serde(default)]
    pub factors_of_unknown_age: i64,
    /// Sessions and offline tokens it would end.
    #[serde(default)]
    pub sessions: i64,
    /// Users already holding a factor from after the cutoff: not asked to enroll again.
    #[serde(default)]
    pub already_enrolled: i64,
    /// Users the provider would not make enroll again once their recalled factors are gone (an Entra user keeping a method of a kind not recalled); `mfa-recall report` names each.
    #[serde(default)]
    pub at_risk: i64,
    /// Users of the backends' privileged groups, for a rolled-out recall: its first wave.
    #[serde(default)]
    pub privileged: i64,
    /// The first users planned (at most 20 per backend); `mfa-recall report` lists all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<String>,
    /// What the lockout guard found when the plan was made; the recall will not execute until it is fixed or acknowledged (spec.acknowledgeLockoutRisk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout_risk: Option<String>,
    /// When the plan was complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_at: Option<jiff::Timestamp>,
}

/// Users shown in a backend's plan sample.
pub const PLAN_SAMPLE: usize = 20;

impl RecallPlan {
    pub fn add(&mut self, other: &RecallPlan) {
        self.users += other.users;
        self.factors_of_unknown_age += other.factors_of_unknown_age;
        self.sessions += other.sessions;
        self.already_enrolled += other.already_enrolled;
        self.at_risk += other.at_risk;
        self.privileged += other.privileged;
        for (kind, n) in &other.factors {
            *self.factors.entry(*kind).or_default() += n;
        }
        let room = PLAN_SAMPLE.saturating_sub(self.sample.len());
        self.sample.extend(other.sample.iter().take(room).cloned());
    }
}

/// A line of an operator's audit trail.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditHead {
    /// The operator instance (pod) whose trail holds the line.
    pub instance: String,
    /// `SEQ:HASH`, as `audit verify --expect-head` takes it.
    pub line: String,
}

/// Counts of users and factors. At the end invalidated + excluded + failed == targeted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecallCounts {
    /// Users in scope found so far (final once every backend finished listing).
    pub targeted: i64,
    /// Users whose factors and sessions were invalidated.
    pub invalidated: i64,
    /// Invalidated users who enrolled a new factor after the cutoff.
    pub re_enrolled: i64,
    /// Invalidated users who lost a factor and have not re-enrolled yet.
    pub pending: i64,
    /// Invalidated users who already held a factor enrolled after the cutoff when the recall reached them: not asked to enroll again, and not counted as re-enrolled.
    #[serde(default)]
    pub already_enrolled: i64,
    /// Invalidated users the provider will not make enroll the kinds lost again (an Entra user who keeps a method of a kind not recalled: Entra asks for registration only when no method is left); `mfa-recall report` names each, with why.
    #[serde(default)]
    pub at_risk: i64,
    /// Users the recall could not finish; the audit trail names each with its error.
    pub failed: i64,
    /// Users left alone by an exclusion rule.
    pub excluded: i64,
    /// Users each exclusion rule spared: `exclude.users`, or `exclude.groups: <group>` (a user in several excluded groups is counted under the first).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub excluded_by: BTreeMap<String, i64>,
    /// Names in scope.users or exclude.users, and groups in scope.groups, that matched nobody on the backend; each is named in the backend's notFound.
    #[serde(default)]
    pub names_not_found: i64,
    /// Users whose sessions are ended and whose factors of known age are dealt with, waiting for the provider's logs to tell the age of the rest.
    #[serde(default)]
    pub awaiting_logs: i64,
    /// Factors whose creation time the provider does not give and whose age its logs could not tell: kept (never assumed old), each named in the backend's keptFactors.
    #[serde(default)]
    pub kept_unknown_age: i64,
    /// Factors enrolled since the cutoff that a provider took with a factor this recall revoked, with no way to keep them (Google app passwords end with 2-Step Verification), each named in the backend's lostFactors.
    #[serde(default)]
    pub new_factors_lost: i64,
    /// Sessions and offline tokens ended (for users who later failed too).
    pub sessions_revoked: i64,
    /// Factors this recall deleted, by kind (for users who later failed too; a factor already gone is not counted).
    #[serde(default, deserialize_with = "counts_of_known_kinds")]
    #[schemars(with = "BTreeMap<String, i64>")]
    pub factors_revoked: BTreeMap<FactorKind, i64>,
    /// Anomaly rules that tripped on recalled users' events during re-enrollment (one per rule and event); each is in the audit trail (anomaly.flagged) with its evidence, and the first users flagged are named in the backend's flagged.
    pub anomalies: i64,
    /// Users a flag quarantined (anomalies.action Quarantine) and nobody has cleared yet.
    #[serde(default)]
    pub quarantined: i64,
    /// Accounts disabled at the deadline.
    pub disabled: i64,
}

impl RecallCounts {
    /// Adds every count of `other` to these.
    pub fn add(&mut self, other: &RecallCounts) {
        self.add_times(other, 1);
    }

    /// Takes every count of `other` from these.
    pub fn subtract(&mut self, other: &RecallCounts) {
        self.add_times(other, -1);
    }

    fn add_times(&mut self, other: &RecallCounts, times: i64) {
        self.targeted += times * other.targeted;
        self.invalidated += times * other.invalidated;
        self.re_enrolled += times * other.re_enrolled;
        self.pending += times * other.pending;
        self.already_enrolled += times * other.already_enrolled;
        self.awaiting_logs += times * other.awaiting_logs;
        self.kept_unknown_age += times * other.kept_unknown_age;
        self.new_factors_lost += times * other.new_factors_lost;
        self.at_risk += times * other.at_risk;
        self.names_not_found += times * other.names_not_found;
        self.failed += times * other.failed;
        self.excluded += times * other.excluded;
        self.sessions_revoked += times * other.sessions_revoked;
        self.anomalies += times * other.anomalies;
        self.quarantined += times * other.quarantined;
        self.disabled += times * other.disabled;
        for (kind, n) in &other.factors_revoked {
            *self.factors_revoked.entry(*kind).or_default() += times * n;
        }
        for (rule, n) in &other.excluded_by {
            *self.excluded_by.entry(rule.clone()).or_default() += times * n;
        }
    }
}

/// Counts by factor kind, leaving out kinds this version does not know (a status written by a
/// newer operator before a rollback): one unknown key must not make the whole object unreadable
/// to the controller's watch.
fn counts_of_known_kinds<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<FactorKind, i64>, D::Error> {
    let by_name: BTreeMap<String, i64> = Deserialize::deserialize(deserializer)?;
    Ok(by_name.into_iter().filter_map(|(name, n)| Some((serde_json::from_value(serde_json::Value::String(name)).ok()?, n))).collect())
}

/// Progress on one backend.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendProgress {
    /// IdentityBackend name.
    pub name: String,
    /// True once every user in scope on this backend has been listed.
    pub listed: bool,
    /// Counts on this backend.
    #[serde(flatten)]
    pub counts: RecallCounts,
    /// What this backend could not do, and why (for example "sessions: not available on this plan").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_supported: Vec<String>,
    /// What matched nobody on this backend, each as `user <name>`, `group <name>` or `exclude.users: <name>` (the first 100; counts.namesNotFound has how many).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_found: Vec<String>,
    /// Factors kept because neither the provider nor its logs tell when they were created, each as `<user>: <kind> <id>` (the first 100; counts.keptUnknownAge has how many). Review them: they may predate the cutoff.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_factors: Vec<String>,
    /// Factors enrolled since the cutoff that went with a factor this recall revoked, each as `<user>: <kind> <id>` (the first 100; counts.newFactorsLost has how many). Tell their users: they must set them up again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_factors: Vec<String>,
    /// Users an anomaly rule flagged in the re-enrollment window, each as `<user>: <rule>` (the first 100; counts.anomalies has how many flags, and the audit trail each one's evidence). Review them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flagged: Vec<String>,
    /// How this backend's users are let back in to enroll (reEnrollment.via as this backend can do it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re_enrollment_via: Option<String>,
    /// This backend's part of the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<RecallPlan>,
    /// Entries of the provider's event log that could not be read and were passed by, since the operator started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub events_skipped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_are_keyed_by_the_kinds_name_and_an_unknown_kind_is_left_out() {
        let counts = RecallCounts { factors_revoked: BTreeMap::from([(FactorKind::RecoveryCodes, 2), (FactorKind::Totp, 3)]), ..Default::default() };
        let value = serde_json::to_value(&counts).unwrap();
        assert_eq!(value["factorsRevoked"], serde_json::json!({ "recoveryCodes": 2, "totp": 3 }));
        assert_eq!(serde_json::from_value::<RecallCounts>(value.clone()).unwrap(), counts);
        let mut newer = value;
        newer["factorsRevoked"]["holographicToken"] = 1.into();
        assert_eq!(serde_json::from_value::<RecallCounts>(newer).unwrap().factors_revoked, counts.factors_revoked);
    }

    /// The operator's own check beside the admission policy: the requester's approval is none.
    #[test]
    fn approval_is_needed_above_its_count_and_given_only_by_someone_else() {
        let approval = |above: Option<i64>, by: Option<&str>| Approval { requested_by: "system:serviceaccount:mfa:operator".into(), above_users: above, approved_by: by.map(str::to_string) };
        assert!(approval(None, None).needed_for(0), "without a count, always");
        assert!(!approval(Some(50), None).needed_for(50) && approval(Some(50), None).needed_for(51));
        assert!(!approval(None, None).approved());
        assert!(!approval(None, Some("system:serviceaccount:mfa:operator")).approved(), "the requester cannot approve");
        assert!(approval(None, Some("bob")).approved());
    }

    /// A backend's counts are flattened into its progress: a count named like one of the
    /// progress's own fields would write one key twice, and the apiserver refuses the status.
    #[test]
    fn flattened_counts_share_no_key_with_backend_progress() {
        let counts: Vec<String> = serde_json::to_value(RecallCounts::default()).unwrap().as_object().unwrap().keys().cloned().collect();
        let progress = BackendProgress { not_supported: vec!["x".into()], not_found: vec!["y".into()], kept_factors: vec!["z".into()], ..Default::default() };
        let mut own = serde_json::to_value(&progress).unwrap().as_object().unwrap().clone();
        own.retain(|key, _| !counts.contains(key));
        for key in ["name", "listed", "notSupported", "notFound"] {
            assert!(own.contains_key(key), "{key} is shadowed by a count of the same name");
        }
    }
}
