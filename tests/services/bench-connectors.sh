#!/usr/bin/env bash
# Runs the connector benchmarks of docs/benchmarks.md: starts a Kafka broker (KRaft, official
# jars) and MinIO on loopback, runs `cairn-bench kafka`, `cairn-bench store --url s3://…`, `cairn-bench
# recovery --store s3://...` and `cairn-bench failover --store s3://...` (each next to its
# bare-client baseline, in the same run), and stops both servers (also on Ctrl-C or error).
#
#   tests/services/bench-connectors.sh [--records N] [--keys K] [--files F] [--file-mb M]
#                                      [--recovery-mb M] [--failover-mb M]
#                                      [--only kafka|store|recovery|failover]
#
# --only runs one of the four (MinIO is started only for the last three). Needs Java 17+, Maven
# and Go (fetched/built once into ~/.cache/cairn), and builds cairn-bench with --release unless
# CAIRN_BENCH_BIN names a cairn-bench binary to run instead.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
records=5000000 keys=100000 files=8 file_mb=64 recovery_mb=1024 failover_mb=1024 only=
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --keys) keys="$2"; shift 2 ;;
    --files) files="$2"; shift 2 ;;
    --file-mb) file_mb="$2"; shift 2 ;;
    --recovery-mb) recovery_mb="$2"; shift 2 ;;
    --failover-mb) failover_mb="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

case "$only" in
  ''|kafka|store|recovery|failover) ;;
  *) echo "--only takes kafka, store, recovery or failover, not $only" >&2; exit 2 ;;
esac
runs() { [ -z "$only" ] || [ "$only" = "$1" ]; }
need_minio=1
[ "$only" = kafka ] && need_minio=0

libs="$("$here/kafka/fetch.sh")"
[ "$need_minio" = 0 ] || minio="$("$here/minio/build.sh")"
bench="$("$here/bench-bin.sh")"

work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench-services.XXXXXX")"
pids=()
keep_work=0
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$keep_work" = 1 ]; then
    echo "kept $work (server logs) for debugging" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT INT TERM

# Stops the run, naming the server that failed and its log (kept, with the rest of $work).
fail() { # <what failed> <log>
  echo "$1; its log: $2" >&2
  tail -n 20 "$2" >&2 || true
  keep_work=1
  exit 1
}

kafka_port="$(free_port)" controller_port="$(free_port)"
cat > "$work/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$work/kafka-data
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
PROPS
java -cp "$libs/*" kafka.tools.StorageTool format --standalone -t cairn-bench-cluster01 \
  -c "$work/server.properties" >"$work/kafka-format.log" 2>&1 ||
  fail "formatting the Kafka storage (kafka.tools.StorageTool) failed" "$work/kafka-format.log"
java -Xms512m -Xmx1g -cp "$libs/*" kafka.Kafka "$work/server.properties" >"$work/kafka.log" 2>&1 &
kafka_pid=$!
pids+=("$kafka_pid")

minio_port=
if [ "$need_minio" = 1 ]; then
  minio_port="$(free_port)" console_port="$(free_port)"
  export AWS_ACCESS_KEY_ID=cairn-bench AWS_SECRET_ACCESS_KEY=cairn-bench-secret
  MINIO_ROOT_USER=$AWS_ACCESS_KEY_ID MINIO_ROOT_PASSWORD=$AWS_SECRET_ACCESS_KEY MINIO_BROWSER=off \
    "$minio" server --quiet --address "127.0.0.1:$minio_port" \
    --console-address "127.0.0.1:$console_port" "$work/minio-data" >"$work/minio.log" 2>&1 &
  minio_pid=$!
  pids+=("$minio_pid")
fi

# The servers up within 60 s: the broker accepts connections, MinIO reports itself ready.
kafka_up=0 minio_up=$((1 - need_minio))
for _ in $(seq 600); do
  kill -0 "$kafka_pid" 2>/dev/null || fail "the Kafka broker exited during start" "$work/kafka.log"
  [ "$need_minio" = 0 ] || kill -0 "$minio_pid" 2>/dev/null ||
    fail "MinIO exited during start" "$work/minio.log"
  [ "$kafka_up" = 1 ] || { (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null && kafka_up=1; }
  [ "$minio_up" = 1 ] ||
    { curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$minio_port/minio/health/ready" && minio_up=1; }
  if [ "$kafka_up" = 1 ] && [ "$minio_up" = 1 ]; then
    break
  fi
  sleep 0.1
done
[ "$kafka_up" = 1 ] ||
  fail "the Kafka broker did not accept connections on 127.0.0.1:$kafka_port within 60 s" "$work/kafka.log"
[ "$minio_up" = 1 ] ||
  fail "MinIO was not ready on 127.0.0.1:$minio_port within 60 s" "$work/minio.log"
[ "$need_minio" = 0 ] ||
  curl -sf -X PUT --aws-sigv4 aws:amz:us-east-1:s3 \
    --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "http://127.0.0.1:$minio_port/bench" >/dev/null

if runs kafka; then
  "$bench" kafka --brokers "127.0.0.1:$kafka_port" --records "$records" --keys "$keys"
fi
if runs store; then
  CAIRN_S3_ENDPOINT="http://127.0.0.1:$minio_port" \
    "$bench" store --url s3://bench --files "$files" --file-mb "$file_mb"
fi
if runs recovery; then
  CAIRN_S3_ENDPOINT="http://127.0.0.1:$minio_port" \
    "$bench" recovery --store s3://bench/recovery --values-mb "$recovery_mb"
fi
# A prefix of its own: failover refuses a non-empty one (a job restores what it finds there).
# Its worker processes inherit the S3 variables.
if runs failover; then
  CAIRN_S3_ENDPOINT="http://127.0.0.1:$minio_port" \
    "$bench" failover --store s3://bench/failover --state-mb "$failover_mb"
fi
