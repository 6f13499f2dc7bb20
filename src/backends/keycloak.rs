//! Keycloak Admin REST API (`/admin/realms/{realm}`), authenticated as a confidential client's
//! service account. Credentials carry `createdDate`, so the cutoff is compared directly.

use std::collections::HashSet;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Grant, TokenSource};
use super::http::{Op, ProviderHttp, SecretKeys};
use super::{
    Age, BypassSupport, Capabilities, EnrollmentLink, IssuedBypass, Enrollment, EnrollmentOrigin, FactorRef, IdentityProvider, Membership, NameMatch, ErrorKind, ProviderError, Record, RevokeOutcome, Shown, Unreadable, UserPage, UserRef, UserSnapshot,
    enc, selected, split,
};
use crate::api::{FactorKind, KeycloakProvider};
use crate::watch::{Actor, ClientInfo, EventKind, EventPage, EventQuery, IdentityEvent};

/// Users per listing request; Keycloak pages by offset.
const PAGE_SIZE: usize = 100;
/// The most groups one group's tree may hold: its ids travel in the listing cursor.
const MAX_GROUP_TREE: usize = 1000;
/// User events per page of the realm's log.
const EVENTS_PAGE: usize = 500;
/// What the window watch reads from the realm's stream: credentials set up or removed. The older
/// UPDATE_TOTP and REMOVE_TOTP, which current versions still send beside these (and not always in
/// the same read), are left out so one enrollment is one event. Sign-ins are read only in a
/// user's own history, where the rules need them.
const WATCHED_EVENT_TYPES: [&str; 2] = ["UPDATE_CREDENTIAL", "REMOVE_CREDENTIAL"];

pub struct Keycloak {
    http: ProviderHttp,
    auth: TokenSource,
    admin_base: String,
}

/// Keycloak credential types that are second factors. `password` is never one of them. One
/// type, `otp`, holds both one-time-password kinds: its credential data's `subType` (`totp` or
/// `hotp`, from the realm's OTP policy when it was set up) tells them apart.
fn factor_kind(credential_type: &str, credential_data: Option<&str>) -> Option<FactorKind> {
    match credential_type {
        "otp" => Some(match otp_sub_type(credential_data).as_deref() {
            Some("hotp") => FactorKind::Hotp,
            _ => FactorKind::Totp,
        }),
        "webauthn" => Some(FactorKind::Webauthn),
        "webauthn-passwordless" => Some(FactorKind::Passkey),
        "recovery-authn-codes" => Some(FactorKind::RecoveryCodes),
        _ => None,
    }
}

/// `subType` of an OTP credential's data (a JSON document in a string). Keycloak always writes
/// it; a credential without it predates HOTP support and is a TOTP.
fn otp_sub_type(credential_data: Option<&str>) -> Option<String> {
    let data: Value = serde_json::from_str(credential_data?).ok()?;
    data.get("subType")?.as_str().map(str::to_ascii_lowercase)
}

