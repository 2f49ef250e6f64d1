"""``vislang train <task>``: train a model with the shared loop; one sub-command per registered task.

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

# Shortcut flags -> config keys, shared by every task (a task adds its own in TaskSpec.train_flags).
SHORTCUTS = {
    "data": "data.name", "model": "model", "epochs": "train.epochs", "lr": "train.optim.lr",
    "batch_size": "train.batch_size", "seed": "train.seed", "workers": "train.workers",
    "image_size": "data.transform.image_size", "max_steps": "train.max_steps", "root": "data.root",
    "device": "train.device", "logger": "train.logger", "amp": "train.amp", "compile": "train.compile",
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
    p.add_argument("--amp", choices=("auto", "bf16", "off"), help="autocast (auto: bf16 on CUDA, off on CPU)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the training step")
    p.add_argument("--logger", choices=("jsonl", "tensorboard"),
                   help="also write TensorBoard event files (log.jsonl is always written)")
    p.add_argument("--root", help="data root for built-in datasets")
    p.add_argument("--skip-bad", action="store_true", help="leave out samples whose image is missing or unreadable")
    p.add_argument("--out", required=True, help="run directory (checkpoints, logs, config)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (with its saved config.yaml)")


def run_config(cls: type, args: argparse.Namespace, shortcuts: dict[str, str] | None = None):
    """Defaults < YAML < ``--set`` < shortcut flags. With ``--resume`` and no ``--config``, the run's own saved
    ``config.yaml`` takes the place of the YAML file, so ``--out RUN --resume`` alone continues the run."""
    saved = Path(args.out) / "config.yaml"
    config = args.config or (saved if args.resume and saved.exists() else None)
    overrides = list(args.set)
    for attr, key in {**SHORTCUTS, **(shortcuts or {})}.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.skip_bad:
        overrides.append("data.skip_bad=true")
    return resolve_config(cls, config, overrides)


def register(sub: argparse._SubParsersAction) -> None:
    from vislang.tasks import TASKS

    p = sub.add_parser("train", help=f"train a model ({', '.join(TASKS.names())})")
    tsub = p.add_subparsers(dest="task", metavar="TASK", required=True)
    for name in TASKS.names():
        spec = TASKS.get(name)
        doc = (type(spec).__doc__ or spec.help).strip().split("\n\n")[0]
        t = tsub.add_parser(name, help=spec.help, description=" ".join(doc.split()))
        add_common_args(t)
        for flag, (_key, kwargs) in spec.train_flags.items():
            t.add_argument(f"--{flag.replace('_', '-')}", dest=flag, **kwargs)
        t.set_defaults(func=cmd_train, task_spec=spec)


def print_result(result: FitResult, metric: str, split: str = "val") -> None:
    """The closing lines of a training command: where the run is and its best validation score (``split``:
    the validation split, or several joined by ``+``, whose mean it is)."""
    print(f"run: {result.run_dir}  steps: {result.steps}  stopped: {result.stopped}")
    if result.best_metric is not None:
        where = f"the mean over {split.replace('+', ' and ')}" if "+" in split else split
        print(f"best {metric} on {where}: {result.best_metric:.4f}  ({result.best_dir})")


def cmd_train(args: argparse.Namespace) -> int:
    from vislang.errors import VislangError
    from vislang.tasks import train

    spec = args.task_spec
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise VislangError(f"--out {args.out}: is a file, not a run directory; choose another --out")
    cfg = run_config(spec.config, args, {flag: key for flag, (key, _) in spec.train_flags.items()})
    from vislang.utils import distributed

    try:
        result = train(spec, cfg, Path(args.out), resume=args.resume)
        if distributed.current().is_main:  # under torchrun, rank 0 speaks for the run
            print_result(result, spec.monitor_label, cfg.data.val_split or "val")
    finally:
        distributed.shutdown()
    return 0
