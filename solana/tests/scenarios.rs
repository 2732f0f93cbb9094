//! Settlement scenarios on a real solana-test-validator: balances of every account
//! and the mint's supply are checked on chain after each one.
//!
//! Needs `SOLGRID_VALIDATOR` (see `solgrid_solana::validator`); run through
//! `scripts/test-solana.sh`.

mod common;

use common::*;
use solgrid_market::ledger::{Account, Intent, Ledger, Op, Prepared, Token, TxStatus};
use solgrid_solana::{Keypair, PACKET_DATA_SIZE, SolanaError, TxShape};
use std::time::Duration;

const IO: Token = Token::Io;
const USDC: Token = Token::Usdc;

/// Funds `payer` with `amount` by minting (test funding), checks supply and balance.
fn fund(env: &Env, token: Token, payer: &Account, amount: u64, key: &str) {
    let before = snapshot(&env.ledger, std::slice::from_ref(payer), token);
    settle(
        &env.ledger,
        &[intent(
            key,
            token,
            Op::Mint {
                to: payer.clone(),
                amount,
            },
        )],
    );
    assert_deltas(
        &env.ledger,
        token,
        &before,
        &[(payer.clone(), amount as i128)],
        amount as i128,
    );
}

/// A new payer (its keypair a signer of the ledger) funded with 10,000 IO.
fn funded_payer(env: &Env, key: &str) -> Account {
    let payer = signing_wallet(&env.ledger);
    fund(env, IO, &payer, 10_000 * 1_000_000, key);
    payer
}

/// The payer moves a job's maximum cost into escrow (needs the payer's signature).
fn fund_escrow(env: &Env, token: Token, payer: &Account, amount: u64, key: &str) {
    let mut accounts = custody();
    accounts.push(payer.clone());
    let before = snapshot(&env.ledger, &accounts, token);
    settle(
        &env.ledger,
        &[intent(
            key,
            token,
            Op::Transfer {
                from: payer.clone(),
                to: Account::Escrow,
                amount,
            },
        )],
    );
    assert_deltas(
        &env.ledger,
        token,
        &before,
        &[
            (payer.clone(), -(amount as i128)),
            (Account::Escrow, amount as i128),
        ],
        0,
    );
}

#[test]
fn settle_io_job_burns_fees_and_refunds() {
    let Some(env) = setup("settle_io_job_burns_fees_and_refunds") else {
        return;
    };
    let payer = signing_wallet(&env.ledger);
    let provider = wallet(&Keypair::new());
    assert_eq!(env.ledger.unit(IO), 1_000_000);

    fund(&env, IO, &payer, 1_000 * 1_000_000, "fund/payer");
    // 4 GPU-hours at 2 IO/GPU-hour reserved; 1.5 GPU-hours used
    let price = 2_000_000;
    let max = fees(4 * 3_600_000, price, false);
    let escrowed = max.cost + max.fr + max.s;
    assert_eq!(escrowed, 8_020_000);
    fund_escrow(&env, IO, &payer, escrowed, "job-a/escrow");

    let f = fees(5_400_000, price, false);
    assert_eq!((f.cost, f.fr, f.fp), (3_000_000, 7_500, 7_500));
    let mut accounts = custody();
    accounts.extend([payer.clone(), provider.clone()]);
    let before = snapshot(&env.ledger, &accounts, IO);
    let intent = job_settlement("job-a/p0000", IO, &payer, &provider, escrowed, &f);
    let p = settle(&env.ledger, std::slice::from_ref(&intent));
    assert_eq!(p.keys, vec!["job-a/p0000".to_string()]);
    assert_deltas(
        &env.ledger,
        IO,
        &before,
        &[
            (Account::Escrow, -(escrowed as i128)),
            (provider.clone(), 2_992_500),
            (payer.clone(), 5_012_500),
        ],
        -15_000, // the protocol's share burned: supply falls by exactly Fr + Fp
    );
    // paid = received + protocol, to the unit
    assert_eq!(escrowed - 5_012_500, 2_992_500 + 15_000);

    // re-sending the very same transaction moves nothing more
    let before = snapshot(&env.ledger, &accounts, IO);
    env.ledger.send(&p).expect("re-send is success");
    std::thread::sleep(Duration::from_millis(800));
    assert_deltas(&env.ledger, IO, &before, &[], 0);
    assert_eq!(
        env.ledger.status(&p.signature).unwrap(),
        TxStatus::Confirmed
    );
}

