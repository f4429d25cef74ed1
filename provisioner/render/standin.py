"""Stand-in material: render a cluster's tree without its secrets, to learn where things go.

Scope: ``StandInMaterial`` satisfies ``components.base.Material`` with PEM blocks that name
what they stand for. ``certs check`` renders with it to find the certificate files on each
host; ``certs renew`` to find which phases install each certificate. Nothing it returns is a
real key or certificate, and nothing is read from the state directory.
"""

from __future__ import annotations

import base64

from provisioner.render.material import EncryptionKey


def pem_block(label: str, body: bytes) -> bytes:
    """A PEM block of ``label`` around ``body``."""
    return (f"-----BEGIN {label}-----\n".encode() + base64.b64encode(body)
            + f"\n-----END {label}-----\n".encode())


class StandInMaterial:
    """``Material`` whose every secret is a stand-in: rendering with it gives the real paths
    and shows which files are certificates (their content starts with a certificate block
    whatever the certificate) and which certificate each holds (``cert(name)`` is a block
    naming it), without reading the state directory or the spec's files."""

    def cert(self, name: str) -> bytes:
        """A stand-in certificate block."""
        return pem_block("CERTIFICATE", f"stand-in {name}".encode())

    def key(self, name: str) -> bytes:
        """A stand-in key block."""
        return pem_block("PRIVATE KEY", f"stand-in {name}".encode())

    def sa_public(self) -> bytes:
        """A stand-in public key."""
        return pem_block("PUBLIC KEY", b"stand-in sa")

    def sa_private(self) -> bytes:
        """A stand-in private key."""
        return pem_block("PRIVATE KEY", b"stand-in sa")

    def encryption_key(self) -> bytes:
        """A stand-in 32-byte key, base64."""
        return base64.b64encode(bytes(32))

    def encryption_keys(self) -> list[EncryptionKey]:
        """The stand-in key."""
        return [EncryptionKey("key1", self.encryption_key())]

    def vrrp_seed(self) -> bytes:
        """A stand-in seed."""
        return b"stand-in"

    def registry_password(self, host: str) -> str:
        """A stand-in password."""
        return "stand-in"

    def registry_ca(self, host: str) -> bytes:
        """A stand-in CA bundle (installed on the hosts, so listed)."""
        return self.cert(f"registry {host}")
