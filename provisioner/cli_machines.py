"""``provisioner machines``: bring up, list and tear down a spec's local machines.

Scope: thin typer commands over ``provisioner.providers``; all work happens in the provider.
Errors (a bad spec, a missing prerequisite) print one clear message to stderr and exit 1.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from provisioner.cli_options import SpecFile
from provisioner.providers.base import MachineProvider, NodeStatus, ProviderError
from provisioner.providers.reach import Reach, reach
from provisioner.providers.registry import provider_for
from provisioner.spec.errors import SpecError
from provisioner.spec.load import load_file
from provisioner.spec.models import Cluster
from provisioner.state import cluster_dir

app = typer.Typer(
    help="Machines for a cluster spec: systemd-nspawn nodes on this host or Vagrant VMs.",
    no_args_is_help=True,
)
# Piped output (logs, CI) would otherwise be cut at 80 columns, truncating addresses.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)
_ROLES = (("kube_control_plane", "control-plane"), ("etcd", "etcd"), ("kube_node", "node"))


def _fail(message: str) -> NoReturn:
    err.print(message, markup=False, highlight=False)
    raise typer.Exit(1)


def _provider(file: Path) -> MachineProvider:
    try:
        cluster = load_file(file)
    except SpecError as exc:
        _fail(str(exc))
    try:
        return provider_for(cluster, lambda line: out.print(line, markup=False, highlight=False))
    except ProviderError as exc:
        _fail(f"error: {exc}")


@app.command()
def up(file: SpecFile) -> None:
    """Create and start the machines (idempotent) and write their inventory."""
    provider = _provider(file)
    try:
        result = provider.up()
    except ProviderError as exc:
        _fail(f"error: {exc}")
    if not result.changed:
        out.print("all machines already running; nothing changed")
    out.print(f"inventory: {result.inventory}", markup=False, highlight=False)
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False)


@app.command()
def down(
    file: SpecFile,
    purge: Annotated[
        bool,
        typer.Option(
            "--purge",
            help="Also delete the machines' root filesystems, and the bridge when no other "
            "cluster uses it (the cached base image is kept).",
        ),
    ] = False,
) -> None:
    """Stop the cluster's machines (only this cluster's processes, cgroups and links)."""
    provider = _provider(file)
    try:
        provider.down(purge=purge)
    except ProviderError as exc:
        _fail(f"error: {exc}")


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1048576:.0f} MiB"


def cluster_reach(cluster: Cluster, state_dir: Path | None = None) -> dict[str, Reach]:
    """How each machine of ``cluster`` is reached: the logins Ansible and verify use."""
    from provisioner.plan import build_plan

    return reach(build_plan(cluster), cluster_dir(cluster.metadata.name, state_dir))


def status_table(rows: list[NodeStatus], reaches: Mapping[str, Reach]) -> Table:
    """The status table: node, address, roles, pid, SSH login, ssh, systemd state, memory."""
    table = Table(
        "node", "address", "roles", "state", "pid", "login", "ssh", "systemd", "memory",
        box=box.SIMPLE,
    )
    for s in rows:
        m = s.machine
        r = reaches.get(m.name)
        table.add_row(
            m.name,
            str(m.address),
            ",".join(short for role, short in _ROLES if role in m.roles),
            s.state,
            "-" if s.pid is None else str(s.pid),
            "-" if r is None else r.destination,
            ("ok" if s.ssh else "no") if s.state == "running" else "-",
            s.systemd or "-",
            _mib(s.memory_bytes),
        )
    return table


@app.command()
def status(file: SpecFile) -> None:
    """Show each machine: state, nspawn pid, SSH login and whether it works, systemd state
    and memory."""
    provider = _provider(file)
    try:
        rows = provider.status()
    except ProviderError as exc:
        _fail(f"error: {exc}")
    out.print(status_table(rows, cluster_reach(load_file(file))))
