//! Anomaly rules over the re-enrollment window (ANOMALY-RULES.md): each a small named function
//! that looks at one event of a recalled user, with what is known around it, and says whether it
//! trips and on what evidence. Evidence names the values and the provider's event ids, so a
//! reviewer can follow a flag back into the provider's own log.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::event::{Actor, EventKind, IdentityEvent};

/// A rule, as flags, the audit trail and `spec.anomalies.disabledRules` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Rule {
    /// Enrolled from a country, ASN or network the user was not seen on before the cutoff.
    NewNetwork,
    /// Enrolled farther from the user's previous sign-in than anyone travels in the time between.
    ImpossibleTravel,
    /// The same phone number or authenticator device enrolled by several users.
    SharedDevice,
    /// Many enrollments from one address in a short time.
    EnrollmentBurst,
    /// Enrolled through an address the provider calls an anonymising proxy, VPN or Tor.
    AnonymisingProxy,
    /// Many denied or ignored pushes shortly before the enrollment.
    PushFatigue,
    /// A factor enrolled for the user by someone else (an administrator, a helpdesk, the provider's support).
    EnrolledByOther,
    /// Enrolled shortly after a sign-in the provider judged risky.
    RiskySignIn,
    /// A bypass code or pass issued or used outside the recall.
    ForeignBypass,
    /// The user reported a sign-in or push as fraud.
    FraudReported,
    /// Second-step verification turned off, or the recovery phone changed (a SIM-swap hint).
    SecondStepWeakened,
}

impl Rule {
    pub const ALL: [Rule; 11] = [
        Rule::NewNetwork,
        Rule::ImpossibleTravel,
        Rule::SharedDevice,
        Rule::EnrollmentBurst,
        Rule::AnonymisingProxy,
        Rule::PushFatigue,
        Rule::EnrolledByOther,
        Rule::RiskySignIn,
        Rule::ForeignBypass,
        Rule::FraudReported,
        Rule::SecondStepWeakened,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NewNetwork => "newNetwork",
            Rule::ImpossibleTravel => "impossibleTravel",
            Rule::SharedDevice => "sharedDevice",
            Rule::EnrollmentBurst => "enrollmentBurst",
            Rule::AnonymisingProxy => "anonymisingProxy",
            Rule::PushFatigue => "pushFatigue",
            Rule::EnrolledByOther => "enrolledByOther",
            Rule::RiskySignIn => "riskySignIn",
            Rule::ForeignBypass => "foreignBypass",
            Rule::FraudReported => "fraudReported",
            Rule::SecondStepWeakened => "secondStepWeakened",
        }
    }
}

/// The rules' thresholds, from `spec.anomalies`.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Faster than this between two places is impossible travel.
    pub travel_kmh: f64,
    /// Places closer than this are one place: geolocation by address is coarse.
    pub travel_min_km: f64,
    /// Networks whose addresses geolocate far from their users (VPN, satellite): no travel is
    /// judged from or to them.
    pub travel_exempt_asns: BTreeSet<u32>,
    /// Users enrolling one device (the first included) that make it shared.
    pub shared_device_users: usize,
    /// Enrollments from one address within `burst_within` that make a burst.
    pub burst_enrollments: usize,
    pub burst_within: jiff::SignedDuration,
    /// Denied pushes within `push_within` before an enrollment that make push fatigue.
    pub push_denials: usize,
    pub push_within: jiff::SignedDuration,
    /// How long before an enrollment a risky sign-in counts.
    pub risky_within: jiff::SignedDuration,
    pub disabled: BTreeSet<Rule>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            travel_kmh: 900.0,
            travel_min_km: 100.0,
            travel_exempt_asns: BTreeSet::new(),
            shared_device_users: 2,
            burst_enrollments: 5,
            burst_within: jiff::SignedDuration::from_mins(10),
            push_denials: 10,
            push_within: jiff::SignedDuration::from_mins(10),
            risky_within: jiff::SignedDuration::from_hours(24),
            disabled: BTreeSet::new(),
        }
    }
}

