//! Microsoft Entra ID as Microsoft Graph v1.0 shows it: the client-credentials token endpoint of
//! one tenant, users and groups paged by absolute `@odata.nextLink` URLs carrying `$skiptoken`,
//! authentication methods typed by `@odata.type`, `revokeSignInSessions`, sign-in preferences, the
//! directory audit log, the sign-in log and Identity Protection's risk detections. Throttling is a
//! bare 429 with `Retry-After` and a Graph error body.
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
//! - The sign-in log and risk detections need a Microsoft Entra ID P1 or P2 licence: a tenant
//!   without one (`set_premium(false)`) is answered 403 for them, and its audit log keeps 7 days
//!   instead of 30 ("Microsoft Entra data retention"). Every log lists newest first.
//!
//! What people do (`act`), from the Graph v1.0 resources directoryAudit, signIn and riskDetection:
//! a registration is a "User registered security info" entry (an administrator's is "Admin
//! registered security info", with the administrator in `initiatedBy.user`), carrying the client
//! IP only; a temporary access pass is an administrator's registration of that method; sign-ins
//! carry `location` with coordinates; a denied MFA push is a failed sign-in with `errorCode`
//! 500121 ("MFA denied; user declined the authentication"), a fraud report the same code with
//! "MFA denied; Phone App Reported Fraud" and a `userReportedSuspiciousActivity` risk detection;
//! a risky sign-in a risk detection with the sign-in's `riskLevelDuringSignIn`.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::Method;
use serde_json::{Map, Value, json};

use super::{Act, Activity, Census, FactorView, Provider, Seed, SimRequest, SimResponse, UserView, new_id, place_of, rfc3339, username};
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
/// The activity an administrator's registration for a user writes.
pub const ADMIN_REGISTERED: &str = "Admin registered security info";
/// `status.errorCode` of a sign-in whose MFA the user denied (or reported as fraud).
pub const MFA_DENIED: i64 = 500121;
/// How long each log keeps entries ("Microsoft Entra data retention"): the audit log 7 days
/// without a premium licence, 30 with; sign-ins 30 days; risk detections 90.
const AUDIT_DAYS_FREE: i64 = 7;
const AUDIT_DAYS_PREMIUM: i64 = 30;
const SIGN_IN_DAYS: i64 = 30;
const RISK_DAYS: i64 = 90;
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
    /// What a temporary access pass created through Graph lets its user type.
    pass: Option<Pass>,
}

#[derive(Clone, Debug)]
struct Pass {
    code: String,
    lifetime_minutes: u64,
    once: bool,
    used: bool,
}

impl Pass {
    fn expired(&self, start: jiff::Timestamp) -> bool {
        start.checked_add(jiff::SignedDuration::from_mins(self.lifetime_minutes as i64)).is_ok_and(|end| end <= jiff::Timestamp::now())
    }
}

