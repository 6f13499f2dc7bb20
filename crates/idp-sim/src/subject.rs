//! Provider simulators as test subjects: one serving on loopback with fresh credentials, the
//! Secret data and the IdentityBackend spec (as JSON, the way a person writes it) that reach it,
//! and a wrong Secret for negative tests. Used by the conformance suite, the operator's tests,
//! the demo and the benchmarks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

use crate::{Running, Simulator};

/// Every simulated provider.
pub const SIMULATED: [&str; 5] = ["okta", "entra", "auth0", "google", "duo"];

/// A simulator serving on loopback, with what an IdentityBackend needs to reach it.
pub struct Subject {
    pub kind: &'static str,
    pub sim: Arc<Simulator>,
    pub running: Running,
    /// The credentials Secret's data (the simulator accepts exactly these).
    pub secret: BTreeMap<String, String>,
}

impl Subject {
    /// Starts the simulator of `kind` on a free loopback port with fresh credentials.
    pub async fn start(kind: &str) -> Result<Self, String> {
        let kind = SIMULATED.iter().copied().find(|k| *k == kind).ok_or_else(|| format!("no simulator named {kind}"))?;
        let secret = fresh_credentials(kind, None)?;
        let provider: Arc<dyn crate::Provider> = if kind == "duo" {
            // Duo's authentication log lags two minutes; tests look for re-enrollment at once.
            Arc::new(crate::duo::Duo::new(&json!(secret))?.with_log_delay(std::time::Duration::ZERO))
        } else {
            crate::build(kind, &json!(secret))?
        };
        let sim = Simulator::new(provider);
        let running = crate::serve(sim.clone(), SocketAddr::from(([127, 0, 0, 1], 0))).await.map_err(|e| e.to_string())?;
        // Google's key names its token endpoint, which is the simulator's.
        let secret = if kind == "google" { fresh_credentials(kind, Some((&running.url, &secret)))? } else { secret };
        Ok(Self { kind, sim, running, secret })
    }

    /// The spec of an IdentityBackend that reaches this simulator with the credentials in the
    /// Secret `credentials_secret` and the given `limits` (the API's `limits` block), as JSON.
    pub fn backend_spec_json(&self, credentials_secret: &str, limits: Value) -> Value {
        let secret_ref = json!({ "name": credentials_secret });
        let url = &self.running.url;
        let block = match self.kind {
            "entra" => json!({ "tenantId": "contoso-test", "graphUrl": url, "loginUrl": url, "credentialsSecretRef": secret_ref }),
            "google" => json!({ "adminEmail": "secadmin@example.com", "url": url, "credentialsSecretRef": secret_ref }),
            _ => json!({ "url": url, "credentialsSecretRef": secret_ref }),
        };
        // A simulator's logs show an event at once (a real provider's take minutes): a second is
        // enough to wait before dating factors without a creation time.
        json!({ self.kind: block, "limits": limits, "logDelay": "1s" })
    }

    /// Same keys, wrong values: what a mistyped Secret looks like.
    pub fn wrong_secret(&self) -> BTreeMap<String, String> {
        let mut wrong = self.secret.clone();
        for (key, value) in wrong.iter_mut() {
            match key.as_str() {
                "service-account.json" => {
                    // A well-formed key the simulator does not know.
                    let mut other: Value = serde_json::from_str(value).expect("our own JSON");
                    other["private_key"] = json!(generate_rsa_pem());
                    *value = other.to_string();
                }
                "private-key" => *value = generate_rsa_pem(),
                "client-id" | "integration-key" | "key-id" => {}
                _ => *value = format!("wrong-{}", canary_token(24)),
            }
        }
        wrong
    }
}

/// Fresh random credentials for `kind`, keyed as in the provider's Secret. For Google, the
/// service-account key names the simulator's token endpoint once it is known (`served`).
fn fresh_credentials(kind: &str, served: Option<(&str, &BTreeMap<String, String>)>) -> Result<BTreeMap<String, String>, String> {
    let mut secret = BTreeMap::new();
    match kind {
        "okta" => {
            secret.insert("api-token".into(), format!("00{}", canary_token(40)));
        }
        "entra" | "auth0" => {
            secret.insert("client-id".into(), format!("{:032x}", fastrand::u128(..)));
            secret.insert("client-secret".into(), canary_token(40));
        }
        "duo" => {
            secret.insert("integration-key".into(), format!("DI{}", random_token(18).to_uppercase()));
            secret.insert("secret-key".into(), canary_token(40));
        }
        "google" => {
            // Same key (and key id) as before; only the token endpoint changes.
            let (token_uri, private_key, private_key_id) = match served {
                Some((url, earlier)) => {
                    let earlier: Value = serde_json::from_str(&earlier["service-account.json"]).map_err(|e| e.to_string())?;
                    let text = |k: &str| earlier[k].as_str().unwrap_or_default().to_string();
                    (format!("{url}/token"), text("private_key"), text("private_key_id"))
                }
                None => ("http://127.0.0.1:1/token".to_string(), generate_rsa_pem(), format!("{:040x}", fastrand::u128(..))),
            };
            let key = json!({
                "type": "service_account",
                "project_id": "recall-test",
                "private_key_id": private_key_id,
                "private_key": private_key,
                "client_email": "recall@recall-test.iam.gserviceaccount.com",
                "client_id": "104857600000000000001",
                "token_uri": token_uri,
            });
            secret.insert("service-account.json".into(), key.to_string());
        }
        _ => return Err(format!("no simulator named {kind}")),
    }
    Ok(secret)
}

fn random_token(len: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(len).collect()
}

/// A secret value: `CANARY` and random characters, `len` in all, so the suite's last step
/// finds it wherever it leaked.
fn canary_token(len: usize) -> String {
    format!("{}{}", crate::CANARY, random_token(len.saturating_sub(crate::CANARY.len())))
}

/// A fresh 2048-bit RSA key as PKCS #8 PEM.
pub fn generate_rsa_pem() -> String {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key generation");
    let der = AsDer::<Pkcs8V1Der>::as_der(&key).expect("PKCS #8 encoding");
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
}
