"""The Kubernetes STAND-INs (tests/standins/), run locally on 127.0.0.1 against a real PKI and a
rendered tree: flags checked against the pinned minor, certificates refused when wrong, and --
with Debian's etcd when it is installed -- an API server backed by etcd that kubelets,
controller-manager, scheduler and kube-proxy stand-ins talk to with their own certificates."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from provisioner.plan import build_plan
from provisioner.render.material import prepare
from provisioner.render.tree import render, write_tree
from provisioner.spec import load_file
from tests.fixtures.debian_artifacts import (
    KUBE_STANDINS,
    apt_available,
    build_standin,
    debian_local_source,
)

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "inventories" / "nspawn-3cp-2w.yaml"
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
ETCD = shutil.which("etcd")
needs_etcd = pytest.mark.skipif(ETCD is None, reason="no etcd binary (apt-get install etcd-server)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeContainerd:
    """A unix socket answering the HTTP/2 preface with a SETTINGS frame, as containerd's gRPC
    server does; enough for the kubelet stand-in's runtime check."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.running = True
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(2)
                    conn.recv(64)
                    conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                except OSError:
                    pass

    def stop(self) -> None:
        self.running = False
        self.sock.close()
        self.path.unlink(missing_ok=True)


@dataclass
class Lab:
    """A rendered cluster whose host files are reachable under ``tmp`` instead of ``/``."""

    tmp: Path
    out: Path
    bin: Path
    minor: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def root(self, host: str) -> Path:
        return self.out / "hosts" / host

    def local(self, host: str, text: str) -> str:
        r = self.root(host)
        for prefix in ("/etc/kubernetes/", "/var/lib/kubelet/", "/var/lib/kube-proxy/"):
            text = re.sub(rf"(?<![\w/]){re.escape(prefix)}", f"{r}{prefix}", text)
        return text.replace("/var/log/kubernetes/", f"{self.tmp}/log/{host}/")

    def unit_flags(self, host: str, name: str) -> dict[str, str]:
        unit = (self.root(host) / f"etc/systemd/system/{name}.service").read_text()
        m = re.search(r"^ExecStart=(.*?)\n(?=\S)", unit, re.S | re.M)
        assert m, unit
        out: dict[str, str] = {}
        for tok in m.group(1).replace("\\\n", " ").split()[1:]:
            k, _, v = tok[2:].partition("=")
            out[k] = self.local(host, v)
        return out

    def kubeconfig(self, host: str, rel: str, server: str) -> str:
        text = self.local(host, (self.root(host) / rel).read_text())
        text = re.sub(r'server: ".*"', f'server: "{server}"', text)
        path = self.tmp / "kc" / host / rel.replace("/", "_")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    def pki(self, host: str, rel: str) -> str:
        return str(self.root(host) / "etc/kubernetes/pki" / rel)

    def run(self, name: str, flags: dict[str, str], env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PYTHON, str(self.bin / name), *argv(flags)], capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, **(env or {})},
                              check=False)

    def start(self, name: str, flags: dict[str, str], log: str,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        cmd = [PYTHON, str(self.bin / name), *argv(flags)] if name in KUBE_STANDINS else \
            [name, *argv(flags)]
        with (self.tmp / f"{log}.log").open("wb") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                 env={**os.environ, **(env or {})})
        self.procs.append(p)
        return p

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def argv(flags: dict[str, str]) -> list[str]:
    return [f"--{k}" if v == "" else f"--{k}={v}" for k, v in flags.items()]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    # Short path: unix socket names must fit in 108 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="si-"))
    try:
        plan = build_plan(load_file(SPEC))
        material, _ = prepare(plan, tmp / "state", SPEC.parent)
        write_tree(render(plan, material, None), tmp / "out")
        bindir = tmp / "bin"
        bindir.mkdir()
        for name in KUBE_STANDINS:
            (bindir / name).write_text(build_standin(name, plan.minor))
            (bindir / name).chmod(0o755)
        lab = Lab(tmp, tmp / "out", bindir, plan.minor)
        yield lab
        for p in reversed(lab.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def apiserver_flags(lab: Lab, etcd_port: int, port: int, **over: str) -> dict[str, str]:
    flags = lab.unit_flags("lab-cp1", "kube-apiserver")
    flags.update({"etcd-servers": f"https://127.0.0.1:{etcd_port}", "bind-address": "127.0.0.1",
                  "secure-port": str(port)})
    for k, v in over.items():
        if v is None:
            flags.pop(k.replace("_", "-"))
        else:
            flags[k.replace("_", "-")] = v
    return flags


# --- no etcd needed ----------------------------------------------------------------------------


def test_generated_standins_are_self_contained(lab: Lab) -> None:
    for name in KUBE_STANDINS:
        text = (lab.bin / name).read_text()
        assert text.startswith(f'#!/usr/bin/python3\n"""STAND-IN for {name}')
        assert "from tests.standins" not in text and "used only by the lab tests" in text
        out = subprocess.run([PYTHON, "-I", str(lab.bin / name), "--version"],
                             capture_output=True, text=True, check=False, cwd="/")
        assert out.returncode == 0 and out.stdout.strip() == f"Kubernetes v{lab.minor}.0-standin"


@pytest.mark.parametrize("name", KUBE_STANDINS)
def test_unknown_flag_refused(lab: Lab, name: str) -> None:
    flags = lab.unit_flags("lab-cp1", name)
    flags["no-such-flag"] = "1"
    r = lab.run(name, flags)
    assert r.returncode == 1
    assert "Error: unknown flag: --no-such-flag" in r.stderr, r.stderr
    if name == "kube-apiserver":  # removed in 1.24: a real flag of older releases is refused
        r = lab.run(name, {**lab.unit_flags("lab-cp1", name), "insecure-port": "8080"})
        assert r.returncode == 1 and "unknown flag: --insecure-port" in r.stderr


@pytest.mark.parametrize(("name", "missing"), [("kube-apiserver", "etcd-servers"),
                                               ("kubelet", "config"),
                                               ("kube-scheduler", "kubeconfig"),
                                               ("kube-controller-manager", "kubeconfig"),
                                               ("kube-proxy", "config")])
def test_missing_required_flag_refused(lab: Lab, name: str, missing: str) -> None:
    host = "lab-cp1"
    flags = lab.unit_flags(host, name)
    flags.pop(missing)
    r = lab.run(name, flags)
    assert r.returncode == 1 and f"--{missing}" in r.stderr, r.stderr


@pytest.mark.parametrize(("over", "message"), [
    ({"client-ca-file": "front-proxy-ca.crt"}, "is not accepted with CA"),
    ({"tls-private-key-file": "apiserver-etcd-client.key"}, "does not match"),
    ({"etcd-cafile": "ca.crt"}, "is not accepted by CA"),
    ({"advertise-address": "10.1.2.3"}, "is not valid for '10.1.2.3'"),
    ({"tls-cert-file": "missing.crt"}, "cannot read"),
    ({"service-account-key-file": "front-proxy-ca.crt"}, "not a valid public key"),
])
def test_apiserver_refuses_wrong_certificates(lab: Lab, over: dict[str, str],
                                              message: str) -> None:
    flags = apiserver_flags(lab, free_port(), free_port())
    for k, v in over.items():
        flags[k] = lab.pki("lab-cp1", v) if v.endswith((".crt", ".key")) else v
    r = lab.run("kube-apiserver", flags, env={"STANDIN_ETCD_WAIT": "1"})
    assert r.returncode == 1
    assert message in r.stderr, r.stderr


def test_apiserver_exits_when_etcd_unreachable(lab: Lab) -> None:
    t0 = time.monotonic()
    r = lab.run("kube-apiserver", apiserver_flags(lab, free_port(), free_port()),
                env={"STANDIN_ETCD_WAIT": "2"})
    assert r.returncode == 1 and "cannot reach etcd" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 30


def test_kubelet_refuses_foreign_client_cert_and_wrong_san(lab: Lab, tmp_path: Path) -> None:
    flags = lab.unit_flags("lab-cp1", "kubelet")
    flags["kubeconfig"] = lab.kubeconfig("lab-w1", "etc/kubernetes/kubelet.conf",
                                         "https://127.0.0.1:1")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(lab.local("lab-cp1", (lab.root("lab-cp1") / "var/lib/kubelet/config.yaml")
                             .read_text()))
    flags["config"] = str(cfg)
    r = lab.run("kubelet", flags)
    assert r.returncode == 1 and "not system:node:lab-cp1" in r.stderr, r.stderr
    flags["node-ip"] = "192.168.56.99"
    r = lab.run("kubelet", flags)
    assert r.returncode == 1 and "not valid for '192.168.56.99'" in r.stderr, r.stderr


@pytest.mark.skipif(not apt_available(), reason="needs apt-get/dpkg-deb and root")
def test_fixture_packages_standins(tmp_path: Path) -> None:
    src = debian_local_source(tmp_path / "src", KUBE_STANDINS, kube_minor="1.32")
    manifest = json.loads((src / "manifest.json").read_text())
    for name in KUBE_STANDINS:
        entry = manifest[name]
        assert (entry["kind"], entry["version"]) == ("binary", "1.32.0-standin")
        assert entry["install"] == [{"member": "", "dest": f"/usr/local/bin/{name}",
                                     "mode": "0755"}]
        text = (src / entry["file"]).read_text()
        assert text.startswith(f'#!/usr/bin/python3\n"""STAND-IN for {name}')


# --- with a real etcd ---------------------------------------------------------------------------


@dataclass
class Cluster:
    lab: Lab
    api_port: int
    containerd: FakeContainerd
    ctx_admin: ssl.SSLContext

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def context(self, cert: str | None, key: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.lab.pki("lab-cp1", "ca.crt"))
        if cert and key:
            ctx.load_cert_chain(cert, key)
        return ctx

    def call(self, method: str, path: str, body: Any = None,
             ctx: ssl.SSLContext | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.api_port,
                                           context=ctx or self.ctx_admin, timeout=10)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, raw.decode()
        finally:
            conn.close()


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 30,
             logs: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, ssl.SSLError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {last!r}\n{logs()}")


@pytest.fixture(scope="module")
def cluster(lab: Lab) -> Cluster:
    if ETCD is None:
        pytest.skip("no etcd binary (apt-get install etcd-server)")
    cport, pport = free_port(), free_port()
    lab.start(ETCD, {
        "name": "standin-test", "data-dir": str(lab.tmp / "etcd"),
        "listen-client-urls": f"https://127.0.0.1:{cport}",
        "advertise-client-urls": f"https://127.0.0.1:{cport}",
        "listen-peer-urls": f"http://127.0.0.1:{pport}",
        "initial-advertise-peer-urls": f"http://127.0.0.1:{pport}",
        "initial-cluster": f"standin-test=http://127.0.0.1:{pport}",
        "client-cert-auth": "", "trusted-ca-file": lab.pki("lab-cp1", "etcd/ca.crt"),
        "cert-file": lab.pki("lab-cp1", "etcd/server.crt"),
        "key-file": lab.pki("lab-cp1", "etcd/server.key"),
    }, "etcd")
    port = free_port()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(lab.tmp / "notify"))
    notify.settimeout(40)
    api = lab.start("kube-apiserver", apiserver_flags(lab, cport, port), "kube-apiserver",
                    env={"NOTIFY_SOCKET": str(lab.tmp / "notify")})
    admin = ssl.create_default_context(cafile=lab.pki("lab-cp1", "ca.crt"))
    admin.load_cert_chain(lab.pki("lab-cp1", "admin.crt"), lab.pki("lab-cp1", "admin.key"))
    sock = lab.tmp / "containerd.sock"
    c = Cluster(lab, port, FakeContainerd(sock), admin)

    def ready() -> bool:
        assert api.poll() is None, lab.log("kube-apiserver") + lab.log("etcd")
        return c.call("GET", "/readyz")[0] == 200

    try:  # Type=notify: READY=1 once it serves
        assert notify.recv(64) == b"READY=1"
    finally:
        notify.close()
    wait_for("the API server", ready, 40, lambda: lab.log("kube-apiserver") + lab.log("etcd"))
    return c


