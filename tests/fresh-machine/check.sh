#!/usr/bin/env bash
# Checks that the README's two commands install what they need on a fresh machine of this kind,
# where a warm machine (one that already has every package) cannot hide a missing step.
# docs/fresh-machine.md has the why, what the "fresh machine" is taken to have, and the times.
#
# In a container of the pristine local Debian image (images/local-bases.sh base), in the
# project's own Docker engine (scripts/dockerd.sh), on a copy of this checkout:
#   1. the machine: Debian's gcc, g++, make, cmake and libclang-cpp14 (the package that once
#      fooled install-prereqs.sh into skipping libclang-dev), this host's Rust (rustup) and Go
#      mounted read-only at their own paths
#   2. scripts/install-prereqs.sh, as root
#   3. every tool `make test` runs is there
#   4. the native build prerequisites, exercised every time (tests/fresh-machine/probe: bindgen
#      loading libclang, C++20 and C against OpenSSL and zlib), because step 5 does not compile
#      RocksDB or librdkafka again (below) and so would not rerun their build scripts
#   5. `make run`: the job commits a checkpoint, Ctrl-C, it takes its final checkpoint and stops
#
# Step 5 compiles Cairn's crates in the container, but not their dependencies: the container's
# Cargo target dir is an overlay on this host's (CARGO_TARGET_DIR, which `make test` has just
# built), mounted at the same path, with this host's crate registry read-only at its own path and
# Cargo offline. Compiling RocksDB once more here cost 33 minutes of a cold `make test`; what a
# fresh machine needs to compile it is what step 4 checks. The container's writes go to the
# overlay's upper layer in a temporary directory, removed with the container: the host's target
# dir is never written.
#
# Run as root (CI does). Usage: tests/fresh-machine/check.sh
# Environment:
#   FRESH_MACHINE_TIMEOUT  bound on the whole check, seconds (default 4500: on a host that has
#                          not built Cairn the container compiles RocksDB and librdkafka; after
#                          `make test`'s build a few minutes)
#   FRESH_MACHINE_CPUS     the container's CPU limit (default: all of this machine's)
# Kept between runs, under ${CAIRN_CACHE_DIR:-~/.cache/cairn}/fresh-machine: the container's
# CARGO_HOME (but its registry), the probe's target dir and the downloaded .deb files.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
log() { echo "fresh-machine: $*" >&2; }

[[ "$(id -u)" == 0 ]] || {
	log "run as root: the container's install-prereqs.sh and the project's Docker engine need it"
	exit 1
}
cd "$root"
docker=/usr/bin/docker # Debian's client (docker.io), the one scripts/dockerd.sh is used with
[[ -x "$docker" ]] || {
	log "$docker is missing (Debian: apt-get install docker.io; scripts/install-prereqs.sh installs it)"
	exit 1
}
DOCKER_HOST="$(PATH="/usr/bin:$PATH" scripts/dockerd.sh start)"
export DOCKER_HOST
image="$(PATH="/usr/bin:$PATH" images/local-bases.sh base)"

cache="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/fresh-machine"
mkdir -p "$cache/probe-target" "$cache/cargo-home" "$cache/apt-archives"
# One check at a time per machine: they share the caches (apt's archive lock, the target dir).
exec 9>"$cache/.lock"
flock -w 600 9 || {
	log "another fresh-machine check has held $cache/.lock for 10 minutes"
	exit 1
}

