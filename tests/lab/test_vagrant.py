"""Tests on real VMs, run the way a user runs them: plain ``vagrant`` with the spec in
``PROVISIONER_SPEC``, and the checkout's ``provisioner``.

Both flows use a 2-VM spec (a control-plane VM and a worker VM on libvirt) and first build
(or reuse) the ``provisioner/debian12`` box and the programs from upstream source. Wall times
are written to ``.provisioner/reports/vagrant-smoke.json`` (one section per flow).

Smoke test (the default; what CI runs): the VMs and the first four phases only, as the old
smoke test ran them, without converging the control plane, nodes and addons.
``vagrant up --no-provision`` makes the VMs only: the Vagrantfile's converge trigger does not
fire and nothing is recorded yet. ``provisioner provision SPEC --machines-running --only
preflight,os,runtime,etcd`` then records the logins and pinned host keys as ``machines up``
does, in the cluster's state directory, and runs those phases on both VMs. After that:
the VMs match the spec; ``provisioner verify SPEC --only ssh,etcd-health,etcd-leader,
etcd-cert-expiry`` passes; etcd and containerd answer inside the VMs; ``vagrant destroy -f``
leaves no domain, network, qemu or dnsmasq process, and no recorded login, while the PKI
stays. A spec error stops ``vagrant up`` before any VM is made, with the validator's report.

Full acceptance (issue 16; only with ``PROVISIONER_VM_FULL=1``, else reported as skipped):
plain ``vagrant up``, whose trigger converges and verifies the cluster once, after the last VM
(``provisioner provision SPEC --machines-running``: every phase, then the verify table);
both nodes Ready for kubectl through the admin kubeconfig; a second ``vagrant provision``
changes nothing; ``vagrant halt`` and ``vagrant up`` bring the same cluster back (same CA);
``vagrant destroy -f`` leaves nothing but the PKI. Without usable KVM every Ansible task costs
about 20 s under software emulation (TCG), so this takes over an hour here and cannot fit in
CI's 90 minutes next to the rest of the suite. Its VMs reach the lab registry by its address
(192.168.56.1, which its certificate names), as Vagrant VMs have no host aliases.

The flows run one after the other (class-scoped fixtures: the smoke test's VMs are destroyed
before the full flow makes its own), each with its own state root. The libvirt daemons this
module started are ended by their PIDs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.plan import build_plan, select_phases
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
    },
}
# The full flow pulls its images (control plane, CNI, CoreDNS, ...) from the lab registry;
# the host's address on the VMs' private network is the registry's own.
FULL_SPEC: dict[str, Any] = {**SPEC, "spec": {**SPEC["spec"], "registries": {
    "mirrors": [{"registry": r, "endpoints": [f"https://{REGISTRY}"]}
                for r in ("docker.io", "registry.k8s.io", "ghcr.io")],
    "private": [{"host": REGISTRY, "caFile": str(lab_registry.DIR / "ca.crt"),
                 "username": lab_registry.USER,
                 "passwordFile": str(lab_registry.DIR / "password")}],
}}}
INVALID = ROOT / "tests" / "specs" / "invalid" / "119-vagrant-memory-low.yaml"
# The smoke test: the smallest set of phases that exercises every layer (the VMs, logins
# and pinned host keys, Ansible over them, artifacts, systemd units, TLS between the VMs),
# and verify's checks of what they installed.
SMOKE_PHASES = ("preflight", "os", "runtime", "etcd")
SMOKE_CHECKS = ("ssh", "etcd-health", "etcd-leader", "etcd-cert-expiry")
PKI = "/etc/kubernetes/pki/etcd"
FULL = os.environ.get("PROVISIONER_VM_FULL") == "1"
full_only = pytest.mark.skipif(
    not FULL,
    reason="full `vagrant up` acceptance (every phase + verify, vagrant provision, halt + up, "
           "destroy) takes over an hour on this host: no usable KVM, so the VMs run under "
           "software emulation (TCG) at ~20 s per Ansible task; run it by hand with "
           "PROVISIONER_VM_FULL=1 .venv/bin/pytest -m lab tests/lab/test_vagrant.py")
# seconds: VMs boot and every task runs under software emulation on the lab hosts
SMOKE_UP_TIMEOUT = 1800
SMOKE_PROVISION_TIMEOUT = 2400
UP_TIMEOUT = 3 * 3600
PROVISION_TIMEOUT = 3600

Report = dict[str, dict[str, float]]  # section ("setup", "smoke", "full") -> step -> seconds


@dataclass
class Flow:
    """One flow's cluster: its spec, the user's environment for plain ``vagrant`` and
    ``provisioner``, the cluster's state directory, the logs, the wall times, and the
    first ``vagrant up``."""

    spec: Path
    env: dict[str, str]
    state: Path
    logs: Path
    times: dict[str, float]
    up: subprocess.CompletedProcess[str]

    def vagrant(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return _run(["vagrant", *args], self.env, self.logs, timeout, self.times)

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


@dataclass
class SmokeFlow(Flow):
    """The smoke test's cluster: what was recorded right after ``vagrant up --no-provision``,
    and the ``provisioner provision --machines-running --only ...`` that followed."""

    logins_after_up: dict[str, Connection]
    summary_after_up: dict[str, Any] | None
    provision: subprocess.CompletedProcess[str]


def _run(argv: Sequence[str], env: dict[str, str], logs: Path, timeout: float,
         times: dict[str, float], label: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    """``argv`` in the checkout, as a user runs it: output shown as it comes, kept in
    ``logs/<label>.log`` and returned (stdout and stderr together); its wall time goes into
    ``times[label]`` (label: the command line, unless given; ``label (2)`` the second time)."""
    label = label or " ".join(argv)
    log = logs / f"{label.replace(' ', '-').replace('/', '_')}.log"
    lines: list[str] = []
    start = time.monotonic()
    deadline = start + timeout
    with open(log, "w") as fh:
        proc = subprocess.Popen(list(argv), cwd=ROOT, env=env, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            lines.append(line)
            print(line, end="", flush=True)
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGTERM)  # the command this call started
                proc.wait()
                pytest.fail(f"`{label}` did not finish within {timeout:.0f}s; see {log}")
        rc = proc.wait()
    key, n = label, 2
    while key in times:  # the same command again (`vagrant up` after `vagrant halt`)
        key, n = f"{label} ({n})", n + 1
    times[key] = round(time.monotonic() - start, 1)
    out = "".join(lines)
    return subprocess.CompletedProcess(list(argv), rc, out, out)


def _pids(name: str) -> set[int]:
    proc = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
    return {int(p) for p in proc.stdout.split()}


def _virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True,
                          text=True, check=True, timeout=60).stdout


def _volumes(pool: str) -> list[str]:
    """The names in ``virsh vol-list POOL``'s table (Debian 12's virsh 9.0 has no
    ``--name`` for vol-list): the first column of each row under the dashed rule."""
    table = _virsh("vol-list", pool).splitlines()
    rule = next((i for i, line in enumerate(table) if line.startswith("---")), len(table))
    return [row.split()[0] for row in table[rule + 1:] if row.strip()]


def _clear_leftovers(cluster: str) -> None:
    """Domains, volumes and networks of this module's own cluster that an interrupted earlier
    run left in libvirt (its Vagrant state went with its tmp dir): without this, `vagrant up`
    fails with "Name `provisioner-<cluster>-cp1` of domain about to create is already
    taken". Only names this module makes (``provisioner-<cluster>-*``) are touched."""
    prefix = f"provisioner-{cluster}-"
    for domain in _virsh("list", "--all", "--name").split():
        if domain.startswith(prefix):
            print(f"removing libvirt domain {domain} left by an earlier run")
            subprocess.run(["virsh", "-c", "qemu:///system", "destroy", domain],
                           capture_output=True, check=False, timeout=120)
            _virsh("undefine", domain, "--remove-all-storage")
    for pool in _virsh("pool-list", "--name").split():  # an inactive pool lists nothing
        for volume in _volumes(pool):
            if volume.startswith(prefix):
                print(f"removing libvirt volume {pool}/{volume} left by an earlier run")
                _virsh("vol-delete", volume, "--pool", pool)
    networks = _virsh("net-list", "--all", "--name").split()
    for network in (n for n in network_names(cluster) if n in networks):
        print(f"removing libvirt network {network} left by an earlier run")
        subprocess.run(["virsh", "-c", "qemu:///system", "net-destroy", network],
                       capture_output=True, check=False, timeout=120)
        _virsh("net-undefine", network)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _user_env(base: Path) -> dict[str, str]:
    """The environment a user's shell has for plain ``vagrant``: a state root (this flow's
    own), nothing from the provider (no VAGRANT_DOTFILE_PATH, no
    PROVISIONER_VAGRANT_CONFIG)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAGRANT_", "PROVISIONER_"))}
    env.update({
        "PROVISIONER_STATE_DIR": str(base / "state"),
        "PROVISIONER_BIN": str(PROVISIONER),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_NO_COLOR": "1",
    })
    (base / "logs").mkdir(exist_ok=True)
    return env


def _write_spec(path: Path, data: dict[str, Any], phases: Sequence[str] | None,
                times: dict[str, float]) -> Path:
    """``data`` written to ``path`` with a local artifact source holding what ``phases``
    (all, when None) install, built from upstream source or reused."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    plan = build_plan(load_file(path))
    selected = plan.phases if phases is None else select_phases(plan, list(phases), None)
    t0 = time.monotonic()
    source = built_local_source(plan, artifacts_for(plan, selected))
    times["artifacts (build or reuse)"] = round(time.monotonic() - t0, 1)
    data = {**data, "spec": {**data["spec"], "artifacts": {"source": "local",
                                                           "path": str(source)}}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _record_run(times: dict[str, float], summary: dict[str, Any], what: str) -> None:
    """A provision run's phase times and slowest tasks, for the report."""
    for p in summary["phases"]:
        times[f"{what}: phase {p['phase']}"] = round(p["seconds"], 1)
    for t in summary["slowest"][:3]:
        times[f"{what}: slowest task: {t['phase']} {t['host']} {t['task']}"] = t["seconds"]


def _purge(spec: Path, times: dict[str, float]) -> None:
    """Whatever the tests did: the provider's path, on the same Vagrant state as plain
    vagrant (a no-op destroy after the last test's)."""
    t0 = time.monotonic()
    VagrantMachines(load_file(spec), print).down(purge=True)
    times["cleanup: machines down --purge"] = round(time.monotonic() - t0, 1)


@contextlib.contextmanager
def _user_flow(tmp_path_factory: pytest.TempPathFactory, report: Report, flow: str,
               data: dict[str, Any], phases: Sequence[str] | None
               ) -> Iterator[tuple[Path, dict[str, str], dict[str, float]]]:
    """(spec, environment, times) of one flow: its own directory and state root, the spec
    written with its artifacts; whatever the flow made is purged and the report written
    when it ends."""
    times = report.setdefault(flow, {})
    base = tmp_path_factory.mktemp(f"vagrant-{flow}")
    env = _user_env(base)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROVISIONER_STATE_DIR", env["PROVISIONER_STATE_DIR"])
        spec = _write_spec(base / "cluster.yaml", data, phases, times)
        env["PROVISIONER_SPEC"] = str(spec)
        try:
            yield spec, env, times
        finally:
            _purge(spec, times)
            _write_report(report)


def _write_report(report: Report) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=1) + "\n")
    print(f"vagrant smoke timings: {report}")


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
    _clear_leftovers(NAME)
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
def report() -> Iterator[Report]:
    """The wall times of this module's flows; written again at the end of each flow."""
    times: Report = {"setup": {}}
    yield times
    _write_report(times)


