"""Unit tests of the nspawn provider that need neither root nor machines.

Scope: command lines, names and paths, cgroup placement, host checks and their messages,
inventory contents, the supervisor's restart and signal handling, and the CLI's error path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from provisioner.cli_machines import app
from provisioner.providers import inventory
from provisioner.providers.base import ProviderError
from provisioner.providers.nspawn import cgroups, host, image, node, paths, supervisor
from provisioner.providers.nspawn.system import owned
from provisioner.providers.registry import provider_for
from provisioner.spec.load import load_file, parse
from provisioner.spec.topology import machines

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "inventories" / "nspawn-3cp-2w.yaml"
NET = host.Network("provbr0", IPv4Network("192.168.56.0/24"))


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private machine-data root."""
    root = tmp_path / "nspawn"
    monkeypatch.setenv(paths.ENV_DATA_DIR, str(root))
    monkeypatch.delenv(paths.ENV_IMAGE_DIR, raising=False)
    return root


def _config(data_root: Path, name: str = "lab-cp1") -> node.NodeConfig:
    return node.NodeConfig(
        cluster="lab",
        name=name,
        address=IPv4Address("192.168.56.11"),
        network=NET,
        hosts=(("lab-cp1", IPv4Address("192.168.56.11")), ("lab-w1", IPv4Address("192.168.56.14"))),
        ssh_user="root",
        ssh_port=22,
        authorized_key="ssh-ed25519 AAAA test",
        apt_proxy=NET.apt_proxy_url,
    )


# --- paths and names ----------------------------------------------------------------------


def test_paths_follow_the_environment(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert paths.node_paths("lab", "lab-cp1").rootfs == data_root / "clusters/lab/lab-cp1/rootfs"
    assert paths.base_image("bookworm") == data_root / "images/base-bookworm"
    monkeypatch.setenv(paths.ENV_IMAGE_DIR, "/cache/images")
    assert paths.base_image("bookworm") == Path("/cache/images/base-bookworm")


def test_default_data_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.ENV_DATA_DIR, raising=False)
    assert paths.data_root() == Path("/var/lib/provisioner/nspawn")


def test_short_names_are_kept_and_long_names_fit_an_interface_name() -> None:
    assert paths.machine_name("lab", "lab-cp1") == "lab-cp1"
    assert paths.veth_name("lab", "lab-cp1") == "vb-lab-cp1"
    long_a = paths.veth_name("averylongclustername", "averylongclustername-cp1")
    long_b = paths.veth_name("averylongclustername", "averylongclustername-cp2")
    assert len(long_a) <= 15 and len(long_b) <= 15
    assert long_a != long_b
    assert long_a == paths.veth_name("averylongclustername", "averylongclustername-cp1")


# --- command lines ------------------------------------------------------------------------


def test_nspawn_command_has_the_flags_the_host_needs(data_root: Path) -> None:
    cmd = node.nspawn_command(_config(data_root))
    assert cmd[0] == "systemd-nspawn"
    for flag in (
        "--keep-unit",
        "--register=no",
        "--boot",
        "--capability=all",
        "--system-call-filter=@keyring bpf",
        "--bind=/dev/kmsg",
        "--network-bridge=provbr0",
        "--machine=lab-cp1",
        "--hostname=lab-cp1",
        "--console=read-only",
        "--resolv-conf=off",
    ):
        assert flag in cmd, flag
    assert f"--directory={data_root}/clusters/lab/lab-cp1/rootfs" in cmd


def test_supervisor_command_wraps_the_nspawn_command(data_root: Path) -> None:
    cfg = _config(data_root)
    cmd = node.supervisor_command(cfg)
    assert cmd[:3] == [sys.executable, "-m", "provisioner.providers.nspawn.supervisor"]
    split = cmd.index("--")
    assert cmd[split + 1 :] == node.nspawn_command(cfg)
    assert "--daemon" in cmd[:split]
    assert str(cfg.paths.dir) in cmd[:split] and str(cfg.paths.cgroups) in cmd[:split]


