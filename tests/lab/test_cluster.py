"""End-to-end: ``provision`` of the whole 3+2 nspawn example, then ``verify`` and its failures.

Scope: the "whole cluster" acceptance on real machines (root) with every program built from
upstream source (etcd, containerd, runc, the Kubernetes programs) and images from the lab
registry hub.test.com: every phase converges and verify passes every check, pods included;
the nodes, versions and /readyz?verbose are what a user sees with kubectl; a second
provision changes nothing; etcd replicates and refuses clients without the cluster's
certificates; each node's haproxy spreads connections over every apiserver; containerd runs
an imported image on every node; a drifted file is repaired and only its service restarts;
``verify --json`` is stable; a
corrupted apiserver certificate, a wrong etcd endpoint and a stopped etcd majority each
fail the right check with a hint, and the next provision repairs the first two; losing one
of three control-plane nodes is reported while the apiserver is still served through the LB.
Then day 2 on the same cluster: the admin split and CIS modes, kubelet certificate rotation,
encryption-key rotation and certificate renewal (both while a client polls the apiserver
through a load balancer), etcd backups (by command and by timer), restore of 10,000 objects
after losing quorum (and after losing every member's data, by hand), control-plane
membership 3 -> 1 -> 3, and reset followed by provision.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from provisioner.cli import app
from provisioner.execute import PLAYBOOKS, LineProgress
from provisioner.plan import Plan
from provisioner.providers.nspawn import node
from provisioner.providers.nspawn.provider import NspawnMachines
from provisioner.providers.ssh import ClusterSSH, cluster_ssh, ssh_run
from provisioner.provision import ProvisionError, ProvisionResult, provision
from provisioner.state import cluster_dir
from provisioner.verify import CheckResult, to_json, verify
from provisioner.verify.pods import images
from tests.fixtures.built_artifacts import LAB_SOURCE
from tests.fixtures.lab_cluster import (
    assert_ansible_idempotent,
    assert_converged,
    failing,
    provisioned,
    run_provision,
)
from tests.fixtures.lab_membership import ApiPoller, etcd_members, haproxy_backends, main_pids

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventories" / "nspawn-3cp-2w.yaml"
POD_CHECKS = {"coredns-resolves", "smoke-deployment", "pod-network", "pod-dns",
              "service-by-name", "service-nodeport", "metrics-api"}


@dataclass
class Cluster:
    """The provisioned lab cluster and what the tests need to poke at it."""

    spec: Path
    plan: Plan
    provider: NspawnMachines
    ssh: ClusterSSH
    state: Path
    first: ProvisionResult
    second: ProvisionResult

    def run(self, host: str, command: str, check: bool = True) -> str:
        m = self.plan.host(host).machine
        proc = ssh_run(self.ssh, m.ssh_user, m.address, m.ssh_port, command, timeout=90)
        if check:
            assert proc.returncode == 0, f"{host}: {command}: {proc.stderr}{proc.stdout}"
        return proc.stdout

    def provision(self) -> ProvisionResult:
        return run_provision(self.spec)

    def verify(self, only: list[str] | None = None) -> list[CheckResult]:
        return verify(self.plan, self.state, only)


def _by(results: list[CheckResult], name: str, target: str | None = None) -> list[CheckResult]:
    return [r for r in results if r.name == name and (target is None or r.target == target)]


_failing = failing


def _wait_verify(c: Cluster, ok: bool, seconds: float = 120) -> list[CheckResult]:
    """Verify until it passes (ok=True) or fails; components need a moment after restarts."""
    deadline = time.monotonic() + seconds
    while True:
        results = c.verify()
        if (not _failing(results)) == ok or time.monotonic() > deadline:
            return results
        time.sleep(5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            lab_registry_up: object) -> Iterator[Cluster]:
    with provisioned(EXAMPLE, tmp_path_factory.mktemp("cluster")) as p:
        yield Cluster(p.spec, p.plan, p.provider, cluster_ssh(p.plan.name),
                      cluster_dir(p.plan.name), p.first, p.second)


def test_provision_runs_every_phase_and_verify_passes(cluster: Cluster) -> None:
    """Every phase with a playbook ran; verify (the last phase) passed every check, pods
    included: CoreDNS answers and the smoke deployment pulled hub.test.com/nginx."""
    assert cluster.first.succeeded, cluster.first.failure
    ran = [p.phase for p in cluster.first.phases]
    expected = [p.name for p in cluster.plan.phases
                if p.name != "verify" and (PLAYBOOKS / p.playbook).is_file()]
    assert ran == expected
    checks = cluster.first.verify
    assert checks and not _failing(list(checks))
    skipped = {r.name: r.evidence for r in checks if r.status == "skipped"}
    assert skipped == {}, skipped
    ok = {r.name for r in checks if r.status == "ok"}
    assert {"ssh", "units", "etcd-health", "etcd-leader", "apiserver-livez-lb",
            "apiserver-readyz-lb", "apiserver-readyz-node", "scheduler-leader",
            "controller-manager-leader", "nodes-registered", "nodes-ready",
            *POD_CHECKS} <= ok
    assert cluster.first.admin_kubeconfig is not None
    assert cluster.first.admin_kubeconfig.stat().st_mode & 0o777 == 0o600


def _kubectl(cluster: Cluster, *args: str, timeout: float = 60) -> str:
    kubectl = cluster.spec.parent / "kubectl"
    if not kubectl.exists():
        kubectl.symlink_to(LAB_SOURCE / "kubectl" / cluster.plan.version / "kubectl")
    proc = subprocess.run([str(kubectl), "--kubeconfig", str(cluster.state / "admin.kubeconfig"),
                           *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_real_programs_serve_the_cluster(cluster: Cluster) -> None:
    """The built programs, as a user checks them with kubectl: 5 Ready nodes at the pinned
    version on containerd 2.x, the server's version, /readyz?verbose through a node's load
    balancer, and metrics-server answering `kubectl top nodes` and `kubectl top pods`."""
    nodes = json.loads(_kubectl(cluster, "get", "nodes", "-o", "json"))["items"]
    assert len(nodes) == 5
    for n in nodes:
        info = n["status"]["nodeInfo"]
        assert info["kubeletVersion"] == f"v{cluster.plan.version}", info
        assert info["containerRuntimeVersion"].startswith("containerd://2."), info
        ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True", ready
    version = json.loads(_kubectl(cluster, "version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == f"v{cluster.plan.version}"
    readyz = cluster.run("lab-w1", "curl -fsS --cacert /etc/kubernetes/pki/ca.crt "
                         "--cert /var/lib/kubelet/pki/kubelet-client.crt "
                         "--key /var/lib/kubelet/pki/kubelet-client.key "
                         "'https://127.0.0.1:8443/readyz?verbose'")
    assert "readyz check passed" in readyz and "[-]" not in readyz, readyz
    deadline = time.monotonic() + 120
    while True:  # metrics-server needs a scrape or two after it starts
        proc = subprocess.run([str(cluster.spec.parent / "kubectl"), "--kubeconfig",
                               str(cluster.state / "admin.kubeconfig"), "top", "nodes"],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert proc.returncode == 0 and "lab-w2" in proc.stdout, proc.stderr
    pods = _kubectl(cluster, "top", "pods", "-n", "kube-system")
    assert "coredns" in pods and "metrics-server" in pods, pods


def test_second_provision_changes_nothing(cluster: Cluster) -> None:
    """The idempotency gate: the second run's survey finds all 5 hosts converged, so no
    phase runs; and every phase run on every host anyway (--full) changes nothing."""
    assert_converged(cluster.second, 5)
    assert_ansible_idempotent(run_provision(cluster.spec, full=True), 5)


ETCD_PKI = "/etc/kubernetes/pki/etcd"


def _etcdctl(endpoint: str, *args: str, cert: bool = True) -> str:
    auth = f"--cacert={ETCD_PKI}/ca.crt"
    if cert:
        auth += (f" --cert={ETCD_PKI}/healthcheck-client.crt"
                 f" --key={ETCD_PKI}/healthcheck-client.key")
    return (f"ETCDCTL_API=3 etcdctl {auth} --endpoints={endpoint} --dial-timeout=5s "
            + " ".join(args))


def test_etcd_replicates_and_admits_only_the_clusters_clients(cluster: Cluster) -> None:
    """3 healthy members over TLS; a write on one member is read on another; a client
    without a certificate, or with one from another CA, is refused."""
    cps = [h.name for h in cluster.plan.etcd]
    ep = {n: f"https://{cluster.plan.host(n).machine.address}:2379" for n in cps}
    health = cluster.run(cps[0], _etcdctl(ep[cps[0]], "endpoint", "health", "--cluster")
                         + " 2>&1")
    assert health.count("is healthy") == 3, health
    cluster.run(cps[0], _etcdctl(ep[cps[0]], "put", "provisioner-test", "replicated"))
    got = cluster.run(cps[2], _etcdctl(ep[cps[2]], "get", "provisioner-test",
                                       "--print-value-only"))
    assert got.strip() == "replicated"
    anon = cluster.run(cps[1], _etcdctl(ep[cps[1]], "get", "provisioner-test", cert=False)
                       + " 2>&1; echo rc=$?", check=False)
    assert "rc=0" not in anon and "replicated" not in anon.replace("provisioner-test", ""), anon
    cluster.run(cps[1], "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                "-nodes -keyout /tmp/rogue.key -out /tmp/rogue.crt -subj /CN=root -days 1 "
                "2>/dev/null")
    forged = cluster.run(cps[1], f"ETCDCTL_API=3 etcdctl --cacert={ETCD_PKI}/ca.crt "
                         "--cert=/tmp/rogue.crt --key=/tmp/rogue.key "
                         f"--endpoints={ep[cps[1]]} --dial-timeout=5s get provisioner-test "
                         "2>&1; echo rc=$?; rm -f /tmp/rogue.key /tmp/rogue.crt", check=False)
    assert "rc=0" not in forged and "\nreplicated" not in forged, forged
    cluster.run(cps[0], _etcdctl(ep[cps[0]], "del", "provisioner-test"))


# Which apiserver answered a connection through a node's haproxy (TCP mode: TLS goes
# through): each control-plane node serves its own pair, whose names include its own.
LB_PEERS = (
    "import socket,ssl\n"
    "ctx = ssl.create_default_context(cafile='/etc/kubernetes/pki/ca.crt')\n"
    "ctx.check_hostname = False\n"
    "seen = []\n"
    "for _ in range(12):\n"
    "    with ctx.wrap_socket(socket.create_connection(('127.0.0.1', 8443), timeout=5)) as s:\n"
    "        names = [v for k, v in s.getpeercert()['subjectAltName'] if k == 'DNS']\n"
    "        seen.append(','.join(n for n in names if n.startswith('lab-')) or '?')\n"
    "print(' '.join(seen))\n"
)


def _lb_peers(cluster: Cluster, host: str) -> list[str]:
    return cluster.run(host, f"python3 -c {shlex.quote(LB_PEERS)}").split()


def test_haproxy_spreads_connections_over_every_apiserver(cluster: Cluster) -> None:
    """12 connections through a worker's local haproxy reach all three apiservers (told
    apart by the serving certificate each presents)."""
    cps = [h.name for h in cluster.plan.control_plane]
    assert set(_lb_peers(cluster, "lab-w1")) == set(cps)


def test_containerd_runs_a_local_image_everywhere(cluster: Cluster) -> None:
    """An image imported by hand (the lab's busybox OCI archive) runs with `ctr` on every
    node, and containerd's registry mirror for docker.io points at the lab registry."""
    from provisioner.build.build import build_images

    image = "docker.io/library/busybox:latest"
    archive = build_images(cluster.plan, LAB_SOURCE, lambda *_: None)[image].read_bytes()
    ssh = cluster.ssh
    for h in cluster.plan.hosts:
        m = h.machine
        argv = ["ssh", *ssh.options(m.ssh_port), f"{m.ssh_user}@{m.address}",
                "cat > /tmp/busybox-oci.tar"]
        subprocess.run(argv, input=archive, check=True, capture_output=True, timeout=120)
        out = cluster.run(h.name, "ctr -n provisioner-test images import /tmp/busybox-oci.tar"
                          f" >/dev/null && ctr -n provisioner-test run --rm {image} "
                          f"smoke-{h.name} /bin/sh -c 'echo hello-from-$(uname -s)'; "
                          f"ctr -n provisioner-test images rm {image} >/dev/null; "
                          "rm -f /tmp/busybox-oci.tar")
        assert "hello-from-Linux" in out, (h.name, out)
        mirror = cluster.run(h.name, "cat /etc/containerd/certs.d/docker.io/hosts.toml")
        assert "hub.test.com" in mirror, (h.name, mirror)


RESTARTABLE = ("containerd", "haproxy", "kubelet", "kube-proxy", "etcd", "kube-apiserver")


def _service_states(cluster: Cluster) -> dict[tuple[str, str], str]:
    """(host, unit) -> main PID and start time of the units a provision may restart (not
    controller-manager and scheduler: they exit by design when they lose their lease);
    haproxy's also names its workers, which a reload replaces under the same master."""
    out: dict[tuple[str, str], str] = {}
    for h in cluster.plan.hosts:
        text = cluster.run(h.name, "systemctl show -p Id -p MainPID "
                           "-p ActiveEnterTimestampMonotonic " + " ".join(RESTARTABLE)
                           + "; echo; echo haproxy-workers=$(pgrep -P "
                           "$(systemctl show -p MainPID --value haproxy) | sort | tr '\\n' ,)")
        for block in text.strip().split("\n\n"):
            props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            if "haproxy-workers" in props:
                out[(h.name, "haproxy-workers")] = props["haproxy-workers"]
            elif props.get("MainPID", "0") != "0":
                out[(h.name, props["Id"].removesuffix(".service"))] = (
                    f"{props['MainPID']}@{props['ActiveEnterTimestampMonotonic']}")
    return out


def test_drift_is_shown_by_plan_diff_and_repaired(cluster: Cluster) -> None:
    """A hand-edited managed file on one host and a stopped kubelet on another: `plan
    --diff` reports both (a unified diff for the file, the restarts that follow) and exits
    2; the next provision repairs both, running only where they are; a third run reports
    zero changes, and `plan --diff` exits 0."""
    path = "/var/lib/kube-proxy/config.yaml"
    before = _service_states(cluster)
    cluster.run("lab-w1", f"echo '# edited by hand' >> {path}")
    cluster.run("lab-w2", "systemctl stop kubelet")
    try:
        diff = CliRunner().invoke(app, ["plan", str(cluster.spec), "--diff"])
        assert diff.exit_code == 2, diff.output
        # kube-proxy exits when its config file changes (systemd restarts it), so its unit
        # may show as activating too.
        assert "lab-w1: " in diff.output and "lab-w2: 1 change(s)" in diff.output, diff.output
        assert f"~ file {path}: content differs [node]" in diff.output
        assert "-# edited by hand" in diff.output and "restarts: kube-proxy" in diff.output
        assert "~ unit kubelet: inactive, want active [node]" in diff.output
        assert "lab-cp1: no changes" in diff.output
        repaired = run_provision(cluster.spec)
    finally:
        cluster.run("lab-w2", "systemctl start kubelet", check=False)
    assert repaired.succeeded, repaired.failure
    assert {h for h, n in repaired.survey.items() if n} == {"lab-w1", "lab-w2"}
    assert set(repaired.host_totals()) <= {"lab-w1", "lab-w2"}
    assert repaired.host_totals()["lab-w1"].changed > 0
    assert "# edited by hand" not in cluster.run("lab-w1", f"cat {path}")
    assert cluster.run("lab-w2", "systemctl is-active kubelet").strip() == "active"
    # Only what drifted restarted: kube-proxy on lab-w1 (it also exits by itself when its
    # config file changes) and the stopped kubelet on lab-w2; nothing else on any host.
    after = _service_states(cluster)
    moved = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert moved == {("lab-w1", "kube-proxy"), ("lab-w2", "kubelet")}, \
        {k: (before.get(k), after.get(k)) for k in moved}
    assert_converged(run_provision(cluster.spec, verify=False), 5)
    again = CliRunner().invoke(app, ["plan", str(cluster.spec), "--diff"])
    assert again.exit_code == 0, again.output
    assert "no changes: all 5 host(s) match the plan" in again.output


def test_verify_json_is_stable(cluster: Cluster) -> None:
    """Two verify runs give the same JSON, byte for byte."""
    a = to_json(cluster.plan.name, _wait_verify(cluster, ok=True))
    b = to_json(cluster.plan.name, cluster.verify())
    assert a == b
    assert json.loads(a)["cluster"] == "lab"


def test_corrupted_apiserver_certificate_fails_verify_and_is_repaired(cluster: Cluster) -> None:
    """A certificate from another CA: the apiserver on cp1 refuses to run; verify fails there
    with a hint; the next provision restores the certificate."""
    host = "lab-cp1"
    wrong = (cluster.state / "pki" / "etcd" / "server-lab-cp1.crt").read_text()
    cluster.run(host, f"cat > /etc/kubernetes/pki/apiserver.crt <<'EOF'\n{wrong}EOF\n"
                "systemctl restart kube-apiserver || true")
    results = _wait_verify(cluster, ok=False, seconds=60)
    bad = _by(results, "apiserver-livez-node", host)
    assert bad and bad[0].status == "fail" and bad[0].hint, bad
    units = _by(results, "units", host)
    assert units[0].status == "fail" and "kube-apiserver" in units[0].evidence
    repaired = cluster.provision()
    assert repaired.succeeded, repaired.failure
    assert not _failing(list(repaired.verify))


def test_wrong_etcd_endpoint_fails_verify(cluster: Cluster) -> None:
    """kube-apiserver on cp1 pointed at a port where no etcd listens cannot become ready."""
    host = "lab-cp1"
    unit = "/etc/systemd/system/kube-apiserver.service"
    cluster.run(host, f"sed -i 's#--etcd-servers=[^ ]*#--etcd-servers=https://127.0.0.1:2999#' "
                f"{unit} && systemctl daemon-reload && systemctl restart kube-apiserver || true")
    time.sleep(25)  # the apiserver gives etcd 20 s before it exits
    results = _wait_verify(cluster, ok=False, seconds=60)
    failing = {(r.name, r.target) for r in results if r.status == "fail"}
    assert ("apiserver-readyz-node", host) in failing or ("units", host) in failing, failing
    repaired = cluster.provision()
    assert repaired.succeeded, repaired.failure
    assert not _failing(list(repaired.verify))


def test_stopped_etcd_majority_fails_quorum(cluster: Cluster) -> None:
    """Two of three etcd members stopped: the etcd quorum check fails with a hint."""
    for host in ("lab-cp2", "lab-cp3"):
        cluster.run(host, "systemctl stop etcd")
    try:
        results = cluster.verify(["etcd-health"])
        quorum = _by(results, "etcd-health", "cluster")
        assert quorum and quorum[0].status == "fail", results
        assert "lab-cp2" in quorum[0].evidence and quorum[0].hint
    finally:
        for host in ("lab-cp2", "lab-cp3"):
            cluster.run(host, "systemctl start etcd", check=False)
    assert not _failing(_wait_verify(cluster, ok=True))


def test_losing_a_control_plane_node(cluster: Cluster) -> None:
    """cp1 powered off: verify reports it down; the LB still serves the apiserver elsewhere."""
    node.stop(cluster.plan.name, "lab-cp1")
    try:
        time.sleep(10)
        # The checks this is about: the full set would also wait out the probe pods that
        # cannot start on the stopped node.
        results = cluster.verify(["ssh", "apiserver-livez-lb"])
        assert _by(results, "ssh", "lab-cp1")[0].status == "fail"
        served = [r for r in _by(results, "apiserver-livez-lb") if r.target != "lab-cp1"]
        assert served and all(r.status == "ok" for r in served), served
    finally:
        cluster.provider.up()
    assert not _failing(_wait_verify(cluster, ok=True, seconds=180))


def test_smoke_command_runs_the_seeds_example(cluster: Cluster) -> None:
    """`provisioner smoke`: deployment web from hub.test.com/nginx, exposed, fetched by its
    Service name from a pod on another node, then cleaned up."""
    result = CliRunner().invoke(app, ["smoke", str(cluster.spec)])
    assert result.exit_code == 0, result.output
    assert "create deployment: web --image=hub.test.com/nginx" in result.output
    fetched = [line for line in result.output.splitlines() if "fetch:" in line]
    assert fetched and fetched[0].lstrip().startswith("ok"), result.output
    assert "nginx" in fetched[0] and ".svc.cluster.local" in fetched[0]
    assert "smoke: passed" in result.output


def test_wrong_registry_password_fails_smoke_and_is_repaired(cluster: Cluster,
                                                             tmp_path: Path) -> None:
    """A wrong password for hub.test.com: the smoke check fails naming the registry and
    "unauthorized"; the next provision with the right password repairs it."""
    data = yaml.safe_load(cluster.spec.read_text())
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    data["spec"]["registries"]["private"][0]["passwordFile"] = str(wrong)
    bad_spec = tmp_path / "cluster.yaml"
    bad_spec.write_text(yaml.safe_dump(data, sort_keys=False))
    broken = run_provision(bad_spec)
    assert not broken.succeeded
    smoke = _by(list(broken.verify), "smoke-deployment")
    assert smoke and smoke[0].status == "fail", broken.verify
    assert "hub.test.com" in smoke[0].evidence, smoke[0]
    assert "unauthorized" in (smoke[0].evidence + smoke[0].hint).lower(), smoke[0]
    assert "passwordFile" in smoke[0].hint, smoke[0]
    repaired = cluster.provision()
    assert repaired.succeeded, repaired.failure
    assert not _failing(list(repaired.verify))


def test_a_second_state_directory_is_refused_and_no_host_changes(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Provision from a new, empty state directory (same SSH key, as a sudo that changes
    $HOME would give): refused before any phase runs; the hosts keep their CA and identity."""
    before = {h.name: cluster.run(h.name, "sha256sum /etc/provisioner/identity "
                                  "/etc/kubernetes/pki/ca.crt") for h in cluster.plan.hosts}
    data = yaml.safe_load(cluster.spec.read_text())
    data["spec"].setdefault("ssh", {})["privateKeyFile"] = str(cluster.state / "ssh" /
                                                               "id_ed25519")
    spec = tmp_path / "cluster.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("PROVISIONER_STATE_DIR", str(tmp_path / "second-state"))
    with pytest.raises(ProvisionError) as err:
        run_provision(spec)
    assert "another state directory; nothing was changed" in str(err.value)
    assert "lab-cp1: holds another ca/ca" in str(err.value)
    assert not (tmp_path / "second-state" / "clusters" / "lab" / "runs").exists()
    after = {h.name: cluster.run(h.name, "sha256sum /etc/provisioner/identity "
                                 "/etc/kubernetes/pki/ca.crt") for h in cluster.plan.hosts}
    assert after == before


def _whoami_groups(cluster: Cluster, kubeconfig: str) -> list[str]:
    kubectl = cluster.spec.parent / "kubectl"
    _kubectl(cluster, "version", "--client")  # makes the kubectl link
    proc = subprocess.run([str(kubectl), "--kubeconfig", str(cluster.state / kubeconfig),
                           "auth", "whoami", "-o", "json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    groups: list[str] = json.loads(proc.stdout)["status"]["userInfo"]["groups"]
    return groups


def test_admin_is_revocable_and_files_follow_cis(cluster: Cluster) -> None:
    """kubeadm's admin split: the admin kubeconfig's group is kubeadm:cluster-admins, bound
    to cluster-admin by the binding the super-admin made; super-admin (system:masters) is
    only in the state directory. On the hosts, certificates, configs and units are 0600."""
    assert "kubeadm:cluster-admins" in _whoami_groups(cluster, "admin.kubeconfig")
    assert "system:masters" not in _whoami_groups(cluster, "admin.kubeconfig")
    assert "system:masters" in _whoami_groups(cluster, "super-admin.kubeconfig")
    binding = json.loads(_kubectl(cluster, "get", "clusterrolebinding",
                                  "kubeadm:cluster-admins", "-o", "json"))
    assert binding["roleRef"]["name"] == "cluster-admin"
    assert (cluster.state / "super-admin.kubeconfig").stat().st_mode & 0o777 == 0o600
    for h in cluster.plan.hosts:
        assert cluster.run(h.name, "grep -rl kubernetes-super-admin /etc /var/lib/kubelet "
                           "/tmp 2>/dev/null || true").strip() == "", h.name
    modes = cluster.run("lab-cp1", "stat -c '%a %n' /etc/kubernetes/pki/ca.crt "
                        "/etc/kubernetes/pki/apiserver.crt /var/lib/kubelet/config.yaml "
                        "/etc/systemd/system/kubelet.service "
                        "/etc/systemd/system/kube-apiserver.service "
                        "/etc/kubernetes/pki/etcd/ca.crt /var/lib/etcd")
    for line in modes.splitlines():
        assert line.split(" ", 1)[0] in {"600", "700"}, line


def test_kubelet_rotates_its_client_certificate(cluster: Cluster) -> None:
    """rotateCertificates: a kubelet whose client certificate is past its rotation deadline
    asks for a new one at start; the controller-manager approves and signs the CSR (the
    selfnodeclient binding), and the node stays Ready on the new, year-long certificate."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    node_name = "lab-w2"
    pki = cluster.state / "pki"
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    old = (x509.CertificateBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                                    x509.NameAttribute(NameOID.COMMON_NAME,
                                                       f"system:node:{node_name}")]))
           .issuer_name(ca.subject).public_key(key.public_key())
           .serial_number(x509.random_serial_number())
           # 20 of 21 hours gone: past every rotation deadline (70-90 % of the lifetime).
           .not_valid_before(now - dt.timedelta(hours=20))
           .not_valid_after(now + dt.timedelta(hours=1))
           .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
           .sign(ca_key, hashes.SHA256()))
    pem = old.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    # The kubelet's store: kubelet-client-current.pem is a symlink to the pair in use.
    pki_dir = "/var/lib/kubelet/pki"
    current = f"{pki_dir}/kubelet-client-current.pem"
    cluster.run(node_name, f"rm -f {current} && umask 077 && cat > {pki_dir}/short.pem "
                f"<<'EOF'\n{pem.decode()}EOF\nln -s {pki_dir}/short.pem {current} && "
                "systemctl restart kubelet")
    deadline = time.monotonic() + 120
    while True:
        text = cluster.run(node_name, f"cat {current}", check=False)
        if "BEGIN CERTIFICATE" in text:
            cert = x509.load_pem_x509_certificate(text.encode())
            if cert.not_valid_after_utc > now + dt.timedelta(days=300):
                break
        assert time.monotonic() < deadline, "the kubelet did not rotate its certificate"
        time.sleep(3)
    assert f"CN=system:node:{node_name}" in cert.subject.rfc4514_string()
    csrs = json.loads(_kubectl(cluster, "get", "csr", "-o", "json"))["items"]
    mine = [c for c in csrs if c["spec"]["username"] == f"system:node:{node_name}"
            and c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"]
    assert mine, csrs
    assert any(cond["type"] == "Approved" for c in mine
               for cond in c["status"].get("conditions", [])), mine
    results = _wait_verify(cluster, ok=True)
    assert not _failing(results), _failing(results)
    assert_converged(run_provision(cluster.spec, verify=False), 5)


def _etcd_value_prefix(cluster: Cluster, key: str) -> str:
    pki = "/etc/kubernetes/pki/etcd"
    return cluster.run("lab-cp1", f"etcdctl --endpoints=https://127.0.0.1:2379 "
                       f"--cacert={pki}/ca.crt --cert={pki}/healthcheck-client.crt "
                       f"--key={pki}/healthcheck-client.key get {key} --print-value-only "
                       "| head -c 40 | tr -c '[:print:]' '.'")


def test_encryption_key_rotation_keeps_every_secret(cluster: Cluster) -> None:
    """`encryption-key rotate`: the Secret written under key1 is stored under key2 after,
    still reads the same, the old key is on no host, and the cluster's identity check
    accepted the change (no --replace-identity); the next provision changes nothing."""
    _kubectl(cluster, "create", "secret", "generic", "rotation-probe",
             "--from-literal=word=unchanged")
    before = _etcd_value_prefix(cluster, "/registry/secrets/default/rotation-probe")
    assert before.startswith("k8s:enc:aescbc:v1:key"), before
    old_name = before.split(":")[4]
    # A client on a worker asks for /version through its local haproxy once a second while
    # the apiservers restart one at a time, three times over. (Not /readyz: a draining
    # apiserver fails its own /readyz on purpose while it still serves every request.)
    poll = ("nohup sh -c 'while :; do if curl -fsS --max-time 2 "
            "--cacert /etc/kubernetes/pki/ca.crt "
            "--cert /var/lib/kubelet/pki/kubelet-client.crt "
            "--key /var/lib/kubelet/pki/kubelet-client.key "
            "https://127.0.0.1:8443/version >/dev/null 2>&1; then echo ok; else echo FAIL; fi; "
            "sleep 1; done' >/tmp/lb-poll.log 2>&1 & echo $!")
    poller = cluster.run("lab-w1", poll).strip()
    started = time.monotonic()
    res = CliRunner().invoke(app, ["encryption-key", "rotate", str(cluster.spec)])
    seconds = time.monotonic() - started
    polled = cluster.run("lab-w1", f"kill {poller}; cat /tmp/lb-poll.log").split()
    assert res.exit_code == 0, res.output
    print(f"encryption-key rotate: {seconds:.1f}s, {len(polled)} requests through the "
          f"load balancer, {polled.count('FAIL')} failed\n{res.output}")
    assert len(polled) > 60 and polled.count("FAIL") == 0, polled
    after = _etcd_value_prefix(cluster, "/registry/secrets/default/rotation-probe")
    new_name = after.split(":")[4]
    assert after.startswith("k8s:enc:aescbc:v1:key") and new_name != old_name, (before, after)
    word = _kubectl(cluster, "get", "secret", "rotation-probe", "-o",
                    "jsonpath={.data.word}")
    assert word == "dW5jaGFuZ2Vk"  # base64 of "unchanged"
    for h in cluster.plan.control_plane:
        names = cluster.run(h.name, "grep -o 'name: key[0-9]*' "
                            "/etc/kubernetes/encryption-config.yaml").split()
        assert names == ["name:", new_name], (h.name, names)
    assert_converged(run_provision(cluster.spec, verify=False), 5)
    _kubectl(cluster, "delete", "secret", "rotation-probe")


def test_etcd_backup_is_checked_described_and_bounded(cluster: Cluster, tmp_path: Path) -> None:
    """`etcd backup`: a snapshot from a healthy member, its sha256 and metadata (revision,
    keys, the three members, versions), 0600 in a 0700 directory; --keep 2 over three runs
    leaves the newest two; nothing is left on the members."""
    out = tmp_path / "backups"
    taken = []
    for _ in range(3):
        started = time.monotonic()
        res = CliRunner().invoke(app, ["etcd", "backup", str(cluster.spec), "--out", str(out),
                                       "--keep", "2"])
        assert res.exit_code == 0, res.output
        print(f"etcd backup: {time.monotonic() - started:.1f}s: {res.output.strip()}")
        taken.append(sorted(out.glob("lab-*.db"))[-1])
        time.sleep(1.1)  # names carry the second
    kept = sorted(out.glob("lab-*.db"))
    assert kept == taken[1:], (kept, taken)
    assert out.stat().st_mode & 0o777 == 0o700
    meta = json.loads(kept[-1].with_suffix(".json").read_text())
    assert meta["cluster"] == "lab" and meta["revision"] > 0 and meta["total_keys"] > 100
    assert meta["members"] == ["lab-cp1", "lab-cp2", "lab-cp3"]
    assert meta["kubernetes_version"] == cluster.plan.version
    assert hashlib.sha256(kept[-1].read_bytes()).hexdigest() == meta["sha256"]
    assert kept[-1].stat().st_mode & 0o777 == 0o600
    for h in cluster.plan.control_plane:
        assert cluster.run(h.name, "ls -A /var/lib/provisioner-backup 2>/dev/null || true"
                           ).strip() == "", h.name


def _etcd_members_stop_and_lose_data(cluster: Cluster, names: list[str]) -> None:
    for name in names:
        cluster.run(name, "systemctl stop etcd && rm -rf /var/lib/etcd/member")


def test_scheduled_etcd_backups_snapshot_prune_and_pass_verify(cluster: Cluster) -> None:
    """spec.etcd.backup (daily, keep 3): etcd-backup.timer is active and enabled on every
    control-plane node, each of which holds a snapshot from the first provision; starting
    etcd-backup.service takes a new one (its sha256 beside it, 0600 in a 0700 directory)
    and the prune keeps at most 3; verify's etcd-backup-age passes on every member in its
    JSON."""
    backup = cluster.plan.cluster.spec.etcd.backup
    assert backup is not None and backup.keep == 3, backup
    directory = backup.directory
    for h in cluster.plan.control_plane:
        state = cluster.run(h.name, "systemctl is-active etcd-backup.timer; "
                            "systemctl is-enabled etcd-backup.timer")
        assert state.split() == ["active", "enabled"], (h.name, state)
        names = cluster.run(h.name, f"ls -1 {directory}").split()
        assert any(n.startswith(f"{h.name}-") and n.endswith("Z.db") for n in names), names
    host = cluster.plan.control_plane[0].name

    def snapshots() -> list[str]:
        return sorted(n for n in cluster.run(host, f"ls -1 {directory}").split()
                      if n.endswith(".db"))

    before = snapshots()
    taken: list[str] = []
    for _ in range(backup.keep + 1):
        time.sleep(1.1)  # names carry the second
        cluster.run(host, "systemctl start etcd-backup.service")
        now = snapshots()
        assert now[-1] not in before + taken, (now, taken)
        assert len(now) <= backup.keep, now
        taken.append(now[-1])
    assert snapshots() == taken[-backup.keep:], (snapshots(), taken)
    newest = taken[-1]
    checked = cluster.run(host, f"cd {directory} && sha256sum -c {newest}.sha256 && "
                          f"stat -c '%a' . {newest} {newest}.sha256")
    assert f"{newest}: OK" in checked, checked
    assert checked.split()[-3:] == ["700", "600", "600"], checked
    res = CliRunner().invoke(app, ["verify", str(cluster.spec), "--only", "etcd-backup-age",
                                   "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["target"]: r for r in json.loads(res.output)["checks"]
            if r["name"] == "etcd-backup-age"}
    assert set(rows) == {h.name for h in cluster.plan.etcd}, rows
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert newest in rows[host]["evidence"], rows[host]


def _host_is_clean(cluster: Cluster, host: str) -> str:
    """What a reset left on ``host``, by name: "inactive" and nothing else when clean."""
    return cluster.run(host, "systemctl is-active kubelet containerd etcd kube-apiserver "
                       "haproxy 2>/dev/null | sort -u; pgrep -a -f '[c]ontainerd-shim'; "
                       "ip -br link show type bridge | grep cni0; "
                       "iptables-save | grep -E '^:(KUBE|CNI|FLANNEL)-'; "
                       "ls /usr/local/bin | grep -E "
                       "'^(kube|etcd|containerd|ctr$|runc$|crictl$)'; "
                       "ls -d /var/lib/containerd /var/lib/kubelet 2>/dev/null; true")


def test_a_worker_leaving_the_spec_is_refused_then_pruned_and_added_back(
        cluster: Cluster) -> None:
    """Issue 15's scale-in: a Deployment (2 replicas, both on lab-w2, PodDisruptionBudget
    minAvailable 1). A spec without lab-w2 is refused before anything changes; with --prune,
    lab-w2 is cordoned, drained through the eviction API (the PDB holds the second pod until
    the first has a ready replacement), its Node deleted and the host reset, while the
    Deployment never has fewer than 1 available replica (polled once a second). Then the
    full spec adds lab-w2 back: it joins and verify passes."""
    image = images(cluster.plan)[0]
    manifest = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "pdbweb", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "pdbweb"}},
                 "template": {"metadata": {"labels": {"app": "pdbweb"}}, "spec": {
                     "affinity": {"nodeAffinity": {
                         "preferredDuringSchedulingIgnoredDuringExecution": [{
                             "weight": 100, "preference": {"matchExpressions": [{
                                 "key": "kubernetes.io/hostname", "operator": "In",
                                 "values": ["lab-w2"]}]}}]}},
                     "containers": [{"name": "web", "image": image}]}}}}
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
           "metadata": {"name": "pdbweb", "namespace": "default"},
           "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "pdbweb"}}}}
    path = cluster.spec.parent / "pdbweb.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [manifest, pdb]}))
    _kubectl(cluster, "apply", "-f", str(path))
    _kubectl(cluster, "rollout", "status", "deployment/pdbweb", "--timeout=180s")

    def placed() -> list[str]:
        data = json.loads(_kubectl(cluster, "get", "pods", "-l", "app=pdbweb", "-o", "json"))
        return sorted(p["spec"].get("nodeName", "") for p in data["items"]
                      if p["status"].get("phase") == "Running")

    assert placed() == ["lab-w2", "lab-w2"]
    smaller = cluster.spec.parent / "cluster-without-w2.yaml"
    data = yaml.safe_load(cluster.spec.read_text())
    data["spec"]["workers"]["count"] = 1
    smaller.write_text(yaml.safe_dump(data, sort_keys=False))

    with pytest.raises(ProvisionError) as refused:
        run_provision(smaller)
    assert "lab-w2 (kube_node)" in str(refused.value), refused.value
    assert "nothing was changed" in str(refused.value)
    assert "node/lab-w2" in _kubectl(cluster, "get", "nodes", "-o", "name")

    available: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                out = _kubectl(cluster, "get", "deployment", "pdbweb", "-o",
                               "jsonpath={.status.availableReplicas}", timeout=10)
                available.append(int(out or 0))
            except (AssertionError, subprocess.TimeoutExpired, ValueError):
                available.append(-1)  # the apiserver did not answer: counted apart
            stop.wait(1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    started = time.monotonic()
    try:
        pruned = provision(smaller, None, None, None, True, LineProgress(sys.stdout),
                           prune=True, drain_timeout=240)
    finally:
        stop.set()
        poller.join(30)
    seconds = time.monotonic() - started
    print(f"provision --prune of lab-w2: {seconds:.1f}s (steps {pruned.steps}); "
          f"changed per host {dict((h, r.changed) for h, r in pruned.host_totals().items())}; "
          f"availability polled {len(available)} times, minimum {min(available)}")
    assert pruned.succeeded, pruned.failure
    assert available and min(available) >= 1, available
    assert "node/lab-w2" not in _kubectl(cluster, "get", "nodes", "-o", "name")
    _kubectl(cluster, "rollout", "status", "deployment/pdbweb", "--timeout=180s")
    assert placed() == ["lab-w1", "lab-w1"]
    assert _host_is_clean(cluster, "lab-w2").split("\n", 1) == ["inactive", ""]
    assert cluster.run("lab-w2", "echo ssh-ok").strip() == "ssh-ok"
    assert_converged(run_provision(smaller, verify=False), 4)

    started = time.monotonic()
    back = cluster.provision()
    print(f"provision adding lab-w2 back: {time.monotonic() - started:.1f}s; changed per host "
          f"{dict((h, r.changed) for h, r in back.host_totals().items())}")
    assert back.succeeded, back.failure
    assert not _failing(list(back.verify)), _failing(list(back.verify))
    # Only lab-w2 joined, so the pod network is probed from it alone, to every other node.
    probed = [c for c in back.verify if c.name == "pod-network"]
    assert [c.target for c in probed] == ["lab-w2"], probed
    others = [h.name for h in cluster.plan.nodes if h.name != "lab-w2"]
    assert probed[0].evidence == ("a pod on lab-w2 reached the pods on "
                                  + ", ".join(sorted(others)))
    assert "node/lab-w2" in _kubectl(cluster, "get", "nodes", "-o", "name")
    _kubectl(cluster, "delete", "-f", str(path))
    assert_converged(run_provision(cluster.spec, verify=False), 5)


def test_certs_renew_rolls_out_every_leaf_while_the_apiserver_is_served(
        cluster: Cluster) -> None:
    """`certs renew --yes`: every leaf certificate is re-issued (the CAs kept, so no
    --replace-identity) and installed phase by phase (etcd, lb, control-plane, node) while a
    client on a worker asks for /version through its local haproxy once a second: no request
    fails, haproxy was reloaded (same master process), not restarted. Then `certs check
    --json` shows every certificate of the cluster's CAs, on the hosts and in the state
    directory, with a later notAfter than before; the next provision changes nothing."""

    def leaves() -> dict[tuple[str, str], str]:
        res = CliRunner().invoke(app, ["certs", "check", str(cluster.spec), "--json"])
        rows = json.loads(res.output[: res.output.rindex("]") + 1])
        assert all("not_after" in r for r in rows), [r for r in rows if "not_after" not in r]
        cas = {r["subject"] for r in rows if r["where"] == "state" and r["ca"]}
        assert len(cas) == 3, cas  # kubernetes-ca, etcd-ca, kubernetes-front-proxy-ca
        # The kubelet's own rotated pair is the kubelet's business, not the provisioner's.
        return {(r["where"], r["path"]): r["not_after"] for r in rows
                if not r["ca"] and r["issuer"] in cas
                and r["path"] != "/var/lib/kubelet/pki/kubelet-client-current.pem"}

    before = leaves()
    assert len([k for k in before if k[0] == "state"]) == len(cluster.plan.pki.certs)
    lb_hosts = [h.name for h in cluster.plan.hosts if "haproxy" in h.parts]
    masters = {h: cluster.run(h, "systemctl show -p MainPID --value haproxy").strip()
               for h in lb_hosts}
    # The poller's pair is a copy: the node phase replaces the kubelet's own pair, and curl
    # must not read a new certificate with the old key. The old pair stays valid (same CA).
    cluster.run("lab-w1", "install -m 0600 /var/lib/kubelet/pki/kubelet-client.crt "
                "/tmp/lb-poll.crt && install -m 0600 /var/lib/kubelet/pki/kubelet-client.key "
                "/tmp/lb-poll.key")
    poll = ("nohup sh -c 'while :; do if curl -fsS --max-time 2 "
            "--cacert /etc/kubernetes/pki/ca.crt --cert /tmp/lb-poll.crt --key /tmp/lb-poll.key "
            "https://127.0.0.1:8443/version >/dev/null 2>&1; then echo ok; else echo FAIL; fi; "
            "sleep 1; done' >/tmp/lb-poll.log 2>&1 & echo $!")
    poller = cluster.run("lab-w1", poll).strip()
    started = time.monotonic()
    res = CliRunner().invoke(app, ["certs", "renew", str(cluster.spec), "--yes"])
    seconds = time.monotonic() - started
    polled = cluster.run("lab-w1", f"kill {poller}; cat /tmp/lb-poll.log; "
                         "rm -f /tmp/lb-poll.log /tmp/lb-poll.crt /tmp/lb-poll.key").split()
    print(f"certs renew: {seconds:.1f}s, {len(polled)} requests through the load balancer, "
          f"{polled.count('FAIL')} failed\n{res.output}")
    assert res.exit_code == 0, res.output
    assert "installed through etcd, lb, control-plane, node" in res.output
    assert len(polled) > 30 and polled.count("FAIL") == 0, polled
    after_masters = {h: cluster.run(h, "systemctl show -p MainPID --value haproxy").strip()
                     for h in lb_hosts}
    assert after_masters == masters
    after = leaves()
    assert set(after) == set(before), set(after) ^ set(before)
    older = {k: (before[k], after[k]) for k in before if not after[k] > before[k]}
    assert not older, older
    assert_converged(run_provision(cluster.spec, verify=False), 5)


def test_etcd_restore_brings_back_every_object_after_losing_all_data(
        cluster: Cluster, tmp_path: Path) -> None:
    """Issue 14's restore acceptance: 10,000 ConfigMaps in 5 namespaces and a Deployment,
    one backup, then quorum lost (2 of 3 members' data gone, the third member still running
    on its data), restore; with PROVISIONER_LAB_RESTORE_ALL=1 (by hand: CI's time is
    bounded) first every member's data destroyed, restore. Each time all 10,000 objects are
    back, the apiserver serves and the Deployment's pods ran on throughout (same pods, no
    restart)."""
    namespaces = [f"restore-{i}" for i in range(5)]
    started = time.monotonic()
    for namespace in namespaces:
        _kubectl(cluster, "create", "namespace", namespace)
    files = []
    for n, namespace in enumerate(namespaces):
        items = [{"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": f"cm-{i}", "namespace": namespace},
                  "data": {"i": str(i)}} for i in range(n, 10_000, len(namespaces))]
        files.append(tmp_path / f"{namespace}.json")
        files[-1].write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    # One kubectl per namespace at once: a single one creates them one by one (~180 s).
    with ThreadPoolExecutor(len(files)) as pool:
        list(pool.map(lambda f: _kubectl(cluster, "create", "-f", str(f), "-o", "name",
                                         timeout=900), files))
    print(f"10,000 ConfigMaps created in {time.monotonic() - started:.1f}s")
    _kubectl(cluster, "create", "deployment", "before-backup", "-n", namespaces[0],
             f"--image={images(cluster.plan)[0]}", "--replicas=2")
    _kubectl(cluster, "rollout", "status", "-n", namespaces[0], "deployment/before-backup",
             "--timeout=180s")

    def pods() -> dict[str, tuple[str, int]]:
        data = json.loads(_kubectl(cluster, "get", "pods", "-n", namespaces[0], "-l",
                                   "app=before-backup", "-o", "json"))
        return {p["metadata"]["uid"]: (p["status"]["containerStatuses"][0]["state"]
                                       .get("running", {}).get("startedAt", ""),
                                       p["status"]["containerStatuses"][0]["restartCount"])
                for p in data["items"]}

    before = pods()
    out = tmp_path / "backups"
    res = CliRunner().invoke(app, ["etcd", "backup", str(cluster.spec), "--out", str(out)])
    assert res.exit_code == 0, res.output
    print(res.output.strip())
    snapshot = sorted(out.glob("lab-*.db"))[-1]
    scenarios = [["lab-cp2", "lab-cp3"]]
    if os.environ.get("PROVISIONER_LAB_RESTORE_ALL") == "1":
        scenarios.insert(0, ["lab-cp1", "lab-cp2", "lab-cp3"])
    for lost in scenarios:
        _etcd_members_stop_and_lose_data(cluster, lost)
        started = time.monotonic()
        res = CliRunner().invoke(app, ["etcd", "restore", str(cluster.spec), "--snapshot",
                                       str(snapshot), "--yes"])
        print(f"etcd restore after losing {', '.join(lost)}: "
              f"{time.monotonic() - started:.1f}s\n{res.output[-1500:]}")
        assert res.exit_code == 0, res.output
        counts = [len(_kubectl(cluster, "get", "configmaps", "-n", n, "-o", "name")
                      .split()) for n in namespaces]
        # Each namespace also holds its kube-root-ca.crt ConfigMap.
        assert sum(counts) - len(namespaces) == 10_000, counts
        assert pods() == before
    for n in namespaces:
        _kubectl(cluster, "delete", "namespace", n, "--wait=false")


