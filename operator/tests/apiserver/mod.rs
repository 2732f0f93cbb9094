//! One mock Kubernetes API server for the operator's tests, behind kube's
//! `tower-test` mock service. One task reads every request, records it as a
//! [`Call`] and then either
//! - answers it from an in-memory store ([`env`], *automatic*): objects by path,
//!   GET / list / POST / PUT / PATCH (merge, server-side apply of a status, JSON
//!   patch) / DELETE and pod logs, `resourceVersion` preconditions → 409; a test
//!   asserts the calls a reconcile made afterwards ([`ApiServer::calls`]); or
//! - hands it to the test ([`scripted`]): each test states the exact requests the
//!   controller must make, in order ([`ApiServer::expect`]: method, path and
//!   query, the important parts of the body), and what the "API server" answers
//!   ([`Seen::reply`], [`Seen::echo`], [`Seen::not_found`], or [`Seen::apply`]
//!   from the store).
//!
//! Plus the fixtures the tests share: the job, pods, GpuNodes, test wallets with
//! their keypairs, and ledger funding.

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use solgrid_crds::*;
use solgrid_market::ledger::{Account, Intent, Movement, Op, Token};
use solgrid_operator::config::OperatorConfig;
use solgrid_operator::context::{Caches, Context, FakeClock};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tower_test::mock::SendResponse;

// ---------------------------------------------------------------------------
// The server

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

/// What the server holds: the objects by path, pod logs, and every call made.
#[derive(Default)]
pub struct State {
    pub objects: BTreeMap<String, Value>,
    pub logs: BTreeMap<String, String>,
    pub calls: Vec<Call>,
    pub rv: u64,
}

type Store = Arc<Mutex<State>>;

/// The test's side of the mock API server.
pub struct ApiServer {
    store: Store,
    /// Scripted mode: the requests, in order, for [`ApiServer::expect`].
    script: Option<mpsc::UnboundedReceiver<Seen>>,
}

/// A Kubernetes `Status` error body.
pub fn status_error(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "reason": reason, "code": code, "message": message})
}

fn not_found() -> (u16, Value) {
    (404, status_error(404, "NotFound", "not found"))
}

fn conflict() -> (u16, Value) {
    (
        409,
        status_error(
            409,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version and try again",
        ),
    )
}

/// Sends `body` with `status`; a pod log (a string) as text.
fn respond(send: SendResponse<Response<Body>>, status: u16, body: &Value, log: bool) {
    let (content_type, bytes) = match body {
        Value::String(s) if log => ("text/plain", s.clone().into_bytes()),
        v => ("application/json", serde_json::to_vec(v).unwrap()),
    };
    send.send_response(
        Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header("content-type", content_type)
            .body(Body::from(bytes))
            .unwrap(),
    );
}

fn decode(s: &str) -> String {
    // enough percent-decoding for label selectors and field managers
    s.replace("%2F", "/")
        .replace("%3D", "=")
        .replace("%2C", ",")
        .replace("%3A", ":")
}

/// RFC 7386 JSON merge patch of `patch` into `target`.
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

impl State {
    /// Stores `obj` at the next resourceVersion.
    fn store(&mut self, path: String, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(path, obj.clone());
        obj
    }

    fn list(&self, base: &str) -> (u16, Value) {
        let Some((plural, ns)) = plural_of(base) else {
            return not_found();
        };
        let items: Vec<Value> = self
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
            && !["gpunodes", "stakepositions", "pods", "configmaps"].contains(&plural.as_str())
        {
            return not_found();
        }
        (
            200,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
        )
    }

