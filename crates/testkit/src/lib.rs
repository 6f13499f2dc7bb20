//! A seeded Keycloak realm for the integration tests and the demo: users holding TOTP, WebAuthn,
//! passkey and recovery-code credentials created a day before, live sessions and offline tokens,
//! a confidential client for the operator, and a real browser-style TOTP enrollment.
//! Talks only to a Keycloak on loopback that the local-parts script started.

pub mod sims;
pub mod ssf;

/// Server-sent events as the console sends them, read by the tests and the bench.
pub mod sse {
    use serde_json::Value;
    use std::time::Duration;

    /// Reads `response`'s server-sent events (kept across calls in `buffer`) until one named
    /// `event` whose JSON data `until` accepts; panics when none comes within a minute.
    pub async fn next(response: &mut reqwest::Response, buffer: &mut String, event: &str, until: impl Fn(&Value) -> bool) -> Value {
        let named = format!("event: {event}");
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let message: String = buffer.drain(..end + 2).collect();
                let data: String = message.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
                if message.lines().any(|l| l == named)
                    && let Ok(value) = serde_json::from_str::<Value>(&data)
                    && until(&value)
                {
                    return value;
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), response.chunk()).await.expect("an event within a minute").expect("the stream reads").expect("the stream goes on");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

pub use idp_sim::CANARY;

use std::collections::BTreeMap;

use reqwest::Client;
use serde_json::{Value, json};

/// Password of every seeded user that has one (a test fixture, not a credential of anything real).
pub const USER_PASSWORD: &str = "Recall-Test-Pass-1";
pub const OPERATOR_CLIENT: &str = "mfa-recall";
pub const APP_CLIENT: &str = "app";

type Result<T> = std::result::Result<T, String>;

/// An admin session on a local Keycloak.
pub struct KeycloakAdmin {
    pub url: String,
    http: Client,
    login: (String, String),
    /// The master realm's admin tokens live a minute; renewed on 401.
    token: tokio::sync::Mutex<String>,
}

/// Which credentials seeded user `i` holds.
pub fn seeded_types(i: usize) -> Vec<&'static str> {
    if i % 10 == 7 {
        return vec![];
    }
    match i % 4 {
        0 => vec!["otp", "recovery-authn-codes"],
        1 => vec!["webauthn", "otp"],
        2 => vec!["webauthn", "recovery-authn-codes"],
        _ => vec!["webauthn-passwordless"],
    }
}

/// Users below this index get a password (and can log in).
pub const USERS_WITH_PASSWORD: usize = 40;

pub fn username(i: usize) -> String {
    format!("user{i:04}")
}

/// A credential of `kind` to import, created at `created_ms`; `otp` is a TOTP (see `hotp_credential`).
pub fn credential(kind: &str, i: usize, created_ms: i64) -> Value {
    let (secret, data) = match kind {
        "otp" => (
            json!({"value": format!("seededsecret{i:08}")}),
            json!({"subType": "totp", "digits": 6, "counter": 0, "period": 30, "algorithm": "HmacSHA1"}),
        ),
        "recovery-authn-codes" => (
            json!({"codes": (0..12).map(|n| json!({"number": n + 1, "encodedHashedValue": format!("seed{i}x{n}")})).collect::<Vec<_>>()}),
            json!({"hashIterations": 1, "algorithm": "RS512", "totalCodes": 12, "remainingCodes": 12}),
        ),
        _ => (
            json!({}),
            json!({"aaguid": "00000000-0000-0000-0000-000000000000", "credentialId": format!("c2VlZGVk{i:08}"),
                   "credentialPublicKey": "pQECAyYgASFYIA", "counter": 0, "attestationStatementFormat": "none"}),
        ),
    };
    json!({"type": kind, "userLabel": format!("seeded {kind}"), "createdDate": created_ms,
           "secretData": secret.to_string(), "credentialData": data.to_string()})
}

/// An `otp` credential under an HOTP policy, as a hardware or software HOTP token imports.
pub fn hotp_credential(i: usize, created_ms: i64) -> Value {
    json!({"type": "otp", "userLabel": "seeded hotp token", "createdDate": created_ms,
           "secretData": json!({"value": format!("seededhotp{i:08}")}).to_string(),
           "credentialData": json!({"subType": "hotp", "digits": 6, "counter": 12, "period": 0, "algorithm": "HmacSHA1"}).to_string()})
}

