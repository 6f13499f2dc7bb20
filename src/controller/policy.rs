//! MfaRecallPolicy: the reconcile arms each policy (its CEL compiled, its sources' Secrets read)
//! for the signal receivers, which the operator serves on a port of their own at
//! `/v1/signals/<namespace>/<policy>/<source>`. A signal that passes its source's check and the
//! policy's condition creates one MfaRecall, unless its incident had one within the cooldown or
//! the hour's cap is reached. What each signal became is counted in the policy's status (written
//! every few seconds, not per signal) and in metrics.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Context, FIELD_MANAGER};
use crate::api::{self, MfaRecall, MfaRecallPolicy, MfaRecallPolicySpec, MfaRecallPolicyStatus, MfaRecallSpec, Reason, RecallTemplate, SignalSeen};
use crate::audit::{Action as Audited, AuditEvent, Outcome};
use crate::keys::HmacKey;
use crate::backends::http::SecretString;
use crate::signals::{self, Admission, Guard, Refusal, Rules, SeenSignatures, Signal, Verdict, ssf};
use crate::{Error, Result};

/// The recalls a policy created carry its name, and a digest of the incident they answer.
pub const POLICY_LABEL: &str = "mfarecall.io/policy";
pub const INCIDENT_LABEL: &str = "mfarecall.io/incident";
/// The signal a policy's recall answers (source and fingerprint), for people reading the object.
pub const SIGNAL_ANNOTATION: &str = "mfarecall.io/signal";
/// The field manager of the recalls policies create (status is the operator's usual one).
pub const POLICY_FIELD_MANAGER: &str = "mfa-recall-policy";
pub const PATH_PREFIX: &str = "/v1/signals/";

/// Secrets are read again this often, so a rotated token or key is taken within it.
const RECHECK: Duration = Duration::from_secs(60);
/// Status carries what signals became at most this long after.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
const LAST_SIGNALS: usize = 20;
/// The shortest bearer token taken: a guessable one would let anyone start a recall.
const MIN_TOKEN_BYTES: usize = 32;

/// The policies this process has armed, by `namespace/name`, for the receivers.
#[derive(Default)]
pub struct Policies {
    armed: RwLock<HashMap<String, Arc<Armed>>>,
    /// The operator's own Kubernetes user name, the requester of the recalls that need approval.
    identity: tokio::sync::OnceCell<String>,
    /// The policies as the watch has them: an armed policy no longer there is forgotten.
    store: std::sync::OnceLock<Store<MfaRecallPolicy>>,
}

impl Policies {
    /// Uses the policies' watch to tell which armed ones still exist.
    pub fn watch(&self, store: Store<MfaRecallPolicy>) {
        let _ = self.store.set(store);
    }

    /// The armed policy `namespace/name`, while it exists as the object it was armed from.
    fn get(&self, key: &str) -> Option<Arc<Armed>> {
        let armed = self.armed.read().unwrap().get(key).cloned()?;
        self.exists(&armed).then_some(armed)
    }

    /// Every armed policy that still exists; the others are forgotten.
    fn all(&self) -> Vec<Arc<Armed>> {
        let mut armed = self.armed.write().unwrap();
        armed.retain(|_, a| self.exists(a));
        armed.values().cloned().collect()
    }

    fn exists(&self, armed: &Armed) -> bool {
        let Some(store) = self.store.get() else { return true };
        store.get(&ObjectRef::new(&armed.name).within(&armed.namespace)).is_some_and(|p| p.uid().as_deref() == Some(armed.uid.as_str()))
    }
}

/// A policy as the receivers use it: its spec, what it needs to check and judge signals (or why
/// it cannot), and what it has done, which outlives re-arming.
struct Armed {
    uid: String,
    namespace: String,
    name: String,
    generation: Option<i64>,
    spec: MfaRecallPolicySpec,
    config: std::result::Result<Config, (Reason, String)>,
    conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    state: Arc<State>,
}

struct Config {
    rules: Rules,
    bearer: Option<[u8; 32]>,
    /// The Okta event hook's header, and a digest of the secret it must carry.
    okta: Option<(String, [u8; 32])>,
    hmac: Option<HmacKey>,
    ssf: Option<SsfConfig>,
    cooldown: Duration,
}

/// A Shared Signals source, armed: the transmitter's keys (fetched again, at most every
/// KEYS_REFRESH, when a SET names a key they lack), and what push and poll need.
struct SsfConfig {
    issuer: String,
    audience: String,
    jwks_uri: String,
    keys: RwLock<Arc<ssf::Keys>>,
    refreshed: Mutex<std::time::Instant>,
    /// Digest of the Authorization header a push must carry.
    push: Option<[u8; 32]>,
    poll: Option<SsfPollConfig>,
}

struct SsfPollConfig {
    endpoint: reqwest::Url,
    authorization: SecretString,
    interval: Duration,
}

/// Keys are fetched again for an unknown key id at most this often: a stream of forged kids
/// cannot make the operator hammer the transmitter.
const KEYS_REFRESH: Duration = Duration::from_secs(30);
/// SETs asked for per poll.
const POLL_BATCH: u32 = 100;

impl SsfConfig {
    /// The key a SET's jti is remembered under, once taken.
    fn jti_key(&self, jti: &str) -> [u8; 32] {
        signals::token_digest(format!("ssf-jti\n{}\n{jti}", self.issuer).as_bytes())
    }

    /// Remembers a SET taken, for as long as one of its age is accepted: the same SET again is refused.
    fn taken(&self, armed: &Armed, jti: &str) {
        let now = jiff::Timestamp::now().as_second();
        let until = now.saturating_add(ssf::SET_LIFETIME.as_secs() as i64);
        if let Err(e) = armed.state.seen.lock().unwrap().remember(self.jti_key(jti), now, until) {
            tracing::warn!(policy = %armed.key(), error = %e.message(), "a SET taken could not be remembered");
        }
    }