/// The required action that makes a user enroll a credential type again.
fn required_action(credential_type: &str) -> Option<&'static str> {
    match credential_type {
        "otp" => Some("CONFIGURE_TOTP"),
        "webauthn" => Some("webauthn-register"),
        "webauthn-passwordless" => Some("webauthn-register-passwordless"),
        "recovery-authn-codes" => Some("CONFIGURE_RECOVERY_AUTHN_CODES"),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Credential {
    id: String,
    #[serde(rename = "type")]
    type_: String,
    #[serde(default)]
    created_date: Option<i64>,
    #[serde(default)]
    credential_data: Option<String>,
}

impl Credential {
    fn kind(&self) -> Option<FactorKind> {
        factor_kind(&self.type_, self.credential_data.as_deref())
    }
}

#[derive(Deserialize)]
struct User {
    id: String,
    username: String,
}

/// One page of users as listed: those that decoded, those that did not, and how many records
/// the page held (the offset of the next page counts both).
struct Members {
    users: Vec<UserRef>,
    unreadable: Vec<Unreadable>,
    listed: usize,
}

impl Members {
    fn of(records: Vec<Record<User>>) -> Self {
        let listed = records.len();
        let (users, unreadable) = split(records);
        Members { users: users.into_iter().map(UserRef::from).collect(), unreadable, listed }
    }

    fn full(&self) -> bool {
        self.listed == PAGE_SIZE
    }
}

impl From<User> for UserRef {
    fn from(u: User) -> Self {
        UserRef { id: u.id, username: u.username }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    id: String,
    name: String,
    path: Option<String>,
    #[serde(default)]
    sub_groups: Vec<Group>,
}

/// A subgroup as `/groups/{id}/children` lists it.
#[derive(Deserialize)]
struct GroupId {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Consent {
    client_id: String,
    #[serde(default)]
    additional_grants: Vec<Value>,
}

impl Keycloak {
    pub fn new(http: ProviderHttp, spec: &KeycloakProvider, keys: &SecretKeys) -> Result<Self, ProviderError> {
        let base = spec.url.trim_end_matches('/');
        let auth_realm = spec.auth_realm.as_deref().unwrap_or(&spec.realm);
        let grant = Grant::ClientSecret { client_id: keys.get("client-id")?, client_secret: keys.get("client-secret")? };
        Ok(Self {
            http,
            auth: TokenSource::new(
                format!("{base}/realms/{}/protocol/openid-connect/token", enc(auth_realm)),
                grant,
                Vec::new(),
                keys.name.to_string(),
            ),
            admin_base: format!("{base}/admin/realms/{}", enc(&spec.realm)),
        })
    }

    /// One admin API call with the service-account token; a 401 refreshes the token once.
    async fn call(&self, method: Method, path: &str, query: &[(&str, String)], body: Option<&Value>) -> Result<(StatusCode, Value), ProviderError> {
        let url = format!("{}{path}", self.admin_base);
        let reply = self
            .auth
            .send(&self.http, op(&method, path), || self.http.json_request(&method, &url, query, body))
            .await?;
        let status = reply.status;
        let value = reply.value();
        match status {
            s if s.is_success() => Ok((s, value)),
            StatusCode::NOT_FOUND => Ok((status, value)),
            StatusCode::UNAUTHORIZED => Err(self.http.error(ErrorKind::Auth, format!(
                "401 from {method} {path}: the token was refused; check the client in Secret {}", self.auth.secret_name
            ))),
            StatusCode::FORBIDDEN => Err(self.http.error(ErrorKind::Auth, format!(
                "403 from {method} {path}: give the client's service account the realm-management roles view-users, manage-users and view-events"))),
            _ => Err(self.http.error(ErrorKind::Rejected, format!(
                "{status} from {method} {path}: {}",
                brief(&value)
            ))),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<Option<T>, ProviderError> {
        let (status, value) = self.call(Method::GET, path, query, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        serde_json::from_value(value).map(Some).map_err(|e| {
            self.http.error(ErrorKind::Rejected, format!("unexpected body from GET {path}: {e}"))
        })
    }

    async fn credentials(&self, user: &UserRef) -> Result<Vec<Credential>, ProviderError> {
        self.get(&format!("/users/{}/credentials", enc(&user.id)), &[])
            .await?
            .ok_or_else(|| self.user_gone(user))
    }

    fn bad_cursor(&self, cursor: &str) -> ProviderError {
        self.http.error(ErrorKind::Rejected, format!("{cursor:?} is not a Keycloak group cursor"))
    }

    fn user_gone(&self, user: &UserRef) -> ProviderError {
        self.http.error(ErrorKind::NotFound, format!("user {} no longer exists", user.username))
    }

    /// Finds a group by path (`/a/b`) or by name anywhere in the tree.
    async fn find_group(&self, wanted: &str) -> Result<String, ProviderError> {
        if wanted.starts_with('/')
            && let Some(group) = self.get::<Group>(&format!("/group-by-path/{}", wanted.trim_start_matches('/')), &[]).await?
        {
            return Ok(group.id);
        }
        let name = wanted.rsplit('/').next().unwrap_or(wanted);
        let groups: Vec<Group> = self
            .get("/groups", &[("search", name.to_string()), ("exact", "true".into()), ("briefRepresentation", "true".into())])
            .await?
            .unwrap_or_default();
        fn walk<'a>(groups: &'a [Group], wanted: &str, found: &mut Vec<&'a Group>) {
            for g in groups {
                if g.name == wanted || g.path.as_deref() == Some(wanted) {
                    found.push(g);
                }
                walk(&g.sub_groups, wanted, found);
            }
        }
        let mut found = Vec::new();
        walk(&groups, wanted, &mut found);
        match found.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => Err(self.http.error(ErrorKind::NotFound, format!("group {wanted} not found"))),
            _ => Err(self.http.error(ErrorKind::Config, format!(
                "more than one group is named {wanted}: name it by path, for example /parent/{wanted}"))),
        }
    }

    /// Where an enrollment came from: the IP of the realm's UPDATE_CREDENTIAL event for that
    /// credential type closest to its creation. None when events are off or not readable: the
    /// enrollment itself is known from the credential, so detection never fails on this.
    async fn enrollment_origin(&self, user: &UserRef, created_ms: i64, credential_type: &str) -> Option<EnrollmentOrigin> {
        let day = jiff::Timestamp::from_millisecond(created_ms).ok()?.strftime("%Y-%m-%d").to_string();
        let query = [("user", user.id.clone()), ("type", "UPDATE_CREDENTIAL".to_string()), ("dateFrom", day), ("max", "100".to_string())];
        let events: Vec<Value> = match self.get("/events", &query).await {
            Ok(events) => events.unwrap_or_default(),
            Err(e) => {
                tracing::debug!(backend = %self.http.backend, error = %e, "realm events unreadable; enrollment origin unknown");
                return None;
            }
        };
        let closest = events
            .iter()
            .filter(|e| e.pointer("/details/credential_type").and_then(Value::as_str) == Some(credential_type))
            .filter_map(|e| Some((e.get("time")?.as_i64()?, e.get("ipAddress")?.as_str()?)))
            .filter(|(time, _)| (time - created_ms).abs() < 60_000)
            .min_by_key(|(time, _)| (time - created_ms).abs())?;
        Some(EnrollmentOrigin { ip: Some(closest.1.to_string()), ..Default::default() })
    }

    async fn set_enabled(&self, user: &UserRef, enabled: bool) -> Result<(), ProviderError> {
        let (status, _) = self.call(Method::PUT, &format!("/users/{}", enc(&user.id)), &[], Some(&json!({ "enabled": enabled }))).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.user_gone(user));
        }
        Ok(())
    }

    /// Whether the realm stores user events; a realm that does not would leave the watch blind.
    async fn events_stored(&self) -> Result<bool, ProviderError> {
        let config: Value = self.get("/events/config", &[]).await?.unwrap_or_default();
        Ok(config["eventsEnabled"] == true)
    }

    /// One page of `path` (users or a group's members); true when it was full, so another may follow.
    async fn page(&self, path: &str, offset: usize) -> Result<Members, ProviderError> {
        let query = [("first", offset.to_string()), ("max", PAGE_SIZE.to_string()), ("briefRepresentation", "true".to_string())];
        Ok(Members::of(self.get(path, &query).await?.unwrap_or_default()))
    }

    /// The group and, for transitive membership, every group below it, parents before their
    /// children. Fails rather than walk without end: a group seen twice (a cycle in a broken
    /// answer) is walked once, and a tree past `MAX_GROUP_TREE` groups is refused.
    async fn group_tree(&self, root: String, membership: Membership) -> Result<Vec<String>, ProviderError> {
        let mut tree = vec![root];
        if membership == Membership::Direct {
            return Ok(tree);
        }
        let mut seen: HashSet<String> = tree.iter().cloned().collect();
        let mut next = 0;
        while next < tree.len() {
            let parent = tree[next].clone();
            next += 1;
            let (mut children, mut received) = (Vec::new(), 0);
            loop {
                let query = [("first", received.to_string()), ("max", PAGE_SIZE.to_string()), ("briefRepresentation", "true".to_string())];
                let path = format!("/groups/{}/children", enc(&parent));
                let page: Vec<GroupId> = self.get(&path, &query).await?.ok_or_else(|| {
                    self.http.error(ErrorKind::Rejected, format!(
                        "404 from GET {path}: walking subgroups needs Keycloak 23 or newer (or the group was deleted meanwhile; the recall retries)"))
                })?;
                let full = page.len() == PAGE_SIZE;
                received += page.len();
                let before = children.len();
                for group in page {
                    if group.id.contains([',', ':']) {
                        return Err(self.http.error(ErrorKind::Rejected, format!("a subgroup id {:?} is not a Keycloak id", group.id)));
                    }
                    if seen.insert(group.id.clone()) {
                        children.push(group.id);
                    }
                }
                if !full || children.len() == before {
                    break;
                }
            }
            if seen.len() > MAX_GROUP_TREE {
                return Err(self.http.error(ErrorKind::Config, format!(
                    "more than {MAX_GROUP_TREE} groups below one group; name smaller groups")));
            }
            // Depth-first: a subgroup's own subgroups come right after it.
            tree.splice(next..next, children);
        }
        Ok(tree)
    }

    /// One page of a group's own members from `offset`, and whether it was full; None when the
    /// group does not exist.
    async fn members_page(&self, group_id: &str, offset: usize) -> Result<Option<Members>, ProviderError> {
        let query = [("first", offset.to_string()), ("max", PAGE_SIZE.to_string()), ("briefRepresentation", "true".to_string())];
        Ok(self.get(&format!("/groups/{}/members", enc(group_id)), &query).await?.map(Members::of))
    }

    /// Users matching one search parameter exactly (`username` or `email`).
    async fn users_where(&self, field: &str, value: &str) -> Result<Vec<UserRef>, ProviderError> {
        let query = [(field, value.to_string()), ("exact", "true".into()), ("briefRepresentation", "true".into())];
        let found: Vec<User> = self.get("/users", &query).await?.unwrap_or_default();
        Ok(found.into_iter().map(UserRef::from).collect())
    }
}

#[async_trait]
impl IdentityProvider for Keycloak {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list_factors: true,
            revoking_ends_enrollments: &[],
            factor_creation_time: true,
            delete_factor: true,
            revoke_sessions: true,
            count_sessions: true,
            force_re_enrollment: true,
            enrollment_detection: true,
            event_stream: true,
            disable_user: true,
            nested_groups: true,
            // Keycloak stores usernames and emails in lower case and searches them so.
            name_match: NameMatch::CaseInsensitive,
            log_delay: None,
            inseparable: Vec::new(),
            // The execute-actions email: Keycloak's own mail to the user's address on file.
            enrollment_link: Some(EnrollmentLink { mechanism: "Keycloak's execute-actions email, mailed by Keycloak", sets_lifetime: true, resets_password: true, needs_password_reset: false }),
            bypass: Some(BypassSupport {
                mechanism: "Keycloak execute-actions link to set up a new factor, mailed by Keycloak",
                lifetimes: std::time::Duration::from_secs(60)..=std::time::Duration::from_secs(24 * 3600),
                sent_by_provider: true,
                withdrawable: false,
            }),
            limitations: vec![
                "events: the realm must store user events (eventsEnabled); they give the address only, with no place, network owner or proxy verdict, so anomaly rules judge networks by address block".into(),
                "events: the admin API cannot enroll a factor for a user, so admin events are not read".into(),
            ],
        }
    }

    async fn check(&self) -> Result<(), ProviderError> {
        let (status, _) = self.call(Method::GET, "/users/count", &[], None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.http.error(ErrorKind::Config, "realm not found: check spec.keycloak.realm"));
        }
        Ok(())
    }

    async fn list_users(&self, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        // Cursor: "0:<offset of the next page>" (the 0 kept so that recalls recorded before keep their place).
        let offset = cursor.and_then(|c| c.strip_prefix("0:")).and_then(|o| o.parse::<usize>().ok()).unwrap_or(0);
        let page = self.page("/users", offset).await?;
        Ok(UserPage { next: page.full().then(|| format!("0:{}", offset + page.listed)), users: page.users, unreadable: page.unreadable })
    }

    async fn group_members(&self, group: &str, membership: Membership, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        // Keycloak lists only a group's own members, so the tree is walked here, once, when the
        // group's first page is asked for. Cursor: "<offset>:<id>,<id>,...", the offset within
        // the first group of the ids still to list, so every page walks the same tree.
        let (mut offset, mut groups) = match cursor {
            None => (0, self.group_tree(self.find_group(group).await?, membership).await?),
            Some(cursor) => {
                let (offset, ids) = cursor.split_once(':').ok_or_else(|| self.bad_cursor(cursor))?;
                let offset = offset.parse::<usize>().map_err(|_| self.bad_cursor(cursor))?;
                (offset, ids.split(',').filter(|id| !id.is_empty()).map(String::from).collect())
            }
        };
        // The group itself is first in its tree on the first page.
        let at_root = cursor.is_none();
        loop {
            let Some(id) = groups.first() else { return Ok(UserPage { users: Vec::new(), next: None, ..Default::default() }) };
            let Some(page) = self.members_page(id, offset).await? else {
                if at_root {
                    return Err(self.http.error(ErrorKind::NotFound, format!("group {group} not found")));
                }
                // A subgroup deleted while listed: its users are no longer members.
                tracing::warn!(backend = %self.http.backend, group, subgroup = %id, "a subgroup was deleted while its members were listed; going on without it");
                groups.remove(0);
                offset = 0;
                continue;
            };
            let next = if page.full() {
                Some(format!("{}:{}", offset.saturating_add(page.listed), groups.join(",")))
            } else {
                (groups.len() > 1).then(|| format!("0:{}", groups[1..].join(",")))
            };
            return Ok(UserPage { users: page.users, next, unreadable: page.unreadable });
        }
    }

    async fn all_group_members(&self, group: &str, membership: Membership) -> Result<Vec<UserRef>, ProviderError> {
        // Strict: a subgroup that cannot be read fails the call (the recall waits and retries).
        let mut members = Vec::new();
        for id in self.group_tree(self.find_group(group).await?, membership).await? {
            let mut offset = 0;
            loop {
                let Some(page) = self.members_page(&id, offset).await? else {
                    return Err(self.http.error(ErrorKind::Unavailable, format!(
                        "group {group} changed while its members were read (a subgroup was deleted); read again on retry")));
                };
                if let Some(bad) = page.unreadable.first() {
                    return Err(self.http.error(ErrorKind::Rejected, bad.as_member_of(group)));
                }
                offset += page.listed;
                let full = page.full();
                members.extend(page.users);
                if !full {
                    break;
                }
            }
        }
        Ok(members)
    }

    async fn find_user(&self, name: &str) -> Result<Vec<UserRef>, ProviderError> {
        if looks_like_id(name)
            && let Some(user) = self.get::<User>(&format!("/users/{}", enc(name)), &[]).await?
        {
            return Ok(vec![user.into()]);
        }
        // Keycloak keeps usernames and emails in lower case. The name means whoever holds it as
        // a username or an email (a realm may let users share an email, or one user's email be
        // another's username): each of them; the engine keeps each user once.
        let name = name.to_lowercase();
        let mut found = self.users_where("username", &name).await?;
        found.extend(self.users_where("email", &name).await?);
        Ok(found)
    }

    async fn snapshot(&self, user: &UserRef, kinds: &[FactorKind], cutoff: jiff::Timestamp) -> Result<UserSnapshot, ProviderError> {
        let credentials = self.credentials(user).await?;
        let enrolled_since_cutoff = first_since(&credentials, cutoff).map(|(kind, at, _)| Enrollment { kind, at, origin: None });
        let factors = credentials
            .into_iter()
            .filter_map(|c| {
                let kind = c.kind()?;
                // A credential without a creation time is of unknown age: kept (Keycloak sets one
                // on every credential it creates; an imported one may lack it).
                let age = Age::of(c.created_date.and_then(Shown::millis), cutoff);
                (age != Age::Since && selected(kind, kinds)).then(|| FactorRef::aged(c.id, kind, c.type_, age))
            })
            .collect();
        let sessions: Vec<Value> = self.get(&format!("/users/{}/sessions", enc(&user.id)), &[]).await?.ok_or_else(|| self.user_gone(user))?;
        let consents: Vec<Consent> = self.get(&format!("/users/{}/consents", enc(&user.id)), &[]).await?.ok_or_else(|| self.user_gone(user))?;
        let offline: Vec<String> = consents
            .into_iter()
            .filter(|c| c.additional_grants.iter().any(|g| g.get("key").and_then(Value::as_str) == Some("Offline Token")))
            .map(|c| c.client_id)
            .collect();
        Ok(UserSnapshot { factors, sessions: (sessions.len() + offline.len()) as u64, session_handles: offline, enrolled_since_cutoff, at_risk: None, taken_at: None })
    }

    async fn revoke_sessions(&self, user: &UserRef, snapshot: &UserSnapshot) -> Result<(), ProviderError> {
        // Logout ends online sessions and sets notBefore, so tokens issued earlier stop working.
        let (status, _) = self.call(Method::POST, &format!("/users/{}/logout", enc(&user.id)), &[], None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.user_gone(user));
        }
        for client in &snapshot.session_handles {
            // Revoking the consent revokes the client's offline tokens; 404 means already gone.
            self.call(Method::DELETE, &format!("/users/{}/consents/{}", enc(&user.id), enc(client)), &[], None).await?;
        }
        Ok(())
    }

    async fn revoke_factor(&self, user: &UserRef, factor: &FactorRef) -> Result<RevokeOutcome, ProviderError> {
        let (status, _) = self
            .call(Method::DELETE, &format!("/users/{}/credentials/{}", enc(&user.id), enc(&factor.id)), &[], None)
            .await?;
        Ok(if status == StatusCode::NOT_FOUND { RevokeOutcome::AlreadyGone } else { RevokeOutcome::Revoked })
    }

    async fn require_enrollment(&self, user: &UserRef, lost: &[FactorRef], channel: super::EnrollmentChannel) -> Result<(), ProviderError> {
        let path = format!("/users/{}", enc(&user.id));
        let current: Value = self.get(&path, &[]).await?.ok_or_else(|| self.user_gone(user))?;
        // The PUT replaces the whole list, so merge with what the user already has to do.
        let mut actions: Vec<String> = current
            .get("requiredActions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let before = actions.len();
        let mut lost_actions: Vec<String> = Vec::new();
        for action in lost.iter().filter_map(|f| required_action(&f.provider_type)) {
            if !lost_actions.iter().any(|a| a == action) {
                lost_actions.push(action.to_string());
            }
            if !actions.iter().any(|a| a == action) {
                actions.push(action.to_string());
            }
        }
        if actions.len() != before {
            let (status, _) = self.call(Method::PUT, &path, &[], Some(&json!({ "requiredActions": actions }))).await?;
            if status == StatusCode::NOT_FOUND {
                return Err(self.user_gone(user));
            }
        }
        let super::EnrollmentChannel::Link { lifetime, reset_password } = channel else { return Ok(()) };
        if current["email"].as_str().is_none_or(|e| !e.contains('@')) {
            return Err(self.http.error(ErrorKind::Config, format!("user {} has no email address on file for the re-enrollment link (they enroll at their next sign-in)", user.username)));
        }
        if reset_password {
            lost_actions.insert(0, "UPDATE_PASSWORD".into());
        }
        if lost_actions.is_empty() {
            lost_actions.push("CONFIGURE_TOTP".into());
        }
        // The mail first: a password reset with no link sent would leave the user no way in.
        let (status, _) = self.call(Method::PUT, &format!("{path}/execute-actions-email"), &[("lifespan", lifetime.as_secs().to_string())], Some(&json!(lost_actions))).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.user_gone(user));
        }
        if reset_password {
            // A password nobody knows: the stolen one stops working, and the link sets the user's own.
            let (status, _) = self.call(Method::PUT, &format!("{path}/reset-password"), &[], Some(&json!({ "type": "password", "value": unguessable_password()?, "temporary": false }))).await?;
            if status == StatusCode::NOT_FOUND {
                return Err(self.user_gone(user));
            }
        }
        Ok(())
    }

    async fn enrolled_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError> {
        let credentials = self.credentials(user).await?;
        let Some((kind, at, credential_type)) = first_since(&credentials, cutoff) else { return Ok(None) };
        let origin = self.enrollment_origin(user, at.as_millisecond(), credential_type).await;
        Ok(Some(Enrollment { kind, at, origin }))
    }

    async fn read_events(&self, query: &EventQuery<'_>) -> Result<EventPage, ProviderError> {
        let cursor = match query.cursor {
            Some(text) => Some(EventCursor::parse(text).ok_or_else(|| self.http.error(ErrorKind::Rejected, format!("{text:?} is not a Keycloak event cursor")))?),
            None => None,
        };
        if query.user.is_none() && cursor.is_none() && !self.events_stored().await? {
            return Err(self.http.error(ErrorKind::Config, "the realm stores no user events: turn on user events (Realm settings, Events, eventsEnabled) so re-enrollment is watched from them"));
        }
        let from_ms = cursor.as_ref().map_or(query.from.as_millisecond(), |c| c.at_ms);
        let seen = cursor.as_ref().map_or(&[][..], |c| c.ids.as_slice());
        // Room for the events already read at the cursor's millisecond, which Keycloak returns again.
        let max = EVENTS_PAGE + seen.len();
        let mut params = vec![("direction", "asc".to_string()), ("dateFrom", from_ms.to_string()), ("max", max.to_string())];
        match query.user {
            Some(user) => params.push(("user", user.id.clone())),
            None => params.extend(WATCHED_EVENT_TYPES.iter().map(|t| ("type", t.to_string()))),
        }
        // dateTo is inclusive, to the millisecond.
        params.extend(query.until.map(|u| ("dateTo", (u.as_millisecond() - 1).to_string())));
        let entries: Vec<Value> = self.get("/events", &params).await?.unwrap_or_default();
        let mut page = EventPage { more: entries.len() >= max, ..Default::default() };
        let mut next = cursor.unwrap_or(EventCursor { at_ms: from_ms, ids: Vec::new() });
        for entry in &entries {
            let (Some(id), Some(time)) = (entry["id"].as_str(), entry["time"].as_i64()) else {
                page.skipped.push("a Keycloak event without an id or time".into());
                continue;
            };
            if time == next.at_ms && next.ids.iter().any(|s| s == id) {
                continue;
            }
            if time < next.at_ms {
                page.skipped.push(format!("Keycloak event {id}: out of order"));
                continue;
            }
            if time > next.at_ms {
                next = EventCursor { at_ms: time, ids: Vec::new() };
            }
            next.ids.push(id.to_string());
            page.take(identity_event(entry));
        }
        page.cursor = Some(next.to_string());
        Ok(page)
    }

    async fn disable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        self.set_enabled(user, false).await
    }

    async fn enable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        self.set_enabled(user, true).await
    }

    async fn enabled(&self, user: &UserRef) -> Result<Option<bool>, ProviderError> {
        let found: Value = self.get(&format!("/users/{}", enc(&user.id)), &[]).await?.ok_or_else(|| self.user_gone(user))?;
        Ok(found["enabled"].as_bool())
    }

    async fn issue_bypass(&self, user: &UserRef, lifetime: std::time::Duration) -> Result<IssuedBypass, ProviderError> {
        // Keycloak mails the user a link that signs them in to set up the factors they lost (the
        // required actions the recall set), valid for `lifespan` seconds: the operator never sees it.
        let path = format!("/users/{}", enc(&user.id));
        let current: Value = self.get(&path, &[]).await?.ok_or_else(|| self.user_gone(user))?;
        if current["email"].as_str().is_none_or(|e| !e.contains('@')) {
            return Err(self.http.error(ErrorKind::Config, format!("user {} has no email address on file for Keycloak to send the link to", user.username)));
        }
        let setup = ["CONFIGURE_TOTP", "webauthn-register", "webauthn-register-passwordless", "CONFIGURE_RECOVERY_AUTHN_CODES"];
        let mut actions: Vec<String> = current["requiredActions"].as_array().into_iter().flatten().filter_map(Value::as_str).filter(|a| setup.contains(a)).map(String::from).collect();
        if actions.is_empty() {
            actions.push("CONFIGURE_TOTP".into());
        }
        let issued_at = jiff::Timestamp::now();
        let (status, _) = self.call(Method::PUT, &format!("{path}/execute-actions-email"), &[("lifespan", lifetime.as_secs().to_string())], Some(&json!(actions))).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.user_gone(user));
        }
        let expires_at = issued_at.checked_add(jiff::SignedDuration::try_from(lifetime).unwrap_or(jiff::SignedDuration::ZERO)).unwrap_or(issued_at);
        Ok(IssuedBypass { secret: None, expires_at, reference: None })
    }

    async fn revoke_bypass(&self, _user: &UserRef, _issued_at: jiff::Timestamp, _reference: Option<&str>) -> Result<(), ProviderError> {
        Err(self.http.error(ErrorKind::Config, "Keycloak has no call that withdraws a link it mailed: it stops working at its lifespan's end"))
    }

    async fn address(&self, user: &UserRef) -> Result<Option<String>, ProviderError> {
        let found: Option<Value> = self.get(&format!("/users/{}", enc(&user.id)), &[]).await?;
        Ok(found.and_then(|u| u["email"].as_str().map(str::trim).filter(|e| e.contains('@')).map(String::from)))
    }
}

