#!/usr/bin/env bash
# A Docker engine owned by the test run: its own data root (kept under the Cairn cache, so built
# images survive between runs), exec root, socket and pid file, so it never touches a Docker the
# machine may already run and can be stopped by pid.
#
# Usage: scripts/dockerd.sh start|stop|host|running
#   start  starts the daemon if it is not running and waits until it answers; prints DOCKER_HOST
#   stop   stops it (SIGTERM, then SIGKILL after 30 s)
#   host   prints DOCKER_HOST
#   running  exits 0 when the daemon runs
#
# It leaves the host's network settings alone: with iptables on, Docker sets the FORWARD chain's
# policy to DROP (which cut the test bed's pod network, which forwards between namespaces over a
# bridge) and turns on IP forwarding, and neither is undone when it stops. Without its iptables
# rules no container reaches beyond the machine (nothing is masqueraded), which is what the tests
# want; published ports still work through Docker's userland proxy.
#
# Where the kernel's capability bounding set lacks CAP_SYS_RESOURCE (some VMs), Docker's
# --privileged containers (kind nodes) cannot start: runc is wrapped to drop that one
# capability (runc-without-sys-resource.sh next to this script). The daemon outlives the
# checkout that started it, so it runs a copy of the wrapper under the Cairn cache; a daemon
# whose wrapper is gone (started from a checkout since deleted, by an older version of this
# script) is restarted.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}"
data_root="$cache/docker"
run_dir="${CAIRN_DOCKER_RUN_DIR:-/run/cairn-docker}"
sock="$run_dir/docker.sock"
pidfile="$run_dir/dockerd.pid"
log="$run_dir/dockerd.log"
host="unix://$sock"
wrapper="$cache/bin/runc-without-sys-resource.sh"
runtime_file="$run_dir/runtime"

log() { echo "dockerd.sh: $*" >&2; }

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

lacks_sys_resource() {
	local bnd
	bnd="$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)"
	# CAP_SYS_RESOURCE is capability 24.
	(((0x$bnd >> 24) & 1)) && return 1
	return 0
}

# Copies the runc wrapper to the cache (in place only when it changed).
install_wrapper() {
	mkdir -p "$(dirname "$wrapper")"
	if ! cmp -s "$here/runc-without-sys-resource.sh" "$wrapper"; then
		install -m 0755 "$here/runc-without-sys-resource.sh" "$wrapper.tmp"
		mv "$wrapper.tmp" "$wrapper"
	fi
}

# True when the running daemon's runtime is usable: on a kernel that needs the wrapper, the
# daemon must have been started with the cached copy, and the copy must exist.
runtime_ok() {
	lacks_sys_resource || return 0
	[[ -f "$runtime_file" && "$(cat "$runtime_file")" == "$wrapper" && -x "$wrapper" ]]
}

start() {
	# One start at a time: make test starts the e2e cluster and the fresh-machine check together.
	mkdir -p "$run_dir"
	exec 9>"$run_dir/start.lock"
	flock 9
	if lacks_sys_resource; then
		install_wrapper
	fi
	if running && runtime_ok; then
		echo "$host"
		return
	fi
	if running; then
		log "restarting dockerd: it runs a runc wrapper that is gone (started from a deleted checkout)"
		stop
	fi
	for tool in dockerd containerd runc docker; do
		command -v "$tool" >/dev/null || {
			log "$tool is missing: install Docker (Debian: apt-get install docker.io)"
			exit 1
		}
	done
	mkdir -p "$data_root" "$run_dir"
	local args=(--data-root "$data_root" --exec-root "$run_dir/exec" -H "$host" --pidfile "$pidfile"
		--storage-driver overlay2 --exec-opt native.cgroupdriver=cgroupfs
		--containerd-namespace cairn --containerd-plugins-namespace cairn-plugins
		--bridge none --iptables=false --ip-forward=false)
	if lacks_sys_resource; then
		command -v jq >/dev/null || {
			log "jq is missing: the runc wrapper this kernel needs edits OCI specs with it (Debian: apt-get install jq)"
			exit 1
		}
		args+=(--add-runtime "nosysres=$wrapper" --default-runtime nosysres)
		echo "$wrapper" >"$runtime_file"
	else
		rm -f "$runtime_file"
	fi
	log "starting dockerd (data root $data_root, socket $sock)"
	# Not holding the start lock (fd 9) for the daemon's lifetime.
	setsid dockerd "${args[@]}" >"$log" 2>&1 </dev/null 9>&- &
	local daemon=$!
	for _ in $(seq 1 60); do
		if DOCKER_HOST="$host" docker version >/dev/null 2>&1; then
			echo "$host"
			return
		fi
		kill -0 "$daemon" 2>/dev/null || break
		sleep 1
	done
	kill -0 "$daemon" 2>/dev/null && log "dockerd did not answer within 60 s; its log:" ||
		log "dockerd exited; its log:"
	tail -n 30 "$log" >&2
	exit 1
}

stop() {
	running || return 0
	local pid
	pid="$(cat "$pidfile")"
	kill -TERM "$pid"
	for _ in $(seq 1 30); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 1
	done
	kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
	rm -f "$pidfile"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
host) echo "$host" ;;
running) running ;;
*)
	echo "usage: $0 start|stop|host|running" >&2
	exit 2
	;;
esac