    /// Verifies a SET and refuses one taken before.
    async fn verify(&self, armed: &Armed, token: &str) -> std::result::Result<ssf::Verified, ssf::SetError> {
        let verified = self.verify_signature(token).await?;
        if armed.state.seen.lock().unwrap().contains(&self.jti_key(&verified.jti), jiff::Timestamp::now().as_second()) {
            return Err(ssf::SetError::InvalidRequest("a SET with this jti was taken before".into()));
        }
        Ok(verified)
    }

    /// Verifies a SET, fetching the keys again once when it names a key they lack.
    async fn verify_signature(&self, token: &str) -> std::result::Result<ssf::Verified, ssf::SetError> {
        let keys = self.keys.read().unwrap().clone();
        let unknown_kid = ssf::key_id(token).is_some_and(|kid| !keys.has(&kid));
        if unknown_kid && self.refreshed.lock().unwrap().elapsed() >= KEYS_REFRESH {
            *self.refreshed.lock().unwrap() = std::time::Instant::now();
            match ssf::keys(&ssf::client(), &self.jwks_uri).await {
                Ok(fresh) => *self.keys.write().unwrap() = Arc::new(fresh),
                Err(e) => tracing::warn!(jwks = %self.jwks_uri, error = %e, "the transmitter's keys could not be fetched again"),
            }
        }
        let keys = self.keys.read().unwrap().clone();
        ssf::verify(token, &keys, &self.issuer, &self.audience, jiff::Timestamp::now())
    }
}

/// What a policy did, kept across re-arming (and seeded from the apiserver when first armed).
#[derive(Default)]
struct State {
    /// Held while a signal is admitted and its recall created: two copies of one signal arriving
    /// together create one recall.
    guard: tokio::sync::Mutex<Guard>,
    seen: Mutex<SeenSignatures>,
    stats: Mutex<Stats>,
    /// Stats changed since status was written.
    dirty: AtomicBool,
    /// What the next poll of a Shared Signals transmitter acknowledges, and when it is due.
    poll: Arc<tokio::sync::Mutex<PollState>>,
}

#[derive(Default)]
struct PollState {
    ack: Vec<String>,
    set_errs: std::collections::BTreeMap<String, serde_json::Value>,
    next: Option<tokio::time::Instant>,
}

#[derive(Default)]
struct Stats {
    signals: i64,
    recalls_created: i64,
    last_recall: Option<String>,
    outcomes: std::collections::BTreeMap<String, i64>,
    last_signals: VecDeque<SignalSeen>,
}

impl Armed {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn endpoints(&self) -> Vec<String> {
        let sources = &self.spec.signals;
        let push = sources.shared_signals.as_ref().is_some_and(|s| s.push.is_some());
        [("alertmanager", sources.alertmanager.is_some()), ("webhook", sources.webhook.is_some()), ("ssf", push), ("okta", sources.okta_event_hook.is_some())]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(source, _)| format!("{PATH_PREFIX}{}/{}/{source}", self.namespace, self.name))
            .collect()
    }

    /// Counts what became of one signal.
    fn note(&self, ctx: &Context, mut seen: SignalSeen) {
        seen.detail = signals::clip(&seen.detail);
        ctx.metrics.signal(static_source(&seen.source), &seen.outcome);
        let mut stats = self.state.stats.lock().unwrap();
        stats.signals += 1;
        *stats.outcomes.entry(seen.outcome.clone()).or_default() += 1;
        if seen.outcome == "created" {
            stats.recalls_created += 1;
            stats.last_recall = seen.recall.clone();
        }
        stats.last_signals.push_front(seen);
        stats.last_signals.truncate(LAST_SIGNALS);
        self.state.dirty.store(true, Ordering::Release);
    }

    fn status(&self) -> MfaRecallPolicyStatus {
        let stats = self.state.stats.lock().unwrap();
        MfaRecallPolicyStatus {
            endpoints: self.endpoints(),
            signals: stats.signals,
            recalls_created: stats.recalls_created,
            last_recall: stats.last_recall.clone(),
            outcomes: stats.outcomes.clone(),
            last_signals: stats.last_signals.iter().cloned().collect(),
            conditions: self.conditions.clone(),
            observed_generation: self.generation,
        }
    }
}

fn static_source(source: &str) -> &'static str {
    match source {
        "alertmanager" => "alertmanager",
        "webhook" => "webhook",
        "sharedSignals" | "ssf" => "sharedSignals",
        "oktaEventHook" | "okta" => "oktaEventHook",
        _ => "unknown",
    }
}

pub async fn reconcile(policy: Arc<MfaRecallPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let (namespace, name) = (policy.namespace().unwrap_or_default(), policy.name_any());
    let key = format!("{namespace}/{name}");
    let uid = policy.uid().unwrap_or_default();
    let previous = ctx.policies.get(&key).filter(|armed| armed.uid == uid);
    let config = configure(&policy, &ctx, previous.as_deref()).await?;
    let state = match &previous {
        Some(armed) => armed.state.clone(),
        None => Arc::new(seeded(&policy, &ctx).await?),
    };
    let mut conditions = policy.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    match &config {
        Ok(_) => api::set_condition(&mut conditions, api::READY, true, Reason::Armed, "signals are taken at status.endpoints", policy.metadata.generation),
        Err((reason, why)) => api::set_condition(&mut conditions, api::READY, false, *reason, why.clone(), policy.metadata.generation),
    }
    let armed = Arc::new(Armed { uid, namespace, name, generation: policy.metadata.generation, spec: policy.spec.clone(), config, conditions, state });
    ctx.policies.armed.write().unwrap().insert(key, armed.clone());
    let status = armed.status();
    if policy.status.as_ref() != Some(&status) {
        write_status(&ctx, &armed, &status).await?;
    }
    Ok(Action::requeue(RECHECK))
}

