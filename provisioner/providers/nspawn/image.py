"""The cached base image: a minimal Debian root filesystem every node is copied from.

Scope: build it once with debootstrap (minbase plus what a Kubernetes "machine" needs), then
apply the provider's fixes for running real systemd under nspawn on a host whose PID 1 is not
systemd. Node-specific files (hostname, addresses, keys, apt proxy) are written per node by
``node``. A stamp records the recipe version and host kernel, so a changed recipe or kernel
re-applies the (cheap) fixes without a new debootstrap.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import platform
import shutil
import time
from pathlib import Path

from provisioner.providers.base import ProviderError, Reporter
from provisioner.providers.nspawn import paths
from provisioner.providers.nspawn.system import run, which

# Bump when the fixes below change: existing images are then re-fixed in place.
RECIPE_VERSION = 3
STAMP = ".provisioner-image"

# Beyond the list: dbus + libpam-systemd make logind/hostnamectl work, python3-apt is
# what Ansible's apt module needs, sudo/procps/iputils-ping/less/gnupg are what playbooks and
# people expect on a Debian host.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "python3",
    "python3-apt",
    "ifupdown",
    "iproute2",
    "iputils-ping",
    "procps",
    "sudo",
    "ca-certificates",
    "less",
    "curl",
    "kmod",
    "iptables",
    "gnupg",
)

# Kernel modules a Kubernetes node loads with `modprobe`, with the kernel option that builds
# them in. The host kernel has no loadable modules, so a node gets a modules.builtin listing the
# built-in ones: kmod then treats `modprobe br_netfilter` as already loaded instead of failing.
BUILTIN_CANDIDATES: tuple[tuple[str, str, str], ...] = (
    ("br_netfilter", "net/bridge", "CONFIG_BRIDGE_NETFILTER"),
    ("bridge", "net/bridge", "CONFIG_BRIDGE"),
    ("overlay", "fs/overlayfs", "CONFIG_OVERLAY_FS"),
    ("nf_conntrack", "net/netfilter", "CONFIG_NF_CONNTRACK"),
    ("nf_nat", "net/netfilter", "CONFIG_NF_NAT"),
    ("nf_tables", "net/netfilter", "CONFIG_NF_TABLES"),
    ("nft_compat", "net/netfilter", "CONFIG_NFT_COMPAT"),
    ("ip_tables", "net/ipv4/netfilter", "CONFIG_IP_NF_IPTABLES"),
    ("iptable_filter", "net/ipv4/netfilter", "CONFIG_IP_NF_FILTER"),
    ("iptable_nat", "net/ipv4/netfilter", "CONFIG_IP_NF_NAT"),
    ("iptable_mangle", "net/ipv4/netfilter", "CONFIG_IP_NF_MANGLE"),
    ("ip6_tables", "net/ipv6/netfilter", "CONFIG_IP6_NF_IPTABLES"),
    ("xt_conntrack", "net/netfilter", "CONFIG_NETFILTER_XT_MATCH_CONNTRACK"),
    ("xt_comment", "net/netfilter", "CONFIG_NETFILTER_XT_MATCH_COMMENT"),
    ("xt_mark", "net/netfilter", "CONFIG_NETFILTER_XT_MARK"),
    ("xt_MASQUERADE", "net/netfilter", "CONFIG_NETFILTER_XT_TARGET_MASQUERADE"),
    ("xt_addrtype", "net/netfilter", "CONFIG_NETFILTER_XT_MATCH_ADDRTYPE"),
    ("xt_multiport", "net/netfilter", "CONFIG_NETFILTER_XT_MATCH_MULTIPORT"),
    ("ip_set", "net/netfilter/ipset", "CONFIG_IP_SET"),
    ("ip_vs", "net/netfilter/ipvs", "CONFIG_IP_VS"),
    ("ip_vs_rr", "net/netfilter/ipvs", "CONFIG_IP_VS_RR"),
    ("ip_vs_wrr", "net/netfilter/ipvs", "CONFIG_IP_VS_WRR"),
    ("ip_vs_sh", "net/netfilter/ipvs", "CONFIG_IP_VS_SH"),
    ("veth", "drivers/net", "CONFIG_VETH"),
    ("vxlan", "drivers/net/vxlan", "CONFIG_VXLAN"),
    ("dummy", "drivers/net", "CONFIG_DUMMY"),
    ("ipip", "net/ipv4", "CONFIG_NET_IPIP"),
    ("wireguard", "drivers/net/wireguard", "CONFIG_WIREGUARD"),
)

# nspawn mounts /proc/sys (except net/) and the cgroup v1 controllers read-only; nodes run
# with all capabilities and container runtimes inside them must write both. Runs after
# systemd-sysctl so the node's own boot does not rewrite host-global (non-net) sysctls.
NODE_PREP_SCRIPT = """#!/bin/sh
# provisioner: make nspawn's read-only API mounts writable (the node has all capabilities)
[ -e /etc/provisioner/ro-procsys ] || mount -o remount,bind,rw /proc/sys
for m in $(findmnt -rn -t cgroup -o TARGET); do mount -o remount,bind,rw "$m"; done
# kubelet and containerd need shared mount propagation for volume mounts (kind does the same)
mount --make-rshared /
exit 0
"""

NODE_PREP_UNIT = """[Unit]
Description=provisioner: make /proc/sys and cgroup v1 controllers writable inside nspawn
DefaultDependencies=no
After=systemd-sysctl.service
Before=sysinit.target containerd.service etcd.service
ConditionVirtualization=systemd-nspawn

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/provisioner-node-prep