    fn patch(&mut self, c: &Call, base: String, sub: Option<&str>) -> (u16, Value) {
        let Some(mut cur) = self.objects.get(&base).cloned() else {
            return not_found();
        };
        if let Some(ops) = c.body.as_array() {
            // a JSON patch (kube's finalizer helper): `test` guards, `add`, `remove`
            if !json_patch(&mut cur, ops) {
                return (422, status_error(422, "Invalid", "test failed"));
            }
            return (200, self.store(base, cur));
        }
        let want = &c.body["metadata"]["resourceVersion"];
        if !want.is_null() && *want != cur["metadata"]["resourceVersion"] {
            return conflict();
        }
        if sub == Some("status") {
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
        (200, self.store(base, cur))
    }

    /// What the API server answers to `c` (and does to the objects).
    fn answer(&mut self, c: &Call) -> (u16, Value) {
        let (base, sub) = match c.path.rsplit_once('/') {
            Some((b, s)) if s == "status" || s == "log" => (b.to_string(), Some(s)),
            _ => (c.path.clone(), None),
        };
        match c.method.as_str() {
            "GET" if sub == Some("log") => match self.logs.get(&base) {
                Some(l) => (200, Value::String(l.clone())),
                None => not_found(),
            },
            "GET" => match self.objects.get(&base) {
                Some(o) => (200, o.clone()),
                None => self.list(&base),
            },
            "POST" if c.path.contains("/events") => (201, c.body.clone()),
            "POST" => {
                let name = c.body["metadata"]["name"].as_str().unwrap_or("x");
                let path = format!("{}/{name}", c.path);
                if self.objects.contains_key(&path) {
                    return (409, status_error(409, "AlreadyExists", "exists"));
                }
                let mut o = c.body.clone();
                o["metadata"]["uid"] = json!(format!("uid-{}", self.rv + 1));
                o["metadata"]["creationTimestamp"] = json!("2027-01-15T08:00:00Z");
                (201, self.store(path, o))
            }
            "PUT" => {
                let Some(cur) = self.objects.get(&base) else {
                    return not_found();
                };
                let want = &c.body["metadata"]["resourceVersion"];
                if !want.is_null() && *want != cur["metadata"]["resourceVersion"] {
                    return conflict();
                }
                (200, self.store(base, c.body.clone()))
            }
            "PATCH" => self.patch(c, base, sub),
            "DELETE" => match self.objects.remove(&base) {
                Some(o) => (200, o),
                None => not_found(),
            },
            _ => not_found(),
        }
    }
}

/// One request the controller made, handed to a scripted test.
pub struct Seen {
    pub method: String,
    /// Path and query, percent-decoded.
    pub uri: String,
    pub body: Value,
    call: Call,
    store: Store,
    send: Option<SendResponse<Response<Body>>>,
}

impl Seen {
    /// Answers with `status` and `body`.
    pub fn reply(mut self, status: u16, body: Value) {
        respond(self.send.take().unwrap(), status, &body, false);
    }
    /// Answers 200 with the request's own body.
    pub fn echo(self) {
        let b = self.body.clone();
        self.reply(200, b);
    }
    /// Answers 404.
    pub fn not_found(self) {
        let (code, body) = not_found();
        self.reply(code, body);
    }
    /// Answers 409: the object changed since the version the request names.
    pub fn conflict(self) {
        let (code, body) = conflict();
        self.reply(code, body);
    }
    /// Answers from the store, as the automatic server would (and changes it so).
    pub fn apply(mut self) {
        let (code, body) = self.store.lock().unwrap().answer(&self.call);
        let log = self.call.path.ends_with("/log");
        respond(self.send.take().unwrap(), code, &body, log);
    }
}

/// The request-reading task: records each call, then answers it from the store
/// or, scripted, hands it to the test.
async fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    store: Store,
    script: Option<mpsc::UnboundedSender<Seen>>,
) {
    while let Some((req, send)) = handle.next_request().await {
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        let call = Call {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            body,
        };
        store.lock().unwrap().calls.push(call.clone());
        let seen = Seen {
            method: call.method.clone(),
            uri: decode(&parts.uri.to_string()),
            body: call.body.clone(),
            call,
            store: store.clone(),
            send: Some(send),
        };
        match &script {
            // the test is gone (it failed): the request goes unanswered
            Some(tx) => drop(tx.send(seen)),
            None => seen.apply(),
        }
    }
}

