//! Identity events as every provider's log is read into them: who, what, when, from where. Each
//! adapter maps its own log (Okta System Log, Keycloak events, ...) onto these; the re-enrollment
//! watch and the anomaly rules read only these.

use std::net::IpAddr;

use crate::api::FactorKind;
use crate::backends::UserRef;

/// One event of a provider's log about one user.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityEvent {
    /// The provider's own id of the entry (Okta `uuid`, Auth0 `log_id`, ...), quoted in flags so a
    /// reviewer can find it in the provider's log.
    pub id: String,
    pub at: jiff::Timestamp,
    /// The provider's id of the user the event is about (its target, not its actor).
    pub user_id: String,
    pub kind: EventKind,
    pub actor: Actor,
    pub client: ClientInfo,
    /// The factor the event is about, where the log names its type.
    pub factor: Option<FactorKind>,
    /// A phone number or authenticator device the event names (SMS number, Okta Verify device,
    /// Guardian enrollment, WebAuthn credential): personal data, kept only as a pseudonym.
    pub device: Option<Personal>,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    FactorEnrolled,
    FactorRemoved,
    SignIn,
    /// A second-factor challenge passed.
    MfaChallenge,
    /// A push or challenge the user denied or let expire.
    PushDenied,
    BypassIssued,
    BypassUsed,
    /// The user said a sign-in or push was not them.
    FraudReported,
    /// The provider judged a sign-in risky (Entra risk detections, Okta threat detection, Google
    /// `is_suspicious`).
    RiskySignIn,
    /// Second-step verification turned off, or a recovery phone changed (Google).
    SecondStepWeakened,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::FactorEnrolled => "factorEnrolled",
            EventKind::FactorRemoved => "factorRemoved",
            EventKind::SignIn => "signIn",
            EventKind::MfaChallenge => "mfaChallenge",
            EventKind::PushDenied => "pushDenied",
            EventKind::BypassIssued => "bypassIssued",
            EventKind::BypassUsed => "bypassUsed",
            EventKind::FraudReported => "fraudReported",
            EventKind::RiskySignIn => "riskySignIn",
            EventKind::SecondStepWeakened => "secondStepWeakened",
        }
    }

    /// Events that tell where a user usually is: what a baseline is made of.
    pub fn locates_user(self) -> bool {
        matches!(self, EventKind::SignIn | EventKind::MfaChallenge | EventKind::FactorEnrolled)
    }
}

/// Who did it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The user the event is about.
    User,
    /// Another principal (an administrator, a helpdesk agent, an API client), as the log names it.
    Other(String),
    /// The provider itself, or its support staff (Okta's `system@okta.com`).
    Provider(String),
    /// The log does not say.
    Unknown,
}

/// The client an event came from, as far as the log tells.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub geo: Option<Geo>,
    pub asn: Option<u32>,
    /// The provider says the address is an anonymising proxy, VPN or Tor exit.
    pub proxy: bool,
}

/// Where the provider placed the client.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Geo {
    pub country: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
    /// Latitude and longitude in degrees, where given (and not the 0,0 some logs write for none).
    pub point: Option<(f64, f64)>,
}

impl Geo {
    /// A point, unless it is missing, out of range or the (0, 0) logs write for "unknown".
    pub fn point_of(lat: Option<f64>, lon: Option<f64>) -> Option<(f64, f64)> {
        let (lat, lon) = (lat?, lon?);
        let sane = lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0 && (lat, lon) != (0.0, 0.0);
        sane.then_some((lat, lon))
    }
}

impl ClientInfo {
    /// Where an enrollment came from, as the audit line and the notice say it.
    pub fn to_origin(&self) -> crate::backends::EnrollmentOrigin {
        crate::backends::EnrollmentOrigin { ip: self.ip.map(|ip| ip.to_string()), user_agent: self.user_agent.clone(), geo: self.place(), asn: self.asn }
    }

    /// Country/region/city, as far as known.
    fn place(&self) -> Option<String> {
        self.geo.as_ref().map(|g| [&g.country, &g.region, &g.city].into_iter().flatten().map(String::as_str).collect::<Vec<_>>().join("/")).filter(|g| !g.is_empty())
    }
}

impl std::fmt::Display for ClientInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            self.ip.map(|ip| format!("ip {ip}")),
            self.place().map(|g| format!("geo {g}")),
            self.asn.map(|a| format!("asn {a}")),
            self.proxy.then(|| "proxy".to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() { f.write_str("an unknown client") } else { f.write_str(&parts.join(", ")) }
    }
}

/// Personal data read from a log (a phone number, a device id): never printed, serialised or
/// kept; only its pseudonym under the operator's key is (`Pseudonyms`).
#[derive(Clone, PartialEq, Eq)]
pub struct Personal(String);

impl Personal {
    /// None for an empty value, which identifies nobody.
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        (!value.trim().is_empty()).then(|| Personal(value.trim().to_string()))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Personal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Personal(..)")
    }
}

/// What to read from a provider's log.
#[derive(Clone, Copy, Debug)]
pub struct EventQuery<'a> {
    /// Where the previous page ended; None to start at `from`.
    pub cursor: Option<&'a str>,
    pub from: jiff::Timestamp,
    /// Only events before this (a baseline); None to read up to now, as a stream.
    pub until: Option<jiff::Timestamp>,
    /// Only events about this user (a baseline); None for the whole organisation.
    pub user: Option<&'a UserRef>,
}

/// One page of a provider's log.
#[derive(Debug, Default)]
pub struct EventPage {
    pub events: Vec<IdentityEvent>,
    /// Entries that could not be read (missing or garbage fields), each with why: skipped and
    /// counted, never the end of the stream.
    pub skipped: Vec<String>,
    /// Where the next read goes on; kept durably once the page's events are dealt with.
    pub cursor: Option<String>,
    /// More is there to read now (a full page); false when the reader has caught up.
    pub more: bool,
}

impl EventPage {
    /// Keeps what reading one log entry gave: the event, nothing (a type not watched), or why
    /// the entry was skipped.
    pub fn take(&mut self, read: Result<Option<IdentityEvent>, String>) {
        match read {
            Ok(Some(event)) => self.events.push(event),
            Ok(None) => {}
            Err(why) => self.skipped.push(why),
        }
    }
}

impl ClientInfo {
    /// An address as a log writes it; None for a missing or garbage one.
    pub fn ip_of(text: Option<&str>) -> Option<IpAddr> {
        text.and_then(|ip| ip.trim().parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_data_never_prints() {
        let phone = Personal::new("+1 555 0100").unwrap();
        assert_eq!(format!("{phone:?}"), "Personal(..)");
        assert!(Personal::new("  ").is_none());
    }

    #[test]
    fn a_point_of_nowhere_is_no_point() {
        assert_eq!(Geo::point_of(Some(0.0), Some(0.0)), None);
        assert_eq!(Geo::point_of(Some(f64::NAN), Some(1.0)), None);
        assert_eq!(Geo::point_of(Some(91.0), Some(1.0)), None);
        assert_eq!(Geo::point_of(Some(52.37), Some(4.89)), Some((52.37, 4.89)));
    }
}
