"""Progress views fed by runner events: a live rich table on a terminal, lines otherwise.

Scope: the ``ProgressSink`` protocol the executor reports to, and its implementations:
``LiveProgress`` (a rich ``Live`` table of the running phase: host, current task,
ok/changed/failed, elapsed; each finished phase leaves one line above it, and ``verbose``
logs every task start and end above it too), ``CompactProgress`` (one line per phase plus
its failures: the default for logs and CI), ``LineProgress`` (one line per task that
changed, failed or was unreachable, or with ``verbose`` every task start and end, and one
per phase), ``JsonProgress`` (JSON Lines events for programs, ``--json``) and
``NullProgress`` (tests). ``progress_for`` picks one.

Only phase, task and host names, statuses, counts, timings and notes reach the output,
never task output (a failure's message included: the caller reports it once, at the end),
so a secret cannot be printed from here.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, Protocol, TypeAlias

from rich import box
from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from provisioner.execute.model import PhaseResult

# The statuses that mean a task did not do its job on a host.
FAILED_STATUSES = ("failed", "unreachable")


class ProgressSink(Protocol):
    """Receives what the executor learns from runner events, as it happens."""

    def phase_started(self, phase: str, hosts: Sequence[str]) -> None:
        """A phase's playbook is starting on ``hosts``."""

    def task_started(self, phase: str, host: str, task: str) -> None:
        """``task`` started on ``host``."""

    def task_finished(self, phase: str, host: str, task: str, status: str,
                      seconds: float) -> None:
        """``task`` ended on ``host`` (status: ok, changed, failed, skipped, unreachable,
        ignored)."""

    def phase_finished(self, result: PhaseResult) -> None:
        """A phase's playbook ended."""

    def note(self, message: str) -> None:
        """A line for the user that is not about one task (a skipped phase, a warning)."""


class NullProgress:
    """Drops everything (tests, ``--quiet``)."""

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def phase_started(self, phase: str, hosts: Sequence[str]) -> None:
        """Ignored."""

    def task_started(self, phase: str, host: str, task: str) -> None:
        """Ignored."""

    def task_finished(self, phase: str, host: str, task: str, status: str,
                      seconds: float) -> None:
        """Ignored."""

    def phase_finished(self, result: PhaseResult) -> None:
        """Ignored."""

    def note(self, message: str) -> None:
        """Ignored."""


def failed_tasks(result: PhaseResult) -> int:
    """Failed and unreachable task results of a phase, over all its hosts."""
    return sum(h.failed + h.unreachable for h in result.hosts.values())


def phase_line(result: PhaseResult) -> str:
    """One line per phase: status, counts and time (``LineProgress``)."""
    ok = sum(h.ok for h in result.hosts.values())
    word = "ok" if result.succeeded else "FAILED"
    return (f"phase {result.phase}: {word} on {len(result.hosts)} hosts "
            f"(ok={ok} changed={result.changed} failed={failed_tasks(result)}) "
            f"in {result.seconds:.1f}s")


def compact_line(result: PhaseResult) -> str:
    """``phase runtime: 5 hosts, 12 changed, 0 failed, 14.2s`` (``, FAILED`` when it did)."""
    line = (f"phase {result.phase}: {len(result.hosts)} hosts, {result.changed} changed, "
            f"{failed_tasks(result)} failed, {result.seconds:.1f}s")
    return line if result.succeeded else line + ", FAILED"


def task_line(phase: str, host: str, task: str, status: str | None = None,
              seconds: float | None = None) -> str:
    """One task on one host: ``runtime lab-w1: changed Install containerd (3.2s)``, or
    ``... start Install containerd`` when ``status`` is None."""
    if status is None:
        return f"  {phase} {host}: start {task}"
    return f"  {phase} {host}: {status} {task} ({seconds or 0.0:.1f}s)"


class _Failures:
    """The failed tasks of each phase as events reported them (host, task, status), for
    the lines under a phase's summary; a phase no event reported falls back on its result."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[str, str, str]]] = {}

    def record(self, phase: str, host: str, task: str, status: str) -> None:
        if status in FAILED_STATUSES:
            self.seen.setdefault(phase, []).append((host, task, status))

    def lines(self, result: PhaseResult) -> list[str]:
        """``  failed on lab-w1: 'Runtime | Install containerd'`` per failure (no message)."""
        found = self.seen.pop(result.phase, None)
        if found is None:
            found = [(host, task, "failed") for host, task, _ in result.failures()]
        out = [f"  {status} on {host}: {task!r}" for host, task, status in found]
        if not result.succeeded and not found:
            out.append(f"  ansible-playbook ended {result.status} (rc {result.rc}) "
                       "before any task failed")
        return out


class _StreamProgress:
    """Common parts of the plain-text sinks: a stream, one flushed line at a time."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stream.flush()

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        """Print the note."""
        self._print(message)


