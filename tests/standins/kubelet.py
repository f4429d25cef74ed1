"""STAND-IN for kubelet, used only by the lab tests.

The official kubelet cannot be downloaded on the test machines. This stand-in accepts exactly
the flags of the real kubelet of the pinned minor, requires --config and --kubeconfig, reads the
KubeletConfiguration our template renders and refuses unreadable, mismatched or wrongly signed
certificates (serving certificate without the node's IP/name, client certificate not from the
cluster CA or not for system:node:<hostname>).

It checks that containerd answers on containerRuntimeEndpoint (an HTTP/2 handshake with the
gRPC server on the unix socket) and exits 1 when it does not; registers its Node with the API
server using its own client certificate (InternalIP = --node-ip, control-plane role label and
taints from registerWithTaints), posts node status with a Ready condition every 10 s, renews
its Lease in kube-node-lease, and reports Ready=False with the reason when containerd stops
answering. It serves HTTPS /healthz on address:port (default 0.0.0.0:10250) requiring client
certificates from clientCAFile. It runs no pods: there is no CRI client, no CNI, no volumes.
"""

# standin: strip-begin
import os
import socket
import ssl
import time
from typing import Any

from tests.standins.common import (
    STANDIN_VERSION,
    ApiClient,
    JSONHandler,
    Kubeconfig,
    LeaseHolder,
    bind,
    check_ca,
    check_serving_cert,
    die,
    log,
    now_rfc3339,
    parse_args,
    read_yaml,
    run_main,
    serve_in_thread,
    server_context,
    status_obj,
)

# standin: strip-end

REQUIRED = ("config", "kubeconfig")
HEARTBEAT = float(os.environ.get("STANDIN_HEARTBEAT", "10"))
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def containerd_error(endpoint: str) -> str | None:
    """None when a gRPC (HTTP/2) server answers on the unix socket, else the reason."""
    if not endpoint.startswith("unix://"):
        return f"containerRuntimeEndpoint {endpoint!r} is not unix://"
    path = endpoint[len("unix://"):]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            head = b""
            while len(head) < 9:
                chunk = s.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except OSError as exc:
        return f"container runtime at {path} does not answer: {exc.strerror or exc}"
    if len(head) < 9 or head[3] != 0x04:
        return f"container runtime at {path} did not answer as a gRPC server"
    return None


