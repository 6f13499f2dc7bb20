//! `mfa-recall-bench`: the operator end to end against a provider simulator running as its own
//! process, on a real apiserver, with the two reference points measured on the same simulator:
//! the limit (a load generator doing the same requests as fast as this machine allows, measured
//! before and after the recall) and the baseline (a straightforward admin script deleting one
//! factor at a time). Run by hack/bench.sh, which starts the parts; results are printed as JSON
//! lines (the recall first, with its ratios) and written by the script.
//!
//! `--layers` measures instead, with no apiserver, what each layer of the operator adds to the
//! client's CPU per provider request (see `layer_run`).

// The same allocator as the operator, so the load generator stays the fastest client we have.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use kube::api::DeleteParams;
use kube::{Api, Client};
use mfa_recall::api::{BackendLimits, FactorKind, IdentityBackend, IdentityBackendSpec, MfaRecall};
use mfa_recall::audit::AuditLog;
use mfa_recall::backends::{IdentityProvider, ScopeSelector, UserRef};
use mfa_recall::engine::{RecallJob, Runner};
use mfa_recall::ledger::{self, LedgerStore, Segment};
use idp_sim::SimStats;
use testkit::cluster;
use serde_json::{Value, json};

#[derive(Parser, Clone)]
#[command(about = "Benchmark a recall against a simulated Okta")]
struct Args {
    /// Users to seed, each with TOTP, WebAuthn, recovery codes (Okta Verify) and a session.
    #[arg(long)]
    users: u32,
    /// Requests per minute the simulator allows per bucket, announced in X-Rate-Limit headers; 0 = unthrottled.
    #[arg(long, default_value_t = 0)]
    per_minute: u64,
    /// Users the baseline script works through (it is slow; its rate is what counts).
    #[arg(long, default_value_t = 2000)]
    baseline_users: u32,
    /// Skip the two reference points (limit and baseline).
    #[arg(long)]
    no_references: bool,
    /// Recalls to run, each followed by a limit run (one limit run goes first): this machine's
    /// speed drifts by tens of percent within minutes, so repeats tell a drift from a difference.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Write users invalidated over time (seconds, users) to this CSV.
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Requests the operator keeps in flight (the IdentityBackend's maxConcurrency); the load generator uses the same.
    #[arg(long, default_value_t = 64)]
    in_flight: i32,
    /// The IdentityBackend's budgetShare (percent of an announced limit); its default when not given.
    #[arg(long)]
    budget_share: Option<i32>,
    /// With --per-minute: another client of the same quota (as provisioning would be) reads the
    /// users bucket this often per minute throughout the recall; its requests and 429s are counted apart.
    #[arg(long, default_value_t = 0)]
    competitor_per_minute: u64,
    /// Instead of a recall: the client's CPU per provider request, layer by layer, with no
    /// apiserver (the load generator, the Okta adapter alone, the engine), alternated for --rounds rounds.
    #[arg(long)]
    layers: bool,
    /// With --layers: the layers to run each round, in order (one alone, to profile it).
    #[arg(long = "layer", value_delimiter = ',', default_value = "generator,adapter,engine")]
    layer_names: Vec<String>,
    /// Instead of a recall: what watching the re-enrollment window costs the provider per check,
    /// with --users pending users, asking each (per-user polling) and reading the log as a stream.
    #[arg(long)]
    window: bool,
    /// With --window: users who enroll between two checks (one in ten from an address abroad, to be flagged).
    #[arg(long, default_value_t = 100)]
    enrollments: u32,
    /// Instead of a recall: the MfaRecallPolicy signal receiver, with --users seeded users: for
    /// --rounds rounds, the seconds from an Alertmanager notification reaching the receiver to the
    /// first revocation at the provider; then --duplicates repeats of it, sent by 32 clients at once,
    /// each refused as a duplicate: signals per second, and the operator's memory before and after.
    #[arg(long)]
    signals: bool,
    /// With --signals: duplicate notifications sent in each of two batches.
    #[arg(long, default_value_t = 20_000)]
    duplicates: u32,
    /// Instead of a recall: the console (mfa-recall-console) with --users recalls in its namespace
    /// (their status written by the bench, no operator): the first byte of its pages, signed in
    /// with a Kubernetes token, and the time from a recall's status change to the event carrying
    /// it on the page's stream, --rounds times each.
    #[arg(long)]
    console: bool,
    /// Instead of a recall of the simulated Okta: a recall of an in-house store through the
    /// backend protocol, the reference backend (mfa-recall-pg-backend) over Debian's PostgreSQL
    /// (MFA_RECALL_POSTGRES_URL, from hack/postgres.sh) seeded with --users users; the wall time,
    /// and the CPU of the operator, the backend and PostgreSQL.
    #[arg(long)]
    inhouse: bool,
    /// Scratch folder.
    #[arg(long)]
    work: PathBuf,
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().join(name)
}

/// Starts a simulator process seeded with `users`; its URL.
fn start_sim(args: &Args, users: u32, per_minute: u64, token: &str) -> (Proc, String) {
    let credentials = args.work.join(format!("okta-{:08x}.json", fastrand::u32(..)));
    std::fs::write(&credentials, json!({ "api-token": token }).to_string()).unwrap();
    let mut child = Command::new(sibling("mfa-recall-sim"))
        .args(["--provider", "okta", "--users", &users.to_string(), "--per-minute", &per_minute.to_string(), "--credentials"])
        .arg(&credentials)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start mfa-recall-sim");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    (Proc(child), line.trim().to_string())
}

/// The IdentityBackend of the simulator at `url`. Unthrottled: the configured ceiling is far above
/// what the machine does. Limited: the announced budget is what paces.
fn backend_spec(args: &Args, url: &str) -> IdentityBackendSpec {
    let defaults = BackendLimits::default();
    let limits = BackendLimits { requests_per_second: 100_000, max_concurrency: args.in_flight, budget_share: args.budget_share.unwrap_or(defaults.budget_share), ..defaults };
    serde_json::from_value(json!({ "okta": { "url": url, "credentialsSecretRef": { "name": "okta-credentials" } }, "limits": limits })).unwrap()
}

async fn sim_stats(http: &reqwest::Client, url: &str) -> SimStats {
    http.get(format!("{url}/_sim/stats")).send().await.unwrap().json().await.unwrap()
}

/// Peak resident memory (MiB) and CPU seconds of a process, from /proc.
fn rss_and_cpu(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0) + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (hwm_kb / 1024.0, ticks / 100.0)
}

/// `mfa-recall report` of the bench recall, as an operator would run it: its wall time, peak RSS
/// (VmHWM read every 10 ms until it exits) and rows written, and whether the rows added up to
/// the recall's status (its exit code).
async fn report_run(args: &Args, ns: &str, ledger_key: &std::path::Path) -> Value {
    let output = args.work.join(format!("report-{ns}.csv"));
    let started = Instant::now();
    let child = Command::new(sibling("mfa-recall"))
        .args(["report", "bench", "--namespace", ns, "--format", "csv"])
        .arg("--key-file")
        .arg(ledger_key)
        .arg("--output")
        .arg(&output)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return json!({ "error": format!("starting mfa-recall report: {e}") }),
    };
    let mut peak_mib: f64 = 0.0;
    let status = loop {
        peak_mib = peak_mib.max(rss_and_cpu(child.id()).0);
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => return json!({ "error": format!("waiting for mfa-recall report: {e}") }),
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let rows = std::fs::read_to_string(&output).map(|text| text.lines().count().saturating_sub(1)).unwrap_or(0);
    json!({ "seconds": round(seconds), "peakRssMiB": round(peak_mib), "rows": rows, "addsUpToStatus": status.success() })
}

