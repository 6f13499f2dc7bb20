//! Signals that can start a recall, without I/O: each source's wire format read into one `Signal`
//! (Alertmanager's webhook payload version 4, the generic HMAC-signed webhook), a policy's CEL
//! rules over it, and the guard that makes one incident one recall and caps recalls an hour.
//! The receivers and the recalls they create are in `controller::policy`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use hmac::Mac;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::HmacKey;

pub mod ssf;

/// The largest body read from any source: an Alertmanager group of a few hundred alerts.
pub const MAX_BODY: usize = 1 << 20;
/// A signed webhook older or newer than this is refused (SIGNALS.md: five minutes).
pub const REPLAY_WINDOW: Duration = Duration::from_secs(300);
/// The most subjects one signal may name (an MfaRecall names at most 10,000 users).
pub const MAX_SUBJECTS: usize = 10_000;

/// One signal, as a policy's CEL expressions see it (`signal`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Signal {
    /// alertmanager or webhook.
    pub source: &'static str,
    /// firing or resolved.
    pub status: String,
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The users the signal names.
    pub subjects: Vec<String>,
    pub summary: String,
}

impl Signal {
    pub fn firing(&self) -> bool {
        self.status == "firing"
    }
}

/// Why a request was refused before any signal in it was read. Each maps to the status code the
/// protocol defines and to the outcome name counted in status and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Unauthenticated,
    BadSignature,
    Stale,
    Replayed,
    Malformed(String),
    TooLarge,
}

impl Refusal {
    pub fn outcome(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::BadSignature => "badSignature",
            Refusal::Stale => "stale",
            Refusal::Replayed => "replayed",
            Refusal::Malformed(_) => "malformed",
            Refusal::TooLarge => "tooLarge",
        }
    }

    /// Alertmanager retries 5xx only, so every refusal is a 4xx: sending it again cannot help.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Unauthenticated | Refusal::BadSignature | Refusal::Stale | Refusal::Replayed => 401,
            Refusal::Malformed(_) => 400,
            Refusal::TooLarge => 413,
        }
    }

    /// What the sender is told; names no secret, and quotes of the body no more than `clip` keeps.
    pub fn message(&self) -> String {
        match self {
            Refusal::Unauthenticated => "missing or wrong Authorization bearer token".into(),
            Refusal::BadSignature => "X-Signature is missing or is not sha256=<hex HMAC-SHA256 of \"<X-Timestamp>.<body>\">".into(),
            Refusal::Stale => format!("X-Timestamp is missing or more than {} s from now", REPLAY_WINDOW.as_secs()),
            Refusal::Replayed => "this signature was received before".into(),
            Refusal::Malformed(why) => format!("malformed body: {}", clip(why)),
            Refusal::TooLarge => format!("body larger than {MAX_BODY} bytes"),
        }
    }
}

/// SHA-256 of a bearer token: tokens are compared as digests, so the time a comparison takes
/// tells nothing about the token.
pub fn token_digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Checks a header's value (trimmed) against the digest of the expected secret.
pub fn check_secret(presented: Option<&[u8]>, expected: Option<&[u8; 32]>) -> Result<(), Refusal> {
    match (presented, expected) {
        (Some(value), Some(expected)) if token_digest(value.trim_ascii()) == *expected => Ok(()),
        _ => Err(Refusal::Unauthenticated),
    }
}

/// Checks `Authorization: Bearer <token>` against the digest of the expected token.
pub fn check_bearer(authorization: Option<&[u8]>, expected: Option<&[u8; 32]>) -> Result<(), Refusal> {
    check_secret(Some(authorization.and_then(|h| h.strip_prefix(b"Bearer ")).ok_or(Refusal::Unauthenticated)?), expected)
}

/// Text from a sender (a parser's error quoting the body, an expression's value), cut to a size
/// that status and answers can carry.
pub fn clip(text: &str) -> String {
    const MOST: usize = 200;
    match text.char_indices().nth(MOST) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Prometheus Alertmanager's webhook payload (notify/webhook, version 4); fields not read are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertmanagerMessage {
    version: String,
    #[serde(default)]
    alerts: Vec<Alert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    fingerprint: String,
}

