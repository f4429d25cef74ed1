"""SSH host keys are always verified: static hosts through the user's known_hosts or keys
recorded by ``--trust-on-first-use``; a changed key is refused before anything is copied.

Runs paramiko against the in-process SSH server of tests/fixtures/ssh_server.py (real SSH on
loopback; no test double of the protocol), and ``provisioner provision`` end to end against
one that records every request a client makes of it, on this machine's own address (a static
host cannot be a loopback address)."""

from __future__ import annotations

import shlex
import socket
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path
from typing import Any

import paramiko
import pytest
from typer.testing import CliRunner

from provisioner import provision as provision_mod
from provisioner.cli import app
from provisioner.plan import Plan, build_plan
from provisioner.providers.reach import known_hosts_files
from provisioner.providers.ssh import known_hosts_args, known_hosts_option
from provisioner.provision import last_summary, pinned_ssh_args
from provisioner.render.runner import envvars
from provisioner.spec import parse
from provisioner.verify.ssh import (
    ParamikoRunner,
    SshUnavailable,
    ssh_settings,
    trust_on_first_use,
)
from tests.fixtures.ssh_server import SshServer
from tests.test_verify import _hostname_srv, _ssh_state

STATIC = """
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: st}
spec:
  provider: {type: static}
  ssh: {user: root, privateKeyFile: KEY}
  hosts:
    - {name: st-cp1, address: 192.168.56.50}
  controlPlane: {hosts: [st-cp1]}
"""


def _static_plan(key: Path, port: int) -> Plan:
    base = build_plan(parse(STATIC.replace("KEY", str(key))))
    hosts = tuple(replace(h, machine=replace(h.machine, address=IPv4Address("127.0.0.1"),
                                             ssh_port=port)) for h in base.hosts)
    return replace(base, hosts=hosts)


def _hostname(plan: Plan, state: Path) -> str:
    """``hostname`` on the plan's first host through the runner verify uses."""
    runner = ParamikoRunner(ssh_settings(plan, state), 3)
    try:
        return runner.run(plan.hosts[0], "hostname", 5, False).stdout
    finally:
        runner.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $HOME, so the user's real ~/.ssh/known_hosts plays no part."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    return h


def test_unknown_static_host_is_refused_until_trusted_on_first_use(tmp_path: Path,
                                                                   home: Path) -> None:
    host_key = paramiko.ECDSAKey.generate()
    state, client_key = _ssh_state(tmp_path)
    # Sessions that open no channel (the refused login, the key scan) end quickly.
    with SshServer(host_key, client_key, _hostname_srv, sessions=3, timeout=2) as server:
        plan = _static_plan(state / "ssh" / "id_ed25519", server.port)
        runner = ParamikoRunner(ssh_settings(plan, state), 3)
        with pytest.raises(SshUnavailable) as err:
            runner.run(plan.hosts[0], "hostname", 5, False)
        runner.close()
        assert err.value.kind == "hostkey-unknown"
        assert "--trust-on-first-use" in err.value.hint
        recorded = trust_on_first_use(plan, state)
        assert len(recorded) == 1 and "SHA256:" in recorded[0] and "st-cp1" in recorded[0]
        known = state / "ssh" / "known_hosts"
        assert known.stat().st_mode & 0o777 == 0o600
        assert host_key.get_base64() in known.read_text()
        assert _hostname(plan, state) == "srv\n"


def test_a_changed_host_key_is_never_re_recorded(tmp_path: Path, home: Path) -> None:
    host_key, old = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    state, client_key = _ssh_state(tmp_path)
    with SshServer(host_key, client_key, _hostname_srv, sessions=1) as server:
        known = state / "ssh" / "known_hosts"
        known.write_text(f"[127.0.0.1]:{server.port} {old.get_name()} {old.get_base64()}\n")
        plan = _static_plan(state / "ssh" / "id_ed25519", server.port)
        with pytest.raises(SshUnavailable) as err:
            trust_on_first_use(plan, state)
    assert err.value.kind == "hostkey-mismatch" and "man-in-the-middle" in err.value.hint
    assert host_key.get_base64() not in known.read_text()


def test_the_users_known_hosts_is_trusted_for_static_hosts(tmp_path: Path, home: Path) -> None:
    host_key = paramiko.ECDSAKey.generate()
    state, client_key = _ssh_state(tmp_path)
    with SshServer(host_key, client_key, _hostname_srv, sessions=1) as server:
        (home / ".ssh" / "known_hosts").write_text(
            f"[127.0.0.1]:{server.port} {host_key.get_name()} {host_key.get_base64()}\n")
        plan = _static_plan(state / "ssh" / "id_ed25519", server.port)
        assert known_hosts_files(plan, state) == (state / "ssh" / "known_hosts",
                                                  home / ".ssh" / "known_hosts")
        assert _hostname(plan, state) == "srv\n"


def test_ansible_never_switches_checking_off(tmp_path: Path, home: Path) -> None:
    plan = _static_plan(tmp_path / "key", 22)
    env = envvars(plan)
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert "StrictHostKeyChecking=yes" in env["ANSIBLE_SSH_ARGS"]
    assert "/dev/null" not in env["ANSIBLE_SSH_ARGS"]
    args = pinned_ssh_args(env["ANSIBLE_SSH_ARGS"], known_hosts_files(plan, tmp_path))
    words = shlex.split(args)
    assert f'UserKnownHostsFile="{tmp_path}/ssh/known_hosts" "{home}/.ssh/known_hosts"' in words
    assert args.count("StrictHostKeyChecking") == 1