pub fn error_policy(policy: Arc<MfaRecallPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(policy = %policy.name_any(), %error, "policy reconcile failed");
    ctx.metrics.reconcile_error("mfarecallpolicy", error.category());
    Action::requeue(Duration::from_secs(15))
}

/// The policy's rules and secrets; Err(kube) when the apiserver could not be asked (tried
/// again), Ok(Err) when the policy cannot take signals as it stands (its Ready says why).
async fn configure(policy: &MfaRecallPolicy, ctx: &Context, previous: Option<&Armed>) -> Result<std::result::Result<Config, (Reason, String)>> {
    let spec = &policy.spec;
    // Its name labels the recalls it creates.
    if policy.name_any().len() > 63 {
        return Ok(Err((Reason::InvalidPolicy, "a policy's name labels the recalls it creates: at most 63 characters; create it under a shorter name".into())));
    }
    let rules = match Rules::compile(spec.condition.as_deref(), spec.dedupe_by.as_deref()) {
        Ok(rules) => rules,
        Err(why) => return Ok(Err((Reason::InvalidPolicy, why))),
    };
    let cooldown = match crate::duration::COOLDOWN.parse(&spec.cooldown) {
        Ok(cooldown) => cooldown,
        Err(why) => return Ok(Err((Reason::InvalidPolicy, why))),
    };
    let namespace = policy.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let read = async |name: &str, key: &str| -> Result<std::result::Result<Vec<u8>, (Reason, String)>> {
        let Some(secret) = secrets.get_opt(name).await? else {
            return Ok(Err((Reason::SecretUnusable, format!("Secret {namespace}/{name} not found: create it with the key {key}"))));
        };
        let value = secret.data.unwrap_or_default().remove(key).map(|v| v.0);
        Ok(match value {
            Some(v) if v.trim_ascii().len() >= MIN_TOKEN_BYTES => Ok(v.trim_ascii().to_vec()),
            Some(_) => Err((Reason::SecretUnusable, format!("Secret {namespace}/{name}: key {key} is shorter than {MIN_TOKEN_BYTES} bytes (for example: head -c 32 /dev/urandom | base64)"))),
            None => Err((Reason::SecretUnusable, format!("Secret {namespace}/{name} has no key {key}"))),
        })
    };
    let bearer = match &spec.signals.alertmanager {
        Some(source) => match read(&source.token_secret_ref.name, "token").await? {
            Ok(token) => Some(signals::token_digest(&token)),
            Err(why) => return Ok(Err(why)),
        },
        None => None,
    };
    let hmac = match &spec.signals.webhook {
        Some(source) => match read(&source.secret_ref.name, "hmac-key").await? {
            Ok(key) => match HmacKey::new(&key, "the webhook's hmac-key") {
                Ok(key) => Some(key),
                Err(e) => return Ok(Err((Reason::SecretUnusable, e.to_string()))),
            },
            Err(why) => return Ok(Err(why)),
        },
        None => None,
    };
    let ssf = match &spec.signals.shared_signals {
        Some(source) => {
            let push = match &source.push {
                Some(push) => match read(&push.authorization_secret_ref.name, "authorization").await? {
                    Ok(value) => Some(signals::token_digest(&value)),
                    Err(why) => return Ok(Err(why)),
                },
                None => None,
            };
            let poll = match &source.poll {
                Some(poll) => {
                    let endpoint = match crate::notify::checked_url("sharedSignals.poll.endpoint", &poll.endpoint) {
                        Ok(url) => url,
                        Err(why) => return Ok(Err((Reason::InvalidPolicy, why))),
                    };
                    let interval = match crate::duration::POLL_INTERVAL.parse(&poll.interval) {
                        Ok(interval) => interval,
                        Err(why) => return Ok(Err((Reason::InvalidPolicy, why))),
                    };
                    match read(&poll.authorization_secret_ref.name, "authorization").await? {
                        Ok(value) => match String::from_utf8(value) {
                            Ok(text) => Some(SsfPollConfig { endpoint, authorization: SecretString::new(text), interval }),
                            Err(_) => return Ok(Err((Reason::SecretUnusable, format!("Secret {namespace}/{}: key authorization is not text", poll.authorization_secret_ref.name)))),
                        },
                        Err(why) => return Ok(Err(why)),
                    }
                }
                None => None,
            };
            // The keys of the same transmitter are kept across re-arming: fetched again only when
            // a SET names a key they lack.
            let kept = previous.and_then(|armed| armed.config.as_ref().ok()?.ssf.as_ref().filter(|_| armed.spec.signals.shared_signals.as_ref().is_some_and(|was| (&was.issuer, &was.jwks_uri) == (&source.issuer, &source.jwks_uri))));
            let (jwks_uri, keys) = match kept {
                Some(kept) => (kept.jwks_uri.clone(), kept.keys.read().unwrap().clone()),
                None => {
                    let client = ssf::client();
                    let jwks_uri = match &source.jwks_uri {
                        Some(uri) => uri.clone(),
                        None => match ssf::jwks_uri(&client, &source.issuer).await {
                            Ok(uri) => uri,
                            Err(why) => return Ok(Err((Reason::TransmitterUnreachable, format!("the transmitter's configuration: {why}")))),
                        },
                    };
                    match ssf::keys(&client, &jwks_uri).await {
                        Ok(keys) => (jwks_uri, Arc::new(keys)),
                        Err(why) => return Ok(Err((Reason::TransmitterUnreachable, format!("the transmitter's keys: {why}")))),
                    }
                }
            };
            Some(SsfConfig {
                issuer: source.issuer.clone(),
                audience: source.audience.clone(),
                jwks_uri,
                keys: RwLock::new(keys),
                refreshed: Mutex::new(kept.map_or_else(std::time::Instant::now, |k| *k.refreshed.lock().unwrap())),
                push,
                poll,
            })
        }
        None => None,
    };
    let okta = match &spec.signals.okta_event_hook {
        Some(source) => match read(&source.authorization_secret_ref.name, "authorization").await? {
            Ok(value) => Some((source.header.clone(), signals::token_digest(&value))),
            Err(why) => return Ok(Err(why)),
        },
        None => None,
    };
    Ok(Ok(Config { rules, bearer, okta, hmac, ssf, cooldown }))
}

