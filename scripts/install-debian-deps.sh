#!/usr/bin/env bash
# Debian packages the project needs on the controller (run as root; idempotent): nspawn
# machines (debootstrap, systemd-container), their network and apt proxy, the SSH client,
# openssl (tests cross-check certificates with it), what the Python venv needs, and the
# vagrant provider: Vagrant with vagrant-libvirt, libvirt, QEMU and what the offline box
# build uses (parted, e2fsprogs, rsync, qemu-utils); for building the artifacts from source:
# a C toolchain and a static libseccomp for runc (cgo, seccomp), and Go when none is
# installed (Debian 12's golang is too old for Kubernetes 1.35+: then Go comes from the Go
# module proxy's golang.org/toolchain module, see below); the lab registry (Debian's
# docker-registry, the CNCF distribution registry; started by the lab fixture only).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS="debootstrap systemd-container apt-cacher-ng iproute2 iptables openssh-client openssl
      python3-venv ca-certificates curl make
      vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu
      qemu-system-x86 qemu-utils seabios ipxe-qemu dnsmasq-base ebtables parted e2fsprogs
      rsync tini gcc libc6-dev libseccomp-dev pkg-config unzip docker-registry"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  apt-get -o DPkg::Lock::Timeout=600 update -q
  # shellcheck disable=SC2086 # word splitting of the package list is intended
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing
fi
# libvirt's packaged "default" NAT network (192.168.122.0/24) is not the project's to use:
# never start it with libvirtd. The vagrant provider makes its own isolated networks.
rm -f /etc/libvirt/qemu/networks/autostart/default.xml

# Go for `provisioner artifacts build`: the recipes' go.mod files say `go 1.26`. A machine
# without a new enough Go gets the official toolchain from the Go module proxy
# (golang.org/toolchain, the zip `GOTOOLCHAIN=go1.26.8` would download) into /usr/local/go.
# The project's machines ship Go 1.26, so this branch only runs on other machines.
GO_WANT=1.26
have_go() {
  command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || return 1
  local g; g=$(command -v go || echo /usr/local/go/bin/go)
  local v; v=$("$g" env GOVERSION 2>/dev/null | sed 's/^go//')
  [ "$(printf '%s\n%s\n' "$GO_WANT" "$v" | sort -V | head -1)" = "$GO_WANT" ]
}
if ! have_go; then
  GO_TOOLCHAIN_VERSION=v0.0.1-go1.26.8.linux-amd64
  proxy=${GOPROXY:-https://proxy.golang.org}; proxy=${proxy%%,*}
  tmp=$(mktemp -d)
  curl -fsSL -o "$tmp/go.zip" "$proxy/golang.org/toolchain/@v/$GO_TOOLCHAIN_VERSION.zip"
  rm -rf /usr/local/go.new && mkdir -p /usr/local/go.new
  (cd "$tmp" && unzip -q go.zip)
  mv "$tmp/golang.org/toolchain@$GO_TOOLCHAIN_VERSION" /usr/local/go.new/go
  rm -rf /usr/local/go && mv /usr/local/go.new/go /usr/local/go && rmdir /usr/local/go.new
  rm -rf "$tmp"
  echo "installed Go $(/usr/local/go/bin/go env GOVERSION) into /usr/local/go"
fi
