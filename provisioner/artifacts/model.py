"""The records the artifact layer hands out: what was fetched, where it is, how it installs.

Scope: immutable data and the one error type. These records are the contract with the
executor and the Ansible roles (through ``artifacts_extravars``); keep their fields stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["binary", "tar", "deb"]
KINDS: tuple[Kind, ...] = ("binary", "tar", "deb")


class ArtifactError(ValueError):
    """An artifact could not be had or failed verification; the message names it and the fix."""


@dataclass(frozen=True)
class InstallItem:
    """One file put on a host: ``member`` of the artifact (``""`` for a binary) to ``dest``."""

    member: str
    dest: str
    mode: str


@dataclass(frozen=True)
class FetchedArtifact:
    """A verified file on the controller, ready to copy to hosts."""

    name: str
    version: str
    path: Path
    sha256: str
    kind: Kind
    install: tuple[InstallItem, ...]
    built: tuple[tuple[str, str], ...] = ()
    """The build record of a built artifact (recipe, key, go) as sorted pairs; kept when
    a built source is bundled, so the bundle is checked as the build was."""


@dataclass(frozen=True)
class DebFile:
    """One Debian package of a ``deb`` artifact, with its sha256 from the Packages index."""

    url: str
    sha256: str

    @property
    def filename(self) -> str:
        """The ``.deb`` file name, as it is stored inside the artifact tar."""
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Release:
    """One artifact at one version, every template filled in.

    ``directory`` is the layout directory holding the file: the artifact's own name, or the
    name of the artifact whose file it shares (etcdctl lives in etcd's tarball).
    """

    name: str
    version: str
    kind: Kind
    directory: str
    file: str
    url: str | None
    sha256: str | None
    """The sha256 the packaged manifest pins for this version, or None: then only a built
    copy (a ``local`` source of ``artifacts build``) can be installed."""
    install: tuple[InstallItem, ...]
    debs: tuple[DebFile, ...]
    build_recipe: str | None = None
    """The recipe ``artifacts build`` makes this artifact with (None: not built, e.g. the
    Debian packages); a local source's build record must name this one."""

    @property
    def layout_path(self) -> str:
        """``<directory>/<version>/<file>``: the path in a mirror, a bundle and the cache."""
        return f"{self.directory}/{self.version}/{self.file}"
