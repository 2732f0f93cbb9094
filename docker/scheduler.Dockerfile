# syntax=docker/dockerfile:1.7
# solgrid-scheduler image: a multi-stage build of the workspace package `solgrid-scheduler` into a
# distroless runtime (glibc + libgcc, no shell, user nonroot 65532).
#
#   docker build -f docker/scheduler.Dockerfile -t ghcr.io/solgrid/solgrid-scheduler:0.1.0 .
#
# The context is the workspace root; docker/scheduler.Dockerfile.dockerignore keeps
# target/ and other bulk out of it. `make images` (docker/build-images.sh) builds
# every image. Not built in this repository's CI: it has no Docker engine.
#
# The extender only; the chart runs it next to registry.k8s.io/kube-scheduler.
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
    cargo build --release --locked -p solgrid-scheduler --bin solgrid-scheduler \
 && install -D -m 0755 target/release/solgrid-scheduler /out/solgrid-scheduler

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/solgrid-scheduler /usr/local/bin/solgrid-scheduler
USER 65532:65532
EXPOSE 8888
ENTRYPOINT ["/usr/local/bin/solgrid-scheduler"]
