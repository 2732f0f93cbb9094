//! The proof of work on the real control plane (issue 14, item 3): every GPU of a
//! node challenged by UUID, timed by the operator, sized from the claimed model.
//!
//! What is real and what is simulated: the operator, the API server, the pods, the
//! log reads through the (simulated) kubelet and the reference worker's work are
//! real; the "GPUs" are this machine's CPU. The scenario measures the CPU's speed
//! with the worker binary and sets `--verify-reference-us` so that the CPU is 8x
//! an Apple M1 as the market's speed table has it (the slowest model: the widest
//! margin on both sides on a loaded machine, where every simulated node computes on
//! the same two cores). Then:
//! - `e2e-vpow-honest` (2 GPUs) claims Apple M1s: its chains are sized for an M1,
//!   the CPU computes them in about an eighth of the target: it passes;
//! - `e2e-vpow-cpu` (published once the honest nodes are Active, so that their
//!   first runs do not share the CPU with it) claims an H100 (40x an M1): its chain
//!   is sized for an H100, the same CPU genuinely needs ~5x the target for it, far
//!   past the 1.5x + slack limit; it also reports a 0 ms container run and a worker
//!   `computeMs` of 0, which the operator does not believe: it is slashed as too slow,
//!   and the StakePosition backing it (locked before it cheated) is slashed exactly
//!   once: half its stake burned from the stake vault, the rest still locked;
//! - `e2e-vpow-idle` claims an Apple M1 and passes, then keeps its verification pods
//!   from ever starting: after `--verify-expire-after=2` inconclusive periods it
//!   loses `verified` (condition `Verified` reason `Expired`), is no longer eligible
//!   for idle rewards, and is not slashed.

use super::held_cluster;
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use solgrid_crds::{
    GpuNode, GpuNodePhase, GpuNodeStatus, SettlementState as RecState, StakePhase, StakePosition,
};
use solgrid_e2e::market::{Market, MarketOpts, example_payer, read_journal};
use solgrid_e2e::{wait_for, workspace_bin};
use solgrid_market::ledger::{Account, Ledger as _, Token};
use solgrid_market::staking::StakingConfig;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const HONEST: &str = "e2e-vpow-honest";
const CPU: &str = "e2e-vpow-cpu";
const IDLE: &str = "e2e-vpow-idle";
const SIZE: usize = 32;
const TARGET_MS: u64 = 4_000;
const MIN: Duration = Duration::from_secs(60);

/// Microseconds of one SIZE-product with the worker binary on this machine
/// (best of three runs of 300 products, process start included).
fn cpu_us_per_product() -> f64 {
    let bin = workspace_bin("solgrid-operator").expect("the operator binary");
    let rounds = 300u32;
    (0..3)
        .map(|_| {
            let t = Instant::now();
            let out = std::process::Command::new(&bin)
                .args(["verify-worker", "--size", &SIZE.to_string(), "--device"])
                .arg(format!("cal:1:{rounds}:1"))
                .output()
                .expect("verify-worker runs");
            assert!(out.status.success());
            t.elapsed().as_secs_f64() * 1e6 / rounds as f64
        })
        .fold(f64::MAX, f64::min)
}

/// Publishes a node's inventory as its device plugin would: `gpus` devices of
/// `model` with UUIDs (the simulated kubelet runs pods bound to it whatever GPU
/// resource they request).
async fn publish(m: &Market, node: &str, gpus: u32, vendor: &str, model: &str, vram_mib: u64) {
    let devices: Vec<serde_json::Value> = (0..gpus)
        .map(|i| {
            serde_json::json!({
                "id": format!("{node}-{i}"), "uuid": format!("GPU-{node}-{i}"),
                "vendor": vendor, "model": model, "vramMib": vram_mib, "health": "Healthy",
            })
        })
        .collect();
    Api::<GpuNode>::all(m.client.clone())
        .patch_status(
            node,
            &PatchParams::apply("solgrid-device-plugin").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": solgrid_crds::API_VERSION, "kind": "GpuNode",
                "metadata": {"name": node},
                "status": {"gpus": devices, "gpuCount": gpus, "model": model,
                           "lastHeartbeat": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
            })),
        )
        .await
        .expect("inventory");
}

async fn status(api: &Api<GpuNode>, node: &str) -> Option<GpuNodeStatus> {
    api.get(node).await.ok()?.status
}

