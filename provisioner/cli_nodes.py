"""``provisioner node remove``: take worker nodes out of a running cluster.

Scope: a thin typer command over ``provisioner.nodes``: cordon, drain (PodDisruptionBudgets
respected, bounded by ``--timeout``), delete the Node object, reset the host. The node may
still be in the spec (remove it from the spec afterwards, or the next provision adds it
again) or already gone from it (it is reached as the last provision's spec describes it).
"""

from __future__ import annotations

from typing import Annotated

import typer

from provisioner.cli_options import SpecFile, StateDir, split_list
from provisioner.cli_provision import _fail, err, out
from provisioner.execute import progress_for
from provisioner.membership import DEFAULT_DRAIN_TIMEOUT
from provisioner.provision import ProvisionError

app = typer.Typer()


@app.command("remove")
def remove(
    file: SpecFile,
    nodes: Annotated[list[str], typer.Argument(
        metavar="NODE...", help="Worker nodes to remove (names as in the spec; comma lists "
        "work).")],
    timeout: Annotated[int, typer.Option(
        "--timeout", min=10, help="Seconds the drain may take before it stops; the node "
        "stays cordoned then and nothing else is changed.")] = DEFAULT_DRAIN_TIMEOUT,
    forget: Annotated[bool, typer.Option(
        "--forget", help="The host is gone for good (dead, unreachable): once its Node is "
        "deleted, drop it from the cluster's record even if its reset fails.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    state_dir: StateDir = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every task.")] = False,
) -> None:
    """Cordon, drain (respecting PodDisruptionBudgets) and delete worker nodes, then reset
    their hosts; SSH keeps working and the host is ready for a new provision."""
    from provisioner.cli import plan_or_exit
    from provisioner.nodes import remove_nodes

    plan = plan_or_exit(file)
    names = split_list(nodes) or []
    if not yes and not typer.confirm(
            f"Remove {', '.join(names)} from cluster {plan.name} (drain its pods, delete the "
            "Node, reset the host)?", err=True):
        _fail("node remove: not confirmed; nothing was changed")
    progress = progress_for(err, verbose=verbose)
    try:
        with progress:
            result = remove_nodes(file, state_dir, names, timeout, progress, forget)
    except ProvisionError as exc:
        _fail(f"error: {exc}")
    failed = result.failed
    if failed is not None:
        _fail(f"node remove FAILED ({failed.phase}): {failed.why()}")
    if result.forgotten and result.reset is not None:
        out.print(f"warning: the reset failed ({result.reset.result.why()}); the host was "
                  "forgotten as asked (--forget) and may still run what was installed",
                  markup=False, highlight=False)
    still = [n for n in names if n in {h.name for h in plan.hosts}]
    out.print(f"removed {', '.join(names)} from {plan.name} in {result.seconds:.1f}s: "
              "drained, Node deleted, host reset", markup=False, highlight=False)
    if still:
        out.print(f"now delete {', '.join(still)} from {file}: while the spec names "
                  f"{'them' if len(still) > 1 else 'it'}, the next provision adds "
                  f"{'them' if len(still) > 1 else 'it'} back", markup=False, highlight=False)
