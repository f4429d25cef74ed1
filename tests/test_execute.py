"""The executor against real ansible-runner runs on this machine (``ansible_connection=local``).

Scope: ``run_playbook`` end to end without root or SSH: per-host counts, changed/unchanged
detection, the failure summary (host, task, message), a failure stopping the phase on every
host, extravars and settings reaching Ansible, and the event log (``events.jsonl``) keeping
task names, hosts, statuses and durations but never a ``no_log`` payload.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from provisioner.execute import (
    EVENTS_FILE,
    NullProgress,
    PhaseResult,
    run_playbook,
    slowest_tasks,
)
from provisioner.execute.events import scrub
from provisioner.execute.progress import LineProgress

SECRET = "fake-secret-9f3c2a"

PLAYBOOK = f"""
- name: Test phase
  hosts: all
  gather_facts: false
  tasks:
    - name: Test | Run a command that changes nothing
      ansible.builtin.command: echo hello
      changed_when: false
    - name: Test | Write the run id
      ansible.builtin.copy:
        dest: "{{{{ out_dir }}}}/{{{{ inventory_hostname }}}}.txt"
        content: "{{{{ provisioner_run_id }}}}\\n"
        mode: "0644"
    - name: Test | Keep a directory
      ansible.builtin.file:
        path: "{{{{ out_dir }}}}"
        state: directory
    - name: Test | Handle a secret
      ansible.builtin.command: echo {SECRET}
      no_log: true
    - name: Test | Fail on one host
      ansible.builtin.shell: echo "disk on fire" >&2; exit 3
      when: inventory_hostname == fail_host
    - name: Test | After the failure
      ansible.builtin.command: "true"
      changed_when: false
"""


def _data_dir(tmp: Path, hosts: list[str]) -> Path:
    pdd = tmp / "runner"
    (pdd / "inventory").mkdir(parents=True)
    (pdd / "env").mkdir()
    (pdd / "project").mkdir()
    (tmp / "out").mkdir()
    inventory = {"all": {"hosts": {h: {"ansible_connection": "local",
                                       "ansible_python_interpreter": sys.executable}
                                   for h in hosts}}}
    (pdd / "inventory" / "hosts.json").write_text(json.dumps(inventory))
    (pdd / "env" / "envvars").write_text(yaml.safe_dump({
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=120s",
        "ANSIBLE_FORKS": "1",
        "ANSIBLE_GATHERING": "explicit",
    }))
    (pdd / "env" / "extravars").write_text(yaml.safe_dump({"fail_host": "none"}))
    (pdd / "project" / "test.yml").write_text(PLAYBOOK)
    return pdd


def _run(tmp: Path, hosts: list[str], fail_host: str, run: str) -> tuple[PhaseResult, Path]:
    pdd = tmp / "runner"
    if not pdd.exists():
        _data_dir(tmp, hosts)
    run_dir = tmp / "runs" / run
    extravars = {"out_dir": str(tmp / "out"), "provisioner_run_id": run}
    if fail_host:
        extravars["fail_host"] = fail_host
    result = run_playbook(pdd, "test.yml", hosts, extravars, run_dir, "test", NullProgress())
    return result, run_dir


def _events(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / EVENTS_FILE).read_text().splitlines()]


def test_success_counts_changes_and_settings(tmp_path: Path) -> None:
    result, _ = _run(tmp_path, ["alpha", "beta"], "", "run-1")
    assert result.succeeded, result.to_json()
    assert result.status == "successful" and result.rc == 0
    for name in ("alpha", "beta"):
        h = result.hosts[name]
        # 6 tasks: the failing one is skipped (no fail host); copy and the secret change.
        assert (h.ok, h.changed, h.failed, h.unreachable, h.skipped) == (5, 2, 0, 0, 1)
        assert (tmp_path / "out" / f"{name}.txt").read_text() == "run-1\n"
    assert result.changed == 4
    # The rendered speed settings are what Ansible ran with; forks raised to the host count.
    assert result.settings["ANSIBLE_PIPELINING"] == "True"
    assert result.settings["ANSIBLE_GATHERING"] == "explicit"
    assert "ControlPersist" in result.settings["ANSIBLE_SSH_ARGS"]
    assert result.settings["ANSIBLE_FORKS"] == "2"
    assert result.settings["ANSIBLE_ANY_ERRORS_FATAL"] == "True"
    assert len(result.settings["ANSIBLE_SSH_CONTROL_PATH_DIR"]) < 40
    assert result.slowest and all(t.seconds >= 0 for t in result.slowest)

    # Same files again: only the no_log command reports a change.
    again, _ = _run(tmp_path, ["alpha", "beta"], "", "run-1")
    assert [again.hosts[h].changed for h in ("alpha", "beta")] == [1, 1]


def test_failure_summary_and_stop(tmp_path: Path) -> None:
    result, run_dir = _run(tmp_path, ["alpha", "beta"], "beta", "run-2")
    assert not result.succeeded
    assert result.status == "failed"
    assert result.failures() == [("beta", "Test | Fail on one host",
                                  "non-zero return code; disk on fire")]
    assert result.hosts["beta"].failed == 1
    assert result.error is None  # the host failure explains the run
    # any_errors_fatal: the healthy host does not run past the failed task either.
    events = _events(run_dir)
    after = [e for e in events if e.get("task") == "Test | After the failure"
             and e.get("status")]
    assert after == []


def test_event_log_has_tasks_but_no_secrets(tmp_path: Path) -> None:
    _, run_dir = _run(tmp_path, ["alpha"], "alpha", "run-3")
    text = (run_dir / EVENTS_FILE).read_text()
    assert SECRET not in text
    events = _events(run_dir)
    results = [e for e in events if "status" in e]
    statuses = {(e["task"], e["status"]) for e in results}
    assert ("Test | Run a command that changes nothing", "ok") in statuses
    assert ("Test | Write the run id", "changed") in statuses
    assert ("Test | Fail on one host", "failed") in statuses
    secret = [e for e in results if e["task"] == "Test | Handle a secret"]
    assert secret and secret[0]["no_log"] is True and "res" not in secret[0]
    for e in results:
        assert e["host"] == "alpha" and e["phase"] == "test" and e["run_id"] == "run-3"
        assert isinstance(e["duration"], float)
    assert any(e["event"] == "playbook_on_stats" for e in events)
    # Module arguments never reach the log (copy's content is where secrets travel).
    assert all("invocation" not in json.dumps(e.get("res", {})) for e in results)
    # ansible-runner keeps no event payloads and no stdout of its own.
    runner_dir = run_dir / "ansible" / "test"
    assert not (runner_dir / "job_events").exists() or not any(
        (runner_dir / "job_events").iterdir())
    assert not (runner_dir / "stdout").exists()
    assert "env" not in json.loads((runner_dir / "command").read_text())
    assert SECRET not in "".join(p.read_text(errors="replace")
                                 for p in run_dir.rglob("*") if p.is_file())
    assert slowest_tasks(run_dir / EVENTS_FILE, 3)[0].host == "alpha"


def test_no_log_failure_message_is_hidden(tmp_path: Path) -> None:
    pdd = _data_dir(tmp_path, ["alpha"])
    (pdd / "project" / "secret.yml").write_text(f"""