@pytest.fixture(scope="module")
def box_ready(libvirt: None, report: Report) -> None:
    """The offline box, as ``provisioner vagrant box`` makes it (built once, then reused)."""
    t0 = time.monotonic()
    box.ensure_box(box.BOX_NAME, dict(os.environ), print)
    report["setup"]["box (build or reuse)"] = round(time.monotonic() - t0, 1)


def test_spec_error_stops_vagrant_up_before_any_vm(tmp_path: Path, libvirt: None) -> None:
    env = {**_user_env(tmp_path), "PROVISIONER_SPEC": str(INVALID)}
    before = _virsh("list", "--all", "--name")
    proc = _run(["vagrant", "up"], env, tmp_path / "logs", 600, {})
    assert proc.returncode != 0
    assert "is invalid; nothing was created" in proc.stdout
    assert "spec.provider.memoryMib" in proc.stdout  # the validator's report: field and fix
    assert _virsh("list", "--all", "--name") == before
    assert not (tmp_path / "state" / "clusters").exists()


# Checks both flows make.

def _check_logins_pinned_as_by_machines_up(flow: Flow) -> None:
    logins = flow.logins()
    assert set(logins) == set(NODES)
    for c in logins.values():
        assert c.user == "vagrant"
        assert c.key.is_file() and c.key.stat().st_mode & 0o077 == 0
        assert str(c.key).startswith(str(flow.state))  # Vagrant's state is the cluster's
        # The management address (DHCP on the isolated network), not the private one.
        assert ip_address(c.host) in ip_network("192.168.56.128/25"), c.host
    # Nothing of these VMs in the checkout's own .vagrant/.
    assert not list((ROOT / ".vagrant" / "machines").glob(f"{NAME}-*"))
    known = (flow.state / "ssh" / "known_hosts").read_text()
    assert known.count("ssh-ed25519") == 2 and f"{NAME}-cp1,192.168.56.11," in known
    for name in NODES:
        # The pinned key is the VM's own (strict checking: a login proves it matches).
        pub = flow.run(name, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
        assert " ".join(pub) in known
    inventory = yaml.safe_load((flow.state / "inventory.yaml").read_text())
    assert inventory["all"]["hosts"][NODES[1]]["ansible_host"] == logins[NODES[1]].host


def _check_vms_match_the_spec(flow: Flow) -> None:
    for name, address in zip(NODES, ("192.168.56.11", "192.168.56.12"), strict=True):
        out = flow.run(name, "hostname; ip -4 -o addr show; nproc; "
                             "awk '/MemTotal/{print $2}' /proc/meminfo").stdout.split("\n")
        assert out[0] == name
        assert f"inet {address}/25" in "\n".join(out)
        mem_kib = int([line for line in out if line.strip()][-1])
        assert 1900 * 1024 < mem_kib <= 2048 * 1024


def _check_vagrant_destroy_leaves_nothing_but_the_pki(flow: Flow) -> None:
    proc = flow.vagrant("destroy", "-f", timeout=900)
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
    assert not read_connections(flow.state)
    assert not (flow.state / "ssh" / "known_hosts").exists()
    assert not (flow.state / "inventory.yaml").exists()
    assert not list((flow.state / "vagrant" / "dot" / "machines").glob("*/libvirt/id"))
    assert (flow.state / "pki" / "ca.key").is_file()


# The smoke test (default; CI).

@pytest.fixture(scope="class")
def smoke(tmp_path_factory: pytest.TempPathFactory, libvirt: None, box_ready: None,
          report: Report) -> Iterator[SmokeFlow]:
    """``vagrant up --no-provision``, then ``provisioner provision SPEC --machines-running
    --only preflight,os,runtime,etcd``; the VMs are destroyed when the class is done."""
    with _user_flow(tmp_path_factory, report, "smoke", SPEC, SMOKE_PHASES) as (spec, env,
                                                                              times):
        base, state = spec.parent, cluster_dir(NAME)
        up = _run(["vagrant", "up", "--no-provision"], env, base / "logs", SMOKE_UP_TIMEOUT,
                  times)
        if up.returncode != 0:
            pytest.fail(f"`vagrant up --no-provision` failed:\n{up.stdout[-4000:]}")
        logins_after_up, summary_after_up = read_connections(state), last_summary(state)
        only = ",".join(SMOKE_PHASES)
        provision = _run([str(PROVISIONER), "provision", str(spec), "--machines-running",
                          "--only", only], env, base / "logs", SMOKE_PROVISION_TIMEOUT,
                         times, f"provisioner provision --machines-running --only {only}")
        yield SmokeFlow(spec, env, state, base / "logs", times, up, logins_after_up,
                        summary_after_up, provision)


class TestSmoke:
    """2 VMs made by plain Vagrant; the first four phases and verify's checks of them."""

    def test_vagrant_up_no_provision_makes_the_vms_only(self, smoke: SmokeFlow) -> None:
        out = smoke.up.stdout
        assert "Running trigger: provisioner: converge" not in out, out[-4000:]
        assert "provision succeeded:" not in out and "--machines-running" not in out
        running = _virsh("list", "--state-running", "--name").split()
        assert all(any(n in d for d in running) for n in NODES), running
        # Nothing recorded or run yet: the logins come with the first provision.
        assert smoke.logins_after_up == {}
        assert smoke.summary_after_up is None

    def test_provision_machines_running_runs_the_phases_on_both_vms(
            self, smoke: SmokeFlow) -> None:
        out = smoke.provision.stdout
        assert smoke.provision.returncode == 0, out[-4000:]
        assert "logins and host keys recorded" in out  # --machines-running: no vagrant up
        assert "provision succeeded:" in out
        summary = smoke.summary()
        _record_run(smoke.times, summary, "provision")
        assert summary["succeeded"], summary["failure"]
        assert sorted(p["phase"] for p in summary["phases"]) == sorted(SMOKE_PHASES)
        assert set(summary["hosts"]) == set(NODES)
        assert all(h["failed"] == 0 and h["unreachable"] == 0
                   for h in summary["hosts"].values()), summary["hosts"]
        assert summary["changed"] > 0
        assert summary["verify"] is None  # not selected: verify's own checks are below

    def test_logins_and_host_keys_are_pinned_as_by_machines_up(self, smoke: SmokeFlow) -> None:
        _check_logins_pinned_as_by_machines_up(smoke)

    def test_vms_match_the_spec(self, smoke: SmokeFlow) -> None:
        _check_vms_match_the_spec(smoke)

    def test_verify_checks_of_what_ran(self, smoke: SmokeFlow) -> None:
        only = ",".join(SMOKE_CHECKS)
        t0 = time.monotonic()
        proc = subprocess.run([str(PROVISIONER), "verify", str(smoke.spec), "--only", only,
                               "--json"], cwd=ROOT, env=smoke.env, capture_output=True,
                              text=True, timeout=600, check=False, stdin=subprocess.DEVNULL)
        smoke.times[f"provisioner verify --only {only}"] = round(time.monotonic() - t0, 1)
        print(proc.stdout, proc.stderr, sep="\n")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        checks = json.loads(proc.stdout)["checks"]
        bad = [f"{c['name']}@{c['target']}: {c['status']} {c['evidence']}" for c in checks
               if c["status"] != "ok"]
        assert not bad, bad
        assert {c["name"] for c in checks} == set(SMOKE_CHECKS)

    def test_etcd_and_containerd_work_inside_the_vms(self, smoke: SmokeFlow) -> None:
        cp = NODES[0]
        auth = (f"--cacert={PKI}/ca.crt --cert={PKI}/healthcheck-client.crt "
                f"--key={PKI}/healthcheck-client.key --endpoints=https://192.168.56.11:2379")
        smoke.run(cp, f"ETCDCTL_API=3 etcdctl {auth} put provisioner-smoke ok")
        got = smoke.run(cp, f"ETCDCTL_API=3 etcdctl {auth} get provisioner-smoke "
                            "--print-value-only").stdout
        assert got.strip() == "ok"
        for name in NODES:
            out = smoke.run(name, "systemctl is-active containerd; ctr version | grep -c Version")
            assert out.stdout.split()[0] == "active"

    def test_vagrant_destroy_leaves_nothing_but_the_pki(self, smoke: SmokeFlow) -> None:
        _check_vagrant_destroy_leaves_nothing_but_the_pki(smoke)


# Full acceptance (issue 16; PROVISIONER_VM_FULL=1).

@pytest.fixture(scope="class")
def full(tmp_path_factory: pytest.TempPathFactory, libvirt: None, box_ready: None,
         report: Report, lab_registry_up: lab_registry.LabRegistry) -> Iterator[Flow]:
    """Plain ``vagrant up``: the VMs, then the trigger's converge and verify."""
    with _user_flow(tmp_path_factory, report, "full", FULL_SPEC, None) as (spec, env, times):
        up = _run(["vagrant", "up"], env, spec.parent / "logs", UP_TIMEOUT, times)
        yield Flow(spec, env, cluster_dir(NAME), spec.parent / "logs", times, up)


@full_only
class TestFullVagrantUp:
    """The whole cluster from plain ``vagrant up``, its day-2 Vagrant commands, destroy."""

    def test_vagrant_up_makes_the_vms_then_converges_and_verifies_once(
            self, full: Flow) -> None:
        out = full.up.stdout
        assert full.up.returncode == 0, out[-4000:]
        # The trigger ran the provision once, after the last VM, with its progress and table.
        assert out.count("provision succeeded:") == 1, out[-4000:]
        assert f"{NODES[-1]}: Running trigger: provisioner: converge and verify cluster " \
               f"{NAME}" in out
        assert "phase verify: verify passed:" in out
        assert "check" in out and "evidence" in out  # the verify table's header
        assert "admin kubeconfig:" in out
        summary = full.summary()
        _record_run(full.times, summary, "vagrant up")
        assert summary["succeeded"], summary["failure"]
        ran = [p["phase"] for p in summary["phases"]]
        assert {"preflight", "os", "runtime", "etcd", "control-plane", "node"} <= set(ran), ran
        assert str(summary["verify"]).startswith("verify passed:"), summary["verify"]
        verify = json.loads((Path(summary["run_dir"]) / "verify.json").read_text())
        assert verify["passed"] and verify["counts"]["fail"] == 0, verify["counts"]

    def test_logins_and_host_keys_are_pinned_as_by_machines_up(self, full: Flow) -> None:
        _check_logins_pinned_as_by_machines_up(full)

    def test_vms_match_the_spec(self, full: Flow) -> None:
        _check_vms_match_the_spec(full)

    def test_kubectl_get_nodes_through_the_admin_kubeconfig(self, full: Flow) -> None:
        print(full.kubectl("get", "nodes", "-o", "wide"))
        nodes = json.loads(full.kubectl("get", "nodes", "-o", "json"))["items"]
        assert sorted(n["metadata"]["name"] for n in nodes) == sorted(NODES)
        for n in nodes:
            ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"]
            assert ready and ready[0]["status"] == "True", n["metadata"]["name"]

    def test_second_vagrant_provision_changes_nothing(self, full: Flow) -> None:
        proc = full.vagrant("provision", timeout=PROVISION_TIMEOUT)
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert proc.stdout.count("provision succeeded: 0 phases, 0 changed tasks") == 1
        assert "phase verify: verify passed:" in proc.stdout
        summary = full.summary()
        assert summary["succeeded"] and summary["changed"] == 0 and not summary["phases"]
        assert summary["survey"] == dict.fromkeys(NODES, 0), summary["survey"]

    def test_halt_and_up_bring_the_same_cluster_back(self, full: Flow) -> None:
        ca = {f: _sha256(full.state / "pki" / f) for f in ("ca.crt", "ca.key")}
        proc = full.vagrant("halt", timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:]
        proc = full.vagrant("up", timeout=UP_TIMEOUT)
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert proc.stdout.count("provision succeeded:") == 1
        assert "phase verify: verify passed:" in proc.stdout
        assert {f: _sha256(full.state / "pki" / f) for f in ca} == ca  # no new CA
        nodes = json.loads(full.kubectl("get", "nodes", "-o", "json"))["items"]
        assert sorted(n["metadata"]["name"] for n in nodes) == sorted(NODES)

    def test_vagrant_destroy_leaves_nothing_but_the_pki(self, full: Flow) -> None:
        _check_vagrant_destroy_leaves_nothing_but_the_pki(full)
