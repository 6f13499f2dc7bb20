//! Microsoft Entra ID as Microsoft Graph v1.0 shows it: the client-credentials token endpoint of
//! one tenant, users and groups paged by absolute `@odata.nextLink` URLs carrying `$skiptoken`,
//! authentication methods typed by `@odata.type`, `revokeSignInSessions`, sign-in preferences and
//! the directory audit log. Throttling is a bare 429 with `Retry-After` and a Graph error body.
//!
//! Quirks kept on purpose (IDP-NOTES.md):
//! - `createdDateTime` is null for phone, email and password methods; the simulator still knows
//!   the true creation time of each (the census needs it).
//! - Phone and email methods have fixed ids (one per phone type, one for email), the same for
//!   every user and again after a delete and a new registration.
//! - The user's default method (`userPreferredMethodForSecondaryAuthentication`) cannot be
//!   deleted while another method it could move to is registered: 400, "change default method
//!   before deletion". Graph's message says "with other methods configured"; only the documented
//!   preference types (push, oath, sms and voice) can be made default, so a default with nothing
//!   to move to can be deleted, otherwise a user could never be cleared.
//! - Sessions cannot be listed or counted through Graph; `revokeSignInSessions` ends all of them.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::Method;
use serde_json::{Map, Value, json};

use super::{Census, FactorView, Provider, Seed, SimRequest, SimResponse, UserView, new_id, rfc3339, username};
use crate::FactorKind;

/// The only tenant this simulator answers for (the testbed's `tenantId`).
pub const TENANT: &str = "contoso-test";
/// Fixed method ids, as Graph documents them.
pub const PHONE_MOBILE_ID: &str = "3179e48a-750b-4051-897c-87b9720928f7";
pub const PHONE_ALTERNATE_ID: &str = "b6332ec1-7057-4abe-9331-3d72feddfe41";
pub const PHONE_OFFICE_ID: &str = "e37fc753-ff3b-4958-9484-eaa9425c82bc";
pub const EMAIL_ID: &str = "3ddfcfc8-9383-446f-83cc-3ab9be4be18f";
pub const PASSWORD_ID: &str = "28c10230-6103-485e-b985-444c60001490";
/// The activity an enrollment writes to the directory audit log.
pub const REGISTERED: &str = "User registered security info";
const TOKEN_LIFETIME_S: i64 = 3599;
const MAX_TOP: usize = 999;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MethodType {
    Phone,
    Authenticator,
    Fido2,
    SoftwareOath,
    Email,
    TemporaryAccessPass,
    WindowsHello,
    PlatformCredential,
    Password,
}

impl MethodType {
    const ALL: [MethodType; 9] = [
        MethodType::Phone,
        MethodType::Authenticator,
        MethodType::Fido2,
        MethodType::SoftwareOath,
        MethodType::Email,
        MethodType::TemporaryAccessPass,
        MethodType::WindowsHello,
        MethodType::PlatformCredential,
        MethodType::Password,
    ];

    fn odata_type(self) -> &'static str {
        match self {
            MethodType::Phone => "#microsoft.graph.phoneAuthenticationMethod",
            MethodType::Authenticator => "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
            MethodType::Fido2 => "#microsoft.graph.fido2AuthenticationMethod",
            MethodType::SoftwareOath => "#microsoft.graph.softwareOathAuthenticationMethod",
            MethodType::Email => "#microsoft.graph.emailAuthenticationMethod",
            MethodType::TemporaryAccessPass => "#microsoft.graph.temporaryAccessPassAuthenticationMethod",
            MethodType::WindowsHello => "#microsoft.graph.windowsHelloForBusinessAuthenticationMethod",
            MethodType::PlatformCredential => "#microsoft.graph.platformCredentialAuthenticationMethod",
            MethodType::Password => "#microsoft.graph.passwordAuthenticationMethod",
        }
    }

    /// The collection under `/users/{id}/authentication/` that deletes this type.
    fn collection(self) -> Option<&'static str> {
        match self {
            MethodType::Phone => Some("phoneMethods"),
            MethodType::Authenticator => Some("microsoftAuthenticatorMethods"),
            MethodType::Fido2 => Some("fido2Methods"),
            MethodType::SoftwareOath => Some("softwareOathMethods"),
            MethodType::Email => Some("emailMethods"),
            MethodType::TemporaryAccessPass => Some("temporaryAccessPassMethods"),
            MethodType::WindowsHello => Some("windowsHelloForBusinessMethods"),
            MethodType::PlatformCredential => Some("platformCredentialMethods"),
            MethodType::Password => None,
        }
    }

    fn kind(self) -> Option<FactorKind> {
        match self {
            MethodType::Phone => Some(FactorKind::Sms),
            MethodType::Authenticator => Some(FactorKind::Push),
            MethodType::Fido2 => Some(FactorKind::Webauthn),
            MethodType::SoftwareOath => Some(FactorKind::Totp),
            MethodType::Email => Some(FactorKind::Email),
            MethodType::TemporaryAccessPass => Some(FactorKind::RecoveryCodes),
            MethodType::WindowsHello | MethodType::PlatformCredential => Some(FactorKind::Passkey),
            MethodType::Password => None,
        }
    }

    /// The Entra method a seeded or enrolled factor kind becomes. Entra has no recovery codes: a
    /// temporary access pass is its one-off fallback credential, so it stands for them.
    fn for_kind(kind: FactorKind) -> Option<Self> {
        match kind {
            FactorKind::Totp => Some(MethodType::SoftwareOath),
            FactorKind::Webauthn => Some(MethodType::Fido2),
            FactorKind::RecoveryCodes => Some(MethodType::TemporaryAccessPass),
            FactorKind::Sms => Some(MethodType::Phone),
            FactorKind::Push => Some(MethodType::Authenticator),
            FactorKind::Email => Some(MethodType::Email),
            FactorKind::Passkey => Some(MethodType::WindowsHello),
            _ => None,
        }
    }

    /// Graph v1.0 shows no creation time for these: `createdDateTime` is null on phone, email and
    /// password methods, and on Microsoft Authenticator "if the device isn't registered for
    /// passwordless Phone Sign-In" (which the simulator's devices never are); the
    /// softwareOathAuthenticationMethod resource has no such property at all.
    /// (learn.microsoft.com/graph/api/resources/microsoftauthenticatorauthenticationmethod,
    /// .../softwareoathauthenticationmethod, .../phoneauthenticationmethod, v1.0.)
    fn hides_created(self) -> bool {
        matches!(self, MethodType::Phone | MethodType::Email | MethodType::Password | MethodType::Authenticator | MethodType::SoftwareOath)
    }

    /// The `Method` detail of a "User registered security info" audit entry.
    fn audit_name(self, phone_type: Option<&str>) -> &'static str {
        match (self, phone_type) {
            (MethodType::Phone, Some("alternateMobile")) => "Alternate mobile phone",
            (MethodType::Phone, Some("office")) => "Office phone",
            (MethodType::Phone, _) => "Mobile phone",
            (MethodType::Authenticator, _) => "Microsoft Authenticator",
            (MethodType::Fido2, _) => "FIDO2 security key",
            (MethodType::SoftwareOath, _) => "Software OATH token",
            (MethodType::Email, _) => "Email",
            (MethodType::TemporaryAccessPass, _) => "Temporary Access Pass",
            (MethodType::WindowsHello, _) => "Windows Hello for Business",
            (MethodType::PlatformCredential, _) => "Platform credential",
            (MethodType::Password, _) => "Password",
        }
    }
}

