# The README's commands. Build output goes to a persistent directory outside the checkout so
# RocksDB (about 10 minutes to compile on 2 cores) is built once per machine, not per clone.
CARGO_TARGET_DIR ?= $(HOME)/.cache/cairn/target
export CARGO_TARGET_DIR
JOB ?= examples/wordcount.yaml
WORKER := $(CARGO_TARGET_DIR)/debug/cairn-worker

.PHONY: run test prereqs build lint fmt unit e2e fresh-machine bench clean-state crds images

## Run the example job locally (no cluster): Ctrl-C stops it with a final checkpoint; run again to resume.
## `--workspace` resolves dependency features as `make test` does, so the two share one build of
## RocksDB (`-p cairn-worker` alone would compile it again).
run: prereqs
	cargo build --workspace --bin cairn-worker
	$(WORKER) run $(JOB) --metrics-addr 127.0.0.1:9249

## Everything CI checks: formatting, lints, unit and integration tests, the end-to-end suite on a
## kind cluster built on this machine (docs/testbed.md), and the README's install path on a
## pristine Debian container (docs/fresh-machine.md).
## The e2e suite spends most of its time waiting for jobs, so the fresh-machine check runs next to
## it (each one's output is printed whole when it ends).
test: prereqs lint unit
	$(MAKE) --no-print-directory -j2 --output-sync=target e2e fresh-machine

## The operator's flows on a real cluster: images from the Dockerfiles, a kind cluster, the chart
## installed with helm install, Kafka and MinIO as pods (tests/e2e/kind.sh; needs root and Docker,
## which scripts/install-prereqs.sh installs).
e2e:
	tests/e2e/kind.sh

## `make run` and the prerequisites of `make test` on a pristine Debian container.
fresh-machine:
	tests/fresh-machine/check.sh

## cairn/worker and cairn/operator images (tagged with the chart's appVersion) from the
## Dockerfiles, in a Docker engine owned by the build (scripts/dockerd.sh); docs/helm.md#images.
images:
	export DOCKER_HOST=$$(scripts/dockerd.sh start) && images/build.sh

## Regenerate the CRD (committed under crds/ and in the chart; a test checks they are current).
crds:
	cargo run -q -p cairn-operator -- crdgen > crds/streamjobs.cairn.dev.yaml
	cp crds/streamjobs.cairn.dev.yaml charts/cairn/crds/streamjobs.cairn.dev.yaml

prereqs:
	@./scripts/install-prereqs.sh
	@./scripts/claim-target-dir.sh

build: prereqs
	cargo build --workspace --all-targets

## Lints both builds of the worker: release (no test hooks) and test (feature test-hooks); the
## e2e suite separately (--all-targets leaves it out: it is `test = false`, needing a cluster).
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --workspace --all-targets --features cairn-worker/test-hooks -- -D warnings
	cargo clippy --workspace --features cairn-worker/test-hooks --test e2e -- -D warnings

## The worker's fault-injection hooks are compiled in for the tests (feature test-hooks); the
## last line checks that a build without the feature has none. It also builds what the next steps
## run on the host (the binaries as `make run` builds them, the e2e suite), so the e2e suite and
## the fresh-machine check, which run side by side and read this build, find it complete. The
## chart tests get helm from here (built once per version; the tests build nothing).
unit:
	cargo build --workspace --bins --features cairn-worker/test-hooks
	helm_dir="$$(tests/controlplane/build.sh helm)" && \
		HELM="$$helm_dir" cargo test --workspace --features cairn-worker/test-hooks
	cargo test --workspace --lib compiled_out_without_the_feature
	cd tests/services/gcs && GOFLAGS=-buildvcs=false go test ./...
	cargo build --workspace --bins
	cargo test --workspace --features cairn-worker/test-hooks --test e2e --no-run

fmt:
	cargo fmt --all

## Benchmarks (release build; writes the numbers recorded in docs/benchmarks.md).
bench: prereqs
	cargo build --release --workspace --bin cairn-bench --bin cairn-worker
	$(CARGO_TARGET_DIR)/release/cairn-bench all

## Forget the local example job's state and checkpoints.
clean-state:
	rm -rf .cairn out
