"""Image + text classification end to end in-process on real files: train a tiny classifier on the shapes
scene classes, evaluate it (accuracy, macro-F1, confusion PNG, baselines), classify an image file with a text;
label-word masking and text fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import vislang
from vislang.cli import main
from vislang.data.records import Record
from vislang.losses import ClassificationLoss
from vislang.models import create_model
from vislang.tasks.classify import ClassSpace, label_words, mask_words, prepare_records, record_text

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"


@pytest.fixture(scope="module")
def run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("classify-run") / "run"
    assert main(["train", "classify", "--data", SHAPES, "--root", str(data_root), "--model", "fusion_classifier_tiny",
                 "--fusion", "attention", "--batch-size", "8", "--image-size", "32", "--max-steps", "3",
                 "--out", str(out)]) == 0
    return out


def test_train_writes_classes_and_masks_label_words(run: Path):
    best = run / "checkpoints" / "best"
    classes = json.loads((best / "classes.json").read_text())
    assert classes["classes"] == ["circle", "diamond", "square", "triangle"]
    assert {"circle", "circles", "square"} <= set(classes["masked"])
    vocab = json.loads((best / "vocab.json").read_text())["itos"]
    assert not {"circle", "square", "triangle", "diamond"} & set(vocab)      # never seen in training texts
    assert {"red", "large", "small"} <= set(vocab)
    val = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"val"' in x][-1]
    assert {"accuracy", "macro_f1"} <= set(val)


def test_evaluate_writes_report_confusion_png_and_baselines(run: Path, data_root: Path, tmp_path: Path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "classify", "--model", str(run), "--data", SHAPES, "--root", str(data_root),
                 "--split", "test", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "text-only (image blanked)" in printed and "majority class" in printed
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["systems"]) == {"model", "text-only (image blanked)", "image-only (text blanked)",
                                      "majority class"}
    assert scores["n_samples"] == 8 and len(scores["model"]["confusion"]) == 4
    assert sum(map(sum, scores["model"]["confusion"])) == 8
    assert Image.open(out / "confusion.png").size[0] > 100


def test_classify_an_image_file_with_text(run: Path, tmp_path: Path, draw_pictures, capsys):
    [path] = draw_pictures(tmp_path, ["red"])
    assert main(["classify", str(path), "--text", "a large red circle", "--model", str(run), "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["label"] in {"circle", "diamond", "square", "triangle"} and len(out["top"]) == 4
    assert abs(sum(t["p"] for t in out["top"]) - 1) < 1e-3
    assert "'a large red'" in captured.err                               # the class name was removed
    assert main(["classify", str(path), "--model", str(run)]) == 0       # no text at all
    top, seen = vislang.load(run).classify(path, "a large red circle", k=4)      # the predictor, as the CLI
    assert seen == "a large red" and top[0] == (out["label"], pytest.approx(out["confidence"], abs=1e-4))
    assert main(["classify", str(path), "--model", str(tmp_path)]) == 2
    assert "not a vislang run" in capsys.readouterr().err


def test_masking_and_text_fields():
    words = label_words(["smileys-emotion", "people-body", "flags"])
    assert {"smileys", "emotion", "people", "bodys", "flags", "smileys-emotion"} <= words
    assert mask_words("Smileys, happy body-shape, face, flags!", words) == "happy face"
    emoji = Record("e", "x.png", ["grinning face"], "smileys-emotion",
                   meta={"tags": ["face", "smiley", "grin"], "subgroup": "face-smiling"})
    assert record_text(emoji, "auto") == "face, smiley, grin" and record_text(emoji, "caption") == "grinning face"
    space = ClassSpace(["face-smiling", "face-affection"], label_field="subgroup", text_field="auto",
                       masked=sorted(label_words(["face-smiling", "face-affection"])))
    [rec] = prepare_records([emoji, Record("n", "y.png")], space)
    assert rec.label == "face-smiling" and rec.captions == ["smiley grin"]


def test_classification_loss_and_tiny_model_train():
    torch.manual_seed(0)
    model = create_model("fusion_classifier_tiny", num_classes=3, text_encoder_kwargs={"vocab_size": 12})
    images, tokens, mask = torch.randn(6, 3, 32, 32), torch.randint(4, 12, (6, 5)), torch.ones(6, 5, dtype=torch.long)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        out = ClassificationLoss()(model(images, tokens, mask).logits, labels)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.5 * losses[0] and 0.0 <= float(out["accuracy"]) <= 1.0


def test_one_class_is_a_clear_error(data_root: Path, tmp_path: Path, capsys):
    assert main(["train", "classify", "--data", SHAPES, "--root", str(data_root), "--model", "fusion_classifier_tiny",
                 "--set", "task.label_field=nothing", "--max-steps", "1", "--out", str(tmp_path / "r")]) == 2
    assert "needs at least two" in capsys.readouterr().err
