#!/usr/bin/env bash
# Provides solana-test-validator (Agave 4.2.2) for solgrid-solana's integration tests
# and prints its absolute path on stdout (everything else goes to stderr).
#
# Order of preference:
#   1. $SOLANA_TEST_VALIDATOR, if it names an executable;
#   2. <repo>/.tools/bin/solana-test-validator (installed by an earlier run);
#   3. solana-test-validator on PATH, if it is version 4.2.x;
#   4. the prebuilt shared/bin/solana-test-validator-4.2.2-x86_64-linux-gnu.xz beside
#      the repository (../shared, or $SOLGRID_SHARED_DIR), after checking its SHA-256
#      against shared/bin/SHA256SUMS; unpacked into <repo>/.tools/bin;
#   5. cargo install --locked agave-validator --version 4.2.2 --bin solana-test-validator
#      --root <repo>/.tools  (about 25 min on 2 cores; needs Debian's
#      clang libclang-dev cmake libudev-dev libssl-dev pkg-config protobuf-compiler,
#      installed here with apt-get when running as root and they are missing).
set -euo pipefail

VERSION=4.2.2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin/solana-test-validator"
log() { echo "install-validator: $*" >&2; }

if [ -n "${SOLANA_TEST_VALIDATOR:-}" ] && [ -x "${SOLANA_TEST_VALIDATOR}" ]; then
  log "using \$SOLANA_TEST_VALIDATOR=$SOLANA_TEST_VALIDATOR"
  echo "$SOLANA_TEST_VALIDATOR"; exit 0
fi
if [ -x "$BIN" ]; then
  log "using $BIN"
  echo "$BIN"; exit 0
fi
if command -v solana-test-validator >/dev/null 2>&1; then
  found="$(command -v solana-test-validator)"
  if "$found" --version 2>/dev/null | grep -q " 4\.2\."; then
    log "using $found from PATH"
    echo "$found"; exit 0
  fi
  log "ignoring $found from PATH: not version 4.2.x"
fi

SHARED="${SOLGRID_SHARED_DIR:-$ROOT/../shared}"
XZ="$SHARED/bin/solana-test-validator-$VERSION-x86_64-linux-gnu.xz"
if [ -f "$XZ" ] && [ "$(uname -m)" = "x86_64" ] && command -v xz >/dev/null 2>&1; then
  want="$(awk '/solana-test-validator-'"$VERSION"'-x86_64-linux-gnu.xz/ {print $1}' "$SHARED/bin/SHA256SUMS" 2>/dev/null || true)"
  got="$(sha256sum "$XZ" | awk '{print $1}')"
  if [ -n "$want" ] && [ "$want" = "$got" ]; then
    mkdir -p "$TOOLS/bin"
    tmp="$(mktemp "$TOOLS/bin/.solana-test-validator.XXXXXX")"
    xz -dc "$XZ" > "$tmp"
    chmod 0755 "$tmp"
    if "$tmp" --version >/dev/null 2>&1; then
      mv -f "$tmp" "$BIN"
      log "unpacked the prebuilt $XZ (sha256 $got) to $BIN"
      echo "$BIN"; exit 0
    fi
    rm -f "$tmp"
    log "the prebuilt validator does not run on this machine; building it instead"
  else
    log "checksum mismatch for $XZ (want '${want}', got '$got'); building it instead"
  fi
fi

log "building solana-test-validator $VERSION from crates.io (about 25 minutes on 2 cores)"
pkgs="clang libclang-dev cmake libudev-dev libssl-dev pkg-config protobuf-compiler build-essential perl"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "apt-get install:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    # shellcheck disable=SC2086
    apt-get install -y -q $missing >&2
  else
    log "missing Debian packages:$missing (install them, then run this again)"
    exit 1
  fi
fi
RUSTUP_TOOLCHAIN=stable cargo install --locked agave-validator --version "$VERSION" \
  --bin solana-test-validator --root "$TOOLS" >&2
log "installed $BIN"
echo "$BIN"
