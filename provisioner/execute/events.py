"""Turn ansible-runner events into per-host results, progress updates and the event log.

Scope: ``EventRecorder`` is the ``event_handler`` given to ``ansible_runner.run``. For each
event it updates the host counters, tells the progress sink, and appends one JSON line to
``events.jsonl`` in the run directory. Runner stdout is never read. What reaches the log is
a whitelist of fields; task results (``res``) of ``no_log`` tasks are dropped entirely, and
other results lose their module arguments (``invocation``) and diffs and are truncated,
because module arguments and diffs are where file contents and passwords travel.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from provisioner.execute.model import Failure, HostResult, TaskTiming
from provisioner.execute.progress import ProgressSink

_LOG_LOCK = threading.Lock()

EVENTS_FILE = "events.jsonl"
MAX_TEXT = 2000
SLOWEST = 10
# Result keys that can carry file contents or module arguments (secrets) or are only
# duplicates of other keys; never written to the log.
_DROP_KEYS = frozenset({"invocation", "diff", "content", "stdout_lines", "stderr_lines",
                        "ansible_facts", "module_stdout", "module_stderr"})
# Events with no host or task meaning; their text is display output, which we do not keep.
_SKIP_EVENTS = frozenset({"verbose", "debug", "deprecated", "playbook_on_include"})
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}


def is_no_log(res: Any) -> bool:
    """True when Ansible marked a result as no_log (or censored it already)."""
    return isinstance(res, dict) and bool(res.get("_ansible_no_log") or "censored" in res)


def scrub(value: Any) -> Any:
    """A copy of a task result safe to log: no_log parts censored, arguments and diffs
    dropped, long text cut (a loop's items can be no_log one by one)."""
    if isinstance(value, dict):
        if is_no_log(value):
            return {"censored": True}
        return {k: scrub(v) for k, v in value.items()
                if k not in _DROP_KEYS and not k.startswith("_ansible")}
    if isinstance(value, list):
        return [scrub(v) for v in value[:50]]
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + f"... [{len(value) - MAX_TEXT} more characters]"
    return value


def failure_message(res: Any) -> str:
    """The human message of a failed result: msg, then stderr or rc; never no_log output."""
    if not isinstance(res, dict):
        return "task failed (no result)"
    if is_no_log(res):
        return "output hidden (no_log); rerun the task by hand on the host to see it"
    parts: list[str] = []
    msg = res.get("msg")
    if msg:
        parts.append(str(msg).strip())
    stderr = str(res.get("stderr") or "").strip()
    if stderr and stderr not in parts:
        parts.append(stderr)
    if not parts and res.get("rc") is not None:
        parts.append(f"exit code {res['rc']}")
    if not parts:
        # A loop reports its failed items in ``results``.
        for item in res.get("results") or []:
            if isinstance(item, dict) and item.get("failed"):
                parts.append(failure_message(item))
                break
    text = "; ".join(parts) or "task failed (no message)"
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " ..."


@dataclass
class _Host:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    failures: list[Failure] = field(default_factory=list)


class EventRecorder:
    """The event handler of one playbook run (one phase)."""

    def __init__(self, phase: str, run_id: str, log: IO[str], progress: ProgressSink) -> None:
        self.phase = phase
        self.run_id = run_id
        self.log = log
        self.progress = progress
        self.hosts: dict[str, _Host] = {}
        self.timings: list[TaskTiming] = []
        self.stats: dict[str, dict[str, int]] | None = None
        self.errors: list[str] = []
        # Text Ansible printed outside any task (an ERROR! on a syntax problem, warnings);
        # kept in memory only, to explain a run that failed before any host did.
        self.display: deque[str] = deque(maxlen=30)

    def __call__(self, event: dict[str, Any]) -> bool:
        """Consume one event; return False so ansible-runner does not also store the raw
        event (with its unfiltered payload) in its own artifacts directory."""
        kind = str(event.get("event", ""))
        if kind == "verbose":
            text = _ANSI.sub("", str(event.get("stdout") or "")).rstrip()
            if text:
                self.display.append(text)
        if kind in _SKIP_EVENTS:
            return False
        data = event.get("event_data") or {}
        if not isinstance(data, dict):
            data = {}
        record = self._record(kind, event, data)
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        with _LOG_LOCK:  # phases that run at the same time append to one events.jsonl
            self.log.write(line)
            self.log.flush()
        return False

    def _record(self, kind: str, event: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        host = data.get("host")
        task = str(data.get("task") or data.get("name") or "")
        record: dict[str, Any] = {
            "run_id": self.run_id,
            "phase": self.phase,
            "event": kind,
            "counter": event.get("counter"),
            "created": event.get("created"),
            "time": time.time(),
        }
        for key in ("play", "role", "task_action", "task_uuid"):
            if data.get(key):
                record[key] = data[key]
        if task:
            record["task"] = task
        if host:
            record["host"] = host
        if kind == "runner_on_start" and host:
            self.progress.task_started(self.phase, str(host), task)
        elif kind in _RESULT_EVENTS and host:
            self._result(kind, str(host), task, data, record)
        elif kind == "playbook_on_stats":
            self.stats = {k: dict(data.get(k) or {}) for k in
                          ("ok", "changed", "failures", "dark", "skipped", "ignored", "rescued")}
            record["stats"] = self.stats
        elif kind == "error":
            # Failures outside any task (syntax errors, a missing playbook) come only as text;
            # they quote the playbook, not task results, so they are safe to keep.
            text = str(event.get("stdout") or "").strip()
            if text:
                self.errors.append(text[:MAX_TEXT])
                record["msg"] = text[:MAX_TEXT]
        return record

    def _result(self, kind: str, host: str, task: str, data: dict[str, Any],
                record: dict[str, Any]) -> None:
        res = data.get("res")
        status = _RESULT_EVENTS[kind]
        if status == "ok" and isinstance(res, dict) and res.get("changed"):
            status = "changed"
        if status == "failed" and data.get("ignore_errors"):
            status = "ignored"
        seconds = float(data.get("duration") or 0.0)
        h = self.hosts.setdefault(host, _Host())
        if status in ("ok", "changed", "ignored"):
            h.ok += 1
        if status == "changed" or (status == "ignored" and isinstance(res, dict)
                                   and res.get("changed")):
            h.changed += 1
        if status == "skipped":
            h.skipped += 1
        if status in ("failed", "unreachable"):
            if status == "failed":
                h.failed += 1
            else:
                h.unreachable += 1
            message = failure_message(res)
            h.failures.append(Failure(task, message))
            record["msg"] = message
        record["status"] = status
        record["duration"] = round(seconds, 3)
        if is_no_log(res):
            record["no_log"] = True
        elif res is not None:
            record["res"] = scrub(res)
        self.timings.append(TaskTiming(self.phase, host, task, seconds))
        self.progress.task_finished(self.phase, host, task, status, seconds)

    def results(self, limit: list[str]) -> dict[str, HostResult]:
        """Per-host results: Ansible's own recap when the run reached it, the live counts
        otherwise; every host of ``limit`` appears, even one no task ran on."""
        names = sorted(set(limit) | set(self.hosts) | set(_stat_hosts(self.stats)))
        out: dict[str, HostResult] = {}
        for name in names:
            live = self.hosts.get(name, _Host())
            if self.stats is not None:
                s = self.stats
                out[name] = HostResult(
                    name, ok=s["ok"].get(name, 0), changed=s["changed"].get(name, 0),
                    failed=s["failures"].get(name, 0), unreachable=s["dark"].get(name, 0),
                    skipped=s["skipped"].get(name, 0), failures=tuple(live.failures))
            else:
                out[name] = HostResult(name, live.ok, live.changed, live.failed,
                                       live.unreachable, live.skipped, tuple(live.failures))
        return out

    def fatal_error(self) -> str | None:
        """What Ansible said when it stopped outside any task (from its ``ERROR!`` on)."""
        lines = [*self.errors, *self.display]
        for i, line in enumerate(lines):
            if "ERROR!" in line:
                return "\n".join(lines[i:])[:MAX_TEXT]
        return "\n".join(lines)[-MAX_TEXT:] or None

    def slowest(self, n: int = SLOWEST) -> tuple[TaskTiming, ...]:
        """The ``n`` slowest task results of this run."""
        return tuple(sorted(self.timings, key=lambda t: -t.seconds)[:n])


def _stat_hosts(stats: dict[str, dict[str, int]] | None) -> set[str]:
    if stats is None:
        return set()
    return {h for counts in stats.values() for h in counts}


def slowest_tasks(events: Path, n: int = SLOWEST) -> list[TaskTiming]:
    """The ``n`` slowest task results recorded in an ``events.jsonl`` (for reports)."""
    timings: list[TaskTiming] = []
    with events.open() as fh:
        for line in fh:
            rec = json.loads(line)
            if rec.get("event") in _RESULT_EVENTS and "duration" in rec:
                timings.append(TaskTiming(rec["phase"], rec.get("host", ""),
                                          rec.get("task", ""), float(rec["duration"])))
    return sorted(timings, key=lambda t: -t.seconds)[:n]