def test_known_hosts_files_under_a_path_with_a_space_stay_whole(tmp_path: Path) -> None:
    # ssh splits UserKnownHostsFile on whitespace unless each file is quoted; Ansible splits
    # its ssh arguments with shlex first. Measured with OpenSSH 9.2: the unquoted form made
    # ssh look for "/tmp/a" and "b/kh" and refuse every host key.
    files = (Path("/tmp/a b/known_hosts"), Path('/odd"name/kh'))
    option = known_hosts_option(files)
    assert option == 'UserKnownHostsFile="/tmp/a b/known_hosts" "/odd\\"name/kh"'
    assert shlex.split(known_hosts_args(files)) == ["-o", option, "-o",
                                                    "StrictHostKeyChecking=yes"]


def test_provision_refuses_untrusted_host_keys_before_any_phase(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class MismatchDouble:
        """Test double of ``ParamikoRunner``: every host presents a changed key."""

        def __init__(self, *args: Any) -> None:
            pass

        def run(self, host: Any, command: str, timeout: float, root: bool,
                stdin: bytes | None = None) -> Any:
            raise SshUnavailable(host.name, "hostkey-mismatch", "host key differs",
                                 "check its fingerprint")

        def close(self) -> None:
            pass

    from provisioner.render.material import prepare
    from provisioner.render.tree import render
    from tests.test_identity import SPEC
    plan = build_plan(parse(SPEC))
    material, _ = prepare(plan, tmp_path / "s", tmp_path)
    tree = render(plan, material, None)
    # The survey is the first contact with the hosts: it refuses before any phase.
    with pytest.raises(provision_mod.ProvisionError) as err:
        provision_mod._survey(plan, tmp_path / "s", tree, plan.phases, {}, MismatchDouble())
    assert "not trusted; nothing was changed" in str(err.value)
    assert "idt-cp1: host key differs" in str(err.value)


# --- provision end to end: a static host whose host key changed ----------------------------


def _own_address() -> str | None:
    """This machine's address on its default route: a static host must not be loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # a route lookup only: UDP connect sends nothing
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if ip_address(address).is_loopback else address


@pytest.fixture
def recording_server(tmp_path: Path) -> Iterator[tuple[SshServer, Path]]:
    """An SSH server on this machine's own address for as long as the test runs, and the
    client key file it lets root in with. A command gets exit status 1 and no output, so a
    client that got this far fails fast instead of hanging."""
    address = _own_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address to serve a static host on")
    host_key = paramiko.ECDSAKey.generate()
    state, client_key = _ssh_state(tmp_path)
    with SshServer(host_key, client_key, lambda command: (1, b"", b""), address=address,
                   timeout=5) as server:
        yield server, state / "ssh" / "id_ed25519"


def _network_not_holding(address: str) -> str:
    """A pod and service CIDR pair that does not hold ``address`` (the spec refuses that)."""
    for pods, services in (("10.244.0.0/16", "10.96.0.0/12"),
                           ("172.30.0.0/16", "172.31.0.0/16")):
        if not any(ip_address(address) in IPv4Network(n) for n in (pods, services)):
            return f"  network: {{podCIDR: {pods}, serviceCIDR: {services}}}\n"
    raise AssertionError(address)


def test_a_static_host_whose_host_key_changed_is_refused_before_anything_is_copied(
        tmp_path: Path, home: Path,
        recording_server: tuple[SshServer, Path]) -> None:
    server, key = recording_server
    address, port, host_key = server.address, server.port, server.host_key
    # The user logged in before; the host now presents another key (reinstalled, or a man
    # in the middle). Its address and port are right: only the key differs.
    old = paramiko.ECDSAKey.generate()
    (home / ".ssh" / "known_hosts").write_text(
        f"[{address}]:{port} {old.get_name()} {old.get_base64()}\n")
    # preflight and os copy files to the host but install no artifacts: the (empty) local
    # source is never read, and nothing is downloaded.
    (tmp_path / "artifacts").mkdir()
    spec = tmp_path / "cluster.yaml"
    spec.write_text(
        "apiVersion: provisioner.dev/v1alpha1\nkind: Cluster\nmetadata: {name: st}\nspec:\n"
        "  provider: {type: static}\n"
        f"  ssh: {{user: root, port: {port}, privateKeyFile: {key}}}\n"
        f"  hosts:\n    - {{name: st-cp1, address: {address}}}\n"
        "  controlPlane: {hosts: [st-cp1]}\n"
        "  artifacts: {source: local, path: artifacts}\n" + _network_not_holding(address))
    state_root = tmp_path / "provisioner-state"
    result = CliRunner().invoke(app, ["provision", str(spec), "--only", "preflight,os",
                                      "--state-dir", str(state_root)])

    assert result.exit_code == 1, result.output
    out = result.output
    assert "SSH host keys are not trusted; nothing was changed" in out, out
    assert f"st-cp1: root@{address}:{port}: host key differs from the one pinned in" in out, out
    assert str(home / ".ssh" / "known_hosts") in out
    assert f"ssh-keygen -R {address}" in out and "man-in-the-middle" in out
    # The controller reached the host, saw its key and went no further: no login, no
    # session, no command (not even the survey's read-only probe), no sftp.
    seen = server.requests()
    assert seen.connections >= 1
    assert (seen.logins, seen.channels, seen.commands, seen.subsystems) == ((), (), (), ())
    # No phase ran: a run directory (events, Ansible's artifacts, the summary) is made only
    # after the survey passes.
    cluster = state_root / "clusters" / "st"
    assert cluster.is_dir()  # rendered, so the refusal came at the survey
    assert not (cluster / "runs").exists()
    assert last_summary(cluster) is None
    # The key the host presents was not recorded anywhere.
    assert host_key.get_base64() not in (home / ".ssh" / "known_hosts").read_text()
    assert not (cluster / "ssh" / "known_hosts").exists() or (
        host_key.get_base64() not in (cluster / "ssh" / "known_hosts").read_text())
