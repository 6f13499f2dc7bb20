//! The reference backend of mfa-recall's backend protocol (docs/backend-protocol.md) over an
//! in-house identity store kept in PostgreSQL (schema.sql). An in-house team copies it, or
//! writes the same calls in their own language: it is the protocol, nothing more. Every SQL
//! statement is in sql.rs.
//!
//!   mfa-recall-pg-backend --database-url postgres://... --token-file /secrets/token [--apply-schema]
//!   mfa-recall-pg-backend ... --tls-cert server.crt --tls-key server.key --client-ca operator-ca.crt

mod sql;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine;
use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};
use deadpool_postgres::tokio_postgres;
use sha2::{Digest, Sha256};

/// The media type of protocol version 1.
const MEDIA_TYPE: &str = "application/vnd.mfa-recall.backend+json;version=1";
const PAGE: i64 = 500;
const MAX_PAGE: i64 = 1000;
/// The most users a name may name: more is an answer the operator cannot take as exact.
const MAX_NAMED: usize = 100;
/// How long a request may take, from its headers to its answer.
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// How long one statement may run (the server's statement_timeout), within the request's deadline.
const STATEMENT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(25);
/// How long a client may take to send a request's headers (and a kept-alive connection may idle).
const HEADER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// The kinds a factor may be, as the protocol names them.
const KINDS: [&str; 11] = ["totp", "hotp", "webauthn", "passkey", "recoveryCodes", "sms", "email", "push", "hardwareToken", "securityQuestion", "appPassword"];

#[derive(Parser)]
#[command(name = "mfa-recall-pg-backend", about = "mfa-recall's backend protocol over an in-house identity store in PostgreSQL", version)]
struct Cli {
    #[arg(long, env = "MFA_RECALL_PG_BACKEND_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// The store, with a role that may read the tables and make only the writes a recall needs (roles.sql). TLS is used when the server offers it (sslmode=require to insist, sslmode=disable to refuse it).
    #[arg(long, env = "MFA_RECALL_PG_BACKEND_DATABASE_URL")]
    database_url: String,
    /// PEM authorities for the database server's certificate (else the system's).
    #[arg(long, env = "MFA_RECALL_PG_BACKEND_DATABASE_CA")]
    database_ca: Option<PathBuf>,
    /// A file holding the bearer token the operator presents (the `token` of the IdentityBackend's Secret).
    #[arg(long, env = "MFA_RECALL_PG_BACKEND_TOKEN_FILE", required_unless_present = "client_ca")]
    token_file: Option<PathBuf>,
    /// Serve over TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require a client certificate signed by this PEM authority (mutual TLS; needs --tls-cert).
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Create the tables first (schema.sql; idempotent).
    #[arg(long)]
    apply_schema: bool,
    /// Connections to the store.
    #[arg(long, default_value_t = 16)]
    connections: usize,
}

struct Backend {
    pool: deadpool_postgres::Pool,
    /// None where only the client certificate, checked in the handshake, knows the operator.
    token_hash: Option<[u8; 32]>,
}

type Shared = Arc<Backend>;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", with_causes(e.as_ref()));
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let token_hash = match &cli.token_file {
        Some(file) => {
            let token = std::fs::read_to_string(file).map_err(|e| format!("--token-file {}: {e}", file.display()))?;
            if token.trim().len() < 16 {
                return Err("--token-file must hold a token of at least 16 characters".into());
            }
            Some(Sha256::digest(token.trim().as_bytes()).into())
        }
        None => None,
    };
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(certificate), Some(key)) => Some(tls::config(certificate, key, cli.client_ca.as_deref())?),
        _ => None,
    };
    let mut config: tokio_postgres::Config = cli.database_url.parse().map_err(|e| format!("--database-url: {e}"))?;
    if insists_on_tls(&config, &cli.database_url) {
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
    }
    // A statement ends before its request's deadline, so an abandoned request leaves no statement
    // running on a connection that goes back to the pool. One set in the URL's options wins.
    let options = format!("-c statement_timeout={} {}", STATEMENT_DEADLINE.as_millis(), config.get_options().unwrap_or_default());
    config.options(options.trim());
    let manager = deadpool_postgres::Manager::new(config, tls::to_database(cli.database_ca.as_deref())?);
    let pool = deadpool_postgres::Pool::builder(manager).max_size(cli.connections).build()?;
    if cli.apply_schema {
        pool.get().await?.batch_execute(sql::SCHEMA).await?;
    }
    let backend = Arc::new(Backend { pool, token_hash });
    let listener = tokio::net::TcpListener::bind(cli.listen).await.map_err(|e| format!("listening on {}: {e}", cli.listen))?;
    tracing::info!(listen = %cli.listen, tls = tls.is_some(), client_certificates = cli.client_ca.is_some(), "backend serving");
    match tls {
        Some(config) => serve(tls::TlsListener::new(listener, config)?, router(backend)).await,
        None => serve(listener, router(backend)).await,
    }
    Ok(())
}

