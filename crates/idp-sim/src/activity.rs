//! What people do at a provider besides what a recall does (sign in, deny a push, report fraud,
//! enroll a factor from some address, or an administrator enrolling one for them), so tests can
//! fill a simulator's log; each simulator writes these in its own provider's documented shape.
//! And where an address is, as the providers' logs say it: a fixed table over the documentation
//! ranges, so a test can choose the place a client is in by the address it uses.

use serde::{Deserialize, Serialize};

use crate::FactorKind;

/// One thing a person did, as a test asks a simulator to record it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub what: Act,
    /// The client's address; its place is `place_of(ip)`.
    pub ip: String,
    #[serde(default = "browser")]
    pub user_agent: String,
    /// When; now if absent. Earlier times let a test give a user a history before a recall.
    #[serde(default)]
    pub at: Option<jiff::Timestamp>,
    /// A phone number or authenticator device the provider's log would name with the event.
    #[serde(default)]
    pub device: Option<String>,
    /// The administrator who did it for the user (their login); None when the user did.
    #[serde(default)]
    pub by_admin: Option<String>,
}

/// What was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Act {
    /// A new factor, which the simulator really adds to the user.
    Enroll { factor: FactorKind },
    SignIn,
    PushDenied,
    FraudReported,
    /// The provider's own risk engine judged a sign-in risky.
    RiskySignIn,
    BypassIssued,
    /// The user turned their second step off, or (with `device`, the new number) changed the
    /// phone that recovers the account.
    SecondStepWeakened,
}

fn browser() -> String {
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36".into()
}

impl Activity {
    pub fn new(what: Act, ip: &str) -> Self {
        Activity { what, ip: ip.to_string(), user_agent: browser(), at: None, device: None, by_admin: None }
    }
    pub fn at(&self) -> jiff::Timestamp {
        self.at.unwrap_or_else(jiff::Timestamp::now)
    }
}

/// Where a provider's geolocation puts an address.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Place {
    pub country_code: &'static str,
    pub country: &'static str,
    pub region: &'static str,
    pub city: &'static str,
    pub lat: f64,
    pub lon: f64,
    pub asn: u32,
    pub org: &'static str,
    /// The provider flags the address as an anonymising proxy or Tor exit.
    pub proxy: bool,
}

/// Places by address prefix: tests pick a place by picking an address under its prefix.
const PLACES: [(&str, Place); 6] = [
    ("198.51.100.", Place { country_code: "US", country: "United States", region: "California", city: "San Francisco", lat: 37.7749, lon: -122.4194, asn: 64496, org: "example transit", proxy: false }),
    ("192.0.2.", Place { country_code: "DE", country: "Germany", region: "Berlin", city: "Berlin", lat: 52.52, lon: 13.405, asn: 64500, org: "example carrier", proxy: false }),
    ("203.0.113.", Place { country_code: "JP", country: "Japan", region: "Tokyo", city: "Tokyo", lat: 35.6762, lon: 139.6503, asn: 64511, org: "example fiber", proxy: false }),
    ("100.64.", Place { country_code: "NG", country: "Nigeria", region: "Lagos", city: "Lagos", lat: 6.5244, lon: 3.3792, asn: 64505, org: "example mobile", proxy: false }),
    ("198.18.", Place { country_code: "NL", country: "Netherlands", region: "North Holland", city: "Amsterdam", lat: 52.3676, lon: 4.9041, asn: 64502, org: "example hosting", proxy: false }),
    ("198.19.", Place { country_code: "RO", country: "Romania", region: "Bucharest", city: "Bucharest", lat: 44.4268, lon: 26.1025, asn: 64512, org: "example anonymiser", proxy: true }),
];

/// The place of `ip`: from the table, else the first entry (a home network for every other address).
pub fn place_of(ip: &str) -> Place {
    PLACES.iter().find(|(prefix, _)| ip.starts_with(prefix)).map(|(_, place)| *place).unwrap_or(PLACES[0].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activities_read_from_json_and_places_follow_the_prefix() {
        let a: Activity = serde_json::from_value(serde_json::json!({ "what": { "kind": "enroll", "factor": "push" }, "ip": "100.64.3.9", "device": "dvc1" })).unwrap();
        assert_eq!(a.what, Act::Enroll { factor: FactorKind::Push });
        assert!(a.user_agent.starts_with("Mozilla/5.0"));
        assert_eq!(place_of(&a.ip).country_code, "NG");
        assert!(place_of("198.19.0.4").proxy);
        assert_eq!(place_of("127.0.0.1").city, "San Francisco");
    }
}
