#!/usr/bin/env bash
# Builds, without any image registry, the two images the Dockerfiles need besides `scratch`:
#   local/debian:bookworm           a minimal Debian root filesystem (debootstrap, docker import)
#   local/cairn-builder:<rust>      that plus the C/C++ build tools RocksDB, librdkafka and
#                                   bindgen need, and this machine's Rust toolchain
# On a machine that reaches Docker Hub none of this is needed: the Dockerfiles default to the
# public `rust:1-bookworm` builder (see images/build.sh, IMAGE_BASES=public).
#
# Debian packages come from the mirror this machine's apt uses; the Rust toolchain is the one
# `rustc` runs here (the same compiler the rest of the build uses). Idempotent: an image that
# exists is kept.
#
# Usage: images/local-bases.sh [builder|base]   (default builder) — prints that image's name;
# `base` makes only the Debian image (the kind node image needs no compiler).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "local-bases.sh: $*" >&2; }
docker version >/dev/null 2>&1 || {
	log "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}): start one, e.g. with scripts/dockerd.sh start"
	exit 1
}

want="${1:-builder}"
case "$want" in
builder | base) ;;
*)
	log "unknown image '$want'; use builder or base"
	exit 2
	;;
esac

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# The first Debian mirror apt is configured with (deb822 .sources or a classic list).
apt_mirror() {
	local uri
	uri="$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
	[[ -n "$uri" ]] || uri="$(awk '$1 == "deb" { print ($2 ~ /^\[/ ? $3 : $2); exit }' /etc/apt/sources.list 2>/dev/null || true)"
	[[ -n "$uri" ]] || {
		log "cannot find a Debian mirror in /etc/apt/sources.list(.d)"
		exit 1
	}
	echo "$uri"
}

base=local/debian:bookworm
if ! have_image "$base"; then
	command -v debootstrap >/dev/null || {
		log "debootstrap is missing (Debian: apt-get install debootstrap)"
		exit 1
	}
	rootfs="$(mktemp -d /tmp/cairn-rootfs.XXXXXX)"
	trap 'rm -rf "$rootfs"' EXIT
	log "debootstrap bookworm (minbase) into $rootfs (about a minute)"
	debootstrap --variant=minbase bookworm "$rootfs" "$(apt_mirror)" >"$rootfs.log" 2>&1 || {
		tail -n 20 "$rootfs.log" >&2
		exit 1
	}
	rm -f "$rootfs.log"
	# Mirrors that serve a dated snapshot have expired Release files: accept them, as the host does.
	cp "$here/apt-snapshot.conf" "$rootfs/etc/apt/apt.conf.d/99cairn-snapshot"
	rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
	tar -C "$rootfs" -c . | docker import \
		-c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		-c 'CMD ["/bin/bash"]' - "$base" >/dev/null
	rm -rf "$rootfs"
	trap - EXIT
fi

if [[ "$want" == base ]]; then
	echo "$base"
	exit 0
fi

# The toolchain: this machine's, so the image builds with the compiler the tests use.
sysroot="$(rustc --print sysroot)"
rust_version="$(rustc --version | awk '{ print $2 }')"
builder="local/cairn-builder:rust-$rust_version"
if ! have_image "$builder"; then
	context="$(mktemp -d /tmp/cairn-builder.XXXXXX)"
	trap 'rm -rf "$context"' EXIT
	mkdir -p "$context/rust/lib/rustlib/x86_64-unknown-linux-gnu"
	# Compiler, cargo and the std library for this target; no docs, sources or other targets.
	cp -a "$sysroot/bin" "$context/rust/"
	cp -a "$sysroot"/lib/lib* "$context/rust/lib/"
	cp -a "$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/lib" \
		"$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/bin" \
		"$context/rust/lib/rustlib/x86_64-unknown-linux-gnu/" 2>/dev/null || true
	# Cargo inside the builder trusts what this machine trusts (a site may reach the crate
	# registry through a TLS proxy with its own CA); the images built with it do not: they take
	# Debian's CA bundle.
	cp -L "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$context/build-ca.crt"
	cp "$here/builder.Dockerfile" "$context/Dockerfile"
	log "building $builder (Debian build tools from apt, Rust $rust_version from this machine)"
	DOCKER_BUILDKIT=0 docker build --network host -q --build-arg "BASE=$base" -t "$builder" "$context" >/dev/null
	rm -rf "$context"
	trap - EXIT
fi
echo "$builder"
