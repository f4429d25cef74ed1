"""Build recipes: how each binary artifact is built from its upstream Go source.

Scope: pure data and pure functions. A ``Recipe`` names the upstream module(s), the main
packages, and the settings upstream's own build scripts use (cgo, tags, version ldflags), so
that a built program is the one the official release ships and prints the same version.
The dependency set of every (recipe, version) is pinned by a checked-in Go module,
``provisioner/build/recipes/<recipe>/<version>/go.mod`` and ``go.sum``, written by
``scripts/update-recipes.py`` from the upstream go.mod; ``source-date`` beside them holds the
tag's time, used as the build date so that builds are reproducible.

Which artifact comes from which recipe is declared in ``versions/artifacts.yaml``
(``build: {recipe: ..., program: ...}``): the artifact manifest owns the artifact, a recipe
only knows how to compile programs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable

RECIPES_PACKAGE = "provisioner.build"


@dataclass(frozen=True)
class Program:
    """One main package and the file name the build gives it."""

    package: str
    name: str


Stamp = Callable[[str, str], list[tuple[str, str]]]
"""(version, source date) -> ``-X`` pairs ``(symbol, value)``."""


@dataclass(frozen=True)
class Recipe:
    """How one upstream project is built; ``version`` is always the upstream tag without v."""

    name: str
    modules: tuple[str, ...]
    """Root modules the consumer go.mod requires, all at the recipe's version."""
    programs: tuple[Program, ...]
    stamp: Stamp
    tags: tuple[str, ...] = ()
    cgo: bool = False
    static: bool = False
    """Link statically (cgo programs: ``-extldflags -static``)."""
    module_version: Callable[[str], str] = field(default=lambda v: f"v{v}")
    sibling_version: Callable[[str, str], str] | None = None
    """(module, version) -> the published version of a module the upstream go.mod replaces
    with a local directory (Kubernetes' staging modules, required there at v0.0.0). None:
    drop such replaces, because the upstream requires already name published versions
    (etcd's sibling modules at the same tag)."""
    source: str = ""
    """Where the settings come from (upstream file), for reviewers."""

    def ldflags(self, version: str, source_date: str) -> str:
        """The ``-ldflags`` value: upstream's version stamps, no symbol table, no DWARF."""
        xs = " ".join(f"-X '{sym}={val}'" for sym, val in self.stamp(version, source_date))
        ext = " -linkmode external -extldflags '-static-pie'" if self.static else ""
        return f"{xs} -s -w{ext}".strip()

    def build_args(self) -> list[str]:
        """Extra ``go build`` arguments (a static cgo program is a static PIE, as upstream)."""
        return ["-buildmode=pie"] if self.static else []

    def env(self) -> dict[str, str]:
        """Environment for ``go build`` beyond the caches (target, cgo)."""
        return {"GOOS": "linux", "GOARCH": "amd64", "GOAMD64": "v1",
                "CGO_ENABLED": "1" if self.cgo else "0"}


