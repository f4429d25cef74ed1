"""The vagrant provider's pure parts: the Vagrantfile's settings, the host's virtualization
choice, ``vagrant ssh-config``/``status`` parsing and the logins every consumer shares."""

from __future__ import annotations

import json
import subprocess
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from provisioner.plan import build_plan
from provisioner.providers.connections import Connection, read_connections, write_connections
from provisioner.providers.inventory import inventory_data
from provisioner.providers.reach import resolve
from provisioner.providers.vagrant.config import (
    SLOW_NOTE,
    Accel,
    detect_accel,
    network_names,
    vagrant_config,
)
from provisioner.providers.vagrant.provider import (
    VagrantMachines,
    parse_ssh_config,
    parse_status,
)
from provisioner.render.runner import inventory as runner_inventory
from provisioner.spec.load import parse as load_text
from provisioner.spec.topology import machines
from provisioner.verify.ssh import ssh_settings

ROOT = Path(__file__).resolve().parents[1]
SPEC = """
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: vt}
spec:
  provider:
    type: vagrant
    memoryMib: 3072
    cpus: 3
    box: generic/debian12
    subnet: 192.168.56.0/25
    managementSubnet: 192.168.56.128/25
    managementNetworkMode: none
    firstHostOffset: 20
    %s
  controlPlane: {count: 3}
  workers: {count: 2}
"""
TCG = Accel("qemu", "test host without kvm")
KVM = Accel("kvm", "test host with kvm")

SSH_CONFIG = """Host vt-cp1
  HostName 192.168.56.131
  User vagrant
  Port 22
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile /state/vagrant/dot/machines/vt-cp1/libvirt/private_key
  IdentitiesOnly yes
  LogLevel FATAL

Host vt-w1
  HostName 127.0.0.1
  User vagrant
  Port 2200
  IdentityFile "/state/vagrant/dot/machines/vt-w1/virtualbox/private_key"
"""


def _cluster(extra: str = ""):  # type: ignore[no-untyped-def]
    return load_text(SPEC % extra)


def test_config_carries_the_spec_machines_and_settings(tmp_path: Path) -> None:
    cluster = _cluster()
    cfg = vagrant_config(cluster, tmp_path, TCG)
    assert json.loads(json.dumps(cfg)) == cfg  # plain JSON for the Vagrantfile
    # Plain `vagrant` keeps its machine state where the provider does (the Vagrantfile
    # sets VAGRANT_DOTFILE_PATH to it), and converges only a vagrant spec.
    assert (cfg["dotfile"], cfg["spec_provider"]) == (str(tmp_path / "dot"), "vagrant")
    assert [m["name"] for m in cfg["machines"]] == [m.name for m in machines(cluster)]
    assert [m["address"] for m in cfg["machines"]] == [
        "192.168.56.20", "192.168.56.21", "192.168.56.22", "192.168.56.23", "192.168.56.24"]
    assert cfg["machines"][0]["roles"] == ["etcd", "kube_control_plane", "kube_node"]
    assert cfg["machines"][3]["roles"] == ["kube_node"]
    assert cfg["machines"][0]["console_log"] == str(tmp_path / "console" / "vt-cp1.log")
    assert (cfg["box"], cfg["memory"], cfg["cpus"], cfg["boot_timeout"]) == (
        "generic/debian12", 3072, 3, 900)
    assert cfg["network"] == {"name": "provisioner-vt", "subnet": "192.168.56.0/25",
                              "netmask": "255.255.255.128", "host_address": "192.168.56.1"}
    lv = cfg["libvirt"]
    assert lv["management_network_address"] == "192.168.56.128/25"
    assert lv["management_network_mode"] == "none"
    assert lv["management_network_name"] == network_names("vt")[1]


def test_auto_driver_follows_the_host_and_warns_when_slow(tmp_path: Path) -> None:
    slow = vagrant_config(_cluster(), tmp_path, TCG)
    assert (slow["libvirt"]["driver"], slow["libvirt"]["cpu_mode"],
            slow["libvirt"]["cpu_model"]) == ("qemu", "custom", "qemu64")
    assert any("software emulation" in n and TCG.reason in n for n in slow["notes"])
    fast = vagrant_config(_cluster(), tmp_path, KVM)
    assert (fast["libvirt"]["driver"], fast["libvirt"]["cpu_mode"]) == ("kvm", "host-passthrough")
    assert fast["notes"] == []


def test_explicit_driver_wins_over_detection(tmp_path: Path) -> None:
    cfg = vagrant_config(_cluster("libvirtDriver: qemu\n    cpuModel: Nehalem"), tmp_path, KVM)
    assert (cfg["libvirt"]["driver"], cfg["libvirt"]["cpu_model"]) == ("qemu", "Nehalem")
    assert "set in spec.provider.libvirtDriver" in cfg["notes"][0]
    cfg = vagrant_config(_cluster("libvirtDriver: kvm"), tmp_path, TCG)
    assert cfg["libvirt"]["driver"] == "kvm" and cfg["notes"] == []


