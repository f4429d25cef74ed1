"""One node: its root filesystem, its systemd-nspawn command line, start and stop.

Scope: a node is a copy of the base image plus a few per-node files, booted by
systemd-nspawn under a small supervisor (``supervisor``) that runs detached from the caller.
Pids are recorded in the node directory; stopping signals only recorded pids whose command
line still matches, then whatever is left inside the node's own cgroups.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import provisioner
from provisioner.providers.base import ProviderError
from provisioner.providers.nspawn import cgroups, paths
from provisioner.providers.nspawn.host import Network
from provisioner.providers.nspawn.system import alive, owned, read_pid, run, signal_pid

SUPERVISOR_MODULE = "provisioner.providers.nspawn.supervisor"
# nspawn's default; `@keyring` (kernel keyrings) and `bpf` are what container runtimes and
# systemd inside the node call and nspawn filters by default.
SYSCALL_FILTER = "@keyring bpf"


@dataclass(frozen=True)
class NodeConfig:
    """Everything needed to make and boot one node."""

    cluster: str
    name: str
    address: IPv4Address
    network: Network
    hosts: tuple[tuple[str, IPv4Address], ...]
    """Every node of the cluster, for /etc/hosts."""
    ssh_user: str
    ssh_port: int
    authorized_key: str
    apt_proxy: str | None
    """URL of the apt proxy, or None when the nodes get none."""

    @property
    def paths(self) -> paths.NodePaths:
        """The node's files."""
        return paths.node_paths(self.cluster, self.name)

    @property
    def machine(self) -> str:
        """The nspawn machine name (names the host-side veth)."""
        return paths.machine_name(self.cluster, self.name)


def nspawn_command(cfg: NodeConfig) -> list[str]:
    """The systemd-nspawn command line that boots the node in the foreground.

    ``--register=no --keep-unit``: the host has no systemd/machined, so nspawn must neither
    register the machine nor create a scope; it uses the cgroups the supervisor joined.
    ``--capability=all`` and ``/dev/kmsg``: the node must be able to run a container runtime
    and kubelet. No DNS, journal link or timezone sync with the host: nodes are self-contained.
    """
    return [
        "systemd-nspawn",
        "--quiet",
        "--keep-unit",
        "--register=no",
        f"--machine={cfg.machine}",
        f"--hostname={cfg.name}",
        f"--directory={cfg.paths.rootfs}",
        "--boot",
        "--console=read-only",
        f"--network-bridge={cfg.network.bridge}",
        "--resolv-conf=off",
        "--link-journal=no",
        "--timezone=off",
        "--capability=all",
        f"--system-call-filter={SYSCALL_FILTER}",
        "--bind=/dev/kmsg",
    ]


def supervisor_command(cfg: NodeConfig) -> list[str]:
    """The supervisor process that runs (and re-runs after a reboot) the nspawn command."""
    return [
        sys.executable,
        "-m",
        SUPERVISOR_MODULE,
        "--node-dir",
        str(cfg.paths.dir),
        "--cgroups",
        str(cfg.paths.cgroups),
        "--daemon",
        "--",
        *nspawn_command(cfg),
    ]


def etc_hosts(cfg: NodeConfig) -> str:
    """/etc/hosts of a node: every node of the cluster and the host (gateway) by name."""
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    lines += [f"{addr} {name}" for name, addr in cfg.hosts]
    lines.append(f"{cfg.network.gateway.ip} {cfg.cluster}-host")
    return "\n".join(lines) + "\n"


