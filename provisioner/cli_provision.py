"""``provisioner provision`` and ``provisioner status``: converge hosts, show the last run.

Scope: thin typer commands over ``provisioner.provision``. ``provision`` shows a live table on a
terminal (plain lines otherwise), then a per-host summary; it exits 1 with the failing phase,
host, task and message when a phase fails, 2 on a bad ``--only``/``--skip``.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from provisioner.cli_options import SpecFile, StateDir, split_list
from provisioner.execute import LiveProgress, progress_for
from provisioner.provision import ProvisionError, ProvisionResult, last_summary, provision
from provisioner.state import ENV_ROOT, cluster_dir
from provisioner.verify import table as verify_table

app = typer.Typer(help="Converge hosts to a spec and show the last run.")
# Piped output (logs, CI) would otherwise be cut at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 120)
# Failure messages are long (host, task, message); wrapping them at 80 columns cuts paths.
err = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(message, markup=False, highlight=False)
    raise typer.Exit(code)


def summary_table(result: ProvisionResult) -> Table:
    """Per-host ok/changed/failed/unreachable/skipped over all phases that ran."""
    table = Table("host", "ok", "changed", "failed", "unreachable", "skipped", box=box.SIMPLE)
    for h in result.host_totals().values():
        table.add_row(h.host, str(h.ok), str(h.changed), str(h.failed), str(h.unreachable),
                      str(h.skipped))
    return table


@app.command("provision")
def provision_cmd(
    file: SpecFile,
    only: Annotated[list[str] | None, typer.Option(
        help="Run only these phases or sub-phases (comma list or repeated).")] = None,
    skip: Annotated[list[str] | None, typer.Option(
        help="Leave out these phases or sub-phases.")] = None,
    state_dir: StateDir = None,
    no_machines: Annotated[bool, typer.Option(
        "--no-machines", help="Do not bring the provider's machines up first (they are "
        "already running, or the hosts are static).")] = False,
    replace_identity: Annotated[bool, typer.Option(
        "--replace-identity", help="Push this state directory's CAs, service-account key "
        "and encryption key even onto hosts that hold another cluster's (refused "
        "otherwise).")] = False,
    trust_on_first_use: Annotated[bool, typer.Option(
        "--trust-on-first-use", help="For static hosts whose SSH host key no known_hosts "
        "file holds: record it in the cluster's state and print its fingerprint (a host "
        "presenting a key other than the recorded one is still refused).")] = False,
) -> None:
    """Converge the hosts: the selected phases' playbooks, in order, stopping at a failure."""
    progress = progress_for(out)
    try:
        with progress:
            result = provision(file, split_list(only), split_list(skip), state_dir, not no_machines,
                               progress, replace_identity, trust_on_first_use)
    except ProvisionError as exc:
        _fail(f"error: {exc}", exc.exit_code)
    if isinstance(progress, LiveProgress) or result.phases:
        out.print(summary_table(result))
    for phase, reason in result.skipped:
        out.print(f"skipped {phase}: {reason}", markup=False, highlight=False)
    word = "succeeded" if result.succeeded else "FAILED"
    out.print(f"provision {word}: {len(result.phases)} phases, {result.changed} changed tasks, "
              f"{result.seconds:.1f}s; run {result.run_dir}", markup=False, highlight=False)
    if result.verify:
        out.print(verify_table(list(result.verify)))
    if result.failure is not None:
        _fail(f"failed: {result.failure}")
    if result.admin_kubeconfig is not None:
        out.print(f"admin kubeconfig: {result.admin_kubeconfig} (secret, 0600); use it with\n"
                  f"  kubectl --kubeconfig {result.admin_kubeconfig} get nodes",
                  markup=False, highlight=False)


@app.command("status")
def status_cmd(file: SpecFile, state_dir: StateDir = None) -> None:
    """Show the machines (nspawn) and the last provision run's summary."""
    from provisioner.cli_machines import status_table
    from provisioner.providers.base import ProviderError
    from provisioner.providers.registry import provider_for
    from provisioner.spec import SpecError, load_file

    if state_dir is not None:
        os.environ[ENV_ROOT] = str(state_dir)
    try:
        cluster = load_file(file)
    except SpecError as exc:
        _fail(str(exc))
    if cluster.spec.provider.type == "nspawn":
        try:
            out.print(status_table(provider_for(cluster).status()))
        except ProviderError as exc:
            err.print(f"machines: {exc}", markup=False, highlight=False)
    summary = last_summary(cluster_dir(cluster.metadata.name, state_dir))
    if summary is None:
        out.print("no provision run yet")
        return
    word = "succeeded" if summary["succeeded"] else "FAILED"
    out.print(f"last run {summary['run_id']}: {word}, phases "
              f"{', '.join(p['phase'] for p in summary['phases']) or '-'}, "
              f"{summary['changed']} changed, {summary['seconds']:.1f}s",
              markup=False, highlight=False)
    if summary["failure"]:
        f = summary["failure"]
        out.print(f"  failed: phase {f['phase']}, host {f['host']}, task {f['task']!r}: "
                  f"{f['message']}", markup=False, highlight=False)
