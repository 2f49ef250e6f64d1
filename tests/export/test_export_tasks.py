"""Exported trained models give the same results as the eager ones, task by task, on real images: the same
caption from the same beam search, the same top-10 ranking, the same answer and class, the same generated
images and region tags; from a folder copied elsewhere (the export is usable on its own)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from export_helpers import export_moved  # noqa: E402

import vislang  # noqa: E402
from vislang.cli import main  # noqa: E402
from vislang.inference.runtime import ExportedModel  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"
TOLERANCE = 1e-4  # fp32, the default of `vislang export`


def _train(data_root: Path, out: Path, *args: str) -> Path:
    assert main(["train", *args, "--data", SHAPES, "--root", str(data_root), "--batch-size", "8",
                 "--image-size", "32", "--max-steps", "3", "--seed", "0", "--out", str(out)]) == 0
    return out


def _export(run: Path, tmp: Path, fmt: str = "onnx") -> Path:
    return export_moved(run, tmp, fmt)


@pytest.fixture(scope="module")
def images(data_root: Path, retrieval_run: Path) -> list[Path]:
    """The real shapes images (the retrieval run built the data set)."""
    found = sorted(p for p in data_root.rglob("*.png") if "shapes" in str(p))
    assert len(found) >= 40
    return found[:40]


def test_exported_folder_is_complete(retrieval_onnx: Path):
    out = retrieval_onnx
    names = {p.name for p in out.iterdir()}
    assert {"export.json", "config.json", "preprocessor.json", "README.md", "image.onnx", "text.onnx"} <= names
    assert "model.safetensors" not in names
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["format"] == "onnx" and manifest["task"] == "retrieval" and manifest["opset"] >= 18
    text = manifest["graphs"]["text"]
    assert text["inputs"] == ["input_ids", "attention_mask"]
    assert text["dynamic_axes"] == {"input_ids": {"0": "batch", "1": "seq"}, "attention_mask": {"0": "batch", "1": "seq"}}
    assert all(0 <= g["max_abs_diff"] <= TOLERANCE for g in manifest["graphs"].values())
    assert "## Exported (onnx)" in (out / "README.md").read_text()


@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
def test_retrieval_same_top10_ranking(retrieval_run: Path, retrieval_onnx: Path, images: list[Path], tmp_path: Path,
                                      fmt: str):
    eager = vislang.load(retrieval_run)
    folder = retrieval_onnx if fmt == "onnx" else _export(retrieval_run, tmp_path, fmt)
    exported = vislang.load(folder, runtime=fmt)
    assert isinstance(exported.model, ExportedModel) and exported.model_id == eager.model_id
    texts = ["a red circle", "a small blue square at the top", "green", "a large yellow diamond in the center "
             "of the picture", "purple triangle"]
    a_img, b_img = eager.embed_images(images), exported.embed_images(images)             # (40, E)
    a_txt, b_txt = eager.embed_texts(texts), exported.embed_texts(texts)                 # (5, E)
    assert (a_img - b_img).abs().max() <= TOLERANCE and (a_txt - b_txt).abs().max() <= TOLERANCE
    top_a = (a_txt @ a_img.T).topk(10, dim=1).indices
    top_b = (b_txt @ b_img.T).topk(10, dim=1).indices
    assert torch.equal(top_a, top_b)


@pytest.fixture(scope="module")
def caption_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(data_root, tmp_path_factory.mktemp("cap") / "run", "caption", "--model", "caption_lstm_tiny",
                  "--set", "task.max_len=12")


def test_caption_same_beam_search(caption_run: Path, images: list[Path], tmp_path: Path):
    eager = vislang.load(caption_run)
    exported = vislang.load(_export(caption_run, tmp_path), runtime="onnx")
    for beam in (1, 3):
        a, b = eager.caption(images[:12], beam=beam), exported.caption(images[:12], beam=beam)
        assert [c.text for c in a] == [c.text for c in b]
        assert max(abs(x.score - y.score) for x, y in zip(a, b)) <= 1e-3        # sums of up to 12 log-probs
        assert max(float((x.attention - y.attention).abs().max()) for x, y in zip(a, b)) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("model", ["caption_transformer_tiny", "caption_rag_tiny"])
def test_other_captioners_same_captions(model: str, data_root: Path, images: list[Path], tmp_path: Path):
    """The Transformer's growing prefix (from none), and the retrieval-augmented captioner's reranking of its
    neighbours' captions (teacher-forced through the step graph)."""
    frozen = ["--set", "train.optim.freeze_encoder=true"] if model == "caption_rag_tiny" else []  # its memory's keys
    run = _train(data_root, tmp_path / "run", "caption", "--model", model, "--set", "task.max_len=12", *frozen)
    eager = vislang.load(run)
    exported = vislang.load(_export(run, tmp_path), runtime="onnx")
    for beam in (1, 3):
        a, b = eager.caption(images[:8], beam=beam), exported.caption(images[:8], beam=beam)
        assert [c.text for c in a] == [c.text for c in b]
        assert max(abs(x.score - y.score) for x, y in zip(a, b)) <= 1e-3


