"""certs check and verify's cert-expiry: which files, reading them without keys, the 30-day
verdict, and the command end to end over real SSH.

Certificates are issued here with short lifetimes. The end-to-end tests run ``provisioner
certs check`` against in-process paramiko servers (tests/fixtures/ssh_server.py: real SSH on
loopback, host keys pinned) that run the one command it sends with ``sh``, each inside its own
fake root: the rendered tree of its host, so the files are the ones a provision would install.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import shlex
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from typer.testing import CliRunner

from provisioner.certs_check import (
    KUBELET_ROTATED,
    MARK,
    READ_ARGV0,
    STATE,
    CertFile,
    CertInfo,
    Inventory,
    Problem,
    certificates_in,
    describe,
    host_cert_files,
    parse_read_output,
    read_command,
    read_state,
    to_json,
    verdict,
)
from provisioner.cli import app
from provisioner.pki import ensure_pki
from provisioner.pki.certs import cert_pem, issue_ca, issue_leaf, key_pem, new_key
from provisioner.pki.model import CARequest, CertRequest
from provisioner.plan import Plan, build_plan
from provisioner.providers.connections import Connection, write_connections
from provisioner.render.material import prepare
from provisioner.render.tree import render, write_tree
from provisioner.spec import parse
from provisioner.verify import verify
from provisioner.verify.checks.certs import host_verdict
from provisioner.verify.run import build_context
from tests.fixtures.ssh_server import SshServer

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
# Local artifacts: this file is about certificates, not about which releases are pinned.
SPEC = """
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: ct}
spec:
  provider: {type: nspawn}
  controlPlane: {count: 1}
  workers: {count: 2}
  artifacts: {source: local, path: artifacts}
