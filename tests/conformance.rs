//! One conformance suite for every adapter: the same cases against each provider simulator and
//! against real Keycloak, run in-process through the engine (the operator-level cases, with a real
//! apiserver, are in `recall_providers.rs`). Each case checks the recall against the provider's
//! own state. Fault and rate-limit cases need the simulator's fault injection, so they run on the
//! simulators only.

mod support;

use support::eventually;
use support::proxy::RecordingProxy;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use idp_sim::FactorKind;
use mfa_recall::api::{self, AnomalyAction, BackendLimits, IdentityBackend, ProviderBlock, RecallCounts};
use mfa_recall::audit::AuditLog;
use mfa_recall::backends::{self, ErrorKind, IdentityProvider, ScopeSelector};
use mfa_recall::engine::{RecallJob, RunEnd, Runner, SharedProgress, WindowSettings};
use mfa_recall::watch::{Rule, Thresholds};
use mfa_recall::ledger::{LedgerStore, MemoryLedger};
use idp_sim::{Act, Activity, Census, FactorView, Faults, GroupSeed, RateLimits, RecordedRequest, Seed, Simulator, UserView, username};
use testkit::sims::{SimBackend, SimSubject};
use testkit::KeycloakAdmin;
use serde_json::{Value, json};
use tokio::sync::watch;

/// A provider under test and a view of its own state.
#[async_trait]
trait Target: Send + Sync {
    fn kind(&self) -> &'static str;
    /// The login of seeded user `i`.
    fn username(&self, i: u32) -> String;
    /// Two users who can enroll a new factor: one before the recall reaches them, one mid-recall.
    fn enrolling_users(&self) -> (String, String);
    async fn census(&self, cutoff: jiff::Timestamp) -> Census;
    async fn user(&self, username: &str) -> UserView;
    /// The user enrolls a new factor now; its id.
    async fn enroll(&self, username: &str) -> String;
    /// The logins of the members of `group` as the provider counts them: with the members of
    /// the groups nested in it where its groups nest.
    async fn group_members(&self, group: &str) -> HashSet<String>;
    /// Whether the provider's groups nest (said independently of the adapter).
    fn groups_nest(&self) -> bool;
    /// The IdentityBackend and its Secret (`wrong` credentials when asked).
    fn backend(&self, limits: BackendLimits) -> IdentityBackend;
    fn secret(&self, wrong: bool) -> (Secret, BTreeMap<String, String>);
    /// The simulator, for fault injection and limits; None for a real provider.
    fn simulator(&self) -> Option<&Arc<Simulator>>;
    /// The IP address enrollments come from, where the provider's log records it.
    fn enrollment_ip(&self) -> Option<&'static str>;
    /// Has the user do what `activity` says, so the provider logs it: the id of a factor enrolled.
    /// Err says why the provider's log has no such entry.
    async fn act(&self, username: &str, activity: Activity) -> Result<Option<String>, String>;
    /// Six users who can sign in with a password alone and then enroll: the window's cast.
    fn window_users(&self) -> Vec<String>;
    /// The real Keycloak's realm, for cases about Keycloak alone.
    fn as_keycloak(&self) -> &KeycloakTarget {
        panic!("{} is not Keycloak", self.kind())
    }
    /// Faults for the requests from now on; false where none can be injected (real Keycloak).
    fn set_faults(&self, faults: Faults) -> bool {
        self.simulator().map(|sim| sim.set_faults(faults)).is_some()
    }
    /// A quota from now on; false where none can be set (real Keycloak).
    fn set_limits(&self, limits: RateLimits) -> bool {
        self.simulator().map(|sim| sim.set_limits(limits)).is_some()
    }
    /// How many requests were answered as throttled.
    fn throttled(&self) -> u64 {
        self.simulator().map_or(0, |sim| sim.stats().throttled)
    }
    /// Whether answers announce the budget left (rate-limit headers).
    fn announces_limits(&self) -> bool {
        self.simulator().is_some_and(|sim| sim.provider.announces_limits())
    }
    /// How many requests met an injected fault.
    fn faults_injected(&self) -> u64 {
        self.simulator().map_or(0, |sim| sim.stats().faults)
    }
    /// Keeps the shape of every request from now on.
    fn record_requests(&self) {
        self.simulator().expect("recording needs a simulator or a proxy").record_requests();
    }
    fn recorded_requests(&self) -> Vec<RecordedRequest> {
        self.simulator().expect("recording needs a simulator or a proxy").recorded_requests()
    }
    /// The provider's published API description the requests are judged by.
    fn description(&self) -> Description {
        Description::load(self.kind())
    }
    /// The user enrolls a factor of `kind` now, where the provider has it: its id.
    async fn enroll_kind(&self, username: &str, kind: FactorKind) -> Option<String> {
        self.simulator().expect("enrolling a kind needs a simulator").provider.enroll(username, kind, ENROLLMENT_IP)
    }
    /// The user signs in with a bypass code; Err says why it was refused.
    fn sign_in_with_bypass(&self, username: &str, code: &str) -> Result<(), String> {
        self.simulator().expect("signing in with a bypass needs a simulator").provider.sign_in_with_bypass(username, code).map(|_| ())
    }
}

/// Where simulated users enroll from (TEST-NET-3).
const ENROLLMENT_IP: &str = "203.0.113.9";

struct SimTarget {
    subject: SimSubject,
    seed: Seed,
}

#[async_trait]
impl Target for SimTarget {
    fn kind(&self) -> &'static str {
        self.subject.kind
    }
    fn username(&self, i: u32) -> String {
        username(i)
    }
    fn enrolling_users(&self) -> (String, String) {
        (username(self.seed.users / 2), username(self.seed.users - 1))
    }
    async fn census(&self, cutoff: jiff::Timestamp) -> Census {
        self.subject.sim.provider.census(Some(cutoff))
    }
    async fn user(&self, name: &str) -> UserView {
        self.subject.sim.provider.user(name).unwrap_or_else(|| panic!("{}: no user {name}", self.kind()))
    }
    async fn enroll(&self, name: &str) -> String {
        self.subject.sim.provider.enroll(name, FactorKind::Webauthn, ENROLLMENT_IP).unwrap_or_else(|| panic!("{}: enroll {name}", self.kind()))
    }
    async fn group_members(&self, group: &str) -> HashSet<String> {
        (0..self.seed.users).filter(|i| self.seed.is_member(*i, group, self.groups_nest())).map(username).collect()
    }
    fn groups_nest(&self) -> bool {
        // Entra transitive members and Google derived membership; Okta groups, Auth0 roles and
        // Duo groups are flat.
        matches!(self.kind(), "entra" | "google")
    }
    fn backend(&self, limits: BackendLimits) -> IdentityBackend {
        self.subject.backend("conformance", self.kind(), limits)
    }
    fn secret(&self, wrong: bool) -> (Secret, BTreeMap<String, String>) {
        let data = if wrong { self.subject.wrong_secret() } else { self.subject.secret.clone() };
        (self.subject.secret_object(&format!("{}-credentials", self.kind()), &data), data)
    }
    fn simulator(&self) -> Option<&Arc<Simulator>> {
        Some(&self.subject.sim)
    }
    fn enrollment_ip(&self) -> Option<&'static str> {
        Some(ENROLLMENT_IP)
    }
    async fn act(&self, name: &str, activity: Activity) -> Result<Option<String>, String> {
        self.subject.sim.provider.act(name, &activity)
    }
    fn window_users(&self) -> Vec<String> {
        (0..6).map(|i| username(2 * i + 1)).collect()
    }
}

const KEYCLOAK_CLIENT_SECRET: &str = "mfacanary-conformance-client-secret-4e1b";

/// A realm of the real Keycloak started by hack/localparts.sh, seeded by the testbed.
struct KeycloakTarget {
    admin: KeycloakAdmin,
    url: String,
    realm: String,
}

impl KeycloakTarget {
    async fn start(users: u32) -> KeycloakTarget {
        let parts = support::Parts::from_env();
        let admin = parts.keycloak().await;
        let realm = support::unique("conformance");
        admin.create_realm(&realm, users as usize, &["breakglass-1"], KEYCLOAK_CLIENT_SECRET).await.unwrap();
        // As the simulators' seed has it: admins/platform (every 40th user from the 3rd) and
        // admins/platform/breakglass (every 50th from the 7th).
        let mut parent = admin.get(&format!("/{realm}/groups?search=admins&exact=true")).await.unwrap()[0]["id"].as_str().unwrap().to_string();
        for (path, every, offset) in [("admins/platform", 40, 3), ("admins/platform/breakglass", 50, 7)] {
            let name = path.rsplit('/').next().unwrap();
            let (status, body) = admin.request(reqwest::Method::POST, &format!("/{realm}/groups/{parent}/children"), Some(json!({ "name": name }))).await.unwrap();
            assert_eq!(status, 201, "creating {path}: {body}");
            let group = admin.get(&format!("/{realm}/group-by-path/{path}")).await.unwrap()["id"].as_str().unwrap().to_string();
            for i in (offset..users as usize).step_by(every) {
                let id = admin.user_id(&realm, &testkit::username(i)).await.unwrap();
                let (status, body) = admin.request(reqwest::Method::PUT, &format!("/{realm}/users/{id}/groups/{group}"), None).await.unwrap();
                assert_eq!(status, 204, "adding user {i} to {path}: {body}");
            }
            parent = group;
        }
        // Sessions and offline tokens for the users a password grant lets in (no OTP to type).
        for i in 0..testkit::USERS_WITH_PASSWORD.min(users as usize) {
            if !testkit::seeded_types(i).contains(&"otp") {
                admin.open_sessions(&realm, &testkit::username(i), 1, i % 4 == 2).await.unwrap();
            }
        }
        KeycloakTarget { admin, url: parts.keycloak_url, realm }
    }

    /// Has the realm send its mail through the mail server the parts started, from an address of
    /// this run's own (the server outlives runs): the server, and that address.
    async fn mail_through_the_test_server(&self, purpose: &str) -> (support::notices::MailServer, String) {
        let mail = support::notices::MailServer::from_env();
        let (host, port) = mail.server.rsplit_once(':').unwrap();
        let from = format!("{}@keycloak.corp.example", support::unique(purpose));
        let smtp = json!({ "smtpServer": { "host": host, "port": port, "from": from } });
        let (status, body) = self.admin.request(reqwest::Method::PUT, &format!("/{}", self.realm), Some(smtp)).await.unwrap();
        assert!(status < 300, "configuring the realm's mail server: {status} {body}");
        (mail, from)
    }

    /// The first mail Keycloak sent `address` from `from`, once delivered: its text, the action
    /// link in it, and the claims of the link's token.
    async fn mailed_action_link(&self, mail: &support::notices::MailServer, address: &str, from: &str) -> (String, String, Value) {
        let ours = || -> Vec<String> { mail.messages(address).into_iter().map(|m| support::notices::quoted_printable(&m)).filter(|m| m.contains(from)).collect() };
        eventually(&format!("a mail from Keycloak to {address}"), || std::future::ready(!ours().is_empty())).await;
        let message = ours().remove(0);
        let link = message
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '"' || c == '<' || c == '>'))
            .find(|w| w.starts_with(self.url.as_str()) && w.contains("action-token?key="))
            .unwrap_or_else(|| panic!("keycloak: no action link in {message}"))
            .replace("&amp;", "&");
        use base64::Engine;
        let token = link.split("key=").nth(1).unwrap().split('&').next().unwrap();
        let claims: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
        (message, link, claims)
    }

    fn kind_of(credential_type: &str) -> FactorKind {
        match credential_type {
            "otp" => FactorKind::Totp,
            "webauthn" => FactorKind::Webauthn,
            "webauthn-passwordless" => FactorKind::Passkey,
            "recovery-authn-codes" => FactorKind::RecoveryCodes,
            other => panic!("unexpected credential type {other}"),
        }
    }
}

#[async_trait]
impl Target for KeycloakTarget {
    fn kind(&self) -> &'static str {
        "keycloak"
    }
    fn username(&self, i: u32) -> String {
        testkit::username(i as usize)
    }
    fn enrolling_users(&self) -> (String, String) {
        // Users with a password and without a TOTP, so the browser can enroll one.
        (testkit::username(22), testkit::username(39))
    }
    async fn census(&self, cutoff: jiff::Timestamp) -> Census {
        let mut census = Census::default();
        for (_, name) in self.admin.users(&self.realm).await.unwrap() {
            if !name.starts_with("service-account-") {
                census.count(&self.user(&name).await, Some(cutoff));
            }
        }
        census
    }
    async fn user(&self, name: &str) -> UserView {
        let id = self.admin.user_id(&self.realm, name).await.unwrap();
        let user = self.admin.get(&format!("/{}/users/{id}", self.realm)).await.unwrap();
        let factors = self
            .admin
            .mfa_credentials(&self.realm, &id)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, kind, created)| FactorView { id, kind: Self::kind_of(&kind), created: jiff::Timestamp::from_millisecond(created).unwrap() })
            .collect();
        let sessions = self.admin.session_count(&self.realm, &id).await.unwrap() as u32;
        UserView { id, username: name.to_string(), active: user["enabled"] == true, factors, sessions, grants: 0 }
    }
    async fn enroll(&self, name: &str) -> String {
        let id = self.admin.user_id(&self.realm, name).await.unwrap();
        let before: HashSet<String> = self.admin.mfa_credentials(&self.realm, &id).await.unwrap().into_iter().map(|c| c.0).collect();
        // Ask for a TOTP at the next sign-in, then sign in through the login pages and set one up.
        let (status, body) = self
            .admin
            .request(reqwest::Method::PUT, &format!("/{}/users/{id}", self.realm), Some(json!({ "requiredActions": ["CONFIGURE_TOTP"] })))
            .await
            .unwrap();
        assert!(status < 300, "requiring TOTP for {name}: {status} {body}");
        testkit::enroll_totp_by_browser(&self.url, &self.realm, name).await.unwrap();
        let after = self.admin.mfa_credentials(&self.realm, &id).await.unwrap();
        after.into_iter().map(|c| c.0).find(|c| !before.contains(c)).unwrap_or_else(|| panic!("keycloak: no new credential for {name}"))
    }
    async fn group_members(&self, group: &str) -> HashSet<String> {
        let groups = self.admin.get(&format!("/{}/groups?search={group}&exact=true", self.realm)).await.unwrap();
        let mut pending = vec![groups[0]["id"].as_str().unwrap().to_string()];
        let mut members = HashSet::new();
        while let Some(id) = pending.pop() {
            let direct = self.admin.get(&format!("/{}/groups/{id}/members?max=100000&briefRepresentation=true", self.realm)).await.unwrap();
            members.extend(direct.as_array().unwrap().iter().map(|m| m["username"].as_str().unwrap().to_string()));
            let children = self.admin.get(&format!("/{}/groups/{id}/children?max=1000&briefRepresentation=true", self.realm)).await.unwrap();
            pending.extend(children.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()));
        }
        members
    }
    fn groups_nest(&self) -> bool {
        true
    }
    fn as_keycloak(&self) -> &KeycloakTarget {
        self
    }
    fn backend(&self, limits: BackendLimits) -> IdentityBackend {
        let spec = serde_json::from_value(json!({
            "keycloak": { "url": self.url, "realm": self.realm, "credentialsSecretRef": { "name": "keycloak-credentials" } },
            "limits": limits,
        }))
        .unwrap();
        let mut backend = IdentityBackend::new("keycloak", spec);
        backend.metadata.namespace = Some("conformance".into());
        backend
    }
    fn secret(&self, wrong: bool) -> (Secret, BTreeMap<String, String>) {
        let secret = if wrong { "mfacanary-wrong-conformance-secret-9f2c".to_string() } else { KEYCLOAK_CLIENT_SECRET.to_string() };
        let data: BTreeMap<String, String> = [("client-id".to_string(), testkit::OPERATOR_CLIENT.to_string()), ("client-secret".to_string(), secret)].into();
        (serde_json::from_value(json!({ "metadata": { "name": "keycloak-credentials" }, "stringData": data })).unwrap(), data)
    }
    fn simulator(&self) -> Option<&Arc<Simulator>> {
        None
    }
    fn enrollment_ip(&self) -> Option<&'static str> {
        // The test's browser signs in from loopback, and Keycloak's events record that.
        Some("127.0.0.1")
    }
    fn window_users(&self) -> Vec<String> {
        // The password grant lets in only users whose factors it does not ask for; each must hold
        // a factor for the recall to take.
        (0..testkit::USERS_WITH_PASSWORD)
            .filter(|i| !testkit::seeded_types(*i).is_empty() && !testkit::seeded_types(*i).contains(&"otp"))
            .take(6)
            .map(testkit::username)
            .collect()
    }
    async fn act(&self, name: &str, activity: Activity) -> Result<Option<String>, String> {
        // Keycloak writes its own times: a test can only act now.
        assert!(activity.at.is_none(), "keycloak: events cannot be dated back");
        match activity.what {
            Act::SignIn => self.admin.sign_in_from(&self.realm, name, &activity.ip).await.map(|_| None),
            Act::Enroll { factor: FactorKind::Totp } if activity.by_admin.is_none() => {
                let id = self.admin.user_id(&self.realm, name).await?;
                let before: HashSet<String> = self.admin.mfa_credentials(&self.realm, &id).await?.into_iter().map(|c| c.0).collect();
                let (status, body) = self.admin.request(reqwest::Method::PUT, &format!("/{}/users/{id}", self.realm), Some(json!({ "requiredActions": ["CONFIGURE_TOTP"] }))).await?;
                assert!(status < 300, "requiring TOTP for {name}: {status} {body}");
                testkit::enroll_totp_by_browser_from(&self.url, &self.realm, name, Some(&activity.ip)).await?;
                let after = self.admin.mfa_credentials(&self.realm, &id).await?;
                Ok(after.into_iter().map(|c| c.0).find(|c| !before.contains(c)))
            }
            // The admin API cannot enroll a factor for a user; no push, fraud report, risk verdict
            // or bypass exists in Keycloak's events.
            other => Err(format!("Keycloak's events have no entry for {other:?}{}", if activity.by_admin.is_some() { " by an administrator" } else { "" })),
        }
    }
}

