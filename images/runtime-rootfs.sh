#!/bin/sh
# Assembles, inside a Dockerfile's build stage, the whole root filesystem of a Cairn runtime
# image: the binary, exactly the shared libraries it loads (from the builder, which is the same
# Debian release), CA certificates for TLS, a passwd entry for the unprivileged uid 65532 and an
# empty /tmp. The final stage is `FROM scratch` plus this directory: no shell, no package
# manager, nothing the binary does not use.
# Usage: runtime-rootfs.sh <binary> <rootfs dir> [<name in /usr/local/bin>]
set -eu
binary="$1" rootfs="$2" name="${3:-$(basename "$1")}"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
install -m 0755 "$binary" "$rootfs/usr/local/bin/$name"
# Release builds keep line tables for backtraces; the image does not carry them (a tenth of the
# size). A backtrace from the image names functions, not lines.
strip --strip-debug "$rootfs/usr/local/bin/$name"
# Every library ldd resolves, and the dynamic loader itself, at the paths the binary asks for.
ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
	while read -r lib; do cp -L --parents "$lib" "$rootfs"; done
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin' >"$rootfs/etc/passwd"
echo 'nonroot:x:65532:' >"$rootfs/etc/group"
# Names resolve through /etc/hosts first, then DNS (the kubelet writes both files).
echo 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
