#!/usr/bin/env bash
# Runs solgrid-solana's tests against a real solana-test-validator (Agave 4.2.2).
#
#   scripts/test-solana.sh                 # every test of the crate (validator required)
#   scripts/test-solana.sh crash           # only tests whose name contains "crash"
#   scripts/test-solana.sh --bench         # the settlement benchmark instead
#
# The validator listens on every interface whatever --bind-address says, so the
# tests (which start it themselves) run inside a new network namespace that has
# only loopback: `unshare -n sh -c 'ip link set lo up; ...'` (needs root, or
# unprivileged user namespaces). Everything is compiled first, outside it.
#
# Environment: SOLGRID_VALIDATOR (the binary; found or installed by
# scripts/install-validator.sh when unset), SOLGRID_REQUIRE_VALIDATOR=1 is set here so
# a missing validator FAILS the tests instead of skipping them; SOLGRID_CRASH_RUNS
# (crash-injected runs, default 100).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ -z "${SOLGRID_VALIDATOR:-}" ]; then
  SOLGRID_VALIDATOR="$(bash "$ROOT/scripts/install-validator.sh")"
fi
export SOLGRID_VALIDATOR
export SOLGRID_REQUIRE_VALIDATOR=1
"$SOLGRID_VALIDATOR" --version >&2

if ! command -v unshare >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
  echo "test-solana: needs unshare (util-linux) and ip (iproute2)" >&2
  exit 1
fi

if [ "${1:-}" = "--bench" ]; then
  shift
  # The numbers are the validator's and the RPC round trips', not this crate's CPU
  # time: the test profile (dependencies at opt-level 1) avoids a release build of
  # the whole Solana client stack. `cargo bench --bench settle` works as well.
  cargo test -p solgrid-solana --bench settle --no-run
  exec unshare -n sh -c 'ip link set lo up && exec cargo test --offline -p solgrid-solana --bench settle -- "$@"' sh "$@"
fi

cargo test -p solgrid-solana --no-run
exec unshare -n sh -c 'ip link set lo up && exec cargo test --offline -p solgrid-solana -- --test-threads=1 "$@"' sh "$@"