#[derive(Clone, Debug)]
struct AuthMethod {
    id: String,
    kind: MethodType,
    /// mobile, alternateMobile or office, for phone methods.
    phone_type: Option<&'static str>,
    /// The true creation time, shown only where Graph shows it.
    created: jiff::Timestamp,
}

impl AuthMethod {
    fn new(kind: MethodType, created: jiff::Timestamp) -> Self {
        let (id, phone_type) = match kind {
            MethodType::Phone => (PHONE_MOBILE_ID.to_string(), Some("mobile")),
            MethodType::Email => (EMAIL_ID.to_string(), None),
            MethodType::Password => (PASSWORD_ID.to_string(), None),
            _ => (guid(), None),
        };
        Self { id, kind, phone_type, created }
    }

    /// The sign-in preference that makes this method the default, if it can be one.
    fn preference(&self) -> Option<&'static str> {
        match (self.kind, self.phone_type) {
            (MethodType::Authenticator, _) => Some("push"),
            (MethodType::SoftwareOath, _) => Some("oath"),
            (MethodType::Phone, Some("alternateMobile")) => Some("voiceAlternateMobile"),
            (MethodType::Phone, Some("office")) => Some("voiceOffice"),
            (MethodType::Phone, _) => Some("sms"),
            _ => None,
        }
    }

    fn satisfies(&self, preference: &str) -> bool {
        match preference {
            "voiceMobile" => self.preference() == Some("sms"),
            other => self.preference() == Some(other),
        }
    }

    fn to_json(&self) -> Value {
        let created = (!self.kind.hides_created()).then(|| rfc3339(self.created));
        let mut m = json!({ "@odata.type": self.kind.odata_type(), "id": self.id, "createdDateTime": created });
        if self.kind == MethodType::SoftwareOath
            && let Some(m) = m.as_object_mut()
        {
            m.remove("createdDateTime");
        }
        let extra = match self.kind {
            MethodType::Phone => json!({ "phoneNumber": "+1 2065550123", "phoneType": self.phone_type, "smsSignInState": "notAllowedByPolicy" }),
            MethodType::Authenticator => json!({ "displayName": "Contoso phone", "deviceTag": "SoftwareTokenActivated", "phoneAppVersion": "6.2401.0119" }),
            MethodType::Fido2 => json!({ "displayName": "YubiKey 5 NFC", "aaGuid": "cb69481e-8ff7-4039-93ec-0a2729a154a8", "model": "YubiKey 5 NFC", "attestationLevel": "attested", "attestationCertificates": [] }),
            MethodType::SoftwareOath => json!({ "secretKey": null }),
            MethodType::Email => json!({ "emailAddress": "recovery@contoso.example" }),
            MethodType::TemporaryAccessPass => json!({
                "startDateTime": rfc3339(self.created), "lifetimeInMinutes": 60, "isUsableOnce": true, "isUsable": false,
                "methodUsabilityReason": "Expired", "temporaryAccessPass": null
            }),
            MethodType::WindowsHello => json!({ "displayName": "CONTOSO-LAPTOP", "keyStrength": "normal" }),
            MethodType::PlatformCredential => json!({ "displayName": "Contoso Mac", "keyStrength": "normal", "platform": "macOS" }),
            MethodType::Password => json!({ "password": null }),
        };
        if let (Some(m), Value::Object(extra)) = (m.as_object_mut(), extra) {
            m.extend(extra);
        }
        m
    }
}