def test_detect_accel(tmp_path: Path) -> None:
    kvm, pvm = tmp_path / "kvm", tmp_path / "kvm_pvm"
    assert detect_accel(kvm, pvm).driver == "qemu"  # no device
    kvm.write_text("")
    assert detect_accel(kvm, pvm) == Accel("kvm", f"{kvm} is usable")
    pvm.mkdir()
    got = detect_accel(kvm, pvm)
    assert got.driver == "qemu" and "PVM" in got.reason
    assert "{reason}" in SLOW_NOTE


def test_other_providers_rehearse_on_vms(tmp_path: Path) -> None:
    nspawn = load_text((ROOT / "inventories" / "nspawn-3cp-2w.yaml").read_text())
    cfg = vagrant_config(nspawn, tmp_path, KVM)
    assert [m["address"] for m in cfg["machines"]] == [str(m.address) for m in machines(nspawn)]
    assert "rehearse" in cfg["notes"][0]
    assert cfg["spec_provider"] == "nspawn"  # VMs only: the Vagrantfile does not converge it
    static = load_text((ROOT / "inventories" / "static.yaml").read_text())
    cfg = vagrant_config(static, tmp_path, KVM)
    assert cfg["network"]["subnet"] == "10.20.0.0/24"
    assert [m["name"] for m in cfg["machines"]][:1] == ["cp-a"]


def test_parse_ssh_config() -> None:
    got = parse_ssh_config(SSH_CONFIG)
    assert got["vt-cp1"] == Connection("192.168.56.131", 22, "vagrant", Path(
        "/state/vagrant/dot/machines/vt-cp1/libvirt/private_key"))
    assert got["vt-w1"].port == 2200 and got["vt-w1"].key.name == "private_key"
    assert got["vt-w1"].known_hosts_name() == "[127.0.0.1]:2200"
    assert got["vt-cp1"].known_hosts_name() == "192.168.56.131"


def test_parse_ssh_config_refuses_incomplete_blocks() -> None:
    from provisioner.providers.base import ProviderError

    with pytest.raises(ProviderError, match="vt-cp1 lacks identityfile"):
        parse_ssh_config("Host vt-cp1\n  HostName 10.0.0.1\n  User vagrant\n")


def test_parse_status() -> None:
    text = ("1700000000,vt-cp1,metadata,provider,libvirt\n"
            "1700000000,vt-cp1,provider-name,libvirt\n"
            "1700000000,vt-cp1,state,running\n"
            "1700000000,vt-w1,state,not_created\n"
            "1700000000,,ui,info,Current machine states:\n")
    assert parse_status(text) == {"vt-cp1": "running", "vt-w1": "not_created"}


def test_connections_round_trip_and_drive_every_login(tmp_path: Path) -> None:
    cluster = _cluster()
    conns = parse_ssh_config(SSH_CONFIG)
    path = write_connections(tmp_path, conns)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_connections(tmp_path) == conns
    plan = build_plan(cluster)
    inv = runner_inventory(plan, resolve(plan, tmp_path / "ssh" / "id_ed25519", conns))
    cp1 = inv["all"]["hosts"]["vt-cp1"]
    assert (cp1["ansible_host"], cp1["ansible_user"], cp1["ansible_become"]) == (
        "192.168.56.131", "vagrant", True)
    assert cp1["ansible_ssh_private_key_file"].endswith("vt-cp1/libvirt/private_key")
    # Roles reach services at the cluster address the certificates name, not at the SSH one.
    assert cp1["provisioner_address"] == "192.168.56.20"
    w1 = inv["all"]["hosts"]["vt-w1"]
    assert (w1["ansible_host"], w1["ansible_port"]) == ("127.0.0.1", 2200)
    # A host without a recorded connection keeps the spec's address and the cluster key.
    cp2 = inv["all"]["hosts"]["vt-cp2"]
    assert cp2["ansible_host"] == "192.168.56.21"
    assert cp2["ansible_ssh_private_key_file"] == str(tmp_path / "ssh" / "id_ed25519")

    provider_inv = inventory_data(machines(cluster), Path("/k"), None, conns)
    assert provider_inv["all"]["hosts"]["vt-w1"]["ansible_port"] == 2200

    (tmp_path / "ssh").mkdir()
    (tmp_path / "ssh" / "known_hosts").write_text("")
    settings = ssh_settings(plan, tmp_path)
    assert settings["vt-w1"].host == "127.0.0.1" and settings["vt-w1"].port == 2200
    assert settings["vt-w1"].known_hosts == (tmp_path / "ssh" / "known_hosts",)
    assert IPv4Address(settings["vt-cp2"].host) == plan.hosts[1].machine.address


