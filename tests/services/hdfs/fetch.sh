#!/usr/bin/env bash
# Fetches the official Apache Hadoop jars (MiniDFSCluster: a NameNode and DataNodes in one
# JVM) with Maven into ~/.cache/cairn/hadoop-<version>/libs, compiles the MiniHdfs launcher
# against them into .../classes, and prints the cache directory (run it with
# `java -cp '<dir>/classes:<dir>/libs/*' MiniHdfs ...`). Idempotent: a complete cache is reused
# without touching the network. Used by the worker's HDFS tests (worker/tests/common/hdfs.rs).
set -euo pipefail

HADOOP_VERSION=3.4.2   # keep in sync with pom.xml
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/hadoop-${HADOOP_VERSION}"
libs="$cache/libs"
classes="$cache/classes"

# Test binaries start clusters in parallel: one of them fills the cache, the others wait.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# The cache is complete for this pom.xml and MiniHdfs.java only: a changed dependency list
# fetches again, a changed launcher compiles again.
pom_sum="$(sha256sum "$here/pom.xml" | cut -c1-16)"
all_sum="$(cat "$here/pom.xml" "$here/MiniHdfs.java" | sha256sum | cut -c1-16)"
if [ "$(cat "$cache/.complete" 2>/dev/null)" = "$all_sum" ] && [ -f "$classes/MiniHdfs.class" ]; then
  echo "$cache"
  exit 0
fi
for tool in mvn java javac; do
  if ! command -v "$tool" >/dev/null; then
    echo "$tool is missing: the HDFS tests run a real NameNode and DataNodes from the official" \
         "Hadoop jars (JDK 17+ and Maven; Debian: apt-get install openjdk-17-jdk-headless maven)" >&2
    exit 1
  fi
done
if [ "$(cat "$cache/.libs-complete" 2>/dev/null)" != "$pom_sum" ] \
   || [ ! -f "$libs/hadoop-client-minicluster-${HADOOP_VERSION}.jar" ]; then
  tmp="$(mktemp -d "$cache/.libs.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching Hadoop ${HADOOP_VERSION} jars with Maven into $libs" >&2
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp" >&2
  rm -rf "$libs"
  mv "$tmp" "$libs"
  trap - EXIT
  echo "$pom_sum" >"$cache/.libs-complete"
fi
echo "compiling MiniHdfs.java into $classes" >&2
tmp="$(mktemp -d "$cache/.classes.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
javac -nowarn -d "$tmp" -cp "$libs/*" "$here/MiniHdfs.java" >&2
rm -rf "$classes"
mv "$tmp" "$classes"
trap - EXIT
echo "$all_sum" >"$cache/.complete"
echo "$cache"
