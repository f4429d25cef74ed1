"""`provisioner reset` without hosts: what its playbook is told to remove.

Scope: the reset run's extravars name every installed file of every artifact the plan's
hosts use (from the packaged manifest, nothing fetched), so the roles' removal loops
(``provisioner_artifact_installs``) reach every binary; the CLI passes them with the etcd
data choice. The lab test in tests/lab/test_cluster.py proves the removal on real hosts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from provisioner.artifacts.bundle import removal_extravars
from provisioner.cli import app
from provisioner.execute import PLAYBOOKS
from provisioner.plan import build_plan
from provisioner.spec.load import load_file

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "inventories" / "nspawn-3cp-2w.yaml"


def _filters() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "provisioner_filters", PLAYBOOKS / "filter_plugins" / "provisioner.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reset_is_told_every_installed_file_of_the_plan() -> None:
    plan = build_plan(load_file(LAB, require_files=False))
    artifacts = removal_extravars(plan)["provisioner_artifacts"]
    assert set(artifacts) == {a for h in plan.hosts for a in h.artifacts}
    assert all(a["path"] == "" for a in artifacts.values())  # nothing was fetched
    installs = _filters().provisioner_artifact_installs(
        artifacts, list(artifacts), "/nonexistent/cache")
    dests = {i["dest"] for i in installs}
    for binary in ("kubelet", "kube-proxy", "kube-apiserver", "kubectl", "etcd", "etcdctl",
                   "etcdutl", "containerd", "containerd-shim-runc-v2", "ctr", "crictl"):
        assert f"/usr/local/bin/{binary}" in dests, binary
    # The names each role removes are all there (the roles pass subsets of these).
    assert {"runc", "cni-plugins", "haproxy"} <= set(artifacts)


def test_reset_cli_passes_the_removals_and_the_etcd_choice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def run_day2_double(spec_file: Path, state_dir: Path | None, playbook: str, name: str,
                        hosts: Any, extravars: Any, progress: Any) -> Any:
        """Test double of the day-2 runner: records what the playbook would get."""
        plan = build_plan(load_file(spec_file, require_files=False))
        seen.update(playbook=playbook, hosts=hosts(plan), vars=extravars(plan, None, "r1"))
        raise SystemExit(0)

    monkeypatch.setattr("provisioner.cli_reset.run_day2", run_day2_double)
    monkeypatch.setattr("provisioner.cli.plan_or_exit",
                        lambda f: build_plan(load_file(f, require_files=False)))
    CliRunner().invoke(app, ["reset", str(LAB), "--keep-etcd-data", "--yes",
                             "--hosts", "lab-w1"])
    assert seen["playbook"] == "reset.yml" and seen["hosts"] == ["lab-w1"]
    assert seen["vars"]["reset_etcd_data"] is False
    assert "kubelet" in seen["vars"]["provisioner_artifacts"]
