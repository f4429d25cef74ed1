"""``provisioner etcd backup``: day-2 work on the cluster's etcd.

Scope: thin typer commands over ``provisioner.backup``; progress as for ``provision``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from provisioner.backup import BackupError, etcd_backup
from provisioner.cli_options import SpecFile, StateDir
from provisioner.cli_provision import _fail, err, out
from provisioner.execute import progress_for
from provisioner.provision import ProvisionError

app = typer.Typer(help="The cluster's etcd: backups.", no_args_is_help=True)


@app.command("backup")
def backup(
    file: SpecFile,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Directory for the snapshot and its metadata (created 0700; default: "
        "the cluster's state directory, backups/etcd).")] = None,
    keep: Annotated[int | None, typer.Option(
        "--keep", min=1, help="Keep only the newest N backups of this cluster there.")] = None,
    state_dir: StateDir = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every task.")] = False,
) -> None:
    """Take a consistent snapshot from a healthy etcd member, check it (etcdutl snapshot
    status on the member, sha256 on both ends) and store it 0600 with its metadata:
    cluster, time, revision, keys, members, Kubernetes and etcd versions."""
    progress = progress_for(err, verbose=verbose)
    try:
        with progress:
            taken, pruned, seconds = etcd_backup(file, state_dir, out_dir, keep, progress)
    except (BackupError, ProvisionError) as exc:
        _fail(f"error: etcd backup: {exc}")
    m = taken.meta
    out.print(f"etcd backup {taken.path} ({m['size']} bytes, revision {m['revision']}, "
              f"{m['total_keys']} keys, from {m['taken_from']}) in {seconds:.1f}s; sha256 "
              f"{m['sha256']}", markup=False, highlight=False)
    for p in pruned:
        if p.suffix == ".db":
            out.print(f"pruned {p}", markup=False, highlight=False)