/// The apiserver's counters so far: (all writes, writes to mfarecalls/status, its CPU seconds).
async fn apiserver_counters(client: &Client) -> (f64, f64, f64) {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap_or_default();
    let (mut all, mut status) = (0.0, 0.0);
    let cpu = text.lines().find_map(|l| l.strip_prefix("process_cpu_seconds_total ")?.trim().parse().ok()).unwrap_or(f64::NAN);
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let write = ["verb=\"POST\"", "verb=\"PUT\"", "verb=\"PATCH\"", "verb=\"APPLY\"", "verb=\"DELETE\""].iter().any(|v| line.contains(v));
        let n: f64 = line.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0.0);
        if write {
            all += n;
            if line.contains("resource=\"mfarecalls\"") && line.contains("subresource=\"status\"") {
                status += n;
            }
        }
    }
    (all, status, cpu)
}

/// The operator (release build, its own process) watching `ns` with `extra` arguments, once its
/// backend `backend` is Ready and its `/readyz` answers 200: what is measured next is applied to an
/// operator already running, as in an incident, so its start-up is not counted. Also the ledger
/// key it signs with.
async fn start_operator(args: &Args, client: &Client, http: &reqwest::Client, ns: &str, backend: &str, extra: &[&str]) -> (Proc, PathBuf) {
    let health = free_addr();
    let ledger_key = args.work.join("ledger.key");
    std::fs::write(&ledger_key, format!("{:032x}{:032x}", fastrand::u128(..), fastrand::u128(..))).unwrap();
    let operator = Proc(
        Command::new(sibling("mfa-recall"))
            .args(["operator", "--namespace", ns, "--no-audit-stdout", "--instance", "bench", "--metrics-addr", &health.to_string()])
            .args(extra)
            .arg("--audit-file")
            .arg(args.work.join(format!("audit-{ns}.jsonl")))
            .arg("--ledger-key-file")
            .arg(&ledger_key)
            // Quiet unless asked for (MFA_RECALL_LOG=info when looking into a run).
            .env("MFA_RECALL_LOG", std::env::var("MFA_RECALL_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(args.work.join(format!("operator-{ns}.log"))).unwrap())
            .spawn()
            .expect("start the operator"),
    );
    let backends: Api<IdentityBackend> = Api::namespaced(client.clone(), ns);
    cluster::wait_for(&backends, backend, Duration::from_secs(60), |b| b.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))).await.unwrap();
    let ready = Instant::now();
    while !http.get(format!("http://{health}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(ready.elapsed() < Duration::from_secs(60), "the operator's /readyz did not answer 200 within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (operator, ledger_key)
}

/// `psql` against `url`: what it printed, trimmed; panics on an error.
fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql").args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", url, "-c", sql]).output().expect("psql runs (Debian's postgresql-client)");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// CPU seconds of the PostgreSQL server so far: its postmaster's (hack/postgres.sh's folder,
/// MFA_RECALL_POSTGRES_DIR, names it), with what its exited connection processes used (the
/// postmaster's counts of waited-for children), and its live children's.
fn postgres_cpu_seconds() -> f64 {
    let dir = std::env::var("MFA_RECALL_POSTGRES_DIR").expect("MFA_RECALL_POSTGRES_DIR: start PostgreSQL with hack/postgres.sh start DIR and source DIR/env");
    let pid_file = std::fs::read_to_string(format!("{dir}/data/postmaster.pid")).expect("the server's postmaster.pid");
    let postmaster: u32 = pid_file.lines().next().and_then(|l| l.trim().parse().ok()).expect("a pid on postmaster.pid's first line");
    // Fields after the name: state, ppid, ..., utime (12th), stime, cutime, cstime.
    let fields = |pid: &str| -> Vec<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect()).unwrap_or_default()
    };
    let own = fields(&postmaster.to_string());
    let mut ticks: f64 = own.get(11..15).map_or(0.0, |t| t.iter().sum());
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        let child = fields(&pid);
        if child.get(1).is_some_and(|ppid| *ppid == postmaster as f64) {
            ticks += child.get(11..13).map_or(0.0, |t| t.iter().sum());
        }
    }
    ticks / 100.0
}

/// A recall of an in-house store: the operator, the reference backend and PostgreSQL on this
/// machine, all users of a store seeded as a login service's tables are (three factors, a
/// session, a refresh token each, every event logged by the store's triggers).
async fn inhouse_run(args: &Args, client: &Client, http: &reqwest::Client) -> Value {
    let server = std::env::var("MFA_RECALL_POSTGRES_URL").expect("MFA_RECALL_POSTGRES_URL: start PostgreSQL with hack/postgres.sh start DIR and source DIR/env");
    let database = format!("bench_{:08x}", fastrand::u32(..));
    psql(&server, &format!("create database {database}"));
    let url = format!("{}/{database}", server.rsplit_once('/').unwrap().0);
    let token = format!("bench-token-{:032x}", fastrand::u128(..));
    let token_file = args.work.join("store-token.key");
    std::fs::write(&token_file, &token).unwrap();
    let listen = free_addr();
    let store = Proc(
        Command::new(sibling("mfa-recall-pg-backend"))
            .args(["--database-url", &url, "--listen", &listen.to_string(), "--apply-schema", "--connections", "16"])
            // Over TLS, as beside a real database (hack/postgres.sh's authority).
            .args(std::env::var("MFA_RECALL_POSTGRES_CA").map(|ca| vec!["--database-ca".to_string(), ca]).unwrap_or_default())
            .arg("--token-file")
            .arg(&token_file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(args.work.join("pg-backend.log")).unwrap())
            .spawn()
            .expect("start mfa-recall-pg-backend"),
    );
    let up = Instant::now();
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(up.elapsed() < Duration::from_secs(60), "the reference backend did not listen within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seeding = Instant::now();
    let last = args.users as i64 - 1;
    psql(&url, &format!(
        "insert into users (id, username, email) select 'u' || lpad(i::text, 7, '0'), 'user' || lpad(i::text, 7, '0') || '@example.com', 'user' || lpad(i::text, 7, '0') || '@example.com' from generate_series(0, {last}) i;
         insert into factors (id, user_id, kind, type, secret, created_at) select 'f' || lpad(i::text, 7, '0') || '-' || k, 'u' || lpad(i::text, 7, '0'), k, k, 'secret', now() - interval '30 days' from generate_series(0, {last}) i, unnest(array['totp', 'webauthn', 'recoveryCodes']) k;
         insert into sessions (id, user_id, expires_at) select 's' || lpad(i::text, 7, '0'), 'u' || lpad(i::text, 7, '0'), now() + interval '1 day' from generate_series(0, {last}) i;
         insert into refresh_tokens (id, user_id, token_hash, expires_at) select 'r' || lpad(i::text, 7, '0'), 'u' || lpad(i::text, 7, '0'), 'hash', now() + interval '30 days' from generate_series(0, {last}) i;
         analyze;"
    ));
    eprintln!("bench: in-house store with {} users seeded in {:.1} s", args.users, seeding.elapsed().as_secs_f64());

    let ns = format!("bench-{:05x}", fastrand::u32(..0xfffff));
    cluster::create_namespace(client, &ns).await.unwrap();
    let limits = BackendLimits { requests_per_second: 100_000, max_concurrency: args.in_flight, ..BackendLimits::default() };
    let spec = serde_json::from_value(json!({ "webhook": { "url": format!("http://{listen}"), "credentialsSecretRef": { "name": "store-credentials" } }, "limits": limits })).unwrap();
    cluster::create_backend(client, &ns, "store", spec, &[("token".to_string(), token.clone())].into()).await.unwrap();
    let (operator, _) = start_operator(args, client, http, &ns, "store", &["--concurrency", "4"]).await;
    let (_, operator_cpu_before) = rss_and_cpu(operator.0.id());
    let (_, backend_cpu_before) = rss_and_cpu(store.0.id());
    let postgres_before = postgres_cpu_seconds();
    let t0 = Instant::now();
    cluster::create_recall(client, &ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "bench"},
        "spec": {"reason": "benchmark", "backends": ["store"], "scope": {"allUsers": true}, "reEnrollment": {"gracePeriod": "72h", "checkInterval": "1h"}}
    }))
    .await
    .unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), &ns);
    let (done_secs, counts) = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(recall) = recalls.get_status("bench").await else { continue };
        let Some(status) = recall.status else { continue };
        let c = status.counts;
        if status.backends.iter().all(|b| b.listed) && c.targeted == args.users as i64 && c.invalidated + c.excluded + c.failed == c.targeted {
            break (t0.elapsed().as_secs_f64(), c);
        }
        assert!(t0.elapsed() < Duration::from_secs(3600), "not done after an hour: {c:?}");
    };
    let (operator_rss, operator_cpu) = rss_and_cpu(operator.0.id());
    let (backend_rss, backend_cpu) = rss_and_cpu(store.0.id());
    let postgres_cpu = postgres_cpu_seconds() - postgres_before;
    drop(operator);
    drop(store);
    let factors_left: i64 = psql(&url, "select count(*) from factors").parse().unwrap_or(-1);
    let sessions_left: i64 = psql(&url, "select (select count(*) from sessions) + (select count(*) from refresh_tokens)").parse().unwrap_or(-1);
    let removals: i64 = psql(&url, "select count(*) from events where type = 'factorRemoved'").parse().unwrap_or(-1);
    // The store itself says every user lost every factor and session, each removal logged.
    let users = args.users as i64;
    assert_eq!((counts.invalidated, counts.failed, factors_left, sessions_left, removals), (users, 0, 0, 0, 3 * users), "the store after the recall");
    let _ = Api::<mfa_recall::api::RecallLedgerSegment>::namespaced(client.clone(), &ns).delete_collection(&DeleteParams::default(), &Default::default()).await;
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).delete(&ns, &DeleteParams::default()).await;
    psql(&server, &format!("drop database {database} with (force)"));
    json!({
        "run": "inhouse",
        "users": args.users,
        "secondsToAllInvalidated": round(done_secs),
        "usersPerSecond": round(args.users as f64 / done_secs),
        "invalidated": counts.invalidated,
        "failed": counts.failed,
        "factorsRevoked": counts.factors_revoked.values().sum::<i64>(),
        "sessionsRevoked": counts.sessions_revoked,
        "factorsLeftInStore": factors_left,
        "sessionsLeftInStore": sessions_left,
        "factorRemovedEvents": removals,
        "operatorCpuSeconds": round(operator_cpu - operator_cpu_before),
        "operatorPeakRssMiB": round(operator_rss),
        "backendCpuSeconds": round(backend_cpu - backend_cpu_before),
        "backendPeakRssMiB": round(backend_rss),
        "postgresCpuSeconds": round(postgres_cpu),
        "inFlight": args.in_flight,
    })
}

