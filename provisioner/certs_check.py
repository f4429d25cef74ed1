"""Certificate inventory: every certificate on the hosts and in the state directory, and
how long each has left.

Scope: which certificate files the plan puts on each host (derived from the rendered files:
a component that adds one needs no change here), reading them over SSH -- one command per
host, all hosts at once -- and parsing them locally with ``cryptography``; the certificates
of ``<state>/pki``; the 30-day verdict that ``provisioner certs check`` and verify's
``cert-expiry`` check share, and the report of the former.

Key material is never read, kept or shown. The host command prints only the lines of
``BEGIN CERTIFICATE`` ... ``END CERTIFICATE`` blocks and stops reading a file at any
``PRIVATE KEY`` line, so the private half of a combined file (haproxy's client pair, the
kubelet's rotated ``kubelet-client-current.pem``) never leaves the host; in the state
directory only ``*.crt`` files are opened.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

from provisioner.components import ALL
from provisioner.components.node import KUBELET_DIR, Kubelet
from provisioner.plan.model import HostPlan, Plan
from provisioner.render.standin import StandInMaterial
from provisioner.render.tree import render

if TYPE_CHECKING:
    # Only for types: verify's checks import this module, so importing verify here at run
    # time would be circular (read_hosts imports SshUnavailable when it runs).
    from provisioner.verify.ssh import SshRunner

# kubeadm's `certs check-expiration` flags the last month too; the PKI store reissues leaves
# within the same window (provisioner.pki.validate.RENEW_BEFORE_DAYS).
WARN_DAYS = 30
STATE = "state"  # the ``where`` of certificates in the state directory
PEM_CERT = b"-----BEGIN CERTIFICATE-----"
# The kubelet's own client pair (rotateCertificates: true), a symlink to the newest
# kubelet-client-<date>.pem; absent until the kubelet first rotates.
KUBELET_ROTATED = f"{KUBELET_DIR}/pki/kubelet-client-current.pem"

# The host command: ``sh -c SCRIPT READ_ARGV0 PATH...``. Each file is announced by a MARK
# line (``file``, ``missing`` or ``unreadable`` and its path), then its certificate blocks.
MARK = "@@provisioner-cert"
READ_ARGV0 = "provisioner-certs"
_SCRIPT = (
    'for f in "$@"; do '
    f'if [ ! -e "$f" ]; then printf "%s missing %s\\n" {MARK} "$f"; '
    f'elif [ ! -r "$f" ]; then printf "%s unreadable %s\\n" {MARK} "$f"; '
    f'else printf "%s file %s\\n" {MARK} "$f"; '
    # -n: print nothing but the blocks; q (which prints nothing under -n) stops at a key line
    # inside a block, so a certificate without its END line cannot run on into a key.
    "sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/{/PRIVATE KEY/q;p;}' "
    '"$f"; fi; done'
)
_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)

CertStatus = Literal["ok", "expiring", "expired", "not-yet-valid"]
ProblemKind = Literal["unreachable", "missing", "unreadable", "invalid", "error"]


@dataclass(frozen=True)
class CertFile:
    """A certificate file on a host, and who puts it there."""

    path: str
    phase: str | None  # the phase that installs it; None: the host makes it (kubelet)

    @property
    def optional(self) -> bool:
        """A file the host makes itself may not exist yet."""
        return self.phase is None


@dataclass(frozen=True)
class CertInfo:
    """One certificate: where it is and what it says (never its key)."""

    where: str  # a host name, or STATE
    path: str
    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    is_ca: bool
    phase: str | None  # host files: the phase that installs it (None: the kubelet rotates it)

    def days_left(self, now: datetime) -> int:
        """Whole days until notAfter, rounded down (negative once expired)."""
        return math.floor((self.not_after - now) / timedelta(days=1))

    def status(self, now: datetime) -> CertStatus:
        """``expiring`` within WARN_DAYS; ``not-yet-valid`` before notBefore (clock skew)."""
        if self.not_after <= now:
            return "expired"
        if self.not_before > now:
            return "not-yet-valid"
        if self.not_after <= now + timedelta(days=WARN_DAYS):
            return "expiring"
        return "ok"

    @property
    def stamp(self) -> str:
        """notAfter as ``2030-01-01T00:00:00Z``."""
        return f"{self.not_after:%Y-%m-%dT%H:%M:%SZ}"

    def hint(self, state_dir: Path) -> str:
        """How to replace this certificate."""
        if self.where != STATE and self.phase is None:
            return ("the kubelet renews this pair itself when 70-90% of its lifetime has "
                    f"passed: that it has not means rotation fails; see `journalctl -u "
                    f"kubelet` on {self.where} and `kubectl get csr` (pending requests)")
        if self.is_ca:
            return ("re-issue the certificate: a CA is not renewed automatically, and every "
                    "certificate it signed must be re-issued with it; CA rotation is not done "
                    "yet (`provisioner certs renew FILE` renews the leaf certificates only)")
        install = (f"`provisioner provision FILE --only {self.phase}`" if self.phase
                   else "`provisioner provision FILE`")
        return (f"re-issue the certificate: {install} renews certificates within "
                f"{WARN_DAYS} days of expiry in {state_dir / 'pki'} and installs them; "
                "`provisioner certs renew FILE` renews every leaf certificate now and rolls "
                "them out with the apiserver served throughout")


@dataclass(frozen=True)
class Problem:
    """A certificate that could not be read, or a host that could not be asked."""

    where: str
    path: str  # "" when it concerns the whole host
    kind: ProblemKind
    detail: str  # never file content
    hint: str


@dataclass(frozen=True)
class Inventory:
    """Everything ``certs check`` found."""

    certs: tuple[CertInfo, ...]
    problems: tuple[Problem, ...]

    def sorted_certs(self) -> list[CertInfo]:
        """Soonest expiry first, then by where and path."""
        return sorted(self.certs, key=lambda c: (c.not_after, c.where, c.path))

    def due(self, now: datetime) -> list[CertInfo]:
        """Certificates that are not ``ok``, soonest first."""
        return [c for c in self.sorted_certs() if c.status(now) != "ok"]

    def passed(self, now: datetime) -> bool:
        """Nothing due and nothing unread."""
        return not self.problems and not self.due(now)


# --- which files: the rendered tree -------------------------------------------------------


def host_cert_files(plan: Plan) -> dict[str, tuple[CertFile, ...]]:
    """Per host, every file of the rendered tree whose content starts with a certificate
    (combined certificate+key files included), plus the kubelet's rotated pair on nodes."""
    tree = render(plan, StandInMaterial(), None)
    phase_of = {c.name: c.phase for c in ALL}
    out: dict[str, tuple[CertFile, ...]] = {}
    for host in plan.hosts:
        files = [CertFile(f.path, phase_of[tree.owners[(host.name, f.path)][0]])
                 for f in tree.hosts[host.name] if f.content.startswith(PEM_CERT)]
        if Kubelet.name in host.parts:
            files.append(CertFile(KUBELET_ROTATED, None))
        out[host.name] = tuple(files)
    return out


