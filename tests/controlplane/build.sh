#!/usr/bin/env bash
# Builds what the kind cluster of tests/kind is made from (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl) and the Helm CLI from source with `go build`, at the versions pinned by
# the wrapper modules next to this script (kubernetes/, etcd/, helm/ — their go.mod is the only
# place a version is written).
#
# Usage: tests/controlplane/build.sh [kubernetes|helm|all|node]      (default: all)
#
# Output, keyed by version so a bump never reuses a stale binary:
#   ${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/bin/kubernetes-vX.Y.Z/{etcd,kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
#   ${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/bin/helm-vX.Y.Z/helm
#   ${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/bin/kubernetes-node-vX.Y.Z/{kubelet,kubeadm,kube-proxy},
#   .../coredns-vA.B.C/coredns and .../kind-vD.E.F/kind
#     (`node`: what the kind cluster of tests/kind needs besides the control plane; not in `all`;
#     prints the kind, CoreDNS and node directories, one a line)
# The last line of stdout is the binary directory (for `all`: the Kubernetes one; the Helm one is
# the line before it). Everything else goes to stderr.
#
# Idempotent: binaries that are present and report the pinned version are not rebuilt, so a warm
# run exits at once. Safe to run concurrently (one flock per cache). A build happens in a temporary
# directory next to the final one and is renamed into place, so an interrupted build never leaves a
# half-filled cache directory behind.
#
# envtest convention: when KUBEBUILDER_ASSETS names a directory that holds etcd and kube-apiserver,
# every binary found there is used as is and only the missing ones are built.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target="${1:-all}"
case "$target" in
kubernetes | helm | all | node) ;;
*)
	echo "build.sh: unknown target '$target'; use one of: kubernetes, helm, all, node" >&2
	exit 2
	;;
esac

log() { echo "build.sh: $*" >&2; }

# The single source of each version: the `require` line of a wrapper module.
module_version() { # <module dir> <module path>
	local v
	v="$(awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$here/$1/go.mod")"
	if [[ -z "$v" ]]; then
		log "cannot find the version of $2 in $here/$1/go.mod; it must be required there"
		exit 1
	fi
	echo "$v"
}

k8s_version="$(module_version kubernetes k8s.io/kubernetes)"
etcd_version="$(module_version etcd go.etcd.io/etcd/server/v3)"
helm_version="$(module_version helm helm.sh/helm/v3)"
coredns_version="$(module_version coredns github.com/coredns/coredns)"
kind_version="$(module_version kind sigs.k8s.io/kind)"

cache="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}"
bin_root="$cache/bin"
k8s_dir="$bin_root/kubernetes-$k8s_version"
k8s_out="$k8s_dir" # what is printed: $KUBEBUILDER_ASSETS when it provides every binary
helm_dir="$bin_root/helm-$helm_version"
node_dir="$bin_root/kubernetes-node-$k8s_version"
coredns_dir="$bin_root/coredns-$coredns_version"
kind_dir="$bin_root/kind-$kind_version"

# What each binary must print to count as built at the pinned version.
expected_version_output() { # <binary name>
	case "$1" in
	etcd) echo "etcd Version: ${etcd_version#v}" ;;
	helm) echo "$helm_version" ;;
	coredns) echo "CoreDNS-${coredns_version#v}" ;;
	kind) echo "kind $kind_version" ;;
	*) echo "$k8s_version" ;;
	esac
}

version_output() { # <binary path>
	case "$(basename "$1")" in
	kubectl) "$1" version --client 2>&1 ;;
	kubeadm) "$1" version -o short 2>&1 ;;
	helm) "$1" version --short 2>&1 ;;
	coredns) "$1" -version 2>&1 ;;
	kind) "$1" version 2>&1 ;;
	*) "$1" --version 2>&1 ;;
	esac
}

# True when <path> is an executable that reports the pinned version.
is_good() { # <binary path>
	[[ -x "$1" ]] || return 1
	local out
	out="$(version_output "$1")" || return 1
	grep -qF -- "$(expected_version_output "$(basename "$1")")" <<<"$out"
}