impl KeycloakAdmin {
    pub async fn connect(url: &str, user: &str, password: &str) -> Result<Self> {
        let http = Client::builder().cookie_store(false).build().map_err(|e| e.to_string())?;
        let token = Self::login(&http, url, user, password).await?;
        Ok(Self { url: url.to_string(), http, login: (user.to_string(), password.to_string()), token: tokio::sync::Mutex::new(token) })
    }

    async fn login(http: &Client, url: &str, user: &str, password: &str) -> Result<String> {
        let response = http
            .post(format!("{url}/realms/master/protocol/openid-connect/token"))
            .form(&[("grant_type", "password"), ("client_id", "admin-cli"), ("username", user), ("password", password)])
            .send()
            .await
            .map_err(|e| format!("Keycloak at {url}: {e}"))?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        body["access_token"].as_str().map(String::from).ok_or_else(|| format!("Keycloak admin login failed: {body}"))
    }

    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        for renewed in [false, true] {
            let token = self.token.lock().await.clone();
            let mut request = self.http.request(method.clone(), format!("{}/admin/realms{path}", self.url)).bearer_auth(&token);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            if status == 401 && !renewed {
                *self.token.lock().await = Self::login(&self.http, &self.url, &self.login.0, &self.login.1).await?;
                continue;
            }
            let text = response.text().await.map_err(|e| e.to_string())?;
            return Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))));
        }
        unreachable!("the loop returns on its second pass")
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        let (status, body) = self.request(reqwest::Method::GET, path, None).await?;
        if status >= 300 {
            return Err(format!("GET {path}: {status} {body}"));
        }
        Ok(body)
    }

    /// Creates `realm` with `users` seeded users (plus `extra` named users holding a TOTP), the
    /// operator's confidential client with secret `client_secret`, and a public app client.
    pub async fn create_realm(&self, realm: &str, users: usize, extra: &[&str], client_secret: &str) -> Result<()> {
        let created = jiff::Timestamp::now().as_millisecond() - 86_400_000;
        let mut reps: Vec<Value> = (0..users)
            .map(|i| {
                let mut creds: Vec<Value> = seeded_types(i).into_iter().map(|k| credential(k, i, created)).collect();
                if i < USERS_WITH_PASSWORD {
                    creds.push(json!({"type": "password", "value": USER_PASSWORD, "temporary": false}));
                }
                json!({"username": username(i), "enabled": true, "email": format!("{}@example.test", username(i)),
                       "firstName": "Seeded", "lastName": format!("User {i}"), "emailVerified": true, "credentials": creds,
                       "realmRoles": ["offline_access"],
                       "groups": if i % 2 == 0 { vec!["/staff"] } else { vec!["/contractors"] }})
            })
            .collect();
        for (n, name) in extra.iter().enumerate() {
            reps.push(json!({"username": name, "enabled": true, "credentials": [credential("otp", 90000 + n, created)], "groups": ["/admins"]}));
        }
        let groups = json!([{"name": "staff"}, {"name": "contractors"}, {"name": "admins"}]);
        self.import_realm(realm, groups, reps, client_secret).await
    }

    /// Creates `realm` with these groups (each `{"name", "subGroups": [...]}`) and user
    /// representations, the operator's confidential client with secret `client_secret`, and a
    /// public app client.
    pub async fn import_realm(&self, realm: &str, groups: Value, mut reps: Vec<Value>, client_secret: &str) -> Result<()> {
        reps.push(json!({"username": format!("service-account-{OPERATOR_CLIENT}"), "enabled": true, "serviceAccountClientId": OPERATOR_CLIENT,
                         "clientRoles": {"realm-management": ["view-users", "manage-users", "view-events"]}}));
        let realm_rep = json!({
            "realm": realm, "enabled": true, "eventsEnabled": true,
            // Users sign in "from" documentation addresses through X-Forwarded-For, over plain
            // HTTP on loopback: Keycloak would otherwise ask them for HTTPS.
            "sslRequired": "none",
            "groups": groups,
            "clients": [
                {"clientId": OPERATOR_CLIENT, "enabled": true, "publicClient": false, "secret": client_secret,
                 "serviceAccountsEnabled": true, "standardFlowEnabled": false, "directAccessGrantsEnabled": false},
                {"clientId": APP_CLIENT, "enabled": true, "publicClient": true, "directAccessGrantsEnabled": true,
                 "standardFlowEnabled": true, "redirectUris": ["http://127.0.0.1/callback"]}
            ],
            "users": reps,
        });
        let (status, body) = self.request(reqwest::Method::POST, "", Some(realm_rep)).await?;
        if status != 201 {
            return Err(format!("creating realm {realm}: {status} {body}"));
        }
        Ok(())
    }

    /// Signs seeded users in through the app client (password grant), `sessions` times each, and
    /// with an offline token when `offline`; only users whose factors the direct grant doesn't ask for.
    pub async fn open_sessions(&self, realm: &str, user: &str, sessions: usize, offline: bool) -> Result<()> {
        for n in 0..sessions {
            let scope = if offline && n == 0 { "openid offline_access" } else { "openid" };
            let response = self
                .http
                .post(format!("{}/realms/{realm}/protocol/openid-connect/token", self.url))
                .form(&[("grant_type", "password"), ("client_id", APP_CLIENT), ("username", user), ("password", USER_PASSWORD), ("scope", scope)])
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("sign-in of {user}: {} {}", response.status(), response.text().await.unwrap_or_default()));
            }
        }
        Ok(())
    }

    /// Signs `user` in with the password grant from address `ip`, as Keycloak sees it through
    /// X-Forwarded-For (hack/localparts.sh trusts proxy headers from loopback).
    pub async fn sign_in_from(&self, realm: &str, user: &str, ip: &str) -> Result<()> {
        let response = self
            .http
            .post(format!("{}/realms/{realm}/protocol/openid-connect/token", self.url))
            .header("X-Forwarded-For", ip)
            .form(&[("grant_type", "password"), ("client_id", APP_CLIENT), ("username", user), ("password", USER_PASSWORD), ("scope", "openid")])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("sign-in of {user} from {ip}: {} {}", response.status(), response.text().await.unwrap_or_default()));
        }
        Ok(())
    }

    pub async fn user_id(&self, realm: &str, username: &str) -> Result<String> {
        let found = self.get(&format!("/{realm}/users?username={username}&exact=true")).await?;
        found[0]["id"].as_str().map(String::from).ok_or_else(|| format!("no user {username}"))
    }

    /// Every user of the realm: (id, username).
    pub async fn users(&self, realm: &str) -> Result<Vec<(String, String)>> {
        let mut all = Vec::new();
        loop {
            let page = self.get(&format!("/{realm}/users?first={}&max=500&briefRepresentation=true", all.len())).await?;
            let page = page.as_array().cloned().unwrap_or_default();
            let n = page.len();
            all.extend(page.into_iter().map(|u| (u["id"].as_str().unwrap_or_default().to_string(), u["username"].as_str().unwrap_or_default().to_string())));
            if n < 500 {
                return Ok(all);
            }
        }
    }

    /// The user's MFA credentials as (id, type, createdDate).
    pub async fn mfa_credentials(&self, realm: &str, user_id: &str) -> Result<Vec<(String, String, i64)>> {
        let creds = self.get(&format!("/{realm}/users/{user_id}/credentials")).await?;
        Ok(creds
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "password")
            .map(|c| (c["id"].as_str().unwrap_or_default().into(), c["type"].as_str().unwrap_or_default().into(), c["createdDate"].as_i64().unwrap_or(0)))
            .collect())
    }

    /// Live sessions plus clients holding offline tokens.
    pub async fn session_count(&self, realm: &str, user_id: &str) -> Result<usize> {
        let sessions = self.get(&format!("/{realm}/users/{user_id}/sessions")).await?;
        let consents = self.get(&format!("/{realm}/users/{user_id}/consents")).await?;
        let offline = consents
            .as_array()
            .map(|a| a.iter().filter(|c| c["additionalGrants"].as_array().is_some_and(|g| g.iter().any(|g| g["key"] == "Offline Token"))).count())
            .unwrap_or(0);
        Ok(sessions.as_array().map(|a| a.len()).unwrap_or(0) + offline)
    }

    /// MFA credentials by Keycloak type across the realm, counting only those created before `before_ms`.
    pub async fn census(&self, realm: &str, before_ms: i64, skip: &[&str]) -> Result<(BTreeMap<String, i64>, i64)> {
        let mut by_type = BTreeMap::new();
        let mut sessions = 0i64;
        for (id, name) in self.users(realm).await? {
            if skip.contains(&name.as_str()) || name.starts_with("service-account-") {
                continue;
            }
            for (_, kind, created) in self.mfa_credentials(realm, &id).await? {
                if created < before_ms {
                    *by_type.entry(kind).or_insert(0) += 1;
                }
            }
            sessions += self.session_count(realm, &id).await? as i64;
        }
        Ok((by_type, sessions))
    }
}