/// Serves `app` on every connection `listener` accepts, each request's headers due within
/// HEADER_DEADLINE (axum::serve sets no deadline, so a client that never finished its headers
/// would hold its connection for good).
async fn serve<L: axum::serve::Listener>(mut listener: L, app: Router) {
    loop {
        let (io, _) = listener.accept().await;
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_DEADLINE)
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .await;
        });
    }
}

fn router(backend: Shared) -> Router {
    Router::new()
        .route("/", get(negotiate))
        .route("/users", get(users))
        .route("/groups/{group}/members", get(group_members))
        .route("/users/{id}", get(user))
        .route("/users/{id}/factors", get(factors))
        .route("/users/{id}/factors/{factor}", delete(revoke_factor))
        .route("/users/{id}/sessions/revoke", post(revoke_sessions))
        .route("/users/{id}/require-enrollment", post(require_enrollment))
        .route("/users/{id}/enrollments", get(enrolled_since))
        .route("/users/{id}/disable", post(disable))
        .route("/users/{id}/enable", post(enable))
        .route("/events", get(events))
        .route("/users/{id}/bypasses", post(issue_bypass))
        .route("/users/{id}/bypasses/{reference}", get(bypass_used).delete(revoke_bypass))
        .fallback(async || Failure(StatusCode::NOT_FOUND, "notFound", "no such call in the backend protocol".into()))
        .method_not_allowed_fallback(async || Failure(StatusCode::METHOD_NOT_ALLOWED, "invalid", "the backend protocol has no such method on this path".into()))
        .layer(axum::middleware::from_fn_with_state(backend.clone(), authenticate))
        .with_state(backend)
}

/// Whether TLS is insisted on though the URL does not say: tokio-postgres's default,
/// sslmode=prefer, goes on in plain text when anyone on the path says the server has no TLS, so
/// off this machine it is required unless the URL names an sslmode.
fn insists_on_tls(config: &tokio_postgres::Config, url: &str) -> bool {
    let local = config.get_hosts().iter().all(|host| match host {
        tokio_postgres::config::Host::Tcp(name) => name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        tokio_postgres::config::Host::Unix(_) => true,
    });
    !local && !url.contains("sslmode=")
}

/// An error and its causes on one line: "db error" or "error performing TLS handshake" alone does
/// not say what the server said or why the certificate was refused.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut said = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        said.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    said
}

/// A query string read as `T`, or the protocol's JSON error saying what is wrong with it.
struct Q<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Q<T> {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Failure> {
        Query::<T>::from_request_parts(parts, state).await.map(|Query(value)| Q(value)).map_err(|e| Failure(StatusCode::BAD_REQUEST, "invalid", e.body_text()))
    }
}

/// A protocol error: its status, code and message (shown to people: no secrets).
struct Failure(StatusCode, &'static str, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        answer(self.0, json!({ "error": self.1, "message": self.2.chars().take(500).collect::<String>() }))
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %with_causes(&e), "no connection to the store");
        Failure(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the store cannot be reached".into())
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        tracing::warn!(error = %with_causes(&e), "a statement failed");
        Failure(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the store could not answer".into())
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    response
}

fn ok(body: Value) -> Result<Response, Failure> {
    Ok(answer(StatusCode::OK, body))
}

fn done() -> Result<Response, Failure> {
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn no_user(id: &str) -> Failure {
    Failure(StatusCode::NOT_FOUND, "notFound", format!("no user {id}"))
}

/// The bearer token checked on every call, in constant time (by its hash).
async fn authenticate(State(backend): State<Shared>, request: Request, next: Next) -> Response {
    if let Some(expected) = &backend.token_hash {
        // The scheme's name is case-insensitive (RFC 9110).
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.split_once(' ')).filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map_or("", |(_, token)| token);
    let hash: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        if aws_lc_rs::constant_time::verify_slices_are_equal(&hash, expected).is_err() {
            return Failure(StatusCode::UNAUTHORIZED, "unauthorized", "present the IdentityBackend's token: Authorization: Bearer <token>".into()).into_response();
        }
    }
    // A body sent slowly, or a statement that does not end, holds a connection no longer than this.
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Failure(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("the request took longer than {} s", REQUEST_DEADLINE.as_secs())).into_response(),
    }
}

