//! A Shared Signals transmitter for the tests, written from the SSF 1.0 specification and RFCs
//! 8417, 8935 and 8936, not from the operator's receiver: it serves its configuration
//! (`/.well-known/ssf-configuration`), its keys (`/jwks.json`, an ES256 key made at start) and a
//! poll endpoint (`/poll`, behind an Authorization header), signs SETs as the specification's
//! examples are shaped, pushes them, and records what a poller acknowledged or refused.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const CREDENTIAL_COMPROMISE: &str = "https://schemas.openid.net/secevent/risc/event-type/credential-compromise";
pub const ACCOUNT_DISABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
pub const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
pub const CREDENTIAL_CHANGE: &str = "https://schemas.openid.net/secevent/caep/event-type/credential-change";
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";

/// What a poller did, as the transmitter saw it.
#[derive(Default)]
struct Stream {
    /// SETs not yet acknowledged, by jti.
    queued: BTreeMap<String, String>,
    acknowledged: Vec<String>,
    refused: BTreeMap<String, Value>,
    polls: u32,
}

pub struct Transmitter {
    /// Its issuer and base URL, such as http://127.0.0.1:41234.
    pub issuer: String,
    pub kid: String,
    key: EncodingKey,
    /// Another key, published nowhere: what a forger signs with.
    forger: EncodingKey,
    poll_authorization: String,
    stream: Arc<Mutex<Stream>>,
}

fn es256_key() -> (EncodingKey, Vec<u8>) {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("an EC key");
    let pkcs8 = pair.to_pkcs8v1().expect("PKCS#8 of the key");
    (EncodingKey::from_ec_der(pkcs8.as_ref()), pair.public_key().as_ref().to_vec())
}

impl Transmitter {
    /// Starts the transmitter on loopback; polls must carry `poll_authorization`.
    pub async fn start(poll_authorization: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let (key, public) = es256_key();
        let (forger, _) = es256_key();
        let kid = format!("key-{:08x}", fastrand::u32(..));
        // An uncompressed P-256 point: 0x04, then x and y (RFC 7518 §6.2.1).
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let jwks = json!({ "keys": [{ "kty": "EC", "crv": "P-256", "x": b64(&public[1..33]), "y": b64(&public[33..65]), "kid": kid, "use": "sig", "alg": "ES256" }] });
        let configuration = json!({
            "spec_version": "1_0", "issuer": issuer, "jwks_uri": format!("{issuer}/jwks.json"),
            "delivery_methods_supported": ["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"],
        });
        let stream: Arc<Mutex<Stream>> = Arc::default();
        let (served, authorization) = (stream.clone(), poll_authorization.to_string());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (served, authorization, jwks, configuration) = (served.clone(), authorization.clone(), jwks.clone(), configuration.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (served, authorization, jwks, configuration) = (served.clone(), authorization.clone(), jwks.clone(), configuration.clone());
                        async move { Ok::<_, Infallible>(answer(request, &served, &authorization, &jwks, &configuration).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(socket), service).await;
                });
            }
        });
        Self { issuer, kid, key, forger, poll_authorization: poll_authorization.to_string(), stream }
    }

    /// A SET as SSF 1.0's examples have it: iss, jti, iat, aud, sub_id, and one event.
    pub fn set(&self, audience: &str, jti: &str, event: &str, fields: Value, subject: Value) -> String {
        self.sign(&self.key, "secevent+jwt", &self.claims(&self.issuer, audience, jti, event, fields, subject))
    }

    /// The same SET, signed with a key the transmitter never published, under its kid.
    pub fn forged(&self, audience: &str, jti: &str, event: &str, fields: Value, subject: Value) -> String {
        self.sign(&self.forger, "secevent+jwt", &self.claims(&self.issuer, audience, jti, event, fields, subject))
    }

    /// A SET with claims of the caller's choosing, signed with the real key and header type `typ`.
    pub fn signed(&self, typ: &str, claims: &Value) -> String {
        self.sign(&self.key, typ, claims)
    }

    pub fn claims(&self, issuer: &str, audience: &str, jti: &str, event: &str, fields: Value, subject: Value) -> Value {
        json!({ "iss": issuer, "jti": jti, "iat": jiff::Timestamp::now().as_second(), "aud": audience, "sub_id": subject, "events": { event: fields } })
    }

    fn sign(&self, key: &EncodingKey, typ: &str, claims: &Value) -> String {
        let header = Header { typ: Some(typ.into()), kid: Some(self.kid.clone()), ..Header::new(Algorithm::ES256) };
        jsonwebtoken::encode(&header, claims, key).expect("a signed SET")
    }

    /// Pushes a SET (RFC 8935 §2): its status and body.
    pub async fn push(&self, endpoint: &str, authorization: &str, token: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(endpoint)
            .header("authorization", authorization)
            .header("content-type", "application/secevent+jwt")
            .header("accept", "application/json")
            .body(token.to_string())
            .send()
            .await
            .expect("the receiver answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Queues a SET for the next poll.
    pub fn queue(&self, jti: &str, token: String) {
        self.stream.lock().unwrap().queued.insert(jti.to_string(), token);
    }

    /// The jtis a poller acknowledged, and those it refused with their errors.
    pub fn acknowledged(&self) -> (Vec<String>, BTreeMap<String, Value>) {
        let stream = self.stream.lock().unwrap();
        (stream.acknowledged.clone(), stream.refused.clone())
    }

    pub fn polls(&self) -> u32 {
        self.stream.lock().unwrap().polls
    }

    pub fn poll_authorization(&self) -> &str {
        &self.poll_authorization
    }
}

async fn answer(request: Request<hyper::body::Incoming>, stream: &Mutex<Stream>, authorization: &str, jwks: &Value, configuration: &Value) -> Response<Full<bytes::Bytes>> {
    let reply = |status: u16, body: Value| Response::builder().status(status).header("content-type", "application/json").body(Full::new(bytes::Bytes::from(body.to_string()))).unwrap();
    match (request.method().as_str(), request.uri().path()) {
        ("GET", "/.well-known/ssf-configuration") => reply(200, configuration.clone()),
        ("GET", "/jwks.json") => reply(200, jwks.clone()),
        ("POST", "/poll") => {
            if request.headers().get("authorization").and_then(|v| v.to_str().ok()) != Some(authorization) {
                return reply(401, json!({ "err": "authentication_failed" }));
            }
            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let Ok(asked) = serde_json::from_slice::<Value>(&body) else { return reply(400, json!({ "err": "invalid_request" })) };
            let mut stream = stream.lock().unwrap();
            stream.polls += 1;
            // RFC 8936 §2.4: acknowledged SETs are not sent again; refused ones are reported with their error.
            for jti in asked["ack"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                stream.queued.remove(jti);
                stream.acknowledged.push(jti.to_string());
            }
            for (jti, error) in asked["setErrs"].as_object().into_iter().flatten() {
                stream.queued.remove(jti);
                stream.refused.insert(jti.clone(), error.clone());
            }
            let max = asked["maxEvents"].as_u64().unwrap_or(u64::MAX) as usize;
            let sets: BTreeMap<&String, &String> = stream.queued.iter().take(max).collect();
            let more = stream.queued.len() > sets.len();
            reply(200, json!({ "sets": sets, "moreAvailable": more }))
        }
        _ => reply(404, json!({})),
    }
}
