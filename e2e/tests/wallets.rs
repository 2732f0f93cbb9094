//! Wallet ownership on the real control plane ([`solgrid_e2e::cluster::shared`]),
//! with the operator's ComputeJob and LedgerGrant controllers in-process over an
//! embedded ledger (the default ledger):
//!
//! - funding is an admin action: a tenant with the chart's requester role cannot
//!   create a LedgerGrant; the admin's grant is minted exactly once, and a lost
//!   status (or a restarted controller) does not mint it again;
//! - a tenant whose Secret names another tenant's wallet — by address alone, or with
//!   its own keypair under that address — funds nothing, with a clear condition;
//! - the owner's own Secret (address + keypair) funds the owner's job.

use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use solgrid_crds::{ComputeJob, LedgerGrant, LedgerGrantPhase};
use solgrid_e2e::cluster::{TestCluster, shared};
use solgrid_e2e::*;
use solgrid_ledger::WalletKeypair;
use solgrid_market::ledger::{Account, Ledger as _, Token};
use solgrid_operator::context::{Context, LedgerHandle};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const IO: u64 = 1_000_000_000;

/// The chart's tenant ClusterRoles (`helm template --show-only templates/tenants/rbac.yaml`).
fn chart_tenant_roles() -> Result<Vec<ClusterRole>> {
    let helm = solgrid_e2e::chart::helm_bin()?;
    let out = Command::new(&helm)
        .args(["template", "solgrid"])
        .arg(solgrid_e2e::chart::chart_dir())
        .args(["--namespace", "solgrid-system"])
        .args(["--show-only", "templates/tenants/rbac.yaml"])
        .output()
        .with_context(|| format!("running {} template", helm.display()))?;
    if !out.status.success() {
        return Err(anyhow!(
            "helm template: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    solgrid_e2e::chart::documents(&String::from_utf8(out.stdout)?)?
        .into_iter()
        .filter(|v| v["kind"] == "ClusterRole")
        .map(|v| Ok(serde_json::from_value(v)?))
        .collect()
}

/// A ServiceAccount `name` in `ns` bound to the chart's `solgrid-requester` role, and
/// a client with its token.
async fn requester(tc: &TestCluster, admin: &Client, ns: &str, name: &str) -> Result<Client> {
    let pp = PatchParams::apply("solgrid-e2e-wallets").force();
    for role in chart_tenant_roles()? {
        Api::<ClusterRole>::all(admin.clone())
            .patch(&role.name_any(), &pp, &Patch::Apply(&role))
            .await?;
    }
    solgrid_e2e::chart::tenant_client(tc, admin, ns, name, "solgrid-requester").await
}

fn wallet_secret(ns: &str, name: &str, address: &str, keypair: Option<&WalletKeypair>) -> Secret {
    let mut data = json!({"address": address});
    if let Some(kp) = keypair {
        data["keypair"] = kp.to_solana_json().into();
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": data,
    }))
    .unwrap()
}

/// The example job in `ns`, paying from Secret `secret`, with a budget the default
/// market meets (it is only funded here, never scheduled).
fn job(ns: &str, name: &str, secret: &str) -> ComputeJob {
    let (_, mut j) = llm_example(ns, &["true"]).expect("the example job");
    j["metadata"]["name"] = name.into();
    j["spec"]["payerSecretRef"]["name"] = secret.into();
    j["spec"]["maxPricePerGpuHour"] = json!(1_000_000_000_000u64);
    j["spec"]["minReputation"] = 0.into();
    serde_json::from_value(j).unwrap()
}

/// The job's Funded condition once it is `(status, reason)`, within 60 s.
async fn funded_condition(jobs: &Api<ComputeJob>, name: &str, reason: &str) -> Result<Value> {
    wait_for(Duration::from_secs(60), || async {
        let j = jobs.get(name).await.ok()?;
        let st = serde_json::to_value(j.status?).ok()?;
        st["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Funded" && c["reason"] == reason)
            .cloned()
    })
    .await
    .ok_or_else(|| anyhow!("job {name}: no Funded condition {reason} in 60 s"))
}

/// Creates `secret` with `secrets` and job `name` (in the Secret's namespace) paying
/// from it with `jobs`; the job's Funded condition once it is `reason`.
async fn fund_from(
    secrets: &Api<Secret>,
    jobs: &Api<ComputeJob>,
    secret: &Secret,
    name: &str,
    reason: &str,
) -> Value {
    secrets
        .create(&PostParams::default(), secret)
        .await
        .unwrap();
    let ns = secret.namespace().unwrap();
    jobs.create(&PostParams::default(), &job(&ns, name, &secret.name_any()))
        .await
        .unwrap();
    funded_condition(jobs, name, reason).await.unwrap()
}

async fn grant_phase(api: &Api<LedgerGrant>, name: &str) -> Result<LedgerGrant> {
    wait_for(Duration::from_secs(60), || async {
        let g = api.get(name).await.ok()?;
        (g.status.as_ref()?.phase != LedgerGrantPhase::Pending).then_some(g)
    })
    .await
    .ok_or_else(|| anyhow!("LedgerGrant {name} not executed in 60 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funding_is_admin_only_exactly_once_and_a_wallet_moves_only_with_its_keypair() {
    let Some(tc) = shared() else {
        return;
    };
    let _guard = tc.exclusive().await;
    let admin = tc.client().await.expect("admin client");
    install_crds(&admin).await.expect("CRDs installed");
    let team_a = namespace(&admin, "wallets-a").await.unwrap();
    let team_b = namespace(&admin, "wallets-b").await.unwrap();
    wait_default_sa(&admin, &team_a).await.unwrap();
    wait_default_sa(&admin, &team_b).await.unwrap();

    // the operator's controllers, in-process, over an embedded ledger
    let ledger = Arc::new(LedgerHandle::in_memory());
    let ctx = Arc::new(
        Context::builder(admin.clone())
            .ledger(ledger.clone())
            .build(),
    );
    let mut grants_ctl = tokio::spawn(solgrid_operator::grant::run(ctx.clone()));
    let jobs_ctl = tokio::spawn(solgrid_operator::computejob::run(ctx.clone()));
    let balance = |w: &str| {
        ledger
            .balance(&Account::Wallet(w.to_string()), Token::Io)
            .unwrap()
    };

    let alice_kp = WalletKeypair::generate().unwrap();
    let alice = alice_kp.address();
    let mallory_kp = WalletKeypair::generate().unwrap();
    let alice_client = requester(tc, &admin, &team_a, "alice").await.unwrap();
    let mallory_client = requester(tc, &admin, &team_b, "mallory").await.unwrap();

    // 1. a tenant cannot fund itself: no tenant role has LedgerGrants
    let grant: LedgerGrant = serde_json::from_value(json!({
        "apiVersion": "solgrid.dev/v1alpha1", "kind": "LedgerGrant",
        "metadata": {"generateName": "e2e-wallets-"},
        "spec": {"wallet": mallory_kp.address(), "token": "IO", "amount": 1_000 * IO},
    }))
    .unwrap();
    match Api::<LedgerGrant>::all(mallory_client.clone())
        .create(&PostParams::default(), &grant)
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("a tenant created a LedgerGrant: {other:?}"),
    }

    // 2. the admin funds alice, exactly once
    let grants: Api<LedgerGrant> = Api::all(admin.clone());
    let mut g = grant.clone();
    g.spec.wallet = alice.clone();
    let created = grants.create(&PostParams::default(), &g).await.unwrap();
    let gname = created.name_any();
    let done = grant_phase(&grants, &gname).await.unwrap();
    let st = done.status.clone().unwrap();
    assert_eq!(st.phase, LedgerGrantPhase::Executed, "{st:?}");
    assert_eq!(st.key, Some(format!("grant/{}", created.uid().unwrap())));
    assert!(st.signature.is_some() && st.executed_at.is_some());
    assert_eq!(balance(&alice), 1_000 * IO);
    // the spec is immutable
    let edit = grants
        .patch(
            &gname,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"amount": 2_000 * IO}})),
        )
        .await;
    assert!(
        matches!(&edit, Err(kube::Error::Api(e)) if e.message.contains("immutable")),
        "{edit:?}"
    );
    // the status is lost and the controller restarts: nothing is minted again
    grants_ctl.abort();
    grants
        .patch_status(
            &gname,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": null})),
        )
        .await
        .unwrap();
    grants_ctl = tokio::spawn(solgrid_operator::grant::run(ctx.clone()));
    let again = grant_phase(&grants, &gname).await.unwrap();
    let st2 = again.status.unwrap();
    assert_eq!(st2.phase, LedgerGrantPhase::Executed);
    assert_eq!(st2.signature, st.signature, "the same ledger transaction");
    assert_eq!(balance(&alice), 1_000 * IO);
    let key = st.key.clone().unwrap();
    assert_eq!(
        ledger.embedded().unwrap().confirmed_key_counts()[&key],
        1,
        "minted exactly once"
    );

    // 3. mallory (team-b) names alice's wallet: by address alone...
    let secrets_b: Api<Secret> = Api::namespaced(mallory_client.clone(), &team_b);
    let jobs_b: Api<ComputeJob> = Api::namespaced(mallory_client.clone(), &team_b);
    let stolen = wallet_secret(&team_b, "stolen", &alice, None);
    let c = fund_from(&secrets_b, &jobs_b, &stolen, "heist", "PayerSecretInvalid").await;
    assert_eq!(c["status"], "False");
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("Secret stolen has no keypair for wallet {alice}")),
        "{msg}"
    );
    // ...or with her own keypair under alice's address
    let forged = wallet_secret(&team_b, "forged", &alice, Some(&mallory_kp));
    let c = fund_from(
        &secrets_b,
        &jobs_b,
        &forged,
        "heist-2",
        "PayerSecretInvalid",
    )
    .await;
    assert!(
        c["message"].as_str().unwrap().contains("does not match"),
        "{c}"
    );
    assert_eq!(balance(&alice), 1_000 * IO, "nothing left alice's wallet");
    assert_eq!(
        ledger.balance(&Account::Escrow, Token::Io).unwrap(),
        0,
        "nothing reached the escrow"
    );

    // 4. alice's own Secret (address + keypair) funds alice's job
    let secrets_a: Api<Secret> = Api::namespaced(alice_client.clone(), &team_a);
    let jobs_a: Api<ComputeJob> = Api::namespaced(alice_client.clone(), &team_a);
    let own = wallet_secret(&team_a, "alice-wallet", &alice, Some(&alice_kp));
    let c = fund_from(&secrets_a, &jobs_a, &own, "honest", "EscrowConfirmed").await;
    assert_eq!(c["status"], "True");
    let escrowed = jobs_a.get("honest").await.unwrap().status.unwrap().escrowed;
    assert!(escrowed > 0);
    assert_eq!(balance(&alice), 1_000 * IO - escrowed);
    assert_eq!(
        ledger.balance(&Account::Escrow, Token::Io).unwrap(),
        escrowed
    );

    grants_ctl.abort();
    jobs_ctl.abort();
    delete_namespace(&admin, &team_a).await;
    delete_namespace(&admin, &team_b).await;
}
