"""Training: the one loop every task shares (:func:`fit`), optimiser groups and schedules, checkpoints."""

from vislang.train.checkpoint import (
    CheckpointError,
    copy_checkpoint,
    find_checkpoint,
    load_checkpoint,
    load_model,
    load_train_state,
    load_weights,
    read_config,
    resolve_checkpoint,
    save_checkpoint,
)
from vislang.train.loop import (
    FitResult,
    OptimConfig,
    Task,
    TrainConfig,
    TrainingDivergedError,
    fit,
    seed_everything,
)
from vislang.train.optim import WarmupCosine, build_optimizer, build_scheduler, param_groups

__all__ = [
    "CheckpointError",
    "FitResult",
    "OptimConfig",
    "Task",
    "TrainConfig",
    "TrainingDivergedError",
    "WarmupCosine",
    "build_optimizer",
    "build_scheduler",
    "copy_checkpoint",
    "find_checkpoint",
    "fit",
    "load_checkpoint",
    "load_model",
    "load_train_state",
    "load_weights",
    "param_groups",
    "read_config",
    "resolve_checkpoint",
    "save_checkpoint",
    "seed_everything",
]
