"""``provisioner certs check``: every certificate of a cluster and how long it has left.

Scope: a thin typer command over ``provisioner.certs_check``. The hosts are read over SSH
the way verify reads them (``providers.reach``: pinned host keys, one connection per host,
all hosts at once); nothing is changed anywhere.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from provisioner.certs_check import inventory, report, to_json, verdict
from provisioner.cli_options import SpecFile, StateDir
from provisioner.state import cluster_dir

app = typer.Typer(help="The cluster's certificates: where they are and when they expire.",
                  no_args_is_help=True)


@app.command("check")
def check(
    file: SpecFile,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print a list of objects: one per certificate (where, path, subject, "
        "issuer, sans, not_before, not_after, days_left, ca, status), then one per host or "
        "file that could not be read (where, path, status, detail, hint).")] = False,
    state_dir: StateDir = None,
    timeout: Annotated[float, typer.Option(
        help="Seconds for one SSH connection; a down host costs about this much.")] = 10.0,
) -> None:
    """List every certificate on every host (the files the plan installs, and the kubelet's
    rotated client pair) and in the state directory, soonest expiry first.

    Exit 0 when none expires within 30 days; 1 when one does (or has), or a host or file
    could not be read. Keys are never read: only certificate blocks leave the hosts.
    """
    from provisioner.cli import plan_or_exit  # the cli module imports this one
    from provisioner.verify.ssh import ParamikoRunner, ssh_settings

    plan = plan_or_exit(file)
    sdir = cluster_dir(plan.name, state_dir)
    now = datetime.now(UTC)
    runner = ParamikoRunner(ssh_settings(plan, sdir), timeout)
    try:
        inv = inventory(plan, sdir, runner, timeout + 20)
    finally:
        runner.close()
    if as_json:
        sys.stdout.write(to_json(inv, now))
        typer.echo(verdict(inv, now), err=True)  # stdout stays one JSON document
    else:
        sys.stdout.write(report(inv, sdir, now))
    if not inv.passed(now):
        raise typer.Exit(1)
