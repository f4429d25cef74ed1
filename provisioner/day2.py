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
    scratch_render,
)
from provisioner.render.tree import write_tree
from provisioner.state import cluster_dir, private_dir


@dataclass(frozen=True)
class Day2Run:
    """A finished day-2 playbook: the plan, its result and where its run is recorded."""

    plan: Plan
    result: PhaseResult
    run_dir: Path
    run_id: str


def run_rendered(plan: Plan, sdir: Path, spec_dir: Path, out: Path, playbook: str, name: str,
                 hosts: list[str], extravars: dict[str, Any], progress: ProgressSink,
                 run_id: str | None = None, scratch: bool = False) -> Day2Run:
    """Render ``plan`` into ``out`` (its inventory and host files) and run ``playbook`` on
    ``hosts`` with the pinned logins; the caller holds the cluster lock. With ``scratch`` the
    state's PKI is left as it is (``scratch_render``): node removal renders the cluster as
    last provisioned this way, into a directory of its own next to the spec's ``rendered/``."""
    connections = read_connections(sdir)
    reaches = reach(plan, sdir, connections)
    if scratch:
        write_tree(scratch_render(plan, sdir, spec_dir, connections), out)
        rendered = out
    else:
        rendered, _ = render_state(plan, sdir, spec_dir, connections, out)
    pdd = rendered / "runner"
    run_id = run_id or new_run_id()
    run_dir = private_dir(sdir / "runs" / run_id)
    variables = {
        "ansible_ssh_args": pinned_ssh_args(
            rendered_envvars(pdd).get("ANSIBLE_SSH_ARGS", ""), trusted_files(reaches)),
        "provisioner_run_id": run_id,
        # The roles' file lists (reset removes what the manifests name) read it.
        "provisioner_rendered_dir": str((rendered / "hosts").resolve()),
        **extravars,
    }
    result = run_playbook(pdd, playbook, hosts, variables, run_dir, name, progress)
    return Day2Run(plan, result, run_dir, run_id)


def run_day2(spec_file: Path, state_dir: Path | None, playbook: str, name: str,
             hosts: Callable[[Plan], list[str]], extravars: Callable[[Plan, Path, str],
                                                                     dict[str, Any]],
             progress: ProgressSink, held: bool = False) -> Day2Run:
    """Run ``playbook`` on ``hosts(plan)``; ``extravars(plan, state_dir, run_id)`` adds
    variables. Raises ``ProvisionError`` when the run cannot start (spec, lock, PKI).
    ``held``: the caller holds the cluster lock already."""
    plan, _ = plan_and_select(spec_file, None, None, state_dir)
    sdir = cluster_dir(plan.name, state_dir)
    with cluster_lock(sdir, held):
        run_id = new_run_id()
        return run_rendered(plan, sdir, spec_file.resolve().parent, sdir / "rendered",
                            playbook, name, hosts(plan), extravars(plan, sdir, run_id),
                            progress, run_id)
