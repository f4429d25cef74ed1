"""The on-disk PKI store: create what is missing, keep what is valid, reissue what is stale.

Scope: the layout of the PKI directory (``<name>.crt`` 0644, ``<name>.key`` 0600, ``sa.key``
0600, ``sa.pub`` 0644, directories 0700), atomic writes, and the keep/reissue policy:

* A CA is never regenerated unless renewed by name, or missing (its ``.crt`` or ``.key`` is
  gone). A CA whose files exist but are unreadable or do not belong together is an error, not
  a reason to replace it: replacing a CA silently invalidates every certificate in the cluster.
* A leaf is reissued, with a new key, when missing, renewed by name, not signed by its current
  CA, not matching its request (CN, O, SANs, EKUs), or expiring within 30 days.
* The service-account key is kept like a CA (tokens are signed with it); only ``sa.pub`` is
  rewritten from ``sa.key`` when it is missing or does not match.

Everything else is left byte for byte as it is, so repeated runs change nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from provisioner.pki.certs import (
    SERVICE_ACCOUNT_KEY_BITS,
    IssuerKey,
    cert_pem,
    issue_ca,
    issue_leaf,
    key_pem,
    load_private_key,
    new_key,
    new_service_account_key,
    public_key_pem,
    request_mismatch,
    same_public_key,
    verify_issued_by,
)
from provisioner.pki.errors import PkiError
from provisioner.pki.model import CARequest, CertRequest, PkiPlan
from provisioner.pki.validate import RENEW_BEFORE_DAYS, SERVICE_ACCOUNT, validate_plan

RENEW_BEFORE = dt.timedelta(days=RENEW_BEFORE_DAYS)
DIR_MODE = 0o700
KEY_MODE = 0o600
CERT_MODE = 0o644
_LOCK_FILE = ".lock"


@dataclass(frozen=True)
class PkiReport:
    """What :func:`ensure_pki` did, by name (CAs, certificates and ``sa``), in plan order."""

    created: tuple[str, ...]
    reissued: Mapping[str, str]  # name -> reason; read-only by convention
    kept: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether any file was written."""
        return bool(self.created or self.reissued)

    def __str__(self) -> str:
        """One line per change, then the warnings; safe to print (no key material)."""
        lines = [f"created {n}" for n in self.created]
        lines += [f"reissued {n}: {r}" for n, r in self.reissued.items()]
        lines.append(f"kept {len(self.kept)}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass
class _Recorder:
    created: list[str] = field(default_factory=list)
    reissued: dict[str, str] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def report(self) -> PkiReport:
        return PkiReport(
            tuple(self.created), dict(self.reissued), tuple(self.kept), tuple(self.warnings)
        )


def cert_path(pki_dir: Path, name: str) -> Path:
    """Where the certificate ``name`` lives: ``<pki_dir>/<name>.crt``."""
    return pki_dir / f"{name}.crt"


def key_path(pki_dir: Path, name: str) -> Path:
    """Where the private key of ``name`` lives: ``<pki_dir>/<name>.key``."""
    return pki_dir / f"{name}.key"


def load_certificate(pki_dir: Path, name: str) -> x509.Certificate:
    """The certificate ``<pki_dir>/<name>.crt``; :class:`PkiError` if missing or unreadable."""
    path = cert_path(pki_dir, name)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PkiError(
            f"certificate {name!r}: {path} does not exist; fix: generate the PKI first "
            "(ensure_pki) or check the name"
        ) from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise PkiError(
            f"certificate {name!r}: {path} is not a PEM certificate; fix: delete it and run "
            "ensure_pki again to reissue it"
        ) from None


def _private_dir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask (and ignored for an existing directory).
    if path.stat().st_mode & 0o777 != DIR_MODE:
        path.chmod(DIR_MODE)


def _ensure_dirs(pki_dir: Path, name: str) -> None:
    current = pki_dir
    for part in name.split("/")[:-1]:
        current = current / part
        _private_dir(current)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # mkstemp creates the file 0600, so a key is never readable by others, not even briefly;
    # certificates are widened before any byte is written.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _write_pair(pki_dir: Path, name: str, key: IssuerKey, cert: x509.Certificate) -> None:
    _ensure_dirs(pki_dir, name)
    # Key first: a crash in between leaves a mismatched pair, which the next run detects.
    _write_atomic(key_path(pki_dir, name), key_pem(key), KEY_MODE)
    _write_atomic(cert_path(pki_dir, name), cert_pem(cert), CERT_MODE)


def _tighten_key(path: Path, what: str, rec: _Recorder) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        path.chmod(KEY_MODE)
        rec.warnings.append(
            f"{what}: {path.name} was mode {mode:04o}, tightened to {KEY_MODE:04o}; it may have "
            "been readable by others"
        )


@contextlib.contextmanager
def _locked(pki_dir: Path) -> Iterator[None]:
    # Two concurrent runs could each create a CA and sign leaves with the loser's key.
    fd = os.open(pki_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, KEY_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _renew_hint(name: str, what: str) -> str:
    return f"pass renew={{{name!r}}} to regenerate it ({what})"


def _load_existing_ca(
    req: CARequest, pki_dir: Path, now: dt.datetime, rec: _Recorder
) -> tuple[x509.Certificate, IssuerKey]:
    crt, key = cert_path(pki_dir, req.name), key_path(pki_dir, req.name)
    hint = _renew_hint(req.name, "every certificate it signed is reissued")
    what = f"CA {req.name!r}"
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
    except ValueError:
        raise PkiError(
            f"{what}: {crt} is not a PEM certificate; fix: restore it from a backup or {hint}"
        ) from None
    ca_key = load_private_key(key.read_bytes())
    if ca_key is None:
        raise PkiError(
            f"{what}: {key} is not an unencrypted PEM private key; fix: restore it from a "
            f"backup or {hint}"
        )
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"{what}: {key} is neither an ECDSA nor an RSA key; fix: {hint}")
    if not same_public_key(ca_key, cert.public_key()):
        raise PkiError(
            f"{what}: {key.name} does not belong to {crt.name}; fix: restore the matching pair "
            f"from a backup or {hint}"
        )
    _tighten_key(key, what, rec)
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        rec.warnings.append(
            f"{what} expires {cert.not_valid_after_utc:%Y-%m-%d}; certificates it signs cannot "
            f"outlive it; {_renew_hint(req.name, 'every certificate it signed is reissued')}"
        )
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [req.common_name]:
        rec.warnings.append(
            f"{what}: certificate CN {', '.join(cns) or '(none)'} differs from the requested "
            f"{req.common_name}; kept because a CA is only regenerated on request; "
            f"{_renew_hint(req.name, 'every certificate it signed is reissued')}"
        )
    return cert, ca_key


def _ensure_ca(
    req: CARequest,
    plan: PkiPlan,
    pki_dir: Path,
    renew: frozenset[str],
    now: dt.datetime,
    rec: _Recorder,
) -> tuple[x509.Certificate, IssuerKey]:
    crt, key = cert_path(pki_dir, req.name), key_path(pki_dir, req.name)
    have_crt, have_key = crt.exists(), key.exists()
    reason: str | None
    if req.name in renew:
        reason = "renewal requested"
    elif have_crt and have_key:
        loaded = _load_existing_ca(req, pki_dir, now, rec)
        rec.kept.append(req.name)
        return loaded
    elif have_crt or have_key:
        reason = f"{(key if have_crt else crt).name} missing; new CA, every leaf it signs reissued"
    else:
        reason = None
    ca_key = new_key()
    cert = issue_ca(req, ca_key, plan.ca_validity_days, now)
    _write_pair(pki_dir, req.name, ca_key, cert)
    if reason is None:
        rec.created.append(req.name)
    else:
        rec.reissued[req.name] = reason
    return cert, ca_key


def _leaf_reason(
    req: CertRequest,
    pki_dir: Path,
    ca_cert: x509.Certificate,
    renew: frozenset[str],
    now: dt.datetime,
) -> str | None:
    """Why the existing leaf must be reissued, or ``None`` to keep it."""
    crt, key = cert_path(pki_dir, req.name), key_path(pki_dir, req.name)
    if req.name in renew:
        return "renewal requested"
    if not crt.exists():
        return f"{crt.name} missing"
    if not key.exists():
        return f"{key.name} missing"
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
    except ValueError:
        return f"{crt.name} is not a PEM certificate"
    leaf_key = load_private_key(key.read_bytes())
    if leaf_key is None:
        return f"{key.name} is not an unencrypted PEM private key"
    if not same_public_key(leaf_key, cert.public_key()):
        return f"{key.name} does not belong to {crt.name}"
    if not verify_issued_by(cert, ca_cert):
        return f"not signed by the current CA {req.ca!r}"
    mismatch = request_mismatch(cert, req)
    if mismatch:
        return f"differs from the request: {mismatch}"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}, within {RENEW_BEFORE_DAYS} days"
    return None


