use std::path::PathBuf;

use clap::{Parser, Subcommand};



use mfa_recall::audit::{self, Verification};
use mfa_recall::controller::{self, Settings};

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
        /// Do not copy the audit trail to stdout.
        #[arg(long)]
        no_audit_stdout: bool,
        /// Name of this instance in audit lines and events (the pod name).
        #[arg(long, env = "POD_NAME", default_value = "mfa-recall")]
        instance: String,
        /// Recalls reconciled at once.
        #[arg(long, default_value_t = 4)]
        concurrency: u16,
    },
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Work with audit trails.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check a trail's hash chain and name the first broken line.
    Verify { file: PathBuf },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            print!("{}", mfa_recall::api::crds_yaml());
            std::process::ExitCode::SUCCESS
        }
        Command::Audit { command: AuditCommand::Verify { file } } => match audit::verify(&file) {
            Ok(Verification::Intact { lines }) => {
                println!("{}: intact, {lines} lines", file.display());
                std::process::ExitCode::SUCCESS
            }
            Ok(Verification::Broken { line, why }) => {
                println!("{}: broken at line {line}: {why}", file.display());
                std::process::ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                std::process::ExitCode::from(2)
            }
        },
        Command::Operator { namespace, audit_file, no_audit_stdout, instance, concurrency } => {
            mfa_recall::telemetry::init();
            let client = match kube::Client::try_default().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "no Kubernetes connection: set KUBECONFIG or run in a pod");
                    return std::process::ExitCode::from(1);
                }
            };
            let settings = Settings { namespace, audit_file, audit_stdout: !no_audit_stdout, instance, concurrency };
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

