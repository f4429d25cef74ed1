"""Mode vip: keepalived's health check, VRRP interface and VRRP password as rendered, and the
rendered interface script run under the shells a Debian node has (dash is /bin/sh)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from provisioner.components import File
from provisioner.components.lb import (
    INTERFACE_INCLUDE,
    INTERFACE_SCRIPT,
    KEEPALIVED_CONF,
    KEEPALIVED_DROPIN,
    Keepalived,
)
from provisioner.plan import Plan, build_plan
from provisioner.providers.nspawn import image
from provisioner.providers.vagrant import box
from provisioner.render.material import prepare
from provisioner.render.tree import RenderedTree, render, write_tree
from provisioner.spec import load_file
from tests.golden_util import summarise

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "tests" / "golden" / "5cp-dedicated-etcd" / "spec.yaml"
ROLE = ROOT / "playbooks" / "roles" / "keepalived"
SHELLS = ("dash", "sh", "bash")


def _rendered(state: Path) -> tuple[Plan, RenderedTree]:
    plan = build_plan(load_file(SPEC))
    material, _ = prepare(plan, state, SPEC.parent)
    return plan, render(plan, material, Path("/k"))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Plan, RenderedTree]:
    return _rendered(tmp_path_factory.mktemp("state"))


def _file(tree: RenderedTree, host: str, path: str) -> File:
    for f in tree.hosts[host]:
        if f.path == path:
            return f
    raise AssertionError(f"{host}:{path} not rendered")


def _conf(tree: RenderedTree, host: str) -> str:
    return _file(tree, host, KEEPALIVED_CONF).content.decode()


def _block(conf: str, name: str) -> str:
    """The body of the top-level block ``name { ... }`` (blocks nest at most two deep here)."""
    m = re.search(rf"^{re.escape(name)} \{{\n(.*?)^\}}", conf, re.S | re.M)
    assert m, f"no block {name!r} in:\n{conf}"
    return m.group(1)


def _directives(body: str) -> list[list[str]]:
    """Non-comment lines of a block body, split as keepalived splits them."""
    lines = [ln.split("#", 1)[0].strip() for ln in body.splitlines()]
    return [shlex.split(ln) for ln in lines if ln]


def _check_argv(conf: str) -> list[str]:
    script = [d for d in _directives(_block(conf, "vrrp_script apiserver_lb_alive"))
              if d[0] == "script"]
    assert len(script) == 1, conf
    return script[0][1].split()


def _settings(body: str) -> dict[str, str]:
    return {d[0]: " ".join(d[1:]) for d in _directives(body) if len(d) > 1}


# 1. The health check: no bash-only /dev/tcp, no shell at all, tools every node has.

def test_check_runs_curl_directly_without_a_shell(rendered: tuple[Plan, RenderedTree]) -> None:
    plan, tree = rendered
    port = plan.cluster.spec.load_balancer.port
    for host in plan.control_plane:
        conf = _conf(tree, host.name)
        assert "/dev/tcp" not in conf
        argv = _check_argv(conf)
        assert argv[0] == "/usr/bin/curl", argv  # absolute: keepalived execs it, no PATH lookup
        assert Path(argv[0]).name not in SHELLS
        assert argv[-1] == f"https://127.0.0.1:{port}/livez"
        # anonymous auth is off: /livez answers 401, which must count as alive
        assert "--fail" not in argv and "-f" not in argv
        assert "--max-time" in argv
        vrrp_script = _settings(_block(conf, "vrrp_script apiserver_lb_alive"))
        assert float(argv[argv.index("--max-time") + 1]) < float(vrrp_script["timeout"])


def test_curl_is_on_every_node_image() -> None:
    """The check's program is installed on the machines the providers build."""
    assert "curl" in image.PACKAGES
    assert "curl" in box.PACKAGES


def test_check_command_is_valid_curl_and_fails_when_nothing_listens() -> None:
    """Run the exact argv against a closed port: curl must parse every option and report a
    refused connection (exit 7), not an option error (exit 2)."""
    if not Path("/usr/bin/curl").exists():
        pytest.skip("no /usr/bin/curl on this machine")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = list(Keepalived.check_command(port))
    done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    assert done.returncode == 7, (done.returncode, done.stderr)


