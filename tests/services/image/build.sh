#!/usr/bin/env bash
# Builds the e2e suite's services image (Kafka and MinIO, see Dockerfile) into the Docker that
# DOCKER_HOST names and prints its name. Idempotent: the tag is a hash of everything that goes
# in, and an image with that tag is kept.
#
#   IMAGE_BASES=local   (default) on local/debian:bookworm (images/local-bases.sh: debootstrap),
#                       so no image registry is needed
#   IMAGE_BASES=public  on the public debian:bookworm-slim
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
log() { echo "services/image/build.sh: $*" >&2; }

libs="$("$root/tests/services/kafka/fetch.sh")"
minio="$("$root/tests/services/minio/build.sh")"
case "${IMAGE_BASES:-local}" in
local) base="$("$root/images/local-bases.sh" base)" ;;
public) base=debian:bookworm-slim ;;
*)
	log "IMAGE_BASES must be local or public"
	exit 2
	;;
esac
# The jar list and MinIO's version are in the paths hashed here; the Dockerfile by content.
tag="$( (
	echo "$base"
	ls "$libs"
	echo "$minio"
	cat "$here/Dockerfile"
) | sha256sum | cut -c1-12)"
image="cairn-e2e/services:$tag"
if docker image inspect "$image" >/dev/null 2>&1; then
	echo "$image"
	exit 0
fi
context="$(mktemp -d /tmp/cairn-services-image.XXXXXX)"
trap 'rm -rf "$context"' EXIT
cp "$here/Dockerfile" "$context/"
cp -r "$libs" "$context/libs"
cp "$minio" "$context/minio"
log "building $image (a Java runtime from Debian, the Kafka jars, MinIO)"
start=$SECONDS
# The classic builder with the host's network: apt reaches the machine's Debian mirror even
# where the engine has no NAT of its own (scripts/dockerd.sh runs it without iptables).
DOCKER_BUILDKIT=0 docker build --network host -q --build-arg "BASE=$base" -t "$image" "$context" >/dev/null
log "$image built in $((SECONDS - start)) s, $(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
echo "$image"
