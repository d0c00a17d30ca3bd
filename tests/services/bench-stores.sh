#!/usr/bin/env bash
# Runs the store benchmark of docs/benchmarks.md#checkpoint-stores: starts MinIO, Azurite, the
# GCS emulator and an HDFS cluster (a NameNode and one DataNode from the official Hadoop jars)
# on loopback, runs `cairn-bench store` on each (Cairn's checkpoint upload and restore next to
# the service's bare client moving the same bytes, in the same run), and stops them (also on
# Ctrl-C or error).
#
#   tests/services/bench-stores.sh [--files F] [--file-mb M]
#
# Needs Go, Node.js/npm, Java 17+ and Maven (each server is fetched or built once into
# ~/.cache/cairn), and builds cairn-bench with --release (or runs $CAIRN_BENCH_BIN).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
files=8 file_mb=64
while [ $# -gt 0 ]; do
  case "$1" in
    --files) files="$2"; shift 2 ;;
    --file-mb) file_mb="$2"; shift 2 ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # <port> <what> <log>
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$2 did not listen on 127.0.0.1:$1 within 60 s; its log: $3" >&2
  tail -n 20 "$3" >&2 || true
  exit 1
}

minio="$("$here/minio/build.sh")"
azurite="$("$here/azurite/install.sh")"
gcs="$("$here/gcs/build.sh")"
hadoop="$("$here/hdfs/fetch.sh")"
# CAIRN_BENCH_BIN: an already built release cairn-bench (skips the build; bench-bin.sh).
bench="$("$here/bench-bin.sh")"

work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench-stores.XXXXXX")"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# S3: MinIO.
s3_port="$(free_port)" console_port="$(free_port)"
s3_user=cairn-bench s3_secret=cairn-bench-secret
MINIO_ROOT_USER=$s3_user MINIO_ROOT_PASSWORD=$s3_secret MINIO_BROWSER=off \
  "$minio" server --quiet --address "127.0.0.1:$s3_port" \
  --console-address "127.0.0.1:$console_port" "$work/minio" >"$work/minio.log" 2>&1 &
pids+=("$!")
# Azure: Azurite's blob service, no telemetry.
az_port="$(free_port)"
"$azurite" --blobHost 127.0.0.1 --blobPort "$az_port" --location "$work/azurite" \
  --disableTelemetry --silent --skipApiVersionCheck >"$work/azurite.log" 2>&1 &
pids+=("$!")
# GCS: the emulator of tests/services/gcs.
gcs_port="$(free_port)"
"$gcs" -addr "127.0.0.1:$gcs_port" -root "$work/gcs" >"$work/gcs.log" 2>&1 &
pids+=("$!")
# HDFS: MiniHdfs keeps running while its stdin is open (a FIFO held by this script).
hdfs_port="$(free_port)"
mkfifo "$work/hdfs.in"
java -Xmx1g -cp "$hadoop/classes:$hadoop/libs/*" MiniHdfs "$hdfs_port" "$work/hdfs" 1 1 \
  <"$work/hdfs.in" >"$work/hdfs.out" 2>"$work/hdfs.log" &
pids+=("$!")
exec 7>"$work/hdfs.in"

wait_port "$s3_port" MinIO "$work/minio.log"
wait_port "$az_port" Azurite "$work/azurite.log"
wait_port "$gcs_port" "the GCS emulator" "$work/gcs.log"
for _ in $(seq 1200); do grep -q '^READY' "$work/hdfs.out" && break; sleep 0.1; done
grep -q '^READY' "$work/hdfs.out" || { tail -n 20 "$work/hdfs.log" >&2; echo "HDFS did not start" >&2; exit 1; }

for _ in $(seq 300); do
  curl -sf -X PUT --aws-sigv4 aws:amz:us-east-1:s3 --user "$s3_user:$s3_secret" \
    "http://127.0.0.1:$s3_port/bench" >/dev/null && break
  sleep 0.2
done
curl -sf -X POST -H 'Content-Type: application/json' --data-binary '{"name":"bench"}' \
  "http://127.0.0.1:$gcs_port/storage/v1/b" >/dev/null
# Azure's Create Container is signed with the emulator's well-known key (public, fixed).
az_account=devstoreaccount1
az_key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
az_date="$(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S GMT')"
az_sign="$(printf 'PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:%s\nx-ms-version:2021-08-06\n/%s/%s/bench\nrestype:container' \
  "$az_date" "$az_account" "$az_account" |
  openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(printf '%s' "$az_key" | base64 -d | od -An -tx1 | tr -d " \n")" -binary |
  base64)"
curl -sf -X PUT -H "x-ms-date: $az_date" -H 'x-ms-version: 2021-08-06' -H 'Content-Length: 0' \
  -H "Authorization: SharedKey $az_account:$az_sign" \
  "http://127.0.0.1:$az_port/$az_account/bench?restype=container" >/dev/null

echo "## Checkpoint stores: $files files x $file_mb MiB, $(date -u '+%Y-%m-%d %H:%M UTC')"
CAIRN_S3_ENDPOINT="http://127.0.0.1:$s3_port" AWS_ACCESS_KEY_ID=$s3_user AWS_SECRET_ACCESS_KEY=$s3_secret \
  "$bench" store --url s3://bench --files "$files" --file-mb "$file_mb"
AZURE_STORAGE_ACCOUNT_NAME=$az_account AZURE_STORAGE_ACCOUNT_KEY=$az_key \
  AZURE_STORAGE_ENDPOINT="http://127.0.0.1:$az_port/$az_account" AZURE_ALLOW_HTTP=true \
  "$bench" store --url az://bench --files "$files" --file-mb "$file_mb"
GOOGLE_BASE_URL="http://127.0.0.1:$gcs_port" GOOGLE_ALLOW_HTTP=true GOOGLE_BEARER_TOKEN=emulator \
  "$bench" store --url gs://bench --files "$files" --file-mb "$file_mb"
"$bench" store --url "hdfs://127.0.0.1:$hdfs_port/bench" --files "$files" --file-mb "$file_mb"
