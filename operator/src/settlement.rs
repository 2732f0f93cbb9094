//! The exactly-once settlement store over a ComputeJob's status.
//!
//! [`JobStore`] implements `solgrid_ledger::SettlementStore`: every store operation
//! is one server-side apply of the job's whole status (`status.escrow` for the
//! escrow funding, `status.settlements[].record` for each period), so the plan and
//! its key are in the API server before anything is sent, and the signature with
//! its last valid block height before the transaction is sent. After a restart the
//! executor reads them back from the status (the object the reconcile got) and
//! looks the signature up.
//!
//! The store keeps no transaction payloads (the status is no place for them): a
//! recorded transaction that was never seen is rebuilt once its last valid block
//! height has passed.
//!
//! The intents are not stored as such: they are rebuilt from the recorded plan
//! ([`escrow_intent`] from the quote; [`settlement_intent`] from the payouts and the
//! cost breakdown), in exactly the order `solgrid_market::settlement` builds them.

use crate::conditions;
use chrono::{DateTime, Utc};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use solgrid_crds::{
    ComputeJob, ComputeJobStatus, JobSettlement, LedgerRecord, PaymentToken,
    SettlementState as CrdState,
};
use solgrid_ledger::settle::{Settlement, SettlementState, SettlementStore};
use solgrid_market::ledger::{Account, Intent, Movement, Op, Token};

/// `to` of the refund line in `JobSettlement::payouts`.
pub const REFUND: &str = "refund";

/// The escrow intent of a job, rebuilt from its status (`None` until quoted and
/// the payer known).
pub fn escrow_intent(uid: &str, status: &ComputeJobStatus, t: PaymentToken) -> Option<Intent> {
    let quote = status.quote.as_ref()?;
    let payer = status.payer_wallet.as_deref()?;
    Some(solgrid_market::settlement::escrow_intent(
        uid,
        payer,
        Token::from(t),
        quote.max_cost,
    ))
}

/// The intent of a recorded settlement: provider transfers (one per `payouts`
/// line that is not the refund), the burn, the treasury transfer, the refund.
pub fn settlement_intent(s: &JobSettlement, payer: &str, t: PaymentToken) -> Intent {
    let token = Token::from(t);
    let mut movements = Vec::with_capacity(s.payouts.len() + 2);
    for p in s.payouts.iter().filter(|p| p.to != REFUND) {
        movements.push(Movement {
            token,
            op: Op::Transfer {
                from: Account::Escrow,
                to: Account::Wallet(p.wallet.clone()),
                amount: p.amount,
            },
        });
    }
    if s.cost.burned > 0 {
        movements.push(Movement {
            token,
            op: Op::Burn {
                from: Account::Escrow,
                amount: s.cost.burned,
            },
        });
    }
    if s.cost.to_treasury > 0 {
        movements.push(Movement {
            token,
            op: Op::Transfer {
                from: Account::Escrow,
                to: Account::Treasury,
                amount: s.cost.to_treasury,
            },
        });
    }
    if let Some(r) = s.payouts.iter().find(|p| p.to == REFUND)
        && r.amount > 0
    {
        movements.push(Movement {
            token,
            op: Op::Transfer {
                from: Account::Escrow,
                to: Account::Wallet(payer.to_string()),
                amount: r.amount,
            },
        });
    }
    Intent {
        key: s.record.key.clone(),
        movements,
    }
}

/// What an intent takes out of the shared escrow account.
pub fn escrow_outflow(intent: &Intent) -> u128 {
    intent
        .movements
        .iter()
        .map(|m| match &m.op {
            Op::Transfer {
                from: Account::Escrow,
                amount,
                ..
            }
            | Op::Burn {
                from: Account::Escrow,
                amount,
            } => u128::from(*amount),
            _ => 0,
        })
        .sum()
}