/// A policy first armed in this process: its counts from its status, its guard from the recalls
/// it created (so a restart neither repeats a recall within the cooldown nor forgets the cap).
async fn seeded(policy: &MfaRecallPolicy, ctx: &Context) -> Result<State> {
    let state = State::default();
    if let Some(status) = &policy.status {
        let mut stats = state.stats.lock().unwrap();
        stats.signals = status.signals;
        stats.recalls_created = status.recalls_created;
        stats.last_recall = status.last_recall.clone();
        stats.outcomes = status.outcomes.clone();
        stats.last_signals = status.last_signals.iter().cloned().collect();
    }
    let recalls: Api<MfaRecall> = Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    let created = recalls.list(&ListParams::default().labels(&format!("{POLICY_LABEL}={}", policy.name_any()))).await?;
    let mut guard = state.guard.try_lock().expect("a new guard is not shared yet");
    for recall in created {
        let (Some(incident), Some(at)) = (recall.labels().get(INCIDENT_LABEL), recall.metadata.creation_timestamp.as_ref()) else { continue };
        guard.created(incident, at.0, &recall.name_any(), &recall.spec.scope.users);
    }
    drop(guard);
    Ok(state)
}

async fn write_status(ctx: &Context, armed: &Armed, status: &MfaRecallPolicyStatus) -> Result<()> {
    let api: Api<MfaRecallPolicy> = Api::namespaced(ctx.client.clone(), &armed.namespace);
    let patch = json!({ "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecallPolicy", "status": status });
    api.patch_status(&armed.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// Writes what signals became into each policy's status, every few seconds, until the process ends.
pub async fn flush_statuses(ctx: Arc<Context>) {
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        for armed in ctx.policies.all() {
            if !armed.state.dirty.swap(false, Ordering::AcqRel) {
                continue;
            }
            if let Err(e) = write_status(&ctx, &armed, &armed.status()).await {
                tracing::warn!(policy = %armed.key(), error = %e, "could not write the policy's status; tried again");
                armed.state.dirty.store(true, Ordering::Release);
            }
        }
    }
}

/// Serves the receivers on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, ctx: Arc<Context>) -> std::io::Result<()> {
    super::listener::serve(addr, "signal receivers", move |request| {
        let ctx = ctx.clone();
        async move { respond(&ctx, request).await }
    })
    .await
}

/// What is read of a body past MAX_BODY before the 413 goes out: the sender, still writing,
/// then reads the answer instead of a connection reset (a lingering close).
const LINGER_BYTES: usize = 4 * signals::MAX_BODY;

/// A body of at most MAX_BODY bytes; None for a longer one, read on (and dropped) up to
/// LINGER_BYTES so its sender gets the refusal.
async fn read_body(mut body: hyper::body::Incoming) -> Option<bytes::Bytes> {
    let mut kept = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        let Some(data) = frame.data_ref() else { continue };
        total = total.saturating_add(data.len());
        if total <= signals::MAX_BODY {
            kept.extend_from_slice(data);
        } else {
            kept.clear();
            if total > LINGER_BYTES {
                break;
            }
        }
    }
    (total <= signals::MAX_BODY).then(|| kept.freeze())
}

fn answer(status: u16, body: serde_json::Value) -> Response<Full<bytes::Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .expect("a response of fixed parts")
}

