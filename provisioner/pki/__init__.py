"""Cluster PKI: CAs, leaf certificates, the service-account key and kubeconfigs.

Scope: the public API of the package. The planner builds a :class:`PkiPlan`;
:func:`ensure_pki` makes the PKI directory match it without disturbing valid material;
:func:`kubeconfig` renders client configurations that use it.
"""

from provisioner.pki.certs import describe_certificate, verify_issued_by
from provisioner.pki.errors import PkiError
from provisioner.pki.kubeconfig import kubeconfig
from provisioner.pki.model import CARequest, CertRequest, PkiPlan
from provisioner.pki.store import (
    PkiReport,
    cert_path,
    ensure_pki,
    key_path,
    load_certificate,
)
from provisioner.pki.validate import validate_plan

__all__ = [
    "CARequest",
    "CertRequest",
    "PkiError",
    "PkiPlan",
    "PkiReport",
    "cert_path",
    "describe_certificate",
    "ensure_pki",
    "key_path",
    "kubeconfig",
    "load_certificate",
    "validate_plan",
    "verify_issued_by",
]
