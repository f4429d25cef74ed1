"""Shared fixtures: isolated state directories and a rendered-tree helper."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private PROVISIONER_STATE_DIR for the test."""
    root = tmp_path / "state"
    monkeypatch.setenv("PROVISIONER_STATE_DIR", str(root))
    yield root


@pytest.fixture(autouse=True)
def _nspawn_host_on_cgroup_v1(request: pytest.FixtureRequest,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Plans of nspawn specs read this host's cgroup mode; outside the lab tests it is fixed
    to v1 (this lab's hosts) so golden files do not depend on the machine running them."""
    if request.node.get_closest_marker("lab") is None:
        monkeypatch.setattr("provisioner.providers.nspawn.cgroups.host_cgroup_v1", lambda: True)
