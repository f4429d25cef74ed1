"""CI smoke test on real VMs: the vagrant provider, the top-level Vagrantfile and the offline
box, end to end on 2 libvirt VMs.

Scope: build (or reuse) the ``provisioner/debian12`` box, ``vagrant up`` a control-plane VM
and a worker VM from a spec, run the preflight, os, runtime and etcd phases over the logins
``vagrant ssh-config`` gave, check what they did (verify's ssh and etcd checks, plus direct
looks at each VM), then ``vagrant destroy -f`` and prove nothing is left: no domain, no
network, no qemu or dnsmasq process, and the libvirt daemons this test started are ended by
their PIDs. On hosts without hardware virtualization the VMs run under TCG (slow), so the
task set is the smallest that exercises every layer. Wall times are written to
``.provisioner/reports/vagrant-smoke.json``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
import yaml

from provisioner.execute import LineProgress, slowest_tasks
from provisioner.plan import build_plan, select_phases
from provisioner.providers.connections import Connection, read_connections
from provisioner.providers.ssh import ClusterSSH
from provisioner.providers.vagrant import box
from provisioner.providers.vagrant.config import network_names
from provisioner.providers.vagrant.provider import VagrantMachines
from provisioner.provision import ProvisionResult, artifacts_for, provision
from provisioner.spec.load import load_file
from provisioner.state import cluster_dir
from provisioner.verify import verify
from tests.fixtures.built_artifacts import built_local_source

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / ".provisioner" / "reports" / "vagrant-smoke.json"
ONLY = ["preflight", "os", "runtime", "etcd"]
CHECKS = ["ssh", "etcd-health", "etcd-leader", "etcd-cert-expiry"]
NAME = "vsmoke"
PKI = "/etc/kubernetes/pki/etcd"
SPEC = {
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
    },
}


@dataclass
class Smoke:
    spec: Path
    provider: VagrantMachines
    state: Path
    logins: dict[str, Connection]
    result: ProvisionResult
    times: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, command: str, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        c = self.logins[name]
        logins = ClusterSSH(c.key, self.state / "ssh" / "known_hosts")
        argv = ["ssh", *logins.options(c.port), f"{c.user}@{c.host}",
                f"sudo -n sh -c {shlex.quote(command)}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False,
                              stdin=subprocess.DEVNULL)
        if check:
            assert proc.returncode == 0, f"{name}: `{command}`: {proc.stderr}{proc.stdout}"
        return proc


def _pids(name: str) -> set[int]:
    proc = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
    return {int(p) for p in proc.stdout.split()}


def _virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True,
                          text=True, check=True, timeout=60).stdout


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
def smoke(tmp_path_factory: pytest.TempPathFactory, libvirt: None) -> Iterator[Smoke]:
    base = tmp_path_factory.mktemp("vagrant")
    times: dict[str, float] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROVISIONER_STATE_DIR", str(base / "state"))
        spec = base / "cluster.yaml"
        spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
        plan = build_plan(load_file(spec))
        wanted = artifacts_for(plan, select_phases(plan, ONLY, None))
        source = built_local_source(plan, wanted)
        data = dict(SPEC)
        data["spec"] = {**SPEC["spec"], "artifacts": {"source": "local", "path": str(source)}}
        spec.write_text(yaml.safe_dump(data, sort_keys=False))
        cluster = load_file(spec)
        provider = VagrantMachines(cluster, print)

        t0 = time.monotonic()
        box.ensure_box(box.BOX_NAME, dict(os.environ), print)
        times["box (build or reuse)"] = time.monotonic() - t0
        try:
            t0 = time.monotonic()
            provider.up()
            times["vagrant up, 2 VMs"] = time.monotonic() - t0
            t0 = time.monotonic()
            result = provision(spec, ONLY, None, None, True, LineProgress(sys.stdout))
            times["provision " + ",".join(ONLY)] = time.monotonic() - t0
            state = cluster_dir(NAME)
            yield Smoke(spec, provider, state, read_connections(state), result, times)
        finally:
            if "vagrant destroy -f" not in times:  # the last test did not get to it
                t0 = time.monotonic()
                provider.down(purge=True)
                times["vagrant destroy -f"] = time.monotonic() - t0
            REPORT.parent.mkdir(parents=True, exist_ok=True)
            REPORT.write_text(json.dumps({k: round(v, 1) for k, v in times.items()}, indent=1)
                              + "\n")
            print(f"vagrant smoke timings: {times}")


def test_phases_ran_on_both_vms(smoke: Smoke) -> None:
    r = smoke.result
    assert r.succeeded, f"provision failed: {r.failure}"
    assert [p.phase for p in r.phases] == ONLY
    totals = r.host_totals()
    assert set(totals) == {f"{NAME}-cp1", f"{NAME}-w1"}
    assert all(h.failed == 0 and h.unreachable == 0 for h in totals.values())
    assert r.changed > 0
    for t in slowest_tasks(r.run_dir / "events.jsonl", 3):
        smoke.times[f"slowest task: {t.phase} {t.host} {t.task}"] = t.seconds


def test_logins_come_from_vagrant_ssh_config(smoke: Smoke) -> None:
    assert set(smoke.logins) == {f"{NAME}-cp1", f"{NAME}-w1"}
    for c in smoke.logins.values():
        assert c.user == "vagrant"
        assert c.key.is_file() and c.key.stat().st_mode & 0o077 == 0
        assert str(c.key).startswith(str(smoke.state))  # Vagrant's state is the cluster's
        # The management address (DHCP on the isolated network), not the private one.
        assert ip_address(c.host) in ip_network("192.168.56.128/25"), c.host
    known = (smoke.state / "ssh" / "known_hosts").read_text()
    assert known.count("ssh-ed25519") == 2 and f"{NAME}-cp1,192.168.56.11," in known
    inventory = yaml.safe_load((smoke.state / "inventory.yaml").read_text())
    assert inventory["all"]["hosts"][f"{NAME}-w1"]["ansible_host"] == smoke.logins[
        f"{NAME}-w1"].host


def test_vms_match_the_spec(smoke: Smoke) -> None:
    for name, address in ((f"{NAME}-cp1", "192.168.56.11"), (f"{NAME}-w1", "192.168.56.12")):
        out = smoke.run(name, "hostname; ip -4 -o addr show; nproc; "
                              "awk '/MemTotal/{print $2}' /proc/meminfo").stdout.split("\n")
        assert out[0] == name
        assert f"inet {address}/25" in "\n".join(out)
        mem_kib = int([line for line in out if line.strip()][-1])
        assert 1900 * 1024 < mem_kib <= 2048 * 1024


def test_verify_checks_of_what_ran(smoke: Smoke) -> None:
    plan = build_plan(load_file(smoke.spec))
    results = verify(plan, smoke.state, only=CHECKS)
    bad = [f"{r.name}@{r.target}: {r.status} {r.evidence}" for r in results if r.status != "ok"]
    assert not bad, bad
    assert {r.name for r in results} == set(CHECKS)


def test_etcd_and_containerd_work_inside_the_vms(smoke: Smoke) -> None:
    cp = f"{NAME}-cp1"
    auth = (f"--cacert={PKI}/ca.crt --cert={PKI}/healthcheck-client.crt "
            f"--key={PKI}/healthcheck-client.key --endpoints=https://192.168.56.11:2379")
    smoke.run(cp, f"ETCDCTL_API=3 etcdctl {auth} put provisioner-smoke ok")
    got = smoke.run(cp, f"ETCDCTL_API=3 etcdctl {auth} get provisioner-smoke "
                        "--print-value-only").stdout
    assert got.strip() == "ok"
    for name in smoke.logins:
        out = smoke.run(name, "systemctl is-active containerd; ctr version | grep -c Version")
        assert out.stdout.split()[0] == "active"


def test_destroy_leaves_nothing(smoke: Smoke) -> None:
    t0 = time.monotonic()
    smoke.provider.down(purge=True)
    smoke.times["vagrant destroy -f"] = time.monotonic() - t0
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
    assert not read_connections(smoke.state)
    assert shutil.which("vagrant") is not None
