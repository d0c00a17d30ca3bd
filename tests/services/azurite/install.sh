#!/usr/bin/env bash
# Installs Azurite (Microsoft's Azure Storage emulator, a real Blob service) from the npm
# registry at a pinned version into ~/.cache/cairn/azurite-<version> and prints the path of its
# `azurite-blob` command. Idempotent: a complete install is reused without touching the network.
# Used by the worker's Azure Blob tests and benchmarks (worker/tests/common/azurite.rs).
#
# 3.35.0 is the newest release that runs on Node.js 20 (3.36 needs 21, 3.37 needs 22).
set -euo pipefail

AZURITE_VERSION=3.35.0
dir="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/azurite-${AZURITE_VERSION}"
bin="$dir/node_modules/.bin/azurite-blob"

if [ -x "$bin" ] && [ -f "$dir/.complete" ]; then
  echo "$bin"
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "npm is missing: the Azure tests run Azurite from the npm registry (Debian: apt-get" \
       "install nodejs npm)" >&2
  exit 1
fi
mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.install.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "installing Azurite ${AZURITE_VERSION} into $dir (once per machine)" >&2
npm install --no-audit --no-fund --loglevel=error --prefix "$tmp" "azurite@${AZURITE_VERSION}" >&2
rm -rf "$dir/node_modules"
mv "$tmp/node_modules" "$dir/node_modules"
touch "$dir/.complete"
echo "$bin"
