# syntax=docker/dockerfile:1.7
# solgrid-operator image: a multi-stage build of the workspace package `solgrid-operator` into a
# distroless runtime (glibc + libgcc, no shell, user nonroot 65532).
#
#   docker build -f docker/operator.Dockerfile -t ghcr.io/solgrid/solgrid-operator:0.1.0 .
#
# The context is the workspace root; docker/operator.Dockerfile.dockerignore keeps
# target/ and other bulk out of it. `make images` (docker/build-images.sh) builds
# every image. Not built in this repository's CI: it has no Docker engine.
#
# Settles on Solana (the default `solana` feature) or the embedded ledger, whose
# journal the chart mounts at /var/lib/solgrid (a volume writable by group 65532).
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
    cargo build --release --locked -p solgrid-operator --bin solgrid-operator \
 && install -D -m 0755 target/release/solgrid-operator /out/solgrid-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/solgrid-operator /usr/local/bin/solgrid-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/solgrid-operator"]