[Install]
WantedBy=sysinit.target
"""

# Processes of container tasks (PID 1 of their pid namespace) ignore SIGTERM; without a
# short default every node shutdown or reboot waits 90 s for them.
SYSTEM_CONF = "[Manager]\nDefaultTimeoutStopSec=15s\n"

# Documentation, manual pages and translations are a third of the image's files, and every node
# copies every file: leaving them out makes `up` faster (the copy is per-file work). Copyright
# files stay. Same choice as Debian's "slim" container images.
DPKG_EXCLUDES = """path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""

NO_RECOMMENDS = 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'


def stamp_text() -> str:
    """What the stamp of an up-to-date image contains."""
    return f"recipe={RECIPE_VERSION} kernel={platform.release()}\n"


def is_ready(base: Path) -> bool:
    """True when ``base`` is a complete image made by the current recipe for this kernel."""
    try:
        return (base / STAMP).read_text() == stamp_text()
    except OSError:
        return False


def sources_list(mirror: str, suite: str) -> str:
    """apt sources of a node; fetched through the apt proxy, which forwards to the mirror."""
    return (
        f"deb {mirror} {suite} main\n"
        f"deb {mirror} {suite}-updates main\n"
        f"deb http://deb.debian.org/debian-security {suite}-security main\n"
    )


def builtin_modules(kernel_config: str) -> list[str]:
    """modules.builtin lines for the candidate modules the kernel config builds in."""
    enabled = {line.strip() for line in kernel_config.splitlines()}
    return [
        f"kernel/{path}/{mod}.ko"
        for mod, path, symbol in BUILTIN_CANDIDATES
        if f"{symbol}=y" in enabled
    ]


def _kernel_config() -> str:
    try:
        with gzip.open("/proc/config.gz", "rt") as fh:
            return fh.read()
    except OSError:
        pass
    try:
        return Path(f"/boot/config-{platform.release()}").read_text()
    except OSError:
        return ""


def ensure_base_image(suite: str, mirror: str, report: Reporter) -> Path:
    """Return the base image for ``suite``, building or re-fixing it first when needed."""
    base = paths.base_image(suite)
    base.parent.mkdir(parents=True, exist_ok=True)
    if is_ready(base):
        return base
    with open(base.parent / ".lock", "w") as lock:
        # Another cluster's `up` may be building the same image: wait for it, then re-check.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_ready(base):
            return base
        if not (base / "usr/bin/python3").exists():
            _debootstrap(base, suite, mirror, report)
        report(f"applying node fixes to base image {base}")
        _customize(base, suite, mirror)
        (base / STAMP).write_text(stamp_text())
    return base


