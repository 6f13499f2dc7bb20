//! Microsoft Entra ID through Microsoft Graph v1.0, authenticated as an app registration with a
//! client secret (client credentials at `{loginUrl}/{tenant}/oauth2/v2.0/token`).
//!
//! Only v1.0 calls are made. What Graph makes awkward, and how this adapter copes:
//! - A user's default MFA method cannot be deleted while other methods are registered, and a
//!   mobile phone not while an alternate mobile is (400). Which method is the default is shown
//!   only by the beta `signInPreferences`, so the snapshot orders factors by the documented
//!   constraints and the likeliest default last, and a delete refused with 400 is tried again
//!   after the user's other factors (`RevokeOutcome::AfterOthers`).
//! - `createdDateTime` is null for phone and email methods, software OATH tokens, and Microsoft
//!   Authenticator unless registered for passwordless sign-in; phone and email ids are fixed, so
//!   a number registered again carries the recorded id. Such methods are recorded as of unknown
//!   age and deleted only when the directory audit log, read from the cutoff once its delay has
//!   passed since the snapshot, shows no registration of that kind since the cutoff
//!   (`factor_ages`); otherwise they are kept.
//! - Sessions cannot be listed or counted: `revokeSignInSessions` ends all of a user's refresh
//!   tokens and session cookies at once, and counts as one revocation per user.
//! - There is no "require re-registration" call: a user with no method left registers again at the
//!   next sign-in that asks for MFA, so `require_enrollment` has nothing to do.
//! - The re-enrollment window has three logs to read, none of them complete alone: the directory
//!   audit log (registrations, with an IP address only), the sign-in log (where a user is, denied
//!   MFA and fraud reports; Entra ID P1) and Identity Protection's risk detections (P2). The
//!   stream is the audit log's registrations, the sign-ins that denied MFA and the risk
//!   detections, each read from its own position, all kept in one cursor (`LogCursor`); a user's
//!   other sign-ins are read only for their own history. Graph lists newest first and shows
//!   entries minutes late, so each read of the stream starts `logDelay` before the last one began
//!   and the engine deals with an event read twice once (by its id).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::auth::{Grant, TokenSource};
use super::http::{Op, ProviderHttp, SecretKeys, SecretString};
use super::{
    Age, BypassSupport, Capabilities, IssuedBypass, Enrollment, EnrollmentOrigin, FactorRef, IdentityProvider, LoggedAge, Membership, NameMatch, ErrorKind, ProviderError, Record, RevokeOutcome, Shown, UserPage,
    UserRef, UserSnapshot, enc, first_enrolled_since, selected, split,
};
use crate::api::{EntraProvider, FactorKind};
use crate::watch::{Actor, ClientInfo, EventKind, EventPage, EventQuery, Geo, IdentityEvent};

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
const ADMIN_REGISTERED: &str = "Admin registered security info";
/// The directory audit activities the window watches: registrations and deletions, by the user
/// or by an administrator (a temporary access pass is an administrator's registration).
const WATCHED_ACTIVITIES: [&str; 4] = [REGISTERED, ADMIN_REGISTERED, "User deleted security info", "Admin deleted security info"];
/// `status.errorCode` of a sign-in whose MFA the user denied, or reported as fraud.
const MFA_DENIED: i64 = 500121;
/// Recorded by earlier versions after a fixed-id method's collection in `provider_type`.
const CUTOFF_MARK: char = '|';
/// How long the directory audit log may take to show an entry; `logDelay` on the IdentityBackend
/// raises it for a tenant seen to lag more.
const LOG_DELAY: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// The directory audit log's retention without a P1 or P2 licence: a cutoff older than this
/// leaves registrations since it unseen, so the log dates nothing.
const AUDIT_RETENTION: jiff::SignedDuration = jiff::SignedDuration::from_hours(7 * 24);

// Graph publishes one budget for reads and writes per app and tenant; the token endpoint is apart.
const CHECK: Op = Op::new("check", "graph");
const LIST_USERS: Op = Op::new("list_users", "graph");
const GET_USER: Op = Op::new("get_user", "graph");
const FIND_GROUP: Op = Op::new("find_group", "graph");
const LIST_FACTORS: Op = Op::new("list_factors", "graph");
const DELETE_FACTOR: Op = Op::new("delete_factor", "graph");
const REVOKE_SESSIONS: Op = Op::new("revoke_sessions", "graph");
const AUDIT_LOG: Op = Op::new("audit_log", "graph");
const SIGN_IN_LOG: Op = Op::new("sign_in_log", "graph");
const RISK_LOG: Op = Op::new("risk_detections", "graph");
const UPDATE_USER: Op = Op::new("update_user", "graph");
const ISSUE_BYPASS: Op = Op::new("issue_bypass", "graph");

pub struct Entra {
    http: ProviderHttp,
    auth: TokenSource,
    /// `{graphUrl}`, without `/v1.0`; `@odata.nextLink`s must start with it.
    graph: String,
    /// Logs the tenant refused with 403 (no licence or no permission): the window goes on
    /// without them, said once.
    refused: [AtomicBool; 2],
}

/// The logs the re-enrollment window reads.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Log {
    Audit,
    SignIns,
    Risks,
}

impl Log {
    const ALL: [Log; 3] = [Log::Audit, Log::SignIns, Log::Risks];

    fn key(self) -> &'static str {
        match self {
            Log::Audit => "audit",
            Log::SignIns => "signIns",
            Log::Risks => "risks",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Log::Audit => "/auditLogs/directoryAudits",
            Log::SignIns => "/auditLogs/signIns",
            Log::Risks => "/identityProtection/riskDetections",
        }
    }

    fn time_property(self) -> &'static str {
        match self {
            Log::Audit => "activityDateTime",
            Log::SignIns => "createdDateTime",
            Log::Risks => "detectedDateTime",
        }
    }

    fn op(self) -> Op {
        match self {
            Log::Audit => AUDIT_LOG,
            Log::SignIns => SIGN_IN_LOG,
            Log::Risks => RISK_LOG,
        }
    }

    /// Where a 403 is recorded: the logs that need a premium licence; the audit log does not.
    fn refusable(self) -> Option<usize> {
        match self {
            Log::Audit => None,
            Log::SignIns => Some(0),
            Log::Risks => Some(1),
        }
    }

    fn needs(self) -> &'static str {
        match self {
            Log::Audit => "AuditLog.Read.All",
            Log::SignIns => "a Microsoft Entra ID P1 licence and AuditLog.Read.All",
            Log::Risks => "a Microsoft Entra ID P2 licence and IdentityRiskEvent.Read.All",
        }
    }

    /// The `$filter` of one read: from `since`, before `until`, about one user or (for the
    /// stream) only what the window watches.
    fn filter(self, since: jiff::Timestamp, until: Option<jiff::Timestamp>, user: Option<&str>) -> String {
        let time = self.time_property();
        let mut clauses = vec![format!("{time} ge {}", odata_time(since))];
        clauses.extend(until.map(|u| format!("{time} lt {}", odata_time(u))));
        match (self, user) {
            (Log::Audit, user) => {
                let names: Vec<String> = WATCHED_ACTIVITIES.iter().map(|a| format!("activityDisplayName eq {}", quoted(a))).collect();
                clauses.push(format!("({})", names.join(" or ")));
                clauses.extend(user.map(|id| format!("targetResources/any(t: t/id eq {})", quoted(id))));
            }
            (Log::SignIns | Log::Risks, Some(id)) => clauses.push(format!("userId eq {}", quoted(id))),
            // The organisation's sign-ins are too many to stream: only those that denied MFA.
            (Log::SignIns, None) => clauses.push(format!("status/errorCode eq {MFA_DENIED}")),
            (Log::Risks, None) => {}
        }
        clauses.join(" and ")
    }

    fn event(self, entry: &Value) -> Result<Option<IdentityEvent>, String> {
        match self {
            Log::Audit => audit_event(entry),
            Log::SignIns => sign_in_event(entry),
            Log::Risks => risk_event(entry),
        }
    }
}