/// A password from the system's random source that nobody is told, with the character classes
/// common password policies ask for.
fn unguessable_password() -> Result<String, ProviderError> {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| ProviderError::new(ErrorKind::Config, "the system's random source failed"))?;
    use base64::Engine;
    Ok(format!("{}-Aa1", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// The second factor created first at or after the cutoff: its kind, time and credential type.
fn first_since(credentials: &[Credential], cutoff: jiff::Timestamp) -> Option<(FactorKind, jiff::Timestamp, &str)> {
    credentials
        .iter()
        .filter_map(|c| Some((c.kind()?, Shown::millis(c.created_date?)?, c.type_.as_str())))
        .filter(|(_, created, _)| created.since(cutoff))
        .min_by_key(|(_, created, _)| created.at)
        .map(|(kind, created, type_)| (kind, created.at, type_))
}

/// Where the realm's event stream goes on: Keycloak pages events by time in milliseconds (both
/// ends inclusive), so the cursor is the time of the last event read and the ids read at it.
#[derive(Debug, PartialEq)]
struct EventCursor {
    at_ms: i64,
    ids: Vec<String>,
}

impl EventCursor {
    fn parse(text: &str) -> Option<Self> {
        let (at, ids) = text.split_once(':')?;
        Some(EventCursor { at_ms: at.parse().ok()?, ids: ids.split(',').filter(|s| !s.is_empty()).map(String::from).collect() })
    }
}

impl std::fmt::Display for EventCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.at_ms, self.ids.join(","))
    }
}

