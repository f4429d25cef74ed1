"""Tests for the cluster PKI: issuance, the keep/reissue policy, file layout and kubeconfigs."""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from provisioner.pki import (
    CARequest,
    CertRequest,
    PkiError,
    PkiPlan,
    describe_certificate,
    ensure_pki,
    kubeconfig,
    load_certificate,
    verify_issued_by,
)

CONTROL_PLANES = (("cp1", "10.0.0.11"), ("cp2", "10.0.0.12"), ("cp3", "10.0.0.13"))
WORKERS = (("w1", "10.0.0.21"),)
CAS = (
    CARequest("ca", "kubernetes-ca"),
    CARequest("etcd/ca", "etcd-ca"),
    CARequest("front-proxy-ca", "kubernetes-front-proxy-ca"),
)
API_DNS = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "localhost",
    *(name for name, _ in CONTROL_PLANES),
)
API_IPS = ("10.96.0.1", "127.0.0.1", *(ip for _, ip in CONTROL_PLANES))


def realistic_certs(api_dns: tuple[str, ...] = API_DNS) -> list[CertRequest]:
    """The leaves of a three-control-plane, stacked-etcd cluster with one worker."""
    certs = [
        CertRequest(
            "apiserver",
            "ca",
            "kube-apiserver",
            dns_names=api_dns,
            ip_addresses=API_IPS,
            server=True,
        ),
        CertRequest("apiserver-kubelet-client", "ca", "kube-apiserver-kubelet-client", client=True),
        CertRequest("apiserver-etcd-client", "etcd/ca", "kube-apiserver-etcd-client", client=True),
        CertRequest("front-proxy-client", "front-proxy-ca", "front-proxy-client", client=True),
        CertRequest(
            "admin", "ca", "kubernetes-admin", organizations=("system:masters",), client=True
        ),
    ]
    for name, ip in CONTROL_PLANES:
        certs += [
            CertRequest(
                f"etcd/server-{name}",
                "etcd/ca",
                name,
                dns_names=(name, "localhost"),
                ip_addresses=(ip, "127.0.0.1"),
                server=True,
                client=True,
            ),
            CertRequest(
                f"etcd/peer-{name}",
                "etcd/ca",
                name,
                dns_names=(name,),
                ip_addresses=(ip,),
                server=True,
                client=True,
            ),
        ]
    for name, _ in CONTROL_PLANES + WORKERS:
        certs.append(
            CertRequest(
                f"kubelet/{name}-client",
                "ca",
                f"system:node:{name}",
                organizations=("system:nodes",),
                client=True,
            )
        )
    return certs


def realistic_plan(api_dns: tuple[str, ...] = API_DNS) -> PkiPlan:
    """The realistic plan; ``api_dns`` lets a test add apiserver SANs."""
    return PkiPlan(cas=CAS, certs=tuple(realistic_certs(api_dns)))


PLAN = realistic_plan()
ALL_NAMES = [c.name for c in PLAN.cas] + [c.name for c in PLAN.certs] + ["sa"]


