"""Checks that need running pods: CoreDNS answering, the smoke deployment, pod networking
across nodes, Services (by name, ClusterIP and NodePort) and the metrics API.

An apiserver that does not serve ``apps/v1`` (a cluster that has it switched off) makes
them ``skipped`` with the reason instead of failing. The pod-network checks share one probe
(``provisioner.verify.pods.run_probe``), run once per verify.
"""

from __future__ import annotations

import shlex
import time
import urllib.error
import urllib.request
from typing import Any

from provisioner.plan.model import Plan
from provisioner.verify.api import ApiError
from provisioner.verify.checks.common import first_line
from provisioner.verify.model import Outcome, VerifyContext, fail, ok, skipped
from provisioner.verify.pods import ProbeResult, pod_problem, registry_hint, run_probe, summarize
from provisioner.verify.ssh import SshUnavailable

SMOKE_NAME = "provisioner-smoke"
SMOKE_NAMESPACE = "default"
SMOKE_REPLICAS = 2
POLL_SECONDS = 2.0

# A DNS A query in plain python3 (present on every node: Ansible needs it), so nodes need
# neither dig nor nslookup. Prints "rcode=N" then one address per line.
DNS_QUERY = r"""
import socket, struct, sys
name, server = sys.argv[1], sys.argv[2]
q = struct.pack(">HHHHHH", 0x5EED, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
q += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
try:
    s.sendto(q, (server, 53))
    r = s.recv(4096)
except OSError as e:
    sys.exit("no answer from %s:53: %s" % (server, e))
rcode = struct.unpack(">H", r[2:4])[0] & 15
count = struct.unpack(">H", r[6:8])[0]
i = 12
while r[i]:
    i += r[i] + 1
i += 5
ips = []
for _ in range(count):
    if r[i] & 0xC0 == 0xC0:
        i += 2
    else:
        while r[i]:
            i += r[i] + 1
        i += 1
    t, c, ttl, n = struct.unpack(">HHIH", r[i:i + 10])
    i += 10
    if t == 1:
        ips.append(socket.inet_ntoa(r[i:i + n]))
    i += n
print("rcode=%d" % rcode)
print("\n".join(ips))
"""


def workload_support(ctx: VerifyContext) -> str | None:
    """Why pods cannot run here, or None when they can (memoized)."""

    def probe() -> str | None:
        version = ctx.api.get_json("/version")
        git = str(version.get("gitVersion") or "")
        resp = ctx.api.request("GET", "/apis/apps/v1")
        if resp.status == 404:
            return f"no workload API: the apiserver ({git}) does not serve apps/v1"
        return None

    return ctx.memo.get("workloads", probe)


def smoke_image(plan: Plan) -> str:
    """nginx from the first private registry (like the seeds' hub.test.com/nginx), else
    Docker Hub (pulled through any configured docker.io mirror)."""
    from provisioner.verify.pods import images
    return images(plan)[0]


def coredns(ctx: VerifyContext, target: str) -> Outcome:
    """``kubernetes.default`` resolves to the kubernetes Service IP through the DNS service,
    asked from the first node that answers SSH."""
    reason = workload_support(ctx)
    if reason is not None:
        return skipped(reason)
    name = f"kubernetes.default.svc.{ctx.plan.cluster.spec.network.cluster_domain}"
    server = str(ctx.plan.dns_service_ip)
    want = str(ctx.plan.kubernetes_service_ip)
    command = shlex.join(["python3", "-c", DNS_QUERY, name, server])
    for host in ctx.plan.nodes:
        try:
            result = ctx.ssh.run(host, command, ctx.timeout + 5, False)
        except SshUnavailable:
            continue
        where = f"{name} via {server} from {host.name}"
        lines = result.stdout.split()
        if result.exit_status != 0 or not lines:
            return fail(f"{where}: {first_line(result.stderr) or 'no answer'}",
                        "CoreDNS does not answer: `kubectl -n kube-system get pods -l "
                        "k8s-app=kube-dns -o wide`, its logs, and kube-proxy on the node")
        rcode, ips = lines[0], lines[1:]
        if want in ips:
            return ok(f"{where}: {want}")
        return fail(f"{where}: {rcode}, answers {', '.join(ips) or 'none'}, expected {want}",
                    "CoreDNS answers but not with the kubernetes Service: check its "
                    "ConfigMap (`kubectl -n kube-system get cm coredns -o yaml`) and the "
                    "cluster domain")
    return skipped("no node answered SSH (see `ssh`)")


def _deployment(image: str) -> dict[str, Any]:
    labels = {"app": SMOKE_NAME}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": SMOKE_NAME, "namespace": SMOKE_NAMESPACE,
                     "labels": {**labels, "app.kubernetes.io/managed-by": "provisioner"}},
        "spec": {
            "replicas": SMOKE_REPLICAS,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "web", "image": image}]}},
        },
    }


