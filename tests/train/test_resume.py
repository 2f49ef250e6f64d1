"""``resume=True`` after a real SIGKILL reaches bitwise the same weights, metrics and log as an uninterrupted
run with the same seed: once from an epoch-end checkpoint, once from a mid-epoch one (``checkpoint_every``,
gradient accumulation and loader workers), and that again with the images streamed from WebDataset shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from tinytrain import ShapeTask, make_data, make_model

from vislang.train import OptimConfig, TrainConfig, fit, load_checkpoint, load_model

HERE = Path(__file__).parent

_SCRIPT = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {here!r})
import torch
torch.set_num_threads({threads})
from tinytrain import ShapeTask, make_data, make_model
from vislang.config import config_from_dict
from vislang.train import TrainConfig, fit

RUN = Path({run_dir!r})


class HangAfterCheckpoint(ShapeTask):
    # Trains normally; once the checkpoint of step >= {kill_after} is on disk it does {extra} more
    # micro-batches (logging past the checkpoint), then says so and waits to be killed.
    def training_step(self, model, batch):
        config = RUN / "checkpoints" / "last" / "config.json"
        if config.exists() and json.loads(config.read_text())["step"] >= {kill_after}:
            self.after = getattr(self, "after", 0) + 1
            if self.after > {extra}:
                Path({marker!r}).write_text("waiting to be killed")
                time.sleep(600)
        return super().training_step(model, batch)


samples, val = make_data(Path({data_root!r}), shard_size={shard_size!r})
model, spec = make_model(0)
cfg = config_from_dict(TrainConfig, json.loads({cfg_json!r}))
fit(model, HangAfterCheckpoint(val), samples, cfg, RUN, model_spec=spec)
raise SystemExit("the run finished instead of waiting to be killed")
"""


def _kill_mid_run(tmp_path: Path, data_root: Path, cfg: TrainConfig, kill_after: int, extra: int,
                  shard_size: int | None = None) -> Path:
    """Train in a subprocess and SIGKILL it ``extra`` micro-batches after the checkpoint of ``kill_after``."""
    run, marker = tmp_path / "killed", tmp_path / "hanging"
    script = tmp_path / "train_until_killed.py"
    script.write_text(_SCRIPT.format(here=str(HERE), threads=torch.get_num_threads(), run_dir=str(run),
                                     kill_after=kill_after, extra=extra, marker=str(marker),
                                     data_root=str(data_root), cfg_json=json.dumps(asdict(cfg)),
                                     shard_size=shard_size))
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, str(script)], stderr=err,
                                env={**os.environ, "VISLANG_QUIET": "1"})
    deadline = time.monotonic() + 180
    try:
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail("training script ended: " + (tmp_path / "stderr.txt").read_text()[-3000:])
            assert time.monotonic() < deadline, "training script never reached the kill point"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None and not marker.exists():
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return run


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in ("time", "images_per_s")} for e in history]


def _assert_same_run(resumed, reference, resumed_model, reference_model) -> None:
    got, want = resumed_model.state_dict(), reference_model.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), f"{k} differs after resuming"
    assert (resumed.steps, resumed.epochs, resumed.best_metric, resumed.stopped) == (
        reference.steps, reference.epochs, reference.best_metric, reference.stopped)
    assert _without_timing(resumed.history) == _without_timing(reference.history)
    best_got = load_model(resumed.best_dir).state_dict()
    best_want = load_model(reference.best_dir).state_dict()
    assert all(torch.equal(best_got[k], best_want[k]) for k in best_want)
    _, _, state_got = load_checkpoint(resumed.last_dir)
    _, _, state_want = load_checkpoint(reference.last_dir)
    assert {k: v for k, v in state_got["progress"].items() if k != "elapsed"} == {
        k: v for k, v in state_want["progress"].items() if k != "elapsed"}


CASES = {
    # killed 3 micro-batches after the end-of-epoch-1 checkpoint (step 8 of 24)
    "epoch_end": (TrainConfig(epochs=3, batch_size=8, log_every=1, optim=OptimConfig(lr=3e-3)), 8, 3),
    # 16 micro-batches of 4 per epoch, 2 per step, a checkpoint every 3 steps and 2 workers: killed 3
    # micro-batches after the checkpoint of step 3, in the middle of the first epoch
    "mid_epoch": (TrainConfig(epochs=3, batch_size=4, accum_steps=2, checkpoint_every=3, workers=2,
                              log_every=1, optim=OptimConfig(lr=3e-3)), 3, 3),
}
SHARDED = {"mid_epoch_shards": "mid_epoch"}  # the same, the images streamed from WebDataset shards of 6


@pytest.mark.parametrize("case", sorted(CASES) + sorted(SHARDED))
def test_resume_after_sigkill_matches_an_uninterrupted_run(data_root, tmp_path, case):
    shard_size = 6 if case in SHARDED else None
    cfg, kill_after, extra = CASES[SHARDED.get(case, case)]
    samples, val = make_data(data_root, shard_size=shard_size)
    reference_model, spec = make_model(0)
    reference = fit(reference_model, ShapeTask(val), samples, cfg, tmp_path / "reference", model_spec=spec)

    run = _kill_mid_run(tmp_path, data_root, cfg, kill_after, extra, shard_size)
    _, _, state = load_checkpoint(run / "checkpoints" / "last")
    assert state["progress"]["step"] == kill_after
    assert (state["progress"]["batch_in_epoch"] == 0) == (case == "epoch_end")
    if shard_size:  # several shards, streamed: each worker reads its own
        assert samples.sampling_shards is not None and len(set(samples.sampling_shards)) > 2
    logged = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert max(logged) > kill_after  # the killed run had trained (and logged) past its checkpoint

    model, _ = make_model(123)  # other initial weights: everything must come from the checkpoint
    resumed = fit(model, ShapeTask(val), samples, cfg, run, model_spec=spec, resume=True)
    _assert_same_run(resumed, reference, model, reference_model)