def start_kubelet(c: Cluster, host: str, port: int) -> subprocess.Popen[bytes]:
    lab = c.lab
    flags = lab.unit_flags(host, "kubelet")
    flags["kubeconfig"] = lab.kubeconfig(host, "etc/kubernetes/kubelet.conf", c.server)
    cfg = lab.local(host, (lab.root(host) / "var/lib/kubelet/config.yaml").read_text())
    cfg = cfg.replace("unix:///run/containerd/containerd.sock", f"unix://{c.containerd.path}")
    path = lab.tmp / f"kubelet-{host}.yaml"
    path.write_text(cfg + f"address: 127.0.0.1\nport: {port}\n")
    flags["config"] = str(path)
    return lab.start("kubelet", flags, f"kubelet-{host}", env={"STANDIN_HEARTBEAT": "1"})


def ready_condition(node: dict[str, Any]) -> dict[str, Any]:
    return next(x for x in node["status"]["conditions"] if x["type"] == "Ready")


@needs_etcd
def test_apiserver_health_and_version(cluster: Cluster) -> None:
    assert cluster.call("GET", "/livez") == (200, "ok")
    status, text = cluster.call("GET", "/readyz?verbose")
    assert status == 200 and "[+]etcd ok" in text
    status, v = cluster.call("GET", "/version")
    assert status == 200 and v["gitVersion"] == f"v{cluster.lab.minor}.0-standin"
    assert (v["major"], v["minor"]) == tuple(cluster.lab.minor.split("."))
    status, body = cluster.call("GET", "/api/v1/pods")
    assert status == 404 and body["kind"] == "Status"
    status, body = cluster.call("GET", "/api/v1")
    assert status == 200 and "nodes" in [r["name"] for r in body["resources"]]


