// mimalloc: a recall allocates on every provider request; about a sixth less CPU per request
// than glibc's malloc (docs/benchmarks.md), for more resident memory (still under 100 MiB).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mfa_recall::audit;
use mfa_recall::controller::{self, LeaseSettings, Settings};

#[derive(Parser)]
#[command(name = "mfa-recall", version, about = "Recall MFA factors across identity providers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster of the current kubeconfig or service account.
    Operator {
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "MFA_RECALL_NAMESPACE")]
        namespace: Option<String>,
        /// Also append the audit trail to this file; the hash chain continues across restarts.
        #[arg(long, env = "MFA_RECALL_AUDIT_FILE")]
        audit_file: Option<PathBuf>,
        /// The audit file outlives the pod (a PersistentVolume): a recall resumed without the
        /// lines its ledger says were written stops, rather than take its users up again from
        /// the providers' answers as after a move to another pod's emptyDir.
        #[arg(long, requires = "audit_file")]
        audit_file_persistent: bool,
        /// Do not copy the audit trail to stdout.
        #[arg(long)]
        no_audit_stdout: bool,
        /// Hash the audit chain with HMAC-SHA-256 under the key in this file (a mounted Secret),
        /// so only its holder can write lines that verify.
        #[arg(long, env = "MFA_RECALL_AUDIT_KEY_FILE")]
        audit_key_file: Option<PathBuf>,
        /// Sign every ledger object with HMAC-SHA-256 under the key in this file (a mounted
        /// Secret, the same for every replica): a ledger object edited or made by anyone else
        /// stops its recall instead of being acted on. At least 32 bytes.
        #[arg(long, env = "MFA_RECALL_LEDGER_KEY_FILE")]
        ledger_key_file: PathBuf,
        /// Name of this instance in audit lines and events (the pod name).
        #[arg(long, env = "POD_NAME", default_value = "mfa-recall")]
        instance: String,
        /// Recalls that list and revoke at once; the others wait in line for a turn, their place
        /// in status (queuePosition). Recalls waiting for re-enrollment do not count.
        #[arg(long, default_value_t = 4)]
        max_revoking_recalls: u16,
        /// Recalls reconciled at once.
        #[arg(long, default_value_t = 4)]
        concurrency: u16,
        /// The longest an MfaBypass may work once issued, such as 8h or 90m (at most 24h).
        #[arg(long, default_value = "8h", value_parser = |text: &str| mfa_recall::duration::BYPASS_LIFETIME.parse(text))]
        max_bypass_lifetime: std::time::Duration,
        /// Serve /metrics, /livez and /readyz on this address, for example 0.0.0.0:8080.
        #[arg(long, env = "MFA_RECALL_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Serve the not-me endpoint (/v1/not-me, where the link in a notice of a new factor
        /// leads) on this address, for example 0.0.0.0:8443 behind an ingress that terminates TLS.
        #[arg(long, env = "MFA_RECALL_NOT_ME_ADDR")]
        not_me_addr: Option<std::net::SocketAddr>,
        /// Serve the MfaRecallPolicy signal receivers (/v1/signals/<namespace>/<policy>/<source>)
        /// on this address, for example 0.0.0.0:8082: a port of their own, which a NetworkPolicy
        /// can open to Alertmanager alone.
        #[arg(long, env = "MFA_RECALL_SIGNALS_ADDR")]
        signals_addr: Option<std::net::SocketAddr>,
        /// Work only while holding the leader Lease, so that of several replicas one acts.
        #[arg(long)]
        leader_election: bool,
        /// Name of the leader Lease.
        #[arg(long, default_value = "mfa-recall-operator")]
        lease_name: String,
        /// Namespace of the leader Lease (the pod's own, from the downward API).
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// How long a lease holder that stopped renewing keeps it, in seconds.
        #[arg(long, default_value_t = 15)]
        lease_seconds: u64,
    },
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Work with audit trails.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Work with in-house identity stores (the backend protocol, docs/backend-protocol.md).
    Backend {
        #[command(subcommand)]
        command: BackendCommand,
    },
    /// Work with recall ledgers.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Print every user a recall targeted and what became of them (invalidated, excluded and by
    /// which rule, failed and why, re-enrolled, flagged, quarantined), from its signed ledger,
    /// one segment at a time; then, on standard error, whether the rows add up to the counts in
    /// the recall's status.
    Report {
        /// The MfaRecall's name.
        recall: String,
        #[arg(long, short)]
        namespace: String,
        #[command(flatten)]
        options: mfa_recall::report::Options,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Bring the ledger an earlier operator kept in ConfigMaps into the recall's signed
    /// ledger, so the recall resumes where it was (docs/upgrading.md). Run with your own
    /// kubeconfig: you vouch for those ConfigMaps, which anyone with `edit` could have written.
    ImportConfigmaps {
        /// The MfaRecall's name.
        recall: String,
        #[arg(long, short)]
        namespace: String,
        /// The operator's ledger key (the `key` of its ledger Secret).
        #[arg(long)]
        key_file: PathBuf,
    },
}