/// Negotiation: version 1 to a caller that accepts it, with the store's capabilities.
async fn negotiate(headers: axum::http::HeaderMap) -> Result<Response, Failure> {
    let accepts = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| t.split(';').map(str::trim).collect::<Vec<_>>() == ["application/vnd.mfa-recall.backend+json", "version=1"]);
    if !accepts {
        return Err(Failure(StatusCode::NOT_ACCEPTABLE, "invalid", format!("this backend speaks {MEDIA_TYPE}")));
    }
    ok(json!({
        "protocol": "mfa-recall-backend",
        "capabilities": {
            "factorKinds": KINDS,
            "factorCreationTime": true,
            "revokeSessions": true,
            "countSessions": true,
            "requireEnrollment": true,
            "enrollmentDetection": true,
            "eventStream": true,
            "disableUser": true,
            "nestedGroups": true,
            "nameMatch": "caseInsensitive",
            "bypass": { "mechanism": "one-time code", "minLifetimeSeconds": 60, "maxLifetimeSeconds": 86400, "sentByBackend": false, "withdrawable": true },
            "limitations": ["factor age: factors stored before creation times were kept have none, and are kept by a recall"],
        }
    }))
}

#[derive(Deserialize)]
struct Paging {
    cursor: Option<String>,
    limit: Option<i64>,
    name: Option<String>,
    direct: Option<bool>,
}

impl Paging {
    fn limit(&self) -> i64 {
        self.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE)
    }
}

/// A page of users from rows of (id, username) read with one row more than `limit`: the next
/// cursor is the page's last id when that row shows more follow, else null.
fn user_page(rows: &[tokio_postgres::Row], limit: i64) -> Value {
    let page = &rows[..rows.len().min(limit as usize)];
    let users: Vec<Value> = page.iter().map(|r| json!({ "id": r.get::<_, String>(0), "username": r.get::<_, String>(1) })).collect();
    let next = (rows.len() > page.len()).then(|| page.last().map(|r| r.get::<_, String>(0))).flatten();
    json!({ "users": users, "next": next })
}

async fn users(State(backend): State<Shared>, Q(paging): Q<Paging>) -> Result<Response, Failure> {
    let db = backend.pool.get().await?;
    if let Some(name) = &paging.name {
        let rows = db.query(&db.prepare_cached(sql::USERS_NAMED).await?, &[name, &(MAX_NAMED as i64 + 1)]).await?;
        if rows.len() > MAX_NAMED {
            return Err(Failure(StatusCode::BAD_REQUEST, "invalid", format!("more than {MAX_NAMED} users match {name:?}: name one of them by id or username")));
        }
        return ok(json!({ "users": user_page(&rows, MAX_NAMED as i64)["users"], "next": null }));
    }
    let limit = paging.limit();
    let rows = db.query(&db.prepare_cached(sql::USERS_AFTER).await?, &[&paging.cursor.clone().unwrap_or_default(), &(limit + 1)]).await?;
    ok(user_page(&rows, limit))
}

async fn group_members(State(backend): State<Shared>, Path(group): Path<String>, Q(paging): Q<Paging>) -> Result<Response, Failure> {
    let db = backend.pool.get().await?;
    let Some(found) = db.query_opt(&db.prepare_cached(sql::GROUP).await?, &[&group]).await? else { return Err(Failure(StatusCode::NOT_FOUND, "notFound", format!("no group {group}"))) };
    let (id, limit) = (found.get::<_, String>(0), paging.limit());
    let rows = db.query(&db.prepare_cached(sql::GROUP_MEMBERS_AFTER).await?, &[&id, &paging.direct.unwrap_or(false), &paging.cursor.clone().unwrap_or_default(), &(limit + 1)]).await?;
    ok(user_page(&rows, limit))
}