# Binaries provided by KUBEBUILDER_ASSETS are taken as they are (any version: that is the point of
# pointing at them), but only when the directory holds at least etcd and kube-apiserver.
from_assets() { # <binary name>
	local d="${KUBEBUILDER_ASSETS:-}"
	[[ -n "$d" && -x "$d/etcd" && -x "$d/kube-apiserver" && -x "$d/$1" ]]
}

require_go() {
	if ! command -v go >/dev/null 2>&1; then
		log "Go is not installed; install Go >= 1.26 (https://go.dev/doc/install) or put it on PATH"
		exit 1
	fi
}

# Common go build environment: static binaries, no VCS stamping (the module version is stamped
# with -X instead), and no go.work from a parent directory changing the pinned versions.
go_build() { # <module dir> <go build args...>
	local dir="$1"
	shift
	(cd "$here/$dir" && CGO_ENABLED=0 GOWORK=off GOFLAGS="${GOFLAGS:-} -buildvcs=false -mod=readonly" go build -trimpath "$@")
}

# Swaps a freshly built temporary directory in place of <final>, keeping the rename atomic: the
# old directory (if any, e.g. one built with an older etcd) is moved aside first.
install_dir() { # <tmp dir> <final dir>
	local tmp="$1" final="$2"
	if [[ -e "$final" ]]; then
		local old
		old="$(mktemp -d "$bin_root/.old.XXXXXX")"
		mv -T "$final" "$old/dir"
		mv -T "$tmp" "$final"
		rm -rf "$old"
	else
		mv -T "$tmp" "$final"
	fi
}

build_kubernetes() {
	build_kubernetes_set "$k8s_dir" etcd kube-apiserver kube-controller-manager kube-scheduler kubectl
}

# The node binaries are never taken from KUBEBUILDER_ASSETS (envtest has none of them).
build_node() {
	KUBEBUILDER_ASSETS="" build_kubernetes_set "$node_dir" kubelet kubeadm kube-proxy
}

