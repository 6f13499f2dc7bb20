//! Credentials, written once for every adapter: OAuth 2.0 access tokens (client secret,
//! `private_key_jwt`, or Google's service-account JWT bearer grant) fetched once and reused until
//! shortly before expiry, RS256 signing from a PEM key, and Duo's HMAC request signature.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{ErrorKind, ProviderError};
use super::http::{HttpReply, Op, ProviderHttp, SecretString};

const TOKEN_OP: Op = Op::new("token", "token");

/// An RSA private key that signs JWTs (RS256) and never prints.
pub struct RsaSigner {
    key: aws_lc_rs::signature::RsaKeyPair,
}

impl std::fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaSigner(***)")
    }
}

impl RsaSigner {
    /// From a PEM `PRIVATE KEY` (PKCS #8) or `RSA PRIVATE KEY` (PKCS #1). The error never quotes the key.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let pkcs1 = pem.contains("BEGIN RSA PRIVATE KEY");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
        let der = STANDARD.decode(body).map_err(|_| "the private key is not PEM (base64 between BEGIN/END lines)".to_string())?;
        let key = if pkcs1 { aws_lc_rs::signature::RsaKeyPair::from_der(&der) } else { aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&der) };
        key.map(|key| Self { key }).map_err(|e| format!("the private key is not an RSA key this operator can use ({e})"))
    }

    /// A compact JWS: base64url(header).base64url(claims).base64url(RS256 signature).
    pub fn jwt(&self, key_id: Option<&str>, claims: &Value) -> String {
        let mut header = json!({ "alg": "RS256", "typ": "JWT" });
        if let Some(kid) = key_id {
            header["kid"] = json!(kid);
        }
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &aws_lc_rs::rand::SystemRandom::new(), signing_input.as_bytes(), &mut signature)
            .expect("RS256 signing with a valid key does not fail");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// How a backend proves who it is to the token endpoint.
pub enum Grant {
    /// `client_credentials` with `client_id` and `client_secret` in the form (Keycloak, Auth0, Entra).
    ClientSecret { client_id: SecretString, client_secret: SecretString },
    /// `client_credentials` with a signed client assertion (Okta service apps, `private_key_jwt`).
    PrivateKeyJwt { client_id: SecretString, key: RsaSigner, key_id: Option<String> },
    /// Google's service-account JWT bearer grant, impersonating `subject` (domain-wide delegation).
    JwtBearer { issuer: String, subject: String, key: RsaSigner, key_id: Option<String> },
}

impl Grant {
    /// The Secret keys this grant is made of, to say what to check when it is refused.
    fn keys(&self) -> &'static str {
        match self {
            Grant::ClientSecret { .. } => "client-id and client-secret",
            Grant::PrivateKeyJwt { .. } => "client-id and private-key (and the key registered with the app)",
            Grant::JwtBearer { .. } => "service-account.json (and its client ID's domain-wide delegation)",
        }
    }
}

