"""verify: each check's ok/warn/fail/skipped mapping, output formats and the CLI.

The transports are replaced by fakes (``FakeSsh``, ``FakeHttps``) that answer from one
``FakeCluster`` state, so scenarios (a stopped etcd majority, a lost control-plane node, a
corrupted apiserver certificate) are one attribute each. One test uses the real TLS client
against a server on 127.0.0.1 presenting a certificate from another CA.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import shutil
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from typer.testing import CliRunner

from provisioner import cli_verify
from provisioner.certs_check import MARK, READ_ARGV0
from provisioner.pki import ensure_pki
from provisioner.pki.certs import cert_pem, issue_ca, issue_leaf, key_pem, new_key
from provisioner.pki.model import CARequest, CertRequest
from provisioner.plan import Plan, build_plan
from provisioner.plan.model import HostPlan
from provisioner.spec import parse
from provisioner.verify import (
    CHECKS,
    CheckResult,
    UnknownCheckError,
    UnknownNodeError,
    check_names,
    exit_code,
    to_json,
    to_junit,
    verify,
)
from provisioner.verify.checks import apiserver as apiserver_checks
from provisioner.verify.checks import hosts as host_checks
from provisioner.verify.checks.etcd import quorum
from provisioner.verify.curl import curl_command
from provisioner.verify.model import Check, ok
from provisioner.verify.run import build_context, run_checks
from provisioner.verify.ssh import CommandResult, ParamikoRunner, SshUnavailable, ssh_settings
from provisioner.verify.transport import (
    ClientCreds,
    HttpResponse,
    TlsClient,
    TransportError,
)
from tests.fixtures.ssh_server import SshServer

SPEC = """
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: vt}
spec:
  provider: {type: nspawn}
  controlPlane: {count: 3}
  workers: {count: 1}
"""

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
# What FakeSsh serves for every certificate file a host is asked for (cert-expiry).
HOST_CERT = cert_pem(issue_ca(CARequest("ca", "host-ca"), new_key(), 365,
                              NOW - dt.timedelta(days=1))).decode()


def make_plan(text: str = SPEC) -> Plan:
    """A plan from spec text."""
    return build_plan(parse(text))


@pytest.fixture(scope="module")
def plan() -> Plan:
    """3 control-plane nodes (stacked etcd) and one worker, local haproxy."""
    return make_plan()


@pytest.fixture(scope="module")
def pki_state(plan: Plan, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory with the plan's real PKI, issued at NOW - 1 day."""
    sdir = tmp_path_factory.mktemp("state")
    ensure_pki(plan.pki, sdir / "pki", now=NOW - dt.timedelta(days=1))
    return sdir


@pytest.fixture
def state(pki_state: Path, tmp_path: Path) -> Path:
    """A private copy of the state directory (tests may corrupt it)."""
    dst = tmp_path / "state"
    shutil.copytree(pki_state, dst)
    return dst


@dataclass
class FakeCluster:
    """What the fake transports answer from: every knob is one failure scenario."""

    plan: Plan
    down: set[str] = field(default_factory=set)  # hosts gone entirely (no SSH, no TCP)
    etcd_stopped: set[str] = field(default_factory=set)
    apiserver: dict[str, str] = field(default_factory=dict)  # host -> ok|refused|tls
    etcd_wrong_endpoint: bool = False
    etcd_extra: list[str] = field(default_factory=list)  # members of hosts not in the plan
    etcd_learners: set[str] = field(default_factory=set)
    inactive: dict[str, dict[str, str]] = field(default_factory=dict)  # host -> unit -> state
    not_ready: set[str] = field(default_factory=set)
    # host -> GETs of its Node answered Ready=False (a restarted kubelet) before True; -1: never
    settling: dict[str, int] = field(default_factory=dict)
    # host -> its /readyz GETs answered 500 ([-]etcd failed) before 200
    readyz_failures: dict[str, int] = field(default_factory=dict)
    unregistered: set[str] = field(default_factory=set)
    git_version: str = "v1.37.2"
    apps_api: bool = False
    lease_holders: dict[str, str] = field(default_factory=dict)
    lease_renew: dt.datetime = NOW
    available: int = 2
    dns_answer: str = ""
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def node(self, name: str) -> dict[str, Any]:
        """The Node object as the apiserver answers it now (each read counts down `settling`)."""
        if name in self.not_ready:
            cond = {"status": "Unknown", "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status."}
        elif self.settling.get(name, 0) != 0:
            if self.settling[name] > 0:
                self.settling[name] -= 1
            cond = {"status": "False", "reason": "KubeletNotReady",
                    "message": "CSINode is not yet initialized"}
        else:
            cond = {"status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status"}
        return {"metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", **cond}]}}

    def name_of(self, address: str) -> str:
        return next(h.name for h in self.plan.hosts if str(h.address) == address)

    def etcd_up(self) -> list[str]:
        return [h.name for h in self.plan.etcd
                if h.name not in self.down and h.name not in self.etcd_stopped]

    def quorum(self) -> bool:
        return len(self.etcd_up()) > len(self.plan.etcd) // 2

    def apiserver_state(self, host: str) -> str:
        if host in self.down:
            return "down"
        return self.apiserver.get(host, "ok")


def member_id(plan: Plan, host: str) -> str:
    return str(1000 + [h.name for h in plan.etcd].index(host))


