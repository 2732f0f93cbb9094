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
        borrow
    )]
    pub node_names: Option<Vec<Cow<'a, str>>>,
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
