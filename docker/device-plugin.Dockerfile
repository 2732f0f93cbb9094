# syntax=docker/dockerfile:1.7
# solgrid-device-plugin image: a multi-stage build of the workspace package `solgrid-device-plugin` into a
# distroless runtime (glibc + libgcc, no shell, user nonroot 65532).
#
#   docker build -f docker/device-plugin.Dockerfile -t ghcr.io/solgrid/solgrid-device-plugin:0.1.0 .
#
# The context is the workspace root; docker/device-plugin.Dockerfile.dockerignore keeps
# target/ and other bulk out of it. `make images` (docker/build-images.sh) builds
# every image. Not built in this repository's CI: it has no Docker engine.
#
# The DaemonSet runs this image as uid 0 without capabilities (not privileged) only
# because the kubelet's device-plugins directory and socket belong to root. NVML
# (libnvidia-ml.so.1) is injected at run time by the NVIDIA container toolkit and
# loaded with dlopen(), so the image carries no driver.
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
    cargo build --release --locked -p solgrid-device-plugin --bin solgrid-device-plugin \
 && install -D -m 0755 target/release/solgrid-device-plugin /out/solgrid-device-plugin

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/solgrid-device-plugin /usr/local/bin/solgrid-device-plugin
USER 65532:65532
EXPOSE 9402
ENTRYPOINT ["/usr/local/bin/solgrid-device-plugin"]
