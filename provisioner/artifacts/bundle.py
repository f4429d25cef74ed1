"""Bundles: every artifact a cluster needs in one tar, for air-gapped installs and mirrors.

Scope: writing the mirror layout (``<name>/<version>/<file>`` plus a ``.sha256`` beside each
file) and ``manifest.json`` into a reproducible tar, and the extravars the executor passes to
every playbook. Extracted into a web root, a bundle is a valid ``mirror`` source; pointed at by
``artifacts.path``, it is a ``local`` source.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioner.artifacts.fetch import MANIFEST_JSON
from provisioner.artifacts.files import record_text, write_tar
from provisioner.artifacts.manifest import Manifest, default_manifest, needed
from provisioner.artifacts.model import FetchedArtifact

if TYPE_CHECKING:
    from provisioner.plan.model import Plan


def layout_path(fa: FetchedArtifact, manifest: Manifest | None = None) -> str:
    """Where ``fa`` lives in a mirror or bundle: ``<directory>/<version>/<file>``."""
    man = manifest if manifest is not None else default_manifest()
    entry = man.entries.get(fa.name)
    directory = entry.directory if entry is not None else fa.name
    return f"{directory}/{fa.version}/{fa.path.name}"


def local_manifest(
    fetched: dict[str, FetchedArtifact], manifest: Manifest | None = None
) -> dict[str, dict[str, Any]]:
    """The ``manifest.json`` content describing ``fetched`` in the mirror layout."""
    return {
        name: {
            "version": fa.version,
            "file": layout_path(fa, manifest),
            "sha256": fa.sha256,
            "kind": fa.kind,
            "install": [{"member": i.member, "dest": i.dest, "mode": i.mode} for i in fa.install],
            **({"built": dict(fa.built)} if fa.built else {}),
        }
        for name, fa in sorted(fetched.items())
    }


def write_bundle(
    fetched: dict[str, FetchedArtifact], out: Path, manifest: Manifest | None = None
) -> Path:
    """Write the bundle tar of ``fetched`` to ``out`` (replaced atomically) and return it."""
    files: dict[str, FetchedArtifact] = {}
    for fa in fetched.values():
        files.setdefault(layout_path(fa, manifest), fa)
    with tempfile.TemporaryDirectory(prefix="provisioner-bundle-") as tmp:
        side = Path(tmp)
        members: list[tuple[str, Path]] = []
        for i, (arc, fa) in enumerate(sorted(files.items())):
            rec = side / f"{i}.sha256"
            rec.write_text(record_text(fa.sha256, fa.path.name))
            members += [(arc, fa.path), (arc + ".sha256", rec)]
        mfile = side / MANIFEST_JSON
        mfile.write_text(json.dumps(local_manifest(fetched, manifest), indent=2, sort_keys=True)
                         + "\n")
        members.append((MANIFEST_JSON, mfile))
        out.parent.mkdir(parents=True, exist_ok=True)
        write_tar(members, out)
    return out


def artifacts_extravars(fetched: dict[str, FetchedArtifact]) -> dict[str, Any]:
    """``{"provisioner_artifacts": {name: {...}}}``: what every playbook gets (JSON-able)."""
    return {
        "provisioner_artifacts": {
            name: {
                "path": str(fa.path),
                "sha256": fa.sha256,
                "kind": fa.kind,
                "version": fa.version,
                "install": [
                    {"member": i.member, "dest": i.dest, "mode": i.mode} for i in fa.install
                ],
            }
            for name, fa in sorted(fetched.items())
        }
    }


def removal_extravars(plan: Plan) -> dict[str, Any]:
    """``{"provisioner_artifacts": {name: {...}}}`` for a reset: every artifact of ``plan``
    with the kind and install list the packaged manifest gives it, so the roles know what to
    remove; nothing is fetched (``path`` is empty)."""
    man = default_manifest()
    out: dict[str, Any] = {}
    for name in needed(plan):
        rel = man.release_for(name, plan)
        out[name] = {
            "path": "",
            "sha256": rel.sha256 or "",
            "kind": rel.kind,
            "version": rel.version,
            "install": [{"member": i.member, "dest": i.dest, "mode": i.mode}
                        for i in rel.install],
        }
    return {"provisioner_artifacts": out}