#[derive(Clone, Debug)]
struct User {
    id: String,
    upn: String,
    enabled: bool,
    methods: Vec<AuthMethod>,
    /// `userPreferredMethodForSecondaryAuthentication`; which method it names is the default.
    preferred: Option<&'static str>,
    system_preferred: bool,
    /// Refresh tokens and session cookies issued since `sessions_valid_from`.
    sessions: u32,
    sessions_valid_from: jiff::Timestamp,
}

impl User {
    /// The user's default method: the one the preference names, when exactly one does.
    fn is_default(&self, index: usize) -> bool {
        let Some(preference) = self.preferred else { return false };
        self.methods[index].satisfies(preference) && self.methods.iter().filter(|m| m.satisfies(preference)).count() == 1
    }

    fn view(&self) -> UserView {
        UserView {
            id: self.id.clone(),
            username: self.upn.clone(),
            active: self.enabled,
            factors: self
                .methods
                .iter()
                .filter_map(|m| Some(FactorView { id: m.id.clone(), kind: m.kind.kind()?, created: m.created }))
                .collect(),
            sessions: self.sessions,
            grants: 0,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "userPrincipalName": self.upn,
            "displayName": self.upn.split('@').next().unwrap_or_default(),
            "mail": self.upn,
            "accountEnabled": self.enabled,
            "signInSessionsValidFromDateTime": rfc3339(self.sessions_valid_from),
        })
    }
}

struct Group {
    id: String,
    name: String,
    /// Users who are direct members.
    members: Vec<usize>,
    /// Groups nested in this one, at any depth.
    nested: Vec<usize>,
}

/// One "User registered security info" entry of the directory audit log.
struct AuditEntry {
    id: String,
    at: jiff::Timestamp,
    user: usize,
    ip: String,
    method: &'static str,
}

#[derive(Default)]
struct State {
    users: Vec<User>,
    by_id: HashMap<String, usize>,
    by_upn: HashMap<String, usize>,
    groups: Vec<Group>,
    /// Access tokens issued, with their expiry (epoch s).
    tokens: HashMap<String, i64>,
    audit: Vec<AuditEntry>,
    audit_by_user: HashMap<usize, Vec<usize>>,
}

impl State {
    fn user_index(&self, key: &str) -> Option<usize> {
        self.by_id.get(key).or_else(|| self.by_upn.get(&key.to_lowercase())).copied()
    }
}

pub struct Entra {
    client_id: String,
    client_secret: String,
    state: Mutex<State>,
}

impl Entra {
    /// Accepts the app registration in `credentials` (`client-id`, `client-secret`).
    pub fn new(credentials: &Value) -> Result<Self, String> {
        let key = |k: &str| credentials.get(k).and_then(Value::as_str).map(String::from).ok_or_else(|| format!("entra credentials need {k}"));
        Ok(Self { client_id: key("client-id")?, client_secret: key("client-secret")?, state: Mutex::default() })
    }

