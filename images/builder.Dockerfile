# The builder image for machines without an image registry (images/local-bases.sh): the Debian
# packages RocksDB (C++), librdkafka (C, OpenSSL, zlib) and bindgen (libclang) need, plus a Rust
# toolchain copied in from the machine that builds it. Equivalent, for the Dockerfiles, to the
# public rust:1-bookworm image with libclang-dev added.
ARG BASE=local/debian:bookworm
FROM ${BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       build-essential libclang-dev pkg-config libssl-dev zlib1g-dev make perl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY rust/ /usr/local/rust/
# The build machine's CA bundle, for cargo only (see local-bases.sh); /etc/ssl/certs stays Debian's.
COPY build-ca.crt /usr/local/share/cairn/build-ca.crt
ENV CARGO_HTTP_CAINFO=/usr/local/share/cairn/build-ca.crt \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN cargo --version && rustc --version
