# syntax=docker/dockerfile:1.7
# verifier image with Docker, from the same binary `make images` packs without Docker
# (docker/build-images.sh): the release build on distroless's cc runtime (glibc +
# libgcc + CA certificates, no shell, user nonroot 65532), the same entrypoint,
# user and ports.
#
#   cargo build --release --locked -p solgrid-operator --bin solgrid-operator
#   docker build -f docker/verifier.Dockerfile -t ghcr.io/solgrid/verifier:0.2.0 target/release
#
# The context is the directory holding the binary (target/release, or
# $CARGO_TARGET_DIR/release); docker/verifier.Dockerfile.dockerignore lets only the
# binary in. docker/build-images-docker.sh builds every image this way.
#
# The hourly proof-of-work verification pod's image (operator.verifierImage): the
# operator binary, run as `solgrid-operator verify-worker --seed <u64> --size <n>`
# (the pod gives only args). A GPU implementation with the same contract can
# replace it (docs/staking.md).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --chmod=0755 solgrid-operator /usr/local/bin/solgrid-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/solgrid-operator"]
