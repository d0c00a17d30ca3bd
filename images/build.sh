#!/usr/bin/env bash
# `make images`: builds cairn/worker and cairn/operator from worker/Dockerfile and
# operator/Dockerfile, tagged with the chart's appVersion, into the Docker that DOCKER_HOST names
# (scripts/dockerd.sh starts one owned by the test run).
#
#   IMAGE_BASES=local   (default) the builder image is made on this machine (images/local-bases.sh:
#                       debootstrap + this machine's Rust), so no image registry is needed
#   IMAGE_BASES=public  the Dockerfiles' defaults (rust:1-bookworm), for machines that reach
#                       Docker Hub
# Prints the two image names.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "images/build.sh: $*" >&2; }
docker version >/dev/null 2>&1 || {
	log "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}): start one, e.g. with scripts/dockerd.sh start"
	exit 1
}

# A client that can build with BuildKit (needed for the cache mounts): one with the buildx plugin,
# or a client older than 23.0, which has BuildKit built in. Machines may carry a newer static
# client without buildx next to their distribution's engine and client (here: Debian's 20.10).
buildkit_build=()
for client in docker /usr/bin/docker; do
	command -v "$client" >/dev/null || continue
	if "$client" buildx version >/dev/null 2>&1; then
		buildkit_build=("$client" buildx build --load)
		break
	fi
	major="$("$client" version -f '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)"
	if [[ "$major" =~ ^[0-9]+$ ]] && ((major < 23)); then
		buildkit_build=(env DOCKER_BUILDKIT=1 "$client" build)
		break
	fi
done
((${#buildkit_build[@]})) || {
	log "no Docker client that builds with BuildKit: install the buildx plugin"
	exit 1
}

version="$(awk -F'"' '/^appVersion:/ { print $2 }' "$root/charts/cairn/Chart.yaml")"
[[ -n "$version" ]] || {
	log "no appVersion in charts/cairn/Chart.yaml"
	exit 1
}

build_args=()
case "${IMAGE_BASES:-local}" in
local) build_args+=(--build-arg "BUILDER_IMAGE=$("$root/images/local-bases.sh")") ;;
public) ;;
*)
	log "IMAGE_BASES must be local or public, not '${IMAGE_BASES}'"
	exit 2
	;;
esac

for component in operator worker; do
	image="cairn/$component:$version"
	log "building $image from $component/Dockerfile"
	start=$SECONDS
	# BuildKit for the cache mounts; host networking so cargo reaches the crate registry even
	# when the daemon has no default bridge.
	"${buildkit_build[@]}" --network host --progress plain "${build_args[@]}" \
		-f "$root/$component/Dockerfile" -t "$image" "$root" >&2
	log "$image built in $((SECONDS - start)) s, $(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.1f MB", $1 / 1e6 }')"
	echo "$image"
done
