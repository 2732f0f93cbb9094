#!/usr/bin/env bash
# Provides kube-apiserver, kube-controller-manager and kube-scheduler v1.36.2 for the
# e2e tests' local control plane (e2e/src/cluster.rs) and prints the directory that
# holds them on stdout (everything else goes to stderr). etcd comes from the system
# (Debian: apt-get install etcd-server).
#
# Order of preference:
#   1. $SOLGRID_KUBE_BIN_DIR, if it holds all three;
#   2. <repo>/.tools/bin (unpacked or downloaded by an earlier run);
#   3. the prebuilt .xz files in shared/bin beside the repository (../shared, or
#      $SOLGRID_SHARED_DIR), after checking their SHA-256 against shared/bin/SHA256SUMS;
#   4. the official release binaries from dl.k8s.io, checked against the .sha256
#      files published next to them.
set -euo pipefail

VERSION=v1.36.2
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.tools/bin"
log() { echo "install-kube: $*" >&2; }
have_all() { for c in "${COMPONENTS[@]}"; do [ -x "$1/$c" ] || return 1; done; }

if [ -n "${SOLGRID_KUBE_BIN_DIR:-}" ] && have_all "$SOLGRID_KUBE_BIN_DIR"; then
  log "using \$SOLGRID_KUBE_BIN_DIR=$SOLGRID_KUBE_BIN_DIR"
  echo "$SOLGRID_KUBE_BIN_DIR"; exit 0
fi
mkdir -p "$BIN"
SHARED="${SOLGRID_SHARED_DIR:-$ROOT/../shared}"
for c in "${COMPONENTS[@]}"; do
  [ -x "$BIN/$c" ] && continue
  tmp="$(mktemp "$BIN/.$c.XXXXXX")"
  xz_file="$SHARED/bin/$c-$VERSION-linux-amd64.xz"
  if [ -f "$xz_file" ] && command -v xz >/dev/null 2>&1; then
    want="$(awk -v f="$c-$VERSION-linux-amd64.xz" '$2 ~ f"$" {print $1}' "$SHARED/bin/SHA256SUMS" 2>/dev/null || true)"
    got="$(sha256sum "$xz_file" | awk '{print $1}')"
    if [ -z "$want" ] || [ "$want" != "$got" ]; then
      rm -f "$tmp"; log "checksum mismatch for $xz_file (want '$want', got '$got')"; exit 1
    fi
    xz -dc "$xz_file" > "$tmp"
    log "unpacked $xz_file (sha256 $got)"
  else
    url="https://dl.k8s.io/release/$VERSION/bin/linux/amd64/$c"
    log "downloading $url"
    if ! curl -fsSL --retry 3 -o "$tmp" "$url" || ! want="$(curl -fsSL --retry 3 "$url.sha256")"; then
      rm -f "$tmp"
      log "could not get $c $VERSION: the e2e scenarios on the local control plane will skip."
      log "Put kube-apiserver, kube-controller-manager and kube-scheduler $VERSION in a folder and"
      log "set SOLGRID_KUBE_BIN_DIR to it (or run the e2e tests against a cluster: KUBECONFIG)."
      exit 0
    fi
    got="$(sha256sum "$tmp" | awk '{print $1}')"
    if [ "$want" != "$got" ]; then
      rm -f "$tmp"; log "checksum mismatch for $url (want '$want', got '$got')"; exit 1
    fi
  fi
  chmod 0755 "$tmp"
  mv -f "$tmp" "$BIN/$c"
done
have_all "$BIN" || { log "missing binaries in $BIN"; exit 1; }
log "using $BIN"
echo "$BIN"
