"""``provisioner vagrant``: helpers for clusters on Vagrant VMs.

Scope: thin typer commands over ``provisioner.providers.vagrant``. ``box`` builds the offline
Debian 12 libvirt box and adds it to Vagrant (in ``$VAGRANT_HOME``, as ``vagrant`` itself
would). ``config`` and ``forget`` are what the top-level Vagrantfile calls: the VMs of a spec,
and dropping the records of destroyed VMs. Errors print one clear message to stderr and
exit 1.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from provisioner.cli_options import SpecFile
from provisioner.providers.base import ProviderError
from provisioner.providers.vagrant import box as vagrant_box
from provisioner.providers.vagrant.config import vagrant_config, vagrant_dir
from provisioner.spec.errors import SpecError
from provisioner.spec.load import load_file
from provisioner.state import state_root

app = typer.Typer(help="Vagrant helpers: the offline box and the Vagrantfile's settings.",
                  no_args_is_help=True)
# Piped output (logs, CI) would otherwise be cut at 80 columns, truncating paths.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    # soft_wrap: an error names paths and commands; hard wrapping would break them for copying.
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _say(line: str) -> None:
    out.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
def box(
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild the box file and add it again.")
    ] = False,
    mirror: Annotated[
        str, typer.Option("--mirror", help="Debian mirror debootstrap installs from.")
    ] = vagrant_box.DEFAULT_MIRROR,
) -> None:
    """Build the offline Debian 12 libvirt box (needs root) and add it to Vagrant."""
    start = time.monotonic()
    try:
        added = vagrant_box.ensure_box(
            vagrant_box.BOX_NAME, os.environ, report=_say, force=force, mirror=mirror
        )
    except ProviderError as exc:
        _fail(f"error: {exc}")
    name = vagrant_box.BOX_NAME
    if added:
        _say(f"box {name} (recipe r{vagrant_box.RECIPE_VERSION}) added to Vagrant from "
             f"{vagrant_box.box_file()}")
    else:
        _say(f"box {name} (recipe r{vagrant_box.RECIPE_VERSION}) is already installed; "
             "--force rebuilds it")
    _say(f"total {time.monotonic() - start:.0f} s")


@app.command("config")
def config(file: SpecFile) -> None:
    """Print the VMs of a spec as JSON: what the top-level Vagrantfile applies.

    Exits 1 with every problem of an invalid spec (the Vagrantfile then stops Vagrant).
    """
    try:
        cluster = load_file(file)
    except SpecError as exc:
        _fail(str(exc))
    # The path only: printing the settings creates nothing (the Vagrantfile makes the dirs).
    state = state_root() / "clusters" / cluster.metadata.name
    typer.echo(json.dumps(vagrant_config(cluster, vagrant_dir(state)), indent=1))


@app.command("forget")
def forget(
    file: SpecFile,
    names: Annotated[list[str] | None, typer.Argument(
        metavar="[NAME]...", help="VMs to forget (default: every VM of the spec).",
        show_default=False)] = None,
) -> None:
    """Forget destroyed VMs: their logins, pinned host keys and console logs.

    The Vagrantfile runs this after `vagrant destroy` of each VM. The inventory goes with
    the last VM; the PKI, kubeconfigs and run logs stay, so a new `vagrant up` brings the
    same cluster identity back. Never calls vagrant.
    """
    from provisioner.providers.vagrant.provider import VagrantMachines

    try:
        cluster = load_file(file)
        gone = VagrantMachines(cluster).forget(names or None)
    except SpecError as exc:
        _fail(str(exc))
    except ProviderError as exc:
        _fail(f"error: {exc}")
    _say(f"forgot the logins and host keys of {', '.join(gone)} (cluster "
         f"{cluster.metadata.name}); its PKI and kubeconfigs are kept")
