#!/usr/bin/env bash
# Every benchmark of the project, with the figure each one is held to.
# Results go to stdout; criterion also keeps its reports under target/criterion.
#
#   bash scripts/bench.sh            # all
#   bash scripts/bench.sh extender   # only the ones whose name contains the word
set -euo pipefail
cd "$(dirname "$0")/.."
only="${1:-}"
run() {
  local name="$1"; shift
  if [ -n "$only" ] && [[ "$name" != *"$only"* ]]; then return 0; fi
  printf '\n==== %s\n' "$name"
  "$@"
}
# Extender: 5,000 GpuNodes cached, filter + prioritize for one pod < 1 ms p99 in-process.
run matching   cargo bench --locked -p solgrid-market --bench matching
run extender   cargo bench --locked -p solgrid-scheduler --bench extender
# Extender over HTTP: >= 2,000 scheduling calls/s on 2 cores from a separate load process.
run extender-http bash scheduler/bench-http.sh
# Simulator: 10,000 nodes and 100,000 jobs < 10 s.
run simulator  cargo bench --locked -p solgrid-sim --bench sim_10k
# Device plugin: Allocate < 1 ms p99.
run allocate   cargo bench --locked -p solgrid-device-plugin --bench allocate
# Embedded ledger: settlements/s and payouts per transaction.
run ledger     cargo bench --locked -p solgrid-ledger --bench settle
# Solana: settlements/s and payouts per transaction on a local validator (loopback only).
run solana     bash scripts/test-solana.sh --bench
# Operator: 10,000 GpuNodes + 10,000 ComputeJobs cached < 200 MiB RSS; reconcile throughput.
run operator   cargo run --locked --release -p solgrid-operator --no-default-features --bin solgrid-operator-cachebench
