"""OS preparation every host gets: kernel modules and sysctls Kubernetes networking needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from provisioner.components.base import Component, File, Material
from provisioner.pki.identity import IDENTITY_PATH, fingerprints, identity_text
from provisioner.render.engine import render_template

if TYPE_CHECKING:
    from provisioner.plan.model import HostPlan, Plan
    from provisioner.spec.models import Cluster
    from provisioner.spec.topology import Machine

# Why each: overlay for containerd's snapshotter; br_netfilter so bridged pod traffic passes
# iptables (kube-proxy rules); the ip_vs family only when kube-proxy runs in ipvs mode.
_MODULES = ("overlay", "br_netfilter")
_IPVS_MODULES = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack")


class OSPrep(Component):
    """Kernel modules and sysctls (net.* only: they are per network namespace)."""

    name: ClassVar[str] = "os"
    phase: ClassVar[str] = "os"

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """Every host."""
        return True

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """modules-load.d and sysctl.d files."""
        modules = list(_MODULES)
        if plan.cluster.spec.network.kube_proxy_mode == "ipvs" and host.machine.is_node:
            modules.extend(_IPVS_MODULES)
        ctx = {"cluster_name": plan.name, "modules": modules, "is_node": host.machine.is_node,
               "nonlocal_bind": plan.cluster.spec.load_balancer.mode == "vip"}
        identity = identity_text(plan.name, fingerprints(plan, material))
        return [
            # Read back by provision before it changes anything (provisioner.pki.identity).
            File(IDENTITY_PATH, identity.encode()),
            File("/etc/modules-load.d/provisioner.conf",
                 render_template("os/modules.conf.j2", ctx).encode()),
            File("/etc/sysctl.d/90-provisioner.conf",
                 render_template("os/sysctl.conf.j2", ctx).encode()),
        ]
