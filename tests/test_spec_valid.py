"""Valid specs load, get their data-dependent defaults, and resolve to the expected machines."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from provisioner.spec import Cluster, Machine, Role, load_file, machines, parse
from provisioner.spec.models import Artifacts
from provisioner.versions import manifest

ROOT = Path(__file__).parent.parent
VALID = Path(__file__).parent / "specs" / "valid"
FILES = [*sorted(VALID.glob("*.yaml")), *sorted((ROOT / "inventories").glob("*.yaml"))]

CP = frozenset({Role.CONTROL_PLANE, Role.NODE, Role.ETCD})  # stacked etcd
CP_ONLY = frozenset({Role.CONTROL_PLANE, Role.NODE})  # dedicated etcd elsewhere
ETCD = frozenset({Role.ETCD})
WORKER = frozenset({Role.NODE})


def _load(name: str) -> Cluster:
    return load_file(VALID / name)


def _table(cluster: Cluster) -> list[tuple[str, str, frozenset[Role]]]:
    return [(m.name, str(m.address), m.roles) for m in machines(cluster)]


def _by_name(cluster: Cluster) -> dict[str, Machine]:
    return {m.name: m for m in machines(cluster)}


def test_corpus_is_there() -> None:
    assert len(list(VALID.glob("*.yaml"))) >= 6


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_valid_spec_loads(path: Path) -> None:
    cluster = load_file(path)
    assert cluster.spec.kubernetes_version in manifest.supported_versions()
    ms = machines(cluster)
    assert ms, "a cluster has machines"
    assert len({m.name for m in ms}) == len(ms)
    assert len({m.address for m in ms}) == len(ms)
    assert any(m.is_control_plane for m in ms)
    assert sum(m.is_etcd for m in ms) in (1, 3, 5)
    # Same text, same result: parse is pure.
    assert parse(path.read_text(), str(path), path.resolve().parent) == cluster


def test_minimal_defaults() -> None:
    cluster = _load("01-minimal-nspawn.yaml")
    assert cluster.spec.kubernetes_version == manifest.default_version()
    assert cluster.spec.network.cni == "bridge"
    assert cluster.spec.load_balancer.mode == "localHaproxy"
    assert _table(cluster) == [("mini-cp1", "192.168.56.11", CP)]


def test_static_named_control_plane_and_workers_by_default() -> None:
    cluster = _load("02-static-hosts-ssh.yaml")
    assert _table(cluster) == [
        ("cp-a", "10.10.0.11", CP),
        ("cp-b", "10.10.0.12", CP),
        ("cp-c", "10.10.0.13", CP),
        # Not in any role group, so workers.
        ("gpu-1", "10.10.1.21", WORKER),
        ("web-1", "10.10.1.22", WORKER),
    ]
    ms = _by_name(cluster)
    assert (ms["cp-a"].ssh_user, ms["cp-a"].ssh_port) == ("admin", 22)
    # Relative key paths start at the spec's folder, whatever the working directory.
    assert ms["cp-a"].ssh_key == VALID.resolve() / "keys/prod_ed25519"
    assert (ms["cp-c"].ssh_user, ms["cp-c"].ssh_port) == ("admin", 2222)
    assert ms["cp-c"].ssh_key == VALID.resolve() / "keys/prod_ed25519"
    assert (ms["gpu-1"].ssh_user, ms["gpu-1"].ssh_port) == ("ubuntu", 22)
    assert ms["gpu-1"].ssh_key == VALID.resolve() / "keys/gpu_ed25519"
    reg = cluster.spec.registries.private[0]
    assert (reg.username, reg.password_file) == ("ci-puller",
                                                 VALID.resolve() / "secrets/hub-password")


def test_vagrant_offsets_and_a_built_local_source() -> None:
    cluster = _load("03-vagrant-flannel-built.yaml")
    assert _table(cluster) == [
        ("vm-cp1", "192.168.60.20", CP),
        ("vm-w1", "192.168.60.21", WORKER),
        ("vm-w2", "192.168.60.22", WORKER),
    ]
    assert cluster.spec.network.kube_proxy_mode == "ipvs"
    assert cluster.spec.artifacts.source == "local"
    assert cluster.spec.artifacts.path == VALID.resolve() / "artifacts/k8s-1.35.4"


def test_mirror_url_drops_its_trailing_slash() -> None:
    """So paths can be joined with '/'. (A mirror spec of a release with unpinned artifacts
    is not valid: the model is checked on its own.)"""
    art = Artifacts.model_validate({"source": "mirror",
                                    "mirrorURL": "https://mirror.example.com/k8s/"})
    assert art.mirror_url == "https://mirror.example.com/k8s"


def test_five_control_plane_nodes_with_dedicated_etcd() -> None:
    cluster = _load("04-nspawn-5cp-dedicated-etcd.yaml")
    table = _table(cluster)
    assert [n for n, _, r in table if r == CP_ONLY] == [f"big-cp{i}" for i in range(1, 6)]
    assert [n for n, _, r in table if r == ETCD] == ["big-etcd1", "big-etcd2", "big-etcd3"]
    assert [n for n, _, r in table if r == WORKER] == ["big-w1", "big-w2"]
    # Addresses are consecutive from the offset, in role order.
    assert [a for _, a, _ in table] == [f"192.168.56.{i}" for i in range(11, 21)]


def test_vip_is_free_and_in_subnet() -> None:
    cluster = _load("05-nspawn-vip.yaml")
    vip = cluster.spec.load_balancer.vip
    assert vip == IPv4Address("192.168.70.100")
    assert vip not in {m.address for m in machines(cluster)}
    assert [m.name for m in machines(cluster) if m.is_control_plane] == ["ha-cp1", "ha-cp2",
                                                                         "ha-cp3"]


def test_static_control_plane_count_takes_the_first_hosts() -> None:
    cluster = _load("06-static-external-lb.yaml")
    assert _table(cluster) == [
        ("n1", "172.20.0.1", CP),
        ("n2", "172.20.0.2", CP),
        ("n3", "172.20.0.3", CP),
        ("n4", "172.20.0.4", WORKER),
    ]
    assert cluster.spec.load_balancer.address == "api.edge.example.com"


def test_registries_and_local_artifacts() -> None:
    cluster = _load("07-registries-local-artifacts.yaml")
    reg = cluster.spec.registries
    assert [m.registry for m in reg.mirrors] == ["docker.io", "registry.k8s.io"]
    assert [p.host for p in reg.private] == ["hub.test.com", "localhost:5000"]
    assert cluster.spec.artifacts.path == VALID.resolve() / "bundles/k8s-1.33.tar"
    assert cluster.spec.container_runtime.oci_runtime == "runc"


def test_static_every_group_named() -> None:
    cluster = _load("08-static-dedicated-etcd.yaml")
    assert _table(cluster) == [
        ("cp", "10.1.0.10", CP_ONLY),
        ("e1", "10.1.0.21", ETCD),
        ("e2", "10.1.0.22", ETCD),
        ("e3", "10.1.0.23", ETCD),
        ("w1", "10.1.0.31", WORKER),
    ]


def test_each_cni_is_covered() -> None:
    cnis = {load_file(p).spec.network.cni for p in FILES}
    assert cnis == {"bridge", "flannel"}


def test_explicit_version_is_kept() -> None:
    assert _load("02-static-hosts-ssh.yaml").spec.kubernetes_version == "1.37.2"