#[test]
fn settle_usdc_job_fees_to_treasury() {
    let Some(env) = setup("settle_usdc_job_fees_to_treasury") else {
        return;
    };
    let payer = signing_wallet(&env.ledger);
    let provider = wallet(&Keypair::new());

    fund(&env, USDC, &payer, 500 * 1_000_000, "fund/payer-usdc");
    let price = 1_500_000; // 1.5 USDC per GPU-hour
    let max = fees(2 * 3_600_000, price, true);
    let escrowed = max.cost + max.fr + max.s;
    fund_escrow(&env, USDC, &payer, escrowed, "job-u/escrow");

    let f = fees(3_600_000 + 1_234, price, true);
    let protocol = f.fr + f.fp + f.s;
    let paid = f.cost + f.fr + f.s;
    let mut accounts = custody();
    accounts.extend([payer.clone(), provider.clone()]);
    let before = snapshot(&env.ledger, &accounts, USDC);
    settle(
        &env.ledger,
        &[job_settlement(
            "job-u/p0000",
            USDC,
            &payer,
            &provider,
            escrowed,
            &f,
        )],
    );
    assert_deltas(
        &env.ledger,
        USDC,
        &before,
        &[
            (Account::Escrow, -(escrowed as i128)),
            (provider.clone(), (f.cost - f.fp) as i128),
            (Account::Treasury, protocol as i128),
            (payer.clone(), (escrowed - paid) as i128),
        ],
        0, // stablecoin fees are not burned
    );

    // the scheduled buyback of those fees (market::buyback, as the operator's
    // buyback task): the treasury's USDC to the buyback counterparty, that much IO
    // at $0.50 burned from the treasury's IO reserve, in one transaction
    let desk = wallet(&Keypair::new());
    fund(
        &env,
        IO,
        &Account::Treasury,
        1_000 * env.ledger.unit(IO),
        "treasury/io-reserve",
    );
    let rate = |micro_usd_per_token, token| solgrid_market::pricing::TokenRate {
        micro_usd_per_token,
        unit: env.ledger.unit(token),
    };
    let reserve = env.ledger.balance(&Account::Treasury, IO).unwrap();
    let plan =
        solgrid_market::buyback::plan(protocol, rate(1_000_000, USDC), rate(500_000, IO), reserve)
            .unwrap();
    assert_eq!(
        plan.stable_in, protocol,
        "a USDC base unit buys 2 IO base units exactly"
    );
    assert_eq!(plan.io_burned, 2 * protocol);
    let desk_address = address(&desk);
    let (usdc_before, io_before) = (
        snapshot(&env.ledger, &[Account::Treasury, desk.clone()], USDC),
        snapshot(&env.ledger, &[Account::Treasury], IO),
    );
    settle(
        &env.ledger,
        &[plan.intent("buyback/1".into(), &desk_address)],
    );
    assert_deltas(
        &env.ledger,
        USDC,
        &usdc_before,
        &[
            (Account::Treasury, -(protocol as i128)),
            (desk.clone(), protocol as i128),
        ],
        0,
    );
    assert_deltas(
        &env.ledger,
        IO,
        &io_before,
        &[(Account::Treasury, -(plan.io_burned as i128))],
        -(plan.io_burned as i128), // the IO mint's supply falls by the IO bought back
    );
}

