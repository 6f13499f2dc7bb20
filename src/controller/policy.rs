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

use http_body_util::{BodyExt, Full, Limited};
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
use crate::signals::{self, Admission, Guard, Refusal, Rules, SeenSignatures, Signal, Verdict};
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
}

impl Policies {
    fn get(&self, key: &str) -> Option<Arc<Armed>> {
        self.armed.read().unwrap().get(key).cloned()
    }

    fn all(&self) -> Vec<Arc<Armed>> {
        self.armed.read().unwrap().values().cloned().collect()
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
    hmac: Option<HmacKey>,
    cooldown: Duration,
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
        [("alertmanager", sources.alertmanager.is_some()), ("webhook", sources.webhook.is_some())]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(source, _)| format!("{PATH_PREFIX}{}/{}/{source}", self.namespace, self.name))
            .collect()
    }

    /// Counts what became of one signal.
    fn note(&self, ctx: &Context, seen: SignalSeen) {
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
        _ => "unknown",
    }
}

pub async fn reconcile(policy: Arc<MfaRecallPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let (namespace, name) = (policy.namespace().unwrap_or_default(), policy.name_any());
    let key = format!("{namespace}/{name}");
    let uid = policy.uid().unwrap_or_default();
    let config = configure(&policy, &ctx).await?;
    let state = match ctx.policies.get(&key) {
        Some(armed) if armed.uid == uid => armed.state.clone(),
        _ => Arc::new(seeded(&policy, &ctx).await?),
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
async fn configure(policy: &MfaRecallPolicy, ctx: &Context) -> Result<std::result::Result<Config, (Reason, String)>> {
    let spec = &policy.spec;
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
    Ok(Ok(Config { rules, bearer, hmac, cooldown }))
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
        guard.created(incident, at.0, &recall.name_any());
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
async fn flush_statuses(ctx: Arc<Context>) {
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

/// Serves the receivers on `addr` until the process ends, and keeps the policies' status.
pub async fn serve(addr: SocketAddr, ctx: Arc<Context>, store: Store<MfaRecallPolicy>) -> std::io::Result<()> {
    tokio::spawn(flush_statuses(ctx.clone()));
    super::listener::serve(addr, "signal receivers", move |request| {
        let (ctx, store) = (ctx.clone(), store.clone());
        async move { respond(&ctx, &store, request).await }
    })
    .await
}

fn answer(status: u16, body: serde_json::Value) -> Response<Full<bytes::Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .expect("a response of fixed parts")
}

async fn respond(ctx: &Context, store: &Store<MfaRecallPolicy>, request: Request<hyper::body::Incoming>) -> Response<Full<bytes::Bytes>> {
    let path = request.uri().path().to_string();
    let Some((namespace, name, source)) = path.strip_prefix(PATH_PREFIX).and_then(|rest| {
        let mut parts = rest.split('/');
        let parts = (parts.next()?, parts.next()?, parts.next()?, parts.next());
        (parts.3.is_none()).then_some((parts.0, parts.1, parts.2))
    }) else {
        ctx.metrics.signal("unknown", "unknownPolicy");
        return answer(404, json!({ "error": format!("no receiver here: signals go to {PATH_PREFIX}<namespace>/<policy>/<alertmanager|webhook>") }));
    };
    // Only a policy that still exists, as the same object, takes signals.
    let exists = |armed: &Armed| store.get(&ObjectRef::new(name).within(namespace)).is_some_and(|p| p.uid().as_deref() == Some(armed.uid.as_str()));
    let armed = match ctx.policies.get(&format!("{namespace}/{name}")) {
        Some(armed) if exists(&armed) => armed,
        _ => {
            ctx.metrics.signal(static_source(source), "unknownPolicy");
            return answer(404, json!({ "error": format!("no MfaRecallPolicy {namespace}/{name} takes signals here") }));
        }
    };
    let configured = match source {
        "alertmanager" => armed.spec.signals.alertmanager.is_some(),
        "webhook" => armed.spec.signals.webhook.is_some(),
        _ => false,
    };
    if !configured {
        ctx.metrics.signal(static_source(source), "unknownPolicy");
        return answer(404, json!({ "error": format!("MfaRecallPolicy {namespace}/{name} has no source {source}") }));
    }
    if request.method() != Method::POST {
        return answer(405, json!({ "error": "signals are POSTed" }));
    }
    let config = match &armed.config {
        Ok(config) => config,
        // Alertmanager sends again on a 5xx: the signal is not lost while the policy is fixed.
        Err((_, why)) => return answer(503, json!({ "error": format!("MfaRecallPolicy {namespace}/{name} is not ready: {why}") })),
    };
    let headers = request.headers().clone();
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let refused = |refusal: Refusal| {
        armed.note(ctx, SignalSeen { at: jiff::Timestamp::now(), source: source.to_string(), fingerprint: String::new(), outcome: refusal.outcome().into(), recall: None, detail: refusal.message() });
        answer(refusal.status(), json!({ "error": refusal.message() }))
    };
    // Alertmanager's token is checked before the body is read: an unauthenticated sender gets
    // nothing read or parsed.
    if source == "alertmanager"
        && let Err(refusal) = signals::check_bearer(header("authorization"), config.bearer.as_ref().unwrap_or(&[0; 32]))
    {
        return refused(refusal);
    }
    let body = match Limited::new(request.into_body(), signals::MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return refused(Refusal::TooLarge),
    };
    let read = match (source, &config.hmac) {
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
    for signal in signals {
        let seen = take(ctx, &armed, config, &signal).await;
        retry |= seen.outcome == "createFailed";
        results.push(json!({ "fingerprint": seen.fingerprint, "outcome": seen.outcome, "recall": seen.recall }));
        armed.note(ctx, seen);
    }
    // A recall that could not be created is asked for again by a sender that retries on 5xx.
    answer(if retry { 503 } else { 200 }, json!({ "signals": results }))
}

/// What one authenticated signal becomes.
async fn take(ctx: &Context, armed: &Armed, config: &Config, signal: &Signal) -> SignalSeen {
    let seen = |outcome: &str, recall: Option<String>, detail: String| SignalSeen {
        at: jiff::Timestamp::now(),
        source: signal.source.to_string(),
        fingerprint: signal.fingerprint.chars().take(256).collect(),
        outcome: outcome.into(),
        recall,
        detail,
    };
    if !signal.firing() {
        return seen("resolved", None, String::new());
    }
    let incident = match config.rules.judge(signal) {
        Verdict::Matches { incident } => incident,
        Verdict::ConditionFalse => return seen("conditionFalse", None, String::new()),
        Verdict::ConditionError(why) => return seen("conditionError", None, why),
    };
    if armed.spec.suspend {
        return seen("suspended", None, "spec.suspend is set".into());
    }
    // Duplicates are told apart first: they are most of what an alerting system sends.
    let incident = signals::digest_hex(incident.as_bytes());
    let mut guard = armed.state.guard.lock().await;
    let now = jiff::Timestamp::now();
    match guard.admit(&incident, now, config.cooldown, usize::try_from(armed.spec.max_recalls_per_hour).unwrap_or(1)) {
        Admission::Duplicate(recall) => return seen("duplicate", Some(recall), format!("a recall for this incident was created within the cooldown ({})", armed.spec.cooldown)),
        Admission::CapReached => return seen("capReached", None, format!("{} recalls were created by this policy in the last hour (spec.maxRecallsPerHour)", armed.spec.max_recalls_per_hour)),
        Admission::Create => {}
    }
    let requester = match operator_identity(ctx).await {
        Ok(name) => name,
        Err(e) => return seen("createFailed", None, format!("the operator could not learn its own user name (SelfSubjectReview), which a recall under dual control names as its requester: {e}")),
    };
    let spec = match recall_spec(&armed.spec.template, signal, &requester) {
        Ok(spec) => spec,
        Err(why) => return seen("noSubjects", None, why),
    };
    match create(ctx, armed, spec, signal, &incident).await {
        Ok(name) => {
            guard.created(&incident, now, &name);
            seen("created", Some(name), String::new())
        }
        Err(e) => {
            tracing::warn!(policy = %armed.key(), error = %e, "could not create the recall a signal asked for");
            seen("createFailed", None, e.to_string())
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

/// Creates the recall, then audits it: the trail has every recall a policy started.
async fn create(ctx: &Context, armed: &Armed, spec: MfaRecallSpec, signal: &Signal, incident: &str) -> Result<String> {
    let mut recall = MfaRecall::new("", spec);
    // Room for the suffix the apiserver adds.
    recall.metadata.generate_name = Some(format!("{}-", armed.name.chars().take(200).collect::<String>()));
    recall.metadata.labels = Some([(POLICY_LABEL.to_string(), armed.name.clone()), (INCIDENT_LABEL.to_string(), incident.to_string())].into());
    recall.metadata.annotations = Some([(SIGNAL_ANNOTATION.to_string(), format!("{} {}", signal.source, signal.fingerprint.chars().take(256).collect::<String>()))].into());
    let api: Api<MfaRecall> = Api::namespaced(ctx.client.clone(), &armed.namespace);
    let created = api.create(&PostParams { field_manager: Some(POLICY_FIELD_MANAGER.into()), ..Default::default() }, &recall).await?;
    let name = created.name_any();
    ctx.audit.record(AuditEvent {
        recall: format!("{}/{name}", armed.namespace),
        action: Audited::PolicyRecall,
        outcome: Outcome::Done,
        detail: Some(format!("created by MfaRecallPolicy {} from {} signal {} ({} users named)", armed.key(), signal.source, signal.fingerprint, signal.subjects.len())),
        ..Default::default()
    })?;
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