async fn respond(ctx: &Arc<Context>, request: Request<hyper::body::Incoming>) -> Response<Full<bytes::Bytes>> {
    let path = request.uri().path().to_string();
    let Some((namespace, name, source)) = path.strip_prefix(PATH_PREFIX).and_then(|rest| {
        let mut parts = rest.split('/');
        let parts = (parts.next()?, parts.next()?, parts.next()?, parts.next());
        (parts.3.is_none()).then_some((parts.0, parts.1, parts.2))
    }) else {
        ctx.metrics.signal("unknown", "unknownPolicy");
        return answer(404, json!({ "error": format!("no receiver here: signals go to {PATH_PREFIX}<namespace>/<policy>/<alertmanager|webhook|ssf|okta>") }));
    };
    // Only a policy that still exists, as the same object, takes signals.
    let armed = match ctx.policies.get(&format!("{namespace}/{name}")) {
        Some(armed) => armed,
        None => {
            ctx.metrics.signal(static_source(source), "unknownPolicy");
            return answer(404, json!({ "error": format!("no MfaRecallPolicy {namespace}/{name} takes signals here") }));
        }
    };
    let configured = match source {
        "alertmanager" => armed.spec.signals.alertmanager.is_some(),
        "webhook" => armed.spec.signals.webhook.is_some(),
        "ssf" => armed.spec.signals.shared_signals.as_ref().is_some_and(|s| s.push.is_some()),
        "okta" => armed.spec.signals.okta_event_hook.is_some(),
        _ => false,
    };
    if !configured {
        ctx.metrics.signal(static_source(source), "unknownPolicy");
        return answer(404, json!({ "error": format!("MfaRecallPolicy {namespace}/{name} has no source {source}") }));
    }
    // Okta's one-time verification of a new event hook: its challenge, echoed (Okta's event hooks
    // guide). Echoing it gives away nothing; every delivery after it carries the secret.
    if source == "okta"
        && request.method() == Method::GET
        && let Some(challenge) = request.headers().get("x-okta-verification-challenge").and_then(|v| v.to_str().ok())
    {
        return answer(200, json!({ "verification": challenge.chars().take(1024).collect::<String>() }));
    }
    if request.method() != Method::POST {
        return answer(405, json!({ "error": "signals are POSTed" }));
    }
    let config = match &armed.config {
        Ok(config) => config,
        // Alertmanager sends again on a 5xx: the signal is not lost while the policy is fixed.
        // Why it is not ready (Secret names, URLs) is for its status, not for any caller.
        Err(_) => return answer(503, json!({ "error": format!("MfaRecallPolicy {namespace}/{name} is not ready: its status says why") })),
    };
    let headers = request.headers().clone();
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let refused = |refusal: Refusal| {
        armed.note(ctx, SignalSeen { at: jiff::Timestamp::now(), source: static_source(source).to_string(), fingerprint: String::new(), outcome: refusal.outcome().into(), recall: None, detail: refusal.message() });
        answer(refusal.status(), json!({ "error": refusal.message() }))
    };
    if source == "ssf" {
        return push(ctx, &armed, config, request).await;
    }
    // Alertmanager's token and Okta's secret are checked before the body is read: an
    // unauthenticated sender gets nothing read or parsed.
    let authenticated = match source {
        "alertmanager" => signals::check_bearer(header("authorization"), config.bearer.as_ref()),
        "okta" => signals::check_secret(config.okta.as_ref().and_then(|(name, _)| header(name)), config.okta.as_ref().map(|(_, digest)| digest)),
        _ => Ok(()),
    };
    if let Err(refusal) = authenticated {
        return refused(refusal);
    }
    let body = match read_body(request.into_body()).await {
        Some(body) => body,
        None => return refused(Refusal::TooLarge),
    };
    let read = match (source, &config.hmac) {
        ("okta", _) => signals::okta_event_hook(&body),
        ("alertmanager", _) => signals::alertmanager(&body, &armed.spec.signals.alertmanager.as_ref().map(|a| a.subject_labels.clone()).unwrap_or_default()),
        (_, Some(key)) => signals::webhook(header("x-timestamp"), header("x-signature"), &body, key, jiff::Timestamp::now(), &mut armed.state.seen.lock().unwrap()).map(|s| vec![s]),
        (_, None) => Err(Refusal::BadSignature),
    };
    let signals = match read {
        Ok(signals) => signals,
        Err(refusal) => return refused(refusal),
    };
    let mut results = Vec::new();
    let mut retry = false;
    for seen in take_all(ctx, &armed, config, &signals).await {
        retry |= seen.outcome == "createFailed";
        results.push(json!({ "fingerprint": seen.fingerprint, "outcome": seen.outcome, "recall": seen.recall }));
        armed.note(ctx, seen);
    }
    // A recall that could not be created is asked for again by a sender that retries on 5xx.
    answer(if retry { 503 } else { 200 }, json!({ "signals": results }))
}

/// A SET pushed by a Shared Signals transmitter (RFC 8935): 202 once taken, 400 with
/// `{"err", "description"}` when the SET is refused, 401 without the configured Authorization.
async fn push(ctx: &Arc<Context>, armed: &Arc<Armed>, config: &Config, request: Request<hyper::body::Incoming>) -> Response<Full<bytes::Bytes>> {
    let Some(ssf) = &config.ssf else { return answer(404, json!({ "error": "no sharedSignals source" })) };
    let refuse = |outcome: &str, status: u16, body: serde_json::Value, detail: String| {
        armed.note(ctx, SignalSeen { at: jiff::Timestamp::now(), source: "sharedSignals".into(), fingerprint: String::new(), outcome: outcome.into(), recall: None, detail });
        answer(status, body)
    };
    if signals::check_secret(request.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes()), ssf.push.as_ref()).is_err() {
        return refuse("unauthenticated", 401, json!({ "err": "authentication_failed", "description": "missing or wrong Authorization header" }), "missing or wrong Authorization header".into());
    }
    let typed = request.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.trim().starts_with("application/secevent+jwt"));
    if !typed {
        return refuse("malformed", 400, json!({ "err": "invalid_request", "description": "Content-Type must be application/secevent+jwt" }), "Content-Type is not application/secevent+jwt".into());
    }
    let body = match read_body(request.into_body()).await {
        Some(body) => body,
        None => return refuse("tooLarge", 413, json!({ "err": "invalid_request", "description": format!("body larger than {} bytes", signals::MAX_BODY) }), String::new()),
    };
    let token = String::from_utf8_lossy(&body);
    match ssf.verify(armed, token.trim()).await {
        Err(e) => refuse(e.outcome(), 400, e.body(), e.description()),
        Ok(ssf::Verified { jti, signal: None }) => {
            armed.note(ctx, SignalSeen { at: jiff::Timestamp::now(), source: "sharedSignals".into(), fingerprint: jti, outcome: "verification".into(), recall: None, detail: "the transmitter checked the stream".into() });
            answer(202, json!({}))
        }
        Ok(ssf::Verified { jti, signal: Some(signal) }) => {
            let mut seen = take_all(ctx, armed, config, std::slice::from_ref(&signal)).await;
            let retry = seen.iter().any(|s| s.outcome == "createFailed");
            if !retry {
                ssf.taken(armed, &jti);
            }
            seen.drain(..).for_each(|s| armed.note(ctx, s));
            // A recall that could not be created is asked for again by a transmitter that retries.
            if retry { answer(503, json!({ "err": "temporarily_unavailable" })) } else { answer(202, json!({})) }
        }
    }
}

