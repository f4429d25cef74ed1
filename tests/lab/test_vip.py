"""End-to-end with ``loadBalancer.mode: vip`` (inventories/nspawn-vip.yaml): keepalived holds
the VIP on exactly one control-plane node; when that node stops, another takes the VIP over
and the apiserver stays served at it; a second provision changes nothing."""

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

EXAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "nspawn-vip.yaml"


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


def test_the_vip_is_held_once_and_moves_when_its_holder_stops(vip: Provisioned) -> None:
    assert vip.first.succeeded, vip.first.failure
    assert not failing(list(vip.first.verify)), failing(list(vip.first.verify))
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


def test_vip_second_provision_changes_nothing(vip: Provisioned) -> None:
    assert_converged(vip.second, 4)