# --- parsing --------------------------------------------------------------------------------


def certificates_in(data: bytes) -> tuple[list[x509.Certificate], int]:
    """The certificate blocks of PEM ``data`` and how many of them do not parse; anything
    outside those blocks (a key in a combined file) is ignored."""
    certs: list[x509.Certificate] = []
    bad = 0
    for block in _BLOCK.findall(data):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            bad += 1
    return certs, bad


def _name(name: x509.Name) -> str:
    # CN first, then O, then the rest in certificate order, as describe_certificate shows it.
    rank = {NameOID.COMMON_NAME: 0, NameOID.ORGANIZATION_NAME: 1}
    return ",".join(a.rfc4514_string() for a in sorted(name, key=lambda a: rank.get(a.oid, 2)))


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    out: list[str] = []
    for name in san:  # in certificate order; other kinds (directory names) are left out
        if isinstance(name, x509.DNSName):
            out.append(f"DNS:{name.value}")
        elif isinstance(name, x509.IPAddress):
            out.append(f"IP:{name.value}")
        elif isinstance(name, x509.UniformResourceIdentifier):
            out.append(f"URI:{name.value}")
        elif isinstance(name, x509.RFC822Name):
            out.append(f"email:{name.value}")
    return tuple(out)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def describe(cert: x509.Certificate, where: str, path: str,
             phase: str | None = None) -> CertInfo:
    """The inventory row of ``cert``."""
    return CertInfo(where, path, _name(cert.subject), _name(cert.issuer), _sans(cert),
                    cert.not_valid_before_utc, cert.not_valid_after_utc, _is_ca(cert), phase)


# --- reading: hosts and the state directory -------------------------------------------------


def read_command(paths: Iterable[str]) -> str:
    """The one command that prints the certificate blocks of ``paths`` (never a key)."""
    return shlex.join(["sh", "-c", _SCRIPT, READ_ARGV0, *paths])


