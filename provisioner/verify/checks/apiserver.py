"""apiserver health: /livez and /readyz through the load balancer and on each node.

``localHaproxy`` puts the load balancer on every node's loopback, so it is asked from each
node with curl over SSH and that node's own client certificate (control-plane nodes: the
admin pair; workers: the kubelet client pair: /livez and /readyz are open to any
authenticated user). ``vip`` and ``external`` load balancers, and each apiserver directly,
are asked from the controller with the admin certificate. A certificate that does not
verify fails with a certificate hint, distinct from a refused connection (service down).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from provisioner.components.control_plane import PKI
from provisioner.components.node import KUBELET_DIR
from provisioner.plan.model import HostPlan
from provisioner.verify.checks.common import first_line, journal_hint, transport_failure
from provisioner.verify.curl import curl_get
from provisioner.verify.model import (
    CLUSTER,
    Outcome,
    VerifyContext,
    cluster_target,
    fail,
    ok,
)
from provisioner.verify.transport import HttpResponse, TransportError

Getter = Callable[[str], HttpResponse]


def cert_hint(ctx: VerifyContext, where: str) -> str:
    """What to do when the apiserver's serving certificate does not verify."""
    return (f"the apiserver certificate served {where} does not verify against the cluster CA "
            f"{ctx.pki_dir / 'ca.crt'} (wrong CA, corrupted, expired, or missing this "
            "address): reissue it with `provisioner render FILE --out DIR` (renews "
            "certificates not signed by the current CA) and install it with "
            "`provisioner provision FILE --only control-plane`")


def lb_targets(ctx: VerifyContext) -> tuple[str, ...]:
    """localHaproxy: every host running haproxy; otherwise the one shared address."""
    if ctx.plan.cluster.spec.load_balancer.mode == "localHaproxy":
        return tuple(h.name for h in ctx.plan.hosts if "haproxy" in h.components)
    return cluster_target(ctx)


def _node_creds(host: HostPlan) -> tuple[str, str, str]:
    """(CA, cert, key) paths on ``host`` for curl: admin on control-plane nodes, else the
    kubelet's client pair."""
    if host.machine.is_control_plane:
        return f"{PKI}/ca.crt", f"{PKI}/admin.crt", f"{PKI}/admin.key"
    stem = f"{KUBELET_DIR}/pki/kubelet-client"
    return f"{PKI}/ca.crt", f"{stem}.crt", f"{stem}.key"


# An apiserver answering 5xx (a health check failing: etcd slow to answer on a loaded host,
# a post-start hook after a restart) is asked again every HEALTH_POLL seconds for up to
# HEALTH_GRACE seconds (never longer than the workload timeout) before the check fails.
HEALTH_GRACE = 10.0
HEALTH_POLL = 2.0


