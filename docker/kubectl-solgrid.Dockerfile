# syntax=docker/dockerfile:1.7
# kubectl-solgrid image: a multi-stage build of the workspace package `kubectl-solgrid` into a
# distroless runtime (glibc + libgcc, no shell, user nonroot 65532).
#
#   docker build -f docker/kubectl-solgrid.Dockerfile -t ghcr.io/solgrid/kubectl-solgrid:0.1.0 .
#
# The context is the workspace root; docker/kubectl-solgrid.Dockerfile.dockerignore keeps
# target/ and other bulk out of it. `make images` (docker/build-images.sh) builds
# every image. Not built in this repository's CI: it has no Docker engine.
#
# The kubectl plugin, for CI images and `docker run` users (most install the
# binary on PATH instead: cargo install --path cli).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
# protoc for the device plugin's gRPC codegen; pkg-config, libssl-dev and
# libudev-dev for the Solana client's native dependencies (the workspace builds
# with one lock file, so every image's build has the same needs).
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler pkg-config libssl-dev libudev-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=solgrid-target \
    cargo build --release --locked -p kubectl-solgrid --bin kubectl-solgrid \
 && install -D -m 0755 target/release/kubectl-solgrid /out/kubectl-solgrid

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/kubectl-solgrid /usr/local/bin/kubectl-solgrid
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubectl-solgrid"]
