"""Host side of the nspawn provider: prerequisites, bridge, forwarding rule, apt proxy.

Scope: everything shared by the clusters on one host. The bridge takes the first address of
the provider subnet; nodes reach Debian packages only through an apt-cacher-ng bound to that
address (the nodes have no route to the internet). Every address this module probes or
configures lies inside the cluster's own subnet.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
import urllib.request
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_interface
from pathlib import Path

from provisioner.providers.base import ProviderError
from provisioner.providers.nspawn import paths
from provisioner.providers.nspawn.system import alive, owned, read_pid, run, signal_pid, which

APT_PROXY_PORT = 3142
NSPAWN_RUNTIME = Path("/run/systemd/nspawn")

# command -> Debian package that provides it
REQUIRED_COMMANDS: dict[str, str] = {
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "iptables": "iptables",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "chroot": "coreutils",
}


@dataclass(frozen=True)
class Network:
    """The host side of one cluster's machine network."""

    bridge: str
    subnet: IPv4Network

    @property
    def gateway(self) -> IPv4Interface:
        """The bridge's own address: the subnet's first host, with the subnet's prefix."""
        first = next(iter(self.subnet.hosts()))
        return IPv4Interface(f"{first}/{self.subnet.prefixlen}")

    @property
    def apt_proxy_url(self) -> str:
        """URL of the apt proxy as the nodes see it."""
        return f"http://{self.gateway.ip}:{APT_PROXY_PORT}"


def missing_prerequisites(need_debootstrap: bool) -> list[str]:
    """Human-readable problems that stop the provider from working on this host."""
    problems = []
    if os.geteuid() != 0:
        problems.append(
            "not running as root: the nspawn provider creates bridges, cgroups and containers; "
            "run it as root (e.g. with sudo)"
        )
    commands = dict(REQUIRED_COMMANDS)
    if need_debootstrap:
        commands["debootstrap"] = "debootstrap"
    packages = sorted({pkg for cmd, pkg in commands.items() if which(cmd) is None})
    if packages:
        missing = sorted(cmd for cmd, pkg in commands.items() if pkg in packages)
        problems.append(
            f"missing commands {', '.join(missing)}: apt-get install {' '.join(packages)}"
        )
    if not Path("/sys/fs/cgroup").is_dir() or not any(Path("/sys/fs/cgroup").iterdir()):
        problems.append("no cgroup file system at /sys/fs/cgroup: mount the cgroup hierarchies")
    return problems


def check_prerequisites(need_debootstrap: bool) -> None:
    """Raise ``ProviderError`` listing every missing prerequisite at once."""
    problems = missing_prerequisites(need_debootstrap)
    if problems:
        raise ProviderError(
            "the nspawn provider cannot run on this host:\n  - " + "\n  - ".join(problems)
        )


def interface_addresses() -> dict[str, list[IPv4Interface]]:
    """IPv4 addresses of every host interface, by interface name."""
    out: dict[str, list[IPv4Interface]] = {}
    for link in json.loads(run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]"):
        addrs = out.setdefault(str(link["ifname"]), [])
        for info in link.get("addr_info", []):
            iface = ip_interface(f"{info['local']}/{info['prefixlen']}")
            if isinstance(iface, IPv4Interface):
                addrs.append(iface)
    return out


def address_conflicts(
    net: Network, addresses: dict[str, list[IPv4Interface]], nodes: list[IPv4Address]
) -> list[str]:
    """Interfaces other than our bridge that hold the bridge address, a node address or an
    overlapping network: any of them would steal the cluster's traffic."""
    problems = []
    for ifname, ifaces in sorted(addresses.items()):
        if ifname == net.bridge:
            continue
        for iface in ifaces:
            if iface.ip == net.gateway.ip or iface.ip in nodes:
                problems.append(f"address {iface.ip} is already held by interface {ifname}")
            elif iface.network.overlaps(net.subnet):
                problems.append(
                    f"interface {ifname} has {iface} which overlaps the machine subnet {net.subnet}"
                )
    return problems


def check_addresses(net: Network, nodes: list[IPv4Address]) -> None:
    """Refuse a subnet that another host interface already uses."""
    problems = address_conflicts(net, interface_addresses(), nodes)
    if problems:
        raise ProviderError(
            "the machine network is in use on this host:\n  - "
            + "\n  - ".join(problems)
            + "\n  fix: choose another spec.provider.subnet (or bridge), or remove that address"
        )


