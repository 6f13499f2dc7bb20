//! Who is asking: a person signed in with OpenID Connect (authorization code with PKCE, the ID
//! token checked against the provider's keys), or a Kubernetes token presented (checked by
//! TokenReview); sessions in a cookie that scripts cannot read and other sites cannot send;
//! CSRF tokens on every form; sign-in attempts limited per client address; and the headers every
//! answer carries (a strict Content-Security-Policy among them).
//!
//! The console never keeps a person's token or password: a session holds the name and groups
//! Kubernetes will be told (by impersonation), and when they signed in.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Api;
use kube::api::PostParams;
use mfa_recall::signals::ssf::Keys;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{Cli, Shared};

const SESSION_COOKIE: &str = "__Host-mfa-recall-session";
/// Binds a sign-in's state to the browser that started it (login CSRF).
const LOGIN_COOKIE: &str = "__Host-mfa-recall-login";
/// An unfinished sign-in is forgotten after this.
const SIGN_IN_WITHIN: Duration = Duration::from_secs(600);
/// Bounds on what the console keeps in memory, whatever arrives: sessions, unfinished sign-ins,
/// client addresses counted by the sign-in limit, and token reviews remembered.
const MAX_SESSIONS: usize = 10_000;
const MAX_PENDING: usize = 10_000;
const MAX_ADDRESSES: usize = 10_000;
const MAX_REVIEWS: usize = 10_000;
const MAX_ANSWER: usize = 1 << 20;
/// A bearer token's review is asked again after this (a revoked token stops working on the API within it).
const TOKEN_REVIEW_FOR: Duration = Duration::from_secs(30);
/// How far the provider's clock may be from the console's when it says when a person signed in.
const CLOCK_SKEW: i64 = 60;
/// The longest a session from a token whose expiry cannot be read lasts.
const OPAQUE_TOKEN_SESSION: Duration = Duration::from_secs(3600);
/// The JWKS is fetched again for an unknown key id at most this often.
const JWKS_REFETCH: Duration = Duration::from_secs(30);

/// The person a request acts for: the Kubernetes user name and groups it impersonates.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Person {
    pub username: String,
    pub groups: Vec<String>,
}

struct Session {
    person: Person,
    csrf: String,
    /// When the person last proved who they are, in Unix seconds: the ID token's auth_time, or
    /// the token sign-in. A fresh sign-in is judged by this, not by when the session began.
    authenticated_at: i64,
    started: Instant,
    expires: Instant,
}

struct Pending {
    nonce: String,
    verifier: String,
    next: String,
    fresh: bool,
    started: Instant,
    started_at: i64,
    /// The key of the session the browser had when this sign-in started (the session cookie is
    /// Strict, so it comes with the console's own redirect here but not with the provider's back).
    replaces: Option<String>,
}

struct Provider {
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

struct Oidc {
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    http: reqwest::Client,
    provider: tokio::sync::OnceCell<Provider>,
    keys: tokio::sync::Mutex<(Option<Keys>, Option<Instant>)>,
}

pub struct Auth {
    public_url: String,
    public_origin: String,
    oidc: Option<Oidc>,
    username_claim: String,
    username_prefix: String,
    groups_claim: String,
    groups_prefix: String,
    lifetime: Duration,
    fresh: Duration,
    per_minute: u32,
    sessions: Mutex<HashMap<String, Session>>,
    pending: Mutex<HashMap<String, Pending>>,
    attempts: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    reviews: Mutex<HashMap<String, (Instant, Person)>>,
    /// Proxies (the Ingress) whose X-Forwarded-For names the client, for the sign-in limit.
    trusted_proxies: Vec<IpAddr>,
}

/// A request's caller: the person, and on the pages their session (forms check its CSRF token).
/// An API caller presents a bearer token with each request and has no session.
pub struct Caller {
    pub person: Person,
    pub csrf: Option<String>,
    /// When the person last proved who they are (Unix seconds), on the pages.
    pub authenticated_at: Option<i64>,
}

impl Auth {
    pub fn new(cli: &Cli, public_origin: String) -> Result<Self, String> {
        let oidc = match &cli.oidc_issuer {
            Some(issuer) => {
                mfa_recall::notify::checked_url("--oidc-issuer", issuer)?;
                let client_secret = match &cli.oidc_client_secret_file {
                    Some(path) => Some(std::fs::read_to_string(path).map_err(|e| format!("--oidc-client-secret-file {}: {e}", path.display()))?.trim().to_string()),
                    None => None,
                };
                Some(Oidc {
                    issuer: issuer.trim_end_matches('/').to_string(),
                    client_id: cli.oidc_client_id.clone(),
                    client_secret,
                    http: mfa_recall::notify::webhook_client(),
                    provider: tokio::sync::OnceCell::new(),
                    keys: tokio::sync::Mutex::new((None, None)),
                })
            }
            None => None,
        };
        Ok(Self {
            public_url: cli.public_url.trim_end_matches('/').to_string(),
            public_origin,
            oidc,
            username_claim: cli.oidc_username_claim.clone(),
            username_prefix: cli.oidc_username_prefix.clone(),
            groups_claim: cli.oidc_groups_claim.clone(),
            groups_prefix: cli.oidc_groups_prefix.clone(),
            lifetime: cli.session_lifetime,
            fresh: cli.fresh_sign_in,
            per_minute: cli.sign_ins_per_minute,
            sessions: Mutex::default(),
            pending: Mutex::default(),
            attempts: Mutex::default(),
            reviews: Mutex::default(),
            trusted_proxies: cli.trusted_proxies.clone(),
        })
    }