def test_check_reaches_the_local_haproxy(rendered: tuple[Plan, RenderedTree]) -> None:
    """haproxy listens on loopback (the check's target) and on the VIP on every VIP host."""
    plan, tree = rendered
    lb = plan.cluster.spec.load_balancer
    for host in plan.control_plane:
        cfg = _file(tree, host.name, "/etc/haproxy/haproxy.cfg").content.decode()
        binds = re.findall(r"^\s+bind (\S+)$", cfg, re.M)
        assert binds == [f"127.0.0.1:{lb.port}", f"{lb.vip}:{lb.port}"], binds


def test_scripts_run_unprivileged_with_script_security(
        rendered: tuple[Plan, RenderedTree]) -> None:
    plan, tree = rendered
    conf = _conf(tree, plan.control_plane[0].name)
    global_defs = _directives(_block(conf, "global_defs"))
    assert ["enable_script_security"] in global_defs
    users = [d for d in global_defs if d[0] == "script_user"]
    assert users and users[0][1] not in ("root", "0"), global_defs
    instance = _block(conf, "vrrp_instance apiserver")
    assert re.search(r"^\s+track_script \{\n\s+apiserver_lb_alive\n\s+\}$", instance, re.M)


# 2. The VRRP interface: looked up on the host from its address, never hard-coded.

def test_interface_is_looked_up_at_start(rendered: tuple[Plan, RenderedTree]) -> None:
    plan, tree = rendered
    for host in plan.control_plane:
        conf = _conf(tree, host.name)
        instance = _directives(_block(conf, "vrrp_instance apiserver"))
        assert not [d for d in instance if d[0] == "interface"], conf
        assert ["include", INTERFACE_INCLUDE] in instance
        dropin = _file(tree, host.name, KEEPALIVED_DROPIN)
        service = dict(ln.split("=", 1) for ln in dropin.content.decode().splitlines()
                       if "=" in ln and not ln.startswith("#"))
        assert service["ExecStartPre"].split() == [INTERFACE_SCRIPT, str(host.address),
                                                   INTERFACE_INCLUDE]
        # systemd makes /run/<RuntimeDirectory> before ExecStartPre writes the include there
        assert Path(INTERFACE_INCLUDE).parent == Path("/run") / service["RuntimeDirectory"]
        script = _file(tree, host.name, INTERFACE_SCRIPT)
        assert script.mode == 0o755 and script.content.startswith(b"#!/bin/sh\n")
        for f in (dropin, script):
            assert f.restarts == ("keepalived",) and not f.secret
    assert KEEPALIVED_DROPIN.startswith("/etc/systemd/system/keepalived.service.d/")
    assert KEEPALIVED_DROPIN.endswith(".conf")


def test_role_uses_the_rendered_script_path() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert defaults["keepalived_interface_script"] == INTERFACE_SCRIPT
    assert "keepalived_interface_script" in (ROLE / "tasks" / "main.yml").read_text()


def _fake_ip(bin_dir: Path, output: str) -> Path:
    """An ``ip`` that records its arguments and prints ``output``."""
    log = bin_dir / "ip.args"
    ip = bin_dir / "ip"
    ip.write_text(f"#!/bin/sh\necho \"$*\" > {shlex.quote(str(log))}\n"
                  f"printf '%s' {shlex.quote(output)}\n")
    ip.chmod(0o755)
    return log


def _run_script(shell: str, script: Path, bin_dir: Path, *args: str
                ) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LC_ALL": "C"}
    return subprocess.run([shell, str(script), *args], capture_output=True, text=True,
                          env=env, timeout=30, check=False)


@pytest.fixture()
def interface_script(rendered: tuple[Plan, RenderedTree], tmp_path: Path) -> Path:
    plan, tree = rendered
    path = tmp_path / "provisioner-keepalived-interface"
    path.write_bytes(_file(tree, plan.control_plane[0].name, INTERFACE_SCRIPT).content)
    return path


