"""Artifacts: release binaries and packages, fetched once to the controller, verified, copied.

Sources (``spec.artifacts.source``): ``online`` (official release URLs from
``versions/artifacts.yaml``), ``mirror`` (the same files at ``<mirrorURL>/<name>/<version>/
<file>``) and ``local`` (a directory with ``manifest.json``, or a bundle tar). Online and
mirror files must match the sha256 the packaged manifest pins (no source vouches for
itself); an unpinned artifact comes only from a local source of built artifacts. The
executor calls ``fetch`` and hands ``artifacts_extravars`` to every playbook; roles install
from it.
"""

from provisioner.artifacts.bundle import (
    artifacts_extravars,
    layout_path,
    local_manifest,
    write_bundle,
)
from provisioner.artifacts.fetch import fetch, fetch_local, local_root
from provisioner.artifacts.manifest import Manifest, default_manifest, needed
from provisioner.artifacts.model import (
    ArtifactError,
    DebFile,
    FetchedArtifact,
    InstallItem,
    Kind,
    Release,
)

__all__ = [
    "ArtifactError",
    "DebFile",
    "FetchedArtifact",
    "InstallItem",
    "Kind",
    "Manifest",
    "Release",
    "artifacts_extravars",
    "default_manifest",
    "fetch",
    "fetch_local",
    "layout_path",
    "local_manifest",
    "local_root",
    "needed",
    "write_bundle",
]
