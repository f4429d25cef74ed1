"""The cluster's identity: fingerprints of its CAs, service-account key and encryption key.

Scope: computing the fingerprints from the state directory's material, the text of
``/etc/provisioner/identity`` that every host holds (rendered with the OS files), and
comparing what a host holds with what this state directory would push. A host that already
holds another identity belongs to a cluster made from another state directory (a second
``$HOME``, a lost directory): provision refuses it before changing anything, unless the
replacement is asked for explicitly (``provision --replace-identity``).

Only digests are written: a fingerprint says which key it is, never the key. The
encryption key's is a digest over a fixed label and the key, so it cannot be looked up.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provisioner.components.base import Material
    from provisioner.plan.model import Plan

IDENTITY_PATH = "/etc/provisioner/identity"
_ENCRYPTION_LABEL = b"provisioner encryption-key fingerprint\0"
# The fingerprints of every key the apiservers can decrypt with, while a rotation runs.
READABLE = "encryption-keys-readable"


def _pem_der(pem: bytes) -> bytes:
    """The DER bytes of the first PEM block (whitespace and headers ignored)."""
    lines = pem.decode("ascii", "replace").splitlines()
    body = []
    inside = False
    for line in lines:
        if line.startswith("-----BEGIN"):
            inside = True
            continue
        if line.startswith("-----END"):
            break
        if inside:
            body.append(line.strip())
    return base64.b64decode("".join(body)) if body else pem


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fingerprints(plan: Plan, material: Material) -> dict[str, str]:
    """``{name: sha256:...}`` of every CA (by store name), the service-account public key
    and the encryption key, in a stable order."""
    out = {f"ca/{ca.name}": _digest(_pem_der(material.cert(ca.name))) for ca in plan.pki.cas}
    if plan.pki.service_account_key:
        out["service-account"] = _digest(_pem_der(material.sa_public()))
    out["encryption-key"] = _digest(_ENCRYPTION_LABEL + material.encryption_key())
    keys = material.encryption_keys()
    if len(keys) > 1:
        # During a rotation a host may still record the previous write key (or already the
        # next): any key the apiservers can decrypt with belongs to this cluster.
        out[READABLE] = ",".join(_digest(_ENCRYPTION_LABEL + k.secret) for k in keys)
    return out


def identity_text(cluster: str, fps: Mapping[str, str]) -> str:
    """The identity file: a comment, then one ``name=fingerprint`` line per item."""
    lines = [f"# Managed by provisioner: the identity of cluster {cluster} (fingerprints",
             "# only). A provision from another state directory refuses to replace it.",
             *(f"{k}={v}" for k, v in fps.items())]
    return "\n".join(lines) + "\n"


def parse_identity(text: str) -> dict[str, str]:
    """The ``name=fingerprint`` lines of an identity file (comments and noise ignored)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def differences(have: Mapping[str, str], want: Mapping[str, str]) -> list[str]:
    """Items a host holds with another fingerprint than ``want`` (items it lacks are not
    differences: a host gains them as the cluster grows features). A host's encryption key
    matches while it is one the cluster can still decrypt with (a rotation in progress)."""
    readable = set(want.get(READABLE, "").split(","))
    return [k for k in want if k in have and k != READABLE and have[k] != want[k]
            and not (k == "encryption-key" and have[k] in readable)]