/// Polls every policy's Shared Signals transmitter when due, until the process ends.
pub async fn poll_transmitters(ctx: Arc<Context>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for armed in ctx.policies.all() {
            let Ok(config) = &armed.config else { continue };
            let Some(interval) = config.ssf.as_ref().and_then(|s| s.poll.as_ref()).map(|p| p.interval) else { continue };
            // Each policy's poll in a task of its own: a slow transmitter delays only its own.
            let Ok(mut state) = armed.state.poll.clone().try_lock_owned() else { continue };
            if state.next.is_some_and(|next| tokio::time::Instant::now() < next) {
                continue;
            }
            let ctx = ctx.clone();
            tokio::spawn(async move {
                poll_once(&ctx, &armed, &mut state).await;
                state.next = Some(tokio::time::Instant::now() + interval);
            });
        }
    }
}

/// One poll (RFC 8936), asking again at once while the transmitter says more are available:
/// acknowledges what the last poll took, reports the SETs it refused, and takes the new ones.
/// A SET whose recall could not be created is not acknowledged, so it comes again.
async fn poll_once(ctx: &Arc<Context>, armed: &Arc<Armed>, state: &mut PollState) {
    let Ok(config) = &armed.config else { return };
    let (Some(ssf), Some(poll)) = (&config.ssf, config.ssf.as_ref().and_then(|s| s.poll.as_ref())) else { return };
    let client = ssf::client();
    for _ in 0..10 {
        let request = ssf::PollRequest { max_events: POLL_BATCH, return_immediately: true, ack: std::mem::take(&mut state.ack), set_errs: std::mem::take(&mut state.set_errs) };
        let answer: ssf::PollAnswer = match ssf::fetch(&client, &poll.endpoint, Some(poll.authorization.expose()), Some(&request)).await {
            Ok(answer) => answer,
            Err(why) => {
                // Acknowledged next time.
                (state.ack, state.set_errs) = (request.ack, request.set_errs);
                armed.note(ctx, SignalSeen { at: jiff::Timestamp::now(), source: "sharedSignals".into(), fingerprint: String::new(), outcome: "pollFailed".into(), recall: None, detail: why.clone() });
                tracing::warn!(policy = %armed.key(), error = %why, "polling the Shared Signals transmitter failed");
                return;
            }
        };
        // The answer's SETs are one delivery: an incident's users named across them go into one recall.
        let (mut taken, mut jtis) = (Vec::new(), Vec::new());
        for (jti, token) in answer.sets.into_iter().take(POLL_BATCH as usize) {
            match ssf.verify(armed, &token).await {
                Err(e) => {
                    armed.note(ctx, SignalSeen { at: jiff::Timestamp::now(), source: "sharedSignals".into(), fingerprint: jti.chars().take(256).collect(), outcome: e.outcome().into(), recall: None, detail: e.description() });
                    state.set_errs.insert(jti, e.body());
                }
                Ok(ssf::Verified { signal: None, .. }) => {
                    armed.note(ctx, SignalSeen { at: jiff::Timestamp::now(), source: "sharedSignals".into(), fingerprint: jti.clone(), outcome: "verification".into(), recall: None, detail: "the transmitter checked the stream".into() });
                    state.ack.push(jti);
                }
                Ok(ssf::Verified { jti: claimed, signal: Some(signal) }) => {
                    taken.push(signal);
                    jtis.push((jti, claimed));
                }
            }
        }
        for (seen, (jti, claimed)) in take_all(ctx, armed, config, &taken).await.into_iter().zip(jtis) {
            // Not acknowledged: the transmitter sends it again.
            if seen.outcome != "createFailed" {
                ssf.taken(armed, &claimed);
                state.ack.push(jti);
            }
            armed.note(ctx, seen);
        }
        if !answer.more_available {
            break;
        }
    }
}

/// What the signals of one delivery (an Alertmanager notification, a push, a poll's answer)
/// become, one answer each. Those that match are grouped by incident: each incident gets one
/// recall of all the users its signals name (or none, as a duplicate), the first signal
/// `created` and the others `merged`.
async fn take_all(ctx: &Arc<Context>, armed: &Arc<Armed>, config: &Config, signals: &[Signal]) -> Vec<SignalSeen> {
    let seen = |signal: &Signal, outcome: &str, recall: Option<String>, detail: String| SignalSeen {
        at: jiff::Timestamp::now(),
        source: signal.source.to_string(),
        fingerprint: signal.fingerprint.chars().take(256).collect(),
        outcome: outcome.into(),
        recall,
        detail,
    };
    let mut answers: Vec<Option<SignalSeen>> = vec![None; signals.len()];
    // Incident digest, and the signals of it, in the order they came.
    let mut incidents: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, signal) in signals.iter().enumerate() {
        if !signal.firing() {
            answers[i] = Some(seen(signal, "resolved", None, String::new()));
            continue;
        }
        let incident = match config.rules.judge(signal) {
            Verdict::Matches { incident } => signals::digest_hex(incident.as_bytes()),
            Verdict::ConditionFalse => {
                answers[i] = Some(seen(signal, "conditionFalse", None, String::new()));
                continue;
            }
            Verdict::ConditionError(why) => {
                answers[i] = Some(seen(signal, "conditionError", None, why));
                continue;
            }
        };
        if armed.spec.suspend {
            answers[i] = Some(seen(signal, "suspended", None, "spec.suspend is set".into()));
            continue;
        }
        match incidents.iter_mut().find(|(known, _)| *known == incident) {
            Some((_, members)) => members.push(i),
            None => incidents.push((incident, vec![i])),
        }
    }
    for (incident, members) in incidents {
        let first = &signals[members[0]];
        let mut subjects: Vec<String> = members.iter().flat_map(|i| signals[*i].subjects.iter().cloned()).collect();
        subjects.sort();
        subjects.dedup();
        // Apart from the request: a sender that hangs up, or a connection cut at its deadline,
        // must not leave a recall created but not in the guard (a retry would make another).
        let (task_ctx, task_armed, signal) = (ctx.clone(), armed.clone(), Signal { subjects, ..first.clone() });
        let (outcome, recall, detail) = tokio::spawn(async move { admit(&task_ctx, &task_armed, &incident, signal).await })
            .await
            .unwrap_or_else(|_| ("createFailed", None, "the admission of the signal ended early".into()));
        for (n, i) in members.iter().enumerate() {
            let outcome = if n > 0 && outcome == "created" { "merged" } else { outcome };
            let detail = if n > 0 && outcome == "merged" { "taken into the recall of another signal of the same incident in this delivery".to_string() } else { detail.clone() };
            answers[*i] = Some(seen(&signals[*i], outcome, recall.clone(), detail));
        }
    }
    answers.into_iter().map(|a| a.expect("every signal answered")).collect()
}

