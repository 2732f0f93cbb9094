#!/usr/bin/env bash
# The same images as docker/build-images.sh, for those with a Docker engine: each
# docker/<image>.Dockerfile copies the already-built binary from BIN_DIR onto
# gcr.io/distroless/cc-debian12:nonroot (pulled from its registry). `make images-docker`.
#
#   docker/build-images-docker.sh --bin-dir target/release
#   REGISTRY=ghcr.io/solgrid TAG=0.2.0 PUSH=1 docker/build-images-docker.sh --bin-dir target/release
#
# PUSH=1 pushes. The binaries are built for the machine's architecture, so a
# multi-arch image needs one build per architecture (and `docker manifest`).
set -euo pipefail
cd "$(dirname "$0")/.."
REGISTRY="${REGISTRY:-ghcr.io/solgrid}"
TAG="${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)}"
BIN_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) BIN_DIR="$2"; shift 2 ;;
    *) echo "build-images-docker: unknown argument $1" >&2; exit 1 ;;
  esac
done
[ -n "$BIN_DIR" ] || { echo "build-images-docker: --bin-dir DIR is required (e.g. target/release)" >&2; exit 1; }
if ! docker info >/dev/null 2>&1; then
  echo "build-images-docker: no Docker engine reachable (docker info failed); docker/build-images.sh needs none" >&2
  exit 1
fi
# image name, binary: the list docker/build-images.sh builds
REGISTRY="$REGISTRY" TAG="$TAG" bash docker/build-images.sh --list | while read -r name bin _ _ _; do
  case "$name" in
    solgrid-*) file="${name#solgrid-}" ;;
    *) file="$name" ;;
  esac
  [ -x "$BIN_DIR/$bin" ] || { echo "build-images-docker: $BIN_DIR/$bin: not built" >&2; exit 1; }
  image="$REGISTRY/$name:$TAG"
  echo "== $image"
  DOCKER_BUILDKIT=1 docker build -f "docker/$file.Dockerfile" -t "$image" "$BIN_DIR"
  if [ -n "${PUSH:-}" ]; then docker push "$image"; fi
done
