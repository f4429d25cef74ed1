"""The upgrade policy: which Kubernetes release the hosts run, and whether the spec's may follow.

Scope: reading the installed release from the survey (each host's ``kube-apiserver`` and
``kubelet --version``, ``provisioner.converge.probe``) and checking the spec's
``kubernetesVersion`` against it, before any host is changed: one minor at a time, never
down (the upstream version-skew policy: kube-apiserver instances differ by at most one minor,
and a kubelet is never newer than the apiserver). A refused change names the hosts, what they
run, and the path to take through the supported releases. An accepted upgrade is described
step by step for ``plan --diff`` and the run's notes; the rollout itself is the ordinary
pipeline (etcd member by member, control-plane nodes one at a time, apiserver first).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from provisioner.converge.survey import HostSurvey
from provisioner.plan.model import Plan
from provisioner.versions import manifest

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


class UpgradeRefused(ValueError):
    """The spec's version cannot be reached from what the hosts run; nothing was changed."""


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``(1, 37, 2)`` from "1.37.2" or "v1.37.2-rc.0"; None when it names no release."""
    m = _VERSION.match(text.removeprefix("v"))
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def _minor(v: tuple[int, int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def _show(v: tuple[int, int, int]) -> str:
    return ".".join(map(str, v))


@dataclass(frozen=True)
class Upgrade:
    """An accepted change of release: the hosts that run an older one, and the target."""

    target: str
    behind: dict[str, dict[str, str]]  # host -> program -> installed version (older only)

    @property
    def sources(self) -> list[str]:
        """The installed releases being left, oldest first."""
        found = {v for progs in self.behind.values() for v in progs.values()}
        return sorted(found, key=lambda v: parse_version(v) or (0, 0, 0))

    def drained(self, plan: Plan) -> list[str]:
        """The nodes to drain before their kubelet changes: those running an older one, in
        plan order; none in a one-node cluster (its pods have nowhere else to go, and a
        kubelet restart leaves them running)."""
        if len(plan.nodes) < 2:
            return []
        return [h.name for h in plan.nodes if "kubelet" in self.behind.get(h.name, {})]

    def node_vars(self, plan: Plan, max_unavailable: int, drain_timeout: int
                  ) -> dict[str, object]:
        """The node phase's extra variables: which nodes to drain, how many at a time."""
        return {"kubelet_drain_hosts": self.drained(plan), "node_batch": max_unavailable,
                "kubelet_drain_timeout": drain_timeout}

    def steps(self, plan: Plan, max_unavailable: int = 1) -> list[str]:
        """The rollout, step by step, as ``plan --diff`` and the run's notes show it."""
        cps = [h.name for h in plan.control_plane]
        workers = [h.name for h in plan.nodes if h.name not in cps]
        etcd_from = {_etcd_pin(v) for v in self.sources} - {""}
        etcd_to = plan.release.component("etcd")
        lines = [f"upgrade {', '.join(self.sources)} -> {self.target} "
                 f"({len(self.behind)} host(s) behind):",
                 "  1. preflight: every host answers and runs a release this one may follow; "
                 "an etcd snapshot is taken into the state directory"]
        if etcd_from - {etcd_to}:
            members = ", ".join(h.name for h in plan.etcd)
            lines.append(f"  2. etcd {', '.join(sorted(etcd_from))} -> {etcd_to}, one member "
                         f"at a time, each healthy before the next: {members}")
        else:
            lines.append(f"  2. etcd stays at {etcd_to}")
        lines.append("  3. control plane, one node at a time (kube-apiserver, ready again, "
                     f"then controller-manager and scheduler): {', '.join(cps)}")
        drained = self.drained(plan)
        if drained:
            lines.append(f"  4. nodes, {max_unavailable} at a time: cordon, drain "
                         "(PodDisruptionBudgets respected), kubelet and kube-proxy, Ready, "
                         f"uncordon: {', '.join(drained)}")
        else:
            lines.append("  4. kubelet and kube-proxy on every node"
                         + (f" (workers: {', '.join(workers)})" if workers else "")
                         + "; running pods stay where they are")
        lines.append("  5. addons of the new release, then verify")
        return lines


def _etcd_pin(version: str) -> str:
    """The etcd the manifest pins for ``version``'s minor ("" for a release it does not list)."""
    v = parse_version(version)
    release = manifest.minors().get(_minor(v)) if v else None
    return release.component("etcd") if release else ""


def installed(surveys: Mapping[str, HostSurvey]) -> dict[str, dict[str, str]]:
    """host -> program -> version, for the hosts that answered and hold a Kubernetes program."""
    return {h: s.versions for h, s in sorted(surveys.items()) if s.versions}


