//! OpenID Shared Signals: Security Event Tokens (RFC 8417) checked against the transmitter's JWKS,
//! issuer and audience, and read into a `Signal` (CAEP session-revoked and credential-change,
//! RISC credential-compromise and account-disabled, any other event by its name); the push
//! (RFC 8935) and poll (RFC 8936) wire formats; and the transmitter's keys and configuration,
//! fetched from loopback or over HTTPS only, without redirects, and read up to a cap.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Signal;

/// The verification event a transmitter sends to check a stream (SSF 1.0 §8.1.4.1).
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
/// The largest JWKS, configuration or poll answer read.
pub const MAX_ANSWER: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a SET was refused, as RFC 8935 §2.4 names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetError {
    /// Not a SET, or its event is not as its definition says.
    InvalidRequest(String),
    /// Signed with a key the transmitter's JWKS does not hold, or the signature does not verify.
    InvalidKey(String),
    InvalidIssuer,
    InvalidAudience,
}

impl SetError {
    pub fn err(&self) -> &'static str {
        match self {
            SetError::InvalidRequest(_) => "invalid_request",
            SetError::InvalidKey(_) => "invalid_key",
            SetError::InvalidIssuer => "invalid_issuer",
            SetError::InvalidAudience => "invalid_audience",
        }
    }

    /// The outcome counted in the policy's status.
    pub fn outcome(&self) -> &'static str {
        match self {
            SetError::InvalidRequest(_) => "malformed",
            SetError::InvalidKey(_) => "badSignature",
            SetError::InvalidIssuer => "unknownIssuer",
            SetError::InvalidAudience => "wrongAudience",
        }
    }

    pub fn description(&self) -> String {
        match self {
            SetError::InvalidRequest(why) | SetError::InvalidKey(why) => why.clone(),
            SetError::InvalidIssuer => "iss is not the issuer this stream was configured with".into(),
            SetError::InvalidAudience => "aud does not name this receiver".into(),
        }
    }

    /// The body of a refusal: `{"err": ..., "description": ...}`.
    pub fn body(&self) -> Value {
        serde_json::json!({ "err": self.err(), "description": self.description() })
    }
}

/// The transmitter's signing keys, by key id. Only asymmetric algorithms: a shared-secret or
/// unsigned token could be made by anyone who saw one.
#[derive(Default)]
pub struct Keys {
    by_kid: HashMap<String, (Algorithm, DecodingKey)>,
}

impl Keys {
    /// The usable keys of a JWKS document; those of unknown type, without a kid, or not for
    /// signatures are left out.
    pub fn from_jwks(body: &[u8]) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("the JWKS does not parse: {e}"))?;
        let mut by_kid = HashMap::new();
        for jwk in set.keys {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature) {
                continue;
            }
            let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(alg), _) => match alg.to_string().parse::<Algorithm>() {
                    Ok(alg) => alg,
                    Err(_) => continue,
                },
                (None, jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec)) if ec.curve == jsonwebtoken::jwk::EllipticCurve::P256 => Algorithm::ES256,
                (None, jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec)) if ec.curve == jsonwebtoken::jwk::EllipticCurve::P384 => Algorithm::ES384,
                (None, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                _ => continue,
            };
            if matches!(algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(&jwk) {
                by_kid.insert(kid, (algorithm, key));
            }
        }
        if by_kid.is_empty() {
            return Err("the JWKS holds no signing key with a kid".into());
        }
        Ok(Self { by_kid })
    }

    pub fn has(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// The algorithm and key of `kid`.
    pub fn get(&self, kid: &str) -> Option<(Algorithm, &DecodingKey)> {
        self.by_kid.get(kid).map(|(algorithm, key)| (*algorithm, key))
    }
}

/// The key id of a token's header, to tell an unknown key (fetch the JWKS again) from a bad token.
pub fn key_id(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).ok()?.kid
}

