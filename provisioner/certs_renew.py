"""Leaf certificate renewal: new certificates and keys for the cluster's components, rolled
out one phase at a time while the apiserver stays served through the load balancer.

Scope: which certificates are leaves (every request of the plan's PKI signed by one of its
CAs: not the CAs, not the service-account key), which phases install each of them (derived
from the rendered tree, so a component that ships a new certificate needs no change here),
re-issuing them in the state directory under the cluster's provision lock, and the rollout:
each of those phases converged in turn, with the seconds it took and the new expiry of every
certificate.

The CAs stay byte for byte as they are, so every old and new certificate is trusted alike
during the rollout and the cluster's recorded identity (CA fingerprints,
``provisioner.pki.identity``) does not change. Each phase restarts only what uses a changed
file, the way a provision does: etcd members and the control plane one node at a time
(their /readyz checked before the next), haproxy reloaded (not restarted), kubelets and
kube-proxy on every node. A stopped rollout leaves the renewed certificates in the state
directory, so a plain ``provision`` installs the rest.

CA rotation is not done here (nor anywhere yet): a new CA needs every client and server to
trust both CAs for a while, which the plan cannot express yet.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from provisioner.components import ALL
from provisioner.pki import PkiError, PkiReport, load_certificate
from provisioner.pki.store import cert_path, key_path
from provisioner.pki.validate import SERVICE_ACCOUNT
from provisioner.plan.model import Plan
from provisioner.provision import ProvisionError, cluster_lock
from provisioner.render.material import prepare, write_admin_kubeconfig
from provisioner.render.standin import StandInMaterial
from provisioner.render.tree import render

STATE_ONLY = "the state directory only"  # where a leaf no host holds is (e.g. super-admin)


class RenewError(Exception):
    """Renewal refused or stopped; the message says what was done and how to finish."""


@dataclass(frozen=True)
class Expiry:
    """One renewed certificate's notAfter, before (None: it did not exist) and after."""

    name: str
    before: datetime | None
    after: datetime


@dataclass
class RenewResult:
    """What a renewal did: the certificates, the phases converged, each step's seconds."""

    renewed: tuple[str, ...] = ()
    phases: tuple[str, ...] = ()
    steps: list[tuple[str, float]] = field(default_factory=list)
    expiry: list[Expiry] = field(default_factory=list)


# --- which certificates, and which phases install them --------------------------------------


def leaf_names(plan: Plan) -> tuple[str, ...]:
    """Every leaf of the plan's PKI (signed by one of its CAs), in plan order."""
    cas = {ca.name for ca in plan.pki.cas}
    return tuple(c.name for c in plan.pki.certs if c.ca in cas)


def select_leaves(plan: Plan, only: Sequence[str] | None) -> tuple[str, ...]:
    """The leaves to renew: all of them, or those named in ``only`` (in plan order)."""
    valid = leaf_names(plan)
    if not only:
        return valid
    cas = {ca.name for ca in plan.pki.cas}
    problems = []
    wanted: set[str] = set()
    for name in dict.fromkeys(only):
        # A folder of the store names every leaf in it: "apiserver" is each control-plane
        # node's serving pair, "kubelet" each node's pairs.
        group = {v for v in valid if v == name or v.startswith(name.rstrip("/") + "/")}
        if group:
            wanted |= group
            continue
        if name in cas:
            problems.append(f"{name!r} is a CA: CA rotation is not done yet (renewing a CA "
                            "needs every component to trust the old and the new one)")
        elif name == SERVICE_ACCOUNT:
            problems.append(f"{name!r} is the service-account key, not a certificate "
                            "(replacing it invalidates every token)")
        else:
            problems.append(f"{name!r} is not a certificate of cluster {plan.name}")
    if problems:
        raise RenewError("--only: " + "; ".join(problems) + ". Valid names: "
                         + ", ".join(valid))
    return tuple(n for n in valid if n in wanted)


