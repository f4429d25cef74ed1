"""The vagrant provider's pure parts: the Vagrantfile's settings, the host's virtualization
choice, ``vagrant ssh-config``/``status`` parsing and the logins every consumer shares."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

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
from provisioner.providers.vagrant.provider import parse_ssh_config, parse_status
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
    cfg = vagrant_config(cluster, tmp_path / "console", TCG)
    assert json.loads(json.dumps(cfg)) == cfg  # plain JSON for the Vagrantfile
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
