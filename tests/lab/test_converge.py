"""End-to-end: ``provision --only os,runtime,etcd,lb`` converges the 3+2 nspawn example.

Scope: the "Converge real hosts" acceptance on real machines (root): etcd healthy over TLS on
3 members with replication and client-certificate enforcement; containerd runs a locally
built image on every node with the registry mirror configured; haproxy spreads connections
over the control-plane nodes and survives one of them going down; an immediate second run
changes nothing; a drifted managed file is restored and only its service restarts; a report
of wall times and the slowest tasks (from the event log). Artifacts are the lab's build from
upstream source (``tests/fixtures/built_artifacts.py``). The machines come up once for the
module and are purged at the end.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from provisioner.execute import PLAYBOOKS, LineProgress, slowest_tasks
from provisioner.plan import build_plan, select_phases
from provisioner.providers.nspawn import node, paths
from provisioner.providers.nspawn.provider import NspawnMachines
from provisioner.providers.ssh import ClusterSSH, cluster_ssh, ssh_run
from provisioner.provision import ProvisionResult, artifacts_for, provision
from provisioner.spec.load import load_file
from provisioner.spec.topology import Machine, machines
from provisioner.state import cluster_dir
from tests.fixtures.built_artifacts import LAB_SOURCE, built_local_source, spec_with_source
from tests.fixtures.lab_cluster import assert_ansible_idempotent, assert_converged

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventories" / "nspawn-3cp-2w.yaml"
SHARED_IMAGES = Path(os.environ.get(paths.ENV_IMAGE_DIR, paths.DEFAULT_DATA_DIR / "images"))
ONLY = ["os", "runtime", "etcd", "lb"]
PKI = "/etc/kubernetes/pki/etcd"
APISERVER_PORT = 6443
LB_PORT = 8443
TEST_NS = "provisioner-test"
IMAGE = "docker.io/library/busybox:latest"


@dataclass
class Lab:
    """The converged example and what the test measured while converging it."""

    spec: Path
    provider: NspawnMachines
    ssh: ClusterSSH
    state: Path
    nodes: dict[str, Machine]
    up_seconds: float
    first: ProvisionResult
    second: ProvisionResult
    report: dict[str, object] = field(default_factory=dict)

    def run(self, name: str, command: str, timeout: float = 60, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        m = self.nodes[name]
        proc = ssh_run(self.ssh, m.ssh_user, m.address, m.ssh_port, command, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"{name}: `{command}` failed: {proc.stderr}{proc.stdout}"
        return proc

    def push(self, name: str, path: str, data: bytes) -> None:
        m = self.nodes[name]
        argv = ["ssh", *self.ssh.options(m.ssh_port), f"{m.ssh_user}@{m.address}",
                f"cat > {path}"]
        subprocess.run(argv, input=data, check=True, capture_output=True, timeout=120)

    def provision(self) -> ProvisionResult:
        return provision(self.spec, ONLY, None, None, True, LineProgress(sys.stdout))


def _etcdctl(lab: Lab, endpoint: str, *args: str, cert: bool = True) -> str:
    auth = f"--cacert={PKI}/ca.crt"
    if cert:
        auth += f" --cert={PKI}/healthcheck-client.crt --key={PKI}/healthcheck-client.key"
    return f"ETCDCTL_API=3 etcdctl {auth} --endpoints={endpoint} --dial-timeout=5s " + " ".join(
        args)


def _write_spec(base: Path, artifacts: Path) -> Path:
    data = spec_with_source(EXAMPLE, artifacts)
    spec = base / "cluster.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    return spec


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the nspawn lab needs root")
    missing = [f"playbooks/{p}.yml" for p in ("preflight", *ONLY)
               if not (PLAYBOOKS / f"{p}.yml").is_file()]
    if missing:
        pytest.skip(f"playbooks not delivered yet: {', '.join(missing)}")
    base = tmp_path_factory.mktemp("converge")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROVISIONER_STATE_DIR", str(base / "state"))
        mp.setenv(paths.ENV_DATA_DIR, str(base / "data"))
        mp.setenv(paths.ENV_IMAGE_DIR, str(SHARED_IMAGES))
        cluster = load_file(EXAMPLE)
        plan = build_plan(cluster)
        # Exactly what the selected phases install, as provision will ask for it.
        wanted = artifacts_for(plan, select_phases(plan, ONLY, None))
        source = built_local_source(plan, wanted)
        spec = _write_spec(base, source)
        cluster = load_file(spec)
        provider = NspawnMachines(cluster, print)
        try:
            t0 = time.monotonic()
            provider.up()
            up_seconds = time.monotonic() - t0
            first = provision(spec, ONLY, None, None, True, LineProgress(sys.stdout))
            assert first.succeeded, f"first run failed: {first.failure}"
            # Immediately again: the idempotency gate.
            second = provision(spec, ONLY, None, None, True, LineProgress(sys.stdout))
            lab = Lab(spec, provider, cluster_ssh(cluster.metadata.name),
                      cluster_dir(cluster.metadata.name), {m.name: m for m in machines(cluster)},
                      up_seconds, first, second)
            yield lab
        finally:
            provider.down(purge=True)


def test_first_run_converges_every_host(lab: Lab) -> None:
    assert [p.phase for p in lab.first.phases] == ONLY
    totals = lab.first.host_totals()
    assert set(totals) == set(lab.nodes)
    assert all(h.failed == 0 and h.unreachable == 0 for h in totals.values())
    assert lab.first.changed > 0
    assert (lab.first.run_dir / "events.jsonl").stat().st_size > 0
    summary = json.loads((lab.first.run_dir / "summary.json").read_text())
    assert summary["succeeded"] and summary["changed"] == lab.first.changed


def test_etcd_cluster_over_tls(lab: Lab) -> None:
    cps = [n for n in lab.nodes if "cp" in n]
    ep = {n: f"https://{lab.nodes[n].address}:2379" for n in cps}
    health = lab.run(cps[0], _etcdctl(lab, ep[cps[0]], "endpoint", "health", "--cluster")
                     + " 2>&1").stdout
    assert health.count("is healthy") == 3, health
    members = lab.run(cps[0], _etcdctl(lab, ep[cps[0]], "member", "list")).stdout
    assert len(members.strip().splitlines()) == 3, members
    lab.run(cps[0], _etcdctl(lab, ep[cps[0]], "put", "provisioner-test", "replicated"))
    got = lab.run(cps[2], _etcdctl(lab, ep[cps[2]], "get", "provisioner-test",
                                   "--print-value-only")).stdout
    assert got.strip() == "replicated"
    # No client certificate: the TLS handshake is refused.
    anon = lab.run(cps[1], _etcdctl(lab, ep[cps[1]], "get", "provisioner-test", cert=False)
                   + " 2>&1", check=False)
    assert anon.returncode != 0 and "replicated" not in anon.stdout
    # A certificate from another CA is refused too.
    rogue = ("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout /tmp/rogue.key -out /tmp/rogue.crt -subj /CN=root -days 1 2>/dev/null")
    lab.run(cps[1], rogue)
    forged = lab.run(cps[1], f"ETCDCTL_API=3 etcdctl --cacert={PKI}/ca.crt "
                     "--cert=/tmp/rogue.crt --key=/tmp/rogue.key "
                     f"--endpoints={ep[cps[1]]} --dial-timeout=5s get provisioner-test 2>&1",
                     check=False)
    assert forged.returncode != 0 and "replicated" not in forged.stdout


def _busybox_image() -> Path:
    """The lab's busybox image (Debian's busybox-static), an OCI layout tar from the build."""
    from provisioner.build.build import build_images

    plan = build_plan(load_file(EXAMPLE))
    built = build_images(plan, LAB_SOURCE, lambda *_: None)
    return built[IMAGE]


def test_containerd_runs_a_local_image_everywhere(lab: Lab) -> None:
    archive = _busybox_image().read_bytes()
    for name in lab.nodes:
        lab.push(name, "/tmp/busybox-oci.tar", archive)
        lab.run(name, f"ctr -n {TEST_NS} images import /tmp/busybox-oci.tar")
        out = lab.run(name, f"ctr -n {TEST_NS} run --rm {IMAGE} smoke-{name} "
                      "/bin/sh -c 'echo hello-from-$(uname -s)'", timeout=120).stdout
        assert "hello-from-Linux" in out, f"{name}: {out}"
        mirror = lab.run(name, "cat /etc/containerd/certs.d/docker.io/hosts.toml").stdout
        assert "hub.test.com" in mirror
        assert "/etc/containerd/certs.d" in lab.run(
            name, "cat /etc/containerd/config.toml").stdout


# A TLS test double for the apiserver (the control plane is not converged here): it answers
# every GET, /readyz included, with its host name, presenting the cluster's apiserver
# certificate, so haproxy's /readyz check over TLS (verified against the cluster CA) passes.
FAKE_PEM = "/tmp/fake-apiserver.pem"
FAKE_APISERVER = (
    "import http.server,socket,ssl\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = socket.gethostname().encode() + b'\\n'\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *args): pass\n"
    "http.server.ThreadingHTTPServer.allow_reuse_address = True\n"
    f"srv = http.server.ThreadingHTTPServer(('0.0.0.0', {APISERVER_PORT}), H)\n"
    "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
    f"ctx.load_cert_chain('{FAKE_PEM}')\n"
    "srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n"
    "srv.serve_forever()\n"
)
LB_PROBE = (
    "import socket,ssl\n"
    "ctx = ssl.create_default_context(); ctx.check_hostname = False\n"
    "ctx.verify_mode = ssl.CERT_NONE\n"
    "seen = []\n"
    "for _ in range(12):\n"
    f"    raw = socket.create_connection(('127.0.0.1', {LB_PORT}), timeout=5)\n"
    "    s = ctx.wrap_socket(raw); s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); data = b''\n"
    "    while True:\n"
    "        chunk = s.recv(4096)\n"
    "        if not chunk: break\n"
    "        data += chunk\n"
    "    s.close(); seen.append(data.split(b'\\r\\n\\r\\n', 1)[1].decode().strip())\n"
    "print(' '.join(seen))\n"
)


def _lb_backends(lab: Lab, node: str) -> list[str]:
    out = lab.run(node, f"python3 -c {shlex.quote(LB_PROBE)}").stdout.split()
    return out


def test_haproxy_spreads_and_survives_a_control_plane_node(lab: Lab) -> None:
    cps = [n for n in lab.nodes if "cp" in n]
    # The control plane is not converged here (--only os..lb): a TLS test double on each node
    # answers /readyz (haproxy's check) and every request with its host name.
    pki = lab.state / "pki" / "apiserver"
    for n in cps:
        pem = (pki / f"{n}.crt").read_text() + (pki / f"{n}.key").read_text()
        lab.run(n, f"umask 077; printf '%s' {shlex.quote(pem)} > {FAKE_PEM}")
        lab.run(n, "systemd-run --unit=fake-apiserver --collect python3 -c "
                f"{shlex.quote(FAKE_APISERVER)}")
    try:
        time.sleep(6)  # haproxy marks a backend up after 2 checks 1 s apart
        seen = _lb_backends(lab, "lab-w1")
        assert set(seen) == set(cps), seen
        # Power the first control-plane node off (the whole machine, not just a service).
        node.stop(lab.provider.name, cps[0])
        time.sleep(15)  # two failed checks, each up to the 5 s connect timeout
        seen = _lb_backends(lab, "lab-w2")
        assert len(seen) == 12 and set(seen) == set(cps[1:]), seen
    finally:
        lab.provider.up()  # brings the stopped node back; etcd re-forms
        for n in cps:
            lab.run(n, "systemctl stop fake-apiserver", check=False)


def test_second_run_changes_nothing(lab: Lab) -> None:
    """The survey finds every host converged (no phase runs), and the selected phases run
    on every host anyway (--full) change nothing either."""
    assert_converged(lab.second, len(lab.nodes))
    full = provision(lab.spec, ONLY, None, None, True, LineProgress(sys.stdout), full=True)
    assert_ansible_idempotent(full, len(lab.nodes))


def _services(lab: Lab, node: str) -> dict[str, str]:
    """Each unit's main PID and start time; for haproxy also its workers' PIDs, since a new
    configuration reloads it (its master starts new workers and keeps its PID)."""
    units = ["containerd", "haproxy"] + (["etcd"] if "cp" in node else [])
    out = lab.run(node, "systemctl show -p Id -p MainPID -p ActiveEnterTimestampMonotonic "
                  + " ".join(units)).stdout
    result: dict[str, str] = {}
    for block in out.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        result[props["Id"]] = f"{props['MainPID']}@{props['ActiveEnterTimestampMonotonic']}"
    master = result["haproxy.service"].split("@")[0]
    workers = lab.run(node, f"pgrep -P {master} | sort", check=False).stdout.split()
    result["haproxy.service"] += "/" + ",".join(workers)
    return result


def test_drift_is_restored_and_only_its_service_restarts(lab: Lab) -> None:
    """A hand-edited haproxy.cfg on one node is restored, and only that node's haproxy is
    restarted or reloaded (a configuration change reloads it: new workers, same master)."""
    target, path = "lab-w1", "/etc/haproxy/haproxy.cfg"
    manifest = json.loads((lab.state / "rendered" / "hosts" / f"{target}.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == path)
    assert entry["restarts"] == ["haproxy"]
    before = {n: _services(lab, n) for n in lab.nodes}
    lab.run(target, f"echo '# drift' >> {path}")
    third = lab.provision()
    lab.report["drift_run_seconds"] = round(third.seconds, 1)
    assert third.succeeded, third.failure
    want = (lab.state / "rendered" / "hosts" / target / path.lstrip("/")).read_text()
    assert lab.run(target, f"cat {path}").stdout == want
    after = {n: _services(lab, n) for n in lab.nodes}
    for name in lab.nodes:
        for unit, state in before[name].items():
            restarted = after[name][unit] != state
            expected = name == target and unit == "haproxy.service"
            assert restarted == expected, f"{name} {unit}: {state} -> {after[name][unit]}"
    changed = {h: r.changed for h, r in third.host_totals().items()}
    assert changed[target] > 0 and all(c == 0 for h, c in changed.items() if h != target)


def test_report(lab: Lab) -> None:
    """Wall times and the slowest tasks, printed and kept next to the run directories."""
    slow = slowest_tasks(lab.first.run_dir / "events.jsonl", 10)
    lab.report.update({
        "machines_up_seconds": round(lab.up_seconds, 1),
        "first_run_seconds": round(lab.first.seconds, 1),
        "second_run_seconds": round(lab.second.seconds, 1),
        "first_run_changed": lab.first.changed,
        "second_run_changed": lab.second.changed,
        "slowest_tasks_first_run": [
            {"phase": t.phase, "host": t.host, "task": t.task, "seconds": round(t.seconds, 2)}
            for t in slow],
    })
    text = json.dumps(lab.report, indent=1)
    (lab.state / "converge-report.json").write_text(text + "\n")
    if os.environ.get("PROVISIONER_LAB_REPORT"):
        Path(os.environ["PROVISIONER_LAB_REPORT"]).write_text(text + "\n")
    print("\nconverge report:\n" + text)
    assert slow and lab.second.seconds < lab.first.seconds
