"""Control-plane membership on a live cluster: 1 -> 3 -> 1 control-plane nodes.

Scope: issue 15's membership acceptance on real programs. A cluster of one control-plane node
(stacked etcd) and one worker grows to three control-plane nodes by raising
``controlPlane.count`` (``provider.controlPlaneSlots: 3`` kept their addresses) and
provisioning: each new etcd member joins as a learner and is
promoted, each new node gets its own apiserver serving pair, every load balancer gains the
new apiservers, and the first node's etcd and apiserver are not restarted. Then the count
goes back to 1 and ``provision --prune`` takes the two nodes out: drained, their apiservers
stopped behind the load balancers, their etcd members removed one at a time while the rest
stay healthy, their hosts reset. Throughout, a client on the worker asks the apiserver for
its own Node through its local haproxy once a second: no request may fail. At each end the
etcd member list is the spec's control plane, verify passes and the next provision changes
nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.execute import LineProgress
from provisioner.plan import Plan, build_plan
from provisioner.providers.ssh import ClusterSSH, cluster_ssh, ssh_run
from provisioner.provision import ProvisionResult, provision
from provisioner.spec.load import load_file
from tests.fixtures.lab_cluster import (
    assert_converged,
    example_variant,
    failing,
    provisioned,
    run_provision,
)
from tests.fixtures.lab_membership import ApiPoller, etcd_members, haproxy_backends, main_pids

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.environ.get("PROVISIONER_LAB_MEMBERSHIP") != "1",
                       reason="a cluster of its own (about 10 minutes): "
                       "PROVISIONER_LAB_MEMBERSHIP=1 (make test-membership); CI shrinks and "
                       "grows the 3+2 cluster instead (tests/lab/test_cluster.py)"),
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventories" / "nspawn-3cp-2w.yaml"


@dataclass
class Small:
    """The 1+1 cluster and what the test needs to reach its hosts."""

    spec: Path
    plan: Plan
    ssh: ClusterSSH

    def run(self, host: str, command: str) -> str:
        m = self.plan.host(host).machine
        proc = ssh_run(self.ssh, m.ssh_user, m.address, m.ssh_port, command, timeout=90)
        assert proc.returncode == 0, f"{host}: {command}: {proc.stderr}{proc.stdout}"
        return proc.stdout

    def with_control_plane(self, count: int) -> Path:
        data: dict[str, Any] = yaml.safe_load(self.spec.read_text())
        data["spec"]["controlPlane"]["count"] = count
        path = self.spec.parent / f"cluster-{count}cp.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


def _example(base: Path) -> Path:
    """The lab example with one control-plane node and one worker (its files absolute)."""
    def edit(spec: dict[str, Any]) -> None:
        spec["controlPlane"]["count"] = 1
        spec["workers"]["count"] = 1
        # Room for three control-plane nodes: the worker keeps its address as the plane
        # grows.
        spec["provider"]["controlPlaneSlots"] = 3

    return example_variant(EXAMPLE, base / "example-1cp.yaml", edit)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, lab_registry_up: object) -> Iterator[Small]:
    base = tmp_path_factory.mktemp("membership")
    with provisioned(_example(base), base) as p:
        yield Small(p.spec, p.plan, cluster_ssh(p.plan.name))


def _changed(result: ProvisionResult) -> dict[str, int]:
    return {h: r.changed for h, r in result.host_totals().items()}


def test_control_plane_grows_1_to_3_and_shrinks_back_while_the_apiserver_is_served(
        small: Small) -> None:
    assert etcd_members(small.run, "lab-cp1") == [("lab-cp1", False)]
    pids = main_pids(small.run, "lab-cp1")
    poller = ApiPoller(small.run, "lab-w1")
    try:
        three = small.with_control_plane(3)
        started = time.monotonic()
        grown = run_provision(three)
        grow_s = time.monotonic() - started
        print(f"1 -> 3 control-plane nodes: {grow_s:.1f}s (steps {grown.steps}); changed "
              f"per host {_changed(grown)}")
        assert grown.succeeded, grown.failure
        assert not failing(list(grown.verify)), failing(list(grown.verify))
        assert etcd_members(small.run, "lab-cp1") == [
            ("lab-cp1", False), ("lab-cp2", False), ("lab-cp3", False)]
        # Neither the first member nor its apiserver was restarted by the growth.
        assert main_pids(small.run, "lab-cp1") == pids
        assert haproxy_backends(small.run, "lab-w1") == 3
        assert_converged(run_provision(three), 4)
        small.plan = build_plan(load_file(three))  # reaches lab-cp2 and lab-cp3 from here on

        one = small.with_control_plane(1)
        started = time.monotonic()
        shrunk = provision(one, None, None, None, True, LineProgress(sys.stdout), prune=True,
                           drain_timeout=240)
        shrink_s = time.monotonic() - started
        print(f"3 -> 1 control-plane nodes (--prune): {shrink_s:.1f}s (steps {shrunk.steps}); "
              f"changed per host {_changed(shrunk)}")
        assert shrunk.succeeded, shrunk.failure
        assert not failing(list(shrunk.verify)), failing(list(shrunk.verify))
    finally:
        results, errors = poller.stop()
    print(f"{len(results)} requests through lab-w1's haproxy, {results.count('FAIL')} failed"
          f"{': ' + errors if errors else ''}")
    assert etcd_members(small.run, "lab-cp1") == [("lab-cp1", False)]
    assert main_pids(small.run, "lab-cp1") == pids
    nodes = small.run("lab-cp1", "kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes "
                      "-o name").split()
    assert nodes == ["node/lab-cp1", "node/lab-w1"], nodes
    assert haproxy_backends(small.run, "lab-w1") == 1
    for host in ("lab-cp2", "lab-cp3"):
        left = small.run(host, "systemctl is-active etcd kube-apiserver kubelet 2>/dev/null "
                         "| sort -u; ls -d /var/lib/etcd /var/lib/kubelet 2>/dev/null; "
                         "ls -d /var/lib/etcd.removed-* | wc -l; true").split()
        assert left == ["inactive", "1"], (host, left)
    assert len(results) > 60 and results.count("FAIL") == 0, results
    assert_converged(run_provision(one), 2)
