"""What `vislang export` and the exported runtimes say when something is wrong: one line each, naming the
module that does not export, the bad format, the folder that is not a model, the missing ONNX Runtime."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import vislang  # noqa: E402
from vislang.cli import main  # noqa: E402
from vislang.errors import VislangError  # noqa: E402
from vislang.export import export_folder, export_model  # noqa: E402
from vislang.models.encoders import ImageFeatures  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")


class DataDependentGate(nn.Module):
    """Branches on a tensor's value: the exporters cannot trace it."""

    def forward(self, x: Tensor) -> Tensor:
        if x.mean() > 0:
            return x * 2
        return x


class GatedEncoder(nn.Module):
    """A tiny image encoder with an unexportable layer inside."""

    out_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.gate = DataDependentGate()

    def forward(self, images: Tensor) -> ImageFeatures:
        grid = self.gate(self.conv(images)).flatten(2).transpose(1, 2)            # (B, N, 4)
        return ImageFeatures(grid, grid.mean(1), (8, 8))


@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
def test_unexportable_layer_is_named(tmp_path: Path, fmt: str):
    with pytest.raises(VislangError) as err:
        export_model(GatedEncoder(), tmp_path, fmt=fmt, model_name="gated_tiny")
    message = str(err.value)
    assert "\n" not in message and len(message) < 500
    assert message.startswith(f"gated_tiny: the image graph does not export ({fmt}): gate (DataDependentGate) fails:")


def test_bad_inputs_one_line(tmp_path: Path, retrieval_run: Path, capsys: pytest.CaptureFixture):
    assert main(["export", str(retrieval_run), "--format", "tflite", "-o", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown --format 'tflite'; use one of onnx, torch-export"
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path}: not a vislang run") and "\n" not in err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["export", str(retrieval_run), "-o", str(tmp_path / "busy")]) == 2
    assert "is not an empty folder or an earlier export" in capsys.readouterr().err
    with pytest.raises(VislangError, match="not an exported model folder"):
        vislang.load(retrieval_run, runtime="onnx")
    with pytest.raises(VislangError, match="unknown runtime 'tensorrt'"):
        vislang.load(retrieval_run, runtime="tensorrt")


def test_onnx_runtime_missing_gives_the_install_hint(tmp_path: Path, retrieval_run: Path, retrieval_onnx: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    out = retrieval_onnx
    with pytest.raises(VislangError, match="exported as 'onnx', not 'torch-export'"):
        vislang.load(out, runtime="torch-export")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)                 # as if not installed
    with pytest.raises(VislangError, match=r"pip install 'vislang\[onnx\]'"):
        vislang.load(out, runtime="onnx")
    assert main(["export", str(retrieval_run), "-o", str(tmp_path / "again")]) == 2     # the CLI says it too
    assert not (tmp_path / "again").exists()


def test_serve_runtime_onnx(retrieval_run: Path, retrieval_onnx: Path):
    pytest.importorskip("fastapi")
    from vislang.inference.runtime import ExportedModel
    from vislang.serve import load_service

    out = retrieval_onnx
    service = load_service([out], runtime="onnx")
    (served,) = service.models.values()
    assert served.task == "retrieval" and isinstance(served.predictor.model, ExportedModel)
    from fastapi.testclient import TestClient

    from vislang.serve import ServeConfig, create_app

    eager = vislang.load(retrieval_run).embed_texts(["a red circle"])[0]                  # (E,)
    with TestClient(create_app(service, ServeConfig(access_log=False))) as client:
        r = client.post("/v1/embed", json={"text": "a red circle"})
    assert r.status_code == 200, r.text
    got = r.json()["embedding"]
    assert len(got) == len(eager) and max(abs(a - float(b)) for a, b in zip(got, eager)) <= 1e-4
    with pytest.raises(VislangError, match="match maps need the eager model"):        # said, not a trace
        served.predictor.match_maps(torch.zeros(1, 3, 32, 32), eager)
    from vislang.cli import build_parser

    args = build_parser().parse_args(["serve", str(out), "--runtime", "onnx"])
    assert args.runtime == "onnx"


def test_failed_reexport_keeps_the_earlier_export(tmp_path: Path, retrieval_run: Path, retrieval_onnx: Path):
    import shutil

    out = tmp_path / "exported"
    shutil.copytree(retrieval_onnx, out)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    with pytest.raises(VislangError, match="differs from the eager model"):        # no graph can meet a negative tolerance
        export_folder(retrieval_run, out, tolerance=-1.0)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["exported"]         # no temporary folder left behind
    assert vislang.load(out, runtime="onnx").embed_texts(["a red circle"]).shape[0] == 1
