#!/usr/bin/env bash
# `make images`: builds cairn/worker and cairn/operator from worker/Dockerfile and
# operator/Dockerfile, tagged with the chart's appVersion, into the Docker that DOCKER_HOST names
# (scripts/dockerd.sh starts one owned by the test run).
#
#   IMAGE_BASES=local   (default) the builder image is made on this machine (images/local-bases.sh:
#                       debootstrap + this machine's Rust), so no image registry is needed, and
#                       links the RocksDB archive of this machine's own build (below)
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

# RocksDB takes 10 to 25 minutes to compile on 2 cores, and the tests' build on this machine has
# already compiled it (Cargo's dev profile builds dependencies with -O2; librocksdb-sys always
# defines NDEBUG). The local builder links that archive instead of compiling RocksDB once more in
# release, through librocksdb-sys' own ROCKSDB_LIB_DIR and ROCKSDB_STATIC: the same sources, the
# same flags but -O2 for -O3 (RocksDB's own Makefile builds releases with -O2). Prints the builder
# image with the archive added, tagged by its digest; builds the host's dev build first if needed.
builder_with_tests_rocksdb() { # <builder image>
	local out_dir archive digest image context
	# Cargo reports every build script's output directory, also when it is up to date.
	out_dir="$(cd "$root" && cargo build --workspace --locked --bins --message-format=json |
		jq -r 'select(.reason == "build-script-executed" and (.package_id | test("librocksdb-sys"))) | .out_dir')"
	archive="$out_dir/librocksdb.a"
	[[ -n "$out_dir" && "$out_dir" != *$'\n'* && -f "$archive" ]] || {
		log "the host build (cargo build --workspace --bins) left no single librocksdb.a (found: '${out_dir:-nothing}')"
		exit 1
	}
	digest="$(sha256sum "$archive" | cut -c1-12)"
	image="$1-rocksdb-$digest"
	if ! docker image inspect "$image" >/dev/null 2>&1; then
		context="$(mktemp -d /tmp/cairn-builder-rocksdb.XXXXXX)"
		cp "$archive" "$context/librocksdb.a"
		printf '%s\n' "FROM $1" \
			"COPY librocksdb.a /usr/local/lib/cairn-rocksdb/librocksdb.a" \
			"ENV ROCKSDB_LIB_DIR=/usr/local/lib/cairn-rocksdb ROCKSDB_STATIC=1" >"$context/Dockerfile"
		log "building $image: $1 with the RocksDB archive of this machine's tests ($archive)"
		DOCKER_BUILDKIT=0 docker build -q -t "$image" "$context" >/dev/null || {
			rm -rf "$context"
			exit 1
		}
		rm -rf "$context"
	fi
	echo "$image"
}

build_args=()
case "${IMAGE_BASES:-local}" in
local)
	export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}" # as the Makefile's
	build_args+=(--build-arg "BUILDER_IMAGE=$(builder_with_tests_rocksdb "$("$root/images/local-bases.sh")")")
	;;
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