def interfaces(cfg: NodeConfig) -> str:
    """/etc/network/interfaces: a static address on host0 (the veth end in the node)."""
    return (
        "auto lo\niface lo inet loopback\n\n"
        "auto host0\niface host0 inet static\n"
        f"    address {cfg.address}/{cfg.network.subnet.prefixlen}\n"
        f"    gateway {cfg.network.gateway.ip}\n"
    )


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def create_rootfs(cfg: NodeConfig, base: Path) -> bool:
    """Copy the base image into the node's rootfs and personalise it; False if it exists."""
    p = cfg.paths
    if p.rootfs.is_dir():
        return False
    p.dir.mkdir(parents=True, exist_ok=True)
    tmp = p.dir / "rootfs.tmp"
    if tmp.exists():
        run(["rm", "-rf", "--one-file-system", str(tmp)])
    run(["cp", "-a", "--reflink=auto", str(base), str(tmp)])
    (tmp / ".provisioner-image").unlink(missing_ok=True)
    _write(tmp / "etc/hostname", cfg.name + "\n")
    _write(tmp / "etc/hosts", etc_hosts(cfg))
    _write(tmp / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    _write(tmp / "etc/network/interfaces", interfaces(cfg))
    proxy = tmp / "etc/apt/apt.conf.d/01provisioner-proxy"
    if cfg.apt_proxy:
        _write(proxy, f'Acquire::http::Proxy "{cfg.apt_proxy}";\n')
    if cfg.ssh_port != 22:
        _write(tmp / "etc/ssh/sshd_config.d/provisioner.conf", f"Port {cfg.ssh_port}\n")
    run(["ssh-keygen", "-q", "-A", "-f", str(tmp)])
    _authorize(tmp, cfg.ssh_user, cfg.authorized_key)
    tmp.rename(p.rootfs)
    return True


def _authorize(root: Path, user: str, key: str) -> None:
    if user == "root":
        home, uid, gid = root / "root", 0, 0
    else:
        run(["chroot", str(root), "useradd", "-m", "-s", "/bin/bash", "-G", "sudo", user])
        _write(root / "etc/sudoers.d/provisioner", f"{user} ALL=(ALL) NOPASSWD: ALL\n", 0o440)
        home = root / "home" / user
        stat = home.stat()
        uid, gid = stat.st_uid, stat.st_gid
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    _write(keys, key.strip() + "\n", 0o600)
    for path in (ssh_dir, keys):
        os.chown(path, uid, gid)


def sync_hosts(cfg: NodeConfig) -> bool:
    """Bring /etc/hosts of an existing node up to date (the cluster may have grown)."""
    path = cfg.paths.rootfs / "etc/hosts"
    want = etc_hosts(cfg)
    try:
        if path.read_text() == want:
            return False
    except OSError:
        pass
    _write(path, want)
    return True


def host_public_keys(cfg: NodeConfig) -> list[str]:
    """The node's SSH host public keys (to pin them in known_hosts)."""
    keys = sorted((cfg.paths.rootfs / "etc/ssh").glob("ssh_host_*_key.pub"))
    return [k.read_text().strip() for k in keys]


def runner_pid(p: paths.NodePaths) -> int | None:
    """Pid of the node's supervisor when it runs."""
    pid = read_pid(p.runner_pid)
    return pid if owned(pid, SUPERVISOR_MODULE, str(p.dir)) else None


def nspawn_pid(p: paths.NodePaths) -> int | None:
    """Pid of the node's systemd-nspawn when it runs."""
    pid = read_pid(p.nspawn_pid)
    return pid if owned(pid, "systemd-nspawn", f"--directory={p.rootfs}") else None


def recorded_cgroups(p: paths.NodePaths) -> list[Path]:
    """The cgroup directories recorded when the node was started."""
    try:
        return [Path(line) for line in p.cgroups.read_text().split() if line]
    except OSError:
        return []


def start(cfg: NodeConfig, hierarchies: list[cgroups.Hierarchy]) -> int:
    """Start the node's supervisor detached from the caller; return its pid."""
    p = cfg.paths
    dirs = cgroups.node_cgroup_dirs(hierarchies, cfg.cluster, cfg.name)
    cgroups.create(dirs)
    p.cgroups.write_text("".join(f"{d}\n" for d in dirs))
    p.runner_pid.unlink(missing_ok=True)
    p.nspawn_pid.unlink(missing_ok=True)
    env = dict(os.environ)
    # The supervisor must import this package even when it is not installed.
    package_root = str(Path(provisioner.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    with open(p.console, "ab") as console:
        # The first supervisor process joins the cgroups and forks the long-lived one, which
        # it records in runner.pid: nothing stays a child (or zombie) of the caller.
        proc = subprocess.run(
            supervisor_command(cfg),
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=p.dir,
            start_new_session=True,
            timeout=30,
            check=False,
        )
    pid = runner_pid(p)
    if proc.returncode != 0 or pid is None:
        raise ProviderError(f"{cfg.name}: the supervisor did not start; see {p.console}")
    return pid


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def stop(cluster: str, name: str, timeout: float = 40.0) -> list[str]:
    """Power the node off cleanly and remove its cgroups and veth; return problems left.

    SIGTERM to the supervisor makes it forward SIGTERM to systemd-nspawn, which asks the
    node's systemd for an orderly poweroff (DefaultTimeoutStopSec=15s in the image bounds it).
    """
    p = paths.node_paths(cluster, name)
    runner, nsp = runner_pid(p), nspawn_pid(p)
    targets = [pid for pid in (runner, nsp) if pid is not None]
    if runner is not None:
        signal_pid(runner, signal.SIGTERM)
    elif nsp is not None:
        signal_pid(nsp, signal.SIGTERM)
    if targets and not _wait_gone(targets, timeout):
        for pid in targets:
            signal_pid(pid, signal.SIGKILL)
        _wait_gone(targets, 5)
    dirs = recorded_cgroups(p)
    dirs += [
        d
        for d in cgroups.node_cgroup_dirs(cgroups.host_hierarchies(), cluster, name)
        if d not in dirs
    ]
    problems = [f"cgroup {d} could not be removed" for d in cgroups.remove(dirs)]
    veth = paths.veth_name(cluster, name)
    if Path(f"/sys/class/net/{veth}").exists():
        run(["ip", "link", "del", veth], check=False)
    for f in (p.runner_pid, p.nspawn_pid, p.cgroups):
        f.unlink(missing_ok=True)
    return problems
