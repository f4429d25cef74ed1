"""Scheduled etcd backups (spec.etcd.backup): validation, rendering, the backup script run
for real under dash against a test double of etcdctl, and verify's etcd-backup-age.

The script's test double (``ETCDCTL_TEST_DOUBLE``) is written into a temporary ``bin``
directory put first on PATH; nothing else on PATH has an etcdctl or etcdutl
(``/usr/local/bin`` is left out), so the script only ever talks to the double.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from provisioner.components.etcd import (
    BACKUP_SCRIPT,
    BACKUP_SERVICE,
    BACKUP_TIMER,
    BACKUP_UNIT,
    backup_files,
)
from provisioner.plan import Plan, build_plan
from provisioner.plan.model import HostPlan
from provisioner.render.material import prepare
from provisioner.render.tree import render
from provisioner.spec import SpecError, parse
from provisioner.spec.models import EtcdBackup
from provisioner.verify import CheckResult, check_names, verify
from provisioner.verify.checks.etcd_backup import parse_report, probe_command
from provisioner.verify.ssh import CommandResult

ROOT = Path(__file__).resolve().parents[1]
DASH = shutil.which("dash") or "/bin/sh"
SPEC = """
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: bk}
spec:
  provider: {type: nspawn}
  controlPlane: {count: 3}
  workers: {count: 1}
