"""Run the checks: the ordered registry, selection and concurrent execution.

Scope: ``CHECKS`` (every check, in report order), ``verify`` (run some or all of them against a
plan and its state directory) and ``build_context``. Each (check, target) pair is one task on a
thread pool; every network operation has its own timeout and a down host's SSH failure is
remembered, so a lost host costs a few seconds, not minutes. A check that cannot log in to its
host is ``skipped`` (the ``ssh`` check reports the failure once); one that finds no apiserver
is ``skipped`` (the apiserver checks report why).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from provisioner.plan.model import Plan
from provisioner.verify.api import ApiClient, ApiError, ApiUnavailable, api_endpoints
from provisioner.verify.checks import (
    apiserver,
    certs,
    components,
    etcd,
    etcd_backup,
    hosts,
    nodes,
    workloads,
)
from provisioner.verify.model import (
    Check,
    CheckResult,
    Memo,
    Outcome,
    VerifyContext,
    all_hosts,
    cluster_target,
    control_plane_hosts,
    etcd_hosts,
    fail,
    node_hosts,
    probe_targets,
    skipped,
)
from provisioner.verify.ssh import ParamikoRunner, SshRunner, SshUnavailable, ssh_settings
from provisioner.verify.transport import ClientCreds, HttpsClient, TlsClient


def _etcd_targets(ctx: VerifyContext) -> tuple[str, ...]:
    return (*etcd_hosts(ctx), *cluster_target(ctx))


CHECKS: tuple[Check, ...] = (
    Check("ssh", "SSH login with the cluster's key and pinned host keys", all_hosts, hosts.ssh),
    Check("units", "systemd services of the host's components are active", all_hosts,
          hosts.units),
    Check("etcd-health", "each etcd member healthy over mTLS; quorum held", _etcd_targets,
          etcd.health),
    Check("etcd-leader", "the members agree on one leader", cluster_target, etcd.leader),
    Check("etcd-members", "the member list is the spec's etcd hosts, all voting",
          cluster_target, etcd.members),
    Check("etcd-backup-age", "each etcd member's newest scheduled backup is younger than "
          "maxAgeHours and its timer is active (only with spec.etcd.backup)",
          etcd_backup.targets, etcd_backup.age),
    Check("etcd-cert-expiry", "etcd certificates valid beyond 30 days", cluster_target,
          certs.etcd_expiry),
    Check("apiserver-cert-expiry", "apiserver and cluster CA certificates valid beyond 30 days",
          cluster_target, certs.apiserver_expiry),
    Check("cert-expiry", "certificates installed on each host valid beyond 30 days",
          all_hosts, certs.host_expiry),
    Check("apiserver-livez-lb", "apiserver /livez through the load balancer",
          apiserver.lb_targets, apiserver.livez_lb),
    Check("apiserver-readyz-lb", "apiserver /readyz through the load balancer",
          apiserver.lb_targets, apiserver.readyz_lb),
    Check("apiserver-livez-node", "each apiserver's /livez, directly", control_plane_hosts,
          apiserver.livez_node),
    Check("apiserver-readyz-node", "each apiserver's /readyz, directly", control_plane_hosts,
          apiserver.readyz_node),
    Check("scheduler-health", "kube-scheduler /healthz on each control-plane node",
          control_plane_hosts, components.scheduler_health),
    Check("scheduler-leader", "a live kube-scheduler holds the leader lease", cluster_target,
          components.scheduler_leader),
    Check("controller-manager-health", "kube-controller-manager /healthz on each "
          "control-plane node", control_plane_hosts, components.controller_manager_health),
    Check("controller-manager-leader", "a live kube-controller-manager holds the leader lease",
          cluster_target, components.controller_manager_leader),
    Check("nodes-registered", "every kube_node host has a Node object", cluster_target,
          nodes.registered),
    Check("nodes-ready", "each node is Ready", node_hosts, nodes.ready),
    Check("coredns-resolves", "CoreDNS resolves kubernetes.default (needs pods)",
          cluster_target, workloads.coredns),
    Check("smoke-deployment", "a 2-replica nginx deployment becomes available (needs pods)",
          cluster_target, workloads.smoke),
    Check("pod-network", "a pod on each node reaches the pods on every other node (after "
          "a provision that only added nodes: a pod on each added node, both ways)",
          probe_targets, workloads.pod_network),
    Check("pod-dns", "CoreDNS resolves kubernetes.default from a pod on each (added) node",
          probe_targets, workloads.pod_dns),
    Check("service-by-name", "a pod on each (added) node reaches a Service by name and "
          "ClusterIP", probe_targets, workloads.service_by_name),
    Check("service-nodeport", "the controller reaches a Service's NodePort on each node",
          node_hosts, workloads.service_node_port),
    Check("metrics-api", "metrics-server serves node and pod metrics (kubectl top)",
          cluster_target, workloads.metrics_api),
)


class UnknownCheckError(ValueError):
    """``--only`` named a check that does not exist."""


class UnknownNodeError(ValueError):
    """``--probe-from`` named a host that is not a node of the plan."""


def check_names() -> tuple[str, ...]:
    """Every check's name, in report order."""
    return tuple(c.name for c in CHECKS)


