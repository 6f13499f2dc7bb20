use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types shared by both resources, `Ready` first as users expect.
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Declares `Reason` with one variant per reason, each written as its own name.
macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Why a condition is as it is, or why an event was published: the machine-readable word
        /// of a condition's `reason` and an Event's `reason`, each in one place.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }
        }
    };
}

reasons! {
    // An MfaRecall's Ready and Progressing, by phase.
    Pending,
    Planned,
    AwaitingApproval,
    Paused,
    Revoking,
    AwaitingReEnrollment,
    Completed,
    Suspended,
    Cancelled,
    Failed,
    /// The recall object was deleted (an event).
    Deleted,
    // An MfaRecall's Ready, when its run stopped on an error.
    BackendAuthFailed,
    BackendMisconfigured,
    BackendUnavailable,
    BackendNotFound,
    ExclusionGroupNotFound,
    FactorKindsInseparable,
    /// The lockout guard found the recall would leave no way in; it waits until fixed or acknowledged.
    LockoutRisk,
    ListingFailed,
    /// A ledger object failed its HMAC: the recall stopped.
    LedgerRejected,
    /// The ledger holds fewer users than status counted: the recall stopped.
    LedgerShrunk,
    /// The audit trail lost lines the ledger says were written: the recall stopped.
    AuditTrailLost,
    InvalidSpec,
    RunError,
    /// Waiting in line for a turn to revoke.
    Queued,
    /// An MfaBypass moved to another phase (an event).
    BypassChanged,
    // An MfaRecall's Degraded.
    NoFailures,
    UsersFailed,
    NamesNotFound,
    FactorsOfUnknownAgeKept,
    NewFactorsLostWithRevoked,
    /// spec.notifications names a Secret that cannot be used: the recall goes on without notices (an event).
    NoticesUnavailable,
    // An MfaRecallPolicy's Ready.
    /// Its condition compiled and every source's Secret is usable: signals are taken.
    Armed,
    /// Its condition or dedupeBy is not valid CEL, or a duration is out of range.
    InvalidPolicy,
    /// A source's Secret is missing, lacks its key, or holds too short a secret.
    SecretUnusable,
    /// The Shared Signals transmitter's configuration or keys could not be read.
    TransmitterUnreachable,
    // An IdentityBackend's Ready.
    Reachable,
    NotReady,
    AuthenticationFailed,
    InvalidConfiguration,
    NotFound,
    Unreachable,
    Rejected,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<crate::api::RecallPhase> for Reason {
    fn from(phase: crate::api::RecallPhase) -> Self {
        use crate::api::RecallPhase;
        match phase {
            RecallPhase::Pending => Reason::Pending,
            RecallPhase::Planned => Reason::Planned,
            RecallPhase::AwaitingApproval => Reason::AwaitingApproval,
            RecallPhase::Paused => Reason::Paused,
            RecallPhase::Revoking => Reason::Revoking,
            RecallPhase::AwaitingReEnrollment => Reason::AwaitingReEnrollment,
            RecallPhase::Completed => Reason::Completed,
            RecallPhase::Suspended => Reason::Suspended,
            RecallPhase::Cancelled => Reason::Cancelled,
            RecallPhase::Failed => Reason::Failed,
        }
    }
}

/// Sets one condition in a list keyed by `type`; `lastTransitionTime` moves only when the status flips,
/// so rewriting an unchanged condition never re-triggers a watch.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: Reason,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = Time(now());
            }
            existing.status = status;
            existing.reason = reason.as_str().to_string();
            existing.message = message;
            existing.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.as_str().to_string(),
            message,
            observed_generation,
            last_transition_time: Time(now()),
        }),
    }
    conditions.sort_by_key(|c| match c.type_.as_str() {
        READY => 0,
        PROGRESSING => 1,
        DEGRADED => 2,
        _ => 3,
    });
}

pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}