"""


def spec_with(backup: object) -> str:
    """SPEC with ``spec.etcd.backup`` set to ``backup`` (any YAML value)."""
    data = yaml.safe_load(SPEC)
    data["spec"]["etcd"] = {"backup": backup}
    return yaml.safe_dump(data)


def issues(backup: object) -> list[str]:
    """The issues of SPEC with this backup value, as ``str()``."""
    with pytest.raises(SpecError) as info:
        parse(spec_with(backup))
    return [str(i) for i in info.value.issues]


# --- the spec ------------------------------------------------------------------------------


def test_backup_is_off_when_absent_and_defaults_when_empty() -> None:
    assert parse(SPEC).spec.etcd.backup is None
    backup = parse(spec_with({})).spec.etcd.backup
    assert backup is not None
    assert (backup.schedule, backup.keep, backup.max_size_mib, backup.directory) == (
        "daily", 7, 2048, "/var/lib/etcd-backup")
    assert backup.max_age_hours is None and backup.max_age == 26


@pytest.mark.parametrize(("value", "schedule", "max_age"), [
    ({"schedule": "hourly"}, "hourly", 2),
    ({"schedule": "daily"}, "daily", 26),
    ({"schedule": "weekly"}, "weekly", 8 * 24 + 2),
    ({"schedule": "weekly", "maxAgeHours": 200}, "weekly", 200),
    ({"schedule": "*-*-* 00/6:00:00", "maxAgeHours": 7}, "*-*-* 00/6:00:00", 7),
    ({"schedule": "  Mon..Fri   *-*-* 02:30:00 ", "maxAgeHours": 74},
     "Mon..Fri *-*-* 02:30:00", 74),
    ({"schedule": "Sat 04:00 Europe/Berlin", "maxAgeHours": 170},
     "Sat 04:00 Europe/Berlin", 170),
    ({"schedule": "monthly", "maxAgeHours": 800}, "monthly", 800),
])
def test_good_schedules(value: dict[str, object], schedule: str, max_age: int) -> None:
    backup = parse(spec_with(value)).spec.etcd.backup
    assert backup is not None
    assert backup.schedule == schedule and backup.max_age == max_age


def test_good_directories_are_normalized() -> None:
    for given, kept in (("/var/lib/etcd-backup/", "/var/lib/etcd-backup"),
                        ("/srv/backups/etcd_2", "/srv/backups/etcd_2"),
                        ("/var/lib/etcd.bak", "/var/lib/etcd.bak"),
                        ("/var/lib/etcdbackup", "/var/lib/etcdbackup")):
        backup = parse(spec_with({"directory": given})).spec.etcd.backup
        assert backup is not None and backup.directory == kept


@pytest.mark.parametrize(("value", "expected"), [
    ({"schedule": "*-*-* 03:00:00"},
     "spec.etcd.backup.maxAgeHours: required with the OnCalendar schedule '*-*-* 03:00:00'"),
    ({"schedule": "*-*-* 03:00:00"}, "(fix: set maxAgeHours to the longest gap"),
    ({"schedule": "dayly"},
     "spec.etcd.backup.schedule: 'dayly' is not a schedule systemd knows (fix: did you mean "
     "'daily'?"),
    ({"schedule": "daily; rm -rf /"},
     "spec.etcd.backup.schedule: 'daily; rm -rf /' has characters a schedule may not hold: "
     "';'"),
    ({"schedule": "$(reboot)"}, "has characters a schedule may not hold: '$' '(' ')'"),
    ({"schedule": "%H:00"}, "may not hold: '%'"),
    ({"schedule": "daily\nExecStart=/bin/evil"}, "may not hold: '='"),
    ({"schedule": ""}, "spec.etcd.backup.schedule: the schedule is empty (fix: use hourly"),
    ({"schedule": "x" * 100}, "is 100 characters long; a schedule has at most 64"),
    ({"schedule": 5}, "spec.etcd.backup.schedule: expected text, got the number 5"),
    ({"schedule": "daily", "maxAgeHours": 24},
     "spec.etcd.backup.maxAgeHours: 24 hours is not longer than the daily schedule's 24: "
     "verify would fail between two backups (fix: use more than 24, or leave it out "
     "(default 26))"),
    ({"maxAgeHours": 0}, "spec.etcd.backup.maxAgeHours"),
    ({"keep": 0}, "spec.etcd.backup.keep"),
    ({"keep": True}, "spec.etcd.backup.keep: expected a whole number, got true"),
    ({"maxSizeMib": -1}, "spec.etcd.backup.maxSizeMib"),
    ({"directory": "backups"},
     "spec.etcd.backup.directory: 'backups' is not an absolute path (fix: write an absolute "
     "path of its own, e.g. /var/lib/etcd-backup)"),
    ({"directory": "/var/lib/etcd"}, "'/var/lib/etcd' is /var/lib/etcd, etcd's data directory"),
    ({"directory": "/var/lib/etcd/backup"},
     "'/var/lib/etcd/backup' is inside /var/lib/etcd, etcd's data directory"),
    ({"directory": "/etc/etcd-backup"}, "'/etc/etcd-backup' is inside /etc, configuration"),
    ({"directory": "/etc"}, "'/etc' is /etc"),
    ({"directory": "/run/etcd"}, "a tmpfs: lost at every reboot"),
    ({"directory": "/"}, "'/' is the root directory"),
    ({"directory": "/var/lib/../../etc"}, "is not a normal path (no '//', '.' or '..' parts)"),
    ({"directory": "/srv//etcd"}, "is not a normal path"),
    ({"directory": "/srv/my backups"}, "has characters other than letters, digits"),
    ({"directory": "/srv/$HOME"}, "has characters other than letters, digits"),
    ({"directory": "/" + "a" * 300}, "characters long (at most 200)"),
    ({"dir": "/srv"}, "unknown field 'dir' in spec.etcd.backup (fix: remove it; known keys "
     "here: directory, keep, maxAgeHours, maxSizeMib, schedule)"),
    ({"keeps": 3}, "unknown field 'keeps' in spec.etcd.backup (fix: did you mean 'keep'?)"),
    (True, "spec.etcd.backup: expected a mapping, got True"),
    ("daily", "spec.etcd.backup: expected a mapping"),
])
def test_bad_backups_name_the_field_and_the_fix(value: object, expected: str) -> None:
    found = issues(value)
    assert any(expected in i for i in found), found
    assert all("(fix: " in i for i in found), found


@pytest.mark.parametrize("value", [
    {"schedule": None}, {"schedule": []}, {"schedule": {"a": 1}}, {"schedule": "é" * 10},
    {"schedule": "\x00"}, {"schedule": 10**50}, {"directory": None}, {"directory": ["/a"]},
    {"directory": "/\x00"}, {"directory": "/srv/é"}, {"directory": "x" * 100_000},
    {"keep": "many"}, {"keep": 10**40}, {"maxSizeMib": 1.5}, {"maxAgeHours": "soon"},
    [], 0, {"schedule": "weekly", "maxAgeHours": None}, {"schedule": "*", "maxAgeHours": 1},
])
def test_odd_values_never_crash_the_validator(value: object) -> None:
    try:
        parse(spec_with(value))
    except SpecError as err:
        assert err.issues and all(i.hint for i in err.issues)
        assert not any("internal error" in str(i) for i in err.issues), err


def test_backup_issues_do_not_hide_host_issues() -> None:
    """A backup problem is not about hosts: the host-address rules still run."""
    data = yaml.safe_load(spec_with({"schedule": "*-*-* 03:00:00"}))
    data["spec"]["loadBalancer"] = {"mode": "vip", "vip": "192.168.56.11"}
    with pytest.raises(SpecError) as info:
        parse(yaml.safe_dump(data))
    text = [str(i) for i in info.value.issues]
    assert any("maxAgeHours" in i for i in text)
    assert any("already the address of host" in i for i in text), text


def test_lab_spec_enables_daily_backups_keeping_three() -> None:
    cluster = parse((ROOT / "inventories" / "nspawn-3cp-2w.yaml").read_text())
    backup = cluster.spec.etcd.backup
    assert backup is not None
    assert (backup.schedule, backup.keep, backup.max_age) == ("daily", 3, 26)


# --- rendering -----------------------------------------------------------------------------


def _backup(**fields: object) -> EtcdBackup:
    return EtcdBackup.model_validate(fields)


def test_backup_files_paths_modes_and_no_restarts() -> None:
    files = {f.path: f for f in backup_files("bk", "bk-cp1", _backup(keep=3))}
    assert set(files) == {BACKUP_SCRIPT, BACKUP_SERVICE, BACKUP_TIMER}
    assert files[BACKUP_SCRIPT].mode == 0o700
    assert files[BACKUP_SERVICE].mode == 0o600 and files[BACKUP_TIMER].mode == 0o600
    for f in files.values():
        # A restart of the service would take a snapshot; the role restarts the timer.
        assert f.restarts == () and not f.secret
        text = f.content.decode()
        assert "PRIVATE KEY" not in text and "BEGIN" not in text
        assert text.startswith(("#!/bin/sh\n# Managed by provisioner (bk)",
                                "# Managed by provisioner (bk)"))


def test_timer_and_service_content() -> None:
    files = {f.path: f.content.decode()
             for f in backup_files("bk", "bk-cp1", _backup(schedule="weekly"))}
    timer = files[BACKUP_TIMER]
    for line in ("OnCalendar=weekly", "Persistent=true", "RandomizedDelaySec=300",
                 f"Unit={BACKUP_UNIT}.service", "WantedBy=timers.target"):
        assert f"\n{line}\n" in timer, timer
    service = files[BACKUP_SERVICE]
    for line in ("Type=oneshot", f"ExecStart={BACKUP_SCRIPT}", "After=etcd.service",
                 "UMask=0077"):
        assert f"\n{line}\n" in service, service
    # Never enabled on its own (only the timer starts it), never restarted in a loop.
    assert "\n[Install]\n" not in service and "Restart=" not in service
    custom = {f.path: f.content.decode() for f in backup_files(
        "bk", "bk-cp1", _backup(schedule="*-*-* 00/6:00:00", maxAgeHours=7))}
    assert "\nOnCalendar=*-*-* 00/6:00:00\n" in custom[BACKUP_TIMER]


def test_script_is_posix_sh_with_the_spec_values_baked_in() -> None:
    script = next(f for f in backup_files("bk", "bk-cp2", _backup(
        keep=5, maxSizeMib=300, directory="/srv/etcd-bk")) if f.path == BACKUP_SCRIPT)
    text = script.content.decode()
    for line in ("dir=/srv/etcd-bk", "host=bk-cp2", "keep=5", "max_mib=300",
                 "endpoint=https://127.0.0.1:2379"):
        assert f"\n{line}\n" in text, text
    assert "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt" in text
    assert "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key" in text
    assert "--cacert=/etc/kubernetes/pki/etcd/ca.crt" in text
    assert "[[" not in text and "function " not in text and "\tlocal " not in text
    proc = subprocess.run([DASH, "-n"], input=script.content, capture_output=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Plan, dict[str, set[str]]]:
    plan = build_plan(parse(spec_with({"keep": 3})))
    material, _ = prepare(plan, tmp_path_factory.mktemp("state"), ROOT)
    tree = render(plan, material, Path("/k"))
    return plan, {h: {f.path for f in files} for h, files in tree.hosts.items()}


def test_every_etcd_member_and_only_they_get_the_backup(
        rendered: tuple[Plan, dict[str, set[str]]]) -> None:
    plan, paths = rendered
    members = {h.name for h in plan.etcd}
    assert members == {"bk-cp1", "bk-cp2", "bk-cp3"}
    for host, have in paths.items():
        wanted = {BACKUP_SCRIPT, BACKUP_SERVICE, BACKUP_TIMER}
        assert (wanted <= have) == (host in members), host
        assert not (wanted & have) or host in members


def test_without_backup_nothing_is_rendered(tmp_path: Path) -> None:
    plan = build_plan(parse(SPEC))
    material, _ = prepare(plan, tmp_path, ROOT)
    tree = render(plan, material, Path("/k"))
    for files in tree.hosts.values():
        assert not {f.path for f in files} & {BACKUP_SCRIPT, BACKUP_SERVICE, BACKUP_TIMER}


def test_role_defaults_name_the_rendered_paths() -> None:
    """The role removes these files when the backup is off and on reset: same paths."""
    defaults = yaml.safe_load((ROOT / "playbooks/roles/etcd/defaults/main.yml").read_text())
    assert defaults["etcd_backup_unit"] == BACKUP_UNIT
    assert defaults["etcd_backup_script"] == BACKUP_SCRIPT
    assert defaults["etcd_backup_service"] == BACKUP_SERVICE
    assert defaults["etcd_backup_timer"] == BACKUP_TIMER
    assert defaults["etcd_backup_timer_stamp"].endswith(f"stamp-{BACKUP_UNIT}.timer")


def test_roles_enable_remove_and_reset_the_backup() -> None:
    """main.yml enables the timer only when the manifest has it and removes a turned-off
    backup; rolling.yml takes the first snapshot once; reset stops and removes it all."""
    role = ROOT / "playbooks/roles/etcd/tasks"
    main = yaml.safe_load((role / "main.yml").read_text())
    by_name = {t["name"]: t for t in main}
    start = by_name["Etcd | Enable and start the backup timer"]
    assert start["ansible.builtin.systemd"]["state"] == "started"
    assert start["ansible.builtin.systemd"]["enabled"] is True
    assert start["when"] == "etcd_backup_enabled | bool"
    remove = by_name["Etcd | Remove the files of a backup no longer configured"]
    assert remove["when"] == "not etcd_backup_enabled | bool"
    rolling = yaml.safe_load((role / "rolling.yml").read_text())
    first = next(t for t in rolling if t["name"] == "Etcd | Take a first backup snapshot")
    look, run = first["block"]
    assert look["ansible.builtin.command"]["argv"][1] == "--exists"
    assert look["changed_when"] is False
    assert run["when"] == "etcd_backup_exists.rc == 1"
    reset = (role / "reset.yml").read_text()
    for var in ("etcd_backup_timer", "etcd_backup_service", "etcd_backup_script",
                "etcd_backup_timer_stamp"):
        assert "{{ " + var + " }}" in reset
    assert reset.index("backup timer") < reset.index("Stop and disable etcd")


# --- the script, run for real --------------------------------------------------------------

# A test double of etcdctl/etcdutl, only for these tests. Logs each call to $DOUBLE_LOG;
# `snapshot save PATH` writes $DOUBLE_SNAPSHOT_BYTES bytes (through PATH.part, as etcdctl
# does); `snapshot status PATH` prints a status line; $DOUBLE_FAIL=save|status fails that.
ETCDCTL_TEST_DOUBLE = """#!/bin/sh
echo "$(basename "$0") $*" >> "$DOUBLE_LOG"
while [ "$#" -gt 0 ] && [ "$1" != snapshot ]; do shift; done
case "${2:-}" in
save)
	if [ "${DOUBLE_FAIL:-}" = save ]; then
		echo "Error: context deadline exceeded" >&2
		exit 1
	fi
	head -c "$DOUBLE_SNAPSHOT_BYTES" /dev/urandom > "$3.part"
	mv "$3.part" "$3"
	echo "Snapshot saved at $3"
	;;
