#!/usr/bin/env bash
# Runs a command inside a fresh network namespace with only loopback up, so that the
# solana-test-validator the settlement tests start (it binds every interface whatever
# --bind-address says) can only ever be reached from this machine.
#
# Needs root (or user namespaces). Where neither works, the command runs as it is and
# the tests that need the validator fail with a message saying why.
set -euo pipefail
if unshare -n true 2>/dev/null; then
  exec unshare -n -- bash -c 'ip link set lo up 2>/dev/null || true; exec "$@"' netns "$@"
elif unshare -rn true 2>/dev/null; then
  exec unshare -rn -- bash -c 'ip link set lo up 2>/dev/null || true; exec "$@"' netns "$@"
else
  echo "test-in-netns: cannot create a network namespace (not root, no user namespaces);" >&2
  echo "test-in-netns: running without one — solana validator tests will refuse to start." >&2
  export SOLGRID_NO_NETNS=1
  exec "$@"
fi
