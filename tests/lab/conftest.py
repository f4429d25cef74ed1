"""Lab fixtures shared by the end-to-end tests: the lab registry hub.test.com."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from provisioner.build.build import build_images
from provisioner.plan import build_plan
from provisioner.spec.load import load_file
from tests.fixtures import lab_registry
from tests.fixtures.built_artifacts import LAB_SOURCE


@pytest.fixture(scope="session")
def lab_registry_up() -> Iterator[lab_registry.LabRegistry]:
    """The lab registry with the example spec's images pushed; stopped at the end of the
    session only if this session started it (by its pid)."""
    plan = build_plan(load_file(lab_registry.ROOT / "inventories" / "nspawn-3cp-2w.yaml"))
    build_images(plan, LAB_SOURCE, lambda *_: None)
    already = lab_registry.running_pid() is not None
    reg = lab_registry.up()
    lab_registry.push_source(reg, LAB_SOURCE)
    yield reg
    if not already:
        lab_registry.down()
