"""The verify data model: check records, their results and the context checks receive.

Scope: plain immutable records plus two small helpers (``Outcome`` constructors and a
thread-safe memo). A check is a named record with a ``targets`` function (the hosts it looks
at, or ``cluster``) and a ``run`` function that maps one target to an ``Outcome``; the runner
in ``provisioner.verify.run`` turns outcomes into ``CheckResult`` rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar, cast

if TYPE_CHECKING:
    from provisioner.plan.model import HostPlan, Plan
    from provisioner.verify.api import ApiClient
    from provisioner.verify.ssh import SshRunner
    from provisioner.verify.transport import HttpsClient

Status = Literal["ok", "warn", "fail", "skipped"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "fail", "skipped")
CLUSTER = "cluster"  # the target of checks about the whole cluster rather than one host

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What a check found about one target."""

    status: Status
    evidence: str
    hint: str = ""


def ok(evidence: str) -> Outcome:
    """A passing outcome."""
    return Outcome("ok", evidence)


def warn(evidence: str, hint: str) -> Outcome:
    """Works, but needs attention soon."""
    return Outcome("warn", evidence, hint)


def fail(evidence: str, hint: str) -> Outcome:
    """Broken: verify exits non-zero."""
    return Outcome("fail", evidence, hint)


def skipped(reason: str) -> Outcome:
    """The check cannot run here; ``reason`` says why."""
    return Outcome("skipped", reason)


@dataclass(frozen=True)
class CheckResult:
    """One row of the verify report: a check's verdict on one target."""

    name: str
    status: Status
    target: str  # a host name or ``cluster``
    evidence: str
    hint: str
    # Wall seconds the check took on this target (benchmarks read it; not in --json).
    seconds: float = field(default=0.0, compare=False)

    def to_json(self) -> dict[str, str]:
        """Plain data for ``--json`` (no timestamps or durations: output is stable)."""
        return {"name": self.name, "target": self.target, "status": self.status,
                "evidence": self.evidence, "hint": self.hint}


class Memo:
    """Values computed once per verify run and shared between checks and threads.

    Two checks that need the same probe (etcd member status, the node list) wait for one
    computation instead of each paying a timeout against a down host.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._values: dict[str, tuple[bool, object]] = {}

    def get(self, key: str, compute: Callable[[], T]) -> T:
        """The value under ``key``, computing it on first use; a raised error is replayed."""
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            if key not in self._values:
                try:
                    self._values[key] = (True, compute())
                except Exception as exc:
                    self._values[key] = (False, exc)
            good, value = self._values[key]
        if not good:
            raise cast(Exception, value)
        return cast(T, value)


@dataclass(frozen=True)
class VerifyContext:
    """Everything a check may use; built once per run by ``provisioner.verify.run``."""

    plan: Plan
    state_dir: Path  # the cluster's state directory (pki/, admin.kubeconfig)
    ssh: SshRunner
    https: HttpsClient
    api: ApiClient
    memo: Memo
    now: datetime  # UTC; injected so expiry checks are testable
    timeout: float  # seconds for one connection or command
    workload_timeout: float  # seconds to wait for the smoke deployment
    # The nodes whose pods run the pod-network probe's clients (None: every node). A
    # provision that only added nodes probes from them alone (``probe_targets``).
    probe_nodes: tuple[str, ...] | None = None

    @property
    def pki_dir(self) -> Path:
        """``<state>/pki``."""
        return self.state_dir / "pki"

    def host(self, name: str) -> HostPlan:
        """The planned host called ``name``."""
        return self.plan.host(name)


@dataclass(frozen=True)
class Check:
    """A named health check: stable ``name`` (``--only``, JSON, JUnit), what it looks at."""

    name: str
    description: str
    targets: Callable[[VerifyContext], tuple[str, ...]]
    run: Callable[[VerifyContext, str], Outcome]


def cluster_target(ctx: VerifyContext) -> tuple[str, ...]:
    """Targets of a whole-cluster check."""
    return (CLUSTER,)


def all_hosts(ctx: VerifyContext) -> tuple[str, ...]:
    """Every host of the plan."""
    return tuple(h.name for h in ctx.plan.hosts)


def control_plane_hosts(ctx: VerifyContext) -> tuple[str, ...]:
    """Control-plane hosts."""
    return tuple(h.name for h in ctx.plan.control_plane)


def node_hosts(ctx: VerifyContext) -> tuple[str, ...]:
    """Hosts running kubelet."""
    return tuple(h.name for h in ctx.plan.nodes)


def probe_targets(ctx: VerifyContext) -> tuple[str, ...]:
    """The nodes the pod-network probe's clients run on: ``ctx.probe_nodes``, else every
    node."""
    if ctx.probe_nodes is None:
        return node_hosts(ctx)
    return tuple(h.name for h in ctx.plan.nodes if h.name in ctx.probe_nodes)


def etcd_hosts(ctx: VerifyContext) -> tuple[str, ...]:
    """etcd members."""
    return tuple(h.name for h in ctx.plan.etcd)
