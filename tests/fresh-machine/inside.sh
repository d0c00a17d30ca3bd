#!/usr/bin/env bash
# The steps tests/fresh-machine/check.sh runs inside its container, as root, in /src/cairn (a
# copy of the checkout). One step per call, so check.sh can time, bound and log each:
#
#   inside.sh machine   make the container what a fresh machine of this kind has before anyone
#                       touches it (docs/fresh-machine.md), libclang-cpp14 included, and check
#                       that the trap is armed: no libclang that bindgen would load
#   inside.sh prereqs   scripts/install-prereqs.sh, as the README's commands run it
#   inside.sh tools     everything `make test` runs is now there
#   inside.sh probe     the native build prerequisites, exercised as the real build does
#                       (tests/fresh-machine/probe)
#   inside.sh run       the README's `make run`: wait for a committed checkpoint, press Ctrl-C
#                       (SIGINT to the job's process group), expect the final checkpoint
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { echo "inside.sh: $*" >&2; }
fail() {
	log "FAILED: $*"
	exit 1
}

machine() {
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# Debian's C/C++ tool chain and cmake come with the machine; libclang-cpp14 too (it is how
	# the old install-prereqs.sh was fooled into skipping libclang-dev).
	apt-get install -y -qq --no-install-recommends gcc g++ make cmake libclang-cpp14 >/dev/null
	[[ -e /usr/lib/llvm-14/lib/libclang-cpp.so.14 ]] ||
		fail "libclang-cpp14 did not install /usr/lib/llvm-14/lib/libclang-cpp.so.14"
	# What clang-sys (bindgen's loader) would accept: nothing yet, or the check proves nothing.
	local found
	found="$(ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
		/usr/lib/x86_64-linux-gnu/libclang.so* /usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so* 2>/dev/null || true)"
	[[ -z "$found" ]] || fail "the fresh machine already has a libclang bindgen can load: $found"
	log "fresh machine: $(rustc --version), $(go version | awk '{ print $3 }'), gcc $(gcc -dumpversion)," \
		"make, cmake, libclang-cpp14 (and no libclang.so)"
}

prereqs() {
	scripts/install-prereqs.sh
}