/// Where one log's reading is: the start of its next read, and the read under way (the next
/// link to follow, and when that read began).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct LogPosition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    began: Option<jiff::Timestamp>,
    /// A bounded read (a user's history) that has read everything.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    done: bool,
}

/// The window's cursor: each log's position, by `Log::key`, as JSON.
type LogCursor = BTreeMap<String, LogPosition>;

/// Text of a JSON string, trimmed; None when missing or empty.
fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::trim).filter(|s| !s.is_empty()).map(String::from)
}

fn time_of(value: &Value) -> Option<jiff::Timestamp> {
    value.as_str()?.trim().parse().ok()
}

/// A `location` (signIn, riskDetection) as a place; None when it says nothing.
fn geo_of(location: &Value) -> Option<Geo> {
    let coordinates = &location["geoCoordinates"];
    let geo = Geo {
        country: text(&location["countryOrRegion"]),
        region: text(&location["state"]),
        city: text(&location["city"]),
        point: Geo::point_of(coordinates["latitude"].as_f64(), coordinates["longitude"].as_f64()),
    };
    (geo.country.is_some() || geo.city.is_some() || geo.point.is_some()).then_some(geo)
}

/// A directory audit entry as an identity event: registrations (a temporary access pass is a
/// bypass issued) and deletions; None for other activities and failed attempts.
fn audit_event(entry: &Value) -> Result<Option<IdentityEvent>, String> {
    let id = text(&entry["id"]).ok_or("a directory audit entry without an id")?;
    let at = time_of(&entry["activityDateTime"]).ok_or_else(|| format!("directory audit entry {id}: no readable activityDateTime"))?;
    let activity = entry["activityDisplayName"].as_str().unwrap_or_default().trim().to_lowercase();
    if entry["result"].as_str().is_some_and(|r| !r.trim().eq_ignore_ascii_case("success")) {
        return Ok(None);
    }
    let removed = match activity.as_str() {
        "user registered security info" | "admin registered security info" => false,
        "user deleted security info" | "admin deleted security info" => true,
        _ => return Ok(None),
    };
    let initiator = &entry["initiatedBy"]["user"];
    let targets = entry["targetResources"].as_array().map(Vec::as_slice).unwrap_or_default();
    let target = targets.iter().find(|t| t["type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("user")));
    // A user's own registration names them as target; older entries may name them only as initiator.
    let user_id = target
        .and_then(|t| text(&t["id"]))
        .or_else(|| activity.starts_with("user ").then(|| text(&initiator["id"])).flatten())
        .ok_or_else(|| format!("directory audit entry {id}: names no user"))?;
    let target_upn = target.and_then(|t| text(&t["userPrincipalName"]));
    let actor = match (text(&initiator["id"]), text(&initiator["userPrincipalName"])) {
        (Some(by), _) if by == user_id => Actor::User,
        (_, Some(upn)) if target_upn.as_ref().is_some_and(|t| t.eq_ignore_ascii_case(&upn)) => Actor::User,
        (by, Some(upn)) => Actor::Other(if upn.is_empty() { by.unwrap_or_default() } else { upn }),
        (Some(by), None) => Actor::Other(by),
        (None, None) => {
            let app = &entry["initiatedBy"]["app"];
            match text(&app["displayName"]).or_else(|| text(&app["appId"])).or_else(|| text(&app["servicePrincipalId"])) {
                Some(app) => Actor::Other(app),
                None => Actor::Unknown,
            }
        }
    };
    let detail = entry["additionalDetails"].as_array().into_iter().flatten().find(|d| d["key"] == "Method").and_then(|d| d["value"].as_str());
    let factor = [entry["resultReason"].as_str(), detail].into_iter().flatten().find_map(registered_kind).map(|(kind, _)| kind);
    let kind = match (removed, factor) {
        (true, _) => EventKind::FactorRemoved,
        (false, Some(FactorKind::RecoveryCodes)) => EventKind::BypassIssued,
        (false, _) => EventKind::FactorEnrolled,
    };
    Ok(Some(IdentityEvent {
        id,
        at,
        user_id,
        kind,
        actor,
        client: ClientInfo { ip: ClientInfo::ip_of(initiator["ipAddress"].as_str()), ..ClientInfo::default() },
        factor,
        device: None,
    }))
}

/// A sign-in as an identity event: a successful one (where the user is), a denied MFA (a push
/// denied) or a fraud report; None for other failures.
fn sign_in_event(entry: &Value) -> Result<Option<IdentityEvent>, String> {
    let id = text(&entry["id"]).ok_or("a sign-in without an id")?;
    let at = time_of(&entry["createdDateTime"]).ok_or_else(|| format!("sign-in {id}: no readable createdDateTime"))?;
    let user_id = text(&entry["userId"]).ok_or_else(|| format!("sign-in {id}: names no user"))?;
    let status = &entry["status"];
    let code = status["errorCode"].as_i64().or_else(|| status["errorCode"].as_str().and_then(|c| c.trim().parse().ok())).ok_or_else(|| format!("sign-in {id}: no readable status.errorCode"))?;
    let kind = match code {
        0 => EventKind::SignIn,
        MFA_DENIED if status["additionalDetails"].as_str().is_some_and(|d| d.to_lowercase().contains("fraud")) => EventKind::FraudReported,
        MFA_DENIED => EventKind::PushDenied,
        _ => return Ok(None),
    };
    let device = &entry["deviceDetail"];
    Ok(Some(IdentityEvent {
        id,
        at,
        user_id,
        kind,
        actor: Actor::User,
        client: ClientInfo {
            ip: ClientInfo::ip_of(entry["ipAddress"].as_str()),
            user_agent: text(&device["browser"]),
            geo: geo_of(&entry["location"]),
            asn: None,
            proxy: false,
        },
        factor: None,
        device: None,
    }))
}

/// A risk detection as a risky sign-in; None for one an administrator dismissed or confirmed
/// safe, and for a user's own fraud report (the sign-in log shows that report already).
fn risk_event(entry: &Value) -> Result<Option<IdentityEvent>, String> {
    let id = text(&entry["id"]).ok_or("a risk detection without an id")?;
    let at = time_of(&entry["detectedDateTime"]).or_else(|| time_of(&entry["activityDateTime"])).ok_or_else(|| format!("risk detection {id}: no readable detectedDateTime"))?;
    let user_id = text(&entry["userId"]).ok_or_else(|| format!("risk detection {id}: names no user"))?;
    let event_type = entry["riskEventType"].as_str().unwrap_or_default().trim().to_lowercase();
    let state = entry["riskState"].as_str().unwrap_or_default().trim().to_lowercase();
    if event_type == "userreportedsuspiciousactivity" || ["dismissed", "remediated", "confirmedsafe"].contains(&state.as_str()) {
        return Ok(None);
    }
    Ok(Some(IdentityEvent {
        id,
        at,
        user_id,
        kind: EventKind::RiskySignIn,
        actor: Actor::User,
        client: ClientInfo {
            ip: ClientInfo::ip_of(entry["ipAddress"].as_str()),
            user_agent: None,
            geo: geo_of(&entry["location"]),
            asn: None,
            proxy: event_type == "anonymizedipaddress",
        },
        factor: None,
        device: None,
    }))
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

/// Deletion order: methods that cannot be a default first, then the alternate and office phones
/// (a mobile phone cannot go while an alternate mobile is registered), then the usual defaults
/// from the least to the most likely (mobile phone, code, push).
fn deletion_rank(collection: &str, id: &str) -> u8 {
    match collection {
        "phoneMethods" if id == PHONE_ALTERNATE_ID || id == PHONE_OFFICE_ID => 1,
        "phoneMethods" => 2,
        "softwareOathMethods" => 3,
        "microsoftAuthenticatorMethods" => 4,
        _ => 0,
    }
}

/// What a registration in the audit log registered, from the method its text names (the
/// entry's documented `resultReason`, or a detail). Matched loosely: Graph does not document
/// the wording; None when it names no method known here.
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

/// The collection a recorded factor is deleted from.
fn collection_of(provider_type: &str) -> &str {
    provider_type.split_once(CUTOFF_MARK).map_or(provider_type, |(collection, _)| collection)
}

/// A DateTimeOffset literal for `$filter`, to the millisecond (rounded down, so `ge` includes the cutoff).
fn odata_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
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
    /// Null for phone, email, software OATH and (unless passwordless) Authenticator methods;
    /// shown to the second or finer.
    #[serde(default, deserialize_with = "super::shown_text")]
    created_date_time: Option<Shown>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DirectoryAudit {
    activity_date_time: String,
    result: Option<String>,
    result_reason: Option<String>,
    initiated_by: Option<Value>,
    #[serde(default)]
    additional_details: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct KeyValue {
    key: Option<String>,
    value: Option<String>,
}

/// One registration entry of the directory audit log (the user's or an administrator's), read.
struct Registration {
    at: jiff::Timestamp,
    /// None when the entry names no method known here: it may be of any kind.
    kind: Option<FactorKind>,
    /// The fixed id the registered method has, for phones and email.
    fixed_id: Option<&'static str>,
    ip: Option<String>,
}

impl Entra {
    pub fn new(http: ProviderHttp, spec: &EntraProvider, keys: &SecretKeys) -> Result<Self, ProviderError> {
        let graph = spec.graph_url.as_deref().unwrap_or(DEFAULT_GRAPH).trim_end_matches('/').to_string();
        let login = spec.login_url.as_deref().unwrap_or(DEFAULT_LOGIN).trim_end_matches('/');
        let grant = Grant::ClientSecret { client_id: keys.get("client-id")?, client_secret: keys.get("client-secret")? };
        // Client credentials ask for the app's application permissions on this Graph (national clouds have their own).
        let scope = format!("{graph}/.default");
        Ok(Self {
            http,
            auth: TokenSource::new(format!("{login}/{}/oauth2/v2.0/token", enc(&spec.tenant_id)), grant, vec![("scope", scope)], keys.name.to_string()),
            graph,
            refused: Default::default(),
        })
    }

    /// One Graph call with the app's token; a 401 refreshes the token once. `target` is a path
    /// under `/v1.0` or an `@odata.nextLink`. Any status but 401 and 403 is the caller's to read.
    /// A request that casts a collection (`/microsoft.graph.user`) is an advanced query, which
    /// Graph answers only with `ConsistencyLevel: eventual` (and `$count=true`, in the query).
    async fn exchange(&self, op: Op, method: Method, target: &str, query: &[(&str, String)], body: Option<&Value>) -> Result<(StatusCode, Value), ProviderError> {
        let (status, value) = self.send(op, method.clone(), target, query, body).await?;
        if status == StatusCode::FORBIDDEN {
            let path = target.trim_start_matches(&self.graph).split('?').next().unwrap_or_default().to_string();
            return Err(self.http.error(ErrorKind::Auth, format!(
                "403 from {method} {path} ({}): grant the app registration the Graph application permissions User.Read.All, GroupMember.Read.All, UserAuthenticationMethod.ReadWrite.All, User.RevokeSessions.All and AuditLog.Read.All, with admin consent",
                brief(&value)
            )));
        }
        Ok((status, value))
    }

    /// `exchange` with a 403 left to the caller.
    async fn send(&self, op: Op, method: Method, target: &str, query: &[(&str, String)], body: Option<&Value>) -> Result<(StatusCode, Value), ProviderError> {
        let url = if target.starts_with('/') {
            format!("{}/v1.0{target}", self.graph)
        } else if target.starts_with(&format!("{}/", self.graph)) {
            target.to_string()
        } else {
            // The token must never go anywhere but Graph.
            return Err(self.http.error(ErrorKind::Rejected, format!("Graph sent a next page link outside {}", self.graph)));
        };
        let path = url.trim_start_matches(&self.graph).split('?').next().unwrap_or_default().to_string();
        let advanced = path.ends_with("/microsoft.graph.user");
        let reply = self
            .auth
            .send(&self.http, op, || {
                let request = self.http.json_request(&method, &url, query, body);
                if advanced { request.header("ConsistencyLevel", "eventual") } else { request }
            })
            .await?;
        let value = reply.value();
        match reply.status {
            StatusCode::UNAUTHORIZED => Err(self.http.error(ErrorKind::Auth, format!(
                "401 from {method} {path} ({}): Graph refused the app's token; check the app registration in Secret {}",
                brief(&value),
                self.auth.secret_name
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
        Err(self.http.error(ErrorKind::Rejected, format!(
            "{status} from {method} {}: {}",
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
            .map_err(|e| self.http.error(ErrorKind::Rejected, format!("unexpected body from GET {}: {e}", target.split('?').next().unwrap_or_default())))
    }

    /// One page of users from `first` (a path with its query) or from a `next` link.
    async fn user_page(&self, first: &str, query: &[(&str, String)], next: Option<&str>) -> Result<UserPage, ProviderError> {
        let page: Page<Record<User>> = match next {
            Some(link) => self.get(LIST_USERS, link, &[]).await?,
            None => self.get(LIST_USERS, first, query).await?,
        }
        .ok_or_else(|| self.http.error(ErrorKind::NotFound, format!("{first} not found")))?;
        let (users, unreadable) = split(page.value);
        Ok(UserPage { users: users.into_iter().map(UserRef::from).collect(), next: page.next_link, unreadable })
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
            [] => Err(self.http.error(ErrorKind::NotFound, format!("group {wanted} not found"))),
            _ => Err(self.http.error(ErrorKind::Config, format!(
                "more than one group is named {wanted}: name it by its object id instead"))),
        }
    }

    async fn methods(&self, user: &UserRef) -> Result<Vec<AuthMethod>, ProviderError> {
        let page: Page<AuthMethod> =
            self.get(LIST_FACTORS, &format!("/users/{}/authentication/methods", enc(&user.id)), &[]).await?.ok_or_else(|| self.user_gone(user))?;
        Ok(page.value)
    }

    /// The user's security-info registrations since `cutoff`, from the directory audit log.
    async fn registered_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Vec<Registration>, ProviderError> {
        // An administrator's registration for the user is as new a method as the user's own.
        let filter = format!(
            "(activityDisplayName eq {} or activityDisplayName eq {}) and activityDateTime ge {} and targetResources/any(t: t/id eq {})",
            quoted(REGISTERED),
            quoted(ADMIN_REGISTERED),
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
            .ok_or_else(|| self.http.error(ErrorKind::NotFound, "the directory audit log is not available"))?;
            for entry in page.value {
                if entry.result.as_deref().is_some_and(|r| r != "success") {
                    continue;
                }
                // An entry whose time does not parse is taken as since the cutoff (the filter asked for those).
                let at = entry.activity_date_time.parse::<jiff::Timestamp>().unwrap_or(cutoff);
                // The documented `resultReason` names the method ("User registered Mobile Phone SMS"); a detail may too.
                let detail = entry.additional_details.iter().find(|d| d.key.as_deref() == Some("Method")).and_then(|d| d.value.as_deref());
                let named = [entry.result_reason.as_deref(), detail].into_iter().flatten().find_map(registered_kind);
                let (kind, fixed_id) = named.map_or((None, None), |(kind, id)| (Some(kind), id));
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

    fn user_gone(&self, user: &UserRef) -> ProviderError {
        self.http.error(ErrorKind::NotFound, format!("user {} no longer exists", user.username))
    }

    /// One page of `log` for `query`, from `position`, into `page`; moves the position on. A log
    /// the tenant refuses with 403 that the window can do without is left out from then on.
    async fn read_log(&self, log: Log, query: &EventQuery<'_>, position: &mut LogPosition, page: &mut EventPage) -> Result<(), ProviderError> {
        let refused = log.refusable().map(|i| &self.refused[i]);
        if position.done || refused.is_some_and(|r| r.load(Ordering::Relaxed)) {
            return Ok(());
        }
        let since = position.since.unwrap_or(query.from);
        let first = [("$filter", log.filter(since, query.until, query.user.map(|u| u.id.as_str()))), ("$top", PAGE_SIZE.to_string())];
        let (status, value) = match &position.next {
            Some(link) => self.send(log.op(), Method::GET, link, &[], None).await?,
            None => {
                position.began = Some(jiff::Timestamp::now());
                self.send(log.op(), Method::GET, log.path(), &first, None).await?
            }
        };
        if status == StatusCode::FORBIDDEN {
            let Some(refused) = refused else {
                return Err(self.http.error(ErrorKind::Auth, format!("403 from GET {} ({}): the window needs {}", log.path(), brief(&value), log.needs())));
            };
            if !refused.swap(true, Ordering::Relaxed) {
                tracing::warn!(backend = %self.http.backend, answer = %brief(&value), "Graph refused {} (403): it needs {}; the window is watched without it", log.path(), log.needs());
            }
            return Ok(());
        }
        if !status.is_success() {
            return Err(self.http.error(ErrorKind::Rejected, format!("{status} from GET /v1.0{}: {}", log.path(), brief(&value))));
        }
        let entries = value["value"].as_array().map(Vec::as_slice).unwrap_or_default();
        for entry in entries {
            page.take(log.event(entry));
        }
        match value["@odata.nextLink"].as_str() {
            // A link elsewhere would take the token with it: that page is not read.
            Some(link) if !link.starts_with(&format!("{}/", self.graph)) => {
                return Err(self.http.error(ErrorKind::Rejected, format!("Graph sent a next page link outside {}", self.graph)));
            }
            Some(link) => {
                position.next = Some(link.to_string());
                page.more = true;
            }
            None => {
                position.next = None;
                match query.until {
                    Some(_) => position.done = true,
                    // Entries shown late still land after the start of the next read.
                    None => {
                        let began = position.began.take().unwrap_or_else(jiff::Timestamp::now);
                        let delay = jiff::SignedDuration::try_from(self.http.log_delay(LOG_DELAY)).unwrap_or(jiff::SignedDuration::from_mins(15));
                        position.since = Some(since.max(began - delay));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Entra {
    async fn set_enabled(&self, user: &UserRef, enabled: bool) -> Result<(), ProviderError> {
        let (status, _) = self.call(UPDATE_USER, Method::PATCH, &format!("/users/{}", enc(&user.id)), &[], Some(&json!({ "accountEnabled": enabled }))).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.user_gone(user));
        }
        Ok(())
    }
}

#[async_trait]
impl IdentityProvider for Entra {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list_factors: true,
            revoking_ends_enrollments: &[],
            // Phone and email methods show none.
            factor_creation_time: false,
            delete_factor: true,
            revoke_sessions: true,
            count_sessions: false,
            force_re_enrollment: true,
            enrollment_detection: true,
            event_stream: true,
            disable_user: true,
            nested_groups: true,
            // User principal names and mail addresses are case-insensitive in Entra ID.
            name_match: NameMatch::CaseInsensitive,
            log_delay: Some(self.http.log_delay(LOG_DELAY)),
            inseparable: Vec::new(),
            // Entra's documented range; the tenant's Temporary Access Pass policy may narrow it (Graph then refuses with its reason).
            enrollment_link: None,
            bypass: Some(BypassSupport {
                mechanism: "Entra Temporary Access Pass, usable once",
                lifetimes: std::time::Duration::from_secs(10 * 60)..=std::time::Duration::from_secs(43_200 * 60),
                sent_by_provider: false,
                withdrawable: true,
            }),
            limitations: vec![
                "sessions: Graph cannot list or count a user's sessions; revokeSignInSessions ends all their refresh tokens and session cookies at once, so sessionsRevoked counts one revocation per user. Access tokens already issued stay valid until they expire (up to about an hour)".into(),
                "factors: phone, email and software OATH methods, and Microsoft Authenticator unless passwordless, show no creation time in Graph v1.0; each is deleted only when the directory audit log, read 15 minutes (logDelay) after the user was reached, shows no registration of its kind since the cutoff, and kept (counted in keptUnknownAge) when the log cannot be read or the cutoff is older than its 7-day retention".into(),
                "factors: hardware OATH tokens are listed by Graph beta only and are not seen; Graph v1.0 does not tell the default method, so a refused delete is tried again after the user's other methods".into(),
                "enrollment: Graph has no call that requires re-registration; a user left without methods registers again at the next sign-in that asks for MFA, but a user who keeps methods of kinds not recalled is not asked to replace the kinds lost".into(),
                "detection: the directory audit log gives only the IP address of a registration (no user agent, location or network), arrives minutes late and is kept 7 days (30 with Entra ID P1); older registrations are seen by method creation time, which phone and email methods lack".into(),
                "window: the stream is the directory audit log's registrations and deletions (a temporary access pass is a bypass issued), the sign-ins that denied MFA (500121: denied pushes and fraud reports) and Identity Protection's risk detections, each from its own position in one cursor, every read starting logDelay before the previous one began so entries shown late are still read; where a user is (the new-network baseline) comes from their own sign-ins, read only for a user who enrolls. Registrations carry no location or proxy verdict, so impossible travel and anonymising proxy are never judged on them".into(),
                "window: sign-ins need Microsoft Entra ID P1 and risk detections P2 (with AuditLog.Read.All and IdentityRiskEvent.Read.All); when Graph answers 403 for either, the window is watched without it from then on (said once in the log): no baseline, push fatigue or fraud reports without sign-ins, no risky sign-ins without risk detections".into(),
            ],
        }
    }

    async fn check(&self) -> Result<(), ProviderError> {
        self.call(CHECK, Method::GET, "/users", &[("$top", "1".into()), ("$select", "id".into())], None).await?;
        Ok(())
    }

    async fn list_users(&self, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        // Cursor: the next link.
        self.user_page("/users", &Self::member_query(), cursor).await
    }

    async fn group_members(&self, group: &str, membership: Membership, cursor: Option<&str>) -> Result<UserPage, ProviderError> {
        // Cursor: the next link. Graph resolves nesting itself: transitiveMembers reaches the
        // users of every nested group, members only the group's own.
        match cursor {
            Some(link) => self.user_page("", &[], Some(link)).await,
            None => {
                let id = self.find_group(group).await?;
                let relation = match membership {
                    Membership::Transitive => "transitiveMembers",
                    Membership::Direct => "members",
                };
                let mut query = Self::member_query();
                query.push(("$count", "true".into()));
                self.user_page(&format!("/groups/{}/{relation}/microsoft.graph.user", enc(&id)), &query, None).await
            }
        }
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
        let enrolled_since_cutoff = first_enrolled_since(methods.iter().filter_map(|m| Some((method_type(&m.odata_type)?.0, m.created_date_time?))), cutoff);
        // Methods of kinds the recall does not ask for stay; with one left that signs in with MFA,
        // Entra asks the user to register nothing, so the kinds lost are not replaced (a temporary
        // access pass is no way to sign in for long, and an email method serves password reset only).
        let mut kept: Vec<&'static str> = methods
            .iter()
            .filter_map(|m| method_type(&m.odata_type).map(|t| t.0))
            .filter(|kind| !selected(*kind, kinds) && !matches!(kind, FactorKind::RecoveryCodes | FactorKind::Email))
            .map(FactorKind::as_str)
            .collect();
        kept.sort_unstable();
        kept.dedup();
        let mut factors: Vec<FactorRef> = methods
            .into_iter()
            .filter_map(|m| {
                let (kind, collection) = method_type(&m.odata_type)?;
                let age = Age::of(m.created_date_time, cutoff);
                (age != Age::Since && selected(kind, kinds)).then(|| FactorRef::aged(m.id, kind, collection, age))
            })
            .collect();
        // The engine deletes in this order: the likeliest default last.
        factors.sort_by_key(|f| deletion_rank(collection_of(&f.provider_type), &f.id));
        let at_risk = (!factors.is_empty() && !kept.is_empty()).then(|| {
            format!("keeps {} (not recalled): Entra asks for registration only when no method is left, so the kinds recalled are not asked for again", kept.join(", "))
        });
        Ok(UserSnapshot { factors, sessions: 1, enrolled_since_cutoff, at_risk, ..Default::default() })
    }

    async fn factor_ages(&self, user: &UserRef, factors: &[FactorRef], cutoff: jiff::Timestamp, _taken_at: jiff::Timestamp) -> Result<Vec<LoggedAge>, ProviderError> {
        if jiff::Timestamp::now().duration_since(cutoff) > AUDIT_RETENTION {
            return Ok(vec![LoggedAge::Unknown; factors.len()]);
        }
        // A registration of the factor's kind (for a fixed-id phone or email, of that id), or of
        // a method the entry does not name, may be the factor.
        let registrations = self.registered_since(user, cutoff).await?;
        Ok(super::date_from_log(factors, &registrations, |r, f| r.kind.is_none_or(|k| k == f.kind && r.fixed_id.is_none_or(|id| id == f.id))))
    }

    async fn revoke_sessions(&self, user: &UserRef, _snapshot: &UserSnapshot) -> Result<(), ProviderError> {
        let (status, _) = self.call(REVOKE_SESSIONS, Method::POST, &format!("/users/{}/revokeSignInSessions", enc(&user.id)), &[], None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.user_gone(user));
        }
        Ok(())
    }

    async fn revoke_factor(&self, user: &UserRef, factor: &FactorRef) -> Result<RevokeOutcome, ProviderError> {
        let collection = collection_of(&factor.provider_type);
        let (status, value) = self.delete_method(user, collection, &factor.id).await?;
        let refusal = || format!("{status} from DELETE /v1.0/users/{}/authentication/{collection}/{}: {}", user.id, factor.id, brief(&value));
        match status {
            s if s.is_success() => Ok(RevokeOutcome::Revoked),
            StatusCode::NOT_FOUND => Ok(RevokeOutcome::AlreadyGone),
            // Graph refuses the default method while others are registered, and a mobile phone
            // while an alternate mobile is, with 400 and no code of its own: once the others are
            // gone it is asked again.
            StatusCode::BAD_REQUEST => Ok(RevokeOutcome::AfterOthers(self.http.error(ErrorKind::Rejected, refusal()))),
            _ => Err(self.http.error(ErrorKind::Rejected, refusal())),
        }
    }

    async fn require_enrollment(&self, _user: &UserRef, _lost: &[FactorRef], _channel: super::EnrollmentChannel) -> Result<(), ProviderError> {
        // Nothing to call: with every method deleted, Entra makes the user register at the next
        // sign-in that needs MFA (see the enrollment limitation).
        Ok(())
    }

    async fn enrolled_since(&self, user: &UserRef, cutoff: jiff::Timestamp) -> Result<Option<Enrollment>, ProviderError> {
        match self.registered_since(user, cutoff).await {
            Ok(registrations) => {
                // An entry that names no method known here still shows an enrollment (of a kind not
                // told); a temporary access pass is a way in an administrator issued, not one.
                if let Some(first) = registrations.into_iter().filter(|r| r.kind != Some(FactorKind::RecoveryCodes)).min_by_key(|r| r.at) {
                    let origin = first.ip.map(|ip| EnrollmentOrigin { ip: Some(ip), ..EnrollmentOrigin::default() });
                    return Ok(Some(Enrollment { kind: first.kind.unwrap_or(FactorKind::All), at: first.at, origin }));
                }
            }
            Err(e) if e.kind() == ErrorKind::Unavailable => return Err(e),
            Err(e) => tracing::debug!(backend = %self.http.backend, error = %e, "audit log unavailable; reading method creation times"),
        }
        // Not (yet) in the audit log, or beyond its retention: methods created since the cutoff,
        // but for a temporary access pass.
        let methods = self.methods(user).await?.into_iter().filter_map(|m| Some((method_type(&m.odata_type)?.0, m.created_date_time?)));
        Ok(first_enrolled_since(methods.filter(|(kind, _)| *kind != FactorKind::RecoveryCodes), cutoff))
    }

    async fn read_events(&self, query: &EventQuery<'_>) -> Result<EventPage, ProviderError> {
        // A cursor that does not read (an older format, a damaged state) starts again from `from`.
        let mut cursor: LogCursor = query.cursor.and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
        let mut page = EventPage::default();
        for log in Log::ALL {
            let position = cursor.entry(log.key().to_string()).or_default();
            let start = page.events.len();
            self.read_log(log, query, position, &mut page).await?;
            // Graph lists newest first; the watch reads oldest first (several in one second keep
            // their order so).
            page.events[start..].reverse();
        }
        page.cursor = Some(serde_json::to_string(&cursor).expect("a map of strings and times"));
        Ok(page)
    }

    async fn disable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        self.set_enabled(user, false).await
    }

    async fn enabled(&self, user: &UserRef) -> Result<Option<bool>, ProviderError> {
        let found: Value = self.get(GET_USER, &format!("/users/{}", enc(&user.id)), &[("$select", "id,accountEnabled".into())]).await?.ok_or_else(|| self.user_gone(user))?;
        Ok(found["accountEnabled"].as_bool())
    }

    async fn enable_user(&self, user: &UserRef) -> Result<(), ProviderError> {
        self.set_enabled(user, true).await
    }

    async fn bypass_address(&self, user: &UserRef) -> Result<Option<String>, ProviderError> {
        // The principal name is the mailbox the pass unlocks: the alternate addresses the user
        // gave for self-service password reset (otherMails) are read without it.
        let found: Value = self.get(GET_USER, &format!("/users/{}", enc(&user.id)), &[("$select", "id,otherMails".into())]).await?.ok_or_else(|| self.user_gone(user))?;
        Ok(found["otherMails"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::trim).find(|a| a.contains('@')).map(String::from))
    }

    async fn issue_bypass(&self, user: &UserRef, lifetime: std::time::Duration) -> Result<IssuedBypass, ProviderError> {
        // A user holds one pass: an earlier one (ours from a try cut short, or an administrator's) goes first.
        self.revoke_bypass(user, jiff::Timestamp::UNIX_EPOCH, None).await?;
        let body = json!({ "lifetimeInMinutes": lifetime.as_secs().div_ceil(60), "isUsableOnce": true });
        let path = format!("/users/{}/authentication/temporaryAccessPassMethods", enc(&user.id));
        let (status, value) = self.call(ISSUE_BYPASS, Method::POST, &path, &[], Some(&body)).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.user_gone(user));
        }
        // A fixed message: the parser's would quote the pass were it of another type.
        let pass: TemporaryAccessPass = serde_json::from_value(value).map_err(|_| self.http.error(ErrorKind::Rejected, "unexpected body from POST temporaryAccessPassMethods"))?;
        let secret = pass.temporary_access_pass.filter(|p| !p.is_empty()).ok_or_else(|| self.http.error(ErrorKind::Rejected, "Graph created a temporary access pass but did not return it"))?;
        let start = pass.start_date_time.and_then(|s| s.parse::<jiff::Timestamp>().ok()).unwrap_or_else(jiff::Timestamp::now);
        let minutes = pass.lifetime_in_minutes.unwrap_or(body["lifetimeInMinutes"].as_u64().unwrap_or_default());
        let expires_at = start.checked_add(jiff::SignedDuration::from_mins(minutes.min(43_200) as i64)).unwrap_or(start);
        Ok(IssuedBypass { secret: Some(SecretString::new(secret)), expires_at, reference: None })
    }

    async fn bypass_used(&self, user: &UserRef, _issued_at: jiff::Timestamp, _reference: Option<&str>) -> Result<Option<bool>, ProviderError> {
        // A pass used once stays listed, unusable for the reason OneTimeUsed.
        let path = format!("/users/{}/authentication/temporaryAccessPassMethods", enc(&user.id));
        let passes: Option<Page<Value>> = self.get(LIST_FACTORS, &path, &[]).await?;
        Ok(Some(passes.is_some_and(|p| p.value.iter().any(|pass| pass["methodUsabilityReason"] == "OneTimeUsed"))))
    }

    async fn revoke_bypass(&self, user: &UserRef, _issued_at: jiff::Timestamp, _reference: Option<&str>) -> Result<(), ProviderError> {
        // One pass per user, and the one a bypass issued replaced any other: every pass goes.
        let path = format!("/users/{}/authentication/temporaryAccessPassMethods", enc(&user.id));
        let Some(passes) = self.get::<Page<MethodId>>(LIST_FACTORS, &path, &[]).await? else { return Ok(()) };
        for pass in passes.value {
            let (status, value) = self.delete_method(user, "temporaryAccessPassMethods", &pass.id).await?;
            if !(status.is_success() || status == StatusCode::NOT_FOUND) {
                return Err(self.http.error(ErrorKind::Rejected, format!("{status} deleting temporary access pass {}: {}", pass.id, brief(&value))));
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct MethodId {
    id: String,
}

/// A pass Graph just created: the only answer that shows `temporaryAccessPass`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TemporaryAccessPass {
    temporary_access_pass: Option<String>,
    start_date_time: Option<String>,
    lifetime_in_minutes: Option<u64>,
}

/// A short, secret-free rendering of a Graph error body (`{"error": {"code", "message"}}`).
fn brief(value: &Value) -> String {
    super::brief(value, &["/error/code", "/error/message"])
}

/// Every answer shape this adapter decodes, for the fuzz target `provider_json`.
pub(crate) fn decode_answers(data: &[u8]) {
    crate::fuzzing::decode::<Page<Record<User>>>(data);
    crate::fuzzing::decode::<Page<Group>>(data);
    crate::fuzzing::decode::<Page<AuthMethod>>(data);
    crate::fuzzing::decode::<Page<DirectoryAudit>>(data);
    crate::fuzzing::decode::<Page<MethodId>>(data);
    crate::fuzzing::decode::<TemporaryAccessPass>(data);
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
    fn the_likeliest_default_is_deleted_last_and_the_alternate_mobile_before_the_mobile() {
        let mut methods = [
            ("microsoftAuthenticatorMethods", "a"),
            ("phoneMethods", PHONE_MOBILE_ID),
            ("softwareOathMethods", "b"),
            ("phoneMethods", PHONE_ALTERNATE_ID),
            ("fido2Methods", "c"),
        ];
        methods.sort_by_key(|(c, id)| deletion_rank(c, id));
        let order: Vec<&str> = methods.iter().map(|(c, id)| if *c == "phoneMethods" { *id } else { *c }).collect();
        assert_eq!(order, ["fido2Methods", PHONE_ALTERNATE_ID, PHONE_MOBILE_ID, "softwareOathMethods", "microsoftAuthenticatorMethods"]);
    }

    #[test]
    fn the_collection_is_read_from_recordings_old_and_new() {
        assert_eq!(collection_of("phoneMethods|2026-11-27T18:00:00.123Z"), "phoneMethods");
        assert_eq!(collection_of("fido2Methods"), "fido2Methods");
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
    fn a_key_shown_in_the_cutoffs_second_is_not_old() {
        // Graph may show whole seconds: a key registered 200 ms after the cutoff shows as its second.
        let cutoff: jiff::Timestamp = "2026-11-27T18:00:00.200Z".parse().unwrap();
        let method: AuthMethod = serde_json::from_value(json!({ "@odata.type": "#microsoft.graph.fido2AuthenticationMethod", "id": "k", "createdDateTime": "2026-11-27T18:00:00Z" })).unwrap();
        assert_eq!(Age::of(method.created_date_time, cutoff), Age::Since);
        let phone: AuthMethod = serde_json::from_value(json!({ "@odata.type": "#microsoft.graph.phoneAuthenticationMethod", "id": PHONE_MOBILE_ID, "createdDateTime": null })).unwrap();
        assert_eq!(Age::of(phone.created_date_time, cutoff), Age::Unknown);
    }

    #[test]
    fn refusals_and_errors_are_read() {
        let refusal = json!({ "error": { "code": "badRequest", "message": "Cannot delete default method with other methods configured. Please change default method before deletion." } });
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
        use idp_sim::{Seed, username};
        use idp_sim::FactorKind as Sim;
        use idp_sim::subject::Subject as SimSubject;

        async fn start(factors: Vec<Sim>) -> (SimSubject, Arc<dyn IdentityProvider>, UserRef) {
            let subject = SimSubject::start("entra").await.unwrap();
            subject.sim.provider.seed(&Seed { users: 2, factors, ..Seed::default() });
            let provider = crate::backends::connect_to_sim(&subject);
            assert!(provider.find_user("nobody@example.com").await.unwrap().is_empty());
            let user = provider.find_user(&username(1)).await.unwrap().remove(0);
            (subject, provider, user)
        }

        #[tokio::test]
        async fn users_and_groups_are_paged_by_next_links() {
            let subject = SimSubject::start("entra").await.unwrap();
            let groups = vec![idp_sim::GroupSeed::new("staff", 2), idp_sim::GroupSeed::new("admins", 10)];
            subject.sim.provider.seed(&Seed { users: 2100, groups, ..Seed::default() });
            let provider = crate::backends::connect_to_sim(&subject);
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
            assert!(matches!(provider.group_members("nobody", Membership::Transitive, None).await, Err(e) if e.kind() == ErrorKind::NotFound));
        }

        #[tokio::test]
        async fn a_default_method_goes_last_and_is_refused_while_a_new_method_stays() {
            // The phone is the default (registered first); the user adds an authenticator after the cutoff.
            let (subject, provider, user) = start(vec![Sim::Sms, Sim::Totp]).await;
            let cutoff = jiff::Timestamp::now();
            tokio::time::sleep(Duration::from_millis(5)).await;
            let new_push = subject.sim.provider.enroll(&user.username, Sim::Push, "203.0.113.9").unwrap();
            let snapshot = provider.snapshot(&user, &[FactorKind::All], cutoff).await.unwrap();
            // No creation time on any of them: all three are of unknown age, the likeliest default last.
            assert_eq!(snapshot.factors.iter().map(|f| (f.kind, f.unknown_age)).collect::<Vec<_>>(), [(FactorKind::Sms, true), (FactorKind::Totp, true), (FactorKind::Push, true)]);
            // The audit log dates them: the phone and code are old, the authenticator new.
            let ages = provider.factor_ages(&user, &snapshot.factors, cutoff, jiff::Timestamp::now()).await.unwrap();
            assert_eq!(ages, [LoggedAge::Before, LoggedAge::Before, LoggedAge::Since]);
            // The default phone is refused while the new authenticator stays: asked again later, refused again.
            assert!(matches!(provider.revoke_factor(&user, &snapshot.factors[0]).await.unwrap(), RevokeOutcome::AfterOthers(_)));
            assert_eq!(provider.revoke_factor(&user, &snapshot.factors[1]).await.unwrap(), RevokeOutcome::Revoked);
            assert!(matches!(provider.revoke_factor(&user, &snapshot.factors[0]).await.unwrap(), RevokeOutcome::AfterOthers(_)));
            let left = subject.sim.provider.user(&user.username).unwrap().factors;
            assert_eq!(left.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), [PHONE_MOBILE_ID, new_push.as_str()]);
            let seen = provider.enrolled_since(&user, cutoff).await.unwrap().expect("the new authenticator is seen");
            assert_eq!((seen.kind, seen.origin.and_then(|o| o.ip)), (FactorKind::Push, Some("203.0.113.9".to_string())));
        }

        #[tokio::test]
        async fn a_phone_registered_again_under_its_fixed_id_is_dated_new() {
            let (subject, provider, user) = start(vec![Sim::Sms, Sim::Email]).await;
            let cutoff = jiff::Timestamp::now();
            let snapshot = provider.snapshot(&user, &[FactorKind::All], cutoff).await.unwrap();
            assert!(snapshot.factors.len() == 2 && snapshot.factors.iter().all(|f| f.unknown_age), "no creation time: {:?}", snapshot.factors);
            assert_eq!(provider.factor_ages(&user, &snapshot.factors, cutoff, jiff::Timestamp::now()).await.unwrap(), [LoggedAge::Before; 2]);
            for factor in &snapshot.factors {
                assert_eq!(provider.revoke_factor(&user, factor).await.unwrap(), RevokeOutcome::Revoked);
            }
            assert!(provider.enrolled_since(&user, cutoff).await.unwrap().is_none());
            // The user registers the same kind of phone again: a resumed recall asks the log again
            // before deleting, and the recorded id now names a new phone.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let phone = subject.sim.provider.enroll(&user.username, Sim::Sms, "198.51.100.20").unwrap();
            assert_eq!(phone, PHONE_MOBILE_ID);
            let ages = provider.factor_ages(&user, &snapshot.factors, cutoff, jiff::Timestamp::now()).await.unwrap();
            let dated: Vec<(FactorKind, LoggedAge)> = snapshot.factors.iter().map(|f| f.kind).zip(ages).collect();
            assert!(dated.contains(&(FactorKind::Sms, LoggedAge::Since)) && dated.contains(&(FactorKind::Email, LoggedAge::Before)), "{dated:?}");
            assert_eq!(provider.enrolled_since(&user, cutoff).await.unwrap().map(|e| e.kind), Some(FactorKind::Sms));
        }

        #[tokio::test]
        async fn an_alternate_mobile_goes_before_the_mobile() {
            let (subject, provider, user) = start(vec![Sim::Totp]).await;
            let cutoff = jiff::Timestamp::now();
            subject.sim.provider.enroll(&user.username, Sim::Sms, "198.51.100.20").unwrap();
            subject.sim.provider.enroll(&user.username, Sim::Sms, "198.51.100.20").unwrap();
            let ids: Vec<String> = subject.sim.provider.user(&user.username).unwrap().factors.into_iter().map(|f| f.id).collect();
            assert!(ids.contains(&PHONE_ALTERNATE_ID.to_string()), "the second phone is the alternate mobile: {ids:?}");
            let snapshot = provider.snapshot(&user, &[FactorKind::Sms], jiff::Timestamp::now()).await.unwrap();
            assert_eq!(snapshot.factors.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), [PHONE_ALTERNATE_ID, PHONE_MOBILE_ID]);
            for factor in &snapshot.factors {
                assert_eq!(provider.revoke_factor(&user, factor).await.unwrap(), RevokeOutcome::Revoked, "{factor:?}");
            }
            let _ = cutoff;
        }
    }

    fn audit(activity: &str, initiator: Value, target: Value, reason: &str) -> Value {
        json!({
            "id": "SSPR_0f1e2d3c", "category": "UserManagement", "result": "success", "resultReason": reason,
            "activityDisplayName": activity, "activityDateTime": "2026-11-28T10:15:03.1234567Z", "loggedByService": "Authentication Methods",
            "initiatedBy": { "app": null, "user": initiator }, "targetResources": [target], "additionalDetails": [],
        })
    }

    const USER: &str = "6e7b768e-07e2-4810-8459-485f84f8f204";

    fn target() -> Value {
        json!({ "id": USER, "type": "User", "userPrincipalName": "Alex@contoso.example" })
    }

    #[test]
    fn registrations_deletions_and_passes_become_events() {
        let own = json!({ "id": USER, "userPrincipalName": "alex@contoso.example", "ipAddress": "203.0.113.9" });
        let event = audit_event(&audit("User registered security info", own.clone(), target(), "User registered Authenticator App with Notification and Code")).unwrap().unwrap();
        assert_eq!((event.kind, event.factor, event.actor.clone()), (EventKind::FactorEnrolled, Some(FactorKind::Push), Actor::User));
        assert_eq!(event.user_id, USER);
        assert_eq!(event.client.ip, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(event.at, "2026-11-28T10:15:03.1234567Z".parse().unwrap());
        // Mixed case, by an administrator, a pass, a deletion.
        let admin = json!({ "id": "11111111-2222-4333-a444-555555555555", "userPrincipalName": "helpdesk@contoso.example", "ipAddress": "198.51.100.4" });
        let by_admin = audit_event(&audit("ADMIN registered security info", admin.clone(), target(), "Admin registered Mobile Phone SMS")).unwrap().unwrap();
        assert_eq!((by_admin.kind, by_admin.actor), (EventKind::FactorEnrolled, Actor::Other("helpdesk@contoso.example".into())));
        let pass = audit_event(&audit("Admin registered security info", admin.clone(), target(), "Admin registered temporary access pass method")).unwrap().unwrap();
        assert_eq!(pass.kind, EventKind::BypassIssued);
        let removed = audit_event(&audit("Admin deleted security info", json!(null), target(), "Admin deleted Software OATH token")).unwrap().unwrap();
        assert_eq!((removed.kind, removed.actor), (EventKind::FactorRemoved, Actor::Unknown));
        // The app the recall runs as.
        let mut by_app = audit("Admin deleted security info", json!(null), target(), "");
        by_app["initiatedBy"]["app"] = json!({ "appId": "f0e1d2c3", "displayName": "mfa-recall" });
        assert_eq!(audit_event(&by_app).unwrap().unwrap().actor, Actor::Other("mfa-recall".into()));
    }

    #[test]
    fn audit_entries_not_watched_or_unreadable_are_told_apart() {
        let own = json!({ "id": USER, "ipAddress": "not an address" });
        assert_eq!(audit_event(&audit("Update user", own.clone(), target(), "")).unwrap(), None);
        let mut failed = audit("User registered security info", own.clone(), target(), "");
        failed["result"] = json!("failure");
        assert_eq!(audit_event(&failed).unwrap(), None);
        // Garbage address: no address; no target: the initiator of a user's own registration.
        let untargeted = audit_event(&audit("User registered security info", own.clone(), json!(null), "User registered FIDO2 security key")).unwrap().unwrap();
        assert_eq!((untargeted.user_id.as_str(), untargeted.client.ip, untargeted.factor), (USER, None, Some(FactorKind::Webauthn)));
        let mut no_id = audit("User registered security info", own.clone(), target(), "");
        no_id["id"] = json!("  ");
        assert!(audit_event(&no_id).is_err());
        let mut bad_time = audit("User registered security info", own.clone(), target(), "");
        bad_time["activityDateTime"] = json!("yesterday");
        assert!(audit_event(&bad_time).unwrap_err().contains("SSPR_0f1e2d3c"));
        assert!(audit_event(&audit("Admin registered security info", json!({ "userPrincipalName": "x@y" }), json!({ "type": "Group", "id": "g" }), "")).is_err(), "names no user");
        assert!(audit_event(&json!(42)).is_err());
    }

    fn sign_in(code: Value, details: &str) -> Value {
        json!({
            "id": "66ea54eb-6301-4ee5-be62-ff5a759b0100", "createdDateTime": "2026-11-28T09:00:00Z", "userId": USER,
            "userPrincipalName": "alex@contoso.example", "ipAddress": "100.64.7.7", "appDisplayName": "My Signins",
            "status": { "errorCode": code, "failureReason": "Other.", "additionalDetails": details },
            "deviceDetail": { "browser": "Edge 124.0.0", "operatingSystem": "Windows10" },
            "location": { "city": "Lagos", "state": "Lagos", "countryOrRegion": "NG", "geoCoordinates": { "latitude": 6.5244, "longitude": 3.3792 } },
        })
    }

    #[test]
    fn sign_ins_tell_where_a_user_is_and_what_they_denied() {
        let ok = sign_in_event(&sign_in(json!(0), "MFA requirement satisfied by claim in the token")).unwrap().unwrap();
        assert_eq!(ok.kind, EventKind::SignIn);
        let geo = ok.client.geo.clone().unwrap();
        assert_eq!((geo.country.as_deref(), geo.point), (Some("NG"), Some((6.5244, 3.3792))));
        assert_eq!(ok.client.user_agent.as_deref(), Some("Edge 124.0.0"));
        assert_eq!(sign_in_event(&sign_in(json!(500121), "MFA denied; user declined the authentication")).unwrap().unwrap().kind, EventKind::PushDenied);
        assert_eq!(sign_in_event(&sign_in(json!("500121"), "MFA denied; Phone App Reported FRAUD")).unwrap().unwrap().kind, EventKind::FraudReported);
        assert_eq!(sign_in_event(&sign_in(json!(50126), "Invalid username or password")).unwrap(), None, "other failures are not read");
        let mut nowhere = sign_in(json!(0), "");
        nowhere["location"] = json!({ "city": "", "countryOrRegion": "", "geoCoordinates": { "latitude": 0.0, "longitude": 0.0 } });
        nowhere["ipAddress"] = json!("999.1.1.1");
        let nowhere = sign_in_event(&nowhere).unwrap().unwrap();
        assert_eq!((nowhere.client.geo, nowhere.client.ip), (None, None));
        let mut no_status = sign_in(json!(0), "");
        no_status["status"] = json!(null);
        assert!(sign_in_event(&no_status).is_err());
        let mut no_user = sign_in(json!(0), "");
        no_user.as_object_mut().unwrap().remove("userId");
        assert!(sign_in_event(&no_user).is_err());
    }

    #[test]
    fn risk_detections_are_risky_sign_ins_unless_dismissed_or_a_fraud_report() {
        let risk = |event_type: &str, state: &str| {
            json!({ "id": "e3b0c442", "riskEventType": event_type, "riskState": state, "riskLevel": "medium", "detectedDateTime": "2026-11-28T09:01:00Z",
                    "userId": USER, "ipAddress": "198.19.0.9", "location": { "city": "Bucharest", "countryOrRegion": "RO", "geoCoordinates": { "latitude": 44.4, "longitude": 26.1 } } })
        };
        let risky = risk_event(&risk("unfamiliarFeatures", "atRisk")).unwrap().unwrap();
        assert_eq!((risky.kind, risky.client.proxy), (EventKind::RiskySignIn, false));
        assert!(risk_event(&risk("AnonymizedIPAddress", "atRisk")).unwrap().unwrap().client.proxy);
        assert_eq!(risk_event(&risk("userReportedSuspiciousActivity", "atRisk")).unwrap(), None, "the sign-in log has the report");
        assert_eq!(risk_event(&risk("newCountry", "Dismissed")).unwrap(), None);
        let mut undated = risk("newCountry", "atRisk");
        undated["detectedDateTime"] = json!(null);
        undated["activityDateTime"] = json!("2026-11-28T09:00:00Z");
        assert!(risk_event(&undated).unwrap().is_some());
        undated["activityDateTime"] = json!(17);
        assert!(risk_event(&undated).is_err());
    }

    #[test]
    fn each_log_is_filtered_for_the_stream_or_for_one_user() {
        let t: jiff::Timestamp = "2026-11-28T09:00:00Z".parse().unwrap();
        let audit = Log::Audit.filter(t, None, None);
        assert!(audit.starts_with("activityDateTime ge 2026-11-28T09:00:00.000Z and (activityDisplayName eq 'User registered security info' or "), "{audit}");
        assert_eq!(Log::SignIns.filter(t, None, None), "createdDateTime ge 2026-11-28T09:00:00.000Z and status/errorCode eq 500121");
        assert_eq!(Log::Risks.filter(t, Some(t), Some("o'id")), "detectedDateTime ge 2026-11-28T09:00:00.000Z and detectedDateTime lt 2026-11-28T09:00:00.000Z and userId eq 'o''id'");
        assert!(Log::Audit.filter(t, None, Some("u1")).ends_with(" and targetResources/any(t: t/id eq 'u1')"));
    }

    #[tokio::test]
    async fn the_stream_reads_each_log_once_and_goes_on_without_those_the_tenant_refuses() {
        use idp_sim::{Act, Activity, FactorKind as Sim};
        let subject = idp_sim::subject::Subject::start("entra").await.unwrap();
        subject.sim.provider.seed(&idp_sim::Seed { users: 3, ..Default::default() });
        let entra = crate::backends::connect_to_sim(&subject);
        assert!(entra.capabilities().event_stream);
        let from = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
        let provider = &subject.sim.provider;
        let name = idp_sim::username(1);
        provider.act(&name, &Activity::new(Act::SignIn, "198.51.100.20")).unwrap();
        provider.act(&name, &Activity::new(Act::PushDenied, "198.51.100.20")).unwrap();
        provider.act(&name, &Activity::new(Act::RiskySignIn, "198.19.0.9")).unwrap();
        provider.act(&name, &Activity::new(Act::Enroll { factor: Sim::Push }, "100.64.7.7")).unwrap();
        let read = |cursor: Option<String>| {
            let entra = entra.clone();
            async move { entra.read_events(&EventQuery { cursor: cursor.as_deref(), from, until: None, user: None }).await.unwrap() }
        };
        let page = read(None).await;
        let mut kinds: Vec<EventKind> = page.events.iter().map(|e| e.kind).collect();
        kinds.sort_by_key(|k| k.as_str());
        assert_eq!(kinds, [EventKind::FactorEnrolled, EventKind::PushDenied, EventKind::RiskySignIn], "the successful sign-in is not streamed");
        assert!(!page.more && page.skipped.is_empty());
        // Within the log delay the same entries are read again (the engine deals with each once).
        let again = read(page.cursor.clone()).await;
        assert_eq!(again.events.len(), 3);

        let user = entra.find_user(&name).await.unwrap().remove(0);
        let history = entra.read_events(&EventQuery { cursor: None, from, until: Some(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1)), user: Some(&user) }).await.unwrap();
        assert_eq!(history.events.len(), 5, "the user's own sign-ins too: {:?}", history.events);

        provider.set_premium(false);
        let without = read(again.cursor).await;
        assert_eq!(without.events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::FactorEnrolled], "the audit log alone");
        let cursor: LogCursor = serde_json::from_str(without.cursor.as_deref().unwrap()).unwrap();
        assert_eq!(cursor.keys().collect::<Vec<_>>(), ["audit", "risks", "signIns"]);
    }
}