def snapshot(pki_dir: Path) -> dict[str, bytes]:
    """Every file under ``pki_dir`` (relative path -> bytes)."""
    return {
        str(p.relative_to(pki_dir)): p.read_bytes()
        for p in sorted(pki_dir.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The realistic PKI, generated once per module (the RSA key is the slow part)."""
    pki_dir = tmp_path_factory.mktemp("shared") / "pki"
    report = ensure_pki(PLAN, pki_dir)
    assert list(report.created) == ALL_NAMES
    assert not report.reissued and not report.kept
    return pki_dir


@pytest.fixture
def pki(generated: Path, tmp_path: Path) -> Path:
    """A private copy of the generated PKI that a test may change."""
    target = tmp_path / "pki"
    shutil.copytree(generated, target)  # copy2 keeps the file and directory modes
    return target


def mode(path: Path) -> int:
    """Permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


# --- issuance --------------------------------------------------------------------------------


def test_every_leaf_verifies_against_its_ca_and_no_other(generated: Path) -> None:
    cas = {ca.name: load_certificate(generated, ca.name) for ca in PLAN.cas}
    for ca_cert in cas.values():
        assert verify_issued_by(ca_cert, ca_cert)  # self-signed
    for req in PLAN.certs:
        cert = load_certificate(generated, req.name)
        for name, ca_cert in cas.items():
            assert verify_issued_by(cert, ca_cert) == (name == req.ca), (req.name, name)


def test_sans_and_ekus_are_right(generated: Path) -> None:
    def describe(name: str) -> str:
        return describe_certificate(load_certificate(generated, name))

    assert describe("apiserver") == (
        "subject=CN=kube-apiserver; issuer=CN=kubernetes-ca; "
        "san=DNS:cp1,DNS:cp2,DNS:cp3,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,"
        "IP:10.0.0.11,IP:10.0.0.12,IP:10.0.0.13,IP:10.96.0.1,IP:127.0.0.1; eku=serverAuth"
    )
    assert describe("etcd/server-cp2") == (
        "subject=CN=cp2; issuer=CN=etcd-ca; san=DNS:cp2,DNS:localhost,IP:10.0.0.12,IP:127.0.0.1; "
        "eku=serverAuth,clientAuth"
    )
    assert describe("etcd/peer-cp3") == (
        "subject=CN=cp3; issuer=CN=etcd-ca; san=DNS:cp3,IP:10.0.0.13; eku=serverAuth,clientAuth"
    )
    assert describe("apiserver-etcd-client") == (
        "subject=CN=kube-apiserver-etcd-client; issuer=CN=etcd-ca; san=none; eku=clientAuth"
    )
    assert describe("admin") == (
        "subject=CN=kubernetes-admin,O=system:masters; issuer=CN=kubernetes-ca; san=none; "
        "eku=clientAuth"
    )
    assert describe("kubelet/w1-client") == (
        "subject=CN=system:node:w1,O=system:nodes; issuer=CN=kubernetes-ca; san=none; "
        "eku=clientAuth"
    )
    assert describe("front-proxy-client") == (
        "subject=CN=front-proxy-client; issuer=CN=kubernetes-front-proxy-ca; san=none; "
        "eku=clientAuth"
    )
    assert describe("etcd/ca") == "subject=CN=etcd-ca; issuer=CN=etcd-ca; san=none; eku=none"


def test_extensions_keys_and_validity(generated: Path) -> None:
    ca = load_certificate(generated, "ca")
    leaf = load_certificate(generated, "apiserver")
    for cert in (ca, leaf):
        assert cert.version is x509.Version.v3
        assert cert.not_valid_before_utc < dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4)
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == 3650
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 365

    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and ku.digital_signature
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value

    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf_ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert leaf_ku.digital_signature and leaf_ku.key_encipherment and not leaf_ku.key_cert_sign
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert leaf.serial_number != load_certificate(generated, "admin").serial_number

    key_pem = (generated / "apiserver.key").read_bytes()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    sa_key = serialization.load_pem_private_key((generated / "sa.key").read_bytes(), None)
    assert isinstance(sa_key, rsa.RSAPrivateKey) and sa_key.key_size == 2048
    sa_pub = serialization.load_pem_public_key((generated / "sa.pub").read_bytes())
    assert isinstance(sa_pub, rsa.RSAPublicKey)
    assert sa_pub.public_numbers() == sa_key.public_key().public_numbers()


def test_file_modes(generated: Path) -> None:
    assert mode(generated) == 0o700
    assert mode(generated / "etcd") == 0o700
    assert mode(generated / "kubelet") == 0o700
    for name in ALL_NAMES:
        key = generated / f"{name}.key"
        assert mode(key) == 0o600, name
        public = generated / (f"{name}.pub" if name == "sa" else f"{name}.crt")
        assert mode(public) == 0o644, name
    assert not [p for p in generated.rglob("*.tmp")]


def test_modes_do_not_depend_on_umask(tmp_path: Path) -> None:
    plan = PkiPlan(
        cas=(CARequest("etcd/ca", "etcd-ca"),),
        certs=(CertRequest("etcd/peer-cp1", "etcd/ca", "cp1", server=True),),
        service_account_key=False,
    )
    old = os.umask(0o077)
    try:
        ensure_pki(plan, tmp_path / "pki")
    finally:
        os.umask(old)
    assert mode(tmp_path / "pki" / "etcd") == 0o700
    assert mode(tmp_path / "pki" / "etcd" / "peer-cp1.crt") == 0o644
    assert mode(tmp_path / "pki" / "etcd" / "peer-cp1.key") == 0o600


def test_loose_directory_and_key_modes_are_tightened(pki: Path) -> None:
    pki.chmod(0o755)
    (pki / "apiserver.key").chmod(0o644)
    report = ensure_pki(PLAN, pki)
    assert mode(pki) == 0o700
    assert mode(pki / "apiserver.key") == 0o600
    assert not report.changed
    assert any("apiserver.key was mode 0644" in w for w in report.warnings)


# --- stability and the reissue policy --------------------------------------------------------


def test_second_run_keeps_every_file_byte_identical(pki: Path) -> None:
    before = snapshot(pki)
    report = ensure_pki(PLAN, pki)
    assert snapshot(pki) == before
    assert list(report.kept) == ALL_NAMES
    assert not report.created and not report.reissued and not report.warnings
    assert not report.changed


def test_adding_a_san_reissues_only_the_apiserver(pki: Path) -> None:
    before = snapshot(pki)
    report = ensure_pki(realistic_plan((*API_DNS, "api.example.com")), pki)
    assert dict(report.reissued) == {
        "apiserver": "differs from the request: SAN +DNS:api.example.com"
    }
    after = snapshot(pki)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"apiserver.crt", "apiserver.key"}  # new key too; the CA is kept
    cert = load_certificate(pki, "apiserver")
    assert "DNS:api.example.com" in describe_certificate(cert)
    assert verify_issued_by(cert, load_certificate(pki, "ca"))