async fn user(State(backend): State<Shared>, Path(id): Path<String>) -> Result<Response, Failure> {
    let db = backend.pool.get().await?;
    let row = db.query_opt(&db.prepare_cached(sql::USER).await?, &[&id]).await?.ok_or_else(|| no_user(&id))?;
    ok(json!({ "id": row.get::<_, String>(0), "username": row.get::<_, String>(1), "enabled": row.get::<_, bool>(2), "address": row.get::<_, Option<String>>(3) }))
}

async fn factors(State(backend): State<Shared>, Path(id): Path<String>) -> Result<Response, Failure> {
    let db = backend.pool.get().await?;
    db.query_opt(&db.prepare_cached(sql::USER).await?, &[&id]).await?.ok_or_else(|| no_user(&id))?;
    let rows = db.query(&db.prepare_cached(sql::FACTORS).await?, &[&id]).await?;
    let factors: Vec<Value> = rows.iter().map(|r| json!({ "id": r.get::<_, String>(0), "kind": r.get::<_, String>(1), "type": r.get::<_, String>(2), "createdAt": r.get::<_, Option<String>>(3) })).collect();
    let sessions: i64 = db.query_one(&db.prepare_cached(sql::SESSIONS).await?, &[&id]).await?.get(0);
    ok(json!({ "factors": factors, "sessions": sessions }))
}

async fn revoke_factor(State(backend): State<Shared>, Path((id, factor)): Path<(String, String)>) -> Result<Response, Failure> {
    let db = backend.pool.get().await?;
    if db.execute(&db.prepare_cached(sql::DELETE_FACTOR).await?, &[&id, &factor]).await? > 0 {
        return done();
    }
    // Nothing deleted: gone already, or no such user.
    db.query_opt(&db.prepare_cached(sql::USER).await?, &[&id]).await?.ok_or_else(|| no_user(&id))?;
    Err(Failure(StatusCode::NOT_FOUND, "alreadyGone", format!("user {id} holds no factor {factor}")))
}

async fn revoke_sessions(State(backend): State<Shared>, Path(id): Path<String>) -> Result<Response, Failure> {
    let mut db = backend.pool.get().await?;
    let tx = db.transaction().await?;
    tx.query_opt(&tx.prepare_cached(sql::USER).await?, &[&id]).await?.ok_or_else(|| no_user(&id))?;
    // Expired ones go too; what is counted is what the factors call counted as live.
    let mut revoked: i64 = 0;
    for statement in [sql::DELETE_SESSIONS, sql::DELETE_REFRESH_TOKENS, sql::DELETE_REMEMBERED_DEVICES] {
        revoked += tx.query_one(&tx.prepare_cached(statement).await?, &[&id]).await?.get::<_, i64>(0);
    }
    tx.commit().await?;
    ok(json!({ "revoked": revoked }))
}

#[derive(Deserialize)]
struct Kinds {
    kinds: Vec<String>,
}

async fn require_enrollment(State(backend): State<Shared>, Path(id): Path<String>, body: Result<axum::Json<Kinds>, axum::extract::rejection::JsonRejection>) -> Result<Response, Failure> {
    let axum::Json(Kinds { kinds }) = body.map_err(|e| Failure(StatusCode::BAD_REQUEST, "invalid", format!("the body must be {{\"kinds\": [...]}}: {}", e.body_text())))?;
    if kinds.is_empty() || kinds.iter().any(|k| !KINDS.contains(&k.as_str())) {
        return Err(Failure(StatusCode::BAD_REQUEST, "invalid", format!("kinds must name one or more of {}", KINDS.join(", "))));
    }
    let db = backend.pool.get().await?;
    db.query_opt(&db.prepare_cached(sql::USER).await?, &[&id]).await?.ok_or_else(|| no_user(&id))?;
    db.execute(&db.prepare_cached(sql::REQUIRE_ENROLLMENT).await?, &[&id, &kinds]).await?;
    done()
}

#[derive(Deserialize)]
struct Since {
    since: String,
}