/// The operator end to end: apply → every user invalidated.
async fn recall_run(args: &Args, client: &Client, http: &reqwest::Client, keep_timeline: bool) -> Value {
    let token = format!("00{:032x}", fastrand::u128(..));
    let started_sim = Instant::now();
    let (sim, url) = start_sim(args, args.users, args.per_minute, &token);
    eprintln!("bench: simulator with {} users ready in {:.1} s at {url}", args.users, started_sim.elapsed().as_secs_f64());

    let ns = format!("bench-{:05x}", fastrand::u32(..0xfffff));
    cluster::create_namespace(client, &ns).await.unwrap();
    let spec = backend_spec(args, &url);
    cluster::create_backend(client, &ns, "okta", spec, &[("api-token".to_string(), token.clone())].into()).await.unwrap();

    let (operator, ledger_key) = start_operator(args, client, http, &ns, "okta", &["--concurrency", "4"]).await;
    let pid = operator.0.id();
    let before_stats = sim_stats(http, &url).await;
    let (_, sim_cpu_before) = rss_and_cpu(sim.0.id());
    let (writes_before, status_before, apiserver_cpu_before) = apiserver_counters(client).await;

    let competitor = (args.competitor_per_minute > 0).then(|| {
        let counts = std::sync::Arc::new(Competitor::default());
        (tokio::spawn(compete(http.clone(), url.clone(), token.clone(), args.competitor_per_minute, counts.clone())), counts)
    });
    let applied_at = jiff::Timestamp::now();
    let t0 = Instant::now();
    cluster::create_recall(client, &ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "bench"},
        "spec": {"reason": "benchmark", "backends": ["okta"], "scope": {"allUsers": true}, "reEnrollment": {"gracePeriod": "72h", "checkInterval": "1h"}}
    }))
    .await
    .unwrap();
    eprintln!("bench: MfaRecall created at {applied_at}");
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), &ns);
    let mut timeline = Vec::new();
    let done_secs = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let recall = match recalls.get_status("bench").await {
            Ok(recall) => recall,
            Err(e) => {
                eprintln!("bench: reading status: {e}");
                continue;
            }
        };
        let Some(status) = recall.status else { continue };
        let c = &status.counts;
        let t = t0.elapsed().as_secs_f64();
        timeline.push((t, c.invalidated));
        if status.backends.iter().all(|b| b.listed) && c.targeted == args.users as i64 && c.invalidated + c.excluded + c.failed == c.targeted {
            break t;
        }
        if t > 3600.0 {
            panic!("not done after an hour: {c:?}");
        }
    };
    let recall = recalls.get_status("bench").await.unwrap();
    let counts = recall.status.unwrap().counts;
    let (rss_mib, cpu_seconds) = rss_and_cpu(pid);
    let (_, sim_cpu_seconds) = rss_and_cpu(sim.0.id());
    let (writes_after, status_after, apiserver_cpu_after) = apiserver_counters(client).await;
    let competed = competitor.map(|(task, counts)| {
        task.abort();
        use std::sync::atomic::Ordering::SeqCst;
        (counts.sent.load(SeqCst), counts.throttled.load(SeqCst))
    });
    let stats = sim_stats(http, &url).await;
    drop(operator);
    // Who re-registered, for every targeted user, from the ledger the recall just wrote.
    let report = if keep_timeline { Some(report_run(args, &ns, &ledger_key).await) } else { None };
    // The recall's own requests end with its last revocation; the re-enrollment check that
    // starts right after reads on until the end is seen in status, and is left out of the
    // request figures but not out of the CPU and 429 counts, which cover the whole window.
    let requests = stats.requests_to_last_write - before_stats.requests;
    let served = stats.requests - before_stats.requests;
    let throttled = stats.throttled - before_stats.throttled;
    let first_revocation = stats.first_write_ms.map(|ms| (ms - applied_at.as_millisecond()) as f64 / 1000.0);
    if let Some(path) = args.timeline.as_ref().filter(|_| keep_timeline) {
        let csv: String = std::iter::once("seconds,invalidated\n".to_string()).chain(timeline.iter().map(|(t, n)| format!("{t:.2},{n}\n"))).collect();
        std::fs::write(path, csv).unwrap();
    }
    // The ledger goes first: only kube-apiserver and etcd run here, no garbage collector or
    // namespace controller, so a deleted namespace would keep its ledger objects in etcd and a
    // reused apiserver would slow down run after run.
    let _ = Api::<mfa_recall::api::RecallLedgerSegment>::namespaced(client.clone(), &ns).delete_collection(&DeleteParams::default(), &Default::default()).await;
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).delete(&ns, &DeleteParams::default()).await;
    let mut result = json!({
        "run": if args.per_minute > 0 { "rate-limited" } else { "unthrottled" },
        "users": args.users,
        "secondsToAllInvalidated": round(done_secs),
        "secondsToFirstRevocation": first_revocation.map(round),
        "usersPerSecond": round(args.users as f64 / done_secs),
        "providerRequests": requests,
        "providerRequestsPerSecond": round(requests as f64 / done_secs),
        "requestsPerUser": round(requests as f64 / args.users as f64),
        "throttled": throttled,
        "throttledShare": round4(throttled as f64 / served.max(1) as f64),
        "operatorPeakRssMiB": round(rss_mib),
        "operatorCpuSeconds": round(cpu_seconds),
        "operatorCpuMicrosPerRequest": micros_per_request(cpu_seconds, served),
        "requestsAfterLastRevocation": served - requests,
        "simulatorCpuSeconds": round(sim_cpu_seconds - sim_cpu_before),
        "simulatorCpuMicrosPerRequest": micros_per_request(sim_cpu_seconds - sim_cpu_before, served),
        "apiserverWrites": writes_after - writes_before,
        "apiserverCpuSeconds": round(apiserver_cpu_after - apiserver_cpu_before),
        "statusWrites": status_after - status_before,
        "statusWritesPerSecond": round((status_after - status_before) / done_secs),
        "invalidated": counts.invalidated,
        "failed": counts.failed,
    });
    if let Some(report) = report {
        result["report"] = report;
    }
    if args.per_minute > 0 {
        // The bucket the recall leans on (Okta's users bucket): its budget in every window that
        // began after the apply and ended before the last user was done. Windows are fixed and
        // aligned to the clock, as Okta's are, so the partial first and last ones say nothing
        // about pacing.
        let done_at = applied_at.as_second() as f64 + done_secs;
        let full: Vec<_> = stats
            .windows
            .iter()
            .filter(|w| w.start >= applied_at.as_second() && (w.end as f64) <= done_at)
            .collect();
        let bucket = full.iter().max_by_key(|w| w.used).map(|w| w.bucket.clone()).unwrap_or_default();
        let windows: Vec<_> = full.iter().filter(|w| w.bucket == bucket).collect();
        let (used, allowed): (u64, u64) = windows.iter().fold((0, 0), |(u, a), w| (u + w.used, a + w.limit));
        result["budgetBucket"] = json!(bucket);
        result["fullWindows"] = json!(windows.len());
        result["shareOfBudgetUsed"] = if allowed > 0 { json!(round4(used as f64 / allowed as f64)) } else { Value::Null };
        result["shareOfBudgetUsedPerWindow"] = json!(windows.iter().map(|w| round4(w.used as f64 / w.limit as f64)).collect::<Vec<_>>());
        result["throttledInFullWindows"] = json!(windows.iter().map(|w| w.throttled).sum::<u64>());
        result["budgetShare"] = json!(args.budget_share.unwrap_or(BackendLimits::default().budget_share));
        // Every bucket's share over the same windows: the recall's calls spread over several.
        let mut by_bucket: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for w in &full {
            let entry = by_bucket.entry(w.bucket.as_str()).or_default();
            (entry.0, entry.1) = (entry.0 + w.used, entry.1 + w.limit);
        }
        result["shareOfBudgetUsedByBucket"] = json!(by_bucket.iter().map(|(b, (u, a))| (b.to_string(), round4(*u as f64 / (*a).max(1) as f64))).collect::<std::collections::BTreeMap<_, _>>());
    }
    if let Some((sent, refused)) = competed {
        // The simulator's 429s are both clients'; the recall's are the rest.
        result["competitorPerMinute"] = json!(args.competitor_per_minute);
        result["competitorRequests"] = json!(sent);
        result["competitorThrottled"] = json!(refused);
        result["recallThrottled"] = json!(throttled.saturating_sub(refused));
        result["recallThrottledShare"] = json!(round4(throttled.saturating_sub(refused) as f64 / (served.saturating_sub(sent)).max(1) as f64));
    }
    result
}