name="cairn-fresh-machine-$$"
work="$(mktemp -d /tmp/cairn-fresh-machine.XXXXXX)"
started=0 watchdog=""
cleanup() {
	local status=$?
	trap - EXIT INT TERM
	set +e # clean up all the same when a step of the cleanup fails
	[[ -n "$watchdog" ]] && kill "$watchdog" 2>/dev/null
	# Removing the container ends whatever still runs in it.
	((started)) && "$docker" rm -f "$name" >/dev/null 2>&1
	# The overlay first; never remove through it (a removal there only hides the host's files,
	# but the work dir must not be removed while it is mounted).
	mountpoint -q "$work/target" && { umount "$work/target" || umount -l "$work/target"; }
	mountpoint -q "$work/target" || rm -rf "$work"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# The whole check is bounded: a watchdog signals this script, whose steps run in the background
# under `wait` (so the signal is handled at once, not after the step), and the EXIT trap removes
# the container.
limit="${FRESH_MACHINE_TIMEOUT:-4500}"
(
	trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
	sleep "$limit" &
	sleeper=$!
	wait "$sleeper"
	log "FAILED: the check did not finish within $limit s (FRESH_MACHINE_TIMEOUT); stopping it"
	kill -TERM $$
) &
watchdog=$!

# The copy: the files git knows (tracked, and new ones not ignored), as they are in the work tree,
# with their times (so the warm target dir stays warm for unchanged crates). The container writes
# only there and in the caches, never into this checkout.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard |
	while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
	tar --null -T - -cf - | tar -C "$work/src" -xf -

# The toolchains a fresh machine of this kind has outside Debian's packages, from this host.
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
goroot="$(go env GOROOT 2>/dev/null || true)"
for dir in "$rustup_home" "$cargo_bin" "$goroot"; do
	[[ -n "$dir" && -d "$dir" ]] || {
		log "this host lacks the Rust (rustup) or Go tool chain the fresh machine is given ($dir)"
		exit 1
	}
done

# The host's build, as the container's Cargo target dir: an overlay (see the top), at the host's
# path, because build scripts' outputs name absolute paths in it.
host_target="${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}"
host_cargo_home="${CARGO_HOME:-$HOME/.cargo}"
mkdir -p "$host_target" "$work/target" "$work/target-upper" "$work/target-work"
mount -t overlay cairn-fresh-machine-target \
	-o "lowerdir=$host_target,upperdir=$work/target-upper,workdir=$work/target-work" "$work/target"
mounts=(-v "$rustup_home:$rustup_home:ro" -v "$cache/cargo-home:$host_cargo_home"
	-v "$cargo_bin:$host_cargo_home/bin:ro" -v "$goroot:$goroot:ro"
	-v "$work/target:$host_target" -v "$cache/probe-target:/fresh/probe-target"
	-v "$cache/apt-archives:/var/cache/apt/archives" -v "$work/src:/src/cairn")
[[ -d "$host_cargo_home/registry" ]] && mounts+=(-v "$host_cargo_home/registry:$host_cargo_home/registry:ro")
# The machine's trust store, so Cargo reaches the crate registry as it does here (a site may
# put its own CA in it); Debian's ca-certificates in the container stays untouched.
ca="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
[[ -f "$ca" ]] && mounts+=(-v "$(readlink -f "$ca"):/etc/cairn-host-ca.crt:ro")
# The machine's own Docker client (a static binary, no engine), where this host has one.
[[ -x /usr/local/bin/docker ]] && mounts+=(-v /usr/local/bin/docker:/usr/local/bin/docker:ro)

log "container $name from $image (toolchains: $rustup_home, $cargo_bin, $goroot; caches: $cache)"
started=1 # from here on, the container may exist
"$docker" run -d --name "$name" --network host --cpus "${FRESH_MACHINE_CPUS:-$(nproc)}" \
	"${mounts[@]}" -w /src/cairn -e HOME="$HOME" \
	-e PATH="$goroot/bin:$cargo_bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
	-e CARGO_HOME="$host_cargo_home" -e CARGO_NET_OFFLINE=true \
	-e CARGO_TARGET_DIR="$host_target" -e PROBE_TARGET_DIR=/fresh/probe-target \
	-e CARGO_HTTP_CAINFO=/etc/cairn-host-ca.crt -e CARGO_TERM_COLOR=never \
	"$image" sleep infinity >/dev/null

# Runs one step of inside.sh, logged to $work/<step>.log; on failure shows the log's tail.
step() { # <step> <seconds> <what> [<what a failure means>]
	local t0=$SECONDS status=0
	log "$1: $3"
	timeout -k 30 "$2" "$docker" exec "$name" tests/fresh-machine/inside.sh "$1" >"$work/$1.log" 2>&1 &
	wait $! || status=$?
	if [[ $status -ne 0 ]]; then
		[[ $status -eq 124 ]] && log "$1: did not finish within $2 s"
		log "$1: FAILED (status $status) after $((SECONDS - t0)) s; the last lines of its log:"
		tail -n 40 "$work/$1.log" | sed 's/^/  | /' >&2
		[[ -n "${4:-}" ]] && log "$1: $4"
		exit 1
	fi
	grep -h '^inside.sh: \|^probe: ' "$work/$1.log" | sed 's/^/  /' >&2 || true
	log "$1: ok ($((SECONDS - t0)) s)"
}

step machine 900 "Debian's gcc, g++, make, cmake and libclang-cpp14, as a fresh machine has them"
step prereqs 1200 "scripts/install-prereqs.sh as root"
step tools 120 "what make test runs is installed" \
	"scripts/install-prereqs.sh does not install everything make test runs"
step probe 1800 "bindgen loading libclang, C++20, C against OpenSSL and zlib (probe/)" \
	"after scripts/install-prereqs.sh a fresh machine lacks a native build prerequisite (libclang, clang's headers, pkg-config, OpenSSL or zlib development files, a C compiler): building librocksdb-sys or rdkafka-sys there fails the same way"
step run 3600 "make run, Ctrl-C after a committed checkpoint (Cairn's crates compiled here)"
log "passed in $SECONDS s"