class FakeHttps:
    """``HttpsClient`` fake: etcd members on :2379, apiservers on :6443."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.c = cluster

    def request(self, method: str, url: str, creds: ClientCreds, body: bytes | None,
                timeout: float) -> HttpResponse:
        c = self.c
        parts = urlsplit(url)
        host = c.name_of(parts.hostname or "")
        c.log.append(f"{method} {url}")
        missing = [str(p) for p in (creds.ca, creds.cert, creds.key) if not p.is_file()]
        if missing:  # as the real client: our own files first
            raise TransportError("credentials", "missing " + ", ".join(missing))
        if host in c.down:
            raise TransportError("timeout", f"no answer within {timeout:g}s")
        if parts.port == 2379:
            return self._etcd(host, parts.path)
        if parts.path == "/readyz" and c.readyz_failures.get(host, 0) > 0:
            c.readyz_failures[host] -= 1
            return HttpResponse(500, "[+]ping ok\n[-]etcd failed: reason withheld\n"
                                "readyz check failed\n")
        state = c.apiserver_state(host)
        if state == "refused":
            raise TransportError("refused", "connection refused")
        if state == "tls":
            raise TransportError("tls-verify", "certificate verify failed: unable to get "
                                 "local issuer certificate")
        return self._api(method, parts.path, body)

    def _etcd(self, host: str, path: str) -> HttpResponse:
        c = self.c
        if host in c.etcd_stopped:
            raise TransportError("refused", "connection refused")
        if path == "/health":
            if c.quorum():
                return HttpResponse(200, '{"health":"true","reason":""}')
            return HttpResponse(503, '{"health":"false","reason":"RAFT NO LEADER"}')
        if path == "/v3/cluster/member/list":
            return HttpResponse(200, json.dumps({"members": [
                {"ID": str(i), "name": n, "isLearner": n in c.etcd_learners}
                for i, n in enumerate([h.name for h in c.plan.etcd] + c.etcd_extra)]}))
        leader = member_id(c.plan, c.etcd_up()[0]) if c.quorum() else "0"
        return HttpResponse(200, json.dumps({
            "header": {"member_id": member_id(c.plan, host), "raft_term": "2"},
            "version": "3.5.16", "leader": leader, "raftTerm": "2"}))

    def _api(self, method: str, path: str, body: bytes | None) -> HttpResponse:
        c = self.c
        if path in ("/livez", "/healthz"):
            return HttpResponse(200, "ok")
        if path == "/readyz":
            if c.etcd_wrong_endpoint or not c.quorum():
                return HttpResponse(500, "[+]ping ok\n[-]etcd failed: reason withheld\n"
                                    "readyz check failed\n")
            return HttpResponse(200, "ok")
        if path == "/version":
            return HttpResponse(200, json.dumps({"gitVersion": c.git_version}))
        if path == "/apis/apps/v1":
            return HttpResponse(200 if c.apps_api else 404, "{}")
        if path == "/api/v1/nodes":
            items = [c.node(h.name) for h in c.plan.nodes if h.name not in c.unregistered]
            return HttpResponse(200, json.dumps({"items": items}))
        m = re.fullmatch(r"/api/v1/nodes/([^/]+)", path)
        if m:
            if m.group(1) in c.unregistered:
                return HttpResponse(404, '{"kind":"Status","code":404}')
            return HttpResponse(200, json.dumps(c.node(m.group(1))))
        m = re.fullmatch(r"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/(.+)",
                         path)
        if m:
            holder = c.lease_holders.get(m.group(1), f"{c.plan.control_plane[0].name}_abc")
            if not holder:
                return HttpResponse(404, '{"kind":"Status","code":404}')
            renew = c.lease_renew.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            return HttpResponse(200, json.dumps({"spec": {
                "holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew}}))
        if path.startswith("/apis/apps/v1/namespaces/default/deployments"):
            name = "provisioner-smoke"
            if method == "POST":
                c.deployments[name] = json.loads(body or b"{}")
                return HttpResponse(201, "{}")
            if method == "DELETE":
                c.deployments.pop(name, None)
                return HttpResponse(200, "{}")
            return HttpResponse(200, json.dumps({"status": {"availableReplicas": c.available}}))
        if path.startswith("/api/v1/namespaces/default/pods"):
            return HttpResponse(200, json.dumps({"items": [{"status": {
                "phase": "Pending", "containerStatuses": [
                    {"state": {"waiting": {"reason": "ImagePullBackOff"}}}]}}]}))
        return HttpResponse(404, "not found")


class FakeSsh:
    """``SshRunner`` fake: hostname, systemctl show, curl and the DNS probe."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.c = cluster
        self.commands: list[tuple[str, str, bool]] = []

    def close(self) -> None:
        pass

    def run(self, host: HostPlan, command: str, timeout: float, root: bool) -> CommandResult:
        c = self.c
        self.commands.append((host.name, command, root))
        if host.name in c.down:
            raise SshUnavailable(host.name, "timeout", f"root@{host.address}:22: no answer "
                                 "within 5s", f"is {host.name} up and reachable from here?")
        if command == "hostname":
            return CommandResult(0, host.name + "\n", "")
        if command.startswith("echo UNIT="):
            lines = []
            for unit in re.findall(r"UNIT=([\w-]+)", command):
                state = c.inactive.get(host.name, {}).get(unit)
                if unit == "etcd" and host.name in c.etcd_stopped:
                    state = "inactive"
                lines.append(f"UNIT={unit}")
                if state is None:
                    lines += ["LoadState=loaded", "ActiveState=active", "SubState=running",
                              "Result=success", "ExecMainStatus=0"]
                else:
                    lines += ["LoadState=loaded", f"ActiveState={state}", "SubState=dead",
                              "Result=exit-code", "ExecMainStatus=1"]
            return CommandResult(0, "\n".join(lines) + "\n", "")
        argv = shlex.split(command)
        if argv[:2] == ["sh", "-c"] and argv[3:4] == [READ_ARGV0]:  # cert-expiry
            return CommandResult(0, "".join(f"{MARK} file {p}\n{HOST_CERT}" for p in argv[4:]),
                                 "")
        if argv[0] == "curl":
            return self._curl(argv[-1])
        if argv[0] == "python3":
            if c.dns_answer:
                return CommandResult(0, c.dns_answer, "")
            return CommandResult(1, "", "no answer from 10.96.0.10:53: timed out")
        return CommandResult(127, "", f"{argv[0]}: not found")

    def _curl(self, url: str) -> CommandResult:
        parts = urlsplit(url)
        mark = "\n__provisioner_http_status__="
        if parts.port in (10257, 10259):
            return CommandResult(0, f"ok{mark}200", "")
        states = [self.c.apiserver_state(h.name) for h in self.c.plan.control_plane]
        if "ok" in states:
            if parts.path == "/readyz" and not self.c.quorum():
                return CommandResult(0, f"[-]etcd failed: reason withheld{mark}500", "")
            return CommandResult(0, f"ok{mark}200", "")
        if "tls" in states:
            return CommandResult(60, "", "curl: (60) SSL certificate problem: unable to get "
                                 "local issuer certificate")
        return CommandResult(52, "", "curl: (52) Empty reply from server")


POD_CHECKS = {"coredns-resolves", "smoke-deployment", "pod-network", "pod-dns",
              "service-by-name", "service-nodeport", "metrics-api"}


def run(cluster: FakeCluster, state: Path, only: list[str] | None = None,
        now: dt.datetime = NOW, workload_timeout: float = 0.0) -> list[CheckResult]:
    """verify with the fakes."""
    return verify(cluster.plan, state, only, ssh=FakeSsh(cluster), https=FakeHttps(cluster),
                  now=now, timeout=1.0, workload_timeout=workload_timeout)


def pick(results: list[CheckResult], name: str, target: str = "cluster") -> CheckResult:
    """The result of check ``name`` on ``target``."""
    found = [r for r in results if r.name == name and r.target == target]
    assert len(found) == 1, (name, target, results)
    return found[0]


# --- the whole run -------------------------------------------------------------------------


def test_healthy_cluster_without_apps_api_skips_pod_checks(plan: Plan, state: Path) -> None:
    results = run(FakeCluster(plan), state)
    bad = [r for r in results if r.status not in ("ok", "skipped")]
    assert bad == []
    skipped = {r.name for r in results if r.status == "skipped"}
    assert skipped == POD_CHECKS
    for r in results:
        if r.name in POD_CHECKS:
            assert "no workload API" in r.evidence and "does not serve apps/v1" in r.evidence
    assert exit_code(results) == 0
    # Every check ran, in registry order (etcd-backup-age only with spec.etcd.backup), and
    # per-host checks cover their hosts.
    assert list(dict.fromkeys(r.name for r in results)) == [
        n for n in check_names() if n != "etcd-backup-age"]
    assert {r.target for r in results if r.name == "units"} == {h.name for h in plan.hosts}
    assert {r.target for r in results if r.name == "apiserver-livez-lb"} == {
        h.name for h in plan.nodes}
    assert pick(results, "etcd-leader").evidence.startswith("leader vt-cp1, raft term 2")