/// Resident memory now (MiB), from /proc.
fn rss_now(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

/// A recall's status as the operator would write it while `done` of `of` users are invalidated.
fn bench_status(done: i64, of: i64) -> Value {
    use mfa_recall::api::{BackendProgress, MfaRecallStatus, RecallCounts, RecallPhase};
    let counts = RecallCounts { targeted: of, invalidated: done, pending: done, sessions_revoked: done, ..Default::default() };
    let backend = BackendProgress { name: "okta".into(), listed: true, counts: counts.clone(), ..Default::default() };
    json!({ "status": MfaRecallStatus { phase: RecallPhase::Revoking, counts, backends: vec![backend], ..Default::default() } })
}

/// Milliseconds at the 50th and 95th percentiles, and the most, of `samples`.
fn percentiles_ms(mut samples: Vec<Duration>) -> Value {
    samples.sort();
    let at = |q: f64| round(samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0);
    json!({ "p50": at(0.5), "p95": at(0.95), "max": at(1.0), "samples": samples.len() })
}

/// `--console`: page first byte and status-change-to-page time.
async fn console_run(args: &Args, client: &Client, http: &reqwest::Client) -> Value {
    assert!(args.users >= 1 && args.rounds >= 1, "--console needs --users (the recalls listed) and --rounds of at least 1");
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::{Patch, PatchParams, PostParams};
    let ns = format!("bench-console-{:05x}", fastrand::u32(..0xfffff));
    cluster::create_namespace(client, &ns).await.unwrap();
    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), &ns);
    for i in 0..args.users {
        let recall: MfaRecall = serde_json::from_value(json!({ "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": { "name": format!("bench-{i:04}") },
            "spec": { "reason": "bench", "backends": ["okta"], "scope": { "users": ["someone"] } } })).unwrap();
        recalls.create(&PostParams::default(), &recall).await.unwrap();
        recalls.patch_status(&format!("bench-{i:04}"), &PatchParams::default(), &Patch::Merge(bench_status(0, 1000))).await.unwrap();
    }
    // A person who may read recalls, signing in with their ServiceAccount's token.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    accounts.create(&PostParams::default(), &serde_json::from_value(json!({ "metadata": { "name": "responder" } })).unwrap()).await.unwrap();
    let role = json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": { "name": "responder" },
        "rules": [{ "apiGroups": ["mfarecall.io"], "resources": ["mfarecalls", "mfabypasses", "identitybackends"], "verbs": ["get", "list", "watch"] },
                  { "apiGroups": ["mfarecall.io"], "resources": ["recallledgersegments"], "verbs": ["get"] }, { "apiGroups": [""], "resources": ["events"], "verbs": ["list"] }] });
    let binding = json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": { "name": "responder" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "responder" }, "subjects": [{ "kind": "ServiceAccount", "name": "responder", "namespace": ns }] });
    let apply = PatchParams::apply("mfa-recall-bench");
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), &ns).patch("responder", &apply, &Patch::Apply(role)).await.unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), &ns).patch("responder", &apply, &Patch::Apply(binding)).await.unwrap();
    let request: TokenRequest = serde_json::from_value(json!({ "spec": { "audiences": [], "expirationSeconds": 3600 } })).unwrap();
    let answer: TokenRequest = accounts.create_subresource("token", "responder", &PostParams::default(), &request).await.unwrap();
    let token = answer.status.unwrap().token.unwrap();

    // The console with the bench's own kubeconfig (an admin may impersonate).
    let addr = free_addr();
    let url = format!("http://localhost:{}", addr.port());
    let _console = Proc(
        Command::new(sibling("mfa-recall-console"))
            .args(["--listen", &addr.to_string(), "--public-url", &url, "--namespace", &ns])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(args.work.join("console.log")).unwrap())
            .spawn()
            .expect("start the console"),
    );
    let started = Instant::now();
    while !http.get(format!("{url}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(started.elapsed() < Duration::from_secs(30), "the console did not answer within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signed_in = plain.post(format!("{url}/auth/token")).header("origin", &url).form(&[("token", token.as_str())]).send().await.unwrap();
    assert_eq!(signed_in.status(), 303, "the token sign-in");
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();

    // First byte of the recalls page (every recall listed) and of one recall's page.
    let first_byte = |path: String| {
        let (plain, cookie) = (plain.clone(), cookie.clone());
        async move {
            let mut samples = Vec::new();
            for _ in 0..args.rounds {
                let start = Instant::now();
                let response = plain.get(&path).header("cookie", &cookie).send().await.unwrap();
                samples.push(start.elapsed());
                assert_eq!(response.status(), 200, "{path}");
                response.bytes().await.unwrap();
            }
            percentiles_ms(samples)
        }
    };
    let list_page = first_byte(format!("{url}/")).await;
    let recall_page = first_byte(format!("{url}/recalls/bench-0000")).await;

    // A status change to the event carrying it on the recalls page's stream.
    let mut events = plain.get(format!("{url}/events/recalls")).header("cookie", &cookie).send().await.unwrap();
    let mut buffer = String::new();
    let last = format!("bench-{:04}", args.users - 1);
    testkit::sse::next(&mut events, &mut buffer, "recall", |v| v["name"] == last.as_str()).await;
    let mut to_page = Vec::new();
    for round in 1..=args.rounds as i64 {
        let start = Instant::now();
        recalls.patch_status("bench-0000", &PatchParams::default(), &Patch::Merge(bench_status(round, 1000))).await.unwrap();
        testkit::sse::next(&mut events, &mut buffer, "recall", |v| v["name"] == "bench-0000" && v["done"] == round).await;
        to_page.push(start.elapsed());
    }
    drop(events);
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).delete(&ns, &DeleteParams::default()).await;
    json!({ "run": "console", "recalls": args.users, "msFirstByteRecallsPage": list_page, "msFirstByteRecallPage": recall_page, "msStatusChangeToPageEvent": percentiles_ms(to_page) })
}

