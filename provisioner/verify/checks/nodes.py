"""Nodes: every planned kubelet host is registered, and each one is Ready."""

from __future__ import annotations

import time
from typing import Any

from provisioner.verify.model import Outcome, VerifyContext, fail, ok, skipped, warn

# A kubelet that has just restarted (containerd or its config changed in this run) posts
# Ready=False for a few seconds ("CSINode is not yet initialized", "PLEG is not healthy") before
# Ready=True. Such a node is re-read for up to this long; Unknown (kubelet not posting at all)
# and a missing condition fail at once.
NODE_READY_GRACE = 60.0
NODE_READY_POLL = 2.0


def node_objects(ctx: VerifyContext) -> dict[str, dict[str, Any]]:
    """Node objects by name (memoized: one GET for all node checks)."""

    def fetch() -> dict[str, dict[str, Any]]:
        items = ctx.api.get_json("/api/v1/nodes").get("items") or []
        return {str(n.get("metadata", {}).get("name")): n for n in items
                if isinstance(n, dict)}

    return ctx.memo.get("nodes", fetch)


def registered(ctx: VerifyContext, target: str) -> Outcome:
    """Every host with the kube_node role has a Node object."""
    nodes = node_objects(ctx)
    planned = [h.name for h in ctx.plan.nodes]
    missing = [n for n in planned if n not in nodes]
    extra = sorted(n for n in nodes if n not in planned)
    if missing:
        return fail(f"{len(planned) - len(missing)}/{len(planned)} registered; missing: "
                    + ", ".join(missing),
                    "kubelet on those hosts has not registered: `journalctl -u kubelet -n 50` "
                    "there (certificate, apiserver address through the load balancer)")
    if extra:
        return warn(f"all {len(planned)} registered; not in the plan: {', '.join(extra)}",
                    "remove stale nodes with `kubectl delete node <name>` or add them to the "
                    "spec")
    return ok(f"all {len(planned)} registered: {', '.join(planned)}")


def _ready_condition(node: dict[str, Any]) -> dict[str, Any] | None:
    conditions = (node.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if isinstance(c, dict) and c.get("type") == "Ready"),
                None)


def ready(ctx: VerifyContext, target: str) -> Outcome:
    """The node's Ready condition is True (a reporting kubelet gets a short grace to settle)."""
    node = node_objects(ctx).get(target)
    if node is None:
        return skipped("not registered (see `nodes-registered`)")
    cond = _ready_condition(node)
    if cond is None:
        return fail("no Ready condition reported",
                    f"kubelet on {target} has not posted status: `journalctl -u kubelet -n 50`")
    waited = 0.0
    if cond.get("status") == "False":
        start = time.monotonic()
        deadline = start + min(NODE_READY_GRACE, ctx.workload_timeout)
        while cond is not None and cond.get("status") == "False" and time.monotonic() < deadline:
            time.sleep(NODE_READY_POLL)
            cond = _ready_condition(ctx.api.get_json(f"/api/v1/nodes/{target}"))
        waited = time.monotonic() - start
        if cond is None:
            return fail("Ready condition disappeared",
                        f"`journalctl -u kubelet -n 50` on {target}")
    if cond.get("status") == "True":
        return ok("Ready=True" + (f" after {waited:.0f}s settling" if waited >= 1 else ""))
    reason = cond.get("reason") or "?"
    message = cond.get("message") or ""
    within = f" for {waited:.0f}s" if waited >= 1 else ""
    return fail(f"Ready={cond.get('status')}{within} ({reason}): {message}".rstrip(": "),
                f"`journalctl -u kubelet -n 50` on {target}; Unknown means the kubelet "
                "stopped reporting (host or kubelet down)")
