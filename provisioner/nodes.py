"""Removing nodes: ``provisioner node remove`` and ``provision --prune``.

Scope: runs ``playbooks/node-remove.yml`` (cordon, drain respecting PodDisruptionBudgets,
delete the Node; for a control-plane node also stop its control plane and remove its etcd
member) from the first remaining control-plane node, then ``playbooks/reset.yml`` on the
removed hosts, through the day-2 pipeline, and drops them from the record of the cluster
(``provisioner.membership``). Hosts no longer in the spec are reached as the last
provision's spec describes them, rendered into ``<cluster>/rendered-removal`` without
touching the state's PKI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provisioner.artifacts.bundle import removal_extravars
from provisioner.day2 import Day2Run, run_rendered
from provisioner.execute import PhaseResult, ProgressSink
from provisioner.membership import (
    Applied,
    MembershipError,
    Removal,
    forget_hosts,
    read_applied,
    removal,
)
from provisioner.plan import Plan
from provisioner.provision import ProvisionError, cluster_lock, new_run_id, plan_and_select
from provisioner.state import cluster_dir

REMOVAL_DIR = "rendered-removal"


@dataclass(frozen=True)
class RemoveResult:
    """What a removal did: the drain run, the reset run (None when the drain failed)."""

    removal: Removal
    drain: Day2Run
    reset: Day2Run | None
    forgotten: bool = False  # the reset failed, and the hosts were dropped from the record

    @property
    def failed(self) -> PhaseResult | None:
        """The run that failed, if one did (a reset of forgotten hosts does not count)."""
        if not self.drain.result.succeeded:
            return self.drain.result
        if self.reset is not None and not self.reset.result.succeeded and not self.forgotten:
            return self.reset.result
        return None

    @property
    def seconds(self) -> float:
        """Both runs' time."""
        return self.drain.result.seconds + (self.reset.result.seconds if self.reset else 0.0)


def plan_removal(plan: Plan, sdir: Path, names: list[str],
                 applied: Applied | None = None) -> Removal:
    """The checked removal of ``names`` (``ProvisionError`` naming the problem otherwise)."""
    try:
        return removal(plan, applied if applied is not None else read_applied(sdir), names)
    except MembershipError as exc:
        raise ProvisionError(f"node remove: {exc}") from None


def remove_locked(chosen: Removal, sdir: Path, spec_dir: Path, timeout: int,
                  progress: ProgressSink, forget: bool = False) -> RemoveResult:
    """Drain and delete the nodes, then reset their hosts; the caller holds the lock.
    ``forget``: hosts that are gone for good are dropped from the record even when their
    reset fails (once their Node objects are deleted)."""
    plan = chosen.plan
    out = sdir / (REMOVAL_DIR if chosen.recorded else "rendered")
    run_id = new_run_id()
    # The control-plane nodes being removed are in this run too: they stop serving, and
    # their etcd members' data is set aside once the members are removed.
    drain = run_rendered(plan, sdir, spec_dir, out, "node-remove.yml", "node-remove",
                         [chosen.kubectl_host, *chosen.control_plane],
                         {"node_remove_names": chosen.names,
                          "node_remove_timeout": timeout,
                          "node_remove_control_plane": list(chosen.control_plane),
                          "node_remove_etcd": list(chosen.etcd),
                          "node_remove_forget": forget,
                          "kube_first_control_plane": chosen.kubectl_host},
                         progress, run_id + "-drain", scratch=chosen.recorded)
    if not drain.result.succeeded:
        return RemoveResult(chosen, drain, None)
    reset = run_rendered(plan, sdir, spec_dir, out, "reset.yml", "reset", chosen.names,
                         {"reset_etcd_data": False, **removal_extravars(plan)}, progress,
                         run_id + "-reset", scratch=chosen.recorded)
    if reset.result.succeeded or forget:
        forget_hosts(sdir, chosen.names)
    return RemoveResult(chosen, drain, reset, forget and not reset.result.succeeded)


def remove_nodes(spec_file: Path, state_dir: Path | None, names: list[str], timeout: int,
                 progress: ProgressSink, forget: bool = False) -> RemoveResult:
    """``provisioner node remove``: check, then remove under the cluster lock."""
    plan, _ = plan_and_select(spec_file, None, None, state_dir)
    sdir = cluster_dir(plan.name, state_dir)
    with cluster_lock(sdir):
        chosen = plan_removal(plan, sdir, names)
        return remove_locked(chosen, sdir, chosen.spec_dir or spec_file.resolve().parent,
                             timeout, progress, forget)
