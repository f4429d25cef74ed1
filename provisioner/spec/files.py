"""Local files a spec names: registry CAs and passwords, SSH keys, a local artifact source.

Scope: where each file is (relative paths start at the spec's folder, ``~`` is expanded for
SSH keys as ssh does; ``resolved`` writes those paths into the spec that ``load_file`` hands
on), and whether what is there is right: a caFile holds PEM certificates,
a passwordFile is not empty, a privateKeyFile is a private key (not its ``.pub``), an
artifacts.path is a directory or a bundle tar. ``check`` splits problems with files that
exist (always errors) from files that are missing (``MissingFile``): those are errors where
the caller asks for them (``load_file(..., require_files=True)``: ``validate`` and
``provision``) and notes for ``validate --allow-missing-files``, for a spec checked before
its files are made (on a fresh clone the lab's come from ``make lab-artifacts
lab-registry``). ``artifacts build`` does not require them: it writes artifacts.path itself.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509

from provisioner.spec.errors import SpecIssue, shown
from provisioner.spec.models import Cluster, NspawnProvider

Kind = Literal["ca", "password", "ssh-key", "artifacts"]
# Files read whole are read up to this size: a CA bundle of every public root is ~200 KB.
_MAX_READ = 1 << 20
# A resolved path in an error is shown whole up to this length (deep checkouts, CI temp
# directories); only a path no real file has is cut.
SHOWN_PATH = 240


@dataclass(frozen=True)
class LocalFile:
    """One file the spec names."""

    field: str  # the field path, e.g. spec.registries.private[0].caFile
    written: Path  # as written in the spec
    resolved: Path
    kind: Kind
    relative: bool  # resolved against the spec's folder


@dataclass(frozen=True)
class MissingFile(SpecIssue):
    """A file the spec names that does not exist (yet): an error or a note, as the caller
    asks (``load_file(..., require_files=)``)."""


def named(cluster: Cluster, base: Path) -> list[LocalFile]:
    """Every local file the spec names, resolved against ``base`` (the spec's folder)."""
    spec = cluster.spec
    found: list[LocalFile] = []

    def add(field: str, written: Path | None, kind: Kind, home: bool = False) -> None:
        if written is not None:
            path = written
            if home:
                with contextlib.suppress(RuntimeError):  # no home directory to expand ~ to
                    path = path.expanduser()
            found.append(LocalFile(field, written, path if path.is_absolute() else base / path,
                                   kind, not path.is_absolute()))

    for i, reg in enumerate(spec.registries.private):
        add(f"spec.registries.private[{i}].caFile", reg.ca_file, "ca")
        add(f"spec.registries.private[{i}].passwordFile", reg.password_file, "password")
    add("spec.ssh.privateKeyFile", spec.ssh.private_key_file, "ssh-key", home=True)
    for i, host in enumerate(spec.hosts):
        if host.ssh is not None:
            add(f"spec.hosts[{i}].ssh.privateKeyFile", host.ssh.private_key_file, "ssh-key",
                home=True)
    if spec.artifacts.source == "local":
        add("spec.artifacts.path", spec.artifacts.path, "artifacts")
    return found


def resolved(cluster: Cluster, base: Path) -> Cluster:
    """``cluster`` with every local file it names as the absolute path ``named`` resolves.

    ``load_file`` hands this on, so every reader of a path (the SSH login of Ansible, verify
    and the providers, render's registry files, the artifact fetch) opens the file the
    checks looked at, whatever the working directory: a relative path starts at the spec's
    folder, and ``~`` in an SSH key path is the controller user's home, as in ssh.
    """
    paths = {f.field: f.resolved for f in named(cluster, base)}
    if not paths:
        return cluster
    spec = cluster.spec

    def key(field: str, model: Any) -> Any:
        return model if field not in paths else model.model_copy(
            update={"private_key_file": paths[field]})

    hosts = [h if h.ssh is None else h.model_copy(update={
        "ssh": key(f"spec.hosts[{i}].ssh.privateKeyFile", h.ssh)})
        for i, h in enumerate(spec.hosts)]
    private = [r.model_copy(update={
        k: paths[f"spec.registries.private[{i}].{field}"]
        for k, field in (("ca_file", "caFile"), ("password_file", "passwordFile"))
        if f"spec.registries.private[{i}].{field}" in paths})
        for i, r in enumerate(spec.registries.private)]
    artifacts = spec.artifacts if "spec.artifacts.path" not in paths else (
        spec.artifacts.model_copy(update={"path": paths["spec.artifacts.path"]}))
    new_spec = spec.model_copy(update={
        "ssh": key("spec.ssh.privateKeyFile", spec.ssh),
        "hosts": hosts,
        "registries": spec.registries.model_copy(update={"private": private}),
        "artifacts": artifacts,
    })
    return cluster.model_copy(update={"spec": new_spec})


def check(cluster: Cluster, base: Path) -> tuple[list[SpecIssue], list[SpecIssue]]:
    """``(problems, missing)``: issues with files that exist, and files that do not (each a
    ``MissingFile``)."""
    problems: list[SpecIssue] = []
    missing: list[SpecIssue] = []
    needs_pub = isinstance(cluster.spec.provider, NspawnProvider)
    for f in named(cluster, base):
        for issue in _check_one(f, base, needs_pub):
            (missing if isinstance(issue, MissingFile) else problems).append(issue)
    return problems, missing


def _check_one(f: LocalFile, base: Path, needs_pub: bool) -> Iterator[SpecIssue]:
    where = _shown_path(f.resolved)
    try:
        st = os.stat(f.resolved)
    except FileNotFoundError:
        yield MissingFile(f.field, f"{where} does not exist", _missing_hint(f, base))
        return
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        yield SpecIssue(f.field, f"cannot read {where}: {why}", "fix the path or its "
                        "permissions")
        return
    if f.kind == "artifacts":
        yield from _artifacts(f, where, st)
        return
    if not stat.S_ISREG(st.st_mode):
        yield SpecIssue(f.field, f"{where} is not a regular file", _file_hint(f))
        return
    try:
        with open(f.resolved, "rb") as fh:
            data = fh.read(_MAX_READ + 1)
    except OSError as exc:
        yield SpecIssue(f.field, f"cannot read {where}: {exc.strerror}",
                        "make it readable by the user running provisioner")
        return
    problem = _content_problem(f.kind, data)
    if problem is not None:
        yield SpecIssue(f.field, f"{where} {problem}", _file_hint(f))
    elif f.kind == "ssh-key" and needs_pub:
        pub = f.resolved.with_name(f.resolved.name + ".pub")
        if not pub.exists():
            yield MissingFile(f.field, f"{_shown_path(pub)} (the public half) does not "
                              "exist: the nspawn provider installs it on the machines",
                              f"write it with `ssh-keygen -y -f {f.resolved} > {pub}`")


def _content_problem(kind: Kind, data: bytes) -> str | None:
    if len(data) > _MAX_READ:
        return f"is larger than {_MAX_READ // 1024} KiB"
    if not data.strip():
        return "is empty"
    if kind == "ca":
        return _pem_problem(data)
    if kind == "password":
        text = data.strip()
        if b"\n" in text or b"\r" in text:
            return "holds more than one line (the password is its one line)"
        return None
    head = data.lstrip()[:200]
    if head.startswith((b"ssh-", b"ecdsa-", b"sk-")):
        return "is a public key"
    if b"PRIVATE KEY-----" not in head:
        return "is not a private key (no '-----BEGIN ... PRIVATE KEY-----' line)"
    return None


def _pem_problem(data: bytes) -> str | None:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        if b"PRIVATE KEY-----" in data:
            return "holds a private key, not a certificate"
        return "holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' line)"
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        return f"holds a PEM certificate that does not parse ({shown(str(exc), 80)})"
    if not certs:
        return "holds no PEM certificate"
    return None


def _artifacts(f: LocalFile, where: str, st: os.stat_result) -> Iterator[SpecIssue]:
    if stat.S_ISDIR(st.st_mode):
        return
    if not stat.S_ISREG(st.st_mode):
        yield SpecIssue(f.field, f"{where} is neither a directory nor a file", _file_hint(f))
        return
    try:
        is_tar = tarfile.is_tarfile(f.resolved)
    except OSError as exc:
        yield SpecIssue(f.field, f"cannot read {where}: {exc.strerror}",
                        "make it readable by the user running provisioner")
        return
    if not is_tar:
        yield SpecIssue(f.field, f"{where} is a file but not a tar bundle", _file_hint(f))


def _file_hint(f: LocalFile) -> str:
    return {
        "ca": "name the PEM file of the CA that signed the registry's certificate "
              "(-----BEGIN CERTIFICATE-----)",
        "password": "name a file holding only the registry password",
        "ssh-key": "name the private key file (the one without .pub)",
        "artifacts": "name a directory made by `provisioner artifacts build` or a bundle .tar "
                     "made by `provisioner artifacts bundle`",
    }[f.kind]


def _shown_path(path: Path) -> str:
    """``path`` as an error shows it: whole, unless absurdly long (hostile input)."""
    text = str(path)
    return text if len(text) <= SHOWN_PATH else text[:SHOWN_PATH - 1] + "…"


def _missing_hint(f: LocalFile, base: Path) -> str:
    where = (f"relative paths start at the spec's folder, {_shown_path(base)}"
             if f.relative else "")
    if str(f.written).startswith("~") and f.kind != "ssh-key":
        where = "'~' is not expanded here: write the full path"
    make = {
        "ca": "put the registry's CA certificate (PEM) there",
        "password": "put the registry password there",
        "ssh-key": f"create the key (`ssh-keygen -t ed25519 -f {_shown_path(f.resolved)}`)",
        "artifacts": "build it (`provisioner artifacts build` with this spec)",
    }[f.kind]
    return f"{make}, or fix the path" + (f" ({where})" if where else "")
