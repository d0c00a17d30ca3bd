#!/usr/bin/env bash
# Fetches the official Apache Kafka broker jars (KRaft mode) with Maven into
# ~/.cache/cairn/kafka-<version>/libs and prints that directory. Idempotent: a complete cache
# is reused without touching the network. Used by the worker's Kafka tests and benchmarks
# (worker/tests/common/kafka.rs), and by the end-to-end suite's services image (tests/services/image).
set -euo pipefail

KAFKA_VERSION=4.1.0   # keep in sync with pom.xml
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/kafka-${KAFKA_VERSION}"
libs="$cache/libs"

# The cache is complete for this pom.xml only: a changed dependency list fetches again.
pom_sum="$(sha256sum "$here/pom.xml" | cut -c1-16)"
if [ "$(cat "$cache/.complete" 2>/dev/null)" = "$pom_sum" ] && [ -f "$libs/kafka_2.13-${KAFKA_VERSION}.jar" ]; then
  echo "$libs"
  exit 0
fi
for tool in mvn java; do
  if ! command -v "$tool" >/dev/null; then
    echo "$tool is missing: the Kafka tests run a real broker from the official jars (Java 17+" \
         "and Maven; Debian: apt-get install openjdk-17-jre-headless maven)" >&2
    exit 1
  fi
done
mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.libs.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "fetching Kafka ${KAFKA_VERSION} jars with Maven into $libs" >&2
mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$tmp" >&2
rm -rf "$libs"
mv "$tmp" "$libs"
trap - EXIT
echo "$pom_sum" >"$cache/.complete"
echo "$libs"