def test_renew_reissues_the_named_leaf(pki: Path) -> None:
    before = snapshot(pki)
    report = ensure_pki(PLAN, pki, renew=frozenset({"apiserver"}))
    assert dict(report.reissued) == {"apiserver": "renewal requested"}
    after = snapshot(pki)
    assert {k for k in before if before[k] != after[k]} == {"apiserver.crt", "apiserver.key"}


def test_ca_is_kept_when_a_leaf_moves_to_another_ca(pki: Path) -> None:
    moved = [
        CertRequest(c.name, "front-proxy-ca", c.common_name, client=True)
        if c.name == "apiserver-kubelet-client"
        else c
        for c in PLAN.certs
    ]
    before = snapshot(pki)
    report = ensure_pki(PkiPlan(cas=CAS, certs=tuple(moved)), pki)
    assert dict(report.reissued) == {
        "apiserver-kubelet-client": "not signed by the current CA 'front-proxy-ca'"
    }
    assert {"ca", "front-proxy-ca", "etcd/ca"} <= set(report.kept)
    for ca in CAS:
        assert snapshot(pki)[f"{ca.name}.crt"] == before[f"{ca.name}.crt"]
    cert = load_certificate(pki, "apiserver-kubelet-client")
    assert verify_issued_by(cert, load_certificate(pki, "front-proxy-ca"))
    assert not verify_issued_by(cert, load_certificate(pki, "ca"))


