#!/usr/bin/env bash
# Builds count-python.wasm (world `task` of wit/task.wit) into OUT_DIR: build.sh OUT_DIR.
# componentize-py is installed from PyPI, pinned, into $HOME/.cache/cairn/tools; the component
# is rebuilt only when its sources, the WIT file or the tool version change.
set -euo pipefail

out=${1:?usage: build.sh OUT_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wit=$(cd "$here/../../../wit" && pwd)/task.wit
version=0.25.1
tools=$HOME/.cache/cairn/tools
tool=$tools/componentize-py-$version

# Install once per version: under a lock, into a temporary directory renamed when complete, so
# concurrent builds neither install twice nor see half an install.
if [[ ! -d $tool ]]; then
    mkdir -p "$tools"
    exec 8>"$tool.lock"
    flock 8
    if [[ ! -d $tool ]]; then
        echo "installing componentize-py $version" >&2
        tmp=$(mktemp -d "$tool.tmp.XXXXXX")
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
            --target "$tmp" "componentize-py==$version" >&2
        mv "$tmp" "$tool"
    fi
    exec 8>&-
fi

target=$out/count-python.wasm
stamp=$out/.count-python.stamp
hash=$( (echo "componentize-py $version"; cat "$wit" "$here/count.py" "$here/rename_export.py" "$here/build.sh") | sha256sum | cut -d' ' -f1)
if [[ -f $target && -f $stamp && $(cat "$stamp") == "$hash" ]]; then
    echo "count-python.wasm is up to date" >&2
    exit 0
fi

echo "building count-python.wasm" >&2
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/app" "$work/venv/lib/site-packages"
cp "$here/count.py" "$work/app/"
# The same WIT with world `task`'s export `open` named `task-open` (see rename_export.py).
sed 's/^\([[:space:]]*\)export open: func/\1export task-open: func/' "$wit" >"$work/task.wit"
grep -q 'export task-open: func' "$work/task.wit"

# VIRTUAL_ENV names an empty environment: otherwise componentize-py adds the site-packages of
# the python3 running it to the component's search path.
(cd "$work/app" && VIRTUAL_ENV=$work/venv PYTHONPATH=$tool python3 -c \
    'import sys; from componentize_py import script; sys.exit(script())' \
    --wit-path "$work/task.wit" --world task --quiet \
    componentize --python-path . count --output "$work/count.wasm") >&2
python3 "$here/rename_export.py" "$work/count.wasm" "$work/renamed.wasm" task-open open
mv "$work/renamed.wasm" "$target.tmp.$$"
mv "$target.tmp.$$" "$target"
echo "$hash" >"$stamp"
