"""``provisioner etcd backup|restore``: day-2 work on the cluster's etcd.

Scope: thin typer commands over ``provisioner.backup``; progress as for ``provision``, and
after a restore the verify table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from provisioner.backup import BackupError, check_snapshot, etcd_backup, etcd_restore
from provisioner.cli_options import SpecFile, StateDir
from provisioner.cli_provision import _fail, err, out
from provisioner.execute import progress_for
from provisioner.provision import ProvisionError

app = typer.Typer(help="The cluster's etcd: backups and restores.", no_args_is_help=True)


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


@app.command("restore")
def restore(
    file: SpecFile,
    snapshot: Annotated[Path, typer.Option(
        "--snapshot", help="A snapshot `etcd backup` took (its .json metadata beside it).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Restore a snapshot whose metadata names another cluster, or that "
        "has none.")] = False,
    state_dir: StateDir = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every task.")] = False,
) -> None:
    """Restore the whole etcd cluster from one snapshot: stop the apiservers, set every
    member's data aside and restore it with a new cluster token, start the members together,
    wait for quorum, start the control plane, verify. Pods keep running on the nodes."""
    from provisioner.cli import plan_or_exit
    from provisioner.state import cluster_dir
    from provisioner.verify import table as verify_table
    from provisioner.verify import verify

    plan = plan_or_exit(file)
    try:
        meta = check_snapshot(plan, snapshot, force)
    except BackupError as exc:
        _fail(f"error: etcd restore: {exc}")
    what = (f"revision {meta.get('revision')}, taken {meta.get('created')}" if meta
            else "no metadata")
    if not yes and not typer.confirm(
            f"Replace the data of every etcd member of cluster {plan.name} "
            f"({', '.join(h.name for h in plan.etcd)}) with {snapshot} ({what})? The "
            "apiservers stop meanwhile; the current data is kept beside it", err=True):
        _fail("etcd restore: not confirmed; nothing was changed")
    progress = progress_for(err, verbose=verbose)
    try:
        with progress:
            run, seconds = etcd_restore(file, state_dir, snapshot, force, progress)
    except (BackupError, ProvisionError) as exc:
        _fail(f"error: etcd restore: {exc}")
    out.print(f"etcd restored from {snapshot} in {seconds:.1f}s (run {run.run_dir}); the "
              f"previous data of each member is in /var/lib/etcd.before-restore-{run.run_id}",
              markup=False, highlight=False)
    # The restored leases still name the old leaders: controller-manager and scheduler
    # take over once they expire (15 s), so verify is given a minute to pass.
    deadline = time.monotonic() + 90
    while True:
        results = verify(plan, cluster_dir(plan.name, state_dir))
        if not any(r.status == "fail" for r in results) or time.monotonic() > deadline:
            break
        time.sleep(5)
    out.print(verify_table(results))
    failing = [r for r in results if r.status == "fail"]
    if failing:
        _fail(f"verify after the restore: {len(failing)} check(s) failed")