@pytest.fixture(scope="module")
def vqa_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(data_root, tmp_path_factory.mktemp("vqa") / "run", "vqa", "--model", "vqa_tiny", "--fusion",
                  "attention", "--set", "task.max_len=16")


def test_vqa_same_answers(vqa_run: Path, images: list[Path], tmp_path: Path):
    eager = vislang.load(vqa_run)
    exported = vislang.load(_export(vqa_run, tmp_path), runtime="onnx")
    questions = ["what color is the circle?", "what shape is at the top left?", "how many objects are there?",
                 "is there a red square?", "what color is the large object in the center of the picture?"]
    for image in images[:4]:
        a, b = eager.ask(image, questions), exported.ask(image, questions)
        assert [x.answer for x in a] == [y.answer for y in b]
        assert [[t for t, _ in x.top] for x in a] == [[t for t, _ in y.top] for y in b]
        assert max(abs(x.confidence - y.confidence) for x, y in zip(a, b)) <= TOLERANCE
    many_a = eager.ask_many(images[:5], questions)
    many_b = exported.ask_many(images[:5], questions)
    assert [x.answer for x in many_a] == [y.answer for y in many_b]


@pytest.fixture(scope="module")
def classify_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(data_root, tmp_path_factory.mktemp("cls") / "run", "classify", "--model", "fusion_classifier_tiny")


def test_classify_same_class(classify_run: Path, images: list[Path], tmp_path: Path):
    eager = vislang.load(classify_run)
    exported = vislang.load(_export(classify_run, tmp_path), runtime="onnx")
    texts = ["happy", "a red thing", "", "small and blue", "top left corner"] * 2
    a = eager.classify_many(images[:10], texts)
    b = exported.classify_many(images[:10], texts)
    assert [r[0][0][0] for r in a] == [r[0][0][0] for r in b]
    assert max(abs(p - q) for (ra, _), (rb, _) in zip(a, b) for (_, p), (_, q) in zip(ra, rb)) <= TOLERANCE
    why_a, why_b = eager.explain(images[0], "happy"), exported.explain(images[0], "happy")
    assert why_a.label == why_b.label and why_a.method == why_b.method
    assert float((why_a.attention - why_b.attention).abs().max()) <= 1e-3


@pytest.mark.slow
def test_generate_same_images(generate_run: Path, tmp_path: Path):
    eager = vislang.load(generate_run)
    exported = vislang.load(_export(generate_run, tmp_path), runtime="onnx")
    kw = {"n": 2, "steps": 5, "seed": 3, "guidance": 3.0}
    a = eager.generate_tensor(["a red circle", "a blue square at the top"], **kw)
    b = exported.generate_tensor(["a red circle", "a blue square at the top"], **kw)
    assert a.shape == b.shape == (4, 3, 16, 16)
    assert float((a - b).abs().max()) <= 1e-3                     # 5 sampler steps of 1e-6 differences


@pytest.mark.slow
def test_regions_same_tags(data_root: Path, images: list[Path], tmp_path: Path):
    run = _train(data_root, tmp_path / "regions", "regions", "--model", "region_tagger_tiny")
    eager = vislang.load(run)
    exported = vislang.load(_export(run, tmp_path), runtime="onnx")
    for x, y in zip(eager.tag(images[:8]), exported.tag(images[:8])):
        assert x.grid_hw == y.grid_hw
        assert all(torch.equal(x.classes[k], y.classes[k]) for k in x.classes)


@pytest.mark.slow
def test_hugging_face_text_tower_carries_its_tokenizer(tiny_bert_dir: Path, data_root: Path, images: list[Path],
                                                        tmp_path: Path):
    run = tmp_path / "hf"
    assert main(["train", "retrieval", "--data", SHAPES, "--root", str(data_root), "--model", "dual_encoder_tiny",
                 "--text-encoder", str(tiny_bert_dir), "--batch-size", "8", "--image-size", "32", "--max-steps", "2",
                 "--set", "task.max_len=24", "--out", str(run)]) == 0
    out = _export(run, tmp_path)
    exported = vislang.load(out, runtime="onnx")
    assert (out / "tokenizer.json").is_file() and Path(exported.tokenizer.path).parent == out
    eager = vislang.load(run)
    texts = ["a red circle", "a small blue square at the top", "green triangle"]
    top_a = (eager.embed_texts(texts) @ eager.embed_images(images).T).topk(10, dim=1).indices
    top_b = (exported.embed_texts(texts) @ exported.embed_images(images).T).topk(10, dim=1).indices
    assert torch.equal(top_a, top_b)