/// A verified SET: its jti, and the signal it carries (None for a stream verification event).
#[derive(Debug, PartialEq)]
pub struct Verified {
    pub jti: String,
    pub signal: Option<Signal>,
}

/// How old a SET may be (its iat), and how far ahead of the operator's clock: an older one, if
/// ever captured, cannot be played back once its jti is forgotten (after the same time).
pub const SET_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const CLOCK_SKEW: i64 = 300;

/// Checks a SET (header type, algorithm and key, signature, issuer, audience, iat, one event) and reads its signal.
pub fn verify(token: &str, keys: &Keys, issuer: &str, audience: &str, now: jiff::Timestamp) -> Result<Verified, SetError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| SetError::InvalidRequest(super::clip(&format!("not a JWT: {e}"))))?;
    // SSF 1.0 §4.1.2 (RFC 8417 §2.3): explicitly typed, so no other JWT is taken for a SET.
    if header.typ.as_deref() != Some("secevent+jwt") {
        return Err(SetError::InvalidRequest(format!("typ is {:?}, not secevent+jwt", header.typ.as_deref().map(super::clip))));
    }
    let kid = header.kid.ok_or_else(|| SetError::InvalidKey("the header names no kid".into()))?;
    let (algorithm, key) = keys.by_kid.get(&kid).ok_or_else(|| SetError::InvalidKey(format!("no key {:?} in the transmitter's JWKS", super::clip(&kid))))?;
    if header.alg != *algorithm {
        return Err(SetError::InvalidKey(format!("signed with {:?}, but key {:?} is for {algorithm:?}", header.alg, super::clip(&kid))));
    }
    let mut validation = Validation::new(*algorithm);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    // A SET has no exp (RFC 8417 §2.2): it states what happened, it grants nothing.
    validation.validate_exp = false;
    validation.required_spec_claims = ["iss", "aud"].iter().map(|c| c.to_string()).collect();
    let claims = jsonwebtoken::decode::<Value>(token, key, &validation).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidIssuer => SetError::InvalidIssuer,
        jsonwebtoken::errors::ErrorKind::InvalidAudience => SetError::InvalidAudience,
        jsonwebtoken::errors::ErrorKind::InvalidSignature | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => SetError::InvalidKey("the signature does not verify".into()),
        _ => SetError::InvalidRequest(super::clip(&format!("the claims are not a SET: {e}"))),
    })?;
    read(claims.claims, issuer, now)
}

/// The signal of a verified SET's claims.
fn read(claims: Value, issuer: &str, now: jiff::Timestamp) -> Result<Verified, SetError> {
    let bad = |why: &str| SetError::InvalidRequest(why.to_string());
    let jti = claims.get("jti").and_then(Value::as_str).filter(|j| !j.is_empty() && j.len() <= 256).ok_or_else(|| bad("jti is missing or longer than 256 characters"))?.to_string();
    let iat = claims.get("iat").and_then(Value::as_i64).ok_or_else(|| bad("iat is missing"))?;
    let oldest = now.as_second().saturating_sub(SET_LIFETIME.as_secs() as i64);
    if iat < oldest || iat > now.as_second().saturating_add(CLOCK_SKEW) {
        return Err(bad(&format!("iat {iat} is more than {} hours old or ahead of this receiver's clock", SET_LIFETIME.as_secs() / 3600)));
    }
    let events = claims.get("events").and_then(Value::as_object).ok_or_else(|| bad("events is missing"))?;
    // SSF 1.0 §4.1.8: one event per SET.
    let (uri, event) = match events.iter().next() {
        Some(first) if events.len() == 1 => first,
        _ => return Err(bad("events must hold exactly one event")),
    };
    if uri == VERIFICATION {
        return Ok(Verified { jti, signal: None });
    }
    // The subject is top-level (SSF 1.0 §4.1.1); older CAEP drafts put it in the event.
    let subject = claims.get("sub_id").or_else(|| event.get("subject")).ok_or_else(|| bad("sub_id is missing"))?;
    let name = super::clip(uri.rsplit('/').next().unwrap_or(uri));
    let mut labels = BTreeMap::new();
    for (key, value) in event.as_object().into_iter().flatten().take(32) {
        if let Some(text) = value.as_str().filter(|t| t.len() <= 1024 && key.len() <= 256) {
            labels.insert(key.clone(), text.to_string());
        }
    }
    // Set last: an event's own fields cannot pass for them.
    labels.insert("event".to_string(), name.clone());
    labels.insert("issuer".to_string(), issuer.to_string());
    let summary = event.get("reason_admin").and_then(|r| r.get("en")).and_then(Value::as_str).map_or_else(|| name.clone(), |r| format!("{name}: {}", super::clip(r)));
    let subjects = super::bounded(subjects(subject)).map_err(|r| SetError::InvalidRequest(r.message()))?;
    Ok(Verified { jti: jti.clone(), signal: Some(Signal { source: "sharedSignals", status: "firing".into(), fingerprint: jti, labels, annotations: BTreeMap::new(), subjects, summary }) })
}

