#!/usr/bin/env bash
# HTTP benchmark of the extender: builds release, generates a snapshot of NODES
# GpuNodes, serves it with `solgrid-scheduler --snapshot` (2 runtime threads), fires
# filter + prioritize pairs at it for DURATION seconds from `solgrid-scheduler-load`
# (keep-alive, CONCURRENCY connections, 1 thread), stops the server, prints the numbers.
#
#   scheduler/bench-http.sh                      # 5,000 nodes, every name in each request
#   NAMES=500 scheduler/bench-http.sh            # kube-scheduler-like: ~10% of the nodes per call
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-5000}
NAMES=${NAMES:-$NODES}
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-8}
PORT=${PORT:-18888}
SERVER_THREADS=${SERVER_THREADS:-2}

cargo build --release -q -p solgrid-scheduler --bins
TARGET_DIR=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}
TARGET_DIR=${TARGET_DIR:-target}
BIN="$TARGET_DIR/release"

tmp=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

"$BIN/solgrid-scheduler" --gen-snapshot "$NODES" --out "$tmp/snapshot.json"
RUST_LOG=warn "$BIN/solgrid-scheduler" --snapshot "$tmp/snapshot.json" \
  --listen "127.0.0.1:$PORT" --threads "$SERVER_THREADS" >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then cat "$tmp/server.log"; exit 1; fi
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null

echo "solgrid-scheduler --snapshot ($NODES GpuNodes), $SERVER_THREADS server threads, $(nproc) cores on this machine"
"$BIN/solgrid-scheduler-load" --url "http://127.0.0.1:$PORT" --nodes "$NODES" --names "$NAMES" \
  --duration "$DURATION" --concurrency "$CONCURRENCY"

kill -TERM "$server_pid"
wait "$server_pid" || { echo "server exited with an error:"; cat "$tmp/server.log"; exit 1; }
server_pid=""
echo "server stopped cleanly on SIGTERM"