    /// The issuer's origin, which forms may lead to (a fresh sign-in before a broad recall).
    pub fn issuer_origin(&self) -> Option<String> {
        self.oidc.as_ref().and_then(|o| crate::url_origin(&o.issuer))
    }

    /// True when the person proved who they are within the fresh window.
    pub fn is_fresh(&self, caller: &Caller) -> bool {
        caller.authenticated_at.is_some_and(|at| jiff::Timestamp::now().as_second() - at <= self.fresh.as_secs() as i64)
    }

    /// The client's address: the connection's, or, from a trusted proxy, the last address its
    /// X-Forwarded-For adds (the one it saw; earlier entries are the client's to write).
    pub fn client_address(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted_proxies.contains(&peer.ip()) {
            return peer.ip();
        }
        let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).last();
        forwarded.and_then(|a| a.trim().parse().ok()).unwrap_or(peer.ip())
    }

    /// False when `ip` has used up its sign-in attempts for this minute (sign-in starts, token
    /// sign-ins and bearer tokens Kubernetes did not accept all count).
    fn allow_attempt(&self, ip: IpAddr) -> bool {
        let mut attempts = self.attempts.lock().unwrap();
        if attempts.len() >= MAX_ADDRESSES && !attempts.contains_key(&ip) {
            attempts.retain(|_, (since, _)| since.elapsed() < Duration::from_secs(60));
            if attempts.len() >= MAX_ADDRESSES {
                return false;
            }
        }
        let entry = attempts.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= Duration::from_secs(60) {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1 <= self.per_minute
    }

    /// A new session for `person`, who proved who they are at `authenticated_at`, lasting at
    /// most `lifetime`; the browser's session `replaces` (a key) ends.
    fn start_session(&self, person: Person, authenticated_at: i64, lifetime: Duration, replaces: Option<&str>) -> String {
        let id = random_token();
        let now = Instant::now();
        let session = Session { person, csrf: random_token(), authenticated_at, started: now, expires: now + lifetime.min(self.lifetime) };
        let mut sessions = self.sessions.lock().unwrap();
        if let Some(old) = replaces {
            sessions.remove(old);
        }
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.expires > now);
        }
        if sessions.len() >= MAX_SESSIONS {
            // Full of live sessions: the oldest goes rather than the console refusing everyone.
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.started).map(|(k, _)| k.clone()) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(digest(&id), session);
        id
    }

    fn session(&self, id: &str) -> Option<Caller> {
        let mut sessions = self.sessions.lock().unwrap();
        let key = digest(id);
        let session = sessions.get(&key)?;
        if session.expires <= Instant::now() {
            sessions.remove(&key);
            return None;
        }
        Some(Caller { person: session.person.clone(), csrf: Some(session.csrf.clone()), authenticated_at: Some(session.authenticated_at) })
    }

    /// The person a Kubernetes token belongs to, as TokenReview says; None when it does not
    /// authenticate. Accepted tokens are remembered briefly, by their hash.
    async fn review(&self, own: &kube::Client, token: &str) -> Result<Option<Person>, kube::Error> {
        let key = digest(token);
        if let Some((at, person)) = self.reviews.lock().unwrap().get(&key)
            && at.elapsed() < TOKEN_REVIEW_FOR
        {
            return Ok(Some(person.clone()));
        }
        let review = TokenReview { spec: TokenReviewSpec { token: token.to_string(), ..Default::default() }, ..Default::default() };
        let answer = Api::<TokenReview>::all(own.clone()).create(&PostParams::default(), &review).await?;
        let person = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .and_then(|u| Some(Person { username: u.username.filter(|n| !n.is_empty())?, groups: u.groups.unwrap_or_default() }));
        if let Some(person) = &person {
            let mut reviews = self.reviews.lock().unwrap();
            if reviews.len() >= MAX_REVIEWS {
                reviews.retain(|_, (at, _)| at.elapsed() < TOKEN_REVIEW_FOR);
            }
            // Full of live answers: this one is asked again next time rather than pushing one out.
            if reviews.len() < MAX_REVIEWS {
                reviews.insert(key, (Instant::now(), person.clone()));
            }
        }
        Ok(person)
    }
}

