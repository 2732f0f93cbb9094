//! The chart as shipped runs the market under its own identities: its
//! ServiceAccounts, RBAC and admission policies (`helm template`, applied as they
//! render), the real `solgrid-operator` and `solgrid-scheduler` binaries each with
//! a token of the chart's own ServiceAccount, the node's inventory written with the
//! device-plugin token bound to a pod on that node, and the job submitted by a
//! tenant holding only the chart's `solgrid-requester` role. The example job goes
//! to `Settled`: the RBAC and the policies are proven by use, not by reading.

use super::*;
use solgrid_crds::ComputeJobPhase;
use solgrid_e2e::market::{Market as Fixture, MarketOpts};

/// The chart's namespaced Roles and RoleBindings (leader election, the operator's
/// own state, node leases), which the trust scenarios do not need.
fn rendered_roles() -> Result<Vec<Value>> {
    let out = Command::new(helm()?)
        .args(["template", "solgrid"])
        .arg(root().join("helm/solgrid"))
        .args(["--namespace", NS])
        .output()
        .context("running helm template")?;
    anyhow::ensure!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(std::str::from_utf8(&out.stdout)?) {
        let v: Value = serde::Deserialize::deserialize(de)?;
        if matches!(v["kind"].as_str(), Some("Role" | "RoleBinding")) {
            docs.push(v);
        }
    }
    Ok(docs)
}

async fn kubeconfig_of(m: &Market, sa: &str) -> Result<PathBuf> {
    let token = service_account_token(&m.admin, NS, sa, None).await?;
    m.tc.kubeconfig_for_token(sa, &token)
}

#[tokio::test]
async fn the_chart_as_shipped_runs_a_job_under_its_own_service_accounts() {
    let Some(m) = market().await else {
        return;
    };
    if !m.tc.is_local() {
        eprintln!("SKIP: needs the local control plane (simulated nodes at 127.0.1.x)");
        return;
    }
    let _one = m.tc.exclusive().await;
    for d in rendered_roles().expect("roles") {
        apply(&m.admin, &d).await.expect("role applied");
    }
    let payer = example("computejob-llm-finetune.yaml").unwrap()[0]["stringData"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut opts = MarketOpts::new("e2e-chart", &[("e2e-chart-a", 1), ("e2e-chart-b", 1)]);
    opts.operator_kubeconfig = Some(kubeconfig_of(&m, OPERATOR_SA).await.expect("operator"));
    opts.extender_kubeconfig = Some(
        kubeconfig_of(&m, "solgrid-scheduler")
            .await
            .expect("scheduler"),
    );
    opts.lease_name = Some("solgrid-operator".into());
    opts.publish_inventory = false;
    let f = Fixture::up(m.tc, opts, &payer).await.expect("market");

    // the inventory, with the device-plugin token bound to a pod on each node
    for node in ["e2e-chart-a", "e2e-chart-b"] {
        let token = node_token(&m, node).await.expect("node token");
        let dp = m.tc.client_for_token(&token).await.expect("node client");
        Api::<GpuNode>::all(dp)
            .patch_status(
                node,
                &ssa("solgrid-device-plugin"),
                &Patch::Apply(inventory(node, 1)),
            )
            .await
            .expect("the node's own inventory, with its own token");
    }
    f.wait_active(&["e2e-chart-a", "e2e-chart-b"], Duration::from_secs(120))
        .await
        .expect("Active");

    // a tenant with the requester role submits the example
    let alice = tenant(&m, &f.ns, "alice", "solgrid-requester")
        .await
        .expect("tenant");
    let (secret, job) = f.example(&["sleep", "3"]).expect("example");
    apply_as(&alice, &secret)
        .await
        .expect("the tenant's Secret");
    let cj: ComputeJob = serde_json::from_value(job.clone()).unwrap();
    Api::<ComputeJob>::namespaced(alice.clone(), &f.ns)
        .create(&PostParams::default(), &cj)
        .await
        .expect("the tenant's job");
    let before = f.balances(&payer).unwrap().payer;
    let name = job["metadata"]["name"].as_str().unwrap().to_string();
    let st = f
        .wait_job(&name, Duration::from_secs(120), |st| {
            st.phase == ComputeJobPhase::Settled
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let b = f.balances(&payer).unwrap();
    assert_eq!(b.payer, before - st.cost.paid);
    assert_eq!(b.escrow, 0);
    assert!(st.cost.received > 0);
    f.confirmed_once().expect("exactly once");
    for p in f.operators.iter().chain(std::iter::once(&f.extender)) {
        let log = p.log_tail(200_000);
        assert!(
            !log.contains("forbidden") && !log.contains("Forbidden"),
            "{} was refused something under the chart's RBAC:\n{}",
            p.name(),
            p.log_tail(4000)
        );
    }
    f.down().await;
}
