"""Host checks: SSH login to every host and the systemd units of its components."""

from __future__ import annotations

import shlex

from provisioner.components import ALL
from provisioner.plan.model import HostPlan
from provisioner.verify.checks.common import journal_hint
from provisioner.verify.model import Outcome, VerifyContext, fail, ok
from provisioner.verify.ssh import SshUnavailable


def ssh(ctx: VerifyContext, target: str) -> Outcome:
    """Log in with the cluster's key and pinned host keys, run ``hostname``."""
    host = ctx.host(target)
    try:
        result = ctx.ssh.run(host, "hostname", ctx.timeout, False)
    except SshUnavailable as exc:
        return fail(exc.detail, exc.hint)
    if result.exit_status != 0:
        return fail(f"logged in, but `hostname` exited {result.exit_status}: "
                    f"{result.stderr.strip()}", f"log in to {host.name} by hand and check it")
    m = host.machine
    return ok(f"{m.ssh_user}@{host.address}:{m.ssh_port} answers as {result.stdout.strip()}")


def services(host: HostPlan) -> tuple[str, ...]:
    """The systemd services of ``host``'s components, in plan order."""
    by_name = {c.name: c.service for c in ALL}
    return tuple(s for c in host.components if (s := by_name.get(c)) is not None)


def units(ctx: VerifyContext, target: str) -> Outcome:
    """Every component service of the host is ``active`` (systemctl show: stable fields)."""
    host = ctx.host(target)
    names = services(host)
    if not names:
        return ok("no services planned on this host")
    props = "LoadState,ActiveState,SubState,Result,ExecMainStatus"
    command = " ; ".join(
        f"echo UNIT={shlex.quote(u)}; systemctl show --no-pager -p {props} "
        f"{shlex.quote(u + '.service')}" for u in names)
    result = ctx.ssh.run(host, command, ctx.timeout + 5, False)
    if result.exit_status != 0:
        return fail(f"systemctl show failed ({result.exit_status}): {result.stderr.strip()}",
                    f"log in to {host.name} and run `systemctl status`")
    state: dict[str, dict[str, str]] = {}
    current = ""
    for line in result.stdout.splitlines():
        key, _, value = line.strip().partition("=")
        if key == "UNIT":
            current = value
            state[current] = {}
        elif current:
            state[current][key] = value
    bad = [u for u in names if state.get(u, {}).get("ActiveState") != "active"]
    if not bad:
        return ok(f"{len(names)} active: {', '.join(names)}")
    details = []
    for u in bad:
        s = state.get(u, {})
        detail = f"{u}: {s.get('ActiveState', 'unknown')}/{s.get('SubState', '?')}"
        if s.get("LoadState") == "not-found":
            detail += " (unit not installed)"
        if s.get("Result") not in (None, "", "success"):
            detail += f" (result {s['Result']}, exit status {s.get('ExecMainStatus', '?')})"
        if s.get("SubState") == "dead" and s.get("Result") == "success":
            detail += " (stopped)"
        details.append(detail)
    hints = "; ".join(journal_hint(u, host.name) for u in bad)
    return fail(f"{len(bad)} of {len(names)} not active: " + "; ".join(details),
                f"{hints}; restart with `systemctl restart <unit>` after fixing the cause")
