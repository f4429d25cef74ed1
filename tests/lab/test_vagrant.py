"""CI smoke test on real VMs, run the way a user runs it: plain ``vagrant up`` with the spec,
then ``kubectl get nodes`` through the admin kubeconfig, then ``vagrant destroy -f``.

Scope: build (or reuse) the ``provisioner/debian12`` box, the programs from upstream source
and the lab registry's images; then, with ``PROVISIONER_SPEC`` naming a 2-VM spec (a
control-plane VM and a worker VM on libvirt), the top-level Vagrantfile does the rest:
``vagrant up`` makes the VMs and its trigger converges and verifies the cluster once, after
the last VM (``provisioner provision SPEC --machines-running``), printing the progress and
the verify table and exiting 0. Then: the logins and pinned host keys are those ``machines
up`` records, in the cluster's state directory; both nodes are Ready for kubectl; a second
``vagrant provision`` changes nothing; ``vagrant halt`` and ``vagrant up`` bring the same
cluster back (same CA); ``vagrant destroy -f`` leaves no domain, network, qemu or dnsmasq
process, and no recorded login, while the PKI stays; the libvirt daemons this test started
are ended by their PIDs. A spec error stops ``vagrant up`` before any VM is made, with the
validator's report. The VMs reach the lab registry by its address (192.168.56.1, which its
certificate names), as Vagrant VMs have no host aliases. Wall times are written to
``.provisioner/reports/vagrant-smoke.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.plan import build_plan
from provisioner.providers.connections import Connection, read_connections
from provisioner.providers.ssh import ClusterSSH
from provisioner.providers.vagrant import box
from provisioner.providers.vagrant.config import network_names
from provisioner.providers.vagrant.provider import VagrantMachines
from provisioner.provision import artifacts_for, last_summary
from provisioner.spec.load import load_file
from provisioner.state import cluster_dir
from tests.fixtures import lab_registry
from tests.fixtures.built_artifacts import LAB_SOURCE, built_local_source

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / ".provisioner" / "reports" / "vagrant-smoke.json"
PROVISIONER = Path(sys.executable).with_name("provisioner")
NAME = "vsmoke"
NODES = (f"{NAME}-cp1", f"{NAME}-w1")
REGISTRY = str(lab_registry.ADDRESS)
SPEC: dict[str, Any] = {
    "apiVersion": "provisioner.dev/v1alpha1",
    "kind": "Cluster",
    "metadata": {"name": NAME},
    "spec": {
        "kubernetesVersion": "1.37.2",
        "provider": {
            "type": "vagrant",
            "vagrantProvider": "libvirt",
            "memoryMib": 2048,
            "cpus": 1,  # 2 host cores, 2 VMs: one emulated CPU each
            "libvirtDriver": "auto",
            # Both networks inside the lab's 192.168.56.0/24, isolated (no NAT).
            "subnet": "192.168.56.0/25",
            "managementSubnet": "192.168.56.128/25",
            "managementNetworkMode": "none",
        },
        "controlPlane": {"count": 1},
        "workers": {"count": 1},
        "registries": {
            # The host's address on the VMs' private network is the registry's own.
            "mirrors": [{"registry": r, "endpoints": [f"https://{REGISTRY}"]}
                        for r in ("docker.io", "registry.k8s.io", "ghcr.io")],
            "private": [{"host": REGISTRY, "caFile": str(lab_registry.DIR / "ca.crt"),
                         "username": lab_registry.USER,
                         "passwordFile": str(lab_registry.DIR / "password")}],
        },
    },
}
INVALID = ROOT / "tests" / "specs" / "invalid" / "119-vagrant-memory-low.yaml"
# seconds: VMs boot and every task runs under software emulation on the lab hosts
UP_TIMEOUT = 3 * 3600
PROVISION_TIMEOUT = 3600


@dataclass
class Smoke:
    spec: Path
    env: dict[str, str]
    state: Path
    logs: Path
    up: subprocess.CompletedProcess[str]
    times: dict[str, float] = field(default_factory=dict)

    def vagrant(self, *args: str, timeout: float, spec: Path | None = None
                ) -> subprocess.CompletedProcess[str]:
        env = self.env if spec is None else {**self.env, "PROVISIONER_SPEC": str(spec)}
        return _vagrant(env, self.logs, args, timeout, self.times)

    def logins(self) -> dict[str, Connection]:
        return read_connections(self.state)

    def run(self, name: str, command: str, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        c = self.logins()[name]
        logins = ClusterSSH(c.key, self.state / "ssh" / "known_hosts")
        argv = ["ssh", *logins.options(c.port), f"{c.user}@{c.host}",
                f"sudo -n sh -c {shlex.quote(command)}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False,
                              stdin=subprocess.DEVNULL)
        if check:
            assert proc.returncode == 0, f"{name}: `{command}`: {proc.stderr}{proc.stdout}"
        return proc

    def kubectl(self, *args: str) -> str:
        kubectl = LAB_SOURCE / "kubectl" / SPEC["spec"]["kubernetesVersion"] / "kubectl"
        proc = subprocess.run([str(kubectl), "--kubeconfig", str(self.state / "admin.kubeconfig"),
                               *args], capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def summary(self) -> dict[str, Any]:
        summary = last_summary(self.state)
        assert summary is not None, "no provision run recorded"
        return summary


def _vagrant(env: dict[str, str], logs: Path, args: tuple[str, ...], timeout: float,
             times: dict[str, float]) -> subprocess.CompletedProcess[str]:
    """``vagrant ARGS`` in the checkout, as a user runs it: output shown as it comes, kept in
    ``logs/vagrant-<args>.log`` and returned (stdout and stderr together)."""
    label = " ".join(("vagrant", *args))
    log = logs / f"{label.replace(' ', '-').replace('/', '_')}.log"
    lines: list[str] = []
    start = time.monotonic()
    deadline = start + timeout
    with open(log, "w") as fh:
        proc = subprocess.Popen(["vagrant", *args], cwd=ROOT, env=env, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            lines.append(line)
            print(line, end="", flush=True)
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGTERM)  # the vagrant this call started
                proc.wait()
                pytest.fail(f"`{label}` did not finish within {timeout:.0f}s; see {log}")
        rc = proc.wait()
    times[label] = round(time.monotonic() - start, 1)
    out = "".join(lines)
    return subprocess.CompletedProcess(["vagrant", *args], rc, out, out)


def _pids(name: str) -> set[int]:
    proc = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
    return {int(p) for p in proc.stdout.split()}


def _virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True,
                          text=True, check=True, timeout=60).stdout


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def libvirt() -> Iterator[None]:
    """virtlogd and libvirtd running; the ones this fixture starts are ended by PID after.

    libvirtd runs in the foreground under ``tini -s``: libvirt probes QEMU with daemonized
    processes, and where PID 1 does not reap orphans (this container's init) each probe
    waits for its zombie, which made every ``capabilities`` call take 16-30 s instead of
    about 1.5 s.
    """
    started: list[tuple[int, subprocess.Popen[bytes] | None]] = []
    if not _pids("virtlogd"):
        subprocess.run(["virtlogd", "-d"], check=True, timeout=60)
        deadline = time.monotonic() + 30
        while not _pids("virtlogd") and time.monotonic() < deadline:
            time.sleep(0.2)
        started += [(pid, None) for pid in sorted(_pids("virtlogd"))]
    if not _pids("libvirtd"):
        reaper = subprocess.Popen(["tini", "-s", "--", "libvirtd"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        started.append((reaper.pid, reaper))
    deadline = time.monotonic() + 30
    while subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True,
                         check=False).returncode != 0:
        assert time.monotonic() < deadline, "libvirtd did not answer within 30 s"
        time.sleep(0.5)
    try:
        yield
    finally:
        for pid, proc in reversed(started):  # libvirtd (through tini) first, then virtlogd
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            if proc is not None:
                proc.wait(timeout=30)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
        left = [pid for pid, _ in started if Path(f"/proc/{pid}").exists()]
        assert not left, f"libvirt daemons still running: {left}"


@pytest.fixture(scope="module")
def user_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    """The environment a user's shell has for plain ``vagrant``: the spec and a state root
    (this test's own), nothing from the provider (no VAGRANT_DOTFILE_PATH, no
    PROVISIONER_VAGRANT_CONFIG)."""
    base = tmp_path_factory.mktemp("vagrant")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAGRANT_", "PROVISIONER_"))}
    env.update({
        "PROVISIONER_STATE_DIR": str(base / "state"),
        "PROVISIONER_BIN": str(PROVISIONER),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_NO_COLOR": "1",
    })
    (base / "logs").mkdir()
    return env, base


def test_spec_error_stops_vagrant_up_before_any_vm(user_env: tuple[dict[str, str], Path],
                                                   libvirt: None) -> None:
    env, base = user_env
    before = _virsh("list", "--all", "--name")
    proc = _vagrant({**env, "PROVISIONER_SPEC": str(INVALID)}, base / "logs", ("up",), 600, {})
    assert proc.returncode != 0
    assert "is invalid; nothing was created" in proc.stdout
    assert "spec.provider.memoryMib" in proc.stdout  # the validator's report: field and fix
    assert _virsh("list", "--all", "--name") == before
    assert not (base / "state" / "clusters").exists()


@pytest.fixture(scope="module")
def smoke(user_env: tuple[dict[str, str], Path], libvirt: None,
          lab_registry_up: lab_registry.LabRegistry) -> Iterator[Smoke]:
    env, base = user_env
    times: dict[str, float] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROVISIONER_STATE_DIR", env["PROVISIONER_STATE_DIR"])
        spec = base / "cluster.yaml"
        spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
        plan = build_plan(load_file(spec))
        t0 = time.monotonic()
        source = built_local_source(plan, artifacts_for(plan, plan.phases))
        times["artifacts (build or reuse)"] = round(time.monotonic() - t0, 1)
        data = dict(SPEC)
        data["spec"] = {**SPEC["spec"], "artifacts": {"source": "local", "path": str(source)}}
        spec.write_text(yaml.safe_dump(data, sort_keys=False))
        env = {**env, "PROVISIONER_SPEC": str(spec)}

        t0 = time.monotonic()
        box.ensure_box(box.BOX_NAME, dict(os.environ), print)  # `provisioner vagrant box`
        times["box (build or reuse)"] = round(time.monotonic() - t0, 1)
        state = cluster_dir(NAME)
        try:
            up = _vagrant(env, base / "logs", ("up",), UP_TIMEOUT, times)
            yield Smoke(spec, env, state, base / "logs", up, times)
        finally:
            # Whatever the tests did: the provider's path, on the same Vagrant state as
            # plain vagrant (a no-op destroy after the last test's).
            t0 = time.monotonic()
            VagrantMachines(load_file(spec), print).down(purge=True)
            times["cleanup: machines down --purge"] = round(time.monotonic() - t0, 1)
            REPORT.parent.mkdir(parents=True, exist_ok=True)
            REPORT.write_text(json.dumps(times, indent=1) + "\n")
            print(f"vagrant smoke timings: {times}")


def test_vagrant_up_makes_the_vms_then_converges_and_verifies_once(smoke: Smoke) -> None:
    out = smoke.up.stdout
    assert smoke.up.returncode == 0, out[-4000:]
    # The trigger ran the provision once, after the last VM, with its progress and table.
    assert out.count("provision succeeded:") == 1, out[-4000:]
    assert f"{NODES[-1]}: Running trigger: provisioner: converge and verify cluster {NAME}" \
        in out
    assert "phase verify: verify passed:" in out
    assert "check" in out and "evidence" in out  # the verify table's header
    assert "admin kubeconfig:" in out
    summary = smoke.summary()
    assert summary["succeeded"], summary["failure"]
    ran = [p["phase"] for p in summary["phases"]]
    assert {"preflight", "os", "runtime", "etcd", "control-plane", "node"} <= set(ran), ran
    assert str(summary["verify"]).startswith("verify passed:"), summary["verify"]
    verify = json.loads((Path(summary["run_dir"]) / "verify.json").read_text())
    assert verify["passed"] and verify["counts"]["fail"] == 0, verify["counts"]


def test_logins_and_host_keys_are_pinned_as_by_machines_up(smoke: Smoke) -> None:
    logins = smoke.logins()
    assert set(logins) == set(NODES)
    for c in logins.values():
        assert c.user == "vagrant"
        assert c.key.is_file() and c.key.stat().st_mode & 0o077 == 0
        assert str(c.key).startswith(str(smoke.state))  # Vagrant's state is the cluster's
        # The management address (DHCP on the isolated network), not the private one.
        assert ip_address(c.host) in ip_network("192.168.56.128/25"), c.host
    # Nothing of these VMs in the checkout's own .vagrant/.
    assert not list((ROOT / ".vagrant" / "machines").glob(f"{NAME}-*"))
    known = (smoke.state / "ssh" / "known_hosts").read_text()
    assert known.count("ssh-ed25519") == 2 and f"{NAME}-cp1,192.168.56.11," in known
    for name in NODES:
        # The pinned key is the VM's own (strict checking: a login proves it matches).
        pub = smoke.run(name, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
        assert " ".join(pub) in known
    inventory = yaml.safe_load((smoke.state / "inventory.yaml").read_text())
    assert inventory["all"]["hosts"][NODES[1]]["ansible_host"] == logins[NODES[1]].host


def test_vms_match_the_spec(smoke: Smoke) -> None:
    for name, address in zip(NODES, ("192.168.56.11", "192.168.56.12"), strict=True):
        out = smoke.run(name, "hostname; ip -4 -o addr show; nproc; "
                              "awk '/MemTotal/{print $2}' /proc/meminfo").stdout.split("\n")
        assert out[0] == name
        assert f"inet {address}/25" in "\n".join(out)
        mem_kib = int([line for line in out if line.strip()][-1])
        assert 1900 * 1024 < mem_kib <= 2048 * 1024


def test_kubectl_get_nodes_through_the_admin_kubeconfig(smoke: Smoke) -> None:
    print(smoke.kubectl("get", "nodes", "-o", "wide"))
    nodes = json.loads(smoke.kubectl("get", "nodes", "-o", "json"))["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == sorted(NODES)
    for n in nodes:
        ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", n["metadata"]["name"]


def test_second_vagrant_provision_changes_nothing(smoke: Smoke) -> None:
    proc = smoke.vagrant("provision", timeout=PROVISION_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert proc.stdout.count("provision succeeded: 0 phases, 0 changed tasks") == 1
    assert "phase verify: verify passed:" in proc.stdout
    summary = smoke.summary()
    assert summary["succeeded"] and summary["changed"] == 0 and not summary["phases"]
    assert summary["survey"] == dict.fromkeys(NODES, 0), summary["survey"]


def test_halt_and_up_bring_the_same_cluster_back(smoke: Smoke) -> None:
    ca = {f: _sha256(smoke.state / "pki" / f) for f in ("ca.crt", "ca.key")}
    proc = smoke.vagrant("halt", timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    proc = smoke.vagrant("up", timeout=UP_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert proc.stdout.count("provision succeeded:") == 1
    assert "phase verify: verify passed:" in proc.stdout
    assert {f: _sha256(smoke.state / "pki" / f) for f in ca} == ca  # no new CA
    nodes = json.loads(smoke.kubectl("get", "nodes", "-o", "json"))["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == sorted(NODES)


def test_vagrant_destroy_leaves_nothing_but_the_pki(smoke: Smoke) -> None:
    proc = smoke.vagrant("destroy", "-f", timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    domains = _virsh("list", "--all", "--name")
    assert NAME not in domains, domains
    networks = _virsh("net-list", "--all", "--name")
    assert all(n not in networks for n in network_names(NAME)), networks
    qemu = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True,
                          check=False).stdout
    assert NAME not in qemu, qemu
    dnsmasq = subprocess.run(["pgrep", "-af", "dnsmasq"], capture_output=True, text=True,
                             check=False).stdout
    assert all(n not in dnsmasq for n in network_names(NAME)), dnsmasq
    # Vagrant's machines and the logins provision kept are gone; the cluster's PKI stays.
    assert not read_connections(smoke.state)
    assert not (smoke.state / "ssh" / "known_hosts").exists()
    assert not (smoke.state / "inventory.yaml").exists()
    assert not list((smoke.state / "vagrant" / "dot" / "machines").glob("*/libvirt/id"))
    assert (smoke.state / "pki" / "ca.key").is_file()