def parse_read_output(where: str, files: Sequence[CertFile], stdout: str
                      ) -> tuple[list[CertInfo], list[Problem]]:
    """The certificates and problems in the output of ``read_command`` on host ``where``."""
    sections: dict[str, tuple[str, list[str]]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith(MARK + " "):
            kind, _, path = line[len(MARK) + 1:].partition(" ")
            current = []
            sections[path] = (kind, current)
        elif current is not None:
            current.append(line)
    certs: list[CertInfo] = []
    problems: list[Problem] = []
    for f in files:
        install = (f"`provisioner provision FILE --only {f.phase}`" if f.phase
                   else "`provisioner provision FILE`")
        kind, lines = sections.get(f.path, ("", []))
        if kind == "missing":
            if not f.optional:
                problems.append(Problem(where, f.path, "missing", "not on the host",
                                        f"install it: {install}"))
            continue
        if kind == "unreadable":
            problems.append(Problem(where, f.path, "unreadable", "root cannot read it",
                                    f"check its mode and owner on {where}; {install} "
                                    "rewrites it"))
            continue
        if kind != "file":
            problems.append(Problem(where, f.path, "error", "the host did not answer for it",
                                    f"log in to {where} and check that sh and sed work"))
            continue
        found, bad = certificates_in("\n".join(lines).encode())
        certs += [describe(c, where, f.path, f.phase) for c in found]
        if bad or not found:
            what = f"{bad} certificate block(s) do not parse" if bad else "holds no certificate"
            problems.append(Problem(where, f.path, "invalid", what,
                                    f"re-install it: {install}" if f.phase else
                                    f"see `journalctl -u kubelet` on {where}"))
    return certs, problems


def read_host(runner: SshRunner, host: HostPlan, files: Sequence[CertFile], timeout: float
              ) -> tuple[list[CertInfo], list[Problem]]:
    """Read the certificates ``files`` on ``host`` with one root command; raises
    ``SshUnavailable`` when the host cannot be logged in to."""
    if not files:
        return [], []
    result = runner.run(host, read_command(f.path for f in files), timeout, True)
    if result.exit_status != 0:
        first = next((line.strip() for line in result.stderr.splitlines() if line.strip()),
                     "no message")
        return [], [Problem(host.name, "", "error",
                            f"reading certificates exited {result.exit_status}: {first}",
                            f"the certificates are readable by root only: check that the "
                            f"login can run `sudo -n true` on {host.name}")]
    return parse_read_output(host.name, files, result.stdout)


def read_hosts(plan: Plan, runner: SshRunner, timeout: float,
               files: Mapping[str, Sequence[CertFile]] | None = None
               ) -> tuple[list[CertInfo], list[Problem]]:
    """Every host's certificates, all hosts in parallel; a host that cannot be logged in
    to is one ``unreachable`` problem."""
    from provisioner.verify.ssh import SshUnavailable  # see the TYPE_CHECKING import

    wanted = files if files is not None else host_cert_files(plan)

    def one(host: HostPlan) -> tuple[list[CertInfo], list[Problem]]:
        try:
            return read_host(runner, host, wanted.get(host.name, ()), timeout)
        except SshUnavailable as exc:
            return [], [Problem(host.name, "", "unreachable", exc.detail, exc.hint)]

    certs: list[CertInfo] = []
    problems: list[Problem] = []
    if not plan.hosts:
        return certs, problems
    with ThreadPoolExecutor(max_workers=min(16, len(plan.hosts)),
                            thread_name_prefix="certs") as pool:
        for found, trouble in pool.map(one, plan.hosts):
            certs += found
            problems += trouble
    return certs, problems


def read_state(state_dir: Path) -> tuple[list[CertInfo], list[Problem]]:
    """Every certificate of ``<state_dir>/pki/**.crt`` (keys are never opened)."""
    pki = state_dir / "pki"
    if not pki.is_dir():
        return [], [Problem(STATE, str(pki), "missing", "no PKI in the state directory",
                            "provision the cluster from this state directory first, or pass "
                            "the --state-dir it was provisioned with")]
    certs: list[CertInfo] = []
    problems: list[Problem] = []
    for path in sorted(pki.rglob("*.crt")):
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(Problem(STATE, str(path), "unreadable", exc.strerror or str(exc),
                                    "check its mode and owner"))
            continue
        found, bad = certificates_in(data)
        certs += [describe(c, STATE, str(path)) for c in found]
        if bad or not found:
            problems.append(Problem(
                STATE, str(path), "invalid", "not a PEM certificate",
                "delete it and run `provisioner render FILE --out DIR` to re-issue it"))
    return certs, problems


def inventory(plan: Plan, state_dir: Path, runner: SshRunner, timeout: float) -> Inventory:
    """The certificates of every host of ``plan`` and of its state directory."""
    host_certs, host_problems = read_hosts(plan, runner, timeout)
    state_certs, state_problems = read_state(state_dir)
    return Inventory(tuple(host_certs + state_certs), tuple(host_problems + state_problems))


# --- the report -------------------------------------------------------------------------------


def to_json(inv: Inventory, now: datetime) -> str:
    """A list of objects, certificates soonest expiry first, then problems. A certificate
    has ``status`` ok, expiring, expired or not-yet-valid; a problem has its kind as
    ``status`` (unreachable, missing, unreadable, invalid, error), ``detail`` and ``hint``."""
    rows: list[dict[str, object]] = [
        {"where": c.where, "path": c.path, "subject": c.subject, "issuer": c.issuer,
         "sans": list(c.sans), "not_before": f"{c.not_before:%Y-%m-%dT%H:%M:%SZ}",
         "not_after": c.stamp, "days_left": c.days_left(now), "ca": c.is_ca,
         "status": c.status(now)}
        for c in inv.sorted_certs()]
    rows += [{"where": p.where, "path": p.path, "status": p.kind, "detail": p.detail,
              "hint": p.hint} for p in _sorted_problems(inv.problems)]
    return json.dumps(rows, indent=2) + "\n"


def _sorted_problems(problems: Iterable[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.where == STATE, p.where, p.path))


def _shown(path: str, where: str, state_dir: Path) -> str:
    # State paths relative to the state directory, which the report names once.
    if where == STATE and Path(path).is_relative_to(state_dir):
        return str(Path(path).relative_to(state_dir))
    return path


def table(inv: Inventory, state_dir: Path, now: datetime) -> str:
    """Plain columns, soonest expiry first; state paths relative to ``state_dir``."""
    head = ("DAYS", "STATUS", "NOT AFTER", "WHERE", "PATH", "SUBJECT", "ISSUER", "CA", "SANS")
    rows = [(str(c.days_left(now)), c.status(now), c.stamp, c.where,
             _shown(c.path, c.where, state_dir), c.subject, c.issuer,
             "yes" if c.is_ca else "", ",".join(c.sans) or "-")
            for c in inv.sorted_certs()]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                   + "\n" for r in [head, *rows])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def report(inv: Inventory, state_dir: Path, now: datetime) -> str:
    """The table, what needs doing (with hints), and the verdict as the last line."""
    out = [table(inv, state_dir, now)]
    if any(c.where == STATE for c in inv.certs):
        out.append(f"(paths of {STATE} are in {state_dir})\n")
    due = inv.due(now)
    if due or inv.problems:
        out.append("\n")
    for c in due:
        when = (f"expired {c.stamp}" if c.status(now) == "expired" else
                f"not valid before {c.not_before:%Y-%m-%dT%H:%M:%SZ} (clock skew?)"
                if c.status(now) == "not-yet-valid" else
                f"expires {c.stamp}, in {_plural(c.days_left(now), 'day')}")
        out.append(f"{c.where}: {c.path} ({c.subject}): {when}\n  fix: {c.hint(state_dir)}\n")
    for p in _sorted_problems(inv.problems):
        place = f"{p.where}: {p.path}" if p.path else p.where
        out.append(f"{place}: {p.kind}: {p.detail}\n  fix: {p.hint}\n")
    out.append(verdict(inv, now) + "\n")
    return "".join(out)