impl Oidc {
    async fn provider(&self) -> Result<&Provider, String> {
        self.provider
            .get_or_try_init(|| async {
                let url = mfa_recall::notify::checked_url("the issuer's configuration", &format!("{}/.well-known/openid-configuration", self.issuer))?;
                let config: Value = get_json(&self.http, self.http.get(url.clone())).await?;
                if config.get("issuer").and_then(Value::as_str).map(|i| i.trim_end_matches('/')) != Some(self.issuer.as_str()) {
                    return Err(format!("{url} names another issuer: {}", config.get("issuer").cloned().unwrap_or_default()));
                }
                let field = |name: &str| -> Result<String, String> {
                    let text = config.get(name).and_then(Value::as_str).ok_or_else(|| format!("{url} names no {name}"))?;
                    mfa_recall::notify::checked_url(name, text).map(|u| u.to_string())
                };
                Ok(Provider { authorization_endpoint: field("authorization_endpoint")?, token_endpoint: field("token_endpoint")?, jwks_uri: field("jwks_uri")? })
            })
            .await
    }

    /// Checks an ID token (signature by a key of the issuer's JWKS, issuer, audience, expiry) and returns its claims.
    async fn verify(&self, token: &str) -> Result<Value, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("the ID token is not a JWT: {e}"))?;
        let kid = header.kid.ok_or("the ID token names no key")?;
        let mut keys = self.keys.lock().await;
        let known = keys.0.as_ref().is_some_and(|k| k.has(&kid));
        if !known && keys.1.is_none_or(|at| at.elapsed() >= JWKS_REFETCH) {
            let provider = self.provider().await?;
            let url = mfa_recall::notify::checked_url("jwks_uri", &provider.jwks_uri)?;
            let body: Value = get_json(&self.http, self.http.get(url)).await?;
            keys.0 = Some(Keys::from_jwks(&serde_json::to_vec(&body).unwrap_or_default())?);
            keys.1 = Some(Instant::now());
        }
        let (algorithm, key) = keys.0.as_ref().and_then(|k| k.get(&kid)).ok_or("the ID token is signed by a key the issuer does not publish")?;
        if algorithm != header.alg {
            return Err("the ID token's algorithm is not its key's".into());
        }
        let mut validation = jsonwebtoken::Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "iat"]);
        let data = jsonwebtoken::decode::<Value>(token, key, &validation).map_err(|e| format!("the ID token does not verify: {e}"))?;
        Ok(data.claims)
    }
}

/// A JSON answer of at most MAX_ANSWER bytes, within 10 s, without following redirects; for an
/// error, the provider's error code and description (never the request's secrets).
async fn get_json(http: &reqwest::Client, request: reqwest::RequestBuilder) -> Result<Value, String> {
    let request = request.header(header::ACCEPT, "application/json").build().map_err(|e| e.to_string())?;
    let url = request.url().clone();
    let (status, value) = mfa_recall::backends::http::json_answer(http, request, MAX_ANSWER, Duration::from_secs(10)).await?;
    if !status.is_success() {
        let said = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or_default().chars().take(200).collect::<String>();
        return Err(format!("{url} answered {status}: {} {}", said("error"), said("error_description")));
    }
    if !value.is_object() {
        return Err(format!("{url} answered with what is not a JSON object"));
    }
    Ok(value)
}

pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Equal in constant time.
fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// A local path to go back to after sign-in: only this console's own pages.
fn local_path(next: Option<&str>) -> String {
    // A strict set of characters: a browser drops tabs and newlines from a URL and reads a
    // backslash as a slash, which would turn `/\t/host` or `/\\host` into another site.
    let plain = |p: &str| p.chars().all(|c| c.is_ascii_alphanumeric() || "-._~/?=&%".contains(c));
    match next {
        // Dot segments are refused too: `/./auth/...` would reach the sign-in pages.
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.starts_with("/auth/") && !path.contains("/.") && plain(path) => path.to_string(),
        _ => "/".into(),
    }
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = Response;

    /// The API takes a bearer token and nothing else; the pages take their session cookie and
    /// nothing else (a bearer token there would skip the forms' CSRF tokens and the fresh
    /// sign-in, for example behind a proxy that adds one to every request).
    async fn from_request_parts(parts: &mut Parts, console: &Shared) -> Result<Self, Self::Rejection> {
        // Inside the nested API router the path is cut to what follows /api/v1: the original tells.
        let uri = parts.extensions.get::<axum::extract::OriginalUri>().map(|o| o.0.clone()).unwrap_or_else(|| parts.uri.clone());
        if uri.path().starts_with("/api/") {
            let Some(value) = parts.headers.get(header::AUTHORIZATION) else { return Err(unauthenticated(true, "present a Kubernetes token: Authorization: Bearer <token>")) };
            let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty());
            let Some(token) = token else { return Err(unauthenticated(true, "Authorization must be `Bearer <a Kubernetes token>`")) };
            let address = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| console.auth.client_address(c.0, &parts.headers));
            return match console.auth.review(console.people.own(), token).await {
                Ok(Some(person)) => Ok(Caller { person, csrf: None, authenticated_at: None }),
                // Tokens Kubernetes does not accept count against the sign-in limit, so guessing costs.
                Ok(None) if address.is_some_and(|a| !console.auth.allow_attempt(a)) => Err(too_many()),
                Ok(None) => Err(unauthenticated(true, "the token does not authenticate with Kubernetes")),
                Err(e) => {
                    tracing::warn!(error = %e, "TokenReview failed");
                    Err((StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "error": "unavailable", "message": "the console could not ask Kubernetes who the token belongs to" }))).into_response())
                }
            };
        }
        if let Some(caller) = cookie(&parts.headers, SESSION_COOKIE).and_then(|id| console.auth.session(&id)) {
            return Ok(caller);
        }
        // A page is sent to sign in; an event stream or a form post is told (a redirect would
        // start a sign-in from a script, or turn the post into a GET of a form's address).
        if parts.method != Method::GET || uri.path().starts_with("/events/") {
            return Err(unauthenticated(false, "your session ended: reload the page to sign in again"));
        }
        let next = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
        Err(Redirect::to(&format!("/auth/login?next={next}")).into_response())
    }
}

fn unauthenticated(api: bool, why: &str) -> Response {
    if !api {
        return (StatusCode::UNAUTHORIZED, why.to_string()).into_response();
    }
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({ "error": "unauthenticated", "message": why }))).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