/// Access tokens from one token endpoint, cached until shortly before they expire.
pub struct TokenSource {
    pub token_url: String,
    grant: Grant,
    /// Form fields the provider needs besides the grant (`audience` for Auth0, `scope` for Entra and Okta).
    extra: Vec<(&'static str, String)>,
    /// Where the credentials live, to say what to fix when they are refused.
    pub secret_name: String,
    cached: Mutex<Option<(SecretString, Instant)>>,
}

impl TokenSource {
    pub fn new(token_url: String, grant: Grant, extra: Vec<(&'static str, String)>, secret_name: String) -> Self {
        Self { token_url, grant, extra, secret_name, cached: Mutex::new(None) }
    }

    /// A valid access token; fetches a new one when none is cached or it is about to expire.
    pub async fn bearer(&self, http: &ProviderHttp) -> Result<SecretString, ProviderError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && Instant::now() + Duration::from_secs(15) < *expires
        {
            return Ok(token.clone());
        }
        let now = jiff::Timestamp::now().as_second();
        let mut form: Vec<(&str, String)> = Vec::new();
        match &self.grant {
            Grant::ClientSecret { client_id, client_secret } => {
                form.push(("grant_type", "client_credentials".into()));
                form.push(("client_id", client_id.expose().into()));
                form.push(("client_secret", client_secret.expose().into()));
            }
            Grant::PrivateKeyJwt { client_id, key, key_id } => {
                let claims = json!({
                    "iss": client_id.expose(), "sub": client_id.expose(), "aud": self.token_url,
                    "iat": now, "exp": now + 300, "jti": format!("{:032x}", fastrand::u128(..)),
                });
                form.push(("grant_type", "client_credentials".into()));
                form.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
                form.push(("client_assertion", key.jwt(key_id.as_deref(), &claims)));
            }
            Grant::JwtBearer { issuer, subject, key, key_id } => {
                let scope = self.extra.iter().find(|(k, _)| *k == "scope").map(|(_, v)| v.clone()).unwrap_or_default();
                let claims = json!({ "iss": issuer, "sub": subject, "scope": scope, "aud": self.token_url, "iat": now, "exp": now + 3600 });
                form.push(("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".into()));
                form.push(("assertion", key.jwt(key_id.as_deref(), &claims)));
            }
        }
        if !matches!(self.grant, Grant::JwtBearer { .. }) {
            form.extend(self.extra.iter().cloned());
        }
        let reply = http.send(TOKEN_OP, || http.request(Method::POST, &self.token_url).form(&form)).await?;
        let status = reply.status;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST || status == StatusCode::FORBIDDEN {
            // The provider's own error code (invalid_client, unauthorized_client...) helps; its
            // description may echo input, so only the code is kept.
            let code = reply.value().get("error").and_then(Value::as_str).map(|c| format!(", {c}")).unwrap_or_default();
            return Err(http.error(ErrorKind::Auth, format!(
                "the token endpoint refused the credentials ({status}{code}): check {} in Secret {}",
                self.grant.keys(),
                self.secret_name
            )));
        }
        if !status.is_success() {
            return Err(http.error(ErrorKind::Unavailable, format!("token endpoint answered {status}: check the url")));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            access_token: String,
            #[serde(default = "default_expiry")]
            expires_in: u64,
        }
        fn default_expiry() -> u64 {
            60
        }
        /// Longer than any provider's tokens live (a day); a token is fetched again after it.
        const MAX_TOKEN_LIFETIME_SECONDS: u64 = 24 * 3600;
        let body: TokenResponse = serde_json::from_slice(&reply.body)
            .map_err(|_| http.error(ErrorKind::Unavailable, "the token endpoint's answer has no access_token"))?;
        let token = SecretString::new(body.access_token);
        // The lifetime is the provider's figure: capped, so no answer can overflow the clock.
        *cached = Some((token.clone(), Instant::now() + Duration::from_secs(body.expires_in.min(MAX_TOKEN_LIFETIME_SECONDS))));
        Ok(token)
    }

    /// Drops the cached token after the provider refused it (revoked or expired early).
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }

    /// Sends the request `build` makes, with a bearer token; when the provider refuses the token
    /// (401: revoked or expired early), fetches a new one and tries once more. The answer is the
    /// caller's to interpret.
    pub async fn send(&self, http: &ProviderHttp, op: Op, build: impl Fn() -> reqwest::RequestBuilder) -> Result<HttpReply, ProviderError> {
        Ok(self.send_reading(http, op, build, super::http::check_json).await?.0)
    }

    /// `send`, decoding a 2xx body with `read` as `ProviderHttp::send_reading` does.
    pub async fn send_reading<T>(
        &self,
        http: &ProviderHttp,
        op: Op,
        build: impl Fn() -> reqwest::RequestBuilder,
        read: impl Fn(&HttpReply) -> Option<serde_json::Result<T>>,
    ) -> Result<(HttpReply, Option<serde_json::Result<T>>), ProviderError> {
        let mut refreshed = false;
        loop {
            let token = self.bearer(http).await?;
            let answer = http.send_reading(op, || build().bearer_auth(token.expose()), &read).await?;
            if answer.0.status == StatusCode::UNAUTHORIZED && !refreshed {
                self.forget().await;
                refreshed = true;
                continue;
            }
            return Ok(answer);
        }
    }
}

