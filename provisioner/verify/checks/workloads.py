"""Checks that need running pods: CoreDNS answering and a smoke deployment.

An apiserver that does not serve ``apps/v1`` (a cluster that has it switched off) makes
them ``skipped`` with the reason instead of failing.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

from provisioner.plan.model import Plan
from provisioner.verify.api import ApiError
from provisioner.verify.checks.common import first_line
from provisioner.verify.model import Outcome, VerifyContext, fail, ok, skipped
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
    private = plan.cluster.spec.registries.private
    if private:
        return f"{private[0].host}/nginx"
    return "docker.io/library/nginx"


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
