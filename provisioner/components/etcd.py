"""etcd: one member per etcd host, mutual TLS for peers and clients, as a systemd service,
and its scheduled backups (``spec.etcd.backup``: a timer, a oneshot unit and a script)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from provisioner.components.base import (
    CERT_MODE,
    CONFIG_MODE,
    TLS_CIPHER_SUITES,
    Component,
    File,
    Material,
    pem_pair,
)
from provisioner.components.systemd import unit_file
from provisioner.render.engine import render_template
from provisioner.spec.models import ETCD_DATA_DIR

if TYPE_CHECKING:
    from provisioner.plan.model import HostPlan, Plan
    from provisioner.spec.models import Cluster, EtcdBackup
    from provisioner.spec.topology import Machine

PKI = "/etc/kubernetes/pki/etcd"
CLIENT_PORT = 2379
PEER_PORT = 2380
METRICS_PORT = 2381
LOCAL_ENDPOINT = f"https://127.0.0.1:{CLIENT_PORT}"
# The members a new member starts with, as environment (ETCD_INITIAL_CLUSTER, _STATE) and not
# flags: etcd reads them only when its data directory is empty, so a membership change
# rewrites this file without restarting any member. A member joining a running cluster gets
# JOIN_ENV from the etcd role (the running members and itself, state "existing"), read after
# CLUSTER_ENV and removed once the member is promoted.
CLUSTER_ENV = "/etc/etcd/initial-cluster.env"
JOIN_ENV = "/etc/etcd/join.env"

# Scheduled backups. The etcd role's defaults name the same paths (to remove them when the
# backup is turned off, and in reset); tests/test_etcd_backup.py holds the two together.
BACKUP_UNIT = "etcd-backup"
BACKUP_SCRIPT = "/usr/local/sbin/provisioner-etcd-backup"
BACKUP_SERVICE = f"/etc/systemd/system/{BACKUP_UNIT}.service"
BACKUP_TIMER = f"/etc/systemd/system/{BACKUP_UNIT}.timer"
# Executable by root only; the units follow CONFIG_MODE like every unit file.
BACKUP_SCRIPT_MODE = 0o700
# Seconds the timer delays each member's run at random: members snapshot minutes apart.
BACKUP_RANDOMIZED_DELAY = 300


def client_urls(plan: Plan) -> str:
    """Comma-separated client URLs of every member (what the apiserver dials)."""
    return ",".join(f"https://{h.address}:{CLIENT_PORT}" for h in plan.etcd)


def initial_cluster(plan: Plan) -> str:
    """``name=peer-url`` of every member of the plan, as --initial-cluster takes it."""
    return ",".join(f"{h.name}=https://{h.address}:{PEER_PORT}" for h in plan.etcd)


def cluster_env(plan: Plan) -> bytes:
    """CLUSTER_ENV: every planned member, for a cluster started new (or restored)."""
    return (f"# Managed by provisioner ({plan.name}): read by etcd only when its data "
            "directory is empty.\n"
            f"ETCD_INITIAL_CLUSTER={initial_cluster(plan)}\n"
            "ETCD_INITIAL_CLUSTER_STATE=new\n").encode()


def etcd_flags(plan: Plan, host: HostPlan) -> list[tuple[str, str | None]]:
    """The etcd server's flags for ``host`` (the initial members are in CLUSTER_ENV)."""
    ip = host.address
    return [
        ("name", host.name),
        ("data-dir", ETCD_DATA_DIR),
        ("listen-client-urls", f"https://{ip}:{CLIENT_PORT},{LOCAL_ENDPOINT}"),
        ("advertise-client-urls", f"https://{ip}:{CLIENT_PORT}"),
        ("listen-peer-urls", f"https://{ip}:{PEER_PORT}"),
        ("initial-advertise-peer-urls", f"https://{ip}:{PEER_PORT}"),
        ("listen-metrics-urls", f"http://127.0.0.1:{METRICS_PORT}"),
        ("initial-cluster-token", f"{plan.name}-etcd"),
        ("client-cert-auth", "true"),
        ("trusted-ca-file", f"{PKI}/ca.crt"),
        ("cert-file", f"{PKI}/server.crt"),
        ("key-file", f"{PKI}/server.key"),
        ("peer-client-cert-auth", "true"),
        ("peer-trusted-ca-file", f"{PKI}/ca.crt"),
        ("peer-cert-file", f"{PKI}/peer.crt"),
        ("peer-key-file", f"{PKI}/peer.key"),
        # TLS 1.2 at least, with the same suites as the Kubernetes servers (CIS 2.x).
        ("tls-min-version", "TLS1.2"),
        ("cipher-suites", ",".join(TLS_CIPHER_SUITES)),
        # kubeadm's values: keep history bounded so the backend does not grow without end.
        ("snapshot-count", "10000"),
        ("auto-compaction-retention", "8"),
    ]