status)
	if [ "${DOUBLE_FAIL:-}" = status ]; then
		echo "Error: snapshot file integrity check failed" >&2
		exit 1
	fi
	[ -s "$3" ] || exit 1
	echo "1c2d3e4f, 42, 7, 1.0 MB, 3.6.0"
	;;
*)
	exit 3
	;;
esac
"""
HOST = "bk-cp1"
KIB = 1024


class Backup:
    """A rendered backup script in a temporary directory, run under dash."""

    def __init__(self, root: Path, **fields: object) -> None:
        self.dir = root / "backups"
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "calls.log"
        self.log.touch()
        spec = _backup(directory=str(self.dir), **fields)
        script = next(f for f in backup_files("bk", HOST, spec) if f.path == BACKUP_SCRIPT)
        self.script = root / "provisioner-etcd-backup"
        self.script.write_bytes(script.content)
        self.double("etcdctl")

    def double(self, name: str) -> None:
        path = self.bin / name
        path.write_text(ETCDCTL_TEST_DOUBLE)
        path.chmod(0o755)

    def run(self, *args: str, size: int = 10 * KIB, fail: str = ""
            ) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "DOUBLE_LOG": str(self.log),
               "DOUBLE_SNAPSHOT_BYTES": str(size), "DOUBLE_FAIL": fail}
        return subprocess.run([DASH, str(self.script), *args], env=env, capture_output=True,
                              text=True, timeout=60, check=False)

    def old(self, stamp: str, size: int = 10 * KIB, host: str = HOST) -> Path:
        """A snapshot from an earlier run, with its checksum file."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        path = self.dir / f"{host}-{stamp}.db"
        path.write_bytes(b"\0" * size)
        (self.dir / f"{path.name}.sha256").write_text(f"{'0' * 64}  {path.name}\n")
        return path

    def snapshots(self) -> list[str]:
        return sorted(p.name for p in self.dir.glob(f"{HOST}-*.db"))

    def names(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir())


