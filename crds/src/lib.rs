//! The `solgrid.dev/v1alpha1` API: [`GpuNode`] (cluster-scoped), [`ComputeJob`] and
//! [`StakePosition`] (namespaced), and [`LedgerGrant`] (cluster-scoped, admins only:
//! funding a wallet on the embedded ledger).
//!
//! The CRD YAML under `crds/` is generated from these types by the `crdgen` binary
//! (`make crds`) and a test fails when it drifts. Validation that the API server can
//! do lives in the schema: OpenAPI bounds, enums, patterns and CEL
//! `x-kubernetes-validations` rules, so a bad manifest is refused by `kubectl apply`
//! with a message naming the field. [`validate`] checks a manifest the same way
//! without an API server (used by the tests and `kubectl solgrid validate`).
//!
//! Money is always an integer number of base units of the token's mint.

#![forbid(unsafe_code)]

pub mod common;
pub mod computejob;
pub mod gpunode;
pub mod labels;
pub mod ledgergrant;
pub mod market;
pub mod stakeposition;
pub mod validate;

pub use common::*;
pub use computejob::*;
pub use gpunode::*;
pub use labels::*;
pub use ledgergrant::*;
pub use stakeposition::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

/// The API group.
pub const GROUP: &str = "solgrid.dev";
/// The API version.
pub const VERSION: &str = "v1alpha1";

/// The [`LABEL_MARKET_STATE`] value of a GpuNode status, e.g. `Active.r550.eligible`:
/// it changes only with what the extender filters on (phase, reputation score,
/// reward eligibility), never with heartbeats, so it does not churn.
pub fn market_state(st: &GpuNodeStatus) -> String {
    let phase = match st.phase {
        GpuNodePhase::Pending => "Pending",
        GpuNodePhase::Verifying => "Verifying",
        GpuNodePhase::Active => "Active",
        GpuNodePhase::Draining => "Draining",
        GpuNodePhase::Offline => "Offline",
        GpuNodePhase::Slashed => "Slashed",
    };
    let eligible = if st.reward_eligible {
        "eligible"
    } else {
        "ineligible"
    };
    format!("{phase}.r{}.{eligible}", st.reputation.score)
}
/// `apiVersion` of every solgrid object.
pub const API_VERSION: &str = "solgrid.dev/v1alpha1";

/// Every CRD of the API, with the file name `crdgen` writes it to.
pub fn all_crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("gpunode.yaml", served(GpuNode::crd())),
        ("computejob.yaml", served(ComputeJob::crd())),
        ("stakeposition.yaml", served(StakePosition::crd())),
        ("ledgergrant.yaml", served(LedgerGrant::crd())),
    ]
}

/// The integer and number formats the API server knows (OpenAPI's own plus the
/// ones Kubernetes registers); schemars also writes `uint64`, `uint32`, `uint16`
/// and `uint8`, which every `kubectl apply` then warns about (`unrecognized
/// format`). Bounds carry the meaning of those (`minimum: 0`), so they are dropped.
pub const KNOWN_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "binary",
    "date",
    "date-time",
    "duration",
    "password",
    "uuid",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uri",
    "bsonobjectid",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
];

/// A CRD as it is served: generated, with formats the API server does not know
/// removed from every schema.
pub fn served(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for v in &mut crd.spec.versions {
        if let Some(schema) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            strip_unknown_formats(schema);
        }
    }
    crd
}

fn strip_unknown_formats(s: &mut JSONSchemaProps) {
    if s.format
        .as_deref()
        .is_some_and(|f| !KNOWN_FORMATS.contains(&f))
    {
        s.format = None;
    }
    let children = s
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(s.pattern_properties.iter_mut().flat_map(|p| p.values_mut()))
        .chain(s.definitions.iter_mut().flat_map(|p| p.values_mut()))
        .chain(s.all_of.iter_mut().flatten())
        .chain(s.any_of.iter_mut().flatten())
        .chain(s.one_of.iter_mut().flatten())
        .chain(s.not.iter_mut().map(|b| b.as_mut()));
    for c in children {
        strip_unknown_formats(c);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(b)) = s.items.as_mut() {
        strip_unknown_formats(b);
    }
    if let Some(JSONSchemaPropsOrArray::Schemas(v)) = s.items.as_mut() {
        v.iter_mut().for_each(strip_unknown_formats);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(b)) = s.additional_properties.as_mut() {
        strip_unknown_formats(b);
    }
}

/// The YAML of one CRD exactly as `crdgen` writes it (a header, then the document).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml_ng::Error> {
    let body = serde_yaml_ng::to_string(crd)?;
    Ok(format!(
        "# Generated by `make crds` (cargo run -p solgrid-crds --bin crdgen) from crds/src.\n# Do not edit by hand: a test fails when this file drifts from the Rust types.\n{body}"
    ))
}
