"""Tasks: one module per task (caption, retrieval, vqa, classify, regions), registered with
:func:`register_task`, and the generic :func:`train` / :func:`load_trained` they share."""

from vislang.tasks.base import (
    TASKS,
    TaskSpec,
    TrainData,
    TrainedModel,
    get_task,
    list_tasks,
    load_trained,
    register_task,
    train,
)

__all__ = [
    "TASKS",
    "TaskSpec",
    "TrainData",
    "TrainedModel",
    "get_task",
    "list_tasks",
    "load_trained",
    "register_task",
    "train",
]