def _path(start: tuple[int, int, int], target: tuple[int, int, int]) -> list[str]:
    """The supported releases to pass through, one per minor, ending with the target."""
    minors = manifest.minors()
    steps = []
    for minor in range(start[1] + 1, target[1]):
        name = f"{target[0]}.{minor}"
        steps.append(minors[name].default if name in minors else f"a {name} release")
    return [*steps, _show(target)]


def check(plan: Plan, surveys: Mapping[str, HostSurvey]) -> Upgrade | None:
    """The upgrade the spec asks for (None when every host already runs its release, or holds
    none yet); ``UpgradeRefused`` when it would skip a minor or go down."""
    target = parse_version(plan.version)
    if target is None:  # validate refuses such a version; nothing to compare
        return None
    found = installed(surveys)
    newer: list[str] = []
    skips: list[tuple[str, tuple[int, int, int]]] = []
    behind: dict[str, dict[str, str]] = {}
    for host, programs in found.items():
        for program, text in sorted(programs.items()):
            v = parse_version(text)
            if v is None:
                continue
            if v > target:
                newer.append(f"{host} runs {program} {text}")
            elif v[0] != target[0] or target[1] - v[1] > 1:
                skips.append((f"{host} runs {program} {text}", v))
            elif v < target:
                behind.setdefault(host, {})[program] = text
    if newer:
        highest = max((parse_version(t) or (0, 0, 0)) for p in found.values() for t in p.values())
        raise UpgradeRefused(
            f"spec.kubernetesVersion {plan.version} is older than what the cluster runs; "
            "going down a version is not supported (etcd and the API objects may already be "
            "in the newer release's form); nothing was changed:\n"
            + "\n".join(f"  {n}" for n in newer) + "\n"
            f"Fix: set spec.kubernetesVersion to {_show(highest)} (or a newer supported "
            f"release: `provisioner versions`); to go back, restore an etcd snapshot taken "
            "before the upgrade onto a cluster provisioned at the old release.")
    if skips:
        oldest = min(v for _, v in skips)
        path = _path(oldest, target)
        raise UpgradeRefused(
            f"spec.kubernetesVersion {plan.version} skips a minor release: Kubernetes "
            f"upgrades one minor at a time ({_minor(oldest)} -> {oldest[0]}.{oldest[1] + 1}, "
            f"never {_minor(oldest)} -> {_minor(target)}); nothing was "
            "changed:\n" + "\n".join(f"  {what}" for what, _ in skips) + "\n"
            f"Fix: upgrade through {' -> '.join(path)}: set spec.kubernetesVersion to "
            f"{path[0]}, provision, then to the next.")
    return Upgrade(plan.version, behind) if behind else None


_VERSION_LINE = re.compile(
    r"^(?P<head>[ \t]+kubernetesVersion:[ \t]*)(?P<q>[\"']?)(?P<v>[^\"'\s#]+)(?P=q)"
    r"(?P<tail>[ \t]*(?:#.*)?)$", re.MULTILINE)


_SPEC_LINE = re.compile(r"^spec:[ \t]*(?:#.*)?\n(?P<indent>[ \t]+)", re.MULTILINE)


def retarget(text: str, version: str) -> str:
    """The spec's text with ``spec.kubernetesVersion`` set to ``version``, every other byte
    (comments, order, quoting) kept; a spec that leaves it out (the newest release by
    default) gets it as the first key under ``spec:``. ``ValueError`` naming the fix when
    the spec says it other than on one line of its own (a flow mapping, an anchor), or more
    than once."""
    found = list(_VERSION_LINE.finditer(text))
    if not found and "kubernetesVersion" not in text and (
            spec := _SPEC_LINE.search(text)) is not None:
        at = spec.start("indent")
        return text[:at] + f'{spec["indent"]}kubernetesVersion: "{version}"\n' + text[at:]
    if len(found) != 1:
        raise ValueError(
            "the spec must name spec.kubernetesVersion exactly once, on a line of its own "
            f"(found {len(found)}); set it by hand, then run `provisioner provision`")
    m = found[0]
    q = m["q"] or '"'
    return text[:m.start()] + f"{m['head']}{q}{version}{q}{m['tail']}" + text[m.end():]


def path_to(current: str, target: str) -> list[str]:
    """The releases to pass through from ``current`` to ``target``, one per minor, ending
    with the target: ``[target]`` for a step of one minor (or a patch); ``ValueError``
    naming the fix for a target older than ``current``."""
    now, to = parse_version(current), parse_version(target)
    if now is None or to is None:
        raise ValueError(f"not a release: {current if now is None else target}")
    if to < now:
        raise ValueError(
            f"{target} is older than {current}, which the spec names; going down a version "
            "is not supported (etcd and the API objects may already be in the newer "
            "release's form). Fix: to go back, restore an etcd snapshot taken before the "
            "upgrade onto a cluster provisioned at the old release.")
    if to[0] != now[0]:
        raise ValueError(f"{target} is another major release than {current}")
    return _path(now, to)