def ensure_bridge(net: Network) -> None:
    """Create the bridge with its address, up (idempotent)."""
    if not Path(f"/sys/class/net/{net.bridge}").exists():
        run(["ip", "link", "add", net.bridge, "type", "bridge"])
    ours = interface_addresses().get(net.bridge, [])
    if net.gateway not in ours:
        run(["ip", "addr", "add", str(net.gateway), "dev", net.bridge])
    run(["ip", "link", "set", net.bridge, "up"])


def bridge_ports(bridge: str) -> list[str]:
    """Interfaces attached to the bridge (nodes' veths); empty when it does not exist."""
    brif = Path(f"/sys/class/net/{bridge}/brif")
    return sorted(p.name for p in brif.iterdir()) if brif.is_dir() else []


def _forward_rule(bridge: str) -> list[str]:
    return ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def ensure_forward_rule(bridge: str) -> None:
    """Accept node-to-node traffic: the host has bridge-nf-call-iptables=1, so bridged frames
    pass the FORWARD chain and a host firewall would otherwise drop them."""
    if run(["iptables", "-C", *_forward_rule(bridge)], check=False).returncode != 0:
        run(["iptables", "-I", *_forward_rule(bridge)])


def remove_forward_rule(bridge: str) -> None:
    """Remove the FORWARD rule of ``bridge`` (every copy of it)."""
    while run(["iptables", "-D", *_forward_rule(bridge)], check=False).returncode == 0:
        pass


# The kernel settings kubelet insists on (pkg/kubelet/cm/container_manager_linux.go,
# setupKernelTunables): with protectKernelDefaults off it writes them itself and fails if it
# cannot. They are not namespaced, so on nspawn machines they are the host's own: set them
# here, once, in the open, instead of letting every node's kubelet change the host behind
# the user's back. kind sets the same values for the same reason.
KUBELET_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
    # inotify limits are per user of the host, and every machine's root is the host's root:
    # systemd, journald, containerd (its CRI plugin watches the CNI directory) and kubelet
    # (cAdvisor) each take instances. Debian's 128 ran out at the sixth node (containerd's
    # CRI failed to load, kubelet exited "inotify_init: too many open files"); kind raises
    # them for the same reason. 8192 instances cover 50 nodes with room to spare.
    ("fs/inotify/max_user_instances", "8192"),
    ("fs/inotify/max_user_watches", "524288"),
)
# Limits that are only ever raised, never lowered (a host set higher keeps its value).
RAISE_ONLY = ("kernel/keys/", "fs/inotify/")


def ensure_kubelet_sysctls(proc_sys: Path = Path("/proc/sys")) -> list[str]:
    """Set the host-global sysctls kubelet needs; return ``name: old -> new`` for changes."""
    changed = []
    for key, want in KUBELET_SYSCTLS:
        path = proc_sys / key
        try:
            have = path.read_text().strip()
        except OSError:
            continue  # not in this kernel (keys): kubelet skips it too
        # root_maxkeys/maxbytes: kubelet only raises them; inotify limits likewise.
        if have == want or (key.startswith(RAISE_ONLY) and int(have) >= int(want)):
            continue
        path.write_text(want + "\n")
        changed.append(f"{key.replace('/', '.')}: {have} -> {want}")
    return changed


def ensure_nspawn_runtime() -> None:
    """nspawn only cleans /run/systemd/nspawn/propagate when it is a tmpfs; mount one."""
    NSPAWN_RUNTIME.mkdir(parents=True, exist_ok=True)
    if run(["mountpoint", "-q", str(NSPAWN_RUNTIME)], check=False).returncode != 0:
        run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                "mode=0755,size=16m",
                "provisioner-nspawn",
                str(NSPAWN_RUNTIME),
            ]
        )