def test_node_files(data_root: Path) -> None:
    cfg = _config(data_root)
    hosts = node.etc_hosts(cfg)
    assert "192.168.56.11 lab-cp1\n" in hosts and "192.168.56.14 lab-w1\n" in hosts
    assert "192.168.56.1 lab-host\n" in hosts
    ifaces = node.interfaces(cfg)
    assert "iface host0 inet static" in ifaces
    assert "address 192.168.56.11/24" in ifaces and "gateway 192.168.56.1" in ifaces


def test_network_gateway_and_proxy() -> None:
    assert NET.gateway == IPv4Interface("192.168.56.1/24")
    assert NET.apt_proxy_url == "http://192.168.56.1:3142"


# --- cgroups ------------------------------------------------------------------------------

MOUNTINFO = """\
30 25 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
34 30 0:30 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
36 25 0:32 /sub /mnt/elsewhere rw,relatime - cgroup cgroup rw,cpu
"""
PROC_CGROUP = """\
9:name=systemd:/
4:memory:/jobs/abc
3:cpuset:/
1:cpu:/
0::/
"""


def test_hierarchies_are_parsed_from_mountinfo() -> None:
    found = cgroups.parse_hierarchies(MOUNTINFO, PROC_CGROUP)
    assert [h.mountpoint for h in found] == [
        Path("/sys/fs/cgroup/cpu"),
        Path("/sys/fs/cgroup/memory"),
        Path("/sys/fs/cgroup/cpuset"),
        Path("/sys/fs/cgroup/systemd"),
        Path("/sys/fs/cgroup/unified"),
    ]
    assert found[3].controllers == frozenset({"name=systemd"})
    assert found[1].own == "/jobs/abc" and found[1].is_memory


def test_node_cgroups_nest_memory_under_the_caller() -> None:
    found = cgroups.parse_hierarchies(MOUNTINFO, PROC_CGROUP)
    dirs = cgroups.node_cgroup_dirs(found, "lab", "lab-w1")
    assert Path("/sys/fs/cgroup/memory/jobs/abc/provisioner/lab/lab-w1") in dirs
    assert Path("/sys/fs/cgroup/cpu/provisioner/lab/lab-w1") in dirs
    assert Path("/sys/fs/cgroup/systemd/provisioner/lab/lab-w1") in dirs
    assert Path("/sys/fs/cgroup/unified/provisioner/lab/lab-w1") in dirs


def test_cpuset_values_are_inherited(tmp_path: Path) -> None:
    top = tmp_path / "cpuset"
    child = top / "provisioner" / "lab"
    child.mkdir(parents=True)
    (top / "cpuset.cpus").write_text("0-1\n")
    (top / "cpuset.mems").write_text("0\n")
    for d in (top / "provisioner", child):
        (d / "cpuset.cpus").write_text("")
        (d / "cpuset.mems").write_text("")
    cgroups._inherit_cpuset(child)
    assert (child / "cpuset.cpus").read_text() == "0-1\n"
    assert (top / "provisioner" / "cpuset.mems").read_text() == "0\n"


# --- host checks --------------------------------------------------------------------------


def test_address_conflicts_name_the_interface() -> None:
    addresses = {
        "provbr0": [IPv4Interface("192.168.56.1/24")],
        "eth1": [IPv4Interface("192.168.56.12/32")],
        "eth2": [IPv4Interface("192.168.0.5/16")],
        "eth0": [IPv4Interface("10.0.0.2/24")],
    }
    problems = host.address_conflicts(NET, addresses, [IPv4Address("192.168.56.12")])
    assert problems == [
        "address 192.168.56.12 is already held by interface eth1",
        "interface eth2 has 192.168.0.5/16 which overlaps the machine subnet 192.168.56.0/24",
    ]
    assert host.address_conflicts(NET, {"provbr0": [NET.gateway]}, []) == []


