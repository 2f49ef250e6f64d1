"""The model card (``README.md``) of a model folder: Hugging Face Hub YAML front matter, then what the model
is, what it was trained on (with the data's licences), its validation scores and how to load it."""

from __future__ import annotations

from typing import Any

import yaml

from vislang.errors import VislangError

TASK_TAGS = {
    "caption": "image-to-text",
    "retrieval": "zero-shot-image-classification",
    "vqa": "visual-question-answering",
    "classify": "image-classification",
    "generate": "text-to-image",
    "regions": "image-segmentation",
}


def data_licence(data: str) -> str:
    """The licence line of a registered data set (``emoji:train_only=fluent`` -> emoji's), else a note that
    the user's own data carries its own licence."""
    from vislang.data import get_dataset_info

    name = data.split(":", 1)[0]
    try:
        return get_dataset_info(name).license
    except VislangError:
        return "the user's own data (see its licence)"


def model_card(body: dict[str, Any], *, data: str | None = None, splits: tuple[str, ...] = ()) -> str:
    """The text of ``README.md`` for a folder whose ``config.json`` body is ``body``.

    Args:
        body: ``config.json`` (task, model, model_config, step, val_metrics, ...) plus ``preprocessor``.
        data: The training data set's name or file.
        splits: The splits trained and validated on.
    """
    task = str(body.get("task", "?"))
    licence = data_licence(data) if data else "unknown"
    meta = {"library_name": "vislang", "license": "other", "pipeline_tag": TASK_TAGS.get(task, "other"),
            "tags": ["vislang", task, str(body.get("model", "?"))]}
    if data:
        meta["datasets"] = [data.split(":", 1)[0]]
    metrics = body.get("val_metrics") or {}
    if metrics:
        meta["metrics"] = sorted(metrics)
    pre = body.get("preprocessor") or {}
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                     for k, v in metrics.items())
    table = f"| metric | value |\n|---|---|\n{rows}" if rows else "Not validated yet."
    return f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# {body.get('model', 'model')} ({task})

A vislang `{task}` model: `{body.get('model')}` trained {body.get('step', '?')} steps
({body.get('epoch', '?')} epochs), {pre.get('image_size', '?')} px images.

## Training data

`{data or '?'}` (splits: {', '.join(splits) or '?'}). Licence: {licence}

## Validation ({body.get('monitor', '?')} picks the best checkpoint)

{table}

## Use

```python
import vislang
predictor = vislang.load("path/to/this/folder")
```

`config.json` holds the architecture and its options, `model.safetensors` the weights (sha256 in
`config.json`), `preprocessor.json` the image preprocessing.
"""
