"""The session's retrieval run exported once to ONNX (and moved to another folder) for the export tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from export_helpers import export_moved


@pytest.fixture(scope="session")
def retrieval_onnx(retrieval_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's retrieval run, exported to ONNX and moved."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    return export_moved(retrieval_run, tmp_path_factory.mktemp("retrieval-onnx"))