def _verdict(ctx: VerifyContext, get: Getter, url: str, path: str, unit: str, host: str,
             where: str) -> Outcome:
    started = time.monotonic()
    deadline = started + min(HEALTH_GRACE, ctx.workload_timeout)
    first: HttpResponse | None = None
    while True:
        try:
            resp = get(url + path)
        except TransportError as exc:
            return transport_failure(exc, url + path, unit, host, cert_hint(ctx, where))
        if resp.status < 500 or time.monotonic() >= deadline:
            break
        first = first or resp
        time.sleep(HEALTH_POLL)
    waited = time.monotonic() - started
    if resp.status == 200:
        after = f" (after HTTP {first.status} for {waited:.0f}s)" if first is not None else ""
        passed = [ln for ln in resp.body.splitlines() if ln.startswith("[+]")]
        if passed:  # ?verbose: one [+] line per named check
            return ok(f"{url}{path}: all {len(passed)} checks passed{after}")
        return ok(f"{url}{path}: {first_line(resp.body) or 'ok'}{after}")
    if resp.status == 401:
        return fail(f"{url}{path}: HTTP 401, the client certificate was not accepted",
                    "the apiserver does not trust the client CA: check --client-ca-file is "
                    f"{PKI}/ca.crt and matches {ctx.pki_dir / 'ca.crt'}; converge with "
                    "`provisioner provision FILE --only control-plane`")
    if resp.status == 403:
        return fail(f"{url}{path}: HTTP 403 forbidden",
                    "RBAC denies the health endpoints: the system:public-info-viewer "
                    "ClusterRoleBinding is missing; check `kubectl get clusterrolebinding`")
    failed = _failed_checks(get, url + path, resp)
    evidence = (f"{url}{path}: HTTP {resp.status}" + (f" for {waited:.0f}s" if first else "")
                + (f"; {failed}" if failed else ""))
    if "etcd" in failed:
        etcd_urls = ", ".join(f"https://{h.address}:2379" for h in ctx.plan.etcd)
        return fail(evidence, f"the apiserver cannot use etcd: check --etcd-servers in "
                    f"/etc/systemd/system/kube-apiserver.service on the control-plane nodes "
                    f"names the members ({etcd_urls}) and see the etcd checks; "
                    f"{journal_hint('kube-apiserver', host)}")
    return fail(evidence, journal_hint("kube-apiserver", host))


def _failed_checks(get: Getter, url: str, resp: HttpResponse) -> str:
    """The ``[-]`` lines of the verbose health report (the reason for a non-200)."""
    body = resp.body
    if "[-]" not in body and "?verbose" not in url:
        try:
            body = get(url + "?verbose").body
        except TransportError:
            return first_line(resp.body)
    failed = [line.strip() for line in body.splitlines() if line.strip().startswith("[-]")]
    return ", ".join(failed) if failed else first_line(resp.body)


def _via_lb(ctx: VerifyContext, target: str, path: str) -> Outcome:
    lb = ctx.plan.cluster.spec.load_balancer
    if target == CLUSTER:
        url = ctx.plan.endpoints.admin
        creds = ctx.api.creds

        def get(u: str) -> HttpResponse:
            return ctx.https.request("GET", u, creds, None, ctx.timeout)

        unit, where = (("haproxy", "the control-plane nodes") if lb.mode == "vip"
                       else ("the load balancer", f"the load balancer {lb.address}"))
        return _verdict(ctx, get, url, path, unit, where, f"through the load balancer {url}")
    host = ctx.host(target)
    ca, cert, key = _node_creds(host)
    url = f"https://127.0.0.1:{lb.port}"

    def get_on_node(u: str) -> HttpResponse:
        return curl_get(ctx, host, u, ca, cert, key)

    return _verdict(ctx, get_on_node, url, path, "haproxy", host.name,
                    f"through the local load balancer on {host.name}")


def _direct(ctx: VerifyContext, target: str, path: str) -> Outcome:
    host = ctx.host(target)
    url = f"https://{host.address}:{ctx.plan.cluster.spec.apiserver.secure_port}"

    def get(u: str) -> HttpResponse:
        return ctx.https.request("GET", u, ctx.api.creds, None, ctx.timeout)

    return _verdict(ctx, get, url, path, "kube-apiserver", host.name, f"by {host.name}")


def livez_lb(ctx: VerifyContext, target: str) -> Outcome:
    """/livez through the load balancer."""
    return _via_lb(ctx, target, "/livez")


def readyz_lb(ctx: VerifyContext, target: str) -> Outcome:
    """/readyz?verbose through the load balancer: every named readiness check passes."""
    return _via_lb(ctx, target, "/readyz?verbose")


def livez_node(ctx: VerifyContext, target: str) -> Outcome:
    """/livez of one apiserver, directly."""
    return _direct(ctx, target, "/livez")


def readyz_node(ctx: VerifyContext, target: str) -> Outcome:
    """/readyz of one apiserver, directly."""
    return _direct(ctx, target, "/readyz")