impl AuthMethod {
    fn new(kind: MethodType, created: jiff::Timestamp) -> Self {
        let (id, phone_type) = match kind {
            MethodType::Phone => (PHONE_MOBILE_ID.to_string(), Some("mobile")),
            MethodType::Email => (EMAIL_ID.to_string(), None),
            MethodType::Password => (PASSWORD_ID.to_string(), None),
            _ => (guid(), None),
        };
        Self { id, kind, phone_type, created, pass: None }
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
            MethodType::TemporaryAccessPass => match &self.pass {
                Some(pass) => {
                    let reason = if pass.used { "OneTimeUsed" } else if pass.expired(self.created) { "Expired" } else { "EnabledByPolicy" };
                    json!({
                        "startDateTime": rfc3339(self.created), "lifetimeInMinutes": pass.lifetime_minutes, "isUsableOnce": pass.once,
                        "isUsable": reason == "EnabledByPolicy", "methodUsabilityReason": reason, "temporaryAccessPass": null
                    })
                }
                None => json!({
                    "startDateTime": rfc3339(self.created), "lifetimeInMinutes": 60, "isUsableOnce": true, "isUsable": false,
                    "methodUsabilityReason": "Expired", "temporaryAccessPass": null
                }),
            },
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
            // An address outside the tenant, as users give for self-service password reset (user
            // resource, otherMails: learn.microsoft.com/graph/api/resources/user).
            "otherMails": [format!("{}@home.example", self.upn.split('@').next().unwrap_or_default())],
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

/// One registration entry of the directory audit log.
struct AuditEntry {
    id: String,
    at: jiff::Timestamp,
    user: usize,
    ip: String,
    method: &'static str,
    activity: &'static str,
    /// The administrator's login, for an administrator's registration.
    by_admin: Option<String>,
}

/// One entry of the sign-in log.
struct SignIn {
    id: String,
    at: jiff::Timestamp,
    user: usize,
    ip: String,
    user_agent: String,
    error_code: i64,
    details: &'static str,
    risk_level: &'static str,
}

/// One Identity Protection risk detection.
struct RiskDetection {
    id: String,
    at: jiff::Timestamp,
    user: usize,
    ip: String,
    event_type: &'static str,
    level: &'static str,
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
    sign_ins: Vec<SignIn>,
    sign_ins_by_user: HashMap<usize, Vec<usize>>,
    risks: Vec<RiskDetection>,
    risks_by_user: HashMap<usize, Vec<usize>>,
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
    /// The tenant holds a Microsoft Entra ID P1 or P2 licence (sign-in log, risk detections).
    premium: std::sync::atomic::AtomicBool,
}

impl Entra {
    /// Accepts the app registration in `credentials` (`client-id`, `client-secret`).
    pub fn new(credentials: &Value) -> Result<Self, String> {
        let key = |k: &str| credentials.get(k).and_then(Value::as_str).map(String::from).ok_or_else(|| format!("entra credentials need {k}"));
        Ok(Self { client_id: key("client-id")?, client_secret: key("client-secret")?, state: Mutex::default(), premium: true.into() })
    }

    fn is_premium(&self) -> bool {
        self.premium.load(std::sync::atomic::Ordering::Relaxed)
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
            // learn.microsoft.com/graph/api/authentication-post-temporaryaccesspassmethods (v1.0):
            // lifetimeInMinutes 10 to 43200, 201 Created with the pass itself shown in this answer
            // only; a user holds one pass (learn.microsoft.com/entra/identity/authentication/
            // howto-authentication-temporary-access-pass: "A user can only have one Temporary Access
            // Pass"); the error wording is ours. List and delete: .../temporaryaccesspassauthenticationmethod.
            ["users", key, "authentication", "temporaryAccessPassMethods"] => {
                let Some(u) = state.user_index(key) else { return user_not_found(key) };
                match verb {
                    "GET" => {
                        let value: Vec<Value> = state.users[u].methods.iter().filter(|m| m.kind == MethodType::TemporaryAccessPass).map(AuthMethod::to_json).collect();
                        SimResponse::json(200, &json!({ "@odata.context": format!("{base}/v1.0/$metadata#users('{}')/authentication/temporaryAccessPassMethods", state.users[u].id), "value": value }))
                    }
                    "POST" => {
                        let body = request.json().unwrap_or(Value::Null);
                        let lifetime = body.get("lifetimeInMinutes").map_or(Some(60), Value::as_u64);
                        let Some(lifetime) = lifetime.filter(|m| (10..=43_200).contains(m)) else {
                            return graph_error(400, "badRequest", "The lifetimeInMinutes must be between 10 and 43200.");
                        };
                        if state.users[u].methods.iter().any(|m| m.kind == MethodType::TemporaryAccessPass) {
                            return graph_error(400, "badRequest", "A Temporary Access Pass already exists for this user. Delete it before creating a new one.");
                        }
                        let once = body.get("isUsableOnce").and_then(Value::as_bool).unwrap_or(false);
                        let code = format!("{}{}", URL_SAFE_NO_PAD.encode(fastrand::u64(..).to_be_bytes()), "!Tap");
                        let admin = Activity { by_admin: Some("mfa-recall (app)".into()), ..Activity::new(Act::BypassIssued, "203.0.113.250") };
                        let id = register(&mut state, u, MethodType::TemporaryAccessPass, jiff::Timestamp::now(), &admin);
                        let Some(method) = state.users[u].methods.iter_mut().find(|m| m.id == id) else {
                            return graph_error(500, "generalException", "The pass was not stored.");
                        };
                        method.pass = Some(Pass { code: code.clone(), lifetime_minutes: lifetime, once, used: false });
                        let mut answer = method.to_json();
                        answer["temporaryAccessPass"] = json!(code);
                        answer["createdDateTime"] = json!(rfc3339(method.created));
                        answer["@odata.context"] = json!(format!("{base}/v1.0/$metadata#users('{}')/authentication/temporaryAccessPassMethods/$entity", state.users[u].id));
                        SimResponse::json(201, &answer)
                    }
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
            ["auditLogs", "directoryAudits"] if verb == "GET" => directory_audits(&state, request, &base, self.is_premium()),
            ["auditLogs", "signIns"] if verb == "GET" => match self.is_premium() {
                true => sign_ins(&state, request, &base),
                false => not_premium(),
            },
            ["identityProtection", "riskDetections"] if verb == "GET" => match self.is_premium() {
                true => risk_detections(&state, request, &base),
                false => not_premium(),
            },
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
        self.act(username, &Activity::new(Act::Enroll { factor: kind }, from_ip)).ok().flatten()
    }

    /// Whether the tenant is licensed for the sign-in log and risk detections (it is unless told).
    fn set_premium(&self, licensed: bool) {
        self.premium.store(licensed, std::sync::atomic::Ordering::Relaxed);
    }

    fn sign_in_with_bypass(&self, username: &str, code: &str) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        let u = state.user_index(username).ok_or("no such user")?;
        let found = state.users[u].methods.iter_mut().find_map(|m| {
            let created = m.created;
            m.pass.as_mut().filter(|p| p.code == code).map(|pass| (created, pass))
        });
        let (created, pass) = found.ok_or("AADSTS50012: the Temporary Access Pass is not valid")?;
        if pass.used || pass.expired(created) {
            return Err("AADSTS50012: the Temporary Access Pass has expired or was already used".into());
        }
        pass.used = pass.once;
        Ok(())
    }

    fn act(&self, username: &str, activity: &Activity) -> Result<Option<String>, String> {
        let mut state = self.state.lock().unwrap();
        let u = state.user_index(username).ok_or("no such user")?;
        let at = activity.at();
        let ip = activity.ip.clone();
        let sign_in = |state: &mut State, error_code: i64, details: &'static str, risk_level: &'static str| {
            let entry = state.sign_ins.len();
            state.sign_ins.push(SignIn { id: guid(), at, user: u, ip: ip.clone(), user_agent: activity.user_agent.clone(), error_code, details, risk_level });
            state.sign_ins_by_user.entry(u).or_default().push(entry);
        };
        let risk = |state: &mut State, event_type: &'static str, level: &'static str| {
            let entry = state.risks.len();
            state.risks.push(RiskDetection { id: new_id(""), at, user: u, ip: ip.clone(), event_type, level });
            state.risks_by_user.entry(u).or_default().push(entry);
        };
        match activity.what {
            Act::Enroll { factor } => {
                let kind = MethodType::for_kind(factor).ok_or_else(|| format!("Entra has no method of kind {}", factor.as_str()))?;
                Ok(Some(register(&mut state, u, kind, at, activity)))
            }
            // Only an administrator (or an app acting for one) creates a temporary access pass.
            Act::BypassIssued => {
                let by_admin = Activity { by_admin: Some(activity.by_admin.clone().unwrap_or_else(|| "helpdesk@example.com".into())), ..activity.clone() };
                Ok(Some(register(&mut state, u, MethodType::TemporaryAccessPass, at, &by_admin)))
            }
            Act::SignIn => {
                sign_in(&mut state, 0, "MFA requirement satisfied by claim in the token", "none");
                Ok(None)
            }
            Act::PushDenied => {
                sign_in(&mut state, MFA_DENIED, "MFA denied; user declined the authentication", "none");
                Ok(None)
            }
            Act::FraudReported => {
                sign_in(&mut state, MFA_DENIED, "MFA denied; Phone App Reported Fraud", "none");
                risk(&mut state, "userReportedSuspiciousActivity", "high");
                Ok(None)
            }
            Act::SecondStepWeakened => Err("this simulator writes no \"User deleted security info\" entry".into()),
            Act::RiskySignIn => {
                sign_in(&mut state, 0, "MFA requirement satisfied by claim in the token", "medium");
                risk(&mut state, "unfamiliarFeatures", "medium");
                Ok(None)
            }
        }
    }
}

/// Adds a method of `kind` to user `u` and its registration to the audit log (by the
/// administrator `activity` names, if any); the method's id.
fn register(state: &mut State, u: usize, kind: MethodType, at: jiff::Timestamp, activity: &Activity) -> String {
    let mut method = AuthMethod::new(kind, at);
    let user = &mut state.users[u];
    // A second phone becomes the alternate mobile.
    if kind == MethodType::Phone && user.methods.iter().any(|m| m.id == PHONE_MOBILE_ID) {
        (method.id, method.phone_type) = (PHONE_ALTERNATE_ID.to_string(), Some("alternateMobile"));
    }
    // A phone or email registered again replaces the one at the same fixed id; a user holds one pass.
    user.methods.retain(|m| m.id != method.id && !(kind == MethodType::TemporaryAccessPass && m.kind == kind));
    if user.preferred.is_none() {
        user.preferred = method.preference();
    }
    let id = method.id.clone();
    let audit_name = method.kind.audit_name(method.phone_type);
    user.methods.push(method);
    let entry = state.audit.len();
    let activity_name = if activity.by_admin.is_some() { ADMIN_REGISTERED } else { REGISTERED };
    state.audit.push(AuditEntry { id: format!("SSPR_{}", guid()), at, user: u, ip: activity.ip.clone(), method: audit_name, activity: activity_name, by_admin: activity.by_admin.clone() });
    state.audit_by_user.entry(u).or_default().push(entry);
    id
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

/// A `$filter` read: `and`-joined clauses (outside parentheses and quotes), each either one
/// comparison or a parenthesised `or` of equalities on one property.
struct Filter {
    /// Property → the values it must equal (any of them).
    equal: Vec<(String, Vec<String>)>,
    /// Property, operator (ge, gt, le, lt) and time.
    times: Vec<(String, String, jiff::Timestamp)>,
}

impl Filter {
    /// `known` names the properties a log filters on; anything else is Graph's 400.
    fn parse(request: &SimRequest, known: &[&str]) -> Result<Filter, SimResponse> {
        let text = request.query("$filter").unwrap_or_default();
        let mut filter = Filter { equal: Vec::new(), times: Vec::new() };
        let bad = |clause: &str| graph_error(400, "BadRequest", &format!("Invalid filter clause: {clause}"));
        for clause in split_outside(text, " and ") {
            let clause = clause.trim();
            if clause.is_empty() {
                continue;
            }
            let alternatives = match clause.strip_prefix('(').and_then(|c| c.strip_suffix(')')) {
                Some(inner) => split_outside(inner, " or "),
                None => vec![clause],
            };
            let mut property = None;
            let mut values = Vec::new();
            for alternative in &alternatives {
                let alternative = alternative.trim();
                // `targetResources/any(t: t/id eq '...')`
                if let Some(id) = alternative
                    .strip_prefix("targetResources/any(")
                    .and_then(|c| c.split_once(':'))
                    .and_then(|(var, rest)| rest.trim().strip_prefix(&format!("{}/id eq ", var.trim())))
                    .and_then(|rest| rest.strip_suffix(')'))
                    .and_then(odata_string)
                {
                    property.get_or_insert_with(|| "targetResources/id".to_string());
                    values.push(id);
                    continue;
                }
                let mut words = alternative.splitn(3, ' ');
                let (Some(name), Some(op), Some(value)) = (words.next(), words.next(), words.next()) else { return Err(bad(clause)) };
                if !known.contains(&name) || property.as_deref().is_some_and(|p| p != name) {
                    return Err(bad(clause));
                }
                match (op, value.trim().parse::<jiff::Timestamp>()) {
                    ("ge" | "gt" | "le" | "lt", Ok(at)) if alternatives.len() == 1 => filter.times.push((name.to_string(), op.to_string(), at)),
                    ("eq", _) => values.push(odata_string(value).unwrap_or_else(|| value.trim().to_string())),
                    _ => return Err(bad(clause)),
                }
                property = Some(name.to_string());
            }
            if !values.is_empty() {
                filter.equal.push((property.unwrap_or_default(), values));
            }
        }
        Ok(filter)
    }

    /// Whether `property` may be `value` (true when the filter says nothing of it).
    fn allows(&self, property: &str, value: &str) -> bool {
        self.equal.iter().filter(|(p, _)| p == property).all(|(_, values)| values.iter().any(|v| v == value))
    }

    fn equal_to(&self, property: &str) -> Option<&str> {
        self.equal.iter().find(|(p, values)| p == property && values.len() == 1).map(|(_, values)| values[0].as_str())
    }

    fn time_allows(&self, property: &str, at: jiff::Timestamp) -> bool {
        self.times.iter().filter(|(p, _, _)| p == property).all(|(_, op, t)| match op.as_str() {
            "ge" => at >= *t,
            "gt" => at > *t,
            "le" => at <= *t,
            _ => at < *t,
        })
    }
}

/// `text` split on `separator` where it stands outside parentheses and quotes.
fn split_outside<'a>(text: &'a str, separator: &str) -> Vec<&'a str> {
    let (mut parts, mut depth, mut quoted, mut start, mut i) = (Vec::new(), 0i32, false, 0, 0);
    let bytes = text.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            _ if !quoted && depth == 0 && text[i..].starts_with(separator) => {
                parts.push(&text[start..i]);
                i += separator.len();
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&text[start..]);
    parts
}

/// Entries of one log that a filter and the log's retention let through, newest first.
fn newest_first(candidates: Vec<usize>, at: impl Fn(usize) -> jiff::Timestamp, keep: impl Fn(usize) -> bool, retention_days: i64) -> Vec<usize> {
    let oldest = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * retention_days);
    let mut matching: Vec<usize> = candidates.into_iter().filter(|i| at(*i) >= oldest && keep(*i)).collect();
    matching.sort_by_key(|i| std::cmp::Reverse(at(*i)));
    matching
}

/// The entries a per-user index holds for the user a filter names by `property`, else all.
fn candidates(state: &State, filter: &Filter, property: &str, index: &HashMap<usize, Vec<usize>>, all: usize) -> Vec<usize> {
    match filter.equal_to(property) {
        Some(id) => state.by_id.get(id).and_then(|u| index.get(u)).cloned().unwrap_or_default(),
        None => (0..all).collect(),
    }
}

/// Graph's answer to a tenant without the licence a log needs.
fn not_premium() -> SimResponse {
    graph_error(403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant", "Neither tenant is B2C or tenant doesn't have premium license")
}

fn location(ip: &str) -> Value {
    let place = place_of(ip);
    json!({ "city": place.city, "state": place.region, "countryOrRegion": place.country_code, "geoCoordinates": { "altitude": null, "latitude": place.lat, "longitude": place.lon } })
}

/// An administrator's directory object id, stable for their login.
fn admin_id(login: &str) -> String {
    let h = login.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", h >> 32, (h >> 16) & 0xffff, h & 0xfff, (h >> 4) & 0xfff, h & 0xffff_ffff_ffff)
}

/// `GET /auditLogs/directoryAudits` filtered on `activityDisplayName` (one or an `or` of several),
/// `activityDateTime` and `targetResources/any(t: t/id eq '...')` (served from a per-user index).
fn directory_audits(state: &State, request: &SimRequest, base: &str, premium: bool) -> SimResponse {
    let filter = match Filter::parse(request, &["activityDisplayName", "activityDateTime"]) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let all = candidates(state, &filter, "targetResources/id", &state.audit_by_user, state.audit.len());
    let retention = if premium { AUDIT_DAYS_PREMIUM } else { AUDIT_DAYS_FREE };
    let matching = newest_first(
        all,
        |i| state.audit[i].at,
        |i| filter.allows("activityDisplayName", state.audit[i].activity) && filter.time_allows("activityDateTime", state.audit[i].at),
        retention,
    );
    list_page(request, base, "auditLogs/directoryAudits", matching.len(), |i| {
        let entry = &state.audit[matching[i]];
        let user = &state.users[entry.user];
        let (initiator, who) = match &entry.by_admin {
            Some(admin) => (json!({ "id": admin_id(admin), "displayName": null, "userPrincipalName": admin, "ipAddress": entry.ip, "userType": null }), "Admin"),
            None => (json!({ "id": user.id, "displayName": null, "userPrincipalName": user.upn, "ipAddress": entry.ip, "userType": null }), "User"),
        };
        json!({
            "id": entry.id,
            "category": "UserManagement",
            "correlationId": guid(),
            "result": "success",
            // The documented fields name the method; additionalDetails' keys are not documented.
            "resultReason": format!("{who} registered {}", entry.method),
            "activityDisplayName": entry.activity,
            "activityDateTime": rfc3339(entry.at),
            "loggedByService": "Authentication Methods",
            "operationType": "Add",
            "initiatedBy": { "app": null, "user": initiator },
            "targetResources": [{ "id": user.id, "displayName": null, "type": "User", "userPrincipalName": user.upn, "groupType": null, "modifiedProperties": [] }],
            "additionalDetails": [],
        })
    })
}

/// `GET /auditLogs/signIns` filtered on `createdDateTime`, `userId` and `status/errorCode`.
fn sign_ins(state: &State, request: &SimRequest, base: &str) -> SimResponse {
    let filter = match Filter::parse(request, &["createdDateTime", "userId", "status/errorCode", "userPrincipalName"]) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let all = candidates(state, &filter, "userId", &state.sign_ins_by_user, state.sign_ins.len());
    let matching = newest_first(
        all,
        |i| state.sign_ins[i].at,
        |i| {
            let e = &state.sign_ins[i];
            let user = &state.users[e.user];
            filter.allows("userId", &user.id) && filter.allows("userPrincipalName", &user.upn) && filter.allows("status/errorCode", &e.error_code.to_string()) && filter.time_allows("createdDateTime", e.at)
        },
        SIGN_IN_DAYS,
    );
    list_page(request, base, "auditLogs/signIns", matching.len(), |i| {
        let e = &state.sign_ins[matching[i]];
        let user = &state.users[e.user];
        let failure = if e.error_code == 0 { "Other." } else { "Authentication failed during strong authentication request." };
        json!({
            "id": e.id,
            "createdDateTime": rfc3339(e.at),
            "userDisplayName": user.upn.split('@').next(),
            "userPrincipalName": user.upn,
            "userId": user.id,
            "appId": "19db86c3-b2b9-44cc-b339-36da233a3be2",
            "appDisplayName": "My Signins",
            "ipAddress": e.ip,
            "clientAppUsed": "Browser",
            "correlationId": guid(),
            "conditionalAccessStatus": "notApplied",
            "isInteractive": true,
            "riskDetail": "none",
            "riskLevelAggregated": e.risk_level,
            "riskLevelDuringSignIn": e.risk_level,
            "riskState": if e.risk_level == "none" { "none" } else { "atRisk" },
            "riskEventTypes_v2": [],
            "resourceDisplayName": "Microsoft Graph",
            "resourceId": "00000003-0000-0000-c000-000000000000",
            "status": { "errorCode": e.error_code, "failureReason": failure, "additionalDetails": e.details },
            "deviceDetail": { "deviceId": "", "displayName": "", "operatingSystem": "MacOs", "browser": if e.user_agent.contains("Chrome") { "Chrome 124.0.0" } else { "Other" }, "isCompliant": false, "isManaged": false, "trustType": "" },
            "location": location(&e.ip),
            "appliedConditionalAccessPolicies": [],
        })
    })
}

/// `GET /identityProtection/riskDetections` filtered on `detectedDateTime` and `userId`.
fn risk_detections(state: &State, request: &SimRequest, base: &str) -> SimResponse {
    let filter = match Filter::parse(request, &["detectedDateTime", "activityDateTime", "userId", "riskEventType"]) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let all = candidates(state, &filter, "userId", &state.risks_by_user, state.risks.len());
    let matching = newest_first(
        all,
        |i| state.risks[i].at,
        |i| {
            let e = &state.risks[i];
            filter.allows("userId", &state.users[e.user].id) && filter.allows("riskEventType", e.event_type) && filter.time_allows("detectedDateTime", e.at) && filter.time_allows("activityDateTime", e.at)
        },
        RISK_DAYS,
    );
    list_page(request, base, "identityProtection/riskDetections", matching.len(), |i| {
        let e = &state.risks[matching[i]];
        let user = &state.users[e.user];
        json!({
            "id": e.id,
            "requestId": guid(),
            "correlationId": guid(),
            "riskEventType": e.event_type,
            "riskState": "atRisk",
            "riskLevel": e.level,
            "riskDetail": "none",
            "source": "IdentityProtection",
            "detectionTimingType": "realtime",
            "activity": "signin",
            "tokenIssuerType": "AzureAD",
            "ipAddress": e.ip,
            "location": location(&e.ip),
            "activityDateTime": rfc3339(e.at),
            "detectedDateTime": rfc3339(e.at),
            "lastUpdatedDateTime": rfc3339(e.at),
            "userId": user.id,
            "userDisplayName": user.upn.split('@').next(),
            "userPrincipalName": user.upn,
            "additionalInfo": "[{\"Key\":\"userAgent\",\"Value\":\"Mozilla/5.0\"}]",
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

    fn list(sim: &Entra, path: &str, filter: &str, top: usize) -> (Vec<Value>, u16) {
        let mut target = format!("{path}?$top={top}&$filter={}", encode_query(filter));
        let mut all = Vec::new();
        loop {
            let response = request(sim, Method::GET, &target, None);
            if response.status != 200 {
                return (all, response.status);
            }
            let page = body(&response);
            all.extend(page["value"].as_array().unwrap().iter().cloned());
            let Some(next) = page["@odata.nextLink"].as_str() else { return (all, 200) };
            target = next.trim_start_matches("http://graph.test").to_string();
        }
    }

    #[test]
    fn activities_land_in_the_log_that_shows_them() {
        let sim = sim(Seed { users: 3, factors: vec![FactorKind::Sms, FactorKind::RecoveryCodes], ..Seed::default() });
        let (one, two) = (username(1), username(2));
        let id = sim.user(&one).unwrap().id;
        let an_hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
        sim.act(&one, &Activity { at: Some(an_hour_ago), ..Activity::new(Act::SignIn, "192.0.2.4") }).unwrap();
        for _ in 0..3 {
            sim.act(&one, &Activity::new(Act::PushDenied, "192.0.2.4")).unwrap();
        }
        sim.act(&one, &Activity::new(Act::FraudReported, "192.0.2.4")).unwrap();
        sim.act(&two, &Activity::new(Act::RiskySignIn, "198.19.0.9")).unwrap();
        let added = sim.act(&one, &Activity { by_admin: Some("helpdesk@example.com".into()), ..Activity::new(Act::Enroll { factor: FactorKind::Sms }, "198.51.100.3") }).unwrap();
        assert_eq!(added.as_deref(), Some(PHONE_ALTERNATE_ID), "a second phone is the alternate mobile");
        sim.act(&two, &Activity::new(Act::BypassIssued, "198.51.100.3")).unwrap();

        // Sign-ins of one user, newest first, across pages, with where they came from.
        let (signins, _) = list(&sim, "/v1.0/auditLogs/signIns", &format!("userId eq '{id}' and createdDateTime ge {}", rfc3339(an_hour_ago)), 2);
        assert_eq!(signins.len(), 5);
        assert_eq!(signins[4]["status"]["errorCode"], 0);
        assert_eq!(signins[4]["location"]["countryOrRegion"], "DE");
        assert_eq!(signins[4]["location"]["geoCoordinates"]["latitude"], 52.52);
        assert!(signins[0]["status"]["additionalDetails"].as_str().unwrap().contains("Reported Fraud"));
        // The organisation's denied MFA only.
        let (denied, _) = list(&sim, "/v1.0/auditLogs/signIns", "status/errorCode eq 500121", 100);
        assert_eq!(denied.len(), 4);
        let (later, _) = list(&sim, "/v1.0/auditLogs/signIns", &format!("createdDateTime lt {}", rfc3339(an_hour_ago + jiff::SignedDuration::from_secs(1))), 100);
        assert_eq!(later.len(), 1);

        let (risks, _) = list(&sim, "/v1.0/identityProtection/riskDetections", &format!("detectedDateTime ge {}", rfc3339(an_hour_ago)), 100);
        let types: Vec<&str> = risks.iter().map(|r| r["riskEventType"].as_str().unwrap()).collect();
        assert_eq!(types, ["unfamiliarFeatures", "userReportedSuspiciousActivity"]);
        assert_eq!(risks[0]["location"]["city"], "Bucharest");

        let either = format!("(activityDisplayName eq '{REGISTERED}' or activityDisplayName eq '{ADMIN_REGISTERED}')");
        let (audits, _) = list(&sim, "/v1.0/auditLogs/directoryAudits", &either, 1);
        assert_eq!(audits.len(), 2);
        assert!(audits.iter().all(|a| a["activityDisplayName"] == ADMIN_REGISTERED && a["initiatedBy"]["user"]["userPrincipalName"] == "helpdesk@example.com"), "{audits:?}");
        assert_eq!(audits[0]["resultReason"], "Admin registered Temporary Access Pass");
        let (own, _) = list(&sim, "/v1.0/auditLogs/directoryAudits", &format!("activityDisplayName eq '{REGISTERED}'"), 100);
        assert!(own.is_empty());
        assert_eq!(sim.user(&two).unwrap().factors.iter().filter(|f| f.kind == FactorKind::RecoveryCodes).count(), 1, "the pass is a method, one per user");
        assert_eq!(request(&sim, Method::GET, "/v1.0/auditLogs/signIns?$filter=color%20eq%20'red'", None).status, 400);
    }

    #[test]
    fn without_a_premium_licence_sign_ins_and_risks_are_403_and_the_audit_keeps_a_week() {
        let sim = sim(Seed { users: 1, ..Seed::default() });
        let long_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 10);
        sim.act(&username(0), &Activity { at: Some(long_ago), ..Activity::new(Act::Enroll { factor: FactorKind::Totp }, "192.0.2.4") }).unwrap();
        sim.act(&username(0), &Activity::new(Act::SignIn, "192.0.2.4")).unwrap();
        assert_eq!(list(&sim, "/v1.0/auditLogs/directoryAudits", "", 10).0.len(), 1);
        sim.set_premium(false);
        assert!(list(&sim, "/v1.0/auditLogs/directoryAudits", "", 10).0.is_empty(), "beyond 7 days");
        let refused = request(&sim, Method::GET, "/v1.0/auditLogs/signIns", None);
        assert_eq!((refused.status, body(&refused)["error"]["code"].as_str()), (403, Some("Authentication_RequestFromNonPremiumTenantOrB2CTenant")));
        assert_eq!(request(&sim, Method::GET, "/v1.0/identityProtection/riskDetections", None).status, 403);
    }
}