class NodeAgent:
    def __init__(self, flags: dict[str, str], cfg: dict[str, Any], kc: Kubeconfig) -> None:
        self.flags, self.cfg, self.kc = flags, cfg, kc
        self.name = (flags.get("hostname-override") or socket.gethostname()).lower()
        self.node_ip = flags.get("node-ip") or ""
        self.api = ApiClient(kc)
        self.endpoint = str(cfg.get("containerRuntimeEndpoint") or
                            flags.get("container-runtime-endpoint") or
                            "unix:///run/containerd/containerd.sock")
        self.runtime_error: str | None = None
        self.lease = LeaseHolder(self.api, "kube-node-lease", self.name, self.name, 40,
                                 always=True)

    def node_object(self) -> dict[str, Any]:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                  "beta.kubernetes.io/arch": "amd64"}
        taints = []
        for t in self.cfg.get("registerWithTaints") or []:
            if isinstance(t, dict) and t.get("key"):
                taints.append({k: t[k] for k in ("key", "value", "effect") if t.get(k)})
                if t["key"] == "node-role.kubernetes.io/control-plane":
                    labels["node-role.kubernetes.io/control-plane"] = ""
        spec: dict[str, Any] = {}
        if taints:
            spec["taints"] = taints
        if self.cfg.get("podCIDR"):
            spec["podCIDR"] = self.cfg["podCIDR"]
            spec["podCIDRs"] = [self.cfg["podCIDR"]]
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": labels,
                             "annotations": {"provisioner.lab/kubelet": "stand-in"}},
                "spec": spec, "status": self.status()}

    def status(self) -> dict[str, Any]:
        now = now_rfc3339()
        ready = self.runtime_error is None
        addresses = [{"type": "Hostname", "address": self.name}]
        if self.node_ip:
            addresses.insert(0, {"type": "InternalIP", "address": self.node_ip})
        return {
            "addresses": addresses,
            "conditions": [{
                "type": "Ready", "status": "True" if ready else "False",
                "reason": "KubeletReady" if ready else "ContainerRuntimeNotReady",
                "message": ("kubelet stand-in is posting ready status" if ready else
                            f"container runtime is down: {self.runtime_error}"),
                "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": int(self.cfg.get("port") or 10250)}},
            "nodeInfo": {"kubeletVersion": STANDIN_VERSION, "kubeProxyVersion": STANDIN_VERSION,
                         "containerRuntimeVersion": "containerd://unknown",
                         "operatingSystem": "linux", "architecture": "amd64",
                         "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": os.uname().release},
        }

    def register(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = self.api.request("POST", "/api/v1/nodes", self.node_object())
                if status in (201, 409):
                    what = "registered" if status == 201 else "already registered"
                    log(f"node {self.name} {what} with the API server")
                    return
                if status in (401, 403):
                    die(f"the API server refused to register node {self.name}: "
                        f"{(body or {}).get('message') if isinstance(body, dict) else body}")
                err = f"HTTP {status}: {body}"
            except ssl.SSLCertVerificationError as exc:
                die(f"API server {self.kc.server}: certificate not accepted with CA "
                    f"{self.kc.ca}: {exc.verify_message}")
            except (OSError, ssl.SSLError) as exc:
                err = str(exc)
            if time.monotonic() > deadline:
                die(f"cannot register node {self.name} with {self.kc.server}: {err}")
            log(f"registering node {self.name}: {err}; retrying")
            time.sleep(2)

    def heartbeat(self) -> None:
        err = containerd_error(self.endpoint)
        if err != self.runtime_error:
            log(f"container runtime {'ok' if err is None else 'NOT ready: ' + err}")
        self.runtime_error = err
        path = f"/api/v1/nodes/{self.name}"
        status, current = self.api.request("GET", path)
        if status == 404:
            self.register()
            status, current = self.api.request("GET", path)
        if status != 200 or not isinstance(current, dict):
            log(f"node status: GET {path} answered {status}")
            return
        new_status = self.status()
        old = {c.get("type"): c for c in (current.get("status") or {}).get("conditions") or []}
        cond = new_status["conditions"][0]
        if old.get("Ready", {}).get("status") == cond["status"]:
            cond["lastTransitionTime"] = old["Ready"].get("lastTransitionTime",
                                                          cond["lastTransitionTime"])
        current["status"] = dict(current.get("status") or {}, **new_status)
        status, body = self.api.request("PUT", path + "/status", current)
        if status != 200:
            log(f"node status update answered {status}: {body}")
        self.lease.try_once()


class KubeletHandler(JSONHandler):
    def do_GET(self) -> None:
        user, _ = self.peer_identity()
        self.identity = user or "-"
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self.send_text(200, "ok")
        elif path == "/pods":
            self.send_json(200, {"kind": "PodList", "apiVersion": "v1", "items": []})
        else:
            self.send_json(404, status_obj(404, "NotFound", f"{path}: not served by the "
                                           "kubelet stand-in"))


def main(argv: list[str]) -> int:
    flags = parse_args(argv, REQUIRED)
    cfg = read_yaml(flags["config"], "--config")
    if not isinstance(cfg, dict) or cfg.get("kind") != "KubeletConfiguration":
        die(f"--config: {flags['config']} is not a KubeletConfiguration")
    client_ca = str(((cfg.get("authentication") or {}).get("x509") or {}).get("clientCAFile")
                    or flags.get("client-ca-file") or "")
    if not client_ca:
        die(f"--config {flags['config']}: authentication.x509.clientCAFile is not set "
            "(anonymous access is refused)")
    check_ca(client_ca, "authentication.x509.clientCAFile")
    cert = str(cfg.get("tlsCertFile") or flags.get("tls-cert-file") or "")
    key = str(cfg.get("tlsPrivateKeyFile") or flags.get("tls-private-key-file") or "")
    if not cert or not key:
        die(f"--config {flags['config']}: tlsCertFile and tlsPrivateKeyFile are required "
            "(the stand-in does not self-sign)")
    name = (flags.get("hostname-override") or socket.gethostname()).lower()
    names = [n for n in (flags.get("node-ip"), name) if n]
    check_serving_cert(cert, key, client_ca, names, "tlsCertFile/tlsPrivateKeyFile (serving)")
    kc = Kubeconfig(flags["kubeconfig"], "--kubeconfig")
    if kc.user != f"system:node:{name}" or "system:nodes" not in kc.groups:
        die(f"--kubeconfig: client certificate {kc.cert} is for {kc.user!r} "
            f"(groups {kc.groups}), not system:node:{name} in system:nodes")
    agent = NodeAgent(flags, cfg, kc)
    err = containerd_error(agent.endpoint)
    if err:
        die(f"failed to connect to the container runtime: {err}")
    host = str(cfg.get("address") or flags.get("address") or "0.0.0.0")
    port = int(cfg.get("port") or flags.get("port") or 10250)
    server = bind(host, port, KubeletHandler, server_context(cert, key, client_ca),
                  "address/port")
    serve_in_thread(server)
    log(f"serving HTTPS on {host}:{port}; container runtime at {agent.endpoint} answers")
    agent.register()
    while True:
        try:
            agent.heartbeat()
        except (OSError, ssl.SSLError) as exc:
            log(f"heartbeat failed: {exc}")
        time.sleep(HEARTBEAT)


if __name__ == "__main__":
    run_main(main)