def verdict(inv: Inventory, now: datetime) -> str:
    """One line: passed with the soonest expiry, or what failed."""
    hosts = len({c.where for c in inv.certs if c.where != STATE})
    if inv.passed(now):
        first = inv.sorted_certs()[0] if inv.certs else None
        soonest = (f"; soonest: {first.path} on {first.where}, {first.stamp} "
                   f"(in {_plural(first.days_left(now), 'day')})" if first else "")
        return (f"certs check passed: {_plural(len(inv.certs), 'certificate')} on "
                f"{_plural(hosts, 'host')} and in the state directory, none expiring within "
                f"{WARN_DAYS} days{soonest}")
    parts: list[str] = []
    due = inv.due(now)
    expired = sum(1 for c in due if c.status(now) == "expired")
    expiring = sum(1 for c in due if c.status(now) == "expiring")
    early = len(due) - expired - expiring
    if expired:
        parts.append(f"{_plural(expired, 'certificate')} expired")
    if expiring:
        parts.append(f"{_plural(expiring, 'certificate')} expiring within {WARN_DAYS} days")
    if early:
        parts.append(f"{_plural(early, 'certificate')} not valid yet")
    unreachable = sum(1 for p in inv.problems if p.kind == "unreachable")
    if unreachable:
        parts.append(f"{_plural(unreachable, 'host')} unreachable")
    failed = sum(1 for p in inv.problems if not p.path and p.kind != "unreachable")
    if failed:
        parts.append(f"{_plural(failed, 'host')} could not read its certificates")
    files = sum(1 for p in inv.problems if p.path)
    if files:
        parts.append(f"{_plural(files, 'file')} missing, unreadable or invalid")
    return "certs check FAILED: " + ", ".join(parts)