/// Admits one incident's signal through the guard and creates its recall: (outcome, recall, detail).
async fn admit(ctx: &Context, armed: &Armed, incident: &str, mut signal: Signal) -> (&'static str, Option<String>, String) {
    let Ok(config) = &armed.config else { return ("createFailed", None, "the policy is not ready".into()) };
    // Duplicates are told apart first: they are most of what an alerting system sends.
    let from_signal = armed.spec.template.scope.users_from_signal;
    let mut guard = armed.state.guard.lock().await;
    let now = jiff::Timestamp::now();
    let mut detail = String::new();
    match guard.admit(incident, from_signal.then_some(signal.subjects.as_slice()), now, config.cooldown, usize::try_from(armed.spec.max_recalls_per_hour).unwrap_or(1)) {
        Admission::Duplicate(recall) => return ("duplicate", Some(recall), format!("a recall for this incident, naming every user this signal names, was created within the cooldown ({})", armed.spec.cooldown)),
        Admission::CapReached => return ("capReached", None, format!("{} recalls were created by this policy in the last hour (spec.maxRecallsPerHour)", armed.spec.max_recalls_per_hour)),
        Admission::FollowUp(earlier, new) => {
            detail = format!("a follow-up of {earlier} for the {} users it did not name", new.len());
            signal.subjects = new;
        }
        Admission::Create => {}
    }
    let requester = match operator_identity(ctx).await {
        Ok(name) => name,
        Err(e) => return ("createFailed", None, format!("the operator could not learn its own user name (SelfSubjectReview), which a recall under dual control names as its requester: {e}")),
    };
    let spec = match recall_spec(&armed.spec.template, &signal, &requester) {
        Ok(spec) => spec,
        Err(why) => return ("noSubjects", None, why),
    };
    match create(ctx, armed, spec, &signal, incident).await {
        Ok(name) => {
            guard.created(incident, now, &name, &signal.subjects);
            let audited = ctx.audit.record(AuditEvent {
                recall: format!("{}/{name}", armed.namespace),
                action: Audited::PolicyRecall,
                outcome: Outcome::Done,
                detail: Some(format!("created by MfaRecallPolicy {} from {} signal {} ({} users named)", armed.key(), signal.source, signal.fingerprint, signal.subjects.len())),
                ..Default::default()
            });
            if let Err(e) = audited {
                // The recall exists: said as it is, and never created twice by a retry.
                tracing::error!(policy = %armed.key(), recall = %name, error = %e, "the audit trail could not record a recall a signal started");
                return ("created", Some(name), format!("{detail} (the audit trail could not record it: {e})"));
            }
            ("created", Some(name), detail)
        }
        Err(e) => {
            tracing::warn!(policy = %armed.key(), error = %e, "could not create the recall a signal asked for");
            ("createFailed", None, e.to_string())
        }
    }
}

/// The operator's user name as the apiserver authenticates it, asked once.
async fn operator_identity(ctx: &Context) -> Result<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let name = ctx
        .policies
        .identity
        .get_or_try_init(|| async {
            let review = Api::<SelfSubjectReview>::all(ctx.client.clone()).create(&PostParams::default(), &SelfSubjectReview::default()).await?;
            review.status.and_then(|s| s.user_info).and_then(|u| u.username).ok_or_else(|| Error::Invalid("the apiserver's SelfSubjectReview named no user".into()))
        })
        .await?;
    Ok(name.clone())
}

