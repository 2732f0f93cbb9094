//! A small in-memory API server behind kube's `tower-test` mock service, for the
//! GpuNode, StakePosition, verification and rewards tests: it stores objects by
//! path, applies GET / POST / PUT / PATCH (merge semantics, `resourceVersion`
//! preconditions → 409) / DELETE and pod logs, and records every request so a test
//! can assert the exact calls (method, path, body) a reconcile made, in order.
#![allow(dead_code)]

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};
use solgrid_operator::config::OperatorConfig;
use solgrid_operator::context::{Context, FakeClock, LedgerHandle};
use solgrid_operator::metrics::Metrics;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

impl Call {
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

#[derive(Default)]
pub struct State {
    pub objects: BTreeMap<String, Value>,
    pub logs: BTreeMap<String, String>,
    pub calls: Vec<Call>,
    pub rv: u64,
}

#[derive(Clone, Default)]
pub struct Server(pub Arc<Mutex<State>>);

pub const T0_MS: i64 = 1_800_000_000_000; // 2027-01-15

pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn plural_of(path: &str) -> Option<(String, Option<String>)> {
    // .../<plural> or .../namespaces/<ns>/<plural>
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let last = segs.last()?.to_string();
    let ns = segs
        .iter()
        .position(|s| *s == "namespaces")
        .and_then(|i| segs.get(i + 1))
        .map(|s| s.to_string());
    Some((last, ns))
}

impl Server {
    pub fn put(&self, path: &str, obj: Value) {
        let mut st = self.0.lock().unwrap();
        st.rv += 1;
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{}", st.rv));
        }
        if obj["metadata"]["generation"].is_null() {
            obj["metadata"]["generation"] = json!(1);
        }
        st.objects.insert(path.to_string(), obj);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.0.lock().unwrap().objects.get(path).cloned()
    }

    pub fn set_log(&self, pod_path: &str, log: &str) {
        self.0
            .lock()
            .unwrap()
            .logs
            .insert(pod_path.to_string(), log.to_string());
    }

    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().calls.clone()
    }

    /// The calls that are not Events.
    pub fn writes(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method != "GET" && !c.path.contains("/events"))
            .collect()
    }

    /// The reasons of the Events posted.
    pub fn events(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.path.contains("/events"))
            .map(|c| c.body["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub fn clear_calls(&self) {
        self.0.lock().unwrap().calls.clear();
    }

    fn handle(&self, c: &Call) -> (u16, Value) {
        let mut st = self.0.lock().unwrap();
        st.calls.push(c.clone());
        let (base, sub) = match c.path.rsplit_once('/') {
            Some((b, s)) if s == "status" || s == "log" => (b.to_string(), Some(s.to_string())),
            _ => (c.path.clone(), None),
        };
        let not_found = (
            404,
            json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"not found"}),
        );
        let conflict = (
            409,
            json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","code":409,"message":"conflict"}),
        );
        match c.method.as_str() {
            "GET" if sub.as_deref() == Some("log") => match st.logs.get(&base) {
                Some(l) => (200, Value::String(l.clone())),
                None => not_found,
            },
            "GET" => {
                if let Some(o) = st.objects.get(&base) {
                    return (200, o.clone());
                }
                // a list?
                let Some((plural, ns)) = plural_of(&base) else {
                    return not_found;
                };
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(k, _)| {
                        let Some((parent, _)) = k.rsplit_once('/') else {
                            return false;
                        };
                        parent.ends_with(&format!("/{plural}"))
                            && ns
                                .as_ref()
                                .is_none_or(|n| parent.contains(&format!("/namespaces/{n}/")))
                            && (base.contains("/namespaces/") || parent.ends_with(&plural))
                    })
                    .map(|(_, v)| v.clone())
                    .collect();
                if items.is_empty()
                    && !["gpunodes", "stakepositions", "pods", "configmaps"]
                        .contains(&plural.as_str())
                {
                    return not_found;
                }
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            "POST" => {
                if c.path.contains("/events") {
                    return (201, c.body.clone());
                }
                let name = c.body["metadata"]["name"]
                    .as_str()
                    .unwrap_or("x")
                    .to_string();
                let path = format!("{}/{}", c.path, name);
                if st.objects.contains_key(&path) {
                    return (
                        409,
                        json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"AlreadyExists","code":409,"message":"exists"}),
                    );
                }
                st.rv += 1;
                let mut o = c.body.clone();
                o["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                o["metadata"]["uid"] = json!(format!("uid-{}", st.rv));
                o["metadata"]["creationTimestamp"] = json!("2027-01-15T08:00:00Z");
                st.objects.insert(path, o.clone());
                (201, o)
            }
            "PUT" => {
                let Some(cur) = st.objects.get(&base).cloned() else {
                    return not_found;
                };
                let want = &c.body["metadata"]["resourceVersion"];
                if !want.is_null() && *want != cur["metadata"]["resourceVersion"] {
                    return conflict;
                }
                st.rv += 1;
                let mut o = c.body.clone();
                o["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                st.objects.insert(base, o.clone());
                (200, o)
            }
            "PATCH" => {
                let Some(mut cur) = st.objects.get(&base).cloned() else {
                    return not_found;
                };
                if let Some(ops) = c.body.as_array() {
                    // a JSON patch (kube's finalizer helper): `test` guards, `add`, `remove`
                    if !json_patch(&mut cur, ops) {
                        return (
                            422,
                            json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Invalid","code":422,"message":"test failed"}),
                        );
                    }
                    st.rv += 1;
                    cur["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                    st.objects.insert(base, cur.clone());
                    return (200, cur);
                }
                let want = &c.body["metadata"]["resourceVersion"];
                if !want.is_null() && *want != cur["metadata"]["resourceVersion"] {
                    return conflict;
                }
                if sub.as_deref() == Some("status") {
                    if c.query.contains("fieldManager") && c.query.contains("force") {
                        // server-side apply of the status: the fields named replace ours
                        let mut status = cur["status"].clone();
                        if status.is_null() {
                            status = json!({});
                        }
                        if let Some(m) = c.body["status"].as_object() {
                            for (k, v) in m {
                                status[k] = v.clone();
                            }
                        }
                        cur["status"] = status;
                    } else {
                        merge(&mut cur["status"], &c.body["status"]);
                    }
                } else {
                    let mut meta = c.body["metadata"].clone();
                    if let Some(m) = meta.as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    merge(&mut cur["metadata"], &meta);
                    if !c.body["spec"].is_null() {
                        merge(&mut cur["spec"], &c.body["spec"]);
                    }
                }
                st.rv += 1;
                cur["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                st.objects.insert(base, cur.clone());
                (200, cur)
            }
            "DELETE" => match st.objects.remove(&base) {
                Some(o) => (200, o),
                None => not_found,
            },
            _ => not_found,
        }
    }
}

