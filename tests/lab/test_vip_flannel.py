"""End-to-end with ``loadBalancer.mode: vip`` and ``cni: flannel`` on one cluster
(inventories/nspawn-vip-flannel.yaml, 3 control-plane nodes and 1 worker; one cluster proves
both choices, so CI makes one cluster less): flannel's VXLAN overlay carries pod traffic
across nodes and Services answer by name from every node; keepalived holds the VIP on
exactly one control-plane node, and when that node stops another takes the VIP over and the
apiserver stays served at it; a second provision changes nothing, the flannel DaemonSet
included."""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.providers.nspawn import node
from provisioner.providers.ssh import cluster_ssh, ssh_run
from provisioner.state import cluster_dir
from tests.fixtures.lab_cluster import Provisioned, assert_converged, failing, provisioned

pytestmark = pytest.mark.lab

EXAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "nspawn-vip-flannel.yaml"


@pytest.fixture(scope="module")
def vip(tmp_path_factory: pytest.TempPathFactory,
        lab_registry_up: object) -> Iterator[Provisioned]:
    with provisioned(EXAMPLE, tmp_path_factory.mktemp("vip")) as p:
        yield p


def _holders(p: Provisioned, address: str) -> list[str]:
    ssh = cluster_ssh(p.plan.name)
    out = []
    for h in p.plan.control_plane:
        m = h.machine
        proc = ssh_run(ssh, m.ssh_user, m.address, m.ssh_port,
                       f"ip -o -4 addr show to {address}/32", timeout=15)
        if proc.returncode == 0 and address in proc.stdout:
            out.append(h.name)
    return out


def _livez(p: Provisioned, address: str, port: int) -> int:
    pki = cluster_dir(p.plan.name) / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(f"https://{address}:{port}/livez", context=ctx,
                                    timeout=3) as resp:
            return int(resp.status)
    except OSError:
        return 0


def test_flannel_carries_pod_traffic_and_services(vip: Provisioned) -> None:
    """Every check passes, nothing skipped; each node's pod reached the other nodes' pods
    and the probe Service by name; the overlay device flannel.1 exists on every node."""
    assert vip.first.succeeded, vip.first.failure
    checks = list(vip.first.verify)
    assert not failing(checks), failing(checks)
    assert [r.name for r in checks if r.status == "skipped"] == []
    nodes = [h.name for h in vip.plan.nodes]
    assert len(nodes) == 4, nodes
    for name in ("pod-network", "service-by-name", "pod-dns", "service-nodeport"):
        ok = {r.target for r in checks if r.name == name and r.status == "ok"}
        assert ok == set(nodes), (name, ok)
    ssh = cluster_ssh(vip.plan.name)
    for h in vip.plan.nodes:
        m = h.machine
        proc = ssh_run(ssh, m.ssh_user, m.address, m.ssh_port,
                       "ip -d link show flannel.1 && test -x /opt/cni/bin/flannel", timeout=30)
        assert proc.returncode == 0 and "vxlan id 1" in proc.stdout, (h.name, proc.stderr)


def test_vip_second_provision_changes_nothing(vip: Provisioned) -> None:
    assert_converged(vip.second, 4)


def test_the_vip_is_held_once_and_moves_when_its_holder_stops(vip: Provisioned) -> None:
    assert vip.first.succeeded, vip.first.failure
    lb = vip.plan.cluster.spec.load_balancer
    address, port = str(lb.vip), lb.port
    holders = _holders(vip, address)
    assert len(holders) == 1, holders
    assert _livez(vip, address, port) == 200
    t_stop = time.monotonic()
    node.stop(vip.plan.name, holders[0])
    try:
        t0 = time.monotonic()
        while _livez(vip, address, port) != 200 and time.monotonic() - t0 < 60:
            time.sleep(0.5)
        gap = time.monotonic() - t0
        print(f"VIP {address}: {holders[0]} stopped in {t0 - t_stop:.1f}s; served again "
              f"{gap:.1f}s after that")
        assert _livez(vip, address, port) == 200, f"the VIP is not served {gap:.0f}s later"
        moved = _holders(vip, address)
        assert len(moved) == 1 and moved[0] != holders[0], moved
    finally:
        vip.provider.up()
