//! The operator's toolkit, shared by every controller: time conversions,
//! conditions (`metav1.Condition`), Events, the controllers' and periodic loops, and
//! label-safe names (finalizers: kube's `finalizer()`).
//!
//! One [`set_condition`] for every status: a condition is updated in place (a new
//! type is appended) and its `lastTransitionTime` moves only when its status flips,
//! as the API conventions ask. Time is passed in, as milliseconds since the epoch,
//! a chrono `DateTime<Utc>` or a `Time` ([`IntoTime`]).

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::runtime::events::{Event, EventType};

// --- time

/// Milliseconds since the epoch of a timestamp (0 before the epoch).
pub fn ts_ms(t: &Timestamp) -> u64 {
    u64::try_from(t.as_millisecond()).unwrap_or(0)
}

/// Milliseconds since the epoch of a `Time`.
pub fn time_ms(t: &Time) -> u64 {
    ts_ms(&t.0)
}

/// A `Time` from milliseconds since the epoch (clamped to the representable range).
pub fn ms_time(ms: u64) -> Time {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    Time(
        Timestamp::from_millisecond(ms)
            .or_else(|_| Timestamp::from_millisecond(253_402_207_200_000))
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// `now` of the context's clock in milliseconds since the epoch.
pub fn now_ms(ctx: &crate::Context) -> u64 {
    u64::try_from(ctx.clock.now().timestamp_millis()).unwrap_or(0)
}

/// chrono → the Timestamp type of k8s-openapi's `Time`.
pub fn to_ts(t: DateTime<Utc>) -> Timestamp {
    Timestamp::from_millisecond(t.timestamp_millis()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `Time` from chrono.
pub fn time(t: DateTime<Utc>) -> Time {
    Time(to_ts(t))
}

/// chrono from `Time`.
pub fn from_time(t: &Time) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(t.0.as_millisecond()).unwrap_or_default()
}

/// A moment as a `Time`: milliseconds since the epoch, chrono or `Time` itself.
pub trait IntoTime {
    fn into_time(self) -> Time;
}

impl IntoTime for u64 {
    fn into_time(self) -> Time {
        ms_time(self)
    }
}

impl IntoTime for DateTime<Utc> {
    fn into_time(self) -> Time {
        time(self)
    }
}

impl IntoTime for Time {
    fn into_time(self) -> Time {
        self
    }
}

// --- conditions

/// Sets (or updates) the condition `type_` at `now`: updated in place, appended
/// when new; `lastTransitionTime` moves only when the status changes.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: impl IntoTime,
) {
    let status_s = if status { "True" } else { "False" };
    let message = message.into();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status_s {
            c.last_transition_time = now.into_time();
        }
        c.status = status_s.to_string();
        c.reason = reason.to_string();
        c.message = message;
        c.observed_generation = generation;
        return;
    }
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status_s.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: now.into_time(),
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

// --- events

/// An Event (its note cut to the API's 1,000 bytes).
pub fn event(warning: bool, reason: &str, action: &str, note: impl Into<String>) -> Event {
    let mut note: String = note.into();
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    }
}

/// Publishes an Event about `obj`; a failure is logged, never fatal.
pub async fn publish<K>(ctx: &crate::Context, obj: &K, ev: Event)
where
    K: Resource<DynamicType = ()>,
{
    let reference = obj.object_ref(&());
    if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
        tracing::warn!(reason = %ev.reason, error = %e, "publishing an Event failed");
    }
}

// --- loops

/// Drives a controller's reconcile stream until it ends (shutdown), logging each
/// failed reconcile at debug (its error policy has counted and warned already).
pub async fn drive<T, E: std::fmt::Display>(
    controller: &str,
    results: impl futures::Stream<Item = std::result::Result<T, E>>,
) {
    use futures::StreamExt;
    results
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "{controller} reconcile failed");
            }
        })
        .await;
}

/// An error policy's end: counts the failed reconcile of `controller` and
/// requeues the object after `key`'s backoff.
pub fn requeue_failed(
    ctx: &crate::Context,
    controller: &str,
    key: &str,
    err: &crate::Error,
) -> kube::runtime::controller::Action {
    ctx.metrics
        .reconcile_failure(controller, err.metric_label());
    kube::runtime::controller::Action::requeue(ctx.failure_backoff(key, err))
}

/// Runs `tick` every `every` until the process stops: `report` gets what a tick
/// did; a failed tick is counted as a failure of `label` and logged (`{what} tick failed`).
pub async fn every<R, F>(
    ctx: &crate::Context,
    label: &str,
    what: &str,
    every: std::time::Duration,
    mut tick: impl FnMut() -> F,
    report: impl Fn(R),
) where
    F: std::future::Future<Output = crate::Result<R>>,
{
    loop {
        match tick().await {
            Ok(r) => report(r),
            Err(e) => {
                ctx.metrics.reconcile_failure(label, e.metric_label());
                tracing::warn!(error = %e, "{what} tick failed");
            }
        }
        tokio::time::sleep(every).await;
    }
}

// --- names

/// A label-safe form of a name (≤ 63 characters; long names keep a hash suffix).
pub fn label_safe(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.len() <= 63 {
        return clean
            .trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string();
    }
    let head: String = clean.chars().take(54).collect();
    let head = head.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}-{:08x}", fnv32(name))
}

/// FNV-1a, 32 bits (names, not security).
pub fn fnv32(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_roundtrip() {
        assert_eq!(time_ms(&ms_time(1_700_000_000_123)), 1_700_000_000_123);
        let _ = ms_time(u64::MAX);
        let t = DateTime::<Utc>::from_timestamp_millis(1_700_000_000_123).unwrap();
        assert_eq!(from_time(&time(t)), t);
        assert_eq!(1_700_000_000_123u64.into_time(), t.into_time());
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let t0 = DateTime::<Utc>::from_timestamp(1_000, 0).unwrap();
        let t1 = DateTime::<Utc>::from_timestamp(2_000, 0).unwrap();
        let mut cs = Vec::new();
        set_condition(&mut cs, "Quoted", true, "PriceLocked", "p", Some(1), t0);
        set_condition(&mut cs, "Quoted", true, "PriceLocked", "q", Some(2), t1);
        assert_eq!(from_time(&cs[0].last_transition_time), t0);
        assert_eq!(cs[0].message, "q");
        set_condition(
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
        // milliseconds work the same; a new type is appended, the order kept
        set_condition(&mut cs, "Funded", true, "Escrowed", "e", Some(2), 5_000u64);
        set_condition(&mut cs, "Funded", true, "Escrowed", "e", Some(3), 9_000u64);
        assert_eq!(time_ms(&cs[1].last_transition_time), 5_000);
        set_condition(&mut cs, "Funded", false, "Refunded", "x", Some(3), 9_000u64);
        assert_eq!(time_ms(&cs[1].last_transition_time), 9_000);
        let types: Vec<&str> = cs.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Quoted", "Funded"]);
        assert_eq!(
            get(&cs, "Funded").map(|c| c.observed_generation),
            Some(Some(3))
        );
    }

    #[test]
    fn labels() {
        assert_eq!(label_safe("node-1"), "node-1");
        let long = "a".repeat(100);
        let l = label_safe(&long);
        assert!(l.len() <= 63);
        assert_ne!(label_safe(&"a".repeat(101)), l);
        assert_eq!(label_safe("Node_1:x"), "Node_1-x");
    }
}
