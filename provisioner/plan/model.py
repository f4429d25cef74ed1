"""The plan's data: hosts with roles and components, derived network values, PKI, phases.

Scope: immutable records only; ``plan.build`` fills them from a spec. Everything later stages
need to know about the cluster is computed once here, so templates never compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network

from provisioner.pki.model import PkiPlan
from provisioner.spec.models import Cluster
from provisioner.spec.topology import Machine
from provisioner.versions.manifest import MinorRelease


@dataclass(frozen=True)
class HostPlan:
    """One host: who it is, what it runs, what it needs."""

    machine: Machine
    index: int
    components: tuple[str, ...]  # services and the addons step: what `plan` shows
    parts: tuple[str, ...]  # every component that renders files here, in render order
    artifacts: tuple[str, ...]
    ports: tuple[int, ...]
    pod_cidr: IPv4Network | None

    @property
    def name(self) -> str:
        """Host (and node) name."""
        return self.machine.name

    @property
    def address(self) -> IPv4Address:
        """Host address."""
        return self.machine.address


@dataclass(frozen=True)
class Endpoints:
    """Where clients reach the apiserver, from each kind of client."""

    node: str  # kubelet/kube-proxy on any node (through the load balancer)
    admin: str  # the controller's admin kubeconfig
    lb_backends: tuple[tuple[str, str], ...]  # (name, "ip:port") of every apiserver


@dataclass(frozen=True)
class Phase:
    """A named unit of work: a playbook run on a set of hosts, with optional sub-phases."""

    name: str
    description: str
    hosts: tuple[str, ...]
    children: tuple[Phase, ...] = field(default=())

    @property
    def playbook(self) -> str:
        """The playbook that runs this phase (sub-phases run inside their parent's)."""
        return f"{self.name.split('/')[0]}.yml"

    def walk(self) -> tuple[Phase, ...]:
        """This phase and all sub-phases, depth first."""
        out: list[Phase] = [self]
        for c in self.children:
            out.extend(c.walk())
        return tuple(out)


@dataclass(frozen=True)
class Plan:
    """Everything decided about a cluster before any host is touched."""

    cluster: Cluster
    version: str
    release: MinorRelease
    hosts: tuple[HostPlan, ...]
    endpoints: Endpoints
    kubernetes_service_ip: IPv4Address
    dns_service_ip: IPv4Address
    pki: PkiPlan
    phases: tuple[Phase, ...]
    addons: tuple[str, ...]
    cgroup_v1: bool = False
    """The nodes run cgroup v1 (nspawn machines on a v1 host): kubelet must be told to accept
    it (``failCgroupV1: false``, refused by default from 1.35 on, KEP-5573)."""

    @property
    def name(self) -> str:
        """Cluster name."""
        return self.cluster.metadata.name

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the user should know before the run: choices made for this environment."""
        out = []
        if self.cgroup_v1:
            out.append(
                "warning: the nodes run cgroup v1 (nspawn machines share this host's cgroup "
                "mode), which kubelet refuses by default from Kubernetes 1.35 on (KEP-5573): "
                "kubelet is configured with failCgroupV1: false. Upstream removes cgroup v1 "
                "support no earlier than 1.38; use VMs or hosts with cgroup v2 for production")
        return tuple(out)

    @property
    def minor(self) -> str:
        """Kubernetes minor, e.g. ``1.32``."""
        return self.release.minor

    def host(self, name: str) -> HostPlan:
        """The host called ``name`` (KeyError if none)."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def with_role(self, predicate: str) -> tuple[HostPlan, ...]:
        """Hosts whose machine has the boolean property ``predicate`` (e.g. ``is_etcd``)."""
        return tuple(h for h in self.hosts if getattr(h.machine, predicate))

    @cached_property
    def control_plane(self) -> tuple[HostPlan, ...]:
        """Control-plane hosts, leader candidate first."""
        return self.with_role("is_control_plane")

    @cached_property
    def etcd(self) -> tuple[HostPlan, ...]:
        """etcd members."""
        return self.with_role("is_etcd")

    @cached_property
    def nodes(self) -> tuple[HostPlan, ...]:
        """Hosts running kubelet."""
        return self.with_role("is_node")

    def all_phases(self) -> tuple[Phase, ...]:
        """Every phase and sub-phase in execution order."""
        out: list[Phase] = []
        for p in self.phases:
            out.extend(p.walk())
        return tuple(out)