/// The users a subject identifier names (RFC 9493): an email, an issuer's subject, an opaque id,
/// an account URI, and those of an aliases or complex subject.
fn subjects(subject: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let text = |key: &str| subject.get(key).and_then(Value::as_str).map(str::to_string);
    match subject.get("format").and_then(Value::as_str) {
        Some("email") => found.extend(text("email")),
        Some("iss_sub") => found.extend(text("sub")),
        Some("opaque") => found.extend(text("id")),
        Some("account") => found.extend(text("uri").map(|u| u.trim_start_matches("acct:").to_string())),
        Some("aliases") => {
            for alias in subject.get("identifiers").and_then(Value::as_array).into_iter().flatten().take(16) {
                found.extend(subjects(alias));
            }
        }
        // A complex subject (CAEP): its user.
        _ => {
            if let Some(user) = subject.get("user") {
                found.extend(subjects(user));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// A poll request (RFC 8936 §2.4).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PollRequest {
    pub max_events: u32,
    pub return_immediately: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ack: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub set_errs: BTreeMap<String, Value>,
}

/// A poll answer (RFC 8936 §2.5).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollAnswer {
    #[serde(default)]
    pub sets: BTreeMap<String, String>,
    #[serde(default)]
    pub more_available: bool,
}

/// A client that follows no redirect: the poll's Authorization header goes to the configured URL only.
pub fn client() -> reqwest::Client {
    crate::notify::webhook_client()
}

/// GETs (or POSTs `body` to) `url` and reads a JSON answer of at most MAX_ANSWER bytes.
pub async fn fetch<T: serde::de::DeserializeOwned>(client: &reqwest::Client, url: &reqwest::Url, authorization: Option<&str>, body: Option<&PollRequest>) -> Result<T, String> {
    let mut request = match body {
        Some(body) => client.post(url.clone()).json(body),
        None => client.get(url.clone()),
    };
    if let Some(authorization) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, authorization);
    }
    let request = request.header(reqwest::header::ACCEPT, "application/json").build().map_err(|e| format!("{url}: {e}"))?;
    let (status, value) = crate::backends::http::json_answer(client, request, MAX_ANSWER, FETCH_TIMEOUT).await?;
    if !status.is_success() {
        return Err(format!("{url} answered {status}"));
    }
    serde_json::from_value(value).map_err(|e| format!("{url}: the answer does not parse: {e}"))
}

/// Where a transmitter's keys are: `jwks_uri` of its configuration (SSF 1.0 §7.1).
pub async fn jwks_uri(client: &reqwest::Client, issuer: &str) -> Result<String, String> {
    let base = issuer.trim_end_matches('/');
    let url = crate::notify::checked_url("issuer", &format!("{base}/.well-known/ssf-configuration"))?;
    let config: Value = fetch(client, &url, None, None).await?;
    config.get("jwks_uri").and_then(Value::as_str).map(str::to_string).ok_or_else(|| format!("{url} names no jwks_uri"))
}

