//! The console of mfa-recall: server-rendered pages for the people who run a recall, and a
//! versioned HTTP API for their tools. It holds no identity-provider credentials and no Secret
//! access: a person signs in with OpenID Connect (or presents a Kubernetes token) and every read
//! and write goes to the Kubernetes API impersonating them, so Kubernetes RBAC and the admission
//! policies decide what they may do, and their name is what approvals and the audit trail record.
//!
//! Modules: `auth` (sign-in, sessions, CSRF, the person's identity), `people` (a Kubernetes client
//! acting as a person), `pages` (HTML), `api` (JSON and the OpenAPI document), `views` (what a
//! recall, bypass or policy shows, shared by pages, API and server-sent events), `live` (watches
//! turned into server-sent events), `ledger` (a recall's users as its ledger records them).

mod api;
mod auth;
mod ledger;
mod live;
mod pages;
mod people;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use clap::Parser;

#[derive(Parser, Clone)]
#[command(name = "mfa-recall-console", about = "Pages and an HTTP API to plan, start, approve and watch MFA recalls, acting as the person signed in", version)]
pub struct Cli {
    /// Where to listen.
    #[arg(long, env = "MFA_RECALL_CONSOLE_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The address people reach the console at (its origin: sign-in redirects and form checks use it), for example https://mfa-recall.example.com.
    #[arg(long, env = "MFA_RECALL_CONSOLE_URL")]
    public_url: String,
    /// The namespace whose recalls, bypasses and policies the pages show.
    #[arg(long, env = "MFA_RECALL_CONSOLE_NAMESPACE")]
    namespace: String,
    /// The OpenID Connect issuer people sign in with (its /.well-known/openid-configuration is read).
    #[arg(long, env = "MFA_RECALL_CONSOLE_OIDC_ISSUER")]
    oidc_issuer: Option<String>,
    #[arg(long, env = "MFA_RECALL_CONSOLE_OIDC_CLIENT_ID", default_value = "mfa-recall-console")]
    oidc_client_id: String,
    /// A file holding the client's secret, for a confidential client (a public client signs in with PKCE alone).
    #[arg(long, env = "MFA_RECALL_CONSOLE_OIDC_CLIENT_SECRET_FILE")]
    oidc_client_secret_file: Option<std::path::PathBuf>,
    /// The ID token claim that names the person (as the apiserver's --oidc-username-claim).
    #[arg(long, default_value = "preferred_username")]
    oidc_username_claim: String,
    /// Put before the claim's value to make the Kubernetes user name (as --oidc-username-prefix).
    #[arg(long, default_value = "oidc:")]
    oidc_username_prefix: String,
    /// The ID token claim listing the person's groups.
    #[arg(long, default_value = "groups")]
    oidc_groups_claim: String,
    #[arg(long, default_value = "oidc:")]
    oidc_groups_prefix: String,
    /// A recall over all users, or whose plan finds more users than this, needs a sign-in of the
    /// last `--fresh-sign-in` to start or approve.
    #[arg(long, default_value_t = 100)]
    broad_scope_users: i64,
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    fresh_sign_in: std::time::Duration,
    /// How long a session lasts from sign-in.
    #[arg(long, default_value = "8h", value_parser = parse_duration)]
    session_lifetime: std::time::Duration,
    /// Sign-in attempts allowed per client address per minute.
    #[arg(long, default_value_t = 10)]
    sign_ins_per_minute: u32,
    /// Addresses of the proxies in front (the Ingress controller's pods) whose X-Forwarded-For
    /// names the client, so the sign-in limit counts each client rather than the proxy (repeat or comma-separate).
    #[arg(long = "trusted-proxy", env = "MFA_RECALL_CONSOLE_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<std::net::IpAddr>,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let parsed: jiff::SignedDuration = text.parse().map_err(|_| format!("{text:?} is not a duration such as 5m or 8h"))?;
    std::time::Duration::try_from(parsed).map_err(|_| format!("{text:?} is negative"))
}

/// What every handler shares.
pub struct Console {
    pub cli: Cli,
    pub auth: auth::Auth,
    pub people: people::People,
    pub pages: pages::Templates,
    /// True once the console is stopping: event streams end, so the server's graceful shutdown
    /// does not wait on them.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

pub type Shared = Arc<Console>;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).init();
    let cli = Cli::parse();
    match serve(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the console stopped");
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn serve(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let public = url_origin(&cli.public_url).ok_or_else(|| format!("--public-url {:?} is not an http(s) URL such as https://mfa-recall.example.com", cli.public_url))?;
    // Every page and link is at the root of the origin.
    if cli.public_url.trim_end_matches('/') != public {
        return Err(format!("--public-url {:?} must be an origin without a path, such as https://mfa-recall.example.com: the console is served at the root", cli.public_url).into());
    }
    let own = kube::Config::infer().await.map_err(|e| format!("no Kubernetes connection ({e})"))?;
    let auth = auth::Auth::new(&cli, public)?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let console = Arc::new(Console { people: people::People::new(own)?, auth, pages: pages::Templates::new(), cli: cli.clone(), stopping });
    let listener = tokio::net::TcpListener::bind(cli.listen).await.map_err(|e| format!("listening on {}: {e}", cli.listen))?;
    tracing::info!(listen = %cli.listen, namespace = %cli.namespace, "console serving");
    axum::serve(listener, router(console).into_make_service_with_connect_info::<SocketAddr>())
        // Kubernetes stops a pod with SIGTERM: open pages and event streams end cleanly.
        .with_graceful_shutdown(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            let _ = stop.send(true);
        })
        .await?;
    Ok(())
}

fn router(console: Shared) -> Router {
    Router::new()
        .route("/", get(pages::recalls))
        .route("/recalls/new", get(pages::new_recall))
        .route("/recalls", post(pages::create_recall))
        .route("/recalls/{name}", get(pages::recall))
        .route("/recalls/{name}/start", post(pages::start_recall))
        .route("/recalls/{name}/approve", post(pages::approve_recall))
        .route("/approvals", get(pages::approvals))
        .route("/bypasses", get(pages::bypasses).post(pages::request_bypass))
        .route("/bypasses/{name}/approve", post(pages::approve_bypass))
        .route("/policies", get(pages::policies))
        .route("/events/recalls", get(live::recalls))
        .route("/events/recalls/{name}", get(live::recall))
        .route("/auth/login", get(auth::login))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/token", get(auth::token_form).post(auth::token_sign_in))
        .route("/auth/logout", post(auth::logout))
        .route("/static/console.js", get(|| async { asset("text/javascript; charset=utf-8", include_str!("../static/console.js")) }))
        .route("/static/console.css", get(|| async { asset("text/css; charset=utf-8", include_str!("../static/console.css")) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/favicon.ico", get(|| async { axum::http::StatusCode::NO_CONTENT }))
        .nest("/api/v1", api::routes())
        .layer(axum::middleware::from_fn_with_state(console.clone(), auth::guard))
        .with_state(console)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type)), (header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"))], body)
}

/// `scheme://host[:port]` of an http(s) URL.
pub fn url_origin(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    matches!(parsed.scheme(), "http" | "https").then(|| parsed.origin().ascii_serialization())
}
