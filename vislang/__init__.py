"""vislang: image-text multimodal learning, offline-first and fast on CPU.

```python
import vislang
vislang.list_models("caption_*")                               # registered architectures
model = vislang.create_model("caption_lstm_tiny")              # an nn.Module
result = vislang.train("caption", "configs/demo.yaml", "runs/cap", overrides=["train.epochs=2"])
captioner = vislang.load("runs/cap")                           # the task's predictor
```
"""

import sys
import types

from vislang.data import ImageTextDataset, list_datasets, load_dataset, prepare_dataset
from vislang.data.records import QA, Record

__version__ = "0.1.0"

# Heavier modules load on first use, so that ``import vislang`` stays light (``vislang.Index`` needs FAISS).
_LAZY = {
    "Index": "vislang.index:Index",
    "create_model": "vislang.models:create_model",
    "list_models": "vislang.models:list_models",
    "list_tasks": "vislang.tasks:list_tasks",
    "train": "vislang.tasks:train",
    "load": "vislang.inference:load",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, _, attr = _LAZY[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'vislang' has no attribute {name!r}")


class _Package(types.ModuleType):
    """``vislang.train`` is the function: importing the ``vislang.train`` package (the training loop, reached
    through ``sys.modules`` and ``from vislang.train import ...``) does not replace it."""

    def __setattr__(self, name: str, value) -> None:
        if name == "train" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "QA",
    "ImageTextDataset",
    "Index",
    "Record",
    "__version__",
    "create_model",
    "list_datasets",
    "list_models",
    "list_tasks",
    "load",
    "load_dataset",
    "prepare_dataset",
    "train",
]
