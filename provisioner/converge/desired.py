"""What each host must hold when the selected phases have converged, from the rendered tree.

Scope: ``desired(...)`` turns the plan, the rendered tree and the fetched artifacts into one
``HostWant`` per host: every managed file (rendered files, installed binaries, package
bundles) with its sha256, mode and the phases that install it, the directories, services,
sysctls, kernel modules, Debian packages and addon manifests the roles converge. It checks
exactly what the roles check before they act (their probes and check-then-act tasks), so a
host that matches would get zero changes from Ansible. Values the roles take from their
defaults are read from the roles' ``defaults/main.yml``: one source of truth.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.components import ALL
from provisioner.plan.model import HostPlan, Plan
from provisioner.render.tree import RenderedTree

# Phases whose roles reason about all their hosts together (etcd members, the control plane's
# rolling restarts and first start, addons from the first control-plane node): when one host
# of such a phase differs, the phase runs on all its hosts. Other phases are host-local.
CLUSTER_WIDE = frozenset({"etcd", "control-plane", "addons"})
IDENTITY_PATH = "/etc/provisioner/identity"
PROBE_CACHE = "/var/lib/provisioner/probe-cache.json"
# The programs whose ``--version`` says which Kubernetes release a host runs (the upgrade
# policy reads them): where artifacts.yaml installs them.
VERSION_PROGRAMS = (("kube-apiserver", "/usr/local/bin/kube-apiserver"),
                    ("kubelet", "/usr/local/bin/kubelet"))


@dataclass(frozen=True)
class WantFile:
    """One file a phase installs on a host."""

    path: str
    sha256: str
    mode: int
    phases: tuple[str, ...]
    kind: str  # "file" (rendered), "binary" (an artifact's file), "bundle" (a .deb bundle)
    secret: bool = False
    restarts: tuple[str, ...] = ()
    content: bytes | None = None  # rendered text, for ``plan --diff``; None for binaries
    source: str = ""  # artifact name of a binary or bundle


@dataclass
class HostWant:
    """Everything the selected phases converge on one host."""

    host: str
    files: list[WantFile] = field(default_factory=list)
    dirs: list[tuple[str, int, str]] = field(default_factory=list)  # (path, mode, phase)
    units: dict[str, str] = field(default_factory=dict)  # service -> phase
    absent: list[tuple[str, str]] = field(default_factory=list)  # (path, phase): must not exist
    sysctl_file: str | None = None
    modules: tuple[str, ...] = ()
    debs: list[tuple[str, str, str]] = field(default_factory=list)  # (package, version, phase)
    addons: dict[str, Any] | None = None
    cni_check: bool = False
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (phase, why)
    phases: tuple[str, ...] = ()  # selected phases this host takes part in

    def request(self) -> dict[str, Any]:
        """The probe's request (``provisioner.converge.probe``)."""
        return {
            "files": [[f.path, f.kind != "file"] for f in self.files],
            "dirs": [d[0] for d in self.dirs],
            "units": sorted(self.units),
            "absent": [path for path, _ in self.absent],
            "pending_dir": PENDING_DIR,
            "sysctl_file": self.sysctl_file,
            "modules": list(self.modules),
            "debs": [[p, v] for p, v, _ in self.debs],
            "addons": self.addons,
            "cni_check": self.cni_check,
            "identity": IDENTITY_PATH,
            "versions": dict(VERSION_PROGRAMS),
            "cache": PROBE_CACHE,
        }


def _role_defaults(playbooks: Path, role: str) -> dict[str, Any]:
    return _read_defaults(str(playbooks / "roles" / role / "defaults" / "main.yml"))


