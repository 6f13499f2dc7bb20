//! Microsoft Entra ID through Microsoft Graph v1.0, authenticated as an app registration with a
//! client secret (client credentials at `{loginUrl}/{tenant}/oauth2/v2.0/token`).
//!
//! What Graph makes awkward, and how this adapter copes:
//! - A user's default MFA method cannot be deleted while another could replace it (400). The
//!   snapshot orders factors so the default (from `signInPreferences`, else a guess) goes last;
//!   when Graph still refuses, the default is moved to a remaining method and the delete retried.
//! - Phone and email methods show no `createdDateTime` and have fixed ids, so a number registered
//!   again after the recall deleted it has the recorded id. Before deleting one, the directory
//!   audit log is asked whether the user registered that method since the cutoff; if so, the
//!   recorded one is already gone and the current one is new, and it is kept.
//! - Sessions cannot be listed or counted: `revokeSignInSessions` ends all of a user's refresh
//!   tokens and session cookies at once, and counts as one revocation per user.
//! - There is no "require re-registration" call: a user with no method left registers again at the
//!   next sign-in that asks for MFA, so `require_enrollment` has nothing to do.

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::auth::{Grant, TokenSource};
use super::http::{Limits, Op, ProviderHttp, SecretKeys};
use super::{
    Capabilities, Enrollment, EnrollmentOrigin, FactorRef, IdentityProvider, Membership, NameMatch, ProviderError, RevokeOutcome, UserPage, UserRef,
    UserSnapshot, enc, first_enrolled_since, selected,
};
use crate::api::{EntraProvider, FactorKind};

const DEFAULT_GRAPH: &str = "https://graph.microsoft.com";
const DEFAULT_LOGIN: &str = "https://login.microsoftonline.com";
/// Largest `$top` Graph allows for users and group members.
const PAGE_SIZE: usize = 999;
/// Fixed ids Graph gives phone methods (by phone type) and the email method.
const PHONE_MOBILE_ID: &str = "3179e48a-750b-4051-897c-87b9720928f7";
const PHONE_ALTERNATE_ID: &str = "b6332ec1-7057-4abe-9331-3d72feddfe41";
const PHONE_OFFICE_ID: &str = "e37fc753-ff3b-4958-9484-eaa9425c82bc";
const EMAIL_ID: &str = "3ddfcfc8-9383-446f-83cc-3ab9be4be18f";
const REGISTERED: &str = "User registered security info";
/// Separates a fixed-id method's collection from the cutoff recorded with it in `provider_type`.
const CUTOFF_MARK: char = '|';

// Graph publishes one budget for reads and writes per app and tenant; the token endpoint is apart.
const CHECK: Op = Op::new("check", "graph");
const LIST_USERS: Op = Op::new("list_users", "graph");
const GET_USER: Op = Op::new("get_user", "graph");
const FIND_GROUP: Op = Op::new("find_group", "graph");
const LIST_FACTORS: Op = Op::new("list_factors", "graph");
const SIGN_IN_PREFERENCES: Op = Op::new("sign_in_preferences", "graph");
const DELETE_FACTOR: Op = Op::new("delete_factor", "graph");
const REVOKE_SESSIONS: Op = Op::new("revoke_sessions", "graph");
const AUDIT_LOG: Op = Op::new("audit_log", "graph");
const UPDATE_USER: Op = Op::new("update_user", "graph");

pub struct Entra {
    http: ProviderHttp,
    auth: TokenSource,
    /// `{graphUrl}`, without `/v1.0`; `@odata.nextLink`s must start with it.
    graph: String,
}

/// The recall's kind and the collection that deletes it, for each method type; the password is none.
fn method_type(odata_type: &str) -> Option<(FactorKind, &'static str)> {
    let name = odata_type.trim_start_matches("#microsoft.graph.");
    Some(match name {
        "phoneAuthenticationMethod" => (FactorKind::Sms, "phoneMethods"),
        "microsoftAuthenticatorAuthenticationMethod" => (FactorKind::Push, "microsoftAuthenticatorMethods"),
        "fido2AuthenticationMethod" => (FactorKind::Webauthn, "fido2Methods"),
        "softwareOathAuthenticationMethod" => (FactorKind::Totp, "softwareOathMethods"),
        "hardwareOathAuthenticationMethod" => (FactorKind::HardwareToken, "hardwareOathMethods"),
        "emailAuthenticationMethod" => (FactorKind::Email, "emailMethods"),
        // A temporary access pass is Entra's one-off fallback credential: the recovery codes kind.
        "temporaryAccessPassAuthenticationMethod" => (FactorKind::RecoveryCodes, "temporaryAccessPassMethods"),
        "windowsHelloForBusinessAuthenticationMethod" => (FactorKind::Passkey, "windowsHelloForBusinessMethods"),
        "platformCredentialAuthenticationMethod" => (FactorKind::Passkey, "platformCredentialMethods"),
        _ => return None,
    })
}

