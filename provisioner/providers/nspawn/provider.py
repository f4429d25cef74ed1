"""The nspawn provider: orchestration of host, image and nodes for one cluster spec.

Scope: ``up`` (idempotent: running nodes are left alone), ``down`` (only this cluster's
processes, cgroups and links; ``purge`` also deletes root filesystems and, when no other
cluster uses it, the bridge), ``status`` and the inventory. Nodes are created, started and
stopped in parallel threads; each node's work is independent.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from provisioner.providers import inventory as inv
from provisioner.providers.base import (
    NodeChange,
    NodeStatus,
    ProviderError,
    Reporter,
    UpResult,
    quiet,
)
from provisioner.providers.nspawn import cgroups, host, image, node, paths
from provisioner.providers.nspawn.system import run
from provisioner.providers.ssh import (
    ClusterSSH,
    cluster_ssh,
    known_hosts_lines,
    ssh_run,
    tcp_open,
    wait_for_ssh,
)
from provisioner.spec.models import Cluster, NspawnProvider
from provisioner.spec.topology import Machine, machines
from provisioner.state import cluster_dir

SSH_TIMEOUT = 120.0
RECORD = "cluster.json"

T = TypeVar("T")
R = TypeVar("R")


def parallel(func: Callable[[T], R], items: list[T]) -> list[R]:
    """``func`` over ``items`` in threads (one per item); the first error is raised."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(func, items))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


