//! Money in the simulator goes through the same path as the operator's settlement
//! controller: intents planned by the market library, executed exactly once by the
//! `solgrid-ledger` executor against a [`Ledger`] (the embedded ledger, in memory).
//!
//! The bank is generic over the ledger, so swapping in another implementation of
//! the trait is one type parameter.

use solgrid_ledger::{Executor, ExecutorConfig, MemoryStore};
use solgrid_market::ledger::{Account, Amount, Intent, Ledger, Movement, Op, Token};
use std::time::Duration;

/// A failure of the money path (these end the simulation: they are bugs).
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("settlement executor: {0}")]
    Executor(String),
    #[error("ledger: {0}")]
    Ledger(String),
}

/// The ledger, the settlement store, and the intents waiting for the next flush.
pub struct Bank<L: Ledger> {
    ledger: L,
    store: MemoryStore,
    config: ExecutorConfig,
    pending: Vec<Intent>,
    /// Transactions sent, intents confirmed, intents failed.
    pub txs: u64,
    pub confirmed: u64,
    pub failed: Vec<(String, String)>,
}

impl<L: Ledger> Bank<L> {
    pub fn new(ledger: L) -> Self {
        let config = ExecutorConfig {
            poll: Duration::ZERO,
            ..ExecutorConfig::default()
        };
        Bank {
            ledger,
            store: MemoryStore::new().keep_payloads(false),
            config,
            pending: Vec::new(),
            txs: 0,
            confirmed: 0,
            failed: Vec::new(),
        }
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// Queues an intent for the next [`Bank::flush`] (empty intents are dropped).
    pub fn submit(&mut self, intent: Intent) {
        if !intent.movements.is_empty() {
            self.pending.push(intent);
        }
    }

    /// Plans and settles everything queued, exactly once; returns the keys that failed.
    pub fn flush(&mut self) -> Result<Vec<(String, String)>, BankError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let intents = std::mem::take(&mut self.pending);
        let mut exec = Executor::new(&self.ledger, &mut self.store, self.config.clone());
        let report = exec
            .settle(&intents, 8)
            .map_err(|e| BankError::Executor(e.to_string()))?;
        if report.remaining > 0 {
            return Err(BankError::Executor(format!(
                "{} intents still unsettled",
                report.remaining
            )));
        }
        self.txs += report.txs() as u64;
        self.confirmed += report.confirmed as u64;
        self.failed.extend(report.failed.iter().cloned());
        // Everything is final (confirmed or failed): the records have done their job
        // (the operator keeps them in the objects' status; the simulator needs no history).
        self.store = MemoryStore::new().keep_payloads(false);
        Ok(report.failed)
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

    /// Splits transfers out of `from` into intents that each fit in one transaction,
    /// keys `"{prefix}/{n}"`.
    pub fn chunked_transfers(
        &self,
        prefix: &str,
        token: Token,
        from: &Account,
        payouts: &[(String, Amount)],
    ) -> Vec<Intent> {
        let mut out = Vec::new();
        let mut cur = Intent {
            key: format!("{prefix}/0"),
            movements: Vec::new(),
        };
        for (wallet, amount) in payouts.iter().filter(|(_, a)| *a > 0) {
            cur.movements.push(Movement {
                token,
                op: Op::Transfer {
                    from: from.clone(),
                    to: Account::Wallet(wallet.clone()),
                    amount: *amount,
                },
            });
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

    /// Mints into wallets (genesis), chunked to fit, keys `"{prefix}/{n}"`.
    pub fn chunked_mints(
        &self,
        prefix: &str,
        token: Token,
        mints: &[(Account, Amount)],
    ) -> Vec<Intent> {
        let mut out = Vec::new();
        let mut cur = Intent {
            key: format!("{prefix}/0"),
            movements: Vec::new(),
        };
        for (to, amount) in mints.iter().filter(|(_, a)| *a > 0) {
            cur.movements.push(Movement {
                token,
                op: Op::Mint {
                    to: to.clone(),
                    amount: *amount,
                },
            });
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
}
