//! Money in the simulator goes through the same path as the operator's settlement
//! controller: intents planned by the market library, executed exactly once by the
//! `solgrid-ledger` executor against a [`Ledger`] (the embedded ledger, in memory).
//!
//! The bank is generic over the ledger, so swapping in another implementation of
//! the trait is one type parameter. The executor runs on a worker thread: the
//! simulation hands it each hour's intents ([`Bank::flush`]) and goes on computing the
//! next hour while they settle, in order, one batch at a time (the market's numbers
//! never depend on the ledger's answers, so the result is the same as running them
//! inline; a settlement that fails is a bug and stops the run at the next flush).

use solgrid_ledger::{Executor, ExecutorConfig, MemoryStore};
use solgrid_market::ledger::{Account, Amount, Intent, Ledger, Movement, Op, Token};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

/// A failure of the money path (these end the simulation: they are bugs).
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("settlement executor: {0}")]
    Executor(String),
    #[error("ledger: {0}")]
    Ledger(String),
    #[error("settlement {key} failed: {reason}")]
    Failed { key: String, reason: String },
}

/// What one batch did.
#[derive(Clone, Debug, Default)]
struct BatchReport {
    txs: u64,
    confirmed: u64,
    failed: Vec<(String, String)>,
}

fn settle_batch<L: Ledger>(
    ledger: &L,
    config: &ExecutorConfig,
    intents: Vec<Intent>,
) -> Result<BatchReport, String> {
    // Every batch is final when settle returns (the embedded ledger confirms on
    // send), so a fresh store per batch holds the exactly-once records for as long
    // as they matter here; the operator keeps them in the objects' status.
    let mut store = MemoryStore::new().keep_payloads(false);
    let mut exec = Executor::new(ledger, &mut store, config.clone());
    let report = exec.settle(&intents, 8).map_err(|e| e.to_string())?;
    if report.remaining > 0 {
        return Err(format!("{} intents still unsettled", report.remaining));
    }
    Ok(BatchReport {
        txs: report.txs() as u64,
        confirmed: report.confirmed as u64,
        failed: report.failed,
    })
}

/// The ledger, its settlement worker, and the intents waiting for the next flush.
pub struct Bank<L: Ledger + 'static> {
    ledger: Arc<L>,
    pending: Vec<Intent>,
    to_worker: Option<Sender<Vec<Intent>>>,
    from_worker: Receiver<Result<BatchReport, String>>,
    worker: Option<JoinHandle<()>>,
    in_flight: usize,
    /// Transactions sent, intents confirmed, intents failed.
    pub txs: u64,
    pub confirmed: u64,
    pub failed: Vec<(String, String)>,
}

