"""The task registry and the one generic ``train``: a task is one module supplying only what differs.

```python
@register_task("caption")
class Captioning(TaskSpec):
    config = CaptionRunConfig              # typed run config: model, model_kwargs, data, task, train
    monitor_label = "CIDEr-D"
    predictor = "vislang.inference.caption:CaptionPredictor"
    def prepare(self, cfg, data, reuse): ...               # vocabulary etc. (reused from a run on resume)
    def model_options(self, cfg, artifacts, data): ...     # builder options the data decides (vocab size)
    def samples(self, cfg, data, artifacts, transform): ...
    def objective(self, cfg, model, data, artifacts, transform): ...   # batch -> losses, validation
```

:func:`train` does the shared sequence once (open splits, reuse artifacts on resume, seed, build the model
and transforms, ``fit``); :func:`load_trained` opens any trained model folder with its task's artifacts.
``vislang train TASK`` and ``vislang evaluate TASK`` come from this registry.
"""

from __future__ import annotations

import argparse
import functools
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from importlib import import_module
from pathlib import Path
from typing import Any, ClassVar

from torch import nn
from torch.utils.data import Dataset

from vislang.config import config_to_dict, resolve_config
from vislang.data.records import Record
from vislang.data.transforms import TransformConfig, build_transform
from vislang.errors import VislangError
from vislang.models.registry import create_model, model_config, model_family
from vislang.tasks.common import open_split, transform_config, val_splits
from vislang.train import FitResult, find_checkpoint, fit, load_model, seed_everything
from vislang.train.card import model_card
from vislang.train.checkpoint import read_config, resolve_checkpoint
from vislang.train.loop import Task, can_resume, nothing_to_resume, run_lock
from vislang.train.runtime import resolve_device
from vislang.utils.distributed import collective_errors, init_distributed
from vislang.utils.registry import Registry

TASKS: Registry[TaskSpec] = Registry("task", load="vislang.tasks.builtin")


def register_task(name: str):
    """Class decorator: register an instance of a :class:`TaskSpec` subclass as task ``name``."""

    def deco(cls: type[TaskSpec]) -> type[TaskSpec]:
        cls.name = name
        TASKS.add(name, cls())
        return cls

    return deco


def get_task(task: str | TaskSpec) -> TaskSpec:
    """The registered task ``task`` (or ``task`` itself when it is a spec)."""
    return task if isinstance(task, TaskSpec) else TASKS.get(task)


def list_tasks() -> list[str]:
    """Names of the registered tasks."""
    return TASKS.names()


@dataclass
class TrainData:
    """The records a run trains and validates on (after the task's own filtering)."""

    train: list[Record]
    val: list[Record] = field(default_factory=list)