/// Duo's percent-encoding for signatures: RFC 3986 unreserved characters stay, all else is `%XX`.
pub fn duo_encode(text: &str) -> String {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
    // Ids and most names need no escapes: copied whole.
    if text.bytes().all(unreserved) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if unreserved(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Duo's canonical parameter string: encoded pairs sorted by key then value, each `key=value`,
/// joined by `&`.
pub fn duo_canonical_params(params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params.iter().map(|(k, v)| (duo_encode(k), duo_encode(v))).collect();
    encoded.sort();
    encoded.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// Duo API signature v5, as Duo's reference client (duo_client_python) signs by default:
/// HMAC-SHA512 over date, method, host, path, the query's canonical parameters, the SHA-512 of the
/// body (empty for GET and DELETE, the JSON sent for POST) and the SHA-512 of the `X-Duo-*`
/// headers (none are sent), one per line; HTTP Basic with the integration key as user and the hex
/// digest as password.
pub fn duo_authorization(ikey: &str, skey: &SecretString, date: &str, method: &str, host: &str, path: &str, query: &[(String, String)], body: &str) -> String {
    use sha2::{Digest, Sha512};
    let no_duo_headers = hex::encode(Sha512::digest(b""));
    let body_hash = hex::encode(Sha512::digest(body.as_bytes()));
    let canonical = [date, &method.to_uppercase(), &host.to_lowercase(), path, &duo_canonical_params(query), &body_hash, &no_duo_headers].join("\n");
    // Unreachable: HMAC takes a key of any length (RFC 2104 §2; the hmac crate errs only for
    // MACs with a fixed key size), so no secret a tenant configures can make this fail.
    let mut mac = Hmac::<Sha512>::new_from_slice(skey.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(canonical.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    format!("Basic {}", STANDARD.encode(format!("{ikey}:{signature}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token answer's lifetime is the provider's figure: one near u64::MAX is a long-lived token,
    /// not a panic.
    #[tokio::test]
    async fn a_token_that_claims_to_live_for_ever_is_cached_for_a_day() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let body = r#"{"access_token":"t0k3n","expires_in":18446744073709551615}"#;
                let reply = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        let http = ProviderHttp::new("ns/test", Default::default(), Default::default()).unwrap();
        let grant = Grant::ClientSecret { client_id: SecretString::new("id"), client_secret: SecretString::new("canary") };
        let source = TokenSource::new(url, grant, Vec::new(), "ns/creds".into());
        assert_eq!(source.bearer(&http).await.unwrap().expose(), "t0k3n");
        assert_eq!(source.bearer(&http).await.unwrap().expose(), "t0k3n");
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1, "cached");
    }

    /// Signatures made by Duo's reference client, duo_client_python (commit 6e207eb, June 2026),
    /// `duo_client.client.sign(..., sig_version=5, ...)` with the keys of Duo's documented example.
    #[test]
    fn duo_signature_matches_the_reference_client() {
        let skey = SecretString::new("Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep");
        let date = "Tue, 21 Aug 2012 17:29:18 -0000";
        let sign = |method: &str, host: &str, path: &str, query: &[(&str, &str)], body: &str| {
            let query: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let auth = duo_authorization("DIWJ8X6AEYOR5OMC6TQ1", &skey, date, method, host, path, &query, body);
            String::from_utf8(STANDARD.decode(auth.trim_start_matches("Basic ")).unwrap()).unwrap()
        };
        let query = [("username", "Jane.Doe@example.com"), ("limit", "300"), ("offset", "0"), ("realname", "First Last~x")];
        assert_eq!(
            sign("GET", "api-XXXXXXXX.duosecurity.com", "/admin/v1/users", &query, ""),
            "DIWJ8X6AEYOR5OMC6TQ1:886ebb16db84d82c80120c97812078204f9b263699a6d26ba185eba26d0a711f510be77d91e02892732bfcc0256cedc51af0ce90bcc1a0af29d20747cff6e074"
        );
        assert_eq!(
            sign("POST", "api-XXXXXXXX.duosecurity.com", "/admin/v1/users/DUJZ2U4L80HT45MQ4EOQ", &[], r#"{"status":"disabled"}"#),
            "DIWJ8X6AEYOR5OMC6TQ1:479d07b4428956dfa2713b682b3b47d0cdea1700025027d8571b3f7bfdae68ca6bba373f2636dd09f4dd479966237194734ddf09fa4b5b4a9d53ee11c82b6dcf"
        );
        assert_eq!(
            sign("DELETE", "api-xxxxxxxx.duosecurity.com:8443", "/admin/v1/users/DU1/phones/DP2", &[], ""),
            "DIWJ8X6AEYOR5OMC6TQ1:8840e8f58515c3e94ad9a50453b60be6e0626cb97e837ea0274dc4ae451f441b85004fc6e1a358215c4ce6992acf4b47c594b2a0194b33c40e6bb37d0704b9b4"
        );
    }

    #[test]
    fn jwt_verifies_with_the_public_key() {
        let generated = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair;
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&generated).unwrap();
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", STANDARD.encode(der.as_ref()));
        let signer = RsaSigner::from_pem(&pem).unwrap();
        assert_eq!(format!("{signer:?}"), "RsaSigner(***)");
        let token = signer.jwt(Some("k1"), &json!({ "iss": "a" }));
        let (input, signature) = token.rsplit_once('.').unwrap();
        let public = aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, generated.public_key().as_ref());
        public.verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(signature).unwrap()).unwrap();
    }
}
