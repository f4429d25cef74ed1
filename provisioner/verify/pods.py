"""Running pods from the controller through the API: the workloads verify and smoke use.

Scope: small helpers over ``ApiClient`` (a throwaway namespace, object creation, waiting for
pods, reading a finished pod's report, and explaining a pod that does not start from its
status and events) plus the pod-network probe: a web pod on every node, a Service in front of
them, and one client pod per node that fetches every other node's web pod by IP, resolves
the kubernetes Service through cluster DNS and fetches the web Service by name and by
ClusterIP. The client writes one line per probe to its termination message, which the status
carries back without any kubelet connection (no ``kubectl logs`` needed).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from provisioner.plan.model import Plan
from provisioner.verify.api import ApiClient, ApiError

POLL_SECONDS = 1.0
PROBE_LABEL = "provisioner.dev/verify"
MANAGED_BY = {"app.kubernetes.io/managed-by": "provisioner"}
# Reasons a container waits with that mean it will not start by itself.
STUCK_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff",
                 "CreateContainerConfigError", "CreateContainerError", "RunContainerError")


class PodError(Exception):
    """A workload did not come up; the message names the pod or node and the likely cause."""


def images(plan: Plan) -> tuple[str, str]:
    """(web server, client) images: from the first private registry (like the seeds'
    hub.test.com/nginx), else Docker Hub through any configured docker.io mirror."""
    private = plan.cluster.spec.registries.private
    base = f"{private[0].host}/" if private else "docker.io/library/"
    return f"{base}nginx", f"{base}busybox"


def node_names(plan: Plan) -> list[str]:
    """The Node names of the plan's kubelet hosts (hosts register under their name)."""
    return [h.name for h in plan.nodes]


# --- objects -----------------------------------------------------------------------------------


