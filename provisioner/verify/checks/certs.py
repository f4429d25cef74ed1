"""Certificate expiry: the cluster PKI in the state directory, per area (etcd, apiserver),
and the certificates installed on each host (``cert-expiry``).

A certificate expiring within ``WARN_DAYS`` warns; an expired, missing or unreadable one, or
one not signed by its CA, fails. Evidence shows notAfter dates (never "N days left", which
would change between runs).
"""

from __future__ import annotations

from datetime import timedelta

from provisioner.certs_check import WARN_DAYS, CertInfo, Problem, host_cert_files, read_host
from provisioner.pki import PkiError, load_certificate, verify_issued_by
from provisioner.verify.model import Outcome, VerifyContext, fail, ok, warn

RENEW_HINT = ("reissue it: `provisioner render FILE --out DIR` renews certificates that are "
              "missing, not signed by their CA or within 30 days of expiry in {pki}, then "
              "`provisioner provision FILE --only {phase}` installs them")


def _etcd_names(ctx: VerifyContext) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = [(c.name, None) for c in ctx.plan.pki.cas
                                         if c.name == "etcd/ca"]
    out += [(c.name, c.ca) for c in ctx.plan.pki.certs if c.ca == "etcd/ca"]
    return out


def _apiserver_names(ctx: VerifyContext) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = [(c.name, None) for c in ctx.plan.pki.cas
                                         if c.name in ("ca", "front-proxy-ca")]
    out += [(c.name, c.ca) for c in ctx.plan.pki.certs
            if c.ca in ("ca", "front-proxy-ca")
            and (c.name.startswith(("apiserver", "front-proxy")) or c.name == "admin")]
    return out


def expiry(ctx: VerifyContext, names: list[tuple[str, str | None]], phase: str) -> Outcome:
    """Verdict over ``(certificate, issuing CA or None for a CA)`` pairs."""
    problems: list[str] = []
    warnings: list[str] = []
    missing: list[str] = []
    soonest: tuple[str, str] | None = None
    horizon = ctx.now + timedelta(days=WARN_DAYS)
    for name, ca in names:
        if not (ctx.pki_dir / f"{name}.crt").is_file():
            missing.append(name)
            continue
        try:
            cert = load_certificate(ctx.pki_dir, name)
        except PkiError:
            problems.append(f"{name}: {name}.crt is not a PEM certificate")
            continue
        if ca is not None:
            try:
                ca_cert = load_certificate(ctx.pki_dir, ca)
            except PkiError:
                ca_cert = None
            if ca_cert is not None and not verify_issued_by(cert, ca_cert):
                problems.append(f"{name}: not signed by {ca}")
        not_after = cert.not_valid_after_utc
        stamp = f"{not_after:%Y-%m-%dT%H:%M:%SZ}"
        if soonest is None or stamp < soonest[1]:
            soonest = (name, stamp)
        if not_after <= ctx.now:
            problems.append(f"{name}: expired (notAfter {stamp})")
        elif not_after <= horizon:
            warnings.append(f"{name}: notAfter {stamp}, within {WARN_DAYS} days")
        if cert.not_valid_before_utc > ctx.now:
            problems.append(f"{name}: not valid yet (clock skew?)")
    hint = RENEW_HINT.format(pki=ctx.pki_dir, phase=phase)
    if missing:
        problems.insert(0, f"missing in {ctx.pki_dir}: {', '.join(missing)}")
    if problems:
        return fail("; ".join(problems + warnings), hint)
    if warnings:
        return warn("; ".join(warnings), hint)
    assert soonest is not None or not names
    first = f"; soonest: {soonest[0]} notAfter {soonest[1]}" if soonest else ""
    return ok(f"{len(names)} certificates valid beyond {WARN_DAYS} days{first}")


def etcd_expiry(ctx: VerifyContext, target: str) -> Outcome:
    """The etcd CA, member server/peer and client certificates."""
    return expiry(ctx, _etcd_names(ctx), "etcd")


def apiserver_expiry(ctx: VerifyContext, target: str) -> Outcome:
    """The cluster and front-proxy CAs, apiserver serving/client and admin certificates."""
    return expiry(ctx, _apiserver_names(ctx), "control-plane")


def host_expiry(ctx: VerifyContext, target: str) -> Outcome:
    """Every certificate the plan installs on the host (and the kubelet's rotated pair),
    read there: what the services actually present, which may lag the state directory."""
    files = ctx.memo.get("cert-files", lambda: host_cert_files(ctx.plan))[target]
    certs, problems = read_host(ctx.ssh, ctx.host(target), files, ctx.timeout + 10)
    return host_verdict(target, certs, problems, ctx)


def host_verdict(target: str, certs: list[CertInfo], problems: list[Problem],
                 ctx: VerifyContext) -> Outcome:
    """fail: expired, not valid yet, or not read; warn: expiring within WARN_DAYS."""
    bad: list[str] = []
    soon: list[str] = []
    hints: list[str] = []
    for p in problems:
        bad.append(f"{p.path or target}: {p.kind} ({p.detail})")
        hints.append(p.hint)
    ordered = sorted(certs, key=lambda c: (c.not_after, c.path))
    for c in ordered:
        status = c.status(ctx.now)
        if status == "ok":
            continue
        if status == "expired":
            bad.append(f"{c.path} on {target}: expired (notAfter {c.stamp})")
        elif status == "not-yet-valid":
            bad.append(f"{c.path} on {target}: not valid yet (clock skew?)")
        else:
            soon.append(f"{c.path} on {target}: notAfter {c.stamp}, within {WARN_DAYS} days")
        hints.append(c.hint(ctx.state_dir))
    hint = "; ".join(dict.fromkeys(hints))
    if bad:
        return fail("; ".join(bad + soon), hint)
    if soon:
        return warn("; ".join(soon), hint)
    if not ordered:
        return ok("no certificate files planned or found on this host")
    first = ordered[0]
    return ok(f"{len(ordered)} certificates valid beyond {WARN_DAYS} days; soonest: "
              f"{first.path} notAfter {first.stamp}")
