#!/usr/bin/env bash
# runc for kernels whose capability bounding set lacks CAP_SYS_RESOURCE (seen in some VMs).
# Docker grants a --privileged container (a kind node) every capability it knows, and runc then
# fails with "unable to apply caps: operation not permitted". This wrapper removes that one
# capability from the OCI process spec runc is about to use — the bundle's config.json for
# `create`/`run`, the --process file for `exec` — and then runs the real runc unchanged.
# scripts/dockerd.sh installs it as the default runtime only where the capability is missing.
set -euo pipefail

real_runc="${CAIRN_REAL_RUNC:-$(command -v runc)}"

drop_sys_resource() { # <json file> <jq path of the capabilities object>
	local file="$1" path="$2"
	[[ -f "$file" ]] && grep -q CAP_SYS_RESOURCE "$file" || return 0
	jq -c "($path // {}) as \$caps
	       | if ($path) == null then .
	         else $path = (\$caps | map_values(map(select(. != \"CAP_SYS_RESOURCE\")))) end" \
		"$file" >"$file.cairn-tmp"
	mv "$file.cairn-tmp" "$file"
}

subcommand="" bundle="$PWD" process_file=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
	arg="${args[i]}"
	case "$arg" in
	--bundle | -b) bundle="${args[i + 1]:-}" ;;
	--bundle=*) bundle="${arg#--bundle=}" ;;
	--process | -p) process_file="${args[i + 1]:-}" ;;
	--process=*) process_file="${arg#--process=}" ;;
	create | run | exec) [[ -z "$subcommand" ]] && subcommand="$arg" ;;
	esac
done

case "$subcommand" in
create | run) drop_sys_resource "$bundle/config.json" .process.capabilities ;;
exec) [[ -n "$process_file" ]] && drop_sys_resource "$process_file" .capabilities ;;
esac
exec "$real_runc" "$@"
