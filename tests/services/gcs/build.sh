#!/usr/bin/env bash
# Builds gcs-emulator (this directory's Go program: fake-gcs-server, a Google Cloud Storage
# emulator, plus the XML API requests object_store sends that it lacks; see main.go) into
# ~/.cache/cairn/bin/gcs-emulator-<hash>/gcs-emulator and prints the binary's path. The hash
# covers go.mod, go.sum and main.go, so any change to them builds a new binary; otherwise the
# existing one is reused. Progress goes to stderr. Used by the worker's GCS tests and benchmarks
# (worker/tests/common/gcs.rs).
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if command -v sha256sum >/dev/null; then sha256() { sha256sum "$@"; }; else sha256() { shasum -a 256 "$@"; }; fi
hash="$(cd "$src" && sha256 go.mod go.sum main.go | sha256)"
hash="${hash:0:16}"
dir="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/bin/gcs-emulator-${hash}"
bin="$dir/gcs-emulator"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "go is missing: the GCS tests build their emulator (tests/services/gcs) with Go" \
       "(install Go 1.26+)" >&2
  exit 1
fi
mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "building gcs-emulator into $bin (a few minutes the first time: its modules download)" >&2
(cd "$src" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -trimpath -o "$tmp/gcs-emulator" .) >&2
# A rename within the directory: concurrent builds each install a complete binary.
mv "$tmp/gcs-emulator" "$bin"
echo "$bin"
