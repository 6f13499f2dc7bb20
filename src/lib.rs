//! mfa-recall: a Kubernetes operator that recalls MFA factors across identity providers.
//!
//! The flow mirrors the modules: `controller` reconciles the resources in `api`, hands the work to
//! the `engine`, which drives `backends` through one trait, keeps durable progress in the `ledger`
//! and writes every action to the `audit` trail before counting it.

pub mod api;
pub mod audit;
pub mod backends;
pub mod controller;
pub mod duration;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod notify;
pub mod report;
pub mod signals;
pub mod telemetry;
pub mod watch;

/// Errors of the operator itself; provider errors are `backends::ProviderError`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Provider(#[from] backends::ProviderError),
    #[error("audit trail: {0}")]
    Audit(#[from] std::io::Error),
    #[error("ledger {name}: {message}")]
    Ledger { name: String, message: String },
    /// The audit trail lost lines a ledger segment says were written: which of its users were
    /// finished cannot be told, so the recall stops rather than act again unaudited.
    #[error("the audit trail lost lines: {0}. It was cut, replaced or deleted; this recall does no more until the trail is restored (for example from your log pipeline's copy, then restart the operator), or delete this MfaRecall and create a new one with the same cutoff (factors enrolled since the cutoff are kept)")]
    TrailLost(String),
    /// A ledger holding fewer users than the recall's status counted: segments are gone.
    #[error("the ledger of backend {backend} holds {recorded} users where this recall's status counted {counted}. Nothing was touched, and the counts in status stay. If the operator was upgraded from a version that kept the ledger in ConfigMaps, import them (docs/upgrading.md), then suspend and release the recall; if ledger objects were deleted, find out who did (the apiserver's audit log), then delete this MfaRecall and create a new one with the same cutoff (factors enrolled since the cutoff are kept)")]
    LedgerShrunk { backend: String, recorded: i64, counted: i64 },
    /// A ledger object the operator cannot vouch for: the recall stops rather than act on it.
    #[error("ledger {name} is refused: {why}. Nothing it names was acted on, and this recall does no more: compare the recall's audit trail with what it should have done, then delete this MfaRecall and create a new one")]
    LedgerRejected { name: String, why: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    BackendNotFound(String),
    /// An exclusion names a group the provider does not have: the recall waits rather than run
    /// without the spares it was told about.
    #[error("{0}: fix spec.scope.exclude.groups, or create the group")]
    ExclusionGroupNotFound(String),
    /// The recall asks for something a backend cannot do as asked; nothing was touched.
    #[error("{0}")]
    Refused(String),
    /// The recall would leave the organisation without a way in (the lockout guard); it waits,
    /// checked again, until that is fixed or acknowledged. Nothing was touched.
    #[error("{0}")]
    LockoutRisk(String),
    /// A backend's users could not be listed on (an answer that cannot be read, a next-page
    /// link to another host, pages that lead back): the recall ends with the users listed before.
    #[error("{0}; the users listed before it were worked on and are counted, the rest were not reached")]
    ListingFailed(String),
    /// Adding or removing the finalizer, or the reconcile inside it, failed; kept whole so its
    /// category and permanence are those of the error inside.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A short, fixed name of the error's kind, for metrics labels.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes",
            Error::Json(_) => "serialization",
            Error::Provider(_) => "provider",
            Error::Audit(_) => "audit",
            Error::Ledger { .. } => "ledger",
            Error::LedgerRejected { .. } => "ledgerRejected",
            Error::TrailLost(_) => "auditTrailLost",
            Error::LedgerShrunk { .. } => "ledgerShrunk",
            Error::Invalid(_) => "invalid",
            Error::BackendNotFound(_) => "backendNotFound",
            Error::ExclusionGroupNotFound(_) => "exclusionGroupNotFound",
            Error::Refused(_) => "refused",
            Error::LockoutRisk(_) => "lockoutRisk",
            Error::ListingFailed(_) => "listingFailed",
            Error::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => "finalizer",
            },
        }
    }

    /// True when trying again cannot help and only a change of the object can: a spec that does
    /// not hold, a request a backend refuses, a listing that failed its bounded retries. A missing
    /// IdentityBackend or exclusion group, or a provider that does not answer, may still come right.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Invalid(_) | Error::Refused(_) | Error::ListingFailed(_) | Error::LedgerRejected { .. } | Error::LedgerShrunk { .. } | Error::TrailLost(_) => true,
            Error::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e.is_permanent(),
                _ => false,
            },
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
