#!/usr/bin/env bash
# Builds OUT_DIR/count-c.wasm, the example task in C, a WebAssembly component of world `task`
# (wit/task.wit), from count.c and abi.c beside this script.
#
#   examples/wasm/c/build.sh OUT_DIR
#
# Tools:
#   - Debian's clang and lld (wasm32 target, wasm-ld): installed with apt-get when missing and
#     this runs as root; the module uses no libc and no WASI, so nothing else is needed.
#   - node with jco's transpiler package @bytecodealliance/jco-transpile (wasm-tools'
#     wit-component built to JS: embed the WIT, make the component), every package pinned in
#     tool-package.json, installed once into ~/.cache/cairn/tools/jco-transpile-<version>.
# The result is cached: rebuilt only when a source, the WIT, this script or a tool's version
# changes (their hash is kept in OUT_DIR/.count-c.stamp).
set -euo pipefail

JCO_TRANSPILE_VERSION=0.15.0

log() { echo "wasm/c: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 OUT_DIR"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wit=$(cd "$here/../../.." && pwd)/wit/task.wit
[[ -f $wit ]] || die "no $wit"
mkdir -p "$1"
out=$(cd "$1" && pwd)
target=$out/count-c.wasm
stamp=$out/.count-c.stamp
tools_root=${CAIRN_TOOLS_DIR:-$HOME/.cache/cairn/tools}
tool_dir=$tools_root/jco-transpile-$JCO_TRANSPILE_VERSION
grep -q "\"@bytecodealliance/jco-transpile\": \"$JCO_TRANSPILE_VERSION\"" "$here/tool-package.json" ||
  die "tool-package.json does not pin jco-transpile $JCO_TRANSPILE_VERSION"

# ---- C tool chain --------------------------------------------------------------------------

find_tool() { # name: prints the command (plain or -NN suffixed), or nothing
  local c
  for c in "$1" "$1"-{19,18,17,16,15,14}; do
    if command -v "$c" >/dev/null 2>&1; then echo "$c"; return; fi
  done
}
apt_install() {
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: $* (apt-get)"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 ||
      die "apt-get install $* failed"
  else
    die "missing $*: install the Debian packages '$*' (or run this as root with apt-get)"
  fi
}
CC=$(find_tool clang)
LD=$(find_tool wasm-ld)
if [[ -z $CC || -z $LD ]]; then
  apt_install clang lld
  CC=$(find_tool clang)
  LD=$(find_tool wasm-ld)
  [[ -n $CC && -n $LD ]] || die "clang or wasm-ld still missing after installing clang lld"
fi
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm

# ---- up to date? ---------------------------------------------------------------------------

sources=("$here/count.c" "$here/abi.c" "$here/abi.h" "$here/componentize.mjs"
  "$here/tool-package.json" "${BASH_SOURCE[0]}" "$wit")
hash=$(
  {
    sha256sum "${sources[@]}" | cut -d' ' -f1
    "$CC" --version | head -1
    "$LD" --version | head -1
    node --version
    echo "jco-transpile $JCO_TRANSPILE_VERSION"
  } | sha256sum | cut -d' ' -f1
)
if [[ -f $target && -f $out/count-c-processor.wasm && -f $stamp && $(cat "$stamp") == "$hash" && -f $tool_dir/.complete ]]; then
  log "count-c.wasm is up to date"
  exit 0
fi

# ---- component tool (once per machine; concurrent runs wait on the lock) -------------------

if [[ ! -f $tool_dir/.complete ]]; then
  mkdir -p "$tools_root"
  exec 9>"$tools_root/.jco-transpile-$JCO_TRANSPILE_VERSION.lock"
  flock 9
  if [[ ! -f $tool_dir/.complete ]]; then
    log "installing jco-transpile $JCO_TRANSPILE_VERSION (npm) into $tool_dir"
    tmp=$(mktemp -d "$tools_root/.jco-transpile-$JCO_TRANSPILE_VERSION.XXXXXX")
    cp "$here/tool-package.json" "$tmp/package.json"
    if ! (cd "$tmp" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error) >&2; then
      rm -rf "$tmp"
      die "npm install of jco-transpile $JCO_TRANSPILE_VERSION failed"
    fi
    chmod 755 "$tmp"
    touch "$tmp/.complete"
    rm -rf "$tool_dir"
    mv "$tmp" "$tool_dir"
  fi
  exec 9>&-
fi

# ---- build ---------------------------------------------------------------------------------

work=$(mktemp -d "$out/.count-c.XXXXXX")
trap 'rm -rf "$work"' EXIT

# -nostdlib: no libc, no WASI imports; -mbulk-memory: memcpy is memory.copy;
# --stack-first: a stack overflow traps instead of overwriting data.
compile() { # OUT.wasm [-D...]
  local core=$1
  shift
  "$CC" --target=wasm32 -O2 -std=c11 -nostdlib -mbulk-memory -fvisibility=hidden \
    -Wall -Wextra -Werror -fuse-ld="$(command -v "$LD")" \
    -Wl,--no-entry -Wl,--stack-first -Wl,-z,stack-size=65536 -Wl,--strip-all \
    "$@" -o "$core" "$here/count.c" "$here/abi.c"
}

log "compiling count.c abi.c ($CC, $LD)"
compile "$work/core.wasm"
log "making the component (world batch-task)"
node "$here/componentize.mjs" "$tool_dir" new "$work/core.wasm" "$wit" batch-task "$work/count-c.wasm"
# The same task exporting `process` only (world processor): the worker's defaults stand in
# for the entry points it leaves out.
compile "$work/core-processor.wasm" -DPROCESSOR_ONLY
node "$here/componentize.mjs" "$tool_dir" new "$work/core-processor.wasm" "$wit" processor \
  "$work/count-c-processor.wasm"
mv "$work/count-c-processor.wasm" "$out/count-c-processor.wasm"
mv "$work/count-c.wasm" "$target"
echo "$hash" >"$stamp"
log "built $target ($(stat -c %s "$target") bytes)"