/// One round of `--signals`: a fresh simulator, namespace, policy and operator; an Alertmanager
/// notification naming one user, timed to the first revocation; then (first round only) two
/// batches of its duplicates.
async fn signals_run(args: &Args, client: &Client, http: &reqwest::Client, round_no: u32) -> Value {
    let token = format!("00{:032x}", fastrand::u128(..));
    let (sim, url) = start_sim(args, args.users, 0, &token);
    let ns = format!("bench-signals-{:05x}", fastrand::u32(..0xfffff));
    cluster::create_namespace(client, &ns).await.unwrap();
    cluster::create_backend(client, &ns, "okta", backend_spec(args, &url), &[("api-token".to_string(), token.clone())].into()).await.unwrap();
    let bearer = format!("{:032x}{:032x}", fastrand::u128(..), fastrand::u128(..));
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "am-token" }, "stringData": { "token": bearer } })).unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns).create(&Default::default(), &secret).await.unwrap();
    let policy: mfa_recall::api::MfaRecallPolicy = serde_json::from_value(json!({ "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecallPolicy", "metadata": { "name": "leak" },
        "spec": { "signals": { "alertmanager": { "tokenSecretRef": { "name": "am-token" } } }, "maxRecallsPerHour": 100,
                  "template": { "reason": "benchmark", "backends": ["okta"], "scope": { "usersFromSignal": true }, "reEnrollment": { "checkInterval": "1h" } } } })).unwrap();
    let policies: Api<mfa_recall::api::MfaRecallPolicy> = Api::namespaced(client.clone(), &ns);
    policies.create(&Default::default(), &policy).await.unwrap();
    let receiver = free_addr();
    let (operator, _) = start_operator(args, client, http, &ns, "okta", &["--signals-addr", &receiver.to_string()]).await;
    let pid = operator.0.id();
    cluster::wait_for(&policies, "leak", Duration::from_secs(60), |p| p.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))).await.unwrap();
    let endpoint = format!("http://{receiver}/v1/signals/{ns}/leak/alertmanager");
    let notification = json!({ "version": "4", "groupKey": "{}:{alertname=\"CredentialLeak\"}", "truncatedAlerts": 0, "status": "firing", "receiver": "mfa-recall",
        "groupLabels": { "alertname": "CredentialLeak" }, "commonLabels": { "alertname": "CredentialLeak" }, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{ "status": "firing", "labels": { "alertname": "CredentialLeak", "user": idp_sim::username(7) }, "annotations": { "summary": "credentials in a dump" },
                     "startsAt": jiff::Timestamp::now().to_string(), "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": format!("{:016x}", fastrand::u64(..)) }] })
    .to_string();
    let sent_at = jiff::Timestamp::now();
    let t0 = Instant::now();
    let answer = http.post(&endpoint).bearer_auth(&bearer).body(notification.clone()).send().await.unwrap();
    let answered = t0.elapsed().as_secs_f64();
    assert!(answer.status().is_success(), "the receiver refused the notification: {}", answer.text().await.unwrap_or_default());
    let first_revocation = loop {
        if let Some(ms) = sim_stats(http, &url).await.first_write_ms {
            break (ms - sent_at.as_millisecond()) as f64 / 1000.0;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no revocation within 60 s of the signal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut result = json!({ "run": "signals", "round": round_no, "users": args.users, "secondsSignalToRecallCreated": round4(answered), "secondsSignalToFirstRevocation": round4(first_revocation) });
    if round_no == 1 {
        // Duplicates of the notification just taken, as Alertmanager repeats a firing group.
        let rss_before = rss_now(pid);
        let mut batches = Vec::new();
        for _ in 0..2 {
            let sent = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let t = Instant::now();
            let clients: Vec<_> = (0..32)
                .map(|_| {
                    let (http, endpoint, bearer, body, sent, total) = (http.clone(), endpoint.clone(), bearer.clone(), notification.clone(), sent.clone(), args.duplicates);
                    tokio::spawn(async move {
                        let mut refused = 0u32;
                        while sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                            let response = http.post(&endpoint).bearer_auth(&bearer).body(body.clone()).send().await.unwrap();
                            let said: Value = response.json().await.unwrap_or_default();
                            refused += u32::from(said["signals"][0]["outcome"] == "duplicate");
                        }
                        refused
                    })
                })
                .collect();
            let mut duplicates = 0;
            for client in clients {
                duplicates += client.await.unwrap();
            }
            let seconds = t.elapsed().as_secs_f64();
            assert_eq!(duplicates, args.duplicates, "every repeat was taken as a duplicate");
            batches.push((seconds, rss_now(pid)));
        }
        let recalls = Api::<MfaRecall>::namespaced(client.clone(), &ns).list(&Default::default()).await.unwrap().items.len();
        assert_eq!(recalls, 1, "one incident, one recall");
        let (hwm, cpu) = rss_and_cpu(pid);
        result["duplicatesPerBatch"] = json!(args.duplicates);
        result["signalsPerSecond"] = json!(batches.iter().map(|(s, _)| round(args.duplicates as f64 / s)).collect::<Vec<_>>());
        result["operatorRssMiB"] = json!({ "beforeDuplicates": round(rss_before), "afterFirstBatch": round(batches[0].1), "afterSecondBatch": round(batches[1].1), "peak": round(hwm) });
        result["operatorCpuSeconds"] = json!(round(cpu));
    }
    drop(operator);
    drop(sim);
    let _ = Api::<mfa_recall::api::RecallLedgerSegment>::namespaced(client.clone(), &ns).delete_collection(&DeleteParams::default(), &Default::default()).await;
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).delete(&ns, &DeleteParams::default()).await;
    result
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Requests and 429s of the competing client.
#[derive(Default)]
struct Competitor {
    sent: std::sync::atomic::AtomicU64,
    throttled: std::sync::atomic::AtomicU64,
}

