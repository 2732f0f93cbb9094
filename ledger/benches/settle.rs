//! Settlement throughput on the embedded ledger through the exactly-once executor.
//!
//! `cargo bench -p solgrid-ledger --bench settle`
//!
//! - `executor/<mode>/10000`: plan 10,000 job payouts (provider transfer, fee burn,
//!   refund) and settle them in batched transactions; throughput in settlements/s.
//!   Modes: in memory; journal file with fsync every 1,024 transactions; journal
//!   file with fsync on every transaction.
//! - The intents-per-transaction figure is printed once per mode.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use solgrid_ledger::testing::{NoSleep, io, mint, payout};
use solgrid_ledger::{
    EmbeddedConfig, EmbeddedLedger, Executor, ExecutorConfig, FsyncPolicy, MemoryStore,
};
use solgrid_market::ledger::{Account, Intent, Op, Token};
use std::hint::black_box;

fn payouts(n: usize) -> Vec<Intent> {
    (0..n)
        .map(|i| {
            let mut p = payout(
                format!("0f3c2a9e-5b7d-4e1a-9c2b-{i:012}/0"),
                Account::Wallet(format!("Prov{i:040}")),
                1_000_000,
                5_000,
            );
            p.movements.push(io(Op::Transfer {
                from: Account::Escrow,
                to: Account::Wallet(format!("Payr{:040}", i % 97)),
                amount: 10_000,
            }));
            p
        })
        .collect()
}

fn genesis(l: &EmbeddedLedger, n: usize) {
    l.apply(&[mint(
        "genesis",
        Account::Escrow,
        Token::Io,
        n as u64 * 1_015_000,
    )])
    .unwrap();
}

fn bench(c: &mut Criterion) {
    const N: usize = 10_000;
    let intents = payouts(N);
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("executor");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    let modes: [(&str, Option<FsyncPolicy>); 3] = [
        ("memory", None),
        ("file-fsync-every-1024", Some(FsyncPolicy::Every(1024))),
        ("file-fsync-always", Some(FsyncPolicy::Always)),
    ];
    for (name, fsync) in modes {
        let mut run = 0usize;
        let mut make = || {
            run += 1;
            let l = match fsync {
                None => EmbeddedLedger::in_memory(EmbeddedConfig::default()).unwrap(),
                Some(fsync) => EmbeddedLedger::open(
                    dir.path().join(format!("{name}-{run}.jsonl")),
                    EmbeddedConfig {
                        fsync,
                        ..Default::default()
                    },
                )
                .unwrap(),
            };
            genesis(&l, N);
            l
        };
        // one untimed run for the batching figure
        {
            let l = make();
            let mut store = MemoryStore::new();
            let r = Executor::with_sleeper(&l, &mut store, ExecutorConfig::default(), NoSleep)
                .settle(&intents, 3)
                .unwrap();
            assert_eq!(r.confirmed, N);
            let txs = r.txs();
            eprintln!(
                "{name}: {N} settlements in {txs} transactions, {:.2} intents/tx (max {})",
                N as f64 / txs as f64,
                r.intents_per_tx.iter().max().unwrap()
            );
        }
        g.bench_function(format!("{name}/{N}"), |b| {
            b.iter_batched(
                &mut make,
                |l| {
                    let mut store = MemoryStore::new();
                    let r =
                        Executor::with_sleeper(&l, &mut store, ExecutorConfig::default(), NoSleep)
                            .settle(black_box(&intents), 3)
                            .unwrap();
                    assert_eq!(r.confirmed, N);
                    l
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
