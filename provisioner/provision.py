"""The provision flow: spec -> plan -> machines -> render -> artifacts -> phase playbooks.

Scope: ``provision`` (a plain function the ``provision`` command calls) and the run summary it
writes. It loads and plans the spec, selects phases (``--only``/``--skip``), brings nspawn
or vagrant machines up, prepares PKI and renders every host's files into ``<cluster>/rendered/``,
fetches artifacts, then runs each selected top-level phase's playbook on that phase's hosts,
in order, stopping at the first failed phase. Each run gets
``<cluster>/runs/<UTC timestamp>-<id>/`` with ``events.jsonl`` and ``summary.json``.
One provision per cluster at a time (a lock file), so two runs never interleave on a host.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shlex
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioner.artifacts import artifacts_extravars, fetch
from provisioner.converge import HostSurvey, HostWant, added_only, network_only, survey_json
from provisioner.converge import targets as phase_hosts
from provisioner.execute import (
    EVENTS_FILE,
    ExecuteError,
    HostResult,
    PhaseResult,
    ProgressSink,
    SerializedProgress,
    TaskTiming,
    link_project,
    run_playbook,
)
from provisioner.execute.runner import rendered_envvars
from provisioner.membership import DEFAULT_DRAIN_TIMEOUT
from provisioner.plan import (
    Phase,
    PhaseSelectionError,
    Plan,
    build_plan,
    phase_after,
    select_phases,
)
from provisioner.providers.base import ProviderError
from provisioner.providers.connections import Connection, read_connections
from provisioner.providers.reach import default_key, reach, trusted_files
from provisioner.providers.ssh import known_hosts_args
from provisioner.render.tree import RenderedTree
from provisioner.spec import SpecError, load_file
from provisioner.state import ENV_ROOT, cluster_dir, private_dir, state_root, write_private
from provisioner.verify import CheckResult, summary_line, to_json, verify
from provisioner.verify.ssh import ParamikoRunner, SshRunner

if TYPE_CHECKING:
    from provisioner.membership import Applied
    from provisioner.upgrade import Upgrade

SUMMARY_FILE = "summary.json"
SURVEY_FILE = "survey.json"
# Providers that make their machines (``up`` before the phases, pinned host keys).
MADE_MACHINES = ("nspawn", "vagrant")
# Phases whose playbook belongs to a later issue: skipped with this reason, not failed.
VERIFY_FILE = "verify.json"


class ProvisionError(RuntimeError):
    """Provisioning could not start or a step before the playbooks failed."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Failure:
    """Where a provision run stopped."""

    phase: str
    host: str | None
    task: str | None
    message: str

    def __str__(self) -> str:
        where = f"phase {self.phase}"
        if self.host:
            where += f", host {self.host}"
        if self.task:
            where += f", task {self.task!r}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class ProvisionResult:
    """What one provision run did."""

    cluster: str
    run_id: str
    run_dir: Path
    selected: tuple[str, ...]
    phases: tuple[PhaseResult, ...]
    skipped: tuple[tuple[str, str], ...]
    seconds: float
    failure: Failure | None = None
    notes: tuple[str, ...] = field(default=())
    verify: tuple[CheckResult, ...] = field(default=())
    admin_kubeconfig: Path | None = None
    survey: dict[str, int] = field(default_factory=dict)
    """Host -> how many differences the survey found before the phases (0: converged)."""
    full: bool = False
    steps: dict[str, float] = field(default_factory=dict)
    """Seconds of each step: load, machines, render, artifacts, survey, phases, verify."""

    @property
    def succeeded(self) -> bool:
        """Every phase that ran succeeded."""
        return self.failure is None

    @property
    def changed(self) -> int:
        """Changed tasks over all phases and hosts."""
        return sum(p.changed for p in self.phases)

    def host_totals(self) -> dict[str, HostResult]:
        """Per-host counts summed over the phases that ran."""
        out: dict[str, HostResult] = {}
        for p in self.phases:
            for name, h in p.hosts.items():
                t = out.get(name, HostResult(name))
                out[name] = HostResult(
                    name, t.ok + h.ok, t.changed + h.changed, t.failed + h.failed,
                    t.unreachable + h.unreachable, t.skipped + h.skipped,
                    (*t.failures, *h.failures))
        return dict(sorted(out.items()))

    def slowest(self, n: int = 10) -> list[TaskTiming]:
        """The slowest task results of the whole run."""
        return sorted((t for p in self.phases for t in p.slowest), key=lambda t: -t.seconds)[:n]

    def to_json(self) -> dict[str, Any]:
        """``summary.json``."""
        return {
            "cluster": self.cluster,
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "succeeded": self.succeeded,
            "seconds": round(self.seconds, 3),
            "changed": self.changed,
            "selected": list(self.selected),
            "skipped": [{"phase": p, "reason": r} for p, r in self.skipped],
            "failure": None if self.failure is None else {
                "phase": self.failure.phase, "host": self.failure.host,
                "task": self.failure.task, "message": self.failure.message},
            "hosts": {n: h.to_json() for n, h in self.host_totals().items()},
            "slowest": [t._asdict() for t in self.slowest()],
            "phases": [p.to_json() for p in self.phases],
            "notes": list(self.notes),
            "verify": summary_line(list(self.verify)) if self.verify else None,
            "admin_kubeconfig": str(self.admin_kubeconfig) if self.admin_kubeconfig else None,
            "survey": dict(self.survey),
            "full": self.full,
            "steps": dict(self.steps),
        }


