"""The one executor: run a phase's playbook with ansible-runner and report per-host results.

Scope: ``run_playbook`` (typed, explicit arguments) over ``ansible_runner.run``. It links the
project's ``playbooks/`` (found by ``provisioner.resources``) in as the runner's ``project``,
passes extra variables through a 0600 file (not the command line, where ``ps`` shows them),
feeds every runner event to an ``EventRecorder`` (progress view + ``events.jsonl``; runner
stdout is never read nor kept), and returns a ``PhaseResult``. Speed settings come from the
rendered ``env/envvars``; this module adds what only the executor can know (a short
ControlPath directory, forks >= hosts) and makes a task failure stop the phase on every host
(``any_errors_fatal``), so a failed phase leaves hosts at a task boundary and the next run
converges them from there.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from provisioner.execute.events import EVENTS_FILE, EventRecorder
from provisioner.execute.model import PhaseResult
from provisioner.execute.progress import ProgressSink
from provisioner.resources import playbooks_dir

PLAYBOOKS = playbooks_dir()  # package data in a wheel, the checkout's playbooks/ otherwise
# ssh's ControlPath is a unix socket: its path must fit in ~104 bytes. Ansible names the
# socket by a 40-character hash, so the directory itself must stay short; a state directory
# under a deep home or a pytest tmp path would not.
CONTROL_PATH_DIR = Path("/tmp") / f"provisioner-cp-{os.getuid()}"
# The settings a run reports back (all are non-secret); the speed ones are checked.
REPORTED_SETTINGS = (
    "ANSIBLE_PIPELINING", "ANSIBLE_SSH_ARGS", "ANSIBLE_GATHERING", "ANSIBLE_FORKS",
    "ANSIBLE_SSH_CONTROL_PATH_DIR", "ANSIBLE_ANY_ERRORS_FATAL", "ANSIBLE_TIMEOUT",
)  # fmt: skip


class ExecuteError(RuntimeError):
    """The executor cannot start a run (missing playbook, unusable directories)."""


def link_project(private_data_dir: Path, playbooks: Path = PLAYBOOKS) -> Path:
    """Point ``<private_data_dir>/project`` at ``playbooks`` (a real ``project`` directory
    is left alone: tests and hand-made data dirs bring their own playbooks)."""
    project = private_data_dir / "project"
    if project.is_dir() and not project.is_symlink():
        return project
    if project.is_symlink() and Path(os.readlink(project)) == playbooks:
        return project
    tmp = private_data_dir / ".project.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(playbooks, target_is_directory=True)
    tmp.replace(project)
    return project


def control_path_dir() -> Path:
    """The short, private directory for ssh control sockets (shared by runs so a second run
    reuses the connections the first one left open)."""
    CONTROL_PATH_DIR.mkdir(mode=0o700, exist_ok=True)
    st = CONTROL_PATH_DIR.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ExecuteError(f"{CONTROL_PATH_DIR} must be a directory owned by this user with "
                           "mode 0700 (it holds ssh control sockets); remove it and retry")
    return CONTROL_PATH_DIR


def rendered_envvars(private_data_dir: Path) -> dict[str, str]:
    """The Ansible settings rendered into ``env/envvars`` (empty if there are none)."""
    path = private_data_dir / "env" / "envvars"
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return {str(k): str(v) for k, v in data.items()}


def speed_problems(settings: dict[str, str], hosts: int) -> list[str]:
    """Which of the speed settings a run did not get (empty when all are applied)."""
    problems = []
    if settings.get("ANSIBLE_PIPELINING", "").lower() not in ("true", "1", "yes"):
        problems.append("pipelining is off (ANSIBLE_PIPELINING)")
    if "ControlPersist" not in settings.get("ANSIBLE_SSH_ARGS", "ControlPersist"):
        problems.append("ssh connections are not kept open (ControlPersist in ANSIBLE_SSH_ARGS)")
    if settings.get("ANSIBLE_GATHERING") != "explicit":
        problems.append("facts are gathered on every play (ANSIBLE_GATHERING is not explicit)")
    if int(settings.get("ANSIBLE_FORKS", "5")) < hosts:
        problems.append(f"forks {settings.get('ANSIBLE_FORKS')} < {hosts} hosts")
    return problems


def _tidy_runner_artifacts(artifacts: Path) -> None:
    """Keep ansible-runner's artifacts to what holds no secrets: ``command`` without the
    process environment it records (the caller's may hold tokens), ``rc`` and ``status``.

    Its ``stdout``/``stderr`` copies of the display go: the event log replaces them, and
    ``env/settings`` (read after our arguments) decides whether runner writes them at all.
    """
    for name in ("stdout", "stderr"):
        (artifacts / name).unlink(missing_ok=True)
    command_file = artifacts / "command"
    try:
        data = json.loads(command_file.read_text())
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and "env" in data:
        data.pop("env")
        command_file.write_text(json.dumps(data))


def run_playbook(
    private_data_dir: Path,
    playbook: str,
    limit: list[str],
    extravars: dict[str, Any],
    run_dir: Path,
    phase: str,
    progress: ProgressSink,
    cancel: Callable[[], bool] | None = None,
) -> PhaseResult:
    """Run ``playbook`` (relative to the project) on the ``limit`` hosts for ``phase``.

    ``extravars`` add to the rendered ``env/extravars`` (and win over them); every runner
    event goes to ``progress`` and to ``<run_dir>/events.jsonl``; ansible-runner's own
    artifacts (command, rc, status; no event payloads, no stdout) go to
    ``<run_dir>/ansible/<phase>/``. ``cancel`` returning True stops the playbook (phases
    run in threads, where ansible-runner cannot install its own Ctrl-C handler). Returns
    per-host results; never raises for a failed play, only when the run cannot start
    (``ExecuteError``).
    """
    import ansible_runner  # slow to import; only runs need it

    if not limit:
        raise ExecuteError(f"phase {phase}: no hosts to run {playbook} on")
    project = link_project(private_data_dir)
    if not (project / playbook).is_file():
        raise ExecuteError(f"phase {phase}: playbook {project.resolve() / playbook} not found")
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    safe_phase = phase.replace("/", "_")
    vars_file = run_dir / f"extravars-{safe_phase}.json"
    fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(extravars, fh, sort_keys=True, default=str)

    rendered = rendered_envvars(private_data_dir)
    forks = max(int(rendered.get("ANSIBLE_FORKS", "5")), len(limit))
    # env/envvars wins over these in ansible-runner, so they only fill what it leaves out.
    envvars = {
        # The venv that runs us may not be on PATH; its ansible-playbook is the one we pin.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_path_dir()),
        # Let the running task finish on every host, then stop: a half-converged phase
        # must not feed the next task (or phase) on the remaining hosts.
        "ANSIBLE_ANY_ERRORS_FATAL": "True",
        "ANSIBLE_NOCOLOR": "True",
    }

    progress.phase_started(phase, limit)
    started = time.monotonic()
    events_fd = os.open(run_dir / EVENTS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(events_fd, "a") as log:
        recorder = EventRecorder(phase, run_dir.name, log, progress)
        runner = ansible_runner.run(
            private_data_dir=str(private_data_dir),
            playbook=playbook,
            limit=",".join(limit),
            # A file name (not a dict) keeps the values off the command line, and runner
            # puts it after env/extravars, so on a shared name ours win.
            extravars=str(vars_file),
            envvars=envvars,
            forks=forks,
            artifact_dir=str(run_dir / "ansible"),
            ident=safe_phase,
            event_handler=recorder,
            cancel_callback=cancel,
            quiet=True,
            suppress_output_file=True,
        )
    seconds = time.monotonic() - started

    env: dict[str, str] = dict(getattr(runner.config, "env", {}) or {})
    settings = {k: env[k] for k in REPORTED_SETTINGS if k in env}
    settings["ANSIBLE_FORKS"] = str(forks)  # --forks on the command line wins over env
    hosts = recorder.results(limit)
    status = str(runner.status)
    rc = int(runner.rc) if runner.rc is not None else -1
    error = None
    if (status != "successful" or rc != 0) and not any(h.failures for h in hosts.values()):
        error = recorder.fatal_error() or f"ansible-playbook ended {status} (rc {rc})"
    _tidy_runner_artifacts(run_dir / "ansible" / safe_phase)
    for problem in speed_problems(settings, len(limit)):
        progress.note(f"warning: phase {phase}: {problem}")
    result = PhaseResult(
        phase=phase, playbook=playbook, status=status, rc=rc, seconds=seconds, hosts=hosts,
        slowest=recorder.slowest(), error=error, settings=settings,
    )
    progress.phase_finished(result)
    return result
