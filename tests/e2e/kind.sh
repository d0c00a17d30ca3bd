#!/usr/bin/env bash
# The end-to-end suite on kind, for machines with a Docker engine (`make test` runs the same
# suite on the built-in test bed instead; this script cannot run without Docker).
#   tests/e2e/kind.sh     create (or reuse) the kind cluster "cairn-e2e", build and load the
#                         images, and run tests/testbed/tests/e2e against it
# The suite installs the chart itself (helm template | kubectl apply) into its own namespaces,
# so use a cluster without Cairn. CLUSTER=<name> picks another kind cluster; extra arguments go
# to the test binary (e.g. -- --nocapture is already set).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v docker >/dev/null && docker info >/dev/null 2>&1 || {
  echo "kind.sh needs a running Docker engine; without one, run 'make test' (it uses the built-in test bed)" >&2
  exit 1
}
export PATH="$PATH:$(go env GOPATH)/bin"
command -v kind >/dev/null || go install sigs.k8s.io/kind@v0.30.0
# kubectl and helm: from PATH, else the pinned builds of tests/controlplane/build.sh.
command -v kubectl >/dev/null || export KUBECTL="$(tests/controlplane/build.sh kubernetes | tail -1)/kubectl"
command -v helm >/dev/null || export HELM="$(tests/controlplane/build.sh helm | tail -1)/helm"

CLUSTER=${CLUSTER:-cairn-e2e}
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
# The images, tagged with the chart's appVersion, from the public base images (BuildKit: the
# Dockerfiles use cache mounts).
mapfile -t images < <(IMAGE_BASES=public images/build.sh)
kind load docker-image --name "$CLUSTER" "${images[@]}"

export KUBECONFIG="${KUBECONFIG:-$HOME/.kube/config}"
kind export kubeconfig --name "$CLUSTER"
# The local cairn-worker computes the expected results (reference runs of each job).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}"
cargo build --workspace --bins
USE_EXISTING_CLUSTER=true cargo test -p cairn-testbed --test e2e -- --nocapture "$@"