- hosts: all
  gather_facts: false
  tasks:
    - name: Test | Fail with a secret
      ansible.builtin.shell: echo {SECRET} >&2; exit 1
      no_log: true
""")
    run_dir = tmp_path / "runs" / "r"
    result = run_playbook(pdd, "secret.yml", ["alpha"], {}, run_dir, "secret", NullProgress())
    [(host, task, message)] = result.failures()
    assert (host, task) == ("alpha", "Test | Fail with a secret")
    assert SECRET not in message and "no_log" in message
    assert SECRET not in (run_dir / EVENTS_FILE).read_text()


def test_syntax_error_is_reported(tmp_path: Path) -> None:
    pdd = _data_dir(tmp_path, ["alpha"])
    (pdd / "project" / "broken.yml").write_text("- hosts: all\n  tasks:\n    - nosuchmodule: {}\n")
    result = run_playbook(pdd, "broken.yml", ["alpha"], {}, tmp_path / "r", "broken",
                          NullProgress())
    assert not result.succeeded
    assert result.error and "nosuchmodule" in result.error


def test_line_progress_prints_changes_and_failures(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _data_dir(tmp_path, ["alpha"])
    run_playbook(tmp_path / "runner", "test.yml", ["alpha"],
                 {"out_dir": str(tmp_path / "out"), "fail_host": "alpha",
                  "provisioner_run_id": "x"},
                 tmp_path / "r", "test", LineProgress(sys.stdout))
    out = capsys.readouterr().out
    assert "test alpha: changed Test | Write the run id" in out
    assert "test alpha: failed Test | Fail on one host" in out
    assert "phase test: FAILED on 1 hosts" in out
    assert "hello" not in out and SECRET not in out


def test_scrub_censors_nested_no_log_items() -> None:
    res = {"changed": True, "invocation": {"module_args": {"content": SECRET}},
           "results": [{"_ansible_no_log": True, "stdout": SECRET}, {"stdout": "x" * 5000}]}
    clean = json.dumps(scrub(res))
    assert SECRET not in clean and "censored" in clean and len(clean) < 3000


def test_why_a_phase_failed_in_one_line() -> None:
    from provisioner.execute.model import Failure, HostResult, PhaseResult

    hosts = {"lab-w2": HostResult("lab-w2", failed=1, failures=(Failure("Drain", "timed out"),)),
             "lab-w1": HostResult("lab-w1", ok=3)}
    assert PhaseResult("node", "node.yml", "failed", 2, 1.0, hosts).why() == \
        "lab-w2: Drain: timed out"
    assert PhaseResult("node", "node.yml", "failed", 4, 1.0, {}, error="syntax").why() == "syntax"
    assert PhaseResult("node", "node.yml", "failed", 2, 1.0, {}).why() == "node.yml failed"
