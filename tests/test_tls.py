"""Every server the cluster runs gets TLS 1.2 at least and the CIS cipher suites."""

from __future__ import annotations

from pathlib import Path

import yaml

from provisioner.components.base import TLS_CIPHER_SUITES
from provisioner.plan import build_plan
from provisioner.render.material import prepare
from provisioner.render.tree import render
from provisioner.spec import parse

SPEC = """
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: tls}
spec:
  provider: {type: nspawn}
  controlPlane: {count: 1}
  workers: {count: 1}
"""


def test_tls_floor_and_suites_everywhere(tmp_path: Path) -> None:
    plan = build_plan(parse(SPEC))
    material, _ = prepare(plan, tmp_path / "s", tmp_path)
    files = {f.path: f.content.decode() for f in render(plan, material, None).hosts["tls-cp1"]}
    suites = ",".join(TLS_CIPHER_SUITES)
    for unit in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        text = files[f"/etc/systemd/system/{unit}.service"]
        assert "--tls-min-version=VersionTLS12" in text, unit
        assert f"--tls-cipher-suites={suites}" in text, unit
    etcd = files["/etc/systemd/system/etcd.service"]
    assert "--tls-min-version=TLS1.2" in etcd and f"--cipher-suites={suites}" in etcd
    kubelet = yaml.safe_load(files["/var/lib/kubelet/config.yaml"])
    assert kubelet["tlsMinVersion"] == "VersionTLS12"
    assert kubelet["tlsCipherSuites"] == list(TLS_CIPHER_SUITES)
    assert not any("CBC" in s or "RC4" in s or "3DES" in s for s in TLS_CIPHER_SUITES)