    fn token(&self, tenant: &str, request: &SimRequest) -> SimResponse {
        let form = request.form();
        let field = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let refuse = |status: u16, error: &str, description: String| {
            SimResponse::json(status, &json!({
                "error": error,
                "error_description": description,
                "error_codes": [description.strip_prefix("AADSTS").and_then(|r| r.split(':').next()).and_then(|c| c.parse::<u64>().ok()).unwrap_or(0)],
                "timestamp": jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
                "trace_id": guid(),
                "correlation_id": guid(),
            }))
        };
        if tenant != TENANT {
            return refuse(400, "invalid_request", format!("AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID."));
        }
        if field("grant_type") != Some("client_credentials") {
            return refuse(400, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.".into());
        }
        if !field("scope").is_some_and(|s| s.ends_with("/.default")) {
            return refuse(400, "invalid_scope", "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.".into());
        }
        if field("client_id") != Some(self.client_id.as_str()) {
            return refuse(
                400,
                "unauthorized_client",
                format!("AADSTS700016: Application with identifier '{}' was not found in the directory '{TENANT}'.", field("client_id").unwrap_or_default()),
            );
        }
        if field("client_secret") != Some(self.client_secret.as_str()) {
            return refuse(
                401,
                "invalid_client",
                format!("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", self.client_id),
            );
        }
        let token = format!("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{}", URL_SAFE_NO_PAD.encode(fastrand::u128(..).to_be_bytes()));
        let now = jiff::Timestamp::now().as_second();
        let mut state = self.state.lock().unwrap();
        state.tokens.retain(|_, expires| *expires > now);
        state.tokens.insert(token.clone(), now + TOKEN_LIFETIME_S);
        SimResponse::json(200, &json!({ "token_type": "Bearer", "expires_in": TOKEN_LIFETIME_S, "ext_expires_in": TOKEN_LIFETIME_S, "access_token": token }))
    }

    fn authenticated(&self, request: &SimRequest) -> Result<(), SimResponse> {
        let Some(token) = request.authorization("Bearer") else {
            return Err(graph_error(401, "InvalidAuthenticationToken", "Access token is empty."));
        };
        let now = jiff::Timestamp::now().as_second();
        match self.state.lock().unwrap().tokens.get(token) {
            Some(expires) if *expires > now => Ok(()),
            Some(_) => Err(graph_error(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")),
            None => Err(graph_error(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid signature.")),
        }
    }

    fn graph(&self, request: &SimRequest, segments: &[&str]) -> SimResponse {
        let base = base_url(request);
        let mut state = self.state.lock().unwrap();
        let verb = request.method.as_str();
        match segments {
            ["users"] if verb == "GET" => match request.query("$filter") {
                None => list_page(request, &base, "users", state.users.len(), |i| state.users[i].to_json()),
                // The user resource's `mail` "Supports $filter (eq, ...)"
                // (learn.microsoft.com/graph/api/resources/user); matched as stored, since the
                // page promises no case folding. The simulator's mail is its UPN.
                Some(filter) => match filter.strip_prefix("mail eq ").and_then(odata_string) {
                    Some(mail) => {
                        let found: Vec<usize> = (0..state.users.len()).filter(|i| state.users[*i].upn == mail).collect();
                        list_page(request, &base, "users", found.len(), |i| state.users[found[i]].to_json())
                    }
                    None => graph_error(400, "Request_UnsupportedQuery", "Unsupported or invalid query filter clause specified for property 'mail' of resource 'User'."),
                },
            },
            ["users", key] => {
                let Some(u) = state.user_index(key) else { return user_not_found(key) };
                match verb {
                    "GET" => SimResponse::json(200, &with_context(select(request, state.users[u].to_json()), &base, "users/$entity")),
                    "PATCH" => match request.json().and_then(|b| b.get("accountEnabled").and_then(Value::as_bool)) {
                        Some(enabled) => {
                            state.users[u].enabled = enabled;
                            SimResponse::empty(204)
                        }
                        None => graph_error(400, "Request_BadRequest", "Invalid value specified for property 'accountEnabled' of resource 'User'."),
                    },
                    _ => method_not_allowed(),
                }
            }
            ["users", key, "revokeSignInSessions"] if verb == "POST" => {
                let Some(u) = state.user_index(key) else { return user_not_found(key) };
                let user = &mut state.users[u];
                user.sessions = 0;
                user.sessions_valid_from = jiff::Timestamp::now();
                SimResponse::json(200, &json!({ "@odata.context": format!("{base}/v1.0/$metadata#Edm.Boolean"), "value": true }))
            }
            ["users", key, "authentication", "methods"] if verb == "GET" => {
                let Some(u) = state.user_index(key) else { return user_not_found(key) };
                let value: Vec<Value> = state.users[u].methods.iter().map(AuthMethod::to_json).collect();
                let context = format!("{base}/v1.0/$metadata#users('{}')/authentication/methods", state.users[u].id);
                SimResponse::json(200, &json!({ "@odata.context": context, "value": value }))
            }
            ["users", key, "authentication", "signInPreferences"] => {
                let Some(u) = state.user_index(key) else { return user_not_found(key) };
                let user = &mut state.users[u];
                match verb {
                    "GET" => SimResponse::json(200, &json!({
                        "@odata.context": format!("{base}/v1.0/$metadata#users('{}')/authentication/signInPreferences", user.id),
                        "isSystemPreferredAuthenticationMethodEnabled": user.system_preferred,
                        "userPreferredMethodForSecondaryAuthentication": user.preferred,
                    })),
                    "PATCH" => update_preferences(user, request.json().unwrap_or(Value::Null)),
                    _ => method_not_allowed(),
                }
            }
            ["users", key, "authentication", collection, method_id] if verb == "DELETE" => {
                let Some(u) = state.user_index(key) else { return user_not_found(key) };
                delete_method(&mut state.users[u], collection, method_id)
            }
            ["groups"] if verb == "GET" => {
                let Some(filter) = request.query("$filter") else {
                    return list_page(request, &base, "groups", state.groups.len(), |i| group_json(&state.groups[i]));
                };
                let Some(name) = filter.strip_prefix("displayName eq ").and_then(odata_string) else {
                    return graph_error(400, "Request_UnsupportedQuery", "Unsupported or invalid query filter clause specified for property 'displayName' of resource 'Group'.");
                };
                let found: Vec<usize> = (0..state.groups.len()).filter(|i| state.groups[*i].name == name).collect();
                list_page(request, &base, "groups", found.len(), |i| group_json(&state.groups[found[i]]))
            }
            // Cast to users: `members` lists the group's direct members
            // (learn.microsoft.com/graph/api/group-list-members); `transitiveMembers` is transitive,
            // a flat list of the nested members too (learn.microsoft.com/graph/api/group-list-transitivemembers).
            ["groups", id, relation @ ("transitiveMembers" | "members"), rest @ ..] if verb == "GET" && matches!(rest, [] | ["microsoft.graph.user"]) => {
                let Some(group) = state.groups.iter().find(|g| g.id == *id) else {
                    return graph_error(404, "Request_ResourceNotFound", &format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."));
                };
                let mut users = group.members.clone();
                if *relation == "transitiveMembers" {
                    for nested in &group.nested {
                        users.extend(state.groups[*nested].members.iter().filter(|u| !group.members.contains(u)));
                    }
                    let mut seen = std::collections::HashSet::new();
                    users.retain(|u| seen.insert(*u));
                }
                list_page(request, &base, "users", users.len(), |i| {
                    let mut user = state.users[users[i]].to_json();
                    user["@odata.type"] = json!("#microsoft.graph.user");
                    user
                })
            }
            ["auditLogs", "directoryAudits"] if verb == "GET" => directory_audits(&state, request, &base),
            _ => graph_error(400, "BadRequest", &format!("Resource not found for the segment '{}'.", segments.last().unwrap_or(&""))),
        }
    }
}

impl Provider for Entra {
    fn name(&self) -> &'static str {
        "entra"
    }

    /// Graph throttles the token endpoint apart from the API; reads and writes share one budget here.
    fn bucket(&self, request: &SimRequest) -> &'static str {
        if request.path.ends_with("/oauth2/v2.0/token") { "token" } else { "graph" }
    }

    fn handle(&self, request: &SimRequest) -> SimResponse {
        let segments = request.segments();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match segments.as_slice() {
            [tenant, "oauth2", "v2.0", "token"] if request.method == Method::POST => self.token(tenant, request),
            // signInPreferences is documented on beta only
            // (learn.microsoft.com/graph/api/authentication-get-signinpreferences?view=graph-rest-beta).
            ["v1.0", .., "signInPreferences"] => graph_error(400, "BadRequest", "Resource not found for the segment 'signInPreferences'."),
            ["beta", rest @ ..] if matches!(rest, ["users", _, "authentication", "signInPreferences"]) => match self.authenticated(request) {
                Ok(()) => self.graph(request, rest),
                Err(refused) => refused,
            },
            ["v1.0", rest @ ..] => match self.authenticated(request) {
                Ok(()) => self.graph(request, rest),
                Err(refused) => refused,
            },
            _ => graph_error(400, "BadRequest", "Invalid version."),
        }
    }

    fn throttled(&self, reset: i64) -> SimResponse {
        let wait = (reset - jiff::Timestamp::now().as_second()).max(1);
        graph_error(429, "TooManyRequests", "Too many requests have been made. Please retry after the time specified in the Retry-After header.")
            .with_header("Retry-After", wait.to_string())
    }

    fn seed(&self, seed: &Seed) {
        let created = seed.factor_created();
        let types: Vec<MethodType> = seed.factors.iter().filter_map(|k| MethodType::for_kind(*k)).fold(Vec::new(), |mut acc, t| {
            if !acc.contains(&t) {
                acc.push(t);
            }
            acc
        });
        let mut state = State::default();
        state.users.reserve(seed.users as usize);
        let mut groups: Vec<Group> =
            seed.groups.iter().enumerate().map(|(i, g)| Group { id: guid(), name: g.name.clone(), members: Vec::new(), nested: seed.subgroups(i) }).collect();
        for i in 0..seed.users {
            let mut methods = vec![AuthMethod::new(MethodType::Password, created)];
            methods.extend(types.iter().map(|t| AuthMethod::new(*t, created)));
            // The first method that can be a default became it when the user registered.
            let preferred = methods.iter().find_map(AuthMethod::preference);
            let user = User {
                id: guid(),
                upn: username(i),
                enabled: true,
                methods,
                preferred,
                system_preferred: false,
                sessions: seed.sessions,
                sessions_valid_from: created,
            };
            state.by_id.insert(user.id.clone(), i as usize);
            state.by_upn.insert(user.upn.clone(), i as usize);
            for (g, spec) in seed.groups.iter().enumerate() {
                if spec.has_member(i) {
                    groups[g].members.push(i as usize);
                }
            }
            state.users.push(user);
        }
        state.groups = groups;
        *self.state.lock().unwrap() = state;
    }

    fn census(&self, cutoff: Option<jiff::Timestamp>) -> Census {
        let state = self.state.lock().unwrap();
        let mut census = Census::default();
        for user in &state.users {
            census.count(&user.view(), cutoff);
        }
        census
    }

    fn user(&self, username: &str) -> Option<UserView> {
        let state = self.state.lock().unwrap();
        state.user_index(username).map(|u| state.users[u].view())
    }

    fn enroll(&self, username: &str, kind: FactorKind, from_ip: &str) -> Option<String> {
        let kind = MethodType::for_kind(kind)?;
        let mut state = self.state.lock().unwrap();
        let u = state.user_index(username)?;
        let mut method = AuthMethod::new(kind, jiff::Timestamp::now());
        let user = &mut state.users[u];
        // A second phone becomes the alternate mobile.
        if kind == MethodType::Phone && user.methods.iter().any(|m| m.id == PHONE_MOBILE_ID) {
            (method.id, method.phone_type) = (PHONE_ALTERNATE_ID.to_string(), Some("alternateMobile"));
        }
        // A phone or email registered again replaces the one at the same fixed id.
        user.methods.retain(|m| m.id != method.id);
        if user.preferred.is_none() {
            user.preferred = method.preference();
        }
        let id = method.id.clone();
        let audit_name = method.kind.audit_name(method.phone_type);
        user.methods.push(method);
        let entry = state.audit.len();
        state.audit.push(AuditEntry { id: format!("SSPR_{}", guid()), at: jiff::Timestamp::now(), user: u, ip: from_ip.to_string(), method: audit_name });
        state.audit_by_user.entry(u).or_default().push(entry);
        Some(id)
    }
}

/// PATCH signInPreferences: the preference must name a method type the user has registered.
fn update_preferences(user: &mut User, body: Value) -> SimResponse {
    if let Some(enabled) = body.get("isSystemPreferredAuthenticationMethodEnabled").and_then(Value::as_bool) {
        user.system_preferred = enabled;
    }
    if let Some(wanted) = body.get("userPreferredMethodForSecondaryAuthentication").and_then(Value::as_str) {
        let known = ["push", "oath", "voiceMobile", "voiceAlternateMobile", "voiceOffice", "sms"];
        let Some(preference) = known.iter().find(|k| **k == wanted) else {
            return graph_error(400, "badRequest", &format!("Requested value '{wanted}' was not found."));
        };
        if !user.methods.iter().any(|m| m.satisfies(preference)) {
            return graph_error(400, "badRequest", "The user does not have a registered method of the requested default method type.");
        }
        user.preferred = Some(preference);
    }
    SimResponse::empty(204)
}

fn delete_method(user: &mut User, collection: &str, method_id: &str) -> SimResponse {
    let Some(kind) = MethodType::ALL.into_iter().find(|t| t.collection() == Some(collection)) else {
        return graph_error(400, "BadRequest", &format!("Resource not found for the segment '{collection}'."));
    };
    let Some(index) = user.methods.iter().position(|m| m.id == method_id && m.kind == kind) else {
        return graph_error(404, "itemNotFound", &format!("The requested {collection} entry '{method_id}' was not found."));
    };
    // "mobile" cannot be deleted while an "alternateMobile" is registered (phoneAuthenticationMethod: delete).
    let is_phone = |m: &AuthMethod, phone_type: &str| m.kind == MethodType::Phone && m.phone_type.as_deref() == Some(phone_type);
    if is_phone(&user.methods[index], "mobile") && user.methods.iter().any(|m| is_phone(m, "alternateMobile")) {
        return graph_error(400, "badRequest", "Cannot delete the mobile phone method while an alternate mobile phone method is registered.");
    }
    if user.is_default(index) {
        let could_move = user.methods.iter().enumerate().any(|(i, m)| i != index && m.preference().is_some());
        if could_move {
            return graph_error(400, "badRequest", "Cannot delete default method with other methods configured. Please change default method before deletion.");
        }
        user.preferred = None;
    }
    user.methods.remove(index);
    SimResponse::empty(204)
}

/// `GET /auditLogs/directoryAudits` with the `$filter` clauses a recall uses: activity name,
/// `activityDateTime ge`, and `targetResources/any(t: t/id eq '...')` (served from a per-user index).
fn directory_audits(state: &State, request: &SimRequest, base: &str) -> SimResponse {
    let mut activity = None;
    let mut since = None;
    let mut target = None;
    for clause in request.query("$filter").unwrap_or_default().split(" and ").map(str::trim).filter(|c| !c.is_empty()) {
        if let Some(name) = clause.strip_prefix("activityDisplayName eq ").and_then(odata_string) {
            activity = Some(name);
        } else if let Some(at) = clause.strip_prefix("activityDateTime ge ").and_then(|t| t.trim().parse::<jiff::Timestamp>().ok()) {
            since = Some(at);
        } else if let Some(id) = clause
            .strip_prefix("targetResources/any(")
            .and_then(|c| c.split_once(':'))
            .and_then(|(var, rest)| rest.trim().strip_prefix(&format!("{}/id eq ", var.trim())))
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(odata_string)
        {
            target = Some(id);
        } else {
            return graph_error(400, "BadRequest", &format!("Invalid filter clause: {clause}"));
        }
    }
    if activity.as_deref().is_some_and(|a| a != REGISTERED) {
        return list_page(request, base, "auditLogs/directoryAudits", 0, |_| Value::Null);
    }
    let candidates: Vec<usize> = match &target {
        Some(id) => state.by_id.get(id).and_then(|u| state.audit_by_user.get(u)).cloned().unwrap_or_default(),
        None => (0..state.audit.len()).collect(),
    };
    // Newest first, as Graph orders the audit log.
    let mut matching: Vec<usize> = candidates.into_iter().filter(|i| since.is_none_or(|s| state.audit[*i].at >= s)).collect();
    matching.sort_by_key(|i| std::cmp::Reverse(state.audit[*i].at));
    list_page(request, base, "auditLogs/directoryAudits", matching.len(), |i| {
        let entry = &state.audit[matching[i]];
        let user = &state.users[entry.user];
        json!({
            "id": entry.id,
            "category": "UserManagement",
            "correlationId": guid(),
            "result": "success",
            // The documented fields name the method; additionalDetails' keys are not documented.
            "resultReason": format!("User registered {}", entry.method),
            "activityDisplayName": REGISTERED,
            "activityDateTime": rfc3339(entry.at),
            "loggedByService": "Authentication Methods",
            "operationType": "Add",
            "initiatedBy": { "app": null, "user": { "id": user.id, "displayName": null, "userPrincipalName": user.upn, "ipAddress": entry.ip, "userType": null } },
            "targetResources": [{ "id": user.id, "displayName": null, "type": "User", "userPrincipalName": user.upn, "groupType": null, "modifiedProperties": [] }],
            "additionalDetails": [],
        })
    })
}

/// One page of a listing of `total` items (`render` draws the one at a position) as Graph pages:
/// `$top`, an opaque `$skiptoken`, and an absolute `@odata.nextLink` repeating the query.
fn list_page(request: &SimRequest, base: &str, entity: &str, total: usize, render: impl Fn(usize) -> Value) -> SimResponse {
    let top = match request.query("$top").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=MAX_TOP).contains(&n) => n,
        Some(_) => return graph_error(400, "Request_BadRequest", &format!("Invalid page size specified: '{}'. Must be between 1 and {MAX_TOP} inclusive.", request.query("$top").unwrap_or_default())),
    };
    let offset = match request.query("$skiptoken").map(parse_skiptoken) {
        None => 0,
        Some(Some(offset)) => offset,
        Some(None) => return graph_error(400, "Directory_ExpiredPageToken", "The specified page token value has expired and can no longer be included in your request."),
    };
    let end = (offset + top).min(total);
    let value: Vec<Value> = (offset.min(end)..end).map(|i| select(request, render(i))).collect();
    let mut body = json!({ "@odata.context": format!("{base}/v1.0/$metadata#{entity}"), "value": value });
    if end < total {
        let mut query: Vec<(String, String)> = request.query.iter().filter(|(k, _)| k != "$skiptoken").cloned().collect();
        query.push(("$skiptoken".into(), skiptoken(end)));
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{}={}", encode_query(k), encode_query(v))).collect();
        body["@odata.nextLink"] = json!(format!("{base}{}?{}", request.path, query.join("&")));
    }
    SimResponse::json(200, &body)
}

fn skiptoken(offset: usize) -> String {
    format!("RFNwdAIAAQAAA{}", URL_SAFE_NO_PAD.encode(format!("o:{offset}")))
}

fn parse_skiptoken(token: &str) -> Option<usize> {
    let encoded = token.strip_prefix("RFNwdAIAAQAAA")?;
    String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()?.strip_prefix("o:")?.parse().ok()
}

/// Keeps only the `$select`ed properties (and the `@odata.type` of derived members).
fn select(request: &SimRequest, value: Value) -> Value {
    let Some(wanted) = request.query("$select") else { return value };
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    match value {
        Value::Object(map) => Value::Object(map.into_iter().filter(|(k, _)| k.starts_with('@') || wanted.contains(&k.as_str())).collect::<Map<_, _>>()),
        other => other,
    }
}

fn with_context(mut value: Value, base: &str, entity: &str) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.insert("@odata.context".into(), json!(format!("{base}/v1.0/$metadata#{entity}")));
    }
    value
}

