//! `kubectl solgrid validate -f FILE`: checks each solgrid document of a file the
//! way the API server would (`solgrid_crds::validate::validate_object`: the CRD's
//! OpenAPI schema, then its CEL rules), offline, with errors that name the field.

use serde_json::Value;

/// The verdict on one document of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A solgrid object that the API server would accept.
    Valid { id: String },
    /// A solgrid object that it would refuse, with `field: message` lines.
    Invalid { id: String, errors: Vec<String> },
    /// Not a solgrid object (a Secret, ...): not checked here.
    Skipped { id: String },
}

impl Verdict {
    pub fn is_invalid(&self) -> bool {
        matches!(self, Verdict::Invalid { .. })
    }
}

fn id(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("<no kind>"),
        doc["metadata"]["name"].as_str().unwrap_or("<no name>")
    )
}

/// Validates every document of a YAML (or JSON) stream. A document that is not
/// YAML at all is an error of the whole file.
pub fn validate_text(text: &str) -> Result<Vec<Verdict>, String> {
    let mut verdicts = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let doc: Value = serde::Deserialize::deserialize(de)
            .map_err(|e| format!("document {}: not valid YAML: {e}", i + 1))?;
        if doc.is_null() {
            continue;
        }
        let api = doc["apiVersion"].as_str().unwrap_or_default();
        let is_solgrid = api.split('/').next() == Some(solgrid_crds::GROUP);
        if !is_solgrid {
            verdicts.push(Verdict::Skipped { id: id(&doc) });
            continue;
        }
        match solgrid_crds::validate::validate_object(&doc, None) {
            Ok(()) => verdicts.push(Verdict::Valid { id: id(&doc) }),
            Err(errs) => verdicts.push(Verdict::Invalid {
                id: id(&doc),
                errors: errs.iter().map(|e| e.to_string()).collect(),
            }),
        }
    }
    Ok(verdicts)
}

/// The report printed for one file.
pub fn render(file: &str, verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    for v in verdicts {
        match v {
            Verdict::Valid { id } => out.push_str(&format!("{file}: {id}: valid\n")),
            Verdict::Skipped { id } => out.push_str(&format!(
                "{file}: {id}: skipped (not a solgrid.dev object)\n"
            )),
            Verdict::Invalid { id, errors } => {
                out.push_str(&format!("{file}: {id}: invalid\n"));
                for e in errors {
                    out.push_str(&format!("  {e}\n"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field() {
        let text = r#"
apiVersion: solgrid.dev/v1alpha1
kind: ComputeJob
metadata: {name: j, namespace: ml}
spec:
  template: {image: busybox}
  gpus: {count: 1}
  workers: 0
  maxDurationSeconds: 3600
  maxPricePerGpuHour: 100
  payerSecretRef: {name: w}
"#;
        let v = validate_text(text).unwrap();
        assert_eq!(v.len(), 1);
        let Verdict::Invalid { id, errors } = &v[0] else {
            panic!("{v:?}")
        };
        assert_eq!(id, "ComputeJob/j");
        assert!(
            errors.iter().any(|e| e.contains("spec.workers")),
            "{errors:?}"
        );
    }

    #[test]
    fn skips_other_kinds_and_empty_documents() {
        let text = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n";
        assert_eq!(
            validate_text(text).unwrap(),
            vec![Verdict::Skipped {
                id: "Secret/s".into()
            }]
        );
        assert!(validate_text("a: [").is_err());
    }
}