def test_missing_ca_is_regenerated_and_every_leaf_it_signed_reissued(pki: Path) -> None:
    old_ca = load_certificate(pki, "etcd/ca")
    (pki / "etcd" / "ca.crt").unlink()
    (pki / "etcd" / "ca.key").unlink()
    report = ensure_pki(PLAN, pki)
    etcd_leaves = {c.name for c in PLAN.certs if c.ca == "etcd/ca"}
    assert list(report.created) == ["etcd/ca"]
    assert dict(report.reissued) == dict.fromkeys(
        etcd_leaves, "not signed by the current CA 'etcd/ca'"
    )
    assert set(report.kept) == set(ALL_NAMES) - etcd_leaves - {"etcd/ca"}
    new_ca = load_certificate(pki, "etcd/ca")
    for name in etcd_leaves:
        cert = load_certificate(pki, name)
        assert verify_issued_by(cert, new_ca) and not verify_issued_by(cert, old_ca)


def test_ca_missing_only_its_key_is_regenerated(pki: Path) -> None:
    (pki / "front-proxy-ca.key").unlink()
    report = ensure_pki(PLAN, pki)
    assert report.reissued["front-proxy-ca"].startswith("front-proxy-ca.key missing")
    assert report.reissued["front-proxy-client"] == (
        "not signed by the current CA 'front-proxy-ca'"
    )
    assert len(report.reissued) == 2


def test_renewing_a_ca_reissues_its_leaves_only(pki: Path) -> None:
    report = ensure_pki(PLAN, pki, renew=frozenset({"front-proxy-ca"}))
    assert dict(report.reissued) == {
        "front-proxy-ca": "renewal requested",
        "front-proxy-client": "not signed by the current CA 'front-proxy-ca'",
    }


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "ca.crt").write_bytes(b"garbage"), "is not a PEM certificate"),
        (lambda p: (p / "ca.key").write_bytes(b"garbage"), "is not an unencrypted PEM private"),
        (
            lambda p: shutil.copyfile(p / "front-proxy-ca.key", p / "ca.key"),
            "ca.key does not belong to ca.crt",
        ),
    ],
)
def test_damaged_ca_is_an_error_not_a_silent_replacement(
    pki: Path, damage: Callable[[Path], object], message: str
) -> None:
    damage(pki)
    before = snapshot(pki)
    with pytest.raises(PkiError) as err:
        ensure_pki(PLAN, pki)
    assert message in str(err.value)
    assert "renew={'ca'}" in str(err.value)
    assert "PRIVATE KEY" not in str(err.value)
    assert snapshot(pki) == before


def test_ca_with_changed_common_name_is_kept_with_a_warning(pki: Path) -> None:
    cas = (CARequest("ca", "cluster-root"), *CAS[1:])
    before = snapshot(pki)
    report = ensure_pki(PkiPlan(cas=cas, certs=PLAN.certs), pki)
    assert not report.changed and snapshot(pki) == before
    assert report.warnings == (
        "CA 'ca': certificate CN kubernetes-ca differs from the requested cluster-root; kept "
        "because a CA is only regenerated on request; pass renew={'ca'} to regenerate it "
        "(every certificate it signed is reissued)",
    )


def test_leaf_with_missing_or_foreign_key_is_reissued(pki: Path) -> None:
    (pki / "admin.key").unlink()
    shutil.copyfile(pki / "etcd" / "peer-cp1.key", pki / "etcd" / "peer-cp2.key")
    (pki / "kubelet" / "cp1-client.crt").write_bytes(b"not a certificate")
    report = ensure_pki(PLAN, pki)
    assert dict(report.reissued) == {
        "admin": "admin.key missing",
        "etcd/peer-cp2": "peer-cp2.key does not belong to peer-cp2.crt",
        "kubelet/cp1-client": "cp1-client.crt is not a PEM certificate",
    }
    assert not report.created


def test_leaves_expiring_within_30_days_are_reissued(pki: Path) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)
    report = ensure_pki(PLAN, pki, now=later)
    leaves = [c.name for c in PLAN.certs]
    assert list(report.reissued) == leaves
    assert all(r.startswith("expires ") for r in report.reissued.values())
    assert list(report.kept) == ["ca", "etcd/ca", "front-proxy-ca", "sa"]
    # Fresh leaves are good for another year from then; a run at that time keeps them.
    assert not ensure_pki(PLAN, pki, now=later).changed