/// Each alert of an Alertmanager notification, one signal each; `subject_labels` name the labels
/// and annotations whose values list the users an alert concerns.
pub fn alertmanager(body: &[u8], subject_labels: &[String]) -> Result<Vec<Signal>, Refusal> {
    let message: AlertmanagerMessage = serde_json::from_slice(body).map_err(|e| Refusal::Malformed(clip(&e.to_string())))?;
    if message.version != "4" {
        return Err(Refusal::Malformed(format!("payload version {:?}; this receiver reads version 4", clip(&message.version))));
    }
    message
        .alerts
        .into_iter()
        .map(|alert| {
            if alert.status != "firing" && alert.status != "resolved" {
                return Err(Refusal::Malformed(format!("alert status {:?} is neither firing nor resolved", clip(&alert.status))));
            }
            let mut subjects = Vec::new();
            for name in subject_labels {
                for value in [alert.labels.get(name), alert.annotations.get(name)].into_iter().flatten() {
                    subjects.extend(value.split([',', ' ', '\n', '\t']).filter(|s| !s.is_empty()).map(str::to_string));
                }
            }
            let summary = alert.annotations.get("summary").or(alert.labels.get("alertname")).cloned().unwrap_or_default();
            let fingerprint = if alert.fingerprint.is_empty() { digest_hex(&serde_json::to_vec(&alert.labels).unwrap_or_default()) } else { alert.fingerprint };
            Ok(Signal { source: "alertmanager", status: alert.status, fingerprint, labels: alert.labels, annotations: alert.annotations, subjects: bounded(subjects)?, summary })
        })
        .collect()
}

/// An Okta event hook delivery (Okta's event hooks guide): System Log events under data.events.
#[derive(Deserialize)]
struct OktaDelivery {
    data: OktaData,
}

#[derive(Deserialize)]
struct OktaData {
    #[serde(default)]
    events: Vec<OktaEvent>,
}

/// A System Log event, the fields a signal takes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OktaEvent {
    uuid: String,
    event_type: String,
    #[serde(default)]
    display_message: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    actor: Option<OktaEntity>,
    #[serde(default)]
    target: Option<Vec<OktaEntity>>,
    #[serde(default)]
    outcome: Option<OktaOutcome>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OktaEntity {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    alternate_id: Option<String>,
}

#[derive(Deserialize)]
struct OktaOutcome {
    #[serde(default)]
    result: Option<String>,
}

/// Each System Log event of an Okta event hook delivery, one signal each: the users among its
/// targets, or its actor when no target is a user (a user reporting suspicious activity).
pub fn okta_event_hook(body: &[u8]) -> Result<Vec<Signal>, Refusal> {
    let delivery: OktaDelivery = serde_json::from_slice(body).map_err(|e| Refusal::Malformed(clip(&e.to_string())))?;
    delivery
        .data
        .events
        .into_iter()
        .map(|event| {
            let is_user = |e: &&OktaEntity| e.kind.as_deref() == Some("User");
            let mut subjects: Vec<String> = event.target.iter().flatten().filter(is_user).filter_map(|e| e.alternate_id.clone()).collect();
            if subjects.is_empty() {
                subjects.extend(event.actor.iter().filter(is_user).filter_map(|e| e.alternate_id.clone()));
            }
            let mut labels = BTreeMap::from([("eventType".to_string(), event.event_type.clone())]);
            labels.extend(event.severity.map(|s| ("severity".to_string(), s)));
            labels.extend(event.outcome.and_then(|o| o.result).map(|r| ("outcome".to_string(), r)));
            let summary = event.display_message.unwrap_or_else(|| event.event_type.clone());
            Ok(Signal { source: "oktaEventHook", status: "firing".into(), fingerprint: event.uuid, labels, annotations: BTreeMap::new(), subjects: bounded(subjects)?, summary })
        })
        .collect()
}

/// The generic webhook's body (docs/policies.md).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookMessage {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    summary: String,
}

/// Remembers the signatures of signed webhooks inside the replay window, so each is taken once.
#[derive(Debug, Default)]
pub struct SeenSignatures {
    seen: HashMap<[u8; 32], i64>,
}

