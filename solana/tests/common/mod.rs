//! Shared set-up for the tests that run against a real solana-test-validator.
#![allow(dead_code)]

use solgrid_market::ledger::{
    Account, Amount, Intent, Ledger, Movement, Op, Prepared, Token, TxStatus,
};
use solgrid_solana::testing::LocalChain;
use solgrid_solana::validator::TestValidator;
use solgrid_solana::{Keypair, Signer, SolanaConfig, SolanaLedger};
use std::collections::BTreeMap;
use std::time::Duration;

pub const DECIMALS: u8 = 6;

pub struct Env {
    // field order: the ledger goes before the validator it talks to
    pub ledger: SolanaLedger,
    pub validator: TestValidator,
}

/// Starts a validator, creates both mints (decimals 6, authority = the operator's),
/// connects a ledger and creates its custody accounts. `None`: skipped.
pub fn setup(test: &str) -> Option<Env> {
    setup_with(test, |_| {})
}

pub fn setup_with(test: &str, tweak: impl FnOnce(&mut SolanaConfig)) -> Option<Env> {
    setup_full(test, &[], tweak)
}

/// Short slots (8 ticks instead of 64): blockhashes expire several times sooner.
pub const FAST_SLOTS: &[&str] = &["--ticks-per-slot", "8"];

pub fn setup_full(
    test: &str,
    validator_args: &[&str],
    tweak: impl FnOnce(&mut SolanaConfig),
) -> Option<Env> {
    let chain = LocalChain::start(test, DECIMALS, DECIMALS, validator_args)?;
    let ledger = chain.ledger_with(tweak).expect("connect");
    let created = ledger.ensure_custody_accounts().expect("custody accounts");
    assert_eq!(created.len(), 8);
    assert!(
        ledger.ensure_custody_accounts().unwrap().is_empty(),
        "idempotent"
    );
    Some(Env {
        ledger,
        validator: chain.validator,
    })
}

pub fn mv(token: Token, op: Op) -> Movement {
    Movement { token, op }
}

pub fn wallet(k: &Keypair) -> Account {
    Account::Wallet(k.pubkey().to_string())
}

/// A new wallet whose keypair the ledger holds as a signer (a payer).
pub fn signing_wallet(ledger: &SolanaLedger) -> Account {
    let kp = Keypair::new();
    let w = wallet(&kp);
    ledger.add_signer(kp);
    w
}

/// `n` new wallets whose keypairs nobody keeps (they only receive).
pub fn new_wallets(n: usize) -> Vec<Account> {
    (0..n).map(|_| wallet(&Keypair::new())).collect()
}

/// A wallet's address.
pub fn address(a: &Account) -> String {
    match a {
        Account::Wallet(w) => w.clone(),
        other => panic!("{other} is not a wallet"),
    }
}

/// An intent `key` of one movement.
pub fn intent(key: &str, token: Token, op: Op) -> Intent {
    Intent {
        key: key.into(),
        movements: vec![mv(token, op)],
    }
}

/// The environment variable `var` parsed, or `default()` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(var: &str, default: impl FnOnce() -> T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(default)
}

/// The time since the epoch, `unit` of it (a seed when none is given).
pub fn clock_seed(unit: impl FnOnce(Duration) -> u64) -> u64 {
    unit(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap(),
    )
}

/// The largest `n` in `1..=limit` for which `fits(n)`, counting up from 1 (at least 1).
pub fn most_that_fit(limit: usize, fits: impl Fn(usize) -> bool) -> usize {
    let mut n = 1;
    while n < limit && fits(n + 1) {
        n += 1;
    }
    n
}

/// Mints `amount` to `payer` (test funding, key `{tag}/fund`), then moves it into
/// escrow (payer-signed, key `{tag}/escrow`).
pub fn fund_into_escrow(
    ledger: &SolanaLedger,
    token: Token,
    payer: &Account,
    amount: u64,
    tag: &str,
) {
    settle(
        ledger,
        &[intent(
            &format!("{tag}/fund"),
            token,
            Op::Mint {
                to: payer.clone(),
                amount,
            },
        )],
    );
    settle(
        ledger,
        &[intent(
            &format!("{tag}/escrow"),
            token,
            Op::Transfer {
                from: payer.clone(),
                to: Account::Escrow,
                amount,
            },
        )],
    );
}

/// Prepares, sends and waits (up to 90 s: a v0 transaction right after its lookup
/// table was slow to land on a loaded machine) for `intents`; asserts it confirmed.
pub fn settle(ledger: &SolanaLedger, intents: &[Intent]) -> Prepared {
    let p = ledger.prepare(intents).expect("prepare");
    let st = ledger
        .send_and_confirm(&p, Duration::from_secs(90))
        .expect("send");
    assert_eq!(st, TxStatus::Confirmed, "{:?}", p.keys);
    p
}

/// Balances of `accounts` in `token`, and the mint's supply.
pub fn snapshot(
    ledger: &SolanaLedger,
    accounts: &[Account],
    token: Token,
) -> (BTreeMap<Account, Amount>, Amount) {
    let b = accounts
        .iter()
        .map(|a| (a.clone(), ledger.balance(a, token).expect("balance")))
        .collect();
    (b, ledger.supply(token).expect("supply"))
}

