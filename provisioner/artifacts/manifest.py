"""The artifact manifest (``versions/artifacts.yaml``): URLs, checksums and install layout.

Scope: parsing and validating the manifest, and turning an entry plus a version into a
``Release`` with every template filled. Which version an artifact gets comes from the plan
(``kubernetes.yaml`` pins); tests build a ``Manifest`` from a dict pointing at a local server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, cast

import yaml

from provisioner.artifacts.model import KINDS, ArtifactError, DebFile, InstallItem, Kind, Release
from provisioner.plan.model import Plan

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# The cluster's own Kubernetes version rather than a component pin from kubernetes.yaml.
KUBERNETES = "kubernetes"


@dataclass(frozen=True)
class BuildRef:
    """How a binary artifact is built from source: the recipe, and for a bare binary the
    program it is (an archive takes each member's program from the member's base name)."""

    recipe: str
    program: str | None


@dataclass(frozen=True)
class Entry:
    """One artifact of the manifest, with ``{version}``/``{file}`` templates unfilled."""

    name: str
    kind: Kind
    version_from: str | None
    version: str | None
    directory: str
    file: str
    url: str | None
    checksum_url: str | None
    sha256: Mapping[str, str]
    install: tuple[InstallItem, ...]
    debs: tuple[DebFile, ...]
    build: BuildRef | None = None

    def release(self, version: str) -> Release:
        """This artifact at ``version``."""
        file = self.file.format(version=version)

        def fill(text: str) -> str:
            return text.format(version=version, file=file)

        return Release(
            name=self.name,
            version=version,
            kind=self.kind,
            directory=self.directory,
            file=file,
            url=fill(self.url) if self.url else None,
            sha256=self.sha256.get(version),
            checksum_url=fill(self.checksum_url) if self.checksum_url else None,
            install=tuple(InstallItem(fill(i.member), i.dest, i.mode) for i in self.install),
            debs=self.debs,
            build_recipe=self.build.recipe if self.build is not None else None,
        )


@dataclass(frozen=True)
class Manifest:
    """Every artifact the tool knows how to fetch, by name."""

    entries: Mapping[str, Entry]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Build from the parsed YAML shape (``{"artifacts": {name: {...}}}``)."""
        raw = data.get("artifacts")
        if not isinstance(raw, Mapping):
            raise ArtifactError("artifact manifest: top-level 'artifacts' mapping missing")
        entries: dict[str, Entry] = {}
        # Own entries first, then those that borrow another's file.
        for name, item in sorted(raw.items(), key=lambda kv: _borrows(kv[1])):
            entries[name] = _entry(str(name), item, entries)
        return cls(entries)

    def entry(self, name: str) -> Entry:
        """The entry called ``name`` (ArtifactError naming the known ones if none)."""
        try:
            return self.entries[name]
        except KeyError:
            raise ArtifactError(
                f"artifact {name}: not in the artifact manifest (known: "
                f"{', '.join(sorted(self.entries))}); add it to provisioner/versions/"
                "artifacts.yaml"
            ) from None

    def pinned_version(self, name: str, plan: Plan) -> str:
        """The version of ``name`` that ``plan`` wants."""
        e = self.entry(name)
        if e.version is not None:
            return e.version
        if e.version_from == KUBERNETES:
            return plan.version
        assert e.version_from is not None  # _entry guarantees one of the two
        try:
            return plan.release.component(e.version_from)
        except KeyError:
            raise ArtifactError(
                f"artifact {name}: kubernetes.yaml pins no {e.version_from!r} for Kubernetes "
                f"{plan.minor}; add it to provisioner/versions/kubernetes.yaml"
            ) from None

    def release_for(self, name: str, plan: Plan) -> Release:
        """``name`` at the version ``plan`` pins."""
        return self.entry(name).release(self.pinned_version(name, plan))


@cache
def default_manifest() -> Manifest:
    """The packaged ``provisioner/versions/artifacts.yaml``."""
    text = resources.files("provisioner.versions").joinpath("artifacts.yaml").read_text()
    return Manifest.from_dict(yaml.safe_load(text))


def needed(plan: Plan) -> tuple[str, ...]:
    """Every artifact name any host of ``plan`` needs, in first-seen order."""
    return tuple(dict.fromkeys(a for h in plan.hosts for a in h.artifacts))


def _borrows(item: Any) -> bool:
    return isinstance(item, Mapping) and "same_file_as" in item


def _entry(name: str, item: Any, done: Mapping[str, Entry]) -> Entry:
    if not isinstance(item, Mapping):
        raise ArtifactError(f"artifact manifest: {name}: expected a mapping")
    base: Entry | None = None
    if "same_file_as" in item:
        other = str(item["same_file_as"])
        if other not in done:
            raise ArtifactError(f"artifact manifest: {name}: same_file_as {other!r} is unknown")
        base = done[other]
    kind = cast(Kind, item.get("kind", base.kind if base else None))
    if kind not in KINDS:
        raise ArtifactError(f"artifact manifest: {name}: kind must be one of {', '.join(KINDS)}")
    version_from = item.get("version_from")
    version = item.get("version")
    if (version_from is None) == (version is None):
        raise ArtifactError(f"artifact manifest: {name}: give exactly one of version_from, version")
    sha256 = {str(k): str(v) for k, v in (item.get("sha256") or {}).items()}
    if base is not None:
        sha256 = dict(base.sha256)
    debs = tuple(DebFile(str(d["url"]), str(d["sha256"])) for d in item.get("debs") or ())
    for label, value in [*sha256.items(), *((d.filename, d.sha256) for d in debs)]:
        if not _SHA256.match(value):
            raise ArtifactError(f"artifact manifest: {name} {label}: {value!r} is not a sha256")
    if kind == "deb" and not debs:
        raise ArtifactError(f"artifact manifest: {name}: kind deb needs a debs list")
    url = item.get("url", base.url if base else None)
    if kind != "deb" and not url:
        raise ArtifactError(f"artifact manifest: {name}: url missing")
    install = tuple(
        InstallItem(str(i["member"]), str(i["dest"]), str(i["mode"]))
        for i in item.get("install") or ()
    )
    for i in install:
        if not i.dest.startswith("/") or not re.fullmatch(r"0[0-7]{3}", i.mode):
            raise ArtifactError(f"artifact manifest: {name}: bad install item {i}")
        if (kind == "binary") != (i.member == ""):
            raise ArtifactError(
                f"artifact manifest: {name}: binary installs take member '', archives a path"
            )
    build = _build_ref(name, kind, item.get("build"))
    return Entry(
        name=name,
        kind=kind,
        version_from=None if version_from is None else str(version_from),
        version=None if version is None else str(version),
        directory=base.directory if base else name,
        file=str(item.get("file", base.file if base else "")),
        url=None if url is None else str(url),
        checksum_url=item.get("checksum_url", base.checksum_url if base else None),
        sha256=sha256,
        install=install,
        debs=debs if base is None else base.debs,
        build=build if base is None else base.build,
    )


def _build_ref(name: str, kind: Kind, raw: Any) -> BuildRef | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or "recipe" not in raw:
        raise ArtifactError(f"artifact manifest: {name}: build needs a recipe")
    program = raw.get("program")
    if (kind == "binary") != (program is not None):
        raise ArtifactError(f"artifact manifest: {name}: build.program is for binary kinds only")
    return BuildRef(str(raw["recipe"]), None if program is None else str(program))