def test_json_is_stable_and_sorted(plan: Plan, state: Path) -> None:
    first = to_json(plan.name, run(FakeCluster(plan), state))
    second = to_json(plan.name, run(FakeCluster(plan), state))
    assert first == second
    data = json.loads(first)
    assert data["passed"] is True
    assert set(data) == {"cluster", "passed", "counts", "checks"}
    assert set(data["checks"][0]) == {"name", "target", "status", "evidence", "hint"}
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+|seconds|duration", first)


def test_junit_is_well_formed(plan: Plan, state: Path) -> None:
    cluster = FakeCluster(plan, etcd_stopped={"vt-cp2"})
    results = run(cluster, state)
    root = ET.fromstring(to_junit(plan.name, results))
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(results)
    failures = [c for c in cases if c.find("failure") is not None]
    skips = [c for c in cases if c.find("skipped") is not None]
    assert len(failures) == sum(r.status == "fail" for r in results) > 0
    assert len(skips) == sum(r.status == "skipped" for r in results)
    assert root.get("failures") == str(len(failures))
    names = {c.get("name") for c in failures}
    assert "etcd-health[vt-cp2]" in names
    failure = next(c for c in failures if c.get("name") == "etcd-health[vt-cp2]").find("failure")
    assert failure is not None and "hint:" in (failure.text or "")


def test_exit_code() -> None:
    def row(status: Any) -> CheckResult:
        return CheckResult("x", status, "cluster", "e", "")

    assert exit_code([row("ok"), row("warn"), row("skipped")]) == 0
    assert exit_code([row("ok"), row("fail")]) == 1


def test_only_selects_and_rejects_unknown(plan: Plan, state: Path) -> None:
    results = run(FakeCluster(plan), state, only=["ssh", "etcd-leader"])
    assert {r.name for r in results} == {"ssh", "etcd-leader"}
    with pytest.raises(UnknownCheckError, match="no such check"):
        run(FakeCluster(plan), state, only=["bogus"])


def test_the_probe_can_run_from_some_nodes_only(plan: Plan, state: Path) -> None:
    """``probe_nodes`` narrows the checks read from the clients' reports to those nodes;
    the NodePort check (from the controller) and every other per-node check keep them all;
    a name that is not a node is refused before any host is asked."""
    cluster = FakeCluster(plan)
    nodes = tuple(h.name for h in plan.nodes)
    every = build_context(plan, state, FakeSsh(cluster), FakeHttps(cluster), NOW)
    some = build_context(plan, state, FakeSsh(cluster), FakeHttps(cluster), NOW,
                         probe_nodes=["vt-w1"])
    for c in CHECKS:
        want = ("vt-w1",) if c.name in ("pod-network", "pod-dns", "service-by-name") \
            else c.targets(every)
        assert c.targets(some) == want, c.name
    assert next(c for c in CHECKS if c.name == "service-nodeport").targets(some) == nodes
    with pytest.raises(UnknownNodeError, match=r"--probe-from vt-etcd9: not a node of "
                       r"cluster vt; its nodes: vt-cp1"):
        build_context(plan, state, FakeSsh(cluster), FakeHttps(cluster), NOW,
                      probe_nodes=["vt-w1", "vt-etcd9"])


def test_check_names_are_the_documented_ids() -> None:
    assert check_names() == (
        "ssh", "units", "etcd-health", "etcd-leader", "etcd-members", "etcd-backup-age",
        "etcd-cert-expiry",
        "apiserver-cert-expiry", "cert-expiry", "apiserver-livez-lb", "apiserver-readyz-lb",
        "apiserver-livez-node", "apiserver-readyz-node", "scheduler-health",
        "scheduler-leader", "controller-manager-health", "controller-manager-leader",
        "nodes-registered", "nodes-ready", "coredns-resolves", "smoke-deployment",
        "pod-network", "pod-dns", "service-by-name", "service-nodeport", "metrics-api")
    assert all(c.description for c in CHECKS)


# --- ssh and units -------------------------------------------------------------------------


def test_units_inactive_fails_with_journal_hint(plan: Plan, state: Path) -> None:
    cluster = FakeCluster(plan, inactive={"vt-w1": {"kube-proxy": "failed"}})
    r = pick(run(cluster, state, only=["units"]), "units", "vt-w1")
    assert r.status == "fail"
    assert "kube-proxy: failed/dead (result exit-code, exit status 1)" in r.evidence
    assert "journalctl -u kube-proxy -n 50` on vt-w1" in r.hint
    ok_row = pick(run(FakeCluster(plan), state, only=["units"]), "units", "vt-cp1")
    assert ok_row.status == "ok"
    for unit in ("containerd", "etcd", "haproxy", "kube-apiserver", "kubelet", "kube-proxy",
                 "provisioner-pod-routes"):
        assert unit in ok_row.evidence


def test_down_host_fails_ssh_and_skips_its_ssh_checks(plan: Plan, state: Path) -> None:
    results = run(FakeCluster(plan, down={"vt-w1"}), state)
    assert pick(results, "ssh", "vt-w1").status == "fail"
    assert "no answer" in pick(results, "ssh", "vt-w1").evidence
    units = pick(results, "units", "vt-w1")
    assert units.status == "skipped"
    assert "no SSH session to vt-w1" in units.evidence
    assert pick(results, "apiserver-livez-lb", "vt-w1").status == "skipped"


# --- etcd ----------------------------------------------------------------------------------


def test_quorum_math() -> None:
    members = ["a", "b", "c"]
    assert quorum(members, members).status == "ok"
    two = quorum(["a", "b"], members)
    assert two.status == "ok"
    assert "down: c" in two.evidence
    one = quorum(["a"], members)
    assert one.status == "fail"
    assert "down: b, c" in one.evidence
    assert "quorum" in one.hint
    assert quorum(["a", "b"], ["a", "b", "c", "d"]).status == "fail"
    assert quorum(["a", "b", "c"], ["a", "b", "c", "d", "e"]).status == "ok"


def test_stopped_etcd_majority_fails_quorum_and_leader(plan: Plan, state: Path) -> None:
    results = run(FakeCluster(plan, etcd_stopped={"vt-cp1", "vt-cp2"}), state)
    q = pick(results, "etcd-health")
    assert q.status == "fail"
    assert "0/3 members healthy" in q.evidence
    assert "down: vt-cp1, vt-cp2; running but unhealthy: vt-cp3" in q.evidence
    assert "systemctl start etcd` on vt-cp1, vt-cp2" in q.hint
    assert "lost quorum" in q.hint
    assert "etcdctl endpoint health" in q.hint
    stopped = pick(results, "etcd-health", "vt-cp1")
    assert stopped.status == "fail"
    assert "connection refused" in stopped.evidence
    assert "journalctl -u etcd" in stopped.hint
    lone = pick(results, "etcd-health", "vt-cp3")
    assert lone.status == "fail"
    assert "RAFT NO LEADER" in lone.evidence
    assert pick(results, "etcd-leader").status == "fail"
    units = pick(results, "units", "vt-cp1")
    assert units.status == "fail"
    assert "etcd: inactive" in units.evidence
    assert pick(results, "apiserver-readyz-node", "vt-cp3").status == "fail"
    assert exit_code(results) == 1