@pytest.fixture
def backup(tmp_path_factory: pytest.TempPathFactory) -> Backup:
    return Backup(tmp_path_factory.mktemp("bk"), keep=3)


def test_a_snapshot_is_saved_checked_and_summed(backup: Backup) -> None:
    assert backup.run("--exists").returncode == 1
    proc = backup.run()
    assert proc.returncode == 0, proc.stderr
    [name] = backup.snapshots()
    assert name.startswith(f"{HOST}-") and name.endswith("Z.db") and len(name) == len(
        f"{HOST}-20260101T000000Z.db")
    stamp = dt.datetime.strptime(name[len(HOST) + 1:-3], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=dt.UTC)
    assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 120
    assert backup.names() == [name, f"{name}.sha256"]  # no partial file left behind
    data = (backup.dir / name).read_bytes()
    assert len(data) == 10 * KIB
    assert (backup.dir / f"{name}.sha256").read_text() == (
        f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    assert stat.S_IMODE(backup.dir.stat().st_mode) == 0o700
    for p in backup.dir.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    calls = backup.log.read_text().splitlines()
    assert calls[0].startswith("etcdctl --endpoints=https://127.0.0.1:2379 --cacert=")
    assert " snapshot save " in calls[0]
    assert calls[1].startswith("etcdctl snapshot status ")  # no etcdutl installed
    assert f"saved {backup.dir}/{name}" in proc.stderr
    assert backup.run("--exists").returncode == 0


def test_etcdutl_checks_the_snapshot_when_installed(backup: Backup) -> None:
    backup.double("etcdutl")
    proc = backup.run()
    assert proc.returncode == 0, proc.stderr
    calls = backup.log.read_text().splitlines()
    assert calls[0].startswith("etcdctl ") and " snapshot save " in calls[0]
    assert calls[1].startswith("etcdutl snapshot status ")
    assert len(calls) == 2


def test_prune_keeps_at_most_keep_newest_first(backup: Backup) -> None:
    stamps = ["20200101T000000Z", "20200102T000000Z", "20200103T000000Z",
              "20200104T000000Z", "20200105T000000Z"]
    for s in stamps:
        backup.old(s)
    other = backup.old("20190101T000000Z", host="bk-cp10")  # another host's: not ours
    proc = backup.run()
    assert proc.returncode == 0, proc.stderr
    left = backup.snapshots()
    assert len(left) == 3
    assert left[:2] == [f"{HOST}-20200104T000000Z.db", f"{HOST}-20200105T000000Z.db"]
    assert not left[2].startswith(f"{HOST}-2020")  # the new one
    for s in stamps[:3]:
        assert not (backup.dir / f"{HOST}-{s}.db.sha256").exists()
        assert f"removed {backup.dir}/{HOST}-{s}.db: more than 3 snapshots" in proc.stderr
    assert other.exists() and (backup.dir / f"{other.name}.sha256").exists()


def test_prune_by_size_oldest_first_until_it_fits(tmp_path_factory: pytest.TempPathFactory
                                                  ) -> None:
    backup = Backup(tmp_path_factory.mktemp("bk"), keep=10, maxSizeMib=1)
    for s in ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z"):
        backup.old(s, size=400 * KIB)
    proc = backup.run(size=400 * KIB)
    assert proc.returncode == 0, proc.stderr
    # 4 x 400 KiB > 1 MiB: the two oldest go, 800 KiB stay.
    left = backup.snapshots()
    assert len(left) == 2 and left[0] == f"{HOST}-20200103T000000Z.db"
    assert "more than 1 MiB of snapshots" in proc.stderr
    assert "warning" not in proc.stderr


def test_prune_never_removes_the_newest(tmp_path_factory: pytest.TempPathFactory) -> None:
    backup = Backup(tmp_path_factory.mktemp("bk"), keep=10, maxSizeMib=1)
    backup.old("20200101T000000Z", size=10 * KIB)
    proc = backup.run(size=1536 * KIB)
    assert proc.returncode == 0, proc.stderr
    [left] = backup.snapshots()
    assert not left.startswith(f"{HOST}-2020")
    assert "warning: the newest snapshot alone is larger than 1 MiB (it is kept)" in proc.stderr


@pytest.mark.parametrize("fail", ["save", "status"])
def test_a_failure_exits_non_zero_and_changes_nothing(backup: Backup, fail: str) -> None:
    for s in ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z",
              "20200104T000000Z"):
        backup.old(s)
    before = backup.names()
    proc = backup.run(fail=fail)
    assert proc.returncode != 0
    assert backup.names() == before  # no new snapshot, no partial file, nothing pruned
    word = "etcdctl snapshot save" if fail == "save" else "snapshot status refused"
    assert word in proc.stderr, proc.stderr


