//! Durations written the way Kubernetes users write them (72h, 90m, 1h30m, 30s), parsed by jiff's
//! friendly format and held to each field's bounds, so that no value a person can type panics
//! later (an hour count past what a timestamp holds) or spins (a check every 0s).

use std::time::Duration;

/// A duration field and the values it takes. The CRD's CEL rule for the field names the same
/// bounds: the apiserver refuses what the operator would refuse, with the same words.
pub struct Bounds {
    /// The field as the spec spells it.
    pub field: &'static str,
    /// The least and greatest values, as written in the CEL rule (`duration('10s')`).
    pub min: &'static str,
    pub max: &'static str,
    pub example: &'static str,
}

/// How often re-enrollment is checked: each check reads every provider's logs once.
pub const CHECK_INTERVAL: Bounds = Bounds { field: "reEnrollment.checkInterval", min: "10s", max: "24h", example: "30s or 5m" };

/// Time users have to re-enroll: a year at most, so the deadline is always a valid timestamp.
pub const GRACE_PERIOD: Bounds = Bounds { field: "reEnrollment.gracePeriod", min: "1s", max: "8760h", example: "72h or 1h30m" };

/// How late a provider's logs show events; zero only for a test double.
pub const LOG_DELAY: Bounds = Bounds { field: "logDelay", min: "0s", max: "24h", example: "2m" };

/// How far before the cutoff a user's usual places are read from.
pub const BASELINE: Bounds = Bounds { field: "anomalies.baseline", min: "1h", max: "8760h", example: "720h" };

/// How long an MfaBypass works once issued (the operator's --max-bypass-lifetime may cap it lower).
pub const BYPASS_LIFETIME: Bounds = Bounds { field: "lifetime", min: "1m", max: "24h", example: "30m or 1h30m" };

/// How long a re-enrollment link works.
pub const LINK_LIFETIME: Bounds = Bounds { field: "reEnrollment.linkLifetime", min: "10m", max: "720h", example: "24h" };

/// How long after a policy's recall a signal of the same incident starts nothing.
pub const COOLDOWN: Bounds = Bounds { field: "cooldown", min: "1m", max: "720h", example: "1h or 30m" };

/// How long the operator waits between polls of a Shared Signals transmitter.
pub const POLL_INTERVAL: Bounds = Bounds { field: "sharedSignals.poll.interval", min: "5s", max: "1h", example: "30s or 2m" };

/// The wait between a rollout's waves.
pub const WAVE_PAUSE: Bounds = Bounds { field: "rollout.pause", min: "0s", max: "24h", example: "5m" };

/// The windows of the burst and push-fatigue rules.
pub const BURST_WITHIN: Bounds = Bounds { field: "anomalies.burstWithin", min: "1m", max: "24h", example: "10m" };
pub const PUSH_WITHIN: Bounds = Bounds { field: "anomalies.pushWithin", min: "1m", max: "24h", example: "10m" };