def new_run_id() -> str:
    """``<UTC timestamp>-<short random id>``: sorts by time, unique across parallel runs."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@contextmanager
def cluster_lock(sdir: Path, held: bool = False) -> Iterator[None]:
    """Hold the cluster's provision lock, or fail at once if another run holds it; ``held``:
    the caller is a step of a run that holds it already (provision's pre-upgrade snapshot)."""
    if held:
        yield
        return
    with (sdir / "provision.lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProvisionError(f"another provision of this cluster is running "
                                 f"(lock {sdir / 'provision.lock'})") from None
        yield


def phase_targets(top: Phase, selected: tuple[Phase, ...]) -> tuple[list[str], list[str]] | None:
    """(hosts, selected names) of a top-level phase, or None if nothing of it is selected.

    A selected phase runs on all its hosts; a phase selected only through sub-phases
    (``--only runtime/containerd``) runs on those sub-phases' hosts.
    """
    names = {p.name for p in selected}
    if top.name in names:
        return list(top.hosts), [p.name for p in top.walk() if p.name in names]
    children = [c for c in top.walk()[1:] if c.name in names]
    if not children:
        return None
    hosts = [h for h in top.hosts if any(h in c.hosts for c in children)]
    return hosts, [c.name for c in children]


def pinned_ssh_args(rendered: str, known_hosts: Path | tuple[Path, ...]) -> str:
    """The rendered ssh arguments with host key checking against exactly ``known_hosts``
    (ssh takes the first value of an option, and Ansible puts these first, so any other
    ``UserKnownHostsFile``/``StrictHostKeyChecking`` must go)."""
    files = known_hosts if isinstance(known_hosts, tuple) else (known_hosts,)
    words = rendered.split()
    kept: list[str] = []
    i = 0
    while i < len(words):
        if words[i] == "-o" and i + 1 < len(words) and words[i + 1].split("=")[0] in (
                "UserKnownHostsFile", "StrictHostKeyChecking"):
            i += 2
            continue
        kept.append(words[i])
        i += 1
    return " ".join([*kept, known_hosts_args(files)])


def artifacts_for(plan: Plan, selected: tuple[Phase, ...]) -> list[str]:
    """Artifacts the selected phases install, in the plan's order: ``--only os,runtime``
    must not need (or download) the Kubernetes server binaries."""
    from provisioner.components import ALL

    names = {p.name for p in selected}
    wanted: set[str] = set()
    for c in ALL:
        if c.phase not in names and f"{c.phase}/{c.name}" not in names:
            continue
        if any(c.name in h.parts for h in plan.hosts):
            wanted.update(c.artifacts)
            if c.name == "containerd":
                wanted.add(plan.cluster.spec.container_runtime.oci_runtime)
    in_order = dict.fromkeys(a for h in plan.hosts for a in h.artifacts)
    return [a for a in in_order if a in wanted]


def _artifact_extravars(plan: Plan, selected: tuple[Phase, ...], spec_dir: Path
                        ) -> dict[str, Any]:
    names = artifacts_for(plan, selected)
    if not names:
        return {"provisioner_artifacts": {}}
    try:
        fetched = fetch(plan, state_root() / "cache" / "artifacts", spec_dir, names=names)
    except (OSError, ValueError) as exc:  # ArtifactError is a ValueError
        raise ProvisionError(f"artifacts: {exc}") from None
    return dict(artifacts_extravars(fetched))


def render_state(plan: Plan, sdir: Path, spec_dir: Path,
                 connections: Mapping[str, Connection], out: Path | None = None
                 ) -> tuple[Path, RenderedTree]:
    """The cluster's material prepared (PKI, keys, the admin kubeconfigs) and its tree
    rendered into ``out`` (``<state>/rendered``); ``ProvisionError`` when the material
    cannot be."""
    from provisioner.render.material import MaterialError, prepare, write_admin_kubeconfig
    from provisioner.render.tree import render, write_tree

    try:
        material, _ = prepare(plan, sdir, spec_dir)
        tree = render(plan, material, default_key(plan, sdir), connections)
        write_admin_kubeconfig(plan, material, sdir)
    except MaterialError as exc:
        raise ProvisionError(str(exc)) from None
    out = out or sdir / "rendered"
    write_tree(tree, out)
    return out, tree


def _survey(plan: Plan, sdir: Path, tree: RenderedTree, selected: tuple[Phase, ...],
            artifacts: dict[str, Any], runner: SshRunner
            ) -> tuple[dict[str, HostWant], dict[str, HostSurvey]]:
    """One parallel round trip to every host: what it holds against what the selected
    phases want (``provisioner.converge``), and its cluster identity. Untrusted host keys are
    refused here, before any phase runs."""
    from provisioner.converge import desired, survey
    from provisioner.execute.runner import PLAYBOOKS

    names = [n for p in selected for n in [p.name, *(c.name for c in p.walk()[1:])]]
    wants = desired(plan, tree, names, artifacts, sdir / "cache" / "unpacked", PLAYBOOKS)
    # Hosts no selected phase touches are still asked for their identity.
    wants = {h.name: wants.get(h.name) or HostWant(h.name) for h in plan.hosts}
    found = survey(wants, plan, runner)
    _refuse_untrusted(found)
    return wants, found


def _refuse_untrusted(found: Mapping[str, HostSurvey]) -> None:
    from provisioner.verify.ssh import SshUnavailable

    key_problems = [s.error for s in found.values() if isinstance(s.error, SshUnavailable)
                    and s.error.kind in ("hostkey-unknown", "hostkey-mismatch")]
    if key_problems:
        raise ProvisionError(
            "SSH host keys are not trusted; nothing was changed:\n" + "\n".join(
                f"  {e.host}: {e.detail}\n    fix: {e.hint}"
                for e in sorted(key_problems, key=lambda e: e.host)))


def _release_first(plan: Plan, applied: Applied | None, runner: SshRunner) -> None:
    """When the spec names another release than the last provision converged (or there is
    no record): ask every host which release it runs, and refuse a skipped minor or a
    downgrade before the new release's artifacts are even fetched (an unsupported path
    must not fail on a missing artifact instead). One read-only round trip."""
    from provisioner.converge import survey

    if applied is not None and applied.version == plan.version:
        return
    found = survey({h.name: HostWant(h.name) for h in plan.hosts}, plan, runner)
    _refuse_untrusted(found)
    _check_upgrade(plan, found)


@dataclass(frozen=True)
class PlanDiff:
    """What ``plan --diff`` found: the report and how many hosts would change."""

    text: str
    json: str
    changed_hosts: int


def plan_and_select(spec_file: Path, only: list[str] | None, skip: list[str] | None,
                    state_dir: Path | None) -> tuple[Plan, tuple[Phase, ...]]:
    """The spec's plan and the selected phases (``ProvisionError`` on a bad spec, exit 2 on a
    bad selection); ``state_dir`` is exported for the providers and SSH helpers."""
    if state_dir is not None:
        # Providers and the SSH helpers find the state root through the environment.
        os.environ[ENV_ROOT] = str(state_dir)
    try:
        plan = build_plan(load_file(spec_file, require_files=True))
    except SpecError as exc:
        raise ProvisionError(str(exc)) from None
    try:
        return plan, select_phases(plan, only, skip)
    except PhaseSelectionError as exc:
        raise ProvisionError(str(exc), exit_code=2) from None


def scratch_render(plan: Plan, sdir: Path, spec_dir: Path,
                   connections: Mapping[str, Connection]) -> RenderedTree:
    """``plan`` rendered from a temporary copy of the state's PKI and secrets, so nothing in
    the state directory changes (a certificate the plan would reissue is reissued in the
    copy only): for ``plan --diff``, and for rendering the cluster as last provisioned."""
    import shutil
    import tempfile

    from provisioner.render.material import MaterialError, prepare
    from provisioner.render.tree import render

    with tempfile.TemporaryDirectory(prefix="provisioner-scratch-") as tmp:
        copy = Path(tmp) / "state"
        private_dir(copy)
        for sub in ("pki", "secrets"):
            if (sdir / sub).is_dir():
                shutil.copytree(sdir / sub, copy / sub)
        try:
            material, _ = prepare(plan, copy, spec_dir)
            return render(plan, material, default_key(plan, sdir), connections)
        except MaterialError as exc:
            raise ProvisionError(str(exc)) from None


def plan_diff(spec_file: Path, only: list[str] | None, skip: list[str] | None,
              state_dir: Path | None) -> PlanDiff:
    """Render the spec from the cluster's state and compare every host with it, changing
    nothing: the PKI is prepared in a temporary copy of the state (a certificate that a
    provision would reissue shows as a change), and hosts are only read."""
    from provisioner.converge.diff import diff_json, diff_text
    from provisioner.membership import read_applied

    plan, selected = plan_and_select(spec_file, only, skip, state_dir)
    spec_dir = spec_file.resolve().parent
    sdir = (state_dir if state_dir is not None else state_root()) / "clusters" / plan.name
    if not (sdir / "pki" / "ca.crt").is_file():
        return PlanDiff(
            f"cluster {plan.name} has no state in {sdir}: nothing was provisioned from this "
            f"state directory, so a provision would install everything on all "
            f"{len(plan.hosts)} host(s)\n", json.dumps({"changed_hosts": len(plan.hosts),
                                                        "hosts": {}, "state": None}) + "\n",
            len(plan.hosts))
    connections = read_connections(sdir)
    tree = scratch_render(plan, sdir, spec_dir, connections)
    runner = ParamikoRunner(reach(plan, sdir, connections), 10.0)
    try:
        _release_first(plan, read_applied(sdir), runner)
    except ProvisionError:
        runner.close()
        raise
    artifacts = _artifact_extravars(plan, selected, spec_dir)["provisioner_artifacts"]
    try:
        wants, surveys = _survey(plan, sdir, tree, selected, artifacts, runner)

        def fetch_text(host: str, path: str) -> str | None:
            got = runner.run(plan.host(host), f"cat -- {shlex.quote(path)}", 30.0, True)
            return got.stdout if got.exit_status == 0 else None

        text = diff_text(wants, surveys, fetch_text)
    finally:
        runner.close()
    lines, summary = cluster_changes(plan, sdir, surveys)
    changed = sum(1 for s in surveys.values() if s.differences) + len(summary["leaving"])
    data = json.loads(diff_json(wants, surveys))
    data["cluster"] = summary
    data["changed_hosts"] = changed
    return PlanDiff("".join(f"{line}\n" for line in lines) + text,
                    json.dumps(data, indent=1) + "\n", changed)


def cluster_changes(plan: Plan, sdir: Path, surveys: Mapping[str, HostSurvey]
                    ) -> tuple[list[str], dict[str, Any]]:
    """What ``plan --diff`` says about the cluster as a whole before the hosts' details:
    hosts joining (holding no cluster identity yet), hosts that left the spec (refused
    unless ``--prune``, which would drain and reset them), and the release change, step by
    step, or why it is refused."""
    from provisioner.membership import left_spec, read_applied
    from provisioner.upgrade import UpgradeRefused, check

    joining = [h for h, s in sorted(surveys.items()) if s.report is not None and not s.identity]
    lines: list[str] = []
    upgrade: dict[str, Any] | None = None
    applied = read_applied(sdir)
    gone = left_spec(plan, applied)
    if joining:
        lines.append(f"joining: {', '.join(joining)} (new hosts: every selected phase runs "
                     "there; the other hosts change only where the diff below says)")
        members = [h for h in joining if plan.host(h).machine.is_etcd]
        if members and len(members) < len(plan.etcd):
            lines.append(f"etcd: {', '.join(members)} join the running cluster one at a "
                         "time, each added as a learner while every member is healthy, "
                         "started, then promoted once in sync; no running member restarts")
    if gone:
        lines.append(f"leaving: {', '.join(gone)} (no longer in the spec): provision refuses "
                     "until they are removed; with --prune it first cordons and drains each, "
                     "deletes its Node and resets the host")
        recorded = applied.hosts if applied is not None else {}
        members = [h for h in gone if "etcd" in recorded.get(h, [])]
        if members:
            lines.append(f"etcd: with --prune, {', '.join(members)} stop serving behind the "
                         "load balancers, then leave etcd one member at a time, each only "
                         "while every member that stays is healthy; their data is set aside")
    try:
        up = check(plan, surveys)
    except UpgradeRefused as exc:
        lines.append(f"refused: {exc}")
        upgrade = {"to": plan.version, "refused": str(exc)}
    else:
        if up is not None:
            lines += up.steps(plan)
            upgrade = {"to": plan.version, "from": up.sources, "hosts": up.behind}
    if lines:
        lines.append("")
    return lines, {"joining": joining, "leaving": gone, "upgrade": upgrade}


def _check_identity(plan: Plan, sdir: Path, rendered: Path,
                    surveys: dict[str, HostSurvey]) -> None:
    """Refuse, before any phase runs, to push this state directory's CAs and keys onto hosts
    that hold another cluster identity (``provisioner.pki.identity``), as the survey read
    it. Hosts that did not answer are left to the phases, which report them unreachable."""
    from provisioner.pki.identity import IDENTITY_PATH, differences, parse_identity

    first = plan.hosts[0].name
    want = parse_identity((rendered / "hosts" / first / IDENTITY_PATH.lstrip("/")).read_text())
    found = {h: have for h, s in surveys.items() if (have := parse_identity(s.identity))}
    clashes = {h: d for h, have in found.items() if (d := differences(have, want))}
    if not clashes:
        return
    lines = [f"  {h}: holds another {', '.join(d)} (host {found[h][d[0]][:23]}..., this "
             f"state directory {want[d[0]][:23]}...)" for h, d in sorted(clashes.items())]
    raise ProvisionError(
        f"cluster {plan.name}: {len(clashes)} host(s) already belong to a cluster made from "
        f"another state directory; nothing was changed:\n" + "\n".join(lines) + "\n"
        f"Fix: provision with the state directory that made this cluster (--state-dir or "
        f"${ENV_ROOT}; this run used {sdir.parent.parent}: a sudo that changes $HOME changes "
        "it). To replace the cluster's CAs and keys on purpose (every component and client "
        "gets new certificates; Secrets encrypted with the old key become unreadable), run "
        "provision again with --replace-identity.")


def _check_upgrade(plan: Plan, surveys: dict[str, HostSurvey]) -> Upgrade | None:
    """The upgrade the spec asks for (``provisioner.upgrade``), or ``ProvisionError`` when
    the hosts cannot go to its release; nothing was changed then."""
    from provisioner.upgrade import UpgradeRefused, check

    try:
        return check(plan, surveys)
    except UpgradeRefused as exc:
        raise ProvisionError(str(exc)) from None


def _upgrade_preconditions(plan: Plan, selected: tuple[Phase, ...],
                           surveys: Mapping[str, HostSurvey]) -> None:
    """An upgrade runs whole: every host answered (one left out could stay two minors
    behind), and etcd, control-plane and node are all selected (``--only node`` alone would
    put kubelets ahead of the apiservers). ``ProvisionError`` before any change otherwise."""
    missing = [h for h, s in sorted(surveys.items()) if s.report is None]
    if missing:
        raise ProvisionError(
            f"upgrade to {plan.version}: {', '.join(missing)} did not answer the survey, so "
            "its release is unknown; nothing was changed. Fix: make every host reachable "
            "(`provisioner verify FILE --only ssh`), then provision again.")
    names = {n for p in selected for n in [p.name, *(c.name for c in p.walk()[1:])]}
    needed = [p for p in ("etcd", "control-plane", "node")
              if p in {ph.name for ph in plan.phases} and p not in names]
    if needed:
        raise ProvisionError(
            f"upgrade to {plan.version} needs the {', '.join(needed)} phase(s), which "
            "--only/--skip left out: the control plane must be upgraded before the "
            "kubelets; nothing was changed. Fix: provision without --only/--skip.")


def _pre_upgrade_snapshot(spec_file: Path, state_dir: Path | None,
                          progress: ProgressSink) -> str:
    """An etcd snapshot into the state directory before an upgrade changes anything."""
    from provisioner.backup import BackupError, etcd_backup

    try:
        backup, _, seconds = etcd_backup(spec_file, state_dir, None, None, progress, held=True)
    except BackupError as exc:
        raise ProvisionError(f"upgrade preflight: {exc}; nothing was upgraded") from None
    return f"pre-upgrade etcd snapshot: {backup.path} ({seconds:.1f}s)"


def _removal_failure(result: PhaseResult, names: list[str]) -> str:
    return (f"prune of {', '.join(names)} stopped: {result.why()}. Nothing else was changed; "
            "provision again with --prune to go on")


def _report_survey(surveys: dict[str, HostSurvey], targets: dict[str, list[str]] | None,
                   seconds: float, progress: ProgressSink) -> None:
    differing = {h: s for h, s in surveys.items() if s.differences}
    progress.note(f"survey: {len(surveys)} hosts in {seconds:.1f}s, "
                  f"{len(surveys) - len(differing)} converged"
                  + (f", {len(differing)} differ" if differing else ""))
    for name, s in sorted(differing.items()):
        first = s.differences[0] if s.error is None else None
        why = str(s.error) if s.error is not None else str(first)
        more = len(s.differences) - 1 if s.error is None else 0
        progress.note(f"  {name}: {why}" + (f" (+{more} more)" if more > 0 else ""))
    if targets is None:
        progress.note("--full: every selected phase runs on all its hosts")


def _record_host_keys(plan: Plan, sdir: Path, progress: ProgressSink) -> None:
    """``--trust-on-first-use``: record (and print) the host keys of static hosts that no
    trusted file knows; a known host presenting another key is refused."""
    from provisioner.verify.ssh import SshUnavailable, trust_on_first_use

    if plan.cluster.spec.provider.type in MADE_MACHINES:
        progress.note("--trust-on-first-use: the provider pins its machines' host keys "
                      "itself; nothing to record")
        return
    try:
        recorded = trust_on_first_use(plan, sdir)
    except SshUnavailable as exc:
        raise ProvisionError(f"{exc.host}: {exc.detail}; fix: {exc.hint}; nothing was "
                             "changed") from None
    for line in recorded:
        progress.note(f"host key {line}")
    if not recorded:
        progress.note("--trust-on-first-use: every host key was already trusted")


def _machines_up(plan: Plan, progress: ProgressSink) -> None:
    from provisioner.providers.registry import provider_for

    try:
        result = provider_for(plan.cluster, progress.note).up()
    except ProviderError as exc:
        raise ProvisionError(f"machines: {exc}") from None
    for warning in result.warnings:
        progress.note(f"warning: {warning}")


def provision(
    spec_file: Path,
    only: list[str] | None,
    skip: list[str] | None,
    state_dir: Path | None,
    machines: bool,
    progress: ProgressSink,
    replace_identity: bool = False,
    trust_on_first_use: bool = False,
    full: bool = False,
    parallel: bool = True,
    prune: bool = False,
    drain_timeout: int = DEFAULT_DRAIN_TIMEOUT,
    max_unavailable: int = 1,
) -> ProvisionResult:
    """Converge the hosts of ``spec_file``: the selected phases, in order, stopping at the
    first failure. ``machines`` brings the provider's machines up first (nspawn, vagrant).

    Raises ``ProvisionError`` when the run cannot start (bad spec or selection, machines,
    PKI, artifacts, lock, or hosts that hold another cluster's identity unless
    ``replace_identity``); a failed phase is reported in the result, not raised.

    Before any phase, one survey compares every host with what the selected phases want;
    a phase then runs only on the hosts that differ in it (on all its hosts for a
    cluster-wide phase), so a converged cluster costs one round trip. ``full`` runs every
    selected phase on all its hosts. Independent phases run at the same time
    (``PHASE_AFTER``); ``parallel=False`` runs one phase at a time.

    Hosts the last provision converged that left the spec are refused (never dropped
    silently) unless ``prune``, which drains and resets them first (``provisioner.nodes``).
    A ``kubernetesVersion`` the hosts cannot go to (a skipped minor, a downgrade) is refused
    after the survey, before any phase; an upgrade first takes an etcd snapshot and drains
    the nodes ``max_unavailable`` at a time before their kubelet changes.
    """
    from provisioner.membership import left_spec, moved, read_applied, refusal, write_applied
    from provisioner.nodes import plan_removal, remove_locked

    started = time.monotonic()
    plan, selected = plan_and_select(spec_file, only, skip, state_dir)
    spec_dir = spec_file.resolve().parent
    sdir = cluster_dir(plan.name, state_dir)
    applied = read_applied(sdir)
    shifted = moved(plan, applied)
    if shifted is not None:
        raise ProvisionError(shifted)
    gone = left_spec(plan, applied)
    pruning = None
    if gone and applied is not None:
        if not prune:
            raise ProvisionError(refusal(plan, gone, applied))
        pruning = plan_removal(plan, sdir, gone, applied)
    notes: list[str] = list(plan.warnings)
    steps: dict[str, float] = {"load": time.monotonic() - started}
    with cluster_lock(sdir):
        mark = time.monotonic()
        if machines and plan.cluster.spec.provider.type in MADE_MACHINES:
            _machines_up(plan, progress)
        steps["machines"] = time.monotonic() - mark
        mark = time.monotonic()
        # Read once, after the machines are up: Ansible and the survey reach hosts alike.
        connections = read_connections(sdir)
        reaches = reach(plan, sdir, connections)
        rendered, tree = render_state(plan, sdir, spec_dir, connections)
        steps["render"] = time.monotonic() - mark
        if trust_on_first_use:
            _record_host_keys(plan, sdir, progress)
        early = ParamikoRunner(reaches, 10.0)
        try:
            _release_first(plan, applied, early)
        finally:
            early.close()
        mark = time.monotonic()
        base_vars: dict[str, Any] = {
            "provisioner_rendered_dir": str((rendered / "hosts").resolve()),
            "provisioner_selected": [p.name for p in selected],
            # Paths only: the control-plane phase sends this pair to one node, when the admin
            # group's RBAC binding is missing (roles/kube_control_plane/tasks/health.yml).
            "provisioner_super_admin_cert": str((sdir / "pki" / "super-admin.crt").resolve()),
            "provisioner_super_admin_key": str((sdir / "pki" / "super-admin.key").resolve()),
            **_artifact_extravars(plan, selected, spec_dir),
        }
        steps["artifacts"] = time.monotonic() - mark
        surveyed = time.monotonic()
        runner = ParamikoRunner(reaches, 10.0)
        try:
            _, surveys = _survey(plan, sdir, tree, selected,
                                 base_vars.get("provisioner_artifacts", {}), runner)
        finally:
            runner.close()
        if not replace_identity:
            _check_identity(plan, sdir, rendered, surveys)
        upgrade = _check_upgrade(plan, surveys)
        if upgrade is not None:
            _upgrade_preconditions(plan, selected, surveys)
        targets = None if full else phase_hosts(plan, surveys)
        if targets is not None:
            # Hosts whose only node-phase change is the pod routes table (a node joined or
            # left): the node playbook runs the CNI's part there, not the kubelet's.
            base_vars["node_network_only"] = [
                h for h in network_only(surveys) if h in targets.get("node", ())]
        steps["survey"] = time.monotonic() - surveyed
        _report_survey(surveys, targets, steps["survey"], progress)
        if upgrade is not None:
            for line in upgrade.steps(plan, max_unavailable):
                progress.note(line)
            base_vars.update(upgrade.node_vars(plan, max_unavailable, drain_timeout))
            mark = time.monotonic()
            notes.append(_pre_upgrade_snapshot(spec_file, state_dir, progress))
            steps["snapshot"] = time.monotonic() - mark
        if pruning is not None:
            mark = time.monotonic()
            progress.note(f"prune: removing {', '.join(pruning.names)} (left the spec): "
                          "cordon, drain, delete the Node, "
                          + ("stop the control plane, remove the etcd members one at a time, "
                             if pruning.etcd else "") + "reset the host")
            removed = remove_locked(pruning, sdir, pruning.spec_dir or spec_dir,
                                    drain_timeout, progress)
            if removed.failed is not None:
                raise ProvisionError(_removal_failure(removed.failed, pruning.names))
            notes.append(f"pruned {', '.join(pruning.names)} in {removed.seconds:.1f}s")
            steps["prune"] = time.monotonic() - mark
        pdd = rendered / "runner"
        rendered_args = rendered_envvars(pdd).get("ANSIBLE_SSH_ARGS", "")
        # Extra vars outrank env/envvars for the ssh plugin's ``ssh_args`` option: every
        # provider's logins trust exactly the files verify and the identity check trust.
        base_vars["ansible_ssh_args"] = pinned_ssh_args(rendered_args, trusted_files(reaches))
        run_id = new_run_id()
        base_vars["provisioner_run_id"] = run_id
        run_dir = private_dir(sdir / "runs" / run_id)
        write_private(run_dir / SURVEY_FILE, survey_json(surveys).encode())
        for note in notes:
            progress.note(note)
        mark = time.monotonic()
        results, skipped, failure = _run_phases(plan, selected, pdd, base_vars, run_dir,
                                                progress, targets, parallel)
        steps["phases"] = time.monotonic() - mark
        if failure is None:
            # Every host of the spec now belongs to the cluster: a later spec without it is
            # refused, not silently dropped. Also written when nothing had to run, so a
            # cluster made before this record existed gets one. A failed run keeps the old
            # record (and its release, so the next run checks the upgrade path again).
            write_applied(sdir, plan, spec_file)
        checks: list[CheckResult] = []
        if failure is None and any(p.name == "verify" for p in selected):
            mark = time.monotonic()
            # A run that only added nodes probes the pod network from them (both ways to
            # every other node); every other check still looks at the whole cluster.
            scope = None if targets is None else added_only(plan, surveys)
            checks, failure = _verify(plan, sdir, run_dir, progress, scope)
            steps["verify"] = time.monotonic() - mark
        admin = sdir / "admin.kubeconfig"
        result = ProvisionResult(
            cluster=plan.name, run_id=run_id, run_dir=run_dir,
            selected=tuple(p.name for p in selected), phases=tuple(results),
            skipped=tuple(skipped), seconds=time.monotonic() - started, failure=failure,
            notes=tuple(notes), verify=tuple(checks),
            admin_kubeconfig=admin if admin.exists() else None,
            survey={h: len(sv.differences) for h, sv in sorted(surveys.items())}, full=full,
            steps={k: round(v, 3) for k, v in steps.items()})
        write_private(run_dir / SUMMARY_FILE,
                      (json.dumps(result.to_json(), indent=1) + "\n").encode())
        (run_dir / EVENTS_FILE).touch(mode=0o600)
    return result


def _phase_failure(result: PhaseResult) -> Failure | None:
    if result.succeeded:
        return None
    failures = result.failures()
    if failures:
        host, task, message = failures[0]
        return Failure(result.phase, host, task, message)
    return Failure(result.phase, None, None, result.error or f"status {result.status}")


def _run_phases(
    plan: Plan,
    selected: tuple[Phase, ...],
    pdd: Path,
    base_vars: dict[str, Any],
    run_dir: Path,
    progress: ProgressSink,
    targets: dict[str, list[str]] | None = None,
    parallel: bool = True,
) -> tuple[list[PhaseResult], list[tuple[str, str]], Failure | None]:
    """Run the selected phases' playbooks on their target hosts.

    A phase starts once every phase it needs (``PHASE_AFTER``) that this run includes has
    succeeded, so independent phases (runtime, etcd and lb after os) run at the same time,
    each in its own ansible-runner process; ``parallel=False`` runs them one at a time in
    plan order. After a failure no further phase starts; those running go on to their end,
    and the first failure in plan order is reported. Ctrl-C and SIGTERM stop every running
    playbook.
    """
    skipped: list[tuple[str, str]] = []
    todo: list[tuple[Phase, list[str], list[str]]] = []
    for top in plan.phases:
        target = phase_targets(top, selected)
        if target is None or top.name == "verify":
            continue  # verify is not a playbook: its checks run from the controller
        hosts, names = target
        reason = None if hosts else "no hosts"
        if reason is None and targets is not None:
            hosts = [h for h in hosts if h in targets.get(top.name, ())]
            reason = None if hosts else "converged"
        if reason is not None:
            skipped.append((top.name, reason))
            progress.note(f"phase {top.name}: skipped, {reason}")
            continue
        todo.append((top, hosts, names))
    todo = _split_pod_routes(todo, base_vars.get("node_network_only") or [])
    sink: ProgressSink = SerializedProgress(progress) if parallel else progress
    cancelled = threading.Event()
    link_project(pdd)  # once, before the threads: they would race on the link otherwise

    def run(item: tuple[Phase, list[str], list[str]]) -> PhaseResult:
        top, hosts, names = item
        extravars = {**base_vars, "provisioner_selected": names,
                     "provisioner_phase": top.name.replace("/", "-")}
        return run_playbook(pdd, top.playbook, hosts, extravars, run_dir, top.name, sink,
                            cancelled.is_set)

    results: dict[str, PhaseResult] = {}
    failures: dict[str, Failure] = {}
    order = {top.name: i for i, (top, _, _) in enumerate(todo)}
    included = set(order)
    pending = list(todo)
    workers = len(todo) if parallel else 1
    with _stop_on_sigterm(cancelled), ThreadPoolExecutor(
            max_workers=max(workers, 1), thread_name_prefix="phase") as pool:
        running: dict[Future[PhaseResult], str] = {}
        try:
            while pending or running:
                done_ok = {n for n, r in results.items() if r.succeeded}
                if not failures:
                    for item in list(pending):
                        needs = _needs(item[0].name) & included
                        if needs <= done_ok and len(running) < workers:
                            pending.remove(item)
                            running[pool.submit(run, item)] = item[0].name
                        elif not parallel:
                            break
                if not running:
                    if pending and not failures:  # PHASE_AFTER can never let them start
                        stuck = ", ".join(t.name for t, _, _ in pending)
                        failures[pending[0][0].name] = Failure(
                            pending[0][0].name, None, None,
                            f"phases {stuck} could not start: their PHASE_AFTER "
                            "dependencies never finished (a bug in provisioner)")
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    name = running.pop(fut)
                    try:
                        result = fut.result()
                    except ExecuteError as exc:
                        failures[name] = Failure(name, None, None, str(exc))
                        continue
                    except Exception as exc:  # one phase's bug must not kill the others
                        failures[name] = Failure(name, None, None,
                                                 f"internal error: {type(exc).__name__}: {exc}")
                        continue
                    results[name] = result
                    if (failure := _phase_failure(result)) is not None:
                        failures[name] = failure
        except BaseException:
            cancelled.set()  # Ctrl-C or SIGTERM: every running playbook is stopped
            raise
    ordered = sorted(results.values(), key=lambda r: order[r.phase])
    first = min(failures.values(), key=lambda f: order[f.phase]) if failures else None
    return ordered, skipped, first


POD_ROUTES = "node/pod-routes"


def _split_pod_routes(todo: list[tuple[Phase, list[str], list[str]]], network_only: list[str]
                      ) -> list[tuple[Phase, list[str], list[str]]]:
    """When the node phase runs both on joining (or changed) nodes and on nodes that only
    need the new pod routes table (``node_network_only``), run the routes part as a phase
    of its own, ``node/pod-routes``: the same playbook limited to those hosts, which then
    runs its routes play alone, at the same time as the joining node's kubelet and
    kube-proxy instead of after them (the plays of one playbook run one after the other).
    It starts when the node phase does, so it does not compete with the joining node's os,
    runtime and lb; starting it right after preflight measured the same within noise
    (README, scale-out table)."""
    out = []
    for top, hosts, names in todo:
        routes = [h for h in hosts if h in network_only] if top.name == "node" else []
        if not routes or len(routes) == len(hosts):
            out.append((top, hosts, names))
            continue
        rest = [h for h in hosts if h not in routes]
        out.append((top, rest, names))
        out.append((Phase(POD_ROUTES, "The new pod routes table on the other nodes",
                          tuple(routes)), routes, names))
    return out


def _needs(name: str) -> frozenset[str]:
    """The phases that must end before ``name`` starts: ``phase_after``, with
    ``node/pod-routes`` starting with the node phase and ending before whatever comes after
    it."""
    if name == POD_ROUTES:
        return phase_after("node")
    after = phase_after(name)
    return after | {POD_ROUTES} if "node" in after else after


class Terminated(BaseException):
    """SIGTERM arrived while phases ran (raised in the main thread after they stopped)."""


@contextmanager
def _stop_on_sigterm(cancelled: threading.Event) -> Iterator[None]:
    """While phases run in threads, SIGTERM stops them like Ctrl-C does: ansible-runner
    only installs its own handler in the main thread, and an ansible-playbook left running
    in its own session would go on changing hosts after this process died."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        cancelled.set()
        raise Terminated(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _verify(plan: Plan, sdir: Path, run_dir: Path, progress: ProgressSink,
            probe_nodes: list[str] | None = None
            ) -> tuple[list[CheckResult], Failure | None]:
    """The verify phase: every named check; the first failing one fails the run. With
    ``probe_nodes`` the pod-network probe's clients run on those nodes only."""
    progress.note("phase verify: running checks" + (
        f" (pod network probed from the added {'nodes' if len(probe_nodes) > 1 else 'node'}"
        f" {', '.join(probe_nodes)} to every other node, both ways)" if probe_nodes else ""))
    checks = verify(plan, sdir, probe_nodes=probe_nodes)
    write_private(run_dir / VERIFY_FILE, to_json(plan.name, checks).encode())
    progress.note(f"phase verify: {summary_line(checks)}")
    bad = next((c for c in checks if c.status == "fail"), None)
    if bad is None:
        return checks, None
    target = None if bad.target == "cluster" else bad.target
    return checks, Failure("verify", target, bad.name, f"{bad.evidence} (hint: {bad.hint})")


def last_summary(sdir: Path) -> dict[str, Any] | None:
    """The newest run's ``summary.json`` of a cluster, if any run finished."""
    runs = sdir / "runs"
    if not runs.is_dir():
        return None
    for d in sorted(runs.iterdir(), reverse=True):
        f = d / SUMMARY_FILE
        if f.is_file():
            data: dict[str, Any] = json.loads(f.read_text())
            return data
    return None
