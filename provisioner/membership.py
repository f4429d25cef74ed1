"""The cluster as last provisioned, and taking worker nodes out of it.

Scope: ``<cluster>/applied.json`` (0600) records, after every provision whose phases all
succeeded, the spec text it converged, the spec's folder and each host's roles. A later
provision compares the spec with it: a host that left the spec is still a node of the
cluster (its kubelet registered, its pods run), so provision refuses to drop it silently and
names the two ways out: ``provisioner node remove FILE NODE`` or ``provision --prune``.

Removing a node cordons it, drains it through the eviction API (PodDisruptionBudgets are
respected; the drain gives up after a timeout and leaves the node cordoned), deletes its Node
object and resets the host (``playbooks/reset.yml`` on that host only). The host is reached
as the recorded spec describes it when it is no longer in the current one. A control-plane
node also stops serving (the load balancers' health checks move away during the apiserver's
shutdown delay) and its etcd member is removed from a remaining one, only while every
remaining member is healthy, one member at a time; its data is set aside on the host.
Dedicated etcd hosts are refused with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.plan import Plan, build_plan
from provisioner.spec import SpecError
from provisioner.spec.load import parse
from provisioner.spec.topology import Role
from provisioner.state import write_private

APPLIED_FILE = "applied.json"
DEFAULT_DRAIN_TIMEOUT = 300


class MembershipError(ValueError):
    """A membership change that cannot be made; nothing was changed."""


@dataclass(frozen=True)
class Applied:
    """What the last successful provision converged."""

    spec: str
    spec_dir: str
    version: str
    hosts: dict[str, list[str]]  # name -> roles
    addresses: dict[str, str] = field(default_factory=dict)  # name -> address (may be absent)

    def plan(self) -> Plan:
        """The plan of the recorded spec (its files resolved from its own folder)."""
        try:
            return build_plan(parse(self.spec, "the cluster as last provisioned",
                                    Path(self.spec_dir)))
        except SpecError as exc:
            raise MembershipError(
                f"the recorded spec of the last provision no longer loads ({exc}); remove "
                "the host from the cluster by hand (kubectl drain, kubectl delete node, "
                "provisioner reset --hosts with a spec that still names it)") from None


def read_applied(sdir: Path) -> Applied | None:
    """The record of the last successful provision (None before the first one)."""
    try:
        data = json.loads((sdir / APPLIED_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("hosts"), dict):
        return None
    addresses = data.get("addresses")
    return Applied(str(data.get("spec", "")), str(data.get("specDir", "")),
                   str(data.get("kubernetesVersion", "")),
                   {str(k): [str(r) for r in v] for k, v in data["hosts"].items()},
                   {str(k): str(v) for k, v in addresses.items()}
                   if isinstance(addresses, dict) else {})


def _roles(plan: Plan) -> dict[str, list[str]]:
    return {h.name: sorted(r.value for r in h.machine.roles) for h in plan.hosts}


def write_applied(sdir: Path, plan: Plan, spec_file: Path) -> None:
    """Record ``plan`` (from ``spec_file``) as what the cluster now is."""
    record: dict[str, Any] = {
        "spec": spec_file.read_text(encoding="utf-8", errors="replace"),
        "specDir": str(spec_file.resolve().parent),
        "kubernetesVersion": plan.version,
        "hosts": _roles(plan),
        "addresses": {h.name: str(h.address) for h in plan.hosts},
    }
    write_private(sdir / APPLIED_FILE, (json.dumps(record, indent=1) + "\n").encode())


def forget_hosts(sdir: Path, names: list[str]) -> None:
    """Drop removed hosts from the record (the rest of it stays as it was)."""
    applied = read_applied(sdir)
    if applied is None:
        return
    record = {"spec": applied.spec, "specDir": applied.spec_dir,
              "kubernetesVersion": applied.version,
              "hosts": {h: r for h, r in applied.hosts.items() if h not in names},
              "addresses": {h: a for h, a in applied.addresses.items() if h not in names}}
    write_private(sdir / APPLIED_FILE, (json.dumps(record, indent=1) + "\n").encode())


def left_spec(plan: Plan, applied: Applied | None) -> list[str]:
    """Hosts of the cluster as last provisioned that the spec no longer names."""
    if applied is None:
        return []
    names = {h.name for h in plan.hosts}
    return sorted(h for h in applied.hosts if h not in names)


def moved(plan: Plan, applied: Applied | None) -> str | None:
    """Why provision stops when a host of the cluster would get another address (generated
    machines are numbered in order: a larger control plane moves the machines after it),
    or None."""
    if applied is None:
        return None
    recorded = applied.addresses
    if not recorded:  # a record written before addresses were kept: the spec tells them
        try:
            recorded = {h.name: str(h.address) for h in applied.plan().hosts}
        except MembershipError:
            return None
    shifts = [(h.name, recorded[h.name], str(h.address)) for h in plan.hosts
              if h.name in recorded and recorded[h.name] != str(h.address)]
    if not shifts:
        return None
    lines = [f"  {n}: {old} -> {new}" for n, old, new in shifts]
    return (f"cluster {plan.name}: the spec gives {len(shifts)} host(s) of the running cluster "
            "another address, which would break them, so nothing was changed:\n"
            + "\n".join(lines) + "\n"
            "Fix: generated machines are numbered control plane first, then dedicated etcd, "
            "then workers, so growing the control plane moves the others unless "
            "spec.provider.controlPlaneSlots kept room for it when the cluster was made; put "
            "the spec back, or remove the moved hosts first (`provisioner node remove FILE "
            "NODE`) and add them again.")


def refusal(plan: Plan, gone: list[str], applied: Applied) -> str:
    """Why provision stops when hosts left the spec, and the fix."""
    lines = [f"  {h} ({', '.join(applied.hosts.get(h, [])) or 'no roles'})" for h in gone]
    return (f"cluster {plan.name}: {len(gone)} host(s) were provisioned but are no longer in "
            "the spec; provision does not drop nodes silently, so nothing was changed:\n"
            + "\n".join(lines) + "\n"
            f"Fix: remove them from the cluster first: `provisioner node remove FILE "
            f"{gone[0]}` (cordon, drain respecting PodDisruptionBudgets, delete the Node, "
            "reset the host; add --forget for a host that is gone for good), or provision "
            "with --prune to do that for every host listed; or put them back into the spec.")


@dataclass(frozen=True)
class Removal:
    """Which plan reaches the hosts to remove, and its first control-plane node."""

    plan: Plan
    names: list[str]
    kubectl_host: str
    recorded: bool  # True: the hosts are reached as the last provision's spec describes them
    spec_dir: Path | None = None  # the recorded spec's folder, when ``recorded``
    control_plane: tuple[str, ...] = ()  # of ``names``, the control-plane nodes
    etcd: tuple[str, ...] = ()  # of ``names``, the (stacked) etcd members


def removal(plan: Plan, applied: Applied | None, names: list[str]) -> Removal:
    """Check that ``names`` can be removed (workers, and control-plane nodes with their
    stacked etcd member, as long as one of each is left) and pick the plan that reaches them
    and the control-plane node that drains them; ``MembershipError`` (nothing changed)
    otherwise."""
    if not names:
        raise MembershipError("name at least one node to remove")
    current = {h.name for h in plan.hosts}
    source = plan
    recorded = False
    spec_dir: Path | None = None
    if not set(names) <= current:
        old = applied.plan() if applied is not None else None
        known = {h.name for h in old.hosts} if old is not None else set()
        unknown = [n for n in names if n not in current and n not in known]
        if unknown or old is None:
            listed = sorted(current | set(applied.hosts if applied else {}))
            raise MembershipError(
                f"{', '.join(unknown or names)}: not a host of the spec or of the cluster as "
                f"last provisioned; its hosts are {', '.join(listed)}")
        source, recorded = old, True
        spec_dir = Path(applied.spec_dir) if applied is not None else None
    by_name = {h.name: h for h in source.hosts}
    unplanned = [n for n in names if n not in by_name]
    if unplanned:
        raise MembershipError(
            f"{', '.join(unplanned)} and {', '.join(n for n in names if n in by_name)} are "
            "not in the same spec (the current one, or the one last provisioned); remove "
            "them in separate runs")
    for name in names:
        roles = by_name[name].machine.roles
        if Role.ETCD in roles and Role.CONTROL_PLANE not in roles:
            raise MembershipError(
                f"{name} is a dedicated etcd host; removing one is not supported yet (only "
                "workers and control-plane nodes with their stacked etcd member are), so "
                "nothing was changed: keep it in the spec.")
    remaining_cps = [h for h in source.control_plane if h.name not in names]
    if not remaining_cps:
        raise MembershipError("no control-plane node would be left to drain from; keep at "
                              "least one in the spec")
    members = [h.name for h in source.etcd]
    if members and not [m for m in members if m not in names]:
        raise MembershipError("no etcd member would be left: the cluster's data lives there")
    left_nodes = [h.name for h in plan.nodes if h.name not in names]
    if not left_nodes:
        raise MembershipError("removing every node would leave nowhere for the pods to go")
    return Removal(source, list(names), remaining_cps[0].name, recorded, spec_dir,
                   tuple(n for n in names if by_name[n].machine.is_control_plane),
                   tuple(n for n in names if by_name[n].machine.is_etcd))