def probe_neighbours(
    bridge: str, addresses: list[IPv4Address], subnet: IPv4Network, wait: float = 0.4
) -> dict[IPv4Address, str]:
    """Addresses that answer ARP on the bridge, with their MAC.

    Used before starting nodes: an answer on an address we are about to use means a machine
    we do not own holds it. Stale cache entries are flushed first (our own nodes of a
    previous run would otherwise look alive).
    """
    targets = [a for a in addresses if a in subnet]  # never probe outside our own subnet
    if not targets or not Path(f"/sys/class/net/{bridge}").exists():
        return {}
    for addr in targets:
        run(["ip", "neigh", "flush", "to", str(addr), "dev", bridge], check=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for addr in targets:
            # Any datagram makes the kernel resolve the address; port 9 is "discard".
            with contextlib.suppress(OSError):
                sock.sendto(b"", (str(addr), 9))
    time.sleep(wait)
    found: dict[IPv4Address, str] = {}
    raw = run(["ip", "-j", "neigh", "show", "dev", bridge], check=False).stdout or "[]"
    for entry in json.loads(raw):
        try:
            addr = IPv4Address(str(entry.get("dst")))
        except ValueError:
            continue  # an IPv6 neighbour
        states = set(entry.get("state", []))
        if addr in targets and entry.get("lladdr") and states & {"REACHABLE", "STALE", "DELAY"}:
            found[addr] = str(entry["lladdr"])
    return found


# --- apt proxy --------------------------------------------------------------------------


def _proxy_pidfile(net: Network) -> Path:
    return paths.RUN_DIR / f"apt-proxy-{net.gateway.ip}.pid"


def _proxy_socket(net: Network) -> Path:
    return paths.RUN_DIR / f"apt-proxy-{net.gateway.ip}.socket"


def apt_proxy_pid(net: Network) -> int | None:
    """Pid of the apt-cacher-ng we started on the bridge address, if it still runs."""
    pid = read_pid(_proxy_pidfile(net))
    return pid if owned(pid, "apt-cacher-ng", f"BindAddress={net.gateway.ip}") else None


def _listening(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_apt_proxy(net: Network, mirror: str, suite: str) -> str | None:
    """Run apt-cacher-ng on the bridge address; return a warning instead of failing.

    Started as its own daemon with our own cache, log and pid file (never the packaged
    service's configuration), forwarding Debian requests to ``mirror``.
    """
    host = str(net.gateway.ip)
    if apt_proxy_pid(net) is not None or _listening(host, APT_PROXY_PORT):
        return None
    binary = which("apt-cacher-ng")
    if binary is None:
        return (
            "apt-cacher-ng is not installed, so the nodes cannot install Debian packages: "
            "apt-get install apt-cacher-ng"
        )
    base = paths.image_dir() / "apt-proxy"
    for sub in ("cache", "log"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    paths.RUN_DIR.mkdir(parents=True, exist_ok=True)
    pidfile = _proxy_pidfile(net)
    pidfile.unlink(missing_ok=True)
    run(
        [
            binary,
            "-c",
            "/etc/apt-cacher-ng",
            f"BindAddress={host}",
            f"Port={APT_PROXY_PORT}",
            f"CacheDir={base / 'cache'}",
            f"LogDir={base / 'log'}",
            f"PidFile={pidfile}",
            f"SocketPath={_proxy_socket(net)}",
            f"Remap-debrep=file:deb_mirror*.gz /debian ; {mirror}",
            "ForeGround=0",
        ]
    )
    deadline = time.monotonic() + 10
    while not _listening(host, APT_PROXY_PORT):
        if time.monotonic() > deadline:
            return (
                f"apt-cacher-ng did not start listening on {host}:{APT_PROXY_PORT}; "
                f"see {base / 'log'}"
            )
        time.sleep(0.1)
    return _check_proxy(net, mirror, suite)


def _check_proxy(net: Network, mirror: str, suite: str) -> str | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": net.apt_proxy_url}))
    try:
        with opener.open(f"{mirror}/dists/{suite}/Release", timeout=30) as resp:
            resp.read(1)
    except OSError as exc:
        return f"the apt proxy {net.apt_proxy_url} cannot reach {mirror}: {exc}"
    return None


def stop_apt_proxy(net: Network) -> None:
    """Stop the apt-cacher-ng this provider started on the bridge address, if any."""
    pid = apt_proxy_pid(net)
    if pid is not None:
        signal_pid(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    _proxy_pidfile(net).unlink(missing_ok=True)
    _proxy_socket(net).unlink(missing_ok=True)


def remove_bridge(net: Network) -> None:
    """Delete the bridge, its forwarding rule and the apt proxy on it."""
    stop_apt_proxy(net)
    remove_forward_rule(net.bridge)
    if Path(f"/sys/class/net/{net.bridge}").exists():
        run(["ip", "link", "del", net.bridge])