/// Signatures remembered at most; past it a new one is refused until old ones age out, so a
/// flood of validly signed requests cannot grow memory without bound.
const MAX_REMEMBERED: usize = 100_000;

impl SeenSignatures {
    /// Refused when seen before; otherwise remembered until `expires`.
    fn take(&mut self, key: [u8; 32], now: i64, expires: i64) -> Result<(), Refusal> {
        if self.contains(&key, now) {
            return Err(Refusal::Replayed);
        }
        self.remember(key, now, expires)
    }

    /// Seen, and not yet expired.
    pub fn contains(&self, key: &[u8; 32], now: i64) -> bool {
        self.seen.get(key).is_some_and(|until| *until >= now)
    }

    pub fn remember(&mut self, key: [u8; 32], now: i64, expires: i64) -> Result<(), Refusal> {
        if self.seen.len() >= MAX_REMEMBERED {
            self.seen.retain(|_, until| *until >= now);
        }
        if self.seen.len() >= MAX_REMEMBERED {
            return Err(Refusal::Malformed("too many signed requests within the replay window".into()));
        }
        self.seen.insert(key, expires);
        Ok(())
    }
}

/// Verifies a generic webhook (timestamp within the window, HMAC over "<timestamp>.<body>", not
/// seen before) and reads its signal.
pub fn webhook(timestamp: Option<&[u8]>, signature: Option<&[u8]>, body: &[u8], key: &HmacKey, now: jiff::Timestamp, seen: &mut SeenSignatures) -> Result<Signal, Refusal> {
    let stamp: i64 = timestamp.and_then(|t| std::str::from_utf8(t).ok()).and_then(|t| t.trim().parse().ok()).ok_or(Refusal::Stale)?;
    let window = REPLAY_WINDOW.as_secs() as i64;
    if stamp.abs_diff(now.as_second()) > window.unsigned_abs() {
        return Err(Refusal::Stale);
    }
    let presented = signature.and_then(|s| s.strip_prefix(b"sha256=")).and_then(|hex_text| hex::decode(hex_text.trim_ascii()).ok()).ok_or(Refusal::BadSignature)?;
    let mut mac = key.mac();
    mac.update(stamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&presented).map_err(|_| Refusal::BadSignature)?;
    let message: WebhookMessage = serde_json::from_slice(body).map_err(|e| Refusal::Malformed(clip(&e.to_string())))?;
    let status = message.status.unwrap_or_else(|| "firing".into());
    if status != "firing" && status != "resolved" {
        return Err(Refusal::Malformed(format!("status {:?} is neither firing nor resolved", clip(&status))));
    }
    // Taken only once the body is known good: a bad body does not use up its signature.
    let digest: [u8; 32] = Sha256::digest(&presented).into();
    seen.take(digest, now.as_second(), stamp.saturating_add(window))?;
    let fingerprint = message.id.filter(|id| !id.is_empty()).unwrap_or_else(|| digest_hex(body));
    Ok(Signal { source: "webhook", status, fingerprint, labels: message.labels, annotations: message.annotations, subjects: bounded(message.subjects)?, summary: message.summary })
}

pub(crate) fn bounded(mut subjects: Vec<String>) -> Result<Vec<String>, Refusal> {
    subjects.retain(|s| !s.trim().is_empty());
    subjects.sort();
    subjects.dedup();
    if subjects.len() > MAX_SUBJECTS {
        return Err(Refusal::Malformed(format!("{} subjects; at most {MAX_SUBJECTS}", subjects.len())));
    }
    Ok(subjects)
}

/// The first 16 bytes of SHA-256, in hex: names an incident in a label without its text.
pub fn digest_hex(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..16])
}

/// A policy's CEL expressions, compiled once.
pub struct Rules {
    condition: Option<cel::Program>,
    dedupe_by: Option<cel::Program>,
}

/// What a policy's rules say of a signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Start a recall, unless one for this incident key started within the cooldown.
    Matches { incident: String },
    ConditionFalse,
    /// An expression failed on this signal (a missing label, a value of the wrong type).
    ConditionError(String),
}

