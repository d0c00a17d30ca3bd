#!/usr/bin/env bash
# Installs what building Cairn needs and a fresh machine may lack. Idempotent and quick when
# everything is present. Called by `make run`, `make test` and CI.
set -euo pipefail

# bindgen (clang-sys) loads libclang.so, libclang.so.<N> or libclang-<N>.so; libclang-cpp.so.<N>
# (a different library, preinstalled on some images) does not count.
have_libclang() {
  ldconfig -p 2>/dev/null | grep -Eq '[[:space:]]libclang(-[0-9.]+)?\.so' && return 0
  compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null && return 0
  compgen -G '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' >/dev/null
}

if ! have_libclang; then
  # librocksdb-sys generates its bindings with bindgen, which loads libclang.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing libclang-dev (needed to build RocksDB bindings)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null
  else
    echo "libclang is missing: install it (Debian/Ubuntu: sudo apt-get install libclang-dev)" >&2
    exit 1
  fi
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust from your distribution or with rustup" >&2
  exit 1
fi

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null; then
      rustup component add "$component"
    else
      echo "cargo $component is missing: install the $component component" >&2
      exit 1
    fi
  fi
done

# Building the Kafka client (librdkafka, compiled from source) needs make, pkg-config and the
# OpenSSL and zlib headers. The Kafka and S3 tests also run real servers: a broker from the official jars
# (Java 17+, fetched with Maven), MinIO built from its Go module, TLS certificates made with
# openssl, buckets created with curl (docs/kafka.md, docs/s3.md). Build needs are required; test
# needs are installed when possible and otherwise only reported, so `make run` works without them.
# `make test` also needs `flock` (build locks) and Go (Kubernetes, etcd, CoreDNS, kind, Helm and
# MinIO are built from their Go modules). Its e2e suite on kind (tests/kind) and its fresh-machine
# check (tests/fresh-machine/check.sh) run Docker containers in an engine of the project's own (scripts/dockerd.sh:
# dockerd, containerd, runc and Debian's docker client; jq where the kernel needs its runc wrapper)
# from a Debian image made with debootstrap (images/local-bases.sh). A docker client alone (some
# machines have one without an engine) does not count.
build_debs=() test_debs=()
command -v flock >/dev/null || test_debs+=(util-linux)
type -P kill >/dev/null || test_debs+=(procps) # the tests run kill(1), not the shell's builtin
command -v make >/dev/null || build_debs+=(make)
# openssl-sys (the Kafka client's TLS) finds OpenSSL only through pkg-config on Linux.
command -v pkg-config >/dev/null || build_debs+=(pkg-config)
[ -e /usr/include/openssl/ssl.h ] || build_debs+=(libssl-dev)
[ -e /usr/include/zlib.h ] || build_debs+=(zlib1g-dev)
# A JDK, not only a runtime: the HDFS tests compile their MiniDFSCluster launcher
# (tests/services/hdfs/MiniHdfs.java); the Kafka broker runs on it too.
{ command -v java && command -v javac; } >/dev/null || test_debs+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || test_debs+=(maven)
command -v openssl >/dev/null || test_debs+=(openssl)
command -v curl >/dev/null || test_debs+=(curl)
{ command -v dockerd && [ -x /usr/bin/docker ]; } >/dev/null || test_debs+=(docker.io)
command -v debootstrap >/dev/null || test_debs+=(debootstrap)
command -v jq >/dev/null || test_debs+=(jq)
# The WebAssembly task examples (examples/wasm/build.sh, built by the tests): C with Debian's
# clang and wasm-ld, Python with componentize-py (pip), JavaScript with componentize-js (npm).
command -v clang >/dev/null || test_debs+=(clang)
{ command -v wasm-ld || command -v wasm-ld-14; } >/dev/null || test_debs+=(lld)
command -v node >/dev/null || test_debs+=(nodejs)
command -v npm >/dev/null || test_debs+=(npm)
python3 -m pip --version >/dev/null 2>&1 || test_debs+=(python3-pip)
wanted=("${build_debs[@]}" "${test_debs[@]}")
if [ ${#wanted[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${wanted[*]} (Kafka client build; Kafka/S3 test servers, Docker, kind, WebAssembly examples)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${wanted[@]}" >/dev/null
  elif [ ${#build_debs[@]} -gt 0 ]; then
    echo "missing: ${build_debs[*]} (Debian/Ubuntu: sudo apt-get install ${build_debs[*]})" >&2
    exit 1
  else
    echo "note: make test (Kafka/S3 tests, kind) needs ${test_debs[*]} (Debian/Ubuntu:" \
         "sudo apt-get install ${test_debs[*]})" >&2
  fi
fi
if ! command -v go >/dev/null; then
  echo "note: make test needs Go 1.21 or later (it fetches newer toolchains itself): it" \
       "builds Kubernetes, etcd, CoreDNS, kind, Helm and MinIO from their Go modules" >&2
fi