fn group_json(group: &Group) -> Value {
    json!({ "id": group.id, "displayName": group.name, "securityEnabled": true, "mailEnabled": false, "groupTypes": [] })
}

/// The value of an OData string literal `'...'` (quotes doubled inside).
fn odata_string(literal: &str) -> Option<String> {
    let inner = literal.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

/// The URL the client used to reach us, for absolute `nextLink`s.
fn base_url(request: &SimRequest) -> String {
    format!("http://{}", request.header("host").unwrap_or("127.0.0.1"))
}

fn encode_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'$' | b',' | b'\'' | b'/' | b':' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Graph's error body: `{"error": {"code", "message", "innerError": {...}}}`.
fn graph_error(status: u16, code: &str, message: &str) -> SimResponse {
    let now = jiff::Timestamp::now();
    SimResponse::json(status, &json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": { "date": now.strftime("%Y-%m-%dT%H:%M:%S").to_string(), "request-id": guid(), "client-request-id": guid() }
        }
    }))
}

fn user_not_found(key: &str) -> SimResponse {
    graph_error(404, "Request_ResourceNotFound", &format!("Resource '{key}' does not exist or one of its queried reference-property objects are not present."))
}

fn method_not_allowed() -> SimResponse {
    graph_error(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")
}

/// A directory object id.
fn guid() -> String {
    let hex = new_id("");
    let more = format!("{:016x}", fastrand::u64(..));
    format!("{}-{}-4{}-a{}-{}", &hex[..8], &hex[8..12], &hex[13..16], &more[..3], &more[3..15])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use hyper::HeaderMap;

    fn sim(seed: Seed) -> Entra {
        let sim = Entra::new(&json!({ "client-id": "app", "client-secret": "s3cret" })).unwrap();
        sim.seed(&seed);
        sim
    }

    fn request(sim: &Entra, method: Method, target: &str, body: Option<Value>) -> SimResponse {
        let token = sim.token(TENANT, &form_request(&[("grant_type", "client_credentials"), ("client_id", "app"), ("client_secret", "s3cret"), ("scope", "https://graph.microsoft.com/.default")]));
        let token: Value = serde_json::from_slice(&token.body).unwrap();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {}", token["access_token"].as_str().unwrap()).parse().unwrap());
        headers.insert("host", "graph.test".parse().unwrap());
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        sim.handle(&SimRequest { method, path: path.into(), query: crate::parse_query(query), headers, body })
    }

    fn form_request(form: &[(&str, &str)]) -> SimRequest {
        let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={}", encode_query(v))).collect();
        SimRequest { method: Method::POST, path: format!("/{TENANT}/oauth2/v2.0/token"), query: vec![], headers: HeaderMap::new(), body: Bytes::from(body.join("&")) }
    }

    fn body(response: &SimResponse) -> Value {
        serde_json::from_slice(&response.body).unwrap()
    }

    #[test]
    fn wrong_secret_is_refused_as_entra_does() {
        let sim = sim(Seed { users: 1, ..Seed::default() });
        let refused = sim.token(TENANT, &form_request(&[("grant_type", "client_credentials"), ("client_id", "app"), ("client_secret", "nope"), ("scope", "x/.default")]));
        assert_eq!(refused.status, 401);
        assert_eq!(body(&refused)["error"], "invalid_client");
        assert!(body(&refused)["error_description"].as_str().unwrap().starts_with("AADSTS7000215"));
        let no_token = sim.handle(&SimRequest { method: Method::GET, path: "/v1.0/users".into(), query: vec![], headers: HeaderMap::new(), body: Bytes::new() });
        assert_eq!((no_token.status, body(&no_token)["error"]["code"].as_str()), (401, Some("InvalidAuthenticationToken")));
    }

    #[test]
    fn users_page_by_absolute_next_links() {
        let sim = sim(Seed { users: 5, ..Seed::default() });
        let mut target = "/v1.0/users?$top=2&$select=id,userPrincipalName".to_string();
        let mut seen = Vec::new();
        loop {
            let page = body(&request(&sim, Method::GET, &target, None));
            for user in page["value"].as_array().unwrap() {
                assert!(user.get("accountEnabled").is_none(), "$select is honoured");
                seen.push(user["userPrincipalName"].as_str().unwrap().to_string());
            }
            let Some(next) = page["@odata.nextLink"].as_str() else { break };
            assert!(next.starts_with("http://graph.test/v1.0/users?") && next.contains("$skiptoken="), "{next}");
            target = next.trim_start_matches("http://graph.test").to_string();
        }
        assert_eq!(seen, (0..5).map(username).collect::<Vec<_>>());
    }

    #[test]
    fn phone_and_email_hide_their_creation_time_and_the_default_goes_last() {
        let sim = sim(Seed { users: 1, factors: vec![FactorKind::Sms, FactorKind::Push, FactorKind::Email], ..Seed::default() });
        let id = sim.user(&username(0)).unwrap().id;
        let methods = body(&request(&sim, Method::GET, &format!("/v1.0/users/{id}/authentication/methods"), None));
        for m in methods["value"].as_array().unwrap() {
            let odata_type = m["@odata.type"].as_str().unwrap();
            let hidden = ["phone", "email", "password", "microsoftAuthenticator"].iter().any(|t| odata_type.contains(t));
            assert_eq!(m["createdDateTime"].is_null(), hidden, "{m}");
        }
        let on_v1 = request(&sim, Method::GET, &format!("/v1.0/users/{id}/authentication/signInPreferences"), None);
        assert_eq!(on_v1.status, 400, "beta only");
        let preferences = body(&request(&sim, Method::GET, &format!("/beta/users/{id}/authentication/signInPreferences"), None));
        assert_eq!(preferences["userPreferredMethodForSecondaryAuthentication"], "sms");
        // The default phone cannot go while the authenticator could take its place.
        let refused = request(&sim, Method::DELETE, &format!("/v1.0/users/{id}/authentication/phoneMethods/{PHONE_MOBILE_ID}"), None);
        assert_eq!(refused.status, 400);
        assert!(body(&refused)["error"]["message"].as_str().unwrap().contains("default method"));
        let authenticator = sim.user(&username(0)).unwrap().factors.into_iter().find(|f| f.kind == FactorKind::Push).unwrap().id;
        assert_eq!(request(&sim, Method::DELETE, &format!("/v1.0/users/{id}/authentication/microsoftAuthenticatorMethods/{authenticator}"), None).status, 204);
        assert_eq!(request(&sim, Method::DELETE, &format!("/v1.0/users/{id}/authentication/phoneMethods/{PHONE_MOBILE_ID}"), None).status, 204);
        assert_eq!(request(&sim, Method::DELETE, &format!("/v1.0/users/{id}/authentication/phoneMethods/{PHONE_MOBILE_ID}"), None).status, 404);
        assert_eq!(request(&sim, Method::DELETE, &format!("/v1.0/users/{id}/authentication/emailMethods/{EMAIL_ID}"), None).status, 204);
        assert!(sim.user(&username(0)).unwrap().factors.is_empty());
    }

    #[test]
    fn moving_the_default_lets_it_go() {
        let sim = sim(Seed { users: 1, factors: vec![FactorKind::Totp, FactorKind::Push], ..Seed::default() });
        let id = sim.user(&username(0)).unwrap().id;
        let oath = sim.user(&username(0)).unwrap().factors.into_iter().find(|f| f.kind == FactorKind::Totp).unwrap().id;
        let delete = format!("/v1.0/users/{id}/authentication/softwareOathMethods/{oath}");
        assert_eq!(request(&sim, Method::DELETE, &delete, None).status, 400);
        let prefs = format!("/beta/users/{id}/authentication/signInPreferences");
        assert_eq!(request(&sim, Method::PATCH, &prefs, Some(json!({ "userPreferredMethodForSecondaryAuthentication": "sms" }))).status, 400, "no phone registered");
        assert_eq!(request(&sim, Method::PATCH, &prefs, Some(json!({ "userPreferredMethodForSecondaryAuthentication": "push" }))).status, 204);
        assert_eq!(request(&sim, Method::DELETE, &delete, None).status, 204);
    }

    #[test]
    fn enrollment_is_in_the_audit_log_per_user() {
        let sim = sim(Seed { users: 3, ..Seed::default() });
        let cutoff = jiff::Timestamp::now();
        sim.enroll(&username(1), FactorKind::Webauthn, "203.0.113.9").unwrap();
        sim.enroll(&username(2), FactorKind::Sms, "203.0.113.10").unwrap();
        let id = sim.user(&username(1)).unwrap().id;
        let filter = format!("activityDisplayName eq '{REGISTERED}' and activityDateTime ge {} and targetResources/any(t: t/id eq '{id}')", rfc3339(cutoff));
        let page = body(&request(&sim, Method::GET, &format!("/v1.0/auditLogs/directoryAudits?$filter={}", encode_query(&filter)), None));
        let entries = page["value"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{page}");
        assert_eq!(entries[0]["initiatedBy"]["user"]["ipAddress"], "203.0.113.9");
        assert_eq!(entries[0]["resultReason"], "User registered FIDO2 security key");
        let later = format!("activityDisplayName eq '{REGISTERED}' and activityDateTime ge {}", rfc3339(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(5)));
        assert!(body(&request(&sim, Method::GET, &format!("/v1.0/auditLogs/directoryAudits?$filter={}", encode_query(&later)), None))["value"].as_array().unwrap().is_empty());
    }
}