/// A Context over the fake API server, with an in-memory ledger and a fake clock
/// at `T0_MS`.
pub fn env(config: OperatorConfig) -> (Arc<Context>, Server, Arc<FakeClock>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = Server::default();
    let s2 = server.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let call = Call {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                body,
            };
            let (code, resp) = s2.handle(&call);
            let bytes = match &resp {
                Value::String(s) if call.path.ends_with("/log") => s.clone().into_bytes(),
                v => serde_json::to_vec(v).unwrap(),
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(bytes))
                    .unwrap(),
            );
        }
    });
    let client = kube::Client::new(svc, "default");
    let clock = Arc::new(FakeClock::new(
        chrono::DateTime::from_timestamp_millis(T0_MS).unwrap(),
    ));
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(config),
        Arc::new(LedgerHandle::in_memory()),
        Arc::new(Metrics::new()),
        clock.clone(),
    ));
    (ctx, server, clock)
}

/// An RFC 3339 timestamp `ms` after the epoch.
pub fn rfc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// Wallets with test keypairs (seeds 0xa1, 0xa2, 0xa3 repeated: public, tests only),
// so that a Secret can prove ownership (a debit needs the owner's signature).
pub const WALLET_A: &str = "DgmxzQX61DxkAMkAubrgHVJb637fYYTdh7ouVqZGnJrp";
pub const WALLET_B: &str = "7rpDt11nvidzpRJRz8UiCndE4z58YqdktV5KYYpTMQ2P";
pub const WALLET_PROV: &str = "Ce6R5jCf97nqhG7G5QRJdzQknPGyBEVYLXwVeGTb1Brp";

/// The test keypair of one of the wallets above.
pub fn keypair_of(wallet: &str) -> solgrid_ledger::WalletKeypair {
    let seed = match wallet {
        WALLET_A => 0xa1,
        WALLET_B => 0xa2,
        WALLET_PROV => 0xa3,
        other => panic!("no test keypair for {other}"),
    };
    let kp = solgrid_ledger::WalletKeypair::from_seed([seed; 32]);
    assert_eq!(kp.address(), wallet);
    kp
}

/// A wallet Secret's `data`: the address and its keypair (Solana CLI JSON).
pub fn wallet_secret_data(wallet: &str) -> serde_json::Value {
    let enc = solgrid_operator::verification::base64_encode;
    serde_json::json!({
        "address": enc(wallet.as_bytes()),
        "keypair": enc(keypair_of(wallet).to_solana_json().as_bytes()),
    })
}

/// Applies the `test`, `add` and `remove` operations of a JSON patch (RFC 6902) to
/// `doc`; `false` when a test fails or a path is missing.
pub fn json_patch(doc: &mut Value, ops: &[Value]) -> bool {
    for op in ops {
        let path = op["path"].as_str().unwrap_or_default();
        let (parent, last) = path.rsplit_once('/').unwrap_or(("", path));
        match op["op"].as_str() {
            Some("test") => {
                if doc.pointer(path).unwrap_or(&Value::Null) != &op["value"] {
                    return false;
                }
            }
            Some("add") => match doc.pointer_mut(parent) {
                Some(Value::Array(a)) if last == "-" => a.push(op["value"].clone()),
                Some(Value::Object(m)) => {
                    m.insert(last.to_string(), op["value"].clone());
                }
                _ => return false,
            },
            Some("remove") => match (doc.pointer_mut(parent), last.parse::<usize>()) {
                (Some(Value::Array(a)), Ok(i)) if i < a.len() => {
                    a.remove(i);
                }
                (Some(Value::Object(m)), _) => {
                    m.remove(last);
                }
                _ => return false,
            },
            _ => return false,
        }
    }
    true
}
