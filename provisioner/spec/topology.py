"""Machines of a spec: the resolved list of hosts with their roles and SSH settings.

Scope: turn the spec's counts or host references into concrete machines. Generated providers
(nspawn, vagrant) name machines ``<cluster>-cp1``, ``<cluster>-etcd1``, ``<cluster>-w1`` and take
addresses from the provider subnet; explicit ``spec.hosts`` are used as written. The checks
that make this resolution safe (unknown references, counts) run in ``spec.rules`` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from provisioner.spec.models import Cluster, NspawnProvider, StaticProvider, VagrantProvider


class Role(StrEnum):
    """A host role; the value is the Ansible inventory group (kubespray's names)."""

    CONTROL_PLANE = "kube_control_plane"
    ETCD = "etcd"
    NODE = "kube_node"


@dataclass(frozen=True)
class Machine:
    """One resolved host."""

    name: str
    address: IPv4Address
    roles: frozenset[Role]
    ssh_user: str
    ssh_port: int
    ssh_key: Path | None

    @property
    def is_control_plane(self) -> bool:
        """True when the host runs the control plane."""
        return Role.CONTROL_PLANE in self.roles

    @property
    def is_etcd(self) -> bool:
        """True when the host runs an etcd member."""
        return Role.ETCD in self.roles

    @property
    def is_node(self) -> bool:
        """True when the host runs kubelet (control-plane nodes and workers)."""
        return Role.NODE in self.roles


@dataclass(frozen=True)
class Layout:
    """Host names by role, before addresses are attached."""

    control_plane: tuple[str, ...]
    etcd_dedicated: tuple[str, ...]
    workers: tuple[str, ...]


def generated(cluster: Cluster) -> bool:
    """True when the provider makes the machines and the spec lists no hosts."""
    return not isinstance(cluster.spec.provider, StaticProvider) and not cluster.spec.hosts


def machine_network(cluster: Cluster) -> IPv4Network | None:
    """The machine subnet of providers that own one (nspawn, vagrant)."""
    provider = cluster.spec.provider
    if isinstance(provider, NspawnProvider | VagrantProvider):
        return provider.subnet
    return None


def control_plane_count(cluster: Cluster) -> int:
    """Requested number of control-plane nodes (default 1)."""
    cp = cluster.spec.control_plane
    if cp.hosts is not None:
        return len(cp.hosts)
    return 1 if cp.count is None else cp.count


def etcd_dedicated_count(cluster: Cluster) -> int:
    """Requested number of dedicated etcd members (0 when stacked; default 3 when dedicated)."""
    etcd = cluster.spec.etcd
    if etcd.placement != "dedicated":
        return 0
    if etcd.hosts is not None:
        return len(etcd.hosts)
    return 3 if etcd.count is None else etcd.count


def layout(cluster: Cluster) -> Layout:
    """Names by role: generated from counts, or taken from the spec's host references."""
    spec = cluster.spec
    if generated(cluster):
        name = cluster.metadata.name
        workers = spec.workers.count or 0
        cps = control_plane_count(cluster)
        return Layout(
            control_plane=tuple(f"{name}-cp{i}" for i in range(1, cps + 1)),
            etcd_dedicated=tuple(
                f"{name}-etcd{i}" for i in range(1, etcd_dedicated_count(cluster) + 1)
            ),
            workers=tuple(f"{name}-w{i}" for i in range(1, workers + 1)),
        )
    names = [h.name for h in spec.hosts]
    cp = tuple(spec.control_plane.hosts or names[: control_plane_count(cluster)])
    etcd = tuple(spec.etcd.hosts or ()) if spec.etcd.placement == "dedicated" else ()
    if spec.workers.hosts is not None:
        workers_t = tuple(spec.workers.hosts)
    else:
        # Every listed host not given another role is a worker: the shortest static spec.
        taken = set(cp) | set(etcd)
        workers_t = tuple(n for n in names if n not in taken)
    return Layout(control_plane=cp, etcd_dedicated=etcd, workers=workers_t)


def pod_subnet_indexes(cluster: Cluster, ms: tuple[Machine, ...]) -> dict[str, int]:
    """Each node's pod subnet, as an index into the pod CIDR: its order among the nodes,
    after the control-plane slots kept for generated machines (``control_plane_slots``), so
    a node keeps its subnet while it keeps its place (nodes added after it, or a control
    plane growing into its kept slots, move none)."""
    nodes = [m for m in ms if m.is_node]
    room = control_plane_slots(cluster) - control_plane_count(cluster) if generated(cluster) \
        else 0
    return {m.name: i + (0 if m.is_control_plane else room) for i, m in enumerate(nodes)}


def control_plane_slots(cluster: Cluster) -> int:
    """Addresses generated machines keep for the control plane (at least its count)."""
    provider = cluster.spec.provider
    slots = getattr(provider, "control_plane_slots", None)
    return max(control_plane_count(cluster), slots or 0)


def first_control_plane(cluster: Cluster) -> str:
    """Name of the first control-plane node (where addons are applied), in O(1)."""
    if generated(cluster):
        return f"{cluster.metadata.name}-cp1"
    cp = cluster.spec.control_plane.hosts
    return cp[0] if cp else cluster.spec.hosts[0].name


def machines(cluster: Cluster) -> tuple[Machine, ...]:
    """Resolve every machine of the cluster, in a stable order (control plane, etcd, workers)."""
    spec = cluster.spec
    lay = layout(cluster)
    roles: dict[str, set[Role]] = {}
    for n in lay.control_plane:
        roles.setdefault(n, set()).update({Role.CONTROL_PLANE, Role.NODE})
        if spec.etcd.placement == "controlPlane":
            roles[n].add(Role.ETCD)
    for n in lay.etcd_dedicated:
        roles.setdefault(n, set()).add(Role.ETCD)
    for n in lay.workers:
        roles.setdefault(n, set()).add(Role.NODE)

    order = list(dict.fromkeys([*lay.control_plane, *lay.etcd_dedicated, *lay.workers]))
    if generated(cluster):
        net = machine_network(cluster)
        assert net is not None  # generated() implies a provider with a subnet
        provider = spec.provider
        assert isinstance(provider, NspawnProvider | VagrantProvider)
        base = int(net.network_address) + provider.first_host_offset
        addresses = {n: IPv4Address(base + i) for i, n in enumerate(order)}
        # Room kept for more control-plane nodes: the others start after it.
        room = control_plane_slots(cluster) - len(lay.control_plane)
        for n in order[len(lay.control_plane):]:
            addresses[n] = IPv4Address(int(addresses[n]) + room)
        overrides: dict[str, tuple[str | None, int | None, Path | None]] = {}
    else:
        by_name = {h.name: h for h in spec.hosts}
        addresses = {n: by_name[n].address for n in order}
        overrides = {
            n: (
                (s.user, s.port, s.private_key_file)
                if (s := by_name[n].ssh) is not None
                else (None, None, None)
            )
            for n in order
        }
    out = []
    for n in order:
        user, port, key = overrides.get(n, (None, None, None))
        out.append(
            Machine(
                name=n,
                address=addresses[n],
                roles=frozenset(roles[n]),
                ssh_user=user or spec.ssh.user,
                ssh_port=port or spec.ssh.port,
                ssh_key=_expand(key or spec.ssh.private_key_file),
            )
        )
    return tuple(out)


def _expand(path: Path | None) -> Path | None:
    """``~`` in key paths means the controller user's home, as in ssh. A ``~user`` with no
    such user (or no home to expand to) stays as written: the key is then reported missing
    by the file checks, with its field, instead of an internal error."""
    if path is None:
        return None
    try:
        return path.expanduser()
    except RuntimeError:
        return path
