"""Scheduled etcd backups (``spec.etcd.backup``): ``etcd-backup-age``.

On each etcd member, one read-only root command reports the timer's state, the last run's
result, the host's clock and the member's snapshots in the backup directory; the newest one
must be younger than maxAgeHours and the timer active. Without ``spec.etcd.backup`` the
check has no targets. A snapshot's time is the UTC time in its name
(``<host>-YYYYmmddTHHMMSSZ.db``, by the host's clock, against which its age is measured),
which the script prunes by too; a copied file's modification time would lie. Evidence that
passes names the newest snapshot, never an age, which would change between runs.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime

from provisioner.components.etcd import BACKUP_UNIT
from provisioner.spec.models import EtcdBackup
from provisioner.verify.checks.common import first_line
from provisioner.verify.model import Outcome, VerifyContext, etcd_hosts, fail, ok, warn

MIB = 1024 * 1024


def targets(ctx: VerifyContext) -> tuple[str, ...]:
    """The etcd members when backups are configured; none otherwise."""
    if ctx.plan.cluster.spec.etcd.backup is None:
        return ()
    return etcd_hosts(ctx)


def probe_command(backup: EtcdBackup, host: str) -> str:
    """What ``age`` runs on ``host`` (as root: the directory is 0700)."""
    directory = shlex.quote(backup.directory)
    pattern = shlex.quote(f"{host}-*.db")
    return (
        f"printf 'timer=%s\\n' \"$(systemctl is-active {BACKUP_UNIT}.timer)\"; "
        f"systemctl show --no-pager -p Result,ExecMainStatus {BACKUP_UNIT}.service; "
        "printf 'now=%s\\n' \"$(date +%s)\"; "
        f"if [ -d {directory} ]; then find {directory} -maxdepth 1 -type f -name {pattern} "
        "-printf 'snapshot=%s %f\\n'; else echo nodir=1; fi"
    )


@dataclass(frozen=True)
class Snapshot:
    """One snapshot file a member reported."""

    name: str
    taken: float  # seconds since the epoch, from the name
    size: int


@dataclass(frozen=True)
class BackupState:
    """What a member reported about its backups."""

    timer: str
    result: str
    exit_status: str
    now: float | None
    directory_exists: bool
    snapshots: tuple[Snapshot, ...]


def parse_report(host: str, text: str) -> BackupState:
    """The probe's output; lines it does not know are ignored, bad numbers skipped."""
    name_re = re.compile(re.escape(host) + r"-(\d{8}T\d{6}Z)\.db")
    values: dict[str, str] = {}
    snaps: list[Snapshot] = []
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep:
            continue
        if key != "snapshot":
            values.setdefault(key, value)
            continue
        size, _, name = value.partition(" ")
        m = name_re.fullmatch(name)
        if m is None:
            continue
        try:
            taken = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            snaps.append(Snapshot(name, taken.timestamp(), int(size)))
        except ValueError:
            continue
    try:
        now: float | None = float(values.get("now", ""))
    except ValueError:
        now = None
    return BackupState(values.get("timer", "") or "unknown", values.get("Result", ""),
                       values.get("ExecMainStatus", ""), now, "nodir" not in values,
                       tuple(sorted(snaps, key=lambda s: s.name)))


def _hours(seconds: float) -> str:
    return f"{max(seconds, 0) / 3600:.1f} h"


def verdict(host: str, backup: EtcdBackup, state: BackupState) -> Outcome:
    """fail: no snapshot, the newest older than maxAgeHours, or the timer not active;
    warn: the last run failed while an earlier snapshot is still young enough."""
    unit = f"{BACKUP_UNIT}.service"
    look = (f"see `systemctl status {unit}` and `journalctl -u {BACKUP_UNIT} -n 50` on "
            f"{host}; `systemctl start {unit}` there takes a snapshot now")
    last = ""
    if state.result not in ("", "success"):
        last = f"; the last run failed (result {state.result}, exit status " \
               f"{state.exit_status or '?'})"
    problems: list[str] = []
    hints: list[str] = []
    max_age = backup.max_age
    newest = state.snapshots[-1] if state.snapshots else None
    if not state.directory_exists:
        problems.append(f"no backup directory {backup.directory} on {host}: no snapshot was "
                        f"ever taken{last}")
        hints.append(look)
    elif newest is None:
        problems.append(f"no snapshot of {host} in {backup.directory}{last}")
        hints.append(look)
    elif state.now is None:
        problems.append(f"{host} did not report its clock (`date +%s`)")
        hints.append(f"log in to {host} and run the commands of this check by hand")
    elif max_age is None:
        problems.append("spec.etcd.backup has no maxAgeHours for its OnCalendar schedule")
        hints.append("set spec.etcd.backup.maxAgeHours (`provisioner validate FILE`)")
    elif state.now - newest.taken > max_age * 3600:
        problems.append(f"the newest snapshot on {host}, {newest.name}, is "
                        f"{_hours(state.now - newest.taken)} old, more than maxAgeHours "
                        f"{max_age}{last}")
        hints.append(look)
    if state.timer != "active":
        problems.append(f"{BACKUP_UNIT}.timer is {state.timer} on {host}, so no backup is "
                        "scheduled")
        hints.append(f"`systemctl status {BACKUP_UNIT}.timer` on {host}; `provisioner "
                     "provision FILE --only etcd --full` installs and starts it again")
    if problems:
        return fail("; ".join(problems), "; ".join(dict.fromkeys(hints)))
    assert newest is not None
    found = (f"newest snapshot {newest.name} ({newest.size / MIB:.1f} MiB), younger than "
             f"{max_age} h; {len(state.snapshots)} kept (keep {backup.keep}); timer active")
    if last:
        return warn(found + last, look)
    return ok(found)


def age(ctx: VerifyContext, target: str) -> Outcome:
    """The newest snapshot on the member is younger than maxAgeHours; the timer is active."""
    backup = ctx.plan.cluster.spec.etcd.backup
    if backup is None:  # targets() gives none: only a direct call gets here
        return ok("spec.etcd.backup is not set")
    host = ctx.host(target)
    result = ctx.ssh.run(host, probe_command(backup, target), ctx.timeout + 10, True)
    if result.exit_status != 0:
        return fail(f"reading {backup.directory} on {target} exited {result.exit_status}: "
                    f"{first_line(result.stderr) or 'no message'}",
                    "the backup directory is readable by root only: check that the login "
                    f"can run `sudo -n true` on {target}")
    return verdict(target, backup, parse_report(target, result.stdout))
