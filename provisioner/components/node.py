"""Node components: kubelet (webhook authn/authz, its own client and serving certificates) and
kube-proxy (iptables or ipvs), both configured through their versioned config files."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from provisioner.components.base import (
    CERT_MODE,
    CONFIG_MODE,
    TLS_CIPHER_SUITES,
    TLS_MIN_VERSION,
    Component,
    File,
    Material,
    pem_pair,
)
from provisioner.components.control_plane import DOCS, PKI, component_kubeconfig
from provisioner.components.runtime import SOCKET
from provisioner.render.engine import render_template

if TYPE_CHECKING:
    from provisioner.plan.model import HostPlan, Plan
    from provisioner.spec.models import Cluster
    from provisioner.spec.topology import Machine

from provisioner.components.systemd import unit_file

KUBELET_DIR = "/var/lib/kubelet"
KUBELET_HEALTHZ_PORT = 10248
PROXY_DIR = "/var/lib/kube-proxy"
# Written by the node role before an upgrade drains the node, removed once it is uncordoned
# (playbooks/roles/kubelet/defaults/main.yml: kubelet_drain_marker).
DRAIN_MARKER = "/var/lib/provisioner/drained-for-upgrade"


class Kubelet(Component):
    """The node agent."""

    name: ClassVar[str] = "kubelet"
    phase: ClassVar[str] = "node"
    service: ClassVar[str | None] = "kubelet"
    ports: ClassVar[tuple[int, ...]] = (10250, KUBELET_HEALTHZ_PORT)
    artifacts: ClassVar[tuple[str, ...]] = ("kubelet", "kubectl")

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """Control-plane nodes and workers."""
        return machine.is_node

    def flags(self, plan: Plan, host: HostPlan) -> list[tuple[str, str | None]]:
        """The few kubelet flags that have no config-file field."""
        return [
            ("config", f"{KUBELET_DIR}/config.yaml"),
            ("kubeconfig", "/etc/kubernetes/kubelet.conf"),
            ("node-ip", str(host.address)),
            ("hostname-override", host.name),
        ]

    def absent(self, plan: Plan, host: HostPlan) -> tuple[str, ...]:
        """The drain marker of an upgrade that stopped before uncordoning this node: while it
        is there the node phase runs here and uncordons the node once it is Ready."""
        return (DRAIN_MARKER,)

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """Unit, KubeletConfiguration, kubeconfig, client and serving pairs."""
        spec = plan.cluster.spec
        r = ("kubelet",)
        nl = spec.dns.node_local_dns
        cluster_dns = str(nl.address) if nl.enabled else str(plan.dns_service_ip)
        ctx = {
            "cluster_name": plan.name,
            "cluster_dns": cluster_dns,
            "cluster_domain": spec.network.cluster_domain,
            "client_ca": f"{PKI}/ca.crt",
            "tls_cert": f"{KUBELET_DIR}/pki/kubelet.crt",
            "tls_key": f"{KUBELET_DIR}/pki/kubelet.key",
            "runtime_endpoint": f"unix://{SOCKET}",
            "pod_cidr": str(host.pod_cidr) if host.pod_cidr is not None else "",
            "register_with_taints": host.machine.is_control_plane and bool(plan.with_role(
                "is_node") != plan.control_plane),
            "fail_cgroup_v1": not plan.cgroup_v1,
            "in_container": spec.provider.type == "nspawn",
            "healthz_port": KUBELET_HEALTHZ_PORT,
            "tls_min_version": TLS_MIN_VERSION,
            "tls_cipher_suites": TLS_CIPHER_SUITES,
        }
        stem = f"{KUBELET_DIR}/pki/kubelet-client"
        return [
            unit_file(plan.name, "kubelet", "Kubernetes node agent (provisioner)",
                      DOCS + "kubelet/", "/usr/local/bin/kubelet", self.flags(plan, host),
                      after=("containerd.service",), requires=("containerd.service",),
                      limit_nofile=None, restart_sec=10),
            File(f"{KUBELET_DIR}/config.yaml",
                 render_template("kubernetes/kubelet-config.yaml.j2", ctx).encode(), CONFIG_MODE,
                 False, r),
            File("/etc/kubernetes/kubelet.conf", component_kubeconfig(
                plan, plan.endpoints.node, f"system:node:{host.name}", stem).encode(), 0o600,
                False, r),
            File(f"{PKI}/ca.crt", material.cert("ca"), CERT_MODE, False, r),
            *pem_pair(material, f"kubelet/{host.name}-client", stem, r),
            *pem_pair(material, f"kubelet/{host.name}-serving", f"{KUBELET_DIR}/pki/kubelet", r),
        ]


class KubeProxy(Component):
    """Service proxy."""

    name: ClassVar[str] = "kube-proxy"
    phase: ClassVar[str] = "node"
    service: ClassVar[str | None] = "kube-proxy"
    ports: ClassVar[tuple[int, ...]] = (10249, 10256)  # metrics (loopback), healthz
    artifacts: ClassVar[tuple[str, ...]] = ("kube-proxy",)

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """Control-plane nodes and workers."""
        return machine.is_node

    def flags(self, plan: Plan, host: HostPlan) -> list[tuple[str, str | None]]:
        """kube-proxy flags: the config file and this node's name."""
        return [("config", f"{PROXY_DIR}/config.yaml"), ("hostname-override", host.name)]

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """Unit, KubeProxyConfiguration, kubeconfig and client pair."""
        spec = plan.cluster.spec
        r = ("kube-proxy",)
        stem = f"{PROXY_DIR}/kube-proxy"
        ctx = {
            "cluster_name": plan.name,
            "kubeconfig": f"{PROXY_DIR}/kubeconfig",
            "mode": spec.network.kube_proxy_mode,
            "cluster_cidr": str(spec.network.pod_cidr),
            "node_ip": str(host.address),
            # nspawn machines share the host's conntrack table and cannot tune it.
            "skip_conntrack": spec.provider.type == "nspawn",
        }
        return [
            unit_file(plan.name, "kube-proxy", "Kubernetes network proxy (provisioner)",
                      DOCS + "kube-proxy/", "/usr/local/bin/kube-proxy", self.flags(plan, host),
                      limit_nofile=None),
            File(f"{PROXY_DIR}/config.yaml",
                 render_template("kubernetes/kube-proxy-config.yaml.j2", ctx).encode(), CONFIG_MODE,
                 False, r),
            File(f"{PROXY_DIR}/kubeconfig", component_kubeconfig(
                plan, plan.endpoints.node, "system:kube-proxy", stem).encode(), 0o600, False, r),
            *pem_pair(material, "kube-proxy", stem, r),
        ]
