"""Golden files: spec -> plan -> rendered tree, one folder per case (inputs in, outputs out).

Regenerate after an intended change with ``make golden`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.plan import build_plan
from provisioner.plan.show import plan_json, plan_text
from provisioner.render.material import prepare
from provisioner.render.tree import render
from provisioner.spec import load_file
from tests.golden_util import compare_dir, tree_as_files

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "spec.yaml").exists())
KEY = Path("/state/clusters/NAME/ssh/id_ed25519")


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, tmp_path: Path) -> None:
    """Plan text, plan JSON and every rendered file match the golden folder."""
    spec_path = GOLDEN / case / "spec.yaml"
    plan = build_plan(load_file(spec_path))
    material, _ = prepare(plan, tmp_path / "state", spec_path.parent)
    tree = render(plan, material, KEY)
    actual = {"plan.txt": plan_text(plan).encode(), "plan.json": plan_json(plan).encode()}
    actual.update({f"tree/{k}": v for k, v in tree_as_files(tree).items()})
    problems = compare_dir(GOLDEN / case / "expected", actual)
    assert not problems, "\n".join(problems[:40])


@pytest.mark.parametrize("case", CASES)
def test_rerender_is_byte_identical(case: str, tmp_path: Path) -> None:
    """Rendering twice from the same state gives the same bytes, secrets included."""
    spec_path = GOLDEN / case / "spec.yaml"
    plan = build_plan(load_file(spec_path))
    m1, _ = prepare(plan, tmp_path / "state", spec_path.parent)
    first = render(plan, m1, KEY)
    m2, report = prepare(build_plan(load_file(spec_path)), tmp_path / "state", spec_path.parent)
    second = render(build_plan(load_file(spec_path)), m2, KEY)
    assert not report.created and not report.reissued
    assert first == second


def test_cases_cover_every_cni() -> None:
    """At least one golden case per CNI, and the shapes the foundation issue names."""
    cnis = set()
    for case in CASES:
        plan = build_plan(load_file(GOLDEN / case / "spec.yaml"))
        cnis.add(plan.cluster.spec.network.cni)
    assert cnis == {"bridge", "flannel"}
    assert {"1cp", "3cp-2w", "5cp-dedicated-etcd"} <= set(CASES)
