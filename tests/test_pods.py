"""The pod helpers of verify and smoke against a test double of the Kubernetes API.

Scope: ``FakeApiDouble`` stands in for the apiserver (pods cannot run in a unit test): it
keeps the objects POSTed to it and plays the kubelet's part by giving pods a node, an IP, a
Ready condition or a termination message, per scenario. The real thing is exercised by the
lab tests (tests/lab/test_cluster.py, test_vip_flannel.py).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from provisioner.plan import Plan, build_plan
from provisioner.spec import parse
from provisioner.verify.pods import (
    CLIENT_SCRIPT,
    parse_report,
    pod_problem,
    registry_hint,
    run_probe,
)
from provisioner.verify.smoke import Step, run_smoke
from provisioner.verify.transport import HttpResponse

SPEC = """
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: pt}
spec:
  provider: {type: nspawn}
  controlPlane: {count: 1}
  workers: {count: 2}
  registries:
    private:
      - {host: hub.test.com, username: lab, passwordFile: /dev/null}
"""


@pytest.fixture(scope="module")
def plan() -> Plan:
    return build_plan(parse(SPEC))


class FakeApiDouble:
    """Test double of ``ApiClient``: an in-memory apiserver plus a scripted kubelet."""

    def __init__(self, plan: Plan, pull_error: str = "", client_report: str = "") -> None:
        self.plan = plan
        self.pull_error = pull_error
        self.client_report = client_report
        self.objects: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []

    def request(self, method: str, path: str, body: Any = None) -> HttpResponse:
        if method == "POST":
            obj = dict(body)
            name = obj["metadata"]["name"]
            if obj["kind"] == "Service":
                obj["spec"] = {**obj["spec"], "clusterIP": "10.96.7.7",
                               "ports": [{**obj["spec"]["ports"][0], "nodePort": 30080}]}
            self.objects[f"{path}/{name}"] = obj
            return HttpResponse(201, json.dumps(obj))
        if method == "DELETE":
            self.deleted.append(path.split("?")[0])
            return HttpResponse(200, "{}")
        return HttpResponse(200, json.dumps(self.get_json(path)))

    def get_json(self, path: str) -> dict[str, Any]:
        parts = urlsplit(path)
        query = unquote(parts.query)
        if parts.path == "/api/v1/namespaces":
            return {"items": []}
        if parts.path.endswith("/events"):
            return {"items": [{"type": "Warning", "reason": "Failed",
                               "message": self.pull_error, "lastTimestamp": "1"}]
                    if self.pull_error else []}
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", parts.path)
        assert m, path
        selector = query.removeprefix("labelSelector=")
        return {"items": self._pods(m.group(1), selector)}

    def _pods(self, ns: str, selector: str) -> list[dict[str, Any]]:
        app = selector.split("=", 1)[1]
        nodes = [h.name for h in self.plan.nodes]
        out = []
        for key, obj in self.objects.items():
            labels = (obj.get("spec", {}).get("template", {}).get("metadata", {})
                      .get("labels") or obj["metadata"].get("labels") or {})
            if f"/namespaces/{ns}/" not in key or labels.get("app") != app:
                continue
            if obj["kind"] == "DaemonSet":
                out += [self._pod(f"{app}-{i}", ns, n, running=True)
                        for i, n in enumerate(nodes)]
            elif obj["kind"] == "Deployment":
                out.append(self._pod(f"{app}-0", ns, nodes[-1], running=True))
            elif obj["kind"] == "Pod":
                out.append(self._pod(obj["metadata"]["name"], ns, obj["spec"]["nodeName"],
                                     running=False))
        return out

    def _pod(self, name: str, ns: str, node: str, running: bool) -> dict[str, Any]:
        meta = {"name": name, "namespace": ns}
        if self.pull_error:
            return {"metadata": meta, "spec": {"nodeName": node}, "status": {
                "phase": "Pending", "containerStatuses": [{"state": {"waiting": {
                    "reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}}
        if running:
            ip = f"10.244.{[h.name for h in self.plan.nodes].index(node)}.5"
            return {"metadata": meta, "spec": {"nodeName": node}, "status": {
                "phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": "True"}]}}
        report = self.client_report or self._all_ok(node)
        return {"metadata": meta, "spec": {"nodeName": node}, "status": {
            "phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {
                "exitCode": 0, "message": report}}}]}}

    def _all_ok(self, node: str) -> str:
        peers = [h.name for h in self.plan.nodes if h.name != node]
        return "".join(f"pod {p} ok 10.244.x.5\n" for p in peers) + (
            "dns kubernetes.default.svc.cluster.local ok 10.96.0.1\n"
            "svc-name probe-web ok\nsvc-ip 10.96.7.7 ok\n"
            "<h1>provisioner: nginx from Debian 12</h1>\n")


def test_probe_collects_each_nodes_report_and_cleans_up(plan: Plan) -> None:
    api = FakeApiDouble(plan)
    urls: list[str] = []

    def fetch(url: str) -> str | None:
        urls.append(url)
        return None

    result = run_probe(plan, api, 5, fetch=fetch)
    assert result.error is None
    assert set(result.lines) == {h.name for h in plan.nodes}
    cp1 = result.lines["pt-cp1"]
    assert {(line.kind, line.subject) for line in cp1 if line.kind == "pod"} == {
        ("pod", "pt-w1"), ("pod", "pt-w2")}
    assert all(line.ok for line in cp1)
    # Each client was told the web pods of the other nodes only, and the right DNS answer.
    client = api.objects[next(k for k in api.objects if k.endswith("/probe-client-pt-w1"))]
    env = {e["name"]: e["value"] for e in client["spec"]["containers"][0]["env"]}
    assert sorted(env["PEERS"].split()) == ["10.244.0.5@pt-cp1", "10.244.2.5@pt-w2"]
    assert env["DNS_WANT"] == str(plan.kubernetes_service_ip)
    assert env["SVC_IP"] == "10.96.7.7"
    assert client["spec"]["containers"][0]["image"] == "hub.test.com/busybox"
    assert sorted(urls) == sorted(f"http://{h.address}:30080/" for h in plan.nodes)
    assert result.node_port_errors == dict.fromkeys((h.name for h in plan.nodes), None)
    assert api.deleted and api.deleted[-1].startswith("/api/v1/namespaces/provisioner-verify-")


def test_a_probe_from_some_nodes_still_serves_from_every_node(plan: Plan) -> None:
    """Clients on the named nodes only (what provision asks after adding a node); the web
    pods, the peers each client fetches and the NodePorts stay every node's."""
    api = FakeApiDouble(plan)
    urls: list[str] = []

    def fetch(url: str) -> str | None:
        urls.append(url)
        return None

    result = run_probe(plan, api, 5, fetch=fetch, clients=["pt-w2"])
    assert result.error is None
    assert set(result.lines) == {"pt-w2"}
    assert sorted(k.rsplit("/", 1)[1] for k in api.objects if "/pods/" in k) == [
        "probe-client-pt-w2"]
    assert set(result.web_pods) == {h.name for h in plan.nodes}
    client = api.objects[next(k for k in api.objects if k.endswith("/probe-client-pt-w2"))]
    env = {e["name"]: e["value"] for e in client["spec"]["containers"][0]["env"]}
    assert sorted(env["PEERS"].split()) == ["10.244.0.5@pt-cp1", "10.244.1.5@pt-w1"]
    assert sorted(urls) == sorted(f"http://{h.address}:30080/" for h in plan.nodes)


