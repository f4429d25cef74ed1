"""One parallel round trip that tells, per host and phase, what differs from the desired state.

Scope: ``survey`` sends the probe (``provisioner.converge.probe``) to every host over SSH
(paramiko, host keys checked) in parallel, and ``compare`` turns each report into
``Difference`` records naming the phase that repairs them. ``targets`` turns those into the
hosts each phase must run on: a host that differs in nothing is left alone, and a
cluster-wide phase runs on all its hosts when any of them differs. A host that cannot be
surveyed counts as differing in every phase it takes part in, so nothing is hidden.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from provisioner.components.cni import ROUTES
from provisioner.converge.desired import CLUSTER_WIDE, HostWant
from provisioner.plan.model import Plan
from provisioner.verify.ssh import SshRunner, SshUnavailable

PROBE_TIMEOUT = 60.0


@dataclass(frozen=True)
class Difference:
    """One thing a host holds that is not what the plan wants."""

    host: str
    phases: tuple[str, ...]
    kind: str  # file, binary, bundle, directory, unit, restart, sysctl, module, package, ...
    target: str  # a path, unit, package, key or manifest name
    detail: str
    secret: bool = False

    def __str__(self) -> str:
        return f"{self.kind} {self.target}: {self.detail}"


@dataclass
class HostSurvey:
    """What one host reported, and how it differs."""

    host: str
    report: dict[str, Any] | None
    differences: list[Difference] = field(default_factory=list)
    error: SshUnavailable | str | None = None
    seconds: float = 0.0

    @property
    def identity(self) -> str:
        """The host's cluster identity file (empty when it has none)."""
        return str((self.report or {}).get("identity", ""))

    @property
    def versions(self) -> dict[str, str]:
        """The installed Kubernetes programs' versions (``{"kubelet": "1.37.2"}``)."""
        found = (self.report or {}).get("versions") or {}
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def probe_source() -> str:
    """The probe script's text (sent to hosts as is)."""
    return resources.files("provisioner.converge").joinpath("probe.py").read_text()


def probe_command(want: HostWant) -> tuple[str, bytes]:
    """The remote command and its standard input: the probe script and one call."""
    request = json.dumps(want.request(), sort_keys=True)
    script = probe_source() + f"\n_main({request!r})\n"
    return "python3 -", script.encode()


def _mode(m: int) -> str:
    return f"{m:04o}"


def compare(want: HostWant, report: Mapping[str, Any]) -> list[Difference]:
    """What differs between ``want`` and the probe's ``report`` of the same host."""
    h = want.host
    out: list[Difference] = []
    files = report.get("files", {})
    for f in want.files:
        have = files.get(f.path)
        if have is None:
            out.append(Difference(h, f.phases, f.kind, f.path, "missing", f.secret))
            continue
        digest, mode, uid, gid = have
        problems = []
        if digest != f.sha256:
            problems.append("content differs")
        if mode != f.mode:
            problems.append(f"mode {_mode(mode)}, want {_mode(f.mode)}")
        if (uid, gid) != (0, 0):
            problems.append(f"owner {uid}:{gid}, want root:root")
        if problems:
            out.append(Difference(h, f.phases, f.kind, f.path, ", ".join(problems), f.secret))
    present = set(report.get("present", []))
    out += [Difference(h, (phase,), "file", path, "present, want absent")
            for path, phase in want.absent if path in present]
    dirs = report.get("dirs", {})
    for path, mode, phase in want.dirs:
        have = dirs.get(path)
        if have is None:
            out.append(Difference(h, (phase,), "directory", path, "missing"))
        elif tuple(have) != (mode, 0, 0):
            out.append(Difference(h, (phase,), "directory", path,
                                  f"mode {_mode(have[0])} owner {have[1]}:{have[2]}, want "
                                  f"{_mode(mode)} root:root"))
    units = report.get("units", {})
    if "error" in units:
        out += [Difference(h, (p,), "unit", u, f"cannot read its state: {units['error']}")
                for u, p in want.units.items()]
    else:
        for unit, phase in sorted(want.units.items()):
            st = units.get(unit) or {}
            if st.get("load") != "loaded":
                out.append(Difference(h, (phase,), "unit", unit,
                                      f"not installed ({st.get('load') or 'unknown'})"))
                continue
            if st.get("active") != "active":
                out.append(Difference(h, (phase,), "unit", unit,
                                      f"{st.get('active')}, want active"))
            if st.get("enabled") != "enabled":
                out.append(Difference(h, (phase,), "unit", unit,
                                      f"{st.get('enabled') or 'not enabled'}, want enabled"))
    for svc in report.get("pending", []):
        if svc in want.units:
            out.append(Difference(h, (want.units[svc],), "restart", svc,
                                  "a restart is pending"))
    out += [Difference(h, ("os",), "sysctl", key, "live value differs from the file")
            for key in report.get("sysctl", []) if want.sysctl_file]
    out += [Difference(h, ("os",), "module", m, "neither loaded nor built in")
            for m in report.get("modules", [])]
    bad_debs = set(report.get("debs", []))
    out += [Difference(h, (phase,), "package", pkg, f"not installed at {ver}")
            for pkg, ver, phase in want.debs if pkg in bad_debs]
    out += [Difference(h, ("addons",), "addon", name,
                       "not applied (its objects are missing or the file changed)")
            for name in report.get("addons", []) if want.addons]
    if want.cni_check and not report.get("cni_loaded", True):
        out.append(Difference(h, ("node",), "cni", "containerd",
                              "has not loaded the CNI configuration"))
    out += [Difference(h, (phase,), "unknown", "desired state", why)
            for phase, why in want.unknown]
    return out


