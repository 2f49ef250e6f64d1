"""The one training loop of vislang: every task (captioning, retrieval, VQA, classification) trains with
:func:`fit`; what differs lives in a small :class:`Task` object (batch -> losses, model -> metrics).

The loop: AdamW with decoupled weight decay (none on biases and norms), linear warm-up + cosine decay,
gradient accumulation and clipping, bf16 autocast on GPU, validation every ``eval_every`` epochs with the
best and last checkpoints kept, early stopping, a stop with a clear error on a NaN/inf loss, a progress bar,
``log.jsonl`` and ``curves.png`` in the run directory. ``resume=True`` continues a killed run from
``checkpoints/last`` and, on CPU, ends with weights bitwise identical to an uninterrupted run.

Run directory::

    config.yaml            the resolved config of the run
    log.jsonl              {"kind": "train", "step", "epoch", <losses>, "lr", "images_per_s", "time", ...}
                           and {"kind": "val", "step", "epoch", <metrics>, "best", "time"} per validation
    curves.png             training losses, validation metrics and learning rate against the step
    checkpoints/last/      a model folder (config.json, model.safetensors, preprocessor.json, task files,
                           README.md) plus train_state.pt
    checkpoints/best/      the same, at the best validation so far
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from vislang.config import config_to_dict, save_config
from vislang.data.loader import build_loader
from vislang.errors import VislangError
from vislang.layers.sync_norm import statistics_excluded, unsync_batchnorm
from vislang.train.checkpoint import (
    copy_checkpoint,
    find_checkpoint,
    load_train_state,
    load_weights,
    read_config,
    save_checkpoint,
)
from vislang.train.config import OptimConfig, TrainConfig, check_train_config
from vislang.train.distributed import filler_batch, setup_entry, validate_sharded, wrap_for_ranks
from vislang.train.loggers import Window, open_logger, plot_curves
from vislang.train.optim import ENCODER_ATTR, build_optimizer, build_scheduler, param_groups, warmup_steps
from vislang.train.runtime import (
    autocast_dtype,
    read_log,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
)
from vislang.utils import distributed as dist
from vislang.utils.io import atomic_write_jsonl, progress
from vislang.utils.lock import file_lock

__all__ = ["FitResult", "OptimConfig", "Task", "TrainConfig", "TrainingDivergedError", "fit", "resolve_device",
           "seed_everything"]

STATE_VERSION = 1
_RESERVED = ("kind", "step", "epoch", "time", "lr", "encoder_lr", "text_encoder_lr", "images_per_s", "grad_norm",
             "best")


class Task(Protocol):
    """What a task tells the loop. ``monitor`` names the metric that picks the best checkpoint, ``mode``
    says whether higher ("max") or lower ("min") is better. A task may also define
    ``after_optimizer_step(model)``, called after each optimiser step (e.g. to update a moving average of the
    weights), and ``val_records``, ``predict_val(model, records) -> list`` and ``score_val(records, predictions)
    -> metrics``, with which torchrun's ranks each predict a part of the validation records."""

    monitor: str
    mode: str

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, Tensor]:
        """Losses of one batch (already on the model's device): must contain ``loss``, the value
        back-propagated; other entries are logged."""
        ...

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Metrics on the validation data, including ``monitor`` (called in eval mode under no_grad)."""
        ...

    def save_artifacts(self, directory: Path) -> None:
        """Write the files a checkpoint needs besides the weights (e.g. ``vocab.json``) into ``directory``."""
        ...


@dataclass
class FitResult:
    """The outcome of :func:`fit`.

    Attributes:
        run_dir: The run directory.
        steps: Optimiser steps done (in total, across resumes).
        epochs: Epochs completed.
        best_metric: Best value of the task's monitored metric (None if never validated).
        best_dir: ``checkpoints/best`` (None if never validated).
        last_dir: ``checkpoints/last``.
        history: Every ``log.jsonl`` entry of the run.
        stopped: "completed", "early_stopping" or "max_steps".
    """

    run_dir: Path
    steps: int
    epochs: int
    best_metric: float | None
    best_dir: Path | None
    last_dir: Path
    history: list[dict]
    stopped: str


class TrainingDivergedError(VislangError):
    """The loss or the gradient norm became NaN or infinite; the last good checkpoint is kept."""


def fit(model: nn.Module, task: Task, train_samples: Dataset, cfg: TrainConfig, run_dir: str | os.PathLike, *,
        model_spec: dict, pad_id: int = 0, resume: bool = False,
        config_to_save: dict | None = None, card: Callable[[dict], str] | None = None) -> FitResult:
    """Train ``model`` on ``train_samples`` for ``task``.

    A fresh run seeds python, numpy and torch with ``cfg.seed`` first (seed before building the model as
    well, for a reproducible initialisation); a resumed run restores the RNG states of its checkpoint.

    Args:
        model: The model (moved to the training device).
        task: Losses per batch, validation metrics and checkpoint artifacts.
        train_samples: Map-style dataset of sample dicts (e.g. ``ImageTextSamples``), batched with
            ``PadCollate(pad_id)`` by a seeded loader.
        cfg: Training settings.
        run_dir: Directory of the run (created).
        model_spec: ``{"model": registry name, "model_config": builder options, "task", "preprocessor",
            ...}``, saved as the model folder's ``config.json`` and ``preprocessor.json``.
        pad_id: Padding id of token sequences.
        resume: Continue from ``run_dir/checkpoints/last``.
        config_to_save: The fully resolved config of the run, saved as ``config.yaml``.
        card: Makes each saved folder's model card (``README.md``) from its ``config.json`` body.

    Returns:
        What happened; ``model`` holds the last weights.

    Raises:
        VislangError: Bad settings, a run directory that already holds a run (without ``resume``) or no
            checkpoint to resume from.
        TrainingDivergedError: The loss became NaN/inf (the message names the step).
    """
    return Trainer(model, task, train_samples, cfg, Path(run_dir), model_spec=model_spec, pad_id=pad_id,
                   config_to_save=config_to_save, card=card).run(resume=resume)


@dataclass
class _Progress:
    """Where training is: everything :class:`Trainer` saves in ``train_state.pt`` besides the optimiser,
    scheduler, sampler and RNG states."""

    step: int = 0             # optimiser steps done
    epoch: int = 0            # epochs completed
    batch_in_epoch: int = 0   # micro-batches of the current epoch consumed
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0        # validations since the last improvement
    elapsed: float = 0.0      # training seconds before this process
    stopped: str | None = None


def nothing_to_resume(run_dir: Path) -> VislangError:
    """The error of ``--resume`` on a run directory without a checkpoint."""
    return VislangError(f"nothing to resume in {run_dir}: it has no checkpoints/last; start the run without --resume")


def can_resume(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint to resume from (``last``, or ``best`` when a kill came between)."""
    return any(find_checkpoint(run_dir / "checkpoints" / name) is not None for name in ("last", "best"))