def test_service_account_public_key_is_rederived_and_private_key_kept(pki: Path) -> None:
    sa_key = (pki / "sa.key").read_bytes()
    (pki / "sa.pub").unlink()
    report = ensure_pki(PLAN, pki)
    assert list(report.reissued) == ["sa"]
    assert (pki / "sa.key").read_bytes() == sa_key
    assert mode(pki / "sa.pub") == 0o644
    renewed = ensure_pki(PLAN, pki, renew=frozenset({"sa"}))
    assert dict(renewed.reissued) == {"sa": "renewal requested"}
    assert (pki / "sa.key").read_bytes() != sa_key


def test_report_never_contains_key_material(pki: Path) -> None:
    report = ensure_pki(PLAN, pki, renew=frozenset({"ca"}))
    text = str(report)
    assert "reissued ca: renewal requested" in text
    assert "BEGIN" not in text and "PRIVATE" not in text


# --- validation ------------------------------------------------------------------------------


def test_bad_requests_raise_pki_error_naming_request_and_fix(tmp_path: Path) -> None:
    plan = PkiPlan(
        cas=(CARequest("ca", "kubernetes-ca"),),
        certs=(
            CertRequest("apiserver", "cluster-ca", "kube-apiserver", server=True),
            CertRequest("admin", "ca", "kubernetes-admin", client=True),
            CertRequest("admin", "ca", "kubernetes-admin-2", client=True),
            CertRequest("etcd/peer-cp1", "ca", "cp1", ip_addresses=("10.0.0.300",)),
            CertRequest("../escape", "apiserver", "x"),
        ),
    )
    with pytest.raises(PkiError) as err:
        ensure_pki(plan, tmp_path / "pki", renew=frozenset({"apiserverr"}))
    problems = err.value.problems
    assert isinstance(err.value, ValueError)
    assert any(
        "certificate 'apiserver': issuing CA 'cluster-ca' is not in the plan (known CAs: ca)" in p
        and "fix:" in p
        for p in problems
    )
    assert any("certificate 'admin': name already used by a certificate" in p for p in problems)
    assert any(
        "certificate 'etcd/peer-cp1': invalid IP address '10.0.0.300'" in p and "fix:" in p
        for p in problems
    )
    assert any("'../escape': invalid name" in p for p in problems)
    assert any("'apiserver' is a certificate, not a CA" in p for p in problems)
    assert any("renew: 'apiserverr' not in the plan" in p for p in problems)
    assert len(problems) == 6
    assert not (tmp_path / "pki").exists()  # nothing is written for an invalid plan


@pytest.mark.parametrize(
    ("cert", "expected"),
    [
        (CertRequest("x", "ca", "x", dns_names=("10.0.0.1",)), "is an IP address"),
        (CertRequest("x", "ca", "x", dns_names=("bad name",)), "invalid DNS name 'bad name'"),
        (CertRequest("x", "ca", ""), "common_name is empty"),
        (CertRequest("sa", "ca", "sa"), "already used by a service-account key pair"),
    ],
)
def test_more_bad_requests(tmp_path: Path, cert: CertRequest, expected: str) -> None:
    plan = PkiPlan(cas=(CARequest("ca", "kubernetes-ca"),), certs=(cert,))
    with pytest.raises(PkiError, match=expected):
        ensure_pki(plan, tmp_path / "pki")


def test_validity_within_renewal_window_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="validity_days=30"):
        ensure_pki(PkiPlan(cas=CAS, certs=(), validity_days=30), tmp_path / "pki")


def test_load_certificate_of_unknown_name(generated: Path) -> None:
    with pytest.raises(PkiError, match=r"'nope'.*does not exist"):
        load_certificate(generated, "nope")


# --- kubeconfig ------------------------------------------------------------------------------


