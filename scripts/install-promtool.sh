#!/usr/bin/env bash
# Installs promtool (Debian's `prometheus` package) unless a promtool is already on
# PATH or in .tools/bin. Needs root (or sudo) and apt.
set -euo pipefail
cd "$(dirname "$0")/.."

for p in "${PROMTOOL:-}" "$PWD/.tools/bin/promtool" "$(command -v promtool 2>/dev/null || true)"; do
  if [ -n "$p" ] && [ -x "$p" ]; then
    echo "promtool: $("$p" --version 2>&1 | head -n1) at $p"
    exit 0
  fi
done

sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "install-promtool: needs root to apt-get install prometheus (or put promtool on PATH / set PROMTOOL)" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-promtool: no apt-get: install promtool from https://prometheus.io/download/ and put it on PATH" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# --no-install-recommends: only promtool is wanted, not the server's web assets.
$sudo apt-get install -y -qq --no-install-recommends prometheus
# The package starts a prometheus service where an init system runs; stop it quietly.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  $sudo systemctl stop prometheus || true
fi
echo "promtool: $(promtool --version 2>&1 | head -n1) at $(command -v promtool)"
