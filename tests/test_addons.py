"""Tests for the addon manifests: they parse, carry the spec's values, and nothing else."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from provisioner.render.addons import (
    ADDONS,
    IMAGE_KEYS,
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    AddonContext,
    addon_images,
    addon_manifests,
)

# Deliberately fake registry and tags: any upstream reference left in a template shows up.
IMAGES = {
    key: f"registry.test/addons/{key.replace('_', '-')}:v0.0.{i}"
    for i, key in enumerate(IMAGE_KEYS)
}
CNIS_WITH_MANIFEST = ("flannel",)


def make_ctx(**overrides: Any) -> AddonContext:
    base = AddonContext(
        cluster_name="lab",
        cluster_domain="k8s.test",
        pod_cidr="10.244.0.0/16",
        service_cidr="10.96.0.0/12",
        node_cidr_mask_size=24,
        dns_ip="10.96.0.10",
        dns_replicas=2,
        upstream_servers=("192.0.2.53", "198.51.100.53"),
        node_resolver=True,
        nodelocaldns_enabled=True,
        nodelocaldns_ip="169.254.20.10",
        cni="flannel",
        metrics_server_enabled=True,
        dashboard_enabled=True,
        logging_enabled=True,
        api_server_host="192.0.2.10",
        api_server_port=6443,
        images=dict(IMAGES),
    )
    return dataclasses.replace(base, **overrides)


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def all_docs(manifests: dict[str, str]) -> list[dict[str, Any]]:
    return [d for text in manifests.values() for d in docs(text)]


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name}, found {len(hits)}"
    return hits[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(obj)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def find_container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    hits = [c for c in containers(obj) if c["name"] == name]
    assert len(hits) == 1, f"expected one container {name}, found {len(hits)}"
    return hits[0]


@pytest.fixture(params=CNIS_WITH_MANIFEST)
def full(request: pytest.FixtureRequest) -> tuple[AddonContext, dict[str, str]]:
    ctx = make_ctx(cni=request.param)
    return ctx, addon_manifests(ctx)


def test_file_names_are_in_apply_order_and_complete(
    full: tuple[AddonContext, dict[str, str]],
) -> None:
    ctx, manifests = full
    assert list(manifests) == sorted(manifests)
    assert list(manifests) == [
        "00-kubelet-rbac.yaml",
        f"10-cni-{ctx.cni}.yaml",
        "20-coredns.yaml",
        "21-nodelocaldns.yaml",
        "30-metrics-server.yaml",
        "40-dashboard.yaml",
        "50-logging.yaml",
    ]


def test_every_object_parses_and_carries_the_managed_by_label(
    full: tuple[AddonContext, dict[str, str]],
) -> None:
    _, manifests = full
    for name, text in manifests.items():
        objs = docs(text)
        assert objs, f"{name} has no objects"
        for obj in objs:
            assert {"apiVersion", "kind", "metadata"} <= obj.keys(), name
            labels = obj["metadata"].get("labels", {})
            where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
            assert labels.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE, where


def test_images_are_exactly_those_from_the_context(
    full: tuple[AddonContext, dict[str, str]],
) -> None:
    ctx, manifests = full
    used = {
        c["image"]
        for obj in all_docs(manifests)
        if obj["kind"] in ("Deployment", "DaemonSet")
        for c in containers(obj)
    }
    assert used == set(addon_images(ctx))
    assert used <= set(ctx.images.values())
    # Nothing image-like that did not come from the context, even outside `image:` fields.
    for text in manifests.values():
        for line in text.splitlines():
            if line.strip().startswith("image:"):
                assert line.split("image:", 1)[1].strip() in used, line


def test_coredns(full: tuple[AddonContext, dict[str, str]]) -> None:
    ctx, manifests = full
    objs = docs(manifests["20-coredns.yaml"])
    svc = find(objs, "Service", "kube-dns")
    assert svc["metadata"]["namespace"] == "kube-system"
    assert svc["spec"]["clusterIP"] == ctx.dns_ip
    ports = {(p["port"], p["protocol"]) for p in svc["spec"]["ports"]}
    assert ports == {(53, "UDP"), (53, "TCP"), (9153, "TCP")}

    corefile = find(objs, "ConfigMap", "coredns")["data"]["Corefile"]
    assert f"kubernetes {ctx.cluster_domain} in-addr.arpa ip6.arpa" in corefile
    assert "forward . 192.0.2.53 198.51.100.53" in corefile
    for plugin in ("cache", "loop", "reload", "ready", "prometheus :9153"):
        assert plugin in corefile

    deploy = find(objs, "Deployment", "coredns")
    assert deploy["spec"]["replicas"] == ctx.dns_replicas
    spec = pod_spec(deploy)
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["affinity"]["podAntiAffinity"]
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    container = spec["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/ready",
        "port": 8181,
        "scheme": "HTTP",
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["port"] == 8080
    find(objs, "ClusterRole", "system:coredns")
    find(objs, "ClusterRoleBinding", "system:coredns")
    find(objs, "ServiceAccount", "coredns")


def test_coredns_without_upstreams_forwards_to_resolv_conf() -> None:
    manifests = addon_manifests(make_ctx(upstream_servers=()))
    corefile = find(docs(manifests["20-coredns.yaml"]), "ConfigMap", "coredns")["data"]
    assert "forward . /etc/resolv.conf" in corefile["Corefile"]
    local = find(docs(manifests["21-nodelocaldns.yaml"]), "ConfigMap", "node-local-dns")
    assert "forward . /etc/resolv.conf" in local["data"]["Corefile"]


def test_nodelocaldns(full: tuple[AddonContext, dict[str, str]]) -> None:
    ctx, manifests = full
    objs = docs(manifests["21-nodelocaldns.yaml"])
    find(objs, "Service", "kube-dns-upstream")
    corefile = find(objs, "ConfigMap", "node-local-dns")["data"]["Corefile"]
    assert f"{ctx.cluster_domain}:53" in corefile
    assert f"bind {ctx.nodelocaldns_ip} {ctx.dns_ip}" in corefile
    assert "__PILLAR__LOCAL__DNS__" not in corefile
    ds = find(objs, "DaemonSet", "node-local-dns")
    spec = pod_spec(ds)
    assert spec["hostNetwork"] is True
    assert f"{ctx.nodelocaldns_ip},{ctx.dns_ip}" in spec["containers"][0]["args"]


def test_kubelet_rbac_grants_the_apiserver_client(
    full: tuple[AddonContext, dict[str, str]],
) -> None:
    _, manifests = full
    objs = docs(manifests["00-kubelet-rbac.yaml"])
    role = next(o for o in objs if o["kind"] == "ClusterRole")
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"nodes/proxy", "nodes/stats", "nodes/log", "nodes/metrics"} <= resources
    binding = next(o for o in objs if o["kind"] == "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "User",
            "name": "kube-apiserver-kubelet-client",
        }
    ]


def test_metrics_server(full: tuple[AddonContext, dict[str, str]]) -> None:
    _, manifests = full
    objs = docs(manifests["30-metrics-server.yaml"])
    for kind, name in [
        ("ServiceAccount", "metrics-server"),
        ("ClusterRole", "system:aggregated-metrics-reader"),
        ("ClusterRole", "system:metrics-server"),
        ("RoleBinding", "metrics-server-auth-reader"),
        ("ClusterRoleBinding", "metrics-server:system:auth-delegator"),
        ("ClusterRoleBinding", "system:metrics-server"),
        ("Service", "metrics-server"),
        ("APIService", "v1beta1.metrics.k8s.io"),
    ]:
        find(objs, kind, name)
    reader = find(objs, "RoleBinding", "metrics-server-auth-reader")
    assert reader["roleRef"]["name"] == "extension-apiserver-authentication-reader"
    args = pod_spec(find(objs, "Deployment", "metrics-server"))["containers"][0]["args"]
    assert "--kubelet-preferred-address-types=InternalIP" in args
    assert "--secure-port=10250" in args
    assert not any(a.startswith("--kubelet-insecure-tls") for a in args)


def test_dashboard(full: tuple[AddonContext, dict[str, str]]) -> None:
    _, manifests = full
    objs = docs(manifests["40-dashboard.yaml"])
    find(objs, "Namespace", "kubernetes-dashboard")
    for name in ("kubernetes-dashboard", "dashboard-metrics-scraper"):
        deploy = find(objs, "Deployment", name)
        assert deploy["metadata"]["namespace"] == "kubernetes-dashboard"
        find(objs, "Service", name)


def test_logging(full: tuple[AddonContext, dict[str, str]]) -> None:
    _, manifests = full
    objs = docs(manifests["50-logging.yaml"])
    find(objs, "Namespace", "logging")
    find(objs, "ServiceAccount", "fluent-bit")
    conf = find(objs, "ConfigMap", "fluent-bit-config")["data"]["fluent-bit.conf"]
    assert "Path              /var/log/containers/*.log" in conf
    assert "_SYSTEMD_UNIT=kubelet.service" in conf
    assert "_SYSTEMD_UNIT=containerd.service" in conf
    assert "Name                kubernetes" in conf
    output_section = conf.split("[OUTPUT]", 1)[1]
    assert "[OUTPUT]" not in output_section, "stdout must be the only output"
    assert output_section.split()[:2] == ["Name", "stdout"]
    ds = find(objs, "DaemonSet", "fluent-bit")
    mounts = {m["mountPath"] for m in pod_spec(ds)["containers"][0]["volumeMounts"]}
    assert "/var/log" in mounts


def test_flannel() -> None:
    ctx = make_ctx(cni="flannel", pod_cidr="10.50.0.0/16")
    objs = docs(addon_manifests(ctx)["10-cni-flannel.yaml"])
    find(objs, "Namespace", "kube-flannel")
    cfg = find(objs, "ConfigMap", "kube-flannel-cfg")["data"]
    net = json.loads(cfg["net-conf.json"])
    assert net["Network"] == "10.50.0.0/16"
    assert net["Backend"]["Type"] == "vxlan"
    assert json.loads(cfg["cni-conf.json"])["plugins"][0]["type"] == "flannel"
    ds = find(objs, "DaemonSet", "kube-flannel-ds")
    spec = pod_spec(ds)
    # The flannel CNI plugin binary is a node artifact (cni-plugin-flannel), not copied in
    # by an init container from a flannel-cni-plugin image.
    inits = [c["name"] for c in spec["initContainers"]]
    assert inits == ["install-cni"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "cni-plugin" not in volumes
    assert not any(v.get("hostPath", {}).get("path") == "/opt/cni/bin" for v in volumes.values())
    main = find_container(ds, "kube-flannel")
    assert main["command"] == ["/opt/bin/flanneld"]
    assert "--kube-subnet-mgr" in main["args"]


def test_flannel_uses_only_the_flannel_image() -> None:
    ctx = make_ctx(cni="flannel")
    objs = docs(addon_manifests(ctx)["10-cni-flannel.yaml"])
    ds = find(objs, "DaemonSet", "kube-flannel-ds")
    assert {c["image"] for c in containers(ds)} == {IMAGES["flannel"]}
    flannel_addon = next(a for a in ADDONS if a.name == "flannel")
    assert flannel_addon.images == ("flannel",)
    assert "flannel_cni_plugin" not in IMAGE_KEYS
    text = addon_manifests(ctx)["10-cni-flannel.yaml"]
    body = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in body if "cni-plugin" in line]


def test_bridge_has_no_cni_manifest() -> None:
    manifests = addon_manifests(make_ctx(cni="bridge"))
    assert not [name for name in manifests if name.startswith("10-")]
    images = addon_images(make_ctx(cni="bridge"))
    assert IMAGES["flannel"] not in images


def test_disabled_addons_are_absent() -> None:
    ctx = make_ctx(
        cni="bridge",
        nodelocaldns_enabled=False,
        metrics_server_enabled=False,
        dashboard_enabled=False,
        logging_enabled=False,
    )
    assert list(addon_manifests(ctx)) == ["00-kubelet-rbac.yaml", "20-coredns.yaml"]
    assert addon_images(ctx) == [IMAGES["coredns"]]


def test_addons_only_name_known_image_keys() -> None:
    named = [key for addon in ADDONS for key in addon.images]
    assert set(named) == set(IMAGE_KEYS)
    assert len(named) == len(set(named)), "an image key belongs to one addon"


def test_extra_images_are_ignored() -> None:
    ctx = make_ctx(images={**IMAGES, "kube_proxy": "registry.test/kube-proxy:v1"})
    assert "registry.test/kube-proxy:v1" not in addon_images(ctx)


def test_disabled_addons_need_no_images() -> None:
    images = {"coredns": IMAGES["coredns"]}
    ctx = make_ctx(
        cni="bridge",
        nodelocaldns_enabled=False,
        metrics_server_enabled=False,
        dashboard_enabled=False,
        logging_enabled=False,
        images=images,
    )
    assert list(addon_manifests(ctx)) == ["00-kubelet-rbac.yaml", "20-coredns.yaml"]


def test_output_is_deterministic(full: tuple[AddonContext, dict[str, str]]) -> None:
    ctx, first = full
    second = addon_manifests(ctx)
    assert first == second
    assert list(first) == list(second)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cni": "weave"}, "cni"),
        ({"images": {k: v for k, v in IMAGES.items() if k != "coredns"}}, "images"),
        ({"dns_ip": "10.200.0.10"}, "dns_ip"),
        ({"node_cidr_mask_size": 16}, "node_cidr_mask_size"),
        ({"node_cidr_mask_size": 33}, "node_cidr_mask_size"),
        ({"cni": "calico"}, "cni"),
        ({"cni": "cilium"}, "cni"),
        ({"dns_replicas": 0}, "dns_replicas"),
    ],
)
def test_bad_context_is_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        addon_manifests(make_ctx(**overrides))


def test_no_forward_without_upstreams_or_a_node_resolver() -> None:
    """Nodes without a resolver (nspawn machines in the lab): CoreDNS and node-local DNS
    answer cluster names only; with a resolver they forward to it."""
    bare = addon_manifests(make_ctx(upstream_servers=(), node_resolver=False))
    text = "".join(bare.values())
    assert "forward . \n" not in text and "forward . {" not in text
    assert "forward . /etc/resolv.conf" not in text
    host = addon_manifests(make_ctx(upstream_servers=(), node_resolver=True))
    assert "forward . /etc/resolv.conf" in "".join(host.values())