def _debootstrap(base: Path, suite: str, mirror: str, report: Reporter) -> None:
    if which("debootstrap") is None:
        raise ProviderError(
            "debootstrap is missing (needed once to build the base image): "
            "apt-get install debootstrap"
        )
    tmp = base.with_name(base.name + ".tmp")
    cache = base.parent / "debootstrap-cache"
    cache.mkdir(exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    report(f"building base image {base} with debootstrap ({suite}, {mirror}); about 80 s")
    start = time.monotonic()
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--cache-dir={cache}",
            "--include=" + ",".join(PACKAGES),
            suite,
            str(tmp),
            mirror,
        ],
        timeout=1800,
    )
    shutil.rmtree(base, ignore_errors=True)
    os.rename(tmp, base)
    report(f"debootstrap took {time.monotonic() - start:.0f}s")


def _chroot(root: Path, *argv: str, check: bool = True) -> None:
    run(["chroot", str(root), *argv], check=check)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _customize(root: Path, suite: str, mirror: str) -> None:
    _write(root / "etc/apt/sources.list", sources_list(mirror, suite))
    _write(root / "etc/apt/apt.conf.d/02provisioner-norecommends", NO_RECOMMENDS)
    _write(root / "etc/dpkg/dpkg.cfg.d/provisioner-slim", DPKG_EXCLUDES)
    _remove_docs(root)
    # Host keys and machine-id are made per node; an empty machine-id means "first boot".
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _write(root / "etc/machine-id", "", 0o444)
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    # Classic ifupdown, not systemd-networkd: networking.service is ordered before
    # network.target, so units with only After=network.target (etcd) find their address.
    _chroot(
        root,
        "systemctl",
        "disable",
        "systemd-networkd.service",
        "systemd-networkd.socket",
        "systemd-networkd-wait-online.service",
        check=False,
    )
    # No DNS in the lab: names come from /etc/hosts.
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    _write(resolv, "")
    # The console is only logged (--console=read-only); apt timers would take the dpkg lock
    # in the middle of a provisioning run.
    _chroot(root, "systemctl", "mask", "getty@tty1.service", "console-getty.service", check=False)
    _chroot(root, "systemctl", "disable", "apt-daily.timer", "apt-daily-upgrade.timer", check=False)
    _write(root / "usr/local/sbin/provisioner-node-prep", NODE_PREP_SCRIPT, 0o755)
    _write(root / "etc/systemd/system/provisioner-node-prep.service", NODE_PREP_UNIT)
    (root / "etc/provisioner").mkdir(exist_ok=True)
    _chroot(root, "systemctl", "enable", "provisioner-node-prep.service")
    _write(root / "etc/systemd/system.conf.d/provisioner.conf", SYSTEM_CONF)
    _install_builtin_modules(root)
    _chroot(root, "apt-get", "clean", check=False)


def _remove_docs(root: Path) -> None:
    share = root / "usr/share"
    for sub in ("man", "info"):
        for child in (share / sub).glob("*"):
            _remove(child)
    for child in (share / "locale").glob("*"):
        if child.name != "locale.alias":
            _remove(child)
    for pkg in (share / "doc").glob("*"):
        if pkg.is_dir() and not pkg.is_symlink():
            for child in pkg.iterdir():
                if child.name != "copyright":
                    _remove(child)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _install_builtin_modules(root: Path) -> None:
    release = platform.release()
    moddir = root / "lib/modules" / release
    shutil.rmtree(moddir, ignore_errors=True)
    moddir.mkdir(parents=True)
    lines = builtin_modules(_kernel_config())
    (moddir / "modules.builtin").write_text("".join(f"{line}\n" for line in lines))
    (moddir / "modules.order").write_text("")
    _chroot(root, "depmod", "-a", release, check=False)