/// An enrollment of another user seen in the window, kept (pseudonymised) for the rules that
/// compare users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recent {
    pub user_id: String,
    pub event_id: String,
    pub at: jiff::Timestamp,
    /// Pseudonym of the client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Pseudonym of the phone number or device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// One event of a recalled user in the window, and what the rules may compare it with.
pub struct Judged<'a> {
    pub event: &'a IdentityEvent,
    /// This event's address and device as pseudonyms, as `Recent` keeps them.
    pub address: Option<&'a str>,
    pub device: Option<&'a str>,
    /// The user's own events before this one, oldest first: those before `cutoff` are the
    /// baseline of where the user is usually seen.
    pub history: &'a [IdentityEvent],
    pub cutoff: jiff::Timestamp,
    /// Other users' (and this user's earlier) enrollments in the window.
    pub recent: &'a [Recent],
    /// Bypasses this recall's MfaBypasses issued, which are not foreign.
    pub own_bypasses: &'a [OwnBypass],
}

/// A bypass an approved MfaBypass of the recall issued: for its user, from shortly before it was
/// issued to shortly after it ended (provider clocks and log times differ by a little).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnBypass {
    pub user_id: String,
    pub from: jiff::Timestamp,
    pub until: jiff::Timestamp,
}

/// A rule that tripped, with its evidence.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub rule: Rule,
    pub evidence: String,
    /// The provider's ids of the events the evidence rests on, this one first.
    pub event_ids: Vec<String>,
}

/// Every enabled rule that trips on `judged`.
pub fn judge(judged: &Judged, thresholds: &Thresholds) -> Vec<Finding> {
    let checks: [(Rule, fn(&Judged, &Thresholds) -> Option<Finding>); 11] = [
        (Rule::NewNetwork, new_network),
        (Rule::ImpossibleTravel, impossible_travel),
        (Rule::SharedDevice, shared_device),
        (Rule::EnrollmentBurst, enrollment_burst),
        (Rule::AnonymisingProxy, anonymising_proxy),
        (Rule::PushFatigue, push_fatigue),
        (Rule::EnrolledByOther, enrolled_by_other),
        (Rule::RiskySignIn, risky_sign_in),
        (Rule::ForeignBypass, foreign_bypass),
        (Rule::FraudReported, fraud_reported),
        (Rule::SecondStepWeakened, second_step_weakened),
    ];
    checks.iter().filter(|(rule, _)| !thresholds.disabled.contains(rule)).filter_map(|(_, check)| check(judged, thresholds)).collect()
}

fn finding(rule: Rule, judged: &Judged, evidence: String, others: impl IntoIterator<Item = String>) -> Option<Finding> {
    let mut event_ids = vec![judged.event.id.clone()];
    event_ids.extend(others);
    Some(Finding { rule, evidence, event_ids })
}

fn enrolled(judged: &Judged) -> bool {
    judged.event.kind == EventKind::FactorEnrolled
}

/// The network an address is on, as compared for "seen before": its /24 (IPv4) or /48 (IPv6),
/// as providers and ISPs hand out addresses within those.
fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// Rule 1. Judged on the most telling sign the log gives: the country, else the ASN, else the
/// network; an enrollment of a user never seen before the cutoff is not judged (no baseline).
fn new_network(judged: &Judged, _: &Thresholds) -> Option<Finding> {
    if !enrolled(judged) {
        return None;
    }
    let baseline: Vec<&IdentityEvent> = judged.history.iter().filter(|e| e.at < judged.cutoff && e.kind.locates_user()).collect();
    if baseline.is_empty() {
        return None;
    }
    let client = &judged.event.client;
    let country = client.geo.as_ref().and_then(|g| g.country.clone());
    let seen_countries: BTreeSet<String> = baseline.iter().filter_map(|e| e.client.geo.as_ref()?.country.clone()).collect();
    let seen_asns: BTreeSet<u32> = baseline.iter().filter_map(|e| e.client.asn).collect();
    let seen_networks: BTreeSet<String> = baseline.iter().filter_map(|e| e.client.ip.map(network)).collect();
    let (what, seen) = if let Some(country) = country.filter(|_| !seen_countries.is_empty()) {
        (format!("country {country}"), seen_countries.contains(&country))
    } else if let Some(asn) = client.asn.filter(|_| !seen_asns.is_empty()) {
        (format!("ASN {asn}"), seen_asns.contains(&asn))
    } else if let Some(ip) = client.ip.filter(|_| !seen_networks.is_empty()) {
        (format!("network {}", network(ip)), seen_networks.contains(&network(ip)))
    } else {
        return None;
    };
    if seen {
        return None;
    }
    let evidence = format!(
        "enrolled from {what} ({client}), not among the {} places the user was seen at in {} events before the cutoff",
        seen_countries.len().max(seen_asns.len()).max(seen_networks.len()),
        baseline.len()
    );
    finding(Rule::NewNetwork, judged, evidence, [])
}

