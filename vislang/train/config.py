"""What a training run is configured with, whatever the task: the loop's and the optimiser's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vislang.errors import VislangError
from vislang.train.loggers import check_logger


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Attributes:
        lr: Peak learning rate.
        weight_decay: AdamW decoupled weight decay (not applied to biases, norms and 1-D parameters).
        betas: AdamW betas.
        warmup_steps: Linear warm-up steps; the warm-up lasts ``max(warmup_steps, warmup_ratio * total)``.
        warmup_ratio: Warm-up as a fraction of the total optimiser steps.
        min_lr_ratio: The cosine decays to ``lr * min_lr_ratio``.
        grad_clip: Clip the global gradient norm to this (None: no clipping).
        encoder_lr: Learning rate of ``model.image_encoder`` (None: ``lr``).
        freeze_encoder: Freeze ``model.image_encoder`` (no gradients, kept in eval mode).
        text_encoder_lr: Learning rate of ``model.text_encoder`` (None: ``lr``), for fine-tuning a pre-trained
            text tower.
    """

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    encoder_lr: float | None = None
    freeze_encoder: bool = False
    text_encoder_lr: float | None = None


@dataclass
class TrainConfig:
    """How to train, whatever the task.

    Attributes:
        epochs: Passes over the training samples.
        batch_size: Samples per micro-batch (per process under torchrun: the global batch is
            ``batch_size * world size * accum_steps``).
        accum_steps: Micro-batches per optimiser step (gradient accumulation).
        seed: Seeds the data order, the augmentations and torch/numpy/python RNGs.
        workers: DataLoader worker processes.
        device: "auto" (cuda when available, else cpu), "cpu", "cuda", "cuda:1", ...
        amp: "auto" (bf16 autocast on cuda, off on cpu), "bf16" or "off".
        max_steps: Stop after this many optimiser steps in total (None: run all epochs).
        eval_every: Epochs between validations (the last epoch is always validated).
        early_stopping: Stop after this many validations without improvement (None: never).
        checkpoint_every: Also save ``last`` every this many optimiser steps (besides each epoch end).
        log_every: Optimiser steps between ``log.jsonl`` training entries.
        logger: Also log to ``"tensorboard"`` (event files in ``RUN/tensorboard/``; needs the
            ``tensorboard`` extra) or only to ``log.jsonl`` (``"jsonl"``, always written).
        compile: ``torch.compile`` the training step (the model's forward, loss and backward graph); the
            first steps then take longer while it compiles.
        channels_last: Keep images and convolution weights in channels-last memory order (faster convolutions
            on recent GPUs; usually not on CPU).
        dist_timeout: Seconds a collective of a distributed run (torchrun) waits for the other ranks: a rank
            that dies or stalls ends every rank with an error within it.
        sync_batchnorm: Under torchrun, synchronise BatchNorm statistics across ranks (N ranks of B samples
            then train like one process of N·B); off: each rank normalises its own batch.
        optim: Optimiser and schedule.
    """

    epochs: int = 10
    batch_size: int = 32
    accum_steps: int = 1
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    amp: str = "auto"
    max_steps: int | None = None
    eval_every: int = 1
    early_stopping: int | None = None
    checkpoint_every: int | None = None
    log_every: int = 10
    logger: str = "jsonl"
    compile: bool = False
    channels_last: bool = False
    dist_timeout: float = 600.0
    sync_batchnorm: bool = True
    optim: OptimConfig = field(default_factory=OptimConfig)


def check_train_config(cfg: TrainConfig, task: Any) -> None:
    """Refuse impossible training settings (and a task object without ``monitor`` / ``mode``) in one line."""
    name = type(task).__name__
    checks = [
        (cfg.epochs >= 1, "epochs must be >= 1"),
        (cfg.batch_size >= 1, "batch_size must be >= 1"),
        (cfg.accum_steps >= 1, "accum_steps must be >= 1"),
        (cfg.eval_every >= 1, "eval_every must be >= 1"),
        (cfg.log_every >= 1, "log_every must be >= 1"),
        (cfg.workers >= 0, "workers must be >= 0"),
        (cfg.max_steps is None or cfg.max_steps >= 1, "max_steps must be >= 1 (or none)"),
        (cfg.early_stopping is None or cfg.early_stopping >= 1, "early_stopping must be >= 1 (or none)"),
        (cfg.checkpoint_every is None or cfg.checkpoint_every >= 1,
         "checkpoint_every must be >= 1 (or none)"),
        (cfg.dist_timeout > 0, "dist_timeout must be > 0 seconds"),
        (cfg.optim.lr > 0, "optim.lr must be > 0"),
        (cfg.optim.grad_clip is None or cfg.optim.grad_clip > 0, "optim.grad_clip must be > 0 (or none)"),
        (cfg.amp in ("auto", "bf16", "off"), f"amp must be auto, bf16 or off, not {cfg.amp!r}"),
        (isinstance(getattr(task, "monitor", None), str), f"{name}.monitor must name a metric"),
        (getattr(task, "mode", None) in ("max", "min"), f"{name}.mode must be 'max' or 'min'"),
    ]
    for ok, message in checks:
        if not ok:
            raise VislangError(f"bad training config: {message}")
    check_logger(cfg.logger)  # an unknown logger, or tensorboard not installed: fail before any work
