"""VQA end to end in-process on real files: train a tiny model, evaluate it beside its baselines, ask questions
about image files (bad questions included), read VQA v2 JSON; soft targets, the loss and modality blanking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import vislang
from vislang.cli import main
from vislang.data.records import QA
from vislang.inference.vqa import VQAPredictor
from vislang.losses import VQALoss
from vislang.models import create_model
from vislang.tasks.common import blank_inputs, modality_dropout_masks
from vislang.tasks.vqa import AnswerVocab

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"
TRAIN = ["train", "vqa", "--data", SHAPES, "--model", "vqa_tiny", "--batch-size", "16", "--image-size", "32"]


@pytest.fixture(scope="module")
def run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vqa-run") / "run"
    assert main([*TRAIN, "--root", str(data_root), "--fusion", "attention", "--max-steps", "3",
                 "--set", "task.max_len=16", "--out", str(out)]) == 0
    return out


def test_train_writes_a_complete_run(run: Path):
    best = run / "checkpoints" / "best"
    for name in ("model.safetensors", "config.json", "preprocessor.json", "answers.json", "vocab.json"):
        assert (best / name).is_file(), name
    spec = json.loads((best / "config.json").read_text())
    assert spec["task"] == "vqa" and spec["model_config"]["fusion"] == "attention" and spec["max_len"] == 16
    answers = json.loads((best / "answers.json").read_text())
    assert {"yes", "no", "red", "circle", "1"} <= set(answers["answers"])
    assert spec["model_config"]["num_classes"] == len(answers["answers"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    val = [e for e in log if e["kind"] == "val"][-1]
    assert {"accuracy", "acc_color", "acc_shape", "acc_count", "acc_exists", "acc_relation", "acc_comparison"} <= set(val)
    assert 0.0 <= val["accuracy"] <= 1.0


def test_evaluate_reports_question_only_and_image_only_baselines(run: Path, data_root: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture):
    out = tmp_path / "eval"
    assert main(["evaluate", "vqa", "--model", str(run), "--data", SHAPES, "--root", str(data_root),
                 "--split", "test", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "question-only (image blanked)" in printed and "image-only (question blanked)" in printed
    scores = json.loads((out / "scores.json").read_text())
    rows = scores["accuracy"]
    assert set(rows) == {"model", "question-only (image blanked)", "image-only (question blanked)",
                         "question prior (train majority)"}
    assert {"overall", "color", "count", "relation"} <= set(rows["model"])
    assert all(0.0 <= v <= 1.0 for r in rows.values() for v in r.values())
    assert scores["n_questions"] > 50


def test_ask_answers_about_a_real_image_file(run: Path, tmp_path: Path, draw_pictures, capsys):
    [path] = draw_pictures(tmp_path, ["red"])
    att = tmp_path / "att.png"
    assert main(["ask", str(path), "What color is the circle?", "How many objects are there?", "--model", str(run),
                 "--json", "--attention", str(att), "--top-k", "3"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    answers = set(json.loads((run / "checkpoints" / "best" / "answers.json").read_text())["answers"])
    assert [x["question"] for x in lines] == ["What color is the circle?", "How many objects are there?"]
    for x in lines:
        assert x["answer"] in answers and len(x["top"]) == 3 and 0.0 <= x["confidence"] <= 1.0
        assert x["answer"] == x["top"][0]["answer"] and x["top"][0]["p"] >= x["top"][-1]["p"]
    for k in (0, 1):
        assert Image.open(tmp_path / f"att_{k}.png").size[0] > 100
    assert main(["ask", str(path), "Is there a red circle?", "--model", str(run)]) == 0
    assert "Is there a red circle?\t" in capsys.readouterr().out


def test_bad_questions(run: Path, tmp_path: Path, draw_pictures, capsys):
    [path] = draw_pictures(tmp_path, ["blue"])
    for empty in ("", "   ", "?!"):
        assert main(["ask", str(path), empty, "--model", str(run)]) == 2
        assert "is empty" in capsys.readouterr().err
    long = "is the red circle " * 30 + "left of the square?"
    assert main(["ask", str(path), long, "--model", str(run), "--json"]) == 0
    captured = capsys.readouterr()
    assert "truncated to its first 14 tokens" in captured.err and json.loads(captured.out)["answer"]
    assert main(["ask", str(path), "what colour is the zorblax?", "--model", str(run), "--json"]) == 0
    captured = capsys.readouterr()
    assert "unknown words read as <unk>: colour, zorblax" in captured.err
    assert "unknown words" in json.loads(captured.out)["notes"][0]
    assert main(["ask", str(tmp_path / "missing.png"), "what color?", "--model", str(run)]) == 2


def test_attention_map_needs_an_attending_fusion(data_root: Path, tmp_path: Path, draw_pictures, capsys):
    out = tmp_path / "late"
    assert main([*TRAIN, "--root", str(data_root), "--fusion", "late-concat", "--max-steps", "1",
                 "--set", "data.max_val=2", "--out", str(out)]) == 0
    [path] = draw_pictures(tmp_path, ["green"])
    assert main(["ask", str(path), "what shape is it?", "--model", str(out)]) == 0
    capsys.readouterr()
    assert main(["ask", str(path), "what shape is it?", "--model", str(out), "--attention", str(tmp_path / "a.png")]) == 2
    assert "no attention over the image regions" in capsys.readouterr().err


def test_not_a_vqa_run_is_a_clear_error(tmp_path: Path, retrieval_run: Path, draw_pictures, capsys):
    [path] = draw_pictures(tmp_path, ["red"])
    assert main(["ask", str(path), "what color?", "--model", str(retrieval_run)]) == 2
    assert "not a vqa model" in capsys.readouterr().err


def test_train_on_vqa_v2_json(tmp_path: Path, draw_pictures):
    names = ["red", "blue", "green", "yellow"]
    pics = draw_pictures(tmp_path / "png", names)
    questions, annotations = [], []
    for i, (name, p) in enumerate(zip(names, pics)):
        Image.open(p).convert("RGB").save(tmp_path / f"{i}.jpg")
        for k, (q, a) in enumerate([("what color is it?", name), ("is it red?", "yes" if name == "red" else "no")]):
            qid = 10 * i + k
            questions.append({"image_id": i, "question_id": qid, "question": q})
            humans = [a] * 7 + ["maybe"] * 3
            annotations.append({"question_id": qid, "image_id": i, "question_type": q.split()[0],
                                "answer_type": "other", "answers": [{"answer": h} for h in humans]})
    qfile = tmp_path / "v2_OpenEnded_mscoco_train2014_questions.json"
    qfile.write_text(json.dumps({"questions": questions}))
    (tmp_path / "v2_mscoco_train2014_annotations.json").write_text(json.dumps({"annotations": annotations}))
    out = tmp_path / "run"
    assert main(["train", "vqa", "--data", str(qfile), "--model", "vqa_tiny", "--batch-size", "4", "--image-size",
                 "32", "--max-steps", "2", "--set", "data.val_split=", "--out", str(out)]) == 0
    answers = json.loads((out / "checkpoints" / "last" / "answers.json").read_text())["answers"]
    assert set(answers) == {*names, "yes", "no", "maybe"}
    ev_out = tmp_path / "ev"
    assert main(["evaluate", "vqa", "--model", str(out), "--data", str(qfile), "--out", str(ev_out)]) == 0
    assert json.loads((ev_out / "scores.json").read_text())["n_questions"] == 8


def test_answer_vocab_soft_targets_and_prior():
    qs = [QA("What color is it?", ["red"] * 2 + ["blue"] * 8, "color"), QA("what color is it", ["red"], "color"),
          QA("Is it big?", ["yes"], "exists")]
    vocab = AnswerVocab.build(qs)
    assert vocab.answers[0] == "blue" and set(vocab.answers) == {"red", "blue", "yes"}
    t = vocab.targets([q.answers for q in qs])
    assert t[0, vocab.index["blue"]] == 1.0 and t[0, vocab.index["red"]] == pytest.approx(2 / 3)
    assert t[1, vocab.index["red"]] == 1.0 and t[1].sum() == 1.0 and t[2, vocab.index["yes"]] == 1.0
    assert vocab.prior_answer(QA("WHAT color is it ?", ["x"])) == "blue"          # same question, normalised
    assert vocab.prior_answer(QA("new question?", ["x"], "exists")) == "yes"      # by question type
    assert vocab.prior_answer(QA("new question?", ["x"], "other")) == "blue"      # overall


def test_vqa_loss_is_soft_target_bce():
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.5, 0.5, -3.0]])
    targets = torch.tensor([[1.0, 0.0, 0.3], [0.0, 1.0, 0.0]])
    out = VQALoss()(logits, targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / 2
    torch.testing.assert_close(out["loss"], expected)
    assert out["accuracy"] == pytest.approx((1.0 + 0.0) / 2)          # row 2's top answer ties: index 0


def test_blanking_and_modality_dropout():
    images = torch.ones(3, 3, 4, 4)
    tokens = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0], [1, 8, 9, 2]])
    lengths = torch.tensor([4, 3, 4])
    bi, bt = torch.tensor([True, False, False]), torch.tensor([False, True, False])
    im, tok, ln = blank_inputs(images, tokens, lengths, blank_image=bi, blank_text=bt)
    assert im[0].abs().sum() == 0 and im[1:].eq(1).all() and images.eq(1).all()
    assert tok[1].tolist() == [1, 2, 0, 0] and ln.tolist() == [4, 2, 4] and tok[0].equal(tokens[0])
    torch.manual_seed(0)
    mi, mt = modality_dropout_masks(10000, 0.1, "cpu")
    assert not (mi & mt).any() and 0.08 < mi.float().mean() < 0.12 and 0.08 < mt.float().mean() < 0.12
    assert modality_dropout_masks(4, 0.0, "cpu") == (None, None)


@pytest.mark.parametrize("fusion", ["late-concat", "attention", "bilinear", "transformer"])
def test_tiny_vqa_model_learns_a_batch(fusion: str):
    torch.manual_seed(0)
    model = create_model("vqa_tiny", fusion=fusion, num_classes=5, text_encoder_kwargs={"vocab_size": 20})
    images, tokens = torch.randn(8, 3, 32, 32), torch.randint(4, 20, (8, 6))
    mask = torch.ones(8, 6, dtype=torch.long)
    targets = torch.nn.functional.one_hot(torch.arange(8) % 5, 5).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss_fn = VQALoss()
    first = None
    for _ in range(25):
        out = model(images, tokens, mask)
        loss = loss_fn(out.logits, targets)["loss"]
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    assert out.logits.shape == (8, 5) and out.grid_hw == (4, 4)
    assert (out.attention is None) == (fusion == "late-concat")


def test_loaded_run_answers_like_the_cli(run: Path, tmp_path: Path, draw_pictures):
    [path] = draw_pictures(tmp_path, ["yellow"])
    vqa = vislang.load(run)
    assert isinstance(vqa, VQAPredictor)
    a, b = vqa.ask(path, ["what shape is the yellow object?", "what shape is the yellow object?"])
    assert a.answer == b.answer and a.confidence == pytest.approx(b.confidence)
    assert a.attention is not None and a.attention.shape == (4, 4)


def test_emoji_metadata_questions_and_training_on_them(tmp_path: Path, draw_pictures):
    from vislang.data.datasets.emoji import metadata_questions
    from vislang.data.records import Record

    hand = Record("g/1", "x.png", ["raised hand: dark skin tone"], "people-body",
                  meta={"group": "people-body", "subgroup": "hand-fingers-open", "skin_tone": 5, "gender": "female"})
    flag = Record("g/2", "y.png", ["flag: Ascension Island"], "flags", meta={"group": "flags", "subgroup": "country-flag"})
    qa = {q.question: q.answers[0] for q in metadata_questions(hand)}
    assert qa == {"Which group is this emoji in?": "people-body", "Does this emoji have a skin tone?": "yes",
                  "What skin tone is this?": "dark", "Is this a man or a woman?": "woman"}
    assert [(q.question, q.answers, q.question_id) for q in metadata_questions(flag)][-1] == \
        ("Which flag is this?", ["ascension island"], "g/2-m1")
    assert metadata_questions(Record("s", "z.png", ["a red circle"])) == []
    pics = draw_pictures(tmp_path, ["red", "blue", "green", "yellow"])
    rows = [{"id": f"e{i}", "image": str(p), "text": "an emoji", "label": g, "group": g, "subgroup": "x"}
            for i, (p, g) in enumerate(zip(pics, ["flags", "objects", "flags", "objects"]))]
    manifest = tmp_path / "emoji.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "run"
    assert main(["train", "vqa", "--data", str(manifest), "--model", "vqa_tiny", "--batch-size", "2", "--image-size", "32",
                 "--max-steps", "2", "--set", "data.val_split=", "--out", str(out)]) == 0
    answers = json.loads((out / "checkpoints" / "last" / "answers.json").read_text())
    assert set(answers["answers"]) == {"flags", "objects"}


def test_resume_keeps_the_answers_and_vocabulary(run: Path, tmp_path: Path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = {n: (copy / "checkpoints" / "last" / n).read_text() for n in ("answers.json", "vocab.json")}
    assert main(["train", "vqa", "--out", str(copy), "--resume", "--max-steps", "4"]) == 0
    assert "steps: 4" in capsys.readouterr().out
    for name, text in before.items():
        assert (copy / "checkpoints" / "last" / name).read_text() == text



def test_fusion_experiment_gives_every_strategy_the_same_run_but_the_fusion():
    import argparse

    from vislang.commands.experiment import register
    from vislang.tasks.fusion_experiment import FusionExperimentConfig, run_config
    from vislang.train import OptimConfig

    cfg = FusionExperimentConfig()
    runs = {f: run_config(cfg, f) for f in cfg.fusions}
    assert {r.fusion for r in runs.values()} == set(cfg.fusions)
    first = runs[cfg.fusions[0]]
    for r in runs.values():
        assert (r.train, r.data, r.model_kwargs, r.task) == (first.train, first.data, first.model_kwargs, first.task)
    # By default the loop's optimisation (warm-up + cosine, weight decay, clipping) at the experiment's lr.
    assert first.train.optim == OptimConfig(lr=cfg.lr)
    assert (first.data.transform.image_size, first.data.transform.augment) == (64, False)
    cfg.weight_decay, cfg.grad_clip, cfg.warmup_ratio, cfg.min_lr_ratio = 0.0, None, 0.0, 1.0
    optim = run_config(cfg, "attention").train.optim
    assert (optim.weight_decay, optim.grad_clip, optim.warmup_ratio, optim.min_lr_ratio) == (0.0, None, 0.0, 1.0)
    # The command's defaults are the config's.
    from vislang.commands.experiment import experiment_config

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["experiment", "fusion", "--out", "x"])
    resolved = experiment_config(args)
    default = FusionExperimentConfig()
    assert (resolved.epochs, resolved.max_steps, resolved.lr, resolved.image_size, resolved.batch_size) == \
        (default.epochs, default.max_steps, default.lr, default.image_size, default.batch_size)
    assert resolved.data == "shapes:size=64" and resolved.model_kwargs == default.model_kwargs


def test_fusion_experiment_takes_a_config_file_and_overrides(data_root: Path, tmp_path: Path, capsys):
    import yaml

    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump({"data": SHAPES, "model": "vqa_tiny", "fusions": ["late-concat", "attention"],
                                      "epochs": 3, "image_size": 32}))
    out = tmp_path / "exp"
    assert main(["experiment", "fusion", "--config", str(config), "--root", str(data_root), "--set", "max_steps=1",
                 "--set", "batch_size=8", "--max-steps", "2", "--out", str(out)]) == 0
    assert "best:" in capsys.readouterr().out
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["fusions"] == ["late-concat", "attention"] and saved["model"] == "vqa_tiny"
    assert (saved["max_steps"], saved["batch_size"], saved["epochs"], saved["model_kwargs"]) == (2, 8, 3, {})
    results = json.loads((out / "results.json").read_text())
    assert set(results["fusions"]) == {"late-concat", "attention"}
    assert all(e["steps"] == 2 for e in results["fusions"].values())
    for f in ("table.md", "fusion.png", "runs/attention/checkpoints/best/config.json"):
        assert (out / f).is_file(), f
    # a config mistake is one line naming the key, before anything is trained
    assert main(["experiment", "fusion", "--config", str(config), "--set", "learning_rate=1",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "learning_rate: unknown key" in err and len(err.strip().splitlines()) == 1
    assert main(["experiment", "fusion", "--fusions", "late-concat,nosuch", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown fusion(s) nosuch" in capsys.readouterr().err and not (tmp_path / "bad").exists()
