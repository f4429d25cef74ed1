"""Phase scheduling in ``provision._run_phases``: which phases run at the same time.

Scope: no Ansible here. ``run_playbook`` is replaced by a test double, FakePlaybookRunner
(real playbook runs are proven by the lab tests), that sleeps a little and notes when each
phase started and ended, so the tests check the order the scheduler keeps
(``PHASE_AFTER``), that independent phases overlap, that a failure stops later phases and
that the first failure in plan order is the one reported.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from provisioner import provision as provision_mod
from provisioner.execute import HostResult, NullProgress, PhaseResult
from provisioner.plan import PHASE_AFTER, build_plan, phase_after, select_phases
from provisioner.spec import parse

SPEC = """
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: sched}
spec:
  provider: {type: nspawn}
  controlPlane: {count: 3}
  workers: {count: 2}
"""


class FakePlaybookRunner:
    """Stands in for ``run_playbook``: records (phase, start, end), fails named phases."""

    def __init__(self, fail: tuple[str, ...] = (), seconds: float = 0.15) -> None:
        self.fail = fail
        self.seconds = seconds
        self.spans: dict[str, tuple[float, float]] = {}
        self.vars: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def __call__(self, pdd: Path, playbook: str, hosts: list[str], extravars: dict[str, Any],
                 run_dir: Path, phase: str, progress: Any, cancel: Any = None) -> PhaseResult:
        start = time.monotonic()
        time.sleep(self.seconds)
        failed = phase in self.fail
        with self.lock:
            self.spans[phase] = (start, time.monotonic())
            self.vars[phase] = extravars
        return PhaseResult(phase=phase, playbook=playbook,
                           status="failed" if failed else "successful", rc=2 if failed else 0,
                           seconds=self.seconds,
                           hosts={h: HostResult(h, ok=1, failed=int(failed)) for h in hosts})


def _run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rec: FakePlaybookRunner,
         parallel: bool = True, skip: list[str] | None = None) -> Any:
    monkeypatch.setattr(provision_mod, "run_playbook", rec)
    plan = build_plan(parse(SPEC))
    selected = select_phases(plan, None, skip)
    return provision_mod._run_phases(plan, selected, tmp_path, {}, tmp_path, NullProgress(),
                                     None, parallel)


def test_phase_after_is_transitive_and_covers_every_phase() -> None:
    assert phase_after("control-plane") == {"preflight", "os", "etcd", "lb"}
    assert phase_after("addons") >= {"node", "runtime", "control-plane", "etcd", "lb"}
    assert phase_after("runtime") == {"preflight", "os"}
    plan = build_plan(parse(SPEC))
    assert {p.name for p in plan.phases} == set(PHASE_AFTER)


def test_independent_phases_overlap_and_dependencies_are_kept(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rec = FakePlaybookRunner()
    results, skipped, failure = _run(monkeypatch, tmp_path, rec)
    assert failure is None and skipped == []
    # Results come back in plan order, whatever order the phases ended in.
    assert [r.phase for r in results] == [
        "preflight", "os", "runtime", "etcd", "lb", "control-plane", "node", "addons"]
    for phase, (start, _) in rec.spans.items():
        for dep in phase_after(phase) & set(rec.spans):
            assert rec.spans[dep][1] <= start, f"{phase} started before {dep} ended"
    starts = [rec.spans[p][0] for p in ("runtime", "etcd", "lb")]
    ends = [rec.spans[p][1] for p in ("runtime", "etcd", "lb")]
    assert max(starts) < min(ends), "runtime, etcd and lb did not run at the same time"
    assert rec.vars["etcd"]["provisioner_phase"] == "etcd"


def test_serial_runs_one_phase_at_a_time_in_plan_order(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rec = FakePlaybookRunner(seconds=0.02)
    results, _, failure = _run(monkeypatch, tmp_path, rec, parallel=False)
    assert failure is None
    spans = [rec.spans[r.phase] for r in results]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_a_failure_stops_later_phases_and_the_first_in_plan_order_is_reported(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rec = FakePlaybookRunner(fail=("lb", "runtime"))
    results, _, failure = _run(monkeypatch, tmp_path, rec)
    # etcd, runtime and lb were already running together: all three finish; nothing after.
    assert {r.phase for r in results} == {"preflight", "os", "runtime", "etcd", "lb"}
    assert failure is not None and failure.phase == "runtime"
    assert "control-plane" not in rec.spans and "node" not in rec.spans


def test_a_phase_not_in_the_run_does_not_hold_back_the_others(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rec = FakePlaybookRunner(seconds=0.02)
    results, _, failure = _run(monkeypatch, tmp_path, rec, skip=["etcd", "os"])
    assert failure is None
    assert [r.phase for r in results] == [
        "preflight", "runtime", "lb", "control-plane", "node", "addons"]
    assert rec.spans["preflight"][1] <= rec.spans["lb"][0]


def test_an_unexpected_error_in_one_phase_fails_it_and_lets_the_others_finish(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class FakeBrokenPlaybookRunner(FakePlaybookRunner):
        def __call__(self, pdd: Path, playbook: str, hosts: list[str],
                     extravars: dict[str, Any], run_dir: Path, phase: str, progress: Any,
                     cancel: Any = None) -> PhaseResult:
            if phase == "etcd":
                raise RuntimeError("sink exploded")
            return super().__call__(pdd, playbook, hosts, extravars, run_dir, phase, progress,
                                    cancel)

    rec = FakeBrokenPlaybookRunner()
    results, _, failure = _run(monkeypatch, tmp_path, rec)
    assert failure is not None and failure.phase == "etcd"
    assert "internal error: RuntimeError: sink exploded" in failure.message
    # runtime and lb ran alongside etcd and were not cut short; nothing started after.
    assert {r.phase for r in results} == {"preflight", "os", "runtime", "lb"}
    assert all(r.succeeded for r in results)


def _run_join(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rec: FakePlaybookRunner,
              joining: list[str], routes_only: list[str]) -> Any:
    """A run where ``joining`` go through every phase and ``routes_only`` need only the new
    pod routes table (what the survey finds when a node joins)."""
    monkeypatch.setattr(provision_mod, "run_playbook", rec)
    plan = build_plan(parse(SPEC))
    selected = select_phases(plan, None, None)
    targets = {p.name: [h for h in p.hosts if h in joining] for p in plan.phases}
    targets["node"] = [*joining, *routes_only]
    targets["addons"] = list(next(p.hosts for p in plan.phases if p.name == "addons"))
    return provision_mod._run_phases(plan, selected, tmp_path,
                                     {"node_network_only": routes_only}, tmp_path,
                                     NullProgress(), targets, True)


def test_the_other_nodes_routes_change_while_a_joining_node_converges(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rec = FakePlaybookRunner()
    others = ["sched-cp1", "sched-cp2", "sched-cp3", "sched-w1"]
    results, _, failure = _run_join(monkeypatch, tmp_path, rec, ["sched-w2"], others)
    assert failure is None
    by_phase = {r.phase: sorted(r.hosts) for r in results}
    assert by_phase["node"] == ["sched-w2"]
    assert by_phase["node/pod-routes"] == others
    assert [r.phase for r in results].index("node/pod-routes") == \
        [r.phase for r in results].index("node") + 1
    routes, node = rec.spans["node/pod-routes"], rec.spans["node"]
    # The two halves run at the same time, once the node phase may start.
    before = phase_after("node") & set(rec.spans)
    assert before and max(rec.spans[p][1] for p in before) <= min(routes[0], node[0])
    assert max(routes[0], node[0]) < min(routes[1], node[1])
    # The addons wait for both halves of the node phase.
    assert rec.spans["addons"][0] >= max(routes[1], node[1])
    assert rec.vars["node/pod-routes"]["provisioner_phase"] == "node-pod-routes"
    assert rec.vars["node"]["provisioner_phase"] == "node"


def test_a_node_phase_of_routes_alone_is_one_run(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A node left (pruned): every remaining node needs the routes alone; nothing to split."""
    rec = FakePlaybookRunner(seconds=0.02)
    nodes = ["sched-cp1", "sched-cp2", "sched-cp3", "sched-w1"]
    results, _, failure = _run_join(monkeypatch, tmp_path, rec, [], nodes)
    assert failure is None
    assert [(r.phase, sorted(r.hosts)) for r in results] == [
        ("node", nodes), ("addons", ["sched-cp1"])]