def create(api: ApiClient, path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """POST ``obj`` to collection ``path``; ``PodError`` unless the API created it."""
    resp = api.request("POST", path, obj)
    if resp.status not in (200, 201):
        kind = obj.get("kind", "object")
        name = (obj.get("metadata") or {}).get("name", "?")
        raise PodError(f"creating {kind} {name}: HTTP {resp.status}: "
                       f"{resp.body.strip().splitlines()[0][:300] if resp.body.strip() else ''}")
    return dict(json.loads(resp.body))


def new_namespace(api: ApiClient, prefix: str) -> str:
    """A fresh namespace ``<prefix>-<random>`` labelled as the tool's own; stale ones with
    the same prefix (from an interrupted run) are deleted first."""
    try:
        existing = api.get_json(f"/api/v1/namespaces?labelSelector={quote(PROBE_LABEL)}%3D"
                                f"{quote(prefix)}").get("items") or []
    except ApiError:
        existing = []
    for ns in existing:
        delete_namespace(api, str(ns["metadata"]["name"]))
    name = f"{prefix}-{secrets.token_hex(3)}"
    create(api, "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {PROBE_LABEL: prefix, **MANAGED_BY}}})
    return name


def delete_namespace(api: ApiClient, name: str) -> None:
    """Delete ``name`` and everything in it, in the background."""
    api.request("DELETE", f"/api/v1/namespaces/{name}?propagationPolicy=Background")


def everywhere() -> list[dict[str, str]]:
    """Tolerations that let a probe pod run on any node (control-plane taints included)."""
    return [{"operator": "Exists"}]


def pods(api: ApiClient, namespace: str, selector: str) -> list[dict[str, Any]]:
    """Pods of ``namespace`` matching label ``selector`` (``k=v``)."""
    return list(api.get_json(f"/api/v1/namespaces/{namespace}/pods?labelSelector="
                             f"{quote(selector)}").get("items") or [])


def pod_node(pod: Mapping[str, Any]) -> str:
    """The node a pod is bound to, or ``unscheduled``."""
    return str((pod.get("spec") or {}).get("nodeName") or "unscheduled")


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """The pod's Ready condition is True."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def events(api: ApiClient, namespace: str, name: str) -> list[str]:
    """The pod's Warning events, oldest first, as ``Reason: message``."""
    try:
        items = api.get_json(f"/api/v1/namespaces/{namespace}/events?fieldSelector="
                             f"{quote('involvedObject.name=' + name)}").get("items") or []
    except ApiError:
        return []
    items.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    return [f"{e.get('reason')}: {' '.join(str(e.get('message') or '').split())}"
            for e in items if e.get("type") == "Warning"]


def registry_hint(text: str) -> str:
    """What to fix when an image pull error names a registry that refused the credentials."""
    lowered = text.lower()
    if "unauthorized" in lowered or "401" in lowered:
        return ("the registry answered unauthorized: check the username and passwordFile of "
                "its spec.registries.private entry, then provision again")
    if "x509" in lowered or "certificate" in lowered:
        return "the registry's TLS certificate is not trusted: check caFile of its entry"
    return ""


def pod_problem(api: ApiClient, pod: Mapping[str, Any]) -> str | None:
    """Why ``pod`` will not become ready by itself (image pull refused, crash loop, ...),
    with its last Warning event; None while it may still come up."""
    status = pod.get("status") or {}
    meta = pod.get("metadata") or {}
    statuses = [*(status.get("initContainerStatuses") or []),
                *(status.get("containerStatuses") or [])]
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason in STUCK_REASONS:
            message = " ".join(str(waiting.get("message") or "").split())
            evs = events(api, str(meta.get("namespace")), str(meta.get("name")))
            detail = message or (evs[-1] if evs else "")
            if evs and reason == "ImagePullBackOff":
                pulls = [e for e in evs if e.startswith("Failed:")]
                detail = pulls[-1] if pulls else detail
            return f"{reason}: {detail[:400]}" if detail else reason
    return None


def describe(api: ApiClient, pod: Mapping[str, Any]) -> str:
    """``<pod> on <node>: <phase or waiting reason>`` plus its last Warning event."""
    meta = pod.get("metadata") or {}
    name = str(meta.get("name"))
    status = pod.get("status") or {}
    state = str(status.get("phase") or "?")
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            state = str(waiting.get("reason") or state)
    evs = events(api, str(meta.get("namespace")), name)
    tail = f"; last event {evs[-1][:300]}" if evs else ""
    return f"pod {name} on {pod_node(pod)}: {state}{tail}"


def wait_pods(api: ApiClient, namespace: str, selector: str, want: int, timeout: float,
              done: Callable[[Mapping[str, Any]], bool] = pod_ready,
              what: str = "pods") -> list[dict[str, Any]]:
    """Wait until ``want`` pods match and are ``done``; ``PodError`` early when one is stuck
    (naming it, its node and the cause) or at ``timeout`` (describing the laggards)."""
    deadline = time.monotonic() + timeout
    while True:
        current = pods(api, namespace, selector)
        finished = [p for p in current if done(p)]
        if len(finished) >= want:
            return current
        for p in current:
            problem = pod_problem(api, p)
            if problem is not None:
                hint = registry_hint(problem)
                raise PodError(f"{what}: pod {p['metadata']['name']} on {pod_node(p)}: "
                               f"{problem}" + (f" ({hint})" if hint else ""))
        if time.monotonic() >= deadline:
            late = [describe(api, p) for p in current if not done(p)]
            raise PodError(f"{what}: {len(finished)}/{want} ready within {timeout:g}s; "
                           + ("; ".join(late) or "no pods were created"))
        time.sleep(POLL_SECONDS)


def terminated(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The terminated state of the pod's only container, once it has finished."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return dict(term)
    return None


# --- the pod-network probe ---------------------------------------------------------------------

WEB = "probe-web"
CLIENT = "probe-client"

# The client's script (busybox sh). PEERS is "ip@node ..."; every probe prints one line
# "<kind> <subject> ok|FAIL <detail>" to the termination message. Timeouts come from
# `timeout`: busybox wget's own -T crashes under the runtime's default seccomp profile.
CLIENT_SCRIPT = r"""
out=/dev/termination-log
# Three tries a second apart: a Service just created may not be programmed here yet.
fetch() { for i in 1 2 3; do timeout 5 wget -q -O /dev/null "$1" && return 0; sleep 1; done
  return 1; }
for peer in $PEERS; do
  ip=${peer%@*}; node=${peer#*@}
  if fetch "http://$ip/"; then echo "pod $node ok $ip"
  else echo "pod $node FAIL $ip"; fi
done >> $out
ans=$(nslookup "$DNS_NAME" 2>&1)
addr=$(echo "$ans" | grep -A1 "^Name:" | grep "^Address" | head -1)
addr=$(echo "$addr" | sed "s/^Address:[[:space:]]*//")
if [ "$addr" = "$DNS_WANT" ]; then echo "dns $DNS_NAME ok $addr"
else echo "dns $DNS_NAME FAIL $(echo $ans | head -c 300)"; fi >> $out
if fetch "http://$SVC_NAME/"; then echo "svc-name $SVC_NAME ok"
else err=$(timeout 5 wget -q -O /dev/null "http://$SVC_NAME/" 2>&1)
  echo "svc-name $SVC_NAME FAIL $(echo $err | head -c 200)"; fi >> $out
if fetch "http://$SVC_IP/"; then echo "svc-ip $SVC_IP ok"
else echo "svc-ip $SVC_IP FAIL"; fi >> $out
cat $out
"""


@dataclass(frozen=True)
class ProbeLine:
    """One probe a client ran: kind (pod, dns, svc-name, svc-ip), subject, verdict, detail."""

    kind: str
    subject: str
    ok: bool
    detail: str


@dataclass
class ProbeResult:
    """What the pod-network probe found, per client node; ``error`` when it could not run."""

    error: str | None = None
    lines: dict[str, list[ProbeLine]] = field(default_factory=dict)
    node_port: int | None = None
    node_port_errors: dict[str, str | None] = field(default_factory=dict)  # node -> error
    web_pods: dict[str, str] = field(default_factory=dict)  # node -> pod IP
    service_name: str = ""


def parse_report(text: str) -> list[ProbeLine]:
    """The client's termination message as probe lines (unknown lines are ignored)."""
    out = []
    for raw in text.splitlines():
        parts = raw.split(None, 3)
        if len(parts) >= 3 and parts[0] in ("pod", "dns", "svc-name", "svc-ip"):
            out.append(ProbeLine(parts[0], parts[1], parts[2] == "ok",
                                 parts[3] if len(parts) > 3 else ""))
    return out


def _web_objects(namespace: str, image: str) -> tuple[dict[str, Any], dict[str, Any]]:
    labels = {"app": WEB}
    ds = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": WEB, "namespace": namespace, "labels": {**labels, **MANAGED_BY}},
        "spec": {"selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"tolerations": everywhere(), "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "web", "image": image,
                                     "ports": [{"containerPort": 80}],
                                     "readinessProbe": {"httpGet": {"path": "/", "port": 80},
                                                        "periodSeconds": 2}}]}}},
    }
    svc = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": WEB, "namespace": namespace, "labels": MANAGED_BY},
        "spec": {"type": "NodePort", "selector": labels,
                 "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]},
    }
    return ds, svc