def smoke(ctx: VerifyContext, target: str) -> Outcome:
    """Create ``provisioner-smoke`` (2 replicas of nginx), wait until both are available,
    then delete it."""
    reason = workload_support(ctx)
    if reason is not None:
        return skipped(reason)
    image = smoke_image(ctx.plan)
    base = f"/apis/apps/v1/namespaces/{SMOKE_NAMESPACE}/deployments"
    path = f"{base}/{SMOKE_NAME}"
    resp = ctx.api.request("POST", base, _deployment(image))
    if resp.status == 409:  # left over from an interrupted run
        ctx.api.request("DELETE", path)
        time.sleep(POLL_SECONDS)
        resp = ctx.api.request("POST", base, _deployment(image))
    if resp.status not in (200, 201):
        return fail(f"creating deployment {SMOKE_NAME}: HTTP {resp.status}: "
                    f"{first_line(resp.body)}", "see the apiserver checks")
    try:
        available = 0
        deadline = time.monotonic() + ctx.workload_timeout
        while True:
            try:
                status = ctx.api.get_json(path).get("status") or {}
            except ApiError:
                status = {}
            available = int(status.get("availableReplicas") or 0)
            if available >= SMOKE_REPLICAS or time.monotonic() >= deadline:
                break
            stuck = _stuck_pod(ctx)
            if stuck is not None:
                return fail(f"deployment {SMOKE_NAME} ({image}): {stuck}",
                            registry_hint(stuck) or f"`kubectl describe pods -l "
                            f"app={SMOKE_NAME}`: image pulls from {image.split('/')[0]}")
            time.sleep(POLL_SECONDS)
        if available >= SMOKE_REPLICAS:
            return ok(f"deployment {SMOKE_NAME}: {SMOKE_REPLICAS}/{SMOKE_REPLICAS} replicas "
                      f"of {image} available")
        return fail(f"deployment {SMOKE_NAME}: {available}/{SMOKE_REPLICAS} replicas of "
                    f"{image} available within {ctx.workload_timeout:g}s; "
                    + _pod_summary(ctx),
                    f"`kubectl describe pods -l app={SMOKE_NAME}`: image pulls from "
                    f"{image.split('/')[0]} (containerd registry config), CNI and scheduling")
    finally:
        ctx.api.request("DELETE", path + "?propagationPolicy=Background")


def _stuck_pod(ctx: VerifyContext) -> str | None:
    """``pod <name> on <node>: <reason>: <message>`` of a smoke pod that will not start."""
    try:
        pods = ctx.api.get_json(f"/api/v1/namespaces/{SMOKE_NAMESPACE}/pods"
                                f"?labelSelector=app%3D{SMOKE_NAME}").get("items") or []
    except ApiError:
        return None
    for pod in pods:
        problem = pod_problem(ctx.api, pod)
        if problem is not None:
            node = (pod.get("spec") or {}).get("nodeName") or "unscheduled"
            return f"pod {pod['metadata']['name']} on {node}: {problem}"
    return None


def _pod_summary(ctx: VerifyContext) -> str:
    try:
        pods = ctx.api.get_json(f"/api/v1/namespaces/{SMOKE_NAMESPACE}/pods"
                                f"?labelSelector=app%3D{SMOKE_NAME}").get("items") or []
    except ApiError:
        return "pods unknown"
    states = []
    for pod in pods:
        status = pod.get("status") or {}
        why = status.get("phase") or "?"
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting")
            if waiting:
                why = str(waiting.get("reason") or why)
        states.append(why)
    return "pods: " + (", ".join(sorted(states)) or "none created")


# --- the pod-network probe (one run shared by the checks below) --------------------------------


def _fetch(timeout: float) -> Any:
    def fetch(url: str) -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                resp.read(1024)
            return None
        except (urllib.error.URLError, OSError) as exc:
            return str(getattr(exc, "reason", exc))
    return fetch


def _probe(ctx: VerifyContext) -> ProbeResult:
    return ctx.memo.get("pod-probe", lambda: run_probe(
        ctx.plan, ctx.api, ctx.workload_timeout, _fetch(ctx.timeout), ctx.probe_nodes))


def _probe_lines(ctx: VerifyContext, target: str, kind: str) -> Outcome | list[Any]:
    """The target node's probe lines of ``kind``, or the Outcome when there are none."""
    reason = workload_support(ctx)
    if reason is not None:
        return skipped(reason)
    probe = _probe(ctx)
    if probe.error is not None:
        return fail(probe.error, registry_hint(probe.error) or "the probe pods did not run: "
                    "see the pod named above (`kubectl describe pod`), the node's kubelet and "
                    "containerd logs, and the CNI")
    lines = [line for line in probe.lines.get(target, []) if line.kind == kind]
    if not lines:
        return fail(f"the client pod on {target} reported no {kind} result",
                    "its container ended early: `kubectl -n provisioner-verify-* logs` while a "
                    "verify runs, or the node's containerd log")
    return lines


def pod_network(ctx: VerifyContext, target: str) -> Outcome:
    """A pod on ``target`` fetches the web pod on every other node by its pod IP: each
    fetch's TCP handshake needs the routes both ways, so a probe from the nodes a provision
    added covers every route their joining changed."""
    if len(ctx.plan.nodes) < 2:
        return skipped("one node only: there is no other node to reach")
    lines = _probe_lines(ctx, target, "pod")
    if isinstance(lines, Outcome):
        return lines
    _, bad = summarize(lines)
    if bad:
        return fail(f"a pod on {target} cannot reach the pods on {', '.join(bad)}",
                    _network_hint(ctx, target))
    # Evidence of a pass names nodes only (pod IPs change each run; verify --json is stable).
    return ok(f"a pod on {target} reached the pods on "
              f"{', '.join(sorted(line.subject for line in lines))}")


