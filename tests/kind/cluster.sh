#!/usr/bin/env bash
# The kind cluster the end-to-end suite runs on (tests/e2e/kind.sh, and so `make test`).
#
#   tests/kind/cluster.sh up     the images, `kind create cluster`, `kind load`, the suite's store
#                                directory on the node; prints the path of an environment file
#                                (KUBECONFIG, DOCKER_HOST and the CAIRN_E2E_* settings of the
#                                suite) to source before running it
#   tests/kind/cluster.sh down   deletes the cluster and puts back what the kubelet and Docker
#                                changed on the host (sysctls, an empty /lib/modules); the Docker
#                                engine stays up for the next run unless CAIRN_STOP_DOCKER=1
#
# CAIRN_KIND_SOURCES says where everything comes from:
#   local   (default) nothing from a registry: a Docker engine this project owns
#           (scripts/dockerd.sh), a node image built here for the pinned Kubernetes
#           (node-image.sh, kind-config.yaml), images on locally made bases (images/local-bases.sh)
#   public  the Docker engine DOCKER_HOST names (or the default one), kind's own node image and
#           add-ons, and the Dockerfiles' public base images: a laptop with Docker and internet
#
# A privileged kind node shares the host's kernel: its kubelet writes host-wide sysctls. `up`
# records them before the first node starts and `down` writes them back.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
name="${CAIRN_KIND_CLUSTER:-cairn-e2e}"
state="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/kind-state/$name"
sources="${CAIRN_KIND_SOURCES:-local}"
log() { echo "cluster.sh: $*" >&2; }
case "$sources" in
local | public) ;;
*)
	log "CAIRN_KIND_SOURCES must be local or public, not '$sources'"
	exit 2
	;;
esac
# The suite's checkpoint store: a directory on the node (kind.sh's cluster has no volume
# provisioner of its own when built here), owned by the workers' uid (a hostPath ignores fsGroup).
store_dir=/var/lib/cairn-e2e-store

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

# kind itself: built here from its pinned module (local), else from PATH or `go install`.
kind_cmd() {
	if [[ "$sources" == local ]]; then
		# sed, not head: head would close the pipe early and pipefail would report SIGPIPE.
		echo "$("$root/tests/controlplane/build.sh" node | sed -n 1p)/kind"
	elif command -v kind >/dev/null; then
		command -v kind
	else
		local version
		version="$(awk '/sigs.k8s.io\/kind / { print $2 }' "$root/tests/controlplane/kind/go.mod")"
		GOBIN="$state/bin" go install "sigs.k8s.io/kind@$version" >&2
		echo "$state/bin/kind"
	fi
}

docker_host() {
	if [[ "$sources" == local ]]; then
		"$root/scripts/dockerd.sh" "$1"
	else
		echo "${DOCKER_HOST:-unix:///var/run/docker.sock}"
	fi
}

up() {
	mkdir -p "$state"
	export DOCKER_HOST IMAGE_BASES="$sources"
	DOCKER_HOST="$(docker_host start)"
	docker info >/dev/null 2>&1 || {
		log "no Docker engine answers at DOCKER_HOST=$DOCKER_HOST"
		exit 1
	}
	local kind services
	kind="$(kind_cmd)"
	mapfile -t cairn_images < <("$root/images/build.sh")
	# A process substitution's failure does not stop the script: count what it printed instead,
	# so a failed image build stops here, not later as pods that cannot pull their image.
	((${#cairn_images[@]} == 2)) || {
		log "images/build.sh failed (its output is above); no cluster was created"
		exit 1
	}
	services="$("$root/tests/services/image/build.sh")"
	"$kind" delete cluster --name "$name" >/dev/null 2>&1 || true
	local create=(create cluster --name "$name" --kubeconfig "$state/kubeconfig" --wait 180s)
	if [[ "$sources" == local ]]; then
		local image etcd_tag coredns_tag
		image="$("$here/node-image.sh")"
		etcd_tag="$(docker image inspect -f '{{index .Config.Labels "dev.cairn.etcd-tag"}}' "$image")"
		coredns_tag="$(docker image inspect -f '{{index .Config.Labels "dev.cairn.coredns-tag"}}' "$image")"
		sed -e "s|@ETCD_TAG@|$etcd_tag|" -e "s|@COREDNS_TAG@|$coredns_tag|" "$here/kind-config.yaml" >"$state/kind-config.yaml"
		create+=(--image "$image" --config "$state/kind-config.yaml")
		record_host
	fi
	log "creating kind cluster $name ($sources sources)"
	"$kind" "${create[@]}" >&2
	"$kind" load docker-image --name "$name" "${cairn_images[@]}" "$services" >&2
	docker exec "$name-control-plane" install -d -o 65532 -g 65532 "$store_dir"
	cat >"$state/env" <<-ENV
		export KUBECONFIG='$state/kubeconfig'
		export DOCKER_HOST='$DOCKER_HOST'
		export CAIRN_E2E_KIND=1
		export CAIRN_E2E_SERVICES_IMAGE='$services'
		export CAIRN_E2E_STORE_VOLUME='{"hostPath":{"path":"$store_dir"}}'
	ENV
	echo "$state/env"
}

down() {
	export DOCKER_HOST
	DOCKER_HOST="$(docker_host host)"
	if docker info >/dev/null 2>&1; then
		"$(kind_cmd)" delete cluster --name "$name" >&2 || true
		# kind leaves its network (and so a bridge with an address on the host) behind.
		if ! docker ps -aq --filter network=kind | grep -q .; then
			docker network rm kind >/dev/null 2>&1 || true
		fi
	fi
	restore_host
	[[ "${CAIRN_STOP_DOCKER:-0}" == 1 && "$sources" == local ]] && "$root/scripts/dockerd.sh" stop
	return 0
}

case "${1:-}" in
up) up ;;
down) down ;;
*)
	echo "usage: $0 up|down" >&2
	exit 2
	;;
esac