/// A whole number of minutes as people write it: 30m, 2h, 1h30m.
pub fn text(d: Duration) -> String {
    let minutes = d.as_secs() / 60;
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

impl Bounds {
    /// `text` as a duration within the bounds; the error names the field, the value and the bounds.
    pub fn parse(&self, text: &str) -> Result<Duration, String> {
        let parsed: jiff::SignedDuration = text.parse().map_err(|_| format!("{} {text:?} is not a duration such as {} (from {} to {})", self.field, self.example, self.min, self.max))?;
        Duration::try_from(parsed)
            .ok()
            .filter(|d| (bound(self.min)..=bound(self.max)).contains(d))
            .ok_or_else(|| format!("{} {text:?} is out of bounds: it must be from {} to {}", self.field, self.min, self.max))
    }
}

fn bound(text: &str) -> Duration {
    let parsed: jiff::SignedDuration = text.parse().expect("bounds are durations");
    Duration::try_from(parsed).expect("bounds are not negative")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_style_durations() {
        let grace = |t| GRACE_PERIOD.parse(t);
        assert_eq!(grace("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert_eq!(grace("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(grace("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(grace("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(grace("8760h"), Ok(Duration::from_secs(365 * 24 * 3600)));
        assert_eq!(CHECK_INTERVAL.parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(LOG_DELAY.parse("0s"), Ok(Duration::ZERO));
        for text in ["30", "3d", "", "1h1h", "30m1h", " 1h"] {
            assert!(grace(text).unwrap_err().contains("is not a duration such as 72h or 1h30m (from 1s to 8760h)"), "{text:?}");
        }
    }

    #[test]
    fn values_out_of_bounds_are_refused_naming_the_field_and_the_bounds() {
        let grace = GRACE_PERIOD.parse("9999999999999999h").unwrap_err();
        assert!(grace.starts_with("reEnrollment.gracePeriod \"9999999999999999h\"") && grace.contains("from 1s to 8760h"), "{grace}");
        for text in ["8761h", "10000000000h", "0s", "-1h", "1h ago", "0.5s"] {
            assert_eq!(GRACE_PERIOD.parse(text).unwrap_err(), format!("reEnrollment.gracePeriod {text:?} is out of bounds: it must be from 1s to 8760h"));
        }
        for text in ["0s", "9s", "9.999s", "24h1s", "-30s"] {
            assert_eq!(CHECK_INTERVAL.parse(text).unwrap_err(), format!("reEnrollment.checkInterval {text:?} is out of bounds: it must be from 10s to 24h"));
        }
        assert!(LOG_DELAY.parse("25h").unwrap_err().contains("logDelay \"25h\" is out of bounds"));
    }

    /// The apiserver's CEL rule and the operator refuse the same values.
    #[test]
    fn the_crd_rules_name_the_same_bounds() {
        let crd = serde_json::to_string(&crate::api::crds()[1]).unwrap();
        for bounds in [CHECK_INTERVAL, GRACE_PERIOD] {
            let name = bounds.field.rsplit('.').next().unwrap();
            let rule = format!("duration(self) >= duration('{}') && duration(self) <= duration('{}')", bounds.min, bounds.max);
            let message = format!("{name} must be a duration from {} to {}", bounds.min, bounds.max);
            assert!(crd.contains(&rule) && crd.contains(&message), "the CRD has no rule {rule:?} with message {message:?}");
        }
    }

    /// What the CRD's pattern lets through, jiff parses, and the other way round for the forms
    /// people write (jiff alone also takes "2 hours" or ISO 8601, which the apiserver refuses).
    #[test]
    fn the_crd_pattern_and_the_parser_agree() {
        let crd = serde_json::to_value(&crate::api::crds()[1]).unwrap();
        let rule = crd.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/reEnrollment/properties/checkInterval/x-kubernetes-validations/0/rule").unwrap().as_str().unwrap();
        // The CEL string literal between matches(' and ') holds the pattern with its backslashes doubled.
        let pattern = rule.split("matches('").nth(1).unwrap().split("')").next().unwrap().replace("\\\\", "\\");
        let pattern = regex::Regex::new(&pattern).unwrap();
        let forms = [
            "72h", "90m", "30s", "1h30m", "1h30m15s", "1.5h", "1h0.5m", "2m1.25s", "0.000000001s", "10s", "1h", "0s", "1h30m1s",
            "30m1h", "1h1h", "1.5h30m", "1m1.5h", "1d", "1H", " 1h", "1h ", "1", "", "1.h", ".5h", "1.0000000001s", "1h 30m", "-1h", "PT1H", "300ms",
        ];
        for text in forms {
            let parsed = text.parse::<jiff::SignedDuration>().is_ok();
            if pattern.is_match(text) {
                assert!(parsed, "the apiserver takes {text:?} and the operator would refuse it");
            }
        }
        assert!(forms.iter().filter(|t| pattern.is_match(t)).count() >= 13, "the pattern takes the usual forms");
        assert!(!pattern.is_match("30m1h") && !pattern.is_match("1.5h30m") && !pattern.is_match("1.0000000001s"));
    }
}