/// Checks a job's settlements before any is sent: together (recorded and newly
/// planned) they never take more out of the shared escrow than the job's own escrow
/// put in, and they pay only the providers the job ran on (their wallets as
/// snapshotted when it started) and the payer (the refund).
///
/// The executor rebuilds the intents from the status, so this is what stands
/// between a status that says more (a bug, or a writer that should not have been
/// able to write it) and the escrow that other jobs' money sits in.
pub fn check_escrow_cap(
    status: &ComputeJobStatus,
    staged: &[JobSettlement],
    t: PaymentToken,
) -> Result<(), String> {
    let payer = status.payer_wallet.as_deref().unwrap_or_default();
    let escrowed = match (&status.escrow, &status.quote) {
        (Some(r), Some(q)) if r.state == CrdState::Confirmed => u128::from(q.max_cost),
        _ => 0,
    };
    // the wallets snapshotted at the start; a job started by an older operator has
    // none, and then its usage lines name them
    let mut providers: std::collections::BTreeSet<&str> = status
        .workers
        .iter()
        .filter_map(|w| w.payout_wallet.as_deref())
        .collect();
    if providers.is_empty() {
        providers = status
            .settlements
            .iter()
            .chain(staged)
            .flat_map(|s| s.usage.iter().map(|u| u.wallet.as_str()))
            .collect();
    }
    let mut out = 0u128;
    for s in status.settlements.iter().chain(staged) {
        for p in s.payouts.iter().filter(|p| p.to != REFUND) {
            if !providers.contains(p.wallet.as_str()) {
                return Err(format!(
                    "settlement {} pays {} to {}, which is not a provider of this job",
                    s.record.key, p.amount, p.wallet
                ));
            }
        }
        out += escrow_outflow(&settlement_intent(s, payer, t));
    }
    if out > escrowed {
        return Err(format!(
            "the settlements take {out} out of escrow but the job escrowed {escrowed}"
        ));
    }
    Ok(())
}