/// Another client of the quota: reads one user from the users bucket `per_minute` times a
/// minute, evenly, without looking at the budget (as a provisioning job would not).
async fn compete(http: reqwest::Client, url: String, token: String, per_minute: u64, counts: std::sync::Arc<Competitor>) {
    use std::sync::atomic::Ordering::SeqCst;
    let mut tick = tokio::time::interval(Duration::from_secs(60) / u32::try_from(per_minute).unwrap_or(u32::MAX));
    loop {
        tick.tick().await;
        let answer = http.get(format!("{url}/api/v1/users?limit=1")).header("authorization", format!("SSWS {token}")).send().await;
        counts.sent.fetch_add(1, SeqCst);
        if answer.is_ok_and(|a| a.status() == reqwest::StatusCode::TOO_MANY_REQUESTS) {
            counts.throttled.fetch_add(1, SeqCst);
        }
    }
}

/// An entry of Okta's factor or authenticator-enrollment list, as far as the load generator reads it.
#[derive(serde::Deserialize)]
struct Listed {
    id: String,
    #[serde(rename = "type", default)]
    kind: String,
}

/// The limit: the same requests the adapter makes per user, from a load generator with no
/// pacing at all, 64 at a time.
async fn limit_run(args: &Args, http: &reqwest::Client) -> Value {
    let token = format!("00{:032x}", fastrand::u128(..));
    let (sim, url) = start_sim(args, args.users, 0, &token);
    let auth = format!("SSWS {token}");
    let t0 = Instant::now();
    // This process does nothing else meanwhile, so its CPU time is the generator's.
    let (_, cpu_before) = rss_and_cpu(std::process::id());
    let (_, sim_cpu_before) = rss_and_cpu(sim.0.id());
    let requests = Arc::new(AtomicU64::new(0));
    // Listing, as the operator does it: pages of 200 by Link.
    let mut ids = Vec::with_capacity(args.users as usize);
    let mut next = Some(format!("{url}/api/v1/users?limit=200"));
    while let Some(page) = next.take() {
        let response = http.get(&page).header("authorization", &auth).send().await.unwrap();
        requests.fetch_add(1, Ordering::Relaxed);
        next = response
            .headers()
            .get_all("link")
            .iter()
            .filter_map(|l| l.to_str().ok())
            .flat_map(|l| l.split(','))
            .find(|entry| entry.contains("rel=\"next\""))
            .and_then(|entry| Some(entry.split('<').nth(1)?.split('>').next()?.to_string()));
        let users: Vec<Value> = response.json().await.unwrap();
        ids.extend(users.into_iter().filter_map(|u| u["id"].as_str().map(String::from)));
    }
    let counted = requests.clone();
    let http = http.clone();
    in_shards(ids, args.in_flight as usize, move |id| {
        let (http, url, auth, requests) = (http.clone(), url.clone(), auth.clone(), counted.clone());
        async move {
            // Exactly the adapter's requests: both lists (it merges them by id), sessions
            // and grants ended, then every factor listed and every enrollment only the
            // enrollments API shows (FastPass), each on its own path. The lists are read
            // for their ids; answers to deletes by their status alone.
            let get = |path: String| http.get(format!("{url}{path}")).header("authorization", &auth).send();
            let listed = |path: String| async { get(path).await.unwrap().json::<Vec<Listed>>().await.unwrap_or_default() };
            let factors = listed(format!("/api/v1/users/{id}/factors")).await;
            let enrollments = listed(format!("/api/v1/users/{id}/authenticator-enrollments")).await;
            let delete = |path: String| http.delete(format!("{url}{path}")).header("authorization", &auth).send();
            let _ = delete(format!("/api/v1/users/{id}/sessions?oauthTokens=true&forgetDevices=true")).await;
            let _ = delete(format!("/api/v1/users/{id}/grants")).await;
            let mut n = 4;
            for f in &factors {
                let _ = delete(format!("/api/v1/users/{id}/factors/{}", f.id)).await;
                n += 1;
            }
            for e in enrollments.iter().filter(|e| e.kind != "password" && !factors.iter().any(|f| f.id == e.id)) {
                let _ = delete(format!("/api/v1/users/{id}/authenticator-enrollments/{}", e.id)).await;
                n += 1;
            }
            requests.fetch_add(n, Ordering::Relaxed);
        }
    })
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let requests = requests.load(Ordering::Relaxed);
    let (_, cpu_after) = rss_and_cpu(std::process::id());
    let (_, sim_cpu_seconds) = rss_and_cpu(sim.0.id());
    json!({ "run": "limit", "users": args.users, "seconds": round(secs), "usersPerSecond": round(args.users as f64 / secs),
            "providerRequests": requests, "providerRequestsPerSecond": round(requests as f64 / secs),
            "generatorCpuSeconds": round(cpu_after - cpu_before),
            "generatorCpuMicrosPerRequest": micros_per_request(cpu_after - cpu_before, requests),
            "simulatorCpuSeconds": round(sim_cpu_seconds - sim_cpu_before),
            "simulatorCpuMicrosPerRequest": micros_per_request(sim_cpu_seconds - sim_cpu_before, requests) })
}

/// One layer of the operator, in this process against a fresh simulator, for `--layers`. The
/// load generator (the limit run) is the floor. `adapter` adds the Okta adapter and its HTTP
/// plumbing (cap, pacing, budgets, timeouts, retries, metrics, typed answers): each user's calls
/// as the engine makes them, sharded as the generator's are, nothing recorded. `engine` adds the
/// recall engine: write-ahead snapshots handed over in segments, the audit trail written to disk
/// line by line, each ledger segment encoded as the ledger encodes it and then dropped
/// (storing it in the apiserver is what a recall adds on top).
/// What the process spends per provider request is the layer's cost, as the generator's is.
async fn layer_run(args: &Args, layer: &str) -> Value {
    if layer == "generator" {
        let mut run = limit_run(args, &reqwest::Client::builder().pool_max_idle_per_host(128).build().unwrap()).await;
        run["cpuMicrosPerRequest"] = run["generatorCpuMicrosPerRequest"].clone();
        return run;
    }
    let token = format!("00{:032x}", fastrand::u128(..));
    let (sim, url) = start_sim(args, args.users, 0, &token);
    let mut backend = IdentityBackend::new("okta", backend_spec(args, &url));
    backend.metadata.namespace = Some("bench".into());
    let secret = k8s_openapi::api::core::v1::Secret {
        data: Some([("api-token".to_string(), k8s_openapi::ByteString(token.into_bytes()))].into()),
        ..Default::default()
    };
    let provider = mfa_recall::backends::connect(&backend, Some(&secret), &Default::default()).expect("the bench's own backend connects to its simulator");
    let stats_http = reqwest::Client::new();
    let before = sim_stats(&stats_http, &url).await.requests;
    let (_, cpu_before) = rss_and_cpu(std::process::id());
    let (_, sim_cpu_before) = rss_and_cpu(sim.0.id());
    let t0 = Instant::now();
    match layer {
        "adapter" => adapter_layer(provider, args.in_flight as usize).await,
        "engine" => {
            let trail = args.work.join(format!("audit-layers-{:08x}.jsonl", fastrand::u32(..)));
            let audit = Arc::new(AuditLog::open(Some(&trail), "bench", false).unwrap());
            let (_keep_going, stop) = tokio::sync::watch::channel(false);
            let runner = Runner { provider, ledger: Arc::new(EncodedLedger::default()), audit, progress: Default::default(), stop };
            let job = RecallJob {
                recall: "bench/layers".into(),
                backend: "bench/okta".into(),
                scope: ScopeSelector::AllUsers,
                exclude_users: vec![],
                exclude_groups: vec![],
                kinds: vec![FactorKind::All],
                revoke_sessions: true,
                cutoff: jiff::Timestamp::now(),
                concurrency: args.in_flight as usize,
                window: Default::default(),
                notices: None,
                channel: Default::default(),
                plan_only: false,
                rollout: None,
                exclusions_now: None,
            };
            runner.revoke(&job).await.unwrap();
            let invalidated = runner.progress.lock().unwrap().counts.invalidated;
            assert_eq!(invalidated, args.users as i64, "the engine layer left users not invalidated");
            let _ = std::fs::remove_file(trail);
        }
        other => panic!("no layer {other}"),
    }
    let secs = t0.elapsed().as_secs_f64();
    let (_, cpu_after) = rss_and_cpu(std::process::id());
    let (_, sim_cpu_after) = rss_and_cpu(sim.0.id());
    let requests = sim_stats(&stats_http, &url).await.requests - before;
    json!({ "users": args.users, "seconds": round(secs), "usersPerSecond": round(args.users as f64 / secs),
            "providerRequests": requests, "cpuMicrosPerRequest": micros_per_request(cpu_after - cpu_before, requests),
            "simulatorCpuMicrosPerRequest": micros_per_request(sim_cpu_after - sim_cpu_before, requests) })
}

