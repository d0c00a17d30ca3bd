#!/usr/bin/env bash
# Builds every example WebAssembly component task into OUT_DIR (default
# $HOME/.cache/cairn/wasm/examples-<hash of the sources>): runs examples/wasm/<lang>/build.sh OUT_DIR for each
# language directory that has one. Progress goes to stderr; the last line of stdout is OUT_DIR.
# The tools are installed on first use (pinned, under $HOME/.cache/cairn/tools) and each
# component is rebuilt only when its inputs change, so a second run only checks stamps.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The default directory is named by a hash of the sources (the WIT and examples/wasm), so that
# checkouts of different versions on one machine never overwrite each other's components.
if [[ $# -ge 1 ]]; then
    out=$1
else
    key=$(cd "$here/../.." && find wit examples/wasm -type f -not -name '*.md' -print0 |
        sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
    out=$HOME/.cache/cairn/wasm/examples-$key
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Output of sources a week gone, from other checkouts, is removed.
find "$HOME/.cache/cairn/wasm" -mindepth 1 -maxdepth 1 -name 'examples-*' -mtime +7 \
    -exec rm -rf {} + 2>/dev/null || true

for script in "$here"/*/build.sh; do
    lang=$(basename "$(dirname "$script")")
    echo "== $lang" >&2
    if ! bash "$script" "$out" >&2; then
        echo "examples/wasm/$lang/build.sh failed" >&2
        exit 1
    fi
done
echo "$out"
