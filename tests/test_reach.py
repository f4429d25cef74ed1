"""One place says how to reach a host (``provisioner.providers.reach``): Ansible's inventory
and ssh arguments, verify's paramiko client and ``machines status`` agree on every host, and
a changed input reaches all three.

The spec has per-host SSH overrides and a recorded Vagrant connection (which beats them).
Paramiko's connect is replaced by a recorder, so no host is contacted."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import paramiko
import pytest
from typer.testing import CliRunner

from provisioner import cli_machines
from provisioner.plan import Plan, build_plan
from provisioner.providers.base import NodeStatus
from provisioner.providers.connections import Connection, read_connections, write_connections
from provisioner.providers.reach import default_key, reach, trusted_files
from provisioner.provision import pinned_ssh_args
from provisioner.render.runner import envvars, runner_files
from provisioner.spec.load import load_file
from provisioner.spec.models import Cluster
from provisioner.spec.topology import machines
from provisioner.verify.run import build_context

SPEC = """
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: rc}
spec:
  provider: {type: vagrant, subnet: 192.168.56.0/25, managementSubnet: 192.168.56.128/25}
  ssh: {user: debian}
  hosts:
    - name: rc-cp1
      address: 192.168.56.20
      ssh: {user: ops, privateKeyFile: keys/cp1}
    - {name: rc-w1, address: 192.168.56.21, ssh: {port: 2222}}
    - {name: rc-w2, address: 192.168.56.22, ssh: {user: root, port: W2PORT}}
  controlPlane: {hosts: [rc-cp1]}
"""

Login = tuple[str, str, int, str | None, bool]
"""user, host, port, key, become: what every consumer must agree on."""


def _ansible(plan: Plan, state: Path) -> tuple[dict[str, Login], tuple[str, ...]]:
    """Logins in the rendered inventory (as provision renders it) and the known_hosts files
    provision's ssh arguments trust."""
    files = runner_files(plan, default_key(plan, state), read_connections(state))
    hosts = json.loads(files["inventory/hosts.json"])["all"]["hosts"]
    logins = {name: (v["ansible_user"], v["ansible_host"], v["ansible_port"],
                     v.get("ansible_ssh_private_key_file"), v.get("ansible_become", False))
              for name, v in hosts.items()}
    args = shlex.split(pinned_ssh_args(envvars(plan)["ANSIBLE_SSH_ARGS"],
                                       trusted_files(reach(plan, state))))
    option = next(a for a in args if a.startswith("UserKnownHostsFile="))
    return logins, tuple(shlex.split(option.removeprefix("UserKnownHostsFile=")))


def _verify(plan: Plan, state: Path,
            monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Login], tuple[str, ...]]:
    """Logins verify's paramiko client makes (with a root command) and the host-key files
    it loads."""
    calls: list[dict[str, Any]] = []
    loaded: list[str] = []

    def connect(self: paramiko.SSHClient, hostname: str, **kw: Any) -> None:
        calls.append({"hostname": hostname, **kw})

    class ChannelDouble:
        def settimeout(self, timeout: float) -> None:
            pass

        def exec_command(self, command: str) -> None:
            raise paramiko.SSHException(command)  # the runner returns it as the result

        def close(self) -> None:
            pass

    class TransportDouble:
        def is_active(self) -> bool:
            return True

        def open_session(self, timeout: float | None = None) -> ChannelDouble:
            return ChannelDouble()

    monkeypatch.setattr(paramiko.SSHClient, "connect", connect)
    monkeypatch.setattr(paramiko.SSHClient, "get_transport", lambda self: TransportDouble())
    monkeypatch.setattr(paramiko.SSHClient, "load_host_keys",
                        lambda self, f: loaded.append(f))
    ssh = build_context(plan, state).ssh
    out: dict[str, Login] = {}
    try:
        for h in plan.hosts:
            result = ssh.run(h, "id -u", 1.0, root=True)
            kw = calls[-1]  # one login per host
            out[h.name] = (kw["username"], kw["hostname"], kw["port"], kw["key_filename"],
                           result.stderr.endswith("sudo -n sh -c 'id -u'"))
    finally:
        ssh.close()
    return out, tuple(dict.fromkeys(loaded))


