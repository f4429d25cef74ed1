"""etcd backups on the controller: take one, check it, describe it, keep the newest N.

Scope: ``etcd_backup`` runs ``playbooks/etcd-backup.yml`` through the day-2 pipeline (one
healthy member saves a snapshot, ``etcdutl snapshot status`` reads it there, and it is
fetched with its status and member list), checks the fetched file's sha256 against the
member's, and stores ``<cluster>-<UTC time>.db`` with a ``.json`` of metadata (cluster,
time, revision, keys, size, sha256, members, Kubernetes and etcd versions), both 0600 in a
0700 directory: ``<state>/backups/etcd`` unless ``out`` says otherwise. ``prune`` keeps the
newest N of this cluster's backups there and nothing else is ever deleted.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provisioner.day2 import Day2Run, run_day2
from provisioner.execute import ProgressSink
from provisioner.plan import Plan
from provisioner.provision import ProvisionError
from provisioner.state import private_dir, write_private

BACKUP_DIR = ("backups", "etcd")
_NAME = re.compile(r"^(?P<cluster>[a-z0-9][a-z0-9-]*)-(?P<time>\d{8}T\d{6}Z)\.db$")


class BackupError(Exception):
    """The backup could not be taken or does not check out (the message says why)."""


@dataclass(frozen=True)
class Backup:
    """A stored snapshot and its metadata."""

    path: Path
    meta: dict[str, Any]


def backup_dir(sdir: Path, out: Path | None) -> Path:
    """Where backups go: ``out``, or the state directory's ``backups/etcd`` (both 0700)."""
    return private_dir(out if out is not None else sdir.joinpath(*BACKUP_DIR))


def sha256_file(path: Path, algorithm: str = "sha256") -> str:
    """The file's sha256 (or ``algorithm``: Ansible's copy checks sha1), read in 1 MiB
    pieces."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(plan: Plan, fetched: Path, now: datetime, member: str) -> dict[str, Any]:
    """Metadata of the snapshot fetched into ``fetched`` (``snapshot.db`` and the member's
    ``snapshot.status.json``, ``snapshot.members.json``, ``snapshot.sha256``); raises
    ``BackupError`` when the file is not the one the member hashed."""
    db = fetched / "snapshot.db"
    want = (fetched / "snapshot.sha256").read_text().strip()
    have = sha256_file(db)
    if have != want:
        raise BackupError(f"the fetched snapshot's sha256 {have[:16]}... differs from the "
                          f"member's {want[:16]}...; nothing was stored; take it again")
    status = json.loads((fetched / "snapshot.status.json").read_text())
    members = json.loads((fetched / "snapshot.members.json").read_text()).get("members", [])
    return {
        "cluster": plan.name,
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "revision": status.get("revision"),
        "total_keys": status.get("totalKey"),
        "size": db.stat().st_size,
        "sha256": have,
        "taken_from": member,
        "members": sorted(m.get("name", "") for m in members),
        "kubernetes_version": plan.version,
        "etcd_version": plan.release.components.get("etcd"),
    }


def list_backups(directory: Path, cluster: str) -> list[Backup]:
    """This cluster's backups in ``directory``, newest first (by the time in their name)."""
    out = []
    for p in directory.glob(f"{cluster}-*.db"):
        m = _NAME.match(p.name)
        meta_file = p.with_suffix(".json")
        if not m or m.group("cluster") != cluster or not meta_file.is_file():
            continue
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError:
            continue
        if meta.get("cluster") == cluster:
            out.append(Backup(p, meta))
    return sorted(out, key=lambda b: b.path.name, reverse=True)


