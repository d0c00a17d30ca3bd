#!/usr/bin/env bash
# Builds the kind node image for the pinned Kubernetes version (tests/controlplane), with no image
# registry: every image the cluster starts is made here from binaries built from source (the
# wrapper modules in tests/controlplane) and Debian packages.
#
#   @REPO@/kube-apiserver, kube-controller-manager, kube-scheduler   the static binary alone
#   @REPO@/kube-proxy      the binary on Debian with iptables and conntrack
#   @REPO@/etcd            the static binary alone
#   @REPO@/coredns         the static binary alone
#   @REPO@/pause           pause.c from the Kubernetes sources, linked statically
# where @REPO@ is the image repository kubeadm is told to use (kind-config.yaml). They are
# preloaded into the node's containerd, since nothing can be pulled.
#
# The image is named cairn.local/kind-node:<kubernetes version>-<hash of everything it is made
# from>, so a change to any input builds a new one and an unchanged one is reused. Prints the name.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
log() { echo "node-image.sh: $*" >&2; }
docker version >/dev/null 2>&1 || {
	log "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}): start one, e.g. with scripts/dockerd.sh start"
	exit 1
}

repo="$(awk '/^ *imageRepository:/ { print $2; exit }' "$here/kind-config.yaml")"
pause_tag=3.10

# Command substitutions, not process substitutions: a failed build must stop this script (set -e).
built="$("$root/tests/controlplane/build.sh" kubernetes)"
mapfile -t control_plane <<<"$built"
built="$("$root/tests/controlplane/build.sh" node)"
mapfile -t node_bins <<<"$built"
((${#control_plane[@]} == 1 && ${#node_bins[@]} == 3)) || {
	echo "node-image.sh: tests/controlplane/build.sh printed ${#control_plane[@]} and ${#node_bins[@]} directories, not 1 and 3" >&2
	exit 1
}
k8s_dir="${control_plane[-1]}" kind_dir="${node_bins[0]}" coredns_dir="${node_bins[1]}" node_dir="${node_bins[2]}"
k8s_version="${node_dir##*/kubernetes-node-}"
etcd_tag="v$("$k8s_dir/etcd" --version | awk '/^etcd Version:/ { print $3 }')"
coredns_tag="v$("$coredns_dir/coredns" -version | sed -n 's/^CoreDNS-//p')"
base="$("$root/images/local-bases.sh" base)"
# Source directories of two pinned modules (kind's node files, Kubernetes' pause.c); `go mod
# download` fetches them if needed and prints where they are.
module_dir() { # <wrapper module dir> <module path>
	(cd "$root/tests/controlplane/$1" && GOWORK=off go mod download -json "$2" | awk -F'"' '/"Dir"/ { print $4 }')
}
kind_module="$(module_dir kind sigs.k8s.io/kind)"
k8s_module="$(module_dir kubernetes k8s.io/kubernetes)"

inputs_hash="$(cat "$here"/node-image.sh "$here"/node.Dockerfile "$here"/containerd-config.toml \
	"$here"/10-bridge.conflist "$here"/kind-config.yaml | sha256sum | cut -c1-12)"
image="cairn.local/kind-node:$k8s_version-$inputs_hash"
if docker image inspect "$image" >/dev/null 2>&1; then
	echo "$image"
	exit 0
fi

work="$(mktemp -d /tmp/cairn-node-image.XXXXXX)"
container=""
cleanup() {
	[[ -n "$container" ]] && docker rm -f "$container" >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/images"

# One image from a directory that holds its whole root filesystem; saved for preloading.
import_image() { # <name:tag> <rootfs dir> <entrypoint json>
	local ref="$repo/$1"
	tar -C "$2" -c . | docker import \
		-c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' -c "ENTRYPOINT $3" - "$ref" >/dev/null
	docker save -o "$work/images/${1%%:*}.tar" "$ref"
}

static_image() { # <binary path> <name:tag>
	local rootfs="$work/rootfs-${2%%:*}"
	mkdir -p "$rootfs/usr/local/bin" "$rootfs/tmp"
	cp "$1" "$rootfs/usr/local/bin/"
	import_image "$2" "$rootfs" "[\"/usr/local/bin/$(basename "$1")\"]"
}

log "control-plane images ($repo, Kubernetes $k8s_version, etcd $etcd_tag, CoreDNS $coredns_tag)"
for component in kube-apiserver kube-controller-manager kube-scheduler; do
	static_image "$k8s_dir/$component" "$component:$k8s_version"
done
static_image "$k8s_dir/etcd" "etcd:$etcd_tag"
static_image "$coredns_dir/coredns" "coredns:$coredns_tag"
mkdir -p "$work/rootfs-pause"
gcc -Os -static -o "$work/rootfs-pause/pause" "$k8s_module/build/pause/linux/pause.c"
strip "$work/rootfs-pause/pause"
import_image "pause:$pause_tag" "$work/rootfs-pause" '["/pause"]'

# kube-proxy programs iptables, so it runs on Debian with the iptables tools.
mkdir -p "$work/kube-proxy"
cp "$node_dir/kube-proxy" "$work/kube-proxy/"
cat >"$work/kube-proxy/Dockerfile" <<DOCKERFILE
FROM $base
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iptables conntrack ipset kmod && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY kube-proxy /usr/local/bin/kube-proxy
DOCKERFILE
DOCKER_BUILDKIT=0 docker build -q --network host -t "$repo/kube-proxy:$k8s_version" "$work/kube-proxy" >/dev/null
docker save -o "$work/images/kube-proxy.tar" "$repo/kube-proxy:$k8s_version"

log "node image"
context="$work/node"
mkdir -p "$context/bin"
cp -r "$kind_module/images/base/files" "$context/kind-files"
chmod -R u+w "$context/kind-files"
cp "$node_dir/kubelet" "$node_dir/kubeadm" "$k8s_dir/kubectl" "$context/bin/"
sed -e "s|@IMAGE_REPOSITORY@|$repo|" -e "s|@PAUSE_TAG@|$pause_tag|" \
	"$here/containerd-config.toml" >"$context/containerd-config.toml"
cp "$here/10-bridge.conflist" "$context/"
echo "$k8s_version" >"$context/version"
cp "$here/node.Dockerfile" "$context/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q --network host --build-arg "BASE=$base" -t "$image-unloaded" "$context" >/dev/null

log "preloading $(ls "$work/images" | wc -l) images into the node's containerd"
container="$(docker run -d --privileged --entrypoint sleep "$image-unloaded" infinity)"
docker cp "$work/images" "$container:/kind/images"
docker exec "$container" bash -euc '
	containerd >/tmp/containerd.log 2>&1 &
	for _ in $(seq 1 30); do ctr version >/dev/null 2>&1 && break; sleep 1; done
	for tarball in /kind/images/*.tar; do
		ctr -n k8s.io images import --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests "$tarball" >/dev/null
	done
	ctr -n k8s.io images list -q
	kill %1; wait || true
	rm -rf /kind/images /tmp/containerd.log' >&2 # the list is for the log: stdout carries only the image name
# The tags kubeadm must be told (kind-config.yaml) travel with the image.
docker commit \
	--change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
	--change "LABEL dev.cairn.etcd-tag=$etcd_tag dev.cairn.coredns-tag=$coredns_tag" \
	--change 'CMD []' \
	"$container" "$image" >/dev/null
docker rm -f "$container" >/dev/null
container=""
docker rmi "$image-unloaded" >/dev/null
log "built $image"
echo "$image"