/// A context over the mock API server, an in-memory embedded ledger and a fake
/// clock at [`t0`].
pub struct Env {
    pub ctx: Arc<Context>,
    pub clock: Arc<FakeClock>,
    pub server: ApiServer,
}

fn start(config: OperatorConfig, caches: Caches, scripted: bool) -> Env {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let store = Store::default();
    let (tx, rx) = if scripted {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    tokio::spawn(serve(handle, store.clone(), tx));
    let clock = Arc::new(FakeClock::new(t0()));
    let ctx = Context::builder(Client::new(svc, "default"))
        .config(config)
        .clock(clock.clone())
        .caches(caches)
        .build();
    Env {
        ctx: Arc::new(ctx),
        clock,
        server: ApiServer { store, script: rx },
    }
}

impl Env {
    /// Scripted: reconciles the ComputeJob `job` while `script` answers the
    /// requests, in order ([`ApiServer::play`]); what both returned.
    pub async fn reconcile_job<T>(
        &mut self,
        job: ComputeJob,
        script: impl AsyncFnOnce(&mut ApiServer) -> T,
    ) -> (Result<Action, solgrid_operator::error::Error>, T) {
        let reconcile = solgrid_operator::computejob::reconcile(Arc::new(job), self.ctx.clone());
        self.server.play(reconcile, script).await
    }
}

/// Automatic: the store answers every request.
pub fn env(config: OperatorConfig) -> Env {
    start(config, Caches::default(), false)
}

/// Scripted: the test answers each request ([`ApiServer::expect`]).
pub fn scripted(config: OperatorConfig) -> Env {
    scripted_with(config, Caches::default())
}

/// [`scripted`] with reflector stores.
pub fn scripted_with(config: OperatorConfig, caches: Caches) -> Env {
    start(config, caches, true)
}

impl ApiServer {
    /// Stores `obj` at `path` (a new resourceVersion; a uid and generation if it
    /// has none).
    pub fn put(&self, path: &str, mut obj: Value) {
        let mut st = self.store.lock().unwrap();
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{}", st.rv + 1));
        }
        if obj["metadata"]["generation"].is_null() {
            obj["metadata"]["generation"] = json!(1);
        }
        st.store(path.to_string(), obj);
    }

    /// Changes the object at `path` with `f` (a new resourceVersion).
    pub fn edit(&self, path: &str, f: impl FnOnce(&mut Value)) {
        let mut o = self.get(path).expect("an object to edit");
        f(&mut o);
        self.put(path, o);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.store.lock().unwrap().objects.get(path).cloned()
    }

    pub fn set_log(&self, pod_path: &str, log: &str) {
        self.store
            .lock()
            .unwrap()
            .logs
            .insert(pod_path.to_string(), log.to_string());
    }

    /// Every request made, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.store.lock().unwrap().calls.clone()
    }

    /// The body of the first object created under `collection`.
    pub fn created(&self, collection: &str) -> Value {
        let calls = self.calls();
        let c = calls.iter().find(|c| c.is("POST", collection));
        c.unwrap_or_else(|| panic!("nothing created under {collection}"))
            .body
            .clone()
    }

    /// The calls that are neither reads nor Events.
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
        self.store.lock().unwrap().calls.clear();
    }

    /// Scripted: the next request; asserts its method and that its path (and
    /// query) starts with `uri`.
    pub async fn expect(&mut self, method: &str, uri: &str) -> Seen {
        let rx = self.script.as_mut().expect("a scripted server");
        let s = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {method} {uri}"))
            .unwrap_or_else(|| panic!("no more requests; expected {method} {uri}"));
        assert_eq!(
            s.method, method,
            "method of {} (expected {method} {uri}); body {}",
            s.uri, s.body
        );
        assert!(
            s.uri.starts_with(uri),
            "expected {method} {uri}, got {} {}; body {}",
            s.method,
            s.uri,
            s.body
        );
        s
    }

    /// Scripted: runs `reconcile` while `script` answers its requests, in order;
    /// then asserts no further request came. Returns what both returned.
    pub async fn play<R, T>(
        &mut self,
        reconcile: impl Future<Output = R>,
        script: impl AsyncFnOnce(&mut ApiServer) -> T,
    ) -> (R, T) {
        tokio::join!(reconcile, async {
            let out = script(self).await;
            self.done().await;
            out
        })
    }

    /// Scripted: asserts the controller made no further request.
    pub async fn done(&mut self) {
        let rx = self.script.as_mut().expect("a scripted server");
        if let Ok(Some(s)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            panic!("unexpected request {} {}", s.method, s.uri);
        }
    }

    /// A status patch (server-side apply, forced, our field manager); answered
    /// with the job carrying that status. Returns the applied status.
    pub async fn status_patch(&mut self, job: &ComputeJob) -> Value {
        self.status_patch_checked(job, |_| ()).await
    }

    /// As [`Self::status_patch`], running `check` on the applied status while
    /// the operator still waits for the answer (so the check cannot race what
    /// the operator does next).
    pub async fn status_patch_checked(
        &mut self,
        job: &ComputeJob,
        check: impl FnOnce(&Value),
    ) -> Value {
        let s = self.expect_status_patch().await;
        assert_eq!(s.body["apiVersion"], "solgrid.dev/v1alpha1");
        assert_eq!(s.body["kind"], "ComputeJob");
        assert_eq!(
            s.body["metadata"]["resourceVersion"], "100",
            "a compare-and-swap on the version last seen"
        );
        assert_eq!(
            s.body["status"]["observedGeneration"], 3,
            "observedGeneration in {}",
            s.body
        );
        let status = s.body["status"].clone();
        check(&status);
        let mut j = serde_json::to_value(job).unwrap();
        j["status"] = status.clone();
        s.reply(200, j);
        status
    }

    /// The job's status patch (server-side apply, forced, our field manager),
    /// left for the test to answer.
    pub async fn expect_status_patch(&mut self) -> Seen {
        let s = self
            .expect(
                "PATCH",
                &format!("/apis/solgrid.dev/v1alpha1/namespaces/{NS}/computejobs/{NAME}/status?"),
            )
            .await;
        assert!(s.uri.contains("fieldManager=solgrid-operator"), "{}", s.uri);
        assert!(s.uri.contains("force=true"), "{}", s.uri);
        s
    }

    /// A patch of the job itself (its finalizers: a JSON patch), left for the test
    /// to answer.
    pub async fn expect_job_patch(&mut self) -> Seen {
        self.expect(
            "PATCH",
            &format!("/apis/solgrid.dev/v1alpha1/namespaces/{NS}/computejobs/{NAME}?"),
        )
        .await
    }

    /// The job's finalizer patch (a JSON patch): one of its operations holds every
    /// field of `op`; answered with `job` carrying `finalizers`.
    pub async fn finalizer_patch(
        &mut self,
        job: &ComputeJob,
        op: Value,
        finalizers: Option<Vec<String>>,
    ) {
        let s = self.expect_job_patch().await;
        let ops = s.body.as_array().expect("a JSON patch");
        let want = op.as_object().unwrap();
        assert!(
            ops.iter().any(|o| want.iter().all(|(k, v)| o[k] == *v)),
            "{op} in {ops:?}"
        );
        let mut answer = job.clone();
        answer.metadata.finalizers = finalizers;
        s.reply(200, serde_json::to_value(&answer).unwrap());
    }

    /// An Event posted for the job (events.k8s.io/v1); returns (type, reason, note).
    pub async fn event(&mut self) -> (String, String, String) {
        let s = self
            .expect(
                "POST",
                &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events?"),
            )
            .await;
        assert_eq!(s.body["regarding"]["kind"], "ComputeJob");
        assert_eq!(s.body["regarding"]["name"], NAME);
        assert_eq!(s.body["reportingController"], "solgrid-operator");
        let out = (
            s.body["type"].as_str().unwrap_or_default().to_string(),
            s.body["reason"].as_str().unwrap_or_default().to_string(),
            s.body["note"].as_str().unwrap_or_default().to_string(),
        );
        s.echo();
        out
    }

    /// The worker pod list (no cache in tests); answers with `pods`.
    pub async fn list_pods(&mut self, pods: Vec<Value>) {
        let s = self
            .expect(
                "GET",
                &format!("/api/v1/namespaces/{NS}/pods?&labelSelector=solgrid.dev/job={NAME}"),
            )
            .await;
        s.reply(
            200,
            json!({"apiVersion":"v1","kind":"PodList","metadata":{"resourceVersion":"1"},"items": pods}),
        );
    }

    /// A GET of the job's payer Secret (from the job's own namespace).
    pub async fn expect_payer_secret(&mut self) -> Seen {
        self.expect(
            "GET",
            &format!("/api/v1/namespaces/{NS}/secrets/alice-wallet"),
        )
        .await
    }

    /// A GET of the job's payer Secret, answered (from the store) with a Secret
    /// holding `data`.
    pub async fn payer_secret(&mut self, data: Value) {
        self.put(
            &format!("/api/v1/namespaces/{NS}/secrets/alice-wallet"),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "alice-wallet", "namespace": NS}, "data": data}),
        );
        self.expect_payer_secret().await.apply();
    }

    /// A worker pod deleted; answered with `pod`.
    pub async fn delete_pod(&mut self, attempt: u32, index: u32, pod: Value) {
        self.expect(
            "DELETE",
            &format!("/api/v1/namespaces/{NS}/pods/{NAME}-a{attempt}-w{index}?"),
        )
        .await
        .reply(200, pod);
    }

    /// A GET of GpuNode `name`, answered with `node` (resourceVersion `rv`).
    pub async fn gpunode_get(&mut self, node: &GpuNode, rv: &str) {
        let name = node.metadata.name.clone().unwrap();
        let s = self
            .expect(
                "GET",
                &format!("/apis/solgrid.dev/v1alpha1/gpunodes/{name}"),
            )
            .await;
        let mut v = serde_json::to_value(node).unwrap();
        v["metadata"]["resourceVersion"] = rv.into();
        s.reply(200, v);
    }

    /// The job's bookkeeping on a GpuNode: a GET (answered with `node`, version
    /// "7"), then a compare-and-swap merge patch of its status carrying that
    /// version, answered `answer` (200: the merged object). Returns the GpuNode as
    /// patched (what the API server would now hold).
    pub async fn gpunode_cas_answered(&mut self, node: &GpuNode, answer: u16) -> GpuNode {
        let name = node.metadata.name.clone().unwrap();
        self.gpunode_get(node, "7").await;
        let s = self
            .expect(
                "PATCH",
                &format!("/apis/solgrid.dev/v1alpha1/gpunodes/{name}/status?"),
            )
            .await;
        assert!(
            s.uri.contains("fieldManager=solgrid-operator-jobs"),
            "{}",
            s.uri
        );
        assert_eq!(
            s.body["metadata"]["resourceVersion"], "7",
            "a compare-and-swap on the version read: {}",
            s.body
        );
        let mut v = serde_json::to_value(node).unwrap();
        merge(&mut v, &s.body);
        v["metadata"]["resourceVersion"] = "8".into();
        if answer == 409 {
            s.conflict();
        } else {
            s.reply(200, v.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    /// [`ApiServer::gpunode_cas_answered`] answered 200.
    pub async fn gpunode_cas(&mut self, node: &GpuNode) -> GpuNode {
        self.gpunode_cas_answered(node, 200).await
    }
}

// ---------------------------------------------------------------------------
// Fixtures

/// The tests' "now": 2027-01-15T08:00:00Z, in milliseconds.
pub const T0_MS: i64 = 1_800_000_000_000;

/// [`T0_MS`] as a time: where every test clock starts.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(T0_MS).unwrap()
}

/// An RFC 3339 timestamp `ms` after the epoch.
pub fn rfc(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Condition `type_` of a status (JSON).
pub fn cond<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no condition {type_} in {status}"))
}

/// The state a loop keeps in its ConfigMap (`data["state.json"]`).
pub fn configmap_state<T: serde::de::DeserializeOwned>(cm: &Value) -> T {
    serde_json::from_str(cm["data"]["state.json"].as_str().unwrap()).unwrap()
}

/// Asserts a round holds one settlement, `key`, recorded `Planned` (before
/// anything was sent).
pub fn one_planned(settlements: &[solgrid_settlement::Settlement], key: &str) {
    assert_eq!(settlements.len(), 1);
    assert_eq!(settlements[0].intent.key, key);
    let state = &settlements[0].state;
    assert!(
        matches!(state, solgrid_settlement::SettlementState::Planned),
        "{state:?}"
    );
}

/// Asserts `msg` says Secret `secret` names `wallet` without its keypair.
pub fn says_no_keypair(msg: &str, secret: &str, wallet: &str) {
    let want = format!("Secret {secret} has no keypair for wallet {wallet}");
    assert!(msg.contains(&want), "{msg}");
}

// Wallets with test keypairs (seeds 0xa1, 0xa2, 0xa3, 0xb1 repeated: public, tests
// only), so that a Secret can prove ownership (a debit needs the owner's signature).
pub const WALLET_A: &str = "DgmxzQX61DxkAMkAubrgHVJb637fYYTdh7ouVqZGnJrp";
pub const WALLET_B: &str = "7rpDt11nvidzpRJRz8UiCndE4z58YqdktV5KYYpTMQ2P";
pub const WALLET_PROV: &str = "Ce6R5jCf97nqhG7G5QRJdzQknPGyBEVYLXwVeGTb1Brp";
/// The job's payer.
pub const PAYER: &str = "5nfm4XZA9V88fZmQ218AzM4kanToFX5Z7QGrXvTZqX33";
// Provider wallets (no keypair: they are only paid).
pub const PROVIDER1: &str = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM";
pub const PROVIDER2: &str = "HN7cABqLq46Es1jh92dQQisAq662SmxELLLsHHe4YWrH";

/// The test keypair of one of the wallets above.
pub fn keypair_of(wallet: &str) -> solgrid_ledger::WalletKeypair {
    let seed = match wallet {
        WALLET_A => 0xa1,
        WALLET_B => 0xa2,
        WALLET_PROV => 0xa3,
        PAYER => 0xb1,
        other => panic!("no test keypair for {other}"),
    };
    let kp = solgrid_ledger::WalletKeypair::from_seed([seed; 32]);
    assert_eq!(kp.address(), wallet);
    kp
}

/// base64, as a Secret's `data` holds its values.
pub fn base64(b: &[u8]) -> String {
    solgrid_operator::verification::base64_encode(b)
}

/// A wallet Secret's `data`: the address and its keypair (Solana CLI JSON).
pub fn wallet_secret_data(wallet: &str) -> Value {
    json!({
        "address": base64(wallet.as_bytes()),
        "keypair": base64(keypair_of(wallet).to_solana_json().as_bytes()),
    })
}

/// Mints `amount` of `token` to `to` on the embedded ledger, under `key`.
pub fn mint(ctx: &Context, key: &str, token: Token, to: Account, amount: u64) {
    ctx.ledger
        .embedded()
        .unwrap()
        .apply(&[Intent {
            key: key.into(),
            movements: vec![Movement {
                token,
                op: Op::Mint { to, amount },
            }],
        }])
        .unwrap();
}

/// Mints `amount` IO to `wallet`.
pub fn fund(ctx: &Context, wallet: &str, amount: u64) {
    let to = Account::Wallet(wallet.into());
    mint(ctx, &format!("fund-{wallet}"), Token::Io, to, amount);
}

// The ComputeJob of the scripted tests.
pub const NS: &str = "ml-team";
pub const NAME: &str = "llama";
pub const UID: &str = "uid-1";

/// A job as the API server would hand it over.
pub fn job(workers: u32, status: Option<ComputeJobStatus>, finalizer: bool) -> ComputeJob {
    let mut j = ComputeJob::new(
        NAME,
        ComputeJobSpec {
            template: WorkerTemplate {
                image: "ghcr.io/example/train:1".into(),
                command: vec!["torchrun".into()],
                args: vec!["train.py".into()],
                env: vec![EnvVar {
                    name: "HF_HUB_OFFLINE".into(),
                    value: "1".into(),
                }],
            },
            gpus: GpuRequest {
                count: 2,
                vendor: GpuVendor::Nvidia,
                models: vec!["RTX 4090".into()],
                min_vram_mib: 0,
            },
            workers,
            max_duration_seconds: 3600,
            urgency: Urgency::Normal,
            max_price_per_gpu_hour: 1_000_000_000_000,
            payment_token: PaymentToken::Io,
            payer_secret_ref: WalletSecretRef {
                name: "alice-wallet".into(),
            },
            gang_timeout_seconds: 300,
            ..Default::default()
        },
    );
    j.metadata.namespace = Some(NS.into());
    j.metadata.uid = Some(UID.into());
    j.metadata.generation = Some(3);
    j.metadata.resource_version = Some("100".into());
    if finalizer {
        j.metadata.finalizers = Some(vec!["solgrid.dev/settlement".into()]);
    }
    j.status = status;
    j
}

/// A job's status once quoted (1000 per GPU-hour, at most 5000), not yet funded.
pub fn quoted_status() -> ComputeJobStatus {
    ComputeJobStatus {
        phase: ComputeJobPhase::Quoted,
        quote: Some(Quote {
            price_per_gpu_hour: 1000,
            max_cost: 5000,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A worker pod as the API server reports it.
pub fn pod(attempt: u32, index: u32, phase: &str, node: Option<&str>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{NAME}-a{attempt}-w{index}"),
            "namespace": NS,
            "labels": {
                "solgrid.dev/job": NAME,
                "solgrid.dev/worker": index.to_string(),
                "solgrid.dev/attempt": attempt.to_string(),
            }
        },
        "spec": {"containers": [{"name": "worker", "image": "x"}], "nodeName": node},
        "status": {"phase": phase}
    })
}

/// A GpuNode with a payout wallet.
pub fn gpunode(name: &str, wallet: &str) -> GpuNode {
    GpuNode::new(
        name,
        GpuNodeSpec {
            node_name: name.into(),
            payout_wallet: wallet.into(),
            ..Default::default()
        },
    )
}

/// A GpuNode with a payout wallet and a status.
pub fn gpunode_with(name: &str, wallet: &str, status: GpuNodeStatus) -> GpuNode {
    let mut g = gpunode(name, wallet);
    g.status = Some(status);
    g
}

/// A GpuNode cache holding `nodes`.
pub fn gpunode_cache(nodes: Vec<GpuNode>) -> Caches {
    use kube::runtime::{reflector, watcher};
    let (store, mut writer) = reflector::store();
    for n in nodes {
        writer.apply_watcher_event(&watcher::Event::Apply(n));
    }
    Caches {
        gpunodes: Some(store),
        ..Default::default()
    }
}