impl Rules {
    /// Compiles the expressions; the error names the field and what the parser said.
    pub fn compile(condition: Option<&str>, dedupe_by: Option<&str>) -> Result<Self, String> {
        let compile = |field: &str, text: Option<&str>| -> Result<Option<cel::Program>, String> {
            text.map(|t| cel::Program::compile(t).map_err(|e| format!("spec.{field} is not valid CEL: {e}"))).transpose()
        };
        Ok(Self { condition: compile("condition", condition)?, dedupe_by: compile("dedupeBy", dedupe_by)? })
    }

    pub fn judge(&self, signal: &Signal) -> Verdict {
        let mut context = cel::Context::default();
        if let Err(e) = context.add_variable("signal", signal) {
            return Verdict::ConditionError(format!("the signal could not be given to CEL: {e}"));
        }
        if let Some(condition) = &self.condition {
            match run(condition, &context) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => return Verdict::ConditionFalse,
                Ok(other) => return Verdict::ConditionError(format!("spec.condition gave {}, not a bool", clip(&format!("{other:?}")))),
                Err(e) => return Verdict::ConditionError(format!("spec.condition: {}", clip(&e))),
            }
        }
        let incident = match &self.dedupe_by {
            None => signal.fingerprint.clone(),
            Some(program) => match run(program, &context) {
                Ok(cel::Value::String(key)) => key.to_string(),
                Ok(other) => return Verdict::ConditionError(format!("spec.dedupeBy gave {}, not a string", clip(&format!("{other:?}")))),
                Err(e) => return Verdict::ConditionError(format!("spec.dedupeBy: {}", clip(&e))),
            },
        };
        Verdict::Matches { incident }
    }
}

/// Runs an expression; a panic inside the interpreter on a strange signal is that signal's
/// error, not the receiver's end.
fn run(program: &cel::Program, context: &cel::Context) -> Result<cel::Value, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| program.execute(context))) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("the expression could not be evaluated on this signal".into()),
    }
}

/// One incident, one recall within the cooldown; at most `per_hour` recalls in any hour. Where
/// a policy's recalls take their users from the signals, a later signal of the same incident
/// naming users its recalls have not reached starts a follow-up recall of just those: a repeat
/// never hides a user.
#[derive(Debug, Default)]
pub struct Guard {
    /// Incident digests: when their latest recall was created, its name, and every user the
    /// incident's recalls named (in lower case, as providers compare them).
    recent: HashMap<String, Incident>,
    /// When each recall of the last hour was created, oldest first.
    created: VecDeque<jiff::Timestamp>,
}

#[derive(Debug)]
struct Incident {
    at: jiff::Timestamp,
    recall: String,
    subjects: std::collections::HashSet<String>,
}

/// What the guard says of a matching signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Create,
    /// A recall for this incident was created within the cooldown, and it names everyone this
    /// signal names: that recall's name.
    Duplicate(String),
    /// The incident's recall (named) did not name these users: a recall of them alone.
    FollowUp(String, Vec<String>),
    CapReached,
}

const HOUR: jiff::SignedDuration = jiff::SignedDuration::from_secs(3600);

impl Guard {
    /// `subjects`: the users the signal names, when the policy's recalls take them from it.
    pub fn admit(&mut self, incident: &str, subjects: Option<&[String]>, now: jiff::Timestamp, cooldown: Duration, per_hour: usize) -> Admission {
        let cooldown = jiff::SignedDuration::try_from(cooldown).unwrap_or(jiff::SignedDuration::MAX);
        self.recent.retain(|_, seen| now.duration_since(seen.at) < cooldown);
        while self.created.front().is_some_and(|at| now.duration_since(*at) >= HOUR) {
            self.created.pop_front();
        }
        let capped = self.created.len() >= per_hour;
        match self.recent.get(incident) {
            Some(seen) => {
                let new: Vec<String> = subjects.unwrap_or_default().iter().filter(|s| !seen.subjects.contains(&s.to_lowercase())).cloned().collect();
                match (new.is_empty(), capped) {
                    (true, _) => Admission::Duplicate(seen.recall.clone()),
                    (false, true) => Admission::CapReached,
                    (false, false) => Admission::FollowUp(seen.recall.clone(), new),
                }
            }
            None if capped => Admission::CapReached,
            None => Admission::Create,
        }
    }

