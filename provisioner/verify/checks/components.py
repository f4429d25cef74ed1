"""kube-scheduler and kube-controller-manager: local health on each control-plane node, and
which of them holds the leader lease.

Both bind their secure port to 127.0.0.1 only, so health is asked on the node with curl over
SSH; ``/healthz`` is always allowed there, so no client certificate is needed (``-k``: the
serving certificate is self-signed). The leader is read from the component's Lease object.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from provisioner.verify.api import ApiError
from provisioner.verify.checks.common import first_line, journal_hint, transport_failure
from provisioner.verify.curl import curl_get
from provisioner.verify.model import Outcome, VerifyContext, fail, ok, warn
from provisioner.verify.transport import TransportError

PORTS = {"kube-scheduler": 10259, "kube-controller-manager": 10257}
LEASE_SKEW = timedelta(seconds=10)  # clock difference tolerated between controller and nodes


def _health(ctx: VerifyContext, target: str, unit: str) -> Outcome:
    host = ctx.host(target)
    url = f"https://127.0.0.1:{PORTS[unit]}/healthz"
    try:
        resp = curl_get(ctx, host, url)
    except TransportError as exc:
        return transport_failure(exc, url, unit, host.name,
                                 f"{unit}'s serving certificate is broken: "
                                 + journal_hint(unit, host.name))
    if resp.status == 200 and resp.body.strip() == "ok":
        return ok(f"{url}: ok")
    return fail(f"{url}: HTTP {resp.status}: {first_line(resp.body)}",
                journal_hint(unit, host.name))


def scheduler_health(ctx: VerifyContext, target: str) -> Outcome:
    """kube-scheduler /healthz on the node."""
    return _health(ctx, target, "kube-scheduler")


def controller_manager_health(ctx: VerifyContext, target: str) -> Outcome:
    """kube-controller-manager /healthz on the node."""
    return _health(ctx, target, "kube-controller-manager")


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _leader(ctx: VerifyContext, unit: str) -> Outcome:
    path = f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{unit}"
    try:
        lease = ctx.api.get_json(path)
    except ApiError as exc:
        if exc.status == 404:
            return fail(f"no Lease kube-system/{unit}: no {unit} has ever been elected leader",
                        f"{unit} is not running or cannot reach the apiserver: see the "
                        f"`units` check and `journalctl -u {unit} -n 50` on a control-plane "
                        "node")
        return fail(f"GET {path}: {exc}", "see the apiserver checks")
    spec = lease.get("spec") or {}
    holder = str(spec.get("holderIdentity") or "")
    if not holder:
        return fail(f"Lease kube-system/{unit} has no holder",
                    f"no {unit} holds the lease: {journal_hint(unit, 'each control-plane node')}")
    renew = _parse_time(str(spec.get("renewTime") or ""))
    duration = int(spec.get("leaseDurationSeconds") or 15)
    host = holder.split("_")[0]
    known = host in {h.name for h in ctx.plan.control_plane}
    if renew is None or renew + timedelta(seconds=duration) + LEASE_SKEW < ctx.now:
        return fail(f"leader {holder} stopped renewing its lease (duration {duration}s)",
                    f"the leader is gone and no other {unit} took over: "
                    f"{journal_hint(unit, host if known else 'each control-plane node')}")
    if not known:
        return warn(f"leader {holder}: not a planned control-plane node",
                    f"a {unit} outside this plan holds the lease: find it with the holder "
                    "identity (hostname_uuid) and stop it")
    return ok(f"leader {host} (holder {holder}), lease current")


def scheduler_leader(ctx: VerifyContext, target: str) -> Outcome:
    """The kube-scheduler Lease has a live holder among the control-plane nodes."""
    return _leader(ctx, "kube-scheduler")


def controller_manager_leader(ctx: VerifyContext, target: str) -> Outcome:
    """The kube-controller-manager Lease has a live holder among the control-plane nodes."""
    return _leader(ctx, "kube-controller-manager")