class Etcd(Component):
    """An etcd member."""

    name: ClassVar[str] = "etcd"
    phase: ClassVar[str] = "etcd"
    service: ClassVar[str | None] = "etcd"
    ports: ClassVar[tuple[int, ...]] = (CLIENT_PORT, PEER_PORT, METRICS_PORT)
    artifacts: ClassVar[tuple[str, ...]] = ("etcd", "etcdctl")

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """etcd hosts (stacked on the control plane or dedicated)."""
        return machine.is_etcd

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """Unit, CA, server/peer pairs, the health-check client pair, and the backup's
        timer, unit and script when ``spec.etcd.backup`` is set."""
        r = ("etcd",)
        backup = plan.cluster.spec.etcd.backup
        return [
            unit_file(plan.name, "etcd", "etcd key-value store (provisioner)",
                      "https://etcd.io/docs/", "/usr/local/bin/etcd", etcd_flags(plan, host),
                      service_type="notify", limit_nofile=65536,
                      extra_service=(f"EnvironmentFile={CLUSTER_ENV}",
                                     f"EnvironmentFile=-{JOIN_ENV}")),
            # No restart: a running member never reads it again.
            File(CLUSTER_ENV, cluster_env(plan), CONFIG_MODE, False, ()),
            File(f"{PKI}/ca.crt", material.cert("etcd/ca"), CERT_MODE, False, r),
            *pem_pair(material, f"etcd/server-{host.name}", f"{PKI}/server", r),
            *pem_pair(material, f"etcd/peer-{host.name}", f"{PKI}/peer", r),
            *pem_pair(material, "etcd/healthcheck-client", f"{PKI}/healthcheck-client", ()),
            *(backup_files(plan.name, host.name, backup) if backup is not None else []),
        ]

    def absent(self, plan: Plan, host: HostPlan) -> tuple[str, ...]:
        """The backup's files, when ``spec.etcd.backup`` is not set (turned off)."""
        if plan.cluster.spec.etcd.backup is not None:
            return ()
        return (BACKUP_TIMER, BACKUP_SERVICE, BACKUP_SCRIPT)

    def units(self, plan: Plan, host: HostPlan) -> tuple[str, ...]:
        """The backup's timer, when ``spec.etcd.backup`` is set."""
        return (f"{BACKUP_UNIT}.timer",) if plan.cluster.spec.etcd.backup is not None else ()


def backup_files(cluster_name: str, host: str, backup: EtcdBackup) -> list[File]:
    """The backup script, its oneshot unit and the timer. None restarts anything: the etcd
    role restarts the timer itself when its file changed (a restart of the service would
    take a snapshot)."""
    ctx = {
        "cluster_name": cluster_name,
        "host": host,
        "schedule": backup.schedule,
        "directory": backup.directory,
        "keep": backup.keep,
        "max_size_mib": backup.max_size_mib,
        "endpoint": LOCAL_ENDPOINT,
        "ca_file": f"{PKI}/ca.crt",
        "cert_file": f"{PKI}/healthcheck-client.crt",
        "key_file": f"{PKI}/healthcheck-client.key",
        "script": BACKUP_SCRIPT,
        "randomized_delay_sec": BACKUP_RANDOMIZED_DELAY,
    }
    return [
        File(BACKUP_SCRIPT, render_template("etcd/etcd-backup.sh.j2", ctx).encode(),
             BACKUP_SCRIPT_MODE),
        File(BACKUP_SERVICE, render_template("etcd/etcd-backup.service.j2", ctx).encode(),
             CONFIG_MODE),
        File(BACKUP_TIMER, render_template("etcd/etcd-backup.timer.j2", ctx).encode(),
             CONFIG_MODE),
    ]
