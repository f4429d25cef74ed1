"""etcd checks: each member's health, quorum, one agreed leader, the spec's members.

Members are asked from the controller over mutual TLS with the health-check client
certificate: ``GET /health`` and ``POST /v3/maintenance/status`` (the JSON gateway of
etcd 3.4/3.5, which also reports the leader and the raft term; ``/v3/cluster/member/list``
for the members).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from provisioner.components.etcd import CLIENT_PORT
from provisioner.plan.model import HostPlan
from provisioner.verify.checks.common import transport_failure
from provisioner.verify.model import CLUSTER, Outcome, VerifyContext, fail, ok
from provisioner.verify.transport import ClientCreds, TransportError

CERT_HINT = ("the etcd certificates do not match the etcd CA in the state directory: run "
             "`provisioner render FILE --out DIR` (reissues certificates not signed by the "
             "current CA) and converge with `provisioner provision FILE --only etcd`")


@dataclass(frozen=True)
class MemberProbe:
    """What one member said (``outcome`` is its per-member verdict)."""

    host: str
    healthy: bool
    outcome: Outcome
    answered: bool = True  # False: no HTTP answer at all (stopped or host down)
    local_error: str = ""  # the probe could not start: our own credentials are missing
    member_id: str = ""
    leader: str = ""
    raft_term: str = ""


def etcd_creds(ctx: VerifyContext) -> ClientCreds:
    """The health-check client pair and the etcd CA from the state directory."""
    pki = ctx.pki_dir / "etcd"
    return ClientCreds(pki / "ca.crt", pki / "healthcheck-client.crt",
                       pki / "healthcheck-client.key")


def member_url(host: HostPlan) -> str:
    """A member's client URL."""
    return f"https://{host.address}:{CLIENT_PORT}"


def probe(ctx: VerifyContext, host: HostPlan) -> MemberProbe:
    """Ask one member (memoized: the health and leader checks share it)."""
    return ctx.memo.get(f"etcd:{host.name}", lambda: _probe(ctx, host))


def _probe(ctx: VerifyContext, host: HostPlan) -> MemberProbe:
    base = member_url(host)
    creds = etcd_creds(ctx)
    try:
        resp = ctx.https.request("GET", base + "/health", creds, None, ctx.timeout)
    except TransportError as exc:
        return MemberProbe(host.name, False,
                           transport_failure(exc, base + "/health", "etcd", host.name,
                                             CERT_HINT), answered=False,
                           local_error=exc.detail if exc.kind == "credentials" else "")
    try:
        health = json.loads(resp.body)
    except ValueError:
        health = {}
    if not isinstance(health, dict):
        health = {}
    if resp.status != 200 or str(health.get("health")) != "true":
        reason = health.get("reason") or resp.body.strip()[:200]
        outcome = fail(f"{base}/health: HTTP {resp.status}, unhealthy: {reason}",
                       "a member reports unhealthy when it has no leader (quorum lost) or "
                       f"alarms are raised: `etcdctl endpoint status --cluster -w table` on "
                       f"{host.name}, then `journalctl -u etcd -n 50`")
        return MemberProbe(host.name, False, outcome)
    member_id = leader = term = ""
    try:
        st = ctx.https.request("POST", base + "/v3/maintenance/status", creds, b"{}",
                               ctx.timeout)
        status = json.loads(st.body) if st.status == 200 else {}
    except (TransportError, ValueError):
        status = {}
    if isinstance(status, dict):
        header = status.get("header") or {}
        member_id = str(header.get("member_id") or header.get("memberId") or "")
        leader = str(status.get("leader") or "")
        term = str(status.get("raftTerm") or status.get("raft_term")
                   or header.get("raft_term") or "")
    version = status.get("version", "") if isinstance(status, dict) else ""
    evidence = f"{base}/health: healthy" + (f", etcd {version}" if version else "")
    return MemberProbe(host.name, True, ok(evidence), member_id=member_id, leader=leader,
                       raft_term=term)


def health(ctx: VerifyContext, target: str) -> Outcome:
    """Per member: healthy over mTLS. ``cluster``: quorum (healthy members > n/2)."""
    if target != CLUSTER:
        return probe(ctx, ctx.host(target)).outcome
    probes = [probe(ctx, h) for h in ctx.plan.etcd]
    local = next((p for p in probes if p.local_error), None)
    if local is not None:
        return fail(f"cannot ask the members: {local.local_error}", local.outcome.hint)
    return quorum([p.host for p in probes if p.healthy], [p.host for p in probes],
                  [p.host for p in probes if p.answered])