/// Collections whose method ids are fixed, so a new registration can carry a recorded id.
fn has_fixed_ids(collection: &str) -> bool {
    matches!(collection, "phoneMethods" | "emailMethods")
}

/// The `userPreferredMethodForSecondaryAuthentication` value that makes a method the default.
fn preference(collection: &str, id: &str) -> Option<&'static str> {
    match collection {
        "microsoftAuthenticatorMethods" => Some("push"),
        "softwareOathMethods" => Some("oath"),
        "phoneMethods" if id == PHONE_ALTERNATE_ID => Some("voiceAlternateMobile"),
        "phoneMethods" if id == PHONE_OFFICE_ID => Some("voiceOffice"),
        "phoneMethods" => Some("sms"),
        _ => None,
    }
}

/// Whether the sign-in preference names this method's type.
fn is_preferred(preferred: &str, collection: &str, id: &str) -> bool {
    let own = preference(collection, id);
    own == Some(preferred) || (preferred == "voiceMobile" && own == Some("sms"))
}

/// Deletion order: methods that cannot be a default first, then the usual defaults from the
/// least to the most likely (phone, code, push), and the known default last of all.
fn deletion_rank(collection: &str, id: &str, preferred: Option<&str>) -> (bool, u8) {
    let likely = match preference(collection, id) {
        None => 0,
        Some("push") => 3,
        Some("oath") => 2,
        Some(_) => 1,
    };
    (preferred.is_some_and(|p| is_preferred(p, collection, id)), likely)
}

/// What a registration in the audit log registered, by its `Method` detail. The wording is
/// matched loosely: Graph does not document these values.
fn registered_kind(method: &str) -> Option<(FactorKind, Option<&'static str>)> {
    let m = method.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    Some(if has(&["temporary access pass"]) {
        (FactorKind::RecoveryCodes, None)
    } else if has(&["windows hello", "platform credential"]) {
        (FactorKind::Passkey, None)
    } else if has(&["fido", "security key", "passkey"]) {
        (FactorKind::Webauthn, None)
    } else if has(&["authenticator", "notification"]) {
        (FactorKind::Push, None)
    } else if has(&["hardware"]) {
        (FactorKind::HardwareToken, None)
    } else if has(&["oath", "software token", "verification code"]) {
        (FactorKind::Totp, None)
    } else if has(&["email"]) {
        (FactorKind::Email, Some(EMAIL_ID))
    } else if has(&["alternate"]) {
        (FactorKind::Sms, Some(PHONE_ALTERNATE_ID))
    } else if has(&["office"]) {
        (FactorKind::Sms, Some(PHONE_OFFICE_ID))
    } else if has(&["phone", "sms", "voice"]) {
        (FactorKind::Sms, Some(PHONE_MOBILE_ID))
    } else {
        return None;
    })
}

/// `provider_type` of a factor: its collection, and for fixed-id collections the cutoff too.
fn provider_type(collection: &str, cutoff: jiff::Timestamp) -> String {
    if has_fixed_ids(collection) { format!("{collection}{CUTOFF_MARK}{}", odata_time(cutoff)) } else { collection.to_string() }
}

fn split_provider_type(provider_type: &str) -> (&str, Option<jiff::Timestamp>) {
    match provider_type.split_once(CUTOFF_MARK) {
        Some((collection, cutoff)) => (collection, cutoff.parse().ok()),
        None => (provider_type, None),
    }
}

/// A DateTimeOffset literal for `$filter`, to the millisecond (rounded down, so `ge` includes the cutoff).
fn odata_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Graph shows times to the millisecond or coarser: a time shown equal to the cutoff's
/// millisecond may be after it, so it counts as after (never delete what may be new).
fn at_or_after(shown: jiff::Timestamp, cutoff: jiff::Timestamp) -> bool {
    shown.as_millisecond() >= cutoff.as_millisecond()
}

/// An OData string literal.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn looks_like_object_id(text: &str) -> bool {
    text.len() == 36 && text.chars().enumerate().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

#[derive(Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    id: String,
    user_principal_name: Option<String>,
}