fn to_exec_state(r: &LedgerRecord) -> SettlementState {
    match r.state {
        CrdState::Planned => SettlementState::Planned,
        CrdState::Sent => match (&r.signature, r.last_valid_block_height) {
            (Some(sig), Some(h)) => SettlementState::Sent {
                signature: sig.clone(),
                last_valid_block_height: h,
            },
            // A record without its signature was never sent.
            _ => SettlementState::Planned,
        },
        CrdState::Confirmed => SettlementState::Confirmed {
            signature: r.signature.clone().unwrap_or_default(),
        },
        CrdState::Failed => SettlementState::Failed {
            signature: r.signature.clone(),
            reason: r.error.clone().unwrap_or_default(),
        },
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    #[error("writing the status: {0}")]
    Kube(#[from] kube::Error),
    #[error("unknown settlement key {0:?}")]
    UnknownKey(String),
    #[error("no staged plan for key {0:?}")]
    NotStaged(String),
    #[error("serializing the status: {0}")]
    Serde(#[from] serde_json::Error),
}

/// How the store writes the status. The real one applies it to the API server
/// (blocking on the runtime: the executor runs in `spawn_blocking`); tests may
/// write nowhere.
pub trait StatusWriter: Send {
    fn write(&mut self, status: &ComputeJobStatus) -> Result<(), JobStoreError>;
}

/// Applies the whole status with server-side apply (field manager, force), as a
/// compare-and-swap on `resource_version` (updated from each response).
pub struct ApiWriter {
    pub api: Api<ComputeJob>,
    pub name: String,
    pub field_manager: String,
    pub handle: tokio::runtime::Handle,
    pub resource_version: Option<String>,
}

/// The server-side-apply body of a ComputeJob status. With `resource_version` the
/// apply is a compare-and-swap: it fails with 409 Conflict when the job changed
/// since that version, so a writer working from a stale copy (a lagging cache, or a
/// replica that lost the lease) can never record a second transaction for a
/// settlement another writer already recorded.
pub fn status_patch(
    status: &ComputeJobStatus,
    resource_version: Option<&str>,
) -> serde_json::Value {
    let mut body = json!({
        "apiVersion": solgrid_crds::API_VERSION,
        "kind": "ComputeJob",
        "status": crate::kstatus::computejob(status),
    });
    if let Some(rv) = resource_version {
        body["metadata"] = json!({ "resourceVersion": rv });
    }
    body
}

impl StatusWriter for ApiWriter {
    fn write(&mut self, status: &ComputeJobStatus) -> Result<(), JobStoreError> {
        let body = status_patch(status, self.resource_version.as_deref());
        let pp = PatchParams::apply(&self.field_manager).force();
        let api = self.api.clone();
        let name = self.name.clone();
        let updated = self
            .handle
            .block_on(async move { api.patch_status(&name, &pp, &Patch::Apply(&body)).await })?;
        self.resource_version = updated.metadata.resource_version;
        Ok(())
    }
}

/// The settlement store of one job: its status, and how to write it.
pub struct JobStore<W: StatusWriter> {
    pub uid: String,
    pub token: PaymentToken,
    pub status: ComputeJobStatus,
    /// Settlement plans staged before `Executor::plan` (the executor records only
    /// the intent; the status keeps the usage, payouts and cost with it).
    pub staged: Vec<JobSettlement>,
    pub now: DateTime<Utc>,
    writer: W,
}

impl<W: StatusWriter> JobStore<W> {
    pub fn new(
        uid: impl Into<String>,
        token: PaymentToken,
        status: ComputeJobStatus,
        now: DateTime<Utc>,
        writer: W,
    ) -> Self {
        Self {
            uid: uid.into(),
            token,
            status,
            staged: Vec::new(),
            now,
            writer,
        }
    }

    fn escrow_key(&self) -> String {
        format!("{}/escrow", self.uid)
    }

    fn payer(&self) -> String {
        self.status.payer_wallet.clone().unwrap_or_default()
    }

    fn record_mut(&mut self, key: &str) -> Option<&mut LedgerRecord> {
        if key == self.escrow_key() {
            return self.status.escrow.as_mut();
        }
        self.status
            .settlements
            .iter_mut()
            .find(|s| s.record.key == key)
            .map(|s| &mut s.record)
    }

    fn update(
        &mut self,
        keys: &[String],
        f: impl Fn(&mut LedgerRecord),
    ) -> Result<(), JobStoreError> {
        for k in keys {
            if self.record_mut(k).is_none() {
                return Err(JobStoreError::UnknownKey(k.clone()));
            }
        }
        for k in keys {
            if let Some(r) = self.record_mut(k) {
                f(r);
            }
        }
        self.writer.write(&self.status)
    }

    /// The writer (tests).
    pub fn into_parts(self) -> (ComputeJobStatus, W) {
        (self.status, self.writer)
    }
}

impl<W: StatusWriter> SettlementStore for JobStore<W> {
    type Error = JobStoreError;

    fn record_plan(&mut self, intent: &Intent) -> Result<(), JobStoreError> {
        let record = LedgerRecord {
            key: intent.key.clone(),
            purpose: String::new(),
            state: CrdState::Planned,
            ..Default::default()
        };
        if intent.key == self.escrow_key() {
            self.status.escrow = Some(LedgerRecord {
                purpose: "escrow".into(),
                ..record
            });
        } else {
            let pos = self
                .staged
                .iter()
                .position(|s| s.record.key == intent.key)
                .ok_or_else(|| JobStoreError::NotStaged(intent.key.clone()))?;
            let mut s = self.staged.remove(pos);
            s.record = LedgerRecord {
                purpose: "settle".into(),
                ..record
            };
            self.status.settlements.push(s);
        }
        self.writer.write(&self.status)
    }

    fn record_sent(
        &mut self,
        keys: &[String],
        signature: &str,
        last_valid_block_height: u64,
        _payload: &[u8],
    ) -> Result<(), JobStoreError> {
        self.update(keys, |r| {
            r.state = CrdState::Sent;
            r.signature = Some(signature.to_string());
            r.last_valid_block_height = Some(last_valid_block_height);
            r.error = None;
        })
    }

    fn record_confirmed(&mut self, keys: &[String], signature: &str) -> Result<(), JobStoreError> {
        let now = conditions::time(self.now);
        self.update(keys, |r| {
            r.state = CrdState::Confirmed;
            r.signature = Some(signature.to_string());
            r.confirmed_at = Some(now.clone());
            r.error = None;
        })
    }

    fn record_failed(
        &mut self,
        keys: &[String],
        signature: Option<&str>,
        reason: &str,
    ) -> Result<(), JobStoreError> {
        self.update(keys, |r| {
            r.state = CrdState::Failed;
            if let Some(s) = signature {
                r.signature = Some(s.to_string());
            }
            r.error = Some(reason.chars().take(512).collect());
        })
    }

    fn record_replan(&mut self, keys: &[String]) -> Result<(), JobStoreError> {
        self.update(keys, |r| {
            r.state = CrdState::Planned;
            r.signature = None;
            r.last_valid_block_height = None;
            r.error = None;
        })
    }

    fn get(&self, key: &str) -> Result<Option<Settlement>, JobStoreError> {
        let payer = self.payer();
        if key == self.escrow_key() {
            return Ok(
                match (
                    &self.status.escrow,
                    escrow_intent(&self.uid, &self.status, self.token),
                ) {
                    (Some(r), Some(intent)) => Some(Settlement {
                        intent,
                        state: to_exec_state(r),
                        payload: None,
                    }),
                    _ => None,
                },
            );
        }
        Ok(self
            .status
            .settlements
            .iter()
            .find(|s| s.record.key == key)
            .map(|s| Settlement {
                intent: settlement_intent(s, &payer, self.token),
                state: to_exec_state(&s.record),
                payload: None,
            }))
    }

    fn unsettled(&self) -> Result<Vec<Settlement>, JobStoreError> {
        let mut out = Vec::new();
        if let Some(r) = &self.status.escrow
            && let Some(s) = self.get(&r.key)?
            && s.state.is_unsettled()
        {
            out.push(s);
        }
        let payer = self.payer();
        for s in &self.status.settlements {
            let state = to_exec_state(&s.record);
            if state.is_unsettled() {
                out.push(Settlement {
                    intent: settlement_intent(s, &payer, self.token),
                    state,
                    payload: None,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod cap_tests {
    use super::*;
    use solgrid_crds::{Payout, Quote, WorkerStatus};

    fn record(key: &str, state: CrdState) -> LedgerRecord {
        LedgerRecord {
            key: key.into(),
            state,
            ..Default::default()
        }
    }

    fn settled(key: &str, to_provider: u64, burned: u64, refund: u64) -> JobSettlement {
        JobSettlement {
            record: record(key, CrdState::Planned),
            payouts: vec![
                Payout {
                    to: "gpu-a".into(),
                    wallet: "PROV".into(),
                    amount: to_provider,
                },
                Payout {
                    to: REFUND.into(),
                    wallet: "PAYER".into(),
                    amount: refund,
                },
            ],
            cost: solgrid_crds::CostBreakdown {
                burned,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn status(max_cost: u64) -> ComputeJobStatus {
        ComputeJobStatus {
            payer_wallet: Some("PAYER".into()),
            escrow: Some(record("u/escrow", CrdState::Confirmed)),
            quote: Some(Quote {
                max_cost,
                ..Default::default()
            }),
            workers: vec![WorkerStatus {
                node: Some("gpu-a".into()),
                payout_wallet: Some("PROV".into()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn settlements_never_take_more_than_the_jobs_escrow() {
        let st = status(1_000);
        assert!(check_escrow_cap(&st, &[settled("u/0", 600, 10, 390)], PaymentToken::Io).is_ok());
        // one unit more than was escrowed
        let err =
            check_escrow_cap(&st, &[settled("u/0", 600, 10, 391)], PaymentToken::Io).unwrap_err();
        assert!(err.contains("1001") && err.contains("1000"), "{err}");
        // a planted second record counts too
        let mut planted = st.clone();
        planted.settlements.push(settled("u/0", 600, 10, 390));
        assert!(
            check_escrow_cap(&planted, &[settled("u/final", 1, 0, 0)], PaymentToken::Io).is_err()
        );
        // nothing escrowed (not confirmed): nothing may leave
        let mut unfunded = st.clone();
        unfunded.escrow = Some(record("u/escrow", CrdState::Sent));
        assert!(check_escrow_cap(&unfunded, &[settled("u/0", 1, 0, 0)], PaymentToken::Io).is_err());
    }

    #[test]
    fn only_the_jobs_providers_are_paid() {
        let st = status(1_000);
        let mut s = settled("u/0", 100, 0, 0);
        s.payouts[0].wallet = "ATTACKER".into();
        let err = check_escrow_cap(&st, &[s], PaymentToken::Io).unwrap_err();
        assert!(err.contains("ATTACKER"), "{err}");
    }
}