def test_probe_reports_an_unauthorized_registry_by_name(plan: Plan) -> None:
    api = FakeApiDouble(plan, pull_error='Failed to pull image "hub.test.com/nginx": '
                        "failed to resolve reference: unexpected status from HEAD request to "
                        "https://hub.test.com/v2/nginx/manifests/latest: 401 Unauthorized")
    result = run_probe(plan, api, 5)
    assert result.error is not None
    assert "hub.test.com" in result.error and "ImagePullBackOff" in result.error
    assert "unauthorized" in result.error and "passwordFile" in result.error
    assert api.deleted  # cleaned up even though it failed


def test_client_report_lines_are_parsed() -> None:
    lines = parse_report("pod n2 ok 10.244.1.5\npod n3 FAIL 10.244.2.5\nnoise\n"
                         "dns kubernetes.default.svc.cluster.local FAIL ;; no servers\n")
    assert [(x.kind, x.subject, x.ok) for x in lines] == [
        ("pod", "n2", True), ("pod", "n3", False),
        ("dns", "kubernetes.default.svc.cluster.local", False)]
    assert lines[2].detail == ";; no servers"
    # The script prints exactly these kinds, and uses no wget -T (it crashes under seccomp).
    assert all(f'echo "{k} ' in CLIENT_SCRIPT for k in ("pod", "dns", "svc-name", "svc-ip"))
    assert "wget -q -T" not in CLIENT_SCRIPT


def test_pod_problem_and_registry_hint() -> None:
    api = FakeApiDouble.__new__(FakeApiDouble)
    api.pull_error = "x509: certificate signed by unknown authority"
    waiting = {"metadata": {"name": "p", "namespace": "n"}, "status": {"containerStatuses": [
        {"state": {"waiting": {"reason": "ErrImagePull", "message": api.pull_error}}}]}}
    problem = pod_problem(api, waiting)
    assert problem is not None and problem.startswith("ErrImagePull: x509")
    assert "caFile" in registry_hint(problem)
    creating = {"metadata": {"name": "p", "namespace": "n"}, "status": {"containerStatuses": [
        {"state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    assert pod_problem(api, creating) is None
    assert registry_hint("connection refused") == ""


def test_smoke_runs_the_seeds_example_from_another_node(plan: Plan) -> None:
    api = FakeApiDouble(plan)
    steps: list[Step] = []
    assert run_smoke(plan, api, 5, steps.append)
    names = [s.name for s in steps]
    assert names == ["namespace", "create deployment", "expose", "rollout", "fetch",
                     "clean up"]
    assert "web --image=hub.test.com/nginx" in steps[1].detail
    deploy = next(v for k, v in api.objects.items() if k.endswith("/deployments/web"))
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "hub.test.com/nginx"
    client = next(v for k, v in api.objects.items() if k.endswith("/pods/client"))
    # The web pod runs on the last node; the client is put on another one.
    assert client["spec"]["nodeName"] != plan.nodes[-1].name
    assert ".svc.cluster.local/" in steps[4].detail and steps[4].ok


def test_smoke_fails_when_the_page_is_not_served(plan: Plan) -> None:
    api = FakeApiDouble(plan, client_report="wget: server returned error: HTTP/1.1 503\n")
    steps: list[Step] = []
    assert not run_smoke(plan, api, 5, steps.append)
    fetch = next(s for s in steps if s.name == "fetch")
    assert not fetch.ok and "503" in fetch.detail
    assert steps[-1].name == "clean up"
