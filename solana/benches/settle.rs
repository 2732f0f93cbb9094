//! Settlement throughput against a real local solana-test-validator.
//!
//! `scripts/test-solana.sh --bench` (inside `unshare -n`). Reports:
//! - one settlement per transaction, sent and confirmed one after another (latency);
//! - settlements batched as many per transaction as fit (legacy, then v0 with an
//!   address lookup table), all transactions sent, then all confirmed (throughput).
//!
//! `SOLGRID_BENCH_SETTLEMENTS` (default 240) sets the batched workload.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use solgrid_market::ledger::{Account, Intent, Ledger, Token, TxStatus};
use solgrid_solana::SolanaLedger;
use std::time::{Duration, Instant};

const IO: Token = Token::Io;

fn intents(payer: &Account, providers: &[Account], escrowed: u64, tag: u32) -> Vec<Intent> {
    job_settlements(tag, payer, providers, escrowed, |i| {
        fees(3_600_000 + i as u64, 2_000_000, false)
    })
}

/// Batches as many intents per transaction as fit, sends every transaction, then
/// waits for all; returns (transactions, seconds, largest batch).
fn batched(l: &SolanaLedger, all: &[Intent]) -> (usize, f64, usize) {
    let start = Instant::now();
    let mut sigs = Vec::new();
    let mut largest = 0;
    for batch in batches(all, |b| l.fits(b)) {
        let p = l.prepare(batch).expect("prepare");
        l.send(&p).expect("send");
        largest = largest.max(batch.len());
        sigs.push(p.signature);
    }
    let sent = start.elapsed().as_secs_f64();
    for s in &sigs {
        assert_eq!(
            l.wait(s, Duration::from_secs(60)).unwrap(),
            TxStatus::Confirmed
        );
    }
    println!(
        "  (built and sent in {sent:.2} s, all confirmed {:.2} s later)",
        start.elapsed().as_secs_f64() - sent
    );
    (sigs.len(), start.elapsed().as_secs_f64(), largest)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(env) = setup("bench settle") else {
        return;
    };
    let l = &env.ledger;
    let n: usize = env_or("SOLGRID_BENCH_SETTLEMENTS", || 240);
    let payer = signing_wallet(l);
    let escrowed = two_hour_escrow(2_000_000);
    let total = escrowed * (2 * n as u64 + 20);
    fund_into_escrow(l, IO, &payer, total, "bench");

    // sequential: one settlement per transaction, confirmed before the next
    let seq_providers = new_wallets(20);
    let seq = intents(&payer, &seq_providers, escrowed, 1);
    let start = Instant::now();
    for it in &seq {
        settle(l, std::slice::from_ref(it));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "RESULT sequential (1 settlement/tx, send + confirm each): {} settlements in {secs:.2} s = {:.2} settlements/s",
        seq.len(),
        seq.len() as f64 / secs
    );

    // batched, legacy transactions, providers whose token accounts exist
    let providers = new_wallets(n);
    open_accounts(l, IO, &providers, "bench");
    let legacy = intents(&payer, &providers, escrowed, 2);
    let (txs, secs, largest) = batched(l, &legacy);
    println!(
        "RESULT batched legacy: {n} settlements in {txs} txs (up to {largest} payouts/tx) in {secs:.2} s = {:.1} settlements/s",
        n as f64 / secs
    );

    // batched, v0 + address lookup table (up to 256 addresses: 10 fixed + 2 per wallet)
    let wallets: Vec<String> = providers
        .iter()
        .chain(std::iter::once(&payer))
        .take(120)
        .map(address)
        .collect();
    let mut in_table: Vec<Account> = providers.iter().take(wallets.len() - 1).cloned().collect();
    in_table.truncate(n.min(119));
    let mut w = wallets;
    w.push(address(&payer));
    l.create_lookup_table(&w).expect("lookup table");
    // let the table's last extension reach the confirmed bank (untimed)
    std::thread::sleep(Duration::from_secs(2));
    let v0 = intents(&payer, &in_table, escrowed, 3);
    let (txs, secs, largest) = batched(l, &v0);
    println!(
        "RESULT batched v0 + lookup table: {} settlements in {txs} txs (up to {largest} payouts/tx) in {secs:.2} s = {:.1} settlements/s",
        v0.len(),
        v0.len() as f64 / secs
    );
    assert_eq!(
        l.balance(&Account::Escrow, IO).unwrap(),
        escrowed * (2 * n as u64 + 20) - escrowed * (seq.len() + legacy.len() + v0.len()) as u64
    );
}