@needs_etcd
def test_apiserver_requires_client_cert_from_cluster_ca(cluster: Cluster) -> None:
    lab = cluster.lab
    with pytest.raises((ssl.SSLError, OSError)):
        cluster.call("GET", "/livez", ctx=cluster.context(None, None))
    other_ca = cluster.context(lab.pki("lab-cp1", "etcd/healthcheck-client.crt"),
                               lab.pki("lab-cp1", "etcd/healthcheck-client.key"))
    with pytest.raises((ssl.SSLError, OSError)):
        cluster.call("GET", "/livez", ctx=other_ca)
    # and the server is verified with the cluster CA: the etcd CA does not accept it
    wrong = ssl.create_default_context(cafile=lab.pki("lab-cp1", "etcd/ca.crt"))
    wrong.load_cert_chain(lab.pki("lab-cp1", "admin.crt"), lab.pki("lab-cp1", "admin.key"))
    with pytest.raises(ssl.SSLCertVerificationError):
        cluster.call("GET", "/livez", ctx=wrong)


@needs_etcd
def test_kubelet_registers_and_heartbeats(cluster: Cluster) -> None:
    lab = cluster.lab
    kport = free_port()
    start_kubelet(cluster, "lab-cp1", kport)

    def node() -> dict[str, Any] | None:
        status, nodes = cluster.call("GET", "/api/v1/nodes")
        assert status == 200 and nodes["kind"] == "NodeList"
        found = [n for n in nodes["items"] if n["metadata"]["name"] == "lab-cp1"]
        return found[0] if found and ready_condition(found[0])["status"] == "True" else None

    n = wait_for("node lab-cp1 Ready", node, 30, lambda: lab.log("kubelet-lab-cp1"))
    assert {"type": "InternalIP", "address": "192.168.56.11"} in n["status"]["addresses"]
    assert "node-role.kubernetes.io/control-plane" in n["metadata"]["labels"]
    first = ready_condition(n)["lastHeartbeatTime"]
    wait_for("a later heartbeat", lambda: ready_condition(node() or n)["lastHeartbeatTime"]
             != first, 10)
    status, lease = cluster.call("GET", "/apis/coordination.k8s.io/v1/namespaces/"
                                 "kube-node-lease/leases/lab-cp1")
    assert status == 200 and lease["spec"]["holderIdentity"] == "lab-cp1"
    # its HTTPS endpoint wants a client certificate from the cluster CA
    ctx = ssl.create_default_context(cafile=lab.pki("lab-cp1", "ca.crt"))
    ctx.check_hostname = False
    ctx.load_cert_chain(lab.pki("lab-cp1", "apiserver-kubelet-client.crt"),
                        lab.pki("lab-cp1", "apiserver-kubelet-client.key"))
    conn = http.client.HTTPSConnection("127.0.0.1", kport, context=ctx, timeout=5)
    conn.request("GET", "/healthz")
    assert conn.getresponse().read() == b"ok"
    conn.close()


