#!/usr/bin/env bash
# The end-to-end suite on kind, for machines with a Docker engine (the default `make test` runs it
# on the built-in test bed instead; this script cannot run without Docker).
#   tests/e2e/kind.sh            create a cluster "cairn-e2e", build and load the images,
#                                install the chart, apply the count example
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v docker >/dev/null && docker info >/dev/null 2>&1 || {
  echo "kind.sh needs a running Docker engine; without one, run 'make test' (it uses the built-in test bed)" >&2
  exit 1
}
command -v kind >/dev/null || go install sigs.k8s.io/kind@v0.30.0
CLUSTER=${CLUSTER:-cairn-e2e}
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
docker build -t cairn/operator:0.1.0 -f operator/Dockerfile .
docker build -t cairn/worker:0.1.0 -f worker/Dockerfile .
kind load docker-image --name "$CLUSTER" cairn/operator:0.1.0 cairn/worker:0.1.0
export KUBECONFIG=${KUBECONFIG:-$HOME/.kube/config}
kubectl config use-context "kind-$CLUSTER"
helm upgrade --install cairn charts/cairn --namespace cairn-system --create-namespace --wait
# Not yet: the Rust e2e suite (tests/testbed/tests/e2e.rs) still reads the job's store from a
# hostPath of the test process and kills pods through the test bed's node agent, so it runs on
# the test bed only. On kind, apply the examples and watch them by hand:
kubectl apply -f examples/k8s/store-pvc.yaml -f examples/k8s/count.yaml
kubectl wait sj/count --for=jsonpath='{.status.phase}'=Running --timeout=300s
