//! Validating a manifest without an API server, the way the API server does: the
//! structural OpenAPI schema of the generated CRD (types, required fields, unknown
//! fields as kubectl's default strict field validation reports them, enums, bounds,
//! lengths, patterns), then the CEL `x-kubernetes-validations` rules (evaluated with
//! `kube`'s client-side CEL validator, schema defaults applied first).
//!
//! This is what the crds tests use to show that each valid example passes and each
//! invalid one is refused with a message naming the field, and what
//! `kubectl solgrid validate` runs before a user applies a file.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use std::fmt;

/// One reason a manifest is refused, with the path of the field (`spec.workers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

fn err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Validates one object (as JSON) against the CRD of its kind. `old` is the object
/// being replaced, for transition rules (`oldSelf`); `None` on create.
pub fn validate_object(value: &Value, old: Option<&Value>) -> Result<(), Vec<FieldError>> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if api_version != crate::API_VERSION {
        return Err(vec![err(
            "apiVersion",
            format!(
                "Unsupported value: {api_version:?}: supported values: \"{}\"",
                crate::API_VERSION
            ),
        )]);
    }
    let crd = crate::all_crds()
        .into_iter()
        .map(|(_, crd)| crd)
        .find(|crd| crd.spec.names.kind == kind)
        .ok_or_else(|| {
            vec![err("kind", format!("Unsupported value: {kind:?}: supported values: \"GpuNode\", \"ComputeJob\", \"StakePosition\", \"LedgerGrant\""))]
        })?;
    validate_against(&crd, value, old)
}

/// Validates one object against a given CRD (first version's schema).
pub fn validate_against(
    crd: &CustomResourceDefinition,
    value: &Value,
    old: Option<&Value>,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(schema) = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
    else {
        return Err(vec![err("", "CRD has no openAPIV3Schema")]);
    };
    let schema = match serde_json::to_value(schema) {
        Ok(s) => s,
        Err(e) => return Err(vec![err("", format!("CRD schema does not serialize: {e}"))]),
    };
    check_metadata(value, crd.spec.scope == "Namespaced", &mut errors);
    let Some(obj) = value.as_object() else {
        return Err(vec![err("", "object must be a mapping")]);
    };
    // Check everything but apiVersion/kind/metadata against the schema.
    let mut body = obj.clone();
    for k in ["apiVersion", "kind", "metadata"] {
        body.remove(k);
    }
    check_schema(&schema, &Value::Object(body), "", &mut errors);
    if errors.is_empty() {
        let validator = kube::core::cel::Validator::new();
        if let Err(cel) = validator.validate(&schema, value, old) {
            for e in cel.iter() {
                let field = e.field_path.trim_start_matches('.').to_string();
                errors.push(err(&field, format!("Invalid value: {}", e.message)));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_metadata(value: &Value, namespaced: bool, errors: &mut Vec<FieldError>) {
    let meta = value.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
    match name {
        None => errors.push(err("metadata.name", "Required value: name is required")),
        Some(n) if !is_dns_subdomain(n) => errors.push(err(
            "metadata.name",
            format!("Invalid value: {n:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"),
        )),
        _ => {}
    }
    if !namespaced && meta.and_then(|m| m.get("namespace")).is_some() {
        errors.push(err(
            "metadata.namespace",
            "Forbidden: not allowed on this cluster-scoped type",
        ));
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 64 {
        format!("{}...", &s[..s.floor_char_boundary(61)])
    } else {
        s
    }
}

/// The structural checks of the API server, in the order it reports them.
fn check_schema(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) && path_is_field(path) {
            errors.push(err(path, "Invalid value: \"null\": must not be null"));
        }
        return;
    }
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
        && schema.get("properties").is_none()
    {
        return;
    }
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(err(
                path,
                format!(
                    "Invalid value: {}: must be an integer or a string",
                    short(value)
                ),
            ));
        }
        return;
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let ok = actual == ty || (ty == "number" && actual == "integer");
        if !ok {
            errors.push(err(
                path,
                format!(
                    "Invalid value: {:?}: {path} in body must be of type {ty}: {:?}",
                    actual, actual
                ),
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        errors.push(err(
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                short(value),
                list.join(", ")
            ),
        ));
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for r in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        errors.push(err(&join(path, r), "Required value"));
                    }
                }
            }
            let additional = schema.get("additionalProperties");
            for (k, v) in map {
                let child = join(path, k);
                if let Some(p) = props.and_then(|p| p.get(k)) {
                    check_schema(p, v, &child, errors);
                } else if let Some(a) = additional.filter(|a| a.is_object()) {
                    check_schema(a, v, &child, errors);
                } else {
                    errors.push(err(&child, format!("unknown field {child:?}")));
                }
            }
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && map.len() as u64 > max
            {
                errors.push(err(
                    path,
                    format!("Too many: {}: must have at most {max} items", map.len()),
                ));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errors.push(err(
                    path,
                    format!("Too many: {}: must have at most {max} items", items.len()),
                ));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errors.push(err(
                    path,
                    format!(
                        "Invalid value: {} items: should have at least {min} items",
                        items.len()
                    ),
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_schema(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errors.push(err(
                    path,
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errors.push(err(
                    path,
                    format!(
                        "Invalid value: {:?}: {path} in body should be at least {min} chars long",
                        s
                    ),
                ));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(pattern) {
                    Ok(re) if !re.is_match(s) => errors.push(err(
                        path,
                        format!(
                            "Invalid value: {:?}: {path} in body should match '{pattern}'",
                            s
                        ),
                    )),
                    Ok(_) => {}
                    Err(e) => {
                        errors.push(err(path, format!("schema pattern does not compile: {e}")))
                    }
                }
            }
        }
        Value::Number(n) => {
            let as_f = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && as_f < min
            {
                errors.push(err(path, format!("Invalid value: {n}: {path} in body should be greater than or equal to {min}")));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && as_f > max
            {
                errors.push(err(
                    path,
                    format!(
                        "Invalid value: {n}: {path} in body should be less than or equal to {max}"
                    ),
                ));
            }
            let format = schema.get("format").and_then(Value::as_str);
            let unsigned = matches!(format, Some("uint8" | "uint16" | "uint32" | "uint64"));
            if unsigned && schema.get("minimum").is_none() && n.as_i64().is_some_and(|i| i < 0) {
                errors.push(err(
                    path,
                    format!(
                        "Invalid value: {n}: {path} in body should be greater than or equal to 0"
                    ),
                ));
            }
        }
        _ => {}
    }
}

fn path_is_field(path: &str) -> bool {
    !path.is_empty()
}

/// Parses a YAML stream (one or more documents) into JSON values, skipping empty documents.
pub fn parse_yaml_stream(text: &str) -> Result<Vec<Value>, serde_yaml_ng::Error> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}
