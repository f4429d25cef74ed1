"""The control plane: kube-apiserver, kube-controller-manager, kube-scheduler as systemd units.

Flags follow kubeadm's defaults for the pinned minor, hardened: anonymous auth off, Node+RBAC
authorization, NodeRestriction, Secrets encrypted at rest, an audit log, profiling off.
Every flag rendered here is checked against the minor's real flag list by the tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from provisioner.components import etcd
from provisioner.components.base import (
    CERT_MODE,
    CONFIG_MODE,
    Component,
    File,
    Material,
    pem_pair,
    tls_flags,
)
from provisioner.components.systemd import unit_file
from provisioner.pki.kubeconfig import kubeconfig
from provisioner.pki.model import apiserver_cert
from provisioner.render.engine import render_template

if TYPE_CHECKING:
    from provisioner.plan.model import HostPlan, Plan
    from provisioner.spec.models import Cluster
    from provisioner.spec.topology import Machine

K8S = "/etc/kubernetes"
PKI = f"{K8S}/pki"
SHUTDOWN_DELAY = 5
DOCS = "https://kubernetes.io/docs/reference/command-line-tools-reference/"
AUDIT_DIR = "/var/log/kubernetes/audit"
# The etcd members the apiserver dials, as environment of its unit and not in the unit: a
# change of etcd membership rewrites this file without restarting any apiserver (the etcd
# client of a running one keeps the members it knows and skips those that left); the next
# restart reads the new list. So growing or shrinking the control plane never takes a
# running apiserver out of the load balancer.
ETCD_SERVERS_ENV = f"{K8S}/apiserver-etcd-servers.env"


def local_apiserver(plan: Plan, host: HostPlan) -> str:
    """The apiserver on this control-plane host (components talk to their own apiserver)."""
    return f"https://{host.address}:{plan.cluster.spec.apiserver.secure_port}"


def component_kubeconfig(plan: Plan, server: str, user: str, stem: str) -> str:
    """A kubeconfig that points at cert files placed at ``<stem>.crt/.key`` on the host."""
    return kubeconfig(plan.name, server, user, ca_file=f"{PKI}/ca.crt",
                      cert_file=f"{stem}.crt", key_file=f"{stem}.key")


def _is_cp(machine: Machine) -> bool:
    return machine.is_control_plane


class APIServer(Component):
    """kube-apiserver."""

    name: ClassVar[str] = "kube-apiserver"
    phase: ClassVar[str] = "control-plane"
    service: ClassVar[str | None] = "kube-apiserver"
    ports: ClassVar[tuple[int, ...]] = (6443,)
    artifacts: ClassVar[tuple[str, ...]] = ("kube-apiserver",)

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """Control-plane nodes."""
        return _is_cp(machine)

    def listen_ports(self, cluster: Cluster) -> tuple[int, ...]:
        """``spec.apiserver.securePort``."""
        return (cluster.spec.apiserver.secure_port,)

    def flags(self, plan: Plan, host: HostPlan) -> list[tuple[str, str | None]]:
        """kube-apiserver flags for ``host``."""
        spec = plan.cluster.spec
        api = spec.apiserver
        out: list[tuple[str, str | None]] = [
            ("advertise-address", str(host.address)),
            ("secure-port", str(api.secure_port)),
            ("allow-privileged", "true"),
            ("anonymous-auth", "false"),
            ("authorization-mode", "Node,RBAC"),
            ("enable-admission-plugins", "NodeRestriction"),
            ("client-ca-file", f"{PKI}/ca.crt"),
            ("tls-cert-file", f"{PKI}/apiserver.crt"),
            ("tls-private-key-file", f"{PKI}/apiserver.key"),
            ("kubelet-client-certificate", f"{PKI}/apiserver-kubelet-client.crt"),
            ("kubelet-client-key", f"{PKI}/apiserver-kubelet-client.key"),
            ("kubelet-certificate-authority", f"{PKI}/ca.crt"),
            ("kubelet-preferred-address-types", "InternalIP,Hostname"),
            # From ETCD_SERVERS_ENV (systemd expands it): see its comment.
            ("etcd-servers", "${ETCD_SERVERS}"),
            ("etcd-cafile", f"{etcd.PKI}/ca.crt"),
            ("etcd-certfile", f"{PKI}/apiserver-etcd-client.crt"),
            ("etcd-keyfile", f"{PKI}/apiserver-etcd-client.key"),
            ("service-cluster-ip-range", str(spec.network.service_cidr)),
            ("service-account-issuer",
             f"https://kubernetes.default.svc.{spec.network.cluster_domain}"),
            ("service-account-key-file", f"{PKI}/sa.pub"),
            ("service-account-signing-key-file", f"{PKI}/sa.key"),
            ("proxy-client-cert-file", f"{PKI}/front-proxy-client.crt"),
            ("proxy-client-key-file", f"{PKI}/front-proxy-client.key"),
            ("requestheader-client-ca-file", f"{PKI}/front-proxy-ca.crt"),
            ("requestheader-allowed-names", "front-proxy-client"),
            ("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
            ("requestheader-group-headers", "X-Remote-Group"),
            ("requestheader-username-headers", "X-Remote-User"),
            ("profiling", "false"),
            # On SIGTERM (a rolling restart) /readyz fails at once while requests are still
            # served for this long: the load balancers' 1 s checks move new connections away
            # before the listener closes.
            ("shutdown-delay-duration", f"{SHUTDOWN_DELAY}s"),
            *tls_flags(),
        ]
        if api.encryption_at_rest:
            out.append(("encryption-provider-config", f"{K8S}/encryption-config.yaml"))
        if api.audit_log:
            out += [
                ("audit-policy-file", f"{K8S}/audit-policy.yaml"),
                ("audit-log-path", f"{AUDIT_DIR}/audit.log"),
                ("audit-log-maxage", "30"),
                ("audit-log-maxbackup", "10"),
                ("audit-log-maxsize", "100"),
            ]
        return out

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """Unit, serving/client pairs, SA keys, encryption and audit configs."""
        r = ("kube-apiserver",)
        api = plan.cluster.spec.apiserver
        files = [
            unit_file(plan.name, "kube-apiserver", "Kubernetes API server (provisioner)",
                      DOCS + "kube-apiserver/", "/usr/local/bin/kube-apiserver",
                      self.flags(plan, host), after=("network-online.target", "etcd.service"),
                      service_type="notify",
                      extra_service=(f"EnvironmentFile={ETCD_SERVERS_ENV}",)),
            File(ETCD_SERVERS_ENV, (f"# Managed by provisioner ({plan.name}): read when "
                                    "kube-apiserver starts.\n"
                                    f"ETCD_SERVERS={etcd.client_urls(plan)}\n").encode(),
                 CONFIG_MODE, False, ()),
            File(f"{PKI}/ca.crt", material.cert("ca"), CERT_MODE, False, r),
            File(f"{PKI}/front-proxy-ca.crt", material.cert("front-proxy-ca"), CERT_MODE, False, r),
            File(f"{etcd.PKI}/ca.crt", material.cert("etcd/ca"), CERT_MODE, False, r),
            *pem_pair(material, apiserver_cert(host.name), f"{PKI}/apiserver", r),
            *pem_pair(material, "apiserver-kubelet-client", f"{PKI}/apiserver-kubelet-client", r),
            *pem_pair(material, "apiserver-etcd-client", f"{PKI}/apiserver-etcd-client", r),
            *pem_pair(material, "front-proxy-client", f"{PKI}/front-proxy-client", r),
            File(f"{PKI}/sa.pub", material.sa_public(), CERT_MODE, False, r),
            File(f"{PKI}/sa.key", material.sa_private(), 0o600, True,
                 ("kube-apiserver", "kube-controller-manager")),
        ]
        if api.encryption_at_rest:
            text = render_template("kubernetes/encryption-config.yaml.j2",
                                   {"keys": material.encryption_keys()})
            files.append(File(f"{K8S}/encryption-config.yaml", text.encode(), 0o600, True, r))
        if api.audit_log:
            files.append(File(f"{K8S}/audit-policy.yaml",
                              render_template("kubernetes/audit-policy.yaml.j2", {}).encode(),
                              CONFIG_MODE, False, r))
        return files


class ControllerManager(Component):
    """kube-controller-manager (leader-elected)."""

    name: ClassVar[str] = "kube-controller-manager"
    phase: ClassVar[str] = "control-plane"
    service: ClassVar[str | None] = "kube-controller-manager"
    ports: ClassVar[tuple[int, ...]] = (10257,)
    artifacts: ClassVar[tuple[str, ...]] = ("kube-controller-manager",)

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """Control-plane nodes."""
        return _is_cp(machine)

    def flags(self, plan: Plan, host: HostPlan) -> list[tuple[str, str | None]]:
        """kube-controller-manager flags."""
        nw = plan.cluster.spec.network
        conf = f"{K8S}/controller-manager.conf"
        # Only flannel reads node.spec.podCIDR; the bridge CNI gets its subnets from the plan.
        allocate = nw.cni == "flannel"
        out: list[tuple[str, str | None]] = [
            ("kubeconfig", conf),
            ("authentication-kubeconfig", conf),
            ("authorization-kubeconfig", conf),
            ("bind-address", "127.0.0.1"),
            ("leader-elect", "true"),
            ("cluster-name", plan.name),
            ("client-ca-file", f"{PKI}/ca.crt"),
            ("requestheader-client-ca-file", f"{PKI}/front-proxy-ca.crt"),
            ("cluster-signing-cert-file", f"{PKI}/ca.crt"),
            ("cluster-signing-key-file", f"{PKI}/ca.key"),
            ("root-ca-file", f"{PKI}/ca.crt"),
            ("service-account-private-key-file", f"{PKI}/sa.key"),
            ("use-service-account-credentials", "true"),
            ("controllers", "*,bootstrapsigner,tokencleaner"),
            ("service-cluster-ip-range", str(nw.service_cidr)),
            ("cluster-cidr", str(nw.pod_cidr)),
            ("allocate-node-cidrs", "true" if allocate else "false"),
            ("profiling", "false"),
            *tls_flags(),
        ]
        if allocate:
            out.append(("node-cidr-mask-size", str(nw.node_cidr_mask_size)))
        return out

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """Unit, kubeconfig, client pair and the cluster CA key (it signs CSRs)."""
        r = ("kube-controller-manager",)
        stem = f"{PKI}/controller-manager"
        return [
            unit_file(plan.name, "kube-controller-manager",
                      "Kubernetes controller manager (provisioner)",
                      DOCS + "kube-controller-manager/", "/usr/local/bin/kube-controller-manager",
                      self.flags(plan, host), after=("kube-apiserver.service",)),
            File(f"{K8S}/controller-manager.conf", component_kubeconfig(
                plan, local_apiserver(plan, host), "system:kube-controller-manager", stem
            ).encode(), 0o600, False, r),
            *pem_pair(material, "controller-manager", stem, r),
            File(f"{PKI}/ca.key", material.key("ca"), 0o600, True, r),
        ]


class Scheduler(Component):
    """kube-scheduler (leader-elected)."""

    name: ClassVar[str] = "kube-scheduler"
    phase: ClassVar[str] = "control-plane"
    service: ClassVar[str | None] = "kube-scheduler"
    ports: ClassVar[tuple[int, ...]] = (10259,)
    artifacts: ClassVar[tuple[str, ...]] = ("kube-scheduler",)

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """Control-plane nodes."""
        return _is_cp(machine)

    def flags(self, plan: Plan, host: HostPlan) -> list[tuple[str, str | None]]:
        """kube-scheduler flags."""
        conf = f"{K8S}/scheduler.conf"
        return [
            ("kubeconfig", conf),
            ("authentication-kubeconfig", conf),
            ("authorization-kubeconfig", conf),
            ("bind-address", "127.0.0.1"),
            ("leader-elect", "true"),
            ("profiling", "false"),
            *tls_flags(),
        ]

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """Unit, kubeconfig and client pair."""
        r = ("kube-scheduler",)
        stem = f"{PKI}/scheduler"
        return [
            unit_file(plan.name, "kube-scheduler", "Kubernetes scheduler (provisioner)",
                      DOCS + "kube-scheduler/", "/usr/local/bin/kube-scheduler",
                      self.flags(plan, host), after=("kube-apiserver.service",)),
            File(f"{K8S}/scheduler.conf", component_kubeconfig(
                plan, local_apiserver(plan, host), "system:kube-scheduler", stem
            ).encode(), 0o600, False, r),
            *pem_pair(material, "scheduler", stem, r),
        ]


class AdminKubeconfig(Component):
    """An admin kubeconfig on each control-plane node, for kubectl there and the addons phase."""

    name: ClassVar[str] = "admin-kubeconfig"
    phase: ClassVar[str] = "control-plane"

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """Control-plane nodes."""
        return _is_cp(machine)

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """admin.conf pointing at the local apiserver, and its client pair."""
        stem = f"{PKI}/admin"
        return [
            File(f"{K8S}/admin.conf", component_kubeconfig(
                plan, local_apiserver(plan, host), "kubernetes-admin", stem).encode(), 0o600),
            *pem_pair(material, "admin", stem, ()),
        ]