impl Caller {
    /// A form's CSRF token checked against the session's (pages have no caller without one).
    pub fn check_csrf(&self, given: &str) -> Result<(), Response> {
        match &self.csrf {
            Some(expected) if same(expected, given) => Ok(()),
            _ => Err((StatusCode::FORBIDDEN, "this form is stale or did not come from the console: reload the page and try again").into_response()),
        }
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    /// Ask the provider for a new sign-in even when it has a session.
    fresh: Option<String>,
}

pub async fn login(State(console): State<Shared>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, Query(query): Query<LoginQuery>) -> Response {
    let auth = &console.auth;
    let Some(oidc) = &auth.oidc else { return Redirect::to("/auth/token").into_response() };
    if !auth.allow_attempt(auth.client_address(peer, &headers)) {
        return too_many();
    }
    let provider = match oidc.provider().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "OpenID Connect discovery failed");
            return (StatusCode::BAD_GATEWAY, "the sign-in provider cannot be reached; try again shortly, or sign in with a Kubernetes token at /auth/token").into_response();
        }
    };
    let (state, nonce, verifier) = (random_token(), random_token(), random_token());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let fresh = query.fresh.is_some();
    {
        let mut pending = auth.pending.lock().unwrap();
        pending.retain(|_, p| p.started.elapsed() < SIGN_IN_WITHIN);
        if pending.len() >= MAX_PENDING {
            return too_many();
        }
        pending.insert(state.clone(), Pending { nonce: nonce.clone(), verifier, next: local_path(query.next.as_deref()), fresh, started: Instant::now(), started_at: jiff::Timestamp::now().as_second(), replaces: cookie(&headers, SESSION_COOKIE).map(|id| digest(&id)) });
    }
    let mut params = vec![
        ("response_type", "code".to_string()),
        ("client_id", oidc.client_id.clone()),
        ("redirect_uri", format!("{}/auth/callback", auth.public_url)),
        ("scope", "openid profile email".to_string()),
        ("state", state.clone()),
        ("nonce", nonce),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256".to_string()),
    ];
    // max_age makes the provider say when the person signed in (auth_time), which the fresh
    // sign-in before a broad recall is judged by; 0 with prompt=login asks for the password again.
    if fresh {
        params.push(("prompt", "login".to_string()));
        params.push(("max_age", "0".to_string()));
    } else {
        params.push(("max_age", auth.lifetime.as_secs().to_string()));
    }
    let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    let separator = if provider.authorization_endpoint.contains('?') { '&' } else { '?' };
    let mut response = Redirect::to(&format!("{}{separator}{query}", provider.authorization_endpoint)).into_response();
    // Lax: the provider's redirect back is a top-level navigation from another site.
    set_cookie(&mut response, &format!("{LOGIN_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600", digest(&state)));
    response
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider's redirect back. Not counted by the sign-in limit: it only finishes a sign-in
/// whose start was counted (its state is one this console issued to this browser).
pub async fn callback(State(console): State<Shared>, headers: HeaderMap, Query(callback): Query<Callback>) -> Response {
    let auth = &console.auth;
    let Some(oidc) = &auth.oidc else { return Redirect::to("/auth/token").into_response() };
    if let Some(error) = callback.error {
        let text: String = format!("{error}: {}", callback.error_description.unwrap_or_default()).chars().take(300).collect();
        return signed_out(StatusCode::UNAUTHORIZED, &format!("The sign-in provider refused the sign-in ({text})."));
    }
    let (Some(code), Some(state)) = (callback.code, callback.state) else { return signed_out(StatusCode::BAD_REQUEST, "The sign-in answer lacks its code or state.") };
    // The state must be one this browser started (its cookie) and this console issued.
    if !cookie(&headers, LOGIN_COOKIE).is_some_and(|bound| same(&bound, &digest(&state))) {
        return signed_out(StatusCode::BAD_REQUEST, "This sign-in was not started in this browser. Start again.");
    }
    let Some(pending) = auth.pending.lock().unwrap().remove(&state).filter(|p| p.started.elapsed() < SIGN_IN_WITHIN) else {
        return signed_out(StatusCode::BAD_REQUEST, "This sign-in expired or was already used. Start again.");
    };
    let clear_login = format!("{LOGIN_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0");
    match finish_sign_in(auth, oidc, &code, &pending).await {
        Ok((person, authenticated_at)) => {
            tracing::info!(user = %person.username, "signed in with OpenID Connect");
            // A new sign-in ends the session the browser had when it started, so no older session id stays usable.
            let id = auth.start_session(person, authenticated_at, auth.lifetime, pending.replaces.as_deref());
            // A same-site page moves on, so the Strict session cookie is sent with the next request.
            let next = html_escape(&pending.next);
            let mut response = Html(format!("<!doctype html><meta http-equiv=\"refresh\" content=\"0;url={next}\"><title>Signed in</title><p>Signed in. <a href=\"{next}\">Continue</a></p>")).into_response();
            set_cookie(&mut response, &format!("{SESSION_COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}", auth.lifetime.as_secs()));
            set_cookie(&mut response, &clear_login);
            response
        }
        Err(why) => {
            tracing::warn!(reason = %why, "sign-in refused");
            let mut response = signed_out(StatusCode::UNAUTHORIZED, &format!("The sign-in could not be completed: {why}"));
            set_cookie(&mut response, &clear_login);
            response
        }
    }
}

