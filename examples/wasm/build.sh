#!/usr/bin/env bash
# Builds every example WebAssembly component task into OUT_DIR (default
# $HOME/.cache/cairn/wasm/examples): runs examples/wasm/<lang>/build.sh OUT_DIR for each
# language directory that has one. Progress goes to stderr; the last line of stdout is OUT_DIR.
# The tools are installed on first use (pinned, under $HOME/.cache/cairn/tools) and each
# component is rebuilt only when its inputs change, so a second run only checks stamps.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-$HOME/.cache/cairn/wasm/examples}
mkdir -p "$out"
out=$(cd "$out" && pwd)

for script in "$here"/*/build.sh; do
    lang=$(basename "$(dirname "$script")")
    echo "== $lang" >&2
    if ! bash "$script" "$out" >&2; then
        echo "examples/wasm/$lang/build.sh failed" >&2
        exit 1
    fi
done
echo "$out"
