"""Local files a spec names: resolved against the spec's folder, checked for what they hold,
and required to exist where they are needed (``validate`` and ``provision``; ``validate
--allow-missing-files`` notes them instead).

The valid corpus and the shipped inventories name files that are not in the checkout (keys,
the lab registry's CA and password, which ``make lab-registry`` writes); here each spec is
copied into a temporary folder where those files are made, so every check runs for real.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tarfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from provisioner.cli import app
from provisioner.spec import SpecError, load_file
from provisioner.spec import files as spec_files

ROOT = Path(__file__).resolve().parents[1]
VALID = ROOT / "tests" / "specs" / "valid"
runner = CliRunner()

REGISTRY = """\
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: t}
spec:
  provider: {type: nspawn}
  registries:
    private:
      - host: hub.test.com
        caFile: certs/ca.pem
        username: puller
        passwordFile: secrets/password
"""


def ca_pem() -> bytes:
    """A self-signed CA certificate in PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def ssh_key(path: Path) -> None:
    """An ed25519 key pair in OpenSSH format at ``path`` and ``path.pub``."""
    key = ed25519.Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.with_name(path.name + ".pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))


def make_named_files(spec: Path) -> None:
    """Create every file ``spec`` names, with right contents (``~`` is $HOME)."""
    cluster = load_file(spec)
    for f in spec_files.named(cluster, spec.parent):
        path = f.resolved
        path.parent.mkdir(parents=True, exist_ok=True)
        if f.kind == "ca":
            path.write_bytes(ca_pem())
        elif f.kind == "password":
            path.write_text("s3cret\n")
        elif f.kind == "ssh-key":
            ssh_key(path)
        elif path.suffix == ".tar":
            with tarfile.open(path, "w"):
                pass
        else:
            path.mkdir(parents=True, exist_ok=True)


def _copy(spec: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(spec, folder / spec.name))


def _issues(spec: Path, require: bool = True) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_file(spec, require_files=require)
    return [str(i) for i in info.value.issues]


VALID_SPECS = sorted(VALID.glob("*.yaml"))
INVENTORIES = sorted((ROOT / "inventories").glob("*.yaml"))


@pytest.mark.parametrize("spec", VALID_SPECS + INVENTORIES, ids=lambda p: p.stem)
def test_every_valid_spec_passes_with_its_files_made(spec: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Inventories name ../.provisioner/...: keep the folder layout of the checkout.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    copy = _copy(spec, tmp_path / spec.parent.name)
    make_named_files(copy)
    cluster = load_file(copy, require_files=True)
    problems, missing = spec_files.check(cluster, copy.parent)
    assert (problems, missing) == ([], [])


@pytest.mark.parametrize("spec", VALID_SPECS + INVENTORIES, ids=lambda p: p.stem)
def test_validate_refuses_missing_files_unless_allowed(spec: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh clone has no lab registry files yet: validate refuses the spec, naming each
    missing file by its resolved path; --allow-missing-files notes them and exits 0."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    copy = _copy(spec, tmp_path / spec.parent.name)
    named = spec_files.named(load_file(copy), copy.parent)
    strict = runner.invoke(app, ["validate", str(copy)])
    assert strict.exit_code == (1 if named else 0), strict.output
    allowed = runner.invoke(app, ["validate", "--allow-missing-files", str(copy)])
    assert allowed.exit_code == 0, allowed.output
    assert f"{copy}: valid" in allowed.output
    for f in named:
        assert f"  - {f.field}: {f.resolved} does not exist (fix: " in strict.output
        assert f"note: {f.field}: {f.resolved} does not exist" in allowed.output
    if named:
        assert f"{copy}: {len(named)} problem" in strict.output
        assert "--allow-missing-files lists such files as notes" in strict.output
        assert f"{copy}: valid" not in strict.output
        assert (f"{len(named)} file{'s' if len(named) > 1 else ''} the spec names "
                f"{'do' if len(named) > 1 else 'does'} not exist yet") in allowed.output


def test_validate_checks_files_that_exist_even_when_missing_ones_are_allowed(
        tmp_path: Path) -> None:
    """--allow-missing-files lets a file be absent, never wrong; and the old
    --require-files (now what validate does anyway) is gone."""
    spec = tmp_path / "cluster.yaml"
    spec.write_text(REGISTRY)
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("not a certificate\n")
    result = runner.invoke(app, ["validate", "--allow-missing-files", str(spec)])
    assert result.exit_code == 1, result.output
    assert f"caFile: {tmp_path}/certs/ca.pem holds no PEM certificate" in result.output
    # The missing password file is not among the problems, and no note says to allow it.
    assert "passwordFile" not in result.output
    assert "--allow-missing-files" not in result.output
    assert runner.invoke(app, ["validate", "--require-files", str(spec)]).exit_code == 2


def test_relative_paths_start_at_the_spec_folder(tmp_path: Path) -> None:
    spec = tmp_path / "conf" / "cluster.yaml"
    spec.parent.mkdir()
    spec.write_text(REGISTRY)
    issues = _issues(spec)
    assert issues == [
        f"spec.registries.private[0].caFile: {spec.parent}/certs/ca.pem does not exist (fix: "
        "put the registry's CA certificate (PEM) there, or fix the path (relative paths "
        f"start at the spec's folder, {spec.parent}))",
        f"spec.registries.private[0].passwordFile: {spec.parent}/secrets/password does not "
        "exist (fix: put the registry password there, or fix the path (relative paths start "
        f"at the spec's folder, {spec.parent}))",
    ]
    (spec.parent / "certs").mkdir()
    (spec.parent / "certs" / "ca.pem").write_bytes(ca_pem())
    (spec.parent / "secrets").mkdir()
    (spec.parent / "secrets" / "password").write_text("pw\n")
    assert load_file(spec, require_files=True).metadata.name == "t"


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "is empty"),
    (b"hello\n", "holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' line)"),
    (b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
     "holds a PEM certificate that does not parse"),
    (b"-----BEGIN PRIVATE KEY-----\nMC4=\n-----END PRIVATE KEY-----\n",
     "holds a private key, not a certificate"),
], ids=["empty", "text", "broken-pem", "a-key"])
def test_ca_file_must_hold_pem_certificates(content: bytes, problem: str,
                                           tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(REGISTRY)
    (tmp_path / "certs").mkdir()
    ca = tmp_path / "certs" / "ca.pem"
    ca.write_bytes(content)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "password").write_text("pw")
    # Wrong contents are errors for every command, missing files required or not.
    for require in (False, True):
        issues = _issues(spec, require)
        assert len(issues) == 1
        assert issues[0].startswith(f"spec.registries.private[0].caFile: {ca} {problem}")
        assert "(fix: name the PEM file of the CA that signed the registry's certificate" in (
            issues[0])
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 1 and str(ca) in result.output


