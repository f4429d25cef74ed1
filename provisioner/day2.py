"""Day-2 playbooks through the provision pipeline: the same render, logins and executor.

Scope: ``run_day2`` runs one playbook of ``playbooks/`` (an etcd backup, a restore step) on
the spec's hosts with what ``provision`` uses: the cluster lock, the rendered private data
dir, the pinned SSH host keys and a run directory with its events. It never converges
anything by itself; callers say which hosts and what extra variables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.execute import PhaseResult, ProgressSink
from provisioner.execute.runner import rendered_envvars, run_playbook
from provisioner.plan import Plan
from provisioner.providers.connections import read_connections
from provisioner.providers.reach import reach, trusted_files
from provisioner.provision import (
    cluster_lock,
    new_run_id,
    pinned_ssh_args,
    plan_and_select,
    render_state,
)
from provisioner.state import cluster_dir, private_dir


@dataclass(frozen=True)
class Day2Run:
    """A finished day-2 playbook: the plan, its result and where its run is recorded."""

    plan: Plan
    result: PhaseResult
    run_dir: Path
    run_id: str


def run_day2(spec_file: Path, state_dir: Path | None, playbook: str, name: str,
             hosts: Callable[[Plan], list[str]], extravars: Callable[[Plan, Path, str],
                                                                     dict[str, Any]],
             progress: ProgressSink) -> Day2Run:
    """Run ``playbook`` on ``hosts(plan)``; ``extravars(plan, state_dir, run_id)`` adds
    variables. Raises ``ProvisionError`` when the run cannot start (spec, lock, PKI)."""
    plan, _ = plan_and_select(spec_file, None, None, state_dir)
    sdir = cluster_dir(plan.name, state_dir)
    with cluster_lock(sdir):
        connections = read_connections(sdir)
        reaches = reach(plan, sdir, connections)
        rendered, _ = render_state(plan, sdir, spec_file.resolve().parent, connections)
        pdd = rendered / "runner"
        run_id = new_run_id()
        run_dir = private_dir(sdir / "runs" / run_id)
        variables = {
            "ansible_ssh_args": pinned_ssh_args(
                rendered_envvars(pdd).get("ANSIBLE_SSH_ARGS", ""), trusted_files(reaches)),
            "provisioner_run_id": run_id,
            # The roles' file lists (reset removes what the manifests name) read it.
            "provisioner_rendered_dir": str((rendered / "hosts").resolve()),
            **extravars(plan, sdir, run_id),
        }
        result = run_playbook(pdd, playbook, hosts(plan), variables, run_dir, name, progress)
    return Day2Run(plan, result, run_dir, run_id)