tools() {
	local missing=() tool
	# make run: the Rust tool chain, make, a C/C++ compiler (RocksDB, librdkafka).
	# make test: cargo fmt/clippy (lint); flock, setsid, sync, kill (build locks, the Docker engine,
	# the worker's crash tests);
	# java, javac, mvn (the Kafka broker, the HDFS cluster), openssl, curl (TLS certificates, MinIO
	# buckets); go (Kubernetes, etcd, Helm, MinIO and the GCS emulator from source); node, npm
	# (Azurite); dockerd, containerd, runc, docker, jq (scripts/dockerd.sh),
	# debootstrap, tar (images/local-bases.sh) for this check and the kind path; clang, node, npm,
	# python3 (examples/wasm/build.sh: the WebAssembly task examples the tests build).
	for tool in cargo rustc make cc gcc g++ flock setsid sync kill java javac mvn openssl curl \
		go dockerd containerd runc docker jq debootstrap tar clang node npm python3; do
		type -P "$tool" >/dev/null || missing+=("$tool")
	done
	cargo fmt --version >/dev/null 2>&1 || missing+=("cargo fmt")
	cargo clippy --version >/dev/null 2>&1 || missing+=("cargo clippy")
	local header
	for header in /usr/include/openssl/ssl.h /usr/include/zlib.h; do
		[[ -e "$header" ]] || missing+=("$header")
	done
	[[ ${#missing[@]} -eq 0 ]] || fail "after install-prereqs.sh, make test would lack: ${missing[*]}"
	# Versions the scripts rely on: Go 1.21+ (it fetches newer toolchains itself), Java 17+.
	local go_minor java_major
	go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
	[[ "$go_minor" -ge 21 ]] || fail "go is $(go env GOVERSION); make test needs 1.21 or later"
	java_major="$(java -version 2>&1 | sed -nE '1s/.*version "([0-9]+).*/\1/p')"
	[[ "${java_major:-0}" -ge 17 ]] || fail "java is ${java_major:-unknown}; the Kafka broker needs 17 or later"
	log "make test's tools: all present (go $(go env GOVERSION), java $java_major, $(docker --version))"
}

probe() {
	cd tests/fresh-machine/probe
	# Its own target dir: the probe's build script must run on this machine, every time.
	CARGO_TARGET_DIR="${PROBE_TARGET_DIR:?}" CAIRN_FRESH_MACHINE_RUN="$(date +%s%N)" \
		cargo run -q
}

latest() { # prints the id of the local job's latest committed checkpoint, 0 for none
	local ids
	ids="$("$CARGO_TARGET_DIR/debug/cairn-worker" checkpoints --json file://./.cairn/checkpoints 2>/dev/null |
		grep -o '"id":[0-9]*' | cut -d: -f2 | sort -n || true)"
	echo "${ids##*$'\n'}" | grep -E '^[0-9]+$' || echo 0
}

run() {
	local out=/tmp/make-run.log build_limit="${RUN_BUILD_LIMIT:-3600}"
	rm -rf .cairn
	# Job control: the job gets a process group of its own, as in a terminal, and does not
	# ignore SIGINT the way a non-interactive shell's background jobs do.
	set -m
	make run >"$out" 2>&1 &
	local job=$! start=$SECONDS
	set +m
	log "make run started (pid $job); waiting for its first committed checkpoint (build bounded at ${build_limit} s)"
	# The build (warm: seconds), then the first checkpoint (interval 10 s).
	while :; do
		kill -0 "$job" 2>/dev/null || {
			cat "$out"
			fail "make run exited before it committed a checkpoint"
		}
		if [[ -x "$CARGO_TARGET_DIR/debug/cairn-worker" ]] && grep -q 'cairn-worker run' "$out"; then
			[[ "$(latest)" -ge 1 ]] && break
		fi
		((SECONDS - start < build_limit)) || {
			kill -INT -- "-$job" 2>/dev/null || true
			cat "$out"
			fail "no committed checkpoint within ${build_limit} s"
		}
		sleep 2
	done
	local before
	before="$(latest)"
	log "checkpoint $before committed $((SECONDS - start)) s after make run started; pressing Ctrl-C"
	kill -INT -- "-$job"
	local status=0 waited=$SECONDS
	# The worker takes its final checkpoint and exits; bounded in case it never does.
	while kill -0 "$job" 2>/dev/null && ((SECONDS - waited < 60)); do sleep 1; done
	if kill -0 "$job" 2>/dev/null; then
		kill -KILL -- "-$job" 2>/dev/null || true
		cat "$out"
		fail "make run was still running 60 s after Ctrl-C"
	fi
	wait "$job" || status=$?
	cat "$out"
	# make itself dies of the SIGINT (130) once the worker has exited; the worker's own outcome
	# is in its log: "job ended" only after a clean stop with the final checkpoint.
	[[ $status -eq 130 || $status -eq 0 ]] || fail "make run exited with status $status after Ctrl-C"
	grep -q 'taking a final checkpoint' "$out" || fail "the worker did not start a final checkpoint on Ctrl-C"
	# "job ended outcome=Outcome { ending: Stopped { checkpoint: N, ... }": the final checkpoint.
	local final after
	final="$(sed -nE 's/.*job ended.*Stopped \{ checkpoint: ([0-9]+).*/\1/p' "$out")"
	[[ -n "$final" ]] || fail "the worker did not report 'job ended' with a final checkpoint after Ctrl-C"
	after="$(latest)"
	[[ "$final" -gt "$before" && "$after" == "$final" ]] ||
		fail "no final checkpoint: the latest was $before before Ctrl-C, the worker reported $final, the store has $after"
	"$CARGO_TARGET_DIR/debug/cairn-worker" checkpoints file://./.cairn/checkpoints
	# What this container compiled itself: Cairn's crates; their dependencies come from the host's
	# build (check.sh), unless it lacked them.
	log "make run compiled here: $(sed -nE 's/^ *Compiling ([^ ]+) .*/\1/p' "$out" | tr '\n' ' ')"
	log "make run: the job ran, committed checkpoint $before, and on Ctrl-C its final checkpoint $after (make's status $status)"
}

case "${1:-}" in
machine | prereqs | tools | probe | run) "$1" ;;
*)
	echo "usage: $0 machine|prereqs|tools|probe|run" >&2
	exit 2
	;;
esac