class CompactProgress(_StreamProgress):
    """One line per phase (its hosts, changed and failed tasks, seconds) and one per failed
    task under it: what a CI log of a provision run should hold by default."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self.failures = _Failures()

    def __enter__(self) -> CompactProgress:
        return self

    def phase_started(self, phase: str, hosts: Sequence[str]) -> None:
        """Not printed: the phase's line comes when it ends."""

    def task_started(self, phase: str, host: str, task: str) -> None:
        """Not printed."""

    def task_finished(self, phase: str, host: str, task: str, status: str,
                      seconds: float) -> None:
        """Remember failures for the phase's line."""
        self.failures.record(phase, host, task, status)

    def phase_finished(self, result: PhaseResult) -> None:
        """Print the phase's line, then its failures."""
        self._print(compact_line(result))
        for line in self.failures.lines(result):
            self._print(line)


class LineProgress(_StreamProgress):
    """Plain lines for logs: each phase's start and end, and tasks: by default only those
    that changed something or failed, with ``verbose`` every task's start and end.

    Unchanged tasks are left out by default: on an idempotent re-run they are all there is,
    and a log of hundreds of ``ok`` lines hides the few that matter.
    """

    def __init__(self, stream: IO[str], verbose: bool = False) -> None:
        super().__init__(stream)
        self.verbose = verbose

    def __enter__(self) -> LineProgress:
        return self

    def phase_started(self, phase: str, hosts: Sequence[str]) -> None:
        """Announce the phase and its hosts."""
        self._print(f"phase {phase}: {len(hosts)} hosts ({', '.join(hosts)})")

    def task_started(self, phase: str, host: str, task: str) -> None:
        """Printed only when verbose."""
        if self.verbose:
            self._print(task_line(phase, host, task))

    def task_finished(self, phase: str, host: str, task: str, status: str,
                      seconds: float) -> None:
        """Print tasks that changed, failed or could not reach their host (all if verbose)."""
        if self.verbose or status in ("changed", *FAILED_STATUSES):
            self._print(task_line(phase, host, task, status, seconds))

    def phase_finished(self, result: PhaseResult) -> None:
        """Print the phase's counts."""
        self._print(phase_line(result))


class JsonProgress:
    """JSON Lines for programs (``provision --json``): one object per event, each with
    ``event`` and ``time`` (epoch seconds).

    Events: ``phase_started`` (phase, hosts), ``task_started`` (phase, host, task),
    ``task_finished`` (phase, host, task, status, seconds), ``phase_finished`` (phase,
    playbook, status, succeeded, rc, seconds, changed, failed, per-host counts, failed
    tasks by host and task name), ``note`` (message) and, from the caller, ``summary``
    (the run summary). No task output and no failure message is written by the task and
    phase events.
    """

    def __init__(self, stream: IO[str], clock: Callable[[], float] = time.time) -> None:
        self.stream = stream
        self.clock = clock

    def __enter__(self) -> JsonProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stream.flush()

    def emit(self, event: str, **fields: Any) -> None:
        """Write one event line."""
        record = {"event": event, **fields, "time": round(self.clock(), 3)}
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()

    def phase_started(self, phase: str, hosts: Sequence[str]) -> None:
        """``phase_started``."""
        self.emit("phase_started", phase=phase, hosts=list(hosts))

    def task_started(self, phase: str, host: str, task: str) -> None:
        """``task_started``."""
        self.emit("task_started", phase=phase, host=host, task=task)

    def task_finished(self, phase: str, host: str, task: str, status: str,
                      seconds: float) -> None:
        """``task_finished``."""
        self.emit("task_finished", phase=phase, host=host, task=task, status=status,
                  seconds=round(seconds, 3))

    def phase_finished(self, result: PhaseResult) -> None:
        """``phase_finished``: counts per host and the failed tasks, without messages."""
        self.emit(
            "phase_finished", phase=result.phase, playbook=result.playbook,
            status=result.status, succeeded=result.succeeded, rc=result.rc,
            seconds=round(result.seconds, 3), changed=result.changed,
            failed=failed_tasks(result),
            hosts={name: {"ok": h.ok, "changed": h.changed, "failed": h.failed,
                          "unreachable": h.unreachable, "skipped": h.skipped}
                   for name, h in sorted(result.hosts.items())},
            failures=[{"host": host, "task": task} for host, task, _ in result.failures()])

    def note(self, message: str) -> None:
        """``note``."""
        self.emit("note", message=message)

    def summary(self, summary: Mapping[str, Any]) -> None:
        """``summary``: the run summary (``ProvisionResult.to_json()``), the last event."""
        self.emit("summary", summary=dict(summary))


@dataclass
class _Row:
    phase: str
    host: str
    task: str = ""
    ok: int = 0
    changed: int = 0
    failed: int = 0
    started: float = 0.0