#[test]
fn batch_of_settlements_in_one_transaction() {
    let Some(env) = setup("batch_of_settlements_in_one_transaction") else {
        return;
    };
    let l = &env.ledger;
    let payer = funded_payer(&env, "fund/batch-payer");
    let price = 3_000_000;
    let escrowed = two_hour_escrow(price);

    // as many settlements (each with its own provider) as fit in one transaction
    let providers = new_wallets(30);
    let fee = |i: usize| fees(3_600_000 + i as u64 * 1_000, price, false);
    let intents_for = |n: usize| job_settlements(0xba7c4, &payer, &providers[..n], escrowed, fee);
    let n = most_that_fit(providers.len(), |k| l.fits(&intents_for(k)));
    let intents = intents_for(n);
    let size = l.tx_size(&intents).unwrap();
    assert!(size <= PACKET_DATA_SIZE);
    assert!(!l.fits(&intents_for(n + 1)));
    match l.prepare(&intents_for(n + 1)) {
        Err(SolanaError::TooLarge { size, limit }) => assert!(size > limit),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    eprintln!(
        "RESULT legacy: {n} IO settlements (payout + burn + refund + memo, new provider accounts created) \
         in one {size}-byte transaction"
    );
    assert!(n >= 2, "at least two settlements must share a transaction");

    let p = settle_jobs(
        &env,
        &payer,
        &providers[..n],
        escrowed,
        fee,
        &intents,
        "job-batch/escrow",
    );
    assert_eq!(p.payload.len(), size, "fits/tx_size are exact");
    assert_eq!(p.keys.len(), n);
}

/// Moves `escrowed` per settlement into escrow (key `escrow_key`), settles
/// `intents` (one job settlement per provider, from `payer`, with the fees `fee(i)`)
/// in one transaction, and checks every balance change and the burned supply.
fn settle_jobs(
    env: &Env,
    payer: &Account,
    providers: &[Account],
    escrowed: u64,
    fee: impl Fn(usize) -> Fees,
    intents: &[Intent],
    escrow_key: &str,
) -> Prepared {
    let l = &env.ledger;
    let n = providers.len();
    fund_escrow(env, IO, payer, escrowed * n as u64, escrow_key);
    let mut accounts = custody();
    accounts.push(payer.clone());
    accounts.extend(providers.iter().cloned());
    let before = snapshot(l, &accounts, IO);
    let p = settle(l, intents);
    let mut deltas = vec![(Account::Escrow, -((escrowed * n as u64) as i128))];
    let mut burned = 0i128;
    for (i, provider) in providers.iter().enumerate() {
        let f = fee(i);
        deltas.push((provider.clone(), (f.cost - f.fp) as i128));
        deltas.push((payer.clone(), (escrowed - f.cost - f.fr) as i128));
        burned += (f.fr + f.fp) as i128;
    }
    assert_deltas(l, IO, &before, &deltas, -burned);
    p
}

#[test]
fn stake_lock_slash_unbond() {
    let Some(env) = setup("stake_lock_slash_unbond") else {
        return;
    };
    let l = &env.ledger;
    let staker_kp = Keypair::new();
    let staker = wallet(&staker_kp);
    fund(&env, IO, &staker, 2_000 * 1_000_000, "fund/staker");

    // without the staker's keypair the lock cannot be signed
    let lock = intent(
        "stake-1/lock",
        IO,
        Op::Transfer {
            from: staker.clone(),
            to: Account::StakeVault,
            amount: 2_000_000_000,
        },
    );
    match l.prepare(std::slice::from_ref(&lock)) {
        Err(SolanaError::MissingSigner(w)) => assert_eq!(Account::Wallet(w), staker),
        other => panic!("expected MissingSigner, got {other:?}"),
    }
    let staker_addr = l.add_signer_bytes(&staker_kp.to_bytes()).unwrap();
    assert_eq!(Account::Wallet(staker_addr.clone()), staker);
    assert!(l.has_signer(&staker_addr));

    let mut accounts = custody();
    accounts.push(staker.clone());
    let before = snapshot(l, &accounts, IO);
    settle(l, &[lock]);
    assert_deltas(
        l,
        IO,
        &before,
        &[
            (staker.clone(), -2_000_000_000),
            (Account::StakeVault, 2_000_000_000),
        ],
        0,
    );

    // slashed: 10 % of the stake burned from the vault
    let before = snapshot(l, &accounts, IO);
    settle(
        l,
        &[intent(
            "stake-1/slash/0",
            IO,
            Op::Burn {
                from: Account::StakeVault,
                amount: 200_000_000,
            },
        )],
    );
    assert_deltas(
        l,
        IO,
        &before,
        &[(Account::StakeVault, -200_000_000)],
        -200_000_000,
    );

    // unbonded and withdrawn: the rest goes back
    let before = snapshot(l, &accounts, IO);
    settle(
        l,
        &[intent(
            "stake-1/withdraw",
            IO,
            Op::Transfer {
                from: Account::StakeVault,
                to: staker.clone(),
                amount: 1_800_000_000,
            },
        )],
    );
    assert_deltas(
        l,
        IO,
        &before,
        &[
            (Account::StakeVault, -1_800_000_000),
            (staker.clone(), 1_800_000_000),
        ],
        0,
    );
    assert!(l.remove_signer(&staker_addr));
}

#[test]
fn emission_minted_to_pool_then_distributed() {
    let Some(env) = setup("emission_minted_to_pool_then_distributed") else {
        return;
    };
    let l = &env.ledger;
    let recipients = new_wallets(7);
    let mut accounts = custody();
    accounts.extend(recipients.iter().cloned());

    // an hour's emission (an odd amount) minted into the pool
    let hour = 4_583_116_911u64;
    let before = snapshot(l, &accounts, IO);
    settle(
        l,
        &[intent(
            "emission/h000000/mint",
            IO,
            Op::Mint {
                to: Account::EmissionPool,
                amount: hour,
            },
        )],
    );
    assert_deltas(
        l,
        IO,
        &before,
        &[(Account::EmissionPool, hour as i128)],
        hour as i128,
    );

    // split by integer weights, floors; the dust stays in the pool
    let weights = [10u64, 10, 4, 1, 1, 3, 7];
    let total: u64 = weights.iter().sum();
    let shares: Vec<u64> = weights
        .iter()
        .map(|w| ((hour as u128 * *w as u128) / total as u128) as u64)
        .collect();
    let dust = hour - shares.iter().sum::<u64>();
    let before = snapshot(l, &accounts, IO);
    settle(
        l,
        &[Intent {
            key: "emission/h000000/distribute".into(),
            movements: recipients
                .iter()
                .zip(&shares)
                .map(|(r, s)| {
                    mv(
                        IO,
                        Op::Transfer {
                            from: Account::EmissionPool,
                            to: r.clone(),
                            amount: *s,
                        },
                    )
                })
                .collect(),
        }],
    );
    let mut deltas: Vec<(Account, i128)> = recipients
        .iter()
        .cloned()
        .zip(shares.iter().map(|s| *s as i128))
        .collect();
    deltas.push((Account::EmissionPool, -((hour - dust) as i128)));
    assert_deltas(l, IO, &before, &deltas, 0);
    assert_eq!(l.balance(&Account::EmissionPool, IO).unwrap(), dust);

    // how many reward payouts (pool -> wallet) fit in one transaction
    let many = new_wallets(60);
    let payouts = |n: usize| reward_payouts("emission/h000001/distribute", &many[..n]);
    let n = most_that_fit(many.len(), |k| l.fits(&[payouts(k)]));
    eprintln!("RESULT legacy: {n} reward payouts to new wallets (account created) per transaction");
    let mut existing = n;
    // recipients[..7] exist now
    let payouts_existing = |k: usize| {
        reward_payouts(
            "emission/h000002/distribute",
            recipients.iter().cycle().take(k.min(recipients.len())),
        )
    };
    if l.fits(&[payouts_existing(7)]) {
        existing = existing.max(7);
    }
    let _ = existing;
}

#[test]
fn lookup_table_v0_carries_more_payouts() {
    let Some(env) = setup("lookup_table_v0_carries_more_payouts") else {
        return;
    };
    let l = &env.ledger;
    let payer = funded_payer(&env, "fund/alt-payer");
    let price = 3_000_000;
    let escrowed = two_hour_escrow(price);
    let providers = new_wallets(60);
    // providers get their accounts first (as after their first payout)
    open_accounts(l, IO, &providers, "alt");
    let fee = |_: usize| fees(3_600_000, price, false);
    let intents_for = |n: usize| job_settlements(0xa17, &payer, &providers[..n], escrowed, fee);
    let count = || most_that_fit(providers.len(), |n| l.fits(&intents_for(n)));
    assert_eq!(l.tx_shape(), TxShape::Legacy);
    let legacy = count();
    let payouts = |n: usize| reward_payouts("emission/alt", &providers[..n]);
    let reward_count = || most_that_fit(providers.len(), |n| l.fits(&[payouts(n)]));
    let legacy_rewards = reward_count();
    eprintln!("RESULT legacy: {legacy_rewards} reward payouts per transaction to existing wallets");

    let mut wallets: Vec<String> = providers.iter().map(address).collect();
    wallets.push(address(&payer));
    let table = l.create_lookup_table(&wallets).expect("lookup table");
    assert_eq!(l.tx_shape(), TxShape::V0LookupTable);
    let v0 = count();
    eprintln!(
        "RESULT IO settlements (payout + burn + refund + 42-byte key memo) per transaction, provider accounts existing: \
         legacy {legacy}, v0 + lookup table {v0} (table {table})"
    );
    assert!(v0 > legacy);

    let intents = intents_for(v0);
    let p = settle_jobs(
        &env,
        &payer,
        &providers[..v0],
        escrowed,
        fee,
        &intents,
        "job-alt/escrow",
    );
    assert!(p.payload.len() <= PACKET_DATA_SIZE);

    // reward payouts through the table
    let n = reward_count();
    eprintln!("RESULT v0 + lookup table: {n} reward payouts per transaction (60 tried)");
}

#[test]
fn unknown_signatures_and_block_height() {
    let Some(env) = setup("unknown_signatures_and_block_height") else {
        return;
    };
    let l = &env.ledger;
    let h1 = l.block_height().unwrap();
    std::thread::sleep(Duration::from_millis(1_000));
    let h2 = l.block_height().unwrap();
    assert!(h2 >= h1);
    let random =
        "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW";
    assert_eq!(l.status(random).unwrap(), TxStatus::NotFound);
    assert!(matches!(
        l.status("not-a-signature"),
        Err(SolanaError::InvalidAddress { .. })
    ));

    // a prepared transaction nobody sent is unknown, and its last valid block
    // height lies ahead (about 150 blocks past the blockhash)
    let prov = wallet(&Keypair::new());
    let p = l
        .prepare(&[intent(
            "unsent",
            IO,
            Op::Mint {
                to: prov.clone(),
                amount: 5,
            },
        )])
        .unwrap();
    assert_eq!(l.status(&p.signature).unwrap(), TxStatus::NotFound);
    assert!(p.last_valid_block_height > l.block_height().unwrap());
    assert_eq!(l.balance(&prov, IO).unwrap(), 0);
    // a failed transaction: a burn of more than the escrow holds is rejected in
    // preflight, and nothing moves
    let p = l.prepare(&[overdraw()]).unwrap();
    match l.send(&p) {
        Err(SolanaError::Rejected { message, .. }) => eprintln!("rejected as expected: {message}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    // a duplicate key within one transaction is refused (it would pay twice)
    let dup = intent(
        "same",
        IO,
        Op::Mint {
            to: prov.clone(),
            amount: 1,
        },
    );
    assert!(matches!(
        l.prepare(&[dup.clone(), dup]),
        Err(SolanaError::Build(_))
    ));
    let dbg = format!("{l:?}");
    assert!(dbg.contains("<redacted>"));
}

/// A burn of 1 base unit from the (empty) escrow: rejected in preflight.
fn overdraw() -> Intent {
    intent(
        "overdraw",
        IO,
        Op::Burn {
            from: Account::Escrow,
            amount: 1,
        },
    )
}

/// A transaction rejected in preflight (the RPC node never forwarded it) is
/// `NotFound` while it could still land, then `Failed` with the rejection's reason
/// once past its last valid block height — not `NotFound` for ever, which made the
/// executor rebuild and resend it (rejected again) without end, and left an
/// operator's job with no visible reason (an unfunded payer's escrow).
#[test]
fn preflight_rejection_fails_once_expired() {
    let Some(env) = setup_full("preflight_rejection_fails_once_expired", FAST_SLOTS, |_| {}) else {
        return;
    };
    let l = &env.ledger;
    let p = l.prepare(&[overdraw()]).unwrap();
    assert!(matches!(l.send(&p), Err(SolanaError::Rejected { .. })));
    assert_eq!(l.status(&p.signature).unwrap(), TxStatus::NotFound);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let reason = loop {
        match l.status(&p.signature).unwrap() {
            TxStatus::Failed(r) => break r,
            TxStatus::NotFound => {}
            other => panic!("{other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "still NotFound");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(l.block_height().unwrap() > p.last_valid_block_height);
    assert!(reason.contains("rejected in preflight"), "{reason}");
    assert_eq!(l.balance(&Account::Escrow, IO).unwrap(), 0);
}
