#!/usr/bin/env bash
# Prints the path of a release cairn-bench for the benchmark scripts: CAIRN_BENCH_BIN if set (an
# already built binary, no build), else the workspace's, built with --release into
# CARGO_TARGET_DIR (default ~/.cache/cairn/target). Build output goes to stderr.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ -n "${CAIRN_BENCH_BIN:-}" ]; then
  echo "$CAIRN_BENCH_BIN"
  exit 0
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}"
(cd "$root" && cargo build --release -q --workspace --bin cairn-bench) >&2
echo "$CARGO_TARGET_DIR/release/cairn-bench"