def _ensure_leaf(
    req: CertRequest,
    plan: PkiPlan,
    pki_dir: Path,
    ca: tuple[x509.Certificate, IssuerKey],
    renew: frozenset[str],
    now: dt.datetime,
    rec: _Recorder,
) -> None:
    crt, key = cert_path(pki_dir, req.name), key_path(pki_dir, req.name)
    reason: str | None = None
    if crt.exists() or key.exists():
        reason = _leaf_reason(req, pki_dir, ca[0], renew, now)
        if reason is None:
            _tighten_key(key, f"certificate {req.name!r}", rec)
            rec.kept.append(req.name)
            return
    leaf_key = new_key()
    cert = issue_leaf(req, leaf_key, ca[0], ca[1], plan.validity_days, now)
    _write_pair(pki_dir, req.name, leaf_key, cert)
    if reason is None:
        rec.created.append(req.name)
    else:
        rec.reissued[req.name] = reason


def _ensure_service_account(pki_dir: Path, renew: frozenset[str], rec: _Recorder) -> None:
    key, pub = key_path(pki_dir, SERVICE_ACCOUNT), pki_dir / f"{SERVICE_ACCOUNT}.pub"
    what = "service-account key"
    if SERVICE_ACCOUNT not in renew and key.exists():
        sa_key = load_private_key(key.read_bytes())
        if sa_key is None:
            raise PkiError(
                f"{what}: {key} is not an unencrypted PEM private key; fix: restore it from a "
                f"backup or {_renew_hint(SERVICE_ACCOUNT, 'existing tokens become invalid')}"
            )
        _tighten_key(key, what, rec)
        if not isinstance(sa_key, rsa.RSAPrivateKey) or sa_key.key_size < SERVICE_ACCOUNT_KEY_BITS:
            rec.warnings.append(
                f"{what}: {key.name} is not RSA {SERVICE_ACCOUNT_KEY_BITS} or larger; some "
                f"token consumers may reject it; "
                f"{_renew_hint(SERVICE_ACCOUNT, 'existing tokens become invalid')}"
            )
        if _public_matches(pub, sa_key):
            rec.kept.append(SERVICE_ACCOUNT)
        else:
            # Only the public half is derived; the private key (the token trust root) stays.
            _write_atomic(pub, public_key_pem(sa_key), CERT_MODE)
            rec.reissued[SERVICE_ACCOUNT] = f"{pub.name} missing or not matching {key.name}"
        return
    if SERVICE_ACCOUNT in renew:
        reason: str | None = "renewal requested"
    else:
        reason = f"{key.name} missing" if pub.exists() else None
    new = new_service_account_key()
    _write_atomic(key, key_pem(new), KEY_MODE)
    _write_atomic(pub, public_key_pem(new), CERT_MODE)
    if reason is None:
        rec.created.append(SERVICE_ACCOUNT)
    else:
        rec.reissued[SERVICE_ACCOUNT] = reason