/// Asserts every account's change and the supply's change since `before`.
pub fn assert_deltas(
    ledger: &SolanaLedger,
    token: Token,
    before: &(BTreeMap<Account, Amount>, Amount),
    deltas: &[(Account, i128)],
    supply_delta: i128,
) {
    let accounts: Vec<Account> = before.0.keys().cloned().collect();
    let after = snapshot(ledger, &accounts, token);
    for a in &accounts {
        let want: i128 = deltas.iter().filter(|(x, _)| x == a).map(|(_, d)| *d).sum();
        let got = after.0[a] as i128 - before.0[a] as i128;
        assert_eq!(got, want, "{token} balance change of {a}");
    }
    assert_eq!(
        after.1 as i128 - before.1 as i128,
        supply_delta,
        "{token} supply change"
    );
}

pub fn custody() -> Vec<Account> {
    vec![
        Account::Escrow,
        Account::Treasury,
        Account::EmissionPool,
        Account::StakeVault,
    ]
}

/// The fees of ECONOMICS.md for one period, in base units.
pub struct Fees {
    pub cost: u64,
    pub fr: u64,
    pub fp: u64,
    pub s: u64,
}

pub fn fees(gpu_ms: u64, price: u64, stable: bool) -> Fees {
    let cost = ((gpu_ms as u128 * price as u128) / 3_600_000) as u64;
    let bp = |x: u64, b: u64| ((x as u128 * b as u128).div_ceil(10_000)) as u64;
    Fees {
        cost,
        fr: bp(cost, 25),
        fp: bp(cost, 25),
        s: if stable { bp(cost, 200) } else { 0 },
    }
}

/// One finished job's settlement: provider payout, protocol share (burned for IO,
/// to the treasury for USDC), refund of the rest of `escrowed` to the payer.
pub fn job_settlement(
    key: &str,
    token: Token,
    payer: &Account,
    provider: &Account,
    escrowed: u64,
    f: &Fees,
) -> Intent {
    let protocol = f.fr + f.fp + f.s;
    let paid = f.cost + f.fr + f.s;
    let mut movements = vec![mv(
        token,
        Op::Transfer {
            from: Account::Escrow,
            to: provider.clone(),
            amount: f.cost - f.fp,
        },
    )];
    movements.push(if token == Token::Io {
        mv(
            token,
            Op::Burn {
                from: Account::Escrow,
                amount: protocol,
            },
        )
    } else {
        mv(
            token,
            Op::Transfer {
                from: Account::Escrow,
                to: Account::Treasury,
                amount: protocol,
            },
        )
    });
    movements.push(mv(
        token,
        Op::Transfer {
            from: Account::Escrow,
            to: payer.clone(),
            amount: escrowed - paid,
        },
    ));
    Intent {
        key: key.to_string(),
        movements,
    }
}

/// Gives each wallet a token account (by minting 1 base unit to it), as many per
/// transaction as fit.
pub fn open_accounts(ledger: &SolanaLedger, token: Token, wallets: &[Account], tag: &str) {
    let intent = |ws: &[Account]| Intent {
        key: format!("{tag}/open/{}", ws[0]),
        movements: ws
            .iter()
            .map(|w| {
                mv(
                    token,
                    Op::Mint {
                        to: w.clone(),
                        amount: 1,
                    },
                )
            })
            .collect(),
    };
    for batch in batches(wallets, |ws| ledger.fits(&[intent(ws)])) {
        settle(ledger, &[intent(batch)]);
    }
}

/// `all` cut, in order, into runs each as long as `fits` allows (at least one
/// each); each run is measured when it is asked for (after the previous one landed).
pub fn batches<T>(all: &[T], fits: impl Fn(&[T]) -> bool) -> impl Iterator<Item = &[T]> {
    let mut i = 0;
    std::iter::from_fn(move || {
        (i < all.len()).then(|| {
            let j = i + most_that_fit(all.len() - i, |k| fits(&all[i..i + k]));
            let batch = &all[i..j];
            i = j;
            batch
        })
    })
}

/// The maximum escrow (cost and the payer's fee, no surcharge) of a 2 GPU-hour IO
/// job at `price` per GPU-hour.
pub fn two_hour_escrow(price: u64) -> u64 {
    let max = fees(2 * 3_600_000, price, false);
    max.cost + max.fr
}

/// One IO job settlement per provider (keys `job_key(tag, i, 0)`), each from `payer`'s
/// `escrowed` with the fees `fee(i)`.
pub fn job_settlements(
    tag: u32,
    payer: &Account,
    providers: &[Account],
    escrowed: u64,
    fee: impl Fn(usize) -> Fees,
) -> Vec<Intent> {
    providers
        .iter()
        .enumerate()
        .map(|(i, p)| job_settlement(&job_key(tag, i, 0), Token::Io, payer, p, escrowed, &fee(i)))
        .collect()
}

/// One intent `key` paying 1 IO base unit from the emission pool to each of `to`.
pub fn reward_payouts<'a>(key: &str, to: impl IntoIterator<Item = &'a Account>) -> Intent {
    Intent {
        key: key.into(),
        movements: to
            .into_iter()
            .map(|r| {
                mv(
                    Token::Io,
                    Op::Transfer {
                        from: Account::EmissionPool,
                        to: r.clone(),
                        amount: 1,
                    },
                )
            })
            .collect(),
    }
}

/// A realistic idempotency key: the job's UID (36 characters) and the period.
pub fn job_key(tag: u32, i: usize, period: u32) -> String {
    format!("{tag:08x}-0000-4000-8000-{i:012x}/p{period:04}")
}