def leaf_phases(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Every leaf -> the phases that install it on some host, in plan order (empty: it stays
    in the state directory, as super-admin does)."""
    material = StandInMaterial()
    tree = render(plan, material, None)
    phase_of = {c.name: c.phase for c in ALL}
    marks = {n: (material.cert(n), base64.b64encode(material.cert(n)))
             for n in leaf_names(plan)}
    found: dict[str, set[str]] = {n: set() for n in marks}
    for host, files in tree.hosts.items():
        for f in files:
            for name, (raw, encoded) in marks.items():
                if raw in f.content or encoded in f.content:
                    found[name].update(phase_of[c] for c in tree.owners[(host, f.path)])
    order = [p.name for p in plan.phases]
    return {n: tuple(p for p in order if p in found[n]) for n in marks}


def rollout_phases(plan: Plan, names: Iterable[str],
                   shipped: dict[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
    """The phases that install any of ``names``, in plan order."""
    where = shipped if shipped is not None else leaf_phases(plan)
    wanted = {p for n in names for p in where.get(n, ())}
    return tuple(p.name for p in plan.phases if p.name in wanted)


def availability_notes(plan: Plan, phases: Iterable[str]) -> list[str]:
    """Warnings for a rollout the apiserver cannot stay served through: with one apiserver
    (or one etcd member) there is no other to serve while it restarts."""
    wanted = set(phases)
    out = []
    if "control-plane" in wanted and len(plan.control_plane) == 1:
        out.append("one control-plane node: the apiserver is not served while it restarts "
                   "(a few seconds)")
    if "etcd" in wanted and len(plan.with_role("is_etcd")) == 1:
        out.append("one etcd member: the apiserver cannot read or write while it restarts")
    return out


# --- the state directory ----------------------------------------------------------------------


def _not_after(pki_dir: Path, name: str) -> datetime | None:
    if not cert_path(pki_dir, name).exists():
        return None
    return load_certificate(pki_dir, name).not_valid_after_utc


def current_expiry(sdir: Path, names: Iterable[str]) -> dict[str, datetime | None]:
    """notAfter of each named certificate in ``<sdir>/pki`` (None: not there)."""
    return {n: _not_after(sdir / "pki", n) for n in names}


def renew_in_state(plan: Plan, sdir: Path, spec_dir: Path, names: Sequence[str]) -> PkiReport:
    """Re-issue ``names`` (certificate and key) in ``<sdir>/pki`` under the provision lock,
    and rewrite the admin kubeconfigs of the state directory. A CA is never touched: without
    every CA there already, this refuses (a missing CA would be a new one)."""
    pki = sdir / "pki"
    missing = [ca.name for ca in plan.pki.cas
               if not (cert_path(pki, ca.name).exists() and key_path(pki, ca.name).exists())]
    if missing:
        raise RenewError(f"no CA {', '.join(missing)} in {pki}: provision the cluster first "
                         "(or pass the --state-dir it was provisioned with); nothing was "
                         "renewed")
    try:
        with cluster_lock(sdir):
            material, report = prepare(plan, sdir, spec_dir, frozenset(names))
            write_admin_kubeconfig(plan, material, sdir)
    except ProvisionError as exc:
        raise RenewError(f"{exc}; nothing was renewed") from None
    except PkiError as exc:  # a CA unreadable, or its key not its own: never replaced here
        raise RenewError(f"{exc}; nothing was renewed") from None
    touched = set(report.created) | set(report.reissued)
    cas = [ca.name for ca in plan.pki.cas if ca.name in touched]
    if cas:  # cannot happen with every CA present; never let it pass silently
        raise RenewError(f"CA {', '.join(cas)} changed in {pki}: every certificate must be "
                         "re-installed; run `provisioner provision FILE --replace-identity`")
    return report


# --- the whole renewal ----------------------------------------------------------------------


def renew_certificates(plan: Plan, sdir: Path, spec_dir: Path, names: Sequence[str],
                       converge: Callable[[str], str],
                       note: Callable[[str], None]) -> RenewResult:
    """Re-issue ``names`` in the state directory, then converge each phase that installs one
    of them (or another certificate the store re-issued on the way: one expiring soon), in
    plan order. ``converge(phase)`` runs that phase of ``provision`` and returns a short
    summary; it raises ``RenewError`` when the phase fails."""
    result = RenewResult()
    before = current_expiry(sdir, leaf_names(plan))
    started = time.monotonic()
    report = renew_in_state(plan, sdir, spec_dir, names)
    leaves = set(leaf_names(plan))
    extra = [n for n in (*report.created, *report.reissued) if n in leaves and n not in names]
    result.renewed = (*names, *extra)
    result.steps.append((f"re-issue {len(result.renewed)} in the state directory (the CAs "
                         "kept)", time.monotonic() - started))
    note(f"certs renew: {len(result.renewed)} re-issued in {sdir / 'pki'}")
    for n in extra:
        note(f"certs renew: {n} was re-issued too: {report.reissued.get(n, 'missing')}")
    shipped = leaf_phases(plan)
    result.phases = rollout_phases(plan, result.renewed, shipped)
    for i, phase in enumerate(result.phases):
        started = time.monotonic()
        carried = [n for n in result.renewed if phase in shipped[n]]
        note(f"certs renew: phase {phase} installs {len(carried)} of them")
        try:
            summary = converge(phase)
        except RenewError as exc:
            rest = ",".join(result.phases[i:])
            raise RenewError(
                f"phase {phase}: {exc}. The renewed certificates are in {sdir / 'pki'}, and "
                f"the phases {rest} have not finished installing them (a host without them "
                f"serves with the old ones, which stay valid): fix the cause, then "
                f"`provisioner provision "
                f"FILE --only {rest}` (or a plain `provisioner provision FILE`) finishes the "
                "rollout; `provisioner certs renew FILE` again finishes it too, with newly "
                "issued certificates") from None
        result.steps.append((f"{phase}: {summary}", time.monotonic() - started))
    pki = sdir / "pki"
    result.expiry = [Expiry(n, before.get(n), load_certificate(pki, n).not_valid_after_utc)
                     for n in result.renewed]
    return result
