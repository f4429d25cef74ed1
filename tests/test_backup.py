"""etcd backups on the controller, without a cluster: checking a fetched snapshot against
the member's sha256, the metadata, which files are this cluster's backups, and keeping the
newest N (nothing else is ever deleted). The lab test takes real snapshots."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from provisioner.backup import BackupError, backup_dir, describe, list_backups, prune, sha256_file
from provisioner.plan import build_plan
from provisioner.spec import load_file

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "inventories" / "nspawn-3cp-2w.yaml"


def _fetched(tmp_path: Path, data: bytes, sha: str | None = None) -> Path:
    d = tmp_path / "fetched"
    d.mkdir()
    (d / "snapshot.db").write_bytes(data)
    (d / "snapshot.sha256").write_text((sha or hashlib.sha256(data).hexdigest()) + "\n")
    (d / "snapshot.status.json").write_text(json.dumps(
        {"hash": 1, "revision": 4242, "totalKey": 977, "totalSize": len(data)}))
    (d / "snapshot.members.json").write_text(json.dumps(
        {"members": [{"name": "lab-cp2"}, {"name": "lab-cp1"}, {"name": "lab-cp3"}]}))
    return d


def test_the_metadata_describes_the_snapshot(tmp_path: Path) -> None:
    plan = build_plan(load_file(SPEC))
    now = datetime(2026, 12, 1, 23, 59, 58, tzinfo=UTC)
    meta = describe(plan, _fetched(tmp_path, b"etcd snapshot bytes"), now, "lab-cp1")
    assert meta["cluster"] == plan.name and meta["created"] == "2026-12-01T23:59:58Z"
    assert (meta["revision"], meta["total_keys"], meta["size"]) == (4242, 977, 19)
    assert meta["members"] == ["lab-cp1", "lab-cp2", "lab-cp3"]
    assert meta["kubernetes_version"] == plan.version and meta["etcd_version"]
    assert meta["sha256"] == sha256_file(tmp_path / "fetched" / "snapshot.db")


def test_a_snapshot_that_differs_from_the_members_is_refused(tmp_path: Path) -> None:
    plan = build_plan(load_file(SPEC))
    with pytest.raises(BackupError, match="differs from the member's"):
        describe(plan, _fetched(tmp_path, b"changed in transit", "0" * 64),
                 datetime.now(UTC), "lab-cp1")


def test_keep_prunes_only_this_clusters_oldest_backups(tmp_path: Path) -> None:
    d = backup_dir(tmp_path, tmp_path / "out")
    assert d.stat().st_mode & 0o777 == 0o700
    for cluster, stamp in [("lab", "20261201T000001Z"), ("lab", "20261201T000003Z"),
                           ("lab", "20261201T000002Z"), ("other", "20261201T000000Z")]:
        (d / f"{cluster}-{stamp}.db").write_bytes(b"x")
        (d / f"{cluster}-{stamp}.json").write_text(json.dumps({"cluster": cluster}))
    (d / "lab-notes.db").write_bytes(b"not a backup")
    (d / "lab-20261130T000000Z.db").write_bytes(b"no metadata: not ours to judge")
    assert [b.path.name for b in list_backups(d, "lab")] == [
        "lab-20261201T000003Z.db", "lab-20261201T000002Z.db", "lab-20261201T000001Z.db"]
    gone = prune(d, "lab", 2)
    assert sorted(p.name for p in gone) == ["lab-20261201T000001Z.db",
                                            "lab-20261201T000001Z.json"]
    left = sorted(p.name for p in d.iterdir())
    assert "other-20261201T000000Z.db" in left and "lab-notes.db" in left
    assert "lab-20261130T000000Z.db" in left and len(list_backups(d, "lab")) == 2


def _snapshot(tmp_path: Path, cluster: str | None, data: bytes = b"snap",
              sha: str | None = None) -> Path:
    snap = tmp_path / "lab-20261201T000000Z.db"
    snap.write_bytes(data)
    if cluster is not None:
        snap.with_suffix(".json").write_text(json.dumps(
            {"cluster": cluster, "sha256": sha or hashlib.sha256(data).hexdigest()}))
    return snap


def test_restore_refuses_before_any_host_another_clusters_or_a_damaged_snapshot(
        tmp_path: Path) -> None:
    from provisioner.backup import check_snapshot

    plan = build_plan(load_file(SPEC))
    assert check_snapshot(plan, _snapshot(tmp_path, plan.name), False)["cluster"] == plan.name
    other = _snapshot(tmp_path, "prod")
    with pytest.raises(BackupError, match="snapshot of cluster 'prod'"):
        check_snapshot(plan, other, False)
    assert check_snapshot(plan, other, True)["cluster"] == "prod"
    (tmp_path / "bare").mkdir()
    bare = _snapshot(tmp_path / "bare", None)
    with pytest.raises(BackupError, match="has no metadata"):
        check_snapshot(plan, bare, False)
    damaged = _snapshot(tmp_path, plan.name, sha="0" * 64)
    for force in (False, True):
        with pytest.raises(BackupError, match="damaged"):
            check_snapshot(plan, damaged, force)
    with pytest.raises(BackupError, match="no such snapshot"):
        check_snapshot(plan, tmp_path / "missing.db", True)
