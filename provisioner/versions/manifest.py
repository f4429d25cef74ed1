"""The versions manifest: which Kubernetes versions are supported and what each pins."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml


@dataclass(frozen=True)
class MinorRelease:
    """One supported Kubernetes minor and the component versions pinned for it."""

    minor: str
    patches: tuple[str, ...]
    default: str
    components: dict[str, str]

    def component(self, name: str) -> str:
        """Return the pinned version of ``name`` (e.g. ``etcd``), or raise KeyError."""
        return self.components[name]


@cache
def _load() -> dict[str, MinorRelease]:
    text = resources.files("provisioner.versions").joinpath("kubernetes.yaml").read_text()
    raw = yaml.safe_load(text)["minors"]
    out: dict[str, MinorRelease] = {}
    for minor, data in raw.items():
        comps = {k: str(v) for k, v in data.items() if k not in ("patches", "default")}
        out[str(minor)] = MinorRelease(
            minor=str(minor),
            patches=tuple(str(p) for p in data["patches"]),
            default=str(data["default"]),
            components=comps,
        )
    return out


def minors() -> dict[str, MinorRelease]:
    """All supported minors, keyed by ``"1.32"``-style strings."""
    return _load()


def supported_versions() -> list[str]:
    """Every supported Kubernetes version, oldest first."""
    out = [p for m in _load().values() for p in m.patches]
    return sorted(out, key=lambda v: tuple(int(x) for x in v.split(".")))


def default_version() -> str:
    """The default Kubernetes version: the newest minor's default patch."""
    newest = max(_load(), key=lambda m: tuple(int(x) for x in m.split(".")))
    return _load()[newest].default


def release_for(version: str) -> MinorRelease:
    """Return the minor release that contains ``version`` (KeyError if unsupported)."""
    minor = ".".join(version.split(".")[:2])
    rel = _load()[minor]
    if version not in rel.patches:
        raise KeyError(version)
    return rel