class TaskSpec:
    """What one task tells the generic :func:`train`, :func:`load_trained` and the CLI.

    Subclasses set the class attributes and override the hooks that differ; defaults cover the rest.

    Attributes:
        name: Registered name (set by :func:`register_task`).
        config: The run config dataclass (fields ``model``, ``data``, ``task``, ``train``, ...).
        help: One line for ``vislang train --help``.
        monitor_label: How the monitored validation metric is named in the closing line of a run.
        predictor: ``"module:Class"`` of the predictor :func:`vislang.load` returns (imported on use).
        train_flags: Extra ``vislang train TASK`` flags: ``{flag: (config key, argparse keyword arguments)}``.
        evaluation: The module (imported on use) whose ``add_evaluate_args(parser)`` and ``run_evaluate(args)``
            make ``vislang evaluate TASK``; empty: the task has no evaluation command.
        evaluate_help: One line for ``vislang evaluate --help``.
        evaluate_description: What ``vislang evaluate TASK`` does.
    """

    name: ClassVar[str] = ""
    config: ClassVar[type] = object
    help: ClassVar[str] = ""
    monitor_label: ClassVar[str] = "validation metric"
    predictor: ClassVar[str] = ""
    train_flags: ClassVar[dict[str, tuple[str, dict[str, Any]]]] = {}
    evaluation: ClassVar[str] = ""
    evaluate_help: ClassVar[str] = ""
    evaluate_description: ClassVar[str] = ""

    # ----------------------------------------------------------------------------------------- training

    def check(self, cfg: Any) -> None:
        """Refuse bad task options before any data is read (raise :class:`VislangError`)."""

    def open_data(self, cfg: Any) -> TrainData:
        """The training and validation records (default: the configured splits, limited and checked)."""
        train = open_split(cfg.data, cfg.data.train_split, cfg.data.max_train).records
        return TrainData(list(train), self.open_val(cfg, cfg.data.val_split) if cfg.data.val_split else [])

    def open_val(self, cfg: Any, split: str) -> list[Record]:
        """The records of one validation split, as the task validates on them (default: all, limited and
        checked). A run validating on several splits opens each of the others with this alone."""
        return list(open_split(cfg.data, split, cfg.data.max_val).records)

    def prepare(self, cfg: Any, data: TrainData, reuse: Path | None) -> Any:
        """The task's artifacts (vocabulary, answers, classes), read from ``reuse`` (the run's last model
        folder, when resuming) where it holds them, else built from the training data."""
        return None

    def model_options(self, cfg: Any, artifacts: Any, data: TrainData) -> dict[str, Any]:
        """Builder options of the model: the run's ``model_kwargs`` plus what the data decides."""
        return dict(cfg.model_kwargs)

    def init_model(self, cfg: Any, model: nn.Module, resume: bool) -> None:
        """Change the freshly built model before training (e.g. start from another run's weights)."""

    def samples(self, cfg: Any, data: TrainData, artifacts: Any, transform: Any) -> Dataset:
        """The training samples (a map-style dataset of tensor dicts)."""
        raise NotImplementedError

    def objective(self, cfg: Any, model: nn.Module, data: TrainData, artifacts: Any, transform: Any) -> Task:
        """The loop's task object: batch -> losses, validation metrics, artifacts to save."""
        raise NotImplementedError

    def extra(self, cfg: Any, artifacts: Any) -> dict[str, Any]:
        """Entries the predictor needs, saved in the model folder's ``config.json`` (e.g. ``max_len``)."""
        return {}

    def pad_id(self, artifacts: Any) -> int:
        """Padding id of the token sequences in training batches."""
        return int(getattr(getattr(artifacts, "tokenizer", artifacts), "pad_id", 0))

    # ---------------------------------------------------------------------------------------- inference

    def load_artifacts(self, folder: Path, config: dict[str, Any]) -> Any:
        """The task's artifacts saved in a model folder (the inverse of the objective's ``save_artifacts``)."""
        return None

    # ---------------------------------------------------------------------------------------- evaluation

    def add_evaluate_args(self, parser: argparse.ArgumentParser) -> None:
        """The options of ``vislang evaluate TASK``: the ``add_evaluate_args`` of the task's ``evaluation``
        module."""
        import_module(self.evaluation).add_evaluate_args(parser)

    def evaluate(self, args: argparse.Namespace) -> int:
        """Run ``vislang evaluate TASK`` (the ``run_evaluate`` of the ``evaluation`` module); the exit code."""
        return import_module(self.evaluation).run_evaluate(args)


def train(task: str | TaskSpec, cfg: Any = None, out: str | os.PathLike = "runs/run", *, resume: bool = False,
          overrides: tuple[str, ...] | list[str] = ()) -> FitResult:
    """Train a model for ``task`` with the shared sequence and loop.

    Args:
        task: A registered task name (``caption``, ``retrieval``, ``vqa``, ``classify``, ``regions``) or spec.
        cfg: The run config (an instance of the task's config class), a YAML file, or None for the defaults.
        out: The run directory (checkpoints, logs, the resolved ``config.yaml``).
        resume: Continue the run in ``out`` from its last checkpoint.
        overrides: ``key=value`` settings applied on top of a YAML file or the defaults.

    Returns:
        The loop's :class:`~vislang.train.FitResult`; ``out/checkpoints/best`` is a model folder.
    """
    spec = get_task(task)
    if cfg is None or isinstance(cfg, (str, os.PathLike)):
        cfg = resolve_config(spec.config, cfg, list(overrides))
    elif overrides:
        raise VislangError("give overrides with a YAML file or the defaults, not with a config object")
    run_dir = Path(out)
    spec.check(cfg)
    if model_family(cfg.model) is not None:
        model_config(cfg.model, **cfg.model_kwargs)  # a mistyped model option fails before any data is read
    env = init_distributed(resolve_device(cfg.train.device), cfg.train.dist_timeout)  # torchrun: join the ranks
    created = not run_dir.exists()
    try:  # rank 0 holds the lock, before anything reads or repairs the run's checkpoints
        with run_lock(run_dir) if env.is_main else nullcontext(), collective_errors("training"):
            return _train(spec, cfg, run_dir, resume)
    except BaseException:
        if env.is_main and created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a run that failed before writing anything leaves no empty folder behind
        raise


