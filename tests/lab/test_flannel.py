"""End-to-end with ``cni: flannel``: inventories/nspawn-flannel.yaml (1 control-plane node, 2
workers) on nspawn machines with the built programs and the flannel image from the lab
registry: the VXLAN overlay carries pod traffic across nodes, Services answer by name from
every node, and a second provision changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.providers.ssh import cluster_ssh, ssh_run
from tests.fixtures.lab_cluster import Provisioned, assert_converged, failing, provisioned

pytestmark = pytest.mark.lab

EXAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "nspawn-flannel.yaml"


@pytest.fixture(scope="module")
def flannel(tmp_path_factory: pytest.TempPathFactory,
            lab_registry_up: object) -> Iterator[Provisioned]:
    with provisioned(EXAMPLE, tmp_path_factory.mktemp("flannel")) as p:
        yield p


def test_flannel_carries_pod_traffic_and_services(flannel: Provisioned) -> None:
    """Every check passes, nothing skipped; each node's pod reached the other nodes' pods
    and the probe Service by name; the overlay device flannel.1 exists on every node."""
    assert flannel.first.succeeded, flannel.first.failure
    checks = list(flannel.first.verify)
    assert not failing(checks), failing(checks)
    assert [r.name for r in checks if r.status == "skipped"] == []
    nodes = [h.name for h in flannel.plan.nodes]
    for name in ("pod-network", "service-by-name", "pod-dns", "service-nodeport"):
        ok = {r.target for r in checks if r.name == name and r.status == "ok"}
        assert ok == set(nodes), (name, ok)
    ssh = cluster_ssh(flannel.plan.name)
    for h in flannel.plan.nodes:
        m = h.machine
        proc = ssh_run(ssh, m.ssh_user, m.address, m.ssh_port,
                       "ip -d link show flannel.1 && test -x /opt/cni/bin/flannel", timeout=30)
        assert proc.returncode == 0 and "vxlan id 1" in proc.stdout, (h.name, proc.stderr)


def test_flannel_second_provision_changes_nothing(flannel: Provisioned) -> None:
    """The idempotency gate, the flannel DaemonSet included."""
    assert_converged(flannel.second, 3)
