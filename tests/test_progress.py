"""Progress views fed with executor events: compact lines, verbose lines, JSON Lines, the
live table, and the ``provision`` command's ``-v``/``--json`` output and final summary.

Scope: no Ansible runs here; each sink gets the events ``run_playbook`` would send for two
phases (one that changes things, one where a task fails on one host). A failure's message
stands for task output: it must never reach a progress view (the command prints it once,
on stderr).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from provisioner import cli_provision
from provisioner.cli import app
from provisioner.execute import (
    CompactProgress,
    Failure,
    HostResult,
    JsonProgress,
    LineProgress,
    LiveProgress,
    NullProgress,
    PhaseResult,
    ProgressSink,
    TaskTiming,
    progress_for,
)
from provisioner.provision import Failure as RunFailure
from provisioner.provision import ProvisionResult

SECRET = "fake-secret-output-7d1e"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Task names with brackets: rich must show them as they are, not as markup.
PACKAGES = "Os | Install [base] packages"
SYSCTL = "Os | Apply sysctl"
CONFIG = "Runtime | Write containerd config"
START = "Runtime | Start containerd"

OS_RESULT = PhaseResult(
    phase="os", playbook="os.yml", status="successful", rc=0, seconds=14.2,
    hosts={"cp1": HostResult("cp1", ok=2, changed=1), "w1": HostResult("w1", ok=2, changed=2)},
    slowest=(TaskTiming("os", "cp1", PACKAGES, 9.5), TaskTiming("os", "w1", PACKAGES, 8.0)),
)
RUNTIME_RESULT = PhaseResult(
    phase="runtime", playbook="runtime.yml", status="failed", rc=2, seconds=3.5,
    hosts={"cp1": HostResult("cp1", ok=2, changed=1),
           "w1": HostResult("w1", ok=0, failed=1,
                            failures=(Failure(CONFIG, f"permission denied: {SECRET}"),))},
    slowest=(TaskTiming("runtime", "cp1", START, 2.0),),
)


def feed(sink: ProgressSink) -> None:
    """The events of two phases: ``os`` (3 changed) and ``runtime`` (fails on w1)."""
    sink.note("warning: a note for people")
    sink.phase_started("os", ["cp1", "w1"])
    for host, status in (("cp1", "changed"), ("w1", "changed")):
        sink.task_started("os", host, PACKAGES)
        sink.task_finished("os", host, PACKAGES, status, 9.5 if host == "cp1" else 8.0)
    sink.task_started("os", "cp1", SYSCTL)
    sink.task_finished("os", "cp1", SYSCTL, "ok", 0.25)
    sink.task_started("os", "w1", SYSCTL)
    sink.task_finished("os", "w1", SYSCTL, "changed", 0.5)
    sink.phase_finished(OS_RESULT)
    sink.phase_started("runtime", ["cp1", "w1"])
    sink.task_started("runtime", "cp1", CONFIG)
    sink.task_finished("runtime", "cp1", CONFIG, "changed", 0.5)
    sink.task_started("runtime", "w1", CONFIG)
    sink.task_finished("runtime", "w1", CONFIG, "failed", 0.75)
    sink.task_started("runtime", "cp1", START)
    sink.task_finished("runtime", "cp1", START, "ok", 2.0)
    sink.phase_finished(RUNTIME_RESULT)


def run_result(tmp_path: Path) -> ProvisionResult:
    return ProvisionResult(
        cluster="lab", run_id="20250101T000000Z-abc123", run_dir=tmp_path / "run",
        selected=("os", "runtime"), phases=(OS_RESULT, RUNTIME_RESULT), skipped=(),
        seconds=18.0, failure=RunFailure("runtime", "w1", CONFIG, f"permission denied: {SECRET}"))


def test_compact_prints_one_line_per_phase_and_its_failures() -> None:
    buf = io.StringIO()
    with CompactProgress(buf) as sink:
        feed(sink)
    lines = buf.getvalue().splitlines()
    assert lines == [
        "warning: a note for people",
        "phase os: 2 hosts, 3 changed, 0 failed, 14.2s",
        "phase runtime: 2 hosts, 1 changed, 1 failed, 3.5s, FAILED",
        f"  failed on w1: {CONFIG!r}",
    ]


def test_compact_phase_failure_without_task_events() -> None:
    """A phase that failed before any task (or whose events were lost) still says why."""
    buf = io.StringIO()
    sink = CompactProgress(buf)
    sink.phase_finished(RUNTIME_RESULT)
    sink.phase_finished(PhaseResult("etcd", "etcd.yml", "failed", 4, 1.0,
                                    {"cp1": HostResult("cp1")}, error="ERROR! syntax"))
    out = buf.getvalue()
    assert f"  failed on w1: {CONFIG!r}" in out
    assert "phase etcd: 1 hosts, 0 changed, 0 failed, 1.0s, FAILED" in out
    assert "ansible-playbook ended failed (rc 4)" in out
    assert SECRET not in out and "syntax" not in out


def test_line_progress_verbose_shows_every_task_start_and_end() -> None:
    buf = io.StringIO()
    with LineProgress(buf, verbose=True) as sink:
        feed(sink)
    out = buf.getvalue()
    assert f"  os cp1: start {PACKAGES}\n" in out
    assert f"  os cp1: changed {PACKAGES} (9.5s)\n" in out
    assert f"  os cp1: ok {SYSCTL} (0.2s)\n" in out
    assert f"  runtime w1: failed {CONFIG} (0.8s)\n" in out
    assert f"  runtime cp1: ok {START} (2.0s)\n" in out
    assert out.count(": start ") == 7
    assert "phase runtime: FAILED on 2 hosts" in out
    assert SECRET not in out


def test_line_progress_default_shows_only_changes_and_failures() -> None:
    buf = io.StringIO()
    feed(LineProgress(buf))
    out = buf.getvalue()
    assert f"  os w1: changed {SYSCTL} (0.5s)" in out
    assert f"  runtime w1: failed {CONFIG} (0.8s)" in out
    assert f"cp1: ok {SYSCTL}" not in out and ": start " not in out
    assert SECRET not in out


def test_json_lines_parse_and_carry_names_statuses_counts_timings() -> None:
    buf = io.StringIO()
    with JsonProgress(buf, clock=lambda: 1700000000.1234) as sink:
        feed(sink)
        sink.summary({"run_id": "r1", "succeeded": False})
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [e["event"] for e in events[:4]] == ["note", "phase_started", "task_started",
                                                "task_finished"]
    assert events[-1] == {"event": "summary", "summary": {"run_id": "r1", "succeeded": False},
                          "time": 1700000000.123}
    assert all(e["time"] == 1700000000.123 for e in events)
    assert events[1] == {"event": "phase_started", "phase": "os", "hosts": ["cp1", "w1"],
                         "time": 1700000000.123}
    failed = [e for e in events if e["event"] == "task_finished" and e["status"] == "failed"]
    assert failed == [{"event": "task_finished", "phase": "runtime", "host": "w1",
                       "task": CONFIG, "status": "failed", "seconds": 0.75,
                       "time": 1700000000.123}]
    finished = [e for e in events if e["event"] == "phase_finished"]
    assert [(e["phase"], e["succeeded"], e["changed"], e["failed"], e["seconds"])
            for e in finished] == [("os", True, 3, 0, 14.2), ("runtime", False, 1, 1, 3.5)]
    assert finished[1]["hosts"]["w1"] == {"ok": 0, "changed": 0, "failed": 1,
                                          "unreachable": 0, "skipped": 0}
    assert finished[1]["failures"] == [{"host": "w1", "task": CONFIG}]
    assert SECRET not in buf.getvalue()


def _live_output(verbose: bool) -> str:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    with LiveProgress(console, verbose=verbose) as sink:
        feed(sink)
        sink.phase_started("etcd", ["cp1"])
        sink.task_started("etcd", "cp1", "Etcd | Start [etcd]")
    return ANSI.sub("", buf.getvalue())


def test_live_table_shows_running_phase_and_finished_phase_lines() -> None:
    out = _live_output(verbose=False)
    assert "phase os: 2 hosts, 3 changed, 0 failed, 14.2s" in out
    assert "phase runtime: 2 hosts, 1 changed, 1 failed, 3.5s, FAILED" in out
    assert f"failed on w1: {CONFIG!r}" in out
    # The running phase's row, its task name printed literally (no markup).
    assert re.search(r"etcd\s+cp1\s+Etcd \| Start \[etcd\]", out)
    assert ": start " not in out and f"changed {PACKAGES}" not in out
    assert SECRET not in out


def test_live_verbose_logs_tasks_above_the_table() -> None:
    out = _live_output(verbose=True)
    assert f"os cp1: start {PACKAGES}" in out
    assert f"os cp1: changed {PACKAGES} (9.5s)" in out
    assert f"runtime w1: failed {CONFIG} (0.8s)" in out
    assert SECRET not in out


def test_progress_for_picks_the_sink() -> None:
    tty = Console(file=io.StringIO(), force_terminal=True)
    pipe = Console(file=io.StringIO(), force_terminal=False)
    assert isinstance(progress_for(tty), LiveProgress)
    assert isinstance(progress_for(pipe), CompactProgress)
    verbose = progress_for(pipe, verbose=True)
    assert isinstance(verbose, LineProgress) and verbose.verbose
    live = progress_for(tty, verbose=True)
    assert isinstance(live, LiveProgress) and live.verbose
    stream = io.StringIO()
    js = progress_for(tty, verbose=True, json_stream=stream)
    assert isinstance(js, JsonProgress) and js.stream is stream
    with NullProgress() as null:
        feed(null)


def test_summary_text_has_phases_hosts_and_slowest_tasks(tmp_path: Path) -> None:
    lines = cli_provision.summary_text(run_result(tmp_path))
    assert lines == [
        "phases:",
        "  phase    hosts  changed  failed   time  result",
        "  os           2        3       0  14.2s  ok",
        "  runtime      2        1       1   3.5s  FAILED (failed)",
        "hosts:",
        "  host  ok  changed  failed  unreachable  skipped",
        "  cp1    4        2       0            0        0",
        "  w1     2        2       1            0        0",
        "slowest tasks:",
        "  time  phase    host  task",
        f"  9.5s  os       cp1   {PACKAGES}",
        f"  8.0s  os       w1    {PACKAGES}",
        f"  2.0s  runtime  cp1   {START}",
    ]


def test_summary_tables_on_a_terminal(tmp_path: Path) -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    cli_provision.print_summary(console, run_result(tmp_path))
    out = ANSI.sub("", buf.getvalue())
    for title in ("phases", "hosts", "slowest tasks"):
        assert re.search(rf"^{title}\s*$", out, re.MULTILINE), title
    assert re.search(r"runtime\s+2\s+1\s+1\s+3\.5s\s+FAILED \(failed\)", out)
    assert re.search(rf"9\.5s\s+os\s+cp1\s+{re.escape(PACKAGES)}", out)
    assert "─" in out  # a table, not the plain text
    assert SECRET not in out


# The provision command, with the provision flow replaced by the events above.


@pytest.fixture
def fake_provision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    def provision(*args: Any, **kwargs: Any) -> ProvisionResult:
        sink = args[5]
        feed(sink)
        return run_result(tmp_path)

    monkeypatch.setattr(cli_provision, "provision", provision)
    spec = tmp_path / "cluster.yaml"
    spec.write_text("not read by the fake\n")
    return spec


def test_provision_json_writes_only_json_lines_to_stdout(fake_provision: Path) -> None:
    result = CliRunner().invoke(app, ["provision", str(fake_provision), "--json"])
    assert result.exit_code == 1, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "note" and kinds[-1] == "summary"
    assert set(kinds) == {"note", "phase_started", "task_started", "task_finished",
                          "phase_finished", "summary"}
    assert all(isinstance(e["time"], float) for e in events)
    summary = events[-1]["summary"]
    assert summary["run_id"] == "20250101T000000Z-abc123" and not summary["succeeded"]
    assert [p["phase"] for p in summary["phases"]] == ["os", "runtime"]
    assert summary["slowest"][0] == {"phase": "os", "host": "cp1", "task": PACKAGES,
                                     "seconds": 9.5}
    # Progress events carry no task output; the human messages went to stderr.
    assert SECRET not in "".join(json.dumps(e) for e in events[:-1])
    assert "provision FAILED: 2 phases, 4 changed tasks" in result.stderr
    assert "failed: phase runtime, host w1" in result.stderr


def test_provision_default_is_compact_with_plain_summary(fake_provision: Path) -> None:
    result = CliRunner().invoke(app, ["provision", str(fake_provision)])
    assert result.exit_code == 1
    out = result.stdout
    assert out.count("phase os:") == 1 and out.count("phase runtime:") == 1
    assert "phase os: 2 hosts, 3 changed, 0 failed, 14.2s" in out
    assert f"os cp1: changed {PACKAGES}" not in out
    assert "slowest tasks:" in out and "─" not in out
    assert "provision FAILED: 2 phases, 4 changed tasks, 18.0s" in out
    assert SECRET not in out  # the failure's message goes to stderr only
    assert f"permission denied: {SECRET}" in result.stderr


def test_provision_verbose_shows_task_lines(fake_provision: Path) -> None:
    result = CliRunner().invoke(app, ["provision", str(fake_provision), "-v"])
    out = result.stdout
    assert f"  os cp1: start {PACKAGES}" in out
    assert f"  os w1: ok {SYSCTL}" not in out  # w1's sysctl changed
    assert f"  os w1: changed {SYSCTL} (0.5s)" in out
    assert f"  runtime cp1: ok {START} (2.0s)" in out
    assert "phases:" in out and SECRET not in out