def test_one_stopped_member_keeps_quorum(plan: Plan, state: Path) -> None:
    results = run(FakeCluster(plan, etcd_stopped={"vt-cp3"}), state, only=["etcd-health",
                                                                          "etcd-leader"])
    assert pick(results, "etcd-health").status == "ok"
    assert pick(results, "etcd-health", "vt-cp3").status == "fail"
    assert pick(results, "etcd-leader").status == "ok"
    assert "2/3 members agree" in pick(results, "etcd-leader").evidence


def test_etcd_members_match_the_spec_or_name_the_fix(plan: Plan, state: Path) -> None:
    only = ["etcd-members"]
    good = pick(run(FakeCluster(plan), state, only=only), "etcd-members")
    assert good.status == "ok" and "members vt-cp1, vt-cp2, vt-cp3" in good.evidence
    assert "3 voting" in good.evidence
    extra = pick(run(FakeCluster(plan, etcd_extra=["old-cp4"]), state, only=only),
                 "etcd-members")
    assert extra.status == "fail" and "not in the spec: old-cp4" in extra.evidence
    assert "--prune" in extra.hint
    learner = pick(run(FakeCluster(plan, etcd_learners={"vt-cp3"}), state, only=only),
                   "etcd-members")
    assert learner.status == "fail" and "still learners: vt-cp3" in learner.evidence
    assert "promotes" in learner.hint
    lost = pick(run(FakeCluster(plan, etcd_stopped={"vt-cp1", "vt-cp2", "vt-cp3"}), state,
                    only=only), "etcd-members")
    assert lost.status == "fail" and "no healthy member" in lost.evidence


def test_wrong_etcd_endpoint_fails_readyz_with_etcd_hint(plan: Plan, state: Path) -> None:
    results = run(FakeCluster(plan, etcd_wrong_endpoint=True), state)
    r = pick(results, "apiserver-readyz-node", "vt-cp1")
    assert r.status == "fail"
    assert "[-]etcd failed" in r.evidence
    assert "--etcd-servers" in r.hint
    assert pick(results, "apiserver-livez-node", "vt-cp1").status == "ok"
    assert pick(results, "etcd-health").status == "ok"


# --- certificates --------------------------------------------------------------------------


def test_cert_expiry_ok_warn_fail(plan: Plan, state: Path) -> None:
    only = ["etcd-cert-expiry", "apiserver-cert-expiry"]
    fine = run(FakeCluster(plan), state, only=only)
    assert {r.status for r in fine} == {"ok"}
    assert "notAfter" in pick(fine, "apiserver-cert-expiry").evidence
    soon = run(FakeCluster(plan), state, only=only, now=NOW + dt.timedelta(days=350))
    assert {r.status for r in soon} == {"warn"}
    assert "within 30 days" in pick(soon, "etcd-cert-expiry").evidence
    late = run(FakeCluster(plan), state, only=only, now=NOW + dt.timedelta(days=400))
    r = pick(late, "apiserver-cert-expiry")
    assert r.status == "fail"
    # Every control-plane node's serving pair is checked, each under its own name.
    for h in plan.control_plane:
        assert f"apiserver/{h.name}: expired" in r.evidence, h.name
    assert "provisioner render" in r.hint


def test_corrupted_state_certificate_fails_expiry_check(plan: Plan, state: Path) -> None:
    (state / "pki" / "apiserver" / "vt-cp2.crt").write_bytes(b"garbage")
    r = pick(run(FakeCluster(plan), state, only=["apiserver-cert-expiry"]),
             "apiserver-cert-expiry")
    assert r.status == "fail"
    assert "apiserver/vt-cp2: apiserver/vt-cp2.crt is not a PEM certificate" in r.evidence
    assert "apiserver/vt-cp1:" not in r.evidence and "apiserver/vt-cp3:" not in r.evidence


