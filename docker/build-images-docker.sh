#!/usr/bin/env bash
# Builds every solgrid image from docker/<component>.Dockerfile (needs a Docker
# engine with BuildKit). `make images` runs this.
#
#   REGISTRY=ghcr.io/solgrid TAG=0.1.0 PUSH=1 PLATFORMS=linux/amd64,linux/arm64 docker/build-images.sh
#
# PUSH=1 pushes (and, with PLATFORMS, builds multi-arch through buildx).
set -euo pipefail
cd "$(dirname "$0")/.."
REGISTRY="${REGISTRY:-ghcr.io/solgrid}"
TAG="${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)}"
PLATFORMS="${PLATFORMS:-}"
if ! docker info >/dev/null 2>&1; then
  echo "build-images: no Docker engine reachable (docker info failed); images are built where one exists" >&2
  exit 1
fi
for comp in operator scheduler device-plugin kubectl-solgrid; do
  case "$comp" in
    kubectl-solgrid) image="$REGISTRY/kubectl-solgrid:$TAG" ;;
    *) image="$REGISTRY/solgrid-$comp:$TAG" ;;
  esac
  echo "== $image"
  if [ -n "$PLATFORMS" ]; then
    docker buildx build --platform "$PLATFORMS" -f "docker/$comp.Dockerfile" -t "$image" \
      ${PUSH:+--push} .
  else
    DOCKER_BUILDKIT=1 docker build -f "docker/$comp.Dockerfile" -t "$image" .
    if [ -n "${PUSH:-}" ]; then docker push "$image"; fi
  fi
done
