#!/usr/bin/env bash
# Builds the MinIO server (a real S3-compatible object store) from its Go module at a pinned
# version into ~/.cache/cairn/bin/minio-<version>/minio and prints the binary's path.
# Idempotent: an existing binary is reused. Used by the worker's S3 tests and benchmarks
# (worker/tests/common/minio.rs) and by the end-to-end suite's services image (tests/services/image).
#
# MinIO publishes no semantic-version tags, so the module is pinned by its pseudo-version
# (a commit of the upstream repository).
set -euo pipefail

MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
short="${MINIO_VERSION#v0.0.0-}"; short="${short%%-*}"
dir="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/bin/minio-${short}"
bin="$dir/minio"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "go is missing: the S3 tests build MinIO from its Go module (install Go 1.24+)" >&2
  exit 1
fi
mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "building MinIO ${MINIO_VERSION} into $bin (a few minutes, once per machine)" >&2
GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install "${MINIO_MODULE}@${MINIO_VERSION}" >&2
mv "$tmp/minio" "$bin"
echo "$bin"