def _public_matches(pub: Path, key: PrivateKeyTypes) -> bool:
    try:
        public = serialization.load_pem_public_key(pub.read_bytes())
    except (FileNotFoundError, ValueError):
        return False
    return same_public_key(key, public)


def ensure_pki(
    plan: PkiPlan,
    pki_dir: Path,
    renew: frozenset[str] = frozenset(),
    *,
    now: dt.datetime | None = None,
) -> PkiReport:
    """Bring ``pki_dir`` in line with ``plan``; report what was created, reissued and kept.

    ``renew`` names CAs, certificates or ``sa`` to regenerate even if valid. ``now`` (aware,
    UTC) exists for tests of expiry; it defaults to the current time.
    """
    validate_plan(plan, renew)
    if now is not None and now.utcoffset() is None:
        # Certificate times are UTC; a naive time would be silently misread as local time.
        raise PkiError("ensure_pki: now is a naive datetime; fix: pass an aware one (tz=UTC)")
    now = now or dt.datetime.now(dt.UTC)
    _private_dir(pki_dir)
    rec = _Recorder()
    with _locked(pki_dir):
        cas = {req.name: _ensure_ca(req, plan, pki_dir, renew, now, rec) for req in plan.cas}
        for leaf in plan.certs:
            _ensure_leaf(leaf, plan, pki_dir, cas[leaf.ca], renew, now, rec)
        if plan.service_account_key:
            _ensure_service_account(pki_dir, renew, rec)
    return rec.report()
