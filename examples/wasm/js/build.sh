#!/usr/bin/env bash
# Builds count-js.wasm (world `task` of wit/task.wit) into OUT_DIR: build.sh OUT_DIR.
# componentize-js and jco are installed from npm, pinned by tools/package-lock.json, into
# $HOME/.cache/cairn/tools; the component is rebuilt only when its sources, the WIT file or
# the tools change.
set -euo pipefail

out=${1:?usage: build.sh OUT_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wit=$(cd "$here/../../../wit" && pwd)/task.wit
version=0.23.0  # componentize-js; tools/package.json pins it and the rest
tools=$HOME/.cache/cairn/tools
lock_hash=$(cat "$here/tools/package.json" "$here/tools/package-lock.json" | sha256sum | cut -c1-12)
tool=$tools/componentize-js-$version-$lock_hash

# Install once per version: under a lock, into a temporary directory renamed when complete, so
# concurrent builds neither install twice nor see half an install. No install scripts run:
# none of these packages needs one.
if [[ ! -d $tool ]]; then
    mkdir -p "$tools"
    exec 8>"$tool.lock"
    flock 8
    if [[ ! -d $tool ]]; then
        echo "installing componentize-js $version" >&2
        tmp=$(mktemp -d "$tool.tmp.XXXXXX")
        cp "$here/tools/package.json" "$here/tools/package-lock.json" "$tmp/"
        (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
        mv "$tmp" "$tool"
    fi
    exec 8>&-
fi

target=$out/count-js.wasm
stamp=$out/.count-js.stamp
hash=$( (echo "$tool"; cat "$wit" "$here/count.js" "$here/build.sh") | sha256sum | cut -d' ' -f1)
if [[ -f $target && -f $stamp && $(cat "$stamp") == "$hash" ]]; then
    echo "count-js.wasm is up to date" >&2
    exit 0
fi

echo "building count-js.wasm" >&2
mkdir -p "$out"
# Every optional WASI feature of the JS runtime is disabled: the task needs none of them, and
# each one adds imports the worker would have to provide (http alone brings wasi:http).
# Never --aot: it downloads weval from outside the package registries.
node "$tool/node_modules/@bytecodealliance/componentize-js/src/cli.js" "$here/count.js" \
    --wit "$wit" --world-name task \
    --disable stdio random clocks http fetch-event \
    --out "$target.tmp.$$" >&2
mv "$target.tmp.$$" "$target"
echo "$hash" >"$stamp"