def survey(wants: Mapping[str, HostWant], plan: Plan, runner: SshRunner,
           workers: int = 32) -> dict[str, HostSurvey]:
    """Probe every host of ``wants`` at once; a host that cannot be probed differs in all its
    phases (``error`` says why)."""

    def one(name: str) -> HostSurvey:
        want = wants[name]
        started = time.monotonic()
        command, stdin = probe_command(want)
        every = [Difference(name, (p,), "unknown", "host", "could not be surveyed")
                 for p in want.phases]
        try:
            result = runner.run(plan.host(name), command, PROBE_TIMEOUT, True, stdin)
        except SshUnavailable as exc:
            return HostSurvey(name, None, every, exc, time.monotonic() - started)
        if result.exit_status != 0:
            why = (result.stderr.strip().splitlines() or [f"exit {result.exit_status}"])[-1]
            return HostSurvey(name, None, every, f"probe failed: {why}",
                              time.monotonic() - started)
        try:
            report = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return HostSurvey(name, None, every, "probe printed no report",
                              time.monotonic() - started)
        return HostSurvey(name, report, compare(want, report), None,
                          time.monotonic() - started)

    names = list(wants)
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(names))) as pool:
        return dict(zip(names, pool.map(one, names), strict=True))


def targets(plan: Plan, surveys: Mapping[str, HostSurvey]) -> dict[str, list[str]]:
    """Phase -> the hosts it must run on (plan order); phases with none are absent.

    Host-local phases run on the hosts that differ in them; a cluster-wide phase
    (``CLUSTER_WIDE``) on all its hosts once any differs. ``preflight`` checks every host
    that anything will run on, except the cluster's hosts whose only difference is the pod
    routes table (another node joined or left): a joining node is not held up by a
    preflight round on every node of the cluster.
    """
    hosts_of = {p.name: p.hosts for p in plan.phases}
    wanted: dict[str, set[str]] = {}
    for s in surveys.values():
        for d in s.differences:
            for phase in d.phases:
                wanted.setdefault(phase, set()).add(d.host)
    for phase in CLUSTER_WIDE & wanted.keys():
        wanted[phase] = set(hosts_of.get(phase, ()))
    touched = set().union(*wanted.values()) if wanted else set()
    if touched and "preflight" in hosts_of:
        routes_only = {name for name, s in surveys.items() if _routes_only(s)}
        wanted["preflight"] = (touched - routes_only) & set(hosts_of["preflight"])
    return {p: [h for h in hosts_of.get(p, ()) if h in hosts]
            for p, hosts in wanted.items() if hosts}


# Node-phase files that only the pod network reads: a host whose node-phase differences
# are all among these needs the CNI's part of the phase, not the kubelet's or kube-proxy's.
# The bridge CNI's routes table changes on every node when a node joins or leaves.
NETWORK_ONLY_FILES = frozenset({ROUTES})


def _network_file(d: Difference) -> bool:
    return d.kind == "file" and d.target in NETWORK_ONLY_FILES


def _routes_only(s: HostSurvey) -> bool:
    """Surveyed, and every difference is one of ``NETWORK_ONLY_FILES``."""
    return s.error is None and bool(s.differences) and all(map(_network_file, s.differences))


def added_only(plan: Plan, surveys: Mapping[str, HostSurvey]) -> list[str] | None:
    """The nodes a run adds (surveyed, no cluster identity yet), when adding them is all it
    changes: every other host was surveyed and differs in nothing, or in the pod routes
    table alone. None otherwise (nothing added, every node added as in a new cluster, a
    host not surveyed, anything else differing). verify then probes the pod network from
    the added nodes only."""
    nodes = {h.name for h in plan.nodes}
    added = []
    for name, s in sorted(surveys.items()):
        if s.error is not None or s.report is None:
            return None
        if not s.identity and name in nodes:
            added.append(name)
        elif s.differences and not _routes_only(s):
            return None
    return added if added and len(added) < len(nodes) else None


def network_only(surveys: Mapping[str, HostSurvey]) -> list[str]:
    """The hosts that differ in the node phase by ``NETWORK_ONLY_FILES`` alone (sorted):
    the node playbook leaves their kubelet and kube-proxy alone (``node_network_only``), so
    a node joining costs the others one small play. A host that could not be surveyed, or
    differs in anything else of the node phase, is never one."""
    out = []
    for name, s in surveys.items():
        if s.error is not None:
            continue
        node = [d for d in s.differences if "node" in d.phases]
        if node and all(map(_network_file, node)):
            out.append(name)
    return sorted(out)