/// A Keycloak user event as an identity event; None for what the watch does not read (errors,
/// other types, a password change); Err says why the entry cannot be read.
fn identity_event(entry: &Value) -> Result<Option<IdentityEvent>, String> {
    let id = entry["id"].as_str().unwrap_or_default();
    if !entry["error"].is_null() {
        return Ok(None);
    }
    let credential_type = entry["details"]["credential_type"].as_str();
    let kind = match entry["type"].as_str().unwrap_or_default() {
        "LOGIN" => EventKind::SignIn,
        "UPDATE_CREDENTIAL" if credential_type.and_then(|t| factor_kind(t, None)).is_some() => EventKind::FactorEnrolled,
        "REMOVE_CREDENTIAL" if credential_type.and_then(|t| factor_kind(t, None)).is_some() => EventKind::FactorRemoved,
        _ => return Ok(None),
    };
    let at = entry["time"].as_i64().and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()).ok_or_else(|| format!("Keycloak event {id}: no readable time"))?;
    let user_id = entry["userId"].as_str().filter(|u| !u.is_empty()).ok_or_else(|| format!("Keycloak event {id}: names no user"))?;
    let factor = credential_type.and_then(|t| factor_kind(t, None));
    Ok(Some(IdentityEvent {
        id: id.to_string(),
        at,
        user_id: user_id.to_string(),
        kind,
        // User events are what the user did in their own session.
        actor: Actor::User,
        client: ClientInfo { ip: ClientInfo::ip_of(entry["ipAddress"].as_str()), ..Default::default() },
        factor,
        device: None,
    }))
}