impl From<User> for UserRef {
    fn from(u: User) -> Self {
        let username = u.user_principal_name.unwrap_or_else(|| u.id.clone());
        UserRef { id: u.id, username }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthMethod {
    #[serde(rename = "@odata.type")]
    odata_type: String,
    id: String,
    /// QUIRK: null for phone, email and password methods.
    created_date_time: Option<String>,
}

impl AuthMethod {
    fn created(&self) -> Option<jiff::Timestamp> {
        self.created_date_time.as_deref().and_then(|t| t.parse().ok())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignInPreferences {
    user_preferred_method_for_secondary_authentication: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DirectoryAudit {
    activity_date_time: String,
    result: Option<String>,
    initiated_by: Option<Value>,
    #[serde(default)]
    additional_details: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct KeyValue {
    key: Option<String>,
    value: Option<String>,
}

/// One "User registered security info" entry, read.
struct Registration {
    at: jiff::Timestamp,
    kind: FactorKind,
    /// The fixed id the registered method has, for phones and email.
    fixed_id: Option<&'static str>,
    ip: Option<String>,
}

impl Entra {
    pub fn new(backend: &str, spec: &EntraProvider, keys: &SecretKeys, limits: Limits) -> Result<Self, ProviderError> {
        let graph = spec.graph_url.as_deref().unwrap_or(DEFAULT_GRAPH).trim_end_matches('/').to_string();
        let login = spec.login_url.as_deref().unwrap_or(DEFAULT_LOGIN).trim_end_matches('/');
        let grant = Grant::ClientSecret { client_id: keys.get("client-id")?, client_secret: keys.get("client-secret")? };
        // Client credentials ask for the app's application permissions on this Graph (national clouds have their own).
        let scope = format!("{graph}/.default");
        Ok(Self {
            http: ProviderHttp::new(backend, limits)?,
            auth: TokenSource::new(format!("{login}/{}/oauth2/v2.0/token", enc(&spec.tenant_id)), grant, vec![("scope", scope)], keys.name.to_string()),
            graph,
        })
    }

    /// One Graph call with the app's token; a 401 refreshes the token once. `target` is a path
    /// under `/v1.0` or an `@odata.nextLink`. Any status but 401 and 403 is the caller's to read.
    async fn exchange(&self, op: Op, method: Method, target: &str, query: &[(&str, String)], body: Option<&Value>) -> Result<(StatusCode, Value), ProviderError> {
        let url = if target.starts_with('/') {
            format!("{}/v1.0{target}", self.graph)
        } else if target.starts_with(&format!("{}/", self.graph)) {
            target.to_string()
        } else {
            // The token must never go anywhere but Graph.
            return Err(ProviderError::Rejected(format!("IdentityBackend {}: Graph sent a next page link outside {}", self.http.backend, self.graph)));
        };
        let path = url.trim_start_matches(&self.graph).split('?').next().unwrap_or_default().to_string();
        let reply = self
            .auth
            .send(&self.http, op, || self.http.json_request(&method, &url, query, body))
            .await?;
        let value = reply.value();
        match reply.status {
            StatusCode::UNAUTHORIZED => Err(ProviderError::Auth(format!(
                "IdentityBackend {}: 401 from {method} {path} ({}): Graph refused the app's token; check the app registration in Secret {}",
                self.http.backend,
                brief(&value),
                self.auth.secret_name
            ))),
            StatusCode::FORBIDDEN => Err(ProviderError::Auth(format!(
                "IdentityBackend {}: 403 from {method} {path} ({}): grant the app registration the Graph application permissions User.Read.All, GroupMember.Read.All, UserAuthenticationMethod.ReadWrite.All, User.RevokeSessions.All and AuditLog.Read.All, with admin consent",
                self.http.backend,
                brief(&value)
            ))),
            status => Ok((status, value)),
        }
    }

    /// Like `exchange`, but any failure other than 404 is an error.
    async fn call(&self, op: Op, method: Method, target: &str, query: &[(&str, String)], body: Option<&Value>) -> Result<(StatusCode, Value), ProviderError> {
        let (status, value) = self.exchange(op, method.clone(), target, query, body).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok((status, value));
        }
        Err(ProviderError::Rejected(format!(
            "IdentityBackend {}: {status} from {method} {}: {}",
            self.http.backend,
            target.split('?').next().unwrap_or_default().trim_start_matches(&self.graph),
            brief(&value)
        )))
    }

    /// A GET read as `T`; None on 404.
    async fn get<T: DeserializeOwned>(&self, op: Op, target: &str, query: &[(&str, String)]) -> Result<Option<T>, ProviderError> {
        let (status, value) = self.call(op, Method::GET, target, query, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| ProviderError::Rejected(format!("IdentityBackend {}: unexpected body from GET {}: {e}", self.http.backend, target.split('?').next().unwrap_or_default())))
    }

    /// One page of users from `first` (a path with its query) or from a `next` link.
    async fn user_page(&self, first: &str, query: &[(&str, String)], next: Option<&str>) -> Result<(Vec<UserRef>, Option<String>), ProviderError> {
        let page: Page<User> = match next {
            Some(link) => self.get(LIST_USERS, link, &[]).await?,
            None => self.get(LIST_USERS, first, query).await?,
        }
        .ok_or_else(|| ProviderError::NotFound(format!("IdentityBackend {}: {first} not found", self.http.backend)))?;
        Ok((page.value.into_iter().map(UserRef::from).collect(), page.next_link))
    }

    fn member_query() -> Vec<(&'static str, String)> {
        vec![("$top", PAGE_SIZE.to_string()), ("$select", "id,userPrincipalName".into())]
    }

    /// A group's id from its display name (or its object id).
    async fn find_group(&self, wanted: &str) -> Result<String, ProviderError> {
        let query = [("$filter", format!("displayName eq {}", quoted(wanted))), ("$select", "id,displayName".into())];
        let found: Page<Group> = self.get(FIND_GROUP, "/groups", &query).await?.unwrap_or(Page { value: vec![], next_link: None });
        match found.value.as_slice() {
            [one] => Ok(one.id.clone()),
            [] if looks_like_object_id(wanted) => Ok(wanted.to_string()),
            [] => Err(ProviderError::NotFound(format!("IdentityBackend {}: group {wanted} not found", self.http.backend))),
            _ => Err(ProviderError::Config(format!(
                "IdentityBackend {}: more than one group is named {wanted}: name it by its object id instead",
                self.http.backend
            ))),
        }
    }

    async fn methods(&self, user: &UserRef) -> Result<Vec<AuthMethod>, ProviderError> {
        let page: Page<AuthMethod> =
            self.get(LIST_FACTORS, &format!("/users/{}/authentication/methods", enc(&user.id)), &[]).await?.ok_or_else(|| self.user_gone(user))?;
        Ok(page.value)
    }

    /// The user's preferred second-factor type, or None when there is none or Graph won't say
    /// (then the deletion order falls back to a guess, and a refusal is handled when it comes).
    async fn preferred_method(&self, user: &UserRef) -> Option<String> {
        let path = format!("/users/{}/authentication/signInPreferences", enc(&user.id));
        match self.get::<SignInPreferences>(SIGN_IN_PREFERENCES, &path, &[]).await {
            Ok(found) => found.and_then(|p| p.user_preferred_method_for_secondary_authentication),
            Err(e) => {
                tracing::debug!(backend = %self.http.backend, error = %e, "sign-in preferences unavailable; guessing the default method");
                None
            }
        }
    }

    /// The user's security-info registrations since `cutoff`, from the directory audit log.
    async fn registered_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Vec<Registration>, ProviderError> {
        let filter = format!(
            "activityDisplayName eq {} and activityDateTime ge {} and targetResources/any(t: t/id eq {})",
            quoted(REGISTERED),
            odata_time(cutoff),
            quoted(&user.id)
        );
        let query = [("$filter", filter)];
        let mut registrations = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page: Page<DirectoryAudit> = match &next {
                Some(link) => self.get(AUDIT_LOG, link, &[]).await?,
                None => self.get(AUDIT_LOG, "/auditLogs/directoryAudits", &query).await?,
            }
            .ok_or_else(|| ProviderError::NotFound(format!("IdentityBackend {}: the directory audit log is not available", self.http.backend)))?;
            for entry in page.value {
                if entry.result.as_deref().is_some_and(|r| r != "success") {
                    continue;
                }
                let Ok(at) = entry.activity_date_time.parse::<jiff::Timestamp>() else { continue };
                let method = entry.additional_details.iter().find(|d| d.key.as_deref() == Some("Method")).and_then(|d| d.value.as_deref()).unwrap_or_default();
                let Some((kind, fixed_id)) = registered_kind(method) else { continue };
                let ip = entry.initiated_by.as_ref().and_then(|i| i.pointer("/user/ipAddress")).and_then(Value::as_str).filter(|ip| !ip.is_empty()).map(String::from);
                registrations.push(Registration { at, kind, fixed_id, ip });
            }
            match page.next_link {
                Some(link) => next = Some(link),
                None => return Ok(registrations),
            }
        }
    }

    async fn delete_method(&self, user: &UserRef, collection: &str, id: &str) -> Result<(StatusCode, Value), ProviderError> {
        let path = format!("/users/{}/authentication/{collection}/{}", enc(&user.id), enc(id));
        self.exchange(DELETE_FACTOR, Method::DELETE, &path, &[], None).await
    }

    /// Makes another registered method the user's default so Graph lets `factor` go.
    async fn move_default_away(&self, user: &UserRef, collection: &str, factor: &FactorRef) -> Result<(), ProviderError> {
        let own = preference(collection, &factor.id);
        let target = self
            .methods(user)
            .await?
            .into_iter()
            .filter(|m| m.id != factor.id)
            .filter_map(|m| {
                let (_, other_collection) = method_type(&m.odata_type)?;
                preference(other_collection, &m.id).filter(|p| Some(*p) != own)
            })
            .min_by_key(|p| match *p {
                "push" => 0,
                "oath" => 1,
                _ => 2,
            });
        let Some(target) = target else {
            return Err(ProviderError::Rejected(format!(
                "IdentityBackend {}: Graph refuses to delete {collection} {} of {}: it is the default method and no other registered method can become the default; change the user's default method in the Entra admin center",
                self.http.backend, factor.id, user.username
            )));
        };
        let path = format!("/users/{}/authentication/signInPreferences", enc(&user.id));
        self.call(SIGN_IN_PREFERENCES, Method::PATCH, &path, &[], Some(&json!({ "userPreferredMethodForSecondaryAuthentication": target }))).await?;
        Ok(())
    }

    fn user_gone(&self, user: &UserRef) -> ProviderError {
        ProviderError::NotFound(format!("IdentityBackend {}: user {} no longer exists", self.http.backend, user.username))
    }
}

#[async_trait]
impl IdentityProvider for Entra {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list_factors: true,
            // Phone and email methods show none.
            factor_creation_time: false,
            delete_factor: true,
            revoke_sessions: true,
            count_sessions: false,
            force_re_enrollment: true,
            enrollment_detection: true,
            disable_user: true,
            nested_groups: true,
            // User principal names and mail addresses are case-insensitive in Entra ID.
            name_match: NameMatch::CaseInsensitive,
            inseparable: Vec::new(),
            limitations: vec![
                "sessions: Graph cannot list or count a user's sessions; revokeSignInSessions ends all their refresh tokens and session cookies at once, so sessionsRevoked counts one revocation per user. Access tokens already issued stay valid until they expire (up to about an hour)".into(),
                "factors: phone and email methods have no creation time in Graph and fixed ids; they are deleted only as recorded before the user was touched, and kept when the audit log shows the user registered them again since the cutoff".into(),
                "enrollment: Graph has no call that requires re-registration; a user left without methods registers again at the next sign-in that asks for MFA, but a user who keeps methods of kinds not recalled is not asked to replace the kinds lost".into(),
                "detection: the directory audit log gives only the IP address of a registration (no user agent, location or network), arrives minutes late and is kept 7 days (30 with Entra ID P1); older registrations are seen by method creation time, which phone and email methods lack".into(),
            ],
        }
    }

    async fn check(&self) -> Result<(), ProviderError> {
        self.call(CHECK, Method::GET, "/users", &[("$top", "1".into()), ("$select", "id".into())], None).await?;
        Ok(())
    }

    async fn list_users(&self, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        // Cursor: the next link.
        let (users, next) = self.user_page("/users", &Self::member_query(), cursor).await?;
        Ok(UserPage { users, next })
    }

    async fn group_members(&self, group: &str, membership: Membership, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        // Cursor: the next link. Graph resolves nesting itself: transitiveMembers reaches the
        // users of every nested group, members only the group's own.
        let (users, next) = match cursor {
            Some(link) => self.user_page("", &[], Some(link)).await?,
            None => {
                let id = self.find_group(group).await?;
                let relation = match membership {
                    Membership::Transitive => "transitiveMembers",
                    Membership::Direct => "members",
                };
                self.user_page(&format!("/groups/{}/{relation}/microsoft.graph.user", enc(&id)), &Self::member_query(), None).await?
            }
        };
        Ok(UserPage { users, next })
    }

    async fn find_user(&self, name: &str) -> Result<Vec<UserRef>, ProviderError> {
        // Graph takes the object id or the user principal name where the id goes, the name
        // case-insensitively.
        let select = ("$select", "id,userPrincipalName".to_string());
        if let Some(user) = self.get::<User>(GET_USER, &format!("/users/{}", enc(name)), std::slice::from_ref(&select)).await? {
            return Ok(vec![user.into()]);
        }
        // Then the mail address, which may differ from the UPN (and which users may share).
        let query = [("$filter", format!("mail eq {}", quoted(name))), select, ("$top", PAGE_SIZE.to_string())];
        let found: Page<User> = self.get(GET_USER, "/users", &query).await?.unwrap_or(Page { value: vec![], next_link: None });
        Ok(found.value.into_iter().map(UserRef::from).collect())
    }

    async fn snapshot(&self, user: &UserRef, kinds: &[FactorKind], cutoff: jiff::Timestamp) -> Result<UserSnapshot, ProviderError> {
        let methods = self.methods(user).await?;
        let preferred = self.preferred_method(user).await;
        // Compared at Graph's precision, as for deletion (`at_or_after`).
        let cutoff_ms = jiff::Timestamp::from_millisecond(cutoff.as_millisecond()).unwrap_or(cutoff);
        let enrolled_since_cutoff = first_enrolled_since(methods.iter().filter_map(|m| Some((method_type(&m.odata_type)?.0, m.created()?))), cutoff_ms);
        let mut factors: Vec<FactorRef> = methods
            .into_iter()
            .filter_map(|m| {
                let (kind, collection) = method_type(&m.odata_type)?;
                // QUIRK: a method without a creation time existed when we looked; its id is
                // recorded, and only recorded ids are deleted.
                let before_cutoff = m.created().is_none_or(|created| !at_or_after(created, cutoff));
                (before_cutoff && selected(kind, kinds)).then(|| FactorRef { id: m.id, kind, provider_type: provider_type(collection, cutoff) })
            })
            .collect();
        // The engine deletes in this order: the default method last.
        factors.sort_by_key(|f| deletion_rank(split_provider_type(&f.provider_type).0, &f.id, preferred.as_deref()));
        Ok(UserSnapshot { factors, sessions: 1, session_handles: Vec::new(), enrolled_since_cutoff })
    }

    async fn revoke_sessions(&self, user: &UserRef, _snapshot: &UserSnapshot) -> Result<(), ProviderError> {
        let (status, _) = self.call(REVOKE_SESSIONS, Method::POST, &format!("/users/{}/revokeSignInSessions", enc(&user.id)), &[], None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.user_gone(user));
        }
        Ok(())
    }

    async fn revoke_factor(&self, user: &UserRef, factor: &FactorRef) -> Result<RevokeOutcome, ProviderError> {
        let (collection, cutoff) = split_provider_type(&factor.provider_type);
        if let Some(cutoff) = cutoff {
            // A fixed id registered again since the cutoff is a new method: the recorded one is gone.
            let registrations = self.registered_since(user, cutoff).await?;
            if registrations.iter().any(|r| r.kind == factor.kind && r.fixed_id == Some(factor.id.as_str())) {
                return Ok(RevokeOutcome::AlreadyGone);
            }
        }
        let mut moved_default = false;
        loop {
            let (status, value) = self.delete_method(user, collection, &factor.id).await?;
            match status {
                s if s.is_success() => return Ok(RevokeOutcome::Revoked),
                StatusCode::NOT_FOUND => return Ok(RevokeOutcome::AlreadyGone),
                StatusCode::BAD_REQUEST if !moved_default && is_default_refusal(&value) => {
                    self.move_default_away(user, collection, factor).await?;
                    moved_default = true;
                }
                _ => {
                    return Err(ProviderError::Rejected(format!(
                        "IdentityBackend {}: {status} from DELETE /v1.0/users/{}/authentication/{collection}/{}: {}",
                        self.http.backend,
                        user.id,
                        factor.id,
                        brief(&value)
                    )));
                }
            }
        }
    }

    async fn require_enrollment(&self, _user: &UserRef, _lost: &[FactorRef]) -> Result<(), ProviderError> {
        // Nothing to call: with every method deleted, Entra makes the user register at the next
        // sign-in that needs MFA (see the enrollment limitation).
        Ok(())
    }

    async fn enrolled_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError> {
        match self.registered_since(user, cutoff).await {
            Ok(registrations) => {
                if let Some(first) = registrations.into_iter().min_by_key(|r| r.at) {
                    let origin = first.ip.map(|ip| EnrollmentOrigin { ip: Some(ip), ..EnrollmentOrigin::default() });
                    return Ok(Some(Enrollment { kind: first.kind, at: first.at, origin }));
                }
            }
            Err(e @ ProviderError::Unavailable(_)) => return Err(e),
            Err(e) => tracing::debug!(backend = %self.http.backend, error = %e, "audit log unavailable; reading method creation times"),
        }
        // Not (yet) in the audit log, or beyond its retention: methods created since the cutoff.
        let first = self
            .methods(user)
            .await?
            .into_iter()
            .filter_map(|m| Some((method_type(&m.odata_type)?.0, m.created()?)))
            .filter(|(_, created)| at_or_after(*created, cutoff))
            .min_by_key(|(_, created)| *created);
        Ok(first.map(|(kind, at)| Enrollment { kind, at, origin: None }))
    }

    async fn disable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        let (status, _) = self.call(UPDATE_USER, Method::PATCH, &format!("/users/{}", enc(&user.id)), &[], Some(&json!({ "accountEnabled": false }))).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.user_gone(user));
        }
        Ok(())
    }
}