@pytest.mark.parametrize("shell", SHELLS)
def test_interface_script_writes_the_interface_holding_the_address(
        shell: str, interface_script: Path, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell} here")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = _fake_ip(bin_dir, (
        "3: eth1    inet 192.168.56.12/24 brd 192.168.56.255 scope global eth1\\       "
        "valid_lft forever preferred_lft forever\n"
        "9: other    inet 192.168.56.12/32 scope global other\\       valid_lft forever\n"))
    out = tmp_path / "run" / "interface.conf"
    out.parent.mkdir()
    done = _run_script(shell, interface_script, bin_dir, "192.168.56.12", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "interface eth1\n"
    assert log.read_text().split() == ["-o", "-4", "addr", "show", "to", "192.168.56.12/32"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["interface.conf"]
    printed = _run_script(shell, interface_script, bin_dir, "192.168.56.12")
    assert (printed.returncode, printed.stdout) == (0, "interface eth1\n")


@pytest.mark.parametrize("shell", SHELLS)
def test_interface_script_fails_when_no_interface_holds_the_address(
        shell: str, interface_script: Path, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell} here")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_ip(bin_dir, "")
    out = tmp_path / "interface.conf"
    done = _run_script(shell, interface_script, bin_dir, "192.168.56.12", str(out))
    assert done.returncode != 0
    assert "no interface holds 192.168.56.12" in done.stderr
    assert not out.exists()


def test_interface_script_reads_real_ip_output(interface_script: Path, tmp_path: Path) -> None:
    """The real iproute2 output format: loopback holds 127.0.0.1."""
    if shutil.which("ip") is None or shutil.which("dash") is None:
        pytest.skip("needs ip and dash")
    done = subprocess.run(["dash", str(interface_script), "127.0.0.1"], capture_output=True,
                          text=True, timeout=30, check=False,
                          env={"PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"})
    assert (done.returncode, done.stdout) == (0, "interface lo\n"), done.stderr


# 3. VRRP authentication: a per-cluster secret, in a secret file.

def _auth(conf: str) -> dict[str, str]:
    instance = _block(conf, "vrrp_instance apiserver")
    m = re.search(r"^\s+authentication \{\n(.*?)^\s+\}", instance, re.S | re.M)
    assert m, conf
    return _settings(m.group(1))


def test_vrrp_password_is_shared_by_the_cluster_and_secret(
        rendered: tuple[Plan, RenderedTree], tmp_path: Path) -> None:
    plan, tree = rendered
    auths = [_auth(_conf(tree, h.name)) for h in plan.control_plane]
    password = auths[0]["auth_pass"]
    assert all(a == {"auth_type": "PASS", "auth_pass": password} for a in auths), auths
    assert re.fullmatch(r"[A-Z2-7]{8}", password), password  # VRRPv2 PASS: 8 characters
    for host, files in tree.hosts.items():
        for f in files:
            if password.encode() in f.content:
                assert f.path == KEEPALIVED_CONF and f.secret and f.mode == 0o600, (host, f)
                assert summarise(f) == b"<secret>\n"
    assert not any(password.encode() in data for data in tree.runner.values())
    write_tree(tree, tmp_path / "out")
    on_disk = tmp_path / "out" / "hosts" / plan.control_plane[0].name / KEEPALIVED_CONF[1:]
    assert stat.S_IMODE(on_disk.stat().st_mode) == 0o600


def test_vrrp_password_is_kept_per_cluster(rendered: tuple[Plan, RenderedTree],
                                           tmp_path: Path) -> None:
    """Same state directory: the same password; another state directory: another one."""
    plan, tree = rendered
    first = _auth(_conf(tree, plan.control_plane[0].name))["auth_pass"]
    state = tmp_path / "state"
    _, again = _rendered(state)
    _, again2 = _rendered(state)
    other = _auth(_conf(again, plan.control_plane[0].name))["auth_pass"]
    assert _auth(_conf(again2, plan.control_plane[0].name))["auth_pass"] == other
    assert other != first