const STORE_TOKEN: &str = "mfacanary-conformance-store-token-7d3a";

/// An in-house store: the reference backend (crates/pg-backend) over its own database on Debian's
/// real PostgreSQL, reached through a proxy that records requests and injects faults (the network
/// between the operator and a store). Seeded as the simulators are, with every fifth login in
/// another letter case; the store is read and written with SQL, as its login service would.
struct StoreTarget {
    store: support::store::Store,
    proxy: RecordingProxy,
}

/// SQL text for a value a test chose.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl StoreTarget {
    async fn start(seed: &Seed) -> StoreTarget {
        let store = support::store::Store::start(STORE_TOKEN).await;
        store.psql(&Self::seed_sql(seed));
        let proxy = RecordingProxy::start(&store.url).await;
        StoreTarget { store, proxy }
    }

    /// Users `u000000…` (logins as `username(i)`, every fifth capitalised), the seed's groups
    /// nested as it says, each user's factors of the seed's kinds from its creation time, their
    /// sessions, a refresh token for every other user and a remembered device for every third.
    fn seed_sql(seed: &Seed) -> String {
        let last = seed.users as i64 - 1;
        let id = "'u' || lpad(i::text, 6, '0')";
        let mut sql = format!(
            "insert into users (id, username, email) select {id}, case when i % 5 = 4 then 'User' else 'user' end || lpad(i::text, 6, '0') || '@example.com', 'user' || lpad(i::text, 6, '0') || '@example.com' from generate_series(0, {last}) i;\n"
        );
        for group in &seed.groups {
            let parent = group.parent.as_deref().map_or("null".to_string(), |p| quoted(&format!("g-{p}")));
            sql.push_str(&format!("insert into groups (id, name, parent_id) values ({}, {}, {parent});\n", quoted(&format!("g-{}", group.name)), quoted(&group.name)));
            sql.push_str(&format!("insert into group_members select {}, {id} from generate_series(0, {last}) i where i % {} = {};\n", quoted(&format!("g-{}", group.name)), group.every, group.offset));
        }
        let created = seed.factor_created();
        for kind in &seed.factors {
            let kind = kind.as_str();
            sql.push_str(&format!(
                "insert into factors (id, user_id, kind, type, secret, created_at) select 'f' || lpad(i::text, 6, '0') || '-{kind}', {id}, '{kind}', {}, 'secret', '{created}' from generate_series(0, {last}) i;\n",
                quoted(Self::type_of(kind))
            ));
        }
        for n in 0..seed.sessions {
            sql.push_str(&format!("insert into sessions (id, user_id, created_at, expires_at) select 's' || lpad(i::text, 6, '0') || '-{n}', {id}, '{created}', now() + interval '1 day' from generate_series(0, {last}) i;\n"));
        }
        sql.push_str(&format!("insert into refresh_tokens (id, user_id, token_hash, expires_at) select 'r' || lpad(i::text, 6, '0'), {id}, 'hash', now() + interval '30 days' from generate_series(0, {last}) i where i % 2 = 0;\n"));
        sql.push_str(&format!("insert into remembered_devices (id, user_id) select 'd' || lpad(i::text, 6, '0'), {id} from generate_series(0, {last}) i where i % 3 = 0;\n"));
        sql
    }

    /// The login service's own name for a kind, shown to people.
    fn type_of(kind: &str) -> &'static str {
        match kind {
            "totp" => "authenticator app",
            "hotp" => "counter-based token",
            "webauthn" => "security key",
            "passkey" => "passkey",
            "recoveryCodes" => "backup codes",
            "sms" => "text message",
            "email" => "email code",
            "push" => "mobile app",
            "hardwareToken" => "hardware token",
            "securityQuestion" => "security question",
            _ => "app password",
        }
    }

    /// The users `filter` (SQL over `u`) selects, as the store holds them.
    fn users(&self, filter: &str) -> Vec<UserView> {
        let json = self.store.psql(&format!(
            "select coalesce(json_agg(json_build_object(
                'id', u.id, 'username', u.username, 'active', u.enabled,
                'factors', (select coalesce(json_agg(json_build_object('id', f.id, 'kind', f.kind, 'created', to_char(coalesce(f.created_at, '1970-01-01') at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) order by f.id), '[]') from factors f where f.user_id = u.id),
                'sessions', (select count(*) from sessions s where s.user_id = u.id and s.expires_at > now()),
                'grants', (select count(*) from refresh_tokens r where r.user_id = u.id and r.expires_at > now()) + (select count(*) from remembered_devices d where d.user_id = u.id)
            ) order by u.id), '[]') from users u where {filter}"
        ));
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("webhook: the store's users do not read ({e}): {json}"))
    }

    /// The SQL that names a user's id by login, in any letter case.
    fn id_of(username: &str) -> String {
        format!("(select id from users where lower(username) = lower({}))", quoted(username))
    }
}

#[async_trait]
impl Target for StoreTarget {
    fn kind(&self) -> &'static str {
        "webhook"
    }
    fn username(&self, i: u32) -> String {
        let name = username(i);
        if i % 5 == 4 { format!("U{}", &name[1..]) } else { name }
    }
    fn enrolling_users(&self) -> (String, String) {
        (self.username(44), self.username(119))
    }
    async fn census(&self, cutoff: jiff::Timestamp) -> Census {
        let mut census = Census::default();
        for user in self.users("true") {
            census.count(&user, Some(cutoff));
        }
        census
    }
    async fn user(&self, name: &str) -> UserView {
        self.users(&format!("lower(u.username) = lower({})", quoted(name))).pop().unwrap_or_else(|| panic!("webhook: no user {name}"))
    }
    async fn enroll(&self, name: &str) -> String {
        self.enroll_kind(name, FactorKind::Webauthn).await.unwrap_or_else(|| panic!("webhook: enroll {name}"))
    }
    async fn enroll_kind(&self, name: &str, kind: FactorKind) -> Option<String> {
        self.act(name, Activity::new(Act::Enroll { factor: kind }, ENROLLMENT_IP)).await.unwrap_or_else(|why| panic!("webhook: enroll {name}: {why}"))
    }
    async fn group_members(&self, group: &str) -> HashSet<String> {
        let names = self.store.psql(&format!(
            "with recursive tree(id) as (select id from groups where name = {} union select g.id from groups g join tree t on g.parent_id = t.id)
             select distinct u.username from users u join group_members m on m.user_id = u.id join tree t on t.id = m.group_id",
            quoted(group)
        ));
        names.lines().map(String::from).collect()
    }
    fn groups_nest(&self) -> bool {
        true
    }
    fn backend(&self, limits: BackendLimits) -> IdentityBackend {
        let spec = serde_json::from_value(json!({ "webhook": { "url": self.proxy.url, "credentialsSecretRef": { "name": "webhook-credentials" } }, "limits": limits })).unwrap();
        let mut backend = IdentityBackend::new("webhook", spec);
        backend.metadata.namespace = Some("conformance".into());
        backend
    }
    fn secret(&self, wrong: bool) -> (Secret, BTreeMap<String, String>) {
        let token = if wrong { "mfacanary-wrong-store-token-51b0" } else { STORE_TOKEN };
        let data: BTreeMap<String, String> = [("token".to_string(), token.to_string())].into();
        (serde_json::from_value(json!({ "metadata": { "name": "webhook-credentials" }, "stringData": data })).unwrap(), data)
    }
    fn simulator(&self) -> Option<&Arc<Simulator>> {
        None
    }
    fn enrollment_ip(&self) -> Option<&'static str> {
        Some(ENROLLMENT_IP)
    }
    /// As the login service writes it: a factor with the client named for the log's trigger
    /// (`app.client_*` settings), or an event of its own, from where `place_of` puts the address.
    async fn act(&self, name: &str, activity: Activity) -> Result<Option<String>, String> {
        let at = quoted(&activity.at().to_string());
        let place = idp_sim::place_of(&activity.ip);
        let user = Self::id_of(name);
        let client = [("app.client_ip", activity.ip.clone()), ("app.user_agent", activity.user_agent.clone()), ("app.client_country", place.country_code.to_string()), ("app.client_asn", place.asn.to_string())];
        let event_type = match activity.what {
            Act::Enroll { .. } if activity.by_admin.is_some() => return Err("the protocol's events name no actor: an administrator's enrollment reads as the user's".into()),
            Act::Enroll { factor } => {
                let id = format!("n{:016x}", fastrand::u64(..));
                let settings: Vec<String> = client.iter().map(|(k, v)| format!("select set_config('{k}', {}, true);", quoted(v))).collect();
                self.store.psql(&format!(
                    "begin; {} insert into factors (id, user_id, kind, type, secret, created_at) values ('{id}', {user}, '{}', {}, 'secret', {at}); commit;",
                    settings.join(" "),
                    factor.as_str(),
                    quoted(Self::type_of(factor.as_str()))
                ));
                return Ok(Some(id));
            }
            Act::SignIn => "signIn",
            Act::PushDenied => "pushDenied",
            Act::FraudReported => "fraudReported",
            Act::RiskySignIn => "riskySignIn",
            Act::BypassIssued => "bypassIssued",
            Act::SecondStepWeakened => return Err("the protocol has no event for a second step turned off or a recovery phone changed".into()),
        };
        self.store.psql(&format!(
            "insert into events (user_id, type, at, ip, user_agent, country, asn) values ({user}, '{event_type}', {at}, {}, {}, {}, {})",
            quoted(&client[0].1),
            quoted(&client[1].1),
            quoted(&client[2].1),
            client[3].1
        ));
        Ok(None)
    }
    fn window_users(&self) -> Vec<String> {
        (0..6).map(|i| self.username(2 * i + 1)).collect()
    }
    fn set_faults(&self, faults: Faults) -> bool {
        self.proxy.set_faults(faults);
        true
    }
    fn faults_injected(&self) -> u64 {
        self.proxy.faults_injected()
    }
    fn set_limits(&self, limits: RateLimits) -> bool {
        self.proxy.set_limits(limits);
        true
    }
    fn throttled(&self) -> u64 {
        self.proxy.throttled()
    }
    fn record_requests(&self) {}
    fn recorded_requests(&self) -> Vec<RecordedRequest> {
        self.proxy.recorded()
    }
    fn description(&self) -> Description {
        Description::from_openapi(&format!("{}/docs/backend-protocol.openapi.json", env!("CARGO_MANIFEST_DIR")))
    }
    /// As the login service checks a code: the user's, live, not used, matched by its hash; then used.
    fn sign_in_with_bypass(&self, name: &str, code: &str) -> Result<(), String> {
        let used = self.store.psql(&format!(
            "update bypass_codes set used_at = now() where user_id = {} and code_hash = encode(sha256(convert_to({}, 'UTF8')), 'hex') and used_at is null and revoked_at is null and expires_at > now() returning reference",
            Self::id_of(name),
            quoted(code)
        ));
        if used.is_empty() { Err(format!("no live bypass code of {name}'s matches")) } else { Ok(()) }
    }
}

async fn start_target(kind: &str, seed: &Seed) -> Box<dyn Target> {
    match kind {
        "keycloak" => return Box::new(KeycloakTarget::start(seed.users).await),
        "webhook" => return Box::new(StoreTarget::start(seed).await),
        _ => {}
    }
    let subject = SimSubject::start(kind).await.unwrap_or_else(|e| panic!("starting the {kind} simulator: {e}"));
    subject.sim.provider.seed(seed);
    Box::new(SimTarget { subject, seed: seed.clone() })
}

/// A target, the adapter connected to it, and a scratch audit trail.
struct Bench {
    target: Box<dyn Target>,
    provider: Arc<dyn IdentityProvider>,
    audit_path: PathBuf,
    audit: Arc<AuditLog>,
    ledger: Arc<MemoryLedger>,
}

impl Bench {
    async fn start(kind: &str, seed: &Seed, limits: BackendLimits) -> Bench {
        let target = start_target(kind, seed).await;
        let backend = target.backend(limits);
        Bench::on(target, &backend).await
    }

    /// The adapter connected to `target` as `backend` says, prepared as the operator prepares it.
    async fn on(target: Box<dyn Target>, backend: &IdentityBackend) -> Bench {
        let kind = target.kind();
        let provider = backends::connect(backend, Some(&target.secret(false).0), &Default::default()).unwrap_or_else(|e| panic!("connecting to {kind}: {e}"));
        provider.prepare().await.unwrap_or_else(|e| panic!("preparing the {kind} adapter: {e}"));
        let audit_path = std::env::temp_dir().join(format!("mfa-recall-conformance-{kind}-{:016x}.jsonl", fastrand::u64(..)));
        let audit = Arc::new(AuditLog::open(Some(&audit_path), "conformance", false).unwrap());
        Bench { target, provider, audit_path, audit, ledger: Arc::default() }
    }

