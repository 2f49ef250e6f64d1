"""`vislang models --ensemble` on real trained runs: the folder's similarities are the mean of the members',
it loads, evaluates, explains and exports like one retrieval model, and bad members are refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import safetensors
import torch

import vislang
from vislang.cli import main

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"
TEXTS = ["a red circle", "a small blue square at the top", "green", "purple triangle"]


@pytest.fixture(scope="module")
def locked_runs(tiny_bert_dir: Path, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny runs (seeds 0 and 1) with the same locked Hugging Face text tower, trained like the recipe
    against the bank of every training caption (which validating the ensemble must not need)."""
    runs = []
    for seed in (0, 1):
        out = tmp_path_factory.mktemp("locked") / f"run{seed}"
        assert main(["train", "retrieval", "--data", SHAPES, "--root", str(data_root), "--model",
                     "dual_encoder_hf_tiny", "--text-encoder", str(tiny_bert_dir), "--batch-size", "8",
                     "--image-size", "32", "--max-steps", "2", "--seed", str(seed), "--set", "task.text_bank=true",
                     "--out", str(out)]) == 0
        runs.append(out)
    return runs


@pytest.fixture(scope="module")
def ensemble(locked_runs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ens") / "ens"
    assert main(["models", "--ensemble", *map(str, locked_runs), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def images(data_root: Path, locked_runs: list[Path]) -> list[Path]:
    found = sorted(p for p in data_root.rglob("*.png") if "shapes" in str(p))
    assert len(found) >= 12
    return found[:12]


def _keys(folder: Path) -> list[str]:
    with safetensors.safe_open(str(folder / "model.safetensors"), "pt") as f:
        return list(f.keys())


def test_similarities_are_the_mean_of_the_members(ensemble: Path, locked_runs: list[Path], images: list[Path]):
    config = json.loads((ensemble / "config.json").read_text())
    best = [r / "checkpoints" / "best" for r in locked_runs]
    assert config["model"] == "dual_encoder_ensemble" and config["model_config"]["share_text"] is True
    assert [m["weights_sha256"] for m in config["members"]] == [
        json.loads((b / "config.json").read_text())["weights_sha256"] for b in best]
    member_keys = _keys(best[0])
    tower = [k for k in member_keys if k.startswith("text_encoder.")]
    assert tower and len(_keys(ensemble)) == 2 * len(member_keys) - len(tower)     # the locked tower once
    assert "## Training data (first member)" in (ensemble / "README.md").read_text()
    assert config["monitor"] == "rsum" and config["best_metric"] == config["val_metrics"]["rsum"]
    assert f"| ensemble | | `dual_encoder_ensemble` | rsum {config['best_metric']:.4f} |" in (
        ensemble / "README.md").read_text()
    ens, a, b = (vislang.load(p) for p in (ensemble, *locked_runs))
    assert ens.dim == 2 * a.dim and ens.model_id.startswith("dual_encoder_ensemble-")
    ei, et = ens.embed_images(images), ens.embed_texts(TEXTS)                       # (12, 2E), (4, 2E)
    want = (a.embed_texts(TEXTS) @ a.embed_images(images).T + b.embed_texts(TEXTS) @ b.embed_images(images).T) / 2
    assert torch.allclose(et @ ei.T, want, atol=1e-5)
    maps = ens.match_maps(images[:3], et[0])                                         # (3, h, w)
    assert torch.allclose(maps.mean((1, 2)), ei[:3] @ et[0], atol=1e-5)


def test_evaluate_and_search_like_one_model(ensemble: Path, data_root: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture):
    capsys.readouterr()
    assert main(["evaluate", "retrieval", "--model", str(ensemble), "--data", SHAPES, "--root", str(data_root),
                 "--split", "val", "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "R@1" in out and "dual_encoder_ensemble-" in out
    scores = json.loads((tmp_path / "ev" / "scores.json").read_text())
    assert 0.0 <= scores["text_to_image"]["R@1"] <= 1.0


def test_scratch_text_towers_stay_one_per_member(retrieval_run: Path, other_run: Path, tmp_path: Path,
                                                 images: list[Path]):
    out = tmp_path / "ens"
    assert main(["models", "--ensemble", str(retrieval_run), str(other_run), "--out", str(out),
                 "--no-validate"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["share_text"] is False and "best_metric" not in config
    assert "not validated" in (out / "README.md").read_text()
    assert any(k.startswith("members.1.text_encoder.") for k in _keys(out))
    ens, a, b = (vislang.load(p) for p in (out, retrieval_run, other_run))
    ei, et = ens.embed_images(images), ens.embed_texts(TEXTS)
    want = (a.embed_texts(TEXTS) @ a.embed_images(images).T + b.embed_texts(TEXTS) @ b.embed_images(images).T) / 2
    assert torch.allclose(et @ ei.T, want, atol=1e-5)


def test_a_model_twice_validates_as_that_model(retrieval_run: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture):
    """Two copies of one model score exactly as it did: the ensemble is validated on the first run's
    validation data with the metrics its loop used for its best checkpoint."""
    copy, out = tmp_path / "copy", tmp_path / "ens"
    shutil.copytree(retrieval_run, copy)
    capsys.readouterr()
    assert main(["models", "--ensemble", str(retrieval_run), str(copy), "--out", str(out)]) == 0
    best = json.loads((retrieval_run / "checkpoints" / "best" / "config.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["monitor"] == best["monitor"] == "rsum"
    assert set(config["val_metrics"]) == set(best["val_metrics"])
    for name, value in best["val_metrics"].items():
        assert config["val_metrics"][name] == pytest.approx(value, abs=1e-6), name
    assert f"validation rsum: {best['best_metric']:.4f} (members: {best['best_metric']:.4f}, " in (
        capsys.readouterr().out)
    # a checkpoint folder first is validated on its run's data; a model folder outside a run is not validated
    assert main(["models", "--ensemble", str(copy / "checkpoints" / "last"), str(retrieval_run), "--out",
                 str(tmp_path / "ens2")]) == 0
    assert f"validating the ensemble on {copy}'s validation data" in capsys.readouterr().out
    assert json.loads((tmp_path / "ens2" / "config.json").read_text())["monitor"] == "rsum"
    shutil.copytree(copy / "checkpoints" / "best", tmp_path / "folder")
    assert main(["models", "--ensemble", str(tmp_path / "folder"), str(retrieval_run), "--out",
                 str(tmp_path / "ens3")]) == 0
    assert "best_metric" not in json.loads((tmp_path / "ens3" / "config.json").read_text())


def test_an_ensemble_exports_to_onnx(ensemble: Path, images: list[Path], tmp_path: Path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    assert main(["export", str(ensemble), "-o", str(tmp_path / "onnx")]) == 0
    eager, exported = vislang.load(ensemble), vislang.load(tmp_path / "onnx", runtime="onnx")
    assert exported.model_id == eager.model_id
    assert (eager.embed_images(images) - exported.embed_images(images)).abs().max() <= 1e-4
    assert (eager.embed_texts(TEXTS) - exported.embed_texts(TEXTS)).abs().max() <= 1e-4


def test_bad_members_are_refused_in_one_line(retrieval_run: Path, locked_runs: list[Path], ensemble: Path,
                                             tmp_path: Path, capsys: pytest.CaptureFixture):
    resized = tmp_path / "resized"
    shutil.copytree(retrieval_run / "checkpoints" / "best", resized)
    pre = json.loads((resized / "preprocessor.json").read_text())
    (resized / "preprocessor.json").write_text(json.dumps({**pre, "image_size": 24}))
    cases = [
        ([str(retrieval_run)], "an ensemble needs at least two retrieval runs, got 1"),
        ([str(retrieval_run), str(retrieval_run / "checkpoints" / "best")], "the same model as"),
        ([str(retrieval_run), str(resized)], "its image preprocessing"),
        ([str(retrieval_run), str(locked_runs[0])], "its tokenizer ('text_encoder') differs"),
        ([str(ensemble), str(locked_runs[0])], "is not a single dual encoder"),
        ([str(retrieval_run), str(tmp_path / "missing")], "missing"),
    ]
    for runs, message in cases:
        capsys.readouterr()
        assert main(["models", "--ensemble", *runs, "--out", str(tmp_path / "out")]) == 2, message
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]   # (a Hugging Face tower
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err  # prints its loading)
    assert main(["models", "--ensemble", str(retrieval_run), str(retrieval_run)]) == 2
    assert "--ensemble needs --out DIR" in capsys.readouterr().err
    assert main(["models", "--out", str(tmp_path / "out")]) == 2
    assert "--out is the folder --ensemble writes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
