"""``vislang experiment fusion``: train every fusion strategy with the same budget and seed, and compare.

Configuration precedence, as for ``vislang train``: the :class:`~vislang.tasks.fusion_experiment.FusionExperimentConfig`
defaults < ``--config FILE.yaml`` < ``--set key=value`` and the shortcut flags (``--epochs``, ``--fusions``, ...).
"""

from __future__ import annotations

import argparse

# Shortcut flags -> keys of FusionExperimentConfig.
SHORTCUTS = {
    "data": "data", "root": "root", "fusions": "fusions", "model": "model", "epochs": "epochs",
    "max_steps": "max_steps", "batch_size": "batch_size", "lr": "lr", "seed": "seed", "image_size": "image_size",
    "split": "eval_split", "device": "device", "image_weights": "image_weights", "freeze_image": "freeze_image",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="controlled comparisons (fusion strategies, ...)")
    esub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    f = esub.add_parser(
        "fusion", help="train each fusion strategy on VQA with the same budget and seed; table + plot",
        description="Train the VQA model once per fusion strategy (same parts, data, epochs, batch, learning "
                    "rate and seed), score each on a held-out split per question type with the official VQA "
                    "accuracy beside question-only and image-only baselines; write results.json, table.md "
                    "and fusion.png.")
    f.add_argument("--config", help="YAML file of experiment settings (overridden by --set and the flags below)")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any experiment setting, e.g. --set weight_decay=0 (repeatable)")
    f.add_argument("--data", help="dataset: 'shapes' (2000 training scenes at --image-size) or "
                                  "a spec such as 'shapes:n_train=500,size=32'")
    f.add_argument("--root", help="data root for built-in datasets")
    f.add_argument("--fusions", help="comma-separated strategies (default: late-concat,attention,bilinear,transformer)")
    f.add_argument("--model", help="fusion model (vqa_tiny: a quick smoke run)")
    f.add_argument("--epochs", type=int)
    f.add_argument("--max-steps", type=int)
    f.add_argument("--batch-size", type=int, help="images per batch, each with its ~10 questions")
    f.add_argument("--lr", type=float, help="peak learning rate (warm-up + cosine; default 2e-3)")
    f.add_argument("--seed", type=int)
    f.add_argument("--image-size", type=int)
    f.add_argument("--split", help="held-out split to score (default: test)")
    f.add_argument("--device")
    f.add_argument("--image-weights", metavar="RUN",
                   help="start every image encoder from these weights: a run (e.g. `vislang train regions`, with "
                        "the experiment's CNN) or a weights file")
    f.add_argument("--freeze-image", action="store_true", default=None, help="keep the image encoder frozen")
    f.add_argument("--out", required=True, help="output folder")
    f.set_defaults(func=cmd_fusion, resume=False, skip_bad=False)


def experiment_config(args: argparse.Namespace):
    """The experiment's settings: defaults < ``--config`` < ``--set`` < flags; ``shapes`` is drawn at the
    image size, and a model other than ``vqa`` drops the default parts (those of the ``vqa`` model)."""
    from vislang.commands.train import run_config
    from vislang.tasks.fusion_experiment import SMALL_MODEL, FusionExperimentConfig

    cfg = run_config(FusionExperimentConfig, args, SHORTCUTS)
    if cfg.data == "shapes":
        cfg.data = f"shapes:size={cfg.image_size}"
    if cfg.model != "vqa" and cfg.model_kwargs == SMALL_MODEL:
        cfg.model_kwargs = {}
    return cfg


def cmd_fusion(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vislang.tasks.fusion_experiment import results_table, run_fusion_experiment

    results = run_fusion_experiment(experiment_config(args), args.out)
    print(results_table(results))
    print(f"best: {results['best']}; results.json, table.md and fusion.png written to {Path(args.out)}")
    return 0
