#!/usr/bin/env bash
# Debian packages the project needs on the controller (run as root; idempotent): nspawn
# machines (debootstrap, systemd-container), their network and apt proxy, the SSH client,
# openssl (tests cross-check certificates with it), what the Python venv needs, and the
# vagrant provider: Vagrant with vagrant-libvirt, libvirt, QEMU and what the offline box
# build uses (parted, e2fsprogs, rsync, qemu-utils).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS="debootstrap systemd-container apt-cacher-ng iproute2 iptables openssh-client openssl
      python3-venv ca-certificates curl make
      vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu
      qemu-system-x86 qemu-utils seabios ipxe-qemu dnsmasq-base ebtables parted e2fsprogs
      rsync tini"
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