async fn enrolled_since(State(backend): State<Shared>, Path(id): Path<String>, Q(Since { since }): Q<Since>) -> Result<Response, Failure> {
    let since = time(&since)?;
    let db = backend.pool.get().await?;
    db.query_opt(&db.prepare_cached(sql::USER).await?, &[&id]).await?.ok_or_else(|| no_user(&id))?;
    let row = db.query_opt(&db.prepare_cached(sql::FIRST_FACTOR_SINCE).await?, &[&id, &since]).await?;
    let enrollment = row.map(|r| {
        let mut enrollment = json!({ "kind": r.get::<_, String>(0), "at": r.get::<_, String>(1) });
        for (field, value) in [("ip", r.get::<_, Option<String>>(2)), ("userAgent", r.get::<_, Option<String>>(3)), ("country", r.get::<_, Option<String>>(4))] {
            if let Some(value) = value {
                enrollment[field] = json!(value);
            }
        }
        if let Some(asn) = r.get::<_, Option<i32>>(5) {
            enrollment["asn"] = json!(asn);
        }
        enrollment
    });
    ok(json!({ "enrollment": enrollment }))
}

/// An RFC 3339 time from a query, checked before it reaches the store.
fn time(text: &str) -> Result<String, Failure> {
    text.parse::<jiff::Timestamp>().map(|t| t.to_string()).map_err(|_| Failure(StatusCode::BAD_REQUEST, "invalid", format!("{text:?} is not an RFC 3339 time")))
}

async fn set_enabled(backend: &Backend, id: &str, enabled: bool) -> Result<Response, Failure> {
    let db = backend.pool.get().await?;
    match db.execute(&db.prepare_cached(sql::SET_ENABLED).await?, &[&id, &enabled]).await? {
        0 => Err(no_user(id)),
        _ => done(),
    }
}

async fn disable(State(backend): State<Shared>, Path(id): Path<String>) -> Result<Response, Failure> {
    set_enabled(&backend, &id, false).await
}

async fn enable(State(backend): State<Shared>, Path(id): Path<String>) -> Result<Response, Failure> {
    set_enabled(&backend, &id, true).await
}

#[derive(Deserialize)]
struct EventsQuery {
    cursor: Option<String>,
    from: Option<String>,
    until: Option<String>,
    user: Option<String>,
    limit: Option<i64>,
}

/// A place in the event log: the events after (transaction, sequence number) come next. Given out
/// as `tx.seq`, opaque to the reader.
struct Cursor(String, i64);

impl Cursor {
    fn parse(text: &str) -> Option<Cursor> {
        let (tx, seq) = text.split_once('.')?;
        // A transaction id is a 64-bit number (xid8).
        let tx: u64 = tx.parse().ok().filter(|_| tx.bytes().all(|b| b.is_ascii_digit()))?;
        Some(Cursor(tx.to_string(), seq.parse().ok().filter(|seq: &i64| *seq >= 0)?))
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

async fn events(State(backend): State<Shared>, Q(query): Q<EventsQuery>) -> Result<Response, Failure> {
    let after = match &query.cursor {
        Some(cursor) => Cursor::parse(cursor).ok_or_else(|| Failure(StatusCode::BAD_REQUEST, "invalid", "cursor is not one this backend gave".into()))?,
        None => Cursor("0".into(), 0),
    };
    let from = query.from.as_deref().map(time).transpose()?;
    let until = query.until.as_deref().map(time).transpose()?;
    let limit = query.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let mut db = backend.pool.get().await?;
    // One snapshot for the page and for where the log ends: read apart, a transaction that ended
    // in between would fall behind the end given out, and its events would never be read.
    let db = db.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).read_only(true).start().await?;
    // With a cursor the log goes on from it; `from` only places the first read.
    let from = if query.cursor.is_some() { None } else { from };
    let mut rows = db.query(&db.prepare_cached(sql::EVENTS).await?, &[&after.0, &after.1, &from, &until, &query.user, &(limit + 1)]).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let events: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut event = json!({ "id": r.get::<_, i64>(0).to_string(), "at": r.get::<_, String>(1), "userId": r.get::<_, String>(2), "type": r.get::<_, String>(3) });
            for (field, value) in [("factorKind", r.get::<_, Option<String>>(4)), ("ip", r.get::<_, Option<String>>(5)), ("userAgent", r.get::<_, Option<String>>(6)), ("country", r.get::<_, Option<String>>(7))] {
                if let Some(value) = value {
                    event[field] = json!(value);
                }
            }
            if let Some(asn) = r.get::<_, Option<i32>>(8) {
                event["asn"] = json!(asn);
            }
            event
        })
        .collect();
    // A first read with nothing to show yet goes on from the log's end, not from its start.
    let next = match rows.last() {
        Some(row) => Cursor(row.get(9), row.get(0)),
        None if query.cursor.is_none() => Cursor(db.query_one(&db.prepare_cached(sql::LOG_END).await?, &[]).await?.get(0), 0),
        // A cursor from past the log's end would skip every event to come: refused, not kept.
        None if !db.query_one(&db.prepare_cached(sql::CURSOR_POSSIBLE).await?, &[&after.0]).await?.get::<_, bool>(0) => {
            return Err(Failure(StatusCode::BAD_REQUEST, "invalid", "cursor is not one this backend gave".into()));
        }
        None => after,
    };
    ok(json!({ "events": events, "next": next.to_string(), "more": more }))
}

