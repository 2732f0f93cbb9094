# syntax=docker/dockerfile:1.7
# solgrid-operator image with Docker, from the same binary `make images` packs without Docker
# (docker/build-images.sh): the release build on distroless's cc runtime (glibc +
# libgcc + CA certificates, no shell, user nonroot 65532), the same entrypoint,
# user and ports.
#
#   cargo build --release --locked -p solgrid-operator --bin solgrid-operator
#   docker build -f docker/operator.Dockerfile -t ghcr.io/solgrid/solgrid-operator:0.2.0 target/release
#
# The context is the directory holding the binary (target/release, or
# $CARGO_TARGET_DIR/release); docker/operator.Dockerfile.dockerignore lets only the
# binary in. docker/build-images-docker.sh builds every image this way.
#
# Settles on Solana (the default `solana` feature) or the embedded ledger, whose
# journal the chart mounts at /var/lib/solgrid (a volume writable by group 65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --chmod=0755 solgrid-operator /usr/local/bin/solgrid-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/solgrid-operator"]
