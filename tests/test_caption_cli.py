"""Captioning end to end in-process on real files: train (2 steps... a few), caption, evaluate, resume."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from vislang.cli import main

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"


@pytest.fixture(scope="module")
def run(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("caption-run") / "run"
    rc = main(["train", "caption", "--data", SHAPES, "--root", str(data_root), "--model", "caption_lstm_tiny",
               "--epochs", "1", "--max-steps", "4", "--batch-size", "8", "--image-size", "32",
               "--set", "task.max_len=12", "--out", str(out)])
    assert rc == 0
    return out


def test_train_writes_a_complete_run(run):
    for name in ("config.yaml", "log.jsonl", "curves.png"):
        assert (run / name).is_file(), name
    for ckpt in ("best", "last"):
        for name in ("model.safetensors", "config.json", "preprocessor.json", "README.md", "vocab.json",
                     "train_state.pt"):
            assert (run / "checkpoints" / ckpt / name).is_file(), (ckpt, name)
    spec = json.loads((run / "checkpoints" / "last" / "config.json").read_text())
    pre = json.loads((run / "checkpoints" / "last" / "preprocessor.json").read_text())
    assert spec["task"] == "caption" and pre["image_size"] == 32
    config = (run / "config.yaml").read_text()
    assert "caption_lstm_tiny" in config and "max_len: 12" in config
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "val" and "CIDEr-D" in e for e in log)


def test_caption_command_on_real_files(run, tmp_path, capsys):
    paths = []
    for i, color in enumerate(["red", "blue"]):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (50, 40), color).save(p)
        paths.append(str(p))
    assert main(["caption", *paths, "--model", str(run), "--beam", "2", "--json",
                 "--attention", str(tmp_path / "att.png")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["image"] for x in lines] == paths and all(isinstance(x["caption"], str) for x in lines)
    assert (tmp_path / "att_img0.png").is_file() and (tmp_path / "att_img1.png").is_file()
    assert main(["caption", paths[0], "--model", str(run)]) == 0
    assert capsys.readouterr().out.startswith(paths[0] + "\t")
    assert main(["caption", *paths, "--model", str(run), "--beam", "3", "--length-penalty", "1.5"]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == paths


def test_caption_command_errors(run, tmp_path, capsys):
    (tmp_path / "notes.jpg").write_text("not an image")
    assert main(["caption", str(tmp_path / "notes.jpg"), "--model", str(run)]) == 2
    assert "notes.jpg: not an image" in capsys.readouterr().err
    assert main(["caption", str(tmp_path / "notes.jpg"), "--model", str(tmp_path)]) == 2
    assert "not a vislang run or checkpoint directory" in capsys.readouterr().err


def test_evaluate_caption_with_baselines(run, data_root, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "caption", "--model", str(run), "--data", SHAPES, "--split", "test",
                 "--root", str(data_root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "nearest training image" in text and "most frequent caption" in text and "CIDEr-D" in text
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["corpus"]) == {"model", "nearest training image", "most frequent caption"}
    results = json.loads((out / "results_model.json").read_text())
    assert len(results) == 8 and {"image_id", "caption"} <= set(results[0])
    assert scores["beam"] == 1 and scores["length_penalty"] == 0.0
    # the written files are valid COCO inputs for `vislang evaluate captions`
    assert main(["evaluate", "captions", "--results", str(out / "results_model.json"),
                 "--annotations", str(out / "annotations.json"), "--no-java"]) == 0
    cider = [line for line in capsys.readouterr().out.splitlines() if line.startswith("CIDEr-D")][0]
    assert float(cider.split()[-1]) == pytest.approx(scores["corpus"]["model"]["CIDEr-D"], abs=1e-4)
    assert main(["evaluate", "caption", "--model", str(run), "--data", SHAPES, "--split", "test", "--root",
                 str(data_root), "--out", str(out), "--beam", "2", "--length-penalty", "1", "--no-baselines"]) == 0
    assert "beam 2, length penalty 1" in capsys.readouterr().out
    scores = json.loads((out / "scores.json").read_text())
    assert scores["length_penalty"] == 1.0 and set(scores["corpus"]) == {"model"}


def test_resume_continues_a_run(data_root, tmp_path):
    args = ["train", "caption", "--data", SHAPES, "--root", str(data_root), "--model", "caption_lstm_tiny",
            "--epochs", "2", "--batch-size", "8", "--image-size", "32", "--set", "task.max_len=12",
            "--out", str(tmp_path / "r")]
    assert main([*args, "--max-steps", "3"]) == 0
    assert main([*args, "--max-steps", "6", "--resume"]) == 0
    steps = [json.loads(x)["step"] for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert max(steps) == 6
    # --out and --resume alone: the run's saved config.yaml supplies everything else
    assert main(["train", "caption", "--out", str(tmp_path / "r"), "--resume", "--max-steps", "8"]) == 0
    steps = [json.loads(x)["step"] for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert max(steps) == 8


def test_bad_config_values(tmp_path, capsys):
    assert main(["train", "caption", "--data", SHAPES, "--set", "train.optim.lr=fast", "--out", str(tmp_path)]) == 2
    assert "lr" in capsys.readouterr().err
    assert main(["train", "caption", "--data", SHAPES, "--set", "train.epochz=3", "--out", str(tmp_path)]) == 2
    assert "epochz" in capsys.readouterr().err


def test_transformer_captioner_trains_and_captions(data_root, tmp_path, capsys):
    out = tmp_path / "tr"
    assert main(["train", "caption", "--data", SHAPES, "--root", str(data_root), "--model",
                 "caption_transformer_tiny", "--max-steps", "2", "--batch-size", "8", "--image-size", "32",
                 "--set", "task.max_len=12", "--out", str(out)]) == 0
    capsys.readouterr()
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), "green").save(image)
    assert main(["caption", str(image), "--model", str(out), "--beam", "3", "--attention",
                 str(tmp_path / "a.png")]) == 0
    caption = capsys.readouterr().out.split("\t")[1]
    assert "<bos>" not in caption and "<pad>" not in caption
    assert (tmp_path / "a.png").is_file()


def test_training_data_without_captions_is_refused(tmp_path, capsys):
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"image": f"{i}.png", "label": "x"}) + "\n" for i in range(3)))
    assert main(["train", "caption", "--data", str(tmp_path / "m.jsonl"), "--set", "data.val_split=",
                 "--out", str(tmp_path / "run")]) == 2
    assert "[train] has no captions to train or validate a captioner on" in capsys.readouterr().err


def test_captions_per_image_limits_training_samples(data_root, tmp_path):
    out = tmp_path / "one"
    assert main(["train", "caption", "--data", SHAPES, "--root", str(data_root), "--model", "caption_lstm_tiny",
                 "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--set", "task.captions_per_image=1",
                 "--set", "train.log_every=1", "--out", str(out)]) == 0
    steps = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert max(steps) == 5  # 40 images, one caption each, batches of 8


def test_the_same_seed_gives_the_same_run_whatever_ran_before(data_root, tmp_path):
    import torch
    from safetensors.torch import load_file

    args = ["train", "caption", "--data", SHAPES, "--root", str(data_root), "--model", "caption_lstm_tiny",
            "--max-steps", "2", "--batch-size", "8", "--image-size", "32", "--set", "train.log_every=1"]
    runs = []
    for name, draws in (("a", 0), ("b", 7)):
        torch.rand(draws)  # other work in the process moves the global RNG (as the demo's data build may)
        assert main([*args, "--out", str(tmp_path / name)]) == 0
        runs.append(tmp_path / name)
    weights = [load_file(str(r / "checkpoints" / "last" / "model.safetensors")) for r in runs]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    logs = [[json.loads(x)["loss"] for x in (r / "log.jsonl").read_text().splitlines() if '"train"' in x]
            for r in runs]
    assert logs[0] == logs[1]


def test_an_encoder_starts_from_a_runs_image_encoder(run, data_root, tmp_path, capsys):
    """Transfer learning between tasks: ``weights=RUN`` gives a registered encoder the image encoder of a
    vislang run (its best checkpoint), here a captioner's CNN as the start of a VQA model."""
    import vislang
    from vislang.errors import VislangError
    from vislang.models import create_model

    trained = vislang.load(run).model.image_encoder.state_dict()
    fresh = create_model("cnn_tiny").state_dict()
    loaded = create_model("cnn_tiny", weights=str(run)).state_dict()
    assert set(loaded) == set(trained)
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    assert not all(torch.equal(fresh[k], trained[k]) for k in trained)  # training changed them
    assert create_model("cnn_tiny", weights=str(run / "checkpoints" / "last")) is not None  # a checkpoint dir too
    with pytest.raises(VislangError, match="does not fit SmallCNN"):  # another architecture: a clear error
        create_model("cnn_small", weights=str(run))
    with pytest.raises(VislangError, match="has no text_encoder"):  # the captioner has no text tower
        create_model("text_gru_tiny", vocab_size=50, weights=str(run))
    out = tmp_path / "vqa"
    assert main(["train", "vqa", "--data", SHAPES, "--root", str(data_root), "--model", "vqa_tiny", "--max-steps", "2",
                 "--batch-size", "4", "--image-size", "32", "--set", f"model_kwargs.image_encoder_kwargs.weights={run}",
                 "--out", str(out)]) == 0
    config = (out / "config.yaml").read_text()
    assert str(run) in config  # the resolved config says where the encoder came from