    /// A recall naming `subjects` was created for `incident` at `at` (also used to seed the guard
    /// from the recalls a policy created before this process started).
    pub fn created(&mut self, incident: &str, at: jiff::Timestamp, recall: &str, subjects: &[String]) {
        let seen = self.recent.entry(incident.to_string()).or_insert_with(|| Incident { at, recall: recall.to_string(), subjects: Default::default() });
        if seen.at <= at {
            (seen.at, seen.recall) = (at, recall.to_string());
        }
        seen.subjects.extend(subjects.iter().map(|s| s.to_lowercase()));
        let place = self.created.partition_point(|t| *t <= at);
        self.created.insert(place, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HmacKey {
        HmacKey::new(b"0123456789abcdef0123456789abcdef", "the test key").unwrap()
    }

    fn sign(stamp: i64, body: &[u8]) -> String {
        let mut mac = key().mac();
        mac.update(format!("{stamp}.").as_bytes());
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    const ALERTS: &str = r#"{"version":"4","groupKey":"{}:{alertname=\"CredentialLeak\"}","truncatedAlerts":0,"status":"firing","receiver":"mfa-recall",
        "groupLabels":{"alertname":"CredentialLeak"},"commonLabels":{"alertname":"CredentialLeak"},"commonAnnotations":{},"externalURL":"http://am:9093",
        "alerts":[
          {"status":"firing","labels":{"alertname":"CredentialLeak","severity":"critical","user":"Alice@Example.com, bob"},"annotations":{"summary":"paste site dump","users":"carol"},"startsAt":"2026-12-06T10:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/graph","fingerprint":"a1b2c3d4e5f60718"},
          {"status":"resolved","labels":{"alertname":"CredentialLeak","severity":"warning"},"annotations":{},"startsAt":"2026-12-06T09:00:00Z","endsAt":"2026-12-06T09:30:00Z","generatorURL":"","fingerprint":"0f0f0f0f0f0f0f0f"}]}"#;

    #[test]
    fn each_alert_is_a_signal_with_its_users_from_labels_and_annotations() {
        let signals = alertmanager(ALERTS.as_bytes(), &["user".into(), "users".into()]).unwrap();
        assert_eq!(signals.len(), 2);
        assert_eq!((signals[0].status.as_str(), signals[0].fingerprint.as_str(), signals[0].summary.as_str()), ("firing", "a1b2c3d4e5f60718", "paste site dump"));
        assert_eq!(signals[0].subjects, ["Alice@Example.com", "bob", "carol"]);
        assert!(!signals[1].firing());
        assert!(signals[1].subjects.is_empty());
    }

    #[test]
    fn alertmanager_payloads_of_another_version_or_shape_are_malformed() {
        for body in [r#"{"version":"3","alerts":[]}"#, r#"{"alerts":[]}"#, "not json", r#"{"version":"4","alerts":[{"status":"pending"}]}"#, r#"{"version":"4","alerts":[{"status":"firing","labels":{"a":1}}]}"#] {
            assert!(matches!(alertmanager(body.as_bytes(), &[]), Err(Refusal::Malformed(_))), "{body}");
        }
    }

    /// The shape of Okta's event hooks guide: a user reporting suspicious activity (the user is
    /// the actor) and an administrator resetting a user's factors (the user is a target).
    #[test]
    fn okta_events_name_their_target_users_or_else_their_actor() {
        let body = br#"{"eventType":"com.okta.event_hook","eventTypeVersion":"1.0","cloudEventsVersion":"0.1","source":"https://dev.okta.com/api/v1/eventHooks/who8","eventId":"b5a1","eventTime":"2026-12-06T10:00:00.000Z","contentType":"application/json",
          "data":{"events":[
            {"uuid":"e-1","published":"2026-12-06T10:00:00.000Z","eventType":"user.account.report_suspicious_activity_by_enduser","version":"0","displayMessage":"User report suspicious activity","severity":"WARN",
             "actor":{"id":"00u1","type":"User","alternateId":"Alice@Example.com","displayName":"Alice"},"target":[{"id":"evt","type":"Event","alternateId":"unknown"}],"outcome":{"result":"SUCCESS"}},
            {"uuid":"e-2","eventType":"user.mfa.factor.reset_all","severity":"INFO","actor":{"type":"User","alternateId":"admin@example.com"},
             "target":[{"type":"User","alternateId":"bob@example.com"},{"type":"AppInstance","alternateId":"Okta"}],"outcome":{"result":"SUCCESS"}}]}}"#;
        let signals = okta_event_hook(body).unwrap();
        assert_eq!(signals.len(), 2);
        assert_eq!((signals[0].fingerprint.as_str(), signals[0].subjects.clone(), signals[0].labels["severity"].as_str()), ("e-1", vec!["Alice@Example.com".to_string()], "WARN"));
        assert_eq!((signals[1].labels["eventType"].as_str(), signals[1].subjects.clone()), ("user.mfa.factor.reset_all", vec!["bob@example.com".to_string()]));
        assert!(matches!(okta_event_hook(b"{\"data\":{\"events\":[{\"eventType\":\"x\"}]}}"), Err(Refusal::Malformed(_))), "an event without uuid");
    }

    #[test]
    fn bearer_tokens_are_compared_whole() {
        let expected = token_digest(b"s3cret-token-of-enough-length-123456");
        assert_eq!(check_bearer(Some(b"Bearer s3cret-token-of-enough-length-123456"), Some(&expected)), Ok(()));
        for wrong in [None, Some(&b"Bearer s3cret"[..]), Some(b"Basic s3cret-token-of-enough-length-123456"), Some(b"s3cret-token-of-enough-length-123456")] {
            assert_eq!(check_bearer(wrong, Some(&expected)), Err(Refusal::Unauthenticated));
        }
        assert_eq!(check_bearer(Some(b"Bearer s3cret-token-of-enough-length-123456"), None), Err(Refusal::Unauthenticated), "no secret configured: nothing passes");
        assert_eq!(clip(&"é".repeat(300)).chars().count(), 201);
    }

    #[test]
    fn a_signed_webhook_is_taken_once_within_the_window() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let body = br#"{"id":"leak-7","labels":{"severity":"critical"},"subjects":["dave","dave","Erin@x"],"summary":"stolen cookies"}"#;
        let stamp = now.as_second() - 10;
        let mut seen = SeenSignatures::default();
        let signal = webhook(Some(stamp.to_string().as_bytes()), Some(sign(stamp, body).as_bytes()), body, &key(), now, &mut seen).unwrap();
        assert_eq!((signal.source, signal.status.as_str(), signal.fingerprint.as_str()), ("webhook", "firing", "leak-7"));
        assert_eq!(signal.subjects, ["Erin@x", "dave"]);
        let again = webhook(Some(stamp.to_string().as_bytes()), Some(sign(stamp, body).as_bytes()), body, &key(), now, &mut seen);
        assert_eq!(again, Err(Refusal::Replayed));
    }

