"""The per-cluster state directory: PKI, rendered files, runs, kubeconfig (mode 0700).

Layout under ``<root>/clusters/<name>/``: ``pki/``, ``rendered/``, ``runs/<id>/``,
``ssh/`` (keys the tool made), ``admin.kubeconfig``, ``inventory.yaml``. The root is
``$PROVISIONER_STATE_DIR`` or ``~/.provisioner``; it holds secrets, so every directory is
created 0700 and nothing under it is ever printed.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_ROOT = "PROVISIONER_STATE_DIR"


def state_root() -> Path:
    """Root of all state: ``$PROVISIONER_STATE_DIR`` or ``~/.provisioner``."""
    env = os.environ.get(ENV_ROOT)
    return Path(env) if env else Path.home() / ".provisioner"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700 and return it; tighten it if it exists."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def cluster_dir(name: str, root: Path | None = None) -> Path:
    """The state directory of cluster ``name``, created 0700."""
    base = root if root is not None else state_root()
    private_dir(base)
    return private_dir(base / "clusters" / name)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file atomically, 0600 from the first byte."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
