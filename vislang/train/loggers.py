"""Where a training run logs besides ``log.jsonl`` (always written): ``"jsonl"`` (nothing else) or
``"tensorboard"`` (TensorBoard event files in ``RUN/tensorboard/``, from the ``tensorboard`` extra).

    tensorboard --logdir runs/        # train/loss, train/lr, val/<metric>, ... against the step
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vislang.errors import VislangError

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