def prune(directory: Path, cluster: str, keep: int) -> list[Path]:
    """Delete this cluster's backups beyond the newest ``keep``; returns what went."""
    gone = []
    for b in list_backups(directory, cluster)[keep:]:
        for p in (b.path, b.path.with_suffix(".json")):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def etcd_backup(spec_file: Path, state_dir: Path | None, out: Path | None, keep: int | None,
                progress: ProgressSink, held: bool = False) -> tuple[Backup, list[Path], float]:
    """Take, check and store one snapshot; then prune to ``keep``. Returns the backup, the
    files pruned and the seconds taken. ``held``: the caller holds the cluster lock."""
    started = time.monotonic()
    holder: dict[str, Path] = {}

    def extravars(plan: Plan, sdir: Path, run_id: str) -> dict[str, Any]:
        fetched = private_dir(sdir / "runs" / run_id / "backup")
        holder["fetched"], holder["sdir"] = fetched, sdir
        return {"etcd_backup_dest": str(fetched)}

    run = run_day2(spec_file, state_dir, "etcd-backup.yml", "etcd-backup",
                   lambda plan: [h.name for h in plan.hosts if h.machine.is_etcd],
                   extravars, progress, held)
    fetched = holder["fetched"]
    try:
        if not run.result.succeeded:
            failure = run.result.error or next(
                (f"{h}: {f.message}" for h, r in run.result.hosts.items() for f in r.failures),
                "the playbook failed")
            raise BackupError(f"no snapshot was taken: {failure}")
        members = [h for h, r in run.result.hosts.items() if r.changed]
        now = datetime.now(UTC)
        meta = describe(run.plan, fetched, now, members[0] if members else "")
        directory = backup_dir(holder["sdir"], out)
        stem = f"{run.plan.name}-{now.strftime('%Y%m%dT%H%M%SZ')}"
        target = directory / f"{stem}.db"
        if target.exists():
            raise BackupError(f"{target} exists already; wait a second and take it again")
        shutil.move(fetched / "snapshot.db", target)
        target.chmod(0o600)
        write_private(directory / f"{stem}.json",
                      (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
        pruned = prune(directory, run.plan.name, keep) if keep is not None else []
        return Backup(target, meta), pruned, time.monotonic() - started
    except (OSError, ValueError, ProvisionError) as exc:
        raise BackupError(f"the snapshot could not be stored: {exc}") from None
    finally:
        shutil.rmtree(fetched, ignore_errors=True)


def check_snapshot(plan: Plan, snapshot: Path, force: bool) -> dict[str, Any]:
    """The snapshot's metadata, once it is known to be this cluster's and intact; raises
    ``BackupError`` otherwise (``force`` accepts another cluster's or one without metadata,
    never one whose sha256 differs from its metadata)."""
    if not snapshot.is_file():
        raise BackupError(f"{snapshot}: no such snapshot file")
    meta_file = snapshot.with_suffix(".json")
    meta: dict[str, Any] = {}
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError:
            raise BackupError(f"{meta_file}: not JSON; fix or remove it (then --force)") from None
    if not meta and not force:
        raise BackupError(f"{snapshot} has no metadata ({meta_file.name}): it cannot be "
                          "checked against this cluster; restore it with --force if it is "
                          "this cluster's")
    if meta and meta.get("cluster") != plan.name and not force:
        raise BackupError(f"{snapshot} is a snapshot of cluster {meta.get('cluster')!r}, not "
                          f"{plan.name!r}; nothing was changed (--force restores it anyway)")
    if meta.get("sha256") and sha256_file(snapshot) != meta["sha256"]:
        raise BackupError(f"{snapshot}: its sha256 differs from the one recorded when it was "
                          "taken; the file is damaged; nothing was changed")
    return meta


def etcd_restore(spec_file: Path, state_dir: Path | None, snapshot: Path, force: bool,
                 progress: ProgressSink) -> tuple[Day2Run, float]:
    """Restore every etcd member from ``snapshot`` (``playbooks/etcd-restore.yml``): the
    control plane stops, each member's data is set aside and restored with a new cluster
    token, the members start together, then the control plane. Returns the run and its
    seconds; raises ``BackupError`` before any host is touched when the snapshot is not
    this cluster's or is damaged."""
    from provisioner.components.etcd import initial_cluster
    from provisioner.provision import plan_and_select

    started = time.monotonic()
    plan, _ = plan_and_select(spec_file, None, None, state_dir)
    check_snapshot(plan, snapshot, force)
    initial = initial_cluster(plan)

    def extravars(plan: Plan, sdir: Path, run_id: str) -> dict[str, Any]:
        return {"etcd_restore_source": str(snapshot.resolve()),
                "etcd_restore_sha1": sha256_file(snapshot, "sha1"),
                "etcd_restore_initial_cluster": initial}

    run = run_day2(spec_file, state_dir, "etcd-restore.yml", "etcd-restore",
                   lambda p: [h.name for h in p.hosts if h.machine.is_etcd
                              or h.machine.is_control_plane], extravars, progress)
    if not run.result.succeeded:
        failure = run.result.error or next(
            (f"{h}: {f.task}: {f.message}" for h, r in run.result.hosts.items()
             for f in r.failures), "the playbook failed")
        raise BackupError(f"the restore stopped: {failure}; each member's previous data is "
                          f"kept beside it as /var/lib/etcd.before-restore-{run.run_id}")
    return run, time.monotonic() - started