def test_missing_prerequisites_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(host, "which", lambda cmd: None if cmd != "chroot" else "/bin/chroot")
    problems = host.missing_prerequisites(need_debootstrap=True)
    assert any("run it as root" in p for p in problems)
    install = next(p for p in problems if "apt-get install" in p)
    assert "apt-get install debootstrap iproute2 iptables openssh-client systemd-container" in (
        install
    )
    with pytest.raises(ProviderError, match="cannot run on this host"):
        host.check_prerequisites(need_debootstrap=True)


def test_debootstrap_is_only_needed_without_an_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "which", lambda cmd: None if cmd == "debootstrap" else "/x")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert host.missing_prerequisites(need_debootstrap=False) == []
    assert "debootstrap" in host.missing_prerequisites(need_debootstrap=True)[0]


# --- image --------------------------------------------------------------------------------


def test_builtin_modules_follow_the_kernel_config() -> None:
    config = (
        "CONFIG_BRIDGE_NETFILTER=y\nCONFIG_OVERLAY_FS=y\nCONFIG_IP_VS=m\n"
        "# CONFIG_VXLAN is not set\n"
    )
    assert image.builtin_modules(config) == [
        "kernel/net/bridge/br_netfilter.ko",
        "kernel/fs/overlayfs/overlay.ko",
    ]


def test_image_stamp(tmp_path: Path) -> None:
    assert not image.is_ready(tmp_path)
    (tmp_path / image.STAMP).write_text(image.stamp_text())
    assert image.is_ready(tmp_path)
    (tmp_path / image.STAMP).write_text("recipe=0 kernel=old\n")
    assert not image.is_ready(tmp_path)


def test_sources_list_uses_the_mirror() -> None:
    text = image.sources_list("http://mirror.example/debian", "bookworm")
    assert "deb http://mirror.example/debian bookworm main\n" in text
    assert "bookworm-security" in text


# --- inventory ----------------------------------------------------------------------------


def test_inventory_groups_and_host_variables() -> None:
    cluster = load_file(EXAMPLE)
    data = inventory.inventory_data(machines(cluster), Path("/k/id"), "-o X=1")
    hosts = data["all"]["hosts"]
    assert list(hosts) == ["lab-cp1", "lab-cp2", "lab-cp3", "lab-w1", "lab-w2"]
    assert hosts["lab-w2"] == {
        "ansible_host": "192.168.56.15",
        "ansible_user": "root",
        "ansible_port": 22,
        "ansible_ssh_private_key_file": "/k/id",
    }
    children = data["all"]["children"]
    assert list(children["kube_control_plane"]["hosts"]) == ["lab-cp1", "lab-cp2", "lab-cp3"]
    assert list(children["etcd"]["hosts"]) == ["lab-cp1", "lab-cp2", "lab-cp3"]
    assert list(children["kube_node"]["hosts"]) == [
        "lab-cp1", "lab-cp2", "lab-cp3", "lab-w1", "lab-w2"
    ]  # fmt: skip
    assert set(children["k8s_cluster"]["children"]) == {"kube_control_plane", "kube_node"}
    assert data["all"]["vars"]["ansible_ssh_common_args"] == "-o X=1"


def test_inventory_file_is_written_once(state_root: Path) -> None:
    cluster = load_file(EXAMPLE)
    path = inventory.write_inventory("lab", machines(cluster), Path("/k/id"))
    assert path == state_root / "clusters/lab/inventory.yaml"
    assert path.stat().st_mode & 0o777 == 0o600
    assert yaml.safe_load(path.read_text())["all"]["hosts"]["lab-cp1"]["ansible_host"] == (
        "192.168.56.11"
    )
    before = path.stat().st_mtime_ns
    time.sleep(0.01)
    inventory.write_inventory("lab", machines(cluster), Path("/k/id"))
    assert path.stat().st_mtime_ns == before


# --- registry and provider construction ---------------------------------------------------

STATIC = """
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: s}
spec:
  provider: {type: static}
  ssh: {privateKeyFile: /k/id}
  hosts: [{name: a, address: 10.0.0.5}]
"""


