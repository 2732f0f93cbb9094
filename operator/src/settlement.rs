//! The exactly-once settlement store over a ComputeJob's status.
//!
//! [`JobStore`] is the operator's one settlement store ([`crate::records`]) over
//! the job's [`JobBook`]: every store operation is one server-side apply of the job's whole status (`status.escrow` for the
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
//!
//! A settlement too large for one transaction (many provider wallets) is [`split`]
//! by the ledger's own size model (`Ledger::fits`) into parts, each an intent with
//! its own key (`<uid>/<period>`, then `<uid>/<period>/1`, ...) and its own record
//! (`record`, then `parts[]`), all recorded `Planned` in the one write that records
//! the plan. Each part is then sent and confirmed exactly once on its own
//! ([`part_intents`] rebuilds them from the recorded split), and the settlement
//! counts as confirmed only when every part is (`JobSettlement::state`).

use crate::conditions;
use crate::records::{self, Book, RecordStore, StoreError};
use chrono::{DateTime, Utc};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use solgrid_crds::{
    ComputeJob, ComputeJobStatus, JobSettlement, LedgerRecord, PaymentToken, SettlementPart,
    SettlementState as CrdState,
};
use solgrid_market::ledger::{Account, Intent, Movement, Op, Token};
use solgrid_settlement::{Settlement, SettlementState};

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

/// The idempotency key of part `part` of the settlement keyed `key` (part 0 is the
/// settlement's own key, as before settlements had parts).
pub fn part_key(key: &str, part: usize) -> String {
    if part == 0 {
        key.to_string()
    } else {
        format!("{key}/{part}")
    }
}

/// Why a settlement's parts cannot be built or used.
#[derive(Debug, thiserror::Error)]
pub enum PartsError {
    #[error(
        "settlement {key}: part {part} starts at movement {first}, not after the previous part's start and before the end ({len} movements)"
    )]
    Bounds {
        key: String,
        part: usize,
        first: u32,
        len: usize,
    },
    #[error("settlement {key}: part {part} is keyed {found:?}, not {want:?}")]
    Key {
        key: String,
        part: usize,
        found: String,
        want: String,
    },
    #[error("settlement {key}: movement {movement} does not fit in one transaction even alone")]
    TooLarge { key: String, movement: usize },
}

/// The intents of a recorded settlement, one per part (one in all when it has no
/// parts): the movements of [`settlement_intent`], cut where the recorded parts
/// start, each under its part's key. A split that does not cut the movements into
/// consecutive, non-empty pieces, or a part keyed otherwise, is refused: the parts
/// must pay exactly what the settlement does, once.
pub fn part_intents(
    s: &JobSettlement,
    payer: &str,
    t: PaymentToken,
) -> Result<Vec<Intent>, PartsError> {
    let full = settlement_intent(s, payer, t);
    if s.parts.is_empty() {
        return Ok(vec![full]);
    }
    let len = full.movements.len();
    let mut starts = vec![0usize];
    for (i, p) in s.parts.iter().enumerate() {
        let part = i + 1;
        let first = p.first_movement as usize;
        if first <= starts[i] || first >= len {
            return Err(PartsError::Bounds {
                key: s.record.key.clone(),
                part,
                first: p.first_movement,
                len,
            });
        }
        let want = part_key(&s.record.key, part);
        if p.record.key != want {
            return Err(PartsError::Key {
                key: s.record.key.clone(),
                part,
                found: p.record.key.clone(),
                want,
            });
        }
        starts.push(first);
    }
    starts.push(len);
    Ok(starts
        .windows(2)
        .enumerate()
        .map(|(i, w)| Intent {
            key: part_key(&s.record.key, i),
            movements: full.movements[w[0]..w[1]].to_vec(),
        })
        .collect())
}

