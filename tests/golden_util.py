"""Golden-file helpers: turn a rendered tree into comparable text with secrets summarised.

Certificates and keys are random per run, so goldens hold a deterministic summary of each
(subject, issuer, SANs, usages) instead of the bytes; every other file is compared exactly.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from cryptography import x509

from provisioner.components import File
from provisioner.pki import describe_certificate
from provisioner.pki.identity import IDENTITY_PATH
from provisioner.render.tree import RenderedTree, manifest

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def summarise(f: File) -> bytes:
    """File content as stored in a golden: secrets and certificates summarised."""
    if f.content.startswith(b"-----BEGIN CERTIFICATE-----"):
        cert = x509.load_pem_x509_certificate(f.content)
        return f"<certificate {describe_certificate(cert)}>\n".encode()
    if f.content.startswith(b"-----BEGIN PUBLIC KEY-----"):
        return b"<public key>\n"
    if f.secret:
        return b"<secret>\n"
    if f.path == IDENTITY_PATH:  # fingerprints of the random CAs and keys
        return re.sub(rb"sha256:[0-9a-f]{64}", b"sha256:<fingerprint>", f.content)
    return f.content


def tree_as_files(tree: RenderedTree) -> dict[str, bytes]:
    """Relative path -> golden content of the whole tree."""
    out: dict[str, bytes] = {}
    for host, files in tree.hosts.items():
        for f in files:
            out[f"hosts/{host}{f.path}"] = summarise(f)
        out[f"hosts/{host}.json"] = manifest(tree, host)
    for rel, data in tree.runner.items():
        out[f"runner/{rel}"] = data
    return out


def compare_dir(expected_dir: Path, actual: dict[str, bytes]) -> list[str]:
    """Differences between a golden directory and ``actual`` (rewrites it when UPDATE)."""
    if UPDATE:
        if expected_dir.exists():
            shutil.rmtree(expected_dir)
        for rel, data in actual.items():
            p = expected_dir / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return []
    problems = []
    on_disk = {str(p.relative_to(expected_dir)): p.read_bytes()
               for p in expected_dir.rglob("*") if p.is_file()}
    for rel in sorted(set(on_disk) | set(actual)):
        if rel not in actual:
            problems.append(f"missing from render: {rel}")
        elif rel not in on_disk:
            problems.append(f"not in golden: {rel}")
        elif on_disk[rel] != actual[rel]:
            problems.append(f"differs: {rel}")
    return problems