    #[test]
    fn forged_stale_or_unsigned_webhooks_are_refused_without_being_read() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let body = br#"{"id":"x"}"#;
        let stamp = now.as_second();
        let mut seen = SeenSignatures::default();
        let mut check = |t: Option<&str>, s: Option<&str>, b: &[u8]| webhook(t.map(str::as_bytes), s.map(str::as_bytes), b, &key(), now, &mut seen);
        let good = sign(stamp, body);
        assert_eq!(check(Some(&stamp.to_string()), Some(&good), br#"{"id":"y"}"#), Err(Refusal::BadSignature), "body changed after signing");
        assert_eq!(check(Some(&(stamp + 1).to_string()), Some(&good), body), Err(Refusal::BadSignature), "timestamp changed after signing");
        assert_eq!(check(Some(&stamp.to_string()), None, body), Err(Refusal::BadSignature));
        assert_eq!(check(Some(&stamp.to_string()), Some("sha256=zz"), body), Err(Refusal::BadSignature));
        let old = stamp - 301;
        assert_eq!(check(Some(&old.to_string()), Some(&sign(old, body)), body), Err(Refusal::Stale));
        assert_eq!(check(None, Some(&good), body), Err(Refusal::Stale));
        let bad_body = br#"{"id":"x","subjects":"not a list"}"#;
        assert!(matches!(check(Some(&stamp.to_string()), Some(&sign(stamp, bad_body)), bad_body), Err(Refusal::Malformed(_))));
        let unknown = br#"{"id":"x","subject":["typo"]}"#;
        assert!(matches!(check(Some(&stamp.to_string()), Some(&sign(stamp, unknown)), unknown), Err(Refusal::Malformed(_))), "a misspelt field is not silently ignored");
    }

    #[test]
    fn rules_decide_on_labels_and_name_the_incident() {
        let signal = Signal { source: "alertmanager", status: "firing".into(), fingerprint: "fp1".into(), labels: [("severity".to_string(), "critical".to_string()), ("team".to_string(), "iam".to_string())].into(), ..Default::default() };
        let rules = Rules::compile(Some(r#"signal.labels.severity == "critical""#), None).unwrap();
        assert_eq!(rules.judge(&signal), Verdict::Matches { incident: "fp1".into() });
        let by_team = Rules::compile(Some(r#"signal.labels.severity == "critical""#), Some("signal.labels.team")).unwrap();
        assert_eq!(by_team.judge(&signal), Verdict::Matches { incident: "iam".into() });
        let warning = Signal { labels: [("severity".to_string(), "warning".to_string())].into(), ..signal.clone() };
        assert_eq!(rules.judge(&warning), Verdict::ConditionFalse);
        let missing = Rules::compile(Some(r#"signal.labels.region == "eu""#), None).unwrap();
        assert!(matches!(missing.judge(&signal), Verdict::ConditionError(why) if why.contains("region")));
        let not_bool = Rules::compile(Some("signal.labels"), None).unwrap();
        assert!(matches!(not_bool.judge(&signal), Verdict::ConditionError(why) if why.contains("not a bool")));
        let error = Rules::compile(Some("signal.labels.severity =="), None).err().unwrap();
        assert!(error.starts_with("spec.condition is not valid CEL"), "{error}");
    }

    #[test]
    fn one_incident_is_one_recall_within_the_cooldown_and_the_hour_is_capped() {
        let t0 = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let at = |s: i64| t0.checked_add(jiff::SignedDuration::from_secs(s)).unwrap();
        let (cooldown, mut guard) = (Duration::from_secs(600), Guard::default());
        assert_eq!(guard.admit("a", None, t0, cooldown, 2), Admission::Create);
        guard.created("a", t0, "p-1", &[]);
        assert_eq!(guard.admit("a", None, at(599), cooldown, 2), Admission::Duplicate("p-1".into()));
        assert_eq!(guard.admit("b", None, at(10), cooldown, 2), Admission::Create);
        guard.created("b", at(10), "p-2", &[]);
        assert_eq!(guard.admit("c", None, at(20), cooldown, 2), Admission::CapReached);
        assert_eq!(guard.admit("a", None, at(600), cooldown, 2), Admission::CapReached, "out of cooldown, but two recalls this hour");
        assert_eq!(guard.admit("a", None, at(3600), cooldown, 2), Admission::Create, "the first recall is an hour old");
    }

    /// A repeat of an incident that names someone its recall did not is no duplicate: that user
    /// gets a recall of their own; names compare in any letter case.
    #[test]
    fn a_repeat_naming_new_users_recalls_just_them() {
        let t0 = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let (cooldown, mut guard) = (Duration::from_secs(600), Guard::default());
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        guard.created("leak", t0, "p-1", &names(&["Alice@x", "bob@x"]));
        assert_eq!(guard.admit("leak", Some(&names(&["alice@X"])), t0, cooldown, 3), Admission::Duplicate("p-1".into()));
        assert_eq!(guard.admit("leak", Some(&names(&["BOB@x", "carol@x"])), t0, cooldown, 3), Admission::FollowUp("p-1".into(), names(&["carol@x"])));
        guard.created("leak", t0, "p-2", &names(&["carol@x"]));
        assert_eq!(guard.admit("leak", Some(&names(&["carol@x", "alice@x"])), t0, cooldown, 3), Admission::Duplicate("p-2".into()));
        assert_eq!(guard.admit("leak", Some(&names(&["dave@x"])), t0, cooldown, 2), Admission::CapReached, "a follow-up counts against the hour");
    }
}