def test_kubeconfig_with_file_paths_is_golden() -> None:
    text = kubeconfig(
        "prod",
        "https://10.0.0.11:6443",
        "system:kube-scheduler",
        ca_file="/etc/kubernetes/pki/ca.crt",
        cert_file="/etc/kubernetes/pki/scheduler.crt",
        key_file="/etc/kubernetes/pki/scheduler.key",
    )
    assert text == (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- name: \"prod\"\n"
        "  cluster:\n"
        "    certificate-authority: \"/etc/kubernetes/pki/ca.crt\"\n"
        "    server: \"https://10.0.0.11:6443\"\n"
        "users:\n"
        "- name: \"system:kube-scheduler\"\n"
        "  user:\n"
        "    client-certificate: \"/etc/kubernetes/pki/scheduler.crt\"\n"
        "    client-key: \"/etc/kubernetes/pki/scheduler.key\"\n"
        "contexts:\n"
        "- name: \"system:kube-scheduler@prod\"\n"
        "  context:\n"
        "    cluster: \"prod\"\n"
        "    user: \"system:kube-scheduler\"\n"
        "current-context: \"system:kube-scheduler@prod\"\n"
        "preferences: {}\n"
    )
    doc = yaml.safe_load(text)
    assert doc["current-context"] == doc["contexts"][0]["name"]


def test_kubeconfig_with_embedded_data(generated: Path) -> None:
    ca = (generated / "ca.crt").read_bytes()
    cert = (generated / "admin.crt").read_bytes()
    key = (generated / "admin.key").read_bytes()
    args = ("prod", "https://10.0.0.10:6443", "kubernetes-admin")
    text = kubeconfig(*args, ca_data=ca, cert_data=cert, key_data=key)
    assert text == kubeconfig(*args, ca_data=ca, cert_data=cert, key_data=key)
    doc = yaml.safe_load(text)
    assert doc["apiVersion"] == "v1" and doc["kind"] == "Config"
    assert doc["current-context"] == "kubernetes-admin@prod"
    assert doc["contexts"] == [
        {
            "name": "kubernetes-admin@prod",
            "context": {"cluster": "prod", "user": "kubernetes-admin"},
        }
    ]
    cluster = doc["clusters"][0]["cluster"]
    assert cluster["server"] == "https://10.0.0.10:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca
    user = doc["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == cert
    assert base64.b64decode(user["client-key-data"]) == key


def test_kubeconfig_rejects_both_or_neither() -> None:
    server = "https://10.0.0.10:6443"
    with pytest.raises(ValueError, match=r"exactly one of ca_file or ca_data \(got both\)"):
        kubeconfig(
            "prod",
            server,
            "admin",
            ca_file="/ca.crt",
            cert_file="/a.crt",
            key_file="/a.key",
            ca_data=b"pem",
        )
    with pytest.raises(ValueError, match=r"exactly one of key_file or key_data \(got neither\)"):
        kubeconfig("prod", server, "admin", ca_file="/ca.crt", cert_file="/a.crt")


# --- interoperability ------------------------------------------------------------------------


@pytest.fixture
def openssl() -> Iterator[str]:
    """Path of the openssl binary; skips the test when it is not installed."""
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("openssl not installed")
    yield path


def test_openssl_verifies_the_chain(generated: Path, openssl: str) -> None:
    def verify(ca: str, cert: str, purpose: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [openssl, "verify", "-purpose", purpose, "-CAfile", ca, cert],
            cwd=generated,
            capture_output=True,
            text=True,
            check=False,
        )

    ok = verify("ca.crt", "apiserver.crt", "sslserver")
    assert ok.returncode == 0 and ok.stdout.strip() == "apiserver.crt: OK", ok.stderr
    peer = verify("etcd/ca.crt", "etcd/peer-cp1.crt", "sslclient")
    assert peer.returncode == 0, peer.stderr
    wrong = verify("etcd/ca.crt", "apiserver.crt", "sslserver")
    assert wrong.returncode != 0