def _train(spec: TaskSpec, cfg: Any, run_dir: Path, resume: bool) -> FitResult:
    if resume and not can_resume(run_dir):
        raise nothing_to_resume(run_dir)  # before any data is read or built
    data, more = _open_data(spec, cfg)
    last = run_dir / "checkpoints" / "last"
    artifacts = spec.prepare(cfg, data, last if resume and find_checkpoint(last) else None)
    options = spec.model_options(cfg, artifacts, data)
    tf = transform_config(cfg.data)
    seed_everything(cfg.train.seed)  # the initial weights follow the seed, whatever ran before in the process
    model = create_model(cfg.model, **options)
    spec.init_model(cfg, model, resume)
    samples = spec.samples(cfg, data, artifacts, build_transform(tf, train=True))
    objective = _objective(spec, cfg, model, data, more, artifacts, build_transform(tf, train=False))
    model_spec = {"task": spec.name, "model": cfg.model, "model_config": resolved_options(cfg.model, options),
                  "preprocessor": asdict(tf), **spec.extra(cfg, artifacts)}
    card = functools.partial(model_card, data=cfg.data.name, splits=(cfg.data.train_split, cfg.data.val_split))
    return fit(model, objective, samples, cfg.train, run_dir, model_spec=model_spec, pad_id=spec.pad_id(artifacts),
               resume=resume, config_to_save=config_to_dict(cfg), card=card)


def _open_data(spec: TaskSpec, cfg: Any) -> tuple[TrainData, dict[str, list[Record]]]:
    """The run's training data with its first validation split, and the records of each further one."""
    splits = val_splits(cfg.data)
    data = spec.open_data(replace(cfg, data=replace(cfg.data, val_split=splits[0])) if splits else cfg)
    return data, {s: spec.open_val(cfg, s) for s in splits[1:]}


def _objective(spec: TaskSpec, cfg: Any, model: nn.Module, data: TrainData, more: dict[str, list[Record]],
               artifacts: Any, eval_tf: Any) -> Any:
    """The loop's task object: one per validation split (:class:`SplitValidation`) when there are several, the
    first split's one training. A task object with ``with_val_records(records)`` makes the other splits' ones
    itself (what it built for training, such as a captioner's memory, is not built again)."""
    objective = spec.objective(cfg, model, data, artifacts, eval_tf)
    if not more:
        return objective

    def for_split(split: str, val: list[Record]) -> Any:
        if hasattr(objective, "with_val_records"):
            return objective.with_val_records(val)
        return spec.objective(replace(cfg, data=replace(cfg.data, val_split=split)), model,
                              TrainData(data.train, val), artifacts, eval_tf)

    return SplitValidation({val_splits(cfg.data)[0]: objective, **{s: for_split(s, v) for s, v in more.items()}})


def validate_as_trained(run: str | os.PathLike, trained: TrainedModel) -> tuple[str, float | None, dict[str, float]]:
    """Validate ``trained`` on the validation data of the training run in ``run``, exactly as that run's loop
    validated its checkpoints (same splits, limits and metrics).

    Returns:
        The monitored metric's name, its value (None when not computed) and every validation metric.

    Raises:
        VislangError: ``run`` has no ``config.yaml`` or no validation split, or its data cannot be read.
    """
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise VislangError(f"{run}: no config.yaml; validation needs a run directory, not a model folder")
    spec = trained.spec
    cfg = resolve_config(spec.config, path, [])
    if not val_splits(cfg.data):
        raise VislangError(f"{path}: data.val_split is empty; the run has no validation data")
    data, more = _open_data(spec, cfg)
    objective = _objective(spec, cfg, trained.model, data, more, trained.artifacts, trained.transform)
    was_training = trained.model.training
    trained.model.eval()
    try:
        metrics = objective.validate(trained.model)
    finally:
        trained.model.train(was_training)
    value = metrics.get(objective.monitor)
    return objective.monitor, None if value is None else float(value), metrics


