"""Static checks of playbooks/: syntax, kubespray-style conventions, secret hygiene, filters.

Convergence itself is tested end to end in the lab (tests/lab/); these tests need only
ansible-core and run in a second or two.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOKS = ROOT / "playbooks"
ROLES = PLAYBOOKS / "roles"
PHASE_PLAYBOOKS = [
    "preflight", "os", "runtime", "etcd", "lb", "control-plane", "node", "addons", "reset",
    "node-remove"
]
TASK_NAME = re.compile(r"^[A-Za-z0-9-]+ \| [A-Z]")
BLOCK_KEYS = ("block", "rescue", "always")
MINIMAL_INVENTORY = {
    "all": {
        "hosts": {"n1": {"ansible_connection": "local"}},
        "children": {
            group: {"hosts": {"n1": None}}
            for group in ("kube_control_plane", "etcd", "kube_node", "lb")
        },
    }
}


def _ansible_playbook() -> str | None:
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.exists() else shutil.which("ansible-playbook")


def _task_files() -> list[Path]:
    return sorted(ROLES.glob("*/tasks/*.yml"))


def _walk_tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every task, including those nested in blocks (and the blocks themselves)."""
    found: list[dict[str, Any]] = []
    for task in tasks or []:
        found.append(task)
        for key in BLOCK_KEYS:
            found.extend(_walk_tasks(task.get(key, [])))
    return found


def _all_tasks() -> list[tuple[str, dict[str, Any]]]:
    tasks: list[tuple[str, dict[str, Any]]] = []
    for path in _task_files():
        tasks += [
            (str(path.relative_to(PLAYBOOKS)), t)
            for t in _walk_tasks(yaml.safe_load(path.read_text()))
        ]
    for name in PHASE_PLAYBOOKS:
        path = PLAYBOOKS / f"{name}.yml"
        for play in yaml.safe_load(path.read_text()):
            for key in ("pre_tasks", "tasks", "post_tasks"):
                tasks += [(path.name, t) for t in _walk_tasks(play.get(key, []))]
    return tasks


