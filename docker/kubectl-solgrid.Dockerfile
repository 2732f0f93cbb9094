# syntax=docker/dockerfile:1.7
# kubectl-solgrid image with Docker, from the same binary `make images` packs without Docker
# (docker/build-images.sh): the release build on distroless's cc runtime (glibc +
# libgcc + CA certificates, no shell, user nonroot 65532), the same entrypoint,
# user and ports.
#
#   cargo build --release --locked -p kubectl-solgrid --bin kubectl-solgrid
#   docker build -f docker/kubectl-solgrid.Dockerfile -t ghcr.io/solgrid/kubectl-solgrid:0.2.0 target/release
#
# The context is the directory holding the binary (target/release, or
# $CARGO_TARGET_DIR/release); docker/kubectl-solgrid.Dockerfile.dockerignore lets only the
# binary in. docker/build-images-docker.sh builds every image this way.
#
# The kubectl plugin, for CI images and `docker run` users (most install the
# binary on PATH instead: cargo install --path cli).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --chmod=0755 kubectl-solgrid /usr/local/bin/kubectl-solgrid
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubectl-solgrid"]
