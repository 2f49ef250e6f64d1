"""Region tagging: per-cell targets from object annotations, the tagger trained in-process on real shapes
images, its predictor, and a VQA model and the fusion experiment started from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import vislang
from vislang.cli import main
from vislang.data import load_dataset
from vislang.errors import VislangError
from vislang.inference.regions import RegionPredictor
from vislang.models import create_model
from vislang.models.encoders import read_state_dict
from vislang.tasks.regions import AttributeVocab, cell_targets, check_attributes

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"


def _vocab() -> AttributeVocab:
    return AttributeVocab({"color": ["none", "blue", "red"], "shape": ["none", "circle", "square"]})


def test_cell_targets_by_hand():
    # a 4x4 grid: cell centres at 0.125, 0.375, 0.625, 0.875 on each axis
    red_circle = {"x": 0.125, "y": 0.125, "r": 0.1, "color": "red", "shape": "circle"}       # covers cell 0
    blue_square = {"x": 0.5, "y": 0.5, "r": 0.2, "color": "blue", "shape": "square"}         # cells 5, 6, 9, 10
    t = cell_targets([red_circle, blue_square], _vocab(), (4, 4), extent_scale=1.0)
    expected_color = torch.zeros(16, dtype=torch.long)
    expected_color[0] = 2
    expected_color[[5, 6, 9, 10]] = 1
    assert torch.equal(t["color"], expected_color)
    assert t["shape"][0].item() == 1 and t["shape"][5].item() == 2 and t["shape"][15].item() == 0
    on_top = {"x": 0.125, "y": 0.125, "r": 0.05, "color": "blue", "shape": "square"}        # drawn last: wins
    assert cell_targets([red_circle, on_top], _vocab(), (4, 4))["color"][0].item() == 1
    tiny = {"x": 0.9, "y": 0.1, "r": 0.001, "color": "red", "shape": "circle"}              # claims its own cell
    assert cell_targets([tiny], _vocab(), (4, 4))["color"].nonzero().flatten().tolist() == [3]


def test_attribute_vocab_from_records_and_bad_objects(tmp_path: Path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rows = [{"image": "a.png", "objects": [{"x": 0.5, "y": 0.5, "r": 0.2, "color": "red", "shape": "circle"}]},
            {"image": "a.png", "objects": [{"x": 0.2, "y": 0.5, "r": 0.1, "color": "blue", "shape": "circle"}]}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    records = load_dataset(tmp_path / "m.jsonl").records
    vocab = AttributeVocab.build(records)
    assert vocab.values == {"color": ["none", "blue", "red"], "shape": ["none", "circle"]}
    assert vocab.sizes() == {"color": 3, "shape": 2}
    vocab.save(tmp_path / "attributes.json")
    assert AttributeVocab.load(tmp_path / "attributes.json").values == vocab.values
    with pytest.raises(VislangError, match="has no 'size'"):
        AttributeVocab.build(records, attributes=["size"])
    with pytest.raises(VislangError, match=r"record .*: an object in meta\['objects'\] has no 'size'"):
        check_attributes(records, "objects", ["color", "size"])   # e.g. a val record the vocabulary cannot tag
    rows[0]["objects"][0].pop("r")
    (tmp_path / "bad.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(VislangError, match="needs numbers x, y and r"):
        AttributeVocab.build(load_dataset(tmp_path / "bad.jsonl").records)
    (tmp_path / "none.jsonl").write_text(json.dumps({"image": "a.png", "text": "a caption"}))
    with pytest.raises(VislangError, match="no training record has objects"):
        AttributeVocab.build(load_dataset(tmp_path / "none.jsonl").records)


@pytest.fixture(scope="module")
def regions_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A region_tagger_tiny trained in-process for six steps on real shapes images."""
    run = tmp_path_factory.mktemp("regions") / "run"
    assert main(["train", "regions", "--data", SHAPES, "--root", str(data_root), "--model", "region_tagger_tiny",
                 "--image-size", "32", "--batch-size", "8", "--max-steps", "6", "--lr", "3e-3",
                 "--set", "train.log_every=1", "--out", str(run)]) == 0
    return run