/// Rule 2: the last located event before the enrollment, against the enrollment.
fn impossible_travel(judged: &Judged, t: &Thresholds) -> Option<Finding> {
    if !enrolled(judged) {
        return None;
    }
    let here = judged.event.client.geo.as_ref()?.point?;
    let exempt = |e: &IdentityEvent| e.client.asn.is_some_and(|a| t.travel_exempt_asns.contains(&a));
    if exempt(judged.event) {
        return None;
    }
    // The history read for an enrollment holds the enrollment itself: not where the user came from.
    let before = judged.history.iter().rev().find(|e| e.id != judged.event.id && e.at <= judged.event.at && e.kind.locates_user() && e.client.geo.as_ref().is_some_and(|g| g.point.is_some()))?;
    if exempt(before) {
        return None;
    }
    let there = before.client.geo.as_ref()?.point?;
    let km = distance_km(there, here);
    if km < t.travel_min_km {
        return None;
    }
    let hours = judged.event.at.duration_since(before.at).as_secs_f64() / 3600.0;
    let kmh = if hours > 0.0 { km / hours } else { f64::INFINITY };
    if kmh <= t.travel_kmh {
        return None;
    }
    let evidence = format!(
        "{km:.0} km from the {} at {} ({}) in {:.0} minutes: {} km/h, past {:.0}",
        before.kind.as_str(),
        before.at,
        before.client,
        hours * 60.0,
        if kmh.is_finite() { format!("{kmh:.0}") } else { "no time at all".into() },
        t.travel_kmh
    );
    finding(Rule::ImpossibleTravel, judged, evidence, [before.id.clone()])
}

/// Great-circle distance (haversine, mean Earth radius).
pub fn distance_km((lat1, lon1): (f64, f64), (lat2, lon2): (f64, f64)) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let (dp, dl) = ((lat2 - lat1).to_radians(), (lon2 - lon1).to_radians());
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().min(1.0).asin()
}

/// Rule 3 and 4: the device of this enrollment among other users' enrollments.
fn shared_device(judged: &Judged, t: &Thresholds) -> Option<Finding> {
    let device = judged.device.filter(|_| enrolled(judged))?;
    let others: Vec<&Recent> = judged.recent.iter().filter(|r| r.device.as_deref() == Some(device) && r.user_id != judged.event.user_id).collect();
    let users: BTreeSet<&str> = others.iter().map(|r| r.user_id.as_str()).collect();
    if users.len() + 1 < t.shared_device_users.max(2) {
        return None;
    }
    let evidence = format!("the same phone number or device (pseudonym {}) was enrolled by {} other users in the window", short(device), users.len());
    finding(Rule::SharedDevice, judged, evidence, others.iter().map(|r| r.event_id.clone()))
}

/// Rule 5: enrollments from this enrollment's address within the burst window before it.
fn enrollment_burst(judged: &Judged, t: &Thresholds) -> Option<Finding> {
    let address = judged.address.filter(|_| enrolled(judged))?;
    let from = judged.event.at - t.burst_within;
    let others: Vec<&Recent> =
        judged.recent.iter().filter(|r| r.address.as_deref() == Some(address) && r.event_id != judged.event.id && r.at >= from && r.at <= judged.event.at).collect();
    if others.len() + 1 < t.burst_enrollments.max(2) {
        return None;
    }
    let users: BTreeSet<&str> = others.iter().map(|r| r.user_id.as_str()).collect();
    let evidence = format!(
        "{} enrollments ({} other users) from {} within {} before this one",
        others.len() + 1,
        users.len(),
        judged.event.client.ip.map_or_else(|| "one address".to_string(), |ip| ip.to_string()),
        t.burst_within
    );
    finding(Rule::EnrollmentBurst, judged, evidence, others.iter().map(|r| r.event_id.clone()))
}

