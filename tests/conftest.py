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
