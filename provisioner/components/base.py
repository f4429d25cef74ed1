"""What every component knows about itself: where it runs, its service, ports, artifacts, files.

Scope: the ``Component`` base class, the ``File`` record render produces, and the ``Material``
protocol through which components read PKI and other secrets from the state directory.
Adding a component (a CNI, a runtime) means one subclass here plus its templates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from provisioner.plan.model import HostPlan, Plan
    from provisioner.render.material import EncryptionKey
    from provisioner.spec.models import Cluster
    from provisioner.spec.topology import Machine


# File modes on the hosts, per the CIS Kubernetes Benchmark (1.1.x, 4.1.x): certificates,
# component configs and unit files 0600 (every reader is root), keys and kubeconfigs 0600.
CERT_MODE = 0o600
CONFIG_MODE = 0o600


@dataclass(frozen=True)
class File:
    """One desired file on a host."""

    path: str
    content: bytes
    mode: int = 0o644
    secret: bool = False  # key material: 0600, never logged, replaced by a summary in goldens
    restarts: tuple[str, ...] = ()  # systemd units to restart when this file changes


class Material(Protocol):
    """Read access to generated secrets (PKI, encryption key) kept in the state directory."""

    def cert(self, name: str) -> bytes:
        """PEM certificate ``<name>.crt`` from the PKI store."""
        ...

    def key(self, name: str) -> bytes:
        """PEM private key ``<name>.key`` from the PKI store."""
        ...

    def sa_public(self) -> bytes:
        """Service-account public key."""
        ...

    def sa_private(self) -> bytes:
        """Service-account private key."""
        ...

    def encryption_key(self) -> bytes:
        """32 random bytes (base64-encoded): the key Secrets are written with."""
        ...

    def encryption_keys(self) -> list[EncryptionKey]:
        """Every key the apiservers decrypt with, the write key first (a rotation adds one)."""
        ...

    def vrrp_seed(self) -> bytes:
        """The per-cluster secret keepalived's VRRP password is derived from."""
        ...

    def registry_password(self, host: str) -> str:
        """Password of private registry ``host`` (read from its passwordFile)."""
        ...

    def registry_ca(self, host: str) -> bytes:
        """CA bundle of private registry ``host`` (read from its caFile)."""
        ...


class Component(ABC):
    """A piece of the cluster that runs on some hosts."""

    name: ClassVar[str]
    phase: ClassVar[str]
    service: ClassVar[str | None] = None
    ports: ClassVar[tuple[int, ...]] = ()
    artifacts: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """True when ``machine`` runs this component."""

    def listen_ports(self, cluster: Cluster) -> tuple[int, ...]:
        """The ports this component listens on in ``cluster`` (``ports`` unless the spec
        sets them: the apiserver's securePort, the load balancer's port)."""
        return self.ports

    @abstractmethod
    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """Every file this component needs on ``host``."""

    def absent(self, plan: Plan, host: HostPlan) -> tuple[str, ...]:
        """Paths this component's role removes from ``host`` (what an option the spec turned
        off had installed): the survey runs the phase while one of them is there."""
        return ()

    def units(self, plan: Plan, host: HostPlan) -> tuple[str, ...]:
        """Units besides ``service`` (with their suffix, e.g. a ``.timer``) that the role
        keeps enabled and active on ``host``."""
        return ()


def pem_pair(material: Material, store_name: str, host_stem: str, restarts: tuple[str, ...]
             ) -> list[File]:
    """A certificate and its key from the PKI store, placed at ``<host_stem>.crt/.key``."""
    return [
        File(f"{host_stem}.crt", material.cert(store_name), CERT_MODE, False, restarts),
        File(f"{host_stem}.key", material.key(store_name), 0o600, True, restarts),
    ]


def flags_text(flags: list[tuple[str, str | None]]) -> str:
    """Render ``--flag=value`` arguments, one per continued line, for a systemd ExecStart."""
    parts = [f"--{k}" if v is None else f"--{k}={v}" for k, v in flags]
    return " \\\n  ".join(parts)


# TLS for every server the cluster runs (CIS Kubernetes Benchmark 1.2.x, 4.2.x, 2.x): TLS 1.2
# at least, and for TLS 1.2 only these ECDHE AEAD suites (TLS 1.3's are fixed by Go).
TLS_MIN_VERSION = "VersionTLS12"
TLS_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)


def tls_flags() -> list[tuple[str, str | None]]:
    """``--tls-min-version`` and ``--tls-cipher-suites`` of the Kubernetes servers."""
    return [("tls-min-version", TLS_MIN_VERSION),
            ("tls-cipher-suites", ",".join(TLS_CIPHER_SUITES))]

