"""``vislang evaluate`` and ``vislang index build`` under torchrun (2 real rank processes on gloo): each rank
predicts or embeds its part, the scores and the index equal one process's, and rank 0 alone prints and writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from ranks import start_ranks, wait_ranks

from vislang.cli import main

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"  # the session's retrieval_run is trained on it

#: Scores agree to float noise: the parts are embedded in other batches than the whole (measured: equal).
REL = 1e-6


def _vislang(argv: list[str], world: int, logs: Path) -> Path:
    """Run ``vislang ARGV`` as ``world`` rank processes (one plain process when 1); returns the logs folder."""
    wait_ranks(start_ranks([sys.executable, "-m", "vislang", *argv], world, logs), logs)
    return logs


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _same_files(a: Path, b: Path) -> None:
    assert sorted(p.relative_to(a).as_posix() for p in a.rglob("*")) == \
        sorted(p.relative_to(b).as_posix() for p in b.rglob("*"))


def _rank1_silent(logs: Path) -> None:
    assert (logs / "out1").read_text() == ""


def _train(task: str, model: str, data_root: Path, out: Path, extra: tuple[str, ...] = ()) -> Path:
    assert main(["train", task, "--data", SHAPES, "--root", str(data_root), "--model", model, "--epochs", "1",
                 "--max-steps", "2", "--batch-size", "8", "--image-size", "32", "--seed", "0", "--out", str(out),
                 *extra]) == 0
    return out


def test_sharded_retrieval_evaluation_equals_one_process(retrieval_run, data_root, tmp_path):
    argv = ["evaluate", "retrieval", "--model", str(retrieval_run), "--data", SHAPES, "--root", str(data_root),
            "--split", "test", "--batch-size", "3"]
    logs = _vislang([*argv, "--out", str(tmp_path / "two")], 2, tmp_path / "logs2")
    _vislang([*argv, "--out", str(tmp_path / "one")], 1, tmp_path / "logs1")
    two, one = _json(tmp_path / "two" / "scores.json"), _json(tmp_path / "one" / "scores.json")
    assert two["n_images"] == one["n_images"] > 2 and two["n_queries"] == one["n_queries"]
    for way in ("text_to_image", "image_to_text"):
        assert two[way] == pytest.approx(one[way], rel=REL)
    _rank1_silent(logs)
    assert "scores written to" in (logs / "out0").read_text()
    _same_files(tmp_path / "two", tmp_path / "one")


@pytest.mark.parametrize("what", ["images", "texts"])
def test_sharded_index_build_equals_one_process(what, retrieval_run, embedder, data_root, tmp_path):
    from vislang.index import Index

    source = (["--data", SHAPES, "--root", str(data_root), "--split", "test", "--batch-size", "3"] if what == "images"
              else ["--texts", str(_texts(tmp_path / "texts.txt"))])
    argv = ["index", "build", "--model", str(retrieval_run), *source]
    logs = _vislang([*argv, "--out", str(tmp_path / "two")], 2, tmp_path / "logs2")
    _vislang([*argv, "--out", str(tmp_path / "one")], 1, tmp_path / "logs1")
    two, one = Index.load(tmp_path / "two"), Index.load(tmp_path / "one")
    assert two.ids == one.ids and len(one) > 2
    queries = np.random.default_rng(0).standard_normal((4, one.dim)).astype(np.float32)
    for a, b in zip(two.search_vectors(queries, k=len(one)), one.search_vectors(queries, k=len(one))):
        assert [h.id for h in a] == [h.id for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=REL, abs=1e-6)
    _rank1_silent(logs)
    assert "added" in (logs / "out0").read_text()
    _same_files(tmp_path / "two", tmp_path / "one")


def _texts(path: Path) -> Path:
    path.write_text("".join(f"a {c} {s}\n" for c in ("red", "blue", "green") for s in ("circle", "square", "star")))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("task", ["caption", "vqa", "classify", "generate"])
def test_sharded_evaluation_equals_one_process(task, data_root, tmp_path, retrieval_run):
    if task == "generate":
        pytest.importorskip("diffusers")
        run = _train("generate", "diffusion_unet_tiny", data_root, tmp_path / "run",
                     ("--text-encoder", "scratch", "--image-size", "16"))
        extra = ["--judge", str(retrieval_run), "--max-prompts", "5", "--steps", "3", "--batch-size", "2",
                 "--compositions", "a red circle"]
    else:
        model = {"caption": "caption_lstm_tiny", "vqa": "vqa_tiny", "classify": "fusion_classifier_tiny"}[task]
        run = _train(task, model, data_root, tmp_path / "run")
        extra = ["--batch-size", "3"] if task != "caption" else ["--beam", "2"]
    argv = ["evaluate", task, "--model", str(run), "--data", SHAPES, "--root", str(data_root), "--split", "test",
            *extra]
    logs = _vislang([*argv, "--out", str(tmp_path / "two")], 2, tmp_path / "logs2")
    _vislang([*argv, "--out", str(tmp_path / "one")], 1, tmp_path / "logs1")
    _rank1_silent(logs)
    _same_files(tmp_path / "two", tmp_path / "one")
    two, one = (_json(tmp_path / d / ("metrics.json" if task == "generate" else "scores.json")) for d in ("two", "one"))
    if task == "caption":  # the same captions, so the same scores
        for system in ("model", "nearest_training_image"):
            assert _json(tmp_path / "two" / f"results_{system}.json") == \
                _json(tmp_path / "one" / f"results_{system}.json")
        for system, scores in one["corpus"].items():
            assert two["corpus"][system] == pytest.approx(scores, rel=REL), system
    elif task == "generate":  # the same samples, judged alike
        assert two["rows"].keys() == one["rows"].keys()
        for system, row in one["rows"].items():
            numbers = {k: v for k, v in row.items() if isinstance(v, float)}
            assert {k: two["rows"][system][k] for k in numbers} == pytest.approx(numbers, rel=1e-4, abs=1e-5), system
    else:
        key = "accuracy" if task == "vqa" else "systems"
        for system, scores in one[key].items():
            assert two[key][system] == pytest.approx(scores, rel=REL), system


@pytest.mark.slow
def test_sharded_judged_caption_evaluation_equals_one_process(data_root, tmp_path, retrieval_run):
    """A judge with a memory: each rank embeds its part of the images in the judge's space once, for the judged
    captions and the judge's own baseline, which equal one process's."""
    import shutil

    import vislang
    from vislang.tasks.caption_judge import CaptionJudge

    run = _train("caption", "caption_rag_tiny", data_root, tmp_path / "run", ("--set", "train.optim.freeze_encoder=true"))
    judge = shutil.copytree(retrieval_run, tmp_path / "judge")
    CaptionJudge.load(judge).build_memory(vislang.load_dataset(SHAPES, "train", root=data_root).records)
    argv = ["evaluate", "caption", "--model", str(run), "--data", SHAPES, "--root", str(data_root), "--split",
            "test", "--beam", "2", "--judge", str(judge)]
    logs = _vislang([*argv, "--out", str(tmp_path / "two")], 2, tmp_path / "logs2")
    _vislang([*argv, "--out", str(tmp_path / "one")], 1, tmp_path / "logs1")
    _rank1_silent(logs)
    _same_files(tmp_path / "two", tmp_path / "one")
    for system in ("model", "nearest_training_image", "nearest_training_image_judge"):
        assert _json(tmp_path / "two" / f"results_{system}.json") == _json(tmp_path / "one" / f"results_{system}.json")
    assert "its memory of 40 images" in _json(tmp_path / "one" / "scores.json")["judge"]