/// Graph's answer to deleting the default method while others are registered.
fn is_default_refusal(value: &Value) -> bool {
    value.pointer("/error/message").and_then(Value::as_str).is_some_and(|m| m.to_lowercase().contains("default method"))
}

/// A short, secret-free rendering of a Graph error body (`{"error": {"code", "message"}}`).
fn brief(value: &Value) -> String {
    super::brief(value, &["/error/code", "/error/message"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_never_a_factor_and_passkeys_are() {
        assert_eq!(method_type("#microsoft.graph.passwordAuthenticationMethod"), None);
        assert_eq!(method_type("#microsoft.graph.fido2AuthenticationMethod"), Some((FactorKind::Webauthn, "fido2Methods")));
        assert_eq!(method_type("#microsoft.graph.platformCredentialAuthenticationMethod").map(|t| t.0), Some(FactorKind::Passkey));
        assert_eq!(method_type("#microsoft.graph.temporaryAccessPassAuthenticationMethod").map(|t| t.0), Some(FactorKind::RecoveryCodes));
    }

    #[test]
    fn the_default_is_deleted_last() {
        let mut methods = [
            ("microsoftAuthenticatorMethods", "a"),
            ("softwareOathMethods", "b"),
            ("phoneMethods", PHONE_MOBILE_ID),
            ("fido2Methods", "c"),
        ];
        // Known default: oath last, the rest in the guessed order.
        methods.sort_by_key(|(c, id)| deletion_rank(c, id, Some("oath")));
        assert_eq!(methods.iter().map(|m| m.0).collect::<Vec<_>>(), ["fido2Methods", "phoneMethods", "microsoftAuthenticatorMethods", "softwareOathMethods"]);
        // Unknown default: push is the likeliest, so it goes last.
        methods.sort_by_key(|(c, id)| deletion_rank(c, id, None));
        assert_eq!(methods.last().unwrap().0, "microsoftAuthenticatorMethods");
        // voiceMobile names the mobile phone as sms does.
        assert!(deletion_rank("phoneMethods", PHONE_MOBILE_ID, Some("voiceMobile")).0);
        assert!(!deletion_rank("phoneMethods", PHONE_OFFICE_ID, Some("voiceMobile")).0);
    }

    #[test]
    fn fixed_id_methods_carry_the_cutoff() {
        let cutoff: jiff::Timestamp = "2026-11-27T18:00:00.123456Z".parse().unwrap();
        let phone = provider_type("phoneMethods", cutoff);
        assert_eq!(phone, "phoneMethods|2026-11-27T18:00:00.123Z");
        let (collection, recorded) = split_provider_type(&phone);
        assert_eq!((collection, recorded.map(|t| t.as_millisecond())), ("phoneMethods", Some(cutoff.as_millisecond())));
        assert_eq!(split_provider_type(&provider_type("fido2Methods", cutoff)), ("fido2Methods", None));
    }

    #[test]
    fn registrations_are_read_loosely() {
        assert_eq!(registered_kind("Mobile phone"), Some((FactorKind::Sms, Some(PHONE_MOBILE_ID))));
        assert_eq!(registered_kind("Alternate mobile phone"), Some((FactorKind::Sms, Some(PHONE_ALTERNATE_ID))));
        assert_eq!(registered_kind("Microsoft Authenticator app"), Some((FactorKind::Push, None)));
        assert_eq!(registered_kind("Passkey (device-bound)"), Some((FactorKind::Webauthn, None)));
        assert_eq!(registered_kind("Email"), Some((FactorKind::Email, Some(EMAIL_ID))));
        assert_eq!(registered_kind("Something new"), None);
    }

    #[test]
    fn shown_times_equal_to_the_cutoff_count_as_after() {
        let cutoff: jiff::Timestamp = "2026-11-27T18:00:00.123456Z".parse().unwrap();
        assert!(at_or_after("2026-11-27T18:00:00.123Z".parse().unwrap(), cutoff));
        assert!(!at_or_after("2026-11-27T18:00:00.122Z".parse().unwrap(), cutoff));
    }

    #[test]
    fn refusals_and_errors_are_read() {
        let refusal = json!({ "error": { "code": "badRequest", "message": "Cannot delete default method with other methods configured. Please change default method before deletion." } });
        assert!(is_default_refusal(&refusal));
        assert!(!is_default_refusal(&json!({ "error": { "code": "badRequest", "message": "Invalid id" } })));
        assert!(brief(&refusal).starts_with("badRequest: Cannot delete default method"));
        assert_eq!(quoted("O'Brien"), "'O''Brien'");
        assert!(looks_like_object_id("3179e48a-750b-4051-897c-87b9720928f7"));
        assert!(!looks_like_object_id("staff"));
    }

    /// The adapter against the simulator, for the quirks the conformance suite's seed does not reach.
    mod against_the_simulator {
        use std::sync::Arc;
        use std::time::Duration;

        use super::*;
        use crate::api::BackendLimits;
        use crate::backends::connect;
        use crate::simulator::{Seed, username};
        use crate::testbed::sims::SimSubject;

        async fn start(factors: Vec<FactorKind>) -> (SimSubject, Arc<dyn IdentityProvider>, UserRef) {
            let subject = SimSubject::start("entra").await.unwrap();
            subject.sim.provider.seed(&Seed { users: 2, factors, ..Seed::default() });
            let backend = subject.backend("test", "entra", BackendLimits { requests_per_second: 1000, max_concurrency: 4 });
            let provider = connect(&backend, Some(&subject.secret_object("entra-credentials", &subject.secret))).unwrap();
            assert!(provider.find_user("nobody@example.com").await.unwrap().is_empty());
            let user = provider.find_user(&username(1)).await.unwrap().remove(0);
            (subject, provider, user)
        }

        #[tokio::test]
        async fn users_and_groups_are_paged_by_next_links() {
            let subject = SimSubject::start("entra").await.unwrap();
            let groups = vec![crate::simulator::GroupSeed::new("staff", 2), crate::simulator::GroupSeed::new("admins", 10)];
            subject.sim.provider.seed(&Seed { users: 2100, groups, ..Seed::default() });
            let backend = subject.backend("test", "entra", BackendLimits { requests_per_second: 1000, max_concurrency: 4 });
            let provider = connect(&backend, Some(&subject.secret_object("entra-credentials", &subject.secret))).unwrap();
            let (mut listed, mut cursor, mut pages) = (Vec::new(), None, 0);
            loop {
                let page = provider.list_users(cursor.as_deref()).await.unwrap();
                listed.extend(page.users.into_iter().map(|u| u.username));
                pages += 1;
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!((listed.len(), pages), (2100, 3));
            let staff = provider.all_group_members("staff", Membership::Transitive).await.unwrap();
            assert_eq!(staff.len(), 1050);
            assert!(staff.iter().all(|u| !u.id.is_empty() && u.username.ends_with("@example.com")));
            assert!(matches!(provider.group_members("nobody", Membership::Transitive, None).await, Err(ProviderError::NotFound(_))));
        }

        #[tokio::test]
        async fn a_default_method_is_moved_to_a_newer_one_and_then_deleted() {
            // The phone is the default (registered first); the user adds an authenticator after the cutoff.
            let (subject, provider, user) = start(vec![FactorKind::Sms, FactorKind::Totp]).await;
            let cutoff = jiff::Timestamp::now();
            tokio::time::sleep(Duration::from_millis(5)).await;
            let new_push = subject.sim.provider.enroll(&user.username, FactorKind::Push, "203.0.113.9").unwrap();
            let snapshot = provider.snapshot(&user, &[FactorKind::All], cutoff).await.unwrap();
            assert_eq!(snapshot.factors.iter().map(|f| f.kind).collect::<Vec<_>>(), [FactorKind::Totp, FactorKind::Sms], "default last");
            for factor in &snapshot.factors {
                assert_eq!(provider.revoke_factor(&user, factor).await.unwrap(), RevokeOutcome::Revoked, "{factor:?}");
            }
            let left = subject.sim.provider.user(&user.username).unwrap().factors;
            assert_eq!(left.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), [new_push.as_str()]);
            let seen = provider.enrolled_since(&user, cutoff).await.unwrap().expect("the new authenticator is seen");
            assert_eq!((seen.kind, seen.origin.and_then(|o| o.ip)), (FactorKind::Push, Some("203.0.113.9".to_string())));
        }

        #[tokio::test]
        async fn a_phone_registered_again_under_its_fixed_id_is_kept() {
            let (subject, provider, user) = start(vec![FactorKind::Sms, FactorKind::Email]).await;
            let cutoff = jiff::Timestamp::now();
            let snapshot = provider.snapshot(&user, &[FactorKind::All], cutoff).await.unwrap();
            assert_eq!(snapshot.factors.len(), 2, "no creation time: recorded as existing before the cutoff");
            for factor in &snapshot.factors {
                assert_eq!(provider.revoke_factor(&user, factor).await.unwrap(), RevokeOutcome::Revoked);
            }
            assert!(provider.enrolled_since(&user, cutoff).await.unwrap().is_none());
            // The user registers the same kind of phone again; a resumed recall repeats its steps.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let phone = subject.sim.provider.enroll(&user.username, FactorKind::Sms, "198.51.100.20").unwrap();
            assert_eq!(phone, PHONE_MOBILE_ID);
            let recorded_phone = snapshot.factors.iter().find(|f| f.kind == FactorKind::Sms).unwrap();
            assert_eq!(provider.revoke_factor(&user, recorded_phone).await.unwrap(), RevokeOutcome::AlreadyGone);
            let left = subject.sim.provider.user(&user.username).unwrap().factors;
            assert!(left.iter().any(|f| f.id == PHONE_MOBILE_ID && f.created >= cutoff), "{left:?}");
            assert_eq!(provider.enrolled_since(&user, cutoff).await.unwrap().map(|e| e.kind), Some(FactorKind::Sms));
        }
    }
}