def test_ca_bundle_with_several_certificates_passes(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(REGISTRY)
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_bytes(ca_pem() + b"\n" + ca_pem())
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "password").write_text("pw")
    assert load_file(spec, require_files=True).metadata.name == "t"


@pytest.mark.parametrize(("content", "problem"), [
    (b"\n", "is empty"),
    (b"one\ntwo\n", "holds more than one line"),
], ids=["empty", "two-lines"])
def test_password_file(content: bytes, problem: str, tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(REGISTRY.replace("        caFile: certs/ca.pem\n", ""))
    (tmp_path / "secrets").mkdir()
    pw = tmp_path / "secrets" / "password"
    pw.write_bytes(content)
    assert _issues(spec, False) == [
        f"spec.registries.private[0].passwordFile: {pw} {problem}"
        + (" (the password is its one line)" if "line" in problem else "")
        + " (fix: name a file holding only the registry password)"]


STATIC = """\
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: t}
spec:
  provider: {type: static}
  ssh: {privateKeyFile: ~/.ssh/id_ed25519}
  hosts:
    - {name: n1, address: 10.0.0.1, ssh: {privateKeyFile: keys/n1}}
"""


def test_ssh_keys_expand_home_and_must_be_private(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    spec = tmp_path / "cluster.yaml"
    spec.write_text(STATIC)
    home_key = tmp_path / "home" / ".ssh" / "id_ed25519"
    issues = _issues(spec)
    assert issues[0] == (f"spec.ssh.privateKeyFile: {home_key} does not exist (fix: create the "
                         f"key (`ssh-keygen -t ed25519 -f {home_key}`), or fix the path)")
    assert issues[1].startswith(f"spec.hosts[0].ssh.privateKeyFile: {tmp_path}/keys/n1 does "
                                "not exist")
    ssh_key(home_key)
    ssh_key(tmp_path / "keys" / "n1")
    assert load_file(spec, require_files=True).metadata.name == "t"
    # The public half named by mistake:
    shutil.copy(tmp_path / "keys" / "n1.pub", tmp_path / "keys" / "n1")
    assert _issues(spec, False) == [
        f"spec.hosts[0].ssh.privateKeyFile: {tmp_path}/keys/n1 is a public key (fix: name the "
        "private key file (the one without .pub))"]
    (tmp_path / "keys" / "n1").write_text("PuTTY-User-Key-File-3: ssh-ed25519\n")
    assert "is not a private key" in _issues(spec, False)[0]


def test_nspawn_key_needs_its_public_half(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text("apiVersion: provisioner.dev/v1alpha1\nkind: Cluster\nmetadata: {name: t}\n"
                    "spec:\n  provider: {type: nspawn}\n  ssh: {privateKeyFile: id}\n")
    ssh_key(tmp_path / "id")
    assert load_file(spec, require_files=True).metadata.name == "t"
    (tmp_path / "id.pub").unlink()
    assert load_file(spec).metadata.name == "t"  # missing: a note, unless required
    assert _issues(spec) == [
        f"spec.ssh.privateKeyFile: {tmp_path}/id.pub (the public half) does not exist: the "
        f"nspawn provider installs it on the machines (fix: write it with `ssh-keygen -y -f "
        f"{tmp_path}/id > {tmp_path}/id.pub`)"]


LOCAL = """\
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: t}
spec:
  provider: {type: nspawn}
  artifacts: {source: local, path: PATH}
"""


def test_artifacts_path_is_a_directory_or_a_bundle(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(LOCAL.replace("PATH", "source"))
    # artifacts build writes it: it loads the spec without requiring it.
    assert load_file(spec).metadata.name == "t"
    assert _issues(spec) == [
        f"spec.artifacts.path: {tmp_path}/source does not exist (fix: build it (`provisioner "
        "artifacts build` with this spec), or fix the path (relative paths start at the "
        f"spec's folder, {tmp_path}))"]
    (tmp_path / "source").mkdir()
    assert load_file(spec, require_files=True).metadata.name == "t"
    spec.write_text(LOCAL.replace("PATH", "bundle.tar"))
    (tmp_path / "bundle.tar").write_text("not a tar")
    assert _issues(spec, False) == [
        f"spec.artifacts.path: {tmp_path}/bundle.tar is a file but not a tar bundle (fix: name "
        "a directory made by `provisioner artifacts build` or a bundle .tar made by "
        "`provisioner artifacts bundle`)"]
    (tmp_path / "bundle.tar").unlink()
    with tarfile.open(tmp_path / "bundle.tar", "w"):
        pass
    assert load_file(spec, require_files=True).metadata.name == "t"


def test_a_directory_where_a_file_belongs(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(REGISTRY.replace("        username: puller\n        passwordFile: "
                                     "secrets/password\n", ""))
    (tmp_path / "certs" / "ca.pem").mkdir(parents=True)
    assert _issues(spec, False) == [
        f"spec.registries.private[0].caFile: {tmp_path}/certs/ca.pem is not a regular file "
        "(fix: name the PEM file of the CA that signed the registry's certificate "
        "(-----BEGIN CERTIFICATE-----))"]


def test_tilde_is_not_expanded_in_registry_files(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(REGISTRY.replace("certs/ca.pem", "~/ca.pem"))
    issue = _issues(spec)[0]
    assert issue.endswith("(fix: put the registry's CA certificate (PEM) there, or fix the path "
                          "('~' is not expanded here: write the full path))")


def test_golden_specs_name_only_files_they_ship() -> None:
    for spec in sorted((ROOT / "tests" / "golden").glob("*/spec.yaml")):
        cluster = load_file(spec)
        problems, missing = spec_files.check(cluster, spec.parent)
        assert problems == [], spec
        # flannel-static names /home/admin/.ssh/id_ed25519: a key of the hosts' admin.
        assert all(i.path.endswith("privateKeyFile") for i in missing), missing


def test_loaded_spec_names_files_by_their_resolved_paths(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reader of a path (Ansible's inventory, verify's SSH login, the providers,
    render's registry files, the artifact fetch) gets the file the checks looked at, from
    any working directory: relative paths start at the spec's folder, ``~`` is $HOME for
    SSH keys."""
    from provisioner.plan import build_plan
    from provisioner.providers.reach import resolve
    from provisioner.render.runner import inventory
    from provisioner.verify.ssh import ssh_settings

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    conf = tmp_path / "conf"
    conf.mkdir()
    spec = conf / "cluster.yaml"
    spec.write_text(STATIC + "    - {name: n2, address: 10.0.0.2}\n"
                    + REGISTRY[REGISTRY.index("  registries:"):]
                    + "  artifacts: {source: local, path: art}\n")
    make_named_files(spec)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    cluster = load_file(Path("../conf/cluster.yaml"), require_files=True)
    s = cluster.spec
    assert s.ssh.private_key_file == tmp_path / "home" / ".ssh" / "id_ed25519"
    assert s.hosts[0].ssh is not None and s.hosts[0].ssh.private_key_file == conf / "keys/n1"
    reg = s.registries.private[0]
    assert (reg.ca_file, reg.password_file) == (conf / "certs/ca.pem", conf / "secrets/password")
    assert s.artifacts.path == conf / "art"
    # The checks agree: the resolved spec names the same files, all there.
    assert spec_files.check(cluster, conf) == ([], [])
    assert [f.resolved for f in spec_files.named(cluster, conf)] == [
        f.resolved for f in spec_files.named(load_file(spec), conf)]

    plan = build_plan(cluster)
    hosts = inventory(plan, resolve(plan, None, {}))["all"]["hosts"]
    assert hosts["n1"]["ansible_ssh_private_key_file"] == str(conf / "keys/n1")
    assert hosts["n2"]["ansible_ssh_private_key_file"] == str(
        tmp_path / "home" / ".ssh" / "id_ed25519")
    logins = ssh_settings(plan, tmp_path / "state")
    assert logins["n1"].key == conf / "keys/n1"
    assert all(k.key is not None and k.key.is_absolute() for k in logins.values())


def test_nspawn_key_is_resolved_for_the_provider(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The nspawn provider reads spec.ssh.privateKeyFile itself: it gets the resolved path
    too (a relative one used to be opened from the working directory, ``~`` not at all)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    spec = tmp_path / "cluster.yaml"
    spec.write_text("apiVersion: provisioner.dev/v1alpha1\nkind: Cluster\nmetadata: {name: t}\n"
                    "spec:\n  provider: {type: nspawn}\n  ssh: {privateKeyFile: ~/k/id}\n")
    ssh_key(tmp_path / "home" / "k" / "id")
    monkeypatch.chdir(tmp_path / "home")
    key = load_file(spec, require_files=True).spec.ssh.private_key_file
    assert key == tmp_path / "home" / "k" / "id" and key.is_file()