class SplitValidation:
    """The loop's task when a run validates on several splits (``data.val_split=val+val_new_style``): the
    first split's task trains; each split's metrics are logged as ``SPLIT/metric``, and the mean of their
    monitored metric is the monitored metric. Validation runs on rank 0 alone under torchrun.

    Args:
        tasks: ``{split: the task object validating on it}``, the training split's task first.
    """

    def __init__(self, tasks: dict[str, Task]):
        self.tasks = tasks
        self.first = next(iter(tasks.values()))
        self.monitor, self.mode = self.first.monitor, self.first.mode
        for hook in ("after_optimizer_step", "save_artifacts"):
            if hasattr(self.first, hook):
                setattr(self, hook, getattr(self.first, hook))

    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        return self.first.training_step(model, batch)

    def validate(self, model: nn.Module) -> dict[str, float]:
        metrics: dict[str, float] = {}
        watched = []
        for split, task in self.tasks.items():
            scores = task.validate(model)
            metrics.update({f"{split}/{k}": v for k, v in scores.items()})
            if self.monitor in scores:
                watched.append(float(scores[self.monitor]))
        if len(watched) == len(self.tasks):
            metrics[self.monitor] = sum(watched) / len(watched)
        return metrics


def resolved_options(model: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every option of ``model`` as built from ``options`` (its typed config, defaults filled in), for the
    model folder's ``config.json``; a plain builder without a typed config keeps ``options`` as given."""
    if model_family(model) is None:
        return dict(options)
    return config_to_dict(model_config(model, **options))


@dataclass
class TrainedModel:
    """A trained model folder, opened: the model (eval mode) and what its task needs to use it.

    Attributes:
        folder: The model folder.
        config: Its ``config.json`` (with ``preprocessor``).
        model: The model, on its device, in eval mode.
        transform_cfg: The image preprocessing it was trained with.
        artifacts: The task's artifacts (vocabulary, answers, ...).
        spec: The task.
    """

    folder: Path
    config: dict[str, Any]
    model: nn.Module
    transform_cfg: TransformConfig
    artifacts: Any
    spec: TaskSpec

    @property
    def transform(self):
        """Image -> tensor, as at validation time."""
        return build_transform(self.transform_cfg, train=False)


def load_trained(path: str | os.PathLike, task: str | None = None, *, which: str = "best",
                 device: str = "auto") -> TrainedModel:
    """Open a run directory (its ``which`` checkpoint) or a model folder.

    Raises:
        VislangError: Not a run or model folder, a folder of another task than ``task``, or a folder that
            does not rebuild (the message names the file and key).
    """
    folder = resolve_checkpoint(path, which)
    config = read_config(folder)
    name = config.get("task")
    if task is not None and name != task:
        raise VislangError(f"{folder}: not a {task} model (task: {name!r}); train one with `vislang train {task}`")
    if name not in TASKS:
        raise VislangError(f"{folder}: unknown task {name!r}; known: {', '.join(TASKS.names())}")
    spec = TASKS.get(name)
    model = load_model(folder, resolve_device(device))
    return TrainedModel(folder, config, model, TransformConfig.from_dict(config.get("preprocessor") or {}),
                        spec.load_artifacts(folder, config), spec)


def add_split_args(p: argparse.ArgumentParser, command: str, data_help: str, image_root_help: str) -> None:
    """The arguments every ``vislang evaluate TASK`` takes: the run and the data split to score."""
    p.add_argument("--model", required=True, help=f"run directory of `vislang train {command}` (or a model folder)")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--split", help="split to evaluate (default: the dataset's default split)")
    p.add_argument("--root", help="data root for built-in datasets")
    p.add_argument("--image-root", help=image_root_help)


def eval_dir(args: argparse.Namespace) -> Path:
    """Where ``vislang evaluate TASK`` writes: ``--out``, else ``<run>/eval/<data>_<split>``."""
    slug = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(args.data).name)
    return args.out or Path(args.model) / "eval" / f"{slug}_{args.split or 'default'}"
