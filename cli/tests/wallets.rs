//! `kubectl solgrid wallet new|address` and `kubectl solgrid fund` against a small
//! stateful fake API server (plain HTTP on loopback, named by a kubeconfig), which
//! plays the operator too: a LedgerGrant it stores is reported executed (or
//! unsupported, as on Solana) on the next read.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const GRANTS: &str = "/apis/solgrid.dev/v1alpha1/ledgergrants";

#[derive(Default)]
struct Fake {
    objects: BTreeMap<String, Value>,
    /// `Executed` (embedded ledger) or `Unsupported` (Solana).
    grant_phase: String,
    seq: u64,
    posts: Vec<String>,
}

fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":reason,"reason":reason,"code":code}),
    )
}

fn handle(f: &mut Fake, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    match method {
        "POST" => {
            f.posts.push(path.to_string());
            let mut o: Value = serde_json::from_slice(body).unwrap();
            let name = match o["metadata"]["name"].as_str() {
                Some(n) => n.to_string(),
                None => {
                    f.seq += 1;
                    let n = format!(
                        "{}{:05}",
                        o["metadata"]["generateName"].as_str().unwrap_or("x-"),
                        f.seq
                    );
                    o["metadata"]["name"] = json!(n);
                    n
                }
            };
            let key = format!("{path}/{name}");
            if f.objects.contains_key(&key) {
                return status(409, "AlreadyExists");
            }
            f.seq += 1;
            o["metadata"]["uid"] = json!(format!("uid-{}", f.seq));
            o["metadata"]["resourceVersion"] = json!(f.seq.to_string());
            f.objects.insert(key, o.clone());
            (201, o)
        }
        "GET" => {
            let phase = f.grant_phase.clone();
            let Some(o) = f.objects.get_mut(path) else {
                return status(404, "NotFound");
            };
            if path.starts_with(GRANTS) && o.get("status").is_none() {
                // the operator's turn
                let uid = o["metadata"]["uid"].as_str().unwrap().to_string();
                o["status"] = if phase == "Executed" {
                    json!({"phase":"Executed","key":format!("grant/{uid}"),"signature":"5igNaTuRe",
                           "ledgerSeq":3,"executedAt":"2026-12-02T03:00:00Z","message":"minted"})
                } else {
                    json!({"phase":"Unsupported","message":"the operator settles on Solana"})
                };
                // first read after create: still pending
                return (200, {
                    let mut p = o.clone();
                    p.as_object_mut().unwrap().remove("status");
                    p
                });
            }
            (200, o.clone())
        }
        _ => status(405, "MethodNotAllowed"),
    }
}

fn serve(grant_phase: &str) -> (u16, Arc<Mutex<Fake>>) {
    let fake = Arc::new(Mutex::new(Fake {
        grant_phase: grant_phase.to_string(),
        ..Default::default()
    }));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let f = fake.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some(req) = support::read_request(&stream) else {
                continue;
            };
            let (code, value) = handle(&mut f.lock().unwrap(), &req.method, &req.path, &req.body);
            support::respond(&mut stream, &format!("{code} X"), &value.to_string());
        }
    });
    (port, fake)
}

fn kubeconfig(dir: &Path, port: u16) -> PathBuf {
    support::kubeconfig(dir, port, "ml-team")
}

fn run(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-solgrid"))
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("HOME", "/nonexistent")
        .args(args)
        .output()
        .unwrap()
}

fn out(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn b64d(s: &str) -> Vec<u8> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut v = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | T.iter().position(|&t| t == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            v.push((bits >> n) as u8);
        }
    }
    v
}

