"""certs renew: which certificates are leaves, which phases install them, re-issuing them in
the state directory (CAs untouched, the identity unchanged), and the command end to end with
``provision`` replaced by a test double that records which phases it was asked to converge.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from provisioner import cli_certs
from provisioner.certs_renew import (
    RenewError,
    leaf_names,
    leaf_phases,
    renew_in_state,
    rollout_phases,
    select_leaves,
)
from provisioner.cli import app
from provisioner.execute import HostResult, PhaseResult
from provisioner.pki import ensure_pki
from provisioner.pki.identity import differences, fingerprints, identity_text, parse_identity
from provisioner.plan import Plan, build_plan
from provisioner.provision import Failure, ProvisionError, ProvisionResult, cluster_lock
from provisioner.render.material import prepare
from provisioner.render.tree import render
from provisioner.spec import load_file, parse
from provisioner.state import cluster_dir, private_dir

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "tests" / "golden" / "3cp-2w" / "spec.yaml"
ROLLOUT = ["etcd", "lb", "control-plane", "node"]
APISERVERS = ("apiserver/lab-cp1", "apiserver/lab-cp2", "apiserver/lab-cp3")  # one per cp


def _plan(spec: Path = SPEC) -> Plan:
    return build_plan(load_file(spec))


def _provisioned(state_root: Path, plan: Plan, days_ago: int = 10) -> Path:
    """A cluster state directory whose PKI was made ``days_ago`` days ago (so a renewal
    gives every leaf a later notAfter) plus the generated secrets, as provision leaves it."""
    sdir = cluster_dir(plan.name, state_root)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    ensure_pki(plan.pki, private_dir(sdir / "pki"), now=past)
    prepare(plan, sdir, SPEC.parent)
    return sdir


def _files(sdir: Path) -> dict[str, bytes]:
    pki = sdir / "pki"
    return {str(p.relative_to(pki)): p.read_bytes() for p in sorted(pki.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _cert(sdir: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((sdir / "pki" / f"{name}.crt").read_bytes())


def _public(sdir: Path, name: str) -> bytes:
    return _cert(sdir, name).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- which certificates, which phases -------------------------------------------------------


def test_leaves_are_every_certificate_signed_by_a_ca_and_nothing_else() -> None:
    plan = _plan()
    leaves = leaf_names(plan)
    cas = {ca.name for ca in plan.pki.cas}
    assert set(leaves) == {c.name for c in plan.pki.certs}
    assert not cas & set(leaves) and "sa" not in leaves
    assert {*APISERVERS, "lb-healthcheck", "super-admin", "etcd/peer-lab-cp2",
            "kubelet/lab-w1-client", "kubelet/lab-w1-serving"} <= set(leaves)
    # The serving pair is per control-plane node now: no shared "apiserver" leaf.
    assert "apiserver" not in leaves
    assert [n for n in leaves if n.startswith("apiserver/")] == [
        f"apiserver/{h.name}" for h in plan.control_plane]


def test_only_names_leaves_and_lists_the_valid_names() -> None:
    plan = _plan()
    assert select_leaves(plan, None) == leaf_names(plan)
    # Plan order, each once, whatever order and repeats were given.
    assert select_leaves(plan, ["lb-healthcheck", "apiserver", "apiserver"]) == (
        *APISERVERS, "lb-healthcheck")
    # A folder of the store names every leaf under it: "apiserver" is each control-plane
    # node's serving pair (and not apiserver-kubelet-client or apiserver-etcd-client).
    assert select_leaves(plan, ["apiserver"]) == tuple(
        f"apiserver/{h.name}" for h in plan.control_plane)
    assert select_leaves(plan, ["apiserver/lab-cp2"]) == ("apiserver/lab-cp2",)
    for bad, why in (("ca", "CA rotation is not done yet"), ("etcd/ca", "is a CA"),
                     ("sa", "service-account key"), ("apiservr", "not a certificate")):
        with pytest.raises(RenewError) as err:
            select_leaves(plan, ["apiserver", bad])
        text = str(err.value)
        assert f"{bad!r}" in text and why in text, text
        assert ("Valid names: apiserver/lab-cp1, apiserver/lab-cp2, apiserver/lab-cp3, "
                "apiserver-kubelet-client,") in text
        assert "kubelet/lab-w2-serving" in text and "'apiserver' is" not in text


def test_each_leaf_is_rolled_out_by_the_phases_that_install_it() -> None:
    plan = _plan()
    shipped = leaf_phases(plan)
    for name in APISERVERS:
        assert shipped[name] == ("control-plane",), name
    assert shipped["etcd/server-lab-cp1"] == ("etcd",)
    assert shipped["lb-healthcheck"] == ("lb",)  # /etc/haproxy/pki/healthcheck.pem
    assert shipped["kubelet/lab-w1-client"] == ("node",)
    assert shipped["kube-proxy"] == ("node",)
    assert shipped["super-admin"] == ()  # only in the state directory
    assert list(rollout_phases(plan, leaf_names(plan))) == ROLLOUT
    assert rollout_phases(plan, ["super-admin"]) == ()
    assert rollout_phases(plan, ["kube-proxy", "apiserver/lab-cp1"]) == (
        "control-plane", "node")


def test_an_external_load_balancer_needs_no_lb_phase_and_keepalived_holds_no_certificate(
        tmp_path: Path) -> None:
    external = build_plan(parse(SPEC.read_text().replace(
        "  workers:\n", "  loadBalancer: {mode: external, address: 192.168.56.250}\n"
        "  workers:\n")))
    assert external.cluster.spec.load_balancer.mode == "external"
    assert leaf_phases(external)["lb-healthcheck"] == ()
    assert "lb" not in rollout_phases(external, leaf_names(external))
    vip = _plan(ROOT / "tests" / "golden" / "5cp-dedicated-etcd" / "spec.yaml")
    assert vip.cluster.spec.load_balancer.mode == "vip"
    material, _ = prepare(vip, cluster_dir(vip.name, tmp_path), SPEC.parent)
    tree = render(vip, material, None)
    keepalived = [f for (h, path), owners in tree.owners.items() if "keepalived" in owners
                  for f in tree.hosts[h] if f.path == path]
    assert keepalived
    assert not [f.path for f in keepalived if b"-----BEGIN" in f.content]


# --- the state directory ----------------------------------------------------------------------


def test_renew_reissues_every_leaf_with_a_new_key_and_keeps_every_ca(tmp_path: Path) -> None:
    plan = _plan()
    sdir = _provisioned(tmp_path, plan)
    names = leaf_names(plan)
    before = _files(sdir)
    certs = {n: _cert(sdir, n) for n in names}
    keys = {n: _public(sdir, n) for n in names}
    report = renew_in_state(plan, sdir, SPEC.parent, names)
    assert set(report.reissued) == set(names)
    assert all(r == "renewal requested" for r in report.reissued.values())
    assert not report.created
    after = _files(sdir)
    for n in names:
        new = _cert(sdir, n)
        assert new.serial_number != certs[n].serial_number, n
        assert new.not_valid_after_utc > certs[n].not_valid_after_utc, n
        assert _public(sdir, n) != keys[n], n
        assert after[f"{n}.key"] != before[f"{n}.key"], n
        # Same request: same subject and SANs, signed by the same CA.
        assert new.subject == certs[n].subject and new.issuer == certs[n].issuer, n
    for ca in plan.pki.cas:
        for suffix in (".crt", ".key"):
            assert after[ca.name + suffix] == before[ca.name + suffix], ca.name
    for sa in ("sa.key", "sa.pub"):
        assert after[sa] == before[sa]
    assert set(after) == set(before)
    # The state directory's kubeconfigs carry the renewed admin pairs.
    admin = (sdir / "admin.kubeconfig").read_text()
    assert base64.b64encode((sdir / "pki" / "admin.crt").read_bytes()).decode() in admin
    super_admin = (sdir / "super-admin.kubeconfig").read_text()
    assert base64.b64encode((sdir / "pki" / "super-admin.crt").read_bytes()).decode() \
        in super_admin


def test_renew_of_some_leaves_leaves_the_others_byte_identical(tmp_path: Path) -> None:
    plan = _plan()
    sdir = _provisioned(tmp_path, plan)
    before = _files(sdir)
    renew_in_state(plan, sdir, SPEC.parent, ["lb-healthcheck"])
    after = _files(sdir)
    assert {k for k in after if after[k] != before[k]} == {"lb-healthcheck.crt",
                                                          "lb-healthcheck.key"}


def test_the_identity_check_accepts_the_hosts_after_renewal(tmp_path: Path) -> None:
    """The identity every host holds is made of CA (and service-account, encryption-key)
    fingerprints: a host provisioned before the renewal is accepted after it."""
    plan = _plan()
    sdir = _provisioned(tmp_path, plan)
    held = parse_identity(identity_text(plan.name, fingerprints(plan, prepare(
        plan, sdir, SPEC.parent)[0])))
    renew_in_state(plan, sdir, SPEC.parent, leaf_names(plan))
    material, _ = prepare(plan, sdir, SPEC.parent)
    want = parse_identity(identity_text(plan.name, fingerprints(plan, material)))
    assert differences(held, want) == []
    assert held == want


def test_renew_refuses_a_state_directory_without_the_cas(tmp_path: Path) -> None:
    plan = _plan()
    sdir = cluster_dir(plan.name, tmp_path)
    with pytest.raises(RenewError, match="provision the cluster first"):
        renew_in_state(plan, sdir, SPEC.parent, ["apiserver"])
    assert not (sdir / "pki" / "ca.crt").exists()


def test_renew_refuses_while_a_provision_holds_the_lock(tmp_path: Path) -> None:
    plan = _plan()
    sdir = _provisioned(tmp_path, plan)
    before = _files(sdir)
    with cluster_lock(sdir), pytest.raises(RenewError, match="nothing was renewed"):
        renew_in_state(plan, sdir, SPEC.parent, ["apiserver"])
    assert _files(sdir) == before


# --- the command, with provision as a test double --------------------------------------------


@dataclass
class ProvisionDouble:
    """Test double of ``provision``: records the phases it is asked to converge, checks
    that the renewed certificates are already in the state directory and that the
    provision lock is free (provision takes it itself), and fails at ``fail_at``."""

    sdir: Path
    renewed_serials: dict[str, int]
    fail_at: str | None = None
    calls: list[list[str]] = field(default_factory=list)
    machines: list[bool] = field(default_factory=list)

    def __call__(self, spec_file: Path, only: list[str] | None, skip: list[str] | None,
                 state_dir: Path | None, machines: bool, progress: object,
                 ) -> ProvisionResult:
        assert only is not None and skip is None
        self.calls.append(list(only))
        self.machines.append(machines)
        with cluster_lock(self.sdir):  # raises if the command still held it
            pass
        for name, serial in self.renewed_serials.items():
            assert _cert(self.sdir, name).serial_number != serial, name
        phase = only[0]
        host = HostResult("lab-cp1", ok=3, changed=2,
                          failed=1 if phase == self.fail_at else 0)
        result = PhaseResult(phase, f"{phase}.yml", "successful", 0, 1.0, {"lab-cp1": host})
        failure = (Failure(phase, "lab-cp1", "Etcd | Restart etcd", "boom")
                   if phase == self.fail_at else None)
        return ProvisionResult(cluster="lab", run_id="r1", run_dir=self.sdir, selected=(phase,),
                               phases=(result,), skipped=(), seconds=1.0, failure=failure)


def _double(monkeypatch: pytest.MonkeyPatch, sdir: Path, names: list[str],
            fail_at: str | None = None) -> ProvisionDouble:
    double = ProvisionDouble(sdir, {n: _cert(sdir, n).serial_number for n in names}, fail_at)
    monkeypatch.setattr(cli_certs, "provision", double)
    return double


def _renew(state: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["certs", "renew", str(SPEC), "--state-dir", str(state),
                                   *args], input=stdin)
    return res.exit_code, res.output


def test_renew_converges_each_installing_phase_alone_in_plan_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan()
    sdir = _provisioned(tmp_path, plan)
    names = list(leaf_names(plan))
    before = {n: _cert(sdir, n).not_valid_after_utc for n in names}
    double = _double(monkeypatch, sdir, names)
    code, output = _renew(tmp_path, "--yes")
    assert code == 0, output
    assert double.calls == [[p] for p in ROLLOUT]
    assert double.machines == [False] * len(ROLLOUT)
    for phase in ROLLOUT:
        assert f"s  {phase}: 1 hosts, 2 changed tasks" in output
    assert "s  re-issue 29 in the state directory (the CAs kept)" in output
    for n in names:
        new = _cert(sdir, n).not_valid_after_utc
        assert new > before[n]
        assert (f"  {n.ljust(max(map(len, names)))}  notAfter {new:%Y-%m-%dT%H:%M:%SZ} "
                f"(was {before[n]:%Y-%m-%dT%H:%M:%SZ})") in output
    assert "29 certificates renewed, installed through etcd, lb, control-plane, node" in output


def test_renew_only_converges_the_phases_of_the_named_certificates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan()
    sdir = _provisioned(tmp_path, plan)
    before = _files(sdir)
    double = _double(monkeypatch, sdir, ["kube-proxy", "lb-healthcheck"])
    code, output = _renew(tmp_path, "--yes", "--only", "kube-proxy,lb-healthcheck")
    assert code == 0, output
    assert double.calls == [["lb"], ["node"]]
    after = _files(sdir)
    assert {k for k in after if after[k] != before[k]} == {
        "kube-proxy.crt", "kube-proxy.key", "lb-healthcheck.crt", "lb-healthcheck.key"}


def test_renew_of_a_state_only_certificate_converges_no_phase(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan()
    sdir = _provisioned(tmp_path, plan)
    double = _double(monkeypatch, sdir, ["super-admin"])
    code, output = _renew(tmp_path, "--yes", "--only", "super-admin")
    assert code == 0, output
    assert double.calls == []
    assert "in the state directory only" in output


def _refusal_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                   ) -> tuple[Path, dict[str, bytes], ProvisionDouble]:
    """A provisioned state directory, its files as they are, and a provision double that
    must not be called: for the runs that refuse or only list."""
    sdir = _provisioned(tmp_path, _plan())
    return sdir, _files(sdir), _double(monkeypatch, sdir, [])


def test_renew_with_an_unknown_or_ca_name_exits_2_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sdir, before, double = _refusal_setup(tmp_path, monkeypatch)
    code, output = _renew(tmp_path, "--yes", "--only", "apiserver,front-proxy-ca")
    assert code == 2, output
    assert "'front-proxy-ca' is a CA: CA rotation is not done yet" in output
    assert "Valid names: apiserver/lab-cp1," in output
    assert double.calls == [] and _files(sdir) == before


def test_renew_asks_first_and_a_no_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sdir, before, double = _refusal_setup(tmp_path, monkeypatch)
    code, output = _renew(tmp_path, stdin="n\n")
    assert code == 1, output
    assert "Renew 29 certificates of cluster lab" in output
    assert "etcd, lb, control-plane, node?" in output
    assert "not confirmed; nothing was changed" in output
    assert double.calls == [] and _files(sdir) == before


def test_dry_run_lists_names_expiry_and_phases_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sdir, before, double = _refusal_setup(tmp_path, monkeypatch)
    code, output = _renew(tmp_path, "--dry-run", "--only", "apiserver,super-admin")
    assert code == 0, output
    for name in APISERVERS:
        stamp = f"{_cert(sdir, name).not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
        assert f"{name}  notAfter {stamp}  in phase control-plane" in output
    assert "super-admin        notAfter" in output and "in the state directory only" in output
    assert "would renew 4 certificates of lab and converge control-plane" in output
    assert double.calls == [] and _files(sdir) == before


def test_a_failed_phase_stops_the_rollout_and_says_how_to_finish_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan()
    sdir = _provisioned(tmp_path, plan)
    names = list(leaf_names(plan))
    double = _double(monkeypatch, sdir, names, fail_at="control-plane")
    code, output = _renew(tmp_path, "--yes")
    assert code == 1, output
    assert double.calls == [["etcd"], ["lb"], ["control-plane"]]
    flat = " ".join(output.split())
    assert "phase control-plane: phase control-plane, host lab-cp1" in flat
    assert f"The renewed certificates are in {sdir / 'pki'}" in flat
    assert "`provisioner provision FILE --only control-plane,node`" in flat
    assert "a plain `provisioner provision FILE`" in flat
    # Run again: everything is renewed once more and every phase converges.
    again = _double(monkeypatch, sdir, names)
    code, output = _renew(tmp_path, "--yes")
    assert code == 0, output
    assert again.calls == [[p] for p in ROLLOUT]


def test_a_provision_that_cannot_start_stops_the_rollout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan()
    _provisioned(tmp_path, plan)

    def cannot_start(*args: object) -> ProvisionResult:
        raise ProvisionError("another provision of this cluster is running")

    monkeypatch.setattr(cli_certs, "provision", cannot_start)
    code, output = _renew(tmp_path, "--yes", "--only", "apiserver")
    assert code == 1, output
    flat = " ".join(output.split())
    assert "phase control-plane: another provision of this cluster is running" in flat
    assert "--only control-plane`" in flat
