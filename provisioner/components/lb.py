"""The apiserver load balancer: haproxy (local on every node, or on the control plane behind a
keepalived VIP). ``external`` mode renders nothing: the user runs the load balancer.

Scope: what haproxy and keepalived need on a host, rendered on the controller. The one fact
the plan cannot know, the name of the interface holding a host's cluster address (the VRRP
interface), is found on the host when keepalived starts, by a rendered script.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, ClassVar

from provisioner.components.base import CERT_MODE, CONFIG_MODE, Component, File, Material
from provisioner.render.engine import render_template

if TYPE_CHECKING:
    from provisioner.plan.model import HostPlan, Plan
    from provisioner.spec.models import Cluster
    from provisioner.spec.topology import Machine

# haproxy's health check of each apiserver: GET /readyz over TLS with this client pair (a
# certificate of the cluster CA for user provisioner-lb-healthcheck; /readyz is open to every
# authenticated user), so a starting or draining apiserver gets no new connections.
HEALTHCHECK_CERT = "lb-healthcheck"
HAPROXY_CA = "/etc/haproxy/pki/ca.crt"
HAPROXY_CLIENT = "/etc/haproxy/pki/healthcheck.pem"
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
# A drop-in, not a unit of our own: the Debian package's keepalived.service stays in charge.
KEEPALIVED_DROPIN = "/etc/systemd/system/keepalived.service.d/provisioner.conf"
INTERFACE_SCRIPT = "/usr/local/sbin/provisioner-keepalived-interface"
# systemd creates it before ExecStartPre and removes it when keepalived stops (RuntimeDirectory).
RUNTIME_DIR = "provisioner-keepalived"
INTERFACE_INCLUDE = f"/run/{RUNTIME_DIR}/interface.conf"
# VRRPv2 PASS authentication carries at most 8 characters (keepalived truncates longer ones).
AUTH_PASS_LENGTH = 8
# Domain separation: the VRRP password says nothing about the key it is derived from.
_AUTH_LABEL = b"provisioner keepalived vrrp auth_pass v1"


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

    def listen_ports(self, cluster: Cluster) -> tuple[int, ...]:
        """``spec.loadBalancer.port``."""
        return (cluster.spec.load_balancer.port,)

    @staticmethod
    def binds(cluster: Cluster) -> tuple[str, ...]:
        """Listen addresses: loopback always (local clients and keepalived's check), plus the
        VIP in vip mode (bound before this node holds it: the os phase sets
        net.ipv4.ip_nonlocal_bind)."""
        lb = cluster.spec.load_balancer
        local = f"127.0.0.1:{lb.port}"
        return (local, f"{lb.vip}:{lb.port}") if lb.mode == "vip" else (local,)

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """haproxy.cfg, and what its /readyz health check presents and trusts: the cluster
        CA and a client pair of its own (anonymous requests are refused), cert and key in one
        file as haproxy reads it."""
        r = ("haproxy",)
        ctx = {"cluster_name": plan.name, "binds": self.binds(plan.cluster),
               "backends": plan.endpoints.lb_backends, "ca_file": HAPROXY_CA,
               "client_pem": HAPROXY_CLIENT}
        return [File("/etc/haproxy/haproxy.cfg",
                     render_template("haproxy/haproxy.cfg.j2", ctx).encode(), 0o644, False, r),
                File(HAPROXY_CA, material.cert("ca"), CERT_MODE, False, r),
                File(HAPROXY_CLIENT, material.cert(HEALTHCHECK_CERT)
                     + material.key(HEALTHCHECK_CERT), 0o600, True, r)]


def vrrp_auth_pass(material: Material) -> str:
    """The cluster's VRRP password: 8 characters derived (HMAC-SHA256) from the cluster's
    generated VRRP seed, so it is per cluster, kept in the state directory (0600) with the
    other generated secrets, and stable across renders and encryption-key rotations.
    Base32: keepalived's parser treats ``#``, ``!``, ``$``, quotes and braces specially, and
    none of them can appear."""
    digest = hmac.new(material.vrrp_seed(), _AUTH_LABEL, hashlib.sha256).digest()
    return base64.b32encode(digest).decode()[:AUTH_PASS_LENGTH]


class Keepalived(Component):
    """Keeps the VIP on a control-plane node whose haproxy reaches a live apiserver."""

    name: ClassVar[str] = "keepalived"
    phase: ClassVar[str] = "lb"
    service: ClassVar[str | None] = "keepalived"
    artifacts: ClassVar[tuple[str, ...]] = ("keepalived",)
    # Track scripts run as this user: the check needs no privilege, and keepalived's
    # enable_script_security refuses scripts that a non-root user could modify.
    script_user: ClassVar[tuple[str, str]] = ("nobody", "nogroup")
    # Seconds between checks, and the limit keepalived kills a check after (above the
    # check's own --max-time, so curl's exit status is what counts).
    check_interval: ClassVar[int] = 2
    check_timeout: ClassVar[int] = 3

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """Control-plane nodes in vip mode."""
        return cluster.spec.load_balancer.mode == "vip" and machine.is_control_plane

    @staticmethod
    def check_command(port: int) -> tuple[str, ...]:
        """The VRRP track script: this node's haproxy accepts on loopback and a live apiserver
        behind it completes TLS and answers HTTP. Any status counts (anonymous auth is off, so
        /livez answers 401): no ``--fail``. keepalived executes it directly, without a shell,
        and curl is on every node (the roles use it), so neither bash nor dash matters."""
        return ("/usr/bin/curl", "-q", "--silent", "--insecure", "--noproxy", "127.0.0.1",
                "--output", "/dev/null", "--max-time", "2", f"https://127.0.0.1:{port}/livez")

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """keepalived.conf (a secret: it holds the VRRP password), a drop-in that finds the
        VRRP interface at start, and the script that finds it. The first control-plane node
        starts as MASTER; priorities fall by position."""
        lb = plan.cluster.spec.load_balancer
        cps = plan.control_plane
        position = [h.name for h in cps].index(host.name)
        restarts = ("keepalived",)
        ctx = {
            "cluster_name": plan.name,
            "script_user": " ".join(self.script_user),
            "check": " ".join(self.check_command(lb.port)),
            "check_interval": self.check_interval,
            "check_timeout": self.check_timeout,
            "state": "MASTER" if position == 0 else "BACKUP",
            "priority": 150 - 10 * position,
            "router_id": lb.virtual_router_id,
            "auth_pass": vrrp_auth_pass(material),
            "vip": str(lb.vip),
            "address": str(host.address),
            "peers": [str(h.address) for h in cps if h.name != host.name],
            "interface_include": INTERFACE_INCLUDE,
        }
        dropin = {"cluster_name": plan.name, "runtime_dir": RUNTIME_DIR,
                  "script": INTERFACE_SCRIPT, "address": str(host.address),
                  "include": INTERFACE_INCLUDE}
        return [
            File(KEEPALIVED_CONF,
                 render_template("keepalived/keepalived.conf.j2", ctx).encode(), 0o600, True,
                 restarts),
            File(KEEPALIVED_DROPIN,
                 render_template("keepalived/provisioner.conf.j2", dropin).encode(), CONFIG_MODE,
                 False, restarts),
            File(INTERFACE_SCRIPT,
                 render_template("keepalived/provisioner-keepalived-interface.j2",
                                 {"cluster_name": plan.name}).encode(), 0o755, False, restarts),
        ]