def test_missing_state_pki_is_reported_once_per_check(plan: Plan, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    results = run(FakeCluster(plan), empty, only=["etcd-cert-expiry", "etcd-health"])
    expiry = pick(results, "etcd-cert-expiry")
    assert expiry.status == "fail"
    assert expiry.evidence.startswith(f"missing in {empty / 'pki'}: etcd/ca, ")
    quorum_row = pick(results, "etcd-health")
    assert quorum_row.status == "fail"
    assert "cannot ask the members: missing" in quorum_row.evidence
    assert "provisioner render" in quorum_row.hint


def test_foreign_state_certificate_fails_expiry_check(plan: Plan, state: Path) -> None:
    other = state / "pki" / "etcd" / "healthcheck-client.crt"
    ca_key = new_key()
    ca = issue_ca(CARequest("x", "other-ca"), ca_key, 10, NOW - dt.timedelta(days=1))
    leaf = issue_leaf(CertRequest("y", "x", "intruder", client=True), new_key(), ca, ca_key,
                      10, NOW - dt.timedelta(days=1))
    other.write_bytes(cert_pem(leaf))
    r = pick(run(FakeCluster(plan), state, only=["etcd-cert-expiry"]), "etcd-cert-expiry")
    assert r.status == "fail"
    assert "etcd/healthcheck-client: not signed by etcd/ca" in r.evidence


# --- apiserver -----------------------------------------------------------------------------


def test_tls_failure_and_refused_get_different_hints(plan: Plan, state: Path) -> None:
    cluster = FakeCluster(plan, apiserver={"vt-cp1": "tls", "vt-cp2": "refused"})
    results = run(cluster, state)
    tls = pick(results, "apiserver-livez-node", "vt-cp1")
    assert tls.status == "fail"
    assert "certificate verify failed" in tls.evidence
    assert "apiserver certificate" in tls.hint
    assert "provisioner render" in tls.hint
    refused = pick(results, "apiserver-livez-node", "vt-cp2")
    assert refused.status == "fail"
    assert "connection refused" in refused.evidence
    assert "kube-apiserver is not listening" in refused.hint
    assert "journalctl -u kube-apiserver" in refused.hint
    assert "certificate" not in refused.hint
    # cp3 still serves: the LB and the API-based checks keep working.
    assert pick(results, "apiserver-livez-lb", "vt-w1").status == "ok"
    assert pick(results, "nodes-registered").status == "ok"


def test_lb_tls_failure_from_the_node(plan: Plan, state: Path) -> None:
    tls_everywhere = {h.name: "tls" for h in plan.control_plane}
    r = pick(run(FakeCluster(plan, apiserver=tls_everywhere), state,
                 only=["apiserver-livez-lb"]), "apiserver-livez-lb", "vt-w1")
    assert r.status == "fail"
    assert r.evidence.startswith("https://127.0.0.1:8443/livez: curl: (60)")
    assert "apiserver certificate served through the local load balancer on vt-w1" in r.hint


def test_lb_checks_use_the_nodes_own_certificates(plan: Plan, state: Path) -> None:
    cluster = FakeCluster(plan)
    ssh = FakeSsh(cluster)
    verify(plan, state, ["apiserver-livez-lb"], ssh=ssh, https=FakeHttps(cluster), now=NOW)
    by_host = {h: c for h, c, _ in ssh.commands}
    assert "--cert /etc/kubernetes/pki/admin.crt" in by_host["vt-cp1"]
    assert "--cert /var/lib/kubelet/pki/kubelet-client.crt" in by_host["vt-w1"]
    assert all(root for _, _, root in ssh.commands)


class VipCluster(FakeCluster):
    """The VIP answers like the first control-plane node (which holds it)."""

    def name_of(self, address: str) -> str:
        if address == "192.168.56.100":
            return self.plan.control_plane[0].name
        return super().name_of(address)


def test_vip_lb_is_checked_from_the_controller(state: Path) -> None:
    vip_plan = make_plan(SPEC + "  loadBalancer: {mode: vip, vip: 192.168.56.100}\n")
    cluster = VipCluster(vip_plan)
    https = FakeHttps(cluster)
    results = verify(vip_plan, state, ["apiserver-livez-lb"], ssh=FakeSsh(cluster),
                     https=https, now=NOW)
    assert [(r.target, r.status) for r in results] == [("cluster", "ok")]
    assert "https://192.168.56.100:8443/livez" in results[0].evidence


def test_losing_one_control_plane_node(plan: Plan, state: Path) -> None:
    cluster = FakeCluster(plan, down={"vt-cp1"}, not_ready={"vt-cp1"},
                          lease_holders={"kube-scheduler": "vt-cp2_x",
                                         "kube-controller-manager": "vt-cp3_y"})
    results = run(cluster, state)
    assert pick(results, "ssh", "vt-cp1").status == "fail"
    assert pick(results, "apiserver-livez-node", "vt-cp1").status == "fail"
    assert pick(results, "nodes-ready", "vt-cp1").status == "fail"
    assert "Ready=Unknown" in pick(results, "nodes-ready", "vt-cp1").evidence
    # The apiserver is still served through the load balancer on every other node ...
    for h in ("vt-cp2", "vt-cp3", "vt-w1"):
        assert pick(results, "apiserver-livez-lb", h).status == "ok"
        assert pick(results, "apiserver-readyz-lb", h).status == "ok"
    # ... etcd keeps quorum, and the controller's API checks fail over to another apiserver.
    assert pick(results, "etcd-health").status == "ok"
    assert "down: vt-cp1" in pick(results, "etcd-health").evidence
    assert pick(results, "nodes-registered").status == "ok"
    assert pick(results, "scheduler-leader").status == "ok"
    assert "leader vt-cp2" in pick(results, "scheduler-leader").evidence
    assert exit_code(results) == 1


def test_no_apiserver_at_all_skips_api_checks(plan: Plan, state: Path) -> None:
    cluster = FakeCluster(plan, apiserver={h.name: "refused" for h in plan.control_plane})
    results = run(cluster, state)
    for name in ("nodes-registered", "scheduler-leader", "smoke-deployment"):
        r = pick(results, name)
        assert r.status == "skipped"
        assert "no apiserver answered" in r.evidence


# --- scheduler, controller-manager, nodes --------------------------------------------------


def test_leader_lease_missing_or_stale(plan: Plan, state: Path) -> None:
    missing = FakeCluster(plan, lease_holders={"kube-scheduler": ""})
    r = pick(run(missing, state, only=["scheduler-leader"]), "scheduler-leader")
    assert r.status == "fail"
    assert "no Lease kube-system/kube-scheduler" in r.evidence
    stale = FakeCluster(plan, lease_renew=NOW - dt.timedelta(minutes=5))
    r = pick(run(stale, state, only=["controller-manager-leader"]),
             "controller-manager-leader")
    assert r.status == "fail"
    assert "stopped renewing" in r.evidence
    foreign = FakeCluster(plan, lease_holders={"kube-scheduler": "laptop_1"})
    assert pick(run(foreign, state, only=["scheduler-leader"]),
                "scheduler-leader").status == "warn"


def test_component_health_ok(plan: Plan, state: Path) -> None:
    results = run(FakeCluster(plan), state, only=["scheduler-health",
                                                  "controller-manager-health"])
    assert {r.status for r in results} == {"ok"}
    assert "https://127.0.0.1:10257/healthz: ok" in pick(
        results, "controller-manager-health", "vt-cp2").evidence


def test_nodes_missing_and_not_ready(plan: Plan, state: Path) -> None:
    cluster = FakeCluster(plan, unregistered={"vt-w1"}, not_ready={"vt-cp2"})
    results = run(cluster, state, only=["nodes-registered", "nodes-ready"])
    reg = pick(results, "nodes-registered")
    assert reg.status == "fail"
    assert "missing: vt-w1" in reg.evidence
    assert pick(results, "nodes-ready", "vt-w1").status == "skipped"
    assert pick(results, "nodes-ready", "vt-cp2").status == "fail"
    assert pick(results, "nodes-ready", "vt-cp1").status == "ok"


class FakeClock:
    """Stands in for time in the nodes check: sleeping advances it, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps = 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr("provisioner.verify.checks.nodes.time", fake)
    return fake


class FakeThreadClock(FakeClock):
    """A FakeClock of its own for each thread (each check target runs on one): one target's
    sleeps do not move another's time."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return float(getattr(self._local, "now", 1000.0))

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps += 1
        self._local.now = self.monotonic() + seconds


@pytest.fixture
def api_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeThreadClock()
    monkeypatch.setattr("provisioner.verify.checks.apiserver.time", fake)
    return fake


def test_an_apiserver_failing_a_health_check_for_a_moment_is_asked_again(
        plan: Plan, state: Path, api_clock: FakeClock) -> None:
    # Two 500s (etcd slow on a loaded host), then 200: ok, saying how long it took.
    cluster = FakeCluster(plan, readyz_failures={"vt-cp1": 2})
    r = pick(run(cluster, state, only=["apiserver-readyz-node"], workload_timeout=120),
             "apiserver-readyz-node", "vt-cp1")
    assert r.status == "ok"
    assert r.evidence.endswith(": ok (after HTTP 500 for 4s)")
    assert api_clock.sleeps == 2


def test_an_apiserver_that_keeps_failing_fails_after_the_grace(
        plan: Plan, state: Path, api_clock: FakeClock) -> None:
    cluster = FakeCluster(plan, etcd_wrong_endpoint=True)
    r = pick(run(cluster, state, only=["apiserver-readyz-node"], workload_timeout=120),
             "apiserver-readyz-node", "vt-cp1")
    assert r.status == "fail"
    assert ": HTTP 500 for 10s; [-]etcd failed" in r.evidence
    assert "--etcd-servers" in r.hint
    assert api_clock.sleeps == 15  # 5 on each of the 3 control-plane nodes


def test_a_restarted_kubelet_gets_a_grace_to_become_ready(plan: Plan, state: Path,
                                                          clock: FakeClock) -> None:
    # Ready=False for the first 3 reads (the list and two re-reads); the third re-read is True.
    cluster = FakeCluster(plan, settling={"vt-w1": 3})
    r = pick(run(cluster, state, only=["nodes-ready"], workload_timeout=120),
             "nodes-ready", "vt-w1")
    assert r.status == "ok"
    assert "Ready=True after 6s settling" in r.evidence
    assert clock.sleeps == 3
    assert any(line.endswith("/api/v1/nodes/vt-w1") for line in cluster.log)


def test_a_kubelet_that_never_becomes_ready_fails_after_the_grace(plan: Plan, state: Path,
                                                                  clock: FakeClock) -> None:
    cluster = FakeCluster(plan, settling={"vt-w1": -1})
    results = run(cluster, state, only=["nodes-ready"], workload_timeout=120)
    r = pick(results, "nodes-ready", "vt-w1")
    assert r.status == "fail"
    assert "Ready=False for 60s (KubeletNotReady): CSINode is not yet initialized" in r.evidence
    assert clock.sleeps == 30
    assert pick(results, "nodes-ready", "vt-cp1").status == "ok"


def test_an_unknown_node_fails_without_waiting(plan: Plan, state: Path,
                                               clock: FakeClock) -> None:
    r = pick(run(FakeCluster(plan, not_ready={"vt-cp2"}), state, only=["nodes-ready"],
                 workload_timeout=120), "nodes-ready", "vt-cp2")
    assert r.status == "fail"
    assert "Ready=Unknown (NodeStatusUnknown)" in r.evidence
    assert clock.sleeps == 0


# --- workloads -----------------------------------------------------------------------------


def test_workload_checks_run_on_a_real_apiserver(plan: Plan, state: Path) -> None:
    cluster = FakeCluster(plan, git_version="v1.37.2", apps_api=True,
                          dns_answer="rcode=0\n10.96.0.1\n")
    results = run(cluster, state, only=["coredns-resolves", "smoke-deployment"])
    dns = pick(results, "coredns-resolves")
    assert dns.status == "ok"
    assert "kubernetes.default.svc.cluster.local via 10.96.0.10" in dns.evidence
    smoke = pick(results, "smoke-deployment")
    assert smoke.status == "ok"
    assert "2/2 replicas of docker.io/library/nginx" in smoke.evidence
    assert cluster.deployments == {}  # deleted afterwards
    assert any(line.startswith("DELETE") for line in cluster.log)


def test_smoke_deployment_uses_the_private_registry_and_reports_pods(state: Path) -> None:
    private = make_plan(SPEC + "  registries: {private: [{host: hub.test.com}]}\n")
    cluster = FakeCluster(private, git_version="v1.37.2", apps_api=True, available=1)
    r = pick(run(cluster, state, only=["smoke-deployment"]), "smoke-deployment")
    assert r.status == "fail"
    assert "1/2 replicas of hub.test.com/nginx" in r.evidence
    assert "ImagePullBackOff" in r.evidence
    assert "hub.test.com" in r.hint


def test_workloads_skipped_without_apps_api(plan: Plan, state: Path) -> None:
    cluster = FakeCluster(plan, git_version="v1.37.2", apps_api=False)
    r = pick(run(cluster, state, only=["coredns-resolves"]), "coredns-resolves")
    assert r.status == "skipped"
    assert "does not serve apps/v1" in r.evidence


def test_coredns_wrong_answer_fails(plan: Plan, state: Path) -> None:
    cluster = FakeCluster(plan, git_version="v1.37.2", apps_api=True,
                          dns_answer="rcode=3\n")
    r = pick(run(cluster, state, only=["coredns-resolves"]), "coredns-resolves")
    assert r.status == "fail"
    assert "expected 10.96.0.1" in r.evidence


def test_dns_probe_script_parses_a_real_answer() -> None:
    """The python3 DNS probe sent to nodes, run here against a one-shot UDP responder."""
    import subprocess
    import sys

    from provisioner.verify.checks.workloads import DNS_QUERY

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    def answer() -> None:
        data, addr = sock.recvfrom(512)
        header = data[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00"
        record = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04" + bytes([10, 96, 0, 1])
        sock.sendto(header + data[12:] + record, addr)

    t = threading.Thread(target=answer)
    t.start()
    script = DNS_QUERY.replace("(server, 53)", f"(server, {port})")
    out = subprocess.run([sys.executable, "-c", script, "kubernetes.default.svc.cluster.local",
                          "127.0.0.1"], capture_output=True, text=True, timeout=10, check=True)
    t.join()
    sock.close()
    assert out.stdout.split() == ["rcode=0", "10.96.0.1"]


# --- curl mapping --------------------------------------------------------------------------


def test_curl_command_quotes_and_marks_status() -> None:
    cmd = curl_command("https://127.0.0.1:8443/livez", 5, "/ca.crt", "/a.crt", "/a.key")
    argv = shlex.split(cmd)
    assert argv[0] == "curl" and argv[-1] == "https://127.0.0.1:8443/livez"
    assert "-k" not in argv
    assert "-k" in shlex.split(curl_command("https://x/healthz", 5, None, None, None))


def test_curl_durations_are_removed_from_evidence(plan: Plan, state: Path) -> None:
    class SlowSsh(FakeSsh):
        def _curl(self, url: str) -> CommandResult:
            return CommandResult(7, "", "curl: (7) Failed to connect to 127.0.0.1 port 8443 "
                                 "after 3 ms: Connection refused")

    cluster = FakeCluster(plan)
    results = verify(plan, state, ["apiserver-livez-lb"], ssh=SlowSsh(cluster),
                     https=FakeHttps(cluster), now=NOW)
    r = pick(results, "apiserver-livez-lb", "vt-w1")
    assert r.status == "fail"
    assert "after 3 ms" not in r.evidence
    assert "haproxy is not listening" in r.hint


# --- CLI -----------------------------------------------------------------------------------


@pytest.fixture
def cli_env(plan: Plan, pki_state: Path, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, FakeCluster]]:
    """A spec file, and ``cli_verify.verify`` wired to fakes over ``pki_state``."""
    spec = tmp_path / "cluster.yaml"
    spec.write_text(SPEC)
    cluster = FakeCluster(plan)

    def fake_verify(p: Plan, sdir: Path, only: list[str] | None, timeout: float,
                    probe_nodes: list[str] | None = None) -> list[CheckResult]:
        assert p.name == plan.name
        return verify(p, pki_state, only, ssh=FakeSsh(cluster), https=FakeHttps(cluster),
                      now=NOW, timeout=timeout, workload_timeout=0, probe_nodes=probe_nodes)

    monkeypatch.setattr(cli_verify, "verify", fake_verify)
    monkeypatch.setenv("PROVISIONER_STATE_DIR", str(tmp_path / "root"))
    yield spec, cluster


def test_cli_table_json_junit_and_exit_codes(cli_env: tuple[Path, FakeCluster],
                                             tmp_path: Path) -> None:
    spec, cluster = cli_env
    runner = CliRunner()
    res = runner.invoke(cli_verify.app, [str(spec)])
    assert res.exit_code == 0, res.output
    assert "verify passed" in res.output
    assert "apiserver-livez-lb" in res.output
    res = runner.invoke(cli_verify.app, [str(spec), "--json"])
    assert res.exit_code == 0
    assert json.loads(res.stdout)["passed"] is True
    cluster.etcd_stopped.update({"vt-cp1", "vt-cp2"})
    junit = tmp_path / "verify.xml"
    res = runner.invoke(cli_verify.app, [str(spec), "--json", "--junit", str(junit)])
    assert res.exit_code == 1
    assert ET.parse(junit).getroot().get("failures") != "0"
    res = runner.invoke(cli_verify.app, [str(spec), "--only", "ssh,etcd-leader"])
    assert res.exit_code == 1
    assert "units" not in res.output
    res = runner.invoke(cli_verify.app, [str(spec), "--only", "nope"])
    assert res.exit_code == 2
    assert "no such check" in res.output
    res = runner.invoke(cli_verify.app, [str(spec), "--probe-from", "vt-w1,vt-w9"])
    assert res.exit_code == 2
    assert "--probe-from vt-w9: not a node of cluster vt" in res.output
    assert "Traceback" not in res.output


def test_cli_bad_spec_exits_1(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("kind: Nope\n")
    assert CliRunner().invoke(cli_verify.app, [str(spec)]).exit_code == 1


# --- real network: the TLS client against a server with a foreign certificate --------------


def _tls_server(cert: Path, key: Path, ca: Path, connections: int
                ) -> tuple[int, threading.Thread]:
    """Accept ``connections`` TLS connections on 127.0.0.1, answering each with ``ok``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(str(ca))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        listener.settimeout(10)
        try:
            for _ in range(connections):
                conn, _ = listener.accept()
                try:
                    with ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(4096)
                        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                    b"Connection: close\r\n\r\nok")
                except (ssl.SSLError, OSError):
                    pass
        except TimeoutError:
            pass
        finally:
            listener.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return port, t


def _loopback_plan(port: int) -> Plan:
    """One control-plane node whose apiserver is at 127.0.0.1:``port`` (specs reject a
    loopback host address, so the planned address is replaced afterwards)."""
    base = make_plan(f"""
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {{name: lo}}
spec:
  provider: {{type: nspawn}}
  apiserver: {{securePort: {port}}}
""")
    hosts = tuple(replace(h, machine=replace(h.machine, address=IPv4Address("127.0.0.1")))
                  for h in base.hosts)
    return replace(base, hosts=hosts)


def _issue_server(tmp: Path, ca_name: str) -> tuple[Path, Path, Path]:
    ca_key = new_key()
    now = dt.datetime.now(dt.UTC)
    ca = issue_ca(CARequest("c", ca_name), ca_key, 10, now)
    leaf_key = new_key()
    leaf = issue_leaf(CertRequest("s", "c", "kube-apiserver", ip_addresses=("127.0.0.1",),
                                  server=True), leaf_key, ca, ca_key, 10, now)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "ca.crt").write_bytes(cert_pem(ca))
    (tmp / "s.crt").write_bytes(cert_pem(leaf))
    (tmp / "s.key").write_bytes(key_pem(leaf_key))
    return tmp / "s.crt", tmp / "s.key", tmp / "ca.crt"


def _real_check(tmp_path: Path, server_ca: str, use_state_ca_for_server: bool
                ) -> CheckResult:
    state = tmp_path / "state"
    probe_plan = _loopback_plan(1)
    ensure_pki(probe_plan.pki, state / "pki")
    if use_state_ca_for_server:
        pki = state / "pki"
        cert, key, ca = (pki / "apiserver" / "lo-cp1.crt", pki / "apiserver" / "lo-cp1.key",
                         pki / "ca.crt")
    else:
        cert, key, ca = _issue_server(tmp_path / "foreign", server_ca)
    # A failed verification is followed by a second connection fetching the served cert.
    port, thread = _tls_server(cert, key, ca, 1 if use_state_ca_for_server else 2)
    lo_plan = _loopback_plan(port)
    cluster = FakeCluster(lo_plan)
    ctx = build_context(lo_plan, state, ssh=FakeSsh(cluster), https=TlsClient(), timeout=3)
    outcome = apiserver_checks.livez_node(ctx, "lo-cp1")
    thread.join(timeout=10)
    return CheckResult("apiserver-livez-node", outcome.status, "lo-cp1", outcome.evidence,
                       outcome.hint)


def test_real_tls_server_with_foreign_ca_fails_with_certificate_hint(tmp_path: Path) -> None:
    r = _real_check(tmp_path, "some-other-ca", use_state_ca_for_server=False)
    assert r.status == "fail"
    assert "certificate verify failed" in r.evidence
    assert "served certificate: subject=CN=kube-apiserver; issuer=CN=some-other-ca" in r.evidence
    assert "apiserver certificate" in r.hint
    assert "provisioner render" in r.hint


def test_real_tls_server_with_cluster_ca_passes(tmp_path: Path) -> None:
    r = _real_check(tmp_path, "", use_state_ca_for_server=True)
    assert r.status == "ok", r
    assert r.evidence.endswith("/livez: ok")


def test_real_closed_port_is_refused_not_tls(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    state = tmp_path / "state"
    lo_plan = _loopback_plan(port)
    ensure_pki(lo_plan.pki, state / "pki")
    ctx = build_context(lo_plan, state, ssh=FakeSsh(FakeCluster(lo_plan)), https=TlsClient(),
                        timeout=3)
    outcome = apiserver_checks.livez_node(ctx, "lo-cp1")
    assert outcome.status == "fail"
    assert "connection refused" in outcome.evidence
    assert "kube-apiserver is not listening" in outcome.hint


def test_result_rows_are_frozen() -> None:
    row = CheckResult("ssh", "ok", "h", "e", "")
    assert replace(row, status="fail").status == "fail"
    with pytest.raises(AttributeError):
        row.status = "fail"  # type: ignore[misc]


# --- real network: paramiko against the in-process SSH server of tests/fixtures ------------


def _hostname_srv(command: str) -> tuple[int, bytes, bytes]:
    """The test host's answer: ``hostname`` prints ``srv``, anything else prints nothing."""
    return 0, b"srv\n" if command == "hostname" else b"", b""


def _ssh_state(tmp_path: Path) -> tuple[Path, paramiko.PKey]:
    """A state dir holding a cluster key (tests pin host keys in ssh/known_hosts)."""
    state = tmp_path / "state"
    (state / "ssh").mkdir(parents=True)
    key = ed25519.Ed25519PrivateKey.generate()
    (state / "ssh" / "id_ed25519").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    client_key = paramiko.Ed25519Key.from_private_key_file(str(state / "ssh" / "id_ed25519"))
    return state, client_key


def _pin(state: Path, port: int, key: paramiko.PKey) -> None:
    """Pin ``key`` as the host key of 127.0.0.1:``port`` in the state's known_hosts."""
    (state / "ssh" / "known_hosts").write_text(
        f"[127.0.0.1]:{port} {key.get_name()} {key.get_base64()}\n")


def _ssh_plan(port: int) -> Plan:
    lo = _loopback_plan(6443)
    hosts = tuple(replace(h, machine=replace(h.machine, ssh_port=port)) for h in lo.hosts)
    return replace(lo, hosts=hosts)


def test_real_ssh_with_pinned_host_key(tmp_path: Path) -> None:
    host_key = paramiko.ECDSAKey.generate()
    state, client_key = _ssh_state(tmp_path)
    with SshServer(host_key, client_key, _hostname_srv, sessions=1) as server:
        _pin(state, server.port, host_key)
        lo = _ssh_plan(server.port)
        runner = ParamikoRunner(ssh_settings(lo, state), 3)
        try:
            result = runner.run(lo.hosts[0], "hostname", 5, False)
        finally:
            runner.close()
    assert result == CommandResult(0, "srv\n", "")


def test_real_ssh_connects_again_after_the_host_closed_the_connection(
        tmp_path: Path) -> None:
    """The test server hangs up after each command (as a rebooted host or a restarted sshd
    does): the next command logs in again instead of failing on the dead connection."""
    host_key = paramiko.ECDSAKey.generate()
    state, client_key = _ssh_state(tmp_path)
    with SshServer(host_key, client_key, _hostname_srv) as server:
        _pin(state, server.port, host_key)
        lo = _ssh_plan(server.port)
        runner = ParamikoRunner(ssh_settings(lo, state), 3)
        try:
            results = [runner.run(lo.hosts[0], "hostname", 5, False) for _ in range(3)]
        finally:
            runner.close()
        logins = server.requests().connections
    assert results == [CommandResult(0, "srv\n", "")] * 3
    assert logins == 3


def test_real_ssh_logs_in_again_when_the_host_was_too_slow_to_answer(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The host accepts the first connection but never sends its banner (an overloaded
    sshd): the runner tries once more with twice the timeout, and paramiko's own traceback
    of the failed login is not printed."""
    host_key = paramiko.ECDSAKey.generate()
    state, client_key = _ssh_state(tmp_path)
    with SshServer(host_key, client_key, _hostname_srv, mute=1) as server:
        _pin(state, server.port, host_key)
        lo = _ssh_plan(server.port)
        runner = ParamikoRunner(ssh_settings(lo, state), 0.5)
        try:
            result = runner.run(lo.hosts[0], "hostname", 5, False)
        finally:
            runner.close()
        logins = server.requests().connections
    assert result == CommandResult(0, "srv\n", "")
    assert logins == 2
    assert "Traceback" not in capsys.readouterr().err


def test_real_ssh_that_stays_silent_fails_after_one_more_try(tmp_path: Path) -> None:
    host_key = paramiko.ECDSAKey.generate()
    state, client_key = _ssh_state(tmp_path)
    with SshServer(host_key, client_key, _hostname_srv, mute=5, timeout=3) as server:
        lo = _ssh_plan(server.port)
        runner = ParamikoRunner(ssh_settings(lo, state), 0.3)
        try:
            with pytest.raises(SshUnavailable) as exc:
                runner.run(lo.hosts[0], "hostname", 5, False)
        finally:
            runner.close()
        logins = server.requests().connections
    assert logins == 2
    assert exc.value.kind == "ssh"
    assert "did not complete the SSH login, twice (within 0.3s, then 0.6s)" in exc.value.detail
    assert "overloaded" in exc.value.hint


def test_real_ssh_unknown_host_key_fails_clearly(tmp_path: Path) -> None:
    host_key = paramiko.ECDSAKey.generate()
    other = paramiko.ECDSAKey.generate()
    state, client_key = _ssh_state(tmp_path)
    with SshServer(host_key, client_key, _hostname_srv, sessions=1) as server:
        _pin(state, server.port, other)
        lo = _ssh_plan(server.port)
        runner = ParamikoRunner(ssh_settings(lo, state), 3)
        ctx = build_context(lo, state, ssh=runner, https=FakeHttps(FakeCluster(lo)),
                            timeout=3)
        outcome = host_checks.ssh(ctx, "lo-cp1")
        runner.close()
    assert outcome.status == "fail"
    assert "host key differs" in outcome.evidence
    assert "ssh-keygen -R" in outcome.hint


def test_real_ssh_refused(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    state, _ = _ssh_state(tmp_path)
    lo = _ssh_plan(port)
    runner = ParamikoRunner(ssh_settings(lo, state), 3)
    with pytest.raises(SshUnavailable) as exc:
        runner.run(lo.hosts[0], "hostname", 5, False)
    assert exc.value.kind == "refused"
    with pytest.raises(SshUnavailable):  # remembered: no second connect attempt
        runner.run(lo.hosts[0], "true", 5, False)


def test_pod_checks_start_first_and_results_keep_report_order() -> None:
    """The checks that wait on pods start before the quick ones (one worker makes the start
    order visible); the report keeps check order, then target order."""
    started: list[tuple[str, str]] = []

    def check(name: str, targets: tuple[str, ...]) -> Check:
        def run_it(ctx: Any, target: str) -> Any:
            started.append((name, target))
            return ok(f"{name} on {target}")
        return Check(name, name, lambda ctx: targets, run_it)

    checks = [check("ssh", ("a", "b")), check("nodes-ready", ("a", "b")),
              check("smoke-deployment", ("cluster",)), check("pod-network", ("a", "b")),
              check("pod-dns", ("a", "b"))]
    results = run_checks(cast(Any, None), checks, workers=1)
    assert started[:2] == [("pod-network", "a"), ("smoke-deployment", "cluster")]
    assert sorted(started) == sorted((r.name, r.target) for r in results)
    assert [(r.name, r.target) for r in results] == [
        ("ssh", "a"), ("ssh", "b"), ("nodes-ready", "a"), ("nodes-ready", "b"),
        ("smoke-deployment", "cluster"), ("pod-network", "a"), ("pod-network", "b"),
        ("pod-dns", "a"), ("pod-dns", "b")]


def test_each_result_carries_how_long_its_check_took_but_json_does_not() -> None:
    def slow(ctx: Any, target: str) -> Any:
        time.sleep(0.2 if target == "a" else 0.0)
        return ok(target)

    results = run_checks(cast(Any, None), [Check("ssh", "ssh", lambda ctx: ("a", "b"), slow)])
    by_target = {r.target: r for r in results}
    assert by_target["a"].seconds >= 0.2 > by_target["b"].seconds
    assert "seconds" not in by_target["a"].to_json()
