"""Rolling upgrade on real programs: a 3+2 nspawn cluster at 1.36.3 goes to 1.37.2.

Scope: issue 15's upgrade acceptance. The cluster is provisioned at 1.36.3 (etcd 3.6.8,
containerd 2.3.7, every program built from upstream source), a downgrade spec is refused
before any host changes, then ``provisioner upgrade FILE --to 1.37.2 --yes`` moves the
spec's ``kubernetesVersion`` and provisions, rolling it out (etcd member by member, control
plane one node at a time, nodes drained one at a time) while a pod fetches the web Service
once a second. Afterwards every node runs v1.37.2, verify passes and a second provision
changes nothing.

It needs the 1.36.3 build besides 1.37.2 (about 20 more minutes of compiling on a new
machine, more than CI's 90 minutes allow for a cold run), so it runs only with
``PROVISIONER_LAB_UPGRADE=1`` (``make test-upgrade``); the policy itself (skipped minors,
downgrades, the drain list) is unit-tested in tests/test_upgrade.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from provisioner.build.build import build_images
from provisioner.cli import app
from provisioner.execute import LineProgress
from provisioner.plan import Plan, build_plan
from provisioner.providers.ssh import ClusterSSH, cluster_ssh, ssh_run
from provisioner.provision import ProvisionError, artifacts_for, last_summary, provision
from provisioner.spec.load import load_file
from provisioner.state import cluster_dir
from provisioner.verify.pods import images
from tests.fixtures import lab_registry
from tests.fixtures.built_artifacts import LAB_SOURCE, built_local_source
from tests.fixtures.lab_cluster import assert_converged, example_variant, provisioned

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.environ.get("PROVISIONER_LAB_UPGRADE") != "1",
                       reason="needs the 1.36.3 build too: PROVISIONER_LAB_UPGRADE=1 "
                       "(make test-upgrade)"),
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventories" / "nspawn-3cp-2w.yaml"
FROM, TO, DOWN = "1.36.3", "1.37.2", "1.35.4"


@dataclass
class Old:
    """The cluster provisioned at FROM, and what the test needs to reach it."""

    spec: Path
    plan: Plan
    ssh: ClusterSSH
    state: Path

    def run(self, host: str, command: str) -> str:
        m = self.plan.host(host).machine
        proc = ssh_run(self.ssh, m.ssh_user, m.address, m.ssh_port, command, timeout=90)
        assert proc.returncode == 0, f"{host}: {command}: {proc.stderr}{proc.stdout}"
        return proc.stdout

    def at(self, version: str) -> Path:
        """The same spec at ``version``."""
        data = yaml.safe_load(self.spec.read_text())
        data["spec"]["kubernetesVersion"] = version
        path = self.spec.with_name(f"cluster-{version}.yaml")
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


def _example_at(version: str, base: Path) -> Path:
    """The lab example at ``version``, its relative registry paths made absolute."""
    def edit(spec: dict[str, Any]) -> None:
        spec["kubernetesVersion"] = version

    return example_variant(EXAMPLE, base / f"example-{version}.yaml", edit)


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory,
        lab_registry_up: lab_registry.LabRegistry) -> Iterator[Old]:
    """The cluster at FROM; the lab registry also serves FROM's images (its CoreDNS)."""
    base = tmp_path_factory.mktemp("upgrade")
    example = _example_at(FROM, base)
    build_images(build_plan(load_file(example)), LAB_SOURCE, lambda *_: None)
    lab_registry.push_source(lab_registry_up, LAB_SOURCE)
    with provisioned(example, base) as p:
        yield Old(p.spec, p.plan, cluster_ssh(p.plan.name), cluster_dir(p.plan.name))


