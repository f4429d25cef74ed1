"""Secrets render reads: the PKI store and generated keys in the cluster's state directory.

``prepare`` creates what is missing (certificates, the encryption-at-rest key) and keeps
what exists, so renders are stable across runs. User-supplied secrets (registry password,
CA) are read from the files the spec names, relative to the spec's directory.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.pki import PkiReport, ensure_pki
from provisioner.pki.kubeconfig import kubeconfig
from provisioner.plan.model import Plan
from provisioner.state import private_dir, write_private

# The encryption-at-rest keys in the secrets directory. ``encryption-key`` is the one
# Secrets are written with; during a rotation (provisioner.rotation) ``.next`` is a new key
# every apiserver can already read before any writes with it, and ``.retired`` the previous
# key, still readable until every Secret has been rewritten. A file holds ``name:base64``;
# a bare base64 value is ``key1`` (the format before rotation existed). The name is written
# into each encrypted value in etcd, so a key keeps it for life.
ENCRYPTION_KEY = "encryption-key"
NEXT_KEY = "encryption-key.next"
RETIRED_KEY = "encryption-key.retired"
VRRP_SEED = "vrrp-seed"


@dataclass(frozen=True)
class EncryptionKey:
    """One aescbc key: its name in the EncryptionConfiguration and its base64 secret."""

    name: str
    secret: bytes


def read_encryption_key(path: Path) -> EncryptionKey:
    """The key in ``path`` (``name:base64`` or a bare base64 ``key1``)."""
    text = path.read_bytes().strip()
    name, sep, secret = text.partition(b":")
    return EncryptionKey(name.decode(), secret) if sep else EncryptionKey("key1", text)


def new_encryption_key(name: str) -> bytes:
    """A file's content for a fresh 32-byte key called ``name``."""
    return f"{name}:".encode() + base64.b64encode(secrets.token_bytes(32)) + b"\n"


class MaterialError(ValueError):
    """A secret the spec refers to cannot be read (the message names the field, not the data)."""


@dataclass(frozen=True)
class StateMaterial:
    """Material read from a state directory."""

    plan: Plan
    pki_dir: Path
    secrets_dir: Path
    spec_dir: Path
    _cache: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    def _pki(self, rel: str) -> bytes:
        # CA certificates are placed on every host: read each file once per render.
        data = self._cache.get(rel)
        if data is None:
            data = self._cache[rel] = (self.pki_dir / rel).read_bytes()
        return data

    def cert(self, name: str) -> bytes:
        """PEM certificate from the PKI store."""
        return self._pki(f"{name}.crt")

    def key(self, name: str) -> bytes:
        """PEM private key from the PKI store."""
        return self._pki(f"{name}.key")

    def sa_public(self) -> bytes:
        """Service-account public key."""
        return (self.pki_dir / "sa.pub").read_bytes()

    def sa_private(self) -> bytes:
        """Service-account private key."""
        return (self.pki_dir / "sa.key").read_bytes()

    def encryption_key(self) -> bytes:
        """Base64 of the 32-byte key Secrets are written with."""
        return read_encryption_key(self.secrets_dir / ENCRYPTION_KEY).secret

    def encryption_keys(self) -> list[EncryptionKey]:
        """Every key the apiservers can decrypt with, the one they write with first."""
        return [read_encryption_key(self.secrets_dir / name)
                for name in (ENCRYPTION_KEY, NEXT_KEY, RETIRED_KEY)
                if (self.secrets_dir / name).exists()]

    def vrrp_seed(self) -> bytes:
        """The secret keepalived's VRRP password is derived from (stable across encryption
        key rotations)."""
        return (self.secrets_dir / VRRP_SEED).read_bytes().strip()

    def _private(self, host: str) -> tuple[int, object]:
        for i, p in enumerate(self.plan.cluster.spec.registries.private):
            if p.host == host:
                return i, p
        raise MaterialError(f"no private registry {host!r} in spec.registries.private")

    def registry_password(self, host: str) -> str:
        """Password from the registry's passwordFile."""
        i, p = self._private(host)
        path = getattr(p, "password_file", None)
        assert path is not None
        return self._read(path, f"spec.registries.private[{i}].passwordFile").decode().strip()

    def registry_ca(self, host: str) -> bytes:
        """CA bundle from the registry's caFile."""
        i, p = self._private(host)
        path = getattr(p, "ca_file", None)
        assert path is not None
        return self._read(path, f"spec.registries.private[{i}].caFile")

    def _read(self, path: Path, field: str) -> bytes:
        full = path if path.is_absolute() else self.spec_dir / path
        try:
            return full.read_bytes()
        except OSError as exc:
            raise MaterialError(f"{field}: cannot read {full}: {exc.strerror}; "
                                "fix the path (relative paths start at the spec's folder)"
                                ) from None


def prepare(plan: Plan, state_dir: Path, spec_dir: Path,
            renew: frozenset[str] = frozenset()) -> tuple[StateMaterial, PkiReport]:
    """Ensure PKI and generated secrets exist under ``state_dir``; return a reader."""
    pki_dir = private_dir(state_dir / "pki")
    report = ensure_pki(plan.pki, pki_dir, renew)
    secrets_dir = private_dir(state_dir / "secrets")
    key_file = secrets_dir / ENCRYPTION_KEY
    seed = secrets_dir / VRRP_SEED
    if not seed.exists():
        # A cluster made before the seed existed derived its VRRP password from its first
        # encryption key: keep that password. A new cluster gets its own random seed.
        first = read_encryption_key(key_file).secret if key_file.exists() else None
        write_private(seed, (first or base64.b64encode(secrets.token_bytes(32))) + b"\n")
    if not key_file.exists():
        write_private(key_file, new_encryption_key("key1"))
    return StateMaterial(plan, pki_dir, secrets_dir, spec_dir), report


def write_admin_kubeconfig(plan: Plan, material: StateMaterial, state_dir: Path) -> Path:
    """``<state>/admin.kubeconfig`` (group kubeadm:cluster-admins) for kubectl on the
    controller, and ``<state>/super-admin.kubeconfig`` (system:masters, for break-glass use
    only; no host holds it). Both 0600 with certificates embedded, rewritten only when they
    change. Returns the admin kubeconfig."""
    for name, user in (("admin", "kubernetes-admin"), ("super-admin", "kubernetes-super-admin")):
        text = kubeconfig(plan.name, plan.endpoints.admin, user,
                          ca_data=material.cert("ca"), cert_data=material.cert(name),
                          key_data=material.key(name)).encode()
        path = state_dir / f"{name}.kubeconfig"
        if not path.exists() or path.read_bytes() != text:
            write_private(path, text)
    return state_dir / "admin.kubeconfig"
