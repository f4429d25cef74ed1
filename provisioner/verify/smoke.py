"""The seeds' example, end to end: ``kubectl create deploy web --image=hub.test.com/nginx``,
expose it, fetch the page through the Service name from a pod on another node, clean up.

Scope: one function, ``run_smoke``, over the API client verify uses; each step is reported
through a callback so the CLI can print it as it happens. Everything lives in a throwaway
namespace that is deleted at the end, whatever happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from provisioner.plan.model import Plan
from provisioner.verify.api import ApiClient
from provisioner.verify.pods import (
    MANAGED_BY,
    PodError,
    create,
    delete_namespace,
    everywhere,
    images,
    new_namespace,
    node_names,
    pod_node,
    registry_hint,
    terminated,
    wait_pods,
)

NAME = "web"
# The page the image serves (provisioner's nginx image), or upstream nginx's welcome page.
PAGE_MARKERS = ("nginx",)


@dataclass(frozen=True)
class Step:
    """One step of the example: what was done and what came back."""

    name: str
    ok: bool
    detail: str


def _deployment(ns: str, image: str) -> dict[str, Any]:
    labels = {"app": NAME}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": ns, "labels": {**labels, **MANAGED_BY}},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "nginx", "image": image}]}}}}


def _service(ns: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": ns, "labels": MANAGED_BY},
            "spec": {"selector": {"app": NAME}, "ports": [{"port": 80, "targetPort": 80}]}}


def _client(ns: str, node: str, image: str, url: str) -> dict[str, Any]:
    script = f'timeout 10 wget -q -O - "{url}" > /dev/termination-log 2>&1'
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "client", "namespace": ns,
                         "labels": {"app": "client", **MANAGED_BY}},
            "spec": {"nodeName": node, "restartPolicy": "Never", "tolerations": everywhere(),
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "client", "image": image,
                                     "command": ["/bin/sh", "-c", script]}]}}


def run_smoke(plan: Plan, api: ApiClient, timeout: float,
              report: Callable[[Step], None]) -> bool:
    """Run the example; True when every step passed. The namespace is always deleted."""
    web_image, client_image = images(plan)
    domain = plan.cluster.spec.network.cluster_domain
    ns = new_namespace(api, "provisioner-smoke")
    report(Step("namespace", True, ns))
    try:
        create(api, f"/apis/apps/v1/namespaces/{ns}/deployments", _deployment(ns, web_image))
        report(Step("create deployment", True, f"{NAME} --image={web_image}"))
        create(api, f"/api/v1/namespaces/{ns}/services", _service(ns))
        report(Step("expose", True, f"service {NAME} port 80"))
        web = wait_pods(api, ns, f"app={NAME}", 1, timeout, what=f"deployment {NAME}")
        server = pod_node(web[0])
        report(Step("rollout", True, f"pod {web[0]['metadata']['name']} Ready on {server}"))
        others = [n for n in node_names(plan) if n != server] or [server]
        url = f"http://{NAME}.{ns}.svc.{domain}/"
        create(api, f"/api/v1/namespaces/{ns}/pods", _client(ns, others[0], client_image, url))
        done = wait_pods(api, ns, "app=client", 1, timeout,
                         done=lambda p: terminated(p) is not None, what="client pod")
        term = terminated(done[0]) or {}
        page = str(term.get("message") or "")
        good = term.get("exitCode") == 0 and any(m in page.lower() for m in PAGE_MARKERS)
        first = page.strip().splitlines()[0][:120] if page.strip() else "(empty)"
        report(Step("fetch", good, f"{url} from a pod on {others[0]}: {first}"))
        return good
    except PodError as exc:
        hint = registry_hint(str(exc))
        report(Step("failed", False, str(exc) if not hint or hint in str(exc)
                    else f"{exc} ({hint})"))
        return False
    finally:
        delete_namespace(api, ns)
        report(Step("clean up", True, f"namespace {ns} deleted"))