# --- VMs a plain `vagrant up` made: attach, forget, provision --machines-running ----------

SMALL = """
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: va}
spec:
  provider: {type: vagrant, subnet: 192.168.56.0/25, managementSubnet: 192.168.56.128/25}
  workers: {count: 1}
"""
SMALL_SSH_CONFIG = """Host va-cp1
  HostName 192.168.56.140
  User vagrant
  Port 22
  IdentityFile /s/dot/machines/va-cp1/libvirt/private_key

Host va-w1
  HostName 192.168.56.141
  User vagrant
  Port 22
  IdentityFile /s/dot/machines/va-w1/libvirt/private_key
"""


def _host_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


class _FakeVagrant:
    """Stands in for ``VagrantMachines._vagrant``: canned ``status`` and ``ssh-config``."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str], timeout: float, log: Path | None = None,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        if args[0] == "status":
            out = "".join(f"1,{n},state,{s}\n" for n, s in self.states.items())
        elif args[0] == "ssh-config":
            out = SMALL_SSH_CONFIG
        else:
            raise AssertionError(f"attach must not run `vagrant {' '.join(args)}`")
        return subprocess.CompletedProcess(["vagrant", *args], 0, out, "")


Made = tuple[VagrantMachines, dict[str, str]]


@pytest.fixture
def made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Made:
    """VMs va-cp1 and va-w1 as a plain `vagrant up` leaves them: Vagrant's state in the
    cluster's dot directory and each VM's host key on its serial console log."""
    monkeypatch.setenv("PROVISIONER_STATE_DIR", str(tmp_path / "state"))
    machines = VagrantMachines(load_text(SMALL))
    machines.paths.dotfile.mkdir(parents=True)
    keys = {}
    for name in ("va-cp1", "va-w1"):
        keys[name] = _host_key()
        (machines.paths.console / f"{name}.log").write_text(
            f"boot...\r\nprovisioner-ssh-host-key: {keys[name]}\r\nlogin: ")
    return machines, keys


def test_attach_records_logins_and_pins_host_keys_without_starting_vms(made: Made) -> None:
    machines, keys = made
    fake = _FakeVagrant({"va-cp1": "running", "va-w1": "running"})
    machines._vagrant = fake  # type: ignore[method-assign]
    result = machines.attach()
    assert [c[0] for c in fake.calls] == ["status", "ssh-config"]  # never `up`
    assert [c.action for c in result.changes] == ["unchanged", "unchanged"]
    assert not result.changed and result.warnings == ()
    state = machines.state
    assert read_connections(state)["va-w1"] == Connection(
        "192.168.56.141", 22, "vagrant", Path("/s/dot/machines/va-w1/libvirt/private_key"))
    # Pinned as `machines up` pins them: from the console, under name, address and endpoint.
    known = (state / "ssh" / "known_hosts").read_text().splitlines()
    assert known == [f"va-cp1,192.168.56.11,192.168.56.140 {keys['va-cp1']}",
                     f"va-w1,192.168.56.12,192.168.56.141 {keys['va-w1']}"]
    assert (state / "ssh" / "known_hosts").stat().st_mode & 0o777 == 0o600
    assert result.inventory.is_file()
    # The settings file the Vagrantfile reads for the provider's own vagrant calls.
    assert json.loads(machines.paths.config.read_text())["dotfile"] == str(
        machines.paths.dotfile)


def test_attach_names_every_vm_that_does_not_run(made: Made) -> None:
    from provisioner.providers.base import ProviderError

    machines, _ = made
    machines._vagrant = _FakeVagrant(  # type: ignore[method-assign]
        {"va-cp1": "running", "va-w1": "shutoff"})
    with pytest.raises(ProviderError, match=r"not running: va-w1 \(shutoff\); bring every VM up"):
        machines.attach()
    assert not read_connections(machines.state)


def test_forget_drops_destroyed_vms_and_keeps_the_pki(made: Made) -> None:
    from provisioner.providers.base import ProviderError

    machines, keys = made
    machines._vagrant = _FakeVagrant(  # type: ignore[method-assign]
        {"va-cp1": "running", "va-w1": "running"})
    result = machines.attach()
    state = machines.state
    (state / "pki").mkdir()
    (state / "pki" / "ca.key").write_text("the cluster CA")
    (state / "admin.kubeconfig").write_text("kubeconfig")

    assert machines.forget(["va-w1"]) == ["va-w1"]  # `vagrant destroy` goes last VM first
    assert set(read_connections(state)) == {"va-cp1"}
    known = (state / "ssh" / "known_hosts").read_text()
    assert keys["va-cp1"] in known and keys["va-w1"] not in known
    assert not (machines.paths.console / "va-w1.log").exists()
    assert (machines.paths.console / "va-cp1.log").exists()
    assert result.inventory.is_file()

    assert machines.forget(["va-cp1"]) == ["va-cp1"]
    assert read_connections(state) == {}
    assert not (state / "ssh" / "known_hosts").exists() and not result.inventory.exists()
    assert (state / "pki" / "ca.key").read_text() == "the cluster CA"
    assert (state / "admin.kubeconfig").exists()
    assert machines.forget() == ["va-cp1", "va-w1"]  # idempotent
    with pytest.raises(ProviderError, match="no VM named va-w9"):
        machines.forget(["va-w9"])


def test_vagrant_forget_command(made: Made) -> None:
    from typer.testing import CliRunner

    from provisioner.cli import app

    machines, _ = made
    spec = machines.state.parent.parent.parent / "va.yaml"
    spec.write_text(SMALL)
    write_connections(machines.state, parse_ssh_config(SMALL_SSH_CONFIG))
    got = CliRunner().invoke(app, ["vagrant", "forget", str(spec), "va-w1"])
    assert got.exit_code == 0, got.output
    assert "forgot the logins and host keys of va-w1 (cluster va)" in got.output
    assert set(read_connections(machines.state)) == {"va-cp1"}
    got = CliRunner().invoke(app, ["vagrant", "forget", str(spec), "nope"])
    assert got.exit_code == 1 and "no VM named nope" in got.output


def _provision_cli(monkeypatch: pytest.MonkeyPatch, spec: Path, *args: str,
                   attach_error: str | None = None
                   ) -> tuple[Any, list[str], list[bool]]:
    """``provisioner provision spec args`` with the provider's attach and ``provision``
    itself replaced: (CliRunner result, attach calls, the ``machines`` argument given)."""
    from typer.testing import CliRunner

    from provisioner import cli_provision
    from provisioner.cli import app
    from provisioner.providers.base import NodeChange, ProviderError, UpResult
    from provisioner.provision import ProvisionError

    attached: list[str] = []
    machines_arg: list[bool] = []

    def attach(self: VagrantMachines) -> UpResult:
        attached.append(self.name)
        if attach_error is not None:
            raise ProviderError(attach_error)
        return UpResult((NodeChange("va-cp1", "unchanged", 0.0),), Path("/inv"),
                        ("va-w1: trusted on first contact",))

    def provision(*a: Any, **kw: Any) -> None:
        machines_arg.append(a[4])
        raise ProvisionError("stand-in provision stops here")

    monkeypatch.setattr(VagrantMachines, "attach", attach)
    monkeypatch.setattr(cli_provision, "provision", provision)
    got = CliRunner().invoke(app, ["provision", str(spec), *args])
    return got, attached, machines_arg


def test_provision_machines_running_attaches_instead_of_vagrant_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIONER_STATE_DIR", str(tmp_path / "state"))
    spec = tmp_path / "va.yaml"
    spec.write_text(SMALL)
    got, attached, machines_arg = _provision_cli(monkeypatch, spec, "--machines-running")
    assert attached == ["va"] and machines_arg == [False]  # no `vagrant up` in provision
    assert "warning: va-w1: trusted on first contact" in got.output
    assert got.exit_code == 1 and "stand-in provision stops here" in got.output

    got, attached, machines_arg = _provision_cli(monkeypatch, spec)
    assert attached == [] and machines_arg == [True]  # without the flag: provision brings VMs up


def test_provision_machines_running_failure_names_the_machines_phase(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIONER_STATE_DIR", str(tmp_path / "state"))
    spec = tmp_path / "va.yaml"
    spec.write_text(SMALL)
    got, _, machines_arg = _provision_cli(monkeypatch, spec, "--machines-running",
                                          attach_error="VMs of va not running: va-w1 (shutoff)")
    assert got.exit_code == 1 and machines_arg == []
    assert "error: machines: VMs of va not running: va-w1 (shutoff)" in got.output


def test_provision_machines_running_excludes_no_machines_and_skips_other_providers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIONER_STATE_DIR", str(tmp_path / "state"))
    spec = tmp_path / "va.yaml"
    spec.write_text(SMALL)
    got, attached, _ = _provision_cli(monkeypatch, spec, "--machines-running", "--no-machines")
    assert got.exit_code == 2 and attached == []
    assert "--machines-running and --no-machines exclude each other" in got.output
    # nspawn machines need no recorded logins: nothing to attach, and no machines up.
    nspawn = ROOT / "inventories" / "nspawn-3cp-2w.yaml"
    got, attached, machines_arg = _provision_cli(monkeypatch, nspawn, "--machines-running")
    assert attached == [] and machines_arg == [False]