/// Okta's documented per-minute limits of the buckets the watch uses (IDP-NOTES.md): the share of
/// them a check uses, at the default check interval, is what the window costs the organisation.
const OKTA_PER_MINUTE: [(&str, f64); 2] = [("logs", 120.0), ("users", 600.0)];

/// `reEnrollment.checkInterval`'s default, in seconds.
fn check_interval_seconds() -> f64 {
    let default = mfa_recall::api::ReEnrollment::default().check_interval;
    mfa_recall::duration::CHECK_INTERVAL.parse(&default).expect("the default check interval is within its bounds").as_secs_f64()
}

/// What one check costs by bucket: requests, and the share of the bucket's per-minute limit it
/// uses when checks run at the default interval.
fn check_cost(before: &SimStats, after: &SimStats, seconds: f64) -> Value {
    let mut by_bucket = serde_json::Map::new();
    for (bucket, limit) in OKTA_PER_MINUTE {
        let n: u64 = after.by_bucket.iter().filter(|(k, _)| k.ends_with(&format!(" {bucket}"))).map(|(k, v)| v - before.by_bucket.get(k).copied().unwrap_or(0)).sum();
        let per_minute = n as f64 * 60.0 / check_interval_seconds();
        by_bucket.insert(bucket.into(), json!({ "requests": n, "shareOfLimit": round4(per_minute / limit) }));
    }
    json!({ "requests": after.requests - before.requests, "seconds": round(seconds), "byBucket": by_bucket })
}

/// The window with `args.users` pending users on a simulated Okta: the users are recalled in this
/// process (engine and adapter, no apiserver), then one check asks every pending user (per-user
/// polling), one reads the stream after `args.enrollments` users enrolled, and one reads the
/// stream with nothing new (the steady state). Each check's requests by bucket, its share of
/// Okta's limits at the default interval, and how long it took: an enrollment is counted and
/// flagged within one interval plus that.
async fn window_run(args: &Args) -> Value {
    let token = format!("00{:032x}", fastrand::u128(..));
    let (sim, url) = start_sim(args, args.users, 0, &token);
    let mut backend = IdentityBackend::new("okta", backend_spec(args, &url));
    backend.metadata.namespace = Some("bench".into());
    let secret = k8s_openapi::api::core::v1::Secret { data: Some([("api-token".to_string(), k8s_openapi::ByteString(token.into_bytes()))].into()), ..Default::default() };
    let provider = mfa_recall::backends::connect(&backend, Some(&secret), &Default::default()).expect("the bench's own backend connects to its simulator");
    let trail = args.work.join(format!("audit-window-{:08x}.jsonl", fastrand::u32(..)));
    let audit = Arc::new(AuditLog::open(Some(&trail), "bench", false).unwrap());
    let (_keep_going, stop) = tokio::sync::watch::channel(false);
    let ledger = Arc::new(mfa_recall::ledger::MemoryLedger::default());
    let progress = mfa_recall::engine::SharedProgress::default();
    let runner = Runner { provider, ledger, audit, progress: progress.clone(), stop };
    // Who will enroll, each from their own address (one address for many would be a burst), one
    // in ten abroad; each signed in from home before the recall, so the rules have a baseline.
    let http = reqwest::Client::new();
    let stride = (args.users / args.enrollments.max(1)).max(1);
    let enrolling: Vec<(String, String, String)> = (0..args.enrollments.min(args.users))
        .map(|n| {
            let home = format!("198.51.{}.{}", 100 + n / 250 % 2, n % 250);
            let from = if n % 10 == 0 { format!("100.64.{}.{}", n / 250 % 250, n % 250) } else { home.clone() };
            (idp_sim::username(n * stride), home, from)
        })
        .collect();
    let act = async |name: &str, what: Value, ip: &str| {
        let reply = http.post(format!("{url}/_sim/users/{}/activity", idp_sim::percent_encode(name))).json(&json!({ "what": what, "ip": ip })).send().await.unwrap();
        assert!(reply.status().is_success(), "{name}: {}", reply.status());
    };
    for (name, home, _) in &enrolling {
        act(name, json!({ "kind": "signIn" }), home).await;
    }
    let cutoff = jiff::Timestamp::now();
    let window = mfa_recall::engine::WindowSettings { started: Some(cutoff), ..Default::default() };
    let job = RecallJob {
        recall: "bench/window".into(),
        backend: "okta".into(),
        scope: ScopeSelector::AllUsers,
        exclude_users: vec![],
        exclude_groups: vec![],
        kinds: vec![FactorKind::All],
        revoke_sessions: true,
        cutoff,
        concurrency: args.in_flight as usize,
        window,
        notices: None,
        channel: Default::default(),
        plan_only: false,
        rollout: None,
        exclusions_now: None,
    };
    let t0 = Instant::now();
    runner.revoke(&job).await.unwrap();
    let recall_seconds = t0.elapsed().as_secs_f64();
    let pending = progress.lock().unwrap().counts.pending;

    // Per-user polling: every pending user asked once.
    let before = sim_stats(&http, &url).await;
    let t = Instant::now();
    runner.poll_pending(&job).await.unwrap();
    let polling = check_cost(&before, &sim_stats(&http, &url).await, t.elapsed().as_secs_f64());

    // The stream: the first read from the cutoff takes in the recall's own deactivations.
    runner.check_re_enrollment(&job).await.unwrap();
    for (name, _, from) in &enrolling {
        act(name, json!({ "kind": "enroll", "factor": "totp" }), from).await;
    }
    let counted_before = progress.lock().unwrap().counts.clone();
    let before = sim_stats(&http, &url).await;
    let t = Instant::now();
    runner.check_re_enrollment(&job).await.unwrap();
    let stream = check_cost(&before, &sim_stats(&http, &url).await, t.elapsed().as_secs_f64());
    let counted = progress.lock().unwrap().counts.clone();
    let before = sim_stats(&http, &url).await;
    let t = Instant::now();
    runner.check_re_enrollment(&job).await.unwrap();
    let steady = check_cost(&before, &sim_stats(&http, &url).await, t.elapsed().as_secs_f64());
    drop(sim);
    let _ = std::fs::remove_file(trail);
    json!({
        "run": "window", "users": args.users, "pending": pending, "recallSeconds": round(recall_seconds),
        "checkIntervalSeconds": check_interval_seconds(), "sweepPerCheck": mfa_recall::api::DEFAULT_SWEEP_PER_CHECK, "enrollments": args.enrollments,
        "perUserPolling": polling,
        "stream": { "afterEnrollments": stream, "steady": steady,
                    "reEnrolledCounted": counted.re_enrolled - counted_before.re_enrolled, "flagged": counted.anomalies - counted_before.anomalies },
    })
}

