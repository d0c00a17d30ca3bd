#!/usr/bin/env bash
# The end-to-end suite on a kind cluster: what `make test` runs here, and what to run on a
# laptop with Docker and internet. One path for both:
#   1. tests/kind/cluster.sh up: images from the repository's Dockerfiles, the services image
#      (Kafka, MinIO), a kind cluster, `kind load`
#   2. the local cairn-worker (reference runs) and the suite (tests/e2e/tests/e2e), which
#      installs the chart with `helm install` and runs every flow
#   3. tests/kind/cluster.sh down (KEEP_CLUSTER=1 leaves the cluster up for a look)
#
# Usage: tests/e2e/kind.sh [flow...]   (flows: count, autoscale, files, kafka, windows, standby, wasm; default all)
#        tests/e2e/kind.sh pauses      (opt-in, not in "all": the upgrade/rescale/repartition pause
#                                       measurement, CAIRN_E2E_PAUSES_MB of state, default 100)
#
# CAIRN_KIND_SOURCES=local (default: everything built on this machine, no registry) or public
# (your Docker, kind's node image, public base images); see tests/kind/cluster.sh.
# kubectl and helm: KUBECTL and HELM if set, else the pinned builds of tests/controlplane/build.sh
# (local) or the ones on PATH (public). Extra arguments go to the test binary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
log() { echo "kind.sh: $*" >&2; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}"
sources="${CAIRN_KIND_SOURCES:-local}"

tool() { # <name> <build.sh target> <line of its output>
	if [[ "$sources" == public ]] && command -v "$1" >/dev/null; then
		command -v "$1"
	else
		echo "$(tests/controlplane/build.sh "$2" | sed -n "$3")/$1"
	fi
}
export KUBECTL="${KUBECTL:-$(tool kubectl kubernetes '$p')}"
export HELM="${HELM:-$(tool helm helm '$p')}"

started=$SECONDS
if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
	trap 'tests/kind/cluster.sh down' EXIT
fi
env_file="$(tests/kind/cluster.sh up)"
# shellcheck source=/dev/null # written by cluster.sh up
. "$env_file"
log "cluster up in $((SECONDS - started)) s"

# The same features as `make unit`, so this reuses its build.
cargo build --workspace --bins --features cairn-worker/test-hooks
suite_start=$SECONDS
# Arguments select flows (count, autoscale, files, kafka, windows, standby, wasm); the suite's own main runs them
# (main.rs).
cargo test --workspace --features cairn-worker/test-hooks --test e2e -- --nocapture "$@"
log "suite passed in $((SECONDS - suite_start)) s; $((SECONDS - started)) s in all before teardown"