def _kube_stamp(version: str, source_date: str) -> list[tuple[str, str]]:
    # hack/lib/version.sh: every key on both packages; gitMajor/gitMinor so that clients
    # (kubectl version) do not fall back to a placeholder.
    major, minor, _ = version.split(".")
    values = [("buildDate", source_date), ("gitVersion", f"v{version}"), ("gitMajor", major),
              ("gitMinor", minor), ("gitTreeState", "clean")]
    return [(f"{pkg}.{k}", v) for k, v in values
            for pkg in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version")]


def _kube_staging(module: str, version: str) -> str:
    # Staging modules are published as v0.<minor>.<patch> of the Kubernetes v1.<minor>.<patch>.
    _, minor, patch = version.split(".")
    return f"v0.{minor}.{patch}"


K8S = "k8s.io/kubernetes"
ETCD = "go.etcd.io/etcd"
CONTAINERD = "github.com/containerd/containerd/v2"
CNI = "github.com/containernetworking/plugins"
CNI_PLUGINS = ("main/bridge", "main/host-device", "main/ipvlan", "main/loopback", "main/macvlan",
               "main/ptp", "main/vlan", "ipam/dhcp", "ipam/host-local", "ipam/static",
               "meta/bandwidth", "meta/firewall", "meta/portmap", "meta/sbr", "meta/tuning",
               "meta/vrf")

RECIPES: Mapping[str, Recipe] = {r.name: r for r in (
    Recipe(
        name="kubernetes",
        modules=(K8S,),
        programs=tuple(Program(f"{K8S}/cmd/{c}", c) for c in (
            "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
            "kube-proxy", "kubectl")),
        stamp=_kube_stamp,
        # hack/lib/golang.sh: non-debug builds add grpcnotrace; every server binary (kubelet
        # too since 1.36) is built with CGO_ENABLED=0.
        tags=("selinux", "notest", "grpcnotrace"),
        sibling_version=_kube_staging,
        source="kubernetes hack/lib/golang.sh (tags, -trimpath, -s -w), hack/lib/version.sh",
    ),
    Recipe(
        name="etcd",
        modules=(f"{ETCD}/server/v3", f"{ETCD}/etcdctl/v3", f"{ETCD}/etcdutl/v3"),
        # The server's main package is the module root; its binary is named after the path.
        programs=(Program(f"{ETCD}/server/v3", "etcd"), Program(f"{ETCD}/etcdctl/v3", "etcdctl"),
                  Program(f"{ETCD}/etcdutl/v3", "etcdutl")),
        # The version is a constant in api/v3; GitSHA is the tag's short commit upstream,
        # which the module proxy does not give: the tag itself is stamped instead.
        stamp=lambda v, d: [(f"{ETCD}/api/v3/version.GitSHA", f"v{v}")],
        source="etcd scripts/build_lib.sh (GO_LDFLAGS -X version.GitSHA, CGO_ENABLED=0)",
    ),
    Recipe(
        name="containerd",
        modules=(CONTAINERD,),
        programs=tuple(Program(f"{CONTAINERD}/cmd/{c}", c) for c in (
            "containerd", "ctr", "containerd-shim-runc-v2")),
        # Revision (the tag's commit) is not known from the module proxy: left unset.
        stamp=lambda v, d: [(f"{CONTAINERD}/version.Version", f"v{v}"),
                            (f"{CONTAINERD}/version.Package", CONTAINERD)],
        tags=("urfave_cli_no_docs",),
        source="containerd Makefile (VERSION/PACKAGE ldflags, static shim with CGO_ENABLED=0; "
               "nothing outside tests imports C, so every program is built without cgo)",
    ),
    Recipe(
        name="runc",
        modules=("github.com/opencontainers/runc",),
        programs=(Program("github.com/opencontainers/runc", "runc"),),
        # runc embeds its VERSION file; only the commit is stamped, and the module proxy
        # does not say which commit a tag is, so it stays unset (prints "commit: " empty).
        stamp=lambda v, d: [],
        # `libpathrs` (on by default from 1.5) needs a Rust C library: without the tag runc
        # uses its pure-Go pathrs-lite, as the README documents.
        tags=("seccomp", "urfave_cli_no_docs", "netgo", "osusergo"),
        cgo=True,
        static=True,
        source="runc Makefile (static target: seccomp netgo osusergo, -buildmode=pie, "
               "-linkmode external -extldflags -static-pie)",
    ),
    Recipe(
        name="cni-plugins",
        modules=(CNI,),
        programs=tuple(Program(f"{CNI}/plugins/{p}", p.rsplit("/", 1)[1]) for p in CNI_PLUGINS),
        stamp=lambda v, d: [(f"{CNI}/pkg/utils/buildversion.BuildVersion", f"v{v}")],
        source="containernetworking/plugins build_linux.sh (-X buildversion.BuildVersion)",
    ),
    Recipe(
        name="crictl",
        modules=("sigs.k8s.io/cri-tools",),
        programs=(Program("sigs.k8s.io/cri-tools/cmd/crictl", "crictl"),),
        stamp=lambda v, d: [("sigs.k8s.io/cri-tools/pkg/version.Version", v)],
        source="cri-tools Makefile (-X pkg/version.Version=<tag without v>, CGO_ENABLED=0)",
    ),
    Recipe(
        name="coredns",
        modules=("github.com/coredns/coredns",),
        programs=(Program("github.com/coredns/coredns", "coredns"),),
        # The version is a constant in coremain; GitCommit is unknown from the proxy.
        stamp=lambda v, d: [("github.com/coredns/coredns/coremain.GitCommit", f"v{v}")],
        source="coredns Makefile (CGO_ENABLED=0, -X coremain.GitCommit; plugin list committed)",
    ),
    Recipe(
        name="metrics-server",
        modules=("sigs.k8s.io/metrics-server",),
        programs=(Program("sigs.k8s.io/metrics-server/cmd/metrics-server", "metrics-server"),),
        stamp=lambda v, d: [("k8s.io/client-go/pkg/version.gitVersion", f"v{v}"),
                            ("k8s.io/client-go/pkg/version.buildDate", d)],
        source="metrics-server Makefile (CGO_ENABLED=0, -X k8s.io/client-go/pkg/version.*)",
    ),
    Recipe(
        name="flannel",
        modules=("github.com/flannel-io/flannel",),
        programs=(Program("github.com/flannel-io/flannel", "flanneld"),),
        stamp=lambda v, d: [("github.com/flannel-io/flannel/pkg/version.Version", f"v{v}")],
        # Upstream links amd64 with cgo (for the UDP backend) and -extldflags -static; netgo
        # and osusergo keep a static glibc program off NSS, as runc's static build does.
        tags=("netgo", "osusergo"),
        cgo=True,
        static=True,
        source="flannel Makefile dist/flanneld (CGO_ENABLED=1 on amd64, -X pkg/version.Version,"
               " -extldflags -static)",
    ),
    Recipe(
        # The flannel CNI plugin. Its home since 2021, github.com/flannel-io/cni-plugin, is
        # not served by the module proxy; its source before the move is the plugins
        # module's plugins/meta/flannel, released last in v0.9.1 (in the release tarball).
        name="cni-plugin-flannel",
        modules=(CNI,),
        programs=(Program(f"{CNI}/plugins/meta/flannel", "flannel"),),
        stamp=lambda v, d: [(f"{CNI}/pkg/utils/buildversion.BuildVersion", f"v{v}")],
        source="containernetworking/plugins v0.9.1 build_linux.sh (plugins/meta/flannel)",
    ),
)}


class RecipeError(ValueError):
    """A recipe or its pinned module is missing; the message names it and the fix."""


def recipe(name: str) -> Recipe:
    """The recipe called ``name``."""
    try:
        return RECIPES[name]
    except KeyError:
        raise RecipeError(f"build recipe {name!r} is unknown (known: "
                          f"{', '.join(sorted(RECIPES))})") from None


def recipe_dir(name: str, version: str) -> Traversable:
    """The checked-in Go module of ``name`` at ``version`` (may not exist)."""
    return resources.files(RECIPES_PACKAGE).joinpath("recipes", name, version)


def pinned_files(name: str, version: str) -> dict[str, bytes]:
    """go.mod, go.sum and source-date of a recipe version, or RecipeError with the fix."""
    d = recipe_dir(name, version)
    out: dict[str, bytes] = {}
    for f in ("go.mod", "go.sum", "source-date"):
        p = d.joinpath(f)
        if not p.is_file():
            raise RecipeError(
                f"build recipe {name} {version}: provisioner/build/recipes/{name}/{version}/{f} "
                f"is missing. Fix: run `python scripts/update-recipes.py {name} {version}` "
                "(reads the upstream go.mod through the Go module proxy) and commit the result")
        out[f] = p.read_bytes()
    return out


def recipe_key(r: Recipe, version: str, files: Mapping[str, bytes], go_version: str) -> str:
    """Hash of everything that decides the output: pinned module, settings, Go toolchain."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name] + b"\0")
    date = files.get("source-date", b"").decode().strip()
    settings = [r.name, version, go_version, r.ldflags(version, date), ",".join(r.tags),
                repr(sorted(r.env().items())), "-trimpath",
                *(f"{p.package}={p.name}" for p in r.programs)]
    h.update("\n".join(settings).encode())
    return h.hexdigest()


# --- go.mod generation (scripts/update-recipes.py) -------------------------------------------

_REPLACE_BLOCK = re.compile(r"^replace \($(.*?)^\)", re.M | re.S)
_REPLACE_LINE = re.compile(r"^replace (.+)$", re.M)


def upstream_replaces(gomod: str) -> list[tuple[str, str]]:
    """``(left, right)`` of every replace directive in an upstream go.mod."""
    lines: list[str] = []
    for block in _REPLACE_BLOCK.findall(gomod):
        lines += block.splitlines()
    lines += [m for m in _REPLACE_LINE.findall(gomod) if not m.startswith("(")]
    out = []
    for line in lines:
        line = line.split("//", 1)[0].strip()
        if "=>" in line:
            left, right = (s.strip() for s in line.split("=>", 1))
            out.append((left, right))
    return out


_GO_LINE = re.compile(r"^go (\S+)$", re.M)
_GODEBUG_LINE = re.compile(r"^godebug .+$", re.M)


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def consumer_gomod(r: Recipe, version: str, upstream: Mapping[str, str]) -> str:
    """The consumer go.mod for ``r`` at ``version``; ``upstream`` maps root module -> go.mod.

    A consumer ignores the replace directives of the modules it requires, so each local
    replace upstream has (``k8s.io/api => ./staging/src/k8s.io/api``) becomes a replace with
    the published module at its version; replaces pointing at other modules are kept as is.
    """
    replaces: dict[str, str] = {}
    roots = set(r.modules)
    for text in upstream.values():
        for left, right in upstream_replaces(text):
            mod = left.split()[0]
            if mod in roots:
                continue
            if right.startswith((".", "/")):
                if r.sibling_version is not None:
                    replaces[mod] = f"{mod} {r.sibling_version(mod, version)}"
            else:
                replaces[left] = right
    # The main module decides the language version and the GODEBUG defaults: take upstream's.
    go_directive = max((m for t in upstream.values() for m in _GO_LINE.findall(t)),
                       key=_version_tuple, default="1.24")
    # The `tool` block needs go >= 1.24 in the consumer module (old upstreams say 1.14).
    go_directive = max(go_directive, "1.24", key=_version_tuple)
    godebug = [m for t in upstream.values() for m in _GODEBUG_LINE.findall(t)]
    lines = [
        f"// Generated by scripts/update-recipes.py for the {r.name} recipe at {version};",
        "// every dependency is pinned by go.sum. Do not edit by hand.",
        f"module provisioner.build/{r.name}", "", f"go {go_directive}", "",
        *([*dict.fromkeys(godebug), ""] if godebug else []),
        "tool (", *(f"\t{p.package}" for p in r.programs), ")", "",
        "require (", *(f"\t{m} {r.module_version(version)}" for m in r.modules), ")",
    ]
    if replaces:
        lines += ["", "replace (", *(f"\t{k} => {v}" for k, v in sorted(replaces.items())), ")"]
    return "\n".join(lines) + "\n"
