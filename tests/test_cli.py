"""CLI tests with typer's CliRunner: exit codes, messages and files written."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioner.cli import app
from provisioner.spec import load_file

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "inventories").glob("*.yaml"))
runner = CliRunner()


def test_every_example_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`provisioner validate` passes for every example under inventories/.

    They name files made later (the lab's artifacts and registry CA and password, by `make
    lab-artifacts lab-registry`; static.yaml a key in ~/.ssh): on a fresh clone only
    --allow-missing-files passes, and those files are all its notes name.
    """
    assert len(EXAMPLES) >= 3
    monkeypatch.setenv("HOME", str(tmp_path))
    made_later = (str(ROOT / ".provisioner" / "lab-artifacts"),
                  str(ROOT / ".provisioner" / "lab-registry") + os.sep,
                  str(tmp_path / ".ssh") + os.sep)
    for path in EXAMPLES:
        result = runner.invoke(app, ["validate", "--allow-missing-files", str(path)])
        assert result.exit_code == 0, (path, result.output)
        assert f"{path}: valid" in result.output
        for line in result.output.splitlines():
            if line.startswith("note: "):
                where = os.path.normpath(line.split(": ", 2)[2].split(" does not exist")[0])
                assert where.startswith(made_later), (path, line)


def test_validate_reports_every_problem(tmp_path: Path) -> None:
    """An invalid spec exits 1 and names each field with a fix."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: provisioner.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\n"
        "spec:\n  provider: {type: nspawn}\n  controlPlane: {count: 2}\n"
        "  network: {podCIDR: 10.96.0.0/16}\n"
    )
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "spec.controlPlane.count" in result.output
    assert "spec.network.podCIDR" in result.output
    assert "fix:" in result.output


def test_validate_missing_file(tmp_path: Path) -> None:
    """A missing file is a clear error, not a traceback."""
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "cannot read" in result.output


def test_plan_text_and_json() -> None:
    """The plan names hosts, roles and the phase tree; --json is parseable and complete."""
    spec = str(ROOT / "inventories" / "nspawn-3cp-2w.yaml")
    text = runner.invoke(app, ["plan", spec])
    assert text.exit_code == 0, text.output
    for word in ("lab-cp1", "lab-w2", "preflight", "control-plane/kube-apiserver", "verify"):
        assert word in text.output
    js = runner.invoke(app, ["plan", spec, "--json"])
    data = json.loads(js.output)
    assert [h["name"] for h in data["hosts"]] == ["lab-cp1", "lab-cp2", "lab-cp3", "lab-w1",
                                                  "lab-w2"]
    assert [p["name"] for p in data["phases"]] == [
        "preflight", "os", "runtime", "etcd", "lb", "control-plane", "node", "addons", "verify"]


def test_plan_only_and_skip() -> None:
    """--only/--skip select phases; an unknown name exits 2 listing the known ones."""
    spec = str(ROOT / "inventories" / "nspawn-3cp-2w.yaml")
    ok = runner.invoke(app, ["plan", spec, "--only", "os,runtime,etcd,lb", "--skip", "lb"])
    assert ok.exit_code == 0
    assert "Selected: os, runtime, runtime/containerd, etcd, etcd/etcd" in ok.output
    bad = runner.invoke(app, ["plan", spec, "--only", "etcdd"])
    assert bad.exit_code == 2
    assert "'etcdd'" in bad.output and "control-plane" in bad.output


def test_render_writes_tree(tmp_path: Path, state_root: Path) -> None:
    """render writes host files, manifests and the runner dir; secrets 0600, state 0700."""
    # The lab spec names the lab registry's CA and password, which `make lab-registry`
    # writes: a copy beside files of its own renders on a fresh checkout too.
    lab = tmp_path / "lab"
    (lab / ".provisioner" / "lab-registry").mkdir(parents=True)
    (lab / "inventories").mkdir()
    golden = ROOT / "tests" / "golden" / "3cp-2w"
    registry = lab / ".provisioner" / "lab-registry"
    (registry / "password").write_bytes((golden / "hub-password.txt").read_bytes())
    (registry / "ca.crt").write_bytes((golden / "hub-ca.pem").read_bytes())
    spec_file = lab / "inventories" / "nspawn-3cp-2w.yaml"
    spec_file.write_text((ROOT / "inventories" / "nspawn-3cp-2w.yaml").read_text())
    spec = str(spec_file)
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", spec, "--out", str(out)])
    assert result.exit_code == 0, result.output
    key = out / "hosts/lab-cp1/etc/kubernetes/pki/apiserver.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (out / "hosts/lab-w1/etc/containerd/config.toml").exists()
    assert (out / "runner/inventory/hosts.json").exists()
    cdir = state_root / "clusters" / "lab"
    assert stat.S_IMODE(cdir.stat().st_mode) == 0o700
    assert stat.S_IMODE((cdir / "pki" / "ca.key").stat().st_mode) == 0o600
    admin = cdir / "admin.kubeconfig"
    assert stat.S_IMODE(admin.stat().st_mode) == 0o600
    assert '"https://192.168.56.11:6443"' in admin.read_text()
    # secrets never reach the terminal
    assert "BEGIN" not in result.output
    again = runner.invoke(app, ["render", spec, "--out", str(out)])
    assert "0 created, 0 reissued" in again.output


def test_init_writes_a_valid_commented_example(tmp_path: Path) -> None:
    """init writes a spec that validates, and will not overwrite without --force."""
    target = tmp_path / "cluster.yaml"
    assert runner.invoke(app, ["init", str(target)]).exit_code == 0
    assert target.read_text().startswith("#")
    load_file(target)
    assert runner.invoke(app, ["init", str(target)]).exit_code == 1
    assert runner.invoke(app, ["init", str(target), "--force"]).exit_code == 0


def test_schema_and_versions() -> None:
    """schema is JSON with field descriptions; versions lists the supported minors."""
    out = runner.invoke(app, ["schema"])
    schema = json.loads(out.output)
    assert schema["title"] == "Cluster"
    assert "description" in json.dumps(schema)
    vs = runner.invoke(app, ["versions"])
    assert "1.35" in vs.output and "1.37" in vs.output and "1.33" not in vs.output
