//! `kubectl mfa-recall`: a thin client of the Kubernetes API for the people who run a recall.
//! Every command acts with the user's own kubeconfig, so Kubernetes RBAC and the admission
//! policies decide what they may do, and their name is what approvals and the audit trail record.
//!
//!   kubectl mfa-recall plan NAME --reason R --backend B (--user U | --group G | --all-users)
//!   kubectl mfa-recall start NAME [the same, to create and run at once]
//!   kubectl mfa-recall approve NAME
//!   kubectl mfa-recall watch NAME [--once]
//!   kubectl mfa-recall report NAME --key-file F
//!   kubectl mfa-recall audit verify FILE

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use mfa_recall::api::{MfaRecall, MfaRecallStatus, RecallPhase};
use serde_json::json;

#[derive(Parser)]
#[command(name = "kubectl mfa-recall", about = "Plan, start, approve and watch MFA recalls, and read their report", version)]
struct Cli {
    /// The namespace (default: the kubeconfig context's).
    #[arg(long, short, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a recall as a plan (spec.mode Plan), wait for it, and print what it would do:
    /// nothing is changed at any provider. `start` runs it.
    Plan {
        name: String,
        #[command(flatten)]
        recall: NewRecall,
        /// How long to wait for the plan.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Run a planned recall (spec.mode Execute), or create one and run it at once when given
    /// what to recall.
    Start {
        name: String,
        #[command(flatten)]
        recall: NewRecall,
    },
    /// Approve a recall waiting for approval, in your own name (you cannot approve your own).
    Approve { name: String },
    /// Show a recall's progress per backend, updated as its status changes, until it waits (for
    /// its users to re-enroll, for an approval, for a person) or is over.
    Watch {
        name: String,
        /// Print the state once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Every user of a recall and what became of them, from its signed ledger (as `mfa-recall report`).
    Report {
        name: String,
        #[command(flatten)]
        options: mfa_recall::report::Options,
    },
    /// Check an audit trail file (as `mfa-recall audit verify`).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check a trail's hash chain and name the first broken line.
    Verify(mfa_recall::audit::VerifyArgs),
}

/// What a new recall recalls; absent for `start` of an existing plan.
#[derive(Args, Clone, Default)]
struct NewRecall {
    /// Why (the incident), for the audit trail.
    #[arg(long)]
    reason: Option<String>,
    /// IdentityBackends to recall from (repeat for several).
    #[arg(long = "backend")]
    backends: Vec<String>,
    #[arg(long = "user")]
    users: Vec<String>,
    #[arg(long = "group")]
    groups: Vec<String>,
    #[arg(long)]
    all_users: bool,
    #[arg(long = "exclude-user")]
    exclude_users: Vec<String>,
    #[arg(long = "exclude-group")]
    exclude_groups: Vec<String>,
    /// A second person must approve it (in your name as requester); with --approval-above, only
    /// when the plan finds more users than that.
    #[arg(long)]
    approval: bool,
    #[arg(long)]
    approval_above: Option<i64>,
}

impl NewRecall {
    fn given(&self) -> bool {
        self.reason.is_some() || !self.backends.is_empty()
    }

    fn manifest(&self, name: &str, mode: &str, requester: Option<&str>) -> Result<MfaRecall, String> {
        let reason = self.reason.clone().ok_or("--reason is required: say why, for example the incident id")?;
        if self.backends.is_empty() {
            return Err("--backend is required: name the IdentityBackends to recall from".into());
        }
        let scope = if self.all_users {
            json!({ "allUsers": true, "exclude": { "users": self.exclude_users, "groups": self.exclude_groups } })
        } else {
            json!({ "users": self.users, "groups": self.groups, "exclude": { "users": self.exclude_users, "groups": self.exclude_groups } })
        };
        let mut spec = json!({ "reason": reason, "backends": self.backends, "scope": scope, "mode": mode });
        if self.approval || self.approval_above.is_some() {
            spec["approval"] = json!({ "requestedBy": requester, "aboveUsers": self.approval_above });
        }
        serde_json::from_value(json!({ "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": { "name": name }, "spec": spec })).map_err(|e| e.to_string())
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration such as 90s or 5m"))?;
    match unit {
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{text:?} is not a duration such as 90s or 5m")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<bool, Box<dyn std::error::Error>> {
    if let Command::Audit { command: AuditCommand::Verify(verify) } = &cli.command {
        return Ok(verify.run() == 0);
    }
    let client = Client::try_default().await.map_err(|e| format!("no Kubernetes connection ({e}): set KUBECONFIG"))?;
    let namespace = cli.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), &namespace);
    match cli.command {
        Command::Plan { name, recall, timeout } => {
            let requester = whoami(&client).await?;
            recalls.create(&PostParams::default(), &recall.manifest(&name, "Plan", Some(&requester))?).await?;
            println!("mfarecall {namespace}/{name} created as a plan");
            let planned = tokio::time::timeout(timeout, until(&recalls, &name, |p| matches!(p, RecallPhase::Planned | RecallPhase::AwaitingApproval | RecallPhase::Failed))).await;
            match planned {
                Ok(Ok(recall)) => {
                    if phase(&recall) == RecallPhase::Planned {
                        println!("`kubectl mfa-recall start {name}` runs exactly this plan{}", if recall.spec.approval.is_some() { ", once someone else has run `kubectl mfa-recall approve` on it" } else { "" });
                    }
                    Ok(phase(&recall) != RecallPhase::Failed)
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("no plan within {timeout:?}: `kubectl mfa-recall watch {name}` shows where it is").into()),
            }
        }
        Command::Start { name, recall } => {
            if recall.given() {
                let requester = whoami(&client).await?;
                recalls.create(&PostParams::default(), &recall.manifest(&name, "Execute", Some(&requester))?).await?;
                println!("mfarecall {namespace}/{name} created and started");
            } else {
                recalls.patch(&name, &PatchParams::default(), &Patch::Merge(json!({ "spec": { "mode": "Execute" } }))).await?;
                println!("mfarecall {namespace}/{name} set to Execute: it runs exactly its plan");
            }
            Ok(true)
        }
        Command::Approve { name } => {
            let me = whoami(&client).await?;
            recalls.patch(&name, &PatchParams::default(), &Patch::Merge(json!({ "spec": { "approval": { "approvedBy": me } } }))).await?;
            println!("mfarecall {namespace}/{name} approved by {me}");
            Ok(true)
        }
        Command::Watch { name, once } => {
            let recall = recalls.get(&name).await?;
            print!("{}", render(&recall));
            if once || settled(&recall) {
                return Ok(true);
            }
            let recall = until(&recalls, &name, |_| false).await?;
            Ok(phase(&recall) != RecallPhase::Failed)
        }
        Command::Report { name, options } => Ok(mfa_recall::report::write(client, &name, &namespace, &options).await?),
        Command::Audit { .. } => unreachable!("answered above"),
    }
}

/// Your user name, as the apiserver authenticates you (what approvals must name).
async fn whoami(client: &Client) -> Result<String, Box<dyn std::error::Error>> {
    let review = Api::<SelfSubjectReview>::all(client.clone()).create(&PostParams::default(), &SelfSubjectReview::default()).await?;
    Ok(review.status.and_then(|s| s.user_info).and_then(|u| u.username).ok_or("the apiserver did not say who you are")?)
}

fn phase(recall: &MfaRecall) -> RecallPhase {
    recall.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

/// A recall that waits for its users or a person, or is over, as of its current spec (a status
/// older than the spec, just after `start` or `approve`, says nothing yet).
fn settled(recall: &MfaRecall) -> bool {
    let current = recall.status.as_ref().and_then(|s| s.observed_generation) == recall.metadata.generation;
    let waits = match phase(recall) {
        RecallPhase::Pending | RecallPhase::Revoking => false,
        // Until the operator takes up a start or an approval, the phase still says what was.
        RecallPhase::Planned => recall.spec.mode == mfa_recall::api::RecallMode::Plan,
        RecallPhase::AwaitingApproval => recall.spec.approval.as_ref().is_none_or(|a| a.approved_by.is_none()),
        _ => true,
    };
    current && waits
}

/// Watches the recall, printing each change, until `done` holds for its phase or it settles.
async fn until(recalls: &Api<MfaRecall>, name: &str, done: impl Fn(RecallPhase) -> bool) -> Result<MfaRecall, Box<dyn std::error::Error>> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = std::pin::pin!(watcher(recalls.clone(), config).applied_objects());
    let mut shown = None;
    while let Some(recall) = changes.next().await {
        let recall = recall?;
        let now = render(&recall);
        if shown.as_ref() != Some(&now) {
            print!("{now}");
            shown = Some(now);
        }
        if done(phase(&recall)) || settled(&recall) {
            return Ok(recall);
        }
    }
    Err("the watch ended".into())
}

/// A recall's state: its phase and Ready message, the plan where there is one, and a bar per backend.
fn render(recall: &MfaRecall) -> String {
    let name = recall.metadata.name.clone().unwrap_or_default();
    let status = recall.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.message.clone()).unwrap_or_default();
    let mut out = format!("{name}: {:?}: {ready}\n", status.phase);
    if let Some(plan) = &status.plan {
        let factors: Vec<String> = plan.factors.iter().map(|(kind, n)| format!("{n} {}", kind.as_str())).collect();
        out.push_str(&format!("  plan: {} users, factors {}, {} sessions, {} excluded", plan.users, if factors.is_empty() { "none".into() } else { factors.join(", ") }, plan.sessions, status.counts.excluded));
        if let Some(risk) = &plan.lockout_risk {
            out.push_str(&format!(", LOCKOUT RISK: {risk}"));
        }
        out.push('\n');
    }
    out.push_str(&bars(&status));
    out
}

fn bars(status: &MfaRecallStatus) -> String {
    const WIDTH: i64 = 30;
    let width = status.backends.iter().map(|b| b.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for backend in &status.backends {
        let c = &backend.counts;
        let done = c.invalidated + c.excluded + c.failed;
        let filled = if c.targeted > 0 { (done * WIDTH / c.targeted).clamp(0, WIDTH) } else { 0 };
        let bar: String = (0..WIDTH).map(|i| if i < filled { '#' } else { '.' }).collect();
        let percent = if c.targeted > 0 { done * 100 / c.targeted } else { 0 };
        out.push_str(&format!(
            "  {:width$}  [{bar}] {percent:>3}%  {done}/{}{}  failed {}  excluded {}  re-enrolled {}\n",
            backend.name,
            c.targeted,
            if backend.listed { "" } else { "+" },
            c.failed,
            c.excluded,
            c.re_enrolled
        ));
    }
    out
}
