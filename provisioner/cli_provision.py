"""``provisioner provision`` and ``provisioner status``: converge hosts, show the last run.

Scope: thin typer commands over ``provisioner.provision``. ``provision`` shows a live table on a
terminal (one line per phase otherwise; ``-v`` adds every task's start and end), or with
``--json`` writes JSON Lines events to stdout (human messages to stderr); then a summary
(phases with their time and changed counts, hosts, slowest tasks: tables on a terminal, plain
text otherwise). It exits 1 with the failing phase, host, task and message when a phase
fails, 2 on a bad ``--only``/``--skip``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from provisioner.cli_options import SpecFile, StateDir, split_list
from provisioner.execute import JsonProgress, ProgressSink, progress_for
from provisioner.membership import DEFAULT_DRAIN_TIMEOUT
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


PHASE_HEADERS = ("phase", "hosts", "changed", "failed", "time", "result")
HOST_HEADERS = ("host", "ok", "changed", "failed", "unreachable", "skipped")
SLOW_HEADERS = ("time", "phase", "host", "task")


def _phase_rows(result: ProvisionResult) -> list[list[str]]:
    return [[p.phase, str(len(p.hosts)), str(p.changed),
             str(sum(h.failed + h.unreachable for h in p.hosts.values())), f"{p.seconds:.1f}s",
             "ok" if p.succeeded else f"FAILED ({p.status})"] for p in result.phases]


def _host_rows(result: ProvisionResult) -> list[list[str]]:
    return [[h.host, str(h.ok), str(h.changed), str(h.failed), str(h.unreachable),
             str(h.skipped)] for h in result.host_totals().values()]


def _slow_rows(result: ProvisionResult) -> list[list[str]]:
    return [[f"{t.seconds:.1f}s", t.phase, t.host, t.task] for t in result.slowest()]


def _table(title: str, headers: Sequence[str], rows: list[list[str]],
           names: Sequence[int]) -> Table:
    """A summary table; the ``names`` columns left-aligned, the others (numbers, times)
    right-aligned. Cells are plain text: task names may hold ``[...]``, which is no markup."""
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE)
    for i, name in enumerate(headers):
        table.add_column(name, justify="left" if i in names else "right")
    for row in rows:
        table.add_row(*(Text(c) for c in row))
    return table


def summary_table(result: ProvisionResult) -> Table:
    """Per-host ok/changed/failed/unreachable/skipped over all phases that ran."""
    return _table("hosts", HOST_HEADERS, _host_rows(result), (0,))


def summary_tables(result: ProvisionResult) -> RenderableType:
    """The run summary for a terminal: phases (time, changed), hosts, slowest tasks."""
    parts: list[RenderableType] = [
        _table("phases", PHASE_HEADERS, _phase_rows(result), (0, 5)), summary_table(result)]
    slow = _slow_rows(result)
    if slow:
        parts.append(_table("slowest tasks", SLOW_HEADERS, slow, (1, 2, 3)))
    return Group(*parts)


def _columns(headers: Sequence[str], rows: list[list[str]], names: Sequence[int]) -> list[str]:
    """Aligned plain-text columns, two spaces apart, indented by two; ``names`` columns
    left-aligned, the others right-aligned."""
    cells = [list(headers), *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  " + "  ".join(c.ljust(w) if i in names else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in cells]


def summary_text(result: ProvisionResult) -> list[str]:
    """The run summary as plain lines (logs, CI): the same three tables without boxes."""
    lines = ["phases:", *_columns(PHASE_HEADERS, _phase_rows(result), (0, 5)),
             "hosts:", *_columns(HOST_HEADERS, _host_rows(result), (0,))]
    slow = _slow_rows(result)
    if slow:
        lines += ["slowest tasks:", *_columns(SLOW_HEADERS, slow, (1, 2, 3))]
    return lines


def print_summary(console: Console, result: ProvisionResult) -> None:
    """Tables on a terminal, plain text otherwise."""
    if console.is_terminal:
        console.print(summary_tables(result))
        return
    for line in summary_text(result):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def attach_machines(file: Path, state_dir: Path | None, progress: ProgressSink) -> None:
    """``--machines-running``: record the logins and pinned host keys of Vagrant VMs that
    already run (``VagrantMachines.attach``); other providers' hosts need nothing recorded.
    Raises ``ProvisionError`` (phase ``machines``) when a VM does not run."""
    from provisioner.providers.base import ProviderError
    from provisioner.spec import SpecError, load_file

    if state_dir is not None:
        os.environ[ENV_ROOT] = str(state_dir)  # as provision does: the provider reads it
    try:
        cluster = load_file(file)
    except SpecError:
        return  # provision reports the spec's problems, all of them
    if cluster.spec.provider.type != "vagrant":
        return
    from provisioner.providers.vagrant.provider import VagrantMachines

    try:
        result = VagrantMachines(cluster, progress.note).attach()
    except ProviderError as exc:
        raise ProvisionError(f"machines: {exc}") from None
    for warning in result.warnings:
        progress.note(f"warning: {warning}")


def report(result: ProvisionResult, human: Console, progress: ProgressSink) -> None:
    """The end of a run, as `provision` prints it: the summary, what was not run, the
    steps' times, verify's table; exit 1 with the failure, else name the admin
    kubeconfig."""
    if isinstance(progress, JsonProgress):
        progress.summary(result.to_json())
    if result.phases:
        print_summary(human, result)
    by_reason: dict[str, list[str]] = {}
    for phase, reason in result.skipped:
        by_reason.setdefault(reason, []).append(phase)
    for reason, phases in by_reason.items():
        label = "converged, not run" if reason == "converged" else f"skipped ({reason})"
        human.print(f"{label}: {', '.join(phases)}", markup=False, highlight=False)
    if result.steps:
        human.print("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.steps.items()),
                    markup=False, highlight=False)
    word = "succeeded" if result.succeeded else "FAILED"
    human.print(f"provision {word}: {len(result.phases)} phases, {result.changed} changed "
                f"tasks, {result.seconds:.1f}s; run {result.run_dir}", markup=False,
                highlight=False)
    if result.verify:
        human.print(verify_table(list(result.verify)))
    if result.failure is not None:
        _fail(f"failed: {result.failure}")
    if result.admin_kubeconfig is not None:
        human.print(f"admin kubeconfig: {result.admin_kubeconfig} (secret, 0600); use it with\n"
                    f"  kubectl --kubeconfig {result.admin_kubeconfig} get nodes",
                    markup=False, highlight=False)


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
    machines_running: Annotated[bool, typer.Option(
        "--machines-running", help="The provider's machines already run and must not be "
        "started: for Vagrant VMs (what the Vagrantfile's trigger passes after `vagrant "
        "up`), read their logins from `vagrant ssh-config` and pin their host keys as "
        "`machines up` does, without running `vagrant up`.")] = False,
    replace_identity: Annotated[bool, typer.Option(
        "--replace-identity", help="Push this state directory's CAs, service-account key "
        "and encryption key even onto hosts that hold another cluster's (refused "
        "otherwise).")] = False,
    trust_on_first_use: Annotated[bool, typer.Option(
        "--trust-on-first-use", help="For static hosts whose SSH host key no known_hosts "
        "file holds: record it in the cluster's state and print its fingerprint (a host "
        "presenting a key other than the recorded one is still refused).")] = False,
    full: Annotated[bool, typer.Option(
        "--full", help="Run every selected phase on all its hosts, even where the survey "
        "found a host already matching the plan (by default a phase runs only on the "
        "hosts that differ in it).")] = False,
    serial: Annotated[bool, typer.Option(
        "--serial", help="Run one phase at a time, in plan order (by default runtime, etcd "
        "and lb run at the same time after os; slower, for reading one phase's output "
        "alone).")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show every task's start and end on each host, with its "
        "status and seconds.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Write progress as JSON Lines to stdout (one event a line: "
        "phase_started, task_started, task_finished, phase_finished, note, and last the "
        "run summary); human messages go to stderr.")] = False,
    prune: Annotated[bool, typer.Option(
        "--prune", help="Remove the nodes the last provision converged that are no "
        "longer in the spec (cordon, drain respecting PodDisruptionBudgets, delete the "
        "Node; for control-plane nodes also stop their control plane and remove their "
        "etcd members one at a time; reset the host) before converging; without it such "
        "a spec is refused.")
    ] = False,
    drain_timeout: Annotated[int, typer.Option(
        "--drain-timeout", min=10, help="Seconds one node's drain (--prune, or an upgrade) "
        "may take before the run stops (the node stays cordoned).")] = DEFAULT_DRAIN_TIMEOUT,
    max_unavailable: Annotated[int, typer.Option(
        "--max-unavailable", min=1, help="During an upgrade, how many nodes are drained and "
        "upgraded at a time (the control plane's own services always go one node at a "
        "time).")] = 1,
) -> None:
    """Converge the hosts: one survey finds what differs from the plan, then the selected
    phases' playbooks run where something differs (independent phases at the same time),
    stopping at a failure."""
    if machines_running and no_machines:
        _fail("error: --machines-running and --no-machines exclude each other", 2)
    # With --json, stdout carries only the events; everything for people goes to stderr.
    human = err if as_json else out
    progress = progress_for(human, verbose=verbose, json_stream=sys.stdout if as_json else None)
    try:
        with progress:
            if machines_running:
                attach_machines(file, state_dir, progress)
            result = provision(file, split_list(only), split_list(skip), state_dir,
                               not (no_machines or machines_running), progress,
                               replace_identity, trust_on_first_use, full, parallel=not serial,
                               prune=prune, drain_timeout=drain_timeout,
                               max_unavailable=max_unavailable)
    except ProvisionError as exc:
        _fail(f"error: {exc}", exc.exit_code)
    report(result, human, progress)


@app.command("status")
def status_cmd(file: SpecFile, state_dir: StateDir = None) -> None:
    """Show the machines (nspawn) and the last provision run's summary."""
    from provisioner.cli_machines import cluster_reach, status_table
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
            out.print(status_table(provider_for(cluster).status(),
                                   cluster_reach(cluster, state_dir)))
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
