"""``vislang experiment fusion``: which fusion should I use? Train every strategy on the same data with the
same model parts, budget (epochs, batch, learning rate) and seed, then score each on a held-out split with the
official VQA accuracy per question type, beside the question-only and image-only baselines.

Writes into the output folder: ``config.yaml`` (the resolved :class:`FusionExperimentConfig`), one run directory
per strategy, ``results.json`` (everything), ``table.md`` (the README table) and ``fusion.png`` (accuracy per
question type per strategy).
"""

from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vislang.config import config_to_dict, save_config
from vislang.data import load_dataset
from vislang.data.transforms import TransformConfig
from vislang.errors import VislangError
from vislang.fusion import list_fusions
from vislang.models.encoders import count_parameters
from vislang.tasks.base import load_trained, train
from vislang.tasks.common import DataConfig
from vislang.tasks.vqa import VQARunConfig, VQATaskConfig
from vislang.tasks.vqa_eval import evaluate_vqa_run
from vislang.train import OptimConfig, TrainConfig
from vislang.utils.io import atomic_open, atomic_write_json
from vislang.viz.fusion import save_fusion_plot

DEFAULT_FUSIONS = ("late-concat", "attention", "bilinear", "transformer")
QUESTION_TYPES = ("color", "shape", "count", "exists", "relation", "comparison")

SMALL_MODEL = {"image_encoder": "cnn_small", "image_encoder_kwargs": {"widths": [16, 32, 64], "dim": 128},
               "text_encoder_kwargs": {"embed_dim": 64, "hidden_dim": 64},
               "fusion_kwargs": {"hidden_dim": 128, "num_heads": 4, "glimpses": 2, "rank": 5, "depth": 1,
                                 "dropout": 0.1}}
"""The experiment's model parts: a narrow CNN (16/32/64/128 channels; 32 px -> a 4x4 grid, 64 px -> 8x8), a 2x64
bidirectional GRU and a joint width of 128 (one Transformer layer for the transformer fusion), small enough to
train every strategy on one CPU thread in minutes."""


@dataclass
class FusionExperimentConfig:
    """Settings shared by every strategy of the experiment.

    Attributes:
        data: Dataset spec (``shapes`` by default: 2000 training scenes of 64 px, 200 val, 200 test).
        root: Data root.
        fusions: Strategies to compare.
        model: Registered fusion model.
        model_kwargs: Its parts (the same for every strategy).
        epochs: Training epochs of each strategy.
        max_steps: Optimiser steps cap (None: all epochs).
        batch_size: Images per batch (each with all its ~10 questions).
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        grad_clip: Gradient-norm clipping (None: none).
        warmup_ratio: Linear warm-up as a fraction of the steps.
        min_lr_ratio: The cosine decays to ``lr * min_lr_ratio`` (1.0: a constant learning rate).
        seed: Seed of every run.
        image_size: Model input side.
        eval_split: Held-out split scored at the end (checkpoints are picked on ``val``).
        device: Training device.
        image_weights: Start every strategy's image encoder from these weights (a run directory, e.g. a region
            tagger's, or a weights file); None: random.
        freeze_image: Keep the image encoder frozen (with ``image_weights``: its features as they are).
    """

    data: str = "shapes"
    root: str | None = None
    fusions: tuple[str, ...] = DEFAULT_FUSIONS
    model: str = "vqa"
    model_kwargs: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(SMALL_MODEL))
    epochs: int = 5
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.0
    seed: int = 0
    image_size: int = 64
    eval_split: str = "test"
    device: str = "auto"
    image_weights: str | None = None
    freeze_image: bool = False


def run_config(cfg: FusionExperimentConfig, fusion: str) -> VQARunConfig:
    """The VQA run of one strategy: everything but ``fusion`` comes from ``cfg``, the same for every strategy."""
    optim = OptimConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
                        warmup_ratio=cfg.warmup_ratio, min_lr_ratio=cfg.min_lr_ratio, freeze_encoder=cfg.freeze_image)
    model_kwargs = copy.deepcopy(cfg.model_kwargs)
    if cfg.image_weights:
        model_kwargs["image_encoder_kwargs"] = {**model_kwargs.get("image_encoder_kwargs", {}),
                                                "weights": str(cfg.image_weights)}
    return VQARunConfig(
        model=cfg.model, model_kwargs=model_kwargs, fusion=fusion,
        data=DataConfig(name=cfg.data, root=cfg.root, transform=TransformConfig(image_size=cfg.image_size, augment=False)),
        task=VQATaskConfig(),
        train=TrainConfig(epochs=cfg.epochs, max_steps=cfg.max_steps, batch_size=cfg.batch_size, seed=cfg.seed,
                          device=cfg.device, log_every=50, optim=optim))


