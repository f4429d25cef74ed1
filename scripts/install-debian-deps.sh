#!/usr/bin/env bash
# Debian packages the project needs on the controller (run as root; idempotent): nspawn
# machines (debootstrap, systemd-container), their network and apt proxy, the SSH client,
# openssl (tests cross-check certificates with it) and what the Python venv needs.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS="debootstrap systemd-container apt-cacher-ng iproute2 iptables openssh-client openssl
      python3-venv ca-certificates curl make"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  apt-get -o DPkg::Lock::Timeout=600 update -q
  # shellcheck disable=SC2086 # word splitting of the package list is intended
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing
fi