fn verified_cond(st: &GpuNodeStatus) -> (String, String, String) {
    st.conditions
        .iter()
        .find(|c| c.type_ == "Verified")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_claiming_an_h100_fails_and_an_unverifiable_node_expires() {
    let Some((tc, _one)) = held_cluster("verification_pow").await else {
        return;
    };
    let t0 = Instant::now();
    let cpu_us = cpu_us_per_product();
    // an Apple M1 (60 per mille of a 4090) is taken to need 8x the CPU's time
    let reference_us = ((8.0 * cpu_us * 60.0 / 1000.0).round() as u64).max(1);
    eprintln!("CPU: {cpu_us:.1} us per {SIZE}-product -> --verify-reference-us={reference_us}");
    let mut opts = MarketOpts::new("e2e-vpow", &[(HONEST, 2), (CPU, 1), (IDLE, 1)]);
    opts.publish_inventory = false;
    opts.operator_args = vec![
        "--verification-interval-seconds=5".into(),
        format!("--verify-size={SIZE}"),
        format!("--verify-reference-size={SIZE}"),
        format!("--verify-reference-us={reference_us}"),
        format!("--verify-target-ms={TARGET_MS}"),
        "--verify-slack-ms=1000".into(),
        "--verify-tolerance-pct=150".into(),
        "--verify-expire-after=2".into(),
        "--verify-max-matrices=4".into(),
        "--verify-deadline-seconds=60".into(),
    ];
    let payer = example_payer();
    let m = Market::up(tc, opts, &payer).await.expect("market");
    m.sim
        .faults(CPU)
        .expect("cpu node")
        .forge_fast_timestamps
        .store(true, Ordering::SeqCst);
    publish(&m, HONEST, 2, "apple", "Apple M1", 8_192).await;
    publish(&m, IDLE, 1, "apple", "Apple M1", 8_192).await;
    let api: Api<GpuNode> = Api::all(m.client.clone());

    // the honest node and the idle one pass (both of the honest node's GPUs reported)
    m.wait_active(&[HONEST, IDLE], 2 * MIN)
        .await
        .expect("the honest nodes pass");
    let st = status(&api, HONEST).await.expect("status");
    assert!(st.verification.verified && st.verification.passed >= 1);
    eprintln!("honest Active after {:.1} s", t0.elapsed().as_secs_f64());
    // a stake backs the CPU node before it cheats
    let staked = m.stake(CPU).await.expect("a stake on the CPU node");
    let amount = staked.spec.amount;
    let ledger = read_journal(&m.journal).expect("journal");
    let (vault0, supply0) = (
        ledger.balance(&Account::StakeVault, Token::Io).unwrap(),
        ledger.supply(Token::Io).unwrap(),
    );
    publish(&m, CPU, 1, "nvidia", "NVIDIA H100 80GB HBM3", 81_559).await;

    // the CPU claiming an H100: too slow by the operator's clock, slashed
    let cheat = wait_for(MIN, || async {
        let st = status(&api, CPU).await?;
        (st.phase == GpuNodePhase::Slashed).then_some(st)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{}",
            m.with_logs("the CPU posing as an H100 was not slashed".into())
        )
    });
    let (s, reason, msg) = verified_cond(&cheat);
    assert_eq!((s.as_str(), reason.as_str()), ("False", "TooSlow"), "{msg}");
    assert!(!cheat.verification.verified && cheat.verification.failed >= 1);
    assert_eq!(cheat.verification.passed, 0);
    eprintln!(
        "cheat slashed after {:.1} s: {msg}",
        t0.elapsed().as_secs_f64()
    );

    // its stake: slashed once, by the market's share, burned on the ledger
    let stakes: Api<StakePosition> = Api::namespaced(m.client.clone(), &m.ns);
    let slashed = wait_for(MIN, || async {
        let p = stakes.get(&staked.name_any()).await.ok()?;
        (p.status.as_ref()?.phase == StakePhase::Slashed).then_some(p)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{}",
            m.with_logs("the CPU node's stake was not slashed".into())
        )
    });
    let burn =
        (u128::from(amount) * u128::from(StakingConfig::default().slash_bps)).div_ceil(10_000);
    let burn = u64::try_from(burn).expect("fits");
    let st = slashed.status.clone().expect("status");
    assert_eq!(st.slashed_amount, burn, "{st:?}");
    assert_eq!(st.locked, amount - burn, "{st:?}");
    let slashes: Vec<_> = st
        .operations
        .iter()
        .filter(|r| r.purpose == "slash")
        .collect();
    assert_eq!(
        slashes.len(),
        1,
        "one slash for one incident: {:?}",
        st.operations
    );
    assert_eq!(slashes[0].state, RecState::Confirmed);
    let ledger = read_journal(&m.journal).expect("journal");
    assert_eq!(
        ledger.balance(&Account::StakeVault, Token::Io).unwrap(),
        vault0 - burn,
        "burned from the stake vault"
    );
    assert_eq!(
        ledger.supply(Token::Io).unwrap(),
        supply0 - burn,
        "burned, not moved"
    );
    m.confirmed_once().expect("every key confirmed once");
    eprintln!("stake slashed: {burn} of {amount} burned");

    // the idle node stops letting its verification pods run: expires after 2 periods
    m.sim
        .faults(IDLE)
        .expect("idle node")
        .hold_verification
        .store(true, Ordering::SeqCst);
    let held = Instant::now();
    let expired = wait_for(MIN, || async {
        let st = status(&api, IDLE).await?;
        (!st.verification.verified).then_some(st)
    })
    .await
    .unwrap_or_else(|| panic!("{}", m.with_logs("the idle node kept `verified`".into())));
    let (s, reason, msg) = verified_cond(&expired);
    assert_eq!((s.as_str(), reason.as_str()), ("False", "Expired"), "{msg}");
    assert!(expired.verification.inconclusive >= 2);
    assert_eq!(expired.verification.failed, 0, "not cheating");
    assert_ne!(expired.phase, GpuNodePhase::Slashed);
    assert!(!expired.reward_eligible);
    eprintln!(
        "idle node expired {:.1} s after holding its pods ({msg})",
        held.elapsed().as_secs_f64()
    );
    // the honest node is still verified (it kept passing every period)
    let st = status(&api, HONEST).await.expect("status");
    assert!(st.verification.verified, "{:?}", st.verification);
    assert_eq!(st.verification.failed, 0);
    m.down().await;
    eprintln!("verification scenario: {:.1} s", t0.elapsed().as_secs_f64());
}
