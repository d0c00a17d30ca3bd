#!/usr/bin/env bash
# The build directory ($CARGO_TARGET_DIR) lives outside the checkout and is shared, so RocksDB is
# compiled once per machine. Cargo judges the workspace's own crates fresh by file times, so after
# a build from another checkout (a CI clone, a second worktree) this checkout's older files would
# look up to date and its tests would run the other checkout's code, with the other checkout's
# paths compiled in. When the checkout building here changes, forget only the workspace's own
# crates; dependencies, RocksDB included, stay.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:?CARGO_TARGET_DIR is not set (the Makefile sets it)}"
stamp="$target/.cairn-checkout"
here="$(pwd -P)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$here" ]; then
  exit 0
fi
if [ -d "$target" ]; then
  # The workspace's own packages: the first `name =` of every member's Cargo.toml.
  packages=""
  for manifest in */Cargo.toml tests/*/Cargo.toml examples/*/Cargo.toml; do
    [ -f "$manifest" ] || continue
    name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n 1)
    [ -n "$name" ] && packages="$packages -p $name"
  done
  echo "build directory was last used by another checkout; rebuilding this workspace's crates"
  # shellcheck disable=SC2086 # one word per package flag
  cargo clean -q $packages
fi
mkdir -p "$target"
echo "$here" >"$stamp"
