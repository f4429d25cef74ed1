"""``provisioner certs check|renew``: every certificate of a cluster, how long it has left,
and new ones rolled out.

Scope: thin typer commands. ``check`` is ``provisioner.certs_check``: the hosts are read
over SSH the way verify reads them (``providers.reach``: pinned host keys, one connection
per host, all hosts at once); nothing is changed anywhere. ``renew`` is
``provisioner.certs_renew``: the leaves are re-issued in the state directory, then each phase
that installs one is a ``provision`` of that phase alone, so the restarts are the rolling
ones a provision does and the apiserver is served through the load balancer throughout.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from provisioner.certs_check import inventory, report, to_json, verdict
from provisioner.certs_renew import (
    STATE_ONLY,
    RenewError,
    availability_notes,
    current_expiry,
    leaf_phases,
    renew_certificates,
    rollout_phases,
    select_leaves,
)
from provisioner.cli_options import SpecFile, StateDir, split_list
from provisioner.cli_provision import _fail, err, out
from provisioner.execute import progress_for
from provisioner.provision import ProvisionError, provision
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


def _say(text: str) -> None:
    out.print(text, markup=False, highlight=False, soft_wrap=True)


def _stamp(when: datetime | None) -> str:
    return f"{when:%Y-%m-%dT%H:%M:%SZ}" if when is not None else "(none yet)"


def _certificates(n: int) -> str:
    return f"{n} certificate" if n == 1 else f"{n} certificates"


@app.command("renew")
def renew(
    file: SpecFile,
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="Renew only these certificates (store names as `--dry-run` lists "
        "them, e.g. apiserver,etcd/server-cp1; comma list or repeated; default: every leaf "
        "certificate). CAs and the service-account key are never renewed here.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List the certificates that would be renewed, their current "
        "expiry and the phases that would install them; change nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    state_dir: StateDir = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Show every task of each phase.")] = False,
) -> None:
    """Re-issue the leaf certificates (new keys, new expiry; the CAs are kept) and roll them
    out one phase at a time: etcd members and apiservers restart one node at a time, haproxy
    reloads, so the apiserver stays served through the load balancer.

    Stopped anywhere, the renewed certificates are already in the state directory: a
    `provisioner provision FILE` (or this command again) finishes the rollout. CA rotation is
    not done yet.
    """
    from provisioner.cli import plan_or_exit  # the cli module imports this one

    plan = plan_or_exit(file)
    try:
        names = select_leaves(plan, split_list(only))
    except RenewError as exc:
        _fail(f"error: {exc}", 2)
    sdir = cluster_dir(plan.name, state_dir)
    shipped = leaf_phases(plan)
    phases = rollout_phases(plan, names, shipped)
    if dry_run:
        expiry = current_expiry(sdir, names)
        width = max(len(n) for n in names)
        for n in names:
            where = f"phase {','.join(shipped[n])}" if shipped[n] else STATE_ONLY
            _say(f"{n.ljust(width)}  notAfter {_stamp(expiry[n])}  in {where}")
        _say(f"would renew {_certificates(len(names))} of {plan.name} and converge "
             f"{', '.join(phases) or 'no phase'}; nothing was changed")
        return
    for warning in availability_notes(plan, phases):
        err.print(f"warning: {warning}", markup=False, highlight=False)
    if not yes and not typer.confirm(
            f"Renew {_certificates(len(names))} of cluster {plan.name} (new keys; the CAs are "
            f"kept) and roll them out through {', '.join(phases) or 'no phase'}?", err=True):
        _fail("certs renew: not confirmed; nothing was changed")

    def converge(phase: str) -> str:
        progress = progress_for(err, verbose=verbose)
        try:
            with progress:
                result = provision(file, [phase], None, state_dir, False, progress)
        except ProvisionError as exc:
            raise RenewError(str(exc)) from None
        if not result.succeeded:
            raise RenewError(str(result.failure))
        hosts = {h for p in result.phases for h in p.hosts}
        return f"{len(hosts)} hosts, {result.changed} changed tasks"

    try:
        result = renew_certificates(plan, sdir, file.resolve().parent, names, converge, _say)
    except RenewError as exc:
        _fail(f"error: certs renew stopped: {exc}")
    for step, seconds in result.steps:
        _say(f"  {seconds:6.1f}s  {step}")
    width = max(len(e.name) for e in result.expiry)
    for e in result.expiry:
        _say(f"  {e.name.ljust(width)}  notAfter {_stamp(e.after)} (was {_stamp(e.before)})")
    where = (f"installed through {', '.join(result.phases)}" if result.phases
             else "in the state directory only (no host holds them)")
    _say(f"certs renew: {_certificates(len(result.renewed))} renewed, {where}; "
         "`provisioner certs check FILE` lists every certificate and its expiry")
