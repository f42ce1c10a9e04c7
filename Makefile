# Palisade's build and test entry points. `make demo` and `make test` are the two commands the
# README promises; both need root (network namespaces, iptables, ipset).

CARGO ?= cargo
IMAGE_REPOSITORY ?= palisade
IMAGE_TAG ?= dev
export CARGO_TERM_COLOR ?= never

# nextest runs each test in its own process, in parallel; plain cargo test is the fallback.
TEST_RUNNER := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo "nextest run --no-fail-fast" || echo "test --no-fail-fast")

# iptables, ipset and iproute2: installed (as root on Debian) or named, before anything runs.
kernel-tools:
	integration/kernel-tools.sh

test-tools:
	integration/kernel-tools.sh --for-tests

.PHONY: kernel-tools test-tools build lint test test-rust bench bench-quick soak upgrade fuzz demo apiserver chart-tools test-chart manifests image kind-e2e

build:
	$(CARGO) build --release --bins

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

# The real kube-apiserver the agent and chart tests run against; cached outside the repository.
apiserver:
	integration/apiserver/build.sh >/dev/null

test: test-tools lint apiserver test-rust bench-quick test-chart

test-rust:
	$(CARGO) build --release --all-targets
	$(CARGO) $(TEST_RUNNER) --release

bench:
	$(CARGO) bench --bench compile
	$(CARGO) bench --bench agent
	$(CARGO) bench --bench apply
	$(CARGO) bench --bench render

# The scale figures in the README, with fewer samples (the apply bench needs root).
bench-quick:
	PALISADE_BENCH_QUICK=1 $(CARGO) bench --bench compile
	PALISADE_BENCH_QUICK=1 $(CARGO) bench --bench agent
	PALISADE_BENCH_QUICK=1 $(CARGO) bench --bench apply
	PALISADE_BENCH_QUICK=1 $(CARGO) bench --bench render

# The soak: 2 agents on the real apiserver, churn at ~20 changes/s, continuous probing, for
# SOAK_SECONDS (default 1800); it prints its report (see the README's Hardening section).
SOAK_SECONDS ?= 1800
soak: test-tools apiserver
	$(CARGO) build --release --all-targets
	PALISADE_SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) test --release --test soak -- --ignored --nocapture

# Upgrades in place, under probing: both agents replaced by this build, from manifests and by
# `helm upgrade` from the old commit's chart, from the build of UPGRADE_FROM (default: the last
# commit before the tier model changed every chain and set name).
UPGRADE_FROM ?= 77853d7
upgrade: test-tools apiserver
	$(CARGO) build --release --all-targets
	eval "$$(integration/chart/install-tools.sh)" && \
	  old=$$(integration/upgrade/build-old.sh $(UPGRADE_FROM)) && \
	  PALISADE_UPGRADE_FROM=$$old PALISADE_UPGRADE_FROM_COMMIT=$(UPGRADE_FROM) \
	  $(CARGO) test --release --test upgrade -- --ignored --nocapture --test-threads 1

# Coverage-guided fuzzing of the parsers (AFL++), FUZZ_SECONDS per target (default 600);
# crashes land in fuzz/regressions/, which `make test` replays.
FUZZ_SECONDS ?= 600
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh

# The seed walkthrough with real packets between network namespaces (root).
demo: kernel-tools
	$(CARGO) build --release --bins --example demo
	target/release/examples/demo

chart-tools:
	integration/chart/install-tools.sh

test-chart: build
	integration/chart/test-chart.sh
	integration/chart/test-install.sh

manifests: build
	integration/chart/render-manifests.sh

image:
	docker build -t $(IMAGE_REPOSITORY):$(IMAGE_TAG) .

kind-e2e: image
	PALISADE_IMAGE_REPOSITORY=$(IMAGE_REPOSITORY) PALISADE_IMAGE_TAG=$(IMAGE_TAG) SKIP_BUILD=1 \
		integration/chart/kind-e2e.sh
