"""``provisioner verify FILE``: named health checks of the whole cluster.

Scope: a thin typer command over ``provisioner.verify``. Prints a table (or ``--json``), can
also write ``--junit FILE``; exits 1 when any check fails (warn and skipped do not), 2 on an
unknown ``--only`` check or ``--probe-from`` node, 1 on an invalid spec.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from provisioner.cli_options import SpecFile, split_list
from provisioner.plan import build_plan
from provisioner.spec import SpecError, load_file
from provisioner.state import cluster_dir
from provisioner.verify import (
    UnknownCheckError,
    UnknownNodeError,
    check_names,
    exit_code,
    summary_line,
    table,
    to_json,
    to_junit,
    verify,
)
from provisioner.verify.api import ApiUnavailable
from provisioner.verify.run import build_context
from provisioner.verify.smoke import Step, run_smoke

app = typer.Typer(help="Check the health of a provisioned cluster.")
# Piped output (logs, CI) would otherwise be cut at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int) -> NoReturn:
    err.print(message, markup=False, highlight=False)
    raise typer.Exit(code)


@app.command("verify")
def verify_cmd(
    file: SpecFile,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the results as JSON (stable: no timestamps or durations).")
    ] = False,
    junit: Annotated[Path | None, typer.Option(
        "--junit", metavar="FILE", help="Also write the results as JUnit XML to FILE.",
        show_default=False)] = None,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="State root (default $PROVISIONER_STATE_DIR or ~/.provisioner).",
        show_default=False)] = None,
    only: Annotated[list[str] | None, typer.Option(
        "--only", metavar="CHECK", help="Run only these checks (comma list or repeated): "
        + ", ".join(check_names()) + ".", show_default=False)] = None,
    timeout: Annotated[float, typer.Option(
        help="Seconds for one connection or command; a down host costs about this much.")
    ] = 5.0,
    probe_from: Annotated[list[str] | None, typer.Option(
        "--probe-from", metavar="NODE", help="Run the pod-network probe's clients on these "
        "nodes only (comma list or repeated; default every node): each still reaches the "
        "pods on every other node, both ways. What provision does after it only added "
        "nodes.", show_default=False)] = None,
) -> None:
    """Run the named checks (SSH, units, etcd, certificates, apiserver, scheduler,
    controller-manager, nodes, CoreDNS, smoke deployment); exit 1 if any fails."""
    try:
        cluster = load_file(file)
    except SpecError as exc:
        _fail(str(exc), 1)
    plan = build_plan(cluster)
    sdir = cluster_dir(plan.name, state_dir)
    try:
        results = verify(plan, sdir, split_list(only), timeout=timeout,
                         probe_nodes=split_list(probe_from))
    except (UnknownCheckError, UnknownNodeError) as exc:
        _fail(str(exc), 2)
    if junit is not None:
        junit.write_text(to_junit(plan.name, results))
    if as_json:
        sys.stdout.write(to_json(plan.name, results))
    else:
        out.print(table(results))
        out.print(summary_line(results), markup=False, highlight=False)
    raise typer.Exit(exit_code(results))


# A separate app, so that `cli_verify.app` stays a single-command app (its tests call it so).
smoke_app = typer.Typer()


@smoke_app.command("smoke")
def smoke_cmd(
    file: SpecFile,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="State root (default $PROVISIONER_STATE_DIR or ~/.provisioner).",
        show_default=False)] = None,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait for the pods to come up.")] = 120.0,
) -> None:
    """The seeds' example end to end: create deployment web from <registry>/nginx, expose
    it, fetch the page by Service name from a pod on another node, then clean up; exit 1
    if a step fails."""
    try:
        cluster = load_file(file)
    except SpecError as exc:
        _fail(str(exc), 1)
    plan = build_plan(cluster)
    ctx = build_context(plan, cluster_dir(plan.name, state_dir))

    def show(step: Step) -> None:
        mark = "ok" if step.ok else "FAIL"
        out.print(f"{mark:>4}  {step.name}: {step.detail}", markup=False, highlight=False)

    try:
        passed = run_smoke(plan, ctx.api, timeout, show)
    except ApiUnavailable as exc:
        _fail(f"smoke: {exc}. Fix: provision the cluster first, then run smoke again.", 1)
    finally:
        ctx.ssh.close()
    out.print(f"smoke: {'passed' if passed else 'FAILED'} on cluster {plan.name}",
              markup=False, highlight=False)
    raise typer.Exit(0 if passed else 1)
