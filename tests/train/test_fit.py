"""The shared training loop on real data (the ``shapes`` dataset) with a tiny real model: run directory,
gradient accumulation, NaN stop, early stopping, max_steps and encoder freezing."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from tinytrain import CLASSES, MODEL_NAME, ShapeTask, make_data, make_model

from vislang.errors import VislangError
from vislang.train import (
    OptimConfig,
    TrainConfig,
    TrainingDivergedError,
    fit,
    load_checkpoint,
    load_model,
)


@pytest.fixture(scope="module")
def shapes(data_root):
    return make_data(data_root)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train_loss(model: torch.nn.Module, samples) -> float:
    """Cross-entropy on the (augmented, fixed-seed) training images, in eval mode."""
    images = torch.stack([samples[(i, 7)]["image"] for i in range(len(samples))])
    targets = torch.tensor([CLASSES.index(samples[i]["label"]) for i in range(len(samples))])
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(images), targets).item()


def test_fit_trains_and_fills_the_run_dir(shapes, tmp_path):
    samples, val = shapes
    model, spec = make_model(0)
    before = _train_loss(model, samples)
    task = ShapeTask(val)
    cfg = TrainConfig(epochs=4, batch_size=8, log_every=2, optim=OptimConfig(lr=3e-3, warmup_steps=3))
    run = tmp_path / "run"
    result = fit(model, task, samples, cfg, run, model_spec=spec, config_to_save={"train": cfg, "note": "x"})

    assert (result.steps, result.epochs, result.stopped) == (32, 4, "completed")
    assert _train_loss(model, samples) < before - 0.1, "training lowers the loss"
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["optim"]["warmup_steps"] == 3

    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log == result.history
    train = [e for e in log if e["kind"] == "train"]
    val_entries = [e for e in log if e["kind"] == "val"]
    assert [e["step"] for e in train] == list(range(2, 33, 2))
    assert [e["step"] for e in val_entries] == [8, 16, 24, 32]
    assert {"loss", "accuracy_train", "lr", "images_per_s", "grad_norm", "time", "epoch"} <= train[0].keys()
    assert train[0]["lr"] == pytest.approx(3e-3 * 2 / 3)  # the lr used by step 2, in warm-up
    assert train[-1]["lr"] < 1e-4 and all(e["images_per_s"] > 0 for e in train)
    assert {"accuracy", "val_loss", "best"} <= val_entries[0].keys() and val_entries[0]["best"]

    best = max(e["accuracy"] for e in val_entries)
    assert result.best_metric == best
    best_step = next(e["step"] for e in val_entries if e["accuracy"] == best)
    assert json.loads((result.best_dir / "config.json").read_text())["step"] == best_step
    rebuilt = load_model(result.best_dir)
    assert task.validate(rebuilt)["accuracy"] == best  # the best checkpoint really scores the best metric
    last = load_model(result.last_dir)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in last.state_dict().items())
    assert json.loads((result.last_dir / "classes.json").read_text()) == list(CLASSES)
    config, _, state = load_checkpoint(result.last_dir)
    assert config["model"] == MODEL_NAME and state["progress"]["step"] == 32

    img = Image.open(run / "curves.png")
    assert img.format == "PNG" and img.width > 300 and img.height > 600


# 64 samples: 3 x 4 ends each epoch on a group of one micro-batch; 2 x 12 ends on a group of 12 + 4 samples
@pytest.mark.parametrize("accum, micro, big", [(2, 4, 8), (3, 4, 12), (2, 12, 24)])
def test_accumulation_matches_one_big_batch(shapes, tmp_path, accum, micro, big):
    samples, val = shapes
    finals = []
    for i, (bs, steps) in enumerate([(micro, accum), (big, 1)]):
        model, spec = make_model(0, dropout=0.0, batchnorm=False)
        cfg = TrainConfig(epochs=2, batch_size=bs, accum_steps=steps, log_every=100,
                          optim=OptimConfig(lr=3e-3))
        result = fit(model, ShapeTask(val), samples, cfg, tmp_path / str(i), model_spec=spec)
        finals.append((_state(model), result.steps))
    (accumulated, n_acc), (single, n_single) = finals
    assert n_acc == n_single == 2 * -(-len(samples) // big)
    for k in single:
        torch.testing.assert_close(accumulated[k], single[k], rtol=1e-4, atol=1e-5)


class NaNTask(ShapeTask):
    """The loss turns NaN on the ``fail_at``-th training step call."""

    def __init__(self, val_records, fail_at: int):
        super().__init__(val_records)
        self.fail_at = fail_at

    def training_step(self, model, batch):
        out = super().training_step(model, batch)
        if self.steps == self.fail_at:
            out["loss"] = out["loss"] * float("nan")
        return out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(shapes, tmp_path):
    samples, val = shapes
    model, spec = make_model(0)
    cfg = TrainConfig(epochs=3, batch_size=8, checkpoint_every=4, log_every=1)
    with pytest.raises(TrainingDivergedError) as e:
        fit(model, NaNTask(val, fail_at=7), samples, cfg, tmp_path / "run", model_spec=spec)
    message = str(e.value)
    assert "step 7" in message and "loss is nan" in message and "step 4" in message
    config, _, state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert config["step"] == 4 and state["progress"]["step"] == 4
    kept = load_model(tmp_path / "run" / "checkpoints" / "last").state_dict()
    assert all(torch.isfinite(v).all() for v in kept.values())
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["kind"] == "diverged" and log[-1]["step"] == 7
    assert [e["step"] for e in log[:-1]] == list(range(1, 7))

    with pytest.raises(TrainingDivergedError, match="no checkpoint had been written yet"):
        fit(make_model(0)[0], NaNTask(val, fail_at=1), samples, cfg, tmp_path / "early", model_spec=spec)


class ScriptedMetricTask(ShapeTask):
    """Real training; validation reports a scripted sequence of "accuracy" values to drive early stopping."""

    def __init__(self, val_records, values: list[float]):
        super().__init__(val_records)
        self.values = list(values)

    def validate(self, model):
        metrics = super().validate(model)
        return {**metrics, "accuracy": self.values.pop(0)}


def test_early_stopping_and_best_checkpoint(shapes, tmp_path):
    samples, val = shapes
    model, spec = make_model(0)
    cfg = TrainConfig(epochs=10, batch_size=16, early_stopping=2)
    run = tmp_path / "run"
    task = ScriptedMetricTask(val, [0.5, 0.7, 0.6, 0.7, 0.9])
    result = fit(model, task, samples, cfg, run, model_spec=spec)
    assert result.stopped == "early_stopping" and result.epochs == 4 and result.steps == 16
    assert result.best_metric == 0.7
    assert json.loads((run / "checkpoints" / "best" / "config.json").read_text())["step"] == 8
    best, last = load_model(run / "checkpoints" / "best"), load_model(run / "checkpoints" / "last")
    assert not all(torch.equal(v, last.state_dict()[k]) for k, v in best.state_dict().items())
    assert [e["best"] for e in result.history if e["kind"] == "val"] == [True, True, False, False]

    again = fit(make_model(5)[0], ScriptedMetricTask(val, []), samples, cfg, run, model_spec=spec,
                resume=True)
    assert again.stopped == "early_stopping" and again.steps == 16  # a finished run is not trained further


def test_max_steps_validates_at_the_end(shapes, tmp_path):
    samples, val = shapes
    model, spec = make_model(0)
    cfg = TrainConfig(epochs=5, batch_size=8, max_steps=5, log_every=1, optim=OptimConfig(min_lr_ratio=0.1))
    result = fit(model, ShapeTask(val), samples, cfg, tmp_path / "run", model_spec=spec)
    assert (result.stopped, result.steps, result.epochs) == ("max_steps", 5, 0)
    assert [e["step"] for e in result.history if e["kind"] == "val"] == [5]
    lrs = [e["lr"] for e in result.history if e["kind"] == "train"]  # no warm-up: round(0.05 * 5) = 0 steps
    expected = [1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 5))) for s in range(5)]
    assert lrs == pytest.approx(expected)
    assert load_checkpoint(result.last_dir)[2]["progress"]["batch_in_epoch"] == 5


def test_frozen_encoder_and_encoder_lr(shapes, tmp_path):
    samples, val = shapes
    model, spec = make_model(0)
    encoder_before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    head_before = model.head.weight.detach().clone()
    cfg = TrainConfig(epochs=1, batch_size=16, optim=OptimConfig(freeze_encoder=True))
    fit(model, ShapeTask(val), samples, cfg, tmp_path / "frozen", model_spec=spec)
    after = model.image_encoder.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in encoder_before.items())  # weights and BatchNorm stats
    assert not torch.equal(model.head.weight, head_before)

    model, spec = make_model(0)
    cfg = TrainConfig(epochs=1, batch_size=16, log_every=1, optim=OptimConfig(lr=1e-3, encoder_lr=1e-5,
                                                                              warmup_ratio=0.0))
    result = fit(model, ShapeTask(val), samples, cfg, tmp_path / "encoder_lr", model_spec=spec)
    first = result.history[0]
    assert first["lr"] == pytest.approx(1e-3) and first["encoder_lr"] == pytest.approx(1e-5)


def test_run_dir_guards(shapes, tmp_path):
    samples, val = shapes
    model, spec = make_model(0)
    cfg = TrainConfig(epochs=1, batch_size=32)
    with pytest.raises(VislangError, match="nothing to resume"):
        fit(model, ShapeTask(val), samples, cfg, tmp_path / "run", model_spec=spec, resume=True)
    fit(model, ShapeTask(val), samples, cfg, tmp_path / "run", model_spec=spec)
    with pytest.raises(VislangError, match="already holds a run"):
        fit(model, ShapeTask(val), samples, cfg, tmp_path / "run", model_spec=spec)
    with pytest.raises(VislangError, match="accum_steps must be >= 1"):
        fit(model, ShapeTask(val), samples, TrainConfig(accum_steps=0), tmp_path / "bad", model_spec=spec)
    if not torch.cuda.is_available():
        with pytest.raises(VislangError, match="CUDA is not available"):
            fit(model, ShapeTask(val), samples, TrainConfig(device="cuda"), tmp_path / "gpu", model_spec=spec)


def test_bf16_autocast_on_cpu(shapes, tmp_path):
    samples, val = shapes
    model, spec = make_model(0)
    cfg = TrainConfig(epochs=1, batch_size=16, amp="bf16", log_every=1)
    result = fit(model, ShapeTask(val), samples, cfg, tmp_path / "run", model_spec=spec)
    assert result.steps == 4 and all(p.dtype == torch.float32 for p in model.parameters())
    assert all(math.isfinite(e["loss"]) for e in result.history if e["kind"] == "train")
    with pytest.raises(VislangError, match="amp must be auto, bf16 or off"):
        fit(model, ShapeTask(val), samples, TrainConfig(amp="fp8"), tmp_path / "bad", model_spec=spec)