/// The person an authorization code signs in, and when they proved who they are (Unix seconds).
async fn finish_sign_in(auth: &Auth, oidc: &Oidc, code: &str, pending: &Pending) -> Result<(Person, i64), String> {
    let provider = oidc.provider().await?;
    let redirect_uri = format!("{}/auth/callback", auth.public_url);
    let mut form = vec![("grant_type", "authorization_code"), ("code", code), ("redirect_uri", &redirect_uri), ("client_id", &oidc.client_id), ("code_verifier", &pending.verifier)];
    if let Some(secret) = &oidc.client_secret {
        form.push(("client_secret", secret));
    }
    let tokens = get_json(&oidc.http, oidc.http.post(&provider.token_endpoint).form(&form)).await?;
    let id_token = tokens.get("id_token").and_then(Value::as_str).ok_or("the provider's answer holds no ID token")?;
    let claims = oidc.verify(id_token).await?;
    if !claims.get("nonce").and_then(Value::as_str).is_some_and(|n| same(n, &pending.nonce)) {
        return Err("the ID token's nonce is not this sign-in's".into());
    }
    let auth_time = claims.get("auth_time").and_then(Value::as_i64).ok_or("the ID token does not say when the person signed in (auth_time)")?;
    // A fresh sign-in was asked for: the provider must say the person signed in after it was asked.
    if pending.fresh && auth_time + CLOCK_SKEW < pending.started_at {
        return Err("the provider did not ask for the password again".into());
    }
    let name = claims.get(&auth.username_claim).and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| format!("the ID token has no {} claim", auth.username_claim))?;
    // As the apiserver does: an email names a person only once the provider has verified it.
    if auth.username_claim == "email" && claims.get("email_verified").and_then(Value::as_bool) != Some(true) {
        return Err("the ID token's email is not verified (email_verified)".into());
    }
    let groups = claims.get(&auth.groups_claim).and_then(Value::as_array).map(|g| g.iter().filter_map(Value::as_str).map(|g| format!("{}{g}", auth.groups_prefix)).take(256).collect()).unwrap_or_default();
    let person = Person { username: format!("{}{name}", auth.username_prefix), groups };
    if person.username.starts_with("system:") || person.groups.iter().any(|g| g.starts_with("system:")) {
        return Err("names starting with system: are Kubernetes' own; set --oidc-username-prefix and --oidc-groups-prefix".into());
    }
    Ok((person, auth_time.min(jiff::Timestamp::now().as_second())))
}

pub async fn token_form(State(console): State<Shared>) -> Response {
    console.pages.render("signin.html", minijinja::context! { oidc => console.auth.oidc.is_some() }, None)
}

#[derive(Deserialize)]
pub struct TokenSignIn {
    token: String,
}

pub async fn token_sign_in(State(console): State<Shared>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, axum::Form(form): axum::Form<TokenSignIn>) -> Response {
    let auth = &console.auth;
    if !auth.allow_attempt(auth.client_address(peer, &headers)) {
        return too_many();
    }
    let token = form.token.trim();
    match auth.review(console.people.own(), token).await {
        Ok(Some(person)) => {
            tracing::info!(user = %person.username, "signed in with a Kubernetes token");
            // The session ends when the token would (a session outliving its token would let a
            // revoked or expired one go on working); the browser's previous session ends now.
            let replaces = cookie(&headers, SESSION_COOKIE).map(|id| digest(&id));
            let id = auth.start_session(person, jiff::Timestamp::now().as_second(), token_lifetime(token), replaces.as_deref());
            let mut response = Redirect::to("/").into_response();
            set_cookie(&mut response, &format!("{SESSION_COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}", auth.lifetime.as_secs()));
            response
        }
        Ok(None) => signed_out(StatusCode::UNAUTHORIZED, "That token does not authenticate with Kubernetes."),
        Err(e) => {
            tracing::warn!(error = %e, "TokenReview failed");
            signed_out(StatusCode::SERVICE_UNAVAILABLE, "The console could not ask Kubernetes who the token belongs to.")
        }
    }
}