def quorum(healthy: list[str], members: list[str], answering: list[str] | None = None
           ) -> Outcome:
    """Quorum verdict: more than half of the members healthy. Members neither healthy nor
    ``answering`` are down; answering but unhealthy ones are named apart (they are running
    but see no leader)."""
    n, h = len(members), len(healthy)
    need = n // 2 + 1
    answering = healthy if answering is None else answering
    down = [m for m in members if m not in healthy and m not in answering]
    sick = [m for m in members if m not in healthy and m in answering]
    evidence = f"{h}/{n} members healthy, quorum needs {need}"
    if down:
        evidence += f"; down: {', '.join(down)}"
    if sick:
        evidence += f"; running but unhealthy: {', '.join(sick)}"
    if h >= need:
        return ok(evidence)
    start = (f"start etcd on the down members (`systemctl start etcd` on {', '.join(down)})"
             if down else "find why members see no leader (`journalctl -u etcd -n 50`)")
    return fail(evidence,
                f"etcd has lost quorum and the apiservers cannot write: {start} and check "
                "with `etcdctl endpoint health --cluster`; restore from a backup only if a "
                "majority of members is lost for good")


def leader(ctx: VerifyContext, target: str) -> Outcome:
    """Every answering member names the same, non-zero leader."""
    probes = [probe(ctx, h) for h in ctx.plan.etcd]
    answered = [p for p in probes if p.healthy and p.leader]
    if not answered:
        return fail("no healthy member reported a leader",
                    "without a leader etcd cannot serve writes: see `etcd-health`; "
                    "`etcdctl endpoint status --cluster -w table`")
    leaders = {p.leader for p in answered}
    if len(leaders) > 1 or "0" in leaders:
        seen = ", ".join(f"{p.host}: {p.leader}" for p in answered)
        return fail(f"members disagree on the leader ({seen})",
                    "an election is in progress or the cluster is split: re-run verify; if it "
                    "persists check member lists with `etcdctl member list` on each member")
    lead = leaders.pop()
    names = [p.host for p in probes if p.member_id == lead]
    who = names[0] if names else f"member {lead} (not a planned host)"
    terms = sorted({p.raft_term for p in answered if p.raft_term})
    term = f", raft term {'/'.join(terms)}" if terms else ""
    return ok(f"leader {who}{term}; {len(answered)}/{len(probes)} members agree")


def members(ctx: VerifyContext, target: str) -> Outcome:
    """The cluster's member list is the spec's etcd hosts: none missing, none left over
    from a host that left the spec, none still a learner (a join that did not finish)."""
    probes = [probe(ctx, h) for h in ctx.plan.etcd]
    asked = next((p for p in probes if p.healthy), None)
    if asked is None:
        return fail("no healthy member to ask for the member list", "see `etcd-health`")
    url = member_url(ctx.host(asked.host)) + "/v3/cluster/member/list"
    try:
        resp = ctx.https.request("POST", url, etcd_creds(ctx), b"{}", ctx.timeout)
        listed = json.loads(resp.body).get("members") if resp.status == 200 else None
    except (TransportError, ValueError, AttributeError):
        listed = None
    if not isinstance(listed, list):
        return fail(f"{url}: no member list", "`etcdctl member list` on " + asked.host)
    names = [str(m.get("name") or "(not started)") for m in listed if isinstance(m, dict)]
    learners = [str(m.get("name") or "(not started)") for m in listed
                if isinstance(m, dict) and m.get("isLearner")]
    want = [h.name for h in ctx.plan.etcd]
    extra = [n for n in names if n not in want]
    missing = [n for n in want if n not in names]
    evidence = f"members {', '.join(sorted(names))} (asked {asked.host})"
    if extra:
        return fail(evidence + f"; not in the spec: {', '.join(extra)}",
                    "a member whose host left the spec still counts for quorum: remove its "
                    "host with `provisioner provision FILE --prune` (or `provisioner node "
                    "remove FILE NODE`); a member no host has: `etcdctl member remove <id>`")
    if missing or learners:
        what = "; ".join(x for x in (f"missing: {', '.join(missing)}" if missing else "",
                                     f"still learners: {', '.join(learners)}" if learners
                                     else "") if x)
        return fail(evidence + f"; {what}",
                    "a join did not finish: run `provisioner provision FILE` again (it adds "
                    "the member as a learner, starts it and promotes it)")
    return ok(evidence + f"; {len(names)} voting, as the spec says")
