//! The wire types of `k8s.io/kube-scheduler/extender/v1`, exactly as kube-scheduler
//! sends and reads them.
//!
//! The Go structs carry no JSON tags, so their keys are the Go field names
//! (`Pod`, `Nodes`, `NodeNames`, `FailedNodes`, ...). Go's `encoding/json` matches
//! keys case-insensitively when it decodes; we always *write* the exact names and
//! also *accept* the lower-camel spellings.
//!
//! `Pod` is a `v1.Pod` without `kind`/`apiVersion` (k8s-openapi accepts that),
//! `Nodes` a `v1.NodeList` (also without them, which k8s-openapi's `List` would
//! refuse, hence [`NodeList`] here) or `null`.

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use std::borrow::Cow;
use std::sync::Arc;

/// `v1.NodeList` as kube-scheduler sends it (no `kind`/`apiVersion`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeList {
    #[serde(default)]
    pub metadata: ListMeta,
    #[serde(default, deserialize_with = "null_as_default")]
    pub items: Vec<Node>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `ExtenderArgs`: the body of a `filter` or `prioritize` call.
///
/// Node names borrow from the request body where they can (no allocation per
/// name on the hot path).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ExtenderArgs<'a> {
    #[serde(rename = "Pod", alias = "pod", default)]
    pub pod: Option<Pod>,
    /// Full node list (`nodeCacheCapable: false`).
    #[serde(rename = "Nodes", alias = "nodes", default)]
    pub nodes: Option<NodeList>,
    /// Node names only (`nodeCacheCapable: true`).
    #[serde(
        rename = "NodeNames",
        alias = "nodeNames",
        alias = "nodenames",
        default,
        borrow,
        deserialize_with = "borrowed_names"
    )]
    pub node_names: Option<Vec<Cow<'a, str>>>,
}

/// A string that borrows from the input when it has no escapes. (serde's own
/// `Cow<str>` borrows only as a direct field, never inside a `Vec`.)
struct CowStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a node name (string)")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V).map(CowStr)
    }
}

fn borrowed_names<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Cow<'a, str>>>, D::Error> {
    let v: Option<Vec<CowStr<'a>>> = Option::deserialize(d)?;
    Ok(v.map(|v| v.into_iter().map(|c| c.0).collect()))
}

impl ExtenderArgs<'_> {
    /// The candidate node names, from `NodeNames` or from `Nodes.items[].metadata.name`.
    pub fn candidate_names(&self) -> Vec<&str> {
        if let Some(names) = &self.node_names {
            names.iter().map(|n| n.as_ref()).collect()
        } else if let Some(list) = &self.nodes {
            list.items
                .iter()
                .map(|n| n.metadata.name.as_deref().unwrap_or(""))
                .collect()
        } else {
            Vec::new()
        }
    }
}

/// `ExtenderFilterResult`, as we build it (borrowing from the request).
///
/// Exactly one of `Nodes` / `NodeNames` is set, matching the request; the other is
/// `null`. `FailedNodes` and `FailedAndUnresolvableNodes` are maps node → reason
/// (always present, `{}` when empty), `Error` is `""` unless the call failed.
#[derive(Debug, Default)]
pub struct FilterResult<'a> {
    pub nodes: Option<NodeList>,
    pub node_names: Option<Vec<Cow<'a, str>>>,
    /// node → reason (reasons are shared: many nodes fail for the same one).
    pub failed: Vec<(Cow<'a, str>, Arc<str>)>,
    pub failed_unresolvable: Vec<(Cow<'a, str>, Arc<str>)>,
    pub error: String,
}

struct PairsAsMap<'x, 'a>(&'x [(Cow<'a, str>, Arc<str>)]);

impl Serialize for PairsAsMap<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k.as_ref(), v.as_ref())?;
        }
        m.end()
    }
}

impl Serialize for FilterResult<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ExtenderFilterResult", 5)?;
        st.serialize_field("Nodes", &self.nodes)?;
        st.serialize_field("NodeNames", &self.node_names)?;
        st.serialize_field("FailedNodes", &PairsAsMap(&self.failed))?;
        st.serialize_field(
            "FailedAndUnresolvableNodes",
            &PairsAsMap(&self.failed_unresolvable),
        )?;
        st.serialize_field("Error", &self.error)?;
        st.end()
    }
}

impl FilterResult<'_> {
    /// The JSON of the result, the same as `serde_json::to_vec(self)` but faster:
    /// each distinct reason (thousands of nodes share a handful) is escaped once.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let names = self.node_names.as_ref().map_or(0, |n| n.len());
        let mut out = Vec::with_capacity(
            128 + names * 24 + (self.failed.len() + self.failed_unresolvable.len()) * 32,
        );
        out.extend_from_slice(b"{\"Nodes\":");
        serde_json::to_writer(&mut out, &self.nodes)?;
        out.extend_from_slice(b",\"NodeNames\":");
        match &self.node_names {
            None => out.extend_from_slice(b"null"),
            Some(ns) => {
                out.push(b'[');
                for (i, n) in ns.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut out, n.as_ref())?;
                }
                out.push(b']');
            }
        }
        let mut escaped: Vec<(*const u8, Vec<u8>)> = Vec::new();
        for (key, map) in [
            (&b",\"FailedNodes\":"[..], &self.failed),
            (
                &b",\"FailedAndUnresolvableNodes\":"[..],
                &self.failed_unresolvable,
            ),
        ] {
            out.extend_from_slice(key);
            out.push(b'{');
            for (i, (n, msg)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut out, n.as_ref())?;
                out.push(b':');
                let p = msg.as_ptr();
                match escaped.iter().find(|(q, _)| *q == p) {
                    Some((_, e)) => out.extend_from_slice(e),
                    None => {
                        let e = serde_json::to_vec(msg.as_ref())?;
                        out.extend_from_slice(&e);
                        escaped.push((p, e));
                    }
                }
            }
            out.push(b'}');
        }
        out.extend_from_slice(b",\"Error\":");
        serde_json::to_writer(&mut out, &self.error)?;
        out.push(b'}');
        Ok(out)
    }
}

