"""Cluster addons: manifests placed on the first control-plane node and applied from there."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from provisioner.components.base import CONFIG_MODE, Component, File, Material
from provisioner.render.addons import AddonContext, addon_manifests
from provisioner.spec.topology import first_control_plane

if TYPE_CHECKING:
    from provisioner.plan.model import HostPlan, Plan
    from provisioner.spec.models import Cluster
    from provisioner.spec.topology import Machine

ADDONS_DIR = "/etc/kubernetes/addons"


def images(plan: Plan) -> dict[str, str]:
    """Image references of every addon, pinned by the versions manifest."""
    v = plan.release.component
    return {
        "coredns": f"registry.k8s.io/coredns/coredns:v{v('coredns')}",
        "nodelocaldns": f"registry.k8s.io/dns/k8s-dns-node-cache:{v('nodelocaldns')}",
        "metrics_server": f"registry.k8s.io/metrics-server/metrics-server:v{v('metrics_server')}",
        "dashboard": f"docker.io/kubernetesui/dashboard:v{v('dashboard')}",
        "dashboard_metrics_scraper": "docker.io/kubernetesui/metrics-scraper:v1.0.8",
        "fluent_bit": f"cr.fluentbit.io/fluent/fluent-bit:{v('fluent_bit')}",
        "flannel": f"ghcr.io/flannel-io/flannel:v{v('flannel')}",
    }


def context(plan: Plan) -> AddonContext:
    """The addon templates' inputs, computed from the plan."""
    spec = plan.cluster.spec
    first = plan.control_plane[0]
    return AddonContext(
        cluster_name=plan.name,
        cluster_domain=spec.network.cluster_domain,
        pod_cidr=str(spec.network.pod_cidr),
        service_cidr=str(spec.network.service_cidr),
        node_cidr_mask_size=spec.network.node_cidr_mask_size,
        dns_ip=str(plan.dns_service_ip),
        dns_replicas=spec.dns.replicas,
        upstream_servers=tuple(str(s) for s in spec.dns.upstream_servers),
        # nspawn machines get an empty resolv.conf: there is no DNS in the lab.
        node_resolver=spec.provider.type != "nspawn",
        nodelocaldns_enabled=spec.dns.node_local_dns.enabled,
        nodelocaldns_ip=str(spec.dns.node_local_dns.address),
        cni=spec.network.cni,
        metrics_server_enabled=spec.addons.metrics_server.enabled,
        dashboard_enabled=spec.addons.dashboard.enabled,
        logging_enabled=spec.addons.logging.enabled,
        api_server_host=str(first.address),
        api_server_port=spec.apiserver.secure_port,
        images=images(plan),
    )


class Addons(Component):
    """The manifests of every enabled addon (CNI, CoreDNS, metrics, dashboard, logging)."""

    name: ClassVar[str] = "addons"
    phase: ClassVar[str] = "addons"
    artifacts: ClassVar[tuple[str, ...]] = ("kubectl",)

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """The first control-plane node: addons are applied once, from there."""
        return machine.name == first_control_plane(cluster)

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """Every enabled addon's manifest, in apply order."""
        return [File(f"{ADDONS_DIR}/{name}", text.encode(), CONFIG_MODE)
                for name, text in addon_manifests(context(plan)).items()]