class LiveProgress:
    """A rich ``Live`` table, one row per host of the running phase, redrawn as events
    arrive; with ``verbose``, every task's start and end is logged above it.

    A finished phase leaves the table and prints its line (and failures) above it, so the
    finished phases stay on screen in order and the table never outgrows the terminal.
    Use as a context manager around the whole provision run.
    """

    def __init__(self, console: Console, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self.rows: dict[tuple[str, str], _Row] = {}
        self.failures = _Failures()
        self.live = Live(console=console, get_renderable=self._table, refresh_per_second=8,
                         transient=False)

    def __enter__(self) -> LiveProgress:
        self.live.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.live.__exit__(exc_type, exc, tb)

    def _table(self) -> RenderableType:
        if not self.rows:
            return Text("")
        table = Table("phase", "host", "current task", box=box.SIMPLE)
        for name in ("ok", "changed", "failed", "elapsed"):
            table.add_column(name, justify="right")
        now = time.monotonic()
        for r in list(self.rows.values()):
            failed = Text(str(r.failed), style="red" if r.failed else "")
            task = Text(r.task, style="red" if r.task.endswith("(FAILED)") else "")
            table.add_row(Text(r.phase), Text(r.host), task, str(r.ok), str(r.changed), failed,
                          f"{now - r.started:.1f}s")
        return table

    def _log(self, line: str, style: str = "") -> None:
        self.console.print(Text(line, style=style), soft_wrap=True)

    def _row(self, phase: str, host: str) -> _Row:
        return self.rows.setdefault((phase, host), _Row(phase, host, started=time.monotonic()))

    def phase_started(self, phase: str, hosts: Sequence[str]) -> None:
        """Add a row per host."""
        now = time.monotonic()
        for h in hosts:
            self.rows[(phase, h)] = _Row(phase, h, "starting", started=now)

    def task_started(self, phase: str, host: str, task: str) -> None:
        """Show the host's current task (and log it when verbose)."""
        row = self._row(phase, host)
        if not row.task.endswith("(FAILED)"):
            row.task = task
        if self.verbose:
            self._log(task_line(phase, host, task), "dim")

    def task_finished(self, phase: str, host: str, task: str, status: str,
                      seconds: float) -> None:
        """Count the result on the host's row (and log it when verbose)."""
        row = self._row(phase, host)
        if status in ("ok", "changed", "ignored"):
            row.ok += 1
        if status == "changed":
            row.changed += 1
        if status in FAILED_STATUSES:
            row.failed += 1
            row.task = f"{task} (FAILED)"
        self.failures.record(phase, host, task, status)
        if self.verbose:
            style = {"changed": "yellow", "failed": "red", "unreachable": "red"}.get(status, "")
            self._log(task_line(phase, host, task, status, seconds), style)

    def phase_finished(self, result: PhaseResult) -> None:
        """Replace the phase's rows with its line (and failures) above the table."""
        for key in [k for k in self.rows if k[0] == result.phase]:
            del self.rows[key]
        style = "" if result.succeeded else "bold red"
        self._log(compact_line(result), style)
        for line in self.failures.lines(result):
            self._log(line, "red")
        if self.live.is_started:
            self.live.refresh()

    def note(self, message: str) -> None:
        """Print above the live table."""
        self._log(message)


class SerializedProgress:
    """Wraps a sink that phases running at the same time (in threads) share: one call at
    a time."""

    def __init__(self, inner: ProgressSink) -> None:
        self.inner = inner
        self.lock = threading.Lock()

    def phase_started(self, phase: str, hosts: Sequence[str]) -> None:
        with self.lock:
            self.inner.phase_started(phase, hosts)

    def task_started(self, phase: str, host: str, task: str) -> None:
        with self.lock:
            self.inner.task_started(phase, host, task)

    def task_finished(self, phase: str, host: str, task: str, status: str,
                      seconds: float) -> None:
        with self.lock:
            self.inner.task_finished(phase, host, task, status, seconds)

    def phase_finished(self, result: PhaseResult) -> None:
        with self.lock:
            self.inner.phase_finished(result)

    def note(self, message: str) -> None:
        with self.lock:
            self.inner.note(message)


Progress: TypeAlias = LiveProgress | LineProgress | CompactProgress | JsonProgress


def progress_for(console: Console, verbose: bool = False,
                 json_stream: IO[str] | None = None) -> Progress:
    """The sink for a provision run: JSON Lines on ``json_stream`` when given; else the live
    table on a terminal; else one line per phase (``verbose``: every task's start and end)."""
    if json_stream is not None:
        return JsonProgress(json_stream)
    if console.is_terminal:
        return LiveProgress(console, verbose)
    if verbose:
        return LineProgress(console.file, verbose=True)
    return CompactProgress(console.file)
