"""One way to use any trained model: ``vislang.load(path)`` returns its task's predictor.

```python
import vislang
vislang.load("runs/cap").caption(["cat.png"], beam=3)          # CaptionPredictor
vislang.load("runs/retr").embed_texts(["a red heart"])         # RetrievalPredictor
vislang.load("runs/vqa").ask("scene.png", ["what colour is the circle?"])
vislang.load("exported/cap", runtime="onnx").caption(["cat.png"])   # `vislang export`, on ONNX Runtime
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vislang.errors import VislangError
from vislang.inference.base import Predictor, import_object
from vislang.inference.exported import load_exported_model
from vislang.inference.runtime import RUNTIMES
from vislang.tasks.base import load_trained


def load(path: str | os.PathLike, *, checkpoint: str = "best", device: str = "auto",
         allow_download: bool = False, runtime: str = "torch") -> Any:
    """The predictor of a trained model.

    Args:
        path: A run directory (its ``checkpoint`` folder is used), a model folder, or, with
            ``allow_download``, a Hugging Face Hub repo id (``owner/name``) holding a vislang model folder.
        checkpoint: ``best`` or ``last`` of a run directory.
        device: ``auto`` (cuda when available), ``cpu``, ``cuda:1``, ...
        allow_download: Fetch ``path`` from the Hugging Face Hub when it is not a local folder. Off by default:
            nothing contacts a hub unless asked to.
        runtime: ``torch`` (the eager model), or, for a folder of ``vislang export``, ``onnx`` (ONNX Runtime, on
            the CPU; the ``onnx`` extra) or ``torch-export`` (its ``torch.export`` programs): the same
            predictor, with its network calls run by the exported graphs.

    Raises:
        VislangError: No such folder (and no download allowed), a folder that does not load, an unknown
            runtime, or ``onnx`` without ONNX Runtime installed.
    """
    if runtime not in RUNTIMES:
        raise VislangError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    local = Path(path)
    if not local.exists():
        if not allow_download:
            raise VislangError(f"{path}: no such run or model folder (to fetch a Hugging Face Hub repo, pass "
                               "allow_download=True)")
        local = _download(str(path))
    if runtime != "torch":
        trained = load_exported_model(local, runtime)
    else:
        trained = load_trained(local, which=checkpoint, device=device)
    return import_object(trained.spec.predictor)(trained)


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise VislangError("downloading from the Hugging Face Hub needs huggingface_hub: "
                           "pip install huggingface_hub") from None
    try:
        return Path(snapshot_download(repo_id))
    except Exception as e:  # network or repository errors, reported in one line
        raise VislangError(f"{repo_id}: cannot download from the Hugging Face Hub: {e}") from None


__all__ = ["Predictor", "load"]