def _filters() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "provisioner_filters", PLAYBOOKS / "filter_plugins" / "provisioner.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", PHASE_PLAYBOOKS)
def test_playbook_syntax(name: str, tmp_path: Path) -> None:
    binary = _ansible_playbook()
    if binary is None:
        pytest.skip("ansible-playbook is not installed")
    inventory = tmp_path / "hosts.json"
    inventory.write_text(json.dumps(MINIMAL_INVENTORY))
    result = subprocess.run(
        [binary, "--syntax-check", "-i", str(inventory), str(PLAYBOOKS / f"{name}.yml")],
        capture_output=True,
        text=True,
        check=False,
        cwd=PLAYBOOKS,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_task_and_play_is_named_component_verb_object() -> None:
    bad = [
        (where, t.get("name"))
        for where, t in _all_tasks()
        if not TASK_NAME.match(str(t.get("name", "")))
    ]
    for name in PHASE_PLAYBOOKS:
        bad += [
            (f"{name}.yml", p.get("name"))
            for p in yaml.safe_load((PLAYBOOKS / f"{name}.yml").read_text())
            if not TASK_NAME.match(str(p.get("name", "")))
        ]
    assert not bad


def test_every_role_has_main_reset_and_commented_prefixed_defaults() -> None:
    roles = sorted(p for p in ROLES.iterdir() if p.is_dir())
    assert roles
    for role in roles:
        assert (role / "tasks" / "main.yml").is_file(), role.name
        assert (role / "tasks" / "reset.yml").is_file(), role.name
        defaults = role / "defaults" / "main.yml"
        assert defaults.is_file(), role.name
        lines = defaults.read_text().splitlines()
        prefix = role.name.replace("-", "_") + "_"
        for index, line in enumerate(lines):
            key = re.match(r"^([A-Za-z_][A-Za-z0-9_]*):", line)
            if key:
                assert key.group(1).startswith(prefix), (
                    f"{role.name}: {key.group(1)} lacks {prefix}"
                )
                # a comment right above, or above a run of keys it explains together
                above = index - 1
                while above > 0 and re.match(r"^[A-Za-z_]", lines[above]):
                    above -= 1
                assert lines[above].startswith("#"), f"{role.name}: {key.group(1)} has no comment"


def test_secret_copies_are_no_log_and_without_diff() -> None:
    for where, task in _all_tasks():
        text = json.dumps(task)
        if "selectattr('secret')" in text and "set_fact" not in " ".join(task):
            assert task.get("no_log") is True, f"{where}: {task.get('name')}"
            assert task.get("diff") is False, f"{where}: {task.get('name')}"


def test_commands_declare_whether_they_change_anything() -> None:
    modules = ("ansible.builtin.command", "ansible.builtin.shell", "command", "shell")
    missing = [
        (where, t["name"])
        for where, t in _all_tasks()
        if any(m in t for m in modules) and "changed_when" not in t
    ]
    assert not missing


def test_only_builtin_modules_are_used() -> None:
    keywords = {
        "name",
        "vars",
        "when",
        "loop",
        "loop_control",
        "register",
        "changed_when",
        "failed_when",
        "no_log",
        "diff",
        "until",
        "retries",
        "delay",
        "environment",
        "delegate_to",
        "run_once",
        "block",
        "check_mode",
        "rescue",
        "always",
        "tags",
        "become",
        "ignore_errors",
        "notify",
        "throttle",
    }
    # Besides Ansible's builtins, only the project's own action plugins (playbooks/).
    own = {p.stem for p in (PLAYBOOKS / "action_plugins").glob("*.py")}
    assert own == {"provisioner_pack_install"}
    for where, task in _all_tasks():
        modules = [k for k in task if k not in keywords]
        assert all(m.startswith("ansible.builtin.") or m in own for m in modules), \
            f"{where}: {modules}"


def test_owned_by_selects_entries_sharing_a_component() -> None:
    files = [
        {"path": "/a", "components": ["etcd", "kube-apiserver"]},
        {"path": "/b", "components": ["os"]},
    ]
    assert [f["path"] for f in _filters().provisioner_owned_by(files, ["kube-apiserver"])] == ["/a"]
    assert _filters().provisioner_owned_by(files, []) == []


def test_stale_compares_checksum_mode_and_owner(tmp_path: Path) -> None:
    filters = _filters()
    (tmp_path / "f").write_text("x\n")
    sha = "6fcf9dfbd479ed82697fee719b9f8c610a11ff2a"  # sha1 of "x\n"
    entries = [{"path": "/etc/f", "src": "f", "mode": "0600"}]
    fresh = [f"{sha} 600 root root /etc/f"]
    assert filters.provisioner_stale(entries, fresh, "path", "src", str(tmp_path)) == []
    for probe in (
        [],
        [f"{sha} 644 root root /etc/f"],
        [f"{'0' * 40} 600 root root /etc/f"],
        [f"{sha} 600 nobody root /etc/f"],
    ):
        assert filters.provisioner_stale(entries, probe, "path", "src", str(tmp_path)) == entries


def test_probe_script_reports_files_as_stale_parses(tmp_path: Path) -> None:
    filters = _filters()
    target = tmp_path / "it's here"
    target.write_text("x\n")
    script = filters.provisioner_probe_script([str(target), str(tmp_path / "absent")])
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.startswith("6fcf9dfbd479ed82697fee719b9f8c610a11ff2a 644 ")
    assert out.rstrip("\n").endswith(str(target))
    assert len(out.splitlines()) == 1


def test_artifact_installs_resolve_sources() -> None:
    artifacts = {
        "etcd": {
            "path": "/c/etcd.tgz",
            "sha256": "ab",
            "kind": "tar",
            "install": [{"member": "etcd-v3/etcd", "dest": "/usr/local/bin/etcd", "mode": "0755"}],
        },
        "runc": {
            "path": "/c/runc",
            "sha256": "cd",
            "kind": "binary",
            "install": [{"member": "runc", "dest": "/usr/local/sbin/runc"}],
        },
        "haproxy": {"path": "/c/haproxy.tar", "sha256": "ef", "kind": "deb", "install": []},
    }
    installs = _filters().provisioner_artifact_installs(
        artifacts, ["etcd", "runc", "haproxy", "absent"], "/cache"
    )
    assert installs == [
        {
            "name": "etcd",
            "src": "/cache/ab/etcd-v3/etcd",
            "dest": "/usr/local/bin/etcd",
            "mode": "0755",
        },
        {"name": "runc", "src": "/c/runc", "dest": "/usr/local/sbin/runc", "mode": "0755"},
    ]


def test_unpacked_deb_bundles_travel_as_installs(tmp_path: Path) -> None:
    """With the host's bundle directory given, each file of an unpacked .deb bundle (and its
    checksum list) is an install under <deb_cache>/<name>-<sha256>/; before unpacking, none."""
    artifacts = {"haproxy": {"path": "/c/haproxy.tar", "sha256": "ef", "kind": "deb",
                             "install": []}}
    cache = tmp_path / "cache"
    (cache / "ef").mkdir(parents=True)
    (cache / "ef" / ".sha256sums").write_text(f"{'0' * 64}  ./haproxy_2.6.deb\n")
    installs = _filters().provisioner_artifact_installs(
        artifacts, ["haproxy"], str(cache), "/var/cache/provisioner/debs")
    root = "/var/cache/provisioner/debs/haproxy-ef"
    assert [(i["src"], i["dest"], i["mode"]) for i in installs] == [
        (f"{cache}/ef/haproxy_2.6.deb", f"{root}/haproxy_2.6.deb", "0644"),
        (f"{cache}/ef/.sha256sums", f"{root}/.sha256sums", "0644")]
    assert _filters().provisioner_artifact_installs(
        artifacts, ["haproxy"], str(tmp_path / "none"), "/var/cache/provisioner/debs") == []


def test_foreign_ports_ignore_our_own_services() -> None:
    wanted = {2379: "etcd", 6443: "kube-apiserver", "8443": "haproxy"}
    listening = "2379/etcd 8443/python3 22/sshd"
    assert _filters().provisioner_foreign_ports(listening, wanted) == ["8443 (python3)"]


def test_rollouts_list_workloads_in_file_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(
        "kind: ServiceAccount\nmetadata: {name: x}\n---\n"
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: ds, namespace: kube-system}\n"
    )
    (tmp_path / "a.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
        "spec: {selector: {matchLabels: {tier: web, app: web}}}\n---\n"
    )
    entries = [
        {"path": "/etc/kubernetes/addons/20-b.yaml", "src": "b.yaml"},
        {"path": "/etc/kubernetes/addons/10-a.yaml", "src": "a.yaml"},
    ]
    assert _filters().provisioner_rollouts(entries, str(tmp_path)) == [
        {"file": "10-a.yaml", "addon": "a", "kind": "deployment", "namespace": "default",
         "name": "web", "selector": "app=web,tier=web"},
        {"file": "20-b.yaml", "addon": "b", "kind": "daemonset", "namespace": "kube-system",
         "name": "ds", "selector": ""},
    ]