def _network_hint(ctx: VerifyContext, target: str) -> str:
    if ctx.plan.cluster.spec.network.cni == "flannel":
        return (f"the flannel overlay between {target} and those nodes: the kube-flannel pods "
                "(`kubectl -n kube-flannel get pods -o wide`), the flannel.1 device and UDP "
                "8472 between the nodes")
    return (f"the pod routes between {target} and those nodes: `systemctl status "
            "provisioner-pod-routes` and `ip route` on both, and forwarding between the nodes")


def pod_dns(ctx: VerifyContext, target: str) -> Outcome:
    """A pod on ``target`` resolves ``kubernetes.default.svc.<domain>`` through cluster DNS."""
    lines = _probe_lines(ctx, target, "dns")
    if isinstance(lines, Outcome):
        return lines
    line = lines[0]
    if line.ok:
        return ok(f"a pod on {target} resolved {line.subject} to {line.detail}")
    return fail(f"a pod on {target} could not resolve {line.subject}: {line.detail}",
                f"CoreDNS (`kubectl -n kube-system get pods -l k8s-app=kube-dns -o wide`), "
                f"kube-proxy on {target} (the DNS Service {ctx.plan.dns_service_ip}) and the "
                "pod network to the CoreDNS pods")


def service_by_name(ctx: VerifyContext, target: str) -> Outcome:
    """A pod on ``target`` fetches the probe Service by its DNS name and by its ClusterIP."""
    named = _probe_lines(ctx, target, "svc-name")
    if isinstance(named, Outcome):
        return named
    by_ip = _probe_lines(ctx, target, "svc-ip")
    if isinstance(by_ip, Outcome):
        return by_ip
    name, ip = named[0], by_ip[0]
    if name.ok and ip.ok:
        return ok(f"a pod on {target} fetched the probe Service by name and by ClusterIP")
    if ip.ok:
        return fail(f"a pod on {target} reached ClusterIP {ip.subject} but not the name "
                    f"{name.subject}: {name.detail or 'no answer'}",
                    "cluster DNS: see `pod-dns` and the CoreDNS pods")
    return fail(f"a pod on {target} cannot reach Service ClusterIP {ip.subject}",
                f"kube-proxy on {target} (`systemctl status kube-proxy`, its iptables "
                "KUBE-SERVICES rules) and the pod network to the Service's pods")


def service_node_port(ctx: VerifyContext, target: str) -> Outcome:
    """The controller fetches the probe Service through its NodePort on ``target``."""
    reason = workload_support(ctx)
    if reason is not None:
        return skipped(reason)
    probe = _probe(ctx)
    if probe.error is not None and not probe.node_port_errors:
        return fail(probe.error, registry_hint(probe.error) or "the probe pods did not run")
    if target not in probe.node_port_errors:
        return fail(f"no NodePort was allocated for the probe Service on {target}",
                    "kube-apiserver --service-node-port-range")
    address = ctx.host(target).address
    error = probe.node_port_errors[target]
    if error is None:
        return ok(f"the probe Service's NodePort on {address} answered the controller")
    return fail(f"http://{address}:{probe.node_port}/ from the controller: {error}",
                f"kube-proxy on {target} (iptables KUBE-NODEPORTS) and any firewall between "
                "the controller and the node")


def metrics_api(ctx: VerifyContext, target: str) -> Outcome:
    """metrics-server serves node and pod metrics (what `kubectl top` reads)."""
    if not ctx.plan.cluster.spec.addons.metrics_server.enabled:
        return skipped("spec.addons.metricsServer is disabled")
    reason = workload_support(ctx)
    if reason is not None:
        return skipped(reason)
    want = {h.name for h in ctx.plan.nodes}
    deadline = time.monotonic() + ctx.workload_timeout
    nodes: set[str] = set()
    pods = 0
    problem = ""
    while True:
        try:
            items = ctx.api.get_json("/apis/metrics.k8s.io/v1beta1/nodes").get("items") or []
            nodes = {str(i["metadata"]["name"]) for i in items}
            pods = len(ctx.api.get_json("/apis/metrics.k8s.io/v1beta1/pods").get("items")
                       or [])
            problem = ""
        except ApiError as exc:
            problem = str(exc)
        if (want <= nodes and pods) or time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS * 2)
    if want <= nodes and pods:
        return ok(f"metrics for all {len(want)} nodes and for pods")
    missing = sorted(want - nodes)
    return fail(f"metrics API: {problem or 'no metrics for ' + ', '.join(missing or ['pods'])}",
                "metrics-server (`kubectl -n kube-system logs deploy/metrics-server`): it "
                "scrapes each kubelet on :10250 with its serving certificate, and the "
                "apiserver reaches it through the aggregation layer (front-proxy certs)")