def test_an_empty_snapshot_fails(backup: Backup) -> None:
    proc = backup.run(size=0)
    assert proc.returncode != 0
    assert "empty snapshot" in proc.stderr
    assert backup.names() == []


def test_unknown_argument_is_a_usage_error(backup: Backup) -> None:
    proc = backup.run("--now")
    assert proc.returncode == 2 and "usage" in proc.stderr
    assert backup.log.read_text() == ""


def test_partial_files_of_killed_runs_are_removed_after_a_day(backup: Backup) -> None:
    backup.dir.mkdir(mode=0o700)
    stale = backup.dir / ".partial.abc123"
    fresh = backup.dir / ".partial.def456"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    day_ago = time.time() - 2 * 86400
    os.utime(stale, (day_ago, day_ago))
    assert backup.run().returncode == 0
    assert not stale.exists() and fresh.exists()


# --- verify: etcd-backup-age ---------------------------------------------------------------

NOW = 1_900_000_000  # the hosts' clock in these tests


class BackupHosts:
    """``SshRunner`` fake answering etcd-backup-age's command per host."""

    def __init__(self, out: dict[str, str]) -> None:
        self.out = out
        self.commands: list[tuple[str, str, bool]] = []

    def close(self) -> None:
        pass

    def run(self, host: HostPlan, command: str, timeout: float, root: bool,
            stdin: bytes | None = None) -> CommandResult:
        self.commands.append((host.name, command, root))
        assert f"{BACKUP_UNIT}.timer" in command
        text = self.out.get(host.name)
        if text is None:
            return CommandResult(1, "", "sudo: a password is required\n")
        return CommandResult(0, text, "")


