"""Encryption-key rotation without a cluster: the key files' stages, the rendered
EncryptionConfiguration at each stage, resuming after a failed step, and the identity check
accepting either key while both are readable. The lab test (tests/lab/test_cluster.py)
rotates a real cluster's key and reads the etcd values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioner.pki.identity import READABLE, differences, fingerprints, parse_identity
from provisioner.plan import Plan, build_plan
from provisioner.render.material import (
    ENCRYPTION_KEY,
    NEXT_KEY,
    RETIRED_KEY,
    StateMaterial,
    prepare,
    read_encryption_key,
)
from provisioner.render.tree import render
from provisioner.rotation import RotationError, rotate_encryption_key, stage
from provisioner.spec import load_file
from provisioner.verify.api import ApiClient
from provisioner.verify.transport import ClientCreds, TlsClient

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "tests" / "golden" / "3cp-2w" / "spec.yaml"


def _setup(tmp_path: Path) -> tuple[Plan, StateMaterial]:
    plan = build_plan(load_file(SPEC))
    material, _ = prepare(plan, tmp_path, SPEC.parent)
    return plan, material


def _config_keys(plan: Plan, material: StateMaterial) -> list[str]:
    tree = render(plan, material, Path("/k"))
    f = next(f for f in tree.hosts[plan.control_plane[0].name]
             if f.path == "/etc/kubernetes/encryption-config.yaml")
    doc = yaml.safe_load(f.content)
    return [k["name"] for k in doc["resources"][0]["providers"][0]["aescbc"]["keys"]]


def _refusing_api() -> ApiClient:
    """A real client aimed at a port where nothing listens (the rewrite step fails)."""
    creds = ClientCreds(Path("/nonexistent/ca"), Path("/nonexistent/c"), Path("/nonexistent/k"))
    return ApiClient(TlsClient(), ("https://127.0.0.1:9",), creds, 1.0)


def test_a_bare_key_file_is_key1_and_new_files_name_their_key(tmp_path: Path) -> None:
    (tmp_path / "legacy").write_bytes(b"c2VjcmV0\n")
    assert read_encryption_key(tmp_path / "legacy").name == "key1"
    assert read_encryption_key(tmp_path / "legacy").secret == b"c2VjcmV0"
    _, material = _setup(tmp_path / "state")
    assert [k.name for k in material.encryption_keys()] == ["key1"]


def test_a_failed_step_leaves_a_resumable_stage_with_every_key(tmp_path: Path) -> None:
    plan, material = _setup(tmp_path)
    secrets_dir = tmp_path / "secrets"
    first = material.encryption_key()
    vrrp = material.vrrp_seed()
    calls: list[str] = []
    seen: list[list[str]] = []

    def converge_failing_at_switch(step: str) -> None:
        calls.append(step)
        seen.append(_config_keys(plan, material))
        if step == "switch":
            raise RotationError("switch: lab-cp2 unreachable")

    with pytest.raises(RotationError, match="lab-cp2"):
        rotate_encryption_key(plan, tmp_path, converge_failing_at_switch, _refusing_api,
                              lambda _: None)
    # Staged: key2 readable everywhere while key1 writes; then switched: key2 writes.
    assert calls == ["stage", "switch"]
    assert seen == [["key1", "key2"], ["key2", "key1"]]
    assert stage(secrets_dir) == "switched"
    assert read_encryption_key(secrets_dir / RETIRED_KEY).secret == first
    assert material.vrrp_seed() == vrrp  # keepalived's password does not follow the key

    calls.clear()
    with pytest.raises(RotationError, match="no apiserver answered"):
        rotate_encryption_key(plan, tmp_path, calls.append, _refusing_api, lambda _: None)
    # Resumed: the switch is converged again; the rewrite failed, so key1 is kept.
    assert calls == ["switch"]
    assert stage(secrets_dir) == "switched"
    assert _config_keys(plan, material) == ["key2", "key1"]
    assert not (secrets_dir / NEXT_KEY).exists() and (secrets_dir / ENCRYPTION_KEY).exists()


def test_the_identity_accepts_either_key_only_while_both_are_readable(tmp_path: Path) -> None:
    plan, material = _setup(tmp_path)
    before = fingerprints(plan, material)
    assert READABLE not in before

    def stop(step: str) -> None:
        raise RotationError(step)

    with pytest.raises(RotationError):
        rotate_encryption_key(plan, tmp_path, stop, _refusing_api, lambda _: None)
    staged = fingerprints(plan, material)
    assert staged["encryption-key"] == before["encryption-key"]
    assert differences(before, staged) == []
    host_already_switched = {**before, "encryption-key": staged[READABLE].split(",")[1]}
    assert differences(host_already_switched, staged) == []
    # Another cluster's key is still refused.
    other = {**before, "encryption-key": "sha256:" + "0" * 64}
    assert differences(other, staged) == ["encryption-key"]
    assert parse_identity("encryption-key=x\n")["encryption-key"] == "x"


def test_rotation_needs_encryption_at_rest(tmp_path: Path) -> None:
    data = yaml.safe_load(SPEC.read_text())
    data["spec"].setdefault("apiserver", {})["encryptionAtRest"] = False
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))
    plan = build_plan(load_file(spec))
    with pytest.raises(RotationError, match="encryptionAtRest is false"):
        rotate_encryption_key(plan, tmp_path, lambda _: None, _refusing_api, lambda _: None)
