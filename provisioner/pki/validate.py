"""Checks on a :class:`PkiPlan` before anything is generated or written.

Scope: request-level problems only (names, issuers, subject text, SANs, validity, ``renew``);
every problem is collected and raised together as one :class:`PkiError`, each naming the
request and the fix. The state of files on disk is judged in :mod:`provisioner.pki.store`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from ipaddress import ip_address

from provisioner.pki.errors import PkiError
from provisioner.pki.model import CARequest, CertRequest, PkiPlan

# Leaves expiring within this many days are reissued; see store.RENEW_BEFORE.
RENEW_BEFORE_DAYS = 30
SERVICE_ACCOUNT = "sa"

# Relative path stems only: no "..", no absolute paths, no hidden files (temp files are hidden).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*\.?")
# X.509 upper bounds (RFC 5280 ub-common-name, ub-organization-name).
_MAX_TEXT = 64


def _check_name(kind: str, name: str) -> list[str]:
    if _NAME.fullmatch(name) and ".." not in name.split("/"):
        return []
    return [
        f"{kind} {name!r}: invalid name; fix: use a relative path stem of letters, digits, "
        "'.', '_', '-' and '/' (e.g. 'etcd/peer-cp1'), not starting with '.' or '/'"
    ]


def _check_text(what: str, field: str, value: str) -> list[str]:
    if not value:
        return [f"{what}: {field} is empty; fix: set a non-empty {field}"]
    if len(value) > _MAX_TEXT:
        return [f"{what}: {field} is {len(value)} characters; fix: shorten it to {_MAX_TEXT}"]
    if any(not c.isprintable() for c in value):
        return [f"{what}: {field} contains control characters; fix: remove them"]
    return []


def _check_dns(what: str, names: Iterable[str]) -> list[str]:
    problems = []
    for d in names:
        try:
            ip_address(d)
        except ValueError:
            pass
        else:
            problems.append(
                f"{what}: DNS name {d!r} is an IP address; fix: move it to ip_addresses "
                "(clients match IPs only against IP SANs)"
            )
            continue
        if len(d) > 253 or not d.isascii() or not _DNS.fullmatch(d):
            problems.append(
                f"{what}: invalid DNS name {d!r}; fix: use an ASCII host name "
                "(punycode for international names), optionally starting with '*.'"
            )
    return problems


def _check_ips(what: str, ips: Iterable[str]) -> list[str]:
    problems = []
    for s in ips:
        try:
            ip_address(s)
        except ValueError:
            problems.append(
                f"{what}: invalid IP address {s!r}; fix: give a plain IPv4 or IPv6 address "
                "(no prefix length, no port), or move a host name to dns_names"
            )
    return problems


def _check_ca(ca: CARequest) -> list[str]:
    what = f"CA {ca.name!r}"
    return _check_name("CA", ca.name) + _check_text(what, "common_name", ca.common_name)


def _check_cert(cert: CertRequest, ca_names: list[str], cert_names: set[str]) -> list[str]:
    what = f"certificate {cert.name!r}"
    problems = _check_name("certificate", cert.name)
    if cert.ca not in ca_names:
        hint = (
            f"{cert.ca!r} is a certificate, not a CA"
            if cert.ca in cert_names
            else f"known CAs: {', '.join(ca_names) or 'none'}"
        )
        problems.append(
            f"{what}: issuing CA {cert.ca!r} is not in the plan ({hint}); fix: set ca to one of "
            f"the plan's CAs or add CARequest({cert.ca!r}, ...)"
        )
    problems += _check_text(what, "common_name", cert.common_name)
    for o in cert.organizations:
        problems += _check_text(what, "organization", o)
    problems += _check_dns(what, cert.dns_names)
    problems += _check_ips(what, cert.ip_addresses)
    return problems


def _check_unique(plan: PkiPlan) -> list[str]:
    problems = []
    seen: dict[str, str] = {}
    entries = [("CA", c.name) for c in plan.cas] + [("certificate", c.name) for c in plan.certs]
    if plan.service_account_key:
        # sa.key/sa.pub are the service-account pair; a request of that name would overwrite it.
        entries.insert(0, ("service-account key pair", SERVICE_ACCOUNT))
    for kind, name in entries:
        if name in seen:
            problems.append(
                f"{kind} {name!r}: name already used by a {seen[name]}; fix: give each CA and "
                "certificate its own name (it is the file name in the PKI directory)"
            )
        else:
            seen[name] = kind
    return problems


def _check_validity(plan: PkiPlan) -> list[str]:
    problems = []
    for field, days in (
        ("validity_days", plan.validity_days),
        ("ca_validity_days", plan.ca_validity_days),
    ):
        if days <= RENEW_BEFORE_DAYS:
            problems.append(
                f"plan: {field}={days}; fix: use more than {RENEW_BEFORE_DAYS} days (certificates "
                f"expiring within {RENEW_BEFORE_DAYS} days are reissued on every run)"
            )
    return problems


def _check_renew(plan: PkiPlan, renew: frozenset[str]) -> list[str]:
    known = [c.name for c in plan.cas] + [c.name for c in plan.certs]
    if plan.service_account_key:
        known.append(SERVICE_ACCOUNT)
    unknown = sorted(renew - set(known))
    if not unknown:
        return []
    return [
        f"renew: {', '.join(repr(u) for u in unknown)} not in the plan; fix: renew only names "
        f"of the plan's CAs and certificates{' or sa' if plan.service_account_key else ''}"
    ]


def validate_plan(plan: PkiPlan, renew: frozenset[str] = frozenset()) -> None:
    """Raise :class:`PkiError` listing every problem in ``plan`` (and ``renew``), if any."""
    ca_names = [c.name for c in plan.cas]
    cert_names = {c.name for c in plan.certs}
    problems = _check_unique(plan)
    for ca in plan.cas:
        problems += _check_ca(ca)
    for cert in plan.certs:
        problems += _check_cert(cert, ca_names, cert_names)
    problems += _check_validity(plan)
    problems += _check_renew(plan, renew)
    if problems:
        raise PkiError(problems)
