#!/usr/bin/env bash
# The fleet benchmark: the real `cairn-operator run` (release build) against a real API server
# with 500 StreamJobs (docs/benchmarks.md#operator-with-500-streamjobs).
#
# Usage: tests/fleet/run.sh            (environment: see the defaults below)
#
# Starts, on loopback only and in a scratch directory: etcd, kube-apiserver (token auth, an
# audit log of the operator's requests) and kube-controller-manager (statefulset and garbage
# collector controllers: StatefulSets create pods, foreground deletion works). There is no
# scheduler and no kubelet: worker pods stay Pending unless the driver plays kubelet for them
# (tests/fleet/driver.py: FLEET_FAKE jobs get a Running pod status with a loopback pod IP and a
# stub control API that answers like a healthy worker). Then installs the CRD, starts the
# operator and runs tests/fleet/driver.py, which creates the jobs, measures each phase and
# prints the figures as a markdown table. Everything it starts is stopped on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
log() { echo "fleet: $*" >&2; }

: "${FLEET_JOBS:=500}"          # StreamJobs in all
: "${FLEET_NAMESPACES:=5}"      # spread over this many namespaces
: "${FLEET_PENDING:=30}"        # running jobs whose pod stays Pending (no kubelet)
: "${FLEET_FAKE:=20}"           # running jobs whose pod is made Running, with a stub control API
: "${FLEET_STEADY_SECONDS:=300}" # steady-state window
: "${FLEET_PHASE_TIMEOUT:=600}" # a phase that does not converge in this time fails, saying what is stuck
: "${FLEET_PORT:=16443}"        # kube-apiserver's port (127.0.0.1)
: "${FLEET_OPERATOR:=}"         # the operator binary; default: a release build in $CARGO_TARGET_DIR
export FLEET_JOBS FLEET_NAMESPACES FLEET_PENDING FLEET_FAKE FLEET_STEADY_SECONDS FLEET_PHASE_TIMEOUT

k8s="$("$repo/tests/controlplane/build.sh" kubernetes | tail -n 1)"
if [[ -z "$FLEET_OPERATOR" ]]; then
	target="${CARGO_TARGET_DIR:-$repo/target}"
	log "building cairn-operator (release, $target)"
	(cd "$repo" && CARGO_TARGET_DIR="$target" cargo build --release -p cairn-operator >&2)
	FLEET_OPERATOR="$target/release/cairn-operator"
fi

work="$(mktemp -d /tmp/cairn-fleet.XXXXXX)"
pids=()
cleanup() {
	local rc=$?
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill "${pids[i]}" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ "${FLEET_KEEP:-0}" == 1 || $rc -ne 0 ]]; then
		log "logs kept in $work"
	else
		rm -rf "$work"
	fi
	exit $rc
}
trap cleanup EXIT INT TERM

# --- certificates and tokens --------------------------------------------------------------
cd "$work"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=fleet-ca" \
	-keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
	-keyout apiserver.key -out apiserver.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
	-extfile san.ext -out apiserver.crt 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
admin_token="$(openssl rand -hex 16)"
operator_token="$(openssl rand -hex 16)"
kcm_token="$(openssl rand -hex 16)"
# The operator is its own user (so the audit log tells its requests apart) in system:masters:
# the chart's RBAC is not what is measured here.
cat >tokens.csv <<EOF
$admin_token,fleet-admin,1,"system:masters"
$operator_token,cairn-operator,2,"system:masters"
$kcm_token,system:kube-controller-manager,3,"system:masters"
EOF
cat >audit.yaml <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    users: [cairn-operator]
  - level: None
EOF
kubeconfig() { # <file> <token>
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: fleet
    cluster:
      server: https://127.0.0.1:$FLEET_PORT
      certificate-authority: $work/ca.crt
users:
  - name: u
    user:
      token: $2
contexts:
  - name: fleet
    context: {cluster: fleet, user: u}
current-context: fleet
EOF
}
kubeconfig admin.kubeconfig "$admin_token"
kubeconfig operator.kubeconfig "$operator_token"
kubeconfig kcm.kubeconfig "$kcm_token"

# --- control plane ------------------------------------------------------------------------
"$k8s/etcd" --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:12379 \
	--advertise-client-urls http://127.0.0.1:12379 --listen-peer-urls http://127.0.0.1:12380 \
	--initial-advertise-peer-urls http://127.0.0.1:12380 \
	--initial-cluster default=http://127.0.0.1:12380 --quota-backend-bytes 2147483648 \
	>etcd.log 2>&1 &
pids+=($!)
"$k8s/kube-apiserver" --etcd-servers http://127.0.0.1:12379 \
	--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$FLEET_PORT" \
	--tls-cert-file apiserver.crt --tls-private-key-file apiserver.key --client-ca-file ca.crt \
	--token-auth-file tokens.csv --authorization-mode RBAC \
	--service-account-issuer https://kubernetes.default.svc \
	--service-account-key-file sa.pub --service-account-signing-key-file sa.key \
	--service-cluster-ip-range 10.96.0.0/16 \
	--audit-policy-file audit.yaml --audit-log-path "$work/audit.log" \
	--audit-log-maxsize 2000 --audit-log-format json \
	>apiserver.log 2>&1 &
pids+=($!)
export KUBECONFIG="$work/admin.kubeconfig"
kubectl="$k8s/kubectl"
for _ in $(seq 120); do
	if "$kubectl" get --raw /readyz >/dev/null 2>&1; then break; fi
	sleep 1
done
"$kubectl" get --raw /readyz >/dev/null || {
	log "kube-apiserver not ready in 120 s; tail of its log:"
	tail -n 20 apiserver.log >&2
	exit 1
}
log "kube-apiserver ready on 127.0.0.1:$FLEET_PORT"
"$k8s/kube-controller-manager" --kubeconfig kcm.kubeconfig --leader-elect=false \
	--controllers statefulset,garbagecollector,namespace --bind-address 127.0.0.1 --secure-port 0 \
	>kcm.log 2>&1 &
pids+=($!)

"$kubectl" apply -f "$repo/crds/streamjobs.cairn.dev.yaml" >&2
"$kubectl" wait --for condition=Established crd/streamjobs.cairn.dev --timeout 60s >&2

# --- operator -----------------------------------------------------------------------------
KUBECONFIG="$work/operator.kubeconfig" RUST_LOG=info "$FLEET_OPERATOR" run \
	--http-addr 127.0.0.1:18080 --lease-namespace default --identity fleet-operator \
	--worker-image cairn/worker:bench --log-format json >operator.log 2>&1 &
operator_pid=$!
pids+=($operator_pid)

# --- driver -------------------------------------------------------------------------------
FLEET_WORK="$work" FLEET_SERVER="https://127.0.0.1:$FLEET_PORT" FLEET_TOKEN="$admin_token" \
	FLEET_OPERATOR_PID="$operator_pid" FLEET_OPERATOR_METRICS="http://127.0.0.1:18080/metrics" \
	python3 "$here/driver.py"
