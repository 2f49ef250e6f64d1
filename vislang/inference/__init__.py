"""One way to use any trained model: ``vislang.load(path)`` returns its task's predictor.

```python
import vislang
vislang.load("runs/cap").caption(["cat.png"], beam=3)          # CaptionPredictor
vislang.load("runs/retr").embed_texts(["a red heart"])         # RetrievalPredictor
vislang.load("runs/vqa").ask("scene.png", ["what colour is the circle?"])
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vislang.errors import VislangError
from vislang.inference.base import Predictor, import_object
from vislang.tasks.base import load_trained


def load(path: str | os.PathLike, *, checkpoint: str = "best", device: str = "auto",
         allow_download: bool = False) -> Any:
    """The predictor of a trained model.

    Args:
        path: A run directory (its ``checkpoint`` folder is used), a model folder, or, with
            ``allow_download``, a Hugging Face Hub repo id (``owner/name``) holding a vislang model folder.
        checkpoint: ``best`` or ``last`` of a run directory.
        device: ``auto`` (cuda when available), ``cpu``, ``cuda:1``, ...
        allow_download: Fetch ``path`` from the Hugging Face Hub when it is not a local folder. Off by default:
            nothing contacts a hub unless asked to.

    Raises:
        VislangError: No such folder (and no download allowed), or a folder that does not load.
    """
    local = Path(path)
    if not local.exists():
        if not allow_download:
            raise VislangError(f"{path}: no such run or model folder (to fetch a Hugging Face Hub repo, pass "
                               "allow_download=True)")
        local = _download(str(path))
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