@functools.lru_cache(maxsize=32)
def _read_defaults(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError:
        return {}
    return data if isinstance(data, dict) else {}


PENDING_DIR = "/var/lib/provisioner/restart-pending"


def selected_components(plan: Plan, selected: Collection[str]) -> dict[str, str]:
    """Component name -> phase, for the components the selection converges (a phase, or
    ``phase/component`` for one of its sub-phases)."""
    names = set(selected)
    return {c.name: c.phase for c in ALL
            if c.phase in names or f"{c.phase}/{c.name}" in names}


def _artifact_phases(plan: Plan, host: HostPlan, name: str, comps: Mapping[str, str]
                     ) -> tuple[str, ...]:
    oci = plan.cluster.spec.container_runtime.oci_runtime
    phases = {comps[c.name] for c in ALL if c.name in comps and c.name in host.parts
              and (name in c.artifacts or (c.name == "containerd" and name == oci))}
    return tuple(sorted(phases))


def _member_sums(unpacked: str) -> dict[str, str] | None:
    """``member -> sha256`` from an unpacked archive's ``.sha256sums`` (written and checked
    by the artifacts role), or None when the controller has not unpacked it yet."""
    try:
        text = (Path(unpacked) / ".sha256sums").read_text()
    except OSError:
        return None
    out: dict[str, str] = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if name:
            out[name.removeprefix("./")] = digest
    return out


@functools.lru_cache(maxsize=64)
def _deb_fields(path: str) -> tuple[str, str]:
    out = subprocess.run(["dpkg-deb", "-f", path, "Package", "Version"], check=True,
                         capture_output=True, text=True).stdout
    fields = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    return fields["Package"], fields["Version"]


def _artifacts(want: HostWant, plan: Plan, host: HostPlan, comps: Mapping[str, str],
               artifacts: Mapping[str, Mapping[str, Any]], cache: Path, deb_cache: str
               ) -> None:
    for name in host.artifacts:
        art = artifacts.get(name)
        phases = _artifact_phases(plan, host, name, comps)
        if art is None or not phases:
            continue  # not fetched for this selection, or installed by no selected phase
        kind = art["kind"]
        if kind == "binary":
            for item in art.get("install", []):
                want.files.append(WantFile(item["dest"], art["sha256"],
                                           int(str(item.get("mode", "0755")), 8), phases,
                                           "binary", source=name))
            continue
        sums = _member_sums(str(cache / art["sha256"]))
        if sums is None:
            want.unknown += [(p, f"the controller has not unpacked {name} yet") for p in phases]
            continue
        if kind == "tar":
            for item in art.get("install", []):
                member = item["member"].lstrip("/").removeprefix("./")
                if member not in sums:
                    want.unknown += [(p, f"{name} has no member {member}") for p in phases]
                    continue
                want.files.append(WantFile(item["dest"], sums[member],
                                           int(str(item.get("mode", "0755")), 8), phases,
                                           "binary", source=name))
        elif kind == "deb":
            root = f"{deb_cache}/{name}-{art['sha256']}"
            # The bundle directory is copied whole, its checksum list included.
            listing = cache / art["sha256"] / ".sha256sums"
            sums = {**sums, ".sha256sums": hashlib.sha256(listing.read_bytes()).hexdigest()}
            for member, digest in sorted(sums.items()):
                want.files.append(WantFile(f"{root}/{member}", digest, 0o644, phases,
                                           "bundle", source=name))
                if member.endswith(".deb"):
                    pkg, ver = _deb_fields(str(cache / art["sha256"] / member))
                    want.debs += [(pkg, ver, p) for p in phases]


def desired(plan: Plan, tree: RenderedTree, selected: Collection[str],
            artifacts: Mapping[str, Mapping[str, Any]], cache: Path, playbooks: Path,
            extravars: Mapping[str, Any] | None = None) -> dict[str, HostWant]:
    """One ``HostWant`` per host of the plan that takes part in a selected phase.

    ``artifacts`` is ``provisioner_artifacts`` (the extravars of the fetched artifacts),
    ``cache`` the controller's unpacked-archive cache, ``playbooks`` the playbook directory.
    """
    ev = dict(extravars or {})
    comps = selected_components(plan, selected)
    os_defaults = _role_defaults(playbooks, "os")
    deb_cache = str(_role_defaults(playbooks, "provisioner_artifacts").get(
        "provisioner_artifacts_deb_cache", "/var/cache/provisioner/debs"))
    addons_defaults = _role_defaults(playbooks, "addons")
    out: dict[str, HostWant] = {}
    for host in plan.hosts:
        here = {c: p for c, p in comps.items() if c in host.parts}
        if not here:
            continue
        want = HostWant(host.name, phases=tuple(dict.fromkeys(here.values())))
        for f in tree.hosts[host.name]:
            owners = tree.owners[(host.name, f.path)]
            phases = tuple(sorted({here[o] for o in owners if o in here}))
            if not phases:
                continue
            want.files.append(WantFile(f.path, hashlib.sha256(f.content).hexdigest(), f.mode,
                                       phases, "file", f.secret, f.restarts,
                                       None if f.secret else f.content))
        _artifacts(want, plan, host, here, artifacts, cache, deb_cache)
        for c in ALL:
            if c.name not in here:
                continue
            for unit in ((c.service,) if c.service else ()) + c.units(plan, host):
                want.units[unit] = here[c.name]
            want.absent += [(path, here[c.name]) for path in c.absent(plan, host)]
        if "os" in here:
            want.dirs += [(str(d["path"]), int(str(d["mode"]), 8), "os")
                          for d in os_defaults.get("os_directories", [])]
            want.sysctl_file = str(os_defaults.get("os_sysctl_file", ""))
            want.modules = tuple(os_defaults.get("os_kernel_modules", ()))
        if "etcd" in here:
            etcd_dir = ev.get("etcd_data_dir") or _role_defaults(playbooks, "etcd").get(
                "etcd_data_dir", "/var/lib/etcd")
            want.dirs.append((str(etcd_dir), 0o700, "etcd"))
        if "kube-apiserver" in here:
            audit = _role_defaults(playbooks, "kube_control_plane").get(
                "kube_control_plane_audit_dir", "/var/log/kubernetes/audit")
            want.dirs.append((str(audit), 0o700, "control-plane"))
        if "cni-bridge" in here:
            want.cni_check = True
        if "addons" in here:
            adir = str(addons_defaults.get("addons_dir", "/etc/kubernetes/addons"))
            want.addons = {
                "dir": adir,
                "applied_dir": str(addons_defaults.get(
                    "addons_applied_dir", "/var/lib/provisioner/addons-applied")),
                "files": sorted(f.path.rsplit("/", 1)[1] for f in tree.hosts[host.name]
                                if f.path.startswith(adir + "/")),
                "kubectl": str(addons_defaults.get("addons_kubectl", "kubectl")),
                "kubeconfig": str(addons_defaults.get(
                    "addons_kubeconfig", "/etc/kubernetes/admin.conf")),
            }
        out[host.name] = want
    return out