#[derive(Subcommand)]
enum BackendCommand {
    /// Make the calls a recall makes of a store and say, for each, whether it answered as the
    /// protocol says (reads only, and one delete of a factor id no store holds).
    Check(mfa_recall::backends::webhook::CheckArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check a trail's hash chain and name the first broken line.
    Verify(audit::VerifyArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            print!("{}", mfa_recall::api::crds_yaml());
            std::process::ExitCode::SUCCESS
        }
        Command::Audit { command: AuditCommand::Verify(verify) } => std::process::ExitCode::from(verify.run()),
        Command::Backend { command: BackendCommand::Check(check) } => {
            if check.run().await { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) }
        }
        Command::Ledger { command: LedgerCommand::ImportConfigmaps { recall, namespace, key_file } } => match import_configmaps(&recall, &namespace, &key_file).await {
            Ok(lines) => {
                lines.iter().for_each(|line| println!("{line}"));
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{namespace}/{recall}: {e}");
                std::process::ExitCode::from(1)
            }
        },
        Command::Report { recall, namespace, options } => match report(&recall, &namespace, &options).await {
            Ok(agree) => {
                if agree { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(3) }
            }
            Err(e) => {
                eprintln!("{namespace}/{recall}: {e}");
                std::process::ExitCode::from(1)
            }
        },
        Command::Operator { namespace, audit_file, audit_file_persistent, no_audit_stdout, audit_key_file, ledger_key_file, max_revoking_recalls, instance, concurrency, max_bypass_lifetime, metrics_addr, not_me_addr, signals_addr, leader_election, lease_name, lease_namespace, lease_seconds } => {
            mfa_recall::telemetry::init();
            let client = match kube::Client::try_default().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "no Kubernetes connection: set KUBECONFIG or run in a pod");
                    return std::process::ExitCode::from(1);
                }
            };
            let leader_election = leader_election.then(|| LeaseSettings {
                name: lease_name,
                namespace: lease_namespace,
                duration: std::time::Duration::from_secs(lease_seconds.max(3)),
            });
            let settings = Settings { namespace, audit_file, audit_file_persistent, audit_stdout: !no_audit_stdout, audit_key_file, ledger_key_file, max_revoking_recalls, instance, concurrency, max_bypass_lifetime, metrics_addr, not_me_addr, signals_addr, leader_election };
            match controller::run(client, settings).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "operator stopped");
                    std::process::ExitCode::from(1)
                }
            }
        }
    }
}


/// Imports a recall's ConfigMap ledger and says, per backend, what was imported beside what the
/// recall's status counted, for the person to compare.
async fn import_configmaps(recall: &str, namespace: &str, key_file: &std::path::Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let key = mfa_recall::keys::HmacKey::from_file(key_file, mfa_recall::ledger::KEY_NAME)?;
    let client = kube::Client::try_default().await.map_err(|e| format!("no Kubernetes connection ({e}): set KUBECONFIG"))?;
    let object = kube::Api::<mfa_recall::api::MfaRecall>::namespaced(client.clone(), namespace).get(recall).await?;
    let imported = mfa_recall::ledger::legacy::import_configmaps(client, &object, key).await?;
    let backends = object.status.map(|s| s.backends).unwrap_or_default();
    let mut lines = vec![format!("{namespace}/{recall}: imported into the signed ledger")];
    for (backend, (segments, users)) in &imported.backends {
        let counted = backends.iter().find(|b| &b.name == backend).map_or(0, |b| b.counts.targeted);
        lines.push(format!("  {backend}: {users} users in {segments} segments (status counted {counted})"));
    }
    if imported.backends.is_empty() {
        lines.push("  no ledger ConfigMaps found: nothing imported".into());
    }
    Ok(lines)
}

/// Writes the report of a recall (`mfa_recall::report::write`) with the current kubeconfig.
async fn report(recall: &str, namespace: &str, options: &mfa_recall::report::Options) -> Result<bool, Box<dyn std::error::Error>> {
    let client = kube::Client::try_default().await.map_err(|e| format!("no Kubernetes connection ({e}): set KUBECONFIG"))?;
    mfa_recall::report::write(client, recall, namespace, options).await
}