/// Keycloak ids are UUIDs; a name of that shape is looked up as an id first.
fn looks_like_id(name: &str) -> bool {
    name.len() == 36 && name.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The metrics label of an admin API call; Keycloak announces no rate-limit buckets.
fn op(method: &Method, path: &str) -> Op {
    let name = match (method.as_str(), path.rsplit('/').next().unwrap_or("")) {
        ("GET", "count") => "check",
        ("GET", "events") => "read_events",
        ("GET", "config") => "read_events",
        ("GET", "credentials") => "list_factors",
        ("DELETE", _) if path.contains("/credentials/") => "delete_factor",
        ("GET", "sessions") | ("GET", "consents") => "list_sessions",
        ("POST", "logout") | ("DELETE", _) => "revoke_sessions",
        ("PUT", "execute-actions-email") => "send_link",
        ("PUT", "reset-password") => "update_user",
        ("PUT", _) => "update_user",
        ("GET", "members") | ("GET", "users") => "list_users",
        ("GET", "children") => "find_group",
        _ if path.contains("group") => "find_group",
        _ => "get_user",
    };
    Op::new(name, "admin")
}

/// A short, secret-free rendering of an error body.
fn brief(value: &Value) -> String {
    super::brief(value, &["/error", "/errorMessage"])
}

/// Every answer shape this adapter decodes, for the fuzz target `provider_json`.
pub(crate) fn decode_answers(data: &[u8]) {
    crate::fuzzing::decode::<Vec<Record<User>>>(data);
    crate::fuzzing::decode::<Vec<Credential>>(data);
    crate::fuzzing::decode::<Vec<Group>>(data);
    crate::fuzzing::decode::<Vec<GroupId>>(data);
    crate::fuzzing::decode::<Vec<Consent>>(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_never_a_factor() {
        assert_eq!(factor_kind("password", None), None);
        assert_eq!(factor_kind("webauthn-passwordless", None), Some(FactorKind::Passkey));
    }

    #[test]
    fn one_time_passwords_are_told_apart_by_their_sub_type() {
        let data = |sub: &str| format!(r#"{{"subType":"{sub}","digits":6,"counter":0,"period":30,"algorithm":"HmacSHA1"}}"#);
        assert_eq!(factor_kind("otp", Some(&data("totp"))), Some(FactorKind::Totp));
        assert_eq!(factor_kind("otp", Some(&data("hotp"))), Some(FactorKind::Hotp));
        assert_eq!(factor_kind("otp", Some(&data("HOTP"))), Some(FactorKind::Hotp));
        assert_eq!(factor_kind("otp", None), Some(FactorKind::Totp), "without data: the TOTP Keycloak made before HOTP existed");
    }

    #[test]
    fn event_cursors_round_trip_and_garbage_is_refused() {
        let cursor = EventCursor { at_ms: 1796526752181, ids: vec!["a".into(), "b".into()] };
        assert_eq!(EventCursor::parse(&cursor.to_string()), Some(cursor));
        assert_eq!(EventCursor::parse("17:"), Some(EventCursor { at_ms: 17, ids: vec![] }));
        assert_eq!(EventCursor::parse("soon:a"), None);
        assert_eq!(EventCursor::parse("17"), None);
    }

    #[test]
    fn user_events_become_identity_events() {
        let enrolled = json!({ "id": "e1", "time": 1796526752181i64, "type": "UPDATE_CREDENTIAL", "userId": "u1", "ipAddress": "100.64.7.7", "details": { "credential_type": "otp" } });
        let event = identity_event(&enrolled).unwrap().unwrap();
        assert_eq!((event.kind, event.factor, event.actor, event.client.ip), (EventKind::FactorEnrolled, Some(FactorKind::Totp), Actor::User, "100.64.7.7".parse().ok()));
        // A new password is no factor; a failed sign-in is not read; garbage is named.
        let password = json!({ "id": "e2", "time": 1i64, "type": "UPDATE_CREDENTIAL", "userId": "u1", "details": { "credential_type": "password" } });
        assert!(identity_event(&password).unwrap().is_none());
        assert!(identity_event(&json!({ "id": "e3", "time": 1i64, "type": "LOGIN", "userId": "u1", "error": "invalid_user_credentials" })).unwrap().is_none());
        assert_eq!(identity_event(&json!({ "id": "e4", "time": 1i64, "type": "LOGIN", "ipAddress": "not an address", "userId": "u1" })).unwrap().unwrap().client.ip, None);
        assert!(identity_event(&json!({ "id": "e5", "time": 1i64, "type": "LOGIN" })).unwrap_err().contains("names no user"));
        assert!(identity_event(&json!({ "id": "e6", "time": "late", "type": "LOGIN", "userId": "u1" })).is_err());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
        assert_eq!(enc("1f0e-Ab_9.~"), "1f0e-Ab_9.~");
    }
}
