//! Conditions (`metav1.Condition`) on statuses: one per transition.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Sets (or updates) the condition `type_`. `lastTransitionTime` moves only when
/// the status changes, as the API conventions ask.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let status_s = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status_s {
            c.last_transition_time = Time(to_ts(now));
        }
        c.status = status_s;
        c.reason = reason.to_string();
        c.message = message;
        c.observed_generation = generation;
        return;
    }
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status_s,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: Time(to_ts(now)),
    });
}

/// The condition `type_`, if set.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "True")
}

/// chrono → the Timestamp type of k8s-openapi's `Time`.
pub fn to_ts(t: DateTime<Utc>) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_millisecond(t.timestamp_millis())
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// `Time` from chrono.
pub fn time(t: DateTime<Utc>) -> Time {
    Time(to_ts(t))
}

/// chrono from `Time`.
pub fn from_time(t: &Time) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(t.0.as_millisecond()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_change() {
        let t0 = DateTime::<Utc>::from_timestamp(1_000, 0).unwrap();
        let t1 = DateTime::<Utc>::from_timestamp(2_000, 0).unwrap();
        let mut cs = Vec::new();
        set(&mut cs, "Quoted", true, "PriceLocked", "p", Some(1), t0);
        set(&mut cs, "Quoted", true, "PriceLocked", "q", Some(2), t1);
        assert_eq!(from_time(&cs[0].last_transition_time), t0);
        assert_eq!(cs[0].message, "q");
        set(
            &mut cs,
            "Quoted",
            false,
            "BudgetBelowMarket",
            "r",
            Some(2),
            t1,
        );
        assert_eq!(from_time(&cs[0].last_transition_time), t1);
        assert!(!is_true(&cs, "Quoted"));
    }
}