def test_static_hosts_are_not_made() -> None:
    with pytest.raises(ProviderError, match="does not make machines"):
        provider_for(parse(STATIC))


# --- processes ----------------------------------------------------------------------------


def test_owned_checks_the_command_line() -> None:
    me = os.getpid()
    assert owned(me, "python") or owned(me, "pytest")
    assert not owned(me, "definitely-not-in-my-cmdline")
    assert not owned(None)
    assert not owned(2**22 + 12345)


def test_supervisor_restarts_after_a_reboot(tmp_path: Path) -> None:
    # The fake "nspawn" exits with 133 (reboot) twice, then 0 (poweroff).
    counter = tmp_path / "count"
    script = (
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
        '[ "$n" -lt 3 ] && exit 133; exit 0'
    )
    rc = supervisor.main(["--node-dir", str(tmp_path), "--", "sh", "-c", script])
    assert rc == 0
    assert counter.read_text().strip() == "3"
    assert not (tmp_path / "runner.pid").exists() and not (tmp_path / "nspawn.pid").exists()


def test_supervisor_forwards_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioner.providers.nspawn.supervisor",
         "--node-dir", str(tmp_path), "--", "sleep", "60"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not (tmp_path / "nspawn.pid").exists():
        assert time.monotonic() < deadline, "supervisor did not start its child"
        time.sleep(0.05)
    child = int((tmp_path / "nspawn.pid").read_text())
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM  # sleep's status, passed on
    assert time.monotonic() - start < 5
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()


def test_supervisor_requires_a_command(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        supervisor.main(["--node-dir", str(tmp_path)])


# --- CLI ----------------------------------------------------------------------------------


def test_cli_reports_a_bad_spec(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: provisioner.dev/v1alpha1\nkind: Cluster\n")
    result = CliRunner().invoke(app, ["up", str(bad)])
    assert result.exit_code == 1
    assert "problem" in result.output and "metadata" in result.output


def test_cli_status_of_a_cluster_never_made(state_root: Path, data_root: Path) -> None:
    result = CliRunner().invoke(app, ["status", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    for name in ("lab-cp1", "lab-cp2", "lab-cp3", "lab-w1", "lab-w2"):
        assert name in result.output
    assert result.output.count("absent") == 5


def test_cli_up_as_non_root_names_the_fix(
    state_root: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(app, ["up", str(EXAMPLE)])
    assert result.exit_code == 1
    assert "run it as root" in result.output


def test_known_hosts_keep_a_machine_that_left_the_spec_while_it_exists(
        data_root: Path, tmp_path: Path) -> None:
    """A worker removed from the spec is still reached (drain, reset) by its pinned key while
    its machine exists; a machine that no longer exists is forgotten."""
    from provisioner.providers.nspawn.provider import NspawnMachines
    from provisioner.providers.ssh import ClusterSSH

    cluster = load_file(EXAMPLE, require_files=False)
    provider = NspawnMachines(cluster, print)
    configs = [_config(data_root, "lab-cp1")]
    keys = configs[0].paths.rootfs / "etc/ssh"
    keys.mkdir(parents=True)
    (keys / "ssh_host_ed25519_key.pub").write_text("ssh-ed25519 AAAAcp1 root@lab-cp1\n")
    ssh = ClusterSSH(tmp_path / "id", tmp_path / "known_hosts")
    ssh.known_hosts.write_text("lab-w2,192.168.56.15 ssh-ed25519 AAAAw2\n"
                               "lab-w9,192.168.56.99 ssh-ed25519 AAAAgone\n")
    paths.node_paths("lab", "lab-w2").rootfs.mkdir(parents=True)
    provider._write_known_hosts(ssh, configs)
    assert ssh.known_hosts.read_text().splitlines() == [
        "lab-cp1,192.168.56.11 ssh-ed25519 AAAAcp1",
        "lab-w2,192.168.56.15 ssh-ed25519 AAAAw2",
    ]