#[derive(Deserialize)]
struct BypassRequest {
    #[serde(rename = "lifetimeSeconds")]
    lifetime_seconds: i64,
}

async fn issue_bypass(State(backend): State<Shared>, Path(id): Path<String>, body: Result<axum::Json<BypassRequest>, axum::extract::rejection::JsonRejection>) -> Result<Response, Failure> {
    let axum::Json(request) = body.map_err(|e| Failure(StatusCode::BAD_REQUEST, "invalid", format!("the body must be {{\"lifetimeSeconds\": n}}: {}", e.body_text())))?;
    if !(60..=86_400).contains(&request.lifetime_seconds) {
        return Err(Failure(StatusCode::BAD_REQUEST, "invalid", "lifetimeSeconds must be from 60 to 86400".into()));
    }
    let mut bytes = [0u8; 15];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Failure(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "no randomness".into()))?;
    let code = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let reference = hex::encode(&Sha256::digest(format!("reference {code}").as_bytes())[..8]);
    let mut db = backend.pool.get().await?;
    let tx = db.transaction().await?;
    tx.query_opt(&tx.prepare_cached(sql::USER).await?, &[&id]).await?.ok_or_else(|| no_user(&id))?;
    tx.execute(&tx.prepare_cached(sql::WITHDRAW_LIVE_BYPASSES).await?, &[&id]).await?;
    let expires: String = tx.query_one(&tx.prepare_cached(sql::ISSUE_BYPASS).await?, &[&reference, &id, &hex::encode(Sha256::digest(code.as_bytes())), &(request.lifetime_seconds as f64)]).await?.get(0);
    tx.execute(&tx.prepare_cached(sql::LOG_BYPASS_ISSUED).await?, &[&id]).await?;
    tx.commit().await?;
    Ok(answer(StatusCode::CREATED, json!({ "secret": code, "expiresAt": expires, "reference": reference })))
}

async fn bypass_used(State(backend): State<Shared>, Path((id, reference)): Path<(String, String)>) -> Result<Response, Failure> {
    let db = backend.pool.get().await?;
    let row = db.query_opt(&db.prepare_cached(sql::BYPASS_USED).await?, &[&id, &reference]).await?.ok_or_else(|| Failure(StatusCode::NOT_FOUND, "notFound", format!("no bypass {reference} for user {id}")))?;
    ok(json!({ "used": row.get::<_, bool>(0) }))
}

async fn revoke_bypass(State(backend): State<Shared>, Path((id, reference)): Path<(String, String)>) -> Result<Response, Failure> {
    let db = backend.pool.get().await?;
    db.query_opt(&db.prepare_cached(sql::USER).await?, &[&id]).await?.ok_or_else(|| no_user(&id))?;
    match db.execute(&db.prepare_cached(sql::REVOKE_BYPASS).await?, &[&id, &reference]).await? {
        0 => Err(Failure(StatusCode::NOT_FOUND, "alreadyGone", format!("no live bypass {reference} for user {id}"))),
        _ => done(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_insisted_on_off_this_machine_unless_the_url_says() {
        let insists = |url: &str| insists_on_tls(&url.parse().unwrap(), url);
        assert!(insists("postgres://backend@db.internal/store"));
        assert!(insists("postgres://backend@10.0.0.5:5432/store"));
        assert!(!insists("postgres://backend@db.internal/store?sslmode=disable"), "the URL's own choice");
        assert!(!insists("postgres://backend@127.0.0.1/store"));
        assert!(!insists("postgres://backend@localhost/store"));
        assert!(!insists("host=/var/run/postgresql user=backend dbname=store"), "a Unix socket");
    }
}
