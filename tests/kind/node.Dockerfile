# The kind node image of the end-to-end cluster, built without any registry by node-image.sh:
# Debian's systemd, containerd, runc and CNI plugins; kind's own node files (entrypoint, systemd
# units for kubelet and containerd); kubelet, kubeadm and kubectl built from the pinned
# Kubernetes module. node-image.sh then preloads the control-plane images into containerd.
ARG BASE=local/debian:bookworm
FROM ${BASE}
COPY kind-files/usr/local/bin/ /usr/local/bin/
COPY kind-files/kind/ /kind/
COPY kind-files/etc/ /etc/
# Cairn's containerd settings and the single-node pod network (replace kind's); they are in place
# before apt runs, and --force-confold keeps them when Debian's containerd brings its own.
COPY containerd-config.toml /etc/containerd/config.toml
COPY 10-bridge.conflist /etc/cni/net.d/10-bridge.conflist
COPY bin/ /usr/bin/
COPY version /kind/version
RUN chmod 0755 /usr/local/bin/* /kind/bin /kind/bin/* /usr/bin/kubelet /usr/bin/kubeadm /usr/bin/kubectl \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      -o Dpkg::Options::=--force-confold \
      systemd systemd-sysv dbus conntrack iptables nftables iproute2 ethtool util-linux mount kmod \
      libseccomp2 pigz bash ca-certificates jq procps \
      containerd runc containernetworking-plugins \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
RUN find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete \
 && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \
 && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \
 # kind's units expect containerd, ctr, the shim and runc under /usr/local.
 && ln -sf /usr/bin/containerd /usr/bin/ctr /usr/bin/containerd-shim-runc-v2 /usr/local/bin/ \
 && ln -sf /usr/sbin/runc /usr/local/sbin/runc \
 && mkdir -p /opt/cni && ln -sfn /usr/lib/cni /opt/cni/bin \
 # The base OCI spec kind's containerd config names, with kind's product-files hook.
 && ctr oci spec \
    | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
    | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json \
 && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \
 && systemctl mask systemd-binfmt.service \
 && mkdir -p /etc/kubernetes/manifests
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