/// Signs `username` in through the browser flow and completes the TOTP enrollment Keycloak
/// requires, exactly as a person with an authenticator app would. Returns once the new
/// credential exists.
pub async fn enroll_totp_by_browser(keycloak_url: &str, realm: &str, username: &str) -> Result<()> {
    enroll_totp_by_browser_from(keycloak_url, realm, username, None).await
}

/// `enroll_totp_by_browser` from address `from`, as Keycloak sees it through X-Forwarded-For.
pub async fn enroll_totp_by_browser_from(keycloak_url: &str, realm: &str, username: &str, from: Option<&str>) -> Result<()> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(ip) = from {
        headers.insert("X-Forwarded-For", ip.parse().map_err(|_| format!("{ip} is no header value"))?);
    }
    let http = Client::builder().cookie_store(true).default_headers(headers).redirect(reqwest::redirect::Policy::none()).build().map_err(|e| e.to_string())?;
    let auth = format!(
        "{keycloak_url}/realms/{realm}/protocol/openid-connect/auth?client_id={APP_CLIENT}&redirect_uri=http%3A%2F%2F127.0.0.1%2Fcallback&response_type=code&scope=openid"
    );
    let page = http.get(&auth).send().await.map_err(|e| e.to_string())?.text().await.map_err(|e| e.to_string())?;
    let action = form_action(&page, "kc-form-login").ok_or("no login form")?;
    let page = http
        .post(&action)
        .form(&[("username", username), ("password", USER_PASSWORD), ("credentialId", "")])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let page = follow(&http, page).await?;
    let action = form_action(&page, "kc-totp-settings-form").ok_or_else(|| format!("no TOTP setup page after login: {}", &page[..page.len().min(400)]))?;
    let secret = hidden_value(&page, "totpSecret").ok_or("no totpSecret on the setup page")?;
    let code = totp(secret.as_bytes(), jiff::Timestamp::now().as_second() as u64 / 30);
    let response = http
        .post(&action)
        .form(&[("totp", code.as_str()), ("totpSecret", secret.as_str()), ("userLabel", "new phone"), ("mode", "")])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_server_error() {
        return Err(format!("TOTP enrollment failed: {}", response.status()));
    }
    Ok(())
}