    fn kind(&self) -> &'static str {
        self.target.kind()
    }

    fn sim(&self) -> &Arc<Simulator> {
        self.target.simulator().expect("this case needs a simulator")
    }

    fn job(&self, scope: ScopeSelector, cutoff: jiff::Timestamp) -> RecallJob {
        RecallJob {
            recall: "conformance/recall".into(),
            backend: self.kind().into(),
            scope,
            exclude_users: vec![],
            exclude_groups: vec![],
            kinds: vec![api::FactorKind::All],
            revoke_sessions: true,
            cutoff,
            concurrency: 8,
            window: Default::default(),
            notices: None,
            channel: Default::default(),
            plan_only: false,
            rollout: None,
            exclusions_now: None,
        }
    }

    fn runner(&self, progress: SharedProgress, stop: watch::Receiver<bool>) -> Runner {
        Runner { provider: self.provider.clone(), ledger: self.ledger.clone(), audit: self.audit.clone(), progress, stop }
    }

    /// Runs the revocation to the end, factors of unknown age judged once the provider's logs
    /// can tell (as the operator does before it leaves Revoking); the counts.
    async fn revoke(&self, job: &RecallJob) -> RecallCounts {
        let progress = SharedProgress::default();
        let (_stop, stop_rx) = watch::channel(false);
        let runner = self.runner(progress.clone(), stop_rx);
        let end = runner.revoke(job).await.unwrap_or_else(|e| panic!("{}: recall failed: {e}", self.kind()));
        assert_eq!(end, RunEnd::Finished);
        self.settle(&runner, job).await;
        progress.lock().unwrap().counts.clone()
    }

    /// Takes up the users waiting for the provider's logs until none waits.
    async fn settle(&self, runner: &Runner, job: &RecallJob) {
        assert_eq!(self.settle_unless_stopped(runner, job, None).await, RunEnd::Finished);
    }

    /// As the operator does before it leaves Revoking: passes over the users waiting for the
    /// provider's logs, each when the engine says the next are ready, until none waits or `stop`
    /// is set.
    async fn settle_unless_stopped(&self, runner: &Runner, job: &RecallJob, stop: Option<&watch::Receiver<bool>>) -> RunEnd {
        loop {
            let next = runner.settle(job).await.unwrap_or_else(|e| panic!("{}: judging factors of unknown age failed: {e}", self.kind()));
            if stop.is_some_and(|stop| *stop.borrow()) {
                return RunEnd::Stopped;
            }
            let Some(ready) = next else { return RunEnd::Finished };
            let wait = ready.duration_since(jiff::Timestamp::now());
            tokio::time::sleep(Duration::try_from(wait).unwrap_or_default().max(Duration::from_millis(50))).await;
        }
    }

    fn audit_events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn revoked_factor_ids(&self) -> Vec<String> {
        self.audit_events()
            .into_iter()
            .filter(|e| e["action"] == "factor.revoke" && e["outcome"] == "revoked")
            .map(|e| e["factorId"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = mfa_recall::audit::remove(&self.audit_path);
    }
}

/// Users the recall has reached: done, or waiting for the provider's logs to date a factor.
fn reached(progress: &SharedProgress) -> i64 {
    let counts = &progress.lock().unwrap().counts;
    counts.invalidated + counts.awaiting_logs
}

fn fast() -> BackendLimits {
    BackendLimits { requests_per_second: 5000, max_concurrency: 16, ..Default::default() }
}

/// Staff (every other user), admins (every tenth) and, nested two levels below admins where the
/// provider's groups nest, platform (every fortieth from the third) holding breakglass (every
/// fiftieth from the seventh); none of these last two are staff or admins themselves.
fn seed(users: u32) -> Seed {
    let groups = vec![
        GroupSeed::new("staff", 2),
        GroupSeed::new("admins", 10),
        GroupSeed::nested("platform", 40, 3, "admins"),
        GroupSeed::nested("breakglass", 50, 7, "platform"),
    ];
    Seed { users, groups, ..Seed::default() }
}

/// Every kind of second factor a user may enroll (each simulator holds those its provider has).
const SECOND_FACTORS: [FactorKind; 9] = [
    FactorKind::Push,
    FactorKind::Sms,
    FactorKind::Totp,
    FactorKind::Hotp,
    FactorKind::Webauthn,
    FactorKind::Passkey,
    FactorKind::Email,
    FactorKind::HardwareToken,
    FactorKind::RecoveryCodes,
];

/// Returns once the clock reads a millisecond past `t`: what happens next happens after it.
async fn clock_moves_past(t: jiff::Timestamp) {
    while jiff::Timestamp::now().as_millisecond() <= t.as_millisecond() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn total(map: &BTreeMap<String, u64>) -> u64 {
    map.values().sum()
}

/// Every user invalidated; counts equal what the provider lost; nothing older than the cutoff left.
async fn full_recall(kind: &str) {
    let bench = Bench::start(kind, &seed(250), fast()).await;
    let cutoff = jiff::Timestamp::now();
    let before = bench.target.census(cutoff).await;
    let users = before.users as i64;
    assert!(total(&before.factors_before_cutoff) >= 250, "{kind}: the seed gave too few factors: {before:?}");
    let counts = bench.revoke(&bench.job(ScopeSelector::AllUsers, cutoff)).await;
    let after = bench.target.census(cutoff).await;

    assert_eq!((counts.targeted, counts.invalidated, counts.failed, counts.excluded), (users, users, 0, 0), "{kind}: {counts:?}");
    assert!(after.factors_before_cutoff.is_empty(), "{kind}: factors older than the cutoff remain: {after:?}");
    let revoked: BTreeMap<String, u64> = counts.factors_revoked.iter().map(|(k, v)| (k.as_str().to_string(), *v as u64)).collect();
    assert_eq!(revoked, before.factors_before_cutoff, "{kind}: factors revoked by kind differ from what the provider lost");
    // Every recorded factor has its audit line; a linked factor that went with another (Okta Verify,
    // Auth0 link_id) is audited as alreadyGone, so both outcomes count.
    let audited = bench.audit_events().into_iter().filter(|e| e["action"] == "factor.revoke").count();
    assert_eq!(audited as u64, total(&before.factors_before_cutoff), "{kind}: audit and provider disagree");
    let caps = bench.provider.capabilities();
    if caps.revoke_sessions {
        assert!(before.sessions + before.grants > 0, "{kind}: the seed opened no sessions");
        assert_eq!((after.sessions, after.grants), (0, 0), "{kind}: sessions or grants remain");
        // A provider that cannot count sessions reports one revocation per user, and says so.
        let expected = if caps.count_sessions { before.sessions + before.grants } else { users as u64 };
        assert_eq!(counts.sessions_revoked as u64, expected, "{kind}: sessions counted wrong");
        assert!(caps.count_sessions || caps.limitations.iter().any(|l| l.starts_with("sessions:")), "{kind}: the limit is named");
    }
    assert_eq!(counts.pending as u64, before.users_with_old_factors, "{kind}: every user who lost a factor has to re-enroll");
    assert_eq!(after.active_users, before.active_users, "{kind}: a recall must not disable anyone before the deadline");
}

/// A user who enrolls after the cutoff keeps the new factor: before being reached, and mid-recall.
async fn cutoff_respected(kind: &str) {
    let bench = Bench::start(kind, &seed(120), BackendLimits { requests_per_second: 300, max_concurrency: 4, ..Default::default() }).await;
    let cutoff = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (early, late) = bench.target.enrolling_users();
    let early_new = bench.target.enroll(&early).await;

    let job = bench.job(ScopeSelector::AllUsers, cutoff);
    let progress = SharedProgress::default();
    let (_stop, stop_rx) = watch::channel(false);
    let mut late_new = None;
    {
        let runner = bench.runner(progress.clone(), stop_rx);
        let run = runner.revoke(&job);
        tokio::pin!(run);
        loop {
            tokio::select! {
                end = &mut run => { assert_eq!(end.unwrap(), RunEnd::Finished); break; }
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    if late_new.is_none() && reached(&progress) >= 5 {
                        late_new = Some(bench.target.enroll(&late).await);
                    }
                }
            }
        }
        bench.settle(&runner, &job).await;
    }
    let late_new = late_new.expect("the recall ended before the mid-recall enrollment");
    let revoked = bench.revoked_factor_ids();
    let kept_for_want_of_age = progress.lock().unwrap().kept_factors.clone();
    for (name, new_id) in [(&early, &early_new), (&late, &late_new)] {
        let user = bench.target.user(name).await;
        assert!(user.factors.iter().any(|f| &f.id == new_id), "{kind}: {name} lost the factor enrolled after the cutoff: {user:?}");
        // An old factor left is one the provider's log could not date, named as kept (by the
        // adapter's id for it, which for Google's codes is a fingerprint of the set).
        for old in user.factors.iter().filter(|f| f.created < cutoff) {
            assert!(kept_for_want_of_age.iter().any(|k| k.starts_with(&format!("{name}: {} ", old.kind.as_str()))), "{kind}: {name} kept a factor older than the cutoff unnamed: {old:?} {kept_for_want_of_age:?}");
        }
        assert!(!revoked.contains(new_id), "{kind}: {name}'s new factor was revoked");
    }

    // The enrollment is seen for both: when the recall reached them (where the provider dates
    // factors, they are counted as already enrolled and not asked to enroll again), or by the
    // re-enrollment check after.
    if bench.provider.capabilities().enrollment_detection {
        let (_stop, stop_rx) = watch::channel(false);
        bench.runner(progress.clone(), stop_rx).check_re_enrollment(&job).await.unwrap();
        let counts = progress.lock().unwrap().counts.clone();
        assert_eq!(counts.re_enrolled + counts.already_enrolled, 2, "{kind}: {counts:?}");
        let seen: Vec<Value> = bench
            .audit_events()
            .into_iter()
            .filter(|e| e["action"] == "reenrollment.seen" || (e["action"] == "enrollment.require" && e["outcome"] == "skipped"))
            .collect();
        assert_eq!(seen.len(), 2, "{kind}: {seen:?}");
        let users: HashSet<&str> = seen.iter().map(|e| e["user"].as_str().unwrap_or_default()).collect();
        assert_eq!(users, HashSet::from([early.as_str(), late.as_str()]), "{kind}");
        // The early one enrolled before the recall began: seen when reached, not asked again.
        let early_seen = seen.iter().find(|e| e["user"] == early.as_str()).unwrap();
        assert_eq!((early_seen["action"].as_str(), early_seen["outcome"].as_str()), (Some("enrollment.require"), Some("skipped")), "{kind}: {early_seen}");
        assert!(counts.already_enrolled >= 1, "{kind}: {counts:?}");
        // Where the provider logs where an enrollment came from, the audit trail keeps it.
        if let Some(ip) = bench.target.enrollment_ip() {
            assert!(seen.iter().all(|e| e["detail"].as_str().unwrap_or_default().contains(ip)), "{kind}: origin kept: {seen:?}");
        }
    }
}

/// Group scope with user and group exclusions: excluded users are untouched and counted, with the rule.
async fn exclusions(kind: &str) {
    let bench = Bench::start(kind, &seed(60), fast()).await;
    let cutoff = jiff::Timestamp::now();
    let mut job = bench.job(ScopeSelector::listed(vec!["staff".into()], vec![]), cutoff);
    let by_name = bench.target.username(2);
    job.exclude_users = vec![by_name.clone()];
    job.exclude_groups = vec!["admins".into()];
    let staff = bench.target.group_members("staff").await;
    let admins = bench.target.group_members("admins").await;
    let excluded: HashSet<&String> = staff.iter().filter(|u| **u == by_name || admins.contains(*u)).collect();
    assert!(staff.contains(&by_name), "{kind}: the seed should put user 2 in staff");
    let outside = bench.target.username(1);
    assert!(!staff.contains(&outside));
    let mut untouched_before = Vec::new();
    for name in excluded.iter().map(|u| u.as_str()).chain([outside.as_str()]) {
        untouched_before.push(bench.target.user(name).await);
    }
    let counts = bench.revoke(&job).await;

    let (n_staff, n_excluded) = (staff.len() as i64, excluded.len() as i64);
    assert_eq!((counts.targeted, counts.excluded, counts.invalidated, counts.failed), (n_staff, n_excluded, n_staff - n_excluded, 0), "{kind}: {counts:?}");
    for before in &untouched_before {
        let after = bench.target.user(&before.username).await;
        assert_eq!(&after, before, "{kind}: {} is excluded or out of scope and must be untouched", before.username);
    }
    let rules: Vec<String> =
        bench.audit_events().into_iter().filter(|e| e["action"] == "user.exclude").map(|e| e["detail"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(rules.len() as i64, n_excluded, "{kind}: every exclusion is audited");
    assert!(rules.iter().any(|r| r.contains("exclude.users")), "{kind}: the rule is named: {rules:?}");
    if excluded.len() > 1 {
        assert!(rules.iter().any(|r| r.contains("admins")), "{kind}: the group rule is named: {rules:?}");
    }
}

/// Stopped mid-recall and started again: finishes, counts exact, no factor revoked twice.
async fn resume(kind: &str) {
    let bench = Bench::start(kind, &seed(300), BackendLimits { requests_per_second: 600, max_concurrency: 8, ..Default::default() }).await;
    let cutoff = jiff::Timestamp::now();
    let before = bench.target.census(cutoff).await;
    let users = before.users as i64;
    let job = bench.job(ScopeSelector::AllUsers, cutoff);
    // Answers take a few milliseconds, as a real provider's do, so the stop lands mid-run.
    bench.target.set_faults(Faults { slow_rate: 1.0, slow_ms: 10, ..Faults::default() });
    let (stop, stop_rx) = watch::channel(false);
    let progress = SharedProgress::default();
    {
        let runner = bench.runner(progress.clone(), stop_rx.clone());
        // The whole of Revoking, as the operator runs it: users whose factors' age only the logs
        // can tell (every Duo user with a phone) are invalidated once the logs are ready.
        let run = async {
            match runner.revoke(&job).await? {
                RunEnd::Stopped => Ok::<_, mfa_recall::Error>(RunEnd::Stopped),
                RunEnd::Finished => Ok(bench.settle_unless_stopped(&runner, &job, Some(&stop_rx)).await),
            }
        };
        tokio::pin!(run);
        let invalidated = || progress.lock().unwrap().counts.invalidated;
        let end = loop {
            tokio::select! {
                end = &mut run => break end.unwrap(),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    if invalidated() >= 130 { let _ = stop.send(true); }
                }
            }
        };
        assert_eq!(end, RunEnd::Stopped, "{kind}: the run should stop when asked ({} of {users} invalidated)", invalidated());
        assert!(invalidated() < users, "{kind}: the stop came too late to test a resume");
    }
    bench.target.set_faults(Faults::default());
    let counts = bench.revoke(&job).await;
    let after = bench.target.census(cutoff).await;
    assert_eq!((counts.targeted, counts.invalidated, counts.failed), (users, users, 0), "{kind}: {counts:?}");
    assert!(after.factors_before_cutoff.is_empty(), "{kind}: {after:?}");
    let ids = bench.revoked_factor_ids();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{kind}: a factor was revoked twice");
    assert_eq!(counts.factors_revoked.values().sum::<i64>() as u64, total(&before.factors_before_cutoff), "{kind}: {counts:?}");
}

/// Devices an administrator added after the cutoff, before the recall reached their users, are
/// kept, and the old ones beside them go; the logs that tell them apart are read for the whole
/// account, not once per user (Duo limits log requests tightly).
async fn admin_added_devices_kept(kind: &str) {
    let users = 40;
    let bench = Bench::start(kind, &seed(users), fast()).await;
    let cutoff = jiff::Timestamp::now();
    clock_moves_past(cutoff).await;
    let mut added = Vec::new();
    for (i, factor_kind) in [FactorKind::Push, FactorKind::Sms, FactorKind::Totp, FactorKind::HardwareToken].into_iter().enumerate() {
        let name = username(3 * i as u32 + 2);
        let id = bench.sim().provider.add_by_admin(&name, factor_kind).unwrap_or_else(|| panic!("{kind}: the simulator cannot add {}", factor_kind.as_str()));
        added.push((name, id));
    }
    let counts = bench.revoke(&bench.job(ScopeSelector::AllUsers, cutoff)).await;
    for (name, id) in &added {
        let user = bench.target.user(name).await;
        assert_eq!(user.factors.iter().map(|f| &f.id).collect::<Vec<_>>(), [id], "{kind}: {name} keeps only the device added after the cutoff");
    }
    let after = bench.target.census(cutoff).await;
    assert!(after.factors_before_cutoff.is_empty(), "{kind}: {after:?}");
    assert_eq!((counts.invalidated, counts.failed, counts.kept_unknown_age), (users as i64, 0, 0), "{kind}: {counts:?}");
    // Read per user, the logs would take a request or more for each; read for the account, a
    // couple per pass over the waiting users.
    let log_reads: u64 = bench.sim().stats().by_bucket.iter().filter(|(bucket, _)| bucket.ends_with(" logs")).map(|(_, n)| *n).sum();
    assert!(log_reads < users as u64, "{kind}: {log_reads} log requests for {users} users");
}

/// Google's turnOff ends every enrollment: a `2sv_enroll` logged before the recall turned the
/// user off (the Reports API showed it later than the recall waited) is not a re-enrollment;
/// one after is.
async fn re_enrollment_counts_only_after_the_turn_off(kind: &str) {
    let bench = Bench::start(kind, &seed(6), fast()).await;
    // The Reports API shows events later than the backend's logDelay waits (1 s here), by a margin
    // a slow machine cannot close.
    let lag = Duration::from_secs(5);
    bench.sim().provider.set_log_delay(lag);
    let cutoff = jiff::Timestamp::now();
    clock_moves_past(cutoff).await;
    let name = username(2);
    bench.sim().provider.enroll(&name, FactorKind::Totp, ENROLLMENT_IP).unwrap();
    let job = bench.job(ScopeSelector::listed(vec![], vec![name.clone()]), cutoff);
    let counts = bench.revoke(&job).await;
    assert_eq!((counts.invalidated, counts.pending), (1, 1), "{kind}: the enrollment was hidden by the lag, so 2SV went: {counts:?}");
    // Whether the ledger has the user re-enrolled after a re-enrollment check.
    let check = || async {
        let (_stop, stop_rx) = watch::channel(false);
        bench.runner(SharedProgress::default(), stop_rx).check_re_enrollment(&job).await.unwrap();
        let segment = bench.ledger.read(kind, 0).await.unwrap();
        segment.users.iter().find(|r| r.user.username == name).unwrap().re_enrolled.is_some()
    };
    // Once the Reports API shows the enrollment made before the turnOff, it is still not one.
    let user = bench.provider.find_user(&name).await.unwrap().remove(0);
    eventually("the enrollment before the turnOff in the Reports API", || async { bench.provider.enrolled_since(&user, cutoff).await.unwrap().is_some() }).await;
    assert!(!check().await, "{kind}: an enrollment the turnOff ended is not a re-enrollment");
    bench.sim().provider.enroll(&name, FactorKind::Totp, ENROLLMENT_IP).unwrap();
    eventually("the enrollment after the turnOff counted as a re-enrollment", check).await;
}

/// A 2-Step Verification re-enrollment just before the recall reaches the user, which the Reports
/// API shows only after a lag (shorter than the wait the backend is configured with), is seen
/// once the wait is over: the new enrollment stays, and the user counts as already enrolled.
async fn re_enrollment_within_the_log_delay_is_kept(kind: &str) {
    let bench = Bench::start(kind, &seed(6), fast()).await;
    // The backend waits 1 s (logDelay); the Reports API shows events after 600 ms.
    bench.sim().provider.set_log_delay(Duration::from_millis(600));
    let cutoff = jiff::Timestamp::now();
    clock_moves_past(cutoff).await;
    let name = username(2);
    let enrollment = bench.sim().provider.enroll(&name, FactorKind::Totp, ENROLLMENT_IP).unwrap();
    let counts = bench.revoke(&bench.job(ScopeSelector::AllUsers, cutoff)).await;
    let user = bench.target.user(&name).await;
    assert!(user.factors.iter().any(|f| f.id == enrollment), "{kind}: {name} lost the 2SV enrollment made after the cutoff: {user:?}");
    assert_eq!((counts.invalidated, counts.failed, counts.already_enrolled), (6, 0, 1), "{kind}: {counts:?}");
}

/// An app password made since the cutoff ends with the 2-Step Verification the recall turns
/// off (Google offers no way to keep it): counted and named, never silently.
async fn new_app_password_lost_with_2sv_is_named(kind: &str) {
    let bench = Bench::start(kind, &seed(6), fast()).await;
    let cutoff = jiff::Timestamp::now();
    clock_moves_past(cutoff).await;
    let name = username(3);
    let asp = bench.sim().provider.enroll(&name, FactorKind::AppPassword, ENROLLMENT_IP).expect("the user has 2SV, so an app password");
    let progress = SharedProgress::default();
    let job = bench.job(ScopeSelector::AllUsers, cutoff);
    let (_stop, stop_rx) = watch::channel(false);
    let runner = bench.runner(progress.clone(), stop_rx);
    assert_eq!(runner.revoke(&job).await.unwrap(), RunEnd::Finished);
    bench.settle(&runner, &job).await;
    let p = progress.lock().unwrap().clone();
    assert_eq!((p.counts.invalidated, p.counts.new_factors_lost), (6, 1), "{kind}: {:?}", p.counts);
    assert_eq!(p.lost_factors, [format!("{name}: appPassword {asp}")]);
    let lost: Vec<Value> = bench.audit_events().into_iter().filter(|e| e["action"] == "factor.lostWithRevoked").collect();
    assert_eq!(lost.len(), 1, "{kind}: {lost:?}");
    assert_eq!(lost[0]["user"], name.as_str());
}

/// A next-page link to another host is never followed (the credentials would go with it). Entra
/// pages only by its links: the listing ends after its bounded retries with an error that says
/// why, and the users listed before it are worked on and accounted for. Okta's link carries a
/// cursor the adapter asks the org itself for: the listing goes on, at the org.
async fn foreign_next_link_ends_the_listing(kind: &str) {
    // More users than one page holds, so the first answer carries a next link.
    let (page, follows_links) = match kind {
        "okta" => (200, false),
        "entra" => (999, true),
        other => panic!("{other}: this case is for providers that page by links"),
    };
    let users = page + 50;
    let bench = Bench::start(kind, &seed(users as u32), fast()).await;
    bench.sim().set_faults(Faults { foreign_links: true, ..Faults::default() });
    let job = bench.job(ScopeSelector::AllUsers, jiff::Timestamp::now());
    let progress = SharedProgress::default();
    let (_stop, stop_rx) = watch::channel(false);
    let runner = bench.runner(progress.clone(), stop_rx);
    // A guard against a listing that never ends, not a measure of speed.
    let ended = tokio::time::timeout(Duration::from_secs(120), runner.revoke(&job)).await.unwrap_or_else(|_| panic!("{kind}: the listing did not end"));
    let counts = progress.lock().unwrap().counts.clone();
    if follows_links {
        let error = ended.expect_err("a foreign next link ends the listing with an error").to_string();
        assert!(error.contains("link"), "{kind}: the error names the link: {error}");
        // Worked on: invalidated, or waiting for the log to date what the provider does not.
        assert_eq!((counts.targeted, counts.invalidated + counts.awaiting_logs, counts.failed), (page, page, 0), "{kind}: the first page's users are worked on: {counts:?}");
    } else {
        assert_eq!(ended.unwrap(), RunEnd::Finished);
        assert_eq!((counts.targeted, counts.invalidated, counts.failed), (users, users, 0), "{kind}: {counts:?}");
    }
}

/// Graph refuses to delete a mobile phone while an alternate mobile is registered, and the default
/// method while others are: users holding both phones, an authenticator and a code generator lose
/// them all, in the order Graph allows, and nobody fails.
async fn methods_go_in_the_order_graph_allows(kind: &str) {
    let users = 12;
    let bench = Bench::start(kind, &Seed { factors: vec![FactorKind::Sms, FactorKind::Push, FactorKind::Totp], ..seed(users) }, fast()).await;
    // A second phone is the alternate mobile; registered before the cutoff, it is old.
    for i in 0..users {
        bench.sim().provider.enroll(&username(i), FactorKind::Sms, ENROLLMENT_IP).expect("an alternate mobile phone");
    }
    clock_moves_past(jiff::Timestamp::now()).await;
    let cutoff = jiff::Timestamp::now();
    let before = bench.target.census(cutoff).await;
    assert_eq!(before.factors_before_cutoff.get("sms"), Some(&(2 * users as u64)), "{kind}: {before:?}");
    let counts = bench.revoke(&bench.job(ScopeSelector::AllUsers, cutoff)).await;
    let after = bench.target.census(cutoff).await;
    assert_eq!((counts.invalidated, counts.failed, counts.kept_unknown_age), (users as i64, 0, 0), "{kind}: {counts:?}");
    assert!(after.factors_before_cutoff.is_empty(), "{kind}: {after:?}");
    assert_eq!(counts.factors_revoked.values().sum::<i64>() as u64, total(&before.factors_before_cutoff), "{kind}: {counts:?}");
}

/// Under a known limit the recall keeps to it: at most a handful of throttled answers.
async fn keeps_under_the_limit(kind: &str) {
    // Providers that announce their budget are paced by it even when the configured rate is far
    // higher; the others must be configured at (here 90 % of) their published limit.
    let limit_per_second = 100;
    let probe = start_target(kind, &seed(1)).await;
    let announces = probe.simulator().unwrap().provider.announces_limits();
    let limits = if announces { fast() } else { BackendLimits { requests_per_second: 90, max_concurrency: 16, ..Default::default() } };
    let bench = Bench::start(kind, &seed(150), limits).await;
    bench.sim().set_limits(RateLimits { window_seconds: 1, default: Some(limit_per_second), ..RateLimits::default() });
    let counts = bench.revoke(&bench.job(ScopeSelector::AllUsers, jiff::Timestamp::now())).await;
    let stats = bench.sim().stats();
    assert_eq!((counts.invalidated, counts.failed), (150, 0), "{kind}: {counts:?}");
    assert!(stats.throttled <= 5, "{kind}: {} of {} requests were throttled", stats.throttled, stats.requests);
}

/// A provider that announces no budget, whose quota is far below the configured rate (shared
/// with other tools, say): the recall slows down to it and no user fails.
async fn shared_quota_fails_no_user(kind: &str) {
    let bench = Bench::start(kind, &seed(40), BackendLimits { requests_per_second: 2000, max_concurrency: 16, ..Default::default() }).await;
    assert!(!bench.target.announces_limits(), "{kind}: this case is for providers that announce no budget");
    // 20 requests a second over windows of 5 s: a tenth of what the backend is configured for.
    assert!(bench.target.set_limits(RateLimits { window_seconds: 5, default: Some(100), ..RateLimits::default() }), "{kind}: no quota can be set");
    let counts = bench.revoke(&bench.job(ScopeSelector::AllUsers, jiff::Timestamp::now())).await;
    assert_eq!((counts.invalidated, counts.failed), (40, 0), "{kind}: {counts:?}");
    assert!(bench.target.throttled() > 0, "{kind}: the quota was never reached, so this proves nothing");
}

/// Transient faults are retried to success, and a deletion carried out whose answer was lost
/// (its retry finding the factor gone) is counted as the recall's: the counts equal what the
/// provider lost. A permanent fault fails only that user, with its error.
async fn faults(kind: &str) {
    let bench = Bench::start(kind, &seed(80), fast()).await;
    let cutoff = jiff::Timestamp::now();
    let before = bench.target.census(cutoff).await;
    assert!(bench.target.set_faults(Faults {
        throttle_next: 5,
        // Together about one request in seven: a call fails for good only after six in a row.
        error_rate: 0.05,
        drop_rate: 0.03,
        malformed_rate: 0.03,
        lost_rate: 0.03,
        slow_rate: 0.05,
        slow_ms: 200,
        ..Faults::default()
    }), "{kind}: no faults can be injected");
    let counts = bench.revoke(&bench.job(ScopeSelector::AllUsers, cutoff)).await;
    bench.target.set_faults(Faults::default());
    assert_eq!((counts.invalidated, counts.failed), (80, 0), "{kind}: transient faults must be retried: {counts:?} {:?}", bench.audit_events().into_iter().filter(|e| e["action"] == "user.fail").map(|e| e["detail"].clone()).collect::<Vec<_>>());
    assert_eq!(by_name(&counts), lost_by_kind(&before, &bench.target.census(cutoff).await), "{kind}: counts differ from what the provider lost");
    assert!(bench.target.faults_injected() > 10, "{kind}: too few faults were injected to prove anything");

    let bench = Bench::start(kind, &seed(20), fast()).await;
    let broken = bench.target.user(&username(7)).await;
    assert!(bench.target.set_faults(Faults { failing_paths: vec![broken.id.clone()], ..Faults::default() }));
    let counts = bench.revoke(&bench.job(ScopeSelector::AllUsers, jiff::Timestamp::now())).await;
    assert_eq!((counts.targeted, counts.invalidated, counts.failed), (20, 19, 1), "{kind}: {counts:?}");
    let failure = bench.audit_events().into_iter().find(|e| e["action"] == "user.fail").expect("the failure is audited");
    assert_eq!(failure["user"], username(7).as_str());
    assert!(failure["detail"].as_str().unwrap().contains("500"), "{kind}: the error is named: {failure}");
}

/// A user whose recall fails midway (one factor's deletion refused for good) keeps what was done
/// before counted: the counts equal what the provider lost, for the failed user too.
async fn failed_midway(kind: &str) {
    let bench = Bench::start(kind, &seed(20), fast()).await;
    let cutoff = jiff::Timestamp::now();
    // A factor of user 7's whose id nobody else's factors share (Entra phones have fixed ids),
    // the last listed, so something goes before it on most providers.
    let others: HashSet<String> = bench.target.user(&username(8)).await.factors.into_iter().map(|f| f.id).collect();
    // Not one deleted along with another (Okta FastPass goes with its device), nor a short id a
    // fault on paths containing it would also hit elsewhere (Google's numbered app passwords).
    let doomed = bench
        .target
        .user(&username(7))
        .await
        .factors
        .into_iter()
        .rev()
        .find(|f| !others.contains(&f.id) && f.kind != FactorKind::Passkey && f.id.len() >= 8)
        .expect("a factor of its own");
    let before = bench.target.census(cutoff).await;
    // Google's factor ids are not in its paths: the user's turnOff fails instead.
    let path = if kind == "google" { format!("{}/twoStepVerification/turnOff", bench.target.user(&username(7)).await.id) } else { doomed.id.clone() };
    assert!(bench.target.set_faults(Faults { failing_paths: vec![path], ..Faults::default() }));
    let counts = bench.revoke(&bench.job(ScopeSelector::AllUsers, cutoff)).await;
    let after = bench.target.census(cutoff).await;
    assert_eq!((counts.invalidated, counts.failed), (19, 1), "{kind}: {counts:?}");
    assert_eq!(by_name(&counts), lost_by_kind(&before, &after), "{kind}: counts differ from what the provider lost");
    let user = bench.target.user(&username(7)).await;
    assert!(kind == "google" || user.factors.iter().any(|f| f.id == doomed.id), "{kind}: the refused factor stays");
    if bench.provider.capabilities().count_sessions {
        assert_eq!(counts.sessions_revoked as u64, before.sessions + before.grants - after.sessions - after.grants, "{kind}: sessions counted as ended");
    }
}

/// A factor of each kind the provider has, enrolled after the cutoff but before the recall
/// reaches its user, is kept, including kinds the provider shows no creation time for; what the
/// logs cannot tell apart from a new one is kept too, counted and named, never deleted.
async fn new_factors_of_every_kind_kept(kind: &str) {
    let bench = Bench::start(kind, &seed(40), fast()).await;
    let cutoff = jiff::Timestamp::now();
    clock_moves_past(cutoff).await;
    let mut enrolled = Vec::new();
    for (i, factor_kind) in SECOND_FACTORS.into_iter().enumerate() {
        let name = username(2 * i as u32 + 1);
        // Recovery codes come with an enrollment (Google issues them to a 2SV enrollment; new
        // codes for the old one are the old enrollment's).
        if factor_kind == FactorKind::RecoveryCodes
            && let Some(id) = bench.target.enroll_kind(&name, FactorKind::Totp).await
        {
            enrolled.push((name.clone(), FactorKind::Totp, id));
        }
        if let Some(id) = bench.target.enroll_kind(&name, factor_kind).await {
            enrolled.push((name, factor_kind, id));
        }
    }
    assert!(enrolled.len() >= 2, "{kind}: the simulator enrolled too few kinds: {enrolled:?}");
    let counts = bench.revoke(&bench.job(ScopeSelector::AllUsers, cutoff)).await;
    for (name, factor_kind, id) in &enrolled {
        let user = bench.target.user(name).await;
        assert!(user.factors.iter().any(|f| &f.id == id), "{kind}: {name} lost the {} enrolled after the cutoff: {user:?}", factor_kind.as_str());
    }
    // What old factors are left is kept for want of its age (counted), or belongs to a user who
    // failed with the provider's reason (Entra v1.0 will not delete a default method while a
    // newer method stays).
    let mut failed_holding = 0;
    for event in bench.audit_events().into_iter().filter(|e| e["action"] == "user.fail") {
        let user = bench.target.user(event["user"].as_str().unwrap()).await;
        failed_holding += user.factors.iter().filter(|f| f.created < cutoff).count() as i64;
        assert!(!event["detail"].as_str().unwrap_or_default().is_empty(), "{kind}: a failure names its reason: {event}");
    }
    let after = bench.target.census(cutoff).await;
    let old_left = total(&after.factors_before_cutoff) as i64;
    // Kept for want of their age may also count new factors the log cannot tell from old ones.
    assert!(old_left <= counts.kept_unknown_age + failed_holding, "{kind}: {old_left} old factors left, {} kept for want of their age, {failed_holding} held by failed users: {counts:?}", counts.kept_unknown_age);
    assert_eq!(counts.awaiting_logs, 0, "{kind}");
}

/// The parts of a provider's published, machine-readable API description a recall's requests are
/// judged by (`tests/api/<provider>.json`, each naming its source and version): methods with
/// their path templates, query parameter names and required headers, and the query parameters
/// every method takes and headers every method requires.
struct Description {
    methods: Vec<(String, Vec<String>, Vec<String>)>,
    /// Headers a method requires, by method index.
    headers: Vec<Vec<String>>,
    global_query: Vec<String>,
    global_headers: Vec<String>,
    /// Requests outside the API the description covers (the OAuth token endpoint), by method
    /// and path template.
    other: Vec<(String, Vec<String>)>,
}

impl Description {
    fn load(kind: &str) -> Description {
        let path = format!("{}/tests/api/{kind}.json", env!("CARGO_MANIFEST_DIR"));
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap();
        let names = |v: &Value| -> Vec<String> { v.as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect() };
        let methods = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (m["httpMethod"].as_str().unwrap().to_string(), segments(m["path"].as_str().unwrap()), names(&m["query"]))
            })
            .collect();
        let headers = doc["methods"].as_array().unwrap().iter().map(|m| names(&m["headers"])).collect();
        let other = doc["otherEndpoints"].as_array().into_iter().flatten().map(|o| (o["httpMethod"].as_str().unwrap().into(), segments(o["path"].as_str().unwrap()))).collect();
        Description { methods, headers, global_query: names(&doc["globalQuery"]), global_headers: names(&doc["globalHeaders"]), other }
    }

    /// From an OpenAPI 3 document (the backend protocol's own, docs/backend-protocol.openapi.json):
    /// its operations with their query parameters and required header parameters. Every request
    /// carries what its security schemes ask (a bearer token: Authorization) and, where answers
    /// come in one media type, asks for it (Accept).
    fn from_openapi(path: &str) -> Description {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap();
        let (mut methods, mut headers) = (Vec::new(), Vec::new());
        for (template, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap().iter().filter(|(m, _)| ["get", "post", "put", "patch", "delete"].contains(&m.as_str())) {
                let parameters: Vec<&Value> = item["parameters"].as_array().into_iter().flatten().chain(operation["parameters"].as_array().into_iter().flatten()).collect();
                let named = |place: &str, required_only: bool| -> Vec<String> {
                    parameters.iter().filter(|p| p["in"] == place && (!required_only || p["required"] == true)).map(|p| p["name"].as_str().unwrap().to_ascii_lowercase()).collect()
                };
                methods.push((method.to_uppercase(), segments(template), named("query", false).iter().map(|q| q.to_string()).collect()));
                headers.push(named("header", true));
            }
        }
        let bearer = doc["components"]["securitySchemes"].as_object().unwrap().values().any(|s| s["scheme"] == "bearer");
        let media_types: HashSet<&str> = doc["paths"].as_object().unwrap().values().flat_map(|i| i.as_object().unwrap().values()).flat_map(|o| o["responses"].as_object().into_iter().flatten()).flat_map(|(_, r)| r["content"].as_object().into_iter().flatten().map(|(t, _)| t.as_str())).collect();
        let mut global_headers = Vec::new();
        global_headers.extend(bearer.then(|| "authorization".to_string()));
        global_headers.extend((media_types.len() == 1).then(|| "accept".to_string()));
        Description { methods, headers, global_query: vec![], global_headers, other: vec![] }
    }

    /// The index of the method `request` calls, if the description has one.
    fn method_of(&self, request: &RecordedRequest) -> Option<usize> {
        self.methods.iter().position(|(method, template, _)| *method == request.method && fits(template, &request.path))
    }

    /// Why the description does not define `request`, if it does not.
    fn refuses(&self, request: &RecordedRequest) -> Option<String> {
        if self.other.iter().any(|(method, template)| *method == request.method && fits(template, &request.path)) {
            return None;
        }
        let Some(index) = self.method_of(request) else {
            return Some(format!("{} {}: no such method", request.method, request.path));
        };
        let query = &self.methods[index].2;
        let unknown: Vec<&String> = request.query.iter().filter(|q| !query.contains(q) && !self.global_query.contains(q)).collect();
        if !unknown.is_empty() {
            return Some(format!("{} {}: query parameters {unknown:?} are not documented", request.method, request.path));
        }
        let missing: Vec<&String> = self.headers[index].iter().chain(&self.global_headers).filter(|h| !request.headers.contains(h)).collect();
        (!missing.is_empty()).then(|| format!("{} {}: required headers {missing:?} are missing", request.method, request.path))
    }
}