"""


def _ca(now: dt.datetime, days: int, name: str = "test-ca") -> bytes:
    """A CA certificate (PEM) valid from ``now`` - 5 min for ``days``."""
    return cert_pem(issue_ca(CARequest("ca", name), new_key(), days, now))


def _leaf(now: dt.datetime, days: int, cn: str = "leaf", ca_days: int = 3650,
          dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """A leaf (PEM, its key PEM) valid from ``now`` - 5 min for ``days``."""
    ca_key = new_key()
    ca = issue_ca(CARequest("ca", "test-ca"), ca_key, ca_days, now)
    key = new_key()
    leaf = issue_leaf(CertRequest("x", "ca", cn, ("org",), dns, ips, server=True), key, ca,
                      ca_key, days, now)
    return cert_pem(leaf), key_pem(key)


# --- parsing and the verdict ---------------------------------------------------------------


def test_describe_reads_names_sans_ca_and_days_left() -> None:
    pem, _ = _leaf(NOW, 10, "kube-apiserver", dns=("kubernetes", "a.example"),
                   ips=("10.96.0.1",))
    (cert,), bad = certificates_in(pem)
    assert bad == 0
    info = describe(cert, "cp1", "/etc/kubernetes/pki/apiserver.crt", "control-plane")
    assert info.subject == "CN=kube-apiserver,O=org"
    assert info.issuer == "CN=test-ca"
    assert info.sans == ("DNS:kubernetes", "DNS:a.example", "IP:10.96.0.1")
    assert not info.is_ca
    assert info.stamp == "2030-01-11T00:00:00Z"
    assert info.days_left(NOW) == 10
    assert info.days_left(NOW + dt.timedelta(hours=1)) == 9  # whole days, rounded down
    assert info.days_left(NOW + dt.timedelta(days=11)) == -1
    (ca_cert,), _ = certificates_in(_ca(NOW, 100))
    ca_info = describe(ca_cert, STATE, "/s/pki/ca.crt")
    assert ca_info.is_ca and ca_info.sans == ()


def test_status_warns_within_30_days_and_fails_expired_or_early() -> None:
    pem, _ = _leaf(NOW, 30)
    (cert,), _ = certificates_in(pem)
    info = describe(cert, "h", "/p")
    assert info.status(NOW) == "expiring"  # exactly 30 days left: within the window
    assert info.status(NOW - dt.timedelta(seconds=1)) == "ok"
    assert info.status(NOW + dt.timedelta(days=30)) == "expired"
    assert info.status(NOW - dt.timedelta(minutes=6)) == "not-yet-valid"  # notBefore -5 min


def test_certificates_in_ignores_keys_and_counts_broken_blocks() -> None:
    a, key = _leaf(NOW, 5, "a")
    b, _ = _leaf(NOW, 5, "b")
    certs, bad = certificates_in(key + a + key + b)
    assert [c.subject.rfc4514_string() for c in certs] == ["O=org,CN=a", "O=org,CN=b"]
    assert bad == 0
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert certificates_in(broken + a)[1] == 1
    assert certificates_in(key) == ([], 0)


def _run_locally(paths: list[str]) -> str:
    out = subprocess.run(["sh", "-c", read_command(paths)], capture_output=True, text=True,
                         timeout=30, check=True)
    return out.stdout


def _key_lines(key: bytes) -> set[str]:
    """The full base64 lines of a key (a short last line could occur in a certificate)."""
    return {line for line in key.decode().splitlines() if len(line) == 64}


def _lines(text: str | bytes) -> set[str]:
    return set((text if isinstance(text, str) else text.decode()).splitlines())


def test_read_command_prints_certificate_blocks_only(tmp_path: Path) -> None:
    """The command run as is by sh: a key never leaves the host, whatever the file holds."""
    cert, key = _leaf(NOW, 5, "pair")
    files = {
        "cert-then-key.pem": cert + key,  # haproxy's healthcheck pair, the kubelet's pem
        "key-then-cert.pem": key + cert,
        # A certificate cut short just before its key: printing must stop at the key.
        "truncated.pem": cert[: len(cert) // 2] + b"\n" + key,
        "plain.crt": cert,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = [str(tmp_path / n) for n in files] + [str(tmp_path / "absent.crt")]
    out = _run_locally(paths)
    assert "PRIVATE KEY" not in out
    assert _key_lines(key) and not _key_lines(key) & _lines(out)
    wanted = [CertFile(p, "node") for p in paths]
    certs, problems = parse_read_output("h1", wanted, out)
    assert sorted(c.path for c in certs) == sorted(
        str(tmp_path / n) for n in ("cert-then-key.pem", "key-then-cert.pem", "plain.crt"))
    assert {(p.path.rsplit("/", 1)[1], p.kind) for p in problems} == {
        ("truncated.pem", "invalid"), ("absent.crt", "missing")}
    missing = next(p for p in problems if p.kind == "missing")
    assert "--only node" in missing.hint
    # The kubelet's rotated pair may not exist yet: no problem when it does not.
    optional = [CertFile(str(tmp_path / "absent.crt"), None)]
    assert parse_read_output("h1", optional, _run_locally([optional[0].path])) == ([], [])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_read_command_reports_an_unreadable_file(tmp_path: Path) -> None:
    cert, _ = _leaf(NOW, 5)
    f = tmp_path / "locked.crt"
    f.write_bytes(cert)
    f.chmod(0)
    certs, problems = parse_read_output("h1", [CertFile(str(f), "etcd")],
                                        _run_locally([str(f)]))
    assert certs == []
    assert [(p.kind, p.path) for p in problems] == [("unreadable", str(f))]


def test_a_file_the_host_did_not_answer_for_is_a_problem() -> None:
    certs, problems = parse_read_output("h1", [CertFile("/a.crt", "etcd")],
                                        f"{MARK} file /b.crt\n")
    assert certs == []
    assert [(p.path, p.kind) for p in problems] == [("/a.crt", "error")]


def _info(where: str, path: str, days: float, ca: bool = False,
          phase: str | None = "etcd") -> CertInfo:
    return CertInfo(where, path, "CN=x", "CN=ca", (), NOW - dt.timedelta(days=1),
                    NOW + dt.timedelta(days=days), ca, phase)


def test_inventory_sorts_soonest_first_and_says_why_it_failed() -> None:
    fine = Inventory((_info("h2", "/b", 400), _info(STATE, "/s/a", 100, ca=True),
                      _info("h1", "/c", 31)), ())
    assert fine.passed(NOW)
    assert [c.path for c in fine.sorted_certs()] == ["/c", "/s/a", "/b"]
    line = verdict(fine, NOW)
    assert line.startswith("certs check passed: 3 certificates on 2 hosts and in the state")
    assert "soonest: /c on h1, 2030-02-01T00:00:00Z (in 31 days)" in line
    rows = json.loads(to_json(fine, NOW))
    assert [(r["where"], r["path"], r["days_left"], r["status"], r["ca"]) for r in rows] == [
        ("h1", "/c", 31, "ok", False), (STATE, "/s/a", 100, "ok", True),
        ("h2", "/b", 400, "ok", False)]
    due = Inventory((*fine.certs, _info("h1", "/d", 29), _info("h2", "/e", -2)),
                    (Problem("h3", "", "unreachable", "no answer", "is it up?"),
                     Problem("h1", "/f", "missing", "not on the host", "install it")))
    assert not due.passed(NOW)
    assert [c.path for c in due.due(NOW)] == ["/e", "/d"]
    assert verdict(due, NOW) == (
        "certs check FAILED: 1 certificate expired, 1 certificate expiring within 30 days, "
        "1 host unreachable, 1 file missing, unreadable or invalid")
    rows = json.loads(to_json(due, NOW))
    assert rows[0]["status"] == "expired" and rows[1]["status"] == "expiring"
    assert rows[-2:] == [
        {"where": "h1", "path": "/f", "status": "missing", "detail": "not on the host",
         "hint": "install it"},
        {"where": "h3", "path": "", "status": "unreachable", "detail": "no answer",
         "hint": "is it up?"}]
    # One expiring certificate is enough to fail.
    assert not Inventory((_info("h1", "/g", 30),), ()).passed(NOW)


def test_hints_name_the_phase_the_ca_and_the_kubelet() -> None:
    state = Path("/st")
    leaf = _info("h1", "/etc/kubernetes/pki/etcd/server.crt", 3).hint(state)
    assert "re-issue the certificate" in leaf and "--only etcd" in leaf
    assert "/st/pki" in leaf and "`provisioner certs renew FILE` renews every leaf" in leaf
    assert "planned" not in leaf
    ca = _info(STATE, "/st/pki/ca.crt", 3, True).hint(state)
    assert "every certificate it signed" in ca and "CA rotation is not done yet" in ca
    kubelet = _info("w1", KUBELET_ROTATED, 3, phase=None).hint(state)
    assert "kubectl get csr" in kubelet and "journalctl -u kubelet` on w1" in kubelet


def test_state_directory_certificates_and_a_corrupt_one(tmp_path: Path) -> None:
    plan = build_plan(parse(SPEC))
    ensure_pki(plan.pki, tmp_path / "pki", now=NOW)
    (tmp_path / "pki" / "etcd" / "server-ct-cp1.crt").write_text("garbage\n")
    certs, problems = read_state(tmp_path)
    names = {c.path.removeprefix(str(tmp_path / "pki") + "/") for c in certs}
    assert {"ca.crt", "etcd/ca.crt", "front-proxy-ca.crt", "apiserver/ct-cp1.crt"} <= names
    assert not any(n.endswith(".key") for n in names)
    assert {c.where for c in certs} == {STATE}
    assert next(c for c in certs if c.path.endswith("/pki/ca.crt")).is_ca
    assert [(p.path, p.kind) for p in problems] == [
        (str(tmp_path / "pki" / "etcd" / "server-ct-cp1.crt"), "invalid")]
    assert [p.kind for p in read_state(tmp_path / "none")[1]] == ["missing"]


# --- which files: the plan's, as a real render lays them out -------------------------------


def test_host_files_are_every_rendered_certificate(tmp_path: Path) -> None:
    """The stand-in render finds exactly the files whose real content is a certificate."""
    (tmp_path / "registry-ca.crt").write_bytes(_ca(NOW, 100, "registry-ca"))
    text = SPEC + ("  registries: {private: [{host: hub.test.com, caFile: "
                   f"{tmp_path / 'registry-ca.crt'}}}]}}\n")
    plan = build_plan(parse(text))
    material, _ = prepare(plan, tmp_path / "state", tmp_path)
    tree = render(plan, material, None)
    ours = host_cert_files(plan)
    for host in plan.hosts:
        real = {f.path for f in tree.hosts[host.name]
                if f.content.startswith(b"-----BEGIN CERTIFICATE-----")}
        planned = [f for f in ours[host.name] if not f.optional]
        assert {f.path for f in planned} == real, host.name
        assert all(f.phase for f in planned)
    cp, worker = ours["ct-cp1"], ours["ct-w1"]
    paths = {f.path for f in cp}
    assert {"/etc/kubernetes/pki/apiserver.crt", "/etc/kubernetes/pki/etcd/peer.crt",
            "/etc/haproxy/pki/healthcheck.pem", KUBELET_ROTATED} <= paths
    assert "/etc/kubernetes/pki/sa.pub" not in paths
    assert not any(p.endswith(".key") for p in paths)
    assert any("hub.test.com" in f.path for f in worker)
    assert [f for f in worker if f.optional] == [CertFile(KUBELET_ROTATED, None)]


# --- verify's cert-expiry verdict ----------------------------------------------------------


def test_host_verdict_ok_warn_fail(tmp_path: Path) -> None:
    plan = build_plan(parse(SPEC))
    ctx = build_context(plan, tmp_path, ssh=None, now=NOW)
    try:
        fine = host_verdict("ct-w1", [_info("ct-w1", "/a", 31), _info("ct-w1", "/b", 90)],
                            [], ctx)
        assert fine.status == "ok"
        assert fine.evidence == ("2 certificates valid beyond 30 days; soonest: /a notAfter "
                                 "2030-02-01T00:00:00Z")
        soon = host_verdict("ct-w1", [_info("ct-w1", "/b", 90), _info("ct-w1", "/a", 12)],
                            [], ctx)
        assert soon.status == "warn"
        assert soon.evidence == ("/a on ct-w1: notAfter 2030-01-13T00:00:00Z, within 30 "
                                 "days")
        assert "re-issue the certificate" in soon.hint and "--only etcd" in soon.hint
        gone = host_verdict("ct-w1", [_info("ct-w1", "/a", -1), _info("ct-w1", "/c", 12)],
                            [Problem("ct-w1", "/m", "missing", "not on the host", "install")],
                            ctx)
        assert gone.status == "fail"
        assert gone.evidence == (
            "/m: missing (not on the host); /a on ct-w1: expired (notAfter "
            "2029-12-31T00:00:00Z); /c on ct-w1: notAfter 2030-01-13T00:00:00Z, within 30 "
            "days")
        assert gone.hint.startswith("install; re-issue the certificate")
    finally:
        ctx.ssh.close()


# --- end to end over real SSH --------------------------------------------------------------


def _in_root(command: str, root: Path) -> tuple[int, bytes, bytes]:
    """Run the certificate command with sh, its paths moved under ``root`` (and ``root``
    taken out of what it prints); anything else is not found."""
    argv = shlex.split(command)
    if argv[:2] != ["sh", "-c"] or argv[3:4] != [READ_ARGV0]:
        return 127, b"", f"{argv[0]}: not found\n".encode()
    moved = [*argv[:4], *(str(root) + p for p in argv[4:])]
    out = subprocess.run(moved, capture_output=True, timeout=30)
    return out.returncode, out.stdout.replace(str(root).encode(), b""), out.stderr


@dataclass
class Lab:
    """A provisioned-looking cluster: state, rendered host roots, SSH servers."""

    spec: Path
    root: Path  # --state-dir
    state: Path  # the cluster's state directory
    plan: Plan
    hosts: dict[str, Path]  # host -> its fake root
    servers: list[SshServer]

    @property
    def commands(self) -> list[str]:
        """The commands the hosts were sent."""
        return [c for s in self.servers for c in s.requests().commands]

    @property
    def sent(self) -> list[bytes]:
        """Everything the hosts sent back, a command's stdout and stderr each."""
        return [b for s in self.servers for b in s.requests().sent]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """ct-cp1 and ct-w1 served by SSH servers whose files are the rendered tree; ct-w2's
    recorded login points at a closed port (a host that is down)."""
    spec = tmp_path / "cluster.yaml"
    spec.write_text(SPEC)
    plan = build_plan(parse(SPEC))
    root = tmp_path / "state-root"
    state = root / "clusters" / plan.name
    material, _ = prepare(plan, state, tmp_path)
    write_tree(render(plan, material, None), tmp_path / "rendered")
    (state / "ssh").mkdir(mode=0o700)
    key_file = state / "ssh" / "id_ed25519"
    key_file.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    key_file.chmod(0o600)
    client_key = paramiko.Ed25519Key.from_private_key_file(str(key_file))
    host_key = paramiko.ECDSAKey.generate()
    servers: list[SshServer] = []
    connections: dict[str, Connection] = {}
    known = []
    hosts = {h: tmp_path / "rendered" / "hosts" / h for h in ("ct-cp1", "ct-w1")}
    for name, host_root in hosts.items():
        server = SshServer(host_key, client_key, functools.partial(_in_root, root=host_root))
        servers.append(server)
        connections[name] = Connection("127.0.0.1", server.port, "root", key_file)
        known.append(
            f"[127.0.0.1]:{server.port} {host_key.get_name()} {host_key.get_base64()}\n")
    with socket.create_server(("127.0.0.1", 0)) as closed:
        down = closed.getsockname()[1]
    connections["ct-w2"] = Connection("127.0.0.1", down, "root", key_file)
    write_connections(state, connections)
    (state / "ssh" / "known_hosts").write_text("".join(known))
    try:
        yield Lab(spec, root, state, plan, hosts, servers)
    finally:
        for server in servers:
            server.close()