/// A form that carries nothing but its CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub async fn logout(State(console): State<Shared>, headers: HeaderMap, caller: Caller, axum::Form(form): axum::Form<CsrfForm>) -> Response {
    if let Err(refused) = caller.check_csrf(&form.csrf) {
        return refused;
    }
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        console.auth.sessions.lock().unwrap().remove(&digest(&id));
    }
    let mut response = signed_out(StatusCode::OK, "Signed out.");
    set_cookie(&mut response, &format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"));
    response
}

/// How long a token has left, read from its `exp` when it is a JWT (as ServiceAccount tokens
/// are; TokenReview has just vouched for it); an opaque token gets a short session.
fn token_lifetime(token: &str) -> Duration {
    let exp = token.split('.').nth(1).and_then(|payload| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()).and_then(|json| serde_json::from_slice::<Value>(&json).ok()).and_then(|claims| claims.get("exp")?.as_i64());
    match exp {
        Some(exp) => Duration::from_secs(exp.saturating_sub(jiff::Timestamp::now().as_second()).max(0) as u64),
        None => OPAQUE_TOKEN_SESSION,
    }
}

fn signed_out(status: StatusCode, message: &str) -> Response {
    (status, Html(format!("<!doctype html><title>mfa-recall</title><link rel=\"stylesheet\" href=\"/static/console.css\"><main><p>{}</p><p><a href=\"/auth/login\">Sign in</a></p></main>", html_escape(message)))).into_response()
}

fn too_many() -> Response {
    let mut response = (StatusCode::TOO_MANY_REQUESTS, "too many sign-in attempts from your address: wait a minute").into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    response
}

fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

pub fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The guard around every request: a form post whose Origin is another site's is refused before
/// any handler runs, and every answer carries the security headers.
pub async fn guard(State(console): State<Shared>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let writes = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if writes && !request.uri().path().starts_with("/api/") {
        let origin = request.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok());
        if origin.is_some_and(|o| o != console.auth.public_origin) {
            return (StatusCode::FORBIDDEN, "this form was sent from another site").into_response();
        }
    }
    let is_static = request.uri().path().starts_with("/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let form_action = match console.auth.issuer_origin() {
        Some(issuer) => format!("'self' {issuer}"),
        None => "'self'".into(),
    };
    let policy = format!("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'");
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on the console's own form posts.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !is_static {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_consoles_own_pages_are_gone_back_to_after_sign_in() {
        for (next, to) in [
            (Some("/recalls/inc-1?backend=okta&page=2"), "/recalls/inc-1?backend=okta&page=2"),
            (Some("//evil.example/"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("/\t/evil.example"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("/auth/logout"), "/"),
            (Some("/a\"><script>"), "/"),
            (Some("/./auth/login"), "/"),
            (Some("/recalls/../auth/logout"), "/"),
            (None, "/"),
        ] {
            assert_eq!(local_path(next), to, "{next:?}");
        }
    }

    #[test]
    fn a_token_session_ends_with_the_token() {
        let claims = |exp: i64| format!("h.{}.s", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{exp}}}")));
        let now = jiff::Timestamp::now().as_second();
        assert!((590..=600).contains(&token_lifetime(&claims(now + 600)).as_secs()));
        assert_eq!(token_lifetime(&claims(now - 10)), Duration::ZERO);
        assert_eq!(token_lifetime("opaque-static-token"), OPAQUE_TOKEN_SESSION);
    }

    #[test]
    fn the_sign_in_limit_counts_the_client_a_trusted_proxy_names_and_no_one_else_s_word() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["console", "--public-url", "https://c.example", "--namespace", "n", "--trusted-proxy", "10.0.0.7", "--sign-ins-per-minute", "2"]).unwrap();
        let auth = Auth::new(&cli, "https://c.example".into()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 198.51.100.4"));
        let proxy: SocketAddr = "10.0.0.7:5000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(auth.client_address(proxy, &headers), "198.51.100.4".parse::<IpAddr>().unwrap(), "the address the proxy saw, not one the client wrote");
        assert_eq!(auth.client_address(stranger, &headers), stranger.ip(), "only a trusted proxy is believed");
        let ip = auth.client_address(proxy, &headers);
        assert!(auth.allow_attempt(ip) && auth.allow_attempt(ip) && !auth.allow_attempt(ip));
        assert!(auth.allow_attempt(stranger.ip()), "another client has its own count");
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("x__Host-mfa-recall-session=forged; __Host-mfa-recall-session=real; other=1"));
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("real"));
    }
}
