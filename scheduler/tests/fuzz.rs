//! Property-based "fuzzing" of request parsing and of the handlers (the cargo-fuzz
//! target lives in scheduler/fuzz/): arbitrary bytes, mutated kube-scheduler
//! bodies and arbitrary JSON never panic, and always get 200 or 400 with a JSON
//! body.

mod common;

use common::*;
use proptest::prelude::*;
use solgrid_scheduler::server::{AppState, filter_bytes, prioritize_bytes};
use solgrid_scheduler::wire::parse_args;
use std::sync::OnceLock;

fn state() -> &'static AppState {
    static S: OnceLock<AppState> = OnceLock::new();
    S.get_or_init(testdata_state)
}

fn seeds() -> &'static Vec<Vec<u8>> {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        let mut v: Vec<Vec<u8>> = FIXTURES.iter().map(|f| fixture(f)).collect();
        for f in FIXTURES {
            v.push(owned_variant(
                &fixture(f),
                "ml-team",
                "llama-finetune",
                None,
                false,
            ));
        }
        v
    })
}

fn check(body: &[u8]) -> Result<(), TestCaseError> {
    let parsed = parse_args(body).is_ok();
    for (verb, r) in [
        ("filter", filter_bytes(state(), body)),
        ("prioritize", prioritize_bytes(state(), body)),
    ] {
        let code = r.status().as_u16();
        prop_assert!(code == 200 || code == 400, "{verb}: {code}");
        prop_assert_eq!(code == 200, parsed, "{} status vs parse", verb);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (_, out) = rt.block_on(body_of(r));
        let v: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| TestCaseError::fail(format!("{verb}: body not JSON: {e}")))?;
        if code == 400 {
            prop_assert!(v["Error"].as_str().is_some_and(|s| !s.is_empty()));
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Truncate(usize),
    Splice(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let tokens: Vec<&'static [u8]> = vec![
        b"null",
        b"{}",
        b"[]",
        b"\"",
        b"1e999",
        b"-1",
        b"\\u0000",
        b"\"Pod\":",
        b"{\"Pod\":{",
        b"]]]]",
        b"\"NodeNames\":null",
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::sample::select(tokens))
            .prop_map(|(i, t)| Mutation::Splice(i, t.to_vec())),
    ]
}

fn apply(mut b: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let n = b.len().max(1);
        match m {
            Mutation::Flip(i, x) => {
                if !b.is_empty() {
                    b[i % n] ^= x | 1;
                }
            }
            Mutation::Insert(i, x) => b.insert(i % (b.len() + 1), *x),
            Mutation::Delete(i, k) => {
                let s = i % n;
                let e = (s + k).min(b.len());
                if s < e {
                    b.drain(s..e);
                }
            }
            Mutation::Truncate(i) => b.truncate(i % n),
            Mutation::Splice(i, t) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, t.iter().copied());
            }
        }
    }
    b
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-zA-Z0-9/.-]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_string()),
                    Just("name".to_string()),
                    Just("namespace".to_string()),
                    Just("ownerReferences".to_string()),
                    Just("labels".to_string()),
                    Just("items".to_string()),
                    Just("spec".to_string()),
                    "[a-z]{1,6}".prop_map(String::from)
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&body)?;
    }

    #[test]
    fn mutated_kube_scheduler_bodies(seed in 0usize..8, ms in prop::collection::vec(mutation(), 1..6)) {
        let body = apply(seeds()[seed % seeds().len()].clone(), &ms);
        check(&body)?;
    }

    #[test]
    fn arbitrary_json_in_each_field(pod in arb_json(), nodes in arb_json(), names in arb_json(), which in 0u8..8) {
        let mut o = serde_json::Map::new();
        if which & 1 != 0 { o.insert("Pod".into(), pod); }
        if which & 2 != 0 { o.insert("Nodes".into(), nodes); }
        if which & 4 != 0 { o.insert("NodeNames".into(), names); }
        check(&serde_json::to_vec(&serde_json::Value::Object(o)).unwrap())?;
    }

    #[test]
    fn valid_bodies_with_arbitrary_names_answer_for_every_name(names in prop::collection::vec("[a-z0-9\\-\\\\\"\u{e9}]{0,20}", 0..40), owned in any::<bool>()) {
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let mut body = with_names(&fixture("filter-nodecache.json"), &refs);
        if owned {
            body = owned_variant(&body, "ml-team", "llama-finetune", None, false);
        }
        let r = filter_bytes(state(), &body);
        prop_assert_eq!(r.status().as_u16(), 200);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (_, out) = rt.block_on(body_of(r));
        let res: solgrid_scheduler::wire::ExtenderFilterResult = serde_json::from_slice(&out).unwrap();
        let passed = res.node_names.unwrap_or_default();
        // every candidate is either passed or failed (duplicates collapse in the maps)
        for n in &names {
            prop_assert!(passed.contains(n) || res.failed_nodes.contains_key(n) || res.failed_and_unresolvable_nodes.contains_key(n));
        }
        if !owned {
            prop_assert_eq!(passed, names);
        }
    }
}