def run_lock(run_dir: Path):
    """The run directory's lock (``RUN/.lock``, the directory made if needed), held by one training process at
    a time; re-entrant in the process that holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return file_lock(run_dir, inside=True, what="run directory",
                     hint="wait until that run ends, or choose another --out")


class Trainer:
    """One training run (use :func:`fit`). The methods follow the run from top to bottom."""

    def __init__(self, model: nn.Module, task: Task, train_samples: Dataset, cfg: TrainConfig,
                 run_dir: Path, *, model_spec: dict, pad_id: int = 0, config_to_save: dict | None = None,
                 card: Callable[[dict], str] | None = None):
        check_train_config(cfg, task)
        self.model, self.task, self.cfg, self.run_dir = model, task, cfg, run_dir
        self.model_spec, self.config_to_save, self.card = model_spec, config_to_save, card
        device = resolve_device(cfg.device)
        self.env = dist.init_distributed(device, cfg.dist_timeout)  # a single process unless torchrun said so
        self.device = dist.rank_device(device, self.env)
        self.main = self.env.is_main  # rank 0 alone writes checkpoints, logs, curves and the progress bar
        self.amp_dtype = autocast_dtype(cfg.amp, self.device)
        self.loader = build_loader(train_samples, cfg.batch_size, shuffle=True, workers=cfg.workers,
                                   seed=cfg.seed, pad_id=pad_id, rank=self.env.rank, world_size=self.env.world_size,
                                   pin_memory=self.device.type == "cuda")
        self.n_samples = len(train_samples)
        if self.n_samples == 0:
            raise VislangError("no training samples")
        self.global_batch = cfg.batch_size * self.env.world_size  # samples of one micro-batch over all ranks
        self.batches_per_epoch = math.ceil(self.n_samples / self.global_batch)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.accum_steps)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.last_dir = run_dir / "checkpoints" / "last"
        self.best_dir = run_dir / "checkpoints" / "best"
        self.log_path = run_dir / "log.jsonl"
        self.p = _Progress()
        self.history: list[dict] = []
        self._epoch_sampler_state: dict[str, Any] = {}
        self._start_time = time.monotonic()
        self._elapsed_before = 0.0

    # --------------------------------------------------------------------------------------------- setup

    def run(self, resume: bool = False) -> FitResult:
        """Train (or continue training) until the epochs, ``max_steps`` or early stopping end it, holding the
        run directory's lock (``RUN/.lock``) throughout: another process training into it is refused. Under
        torchrun rank 0 holds it, and a failed collective ends every rank with one line naming the rank."""
        with run_lock(self.run_dir) if self.main else nullcontext(), dist.collective_errors("training"):
            return self._run(resume)

    def _run(self, resume: bool) -> FitResult:
        has_run = find_checkpoint(self.last_dir) is not None
        if resume and not has_run and find_checkpoint(self.best_dir) is not None:
            if self.main:
                copy_checkpoint(self.best_dir, self.last_dir)  # killed between writing best and last
            has_run = True
        if resume and not has_run:
            raise nothing_to_resume(self.run_dir)
        if not resume and has_run:
            raise VislangError(f"{self.run_dir} already holds a run (checkpoints/last); continue it with "
                               "--resume or choose another run directory")
        resolved = self.config_to_save
        if resolved is None:
            resolved = {"model": self.model_spec, "train": config_to_dict(self.cfg)}
        if self.main:
            save_config(resolved, self.run_dir / "config.yaml")
        dist.barrier()  # rank 0 has repaired checkpoints/last before any rank reads it
        self.model.to(self.device)
        if self.cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if resume:
            load_weights(self.model, self.last_dir)  # before the optimiser sees the parameters
        else:  # rank r > 0 draws its own random stream (dropout, noise); rank 0 the single process's
            seed_everything(self.cfg.seed + 7919 * self.env.rank)
        self.step_fn, self.ddp = wrap_for_ranks(self.model, self.task, self.device, self.env,
                                                sync_bn=self.cfg.sync_batchnorm, compile=self.cfg.compile)
        o = self.cfg.optim
        groups, self.param_summary = param_groups(self.model, lr=o.lr, weight_decay=o.weight_decay,
                                                  encoder_lr=o.encoder_lr, freeze_encoder=o.freeze_encoder,
                                                  text_encoder_lr=o.text_encoder_lr)
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = build_optimizer(groups, lr=o.lr, betas=o.betas)
        self.warmup = warmup_steps(self.total_steps, o.warmup_steps, o.warmup_ratio)
        self.scheduler = build_scheduler(self.optimizer, total_steps=self.total_steps, warmup=self.warmup,
                                         min_lr_ratio=o.min_lr_ratio)
        if resume:
            self._restore()
        elif self.main:  # a run killed before its first checkpoint starts over
            self.log_path.unlink(missing_ok=True)
            shutil.rmtree(self.best_dir, ignore_errors=True)
        try:
            self._train()
        finally:
            self._close_bar()
            if self.ddp is not None:
                unsync_batchnorm(self.model)  # the plain BatchNorm layers back, same weights and statistics
        best_dir = self.best_dir if find_checkpoint(self.best_dir) else None
        return FitResult(self.run_dir, self.p.step, self.p.epoch, self.p.best_metric, best_dir, self.last_dir,
                         self.history, self.p.stopped or "completed")

    def _restore(self) -> None:
        """Load the optimiser, scheduler, position, sampler and RNG states of ``checkpoints/last``, and cut
        ``log.jsonl`` back to the checkpoint's step (a killed run may have logged past it)."""
        state = load_train_state(self.last_dir)
        if state is None or state.get("version") != STATE_VERSION:
            raise VislangError(f"{self.last_dir} has no usable train_state.pt; it cannot be resumed")
        was = (state["batches_per_epoch"], state["accum_steps"])
        if was != (self.batches_per_epoch, self.cfg.accum_steps):
            raise VislangError(
                f"cannot resume {self.run_dir}: it was trained with {was[0]} batches per epoch and "
                f"accum_steps={was[1]}, now {self.batches_per_epoch} and {self.cfg.accum_steps} "
                "(keep the data, the global batch (batch_size x ranks) and accum_steps of the run)")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        schedule = self.scheduler.lr_lambdas[0]
        if (schedule.total, schedule.warmup) != (self.total_steps, self.warmup):  # epochs/max_steps changed
            print(f"note: the lr schedule now spans {self.total_steps} steps (was {schedule.total})",
                  file=sys.stderr)
            for fn in self.scheduler.lr_lambdas:
                fn.total, fn.warmup = self.total_steps, self.warmup
        self.loader.sampler.load_state_dict(state["sampler"])
        ranks = state.get("rng_ranks") or [state["rng"]]
        set_rng_state(ranks[self.env.rank] if self.env.rank < len(ranks) else state["rng"])
        if self.env.rank >= len(ranks):  # more ranks than the run had: a stream of its own
            seed_everything(self.cfg.seed + 7919 * self.env.rank + state["progress"]["step"])
        self.p = _Progress(**state["progress"])
        self._elapsed_before = self.p.elapsed
        self.history = read_log(self.log_path, max_step=self.p.step)
        if self.main:
            atomic_write_jsonl(self.log_path, self.history)

    # ---------------------------------------------------------------------------------------------- train

    def _train(self) -> None:
        p = self.p
        self._bar = progress(total=self.total_steps, desc="train", unit="step", disable=None if self.main else True)
        self._bar.n = self._bar.last_print_n = self._bar.initial = p.step
        self._log_file = self._extra_log = None
        if self.main:
            self._log_file = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in _close_bar)
            self._extra_log = open_logger(self.cfg.logger, self.run_dir, p.step)  # closed in _close_bar
        self._window = Window()
        if self.env.enabled:  # the global batch, in the log and on the progress bar
            entry, line = setup_entry(self.env, self.device, self.cfg.batch_size, self.cfg.accum_steps, p.step)
            self._write_log(entry)
            if not self._bar.disable:
                self._bar.write(line)
        if p.stopped == "early_stopping":
            return
        while p.epoch < self.cfg.epochs and p.step < self.total_steps:
            self._bar.set_description(f"epoch {p.epoch + 1}/{self.cfg.epochs}")
            self._train_epoch()
            epoch_done = p.batch_in_epoch >= self.batches_per_epoch
            if epoch_done:
                p.epoch, p.batch_in_epoch = p.epoch + 1, 0
            finished = p.epoch >= self.cfg.epochs or p.step >= self.total_steps
            improved = False
            if (epoch_done and p.epoch % self.cfg.eval_every == 0) or finished:
                improved = self._validate()
                if self.cfg.early_stopping is not None and p.bad_evals >= self.cfg.early_stopping:
                    p.stopped = "early_stopping"  # saved with the state, so a resume does not train on
            self._save(improved, epoch_done)
            if p.stopped:
                return
        p.stopped = "completed" if p.epoch >= self.cfg.epochs else "max_steps"

    def _train_epoch(self) -> None:
        """Micro-batches of one epoch (from ``batch_in_epoch`` on) until it ends or ``max_steps``."""
        p, cfg = self.p, self.cfg
        self._epoch_sampler_state = {**self.loader.sampler.state_dict(), "start": 0}
        self.model.train()
        if cfg.optim.freeze_encoder:
            getattr(self.model, ENCODER_ATTR).eval()
        micro, sums, samples = 0, defaultdict(float), 0
        weights = self._group_weights(p.batch_in_epoch)
        batches = iter(self.loader)
        while p.batch_in_epoch + micro < self.batches_per_epoch:
            batch = next(batches, {})  # {}: this rank's share of the epoch's last global batch is empty
            n = _batch_size(batch)
            sync = micro + 1 == len(weights)
            if n or self.ddp is not None:  # an empty batch: every image of it failed to decode (skipped)
                # under DDP every rank steps: one without samples on a filler of weight 0
                losses, share = self._forward_backward(batch if n else filler_batch(self.loader), weights[micro], sync,
                                                       real=n > 0)
                for k, v in losses.items():
                    sums[k] += v * share
            samples += n
            micro += 1
            if micro < len(weights):
                continue
            lrs = [g["lr"] for g in self.optimizer.param_groups]
            grad_norm = self._optimizer_step()
            p.step, p.batch_in_epoch = p.step + 1, p.batch_in_epoch + micro
            self._after_step(dict(sums), lrs, grad_norm, samples)
            micro, sums, samples = 0, defaultdict(float), 0
            if p.step >= self.total_steps:
                break
            weights = self._group_weights(p.batch_in_epoch)
            if cfg.checkpoint_every and p.step % cfg.checkpoint_every == 0 \
                    and p.batch_in_epoch < self.batches_per_epoch:
                self._save(False, epoch_done=False)

    def _group_weights(self, first_batch: int) -> list[float]:
        """Loss weights of the micro-batches of the optimiser step starting at ``first_batch``: proportional
        to their sizes, summing to 1, so accumulating them is one big batch's mean."""
        bs = self.global_batch
        last = min(first_batch + self.cfg.accum_steps, self.batches_per_epoch)
        sizes = [min(bs, self.n_samples - b * bs) for b in range(first_batch, last)]
        return [s / sum(sizes) for s in sizes]

    def _forward_backward(self, batch: dict, weight: float, sync: bool, real: bool = True
                          ) -> tuple[dict[str, float], float]:
        """Losses of one micro-batch, back-propagated with ``weight`` (its share of the optimiser step); under
        DDP times this rank's share of the micro-batch's items (train/distributed.py), with the gradients
        all-reduced when ``sync``. Returns the losses and the share of them this rank logs."""
        batch = {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v
                 for k, v in batch.items()}
        if self.cfg.channels_last and isinstance(batch.get("image"), Tensor) and batch["image"].dim() == 4:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        with self.ddp.no_sync() if self.ddp is not None and not sync else nullcontext():
            with self._autocast(), nullcontext() if real else statistics_excluded():
                out = dict(self.step_fn(batch))
            if "loss" not in out:
                raise VislangError(f"{type(self.task).__name__}.training_step returned no 'loss' "
                                   f"(got {sorted(out)})")
            count = out.pop("count", None)
            share = weight
            if self.ddp is not None:
                mine = (float(count) if count is not None else float(_batch_size(batch))) if real else 0.0
                total = float(dist.all_reduce_sum(torch.tensor([mine], dtype=torch.float64)))
                share = weight * mine / total if total > 0 else 0.0
                weight = share * self.env.world_size  # DDP averages the gradients over the ranks
            loss = out["loss"]
            value = float(loss.detach().float())
            if not math.isfinite(value):
                self._diverged(f"the loss is {value}")
            (loss.float() * weight).backward()
        return {k: float(v.detach().float()) if isinstance(v, Tensor) else float(v) for k, v in out.items()}, share

    def _optimizer_step(self) -> float:
        clip = self.cfg.optim.grad_clip
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip if clip is not None else float("inf")))
        if not math.isfinite(norm):
            self._diverged(f"the gradient norm is {norm}")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        after = getattr(self.task, "after_optimizer_step", None)
        if after is not None:  # e.g. a moving average of the weights
            after(self.model)
        return norm

    def _diverged(self, what: str) -> None:
        p = self.p
        if find_checkpoint(self.last_dir):
            step = _checkpoint_step(self.last_dir)
            kept = f"the last good checkpoint (step {step}) is kept in {self.last_dir}"
        else:
            kept = "no checkpoint had been written yet"
        self._write_log({"kind": "diverged", "step": p.step + 1, "epoch": p.epoch, "error": what})
        raise TrainingDivergedError(
            f"training stopped at step {p.step + 1} (epoch {p.epoch + 1}): {what}; {kept}. "
            "Try a lower learning rate, a warm-up, gradient clipping or amp=off.")

    def _after_step(self, losses: dict[str, float], lrs: list[float], grad_norm: float, samples: int) -> None:
        """Progress bar and, every ``log_every`` steps, a ``log.jsonl`` entry."""
        p = self.p
        self._window.add(losses, grad_norm, samples)
        self._bar.update(1)
        if p.step % self.cfg.log_every == 0 or p.step == self.total_steps:
            if self.env.enabled:  # every rank's share of the losses and samples
                self._window.reduce(self.env.world_size)
            epoch = p.epoch + p.batch_in_epoch / self.batches_per_epoch
            entry = {"kind": "train", "step": p.step, "epoch": epoch}
            entry.update(self._window.means())
            names = [g["name"] for g in self.optimizer.param_groups]
            model_lrs = [lr for lr, name in zip(lrs, names) if name.startswith("model")]
            entry["lr"] = model_lrs[0] if model_lrs else lrs[0]
            for part in ("encoder", "text_encoder"):  # separate encoder learning rates
                part_lrs = [lr for lr, name in zip(lrs, names) if name.startswith(part)]
                if part_lrs:
                    entry[f"{part}_lr"] = part_lrs[0]
            entry["images_per_s"] = self._window.rate()
            entry["time"] = self._elapsed()
            self._write_log(entry)
            self._bar.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{entry['lr']:.2e}",
                                  img_s=f"{entry['images_per_s']:.1f}", refresh=False)
            self._window = Window()

    # ------------------------------------------------------------------------------------------- validate

    def _validate(self) -> bool:
        """Run the task's validation; True when the monitored metric improved."""
        p, task = self.p, self.task
        raw: dict[str, Any] = {}
        sharded = self.env.enabled and hasattr(task, "predict_val")  # else rank 0 alone, the others wait
        if self.main or sharded:
            self.model.eval()
            with torch.no_grad(), self._autocast():
                raw = validate_sharded(task, self.model, self.env) if sharded else task.validate(self.model)
            self.model.train()
        raw = dist.broadcast_object(raw)
        bad = [k for k, v in raw.items() if not isinstance(v, (int, float, Tensor)) or isinstance(v, bool)]
        if bad:
            raise VislangError(f"{type(task).__name__}.validate() must return numbers; {bad} are not")
        metrics = {k: float(v) for k, v in raw.items()}
        if not metrics:
            return False
        if task.monitor not in metrics:
            raise VislangError(f"{type(task).__name__}.validate() returned no '{task.monitor}' metric "
                               f"(got {', '.join(sorted(metrics))})")
        clash = [k for k in metrics if k in _RESERVED]
        if clash:
            raise VislangError(f"{type(task).__name__}.validate() returned reserved metric names {clash}")
        value = metrics[task.monitor]
        improved = math.isfinite(value) and (
            p.best_metric is None or (value > p.best_metric if task.mode == "max" else value < p.best_metric))
        if improved:
            p.best_metric, p.best_step, p.bad_evals = value, p.step, 0
        else:
            p.bad_evals += 1
        self._write_log({"kind": "val", "step": p.step, "epoch": p.epoch, **metrics, "best": improved,
                         "time": self._elapsed()})
        if self.main:
            self._plot()
        if not self._bar.disable:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            self._bar.write(f"step {p.step} epoch {p.epoch}: {shown}" + (" (best)" if improved else ""))
        return improved

    # ------------------------------------------------------------------------------------- save and log

    def _save(self, improved: bool, epoch_done: bool) -> None:
        """Write ``last`` (and ``best`` first when the metric improved: a crash between the two then resumes
        from the older ``last`` and redoes the same steps)."""
        p = self.p
        rngs = dist.gather_objects(rng_state()) if self.env.enabled else None
        if not self.main:
            return
        sampler = ({**self.loader.sampler.state_dict(), "start": 0} if epoch_done else
                   {**self._epoch_sampler_state, "start": p.batch_in_epoch * self.global_batch})
        p.elapsed = self._elapsed()
        state = {
            "version": STATE_VERSION,
            "progress": vars(p).copy(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": sampler,
            "rng": rngs[0] if rngs else rng_state(),
            "rng_ranks": rngs,
            "world_size": self.env.world_size,
            "batches_per_epoch": self.batches_per_epoch,
            "accum_steps": self.cfg.accum_steps,
            "total_steps": self.total_steps,
        }
        val = next((e for e in reversed(self.history) if e.get("kind") == "val"), None)
        metrics = {k: v for k, v in (val or {}).items() if k not in _RESERVED}
        info = {"step": p.step, "epoch": p.epoch, "monitor": self.task.monitor, "best_metric": p.best_metric,
                "val_metrics": metrics}
        artifacts = getattr(self.task, "save_artifacts", None)
        if improved:
            save_checkpoint(self.best_dir, self.model, self.model_spec, state, artifacts=artifacts, info=info,
                            card=self.card)
            copy_checkpoint(self.best_dir, self.last_dir)
        else:
            save_checkpoint(self.last_dir, self.model, self.model_spec, state, artifacts=artifacts, info=info,
                            card=self.card)

    def _write_log(self, entry: dict) -> None:
        entry = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in entry.items()}
        self.history.append(entry)
        if self._log_file is None:  # a rank other than 0
            return
        self._log_file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._log_file.flush()
        if self._extra_log is not None:
            self._extra_log.write(entry)

    def _plot(self) -> None:
        plot_curves(self.history, self.run_dir / "curves.png", skip=_RESERVED)

    def _autocast(self) -> AbstractContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _elapsed(self) -> float:
        """Training seconds so far, including those of the processes this run was resumed from."""
        return round(self._elapsed_before + time.monotonic() - self._start_time, 3)

    def _close_bar(self) -> None:
        for name in ("_bar", "_log_file", "_extra_log"):
            obj = getattr(self, name, None)
            if obj is not None:
                obj.close()


def _batch_size(batch: dict) -> int:
    if not batch:
        return 0
    if "image" in batch:
        return len(batch["image"])
    return len(next(iter(batch.values())))


def _checkpoint_step(directory: Path) -> int | str:
    try:
        return read_config(directory).get("step", "?")
    except VislangError:
        return "?"
