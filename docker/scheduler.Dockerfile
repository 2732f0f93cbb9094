# syntax=docker/dockerfile:1.7
# solgrid-scheduler image with Docker, from the same binary `make images` packs without Docker
# (docker/build-images.sh): the release build on distroless's cc runtime (glibc +
# libgcc + CA certificates, no shell, user nonroot 65532), the same entrypoint,
# user and ports.
#
#   cargo build --release --locked -p solgrid-scheduler --bin solgrid-scheduler
#   docker build -f docker/scheduler.Dockerfile -t ghcr.io/solgrid/solgrid-scheduler:0.2.0 target/release
#
# The context is the directory holding the binary (target/release, or
# $CARGO_TARGET_DIR/release); docker/scheduler.Dockerfile.dockerignore lets only the
# binary in. docker/build-images-docker.sh builds every image this way.
#
# The extender only; the chart runs it next to registry.k8s.io/kube-scheduler. Its
# filter/prioritize port (8888) listens on 127.0.0.1; 8889 is /metrics.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --chmod=0755 solgrid-scheduler /usr/local/bin/solgrid-scheduler
USER 65532:65532
EXPOSE 8889
ENTRYPOINT ["/usr/local/bin/solgrid-scheduler"]