impl<L: Ledger + 'static> Bank<L> {
    pub fn new(ledger: L) -> Self {
        let ledger = Arc::new(ledger);
        let (to_worker, batches) = channel::<Vec<Intent>>();
        let (results, from_worker) = channel();
        let worker_ledger = Arc::clone(&ledger);
        let worker = std::thread::Builder::new()
            .name("settlement".into())
            .spawn(move || {
                let config = ExecutorConfig {
                    poll: Duration::ZERO,
                    ..ExecutorConfig::default()
                };
                for intents in batches {
                    if results
                        .send(settle_batch(&*worker_ledger, &config, intents))
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .expect("spawning the settlement worker");
        Bank {
            ledger,
            pending: Vec::new(),
            to_worker: Some(to_worker),
            from_worker,
            worker: Some(worker),
            in_flight: 0,
            txs: 0,
            confirmed: 0,
            failed: Vec::new(),
        }
    }

    /// The ledger. Call [`Bank::sync`] first to see every flushed intent applied.
    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// Queues an intent for the next [`Bank::flush`] (empty intents are dropped).
    pub fn submit(&mut self, intent: Intent) {
        if !intent.movements.is_empty() {
            self.pending.push(intent);
        }
    }

    fn collect_one(&mut self) -> Result<(), BankError> {
        let r = self
            .from_worker
            .recv()
            .map_err(|_| BankError::Executor("settlement worker stopped".into()))?
            .map_err(BankError::Executor)?;
        self.in_flight -= 1;
        self.txs += r.txs;
        self.confirmed += r.confirmed;
        self.failed.extend(r.failed.iter().cloned());
        if let Some((key, reason)) = r.failed.into_iter().next() {
            return Err(BankError::Failed { key, reason });
        }
        Ok(())
    }

    /// Hands everything queued to the settlement worker, after collecting the
    /// previous batch (at most one batch settles while the simulation computes).
    pub fn flush(&mut self) -> Result<(), BankError> {
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.to_worker
            .as_ref()
            .ok_or_else(|| BankError::Executor("bank closed".into()))?
            .send(batch)
            .map_err(|_| BankError::Executor("settlement worker stopped".into()))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Flushes and waits until everything handed over is settled.
    pub fn sync(&mut self) -> Result<(), BankError> {
        self.flush()?;
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        Ok(())
    }

    pub fn balance(&self, account: &Account, token: Token) -> Result<Amount, BankError> {
        self.ledger
            .balance(account, token)
            .map_err(|e| BankError::Ledger(e.to_string()))
    }

    pub fn supply(&self, token: Token) -> Result<Amount, BankError> {
        self.ledger
            .supply(token)
            .map_err(|e| BankError::Ledger(e.to_string()))
    }

    /// Splits operations into intents that each fit in one transaction, keys `"{prefix}/{n}"`.
    pub fn chunked(
        &self,
        prefix: &str,
        movements: impl IntoIterator<Item = Movement>,
    ) -> Vec<Intent> {
        let mut out = Vec::new();
        let mut cur = Intent {
            key: format!("{prefix}/0"),
            movements: Vec::new(),
        };
        for m in movements {
            cur.movements.push(m);
            if cur.movements.len() > 1 && !self.ledger.fits(std::slice::from_ref(&cur)) {
                let last = cur.movements.pop().expect("just pushed");
                let n = out.len() + 1;
                out.push(std::mem::replace(
                    &mut cur,
                    Intent {
                        key: format!("{prefix}/{n}"),
                        movements: vec![last],
                    },
                ));
            }
        }
        if !cur.movements.is_empty() {
            out.push(cur);
        }
        out
    }

    /// One `token` movement per non-zero amount (`op` of each), chunked to fit.
    fn chunked_nonzero<T>(
        &self,
        prefix: &str,
        token: Token,
        amounts: &[(T, Amount)],
        op: impl Fn(&T, Amount) -> Op,
    ) -> Vec<Intent> {
        self.chunked(
            prefix,
            amounts
                .iter()
                .filter(|(_, a)| *a > 0)
                .map(|(x, a)| Movement {
                    token,
                    op: op(x, *a),
                }),
        )
    }

    /// Transfers out of `from`, chunked to fit (zero amounts left out).
    pub fn chunked_transfers(
        &self,
        prefix: &str,
        token: Token,
        from: &Account,
        payouts: &[(String, Amount)],
    ) -> Vec<Intent> {
        self.chunked_nonzero(prefix, token, payouts, |w, amount| Op::Transfer {
            from: from.clone(),
            to: Account::Wallet(w.clone()),
            amount,
        })
    }

    /// Mints (genesis), chunked to fit (zero amounts left out).
    pub fn chunked_mints(
        &self,
        prefix: &str,
        token: Token,
        mints: &[(Account, Amount)],
    ) -> Vec<Intent> {
        self.chunked_nonzero(prefix, token, mints, |to, amount| Op::Mint {
            to: to.clone(),
            amount,
        })
    }
}

impl<L: Ledger + 'static> Drop for Bank<L> {
    fn drop(&mut self) {
        self.to_worker.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