def test_train_regions(regions_run: Path):
    run = regions_run
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    train = [e for e in log if e["kind"] == "train"]
    assert len(train) == 6 and {"loss_color", "loss_shape", "loss_size"} <= set(train[0])
    assert train[-1]["loss"] < train[0]["loss"]                            # it learns
    val = [e for e in log if e["kind"] == "val"]
    assert val and 0.0 <= val[-1]["accuracy"] <= 1.0 and "acc_color" in val[-1]
    attrs = json.loads((run / "checkpoints" / "last" / "attributes.json").read_text())
    assert attrs["color"][0] == "none" and "red" in attrs["color"] and attrs["size"] == ["none", "large", "small"]
    config = json.loads((run / "checkpoints" / "last" / "config.json").read_text())
    assert config["task"] == "regions" and config["model"] == "region_tagger_tiny"
    assert config["model_config"]["attributes"] == {name: len(values) for name, values in attrs.items()}
    preprocessor = json.loads((run / "checkpoints" / "last" / "preprocessor.json").read_text())
    assert preprocessor["image_size"] == 32 and preprocessor["augment"] is False
    assert (run / "checkpoints" / "last" / "README.md").read_text().startswith("---")


def test_region_predictor_tags_every_cell(regions_run: Path, data_root: Path):
    tagger = vislang.load(regions_run, device="cpu")
    assert isinstance(tagger, RegionPredictor) and tagger.checkpoint == regions_run / "checkpoints" / "best"
    records = load_dataset(SHAPES, "val", root=data_root).records[:3]
    tags = tagger.tag([r.image for r in records[:2]] + [Image.open(records[2].image)], batch_size=2)
    assert len(tags) == 3
    images = tagger.images_tensor([r.image for r in records])
    with torch.no_grad():
        out = tagger.model(images)                                         # the model itself, by hand
    h, w = out.grid_hw
    for i, t in enumerate(tags):
        assert t.grid_hw == (h, w) and set(t.classes) == {"color", "shape", "size"}
        for name, logits in out.logits.items():
            assert torch.equal(t.classes[name], logits[i].argmax(-1).view(h, w))
            assert t.probs[name].shape == (h, w, len(tagger.attributes[name]))
            torch.testing.assert_close(t.probs[name].sum(-1), torch.ones(h, w))
        labels = t.labels("color")
        assert len(labels) == h and all(len(row) == w for row in labels)
        assert {x for row in labels for x in row} <= set(tagger.attributes["color"])


def test_vqa_from_the_taggers_image_encoder(regions_run: Path, data_root: Path, tmp_path: Path):
    run = regions_run
    vqa = tmp_path / "vqa"                       # transfer: the tagger's CNN, frozen, under a VQA model
    assert main(["train", "vqa", "--data", SHAPES, "--root", str(data_root), "--model", "vqa_tiny", "--image-size",
                 "32", "--batch-size", "8", "--max-steps", "2", "--set",
                 f"model_kwargs.image_encoder_kwargs.weights={run}", "--set", "train.optim.freeze_encoder=true",
                 "--out", str(vqa)]) == 0
    tagger_cnn = read_state_dict(run, "image_encoder")
    vqa_cnn = read_state_dict(vqa / "checkpoints" / "last", "image_encoder")
    assert tagger_cnn.keys() == vqa_cnn.keys()
    for k, v in tagger_cnn.items():                                        # frozen: unchanged by VQA training
        assert torch.equal(v, vqa_cnn[k]), k


def test_bad_region_options(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    base = ["train", "regions", "--data", SHAPES, "--root", str(data_root), "--model", "region_tagger_tiny",
            "--image-size", "32", "--max-steps", "1"]
    assert main([*base, "--set", "task.extent_scale=0", "--out", str(tmp_path / "a")]) == 2
    assert "task.extent_scale must be > 0" in capsys.readouterr().err
    assert main([*base, "--set", "task.objects_key=nosuch", "--out", str(tmp_path / "b")]) == 2
    assert "no training record has objects in meta['nosuch']" in capsys.readouterr().err
    with pytest.raises(VislangError, match="needs >= 2 classes"):
        create_model("region_tagger_tiny", attributes={"color": 1})


def test_fusion_experiment_starts_from_image_weights():
    from vislang.tasks.fusion_experiment import FusionExperimentConfig, run_config

    cfg = FusionExperimentConfig(image_weights="runs/regions", freeze_image=True)
    rc = run_config(cfg, "attention")
    assert rc.model_kwargs["image_encoder_kwargs"]["weights"] == "runs/regions"
    assert rc.model_kwargs["image_encoder_kwargs"]["widths"] == [16, 32, 64]      # the experiment's CNN kept
    assert rc.train.optim.freeze_encoder
    assert "weights" not in run_config(FusionExperimentConfig(), "attention").model_kwargs["image_encoder_kwargs"]