def test_roles_restarting_services_clear_their_restart_markers() -> None:
    # A role that restarts a service picked up through provisioner_files (a restart marker
    # left by an earlier phase) must clear the marker, or every later run restarts again.
    for role in ("kube_control_plane", "kubelet", "kube_proxy", "cni_bridge"):
        text = "".join(p.read_text() for p in (ROLES / role / "tasks").glob("*.yml"))
        assert "tasks_from: restarted" in text, role
        assert "provisioner_files_services" in text, role


def _haproxy_service_actions(facts: dict[str, Any]) -> list[str]:
    """The systemd states the haproxy role would apply, in order, given the facts
    provisioner_files and provisioner_artifacts set (its ``when`` conditions evaluated with
    Jinja as Ansible does, a list meaning all of them)."""
    import jinja2

    env = jinja2.Environment()
    env.filters["bool"] = lambda v: v if isinstance(v, bool) else str(v).lower() in (
        "true", "yes", "1")
    actions = []
    for task in yaml.safe_load((ROLES / "haproxy" / "tasks" / "main.yml").read_text()):
        unit = task.get("ansible.builtin.systemd") or {}
        if unit.get("name") != "haproxy":
            continue
        when = task.get("when", [])
        conditions = [when] if isinstance(when, str) else when
        if all(env.compile_expression(str(c))(**facts) for c in conditions):
            actions.append(unit["state"])
    return actions


@pytest.mark.parametrize(("files", "packages", "units", "expected"), [
    # A renewed health-check pair or a new haproxy.cfg: a graceful reload, no dropped
    # connection (provisioner certs renew rolls lb-healthcheck out this way).
    (["haproxy"], [], False, ["reloaded", "started"]),
    # A new package (binary and Debian's unit) or a changed unit file: a restart.
    (["haproxy"], ["haproxy"], False, ["restarted", "started"]),
    ([], ["haproxy"], False, ["restarted", "started"]),
    (["haproxy"], [], True, ["restarted", "started"]),
    # Nothing changed: only the check that it runs.
    ([], [], False, ["started"]),
])
def test_haproxy_reloads_when_only_its_files_changed(
        files: list[str], packages: list[str], units: bool, expected: list[str]) -> None:
    facts = {"provisioner_files_restarts": files, "provisioner_artifacts_changed": packages,
             "provisioner_files_daemon_reload": units}
    assert _haproxy_service_actions(facts) == expected


def test_haproxy_checks_its_configuration_before_any_reload_or_restart() -> None:
    tasks = yaml.safe_load((ROLES / "haproxy" / "tasks" / "main.yml").read_text())
    names = [t["name"] for t in tasks]
    check = next(i for i, t in enumerate(tasks)
                 if "haproxy -c" in str(t.get("ansible.builtin.command", "")))
    assert "when" not in tasks[check]
    for state in ("restarted", "reloaded"):
        at = next(i for i, t in enumerate(tasks)
                  if (t.get("ansible.builtin.systemd") or {}).get("state") == state)
        assert check < at, names


def test_roles_reach_services_at_the_cluster_address() -> None:
    """``ansible_host`` is the SSH endpoint (Vagrant: the management address); services and
    certificates use the cluster address, ``provisioner_address``."""
    roles = Path(__file__).resolve().parents[1] / "playbooks" / "roles"
    users = [str(p.relative_to(roles)) for p in roles.rglob("*.yml")
             if "ansible_host" in p.read_text()]
    assert not users


def test_etcd_staying_excludes_every_leaving_peer_url_even_of_unnamed_members() -> None:
    members = [
        {"ID": 1, "name": "cp1", "peerURLs": ["https://10.0.0.1:2380"]},
        {"ID": 2, "name": "cp2", "peerURLs": ["https://10.0.0.2:2380"]},
        {"ID": 3, "peerURLs": ["https://10.0.0.3:2380"]},  # added, never started: no name
    ]
    staying = _filters().provisioner_etcd_staying
    assert [m["ID"] for m in staying(members, ["https://10.0.0.2:2380"])] == [1, 3]
    assert [m["ID"] for m in staying(members, ["https://10.0.0.3:2380",
                                               "https://10.0.0.2:2380"])] == [1]
    assert staying(members, []) == members