async fn follow(http: &Client, mut response: reqwest::Response) -> Result<String> {
    for _ in 0..5 {
        if !response.status().is_redirection() {
            break;
        }
        let location = response.headers().get("location").and_then(|l| l.to_str().ok()).ok_or("redirect without location")?.to_string();
        response = http.get(&location).send().await.map_err(|e| e.to_string())?;
    }
    response.text().await.map_err(|e| e.to_string())
}

fn form_action(page: &str, form_id: &str) -> Option<String> {
    let at = page.find(&format!("id=\"{form_id}\""))?;
    let form_start = page[..at].rfind("<form")?;
    let tag = &page[form_start..page[form_start..].find('>')? + form_start];
    let action = tag.split("action=\"").nth(1)?.split('"').next()?;
    Some(action.replace("&amp;", "&"))
}

fn hidden_value(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("name=\"{name}\""))?;
    let tag_start = page[..at].rfind('<')?;
    let tag_end = page[at..].find('>')? + at;
    let tag = &page[tag_start..tag_end];
    Some(tag.split("value=\"").nth(1)?.split('"').next()?.to_string())
}

/// RFC 6238 TOTP, HMAC-SHA1, 6 digits, as Keycloak's default OTP policy.
pub fn totp(key: &[u8], counter: u64) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let binary = u32::from_be_bytes([digest[offset] & 0x7f, digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
    format!("{:06}", binary % 1_000_000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn totp_matches_rfc6238_vector() {
        // RFC 6238 appendix B: SHA1, T = 59 s → counter 1, 8 digits 94287082 → last 6 digits.
        assert_eq!(super::totp(b"12345678901234567890", 1), "287082");
    }
}

/// Kubernetes side of the testbed: namespaces, backends, recalls, waiting.
pub mod cluster {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::api::{ObjectMeta, PostParams};
    use kube::{Api, Client};
    use serde_json::json;

    use std::collections::BTreeMap;

    use mfa_recall::api::{IdentityBackend, IdentityBackendSpec, MfaRecall};

    /// Creates a namespace; one that already exists is fine.
    pub async fn create_namespace(client: &Client, name: &str) -> Result<(), String> {
        let ns = Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
        match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(format!("creating namespace {name}: {e}")),
        }
    }

    /// A Keycloak IdentityBackend and its credentials Secret.
    pub async fn create_keycloak_backend(
        client: &Client,
        namespace: &str,
        name: &str,
        keycloak_url: &str,
        realm: &str,
        client_secret: &str,
        requests_per_second: u32,
    ) -> Result<(), String> {
        let secret = [("client-id".to_string(), super::OPERATOR_CLIENT.to_string()), ("client-secret".to_string(), client_secret.to_string())].into();
        let spec = serde_json::from_value(json!({
            "keycloak": {"url": keycloak_url, "realm": realm, "credentialsSecretRef": {"name": format!("{name}-credentials")}},
            "limits": {"requestsPerSecond": requests_per_second, "maxConcurrency": 8}
        }))
        .map_err(|e| e.to_string())?;
        create_backend(client, namespace, name, spec, &secret).await
    }

    /// An IdentityBackend with `spec` and its credentials Secret `<name>-credentials` holding `secret`.
    pub async fn create_backend(
        client: &Client,
        namespace: &str,
        name: &str,
        spec: IdentityBackendSpec,
        secret: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{name}-credentials"), "annotations": {mfa_recall::api::SECRET_OPT_IN: name}},
            "stringData": secret
        }))
        .map_err(|e| e.to_string())?;
        Api::<Secret>::namespaced(client.clone(), namespace).create(&PostParams::default(), &secret).await.map_err(|e| format!("Secret: {e}"))?;
        let backend = IdentityBackend::new(name, spec);
        Api::<IdentityBackend>::namespaced(client.clone(), namespace).create(&PostParams::default(), &backend).await.map_err(|e| format!("IdentityBackend: {e}"))?;
        Ok(())
    }

    pub async fn create_recall(client: &Client, namespace: &str, recall: serde_json::Value) -> Result<MfaRecall, String> {
        let recall: MfaRecall = serde_json::from_value(recall).map_err(|e| e.to_string())?;
        Api::<MfaRecall>::namespaced(client.clone(), namespace).create(&PostParams::default(), &recall).await.map_err(|e| format!("MfaRecall: {e}"))
    }

    /// Polls until `done` holds for the object, or fails after `timeout` with the last state seen.
    pub async fn wait_for<K, F>(api: &Api<K>, name: &str, timeout: Duration, done: F) -> Result<K, String>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
        F: Fn(&K) -> bool,
    {
        // Watched, not polled: the condition is checked on every change the apiserver reports.
        let condition = |object: Option<&K>| object.is_some_and(&done);
        match tokio::time::timeout(timeout, kube::runtime::wait::await_condition(api.clone(), name, condition)).await {
            Ok(Ok(Some(object))) => Ok(object),
            Ok(Ok(None)) => Err(format!("{name} is gone")),
            Ok(Err(e)) => Err(format!("watching {name}: {e}")),
            Err(_) => Err(format!("timed out after {timeout:?} waiting for {name}; last seen: {:?}", api.get_opt(name).await)),
        }
    }

    /// The first Event in `namespace` with `reason`, as the apiserver reports it (watched).
    pub async fn wait_for_event(client: &Client, namespace: &str, reason: &str, timeout: Duration) -> Result<(), String> {
        use futures::TryStreamExt;
        let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), namespace);
        let stream = kube::runtime::watcher(events, kube::runtime::watcher::Config::default());
        let found = kube::runtime::WatchStreamExt::applied_objects(stream).try_filter(|e| std::future::ready(e.reason.as_deref() == Some(reason)));
        let mut found = std::pin::pin!(found);
        match tokio::time::timeout(timeout, found.try_next()).await {
            Ok(Ok(Some(_))) => Ok(()),
            Ok(Ok(None)) => Err("the event watch ended".into()),
            Ok(Err(e)) => Err(format!("watching events: {e}")),
            Err(_) => Err(format!("no {reason} event in {namespace} within {timeout:?}")),
        }
    }
}