#[test]
fn wallet_new_creates_a_keypair_secret_and_prints_only_the_address() {
    let (port, fake) = serve("Executed");
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), port);
    let o = run(&kc, &["wallet", "new", "--secret", "alice-wallet"]);
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let address = stdout.trim().to_string();
    assert!((32..=44).contains(&address.len()), "{stdout}");
    // in the kubeconfig's namespace, with the address and its keypair
    let secret = fake
        .lock()
        .unwrap()
        .objects
        .get("/api/v1/namespaces/ml-team/secrets/alice-wallet")
        .cloned()
        .expect("the Secret was created");
    assert_eq!(
        b64d(secret["data"]["address"].as_str().unwrap()),
        address.as_bytes()
    );
    let kp = b64d(secret["data"]["keypair"].as_str().unwrap());
    let kp = solgrid_ledger::WalletKeypair::from_secret_bytes(&kp).unwrap();
    assert_eq!(kp.address(), address);
    assert!(
        !stdout.contains('[') && !stderr.contains('['),
        "no keypair printed"
    );

    // `wallet address` reads it back
    let o = run(&kc, &["wallet", "address", "--secret", "alice-wallet"]);
    assert!(o.status.success());
    assert_eq!(out(&o).0.trim(), address);

    // a wallet Secret is never replaced
    let o = run(
        &kc,
        &["-n", "ml-team", "wallet", "new", "--secret", "alice-wallet"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(out(&o).1.contains("already exists"), "{:?}", out(&o));
    let again =
        fake.lock().unwrap().objects["/api/v1/namespaces/ml-team/secrets/alice-wallet"].clone();
    assert_eq!(again, secret);
}

#[test]
fn wallet_new_dry_run_prints_a_manifest_and_creates_nothing() {
    let (port, fake) = serve("Executed");
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), port);
    let o = run(
        &kc,
        &[
            "-n",
            "team-b",
            "wallet",
            "new",
            "--secret",
            "w",
            "--dry-run",
        ],
    );
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stdout.contains("kind: Secret") && stdout.contains("namespace: team-b"),
        "{stdout}"
    );
    assert!(stderr.contains("holds the wallet's keypair"), "{stderr}");
    assert!(fake.lock().unwrap().posts.is_empty());
}

#[test]
fn fund_creates_a_ledger_grant_and_waits_until_it_is_executed() {
    let (port, fake) = serve("Executed");
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), port);
    let wallet = solgrid_ledger::WalletKeypair::from_seed([5; 32]).address();
    let o = run(
        &kc,
        &[
            "fund",
            "--wallet",
            &wallet,
            "--token",
            "IO",
            "--amount",
            "1000000000000",
        ],
    );
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("funded: LedgerGrant fund-"), "{stdout}");
    assert!(
        stdout.contains("5igNaTuRe") && stdout.contains("journal #3"),
        "{stdout}"
    );
    let f = fake.lock().unwrap();
    assert_eq!(f.posts, vec![GRANTS.to_string()]);
    let (_, g) = f
        .objects
        .iter()
        .find(|(k, _)| k.starts_with(GRANTS))
        .unwrap();
    assert_eq!(
        g["spec"],
        json!({"wallet": wallet, "token": "IO", "amount": 1_000_000_000_000u64})
    );
    assert_eq!(g["apiVersion"], "solgrid.dev/v1alpha1");
    assert_eq!(g["kind"], "LedgerGrant");
}

#[test]
fn fund_with_a_name_never_funds_twice() {
    let (port, fake) = serve("Executed");
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), port);
    let wallet = solgrid_ledger::WalletKeypair::from_seed([6; 32]).address();
    let args = [
        "fund",
        "--wallet",
        &wallet,
        "--amount",
        "42",
        "--name",
        "seed-alice",
    ];
    assert!(run(&kc, &args).status.success());
    let o = run(&kc, &args);
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("not funding twice"), "{stderr}");
    assert!(
        stdout.contains("funded: LedgerGrant seed-alice"),
        "{stdout}"
    );
    let grants = fake
        .lock()
        .unwrap()
        .objects
        .keys()
        .filter(|k| k.starts_with(GRANTS))
        .count();
    assert_eq!(grants, 1);
    // the same name for another amount is refused
    let o = run(
        &kc,
        &[
            "fund",
            "--wallet",
            &wallet,
            "--amount",
            "43",
            "--name",
            "seed-alice",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(out(&o).1.contains("choose another --name"));
}

#[test]
fn fund_on_solana_says_unsupported() {
    let (port, _fake) = serve("Unsupported");
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), port);
    let wallet = solgrid_ledger::WalletKeypair::from_seed([7; 32]).address();
    let o = run(&kc, &["fund", "--wallet", &wallet, "--amount", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).1.contains("unsupported"), "{:?}", out(&o));
}

#[test]
fn fund_refuses_a_bad_wallet_or_token_before_calling_the_cluster() {
    let (port, fake) = serve("Executed");
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), port);
    let o = run(&kc, &["fund", "--wallet", "alice", "--amount", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(out(&o).1.contains("not a wallet address"), "{:?}", out(&o));
    let w = solgrid_ledger::WalletKeypair::from_seed([8; 32]).address();
    let o = run(
        &kc,
        &["fund", "--wallet", &w, "--token", "SOL", "--amount", "1"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(out(&o).1.contains("unknown token"));
    assert!(fake.lock().unwrap().posts.is_empty());
}