/// The recall a template makes for a signal: its spec read as an MfaRecall's, so every default
/// is the one a hand-written recall gets. `requester` asks for approval where the template wants it.
fn recall_spec(template: &RecallTemplate, signal: &Signal, requester: &str) -> std::result::Result<MfaRecallSpec, String> {
    let scope = &template.scope;
    let mut users = scope.users.clone();
    if scope.users_from_signal {
        users.extend(signal.subjects.iter().cloned());
        users.sort();
        users.dedup();
    }
    let all_users = scope.all_users == Some(true);
    if !all_users && users.is_empty() && scope.groups.is_empty() {
        return Err("the signal names no users (signal.subjects is empty) and the template names none".into());
    }
    if users.len() > signals::MAX_SUBJECTS {
        return Err(format!("{} users with the signal's; a recall names at most {}", users.len(), signals::MAX_SUBJECTS));
    }
    let mut reason = format!("{} (from {} signal {}", template.reason, signal.source, signal.fingerprint);
    if !signal.summary.is_empty() {
        reason.push_str(": ");
        reason.push_str(&signal.summary);
    }
    reason.push(')');
    let reason: String = reason.chars().take(1024).collect();
    let mut spec = json!({
        "reason": reason,
        "backends": template.backends,
        "scope": {
            "groups": scope.groups,
            "users": users,
            "directMembersOnly": scope.direct_members_only,
            "exclude": scope.exclude,
        },
    });
    if all_users {
        spec["scope"] = json!({ "allUsers": true, "exclude": scope.exclude });
    }
    for (field, value) in [
        ("factors", serde_json::to_value(&template.factors)),
        ("revokeSessions", serde_json::to_value(template.revoke_sessions)),
        ("reEnrollment", serde_json::to_value(&template.re_enrollment)),
        ("anomalies", serde_json::to_value(&template.anomalies)),
        ("notifications", serde_json::to_value(&template.notifications)),
    ] {
        match value {
            Ok(serde_json::Value::Null) => {}
            Ok(value) => spec[field] = value,
            Err(e) => return Err(format!("template.{field}: {e}")),
        }
    }
    if let Some(rule) = &template.require_approval {
        let above_users = if all_users && rule.all_users { None } else { rule.above_users };
        if (all_users && rule.all_users) || above_users.is_some() {
            spec["approval"] = json!({ "requestedBy": requester, "aboveUsers": above_users });
        }
    }
    serde_json::from_value(spec).map_err(|e| format!("the template does not make a valid recall: {e}"))
}

/// Creates the recall (its caller records it in the guard, then audits it).
async fn create(ctx: &Context, armed: &Armed, spec: MfaRecallSpec, signal: &Signal, incident: &str) -> Result<String> {
    let mut recall = MfaRecall::new("", spec);
    // Room for the suffix the apiserver adds.
    recall.metadata.generate_name = Some(format!("{}-", armed.name.chars().take(200).collect::<String>()));
    recall.metadata.labels = Some([(POLICY_LABEL.to_string(), armed.name.clone()), (INCIDENT_LABEL.to_string(), incident.to_string())].into());
    recall.metadata.annotations = Some([(SIGNAL_ANNOTATION.to_string(), format!("{} {}", signal.source, signal.fingerprint.chars().take(256).collect::<String>()))].into());
    let api: Api<MfaRecall> = Api::namespaced(ctx.client.clone(), &armed.namespace);
    let created = api.create(&PostParams { field_manager: Some(POLICY_FIELD_MANAGER.into()), ..Default::default() }, &recall).await?;
    let name = created.name_any();
    tracing::info!(policy = %armed.key(), recall = %name, source = signal.source, "a signal started a recall");
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(scope: serde_json::Value) -> RecallTemplate {
        serde_json::from_value(json!({ "reason": "credential leak runbook", "backends": ["okta"], "scope": scope, "factors": ["totp"] })).unwrap()
    }

    #[test]
    fn a_template_takes_the_signals_users_and_keeps_its_own_exclusions() {
        let signal = Signal { source: "alertmanager", status: "firing".into(), fingerprint: "fp".into(), subjects: vec!["Alice@x".into(), "bob".into()], summary: "dump found".into(), ..Default::default() };
        let spec = recall_spec(&template(json!({ "usersFromSignal": true, "users": ["bob", "sec-lead"], "exclude": { "groups": ["break-glass"] } })), &signal, "op").unwrap();
        assert_eq!(spec.scope.users, ["Alice@x", "bob", "sec-lead"]);
        assert_eq!(spec.scope.exclude.groups, ["break-glass"]);
        assert_eq!(spec.reason, "credential leak runbook (from alertmanager signal fp: dump found)");
        assert_eq!(spec.factors, [api::FactorKind::Totp]);
        assert!(spec.revoke_sessions, "the default of a hand-written recall");
        let nobody = Signal { subjects: vec![], ..signal.clone() };
        assert!(recall_spec(&template(json!({ "usersFromSignal": true })), &nobody, "op").unwrap_err().contains("names no users"));
        let everyone = recall_spec(&template(json!({ "allUsers": true, "exclude": { "users": ["root"] } })), &nobody, "op").unwrap();
        assert_eq!((everyone.scope.all_users, everyone.scope.users.len(), everyone.scope.exclude.users.clone()), (Some(true), 0, vec!["root".to_string()]));
        assert_eq!(everyone.approval, None);
    }

    /// The operator asks for approval in its own name: every user always, named users above the count.
    #[test]
    fn a_template_asks_for_approval_of_broad_recalls() {
        let signal = Signal { source: "webhook", status: "firing".into(), fingerprint: "fp".into(), subjects: vec!["a".into(), "b".into()], ..Default::default() };
        let with = |scope: serde_json::Value, rule: serde_json::Value| {
            let mut t = template(scope);
            t.require_approval = Some(serde_json::from_value(rule).unwrap());
            recall_spec(&t, &signal, "system:serviceaccount:mfa:operator").unwrap().approval
        };
        let all = with(json!({ "allUsers": true }), json!({})).unwrap();
        assert_eq!((all.requested_by.as_str(), all.above_users, all.approved_by), ("system:serviceaccount:mfa:operator", None, None));
        assert_eq!(with(json!({ "usersFromSignal": true }), json!({})), None, "named users, no count set");
        assert_eq!(with(json!({ "usersFromSignal": true }), json!({ "aboveUsers": 50 })).unwrap().above_users, Some(50));
        assert_eq!(with(json!({ "allUsers": true }), json!({ "allUsers": false, "aboveUsers": 1000 })).unwrap().above_users, Some(1000));
    }
}
