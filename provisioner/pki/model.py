"""PKI request types: what certificates the cluster needs, as produced by the planner.

Scope: plain, immutable data only. Validation lives in :mod:`provisioner.pki.validate`,
generation and the on-disk store in :mod:`provisioner.pki.store`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CARequest:
    """A certificate authority, stored as ``<name>.crt`` / ``<name>.key``."""

    name: str  # store path stem, e.g. "ca", "etcd/ca", "front-proxy-ca"
    common_name: str  # e.g. "kubernetes-ca", "etcd-ca", "kubernetes-front-proxy-ca"


@dataclass(frozen=True)
class CertRequest:
    """A leaf certificate signed by the CA named ``ca``."""

    name: str  # store path stem, e.g. "apiserver", "etcd/peer-cp1", "kubelet/cp1"
    ca: str  # name of the issuing CARequest
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    server: bool = False  # serverAuth extended key usage
    client: bool = False  # clientAuth extended key usage


@dataclass(frozen=True)
class PkiPlan:
    """Every CA and certificate of a cluster, plus the service-account key pair."""

    cas: tuple[CARequest, ...]
    certs: tuple[CertRequest, ...]
    service_account_key: bool = True  # RSA key pair sa.key/sa.pub
    validity_days: int = 365  # leaf certificates
    ca_validity_days: int = 3650


def apiserver_cert(host: str) -> str:
    """The store name of control-plane node ``host``'s apiserver serving pair."""
    return f"apiserver/{host}"
