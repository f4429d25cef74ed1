"""Progress views fed by runner events: a live rich table on a terminal, lines otherwise.

Scope: the ``ProgressSink`` protocol the executor reports to, and its three implementations:
``LiveProgress`` (a rich ``Live`` table: phase, host, current task, ok/changed/failed,
elapsed), ``LineProgress`` (one line per task that changed, failed or was unreachable, and
one per phase: for logs and CI) and ``NullProgress`` (tests). ``progress_for`` picks one.
Only task names, host names, statuses and counts reach the screen, never task output, so a
secret cannot be printed from here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Protocol

from rich import box
from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table

from provisioner.execute.model import PhaseResult


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


def phase_line(result: PhaseResult) -> str:
    """One line per phase: status, counts and time."""
    ok = sum(h.ok for h in result.hosts.values())
    failed = sum(h.failed + h.unreachable for h in result.hosts.values())
    word = "ok" if result.succeeded else "FAILED"
    return (f"phase {result.phase}: {word} on {len(result.hosts)} hosts "
            f"(ok={ok} changed={result.changed} failed={failed}) in {result.seconds:.1f}s")


class LineProgress:
    """Plain lines for logs: tasks that changed something or failed, and each phase's end.

    Unchanged tasks are left out: on an idempotent re-run they are all there is, and a log of
    hundreds of ``ok`` lines hides the few that matter.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stream.flush()

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def phase_started(self, phase: str, hosts: Sequence[str]) -> None:
        """Announce the phase and its hosts."""
        self._print(f"phase {phase}: {len(hosts)} hosts ({', '.join(hosts)})")

    def task_started(self, phase: str, host: str, task: str) -> None:
        """Not printed: only results are."""

    def task_finished(self, phase: str, host: str, task: str, status: str,
                      seconds: float) -> None:
        """Print tasks that changed, failed or could not reach their host."""
        if status in ("changed", "failed", "unreachable"):
            self._print(f"  {phase} {host}: {status} {task} ({seconds:.1f}s)")

    def phase_finished(self, result: PhaseResult) -> None:
        """Print the phase's counts."""
        self._print(phase_line(result))

    def note(self, message: str) -> None:
        """Print the note."""
        self._print(message)


@dataclass
class _Row:
    phase: str
    host: str
    task: str = ""
    ok: int = 0
    changed: int = 0
    failed: int = 0
    started: float = 0.0
    ended: float | None = None


class LiveProgress:
    """A rich ``Live`` table, one row per (phase, host), redrawn as events arrive.

    Use as a context manager around the whole provision run so finished phases stay on
    screen above the running one.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rows: dict[tuple[str, str], _Row] = {}
        self.live = Live(console=console, get_renderable=self._table, refresh_per_second=8,
                         transient=False)

    def __enter__(self) -> LiveProgress:
        self.live.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.live.__exit__(exc_type, exc, tb)

    def _table(self) -> RenderableType:
        table = Table("phase", "host", "current task", "ok", "changed", "failed", "elapsed",
                      box=box.SIMPLE)
        now = time.monotonic()
        for r in list(self.rows.values()):
            elapsed = (r.ended if r.ended is not None else now) - r.started
            failed = f"[red]{r.failed}[/red]" if r.failed else "0"
            table.add_row(r.phase, r.host, r.task, str(r.ok), str(r.changed), failed,
                          f"{elapsed:.1f}s")
        return table

    def phase_started(self, phase: str, hosts: Sequence[str]) -> None:
        """Add a row per host."""
        now = time.monotonic()
        for h in hosts:
            self.rows[(phase, h)] = _Row(phase, h, "starting", started=now)

    def task_started(self, phase: str, host: str, task: str) -> None:
        """Show the host's current task."""
        row = self.rows.setdefault((phase, host), _Row(phase, host, started=time.monotonic()))
        row.task = task

    def task_finished(self, phase: str, host: str, task: str, status: str,
                      seconds: float) -> None:
        """Count the result on the host's row."""
        row = self.rows.setdefault((phase, host), _Row(phase, host, started=time.monotonic()))
        if status in ("ok", "changed", "ignored"):
            row.ok += 1
        if status == "changed":
            row.changed += 1
        if status in ("failed", "unreachable"):
            row.failed += 1
            row.task = f"{task} (FAILED)"

    def phase_finished(self, result: PhaseResult) -> None:
        """Freeze the phase's rows: final counts, done marker, elapsed."""
        now = time.monotonic()
        for (phase, host), row in self.rows.items():
            if phase != result.phase:
                continue
            hr = result.hosts.get(host)
            if hr is not None:
                row.ok, row.changed, row.failed = hr.ok, hr.changed, hr.failed + hr.unreachable
            if not row.task.endswith("(FAILED)"):
                row.task = "done" if hr is None or hr.succeeded else "FAILED"
            row.ended = now

    def note(self, message: str) -> None:
        """Print above the live table."""
        self.console.print(message, markup=False, highlight=False)


def progress_for(console: Console) -> LiveProgress | LineProgress:
    """The live table on a terminal, plain lines otherwise (pipes, CI logs)."""
    if console.is_terminal:
        return LiveProgress(console)
    return LineProgress(console.file)