def check_fusions(cfg: FusionExperimentConfig) -> tuple[str, ...]:
    """The experiment's strategies (blank entries dropped), checked to be registered fusions."""
    fusions = tuple(f.strip() for f in cfg.fusions if f.strip())
    unknown = [f for f in fusions if f not in list_fusions()]
    if unknown or not fusions:
        raise VislangError(f"unknown fusion(s) {', '.join(unknown) or '(none given)'}; known: "
                           f"{', '.join(list_fusions())}")
    return fusions


def run_fusion_experiment(cfg: FusionExperimentConfig, out: str | os.PathLike) -> dict[str, Any]:
    """Train and score every strategy of ``cfg``; returns (and writes) the results. The config is saved as
    ``out/config.yaml`` (``vislang experiment fusion --config out/config.yaml`` runs it again)."""
    fusions = check_fusions(cfg)
    out = Path(out)
    for fusion in fusions:
        run_dir = out / "runs" / fusion
        if (run_dir / "checkpoints" / "last").exists():
            raise VislangError(f"{run_dir} already holds a run; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    eval_ds = load_dataset(cfg.data, cfg.eval_split, root=cfg.root)
    results: dict[str, Any] = {"config": config_to_dict(cfg), "threads": torch.get_num_threads(),
                               "fusions": {}}
    best: tuple[float, str] | None = None
    for fusion in fusions:
        run_dir = out / "runs" / fusion
        print(f"== {fusion}", file=sys.stderr)
        start = time.monotonic()
        fit = train("vqa", run_config(cfg, fusion), run_dir)
        seconds = time.monotonic() - start
        trained = load_trained(run_dir, "vqa", device=cfg.device)
        ev = evaluate_vqa_run(trained, eval_ds.records, f"{eval_ds.name} [{eval_ds.split}]")
        entry = {"parameters": count_parameters(trained.model),
                 "fusion_parameters": count_parameters(trained.model.fusion),
                 "train_seconds": round(seconds, 1), "steps": fit.steps, "best_val_accuracy": fit.best_metric,
                 "accuracy": ev.rows, "n_questions": ev.n_questions}
        results["fusions"][fusion] = entry
        overall = ev.rows["model"]["overall"]
        if best is None or overall > best[0]:
            best = (overall, fusion)
        atomic_write_json(out / "results.json", results)                    # partial results survive a kill
    assert best is not None
    results["best"] = best[1]
    atomic_write_json(out / "results.json", results)
    with atomic_open(out / "table.md", "w", encoding="utf-8") as f:
        f.write(results_table(results))
    save_fusion_plot(results, out / "fusion.png", QUESTION_TYPES)
    return results


def results_table(results: dict[str, Any]) -> str:
    """The Markdown table: one row per strategy, then the baselines of the best strategy's run."""
    fusions = results["fusions"]
    types = [t for t in QUESTION_TYPES if any(t in e["accuracy"]["model"] for e in fusions.values())]
    head = ["fusion", "params", "train s", "overall", *types]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]

    def row(name: str, acc: dict[str, float], params: str = "", seconds: str = "") -> str:
        cells = [name, params, seconds, f"{100 * acc['overall']:.1f}", *[f"{100 * acc.get(t, float('nan')):.1f}"
                                                                          for t in types]]
        return "| " + " | ".join(cells) + " |"

    for name, e in fusions.items():
        lines.append(row(f"**{name}**", e["accuracy"]["model"], f"{e['parameters'] / 1e6:.2f}M",
                         f"{e['train_seconds']:.0f}"))
    best = results.get("best") or next(iter(fusions))
    for system in ("question-only (image blanked)", "image-only (question blanked)",
                   "question prior (train majority)"):
        if system in fusions[best]["accuracy"]:
            label = system if system.startswith("question prior") else f"{system}, {best} run"
            lines.append(row(label, fusions[best]["accuracy"][system]))
    return "\n".join(lines) + "\n"