def select_checks(only: Sequence[str] | None) -> tuple[Check, ...]:
    """The checks named in ``only`` (all when None), in report order."""
    if not only:
        return CHECKS
    unknown = [n for n in only if n not in check_names()]
    if unknown:
        raise UnknownCheckError(f"--only {', '.join(unknown)}: no such check; known checks: "
                                + ", ".join(check_names()))
    return tuple(c for c in CHECKS if c.name in only)


def build_context(plan: Plan, state_dir: Path, ssh: SshRunner | None = None,
                  https: HttpsClient | None = None, now: datetime | None = None,
                  timeout: float = 5.0, workload_timeout: float = 120.0,
                  probe_nodes: Sequence[str] | None = None) -> VerifyContext:
    """A context with real transports unless fakes are passed. ``probe_nodes``: the nodes
    the pod-network probe runs its clients on (every node when None); names the plan does
    not have raise ``UnknownNodeError``."""
    if probe_nodes is not None:
        known = {h.name for h in plan.nodes}
        unknown = [n for n in probe_nodes if n not in known]
        if unknown or not probe_nodes:
            raise UnknownNodeError(
                f"--probe-from {', '.join(unknown) or '(empty)'}: not a node of cluster "
                f"{plan.name}; its nodes: {', '.join(sorted(known))}")
    pki = state_dir / "pki"
    client = https if https is not None else TlsClient()
    admin = ClientCreds(pki / "ca.crt", pki / "admin.crt", pki / "admin.key")
    return VerifyContext(
        plan=plan,
        state_dir=state_dir,
        ssh=ssh if ssh is not None else ParamikoRunner(ssh_settings(plan, state_dir), timeout),
        https=client,
        api=ApiClient(client, api_endpoints(plan), admin, timeout),
        memo=Memo(),
        now=now if now is not None else datetime.now(UTC),
        timeout=timeout,
        workload_timeout=workload_timeout,
        probe_nodes=None if probe_nodes is None else tuple(probe_nodes),
    )


def _run_one(ctx: VerifyContext, check: Check, target: str) -> CheckResult:
    started = time.monotonic()
    try:
        outcome = check.run(ctx, target)
    except SshUnavailable as exc:
        outcome = skipped(f"no SSH session to {exc.host} (see `ssh`): {exc.detail}")
    except ApiUnavailable as exc:
        outcome = skipped(f"{exc} (see the apiserver checks)")
    except ApiError as exc:
        outcome = fail(str(exc), "see the apiserver checks")
    except Exception as exc:  # a bug in one check must not hide the others' results
        outcome = fail(f"internal error: {type(exc).__name__}: {exc}",
                       "this is a bug in provisioner verify: please report it with this line")
    return _result(check, target, outcome, time.monotonic() - started)


def _result(check: Check, target: str, outcome: Outcome, seconds: float) -> CheckResult:
    return CheckResult(check.name, outcome.status, target, outcome.evidence, outcome.hint,
                       seconds)


# Checks that wait on pods (tens of seconds on a busy cluster). The first target of each is
# started before the quick checks, so their waits overlap the SSH and HTTPS round trips of
# the others instead of starting after them; the other targets of pod-network share its
# probe (memoized) and queue in report order.
EARLY = ("pod-network", "smoke-deployment", "coredns-resolves", "metrics-api")


def run_checks(ctx: VerifyContext, checks: Sequence[Check], workers: int = 16
               ) -> list[CheckResult]:
    """Run every (check, target) concurrently; results in check order, then target order."""
    tasks = [(c, t) for c in checks for t in c.targets(ctx)]
    if not tasks:
        return []
    first: dict[str, int] = {}
    for i, (c, _) in enumerate(tasks):
        first.setdefault(c.name, i)
    early = [first[name] for name in EARLY if name in first]
    order = early + sorted(set(range(len(tasks))) - set(early))
    with ThreadPoolExecutor(max_workers=min(workers, len(tasks)),
                            thread_name_prefix="verify") as pool:
        futures = {i: pool.submit(_run_one, ctx, *tasks[i]) for i in order}
        return [futures[i].result() for i in range(len(tasks))]


def verify(plan: Plan, state_dir: Path, only: Sequence[str] | None = None,
           ssh: SshRunner | None = None, https: HttpsClient | None = None,
           now: datetime | None = None, timeout: float = 5.0,
           workload_timeout: float = 120.0, probe_nodes: Sequence[str] | None = None
           ) -> list[CheckResult]:
    """Run the selected checks against the cluster of ``plan`` whose state (PKI, SSH key) is
    in ``state_dir``; the provision flow calls this for its ``verify`` phase (with
    ``probe_nodes`` the nodes it added, when it changed nothing else)."""
    checks = select_checks(only)
    ctx = build_context(plan, state_dir, ssh, https, now, timeout, workload_timeout,
                        probe_nodes)
    try:
        return run_checks(ctx, checks)
    finally:
        ctx.ssh.close()


def failed(results: Sequence[CheckResult]) -> bool:
    """True when any check failed (warn and skipped do not fail a run)."""
    return any(r.status == "fail" for r in results)