build_kubernetes_set() { # <final dir> <binary names...>
	local k8s_dir="$1"
	shift
	local names=("$@")
	local missing=()
	local n
	for n in "${names[@]}"; do
		if from_assets "$n"; then
			log "$n: using \$KUBEBUILDER_ASSETS/$n"
		elif ! is_good "$k8s_dir/$n"; then
			missing+=("$n")
		fi
	done
	if ((${#missing[@]} == 0)); then
		if ((${#names[@]} == $(for n in "${names[@]}"; do from_assets "$n" && echo; done | wc -l))); then
			log "every control-plane binary comes from \$KUBEBUILDER_ASSETS; nothing to build"
			k8s_out="$KUBEBUILDER_ASSETS"
		else
			log "Kubernetes $k8s_version and etcd $etcd_version are up to date in $k8s_dir"
		fi
		return
	fi
	require_go
	log "building ${missing[*]} (Kubernetes $k8s_version, etcd $etcd_version) from source; a cold build takes a while"
	local tmp
	tmp="$(mktemp -d "$bin_root/.tmp-kubernetes-$k8s_version.XXXXXX")"
	chmod 755 "$tmp"
	# Keep the binaries that are already good so the swap does not drop them.
	for n in "${names[@]}"; do
		if [[ -x "$k8s_dir/$n" ]] && is_good "$k8s_dir/$n"; then
			cp -p "$k8s_dir/$n" "$tmp/$n"
		fi
	done

	local pkgs=()
	for n in "${missing[@]}"; do
		[[ "$n" == etcd ]] || pkgs+=("k8s.io/kubernetes/cmd/$n")
	done
	if ((${#pkgs[@]} > 0)); then
		# The same stamps as upstream's hack/lib/version.sh, so `--version` prints the release.
		# buildDate is the release's publication time (not now) to keep builds reproducible.
		local minor date ld p
		minor="$(cut -d. -f2 <<<"$k8s_version")"
		date="$(cd "$here/kubernetes" && GOWORK=off go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
		ld="-s -w"
		for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
			ld+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
			ld+=" -X $p.gitTreeState=clean -X $p.buildDate=${date:-1970-01-01T00:00:00Z}"
		done
		go_build kubernetes -ldflags "$ld" -o "$tmp/" "${pkgs[@]}"
	fi
	if [[ " ${missing[*]} " == *" etcd "* ]]; then
		# etcd writes its version in code (api/v3/version), so no -X is needed for --version.
		go_build etcd -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
	fi
	for n in "${missing[@]}"; do
		if ! is_good "$tmp/$n"; then
			log "$n was built but does not report $(expected_version_output "$n"): $(version_output "$tmp/$n" | head -3)"
			rm -rf "$tmp"
			exit 1
		fi
	done
	install_dir "$tmp" "$k8s_dir"
	log "installed ${missing[*]} into $k8s_dir"
}

# A single binary whose module writes its version in code (no -X stamps needed).
build_module_binary() { # <wrapper module dir> <package> <final dir> <binary name>
	local module="$1" pkg="$2" final="$3" name="$4"
	if is_good "$final/$name"; then
		log "$name is up to date in $final"
		return
	fi
	require_go
	log "building $name ($pkg) from source"
	local tmp
	tmp="$(mktemp -d "$bin_root/.tmp-$name.XXXXXX")"
	chmod 755 "$tmp"
	go_build "$module" -ldflags "-s -w" -o "$tmp/$name" "$pkg"
	if ! is_good "$tmp/$name"; then
		log "$name was built but does not report $(expected_version_output "$name"): $(version_output "$tmp/$name" | head -3)"
		rm -rf "$tmp"
		exit 1
	fi
	install_dir "$tmp" "$final"
	log "installed $name into $final"
}

build_helm() {
	if is_good "$helm_dir/helm"; then
		log "Helm $helm_version is up to date in $helm_dir"
		return
	fi
	require_go
	log "building Helm $helm_version from source"
	local tmp client_go major minor ld
	tmp="$(mktemp -d "$bin_root/.tmp-helm-$helm_version.XXXXXX")"
	chmod 755 "$tmp"
	# Like Helm's Makefile: the Kubernetes version Helm assumes offline (`helm template`, lint
	# deprecations) follows the client-go it is built with (v0.M.N => 1.M).
	client_go="$(cd "$here/helm" && GOWORK=off go list -m -f '{{.Version}}' k8s.io/client-go)"
	major=1
	minor="$(cut -d. -f2 <<<"$client_go")"
	ld="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
	ld+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
	ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
	go_build helm -ldflags "$ld" -o "$tmp/helm" helm.sh/helm/v3/cmd/helm
	if ! is_good "$tmp/helm"; then
		log "helm was built but does not report $helm_version: $(version_output "$tmp/helm")"
		rm -rf "$tmp"
		exit 1
	fi
	install_dir "$tmp" "$helm_dir"
	log "installed helm into $helm_dir"
}

mkdir -p "$bin_root"
# One build at a time per cache; a second caller waits, then finds everything up to date.
exec 9>"$bin_root/.build.lock"
if ! flock -n 9; then
	log "another build.sh is running on $bin_root; waiting for it"
	flock 9
fi
# Leftovers of a build that was killed: nothing references them.
rm -rf "$bin_root"/.tmp-* "$bin_root"/.old.*

case "$target" in
node)
	build_node
	build_module_binary coredns github.com/coredns/coredns "$coredns_dir" coredns
	build_module_binary kind sigs.k8s.io/kind "$kind_dir" kind
	echo "$kind_dir"
	echo "$coredns_dir"
	echo "$node_dir"
	;;
kubernetes)
	build_kubernetes
	echo "$k8s_out"
	;;
helm)
	build_helm
	echo "$helm_dir"
	;;
all)
	build_helm
	build_kubernetes
	echo "$helm_dir"
	echo "$k8s_out"
	;;
esac
