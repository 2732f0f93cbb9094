//! The chart's market parameters are the market library's configuration: the
//! rendered `market.json` deserializes into `solgrid_market`'s types without losing
//! a key (a misspelled knob would be silently ignored by the operator otherwise),
//! the chart's defaults are the library's defaults, and the values schema allows no
//! key the library does not have.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use solgrid_helm_tests::*;
use solgrid_market::fees::FeeConfig;
use solgrid_market::matching::MatchConfig;
use solgrid_market::pricing::PricingConfig;
use solgrid_market::reputation::ReputationConfig;
use solgrid_market::staking::StakingConfig;

fn market_json(sets: &[&str]) -> Value {
    let docs = render(&[], sets);
    let cm = find(&docs, "ConfigMap", "-market");
    serde_json::from_str(cm["data"]["market.json"].as_str().unwrap()).expect("market.json is JSON")
}

/// Every key of `part` is in `whole` with an equal value (recursively).
fn missing_from(part: &Value, whole: &Value, path: &str, out: &mut Vec<String>) {
    match (part, whole) {
        (Value::Object(p), Value::Object(w)) => {
            for (k, v) in p {
                let sub = format!("{path}.{k}");
                match w.get(k) {
                    Some(wv) => missing_from(v, wv, &sub, out),
                    None => out.push(format!(
                        "{sub}: not a field of the market library's configuration"
                    )),
                }
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        _ if part == whole => {}
        _ => out.push(format!("{path}: {part} became {whole}")),
    }
}

/// A section read as the library's type `T`: what it serializes back to (`null`
/// when it does not deserialize) and `T`'s default.
fn check<T: DeserializeOwned + Serialize + Default>(
    section: &str,
    value: &Value,
    errors: &mut Vec<String>,
) -> (Value, Value) {
    let default = serde_json::to_value(T::default()).unwrap();
    let typed: T = match serde_json::from_value(value.clone()) {
        Ok(t) => t,
        Err(e) => {
            errors.push(format!("market.{section}: {e}"));
            return (Value::Null, default);
        }
    };
    let back = serde_json::to_value(&typed).unwrap();
    missing_from(value, &back, &format!("market.{section}"), errors);
    (back, default)
}

type Check = fn(&str, &Value, &mut Vec<String>) -> (Value, Value);

/// The sections of market.json and the library type each is.
const SECTIONS: [(&str, Check); 5] = [
    ("fees", check::<FeeConfig>),
    ("pricing", check::<PricingConfig>),
    ("staking", check::<StakingConfig>),
    ("reputation", check::<ReputationConfig>),
    ("matching", check::<MatchConfig>),
];

fn sections(market: &Value) -> (Vec<String>, Vec<(&'static str, Value, Value)>) {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for section in market.as_object().unwrap().keys() {
        let Some((name, check)) = SECTIONS.iter().find(|(n, _)| n == section) else {
            errors.push(format!(
                "market.{section}: not a section the operator or the scheduler reads"
            ));
            continue;
        };
        let (back, default) = check(name, &market[section], &mut errors);
        out.push((*name, back, default));
    }
    (errors, out)
}

#[test]
fn chart_market_values_are_the_librarys_configuration_and_defaults() {
    let market = market_json(&[]);
    for s in ["fees", "pricing", "staking", "reputation", "matching"] {
        assert!(
            market.get(s).is_some(),
            "market.{s} missing from the chart's values"
        );
    }
    let (errors, parsed) = sections(&market);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    for (name, back, default) in parsed {
        assert_eq!(
            back, default,
            "the chart's default market.{name} differs from solgrid-market's default: keep helm/solgrid/values.yaml in step"
        );
    }
}

#[test]
fn overrides_reach_the_configuration() {
    let market = market_json(&[
        "market.fees.requesterFeeBps=30",
        "market.pricing.referenceMicroUsd.h100=2400000",
        "market.staking.unbondingMs=3600000",
    ]);
    let (errors, parsed) = sections(&market);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let get = |n: &str| parsed.iter().find(|(s, _, _)| *s == n).unwrap().1.clone();
    assert_eq!(get("fees")["requesterFeeBps"], 30);
    assert_eq!(get("staking")["unbondingMs"], 3_600_000);
    let pricing: PricingConfig = serde_json::from_value(market["pricing"].clone()).unwrap();
    assert_eq!(pricing.reference(solgrid_market::GpuModel::H100), 2_400_000);
    // A model left out keeps its default price.
    assert_eq!(
        pricing.reference(solgrid_market::GpuModel::Rtx4090),
        PricingConfig::default().reference(solgrid_market::GpuModel::Rtx4090)
    );
}

#[test]
fn a_misspelled_market_key_is_refused_before_the_operator_sees_it() {
    // The schema refuses it (the operator would silently ignore it).
    let out = helm_template(&[], &["market.fees.requesterFeeBsp=30"]);
    assert!(!out.success);
    assert!(out.stderr.contains("requesterFeeBsp"), "{}", out.stderr);
}

/// Every key the values schema allows under `market` exists in the library's
/// serialized defaults (so the schema allows no knob that does nothing).
#[test]
fn schema_market_keys_exist_in_the_library() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    let defaults = serde_json::json!({
        "fees": FeeConfig::default(),
        "pricing": PricingConfig::default(),
        "staking": StakingConfig::default(),
        "reputation": ReputationConfig::default(),
        "matching": MatchConfig::default(),
    });
    fn walk(schema: &Value, default: &Value, path: &str, out: &mut Vec<String>) {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (k, sub) in props {
            match default.get(k) {
                Some(d) => walk(sub, d, &format!("{path}.{k}"), out),
                None => out.push(format!("{path}.{k}")),
            }
        }
    }
    let mut bogus = Vec::new();
    walk(
        &schema["properties"]["market"],
        &defaults,
        "market",
        &mut bogus,
    );
    assert!(
        bogus.is_empty(),
        "schema keys the market library does not have: {bogus:?}"
    );
}
