#!/usr/bin/env bash
# Copies the generated CRDs (crds/*.yaml) into the Helm chart's crds/ directory, and
# the scheduler's KubeSchedulerConfiguration (scheduler/deploy/kube-scheduler-config.yaml,
# when it exists) into the chart's files/, so that the chart installs exactly what the
# Rust types generate. `make crds` runs it; the helm-tests crate fails when they differ.
#
#   --check   change nothing; exit 1 and name the files that differ
set -euo pipefail
cd "$(dirname "$0")/.."
chart=helm/solgrid
check=0
[ "${1:-}" = "--check" ] && check=1

pairs=()
for f in crds/*.yaml; do
  pairs+=("$f:$chart/crds/$(basename "$f")")
done
if [ -f scheduler/deploy/kube-scheduler-config.yaml ]; then
  pairs+=("scheduler/deploy/kube-scheduler-config.yaml:$chart/files/kube-scheduler-config.yaml")
fi

status=0
for p in "${pairs[@]}"; do
  src="${p%%:*}"
  dst="${p#*:}"
  if [ $check = 1 ]; then
    if ! cmp -s "$src" "$dst"; then
      echo "out of sync: $dst (from $src); run scripts/sync-chart-crds.sh" >&2
      status=1
    fi
  else
    mkdir -p "$(dirname "$dst")"
    cp "$src" "$dst"
  fi
done
if [ $check = 1 ]; then
  # A CRD removed from crds/ must go from the chart too.
  for dst in "$chart"/crds/*.yaml; do
    [ -e "$dst" ] || continue
    if [ ! -f "crds/$(basename "$dst")" ]; then
      echo "stale: $dst has no crds/$(basename "$dst")" >&2
      status=1
    fi
  done
else
  for dst in "$chart"/crds/*.yaml; do
    [ -e "$dst" ] || continue
    [ -f "crds/$(basename "$dst")" ] || rm -f "$dst"
  done
  echo "synced ${#pairs[@]} file(s) into $chart"
fi
exit $status