/// The transmitter's keys.
pub async fn keys(client: &reqwest::Client, jwks_uri: &str) -> Result<Keys, String> {
    let url = crate::notify::checked_url("jwksUri", jwks_uri)?;
    let body: Value = fetch(client, &url, None, None).await?;
    Keys::from_jwks(body.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subjects_are_read_from_every_identifier_format() {
        assert_eq!(subjects(&json!({ "format": "email", "email": "Alice@Example.com" })), ["Alice@Example.com"]);
        assert_eq!(subjects(&json!({ "format": "iss_sub", "iss": "https://idp", "sub": "00u1" })), ["00u1"]);
        assert_eq!(subjects(&json!({ "format": "opaque", "id": "x9" })), ["x9"]);
        assert_eq!(subjects(&json!({ "format": "account", "uri": "acct:bob@example.com" })), ["bob@example.com"]);
        assert_eq!(subjects(&json!({ "format": "aliases", "identifiers": [{ "format": "email", "email": "a@x" }, { "format": "opaque", "id": "7" }] })), ["7", "a@x"]);
        assert_eq!(subjects(&json!({ "user": { "format": "email", "email": "c@x" }, "session": { "format": "opaque", "id": "s" } })), ["c@x"]);
        assert!(subjects(&json!({ "format": "phone_number", "phone_number": "+1" })).is_empty());
    }

    #[test]
    fn a_risc_credential_compromise_reads_into_a_signal() {
        let now = jiff::Timestamp::from_second(1520364019 + 60).unwrap();
        let claims = json!({ "iss": "https://idp.example.com/", "jti": "756E69717565206964656E746966696572", "iat": 1520364019, "aud": "636C69656E745F6964",
                             "sub_id": { "format": "email", "email": "foo@example.com" },
                             "events": { "https://schemas.openid.net/secevent/risc/event-type/credential-compromise": { "credential_type": "password" } } });
        let verified = read(claims.clone(), "https://idp.example.com/", now).unwrap();
        let signal = verified.signal.unwrap();
        assert_eq!((signal.source, signal.fingerprint.as_str(), signal.subjects.clone()), ("sharedSignals", "756E69717565206964656E746966696572", vec!["foo@example.com".to_string()]));
        assert_eq!((signal.labels["event"].as_str(), signal.labels["credential_type"].as_str()), ("credential-compromise", "password"));
        let two = json!({ "jti": "j", "iat": 1520364019, "sub_id": { "format": "email", "email": "a@x" }, "events": { "a": {}, "b": {} } });
        assert!(matches!(read(two, "i", now), Err(SetError::InvalidRequest(why)) if why.contains("exactly one")));
        let verification = json!({ "jti": "v", "iat": 1520364019, "events": { VERIFICATION: { "state": "VGhpcyBpcyBhbiBleGFtcGxlIHN0YXRlIHZhbHVlLgo=" } } });
        assert_eq!(read(verification, "i", now).unwrap(), Verified { jti: "v".into(), signal: None });
        let a_day_later = jiff::Timestamp::from_second(1520364019 + 24 * 3600 + 1).unwrap();
        assert!(matches!(read(claims.clone(), "https://idp.example.com/", a_day_later), Err(SetError::InvalidRequest(why)) if why.contains("iat")), "too old to be taken");
        let mut forged_label = claims;
        forged_label["events"]["https://schemas.openid.net/secevent/risc/event-type/credential-compromise"]["event"] = json!("something-else");
        assert_eq!(read(forged_label, "https://idp.example.com/", now).unwrap().signal.unwrap().labels["event"], "credential-compromise", "an event's field cannot pass for its name");
    }
}