def _client_pod(namespace: str, node: str, image: str, env: Mapping[str, str]
                ) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{CLIENT}-{node}", "namespace": namespace,
                     "labels": {"app": CLIENT, **MANAGED_BY}},
        "spec": {"nodeName": node, "restartPolicy": "Never", "tolerations": everywhere(),
                 "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "client", "image": image,
                                 "command": ["/bin/sh", "-c", CLIENT_SCRIPT],
                                 "env": [{"name": k, "value": v} for k, v in env.items()]}]},
    }


def run_probe(plan: Plan, api: ApiClient, timeout: float,
              fetch: Callable[[str], str | None] | None = None,
              clients: Sequence[str] | None = None) -> ProbeResult:
    """Deploy the web DaemonSet, its NodePort Service and one client per node of ``clients``
    (every node when None), collect the clients' reports, then delete the namespace.
    ``fetch(url)`` (None when the page came, else why not) is used, while the Service
    exists, on every node's NodePort from here.

    The web pods run on every node whatever ``clients`` is: a client's fetch of a peer's
    pod is one TCP handshake, so it proves the routes both ways between its node and each
    other node. Clients on the nodes that joined alone therefore cover every route that
    changed when they did."""
    web_image, client_image = images(plan)
    nodes = node_names(plan)
    wanted = set(nodes if clients is None else clients)
    probing = [n for n in nodes if n in wanted]
    domain = plan.cluster.spec.network.cluster_domain
    result = ProbeResult()
    ns = new_namespace(api, "provisioner-verify")
    try:
        ds, svc = _web_objects(ns, web_image)
        create(api, f"/apis/apps/v1/namespaces/{ns}/daemonsets", ds)
        created = create(api, f"/api/v1/namespaces/{ns}/services", svc)
        spec = created.get("spec") or {}
        result.node_port = int((spec.get("ports") or [{}])[0].get("nodePort") or 0) or None
        cluster_ip = str(spec.get("clusterIP") or "")
        result.service_name = f"{WEB}.{ns}.svc.{domain}"
        web = wait_pods(api, ns, f"app={WEB}", len(nodes), timeout,
                        what=f"web pods ({web_image}, one per node)")
        result.web_pods = {pod_node(p): str((p.get("status") or {}).get("podIP") or "")
                           for p in web if pod_ready(p)}
        for node in probing:
            peers = " ".join(f"{ip}@{n}" for n, ip in sorted(result.web_pods.items())
                             if n != node and ip)
            env = {"PEERS": peers, "DNS_NAME": f"kubernetes.default.svc.{domain}",
                   "DNS_WANT": str(plan.kubernetes_service_ip),
                   "SVC_NAME": result.service_name, "SVC_IP": cluster_ip}
            create(api, f"/api/v1/namespaces/{ns}/pods", _client_pod(ns, node, client_image,
                                                                      env))
        if fetch is not None and result.node_port:
            result.node_port_errors = _fetch_node_ports(plan, fetch, result.node_port)
        done = wait_pods(api, ns, f"app={CLIENT}", len(probing), timeout,
                         done=lambda p: terminated(p) is not None,
                         what=f"client pods ({client_image}, one per probed node)")
        for p in done:
            term = terminated(p) or {}
            result.lines[pod_node(p)] = parse_report(str(term.get("message") or ""))
    except PodError as exc:
        result.error = str(exc)
    finally:
        delete_namespace(api, ns)
    return result


NODE_PORT_GRACE = 20.0  # seconds kube-proxy may take to program a new Service everywhere


def _fetch_node_ports(plan: Plan, fetch: Callable[[str], str | None], port: int
                      ) -> dict[str, str | None]:
    """``fetch`` every node's NodePort, retrying the ones that fail for a few seconds: a
    Service just created is not programmed on every node at once."""
    errors: dict[str, str | None] = {h.name: "not tried" for h in plan.nodes}
    deadline = time.monotonic() + NODE_PORT_GRACE
    while True:
        for h in plan.nodes:
            if errors[h.name] is not None:
                errors[h.name] = fetch(f"http://{h.address}:{port}/")
        if all(e is None for e in errors.values()) or time.monotonic() >= deadline:
            return errors
        time.sleep(1.0)


def summarize(lines: Iterable[ProbeLine]) -> tuple[list[str], list[str]]:
    """(passed, failed) subjects of ``lines``."""
    good: list[str] = []
    bad: list[str] = []
    for line in lines:
        (good if line.ok else bad).append(
            f"{line.subject} ({line.detail})" if line.detail else line.subject)
    return good, bad
