"""The cluster's identity: fingerprints on every host, and provision refusing to push another.

The identity check reads what the survey found on each host (``provisioner.converge``) and
must run before any phase, so these tests never reach a phase."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioner import provision as provision_mod
from provisioner.converge import HostSurvey
from provisioner.execute import LineProgress
from provisioner.pki.identity import (
    IDENTITY_PATH,
    differences,
    fingerprints,
    identity_text,
    parse_identity,
)
from provisioner.plan import build_plan
from provisioner.render.material import prepare
from provisioner.render.tree import render
from provisioner.spec import parse

SPEC = """
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: idt}
spec:
  provider: {type: nspawn}
  controlPlane: {count: 1}
  workers: {count: 1}
"""


def test_fingerprints_name_every_ca_and_key_and_survive_a_round_trip(tmp_path: Path) -> None:
    plan = build_plan(parse(SPEC))
    material, _ = prepare(plan, tmp_path / "a", tmp_path)
    fps = fingerprints(plan, material)
    assert {"ca/ca", "ca/etcd/ca", "ca/front-proxy-ca", "service-account",
            "encryption-key"} <= set(fps)
    assert all(v.startswith("sha256:") and len(v) == 71 for v in fps.values())
    text = identity_text(plan.name, fps)
    assert parse_identity(text) == fps
    # The key itself never appears; only its labelled digest.
    assert material.encryption_key().decode() not in text
    # Another state directory: every item differs; the same one: nothing does.
    other, _ = prepare(plan, tmp_path / "b", tmp_path)
    assert set(differences(fps, fingerprints(plan, other))) == set(fps)
    assert differences(fps, fingerprints(plan, material)) == []
    # Items a host does not hold yet are not differences.
    assert differences({}, fps) == []


def test_every_host_gets_the_identity_file(tmp_path: Path) -> None:
    plan = build_plan(parse(SPEC))
    material, _ = prepare(plan, tmp_path / "s", tmp_path)
    tree = render(plan, material, None)
    for host, files in tree.hosts.items():
        ident = [f for f in files if f.path == IDENTITY_PATH]
        assert ident and not ident[0].secret, host
        assert parse_identity(ident[0].content.decode()) == fingerprints(plan, material)


def _surveys(answers: dict[str, str | None]) -> dict[str, HostSurvey]:
    """What a survey of each host found: its identity file's text, or no answer (None)."""
    return {h: HostSurvey(h, None if a is None else {"identity": a},
                          error=None if a is not None else "connection refused")
            for h, a in answers.items()}


def _state(tmp_path: Path, name: str) -> tuple[Any, Path, Path]:
    plan = build_plan(parse(SPEC))
    sdir = tmp_path / name / "clusters" / plan.name
    material, _ = prepare(plan, sdir, tmp_path)
    out = sdir / "rendered"
    from provisioner.render.tree import write_tree
    write_tree(render(plan, material, None), out)
    return plan, sdir, out


def test_hosts_holding_another_identity_are_refused(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    plan, sdir, rendered = _state(tmp_path, "second")
    _, _, first_rendered = _state(tmp_path, "first")
    theirs = (first_rendered / "hosts" / "idt-cp1" / IDENTITY_PATH.lstrip("/")).read_text()
    with pytest.raises(provision_mod.ProvisionError) as err:
        provision_mod._check_identity(plan, sdir, rendered,
                                      _surveys({"idt-cp1": theirs, "idt-w1": None}))
    text = str(err.value)
    assert "idt-cp1: holds another ca/ca" in text and "idt-w1" not in text
    assert "nothing was changed" in text and "--replace-identity" in text
    assert "--state-dir" in text
    # A host holding this state's own identity, or none yet, passes.
    ours = (rendered / "hosts" / "idt-cp1" / IDENTITY_PATH.lstrip("/")).read_text()
    provision_mod._check_identity(plan, sdir, rendered,
                                  _surveys({"idt-cp1": ours, "idt-w1": ""}))


def test_provision_checks_identity_before_any_phase(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "c.yaml"
    spec.write_text(SPEC)
    calls: list[str] = []

    def refuse(*args: Any) -> None:
        calls.append("identity")
        raise provision_mod.ProvisionError("refused")

    def phases(*args: Any) -> Any:
        calls.append("phases")
        raise AssertionError("no phase may run after a refusal")

    monkeypatch.setattr(provision_mod, "_check_identity", refuse)
    monkeypatch.setattr(provision_mod, "_run_phases", phases)
    monkeypatch.setattr(provision_mod, "_artifact_extravars", lambda *a: {})
    monkeypatch.setattr(provision_mod, "_survey", lambda *a: ({}, {}))
    with pytest.raises(provision_mod.ProvisionError):
        provision_mod.provision(spec, None, None, tmp_path / "st", False,
                                LineProgress(open("/dev/null", "w")))  # noqa: SIM115
    assert calls == ["identity"]
    # --replace-identity skips the check: the phases run.
    with pytest.raises(AssertionError, match="no phase may run"):
        provision_mod.provision(spec, None, None, tmp_path / "st", False,
                                LineProgress(open("/dev/null", "w")),  # noqa: SIM115
                                replace_identity=True)
    assert calls == ["identity", "phases"]