/// Rule 6.
fn anonymising_proxy(judged: &Judged, _: &Thresholds) -> Option<Finding> {
    if !(enrolled(judged) && judged.event.client.proxy) {
        return None;
    }
    finding(Rule::AnonymisingProxy, judged, format!("enrolled through an address the provider marks as an anonymising proxy ({})", judged.event.client), [])
}

/// Rule 7: denied pushes in the window before the enrollment.
fn push_fatigue(judged: &Judged, t: &Thresholds) -> Option<Finding> {
    if !enrolled(judged) {
        return None;
    }
    let from = judged.event.at - t.push_within;
    let denied: Vec<&IdentityEvent> = judged.history.iter().filter(|e| e.kind == EventKind::PushDenied && e.at >= from && e.at <= judged.event.at).collect();
    if denied.len() < t.push_denials.max(1) {
        return None;
    }
    let evidence = format!("{} pushes denied or ignored within {} before the enrollment", denied.len(), t.push_within);
    finding(Rule::PushFatigue, judged, evidence, denied.iter().map(|e| e.id.clone()))
}

/// Rule 9.
fn enrolled_by_other(judged: &Judged, _: &Thresholds) -> Option<Finding> {
    if !enrolled(judged) {
        return None;
    }
    let who = match &judged.event.actor {
        Actor::Other(who) => format!("{who}, not the user"),
        Actor::Provider(who) => format!("the provider's own staff or system ({who})"),
        Actor::User | Actor::Unknown => return None,
    };
    finding(Rule::EnrolledByOther, judged, format!("the factor was enrolled by {who}"), [])
}

/// Rule 8: a risky sign-in of the user shortly before the enrollment.
fn risky_sign_in(judged: &Judged, t: &Thresholds) -> Option<Finding> {
    if !enrolled(judged) {
        return None;
    }
    let from = judged.event.at - t.risky_within;
    let risky = judged.history.iter().rev().find(|e| e.kind == EventKind::RiskySignIn && e.at >= from && e.at <= judged.event.at)?;
    finding(Rule::RiskySignIn, judged, format!("the provider judged a sign-in at {} risky ({}) before the enrollment", risky.at, risky.client), [risky.id.clone()])
}

/// Rule 10: a bypass issued or used for a recalled user that none of the recall's approved
/// MfaBypasses accounts for.
fn foreign_bypass(judged: &Judged, _: &Thresholds) -> Option<Finding> {
    let what = match judged.event.kind {
        EventKind::BypassIssued => "issued",
        EventKind::BypassUsed => "used",
        _ => return None,
    };
    let event = judged.event;
    if judged.own_bypasses.iter().any(|b| b.user_id == event.user_id && (b.from..=b.until).contains(&event.at)) {
        return None;
    }
    let by = match &judged.event.actor {
        Actor::Other(who) | Actor::Provider(who) => format!(" by {who}"),
        Actor::User => " by the user".to_string(),
        Actor::Unknown => String::new(),
    };
    finding(Rule::ForeignBypass, judged, format!("a bypass was {what}{by} at {} ({}), not by this recall", judged.event.at, judged.event.client), [])
}

/// Rule 11.
fn fraud_reported(judged: &Judged, _: &Thresholds) -> Option<Finding> {
    if judged.event.kind != EventKind::FraudReported {
        return None;
    }
    finding(Rule::FraudReported, judged, format!("the user reported fraud at {} ({})", judged.event.at, judged.event.client), [])
}