def test_the_control_plane_shrinks_to_one_and_grows_back_while_served(
        cluster: Cluster) -> None:
    """Issue 15's control-plane membership, on the 3+2 cluster (the lab spec keeps
    controlPlaneSlots: 3, so the workers keep their addresses): a spec with one
    control-plane node and `provision --prune` drain lab-cp2 and lab-cp3, stop their
    control planes, remove their etcd members one at a time and reset them; the full spec
    then adds them back, each etcd member a learner first, then promoted. A client on lab-w1
    asks the apiserver for its Node through its local haproxy once a second throughout: no
    request fails. lab-cp1's etcd and apiserver are never restarted, and the member list
    always ends as the spec says."""
    run = cluster.run
    assert [m for m, _ in etcd_members(run, "lab-cp1")] == ["lab-cp1", "lab-cp2", "lab-cp3"]
    pids = main_pids(run, "lab-cp1")
    one = cluster.spec.parent / "cluster-1cp.yaml"
    data = yaml.safe_load(cluster.spec.read_text())
    data["spec"]["controlPlane"]["count"] = 1
    one.write_text(yaml.safe_dump(data, sort_keys=False))
    poller = ApiPoller(run, "lab-w1")
    try:
        started = time.monotonic()
        shrunk = provision(one, None, None, None, True, LineProgress(sys.stdout), prune=True,
                           drain_timeout=240)
        print(f"3 -> 1 control-plane nodes (--prune): {time.monotonic() - started:.1f}s "
              f"(steps {shrunk.steps}); changed per host "
              f"{dict((h, r.changed) for h, r in shrunk.host_totals().items())}")
        assert shrunk.succeeded, shrunk.failure
        assert not _failing(list(shrunk.verify)), _failing(list(shrunk.verify))
        assert etcd_members(run, "lab-cp1") == [("lab-cp1", False)]
        assert main_pids(run, "lab-cp1") == pids
        assert haproxy_backends(run, "lab-w1") == 1
        for host in ("lab-cp2", "lab-cp3"):
            assert _host_is_clean(cluster, host).split("\n", 1) == ["inactive", ""], \
                (host, run(host, "systemctl --failed --no-legend --plain"))
            assert run(host, "ls -d /var/lib/etcd.removed-* | wc -l").strip() == "1"
        started = time.monotonic()
        grown = cluster.provision()
        print(f"1 -> 3 control-plane nodes: {time.monotonic() - started:.1f}s "
              f"(steps {grown.steps}); changed per host "
              f"{dict((h, r.changed) for h, r in grown.host_totals().items())}")
        assert grown.succeeded, grown.failure
        assert not _failing(list(grown.verify)), _failing(list(grown.verify))
    finally:
        results, errors = poller.stop()
    print(f"{len(results)} requests through lab-w1's haproxy, {results.count('FAIL')} failed"
          f"{': ' + errors if errors else ''}")
    assert etcd_members(run, "lab-cp1") == [
        ("lab-cp1", False), ("lab-cp2", False), ("lab-cp3", False)]
    assert main_pids(run, "lab-cp1") == pids
    assert haproxy_backends(run, "lab-w1") == 3
    assert len(results) > 60 and results.count("FAIL") == 0, results
    assert_converged(run_provision(cluster.spec, verify=False), 5)


def test_reset_keeping_etcd_data_then_provision_again(cluster: Cluster) -> None:
    """`reset --keep-etcd-data`: every service, pod, binary, iptables chain of kube-proxy and
    pod-network device is gone, SSH still works; the next provision starts the stopped etcd
    cluster (all members together) with its data, and verify passes."""
    started = time.monotonic()
    res = CliRunner().invoke(app, ["reset", str(cluster.spec), "--keep-etcd-data", "--yes"])
    print(f"reset: {time.monotonic() - started:.1f}s: {res.output[-400:]}")
    assert res.exit_code == 0, res.output
    for h in cluster.plan.hosts:
        # What is left, by name: shims ('[c]' keeps this shell's own command line out), the
        # bridge, iptables chains of kube-proxy, the kubelet and the CNI, the programs and
        # containerd's state.
        left = _host_is_clean(cluster, h.name)
        assert left.split("\n", 1) == ["inactive", ""], (h.name, left)
    assert cluster.run("lab-cp1", "ls /var/lib/etcd").strip() == "member"
    again = cluster.provision()
    assert again.succeeded, again.failure
    assert not _failing(list(again.verify)), _failing(list(again.verify))