def _kubectl(old: Old, *args: str, timeout: float = 60) -> str:
    kubectl = LAB_SOURCE / "kubectl" / TO / "kubectl"
    proc = subprocess.run([str(kubectl), "--kubeconfig", str(old.state / "admin.kubeconfig"),
                           *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _run(spec: Path) -> Any:
    return provision(spec, None, None, None, True, LineProgress(sys.stdout))


def test_the_cluster_runs_the_old_release(old: Old) -> None:
    nodes = json.loads(_kubectl(old, "get", "nodes", "-o", "json"))["items"]
    assert {n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {f"v{FROM}"}


def test_a_downgrade_is_refused_before_any_host_changes(old: Old) -> None:
    with pytest.raises(ProvisionError) as refused:
        _run(old.at(DOWN))
    msg = str(refused.value)
    assert f"{DOWN} is older than what the cluster runs" in msg, msg
    assert f"lab-cp1 runs kube-apiserver {FROM}" in msg and "nothing was changed" in msg
    assert_converged(_run(old.spec), 5)


def _workload(old: Old) -> dict[str, Any]:
    """The web Deployment (2 replicas spread over the nodes, a PodDisruptionBudget, a
    preStop pause so a terminating pod serves until its endpoint is gone), its Service, and
    a client DaemonSet on lab-w1 (a drain leaves DaemonSet pods) fetching it once a second."""
    web, client = images(old.plan)
    labels = {"app": "upweb"}
    return {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "upweb", "namespace": "default"},
         "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "topologySpreadConstraints": [{
                          "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                          "whenUnsatisfiable": "ScheduleAnyway",
                          "labelSelector": {"matchLabels": labels}}],
                      "containers": [{
                          "name": "web", "image": web,
                          "readinessProbe": {"httpGet": {"path": "/", "port": 80},
                                             "periodSeconds": 1},
                          "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}}}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "upweb", "namespace": "default"},
         "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 80}]}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
         "metadata": {"name": "upweb", "namespace": "default"},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "upclient", "namespace": "default"},
         "spec": {"selector": {"matchLabels": {"app": "upclient"}},
                  "template": {"metadata": {"labels": {"app": "upclient"}}, "spec": {
                      "nodeSelector": {"kubernetes.io/hostname": "lab-w1"},
                      "containers": [{
                          "name": "client", "image": client, "command": ["sh", "-c",
                              "while :; do if err=$(timeout 3 wget -q -O /dev/null "
                              "http://upweb/ 2>&1); then echo ok; else echo FAIL rc=$? "
                              "$(date +%T) $err; fi; sleep 1; done"]}]}}}},
    ]}


def test_rolling_upgrade_keeps_the_service_answering(old: Old) -> None:
    path = old.spec.with_name("upweb.json")
    path.write_text(json.dumps(_workload(old)))
    _kubectl(old, "apply", "-f", str(path))
    _kubectl(old, "rollout", "status", "deployment/upweb", "--timeout=180s")
    _kubectl(old, "rollout", "status", "daemonset/upclient", "--timeout=180s")

    def fetches() -> list[str]:
        out = _kubectl(old, "logs", "daemonset/upclient", "--tail=-1")
        return [line for line in out.split("\n") if line.strip()]

    # Count from the client's first success on: its first requests may precede the
    # Service's rules on its node (created in the same apply).
    deadline = time.monotonic() + 60
    while "ok" not in fetches() and time.monotonic() < deadline:
        time.sleep(1)
    settled = len(fetches())
    backups = old.state / "backups" / "etcd"
    before = set(backups.glob("*.db")) if backups.is_dir() else set()

    # The local source holds one version of each program: TO's now (built before, cached).
    target = build_plan(load_file(old.at(TO)))
    built_local_source(target, artifacts_for(target, target.phases))
    # The rollout as a user starts it: `provisioner upgrade FILE --to TO --yes` rewrites the
    # spec's kubernetesVersion and provisions.
    started = time.monotonic()
    invoked = CliRunner().invoke(app, ["upgrade", str(old.spec), "--to", TO, "--yes"])
    seconds = time.monotonic() - started
    print(invoked.output)
    summary = last_summary(old.state) or {}
    time.sleep(3)
    every = fetches()
    fetched = every[settled:]
    failed = [line for line in fetched if line.startswith("FAIL")]
    print(f"before the upgrade: {len(every[:settled])} fetches, "
          f"{sum(1 for line in every[:settled] if line.startswith('FAIL'))} failed")
    print(f"upgrade {FROM} -> {TO}: {seconds:.1f}s (steps {summary.get('steps')}); changed "
          f"per host { {h: r['changed'] for h, r in summary.get('hosts', {}).items()} }; the "
          f"client fetched the web Service {len(fetched)} times, {len(failed)} failed "
          f"{failed[:10]}")
    assert invoked.exit_code == 0, invoked.output
    assert summary["succeeded"], summary["failure"]
    assert str(summary["verify"]).startswith("verify passed"), summary["verify"]
    assert str(yaml.safe_load(old.spec.read_text())["spec"]["kubernetesVersion"]) == TO
    assert len(fetched) > 60, fetched[-5:]

    nodes = json.loads(_kubectl(old, "get", "nodes", "-o", "json"))["items"]
    assert {n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {f"v{TO}"}
    assert not [n["metadata"]["name"] for n in nodes if n["spec"].get("unschedulable")]
    server = json.loads(_kubectl(old, "version", "-o", "json"))["serverVersion"]["gitVersion"]
    assert server == f"v{TO}"
    etcd = old.run("lab-cp1", "etcd --version | head -1")
    assert build_plan(load_file(old.at(TO))).release.component("etcd") in etcd, etcd
    assert set(backups.glob("*.db")) - before, "no pre-upgrade etcd snapshot"
    for host in ("lab-cp1", "lab-w1"):
        assert old.run(host, "ls /var/lib/provisioner/drained-for-upgrade 2>/dev/null; true") == ""

    assert_converged(_run(old.at(TO)), 5)
    _kubectl(old, "delete", "-f", str(path))
    # Last, so that a run with a failed fetch still proves the rest (and says why it failed).
    assert not failed, failed
