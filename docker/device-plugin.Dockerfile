# syntax=docker/dockerfile:1.7
# solgrid-device-plugin image with Docker, from the same binary `make images` packs without Docker
# (docker/build-images.sh): the release build on distroless's cc runtime (glibc +
# libgcc + CA certificates, no shell, user nonroot 65532), the same entrypoint,
# user and ports.
#
#   cargo build --release --locked -p solgrid-device-plugin --bin solgrid-device-plugin
#   docker build -f docker/device-plugin.Dockerfile -t ghcr.io/solgrid/solgrid-device-plugin:0.2.0 target/release
#
# The context is the directory holding the binary (target/release, or
# $CARGO_TARGET_DIR/release); docker/device-plugin.Dockerfile.dockerignore lets only the
# binary in. docker/build-images-docker.sh builds every image this way.
#
# The DaemonSet runs this image as uid 0 without capabilities (not privileged) only
# because the kubelet's device-plugins directory and socket belong to root. NVML
# (libnvidia-ml.so.1) is injected at run time by the NVIDIA container toolkit and
# loaded with dlopen(), so the image carries no driver.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --chmod=0755 solgrid-device-plugin /usr/local/bin/solgrid-device-plugin
USER 65532:65532
EXPOSE 9402
ENTRYPOINT ["/usr/local/bin/solgrid-device-plugin"]