/// A path template's segments (`{name}` stands for any one segment).
fn segments(template: &str) -> Vec<String> {
    template.trim_start_matches('/').split('/').map(String::from).collect()
}

/// Whether `path` is an instance of the template.
fn fits(template: &[String], path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    template.len() == segments.len() && template.iter().zip(&segments).all(|(t, s)| (t.starts_with('{') && t.ends_with('}') && !s.is_empty()) || t == s)
}

/// Every request the adapter sends in a recall (listing all users, a group, named users,
/// exclusions, snapshots, revocations, re-enrollment checks, a deadline's disable) is a method
/// the provider's published API description defines, with query parameters it documents.
async fn requests_are_documented(kind: &str) {
    // Users hold every kind of factor, so every kind's deletion is sent.
    let target = start_target(kind, &Seed { factors: SECOND_FACTORS.to_vec(), ..seed(30) }).await;
    let mut backend = target.backend(fast());
    // Keycloak is real: a proxy in front of it keeps what the adapter sends.
    let proxy = match &mut backend.spec.provider {
        ProviderBlock::Keycloak(keycloak) => {
            let proxy = RecordingProxy::start(&keycloak.url).await;
            keycloak.url = proxy.url.clone();
            Some(proxy)
        }
        _ => None,
    };
    let bench = Bench::on(target, &backend).await;
    if proxy.is_none() {
        bench.target.record_requests();
    }
    let username = |i: u32| bench.target.username(i);
    let cutoff = jiff::Timestamp::now();
    clock_moves_past(cutoff).await;
    bench.target.enroll(&username(3)).await;
    bench.provider.check().await.unwrap_or_else(|e| panic!("{kind}: check: {e}"));
    let mut cursor = None;
    loop {
        let page = bench.provider.list_users(cursor.as_deref()).await.unwrap();
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut job = bench.job(ScopeSelector::listed(vec!["staff".into()], vec![username(1), username(3)]), cutoff);
    job.exclude_groups = vec!["admins".into()];
    job.exclude_users = vec![username(5)];
    let counts = bench.revoke(&job).await;
    assert!(counts.invalidated > 10, "{kind}: {counts:?}");
    let (_stop, stop_rx) = watch::channel(false);
    bench.runner(SharedProgress::default(), stop_rx).check_re_enrollment(&job).await.unwrap();
    // A deadline's disable and a cleared quarantine's enable; where a code or link goes; an
    // approved bypass issued, checked and withdrawn where the operator holds its code.
    let user = bench.provider.find_user(&username(9)).await.unwrap().remove(0);
    bench.provider.address(&user).await.unwrap_or_else(|e| panic!("{kind}: address: {e}"));
    bench.provider.disable_user(&user).await.unwrap_or_else(|e| panic!("{kind}: disable: {e}"));
    bench.provider.enable_user(&user).await.unwrap_or_else(|e| panic!("{kind}: enable: {e}"));
    if bench.provider.capabilities().bypass.is_some_and(|b| !b.sent_by_provider) {
        let issued_at = jiff::Timestamp::now();
        let issued = bench.provider.issue_bypass(&user, Duration::from_secs(30 * 60)).await.unwrap_or_else(|e| panic!("{kind}: issue a bypass: {e}"));
        bench.provider.bypass_used(&user, issued_at, issued.reference.as_deref()).await.unwrap_or_else(|e| panic!("{kind}: bypass used? {e}"));
        bench.provider.revoke_bypass(&user, issued_at, issued.reference.as_deref()).await.unwrap_or_else(|e| panic!("{kind}: withdraw a bypass: {e}"));
    }

    let recorded = match &proxy {
        Some(proxy) => proxy.recorded(),
        None => bench.target.recorded_requests(),
    };
    assert!(recorded.len() > 30, "{kind}: too few requests recorded to prove anything: {recorded:?}");
    let description = bench.target.description();
    let refused: Vec<String> = recorded.iter().filter_map(|r| description.refuses(r)).collect();
    assert!(refused.is_empty(), "{kind}: requests the published description does not define:\n{}", refused.join("\n"));
    // The check can fail: an unknown parameter or path is refused.
    let request = |method: &str, path: &str, query: &[&str]| RecordedRequest { method: method.into(), path: path.into(), query: query.iter().map(|q| q.to_string()).collect(), headers: vec![] };
    let documented = recorded.iter().find(|r| description.method_of(r).is_some()).unwrap();
    assert!(description.refuses(&RecordedRequest { query: vec!["notDocumented".into()], ..documented.clone() }).is_some());
    assert!(description.refuses(&request("GET", "/no/such/path", &[])).is_some());
    if !description.global_headers.is_empty() {
        assert!(description.refuses(&RecordedRequest { headers: vec![], ..documented.clone() }).is_some(), "{kind}: a request without the required headers is refused");
    }
    // Most of what a recall does was exercised.
    let used: HashSet<usize> = recorded.iter().filter_map(|r| description.method_of(r)).collect();
    let unused: Vec<String> = description.methods.iter().enumerate().filter(|(i, _)| !used.contains(i)).map(|(_, (method, template, _))| format!("{method} /{}", template.join("/"))).collect();
    assert!(used.len() * 4 >= description.methods.len() * 3, "{kind}: only {} of the {} described methods were exercised; not: {unused:?}", used.len(), description.methods.len());
}

/// The counts by kind, keyed as the simulators' census keys them.
fn by_name(counts: &RecallCounts) -> BTreeMap<String, i64> {
    counts.factors_revoked.iter().map(|(k, n)| (k.as_str().to_string(), *n)).collect()
}

/// What the provider lost, by kind, between two censuses.
fn lost_by_kind(before: &Census, after: &Census) -> BTreeMap<String, i64> {
    before
        .factors_before_cutoff
        .iter()
        .map(|(kind, n)| (kind.clone(), *n as i64 - *after.factors_before_cutoff.get(kind).unwrap_or(&0) as i64))
        .filter(|(_, n)| *n != 0)
        .collect()
}

/// Scope catalogue: groups and names together are one union, each user once (a user in two
/// groups, named twice, in two letter cases); a user and a group that match nobody are named
/// in progress and audit trail, not targeted; counts equal what the provider lost.
async fn scope_union(kind: &str) {
    let bench = Bench::start(kind, &seed(60), fast()).await;
    let target = &bench.target;
    let cutoff = jiff::Timestamp::now();
    let names = vec![target.username(1).to_uppercase(), target.username(1), target.username(3), target.username(4), "ghost-0000@example.com".into()];
    let job = bench.job(ScopeSelector::listed(vec!["staff".into(), "admins".into(), "no-such-group".into()], names), cutoff);
    let mut expected = target.group_members("staff").await;
    expected.extend(target.group_members("admins").await);
    expected.extend([target.username(1), target.username(3)]);
    let before = target.census(cutoff).await;
    let progress = SharedProgress::default();
    let (_stop, stop_rx) = watch::channel(false);
    let runner = bench.runner(progress.clone(), stop_rx);
    assert_eq!(runner.revoke(&job).await.unwrap(), RunEnd::Finished);
    bench.settle(&runner, &job).await;
    let counts = progress.lock().unwrap().counts.clone();
    let after = target.census(cutoff).await;

    let n = expected.len() as i64;
    assert_eq!((counts.targeted, counts.invalidated, counts.failed, counts.names_not_found), (n, n, 0, 2), "{kind}: {counts:?}");
    assert_eq!(by_name(&counts), lost_by_kind(&before, &after), "{kind}: counts differ from what the provider lost");
    for name in [target.username(1), target.username(5)] {
        let user = target.user(&name).await;
        let old = user.factors.iter().any(|f| f.created < cutoff);
        assert_eq!(old, !expected.contains(&name), "{kind}: {name} in scope: {}, still holds old factors: {old}", expected.contains(&name));
    }
    let unresolved: Vec<String> = progress.lock().unwrap().unresolved.iter().cloned().collect();
    assert_eq!(unresolved, ["group no-such-group", "user ghost-0000@example.com"], "{kind}");
    let audited = bench.audit_events().into_iter().filter(|e| e["action"] == "scope.unresolved").count();
    assert_eq!(audited, 2, "{kind}: every name that matched nobody is audited");
    let ids = bench.revoked_factor_ids();
    assert_eq!(ids.len(), ids.iter().collect::<HashSet<_>>().len(), "{kind}: a factor was revoked twice");
}

/// Scope catalogue: excluding a group spares the members of the groups nested in it (the
/// break-glass accounts) where the provider's groups nest, and a user excluded by a name in
/// other letters; each rule's spares are counted.
async fn nested_exclusions(kind: &str) {
    let bench = Bench::start(kind, &seed(120), fast()).await;
    let target = &bench.target;
    assert_eq!(bench.provider.capabilities().nested_groups, target.groups_nest(), "{kind}: capabilities say whether groups nest");
    let cutoff = jiff::Timestamp::now();
    let mut job = bench.job(ScopeSelector::AllUsers, cutoff);
    job.exclude_groups = vec!["admins".into()];
    job.exclude_users = vec![target.username(2).to_uppercase()];
    let admins = target.group_members("admins").await;
    let breakglass: Vec<String> = (7..120).step_by(50).map(|i| target.username(i)).collect();
    assert_eq!(breakglass.iter().all(|b| admins.contains(b)), target.groups_nest(), "{kind}: the seed nests breakglass two levels below admins");
    let mut spared = admins.clone();
    spared.insert(target.username(2));
    let mut before = Vec::new();
    for name in &spared {
        before.push(target.user(name).await);
    }
    let counts = bench.revoke(&job).await;

    for user in &before {
        assert_eq!(&target.user(&user.username).await, user, "{kind}: {} is excluded and must be untouched", user.username);
    }
    if !target.groups_nest() {
        let user = target.user(&breakglass[0]).await;
        assert!(user.factors.iter().all(|f| f.created >= cutoff), "{kind}: flat groups: {} is not in admins and is recalled", user.username);
    }
    assert_eq!((counts.excluded, counts.failed), (spared.len() as i64, 0), "{kind}: {counts:?}");
    assert_eq!(counts.invalidated + counts.excluded, counts.targeted, "{kind}: {counts:?}");
    let by_rule: Vec<(&str, i64)> = counts.excluded_by.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(by_rule, [("exclude.groups: admins", admins.len() as i64), ("exclude.users", 1)], "{kind}");
}

/// Scope catalogue: an exclusion group that does not exist stops the recall before anyone is touched.
async fn missing_exclusion_group(kind: &str) {
    let bench = Bench::start(kind, &seed(20), fast()).await;
    let cutoff = jiff::Timestamp::now();
    let before = bench.target.census(cutoff).await;
    let mut job = bench.job(ScopeSelector::AllUsers, cutoff);
    job.exclude_groups = vec!["admins".into(), "no-such-group".into()];
    let (_stop, stop_rx) = watch::channel(false);
    let error = bench.runner(SharedProgress::default(), stop_rx).revoke(&job).await.unwrap_err();
    assert!(matches!(error, mfa_recall::Error::ExclusionGroupNotFound(_)), "{kind}: {error:?}");
    assert!(error.to_string().contains("no-such-group"), "{kind}: the group is named: {error}");
    assert_eq!(bench.target.census(cutoff).await, before, "{kind}: nothing may change");
}

/// Scope catalogue: one factor kind asked for alone takes that kind only; where the provider
/// cannot revoke it apart from others, the recall is refused before it starts instead.
async fn one_kind_alone(kind: &str) {
    let bench = Bench::start(kind, &seed(30), fast()).await;
    let cutoff = jiff::Timestamp::now();
    if let Some(why) = bench.provider.capabilities().refused_kinds(&[api::FactorKind::Totp]) {
        assert_eq!(kind, "google", "only Google cannot revoke a TOTP app alone: {why}");
        assert!(why.contains("totp") && why.contains("twoStepVerification"), "{kind}: the message says what goes together: {why}");
        return;
    }
    let before = bench.target.census(cutoff).await;
    let mut job = bench.job(ScopeSelector::AllUsers, cutoff);
    job.kinds = vec![api::FactorKind::Totp];
    let counts = bench.revoke(&job).await;
    let lost = lost_by_kind(&before, &bench.target.census(cutoff).await);
    assert_eq!(lost.keys().collect::<Vec<_>>(), ["totp"], "{kind}: only TOTP factors go");
    assert_eq!(by_name(&counts), lost, "{kind}: counts equal what the provider lost");
    // Entra asks a user to register only when no method is left: every user who lost a TOTP and
    // keeps another method is at risk, and the ledger says what they keep. Elsewhere nobody is.
    let mut at_risk = Vec::new();
    for index in bench.ledger.segments(kind).await.unwrap() {
        for record in bench.ledger.read(kind, index).await.unwrap().users {
            if let Some(why) = record.snapshot.and_then(|s| s.at_risk) {
                at_risk.push(why);
            }
        }
    }
    assert_eq!(counts.at_risk, at_risk.len() as i64, "{kind}: counted as the ledger has them");
    if kind == "entra" {
        assert!(counts.at_risk > 0 && counts.at_risk <= counts.invalidated, "{kind}: {counts:?}");
        assert!(at_risk.iter().all(|w| w.starts_with("keeps ") && w.contains("webauthn") && !w.contains("totp")), "{kind}: {at_risk:?}");
    } else {
        assert_eq!(counts.at_risk, 0, "{kind}: {at_risk:?}");
    }
}

/// Wrong credentials: the check says so and names the Secret, never a secret value.
async fn wrong_credentials(kind: &str) {
    let target = start_target(kind, &seed(1)).await;
    let (secret, wrong) = target.secret(true);
    let (_, right) = target.secret(false);
    let error = match backends::connect(&target.backend(fast()), Some(&secret), &Default::default()) {
        Ok(provider) => provider.check().await.expect_err("wrong credentials must fail the check"),
        Err(e) => e,
    };
    assert!(error.kind() == ErrorKind::Auth, "{kind}: expected an authentication error, got {error:?}");
    let message = error.to_string();
    assert!(message.contains(&format!("conformance/{kind}-credentials")), "{kind}: the Secret is named: {message}");
    for value in wrong.values().chain(right.values()).filter(|v| !v.starts_with(testkit::OPERATOR_CLIENT)) {
        for line in value.lines().filter(|l| l.len() >= 12) {
            assert!(!message.contains(line), "{kind}: the error leaks a credential");
        }
    }
}

/// Where the window's users are, by address (the simulators place addresses by prefix, as
/// `idp_sim::place_of` lists): home in San Francisco, abroad in Lagos, and an anonymiser.
const HOME: &str = "198.51.100.20";
const ABROAD: &str = "100.64.7.7";
const ANONYMISER: &str = "198.19.0.9";

/// The re-enrollment window watched from the provider's own log: six recalled users re-enroll
/// after signing in from home before the recall; one from home (nothing to flag), one from
/// abroad, one through an anonymiser, one after reporting fraud, one by an administrator, one
/// after denying pushes. Every re-enrollment is counted from the stream, each flagged with
/// exactly the rules its provider's log can show, and a second check counts nothing twice.
async fn window_watched(kind: &str) {
    let bench = Bench::start(kind, &seed(30), fast()).await;
    let caps = bench.provider.capabilities();
    assert!(caps.event_stream, "{kind}: the adapter reads no event stream");
    let names = bench.target.window_users();
    for name in &names {
        bench.target.act(name, Activity::new(Act::SignIn, HOME)).await.unwrap_or_else(|why| panic!("{kind}: {name} signs in: {why}"));
    }
    let cutoff = jiff::Timestamp::now();
    clock_moves_past(cutoff).await;
    let thresholds = Thresholds { push_denials: 3, ..Thresholds::default() };
    let job = RecallJob { window: WindowSettings { started: Some(cutoff), thresholds, baseline: jiff::SignedDuration::from_hours(1), sweep_per_check: 0, ..Default::default() }, ..bench.job(ScopeSelector::AllUsers, cutoff) };
    let counts = bench.revoke(&job).await;
    assert_eq!(counts.failed, 0, "{kind}: {counts:?}");

    // What each user does, and the rules it should trip where the provider's log shows it.
    let enroll = |ip: &str| Activity::new(Act::Enroll { factor: FactorKind::Totp }, ip);
    let support = window_support(kind);
    let mut expected: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    let mut act = async |name: &String, activity: Activity, shown: bool, rules: &[Rule]| {
        match bench.target.act(name, activity.clone()).await {
            Ok(_) => assert!(shown, "{kind}: the provider's log was expected to have no entry for {:?}", activity.what),
            Err(why) => {
                assert!(!shown, "{kind}: {name}: {:?}: {why}", activity.what);
                return;
            }
        }
        expected.entry(name.clone()).or_default().extend(rules);
    };
    act(&names[0], enroll(HOME), true, &[]).await;
    let travel: &[Rule] = if support.geo { &[Rule::NewNetwork, Rule::ImpossibleTravel] } else { &[Rule::NewNetwork] };
    act(&names[1], enroll(ABROAD), true, travel).await;
    let mut through_proxy = vec![Rule::NewNetwork];
    through_proxy.extend(support.proxy.then_some(Rule::AnonymisingProxy));
    through_proxy.extend(support.geo.then_some(Rule::ImpossibleTravel));
    act(&names[2], enroll(ANONYMISER), true, &through_proxy).await;
    act(&names[3], Activity::new(Act::FraudReported, HOME), support.fraud, &[Rule::FraudReported]).await;
    act(&names[3], enroll(HOME), true, &[]).await;
    act(&names[4], Activity { by_admin: Some("helpdesk@example.com".into()), ..enroll(HOME) }, support.by_admin, &[Rule::EnrolledByOther]).await;
    for _ in 0..3 {
        act(&names[5], Activity::new(Act::PushDenied, HOME), support.push_denied, &[Rule::PushFatigue]).await;
    }
    if support.push_denied {
        act(&names[5], enroll(HOME), true, &[]).await;
    }

    let check = async || {
        let (_stop, stop_rx) = watch::channel(false);
        bench.runner(SharedProgress::default(), stop_rx).check_re_enrollment(&job).await.unwrap_or_else(|e| panic!("{kind}: check failed: {e}"));
        let segment = bench.ledger.read(kind, 0).await.unwrap();
        let mut seen: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
        for record in segment.users.iter().filter(|r| r.re_enrolled.is_some()) {
            let mut rules: Vec<Rule> = record.flags.iter().map(|f| f.rule).collect();
            rules.sort();
            seen.insert(record.user.username.clone(), rules);
        }
        seen
    };
    let want: BTreeMap<String, Vec<Rule>> = expected
        .into_iter()
        .map(|(name, mut rules)| {
            rules.sort();
            rules.dedup();
            (name, rules)
        })
        .collect();
    // The log may show an entry late (Duo's by minutes, Google's by seconds): wait for every enrollment.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(90);
    let first = loop {
        let seen = check().await;
        if seen.len() >= want.len() || tokio::time::Instant::now() > give_up {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(first, want, "{kind}: re-enrolled users and their flags");
    let flags: usize = want.values().map(Vec::len).sum();
    let again = check().await;
    assert_eq!(again, want, "{kind}: a second check changed the flags");
    let audited = bench.audit_events().into_iter().filter(|e| e["action"] == "anomaly.flagged").count();
    assert_eq!(audited, flags, "{kind}: one audit line per flag, none twice");
}

/// The comparing rules and the provider's own risk verdict: three users enroll from one office
/// address within minutes (their usual place, so only the burst shows: the third is flagged), two
/// enroll the same authenticator device (the second is flagged, where the log names devices), and
/// one enrolls after a sign-in the provider judged risky (where its log says so).
async fn window_comparing_rules(kind: &str) {
    let bench = Bench::start(kind, &seed(30), fast()).await;
    let names = bench.target.window_users();
    let support = window_support(kind);
    const OFFICE: &str = "192.0.2.50";
    let home = |i: usize| format!("198.51.100.{}", 60 + i);
    for (i, name) in names.iter().enumerate() {
        let from = if i < 3 { OFFICE.to_string() } else { home(i) };
        bench.target.act(name, Activity::new(Act::SignIn, &from)).await.unwrap_or_else(|why| panic!("{kind}: {name} signs in: {why}"));
    }
    let cutoff = jiff::Timestamp::now();
    clock_moves_past(cutoff).await;
    let thresholds = Thresholds { burst_enrollments: 3, ..Thresholds::default() };
    let window = WindowSettings { started: Some(cutoff), thresholds, baseline: jiff::SignedDuration::from_hours(1), sweep_per_check: 0, ..Default::default() };
    let job = RecallJob { window, ..bench.job(ScopeSelector::AllUsers, cutoff) };
    assert_eq!(bench.revoke(&job).await.failed, 0);

    let mut want: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    for (i, name) in names[..3].iter().enumerate() {
        bench.target.act(name, Activity::new(Act::Enroll { factor: FactorKind::Totp }, OFFICE)).await.unwrap();
        want.insert(name.clone(), if i == 2 { vec![Rule::EnrollmentBurst] } else { vec![] });
    }
    for (i, name) in names[3..5].iter().enumerate() {
        // A push device where the log names devices; elsewhere the one kind every target enrolls.
        let factor = if support.device { FactorKind::Push } else { FactorKind::Totp };
        let shared = Activity { device: Some("device-held-by-one-attacker".into()), ..Activity::new(Act::Enroll { factor }, &home(3 + i)) };
        bench.target.act(name, shared).await.unwrap_or_else(|why| panic!("{kind}: {name} enrolls a push device: {why}"));
        want.insert(name.clone(), if i == 1 && support.device { vec![Rule::SharedDevice] } else { vec![] });
    }
    // The first home user, enrolled, then gives the account a new recovery phone.
    let weakened = bench.target.act(&names[3], Activity { device: Some("+1 555 0100".into()), ..Activity::new(Act::SecondStepWeakened, &home(3)) }).await;
    assert_eq!(weakened.is_ok(), support.weakened, "{kind}: a weakened second step in the log: {weakened:?}");
    if support.weakened {
        want.insert(names[3].clone(), vec![Rule::SecondStepWeakened]);
    }
    let risky = bench.target.act(&names[5], Activity::new(Act::RiskySignIn, &home(5))).await;
    assert_eq!(risky.is_ok(), support.risky, "{kind}: a risky sign-in in the log: {risky:?}");
    bench.target.act(&names[5], Activity::new(Act::Enroll { factor: FactorKind::Totp }, &home(5))).await.unwrap();
    want.insert(names[5].clone(), if support.risky { vec![Rule::RiskySignIn] } else { vec![] });
    // A helpdesk issues the first office user a bypass (Entra's temporary access pass in the
    // directory audit log); where the stream cannot show one, nothing may be flagged for it.
    let bypass = bench.target.act(&names[0], Activity { by_admin: Some("helpdesk@example.com".into()), ..Activity::new(Act::BypassIssued, OFFICE) }).await;
    if support.bypass {
        bypass.unwrap_or_else(|why| panic!("{kind}: a bypass issued: {why}"));
        want.insert(names[0].clone(), vec![Rule::ForeignBypass]);
    }

    let give_up = tokio::time::Instant::now() + Duration::from_secs(90);
    let seen = loop {
        let (_stop, stop_rx) = watch::channel(false);
        bench.runner(SharedProgress::default(), stop_rx).check_re_enrollment(&job).await.unwrap();
        let segment = bench.ledger.read(kind, 0).await.unwrap();
        let seen: BTreeMap<String, Vec<Rule>> = segment
            .users
            .iter()
            .filter(|r| r.re_enrolled.is_some() || !r.flags.is_empty())
            .map(|r| {
                let mut rules: Vec<Rule> = r.flags.iter().map(|f| f.rule).collect();
                rules.sort();
                (r.user.username.clone(), rules)
            })
            .collect();
        if seen.len() >= want.len() || tokio::time::Instant::now() > give_up {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(seen, want, "{kind}: re-enrolled users and their flags");
}

/// Quarantine: a user flagged in the window loses every factor (the new one too), their sessions
/// and the use of their account; a user not flagged keeps the factor enrolled after the cutoff.
/// A person's clearance enables the account again, audited with their name, once; the user then
/// enrolls anew and is counted.
async fn window_quarantine(kind: &str) {
    let bench = Bench::start(kind, &seed(30), fast()).await;
    let names = bench.target.window_users();
    let (suspect, fine) = (&names[0], &names[1]);
    for name in [suspect, fine] {
        bench.target.act(name, Activity::new(Act::SignIn, HOME)).await.unwrap_or_else(|why| panic!("{kind}: {name} signs in: {why}"));
    }
    let cutoff = jiff::Timestamp::now();
    clock_moves_past(cutoff).await;
    let window = WindowSettings { started: Some(cutoff), baseline: jiff::SignedDuration::from_hours(1), sweep_per_check: 0, action: AnomalyAction::Quarantine, ..Default::default() };
    let mut job = RecallJob { window, ..bench.job(ScopeSelector::AllUsers, cutoff) };
    let counts = bench.revoke(&job).await;
    assert_eq!(counts.failed, 0, "{kind}: {counts:?}");
    let enroll = |ip: &str| Activity::new(Act::Enroll { factor: FactorKind::Totp }, ip);
    let kept = bench.target.act(fine, enroll(HOME)).await.unwrap().expect("a factor id");
    bench.target.act(suspect, enroll(ABROAD)).await.unwrap();

    // The live counts, moved by each check, must equal the counts rebuilt from the ledger (as a
    // restarted operator rebuilds them).
    let (_stop, stop_rx) = watch::channel(false);
    let live = SharedProgress::default();
    bench.runner(live.clone(), stop_rx.clone()).restore(&job).await.unwrap();
    let check = async |job: &RecallJob| {
        bench.runner(live.clone(), stop_rx.clone()).check_re_enrollment(job).await.unwrap_or_else(|e| panic!("{kind}: check failed: {e}"));
        let rebuilt = SharedProgress::default();
        bench.runner(rebuilt.clone(), stop_rx.clone()).restore(job).await.unwrap();
        assert_eq!(live.lock().unwrap().counts, rebuilt.lock().unwrap().counts, "{kind}: the live counts drifted from the ledger's");
        let segment = bench.ledger.read(kind, 0).await.unwrap();
        let record = |name: &String| segment.users.iter().find(|r| &r.user.username == name).unwrap().clone();
        (record(suspect), record(fine))
    };
    let give_up = tokio::time::Instant::now() + Duration::from_secs(90);
    let (quarantined, not_flagged) = loop {
        let (s, f) = check(&job).await;
        if (s.quarantine.is_some() && f.re_enrolled.is_some()) || tokio::time::Instant::now() > give_up {
            break (s, f);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let quarantine = quarantined.quarantine.clone().unwrap_or_else(|| panic!("{kind}: {suspect} was not quarantined: {quarantined:?}"));
    assert!(quarantine.holds() && quarantine.incomplete.is_empty(), "{kind}: {quarantine:?}");
    assert!(quarantine.rules.contains(&Rule::NewNetwork), "{kind}: {quarantine:?}");
    assert!(quarantined.re_enrolled.is_none(), "{kind}: a quarantined enrollment is undone");
    let held = bench.target.user(suspect).await;
    assert!(!held.active && held.factors.is_empty() && held.sessions == 0, "{kind}: {suspect} keeps something after quarantine: {held:?}");
    let untouched = bench.target.user(fine).await;
    assert!(untouched.active && untouched.factors.iter().any(|f| f.id == kept), "{kind}: {fine} lost the factor enrolled after the cutoff: {untouched:?}");
    assert!(not_flagged.quarantine.is_none() && not_flagged.re_enrolled.is_some());
    let audit = bench.audit_events();
    assert_eq!(audit.iter().filter(|e| e["action"] == "user.quarantine" && e["user"] == suspect.as_str()).count(), 1, "{kind}: one quarantine line");

    // alice clears it: the account is enabled, once, and the trail names her.
    job.window.clearances.push(api::Clearance { user: suspect.to_uppercase(), cleared_by: "alice".into(), note: "confirmed with the user by phone".into() });
    let (cleared, _) = check(&job).await;
    let quarantine = cleared.quarantine.clone().unwrap();
    assert_eq!((quarantine.holds(), quarantine.cleared_by.as_deref()), (false, Some("alice")), "{kind}: {quarantine:?}");
    assert!(bench.target.user(suspect).await.active, "{kind}: {suspect} is enabled again once cleared");
    check(&job).await;
    let clears: Vec<Value> = bench.audit_events().into_iter().filter(|e| e["action"] == "user.clear").collect();
    assert_eq!(clears.len(), 1, "{kind}: one clearance, acted on once: {clears:?}");
    assert!(clears[0]["detail"].as_str().unwrap().contains("cleared by alice"), "{kind}: {clears:?}");

    // The user enrolls anew from home, and counts as re-enrolled.
    bench.target.act(suspect, enroll(HOME)).await.unwrap();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (s, _) = check(&job).await;
        if let Some(enrollment) = &s.re_enrolled {
            let quarantine = s.quarantine.clone().unwrap();
            assert!(!quarantine.holds(), "{kind}: not quarantined again");
            assert!(enrollment.at >= quarantine.at, "{kind}: the enrollment counted is the one after the quarantine: {enrollment:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < give_up, "{kind}: the enrollment after the clearance was not counted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Notice of a new factor: a recalled user who enrolls is told by mail (a real mail server, read
/// back from its mailbox) and by a signed webhook, of what was added, when, from where, and how to
/// say it was not them; each delivery is audited once.
async fn window_notices(kind: &str) {
    let bench = Bench::start(kind, &seed(30), fast()).await;
    let name = bench.target.window_users()[2].clone();
    let mail = support::notices::MailServer::from_env();
    let receiver = support::notices::WebhookReceiver::start().await;
    let key = mfa_recall::keys::HmacKey::new(b"the conformance webhook key, 32+ bytes", "the webhook key").unwrap();
    // Marks this run's mail: the mail server outlives a run (and retries what an earlier run left
    // queued), and simulated users' addresses repeat across runs and providers.
    let run = support::unique(&format!("notices-{kind}"));
    let (host, port) = mail.server.rsplit_once(':').unwrap();
    let notices = mfa_recall::notify::Notices {
        smtp: Some(mfa_recall::notify::SmtpSink { host: host.into(), port: port.parse().unwrap(), security: api::SmtpSecurity::None, from: "Security <security@corp.example>".parse().unwrap(), credentials: None }),
        webhook: Some(mfa_recall::notify::WebhookSink { url: receiver.url.parse().unwrap(), key: key.clone(), http: mfa_recall::notify::webhook_client() }),
        not_me: Some(mfa_recall::notify::NotMeLinks { base: format!("https://mfa-recall.corp.example/{run}/v1/not-me").parse().unwrap(), key: key.clone(), recall_uid: "uid-of-the-recall".into() }),
    };
    let cutoff = jiff::Timestamp::now();
    clock_moves_past(cutoff).await;
    let window = WindowSettings { started: Some(cutoff), sweep_per_check: 0, ..Default::default() };
    let job = RecallJob { window, notices: Some(Arc::new(notices)), ..bench.job(ScopeSelector::listed(vec![], vec![name.clone()]), cutoff) };
    let counts = bench.revoke(&job).await;
    assert_eq!((counts.invalidated, counts.failed), (1, 0), "{kind}: {counts:?}");
    let address = bench.provider.address(&bench.provider.find_user(&name).await.unwrap().remove(0)).await.unwrap().expect("an address on file");
    let ours = || -> Vec<String> { mail.messages(&address).iter().map(|m| support::notices::quoted_printable(m)).filter(|m| m.contains(&run)).collect() };
    let earlier = ours().len();
    assert_eq!(earlier, 0);
    bench.target.act(&name, Activity::new(Act::Enroll { factor: FactorKind::Totp }, ABROAD)).await.unwrap();

    let give_up = tokio::time::Instant::now() + Duration::from_secs(90);
    while ours().len() == earlier || receiver.deliveries.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < give_up, "{kind}: no notice by mail or webhook; the trail: {:?}", bench.audit_events().iter().rev().take(8).map(|e| format!("{} {} {}", e["action"], e["outcome"], e["detail"])).collect::<Vec<_>>());
        let (_stop, stop_rx) = watch::channel(false);
        bench.runner(SharedProgress::default(), stop_rx).check_re_enrollment(&job).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let messages = ours();
    assert_eq!(messages.len(), earlier + 1, "{kind}: one mail");
    let delivery = receiver.deliveries.lock().unwrap()[0].clone();
    let timestamp = delivery.header("x-mfa-recall-timestamp").expect("a timestamp");
    let signature = delivery.header("x-mfa-recall-signature").expect("a signature");
    assert_eq!(signature, format!("sha256={}", mfa_recall::notify::webhook_signature(&key, timestamp, &delivery.body)), "{kind}: the signature verifies");
    let body: Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!((body["type"].as_str(), body["user"].as_str()), (Some("factor.enrolled"), Some(name.as_str())), "{kind}: {body}");
    // The kind as the provider names what a TOTP app enrolls (Duo calls it a token, Google 2-Step Verification).
    let factor_kind = body["factorKind"].as_str().expect("a factor kind");
    let message = messages.last().unwrap();
    assert!(message.contains("Subject: A new sign-in factor was added to your account"), "{kind}: {message}");
    for part in [format!("({factor_kind})"), name.clone(), format!("https://mfa-recall.corp.example/{run}/v1/not-me?recall="), "100.64.7.7".into()] {
        assert!(message.contains(&part), "{kind}: the mail lacks {part}: {message}");
    }
    assert!(body["address"].as_str().unwrap().eq_ignore_ascii_case(&address) && body["notMeUrl"].as_str().unwrap().contains("token="), "{kind}: {body}");
    // A later check sends nothing again; each delivery is audited once.
    let (_stop, stop_rx) = watch::channel(false);
    bench.runner(SharedProgress::default(), stop_rx).check_re_enrollment(&job).await.unwrap();
    assert_eq!((ours().len(), receiver.deliveries.lock().unwrap().len()), (earlier + 1, 1), "{kind}: told twice");
    let sent: Vec<String> = bench.audit_events().into_iter().filter(|e| e["action"] == "notice.send" && e["outcome"] == "done").map(|e| e["detail"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(sent.len(), 2, "{kind}: {sent:?}");
    assert!(sent.iter().any(|d| d.starts_with("smtp:")) && sent.iter().any(|d| d.starts_with("webhook:")), "{kind}: {sent:?}");
}

/// A temporary bypass from the provider's own mechanism, as an approved MfaBypass issues it: good
/// for the lifetime asked and once where the provider allows, gone at the provider once withdrawn,
/// every request in the provider's published description. A provider without one says so in its
/// capabilities, and issuing fails without touching anything.
async fn bypass_issued_used_and_withdrawn(kind: &str) {
    let bench = Bench::start(kind, &seed(30), fast()).await;
    bench.target.record_requests();
    let name = bench.target.window_users()[0].clone();
    let user = bench.provider.find_user(&name).await.unwrap().remove(0);
    let capabilities = bench.provider.capabilities();
    let Some(support) = capabilities.bypass.clone() else {
        assert!(matches!(kind, "okta" | "auth0"), "{kind}: documents a bypass, but the adapter offers none");
        assert!(capabilities.limitations.iter().any(|l| l.starts_with("bypass:")), "{kind}: says why there is none: {:?}", capabilities.limitations);
        let before = bench.target.user(&name).await;
        let error = bench.provider.issue_bypass(&user, Duration::from_secs(1800)).await.err().expect("no bypass to issue");
        assert_eq!(error.kind(), ErrorKind::Config, "{kind}: {error}");
        assert_eq!(bench.target.user(&name).await, before, "{kind}: nothing changed");
        return;
    };
    assert!(!support.sent_by_provider, "{kind}: the simulators' providers return the code");
    // Where the code goes: an address the user reads without the account it unlocks.
    let address = bench.provider.bypass_address(&user).await.unwrap().expect("an address for the code");
    match kind {
        "entra" | "google" => assert!(address.ends_with("@home.example") && !address.eq_ignore_ascii_case(&name), "{kind}: the alternate address, not the account's own mailbox: {address}"),
        _ => assert!(address.eq_ignore_ascii_case(&name), "{kind}: {address}"),
    }
    let lifetime = Duration::from_secs(30 * 60);
    let before = jiff::Timestamp::now();
    let issued = bench.provider.issue_bypass(&user, lifetime).await.unwrap_or_else(|e| panic!("{kind}: issue: {e}"));
    let code = issued.secret.as_ref().expect("the code, shown once").expose().to_string();
    let expected = before + jiff::SignedDuration::from_mins(30);
    assert!(issued.expires_at.duration_since(expected).abs() < jiff::SignedDuration::from_secs(60), "{kind}: good for the lifetime asked: {} vs {expected}", issued.expires_at);
    let target = &bench.target;
    let used = async || bench.provider.bypass_used(&user, before, issued.reference.as_deref()).await.unwrap_or_else(|e| panic!("{kind}: used? {e}"));
    assert_eq!(used().await, Some(false), "{kind}: not used yet");
    target.sign_in_with_bypass(&name, &code).unwrap_or_else(|e| panic!("{kind}: the user signs in with it: {e}"));
    assert!(target.sign_in_with_bypass(&name, &code).is_err(), "{kind}: good once");
    assert_eq!(used().await, Some(true), "{kind}: the provider tells it was used");
    // What is left of it goes too (Google: the other codes of the set).
    bench.provider.revoke_bypass(&user, before, issued.reference.as_deref()).await.unwrap_or_else(|e| panic!("{kind}: withdraw after use: {e}"));
    if kind == "google" {
        assert!(bench.provider.holds_factor_since(&user, before).await.unwrap().is_none());
        let left = bench.sim().provider.user(&name).unwrap().factors.into_iter().filter(|f| f.kind == FactorKind::RecoveryCodes).count();
        assert_eq!(left, 0, "{kind}: the rest of the issued set is invalidated");
    }
    assert!(target.sign_in_with_bypass(&bench.target.username(2), &code).is_err(), "{kind}: good for its user only");

    // Issued again (a retry after a crash, say): only the new one works, and once withdrawn, none.
    let again = bench.provider.issue_bypass(&user, lifetime).await.unwrap();
    let second = again.secret.as_ref().unwrap().expose().to_string();
    bench.provider.revoke_bypass(&user, before, again.reference.as_deref()).await.unwrap_or_else(|e| panic!("{kind}: withdraw: {e}"));
    let refused = target.sign_in_with_bypass(&name, &second).err().unwrap_or_else(|| panic!("{kind}: a withdrawn bypass still lets the user in"));
    assert!(!refused.is_empty());
    bench.provider.revoke_bypass(&user, before, again.reference.as_deref()).await.unwrap_or_else(|e| panic!("{kind}: withdrawing twice: {e}"));
    // What the user holds is as before: a bypass is not a factor they enrolled.
    assert!(bench.provider.holds_factor_since(&user, before).await.unwrap().is_none(), "{kind}: a bypass counted as a re-enrollment");

    // A lifetime the provider refuses is refused, and nothing is left behind.
    if kind == "entra" {
        let error = bench.provider.issue_bypass(&user, Duration::from_secs(5 * 60)).await.err().expect("Graph takes 10 minutes or more");
        assert!(error.message().contains("lifetimeInMinutes"), "{kind}: {error}");
    }
    // One that ends by itself is refused after its end (Duo takes seconds; the others' shortest
    // lifetimes are minutes, and the operator withdraws theirs at the end).
    if kind == "duo" {
        let short = bench.provider.issue_bypass(&user, Duration::from_secs(2)).await.unwrap();
        // The simulator dates the code when it answers, after the adapter's issuing time: a
        // second past the expiry the adapter reports is past the simulator's too.
        clock_moves_past(short.expires_at + jiff::SignedDuration::from_secs(1)).await;
        let refused = target.sign_in_with_bypass(&name, short.secret.as_ref().unwrap().expose()).err().expect("an expired code is refused");
        assert!(refused.contains("expired"), "{kind}: {refused}");
    }
    let recorded = bench.target.recorded_requests();
    let description = bench.target.description();
    let undocumented: Vec<String> = recorded.iter().filter_map(|r| description.refuses(r)).collect();
    assert!(undocumented.is_empty(), "{kind}: requests the published description does not define:\n{}", undocumented.join("\n"));
}

/// Keycloak's bypass is its execute-actions email: Keycloak itself mails the user's address on
/// file (the realm's SMTP server, here the real one the parts started) a link that lets them set
/// up the factors they lost, good for the lifetime asked. The operator never holds the link, and
/// Keycloak has no call to withdraw it, which its capabilities say.
async fn bypass_mailed_by_keycloak(kind: &str) {
    let bench = Bench::start(kind, &seed(30), fast()).await;
    let keycloak = bench.target.as_keycloak();
    let (mail, from) = keycloak.mail_through_the_test_server("bypass").await;
    let name = bench.target.window_users()[0].clone();
    let user = bench.provider.find_user(&name).await.unwrap().remove(0);
    let address = bench.provider.address(&user).await.unwrap().expect("an address on file");
    let support = bench.provider.capabilities().bypass.expect("Keycloak's execute-actions email");
    assert!(support.sent_by_provider && !support.withdrawable, "{support:?}");

    let lifetime = Duration::from_secs(20 * 60);
    let issued = bench.provider.issue_bypass(&user, lifetime).await.unwrap_or_else(|e| panic!("keycloak: issue: {e}"));
    assert!(issued.secret.is_none(), "the operator never holds Keycloak's link");
    let (_, link, claims) = keycloak.mailed_action_link(&mail, &address, &from).await;
    // The link's token lives as long as asked.
    let (iat, exp) = (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert_eq!(exp - iat, lifetime.as_secs() as i64, "keycloak: {claims}");
    assert!(jiff::Timestamp::from_second(exp).unwrap().duration_since(issued.expires_at).abs() < jiff::SignedDuration::from_secs(60), "keycloak: expires when said");
    let page = reqwest::Client::builder().cookie_store(true).build().unwrap().get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200, "keycloak: the link opens");
    let text = page.text().await.unwrap();
    assert!(!text.to_lowercase().contains("expired"), "keycloak: the link works: {text}");
    let error = bench.provider.revoke_bypass(&user, jiff::Timestamp::now(), None).await.err().expect("no call withdraws the link");
    assert_eq!(error.kind(), ErrorKind::Config);
}

/// reEnrollment.via VerifiedLink with resetPassword, on real Keycloak: the recall makes the stolen
/// password stop working and Keycloak mails the user a link, good for the lifetime asked, to set a
/// new password and the factors they lost; the trail says which channel was used.
async fn re_enrollment_through_a_verified_link(kind: &str) {
    let bench = Bench::start(kind, &seed(30), fast()).await;
    let keycloak = bench.target.as_keycloak();
    let (admin, realm) = (&keycloak.admin, &keycloak.realm);
    let (mail, from) = keycloak.mail_through_the_test_server("relink").await;
    let name = bench.target.window_users()[1].clone();
    admin.sign_in_from(realm, &name, "127.0.0.1").await.expect("the password works before the recall");
    let address = bench.provider.address(&bench.provider.find_user(&name).await.unwrap().remove(0)).await.unwrap().expect("an address on file");
    let cutoff = jiff::Timestamp::now();
    clock_moves_past(cutoff).await;
    let lifetime = Duration::from_secs(2 * 3600);
    let job = RecallJob { channel: backends::EnrollmentChannel::Link { lifetime, reset_password: true }, ..bench.job(ScopeSelector::listed(vec![], vec![name.clone()]), cutoff) };
    let counts = bench.revoke(&job).await;
    assert_eq!((counts.invalidated, counts.failed), (1, 0), "{counts:?}");
    let refused = admin.sign_in_from(realm, &name, "127.0.0.1").await.expect_err("the old password no longer works");
    assert!(refused.contains("Invalid user credentials"), "refused for the password, not only for pending actions: {refused}");
    let (message, _, claims) = keycloak.mailed_action_link(&mail, &address, &from).await;
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), lifetime.as_secs() as i64, "{claims}");
    assert!(message.contains("Update Password") || message.contains("UPDATE_PASSWORD") || message.to_lowercase().contains("password"), "the link sets a new password: {message}");
    let required = bench.audit_events().into_iter().find(|e| e["action"] == "enrollment.require" && e["outcome"] == "done").expect("enrollment required");
    assert!(required["detail"].as_str().unwrap().ends_with("via a link to the address on file, the password reset"), "{required}");
}

/// reEnrollment.via VerifiedLink on Auth0: the recall has Auth0 mail the user an MFA enrollment
/// ticket (`send_mail`), once, and the trail says the link was the channel; Auth0 cannot reset the
/// password with it, which its capabilities say.
async fn enrollment_ticket_mailed_by_auth0(kind: &str) {
    let bench = Bench::start(kind, &seed(30), fast()).await;
    let link = bench.provider.capabilities().enrollment_link.expect("Auth0's enrollment ticket");
    assert!(!link.resets_password && !link.sets_lifetime, "{link:?}");
    let name = bench.target.window_users()[0].clone();
    let cutoff = jiff::Timestamp::now();
    clock_moves_past(cutoff).await;
    let channel = backends::EnrollmentChannel::Link { lifetime: Duration::from_secs(3600), reset_password: false };
    let job = RecallJob { channel, ..bench.job(ScopeSelector::listed(vec![], vec![name.clone()]), cutoff) };
    let counts = bench.revoke(&job).await;
    assert_eq!((counts.invalidated, counts.failed), (1, 0), "{counts:?}");
    let mailed = bench.sim().provider.links_mailed(&name);
    assert_eq!(mailed.len(), 1, "one ticket mailed to {name}: {mailed:?}");
    assert!(mailed[0].contains("/guardian/enroll?ticket="), "{mailed:?}");
    assert!(bench.sim().provider.links_mailed(&bench.target.username(2)).is_empty(), "to nobody else");
    let required = bench.audit_events().into_iter().find(|e| e["action"] == "enrollment.require" && e["outcome"] == "done").expect("enrollment required");
    assert!(required["detail"].as_str().unwrap().ends_with("via a link to the address on file"), "{required}");
}

/// reEnrollment.via VerifiedLink with resetPassword on Okta: Okta puts the user in RECOVERY (the
/// stolen password no longer signs in) and mails them a reset link, after which the enrollment
/// policy asks for factors. Without resetPassword Okta has no link, which its capabilities say.
async fn reset_link_mailed_by_okta(kind: &str) {
    let bench = Bench::start(kind, &seed(30), fast()).await;
    bench.sim().record_requests();
    let link = bench.provider.capabilities().enrollment_link.expect("Okta's reset email");
    assert!(link.needs_password_reset && link.resets_password && !link.sets_lifetime, "{link:?}");
    let name = bench.target.window_users()[0].clone();
    assert!(bench.target.user(&name).await.active);
    let cutoff = jiff::Timestamp::now();
    clock_moves_past(cutoff).await;
    let channel = backends::EnrollmentChannel::Link { lifetime: Duration::from_secs(3600), reset_password: true };
    let job = RecallJob { channel, ..bench.job(ScopeSelector::listed(vec![], vec![name.clone()]), cutoff) };
    let counts = bench.revoke(&job).await;
    assert_eq!((counts.invalidated, counts.failed), (1, 0), "{counts:?}");
    assert!(!bench.target.user(&name).await.active, "in RECOVERY: the old password signs nobody in");
    let mailed = bench.sim().provider.links_mailed(&name);
    assert_eq!(mailed.len(), 1, "one reset link mailed: {mailed:?}");
    let required = bench.audit_events().into_iter().find(|e| e["action"] == "enrollment.require" && e["outcome"] == "done").expect("enrollment required");
    assert!(required["detail"].as_str().unwrap().ends_with("via a link to the address on file, the password reset"), "{required}");
    let recorded = bench.sim().recorded_requests();
    let undocumented: Vec<String> = recorded.iter().filter_map(|r| Description::load(kind).refuses(r)).collect();
    assert!(undocumented.is_empty(), "{kind}: {undocumented:?}");
}

/// What a provider's log shows, from its documentation (not from the adapter): geolocation with
/// coordinates, a proxy verdict, a user's fraud report, an enrollment by an administrator, a
/// denied push, the device an enrollment is on, a sign-in the provider judged risky.
struct WindowSupport {
    geo: bool,
    proxy: bool,
    fraud: bool,
    by_admin: bool,
    push_denied: bool,
    device: bool,
    risky: bool,
    /// A bypass (temporary access pass, bypass code) an administrator issued, in the stream.
    bypass: bool,
    /// The user turning a second step off or changing their recovery phone, in the stream.
    weakened: bool,
}

fn window_support(kind: &str) -> WindowSupport {
    match kind {
        // System Log: client.geographicalContext.geolocation, securityContext.isProxy,
        // user.account.report_suspicious_activity_by_enduser, the admin as actor, user.mfa.okta_verify.deny_push,
        // the Okta Verify device (device.id), user.risk.detect.
        "okta" => WindowSupport { geo: true, proxy: true, fraud: true, by_admin: true, push_denied: true, device: true, risky: true, bypass: false, weakened: false },
        // User events carry ipAddress only; the admin API cannot enroll for a user; no push or report.
        "keycloak" => WindowSupport { geo: false, proxy: false, fraud: false, by_admin: false, push_denied: false, device: false, risky: false, bypass: false, weakened: false },
        // Tenant log: location_info.latitude/longitude; no proxy verdict or ASN ("Get a log event
        // by id"); Guardian lets a user reject a push (gd_auth_rejected) but has no fraud report
        // ("Log Event Type Codes"); an administrator creating a method is a sapi entry naming the
        // user in details.request.path.
        "auth0" => WindowSupport { geo: true, proxy: false, fraud: false, by_admin: true, push_denied: true, device: false, risky: true, bypass: false, weakened: false },
        // Authentication log v2: access_device.location is city, state and country without
        // coordinates, and no proxy verdict; result fraud with reason user_marked_fraud; a denied
        // push is result denied; a device an administrator adds is only in the administrator log,
        // whose object names the phone or token, not the user ("Administrator Logs"); auth_device
        // names the phone an authentication went to; no risk verdict; bypass_create in the
        // administrator log names the user's id in its description.
        "duo" => WindowSupport { geo: false, proxy: false, fraud: true, by_admin: false, push_denied: true, device: true, risky: false, bypass: true, weakened: false },
        // Graph: a registration ("User registered security info") carries initiatedBy.user.ipAddress
        // only, no location and no proxy verdict; "Admin registered security info" names the
        // administrator in initiatedBy.user; the sign-in log (P1) has status.errorCode 500121 for
        // MFA denied, its additionalDetails telling a declined push from "Phone App Reported Fraud".
        "entra" => WindowSupport { geo: false, proxy: false, fraud: true, by_admin: true, push_denied: true, device: false, risky: true, bypass: true, weakened: false },
        // Reports API login audit: ipAddress and networkInfo (ASN, region code) without coordinates
        // or a proxy verdict; no event for a user's fraud report; 2sv_enroll is the user's own (an
        // administrator cannot enroll a user); a login_challenge failed by the Google prompt;
        // recovery_phone_edit and 2sv_disable.
        "google" => WindowSupport { geo: false, proxy: false, fraud: false, by_admin: false, push_denied: true, device: false, risky: true, bypass: false, weakened: true },
        // docs/backend-protocol.md: an event carries ip, userAgent, country and asn (no coordinates,
        // proxy verdict, actor or device); pushDenied, fraudReported, riskySignIn and bypassIssued
        // are event types; no type for a second step weakened.
        "webhook" => WindowSupport { geo: false, proxy: false, fraud: true, by_admin: false, push_denied: true, device: false, risky: true, bypass: true, weakened: false },
        other => panic!("no window support listed for {other}"),
    }
}

macro_rules! cases {
    ($kind:ident: $($case:ident),*) => {
        mod $kind {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() { super::$case(stringify!($kind)).await }
            )*
        }
    };
}

cases!(okta: reset_link_mailed_by_okta, bypass_issued_used_and_withdrawn, window_watched, window_quarantine, window_notices, window_comparing_rules, foreign_next_link_ends_the_listing, requests_are_documented, full_recall, cutoff_respected, exclusions, resume, keeps_under_the_limit, faults, wrong_credentials, scope_union, nested_exclusions, missing_exclusion_group, one_kind_alone, failed_midway, new_factors_of_every_kind_kept);
cases!(entra: bypass_issued_used_and_withdrawn, window_watched, window_quarantine, window_notices, window_comparing_rules, methods_go_in_the_order_graph_allows, foreign_next_link_ends_the_listing, requests_are_documented, shared_quota_fails_no_user, full_recall, cutoff_respected, exclusions, resume, keeps_under_the_limit, faults, wrong_credentials, scope_union, nested_exclusions, missing_exclusion_group, one_kind_alone, failed_midway, new_factors_of_every_kind_kept);
cases!(auth0: enrollment_ticket_mailed_by_auth0, bypass_issued_used_and_withdrawn, window_watched, window_quarantine, window_notices, window_comparing_rules, requests_are_documented, full_recall, cutoff_respected, exclusions, resume, keeps_under_the_limit, faults, wrong_credentials, scope_union, nested_exclusions, missing_exclusion_group, one_kind_alone, failed_midway, new_factors_of_every_kind_kept);
cases!(google: bypass_issued_used_and_withdrawn, window_watched, window_quarantine, window_notices, window_comparing_rules, re_enrollment_within_the_log_delay_is_kept, re_enrollment_counts_only_after_the_turn_off, new_app_password_lost_with_2sv_is_named, requests_are_documented, shared_quota_fails_no_user, full_recall, cutoff_respected, exclusions, resume, keeps_under_the_limit, faults, wrong_credentials, scope_union, nested_exclusions, missing_exclusion_group, one_kind_alone, failed_midway, new_factors_of_every_kind_kept);
cases!(duo: bypass_issued_used_and_withdrawn, window_watched, window_quarantine, window_notices, window_comparing_rules, requests_are_documented, admin_added_devices_kept, shared_quota_fails_no_user, full_recall, cutoff_respected, exclusions, resume, keeps_under_the_limit, faults, wrong_credentials, scope_union, nested_exclusions, missing_exclusion_group, one_kind_alone, failed_midway, new_factors_of_every_kind_kept);
// The reference in-house backend on real PostgreSQL, faults and a quota (a gateway's, announced
// nowhere) injected by a proxy in front of it.
cases!(webhook: shared_quota_fails_no_user, bypass_issued_used_and_withdrawn, window_watched, window_quarantine, window_notices, window_comparing_rules, requests_are_documented, full_recall, cutoff_respected, exclusions, resume, faults, wrong_credentials, scope_union, nested_exclusions, missing_exclusion_group, one_kind_alone, failed_midway, new_factors_of_every_kind_kept);
// Real Keycloak cannot have faults or limits injected; the shared HTTP plumbing those cases prove
// is the same code for every adapter.
cases!(keycloak: bypass_mailed_by_keycloak, re_enrollment_through_a_verified_link, window_watched, window_quarantine, window_notices, window_comparing_rules, requests_are_documented, full_recall, cutoff_respected, exclusions, resume, wrong_credentials, scope_union, nested_exclusions, missing_exclusion_group, one_kind_alone);
