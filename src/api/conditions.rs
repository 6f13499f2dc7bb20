use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types shared by both resources, `Ready` first as users expect.
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Sets one condition in a list keyed by `type`; `lastTransitionTime` moves only when the status flips,
/// so rewriting an unchanged condition never re-triggers a watch.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = Time(now());
            }
            existing.status = status;
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation,
            last_transition_time: Time(now()),
        }),
    }
    conditions.sort_by_key(|c| match c.type_.as_str() {
        READY => 0,
        PROGRESSING => 1,
        DEGRADED => 2,
        _ => 3,
    });
}

pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}
