"""Render a plan into every file each host must hold plus the ansible-runner private data dir.

``render`` is pure: the same plan and material give byte-identical output. ``write_tree``
lays it out on disk: ``hosts/<host>/<absolute path>`` for host files, ``hosts/<host>.json``
(the manifest roles copy from: path, mode, secret, services to restart) and ``runner/``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from provisioner.components import ALL, File, Material
from provisioner.plan.model import Plan
from provisioner.providers.connections import Connection
from provisioner.render.runner import runner_files


class RenderError(ValueError):
    """Two components want different content at the same path on one host (a bug)."""


@dataclass(frozen=True)
class RenderedTree:
    """Per-host files and the runner's private data dir, keyed by relative path."""

    hosts: dict[str, tuple[File, ...]]
    runner: dict[str, bytes]
    owners: dict[tuple[str, str], tuple[str, ...]]  # (host, path) -> components rendering it


def render(plan: Plan, material: Material, ssh_key: Path | None,
           connections: Mapping[str, Connection] | None = None) -> RenderedTree:
    """Every desired file of every host, and the runner inputs (``ssh_key``: default key)."""
    hosts: dict[str, tuple[File, ...]] = {}
    owners: dict[tuple[str, str], tuple[str, ...]] = {}
    for host in plan.hosts:
        merged: dict[str, File] = {}
        for comp in ALL:
            if comp.name not in host.parts:
                continue
            for f in comp.files(plan, host, material):
                key = (host.name, f.path)
                owners[key] = (*owners.get(key, ()), comp.name)
                prev = merged.get(f.path)
                if prev is None:
                    merged[f.path] = f
                elif prev.content != f.content or prev.mode != f.mode:
                    raise RenderError(f"host {host.name}: {f.path} rendered twice with "
                                      f"different content (by {comp.name} and an earlier one)")
                else:
                    restarts = tuple(dict.fromkeys((*prev.restarts, *f.restarts)))
                    merged[f.path] = File(prev.path, prev.content, prev.mode,
                                          prev.secret or f.secret, restarts)
        hosts[host.name] = tuple(merged[p] for p in sorted(merged))
    return RenderedTree(hosts=hosts, runner=runner_files(plan, ssh_key, connections), owners=owners)


def manifest(tree: RenderedTree, host: str) -> bytes:
    """The per-host manifest: what to copy where, which components own each file (a phase
    copies its components' files), and which services a change restarts."""
    entries = [
        {"path": f.path, "src": f.path.lstrip("/"), "mode": f"{f.mode:04o}", "secret": f.secret,
         "restarts": list(f.restarts), "components": list(tree.owners[(host, f.path)])}
        for f in tree.hosts[host]
    ]
    return (json.dumps({"files": entries}, indent=1, sort_keys=True) + "\n").encode()


def write_tree(tree: RenderedTree, out: Path) -> None:
    """Write ``tree`` under ``out`` (replacing earlier output); secrets are written 0600."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    for sub in ("hosts", "runner"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    for host, files in tree.hosts.items():
        root = out / "hosts" / host
        for f in files:
            _write(root / f.path.lstrip("/"), f.content, 0o600 if f.secret else f.mode)
        _write(out / "hosts" / f"{host}.json", manifest(tree, host), 0o644)
    for rel, data in tree.runner.items():
        _write(out / "runner" / rel, data, 0o600)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)