class _Machines:
    """A provider whose machines all run (``machines status`` asks nothing else)."""

    def __init__(self, cluster: Cluster, report: Any = None) -> None:
        self.cluster = cluster

    def status(self) -> list[NodeStatus]:
        return [NodeStatus(m, "running", ssh=True, systemd="running")
                for m in machines(self.cluster)]


def _status(spec: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, str, int]]:
    """The login column of ``provisioner machines status``."""
    monkeypatch.setattr(cli_machines, "provider_for", _Machines)
    result = CliRunner().invoke(cli_machines.app, ["status", str(spec)])
    assert result.exit_code == 0, result.output
    out = {}
    for line in result.output.splitlines():
        got = re.search(r"^\s*(rc-\S+)\s.*\s(\S+)@(\S+):(\d+)\s", line)
        if got:
            out[got[1]] = (got[2], got[3], int(got[4]))
    return out


@pytest.fixture
def cluster_state(tmp_path: Path, state_root: Path) -> Path:
    """The cluster's state directory: its own key, pinned host keys, one recorded login."""
    state = state_root / "clusters" / "rc"
    (state / "ssh").mkdir(parents=True)
    for key in (state / "ssh" / "id_ed25519", tmp_path / "keys" / "cp1",
                tmp_path / "vagrant" / "rc-w1" / "private_key"):
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (state / "ssh" / "known_hosts").write_text("")
    return state


def _spec(tmp_path: Path, w2_port: int) -> Path:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(SPEC.replace("W2PORT", str(w2_port)))
    return spec


def _record(state: Path, tmp_path: Path, port: int) -> None:
    write_connections(state, {"rc-w1": Connection(
        "127.0.0.1", port, "vagrant", tmp_path / "vagrant" / "rc-w1" / "private_key")})


def test_ansible_verify_and_status_reach_every_host_alike(
        tmp_path: Path, cluster_state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = cluster_state
    _record(state, tmp_path, 2200)
    spec = _spec(tmp_path, 2223)
    expected: dict[str, Login] = {
        # per-host user and key, the spec's port
        "rc-cp1": ("ops", "192.168.56.20", 22, str(tmp_path / "keys" / "cp1"), True),
        # the recorded Vagrant connection beats the per-host port
        "rc-w1": ("vagrant", "127.0.0.1", 2200,
                  str(tmp_path / "vagrant" / "rc-w1" / "private_key"), True),
        # per-host root login (no sudo) and port, the cluster's own key
        "rc-w2": ("root", "192.168.56.22", 2223, str(state / "ssh" / "id_ed25519"), False),
    }
    pinned = (str(state / "ssh" / "known_hosts"),)

    def check(plan: Plan, want: dict[str, Login]) -> None:
        ansible, ansible_known = _ansible(plan, state)
        verify, verify_known = _verify(plan, state, monkeypatch)
        status = _status(spec, monkeypatch)
        assert ansible == verify == want
        assert status == {n: (u, h, p) for n, (u, h, p, _, _) in want.items()}
        assert ansible_known == verify_known == pinned

    check(build_plan(load_file(spec)), expected)

    # One input changes (the recorded port, a spec port): every consumer follows.
    _record(state, tmp_path, 2201)
    spec = _spec(tmp_path, 2224)
    moved = dict(expected)
    moved["rc-w1"] = (*expected["rc-w1"][:2], 2201, *expected["rc-w1"][3:])
    moved["rc-w2"] = (*expected["rc-w2"][:2], 2224, *expected["rc-w2"][3:])
    check(build_plan(load_file(spec)), moved)
