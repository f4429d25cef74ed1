"""``provisioner reset``: take the cluster down and leave each host ready for a new provision.

Scope: a thin typer command over ``playbooks/reset.yml`` through the day-2 pipeline
(``provisioner.day2``). It removes what the project installed (services, files, binaries,
pods and containerd's state, kube-proxy's iptables rules, the pod network's interfaces and
routes) and keeps SSH, the host's own packages and, with ``--keep-etcd-data``, the etcd data.
The cluster's CA and keys stay in the state directory, so a new provision makes the same
cluster again.
"""

from __future__ import annotations

from typing import Annotated

import typer

from provisioner.artifacts.bundle import removal_extravars
from provisioner.cli_options import SpecFile, StateDir, split_list
from provisioner.cli_provision import _fail, err, out
from provisioner.day2 import run_day2
from provisioner.execute import progress_for
from provisioner.plan import Plan
from provisioner.provision import ProvisionError

app = typer.Typer()


@app.command("reset")
def reset(
    file: SpecFile,
    keep_etcd_data: Annotated[bool, typer.Option(
        "--keep-etcd-data", help="Leave /var/lib/etcd on the members: the next provision "
        "starts the same etcd cluster again.")] = False,
    hosts: Annotated[list[str] | None, typer.Option(
        "--hosts", help="Only these hosts (comma list or repeated; default: all).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    state_dir: StateDir = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every task.")] = False,
) -> None:
    """Stop and remove what provision installed on the hosts; SSH keeps working."""
    from provisioner.cli import plan_or_exit

    plan = plan_or_exit(file)
    names = [h.name for h in plan.hosts]
    chosen = split_list(hosts) or names
    unknown = [h for h in chosen if h not in names]
    if unknown:
        _fail(f"error: --hosts {', '.join(unknown)}: not in the spec; its hosts are "
              + ", ".join(names), 2)
    data = "kept" if keep_etcd_data else "DELETED"
    if not yes and not typer.confirm(
            f"Reset {', '.join(chosen)} of cluster {plan.name} (services, files, binaries, "
            f"pods; etcd data {data})?", err=True):
        _fail("reset: not confirmed; nothing was changed")
    progress = progress_for(err, verbose=verbose)

    def extravars(p: Plan, sdir: object, run_id: str) -> dict[str, object]:
        # What the roles remove: the packaged manifest's install lists (the lab found every
        # binary left when reset had none).
        return {"reset_etcd_data": not keep_etcd_data, **removal_extravars(p)}

    try:
        with progress:
            run = run_day2(file, state_dir, "reset.yml", "reset", lambda p: chosen,
                           extravars, progress)
    except ProvisionError as exc:
        _fail(f"error: reset: {exc}")
    result = run.result
    if not result.succeeded:
        _fail(f"reset FAILED: {result.why()}; run it again to finish (run {run.run_dir})")
    out.print(f"reset {len(chosen)} host(s) of {plan.name} in {result.seconds:.1f}s, "
              f"{result.changed} changes; etcd data {data.lower()}; the CA and keys stay in "
              "the state directory", markup=False, highlight=False)
