//! Small helpers shared by the GpuNode, StakePosition and rewards code: time
//! conversions, conditions, Events, finalizer patches.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::runtime::events::{Event, EventType};
use serde_json::json;

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

/// Sets (or replaces) the condition of `type_`; the transition time only moves when
/// the status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now_ms: u64,
) {
    let status_s = if status { "True" } else { "False" };
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status_s)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| ms_time(now_ms));
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status_s.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: transition,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// An Event.
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

/// The merge patch setting the finalizers to `current` plus `finalizer`, guarded by
/// the object's `resourceVersion` (a concurrent change makes it fail with 409).
pub fn add_finalizer_patch(
    current: Option<&Vec<String>>,
    resource_version: Option<&str>,
    finalizer: &str,
) -> serde_json::Value {
    let mut list = current.cloned().unwrap_or_default();
    if !list.iter().any(|f| f == finalizer) {
        list.push(finalizer.to_string());
    }
    json!({"metadata": {"resourceVersion": resource_version, "finalizers": list}})
}

/// The merge patch removing `finalizer`, guarded by `resourceVersion`; `None` when
/// it is not there.
pub fn remove_finalizer_patch(
    current: &[String],
    resource_version: Option<&str>,
    finalizer: &str,
) -> Option<serde_json::Value> {
    if !current.iter().any(|f| f == finalizer) {
        return None;
    }
    let list: Vec<&String> = current.iter().filter(|f| *f != finalizer).collect();
    Some(json!({"metadata": {"resourceVersion": resource_version, "finalizers": list}}))
}

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
    fn time_roundtrip_and_conditions() {
        assert_eq!(time_ms(&ms_time(1_700_000_000_123)), 1_700_000_000_123);
        let _ = ms_time(u64::MAX);
        let mut cs = Vec::new();
        set_condition(&mut cs, "Ready", true, "Ok", "fine", Some(1), 1_000);
        set_condition(&mut cs, "Ready", true, "Ok", "fine", Some(2), 5_000);
        assert_eq!(time_ms(&cs[0].last_transition_time), 1_000);
        set_condition(&mut cs, "Ready", false, "Bad", "no", Some(2), 9_000);
        assert_eq!(time_ms(&cs[0].last_transition_time), 9_000);
        assert_eq!(cs.len(), 1);
    }

    #[test]
    fn finalizer_patches() {
        let p = add_finalizer_patch(None, Some("7"), "f");
        assert_eq!(
            p,
            json!({"metadata": {"resourceVersion": "7", "finalizers": ["f"]}})
        );
        let p = add_finalizer_patch(Some(&vec!["a".into()]), Some("7"), "f");
        assert_eq!(p["metadata"]["finalizers"], json!(["a", "f"]));
        let r = remove_finalizer_patch(&["a".into(), "f".into()], Some("8"), "f").unwrap();
        assert_eq!(r["metadata"]["finalizers"], json!(["a"]));
        assert!(remove_finalizer_patch(&["a".into()], None, "f").is_none());
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
