"""A skipped minor on real programs: a 1+1 nspawn cluster at 1.35.4 is asked for 1.37.2.

Scope: issue 15's "an upgrade from 1.35 straight to 1.37 is refused before any host is
touched". The cluster is provisioned at 1.35.4 (etcd 3.6.6, containerd 2.2.9, every program
built from upstream source). Then (1) the spec edited to 1.37.2 and provisioned: refused
with the path through 1.36.3, and no host changed (the same files, binaries and service PIDs
on every host before and after); (2) ``provisioner upgrade FILE --to 1.37.2``: refused with
exit 2 before anything runs, the file untouched. A provision of the 1.35.4 spec afterwards
changes nothing.

It needs the 1.35.4 build besides 1.37.2 (about 20 more minutes of compiling on a new
machine), so it runs only with ``PROVISIONER_LAB_SKIP_MINOR=1`` (``make test-skip-minor``);
the policy is unit-tested in tests/test_upgrade.py and tests/test_upgrade_cli.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
from provisioner.provision import ProvisionError, provision
from provisioner.spec.load import load_file
from provisioner.state import cluster_dir
from tests.fixtures import lab_registry
from tests.fixtures.built_artifacts import LAB_SOURCE
from tests.fixtures.lab_cluster import (
    assert_converged,
    example_variant,
    provisioned,
    run_provision,
)

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.environ.get("PROVISIONER_LAB_SKIP_MINOR") != "1",
                       reason="needs the 1.35.4 build too: PROVISIONER_LAB_SKIP_MINOR=1 "
                       "(make test-skip-minor)"),
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventories" / "nspawn-3cp-2w.yaml"
FROM, TO = "1.35.4", "1.37.2"

# What "touched" would show: every managed program and file's digest, every cluster unit's
# main PID and start time.
FINGERPRINT = (
    "find /usr/local/bin /etc/kubernetes /etc/containerd /etc/etcd /etc/haproxy "
    "/etc/systemd/system /var/lib/kubelet/config.yaml -type f 2>/dev/null | sort | "
    "xargs sha256sum; systemctl show -p Id -p MainPID -p ActiveEnterTimestampMonotonic "
    "etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy "
    "containerd haproxy")


@dataclass
class Old:
    spec: Path
    plan: Plan
    ssh: ClusterSSH

    def run(self, host: str, command: str) -> str:
        m = self.plan.host(host).machine
        proc = ssh_run(self.ssh, m.ssh_user, m.address, m.ssh_port, command, timeout=120)
        assert proc.returncode == 0, f"{host}: {command}: {proc.stderr}{proc.stdout}"
        return proc.stdout

    def fingerprints(self) -> dict[str, str]:
        return {h.name: self.run(h.name, FINGERPRINT) for h in self.plan.hosts}


def _example(base: Path) -> Path:
    """The lab example at FROM with one control-plane node and one worker."""
    def edit(spec: dict[str, Any]) -> None:
        spec["kubernetesVersion"] = FROM
        spec["controlPlane"]["count"] = 1
        spec["workers"]["count"] = 1

    return example_variant(EXAMPLE, base / f"example-{FROM}.yaml", edit)


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory,
        lab_registry_up: lab_registry.LabRegistry) -> Iterator[Old]:
    """The cluster at FROM; the lab registry also serves FROM's images (its CoreDNS)."""
    base = tmp_path_factory.mktemp("skip-minor")
    example = _example(base)
    build_images(build_plan(load_file(example)), LAB_SOURCE, lambda *_: None)
    lab_registry.push_source(lab_registry_up, LAB_SOURCE)
    with provisioned(example, base) as p:
        yield Old(p.spec, p.plan, cluster_ssh(p.plan.name))


def test_the_cluster_runs_1_35(old: Old) -> None:
    kubectl = LAB_SOURCE / "kubectl" / FROM / "kubectl"
    admin = cluster_dir(old.plan.name) / "admin.kubeconfig"
    out = subprocess.run([str(kubectl), "--kubeconfig", str(admin),
                          "get", "nodes", "-o", "json"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    nodes = json.loads(out)["items"]
    assert {n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {f"v{FROM}"}


def test_a_spec_at_1_37_is_refused_before_any_host_is_touched(old: Old) -> None:
    data = yaml.safe_load(old.spec.read_text())
    data["spec"]["kubernetesVersion"] = TO
    skipping = old.spec.with_name(f"cluster-{TO}.yaml")
    skipping.write_text(yaml.safe_dump(data, sort_keys=False))
    before = old.fingerprints()
    with pytest.raises(ProvisionError) as refused:
        provision(skipping, None, None, None, True, LineProgress(sys.stdout))
    msg = str(refused.value)
    print(msg)
    assert f"spec.kubernetesVersion {TO} skips a minor release" in msg, msg
    assert f"lab-cp1 runs kube-apiserver {FROM}" in msg and "nothing was changed" in msg
    assert "Fix: upgrade through 1.36.3 -> 1.37.2" in msg
    assert old.fingerprints() == before


def test_upgrade_to_1_37_is_refused_and_the_spec_kept(old: Old) -> None:
    text = old.spec.read_bytes()
    before = old.fingerprints()
    res = CliRunner().invoke(app, ["upgrade", str(old.spec), "--to", TO, "--yes"])
    print(res.output)
    assert res.exit_code == 2, res.output
    assert "skips a minor release" in res.output and "--to 1.36.3" in res.output
    assert old.spec.read_bytes() == text
    assert old.fingerprints() == before
    assert_converged(run_provision(old.spec, verify=False), 2)