/// A ledger that does the operator's share of storing a segment, encoding it as the operator's
/// ledger does (whole the first time, its outcomes after), and keeps nothing: a fresh recall
/// reads no segment back.
#[derive(Default)]
struct EncodedLedger {
    written: std::sync::Mutex<std::collections::HashSet<u32>>,
}

#[async_trait::async_trait]
impl LedgerStore for EncodedLedger {
    async fn segments(&self, _backend: &str) -> mfa_recall::Result<Vec<u32>> {
        Ok(Vec::new())
    }
    async fn read(&self, backend: &str, index: u32) -> mfa_recall::Result<Segment> {
        Err(mfa_recall::Error::Ledger { name: format!("{backend}/{index}"), message: "the bench keeps no segment".into() })
    }
    async fn write(&self, segment: &Segment) -> mfa_recall::Result<()> {
        let first = self.written.lock().unwrap().insert(segment.index);
        std::hint::black_box(if first { ledger::encode(segment)? } else { ledger::encode(&segment.outcomes())? });
        Ok(())
    }
    async fn read_watch(&self, _backend: &str) -> mfa_recall::Result<Option<mfa_recall::watch::WatchState>> {
        Ok(None)
    }
    async fn write_watch(&self, state: &mfa_recall::watch::WatchState) -> mfa_recall::Result<()> {
        std::hint::black_box(ledger::encode(state)?);
        Ok(())
    }
    fn pseudonym(&self, value: &str) -> String {
        // The operator's cost of a pseudonym, under a key nothing outlives.
        ledger::pseudonym(&mfa_recall::keys::HmacKey::new(b"the bench's pseudonym key, per process", "the bench's key").unwrap(), value)
    }
}

/// Every user through the adapter, sharded as the load generator's are: list, snapshot, end
/// sessions, delete each factor, require enrollment.
async fn adapter_layer(provider: Arc<dyn IdentityProvider>, in_flight: usize) {
    let mut users: Vec<UserRef> = Vec::new();
    let mut cursor = None;
    loop {
        let page = provider.list_users(cursor.as_deref()).await.unwrap();
        users.extend(page.users);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let cutoff = jiff::Timestamp::now();
    in_shards(users, in_flight, move |user| {
        let provider = provider.clone();
        async move {
            let snapshot = provider.snapshot(&user, &[FactorKind::All], cutoff).await.unwrap();
            provider.revoke_sessions(&user, &snapshot).await.unwrap();
            for factor in &snapshot.factors {
                provider.revoke_factor(&user, factor).await.unwrap();
            }
            provider.require_enrollment(&user, &snapshot.factors, Default::default()).await.unwrap();
        }
    })
    .await;
}

/// Works through `items`, `in_flight` at a time, over one task per runtime thread sharing the
/// list, as the operator's workers share the users: the load generator and the adapter layer go
/// the same way, so they differ only in what they do per item.
async fn in_shards<T, W, F>(items: Vec<T>, in_flight: usize, work: W)
where
    T: Send + 'static,
    W: Fn(T) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let shards = tokio::runtime::Handle::current().metrics().num_workers();
    let items = Arc::new(std::sync::Mutex::new(items));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..shards {
        let (items, work) = (items.clone(), work.clone());
        tasks.spawn(async move {
            let next = futures::stream::poll_fn(move |_| std::task::Poll::Ready(items.lock().unwrap().pop()));
            next.for_each_concurrent(in_flight.div_ceil(shards), work).await;
        });
    }
    tasks.join_all().await;
}

/// The script, in the workspace's `hack/bench` (this crate lives two levels below the root).
fn baseline_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/bench/baseline_okta.py")
}

#[test]
fn the_baseline_script_is_where_the_bench_looks() {
    assert!(baseline_script().is_file(), "{}", baseline_script().display());
}

/// The baseline: the Python admin script responders write, one request at a time.
fn baseline_run(args: &Args) -> Value {
    let token = format!("00{:032x}", fastrand::u128(..));
    let (_sim, url) = start_sim(args, args.baseline_users, 0, &token);
    let script = baseline_script();
    let output = Command::new("python3").arg(&script).args([&url, &token]).output().expect("python3 runs the baseline script");
    assert!(output.status.success(), "baseline script failed: {}", String::from_utf8_lossy(&output.stderr));
    let mut result: Value = serde_json::from_slice(&output.stdout).expect("the baseline prints JSON");
    result["run"] = json!("baseline-script");
    result
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// CPU seconds spent over `requests` provider requests, as microseconds per request (rounded).
fn micros_per_request(cpu_seconds: f64, requests: u64) -> f64 {
    round(cpu_seconds * 1e6 / requests.max(1) as f64)
}

fn round4(x: f64) -> f64 {
    (x * 10000.0).round() / 10000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work).unwrap();
    if args.window {
        let args = args.clone();
        println!("{}", tokio::spawn(async move { window_run(&args).await }).await.unwrap());
        return;
    }
    if args.layers {
        // Alternated, so a drift of the machine's speed shows in every layer alike. Each in a task
        // of its own, as the operator runs a recall (not on the thread that blocks on main).
        for round in 1..=args.rounds {
            for layer in &args.layer_names {
                let (args, name) = (args.clone(), layer.clone());
                let mut run = tokio::spawn(async move { layer_run(&args, &name).await }).await.unwrap();
                run["run"] = json!("layer");
                run["layer"] = json!(layer);
                run["round"] = json!(round);
                println!("{run}");
            }
        }
        return;
    }
    let client = Client::try_default().await.expect("KUBECONFIG of the bench apiserver");
    let http = reqwest::Client::builder().pool_max_idle_per_host(128).build().unwrap();
    if args.console {
        println!("{}", console_run(&args, &client, &http).await);
        return;
    }
    if args.inhouse {
        println!("{}", inhouse_run(&args, &client, &http).await);
        return;
    }
    if args.signals {
        for round in 1..=args.rounds {
            println!("{}", signals_run(&args, &client, &http, round).await);
        }
        return;
    }
    if args.no_references {
        println!("{}", recall_run(&args, &client, &http, true).await);
        return;
    }
    // Limit runs and recalls alternate (limit, recall, limit, ...): each recall is compared with
    // the limit runs right before and right after it, so a drift of the machine's speed during
    // the pair shows in both sides. Its ratio is to their mean; the ratio to the faster of the
    // two is given as well, the bound a machine that slowed down during one of them cannot flatter.
    let mut limits = vec![limit_run(&args, &http).await];
    limits[0]["limitRun"] = json!(0);
    let mut recalls = Vec::new();
    for round in 1..=args.rounds {
        let mut recall = recall_run(&args, &client, &http, round == 1).await;
        let mut limit = limit_run(&args, &http).await;
        limit["limitRun"] = json!(round);
        recall["round"] = json!(round);
        recall["limitRunsEitherSide"] = json!([round - 1, round]);
        limits.push(limit);
        recalls.push(recall);
    }
    let baseline = baseline_run(&args);
    let speed = |run: &Value| run["usersPerSecond"].as_f64().unwrap_or(f64::NAN);
    for (i, recall) in recalls.iter_mut().enumerate() {
        let (before, after) = (speed(&limits[i]), speed(&limits[i + 1]));
        let mean = (before + after) / 2.0;
        recall["limitUsersPerSecond"] = json!(round(mean));
        recall["ratioToLimit"] = json!(round4(speed(recall) / mean));
        recall["ratioToFasterLimit"] = json!(round4(speed(recall) / before.max(after)));
        recall["ratioToBaselineScript"] = json!(round(speed(recall) / speed(&baseline)));
    }
    for run in recalls.into_iter().chain(limits).chain([baseline]) {
        println!("{run}");
    }
}
