#!/usr/bin/env bash
# Scrapes a component's /metrics and checks it with `promtool check metrics`
# (exposition format, naming and HELP/TYPE lint).
#
#   scripts/check-metrics.sh http://127.0.0.1:8080/metrics     # operator
#   scripts/check-metrics.sh http://127.0.0.1:8889/metrics     # scheduler extender
#   scripts/check-metrics.sh http://127.0.0.1:9402/metrics     # device plugin
#   scripts/check-metrics.sh - < scraped.txt                   # a saved scrape
#
# Exit status: promtool's (non-zero on a problem). Needs curl (or wget) and promtool
# (scripts/install-promtool.sh); PROMTOOL may name the binary.
set -euo pipefail
url="${1:?usage: check-metrics.sh URL|-}"
cd "$(dirname "$0")/.."
promtool="${PROMTOOL:-}"
if [ -z "$promtool" ]; then
  if command -v promtool >/dev/null 2>&1; then promtool=promtool
  elif [ -x .tools/bin/promtool ]; then promtool=.tools/bin/promtool
  else
    echo "check-metrics: promtool not found: run scripts/install-promtool.sh or set PROMTOOL" >&2
    exit 2
  fi
fi
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
if [ "$url" = "-" ]; then
  cat > "$tmp"
elif command -v curl >/dev/null 2>&1; then
  curl -fsS --max-time 10 "$url" -o "$tmp"
elif command -v wget >/dev/null 2>&1; then
  wget -q -T 10 -O "$tmp" "$url"
else
  echo "check-metrics: needs curl or wget" >&2
  exit 2
fi
if [ ! -s "$tmp" ]; then
  echo "check-metrics: $url returned nothing" >&2
  exit 1
fi
echo "check-metrics: $(grep -c '^# TYPE' "$tmp" || true) metric families from $url"
"$promtool" check metrics < "$tmp"