/// Splits a newly planned settlement (no parts yet) into as few parts as `fits`
/// allows (the ledger's own size model: `Ledger::fits`), greedily in plan order;
/// returns it with its parts (their records `Planned`) and the parts' intents.
/// A settlement that fits one transaction is left whole.
pub fn split(
    mut js: JobSettlement,
    payer: &str,
    t: PaymentToken,
    fits: impl Fn(&Intent) -> bool,
) -> Result<(JobSettlement, Vec<Intent>), PartsError> {
    js.parts.clear();
    let full = settlement_intent(&js, payer, t);
    if fits(&full) {
        return Ok((js, vec![full]));
    }
    let base = js.record.key.clone();
    let alone = |part: usize, m: usize| {
        fits(&Intent {
            key: part_key(&base, part),
            movements: vec![full.movements[m].clone()],
        })
    };
    let mut starts = vec![0usize];
    for m in 0..full.movements.len() {
        let start = *starts.last().expect("never empty");
        let part = starts.len() - 1;
        let grown = Intent {
            key: part_key(&base, part),
            movements: full.movements[start..=m].to_vec(),
        };
        if m > start && !fits(&grown) {
            starts.push(m);
        }
        let part = starts.len() - 1;
        if *starts.last().expect("never empty") == m && !alone(part, m) {
            return Err(PartsError::TooLarge {
                key: base,
                movement: m,
            });
        }
    }
    js.parts = starts
        .iter()
        .enumerate()
        .skip(1)
        .map(|(part, &first)| SettlementPart {
            record: LedgerRecord {
                key: part_key(&base, part),
                purpose: js.record.purpose.clone(),
                ..Default::default()
            },
            first_movement: first as u32,
        })
        .collect();
    let intents = part_intents(&js, payer, t)?;
    Ok((js, intents))
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
        part_intents(s, payer, t).map_err(|e| e.to_string())?;
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

/// Errors of the job's store (the operator's one store error).
pub type JobStoreError = StoreError;

/// How the store writes the status. The real one applies it to the API server
/// (blocking on the runtime: the executor runs in `spawn_blocking`); tests may
/// write nowhere.
pub trait StatusWriter: Send {
    fn write(&mut self, status: &ComputeJobStatus) -> Result<(), StoreError>;
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
    fn write(&mut self, status: &ComputeJobStatus) -> Result<(), StoreError> {
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

/// The records of one job: its status, and how to write it.
pub struct JobBook<W: StatusWriter> {
    pub uid: String,
    pub token: PaymentToken,
    pub status: ComputeJobStatus,
    /// Settlement plans staged before `Executor::plan` (the executor records only
    /// the intent; the status keeps the usage, payouts and cost with it).
    pub staged: Vec<JobSettlement>,
    pub now: DateTime<Utc>,
    writer: W,
}

/// The settlement store of one job.
pub type JobStore<W> = RecordStore<JobBook<W>>;

/// The settlement store of the job `uid` over its `status`, written by `writer`.
pub fn job_store<W: StatusWriter>(
    uid: impl Into<String>,
    token: PaymentToken,
    status: ComputeJobStatus,
    now: DateTime<Utc>,
    writer: W,
) -> JobStore<W> {
    RecordStore::from_book(JobBook {
        uid: uid.into(),
        token,
        status,
        staged: Vec::new(),
        now,
        writer,
    })
}

impl<W: StatusWriter> JobBook<W> {
    /// The status as recorded, and the writer.
    pub fn into_parts(self) -> (ComputeJobStatus, W) {
        (self.status, self.writer)
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
            .flat_map(|s| {
                std::iter::once(&mut s.record).chain(s.parts.iter_mut().map(|p| &mut p.record))
            })
            .find(|r| r.key == key)
    }

    /// The recorded settlement that has a part keyed `key`, and that part's index.
    fn find_part(&self, key: &str) -> Option<(&JobSettlement, usize)> {
        self.status
            .settlements
            .iter()
            .find_map(|s| s.records().position(|r| r.key == key).map(|i| (s, i)))
    }

    /// The parts of a recorded settlement, each with its intent.
    fn parts_of(&self, s: &JobSettlement) -> Result<Vec<Settlement>, StoreError> {
        let intents = part_intents(s, &self.payer(), self.token)
            .map_err(|e| StoreError::Intents(e.into()))?;
        Ok(intents
            .into_iter()
            .zip(s.records())
            .map(|(intent, r)| Settlement {
                intent,
                state: records::state_of(r),
                payload: None,
            })
            .collect())
    }

    fn escrow(&self) -> Option<Settlement> {
        let r = self.status.escrow.as_ref()?;
        Some(Settlement {
            intent: escrow_intent(&self.uid, &self.status, self.token)?,
            state: records::state_of(r),
            payload: None,
        })
    }
}

impl<W: StatusWriter> Book for JobBook<W> {
    type Error = StoreError;

    fn settlements(&self) -> Result<Vec<Settlement>, StoreError> {
        let mut out: Vec<Settlement> = self.escrow().into_iter().collect();
        for s in &self.status.settlements {
            out.extend(self.parts_of(s)?);
        }
        Ok(out)
    }

    fn get(&self, key: &str) -> Result<Option<Settlement>, StoreError> {
        if key == self.escrow_key() {
            return Ok(self.escrow());
        }
        let Some((s, part)) = self.find_part(key) else {
            return Ok(None);
        };
        Ok(self.parts_of(s)?.into_iter().nth(part))
    }

    fn plan(&mut self, intent: &Intent) -> Result<(), StoreError> {
        if intent.key == self.escrow_key() {
            self.status.escrow = Some(records::planned(&intent.key, "escrow"));
            return Ok(());
        }
        // the whole plan, every part `Planned`, in this one write
        let pos = self
            .staged
            .iter()
            .position(|s| s.records().any(|r| r.key == intent.key))
            .ok_or_else(|| StoreError::NotStaged(intent.key.clone()))?;
        let mut s = self.staged.remove(pos);
        s.record = records::planned(&s.record.key, "settle");
        for p in &mut s.parts {
            p.record = records::planned(&p.record.key, "settle");
        }
        self.status.settlements.push(s);
        Ok(())
    }

    /// Only the settlements with a part unsettled (a long job's settled periods
    /// are not rebuilt every pass).
    fn unsettled(&self) -> Result<Vec<Settlement>, StoreError> {
        let mut out: Vec<Settlement> = self.escrow().into_iter().collect();
        for s in &self.status.settlements {
            if s.records().any(|r| records::state_of(r).is_unsettled()) {
                out.extend(self.parts_of(s)?);
            }
        }
        out.retain(|s| s.state.is_unsettled());
        Ok(out)
    }

    fn has(&self, key: &str) -> bool {
        (key == self.escrow_key() && self.status.escrow.is_some()) || self.find_part(key).is_some()
    }

    fn set(&mut self, key: &str, state: &SettlementState, _payload: Option<&[u8]>) {
        let now = conditions::time(self.now);
        if let Some(r) = self.record_mut(key) {
            records::apply(r, state, &now);
        }
    }

    fn write(&mut self) -> Result<(), StoreError> {
        self.writer.write(&self.status)
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

#[cfg(test)]
mod split_tests {
    use super::*;
    use solgrid_crds::{CostBreakdown, Payout};
    use solgrid_ledger::{EmbeddedConfig, EmbeddedLedger};
    use solgrid_market::ledger::Ledger;
    use solgrid_settlement::{Executor, ExecutorConfig};

    const PAYER: &str = "payer-wallet";
    const BURN: u64 = 5_000;
    const REFUND_AMOUNT: u64 = 123;

    fn wallet(i: usize) -> String {
        format!("provider-wallet-{i:03}")
    }

    fn paid(i: usize) -> u64 {
        1_000_000 + i as u64
    }

    /// The final settlement of a job that ran on `n` nodes, each its own wallet.
    fn settlement(n: usize) -> JobSettlement {
        let mut payouts: Vec<Payout> = (0..n)
            .map(|i| Payout {
                to: format!("gpu-{i:03}"),
                wallet: wallet(i),
                amount: paid(i),
            })
            .collect();
        payouts.push(Payout {
            to: REFUND.into(),
            wallet: PAYER.into(),
            amount: REFUND_AMOUNT,
        });
        JobSettlement {
            record: LedgerRecord {
                key: "job-uid/0".into(),
                purpose: "settle".into(),
                ..Default::default()
            },
            payouts,
            cost: CostBreakdown {
                burned: BURN,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn ledger() -> EmbeddedLedger {
        EmbeddedLedger::in_memory(EmbeddedConfig::default()).unwrap()
    }

    fn fits(l: &EmbeddedLedger) -> impl Fn(&Intent) -> bool + '_ {
        |i| l.fits(std::slice::from_ref(i))
    }

    #[test]
    fn a_small_settlement_stays_one_transaction() {
        let l = ledger();
        let (js, intents) = split(settlement(2), PAYER, PaymentToken::Io, fits(&l)).unwrap();
        assert!(js.parts.is_empty());
        assert_eq!(intents.len(), 1);
        assert_eq!(intents[0], settlement_intent(&js, PAYER, PaymentToken::Io));
        assert_eq!(part_intents(&js, PAYER, PaymentToken::Io).unwrap(), intents);
    }

    #[test]
    fn forty_wallets_split_by_the_ledgers_size_model() {
        let l = ledger();
        let whole = settlement(40);
        let full = settlement_intent(&whole, PAYER, PaymentToken::Io);
        assert!(!l.fits(std::slice::from_ref(&full)), "40 payouts in one tx");
        let (js, intents) = split(whole, PAYER, PaymentToken::Io, fits(&l)).unwrap();
        assert!(intents.len() >= 3, "{} parts", intents.len());
        assert_eq!(js.parts.len() + 1, intents.len());
        // keys: the settlement's own, then /1, /2, ...
        let keys: Vec<&str> = intents.iter().map(|i| i.key.as_str()).collect();
        let want: Vec<String> = (0..intents.len())
            .map(|p| part_key("job-uid/0", p))
            .collect();
        assert_eq!(keys, want.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(want[1], "job-uid/0/1");
        let recorded: Vec<&str> = js.records().map(|r| r.key.as_str()).collect();
        assert_eq!(recorded, keys);
        // every part fits, and is as large as the model allows (greedy)
        for (k, i) in intents.iter().enumerate() {
            assert!(l.fits(std::slice::from_ref(i)), "part {k} fits");
            if let Some(next) = intents.get(k + 1) {
                let mut grown = i.clone();
                grown.movements.push(next.movements[0].clone());
                assert!(!l.fits(std::slice::from_ref(&grown)), "part {k} is full");
            }
        }
        // together they are exactly the settlement: nothing twice, nothing lost
        let joined: Vec<_> = intents
            .iter()
            .flat_map(|i| i.movements.iter().cloned())
            .collect();
        assert_eq!(joined, full.movements);
        let outflow: u128 = intents.iter().map(escrow_outflow).sum();
        assert_eq!(outflow, escrow_outflow(&full));
        // and the recorded split rebuilds them
        assert_eq!(part_intents(&js, PAYER, PaymentToken::Io).unwrap(), intents);
        // the CRD form round-trips, and a status without parts reads as before
        let v = serde_json::to_value(&js).unwrap();
        assert_eq!(v["parts"][0]["record"]["key"], "job-uid/0/1");
        assert!(v["parts"][0]["firstMovement"].as_u64().unwrap() > 0);
        let back: JobSettlement = serde_json::from_value(v).unwrap();
        assert_eq!(back, js);
        let old = serde_json::to_value(settlement(2)).unwrap();
        assert!(old.get("parts").is_none());
    }

    #[test]
    fn a_tampered_split_is_refused() {
        let l = ledger();
        let (js, _) = split(settlement(40), PAYER, PaymentToken::Io, fits(&l)).unwrap();
        let status = ComputeJobStatus {
            payer_wallet: Some(PAYER.into()),
            ..Default::default()
        };
        // a part that starts where the previous one did would pay its movements twice
        let mut twice = js.clone();
        twice.parts[1].first_movement = twice.parts[0].first_movement;
        assert!(matches!(
            part_intents(&twice, PAYER, PaymentToken::Io),
            Err(PartsError::Bounds { part: 2, .. })
        ));
        let err = check_escrow_cap(&status, &[twice], PaymentToken::Io).unwrap_err();
        assert!(err.contains("part 2"), "{err}");
        // a part past the end
        let mut past = js.clone();
        past.parts.last_mut().unwrap().first_movement = 10_000;
        assert!(part_intents(&past, PAYER, PaymentToken::Io).is_err());
        // a part under another key (another settlement's, say)
        let mut rekeyed = js.clone();
        rekeyed.parts[0].record.key = "job-uid/1".into();
        assert!(matches!(
            part_intents(&rekeyed, PAYER, PaymentToken::Io),
            Err(PartsError::Key { part: 1, .. })
        ));
        // a movement that fits nowhere cannot be split
        let err = split(settlement(40), PAYER, PaymentToken::Io, |_| false).unwrap_err();
        assert!(matches!(err, PartsError::TooLarge { movement: 0, .. }));
    }

    /// Keeps what was written last; at write number `crash_at` the process dies:
    /// before the write reached the API server, or (`persisted`) after.
    struct Crashing {
        writes: usize,
        crash_at: usize,
        persisted: bool,
        saved: ComputeJobStatus,
    }

    impl StatusWriter for Crashing {
        fn write(&mut self, st: &ComputeJobStatus) -> Result<(), JobStoreError> {
            self.writes += 1;
            if self.writes == self.crash_at {
                if self.persisted {
                    self.saved = st.clone();
                }
                return Err(JobStoreError::Write("injected crash".into()));
            }
            self.saved = st.clone();
            Ok(())
        }
    }

    /// One operator process over the status `saved`: stages the plan (as
    /// `step_settle` does while it is not recorded), then settles until done,
    /// letting unseen transactions expire (as `execute` does on the embedded
    /// ledger). Returns the status it left and whether it crashed.
    fn run(
        l: &EmbeddedLedger,
        saved: ComputeJobStatus,
        js: &JobSettlement,
        crash_at: usize,
        persisted: bool,
    ) -> (ComputeJobStatus, bool, usize) {
        let writer = Crashing {
            writes: 0,
            crash_at,
            persisted,
            saved: saved.clone(),
        };
        let mut store = job_store("job-uid", PaymentToken::Io, saved, Utc::now(), writer);
        if store.status.settlements.is_empty() {
            store.staged = vec![js.clone()];
        }
        let intents = part_intents(js, PAYER, PaymentToken::Io).unwrap();
        let mut exec = Executor::new(l, &mut store, ExecutorConfig::default());
        let mut crashed = exec.plan(&intents).is_err();
        let mut txs = 0;
        for _ in 0..8 {
            if crashed {
                break;
            }
            match exec.settle_pass() {
                Ok(r) => {
                    txs += r.txs();
                    if r.remaining == 0 {
                        break;
                    }
                    l.tick(l.config().validity_window + 1).unwrap();
                }
                Err(_) => crashed = true,
            }
        }
        let (_, w) = store.into_book().into_parts();
        (w.saved, crashed, txs)
    }

    #[test]
    fn a_crash_at_any_write_pays_every_part_exactly_once() {
        let probe = ledger();
        let (js, intents) = split(settlement(40), PAYER, PaymentToken::Io, fits(&probe)).unwrap();
        let parts = intents.len();
        let total: u64 = (0..40).map(paid).sum::<u64>() + BURN + REFUND_AMOUNT;
        // one write for the plan, two per part (Sent, Confirmed)
        let writes = 1 + 2 * parts;
        let mut mid_way_seen = false;
        for crash_at in 1..=writes + 1 {
            for persisted in [false, true] {
                let l = ledger();
                l.apply(&[Intent {
                    key: "fund-escrow".into(),
                    movements: vec![solgrid_market::ledger::Movement {
                        token: Token::Io,
                        op: Op::Mint {
                            to: Account::Escrow,
                            amount: total,
                        },
                    }],
                }])
                .unwrap();
                let supply = l.supply(Token::Io).unwrap();
                let status = ComputeJobStatus {
                    payer_wallet: Some(PAYER.into()),
                    ..Default::default()
                };
                let (saved, crashed, _) = run(&l, status, &js, crash_at, persisted);
                assert_eq!(crashed, crash_at <= writes, "crash at write {crash_at}");
                if let Some(s) = saved.settlements.first() {
                    let states: Vec<CrdState> = s.records().map(|r| r.state).collect();
                    // part 0 confirmed and part 1 sent when the process died
                    mid_way_seen |= states[0] == CrdState::Confirmed
                        && states[1] == CrdState::Sent
                        && states[2..].iter().all(|s| *s == CrdState::Planned);
                    assert_ne!(s.state(), CrdState::Failed);
                    if states.iter().any(|s| *s != CrdState::Confirmed) {
                        assert_ne!(s.state(), CrdState::Confirmed, "all or nothing");
                    }
                }
                // the restarted operator: from what the API server holds
                let (after, crashed_again, _) = run(&l, saved, &js, 0, false);
                assert!(!crashed_again);
                let s = &after.settlements[0];
                assert_eq!(s.state(), CrdState::Confirmed, "crash at {crash_at}");
                let counts = l.confirmed_key_counts();
                for i in &intents {
                    assert_eq!(
                        counts.get(&i.key),
                        Some(&1),
                        "{} confirmed once (crash at write {crash_at}, persisted {persisted})",
                        i.key
                    );
                }
                for i in 0..40 {
                    let got = l.balance(&Account::Wallet(wallet(i)), Token::Io).unwrap();
                    assert_eq!(got, paid(i), "provider {i} paid exactly once");
                }
                let refund = l.balance(&Account::Wallet(PAYER.into()), Token::Io);
                assert_eq!(refund.unwrap(), REFUND_AMOUNT);
                assert_eq!(l.balance(&Account::Escrow, Token::Io).unwrap(), 0);
                assert_eq!(supply - l.supply(Token::Io).unwrap(), BURN);
            }
        }
        assert!(
            mid_way_seen,
            "a crash left part 0 confirmed and part 1 sent"
        );
    }
}
