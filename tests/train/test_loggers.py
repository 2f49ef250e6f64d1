"""``TrainConfig.logger="tensorboard"``: a real run writes event files holding the numbers of log.jsonl."""

from __future__ import annotations

import json
import sys
import time

import pytest
from tinytrain import ShapeTask, make_data, make_model

from vislang.errors import VislangError
from vislang.train import OptimConfig, TrainConfig, fit

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


@pytest.fixture(scope="module")
def shapes(data_root):
    return make_data(data_root)


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_event_files_hold_the_logged_values(shapes, tmp_path):
    samples, val = shapes
    model, spec = make_model(0)
    cfg = TrainConfig(epochs=2, batch_size=16, log_every=1, logger="tensorboard", optim=OptimConfig(lr=3e-3))
    run = tmp_path / "run"
    fit(model, ShapeTask(val), samples, cfg, run, model_spec=spec)

    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]  # still written
    train = [e for e in log if e["kind"] == "train"]
    val_entries = [e for e in log if e["kind"] == "val"]
    assert len(train) == 8 and len(val_entries) == 2
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    scalars = _scalars(run / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == [e["step"] for e in train]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([e["loss"] for e in train], rel=1e-6)
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([e["lr"] for e in train], rel=1e-6)
    assert scalars["val/accuracy"] == [(e["step"], pytest.approx(e["accuracy"], rel=1e-6)) for e in val_entries]
    assert "val/best" not in scalars and not any(tag.endswith("/step") for tag in scalars)


def test_a_resumed_run_hides_what_a_killed_process_logged_past_its_checkpoint(shapes, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    samples, val = shapes
    cfg = TrainConfig(epochs=1, batch_size=16, log_every=1, logger="tensorboard")
    run = tmp_path / "run"
    fit(make_model(0)[0], ShapeTask(val), samples, cfg, run, model_spec=make_model(0)[1])  # checkpoint at step 4
    with SummaryWriter(str(run / "tensorboard")) as stray:  # as if a killed process had logged step 6
        stray.add_scalar("train/loss", 99.0, global_step=6)
    time.sleep(1.1)  # event files are read in name order, which starts with the time in seconds
    cfg.epochs = 2
    fit(make_model(0)[0], ShapeTask(val), samples, cfg, run, model_spec=make_model(0)[1], resume=True)

    train = [e for e in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if e["kind"] == "train"]
    loss = _scalars(run / "tensorboard")["train/loss"]
    assert [s for s, _ in loss] == [e["step"] for e in train] == list(range(1, 9))
    assert [v for _, v in loss] == pytest.approx([e["loss"] for e in train], rel=1e-6)


def test_the_default_writes_no_event_files(shapes, tmp_path):
    samples, val = shapes
    model, spec = make_model(0)
    fit(model, ShapeTask(val), samples, TrainConfig(epochs=1, batch_size=32), tmp_path / "run", model_spec=spec)
    assert (tmp_path / "run" / "log.jsonl").is_file() and not (tmp_path / "run" / "tensorboard").exists()


def test_bad_or_missing_logger_fails_before_training(shapes, tmp_path, monkeypatch):
    samples, val = shapes
    model, spec = make_model(0)
    with pytest.raises(VislangError, match="logger must be jsonl or tensorboard, not 'wandb'"):
        fit(model, ShapeTask(val), samples, TrainConfig(logger="wandb"), tmp_path / "a", model_spec=spec)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(VislangError, match=r"pip install 'vislang\[tensorboard\]'"):
        fit(model, ShapeTask(val), samples, TrainConfig(logger="tensorboard"), tmp_path / "b", model_spec=spec)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