/// Rule 12.
fn second_step_weakened(judged: &Judged, _: &Thresholds) -> Option<Finding> {
    if judged.event.kind != EventKind::SecondStepWeakened {
        return None;
    }
    finding(Rule::SecondStepWeakened, judged, format!("second-step verification was weakened at {} ({})", judged.event.at, judged.event.client), [])
}

/// The start of a pseudonym, enough to match two evidence lines by eye.
fn short(pseudonym: &str) -> &str {
    pseudonym.get(..12).unwrap_or(pseudonym)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::event::{ClientInfo, Geo};

    const CUTOFF: &str = "2026-12-01T00:00:00Z";

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    fn event(id: &str, kind: EventKind, time: &str, ip: &str, country: &str, point: (f64, f64)) -> IdentityEvent {
        IdentityEvent {
            id: id.into(),
            at: at(time),
            user_id: "u1".into(),
            kind,
            actor: Actor::User,
            client: ClientInfo {
                ip: ip.parse().ok(),
                geo: Some(Geo { country: Some(country.into()), point: Some(point), ..Default::default() }),
                asn: None,
                ..Default::default()
            },
            factor: None,
            device: None,
        }
    }

    const AMSTERDAM: (f64, f64) = (52.37, 4.89);
    const ROTTERDAM: (f64, f64) = (51.92, 4.48);
    const PARIS: (f64, f64) = (48.86, 2.35);
    const LAGOS: (f64, f64) = (6.52, 3.38);

    fn judge_one(e: &IdentityEvent, history: &[IdentityEvent], recent: &[Recent], address: Option<&str>, device: Option<&str>) -> Vec<Rule> {
        let judged = Judged { event: e, address, device, history, cutoff: at(CUTOFF), recent, own_bypasses: &[] };
        judge(&judged, &Thresholds::default()).into_iter().map(|f| f.rule).collect()
    }

    fn home() -> Vec<IdentityEvent> {
        vec![
            event("b1", EventKind::SignIn, "2026-11-20T08:00:00Z", "203.0.113.10", "NL", AMSTERDAM),
            event("b2", EventKind::SignIn, "2026-11-28T08:00:00Z", "203.0.113.11", "NL", AMSTERDAM),
        ]
    }

    #[test]
    fn an_enrollment_from_home_trips_nothing() {
        let enroll = event("e1", EventKind::FactorEnrolled, "2026-12-02T09:00:00Z", "203.0.113.12", "NL", ROTTERDAM);
        assert_eq!(judge_one(&enroll, &home(), &[], Some("a"), None), Vec::<Rule>::new());
    }

    #[test]
    fn a_new_country_trips_new_network_and_a_user_never_seen_is_not_judged() {
        let enroll = event("e1", EventKind::FactorEnrolled, "2026-12-02T09:00:00Z", "198.51.100.7", "NG", LAGOS);
        assert!(judge_one(&enroll, &home(), &[], None, None).contains(&Rule::NewNetwork));
        assert!(!judge_one(&enroll, &[], &[], None, None).contains(&Rule::NewNetwork));
        // A new network in a country seen before is judged by country: not new.
        let same_country = event("e2", EventKind::FactorEnrolled, "2026-12-02T09:00:00Z", "192.0.2.99", "NL", AMSTERDAM);
        assert!(!judge_one(&same_country, &home(), &[], None, None).contains(&Rule::NewNetwork));
        // Without geo or ASN, the /24 decides.
        let mut bare = same_country.clone();
        bare.client.geo = None;
        let mut history = home();
        history.iter_mut().for_each(|e| e.client.geo = None);
        assert!(judge_one(&bare, &history, &[], None, None).contains(&Rule::NewNetwork));
        bare.client.ip = "203.0.113.200".parse().ok();
        assert!(!judge_one(&bare, &history, &[], None, None).contains(&Rule::NewNetwork));
    }

    #[test]
    fn travel_is_judged_by_speed_from_the_last_place_seen() {
        // Amsterdam at 08:00, Lagos at 09:00: 5,000 km in an hour.
        let mut history = home();
        history.push(event("s1", EventKind::SignIn, "2026-12-02T08:00:00Z", "203.0.113.10", "NL", AMSTERDAM));
        let lagos = event("e1", EventKind::FactorEnrolled, "2026-12-02T09:00:00Z", "198.51.100.7", "NG", LAGOS);
        assert!(judge_one(&lagos, &history, &[], None, None).contains(&Rule::ImpossibleTravel));
        // The engine reads the history up to and with the enrollment: it is not its own origin.
        let mut with_itself = history.clone();
        with_itself.push(lagos.clone());
        assert!(judge_one(&lagos, &with_itself, &[], None, None).contains(&Rule::ImpossibleTravel));
        // Paris four hours later is a train ride: plausible.
        let paris = event("e2", EventKind::FactorEnrolled, "2026-12-02T12:00:00Z", "198.51.100.8", "FR", PARIS);
        assert!(!judge_one(&paris, &history, &[], None, None).contains(&Rule::ImpossibleTravel));
        // A VPN network named as exempt is not judged.
        let mut exempt = lagos.clone();
        exempt.client.asn = Some(64500);
        let judged = Judged { event: &exempt, address: None, device: None, history: &history, cutoff: at(CUTOFF), recent: &[], own_bypasses: &[] };
        let thresholds = Thresholds { travel_exempt_asns: [64500].into(), ..Default::default() };
        assert!(judge(&judged, &thresholds).iter().all(|f| f.rule != Rule::ImpossibleTravel));
        assert!((distance_km(AMSTERDAM, PARIS) - 430.0).abs() < 10.0);
    }

    fn recent(user: &str, id: &str, time: &str, address: Option<&str>, device: Option<&str>) -> Recent {
        Recent { user_id: user.into(), event_id: id.into(), at: at(time), address: address.map(Into::into), device: device.map(Into::into) }
    }

    #[test]
    fn one_device_on_two_users_is_shared_and_on_one_user_twice_is_not() {
        let enroll = event("e1", EventKind::FactorEnrolled, "2026-12-02T09:00:00Z", "203.0.113.12", "NL", AMSTERDAM);
        let mine = [recent("u1", "old", "2026-12-02T08:00:00Z", None, Some("phone-x"))];
        assert!(!judge_one(&enroll, &home(), &mine, None, Some("phone-x")).contains(&Rule::SharedDevice));
        let theirs = [recent("u2", "x2", "2026-12-02T08:00:00Z", None, Some("phone-x"))];
        let judged = Judged { event: &enroll, address: None, device: Some("phone-x"), history: &home(), cutoff: at(CUTOFF), recent: &theirs, own_bypasses: &[] };
        let found = judge(&judged, &Thresholds::default());
        let shared = found.iter().find(|f| f.rule == Rule::SharedDevice).expect("shared");
        assert_eq!(shared.event_ids, ["e1", "x2"]);
        assert!(!shared.evidence.contains("phone-x") || shared.evidence.contains("pseudonym"), "{}", shared.evidence);
    }

    #[test]
    fn five_enrollments_from_one_address_in_ten_minutes_are_a_burst() {
        let enroll = event("e5", EventKind::FactorEnrolled, "2026-12-02T09:10:00Z", "198.51.100.7", "NL", AMSTERDAM);
        let four: Vec<Recent> = (1..=4).map(|i| recent(&format!("u{}", i + 10), &format!("e{i}"), &format!("2026-12-02T09:0{i}:00Z"), Some("addr"), None)).collect();
        assert!(judge_one(&enroll, &home(), &four, Some("addr"), None).contains(&Rule::EnrollmentBurst));
        assert!(!judge_one(&enroll, &home(), &four[1..], Some("addr"), None).contains(&Rule::EnrollmentBurst));
        // The same four an hour earlier: no burst.
        let earlier: Vec<Recent> = (1..=4).map(|i| recent("u9", &format!("e{i}"), &format!("2026-12-02T08:0{i}:00Z"), Some("addr"), None)).collect();
        assert!(!judge_one(&enroll, &home(), &earlier, Some("addr"), None).contains(&Rule::EnrollmentBurst));
    }

    #[test]
    fn proxy_other_actor_push_fatigue_and_risk_each_trip_their_rule() {
        let base = event("e1", EventKind::FactorEnrolled, "2026-12-02T09:00:00Z", "203.0.113.12", "NL", AMSTERDAM);
        let mut proxied = base.clone();
        proxied.client.proxy = true;
        assert_eq!(judge_one(&proxied, &home(), &[], None, None), [Rule::AnonymisingProxy]);
        let mut by_admin = base.clone();
        by_admin.actor = Actor::Other("helpdesk@example.com".into());
        assert_eq!(judge_one(&by_admin, &home(), &[], None, None), [Rule::EnrolledByOther]);
        let mut pushed = home();
        pushed.extend((0..10).map(|i| event(&format!("p{i}"), EventKind::PushDenied, &format!("2026-12-02T08:5{}:00Z", i % 10), "203.0.113.12", "NL", AMSTERDAM)));
        assert_eq!(judge_one(&base, &pushed, &[], None, None), [Rule::PushFatigue]);
        assert!(judge_one(&base, &pushed[..pushed.len() - 1], &[], None, None).is_empty(), "nine denials are not fatigue");
        let mut risky = home();
        risky.push(event("r1", EventKind::RiskySignIn, "2026-12-02T08:00:00Z", "203.0.113.12", "NL", AMSTERDAM));
        assert_eq!(judge_one(&base, &risky, &[], None, None), [Rule::RiskySignIn]);
    }

    #[test]
    fn bypass_fraud_and_weakening_trip_on_their_own_events() {
        for (kind, rule) in [(EventKind::BypassIssued, Rule::ForeignBypass), (EventKind::BypassUsed, Rule::ForeignBypass), (EventKind::FraudReported, Rule::FraudReported), (EventKind::SecondStepWeakened, Rule::SecondStepWeakened)] {
            let e = event("x", kind, "2026-12-02T09:00:00Z", "203.0.113.12", "NL", AMSTERDAM);
            assert_eq!(judge_one(&e, &home(), &[], None, None), [rule], "{kind:?}");
        }
        let sign_in = event("x", EventKind::SignIn, "2026-12-02T09:00:00Z", "198.51.100.7", "NG", LAGOS);
        assert!(judge_one(&sign_in, &home(), &[], None, None).is_empty(), "a sign-in alone is not judged by the enrollment rules");
    }

    #[test]
    fn a_bypass_the_recall_issued_is_not_foreign_but_one_beside_it_is() {
        let issued = event("x", EventKind::BypassIssued, "2026-12-02T09:00:00Z", "203.0.113.12", "NL", AMSTERDAM);
        let ours = |user: &str, from: &str, until: &str| OwnBypass { user_id: user.into(), from: at(from), until: at(until) };
        let judged = |own: &[OwnBypass]| {
            let judged = Judged { event: &issued, address: None, device: None, history: &[], cutoff: at(CUTOFF), recent: &[], own_bypasses: own };
            judge(&judged, &Thresholds::default()).into_iter().map(|f| f.rule).collect::<Vec<_>>()
        };
        assert!(judged(&[ours(&issued.user_id, "2026-12-02T08:55:00Z", "2026-12-02T09:35:00Z")]).is_empty());
        assert_eq!(judged(&[ours("someone-else", "2026-12-02T08:55:00Z", "2026-12-02T09:35:00Z")]), [Rule::ForeignBypass], "another user's");
        assert_eq!(judged(&[ours(&issued.user_id, "2026-12-02T07:00:00Z", "2026-12-02T08:00:00Z")]), [Rule::ForeignBypass], "an earlier one, ended");
    }

    #[test]
    fn a_disabled_rule_never_trips() {
        let mut proxied = event("e1", EventKind::FactorEnrolled, "2026-12-02T09:00:00Z", "203.0.113.12", "NL", AMSTERDAM);
        proxied.client.proxy = true;
        let judged = Judged { event: &proxied, address: None, device: None, history: &home(), cutoff: at(CUTOFF), recent: &[], own_bypasses: &[] };
        assert!(judge(&judged, &Thresholds { disabled: [Rule::AnonymisingProxy].into(), ..Default::default() }).is_empty());
    }
}
