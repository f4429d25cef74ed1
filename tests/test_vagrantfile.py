"""The top-level Vagrantfile: ``vagrant validate`` passes for every example spec and stops
with the validator's report on an invalid one (the real ``vagrant`` command; no VM is made).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted([*(ROOT / "inventories").glob("*.yaml"),
                   *(ROOT / "tests" / "specs" / "valid").glob("*.yaml")])
INVALID = ROOT / "tests" / "specs" / "invalid"

pytestmark = pytest.mark.skipif(shutil.which("vagrant") is None,
                                reason="vagrant is not installed (make deps)")


def _validate(spec: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAGRANT_", "PROVISIONER_"))}
    env.update({
        "PROVISIONER_SPEC": str(spec),
        "PROVISIONER_BIN": str(Path(sys.executable).with_name("provisioner")),
        "PROVISIONER_STATE_DIR": str(tmp_path / "state"),
        "VAGRANT_CWD": str(ROOT),
        "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_NO_COLOR": "1",
    })
    return subprocess.run(["vagrant", "validate", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.name)
def test_validate_passes_for_every_example(spec: Path, tmp_path: Path) -> None:
    proc = _validate(spec, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated successfully" in proc.stdout
    # At most the (private) directory for the VMs' console logs.
    made = [p for p in (tmp_path / "state").rglob("*")]
    assert all(p.is_dir() and p.stat().st_mode & 0o077 == 0 for p in made), made


def test_validate_with_virtualbox_settings(tmp_path: Path) -> None:
    spec = tmp_path / "vb.yaml"
    spec.write_text((ROOT / "inventories" / "vagrant.yaml").read_text().replace(
        "vagrantProvider: libvirt", "vagrantProvider: virtualbox"))
    # VirtualBox itself is not installed here: check the configuration, not the provider.
    proc = _validate(spec, tmp_path, "--ignore-provider")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name, field", [
    ("134-vagrant-management-overlaps-subnet.yaml", "spec.provider.managementSubnet"),
    ("119-vagrant-memory-low.yaml", "spec.provider.memoryMib"),
])
def test_invalid_spec_stops_vagrant_with_the_field(name: str, field: str,
                                                   tmp_path: Path) -> None:
    proc = _validate(INVALID / name, tmp_path)
    assert proc.returncode != 0
    assert "is invalid; nothing was created" in proc.stderr
    assert field in proc.stderr


def test_missing_spec_is_named(tmp_path: Path) -> None:
    proc = _validate(tmp_path / "nope.yaml", tmp_path)
    assert proc.returncode != 0
    assert f"cluster spec {tmp_path / 'nope.yaml'} not found" in proc.stderr
