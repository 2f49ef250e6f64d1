"""Helpers of the export tests."""

from __future__ import annotations

import shutil
from pathlib import Path


def export_moved(run: Path, tmp: Path, fmt: str = "onnx") -> Path:
    """``vislang export`` of ``run`` into ``tmp``, then moved to another folder: nothing may point back."""
    from vislang.cli import main

    first = tmp / f"exported-{fmt}"
    assert main(["export", str(run), "--format", fmt, "-o", str(first)]) == 0
    moved = tmp / f"moved-{fmt}"
    shutil.move(str(first), str(moved))
    return moved
