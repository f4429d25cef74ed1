"""The artifact manifest (``versions/artifacts.yaml``): URLs, pinned sha256s, install layout.

Scope: parsing and validating the manifest, turning an entry plus a version into a
``Release`` with every template filled, and saying which releases no pinned sha256 vouches
for. Which version an artifact gets comes from ``kubernetes.yaml`` (through the plan, or a
Kubernetes version and its minor for spec rules); tests build a ``Manifest`` from a dict
pointing at a local server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, cast

import yaml

from provisioner.artifacts.model import KINDS, ArtifactError, DebFile, InstallItem, Kind, Release
from provisioner.plan.model import Plan
from provisioner.versions import manifest as versions
from provisioner.versions.manifest import MinorRelease

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
        return self.version_at(name, plan.version, plan.release)

    def version_at(self, name: str, kubernetes: str, release: MinorRelease) -> str:
        """The version of ``name`` in a cluster of Kubernetes ``kubernetes`` (of ``release``)."""
        e = self.entry(name)
        if e.version is not None:
            return e.version
        if e.version_from == KUBERNETES:
            return kubernetes
        assert e.version_from is not None  # _entry guarantees one of the two
        try:
            return release.component(e.version_from)
        except KeyError:
            raise ArtifactError(
                f"artifact {name}: kubernetes.yaml pins no {e.version_from!r} for Kubernetes "
                f"{release.minor}; add it to provisioner/versions/kubernetes.yaml"
            ) from None

    def release_for(self, name: str, plan: Plan) -> Release:
        """``name`` at the version ``plan`` pins."""
        return self.entry(name).release(self.pinned_version(name, plan))

    def unpinned(self, names: Iterable[str], kubernetes: str,
                 release: MinorRelease) -> tuple[Release, ...]:
        """The releases of ``names`` (at Kubernetes ``kubernetes``) that no pinned sha256
        vouches for: only a ``local`` source of built artifacts can provide them.

        A ``deb`` artifact is never among them: each package inside is pinned.
        """
        out = []
        for name in dict.fromkeys(names):
            rel = self.entry(name).release(self.version_at(name, kubernetes, release))
            if rel.kind != "deb" and rel.sha256 is None:
                out.append(rel)
        return tuple(out)

    def fully_pinned(self, names: Iterable[str]) -> tuple[str, ...]:
        """The supported Kubernetes versions at which every one of ``names`` is pinned."""
        wanted = tuple(names)
        return tuple(v for v in versions.supported_versions()
                     if not self.unpinned(wanted, v, versions.release_for(v)))


def unpinned_problem(man: Manifest, source: str, names: Iterable[str], kubernetes: str,
                     release: MinorRelease) -> tuple[str, str] | None:
    """What is wrong and the fix, when ``source`` (online or mirror) would need an artifact
    of ``names`` that no pinned sha256 vouches for; None when every one is pinned.

    One wording wherever this is checked (``fetch``; a spec rule, for ``validate``), kept
    within one issue line of a spec error (``spec.errors.ISSUE_CHARS``): artifacts are
    grouped by version, the cluster's own Kubernetes binaries first.
    """
    wanted = tuple(dict.fromkeys(names))
    missing = man.unpinned(wanted, kubernetes, release)
    if not missing:
        return None
    by_version: dict[str, list[str]] = {kubernetes: []}
    for rel in missing:
        by_version.setdefault(rel.version, []).append(rel.name)
    listed = "; ".join(", ".join(n) + ("" if v == kubernetes else f" {v}")
                       for v, n in by_version.items() if n)
    full = man.fully_pinned(wanted)
    others = (f"or a fully pinned release: {', '.join(full)}" if full
              else "no release is fully pinned yet")
    return (f"{source!r} trusts only sha256s pinned in the packaged manifest; unpinned in "
            f"Kubernetes {kubernetes}: {listed}",
            f"`artifacts.source: local` from `provisioner artifacts build FILE`; {others}")


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
    if "checksum_url" in item:
        # A project's checksum file comes from the same place as the file it vouches for:
        # whoever can replace one can replace the other. Only pinned values count.
        raise ArtifactError(
            f"artifact manifest: {name}: checksum_url is not read (a source never vouches "
            "for its own files); pin the official sha256 under sha256 instead")
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
