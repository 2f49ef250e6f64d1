"""What the one training loop does differently under ``torchrun``: the task's step wrapped in
DistributedDataParallel, synchronised BatchNorm, the filler step of a rank with no samples, and the loss
weights that make N ranks of B samples train exactly like one process of N·B.

Loss weights. A task's ``loss`` is a mean over some items of its batch (samples by default; a task may return
``count``, e.g. the caption tokens its loss averages over). Under DDP the ranks first sum their counts (one
small all-reduce per micro-batch); rank r back-propagates ``loss * N * count_r / total``, and DDP's average
over the N ranks leaves the gradient of the mean over every rank's items: what one process computes on the
whole micro-batch. A task whose loss is already global (a contrastive loss over features gathered from every
rank with gradients, the same number on every rank) returns ``count`` = global items / N, which gives the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from vislang.errors import VislangError
from vislang.layers.sync_norm import sync_batchnorm
from vislang.utils.distributed import DistEnv, backend_for, gather_objects


class TaskStep(nn.Module):
    """A task's ``training_step`` as a module's ``forward``, so that DDP sees (and synchronises) every forward
    of the model whatever methods of it the task calls."""

    def __init__(self, model: nn.Module, task: Any):
        super().__init__()
        self.model = model
        self._task = task

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return self._task.training_step(self.model, batch)


def wrap_for_ranks(model: nn.Module, task: Any, device: torch.device, env: DistEnv, *,
                   sync_bn: bool, compile: bool = False) -> tuple[Callable, DistributedDataParallel | None]:
    """The callable that runs one training step (``torch.compile``-d when ``compile``), and the DDP wrapper
    (None in a single process).

    Call before building the optimiser: synchronised BatchNorm layers replace the model's BatchNorm modules
    (and their parameters) in place.
    """
    if env.enabled and sync_bn:
        sync_batchnorm(model, device)
    step: nn.Module = TaskStep(model, task)
    ddp = None
    if env.enabled:
        ddp = DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None,
                                      forward_sync_buffers=not sync_bn, gradient_as_bucket_view=True)
        step = ddp
    return (torch.compile(step) if compile else step), ddp


def filler_batch(loader: DataLoader) -> dict[str, Any]:
    """One sample (the dataset's first) for a rank whose share of a batch is empty: it steps with weight 0, so
    that every rank enters the same gradient all-reduce; ``filler`` tells a task that gathers every rank's
    samples to leave it out."""
    batch = loader.collate_fn([loader.dataset[(0, 0)]])
    if not batch:
        raise VislangError("the first training sample cannot be read, and a rank needs it as a filler")
    return {**batch, "filler": True}


def setup_entry(env: DistEnv, device: torch.device, batch_size: int, accum_steps: int, step: int
                ) -> tuple[dict[str, Any], str]:
    """The log entry and the line that state a distributed run's ranks, backend and global batch."""
    backend, world = backend_for(device), env.world_size
    entry = {"kind": "setup", "step": step, "world_size": world, "backend": backend, "batch_size": batch_size,
             "accum_steps": accum_steps, "global_batch": batch_size * world * accum_steps}
    line = (f"{world} ranks ({backend}): global batch {entry['global_batch']} = {batch_size} per rank x {world} "
            f"ranks x {accum_steps} accumulation")
    return entry, line


def validate_sharded(task: Any, model: nn.Module, env: DistEnv) -> dict[str, float]:
    """Validation split over the ranks: each predicts its contiguous part of ``task.val_records``
    (``task.predict_val``), rank 0 scores them all (``task.score_val``) and returns the metrics; the others
    return ``{}``."""
    records = list(task.val_records)
    n, r, w = len(records), env.rank, env.world_size
    parts = gather_objects(task.predict_val(model, records[n * r // w:n * (r + 1) // w]))
    return task.score_val(records, [p for part in parts for p in part]) if env.is_main else {}
