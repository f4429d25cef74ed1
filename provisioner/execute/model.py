"""What a playbook run produced: per-host counts, failures and task timings.

Scope: immutable records only, filled by ``execute.events`` from ansible-runner events and
read by the provision flow, the progress view and the run summary. Counts follow Ansible's
recap: ``ok`` counts every successful task result, ``changed`` the subset that changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Failure(NamedTuple):
    """One failed task on one host: what ran and what it said (never a no_log payload)."""

    task: str
    message: str


class TaskTiming(NamedTuple):
    """How long one task took on one host."""

    phase: str
    host: str
    task: str
    seconds: float


@dataclass(frozen=True)
class HostResult:
    """One host's outcome of one phase (Ansible's recap counters plus the failures)."""

    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    failures: tuple[Failure, ...] = ()

    @property
    def succeeded(self) -> bool:
        """No failed and no unreachable task."""
        return self.failed == 0 and self.unreachable == 0

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready data."""
        return {
            "host": self.host, "ok": self.ok, "changed": self.changed, "failed": self.failed,
            "unreachable": self.unreachable, "skipped": self.skipped,
            "failures": [{"task": f.task, "message": f.message} for f in self.failures],
        }  # fmt: skip


@dataclass(frozen=True)
class PhaseResult:
    """The outcome of one playbook run for one phase."""

    phase: str
    playbook: str
    status: str
    """ansible-runner's status: ``successful``, ``failed``, ``timeout`` or ``canceled``."""
    rc: int
    seconds: float
    hosts: dict[str, HostResult]
    slowest: tuple[TaskTiming, ...] = ()
    error: str | None = None
    """Why the run failed when no host failure explains it (syntax error, bad inventory)."""
    settings: dict[str, str] = field(default_factory=dict)
    """The Ansible settings the run actually used (speed-relevant ones only, no secrets)."""

    @property
    def succeeded(self) -> bool:
        """The playbook finished and no host failed or was unreachable."""
        return self.status == "successful" and all(h.succeeded for h in self.hosts.values())

    @property
    def changed(self) -> int:
        """Changed tasks over all hosts."""
        return sum(h.changed for h in self.hosts.values())

    def failures(self) -> list[tuple[str, str, str]]:
        """Every (host, task, message), hosts in name order."""
        return [(h.host, f.task, f.message)
                for h in sorted(self.hosts.values(), key=lambda h: h.host) for f in h.failures]

    def why(self) -> str:
        """Why the run failed, in one line: its error, else the first "host: task: message"."""
        if self.error:
            return self.error
        first = next(iter(self.failures()), None)
        return ": ".join(first) if first else f"{self.playbook} failed"

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready data (what ``summary.json`` holds per phase)."""
        return {
            "phase": self.phase,
            "playbook": self.playbook,
            "status": self.status,
            "rc": self.rc,
            "seconds": round(self.seconds, 3),
            "succeeded": self.succeeded,
            "changed": self.changed,
            "error": self.error,
            "hosts": {name: h.to_json() for name, h in sorted(self.hosts.items())},
            "slowest": [t._asdict() for t in self.slowest],
            "settings": self.settings,
        }