class NspawnMachines:
    """Machines of one cluster as systemd-nspawn containers on this host."""

    def __init__(self, cluster: Cluster, report: Reporter = quiet) -> None:
        provider = cluster.spec.provider
        if not isinstance(provider, NspawnProvider):
            raise ProviderError(f"spec.provider.type is {provider.type!r}, not 'nspawn'")
        self.cluster = cluster
        self.provider = provider
        self.name = cluster.metadata.name
        self.report = report
        self.network = host.Network(provider.bridge, provider.subnet)
        self.machines = machines(cluster)
        self._check_addresses()

    # --- derived data -----------------------------------------------------------------

    def _check_addresses(self) -> None:
        gateway = self.network.gateway.ip
        for m in self.machines:
            if m.address not in self.network.subnet or m.address == gateway:
                raise ProviderError(
                    f"{m.name}: address {m.address} is not a usable node address in "
                    f"{self.network.subnet} (the bridge takes {gateway}); fix spec.hosts or "
                    "spec.provider.subnet"
                )

    def _ssh(self) -> ClusterSSH:
        return cluster_ssh(self.name, self.cluster.spec.ssh.private_key_file)

    def configs(self, authorized_key: str = "") -> list[node.NodeConfig]:
        """Per-node configuration for every machine of the spec."""
        hosts = tuple((m.name, m.address) for m in self.machines) + tuple(
            (a.hostname, a.address) for a in self.provider.host_aliases)
        proxy = self.network.apt_proxy_url if self.provider.apt_proxy else None
        return [
            node.NodeConfig(
                cluster=self.name,
                name=m.name,
                address=m.address,
                network=self.network,
                hosts=hosts,
                ssh_user=m.ssh_user,
                ssh_port=m.ssh_port,
                authorized_key=authorized_key,
                apt_proxy=proxy,
            )
            for m in self.machines
        ]

    def _machine(self, name: str) -> Machine:
        return next(m for m in self.machines if m.name == name)

    # --- up ---------------------------------------------------------------------------

    def up(self) -> UpResult:
        """Make every machine exist and answer SSH; running machines are left alone."""
        start = time.monotonic()
        base = paths.base_image(self.provider.suite)
        host.check_prerequisites(need_debootstrap=not image.is_ready(base))
        data = paths.cluster_data_dir(self.name)
        warnings: list[str] = []
        with _locked(data / ".lock"):
            with _locked(paths.RUN_DIR / "host.lock"):
                warnings += self._prepare_host()
            base = image.ensure_base_image(
                self.provider.suite, self.provider.debian_mirror, self.report
            )
            ssh = self._ssh()
            configs = self.configs(ssh.public_key.read_text())
            self._write_record()
            running = {c.name for c in configs if self._running(c)}
            stopped = [c for c in configs if c.name not in running]
            # Leftovers of a crash (a node's systemd still alive in its cgroups after its
            # nspawn died, a stale veth) would hold the address and make nspawn fail; they are
            # inside this node's own cgroups, so clear them before probing the addresses.
            parallel(lambda c: node.stop(c.cluster, c.name), stopped)
            self._check_neighbours(stopped)

            def prepare(cfg: node.NodeConfig) -> tuple[bool, float]:
                t0 = time.monotonic()
                created = node.create_rootfs(cfg, base)
                if not created:
                    node.sync_hosts(cfg)
                return created, time.monotonic() - t0

            prepared = dict(zip([c.name for c in configs], parallel(prepare, configs), strict=True))
            self._write_known_hosts(ssh, configs)
            hierarchies = cgroups.host_hierarchies()

            def boot(cfg: node.NodeConfig) -> NodeChange:
                t0 = time.monotonic()
                created, copy_s = prepared[cfg.name]
                if cfg.name in running:
                    action = "unchanged"
                else:
                    node.start(cfg, hierarchies)
                    action = "created" if created else "started"

                def died() -> str | None:
                    if self._running(cfg):
                        return None
                    tail = _tail(cfg.paths.console, 15)
                    return f"{cfg.name}: systemd-nspawn exited; {cfg.paths.console}:\n{tail}"

                if action == "unchanged" and tcp_open(cfg.address, cfg.ssh_port):
                    # A machine that was already running and listens: the survey logs in
                    # next (and reports a host it cannot reach), so no login here.
                    waited = 0.0
                else:
                    waited = wait_for_ssh(
                        ssh, cfg.ssh_user, cfg.address, cfg.ssh_port, SSH_TIMEOUT, died
                    )
                if action != "unchanged":
                    self.report(
                        f"{cfg.name} {action}: {cfg.address}, ssh after {waited:.1f}s"
                        + (f" (rootfs copied in {copy_s:.1f}s)" if created else "")
                    )
                return NodeChange(cfg.name, action, time.monotonic() - t0 + copy_s)

            changes = parallel(boot, configs)
            path = self.inventory()
        self.report(f"{len(configs)} nodes up in {time.monotonic() - start:.1f}s; inventory {path}")
        return UpResult(tuple(changes), path, tuple(warnings))

    def _prepare_host(self) -> list[str]:
        host.ensure_nspawn_runtime()
        host.check_addresses(self.network, [m.address for m in self.machines])
        host.ensure_bridge(self.network)
        host.ensure_forward_rule(self.network.bridge)
        changed = host.ensure_kubelet_sysctls()
        if changed:
            self.report("host sysctls the nodes need (host-global, shared by nspawn machines: "
                        "kubelet's kernel settings, inotify limits): " + ", ".join(changed))
        if not self.provider.apt_proxy:
            return []
        warning = host.ensure_apt_proxy(
            self.network, self.provider.debian_mirror, self.provider.suite
        )
        if warning:
            self.report(f"warning: {warning}")
        return [warning] if warning else []

    @staticmethod
    def _running(cfg: node.NodeConfig) -> bool:
        return node.runner_pid(cfg.paths) is not None or node.nspawn_pid(cfg.paths) is not None

    def _check_neighbours(self, stopped: list[node.NodeConfig]) -> None:
        answered = host.probe_neighbours(
            self.network.bridge, [c.address for c in stopped], self.network.subnet
        )
        if answered:
            taken = ", ".join(f"{a} (MAC {mac})" for a, mac in sorted(answered.items()))
            raise ProviderError(
                f"address in use: {taken} answers on bridge {self.network.bridge} but is not a "
                f"running node of cluster {self.name!r}; stop the machine that holds it (another "
                "cluster?) or change spec.provider.subnet / firstHostOffset"
            )

    def _write_record(self) -> None:
        record = {
            "bridge": self.network.bridge,
            "subnet": str(self.network.subnet),
            "nodes": [m.name for m in self.machines],
        }
        path = paths.cluster_data_dir(self.name) / RECORD
        text = json.dumps(record, indent=2) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)

    def _write_known_hosts(self, ssh: ClusterSSH, configs: list[node.NodeConfig]) -> None:
        """Pin every machine of the spec by the host keys in its own root filesystem. A
        machine this provider made that has left the spec but still exists (a worker being
        removed: `node remove`, `provision --prune` reach it to drain and reset it) keeps
        its pinned lines; `machines down` of a spec without it does not remove it."""
        lines = []
        for cfg in configs:
            lines += known_hosts_lines(cfg.name, cfg.address, node.host_public_keys(cfg))
        names = {cfg.name for cfg in configs}
        old = ssh.known_hosts.read_text().splitlines() if ssh.known_hosts.exists() else []
        for line in old:
            name = line.split(",", 1)[0]
            if name not in names and paths.node_paths(self.name, name).rootfs.is_dir():
                lines.append(line)
        text = "".join(f"{line}\n" for line in lines)
        if not ssh.known_hosts.exists() or ssh.known_hosts.read_text() != text:
            ssh.known_hosts.write_text(text)

    # --- down -------------------------------------------------------------------------

    def node_names(self) -> list[str]:
        """Nodes of this cluster: the spec's and any left in the data directory."""
        names = [m.name for m in self.machines]
        data = paths.cluster_data_dir(self.name)
        if data.is_dir():
            names += sorted(p.name for p in data.iterdir() if p.is_dir() and p.name not in names)
        return names

    def down(self, purge: bool = False) -> None:
        """Stop every node of this cluster; with ``purge`` delete them and unused host parts."""
        start = time.monotonic()
        host.check_prerequisites(need_debootstrap=False)
        data = paths.cluster_data_dir(self.name)
        names = self.node_names()
        with _locked(data / ".lock"):
            problems = [p for ps in parallel(lambda n: node.stop(self.name, n), names) for p in ps]
            self.report(
                f"{len(names)} nodes of {self.name} stopped in {time.monotonic() - start:.1f}s"
            )
            if purge:
                parallel(lambda n: _remove_tree(paths.node_paths(self.name, n).dir), names)
                inv.inventory_path(self.name).unlink(missing_ok=True)
                (cluster_dir(self.name) / "ssh" / "known_hosts").unlink(missing_ok=True)
        if purge:
            shutil.rmtree(data, ignore_errors=True)
            with _locked(paths.RUN_DIR / "host.lock"):
                users = self._bridge_users()
                if users:
                    self.report(f"keeping bridge {self.network.bridge}: used by {', '.join(users)}")
                else:
                    host.remove_bridge(self.network)
                    self.report(f"removed bridge {self.network.bridge} and its apt proxy")
            self.report(f"purged {self.name} in {time.monotonic() - start:.1f}s")
        if problems:
            raise ProviderError("down left things behind:\n  - " + "\n  - ".join(problems))

    def _bridge_users(self) -> list[str]:
        users = [f"interface {p}" for p in host.bridge_ports(self.network.bridge)]
        clusters = paths.data_root() / "clusters"
        if clusters.is_dir():
            for record in sorted(clusters.glob(f"*/{RECORD}")):
                if record.parent.name == self.name:
                    continue
                try:
                    bridge = json.loads(record.read_text()).get("bridge")
                except (OSError, ValueError):
                    continue
                if bridge == self.network.bridge:
                    users.append(f"cluster {record.parent.name}")
        return users

    # --- status and inventory ---------------------------------------------------------

    def status(self) -> list[NodeStatus]:
        """State of every machine of the spec; reachable ones are asked for systemd's state."""
        ssh = self._ssh() if self._key_exists() else None
        configs = self.configs()

        def one(cfg: node.NodeConfig) -> NodeStatus:
            m = self._machine(cfg.name)
            if not cfg.paths.rootfs.is_dir():
                return NodeStatus(m, "absent")
            pid = node.nspawn_pid(cfg.paths)
            if pid is None and node.runner_pid(cfg.paths) is None:
                return NodeStatus(m, "stopped")
            state, ok = None, False
            if ssh is not None:
                proc = ssh_run(
                    ssh,
                    cfg.ssh_user,
                    cfg.address,
                    cfg.ssh_port,
                    "systemctl is-system-running",
                    timeout=10,
                )
                state = proc.stdout.strip() or None
                ok = proc.returncode == 0 or state is not None
            mem = cgroups.memory_usage(node.recorded_cgroups(cfg.paths))
            return NodeStatus(m, "running", pid, ok, state, mem)

        return parallel(one, configs)

    def _key_exists(self) -> bool:
        key = self.cluster.spec.ssh.private_key_file
        return (key or cluster_dir(self.name) / "ssh" / "id_ed25519").exists()

    def inventory(self) -> Path:
        """Write the inventory of this cluster's machines; return its path."""
        ssh = self._ssh()
        return inv.write_inventory(self.name, self.machines, ssh.private_key, ssh.common_args())


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    busy = [m for m in mounts if m == str(path) or m.startswith(f"{path}/")]
    if busy:
        raise ProviderError(f"not deleting {path}: {busy[0]} is still mounted")
    run(["rm", "-rf", "--one-file-system", str(path)])


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no console log)"


__all__ = ["NspawnMachines"]
