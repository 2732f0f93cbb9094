# solgrid — a permissionless GPU compute market on Kubernetes.
#
#   make demo    the whole market in one process (simulator, embedded ledger), report + plots in out/demo
#   make test    every test: unit, property, controller (tower-test), CRD drift, helm/promtool,
#                device plugin (fake kubelet), settlement on a real solana-test-validator (loopback only)
#   make lint    rustfmt check, clippy -D warnings, helm lint
#   make crds    regenerate crds/*.yaml (and the chart's copy) from the Rust types
#   make bench   benchmarks: extender, simulator, device plugin, ledger/settlement, operator cache
#   make e2e     end-to-end tests against the cluster in $KUBECONFIG
#                (make test runs them on a local control plane: e2e/README.md)
#   make images  container images without Docker (umoci, skopeo; out/images, docs/images.md)

SHELL := /bin/bash
CARGO ?= cargo
# Tools the project installs itself (helm, solana-test-validator) land here.
TOOLS := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)
DEMO_OUT ?= out/demo
DEMO_ARGS ?=

.PHONY: all build test test-unit test-solana tools lint fmt crds crds-check demo bench e2e images images-docker clean

all: build

build:
	$(CARGO) build --workspace --all-targets --locked

## Tools the tests need (idempotent: reuses what the machine has).
## install-kube: kube-apiserver & co for the e2e tests' local control plane.
tools:
	bash scripts/install-helm.sh
	bash scripts/install-promtool.sh
	bash scripts/install-validator.sh
	bash scripts/install-kube.sh >/dev/null
	bash docker/build-images.sh --fetch

## Every test. The build runs with the network; the tests run in a network
## namespace with only loopback (solana-test-validator listens on every interface
## whatever it is told, so it must never see a real one).
test: tools
	$(CARGO) test --workspace --locked --no-run
	SOLGRID_VALIDATOR="$$(bash scripts/install-validator.sh)" SOLGRID_REQUIRE_VALIDATOR=1 \
	SOLGRID_KUBE_BIN_DIR="$$(bash scripts/install-kube.sh)" SOLGRID_E2E_REQUIRE_CLUSTER=$${CI:+1} KUBECONFIG= \
	bash scripts/test-in-netns.sh $(CARGO) test --workspace --locked --offline --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	helm lint --strict helm/solgrid
	for v in helm/solgrid/ci/*.yaml; do helm lint --strict helm/solgrid -f $$v; done

fmt:
	$(CARGO) fmt --all

crds:
	$(CARGO) run --quiet --locked -p solgrid-crds --bin crdgen
	@if [ -x scripts/sync-chart-crds.sh ] || [ -f scripts/sync-chart-crds.sh ]; then bash scripts/sync-chart-crds.sh; fi

crds-check:
	$(CARGO) run --quiet --locked -p solgrid-crds --bin crdgen -- --check
	bash scripts/sync-chart-crds.sh --check

demo:
	$(CARGO) run --release --locked -p solgrid-sim -- --out $(DEMO_OUT) $(DEMO_ARGS)

bench: tools
	bash scripts/bench.sh

e2e:
	@if [ -z "$$KUBECONFIG" ]; then echo "make e2e: KUBECONFIG is not set; tests/computejob.rs skips, tests/cluster.rs starts a local control plane when it finds one (e2e/README.md)"; fi
	$(CARGO) test --locked -p solgrid-e2e -- --test-threads=1 --nocapture

## The binaries the images carry; `make images` builds them (release) and packs
## them with docker/build-images.sh (no Docker engine, no registry).
IMAGE_BINS := solgrid-operator solgrid-scheduler solgrid-device-plugin kubectl-solgrid
RELEASE_DIR = $$($(CARGO) metadata --format-version 1 --no-deps | jq -r .target_directory)/release

images:
	$(CARGO) build --release --locked $(addprefix -p ,$(IMAGE_BINS)) $(addprefix --bin ,$(IMAGE_BINS))
	bash docker/build-images.sh --bin-dir "$(RELEASE_DIR)"

## The same images with a Docker engine (docker/*.Dockerfile on distroless).
images-docker:
	$(CARGO) build --release --locked $(addprefix -p ,$(IMAGE_BINS)) $(addprefix --bin ,$(IMAGE_BINS))
	bash docker/build-images-docker.sh --bin-dir "$(RELEASE_DIR)"

clean:
	$(CARGO) clean
	rm -rf out