def _check(lab: Lab, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["certs", "check", str(lab.spec), "--state-dir",
                                      str(lab.root), "--timeout", "3", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.output)
    return result.exit_code, result.output


def test_certs_check_lists_hosts_and_state_and_reports_the_down_host(lab: Lab) -> None:
    code, out = _check(lab)
    assert code == 1, out
    lines = out.splitlines()
    assert lines[0].split() == ["DAYS", "STATUS", "NOT", "AFTER", "WHERE", "PATH", "SUBJECT",
                                "ISSUER", "CA", "SANS"]
    rows = [line.split() for line in lines[1:] if line and line.split()[0].isdigit()]
    where_path = {(r[3], r[4]) for r in rows}
    assert ("ct-cp1", "/etc/kubernetes/pki/apiserver.crt") in where_path
    assert ("ct-cp1", "/etc/haproxy/pki/healthcheck.pem") in where_path
    assert ("ct-w1", "/var/lib/kubelet/pki/kubelet-client.crt") in where_path
    assert (STATE, "pki/ca.crt") in where_path and (STATE, "pki/etcd/ca.crt") in where_path
    assert f"(paths of state are in {lab.state})" in out
    days = [int(r[0]) for r in rows]
    assert days == sorted(days) and 360 <= days[0] <= 365  # fresh leaves: a year
    assert "ct-w2: unreachable:" in out and "connection refused" in out
    assert "Traceback" not in out
    assert "PRIVATE KEY" not in out
    assert lines[-1] == "certs check FAILED: 1 host unreachable"
    # One command per reachable host, run as root (the login is root: no sudo).
    assert len(lab.commands) == 2
    assert all(shlex.split(c)[3] == READ_ARGV0 for c in lab.commands)


def _replace(lab: Lab, host: str, path: str, data: bytes) -> None:
    target = lab.hosts[host] / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def test_certs_check_flags_certificates_expiring_on_hosts(lab: Lab) -> None:
    now = dt.datetime.now(dt.UTC)
    short, short_key = _leaf(now, 5, "short-apiserver")
    rotated, rotated_key = _leaf(now, 20, "system:node:ct-w1")
    _replace(lab, "ct-cp1", "/etc/kubernetes/pki/apiserver.crt", short)
    # The kubelet's rotated pair: certificate and key in one file.
    _replace(lab, "ct-w1", KUBELET_ROTATED, rotated + rotated_key)
    code, out = _check(lab)
    assert code == 1, out
    rows = [line.split() for line in out.splitlines()[1:] if line and line[0].isdigit()]
    assert rows[0][:2] == ["4", "expiring"] and rows[0][3:5] == [
        "ct-cp1", "/etc/kubernetes/pki/apiserver.crt"]
    assert rows[1][:2] == ["19", "expiring"] and rows[1][3:5] == ["ct-w1", KUBELET_ROTATED]
    assert "CN=short-apiserver,O=org" in out
    assert ("ct-cp1: /etc/kubernetes/pki/apiserver.crt (CN=short-apiserver,O=org): expires "
            in out)
    assert "--only control-plane" in out and "kubectl get csr" in out
    assert out.splitlines()[-1] == ("certs check FAILED: 2 certificates expiring within 30 "
                                    "days, 1 host unreachable")
    # No key left a host, though haproxy's pair and the kubelet's hold theirs in the file.
    assert len(lab.sent) == 2
    for key in (short_key, rotated_key):
        assert not _key_lines(key) & (_lines(out) | _lines(b"".join(lab.sent)))
    assert all(b"PRIVATE KEY" not in s for s in lab.sent)
    code, text = _check(lab, "--json")
    assert code == 1
    data = json.loads(text[: text.rindex("]") + 1])
    assert [(d["where"], d["path"], d["status"]) for d in data[:2]] == [
        ("ct-cp1", "/etc/kubernetes/pki/apiserver.crt", "expiring"),
        ("ct-w1", KUBELET_ROTATED, "expiring")]
    assert data[0]["days_left"] == 4 and data[0]["sans"] == []
    assert data[-1]["where"] == "ct-w2" and data[-1]["status"] == "unreachable"
    assert all("PRIVATE" not in json.dumps(d) for d in data)


def test_certs_check_passes_when_every_host_answers(lab: Lab) -> None:
    # Without the down host (its recorded login is then unused).
    lab.spec.write_text(SPEC.replace("workers: {count: 2}", "workers: {count: 1}"))
    code, out = _check(lab)
    assert code == 0, out
    last = out.splitlines()[-1]
    assert last.startswith("certs check passed: ") and "on 2 hosts and in the state" in last
    assert "none expiring within 30 days; soonest: " in last


def test_verify_cert_expiry_over_real_ssh(lab: Lab) -> None:
    now = dt.datetime.now(dt.UTC)
    short, _ = _leaf(now, 5, "short-etcd")
    _replace(lab, "ct-cp1", "/etc/kubernetes/pki/etcd/server.crt", short)
    (lab.hosts["ct-w1"] / "var/lib/kube-proxy/kube-proxy.crt").unlink()
    results = {r.target: r for r in verify(lab.plan, lab.state, ["cert-expiry"], timeout=3)}
    cp = results["ct-cp1"]
    assert cp.status == "warn", cp
    assert cp.evidence.startswith("/etc/kubernetes/pki/etcd/server.crt on ct-cp1: notAfter ")
    assert "re-issue the certificate" in cp.hint and "--only etcd" in cp.hint
    w1 = results["ct-w1"]
    assert w1.status == "fail", w1
    assert "/var/lib/kube-proxy/kube-proxy.crt: missing" in w1.evidence
    assert "--only node" in w1.hint
    assert results["ct-w2"].status == "skipped"  # the ssh check reports the down host
