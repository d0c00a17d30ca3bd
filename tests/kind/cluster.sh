#!/usr/bin/env bash
# The kind cluster the end-to-end suite runs on, built and torn down on this machine.
#
#   tests/kind/cluster.sh up     Docker (scripts/dockerd.sh), the node image (node-image.sh), the
#                                Cairn images (make images), `kind create cluster`, `kind load`;
#                                prints the kubeconfig's path
#   tests/kind/cluster.sh services-ip   an address of this host the cluster's pods reach
#   tests/kind/cluster.sh down   deletes the cluster and puts back what the kubelet and Docker
#                                changed on the host (sysctls, an empty /lib/modules); the Docker
#                                engine stays up for the next run unless CAIRN_STOP_DOCKER=1
#
# A privileged kind node shares the host's kernel: its kubelet writes host-wide sysctls. `up`
# records them before the first node starts and `down` writes them back.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
name="${CAIRN_KIND_CLUSTER:-cairn-e2e}"
state="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/kind-state/$name"
log() { echo "cluster.sh: $*" >&2; }

# What the kubelet (and Docker, for forwarding) may change on the host.
host_sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
	net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)

record_host() {
	[[ -f "$state/sysctls.before" ]] && return # a cluster that was not torn down: keep the first record
	mkdir -p "$state"
	local key value
	for key in "${host_sysctls[@]}"; do
		value="$(sysctl -n "$key" 2>/dev/null)" && echo "$key=$value"
	done >"$state/sysctls.tmp"
	mv "$state/sysctls.tmp" "$state/sysctls.before"
	[[ -e /lib/modules ]] && echo present >"$state/lib-modules" || echo absent >"$state/lib-modules"
}

restore_host() {
	if [[ -f "$state/sysctls.before" ]]; then
		local line
		while IFS= read -r line; do
			[[ "$(sysctl -n "${line%%=*}" 2>/dev/null)" == "${line#*=}" ]] ||
				sysctl -q -w "$line" >/dev/null || log "could not restore $line"
		done <"$state/sysctls.before"
		rm -f "$state/sysctls.before"
	fi
	# Docker creates an empty /lib/modules for kind's bind mount where the host has none.
	if [[ "$(cat "$state/lib-modules" 2>/dev/null)" == absent ]]; then
		rmdir /lib/modules 2>/dev/null || true
	fi
	rm -f "$state/lib-modules"
}

# sed, not head: head would close the pipe early and pipefail would report build.sh's SIGPIPE.
kind_bin() { "$root/tests/controlplane/build.sh" node | sed -n 1p; }

up() {
	export DOCKER_HOST
	DOCKER_HOST="$("$root/scripts/dockerd.sh" start)"
	local image kind
	image="$("$here/node-image.sh")"
	kind="$(kind_bin)/kind"
	mapfile -t cairn_images < <("$root/images/build.sh")
	"$kind" delete cluster --name "$name" >/dev/null 2>&1 || true
	record_host
	local etcd_tag coredns_tag
	etcd_tag="$(docker image inspect -f '{{index .Config.Labels "dev.cairn.etcd-tag"}}' "$image")"
	coredns_tag="$(docker image inspect -f '{{index .Config.Labels "dev.cairn.coredns-tag"}}' "$image")"
	sed -e "s|@ETCD_TAG@|$etcd_tag|" -e "s|@COREDNS_TAG@|$coredns_tag|" "$here/kind-config.yaml" >"$state/kind-config.yaml"
	log "creating kind cluster $name from $image"
	"$kind" create cluster --name "$name" --image "$image" --config "$state/kind-config.yaml" \
		--kubeconfig "$state/kubeconfig" --wait 180s >&2
	"$kind" load docker-image --name "$name" "${cairn_images[@]}" >&2
	# The e2e suite's checkpoint store: a hostPath on the node, owned by the workers' uid (a
	# hostPath ignores fsGroup).
	docker exec "$name-control-plane" install -d -o 65532 -g 65532 /var/lib/cairn-e2e-store
	echo "$state/kubeconfig"
}

down() {
	export DOCKER_HOST
	DOCKER_HOST="$("$root/scripts/dockerd.sh" host)"
	if "$root/scripts/dockerd.sh" running; then
		"$(kind_bin)/kind" delete cluster --name "$name" >&2 || true
		# kind leaves its network (and so a bridge with an address on the host) behind.
		if ! docker ps -aq --filter network=kind | grep -q .; then
			docker network rm kind >/dev/null 2>&1 || true
		fi
	fi
	restore_host
	[[ "${CAIRN_STOP_DOCKER:-0}" == 1 ]] && "$root/scripts/dockerd.sh" stop
	return 0
}

# The gateway of the cluster's Docker network: an address of this host that pods reach (their
# traffic is masqueraded to the node's address), where the e2e suite runs Kafka and MinIO
# (CAIRN_E2E_SERVICES_IP).
services_ip() {
	export DOCKER_HOST
	DOCKER_HOST="$("$root/scripts/dockerd.sh" host)"
	docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' | tr ' ' '\n' | grep -m1 '^[0-9.]*$'
}

case "${1:-}" in
up) up ;;
down) down ;;
services-ip) services_ip ;;
*)
	echo "usage: $0 up|down|services-ip" >&2
	exit 2
	;;
esac