def report(host: str, ages_h: tuple[float, ...] = (3.0,), timer: str = "active",
           result: str = "success", status: str = "0", directory: bool = True) -> str:
    """What a member prints: snapshots ``ages_h`` hours old."""
    lines = [f"timer={timer}", f"Result={result}", f"ExecMainStatus={status}", f"now={NOW}"]
    if not directory:
        return "\n".join([*lines, "nodir=1"]) + "\n"
    for age in ages_h:
        stamp = dt.datetime.fromtimestamp(NOW - age * 3600, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        lines.append(f"snapshot={5 * 1024 * 1024} {host}-{stamp}.db")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return build_plan(parse(spec_with({"schedule": "daily", "keep": 3})))


def age_results(plan: Plan, out: dict[str, str], tmp: Path) -> list[CheckResult]:
    runner = BackupHosts(out)
    results = verify(plan, tmp, ["etcd-backup-age"], ssh=runner, timeout=1.0)
    assert {c[0] for c in runner.commands} == {h.name for h in plan.etcd}
    assert all(root for _, _, root in runner.commands)  # the directory is root's, 0700
    return results


def by_target(results: list[CheckResult]) -> dict[str, CheckResult]:
    assert all(r.name == "etcd-backup-age" for r in results)
    return {r.target: r for r in results}


def test_fresh_backups_pass_with_stable_evidence(plan: Plan, tmp_path: Path) -> None:
    out = {h.name: report(h.name, (50.0, 27.0, 3.0)) for h in plan.etcd}
    rows = by_target(age_results(plan, out, tmp_path))
    assert set(rows) == {"bk-cp1", "bk-cp2", "bk-cp3"}
    for host, r in rows.items():
        assert r.status == "ok", r
        newest = report(host).splitlines()[-1].rsplit(" ", 1)[1]
        assert r.evidence == (f"newest snapshot {newest} (5.0 MiB), younger than 26 h; 3 "
                              "kept (keep 3); timer active")


def test_an_old_newest_snapshot_fails_naming_host_age_and_where_to_look(
        plan: Plan, tmp_path: Path) -> None:
    out = {h.name: report(h.name) for h in plan.etcd}
    out["bk-cp2"] = report("bk-cp2", (80.0, 30.5), result="exit-code", status="1")
    rows = by_target(age_results(plan, out, tmp_path))
    bad = rows["bk-cp2"]
    assert bad.status == "fail"
    assert "the newest snapshot on bk-cp2, bk-cp2-" in bad.evidence
    assert "is 30.5 h old, more than maxAgeHours 26" in bad.evidence
    assert "the last run failed (result exit-code, exit status 1)" in bad.evidence
    assert "`systemctl status etcd-backup.service`" in bad.hint
    assert "`journalctl -u etcd-backup -n 50` on bk-cp2" in bad.hint
    assert rows["bk-cp1"].status == rows["bk-cp3"].status == "ok"


def test_missing_snapshots_and_an_inactive_timer_fail(plan: Plan, tmp_path: Path) -> None:
    out = {"bk-cp1": report("bk-cp1", ()),
           "bk-cp2": report("bk-cp2", directory=False),
           "bk-cp3": report("bk-cp3", timer="inactive")}
    rows = by_target(age_results(plan, out, tmp_path))
    assert rows["bk-cp1"].status == "fail"
    assert "no snapshot of bk-cp1 in /var/lib/etcd-backup" in rows["bk-cp1"].evidence
    assert "journalctl -u etcd-backup" in rows["bk-cp1"].hint
    assert rows["bk-cp2"].status == "fail"
    assert "no backup directory /var/lib/etcd-backup on bk-cp2" in rows["bk-cp2"].evidence
    assert rows["bk-cp3"].status == "fail"
    assert "etcd-backup.timer is inactive on bk-cp3" in rows["bk-cp3"].evidence
    assert "--only etcd --full" in rows["bk-cp3"].hint


def test_a_failed_last_run_with_a_fresh_snapshot_warns(plan: Plan, tmp_path: Path) -> None:
    out = {h.name: report(h.name) for h in plan.etcd}
    out["bk-cp3"] = report("bk-cp3", (20.0,), result="exit-code", status="1")
    r = by_target(age_results(plan, out, tmp_path))["bk-cp3"]
    assert r.status == "warn" and "the last run failed" in r.evidence
    assert "journalctl -u etcd-backup" in r.hint


def test_an_unreadable_directory_fails_with_the_sudo_hint(plan: Plan, tmp_path: Path) -> None:
    out = {h.name: report(h.name) for h in plan.etcd if h.name != "bk-cp1"}
    r = by_target(age_results(plan, out, tmp_path))["bk-cp1"]
    assert r.status == "fail" and "exited 1: sudo: a password is required" in r.evidence
    assert "sudo -n true" in r.hint


def test_a_custom_schedule_uses_its_max_age(tmp_path: Path) -> None:
    plan = build_plan(parse(spec_with({"schedule": "*-*-* 00/6:00:00", "maxAgeHours": 7})))
    out = {h.name: report(h.name, (6.5,)) for h in plan.etcd}
    out["bk-cp1"] = report("bk-cp1", (7.5,))
    rows = by_target(age_results(plan, out, tmp_path))
    assert rows["bk-cp2"].status == "ok" and "younger than 7 h" in rows["bk-cp2"].evidence
    assert rows["bk-cp1"].status == "fail" and "7.5 h old" in rows["bk-cp1"].evidence


def test_without_backup_the_check_has_no_targets(tmp_path: Path) -> None:
    runner = BackupHosts({})
    assert verify(build_plan(parse(SPEC)), tmp_path, ["etcd-backup-age"], ssh=runner,
                  timeout=1.0) == []
    assert runner.commands == []
    assert "etcd-backup-age" in check_names()


def test_the_report_ignores_other_hosts_and_junk() -> None:
    text = ("timer=active\nResult=success\nnow=1000\n"
            "snapshot=10 bk-cp1-20200102T000000Z.db\n"
            "snapshot=10 bk-cp1-20200101T000000Z.db\n"
            "snapshot=10 bk-cp10-20300101T000000Z.db\n"
            "snapshot=abc bk-cp1-20300102T000000Z.db\n"
            "snapshot=10 bk-cp1-20301399T000000Z.db\n"
            "snapshot=10 bk-cp1-latest.db\nnoise\n")
    state = parse_report("bk-cp1", text)
    assert [s.name for s in state.snapshots] == ["bk-cp1-20200101T000000Z.db",
                                                 "bk-cp1-20200102T000000Z.db"]
    assert state.snapshots[-1].taken == dt.datetime(2020, 1, 2, tzinfo=dt.UTC).timestamp()
    assert state.now == 1000 and state.timer == "active" and state.directory_exists


def test_the_probe_command_runs_under_sh(backup: Backup) -> None:
    """The check's command, run here against the script's own output and a test double of
    systemctl, reports what the check parses."""
    assert backup.run().returncode == 0
    backup.old("20200101T000000Z")
    systemctl = backup.bin / "systemctl"
    systemctl.write_text('#!/bin/sh\ncase "$1" in\nis-active) echo active ;;\n'
                         'show) printf "Result=success\\nExecMainStatus=0\\n" ;;\nesac\n')
    systemctl.chmod(0o755)
    spec = _backup(directory=str(backup.dir))
    proc = subprocess.run([DASH, "-c", probe_command(spec, HOST)], capture_output=True,
                          text=True, env={"PATH": f"{backup.bin}:/usr/bin:/bin"},
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    state = parse_report(HOST, proc.stdout)
    assert state.timer == "active" and state.result == "success" and state.now
    assert [s.name for s in state.snapshots] == backup.snapshots()
    assert state.snapshots[-1].size == 10 * KIB
    missing = subprocess.run([DASH, "-c", probe_command(
        _backup(directory=str(backup.dir / "none")), HOST)], capture_output=True, text=True,
        env={"PATH": f"{backup.bin}:/usr/bin:/bin"}, timeout=30, check=False)
    assert not parse_report(HOST, missing.stdout).directory_exists