KUBECTLS = [k for k in dict.fromkeys([shutil.which("kubectl"),
                                      os.environ.get("STANDIN_TEST_KUBECTL")]) if k]


@needs_etcd
@pytest.mark.skipif(not KUBECTLS, reason="no kubectl on this machine")
@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_kubectl_reads_nodes(cluster: Cluster, kubectl: str) -> None:
    kc = cluster.lab.kubeconfig("lab-cp1", "etc/kubernetes/admin.conf", cluster.server)
    out = subprocess.run([kubectl, f"--kubeconfig={kc}", "get", "nodes", "-o", "json"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "lab-cp1" in [n["metadata"]["name"] for n in json.loads(out.stdout)["items"]]
    out = subprocess.run([kubectl, f"--kubeconfig={kc}", "get", "nodes"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and "lab-cp1" in out.stdout, out.stderr


@needs_etcd
def test_node_authorizer_refuses_other_nodes(cluster: Cluster) -> None:
    lab = cluster.lab
    w1 = cluster.context(str(lab.root("lab-w1") / "var/lib/kubelet/pki/kubelet-client.crt"),
                         str(lab.root("lab-w1") / "var/lib/kubelet/pki/kubelet-client.key"))
    status, _ = cluster.call("POST", "/api/v1/nodes",
                             {"metadata": {"name": "lab-cp2"}, "status": {}}, ctx=w1)
    assert status == 403
    status, _ = cluster.call("PUT", "/api/v1/nodes/lab-cp1/status",
                             {"metadata": {"name": "lab-cp1"}, "status": {}}, ctx=w1)
    assert status == 403
    status, _ = cluster.call("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/"
                             "leases/lab-cp1", {"metadata": {"name": "lab-cp1"}}, ctx=w1)
    assert status == 403
    status, _ = cluster.call("POST", "/api/v1/nodes",
                             {"metadata": {"name": "lab-w1"}, "status": {}}, ctx=w1)
    assert status == 201
    status, _ = cluster.call("GET", "/api/v1/nodes", ctx=w1)
    assert status == 200


@needs_etcd
def test_leader_election_leases(cluster: Cluster) -> None:
    lab = cluster.lab
    ports = {}
    for name, conf in (("kube-controller-manager", "controller-manager.conf"),
                       ("kube-scheduler", "scheduler.conf")):
        flags = lab.unit_flags("lab-cp1", name)
        kc = lab.kubeconfig("lab-cp1", f"etc/kubernetes/{conf}", cluster.server)
        for k in ("kubeconfig", "authentication-kubeconfig", "authorization-kubeconfig"):
            flags[k] = kc
        ports[name] = flags["secure-port"] = str(free_port())
        lab.start(name, flags, name)
    for name in ports:
        def held(name: str = name) -> Any:
            status, lease = cluster.call(
                "GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}")
            return status == 200 and lease["spec"]["holderIdentity"]

        holder = wait_for(f"lease {name}", held, 30, lambda: lab.log("kube-controller-manager")
                          + lab.log("kube-scheduler"))
        assert holder.startswith(socket.gethostname() + "_")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", int(ports[name]), context=ctx, timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok"
        conn.close()
    # a second scheduler does not take the lease while the first renews it
    _, lease = cluster.call(
        "GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler")
    flags = lab.unit_flags("lab-cp1", "kube-scheduler")
    flags["kubeconfig"] = lab.kubeconfig("lab-cp2", "etc/kubernetes/scheduler.conf",
                                         cluster.server)
    for k in ("authentication-kubeconfig", "authorization-kubeconfig"):
        flags.pop(k)
    flags["secure-port"] = str(free_port())
    lab.start("kube-scheduler", flags, "kube-scheduler-2")
    time.sleep(5)
    _, again = cluster.call(
        "GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler")
    assert again["spec"]["holderIdentity"] == lease["spec"]["holderIdentity"]
    assert again["spec"]["renewTime"] != lease["spec"]["renewTime"]


@needs_etcd
def test_kube_proxy_health(cluster: Cluster) -> None:
    lab = cluster.lab
    cfg = lab.local("lab-w1", (lab.root("lab-w1") / "var/lib/kube-proxy/config.yaml").read_text())
    kc = lab.kubeconfig("lab-w1", "var/lib/kube-proxy/kubeconfig", cluster.server)
    port = free_port()
    cfg = re.sub(r"kubeconfig: .*", f"kubeconfig: {kc}", cfg)
    cfg = re.sub(r"healthzBindAddress: .*", f"healthzBindAddress: 127.0.0.1:{port}", cfg)
    path = lab.tmp / "kube-proxy.yaml"
    path.write_text(cfg)
    flags = lab.unit_flags("lab-w1", "kube-proxy")
    flags["config"] = str(path)
    lab.start("kube-proxy", flags, "kube-proxy")

    def healthz() -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            return r.status == 200 and json.loads(r.read())
        finally:
            conn.close()

    assert wait_for("kube-proxy /healthz", healthz, 30, lambda: lab.log("kube-proxy"))


@needs_etcd
def test_kubelet_reports_runtime_down(cluster: Cluster) -> None:
    """Last: stops the fake containerd. The running kubelet reports NotReady with the reason,
    and a new kubelet refuses to start."""
    lab = cluster.lab
    wait_for("kubelet lab-cp1 registered",
             lambda: cluster.call("GET", "/api/v1/nodes/lab-cp1")[0] == 200, 30)
    cluster.containerd.stop()

    def not_ready() -> Any:
        _, n = cluster.call("GET", "/api/v1/nodes/lab-cp1")
        c = ready_condition(n)
        return c["status"] == "False" and c["reason"] == "ContainerRuntimeNotReady" and c

    c = wait_for("Ready=False", not_ready, 15, lambda: lab.log("kubelet-lab-cp1"))
    assert "container runtime" in c["message"]
    p = start_kubelet(cluster, "lab-cp2", free_port())
    assert p.wait(30) == 1
    assert "failed to connect to the container runtime" in lab.log("kubelet-lab-cp2")
