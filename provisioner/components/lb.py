"""The apiserver load balancer: haproxy (local on every node, or on the control plane behind a
keepalived VIP). ``external`` mode renders nothing: the user runs the load balancer."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from provisioner.components.base import Component, File, Material
from provisioner.render.engine import render_template

if TYPE_CHECKING:
    from provisioner.plan.model import HostPlan, Plan
    from provisioner.spec.models import Cluster
    from provisioner.spec.topology import Machine


def vip_interface(cluster: Cluster) -> str:
    """The interface that carries the VIP: the provider's machine-network interface."""
    provider = cluster.spec.provider.type
    # nspawn machines see their veth as host0; Vagrant's private network is the second NIC.
    return {"nspawn": "host0", "vagrant": "eth1"}.get(provider, "eth0")


class Haproxy(Component):
    """TCP load balancing across every apiserver, health-checked on /readyz."""

    name: ClassVar[str] = "haproxy"
    phase: ClassVar[str] = "lb"
    service: ClassVar[str | None] = "haproxy"
    artifacts: ClassVar[tuple[str, ...]] = ("haproxy",)

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """localHaproxy: every kubelet node; vip: control-plane nodes; external: none."""
        mode = cluster.spec.load_balancer.mode
        if mode == "localHaproxy":
            return machine.is_node
        return mode == "vip" and machine.is_control_plane

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """haproxy.cfg."""
        lb = plan.cluster.spec.load_balancer
        bind = f"127.0.0.1:{lb.port}" if lb.mode == "localHaproxy" else f"{lb.vip}:{lb.port}"
        ctx = {"cluster_name": plan.name, "bind": bind, "backends": plan.endpoints.lb_backends}
        return [File("/etc/haproxy/haproxy.cfg",
                     render_template("haproxy/haproxy.cfg.j2", ctx).encode(), 0o644, False,
                     ("haproxy",))]


class Keepalived(Component):
    """Keeps the VIP on a control-plane node whose haproxy is alive."""

    name: ClassVar[str] = "keepalived"
    phase: ClassVar[str] = "lb"
    service: ClassVar[str | None] = "keepalived"
    artifacts: ClassVar[tuple[str, ...]] = ("keepalived",)

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """Control-plane nodes in vip mode."""
        return cluster.spec.load_balancer.mode == "vip" and machine.is_control_plane

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """keepalived.conf: first control-plane node starts as MASTER, priority by order."""
        lb = plan.cluster.spec.load_balancer
        cps = plan.control_plane
        position = [h.name for h in cps].index(host.name)
        ctx = {
            "cluster_name": plan.name,
            "state": "MASTER" if position == 0 else "BACKUP",
            "priority": 150 - 10 * position,
            "router_id": lb.virtual_router_id,
            "vip": str(lb.vip),
            "address": str(host.address),
            "peers": [str(h.address) for h in cps if h.name != host.name],
            "interface": vip_interface(plan.cluster),
            "port": lb.port,
        }
        return [File("/etc/keepalived/keepalived.conf",
                     render_template("keepalived/keepalived.conf.j2", ctx).encode(), 0o644,
                     False, ("keepalived",))]
