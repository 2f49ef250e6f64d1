"""Shared fixtures: one data root per test session, reused across runs when ``VISLANG_DATA`` is set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("VISLANG_QUIET", "1")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data root for built datasets: ``$VISLANG_DATA`` when set (fast re-runs), else a session temp dir."""
    env = os.environ.get("VISLANG_DATA")
    root = Path(env) if env else tmp_path_factory.mktemp("vislang-data")
    root.mkdir(parents=True, exist_ok=True)
    return root
