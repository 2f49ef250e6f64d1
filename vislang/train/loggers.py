"""Where a training run logs besides ``log.jsonl`` (always written): ``"jsonl"`` (nothing else) or
``"tensorboard"`` (TensorBoard event files in ``RUN/tensorboard/``, from the ``tensorboard`` extra).

    tensorboard --logdir runs/        # train/loss, train/lr, val/<metric>, ... against the step
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vislang.errors import VislangError
from vislang.utils import distributed as dist
from vislang.viz.charts import Chart, Series, save_charts

LOGGERS = ("jsonl", "tensorboard")
TENSORBOARD_DIR = "tensorboard"
_LOGGED_KINDS = ("train", "val")


def check_logger(name: str) -> None:
    """Fail early on an unknown logger, or on ``"tensorboard"`` without TensorBoard installed.

    Raises:
        VislangError: One line saying what to do.
    """
    if name not in LOGGERS:
        raise VislangError(f"bad training config: logger must be {' or '.join(LOGGERS)}, not {name!r}")
    if name == "tensorboard":
        _summary_writer()


class TensorBoardLogger:
    """Writes the numbers of ``log.jsonl`` entries as TensorBoard scalars (``<kind>/<key>`` at ``step``).

    Args:
        log_dir: Directory of the event files.
        purge_step: Hide events of earlier processes at this step and later (TensorBoard's ``purge_step``):
            a resumed run continues from its checkpoint, past which a killed process may have logged.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None):
        self._writer = _summary_writer()(log_dir=str(log_dir), purge_step=purge_step)

    def write(self, entry: dict[str, Any]) -> None:
        """Log the finite numbers of a ``train`` or ``val`` entry (the step and booleans are left out)."""
        kind, step = entry.get("kind"), entry.get("step")
        if kind not in _LOGGED_KINDS or not isinstance(step, int):
            return
        for key, value in entry.items():
            if key in ("kind", "step") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self._writer.add_scalar(f"{kind}/{key}", value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


def open_logger(name: str, run_dir: Path, step: int) -> TensorBoardLogger | None:
    """The extra logger of a run about to train from ``step`` (0: a fresh run), or None for ``"jsonl"``."""
    if name != "tensorboard":
        return None
    # A fresh run hides every event of an earlier attempt; a resumed one those past its checkpoint.
    return TensorBoardLogger(run_dir / TENSORBOARD_DIR, purge_step=step + 1 if step else 0)


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise VislangError("logger=tensorboard needs TensorBoard: pip install 'vislang[tensorboard]'") from None
    return SummaryWriter


# ----------------------------------------------------------------------- the loop's windows and curves


@dataclass
class Window:
    """Losses, gradient norms and throughput accumulated between two log entries."""

    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    steps: int = 0
    samples: int = 0
    start: float = field(default_factory=time.monotonic)

    def add(self, losses: dict[str, float], grad_norm: float, samples: int) -> None:
        for k, v in losses.items():
            self.sums[k] += v
        self.sums["grad_norm"] += grad_norm
        self.steps += 1
        self.samples += samples

    def means(self) -> dict[str, float]:
        return {k: v / max(1, self.steps) for k, v in self.sums.items()}

    def reduce(self, world_size: int) -> None:
        """Sum the losses (each rank holds its share of every step's mean) and samples of all ranks; the
        gradient norm is the same on every rank."""
        keys = sorted(k for k in self.sums if k != "grad_norm")
        total = dist.all_reduce_sum(torch.tensor([self.sums[k] for k in keys] + [float(self.samples)],
                                                 dtype=torch.float64))
        for k, v in zip(keys, total[:-1].tolist()):
            self.sums[k] = v
        self.samples = int(total[-1])

    def rate(self) -> float:
        return round(self.samples / max(1e-9, time.monotonic() - self.start), 2)


def plot_curves(history: list[dict], path: Path, skip: tuple[str, ...]) -> None:
    """Write ``curves.png``: training losses, validation metrics and learning rate against the step (keys in
    ``skip`` are not losses or metrics)."""
    train = [e for e in history if e.get("kind") == "train"]
    val = [e for e in history if e.get("kind") == "val"]

    def series(entries: list[dict], keys: list[str]) -> list[Series]:
        return [Series(k, [e["step"] for e in entries if k in e],
                       [_num(e[k]) for e in entries if k in e]) for k in keys]

    charts = [Chart(series(train, _keys(train, skip)), title="training losses", xlabel="step"),
              Chart(series(val, _keys(val, skip)), title="validation", xlabel="step"),
              Chart(series(train, [k for k in ("lr", "encoder_lr", "text_encoder_lr") if any(k in e for e in train)]),
                    title="learning rate", xlabel="step")]
    save_charts(path, charts, size=(720, 300))


def _keys(entries: list[dict], skip: tuple[str, ...]) -> list[str]:
    keys: dict[str, None] = {}
    for e in entries:
        for k, v in e.items():
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys[k] = None
    return list(keys)


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else float("nan")

