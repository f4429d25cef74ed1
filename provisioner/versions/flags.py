"""Known command-line flags of Kubernetes components and etcd, per supported version.

Scope: this module only answers "does this binary, at this minor version, accept a flag with
this name?". It reads the packaged data files ``provisioner/versions/flags/v<minor>/
<component>.txt`` (and ``flags/etcd/<etcd-minor>.txt``), written by scripts/gen-flags.py
from the built binaries' ``--help`` (each file's header records the binary's version), and
parses argv in the form our systemd units render (``--name=value`` or a bare ``--name`` for
booleans). It does not check flag values,
types, or whether a flag is sensible for a given cluster.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

__all__ = [
    "COMPONENTS",
    "UnknownFlagData",
    "available",
    "deprecated_flags",
    "known_flags",
    "parse_flags",
    "unknown_flags",
]

#: Components that have flag data. ``etcd`` is versioned by the etcd minor (``"3.5"``).
COMPONENTS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "etcd",
)

_PACKAGE = "provisioner.versions"
_MINOR_RE = re.compile(r"^v?(\d+)\.(\d+)$")
_FLAG_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class UnknownFlagData(ValueError):
    """There is no flag data for the requested component and version."""


def _flags_dir() -> Traversable:
    return resources.files(_PACKAGE).joinpath("flags")


def _normalize_minor(minor: str) -> str | None:
    m = _MINOR_RE.match(minor.strip())
    return f"{m.group(1)}.{m.group(2)}" if m else None


def _data_file(component: str, minor: str, *, deprecated: bool = False) -> Traversable | None:
    """The data file for ``component`` at ``minor``, or None if there is none."""
    if component not in COMPONENTS:
        return None
    norm = _normalize_minor(minor)
    if norm is None:
        return None
    suffix = ".deprecated.txt" if deprecated else ".txt"
    if component == "etcd":
        path = _flags_dir().joinpath("etcd", f"{norm}{suffix}")
    else:
        path = _flags_dir().joinpath(f"v{norm}", f"{component}{suffix}")
    return path if path.is_file() else None


def available() -> dict[str, tuple[str, ...]]:
    """Versions with flag data for each component, e.g. ``{"kubelet": ("1.31", ...)}``."""
    out: dict[str, list[str]] = {c: [] for c in COMPONENTS}
    root = _flags_dir()
    if not root.is_dir():
        return {c: () for c in COMPONENTS}
    for entry in root.iterdir():
        if not entry.is_dir():
            continue
        if entry.name == "etcd":
            for f in entry.iterdir():
                stem = f.name.removesuffix(".txt")
                if f.name.endswith(".txt") and not stem.endswith(".deprecated"):
                    out["etcd"].append(stem)
            continue
        norm = _normalize_minor(entry.name)
        if norm is None or not entry.name.startswith("v"):
            continue
        for component in COMPONENTS:
            if component != "etcd" and entry.joinpath(f"{component}.txt").is_file():
                out[component].append(norm)

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("."))

    return {c: tuple(sorted(vs, key=key)) for c, vs in out.items()}


def _read(path: Traversable) -> frozenset[str]:
    names: set[str] = set()
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            names.add(line)
    return frozenset(names)


@cache
def known_flags(component: str, minor: str) -> frozenset[str]:
    """Flag names (without ``--``) that ``component`` accepts at version ``minor``.

    ``minor`` is a Kubernetes minor like ``"1.31"``; for ``component="etcd"`` it is the etcd
    minor like ``"3.5"``. Deprecated flags that still exist are included.

    Raises:
        UnknownFlagData: there is no data file for this component and version.
    """
    path = _data_file(component, minor)
    if path is None:
        avail = available()
        if component not in avail:
            raise UnknownFlagData(
                f"no flag data for component {component!r}: "
                f"known components are {', '.join(COMPONENTS)}"
            )
        versions = ", ".join(avail[component]) or "none"
        raise UnknownFlagData(
            f"no flag data for {component} version {minor!r}: "
            f"available versions for {component} are {versions}"
        )
    return _read(path)


@cache
def deprecated_flags(component: str, minor: str) -> frozenset[str]:
    """Deprecated (but still accepted) flags of ``component`` at ``minor``; empty if unknown."""
    path = _data_file(component, minor, deprecated=True)
    return _read(path) if path is not None else frozenset()


def parse_flags(argv: Sequence[str]) -> dict[str, str | None]:
    """Parse ``--name=value`` and bare ``--name`` tokens into ``{name: value}``.

    A bare ``--name`` (a boolean switch) maps to None. When a flag repeats, the last value
    wins. Space-separated values (``--name value``) are not supported: every token must be a
    flag, which is how our systemd units render arguments.

    Raises:
        ValueError: a token is not of the form ``--name`` or ``--name=value``.
    """
    out: dict[str, str | None] = {}
    for token in argv:
        if not token.startswith("--"):
            raise ValueError(f"not a flag (expected --name or --name=value): {token!r}")
        body = token[2:]
        name, sep, value = body.partition("=")
        if not _FLAG_NAME_RE.match(name):
            raise ValueError(f"not a valid flag name in {token!r}")
        out[name] = value if sep else None
    return out


def unknown_flags(component: str, minor: str, argv: Sequence[str]) -> list[str]:
    """Flag names in ``argv`` that ``component`` at ``minor`` does not know, in argv order.

    Raises:
        UnknownFlagData: there is no flag data for this component and version.
        ValueError: ``argv`` contains a token that is not a flag (see :func:`parse_flags`).
    """
    known = known_flags(component, minor)
    return [name for name in parse_flags(argv) if name not in known]
