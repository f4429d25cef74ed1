"""The provisioner_pack_install action (playbooks/action_plugins) through a real Ansible run.

Scope: a local-connection host (no root, no SSH): the action packs controller files into one
tar, sends it and extracts it at the items' absolute destinations (here under tmp_path), with
their modes; an empty list changes nothing; a relative destination is refused; the result
and the event log name paths only, never the files' content.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from provisioner.execute import NullProgress, run_playbook
from provisioner.resources import playbooks_dir

SECRET = "pack-secret-5be1d0"

PLAYBOOK = """
- name: Test pack
  hosts: all
  gather_facts: false
  tasks:
    - name: Test | Install the pack
      provisioner_pack_install:
        items: "{{ pack_items }}"
        pack: "{{ pack_file }}"
      register: installed
      when: pack_items | length > 0 or force | default(false)
"""


def _pdd(tmp: Path) -> Path:
    pdd = tmp / "runner"
    for d in ("inventory", "env", "project"):
        (pdd / d).mkdir(parents=True)
    (pdd / "project" / "action_plugins").symlink_to(playbooks_dir() / "action_plugins")
    (pdd / "project" / "test.yml").write_text(PLAYBOOK)
    (pdd / "inventory" / "hosts.json").write_text(json.dumps({"all": {"hosts": {"alpha": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    (pdd / "env" / "envvars").write_text(yaml.safe_dump({"ANSIBLE_GATHERING": "explicit"}))
    (pdd / "env" / "extravars").write_text("{}\n")
    return pdd


def test_pack_installs_items_with_their_modes_and_logs_no_content(tmp_path: Path) -> None:
    pdd = _pdd(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "key").write_text(SECRET + "\n")
    (src / "tool").write_text("#!/bin/sh\necho tool\n")
    root = tmp_path / "host"
    items = [{"src": str(src / "key"), "dest": str(root / "etc/pki/key.pem"), "mode": "0600"},
             {"src": str(src / "tool"), "dest": str(root / "usr/bin/tool"), "mode": "0755"}]
    pack = tmp_path / "state" / "packs" / "alpha.tar"
    run_dir = tmp_path / "runs" / "one"
    result = run_playbook(pdd, "test.yml", ["alpha"], {"pack_items": items,
                                                        "pack_file": str(pack)},
                          run_dir, "test", NullProgress())
    assert result.succeeded, result
    assert result.hosts["alpha"].changed == 1
    assert (root / "etc/pki/key.pem").read_text() == SECRET + "\n"
    assert (root / "etc/pki/key.pem").stat().st_mode & 0o777 == 0o600
    assert (root / "usr/bin/tool").stat().st_mode & 0o777 == 0o755
    assert not pack.exists()  # removed once sent: it may hold key material
    assert SECRET not in (run_dir / "events.jsonl").read_text()

    again = run_playbook(pdd, "test.yml", ["alpha"], {"pack_items": [],
                                                       "pack_file": str(pack)},
                         tmp_path / "runs" / "two", "test", NullProgress())
    assert again.succeeded and again.hosts["alpha"].changed == 0


def test_pack_refuses_a_relative_destination(tmp_path: Path) -> None:
    pdd = _pdd(tmp_path)
    (tmp_path / "f").write_text("x")
    items = [{"src": str(tmp_path / "f"), "dest": "etc/relative", "mode": "0644"}]
    result = run_playbook(pdd, "test.yml", ["alpha"], {
        "pack_items": items, "pack_file": str(tmp_path / "p.tar")},
        tmp_path / "runs" / "bad", "test", NullProgress())
    assert not result.succeeded
    host, _task, message = result.failures()[0]
    assert host == "alpha" and "bad destination 'etc/relative'" in message