/// `ExtenderFilterResult`, owned, as kube-scheduler (or a test, or the load tool)
/// reads it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtenderFilterResult {
    #[serde(rename = "Nodes", default)]
    pub nodes: Option<NodeList>,
    #[serde(rename = "NodeNames", default)]
    pub node_names: Option<Vec<String>>,
    #[serde(rename = "FailedNodes", default, deserialize_with = "null_as_default")]
    pub failed_nodes: std::collections::BTreeMap<String, String>,
    #[serde(
        rename = "FailedAndUnresolvableNodes",
        default,
        deserialize_with = "null_as_default"
    )]
    pub failed_and_unresolvable_nodes: std::collections::BTreeMap<String, String>,
    #[serde(rename = "Error", default, deserialize_with = "null_as_default")]
    pub error: String,
}

/// `HostPriority`: one entry of the `prioritize` answer (`HostPriorityList`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPriority<H = String> {
    #[serde(rename = "Host")]
    pub host: H,
    /// 0–10 (`MaxExtenderPriority`).
    #[serde(rename = "Score")]
    pub score: i64,
}

/// kube-scheduler's maximum extender score.
pub const MAX_EXTENDER_PRIORITY: i64 = 10;

/// `ExtenderBindingArgs` (not served: see docs/scheduler.md, "bind"). Kept so the
/// wire module is complete and tested.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtenderBindingArgs {
    #[serde(rename = "PodName")]
    pub pod_name: String,
    #[serde(rename = "PodNamespace")]
    pub pod_namespace: String,
    #[serde(rename = "PodUID")]
    pub pod_uid: String,
    #[serde(rename = "Node")]
    pub node: String,
}

/// `ExtenderBindingResult`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtenderBindingResult {
    #[serde(rename = "Error", default)]
    pub error: String,
}

/// Why a request body could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("request body is not valid ExtenderArgs JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("ExtenderArgs has no Pod")]
    NoPod,
    #[error("ExtenderArgs has neither NodeNames nor Nodes")]
    NoNodes,
}

/// Parses an `ExtenderArgs` body; never panics. Requires a `Pod` and one of
/// `NodeNames`/`Nodes`.
pub fn parse_args(body: &[u8]) -> Result<ExtenderArgs<'_>, ParseError> {
    let args: ExtenderArgs<'_> = serde_json::from_slice(body)?;
    if args.pod.is_none() {
        return Err(ParseError::NoPod);
    }
    if args.node_names.is_none() && args.nodes.is_none() {
        return Err(ParseError::NoNodes);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_json_equals_serde() {
        let a: Arc<str> = "solgrid: \"quoted\" \\ reason \u{e9}\n".into();
        let b: Arc<str> = "other".into();
        let r = FilterResult {
            nodes: None,
            node_names: Some(vec![Cow::Borrowed("n\"1"), Cow::Owned("n2".into())]),
            failed: vec![
                (Cow::Borrowed("x"), a.clone()),
                (Cow::Borrowed("y"), b.clone()),
            ],
            failed_unresolvable: vec![(Cow::Borrowed("z"), a), (Cow::Borrowed("w\u{1}"), b)],
            error: String::new(),
        };
        assert_eq!(r.to_json().unwrap(), serde_json::to_vec(&r).unwrap());
        let empty = FilterResult {
            nodes: Some(NodeList::default()),
            ..Default::default()
        };
        assert_eq!(
            empty.to_json().unwrap(),
            serde_json::to_vec(&empty).unwrap()
        );
        let v: serde_json::Value = serde_json::from_slice(&empty.to_json().unwrap()).unwrap();
        assert_eq!(v["FailedNodes"], serde_json::json!({}));
        assert_eq!(v["NodeNames"], serde_json::Value::Null);
    }

    #[test]
    fn names_borrow_unless_escaped() {
        let body = br#"{"Pod":{},"NodeNames":["plain","esc\u0061ped"]}"#;
        let a = parse_args(body).unwrap();
        let n = a.node_names.unwrap();
        assert!(matches!(n[0], Cow::Borrowed("plain")));
        assert!(matches!(&n[1], Cow::Owned(s) if s == "escaped"));
    }

    #[test]
    fn binding_types_use_go_names() {
        let a: ExtenderBindingArgs =
            serde_json::from_str(r#"{"PodName":"p","PodNamespace":"ns","PodUID":"u","Node":"n"}"#)
                .unwrap();
        assert_eq!(a.node, "n");
        assert_eq!(
            serde_json::to_string(&ExtenderBindingResult::default()).unwrap(),
            r#"{"Error":""}"#
        );
    }
}
