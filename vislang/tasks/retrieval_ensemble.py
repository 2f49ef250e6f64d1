"""Retrieval ensembles: the best models of several retrieval runs saved as one model folder.

```
vislang models --ensemble runs/retr_a runs/retr_b --out runs/retr_ens
vislang evaluate retrieval --model runs/retr_ens --data emoji --split test_new_concepts
```

The folder holds a :class:`~vislang.models.dual_encoder_ensemble.DualEncoderEnsemble` (cosine similarities
averaged over the members) and loads, evaluates, serves, indexes and exports like any retrieval model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from vislang.errors import VislangError
from vislang.models.dual_encoder import DualEncoder
from vislang.models.dual_encoder_ensemble import DualEncoderEnsemble
from vislang.tasks.base import TrainedModel, load_trained, validate_as_trained
from vislang.train.checkpoint import run_of, save_checkpoint, without_weight_paths
from vislang.utils.folder import CARD_FILE, CONFIG_FILE, PREPROCESSOR_FILE, STATE_FILE, WEIGHTS_FILE

SAME = ("max_len", "tokenizer")
"""Config entries every member must have alike (with the image preprocessing and the tokenizer's files)."""

_OWN_FILES = {CONFIG_FILE, WEIGHTS_FILE, STATE_FILE, CARD_FILE, PREPROCESSOR_FILE}


def ensemble_retrievers(runs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                        validate: bool = True) -> Path:
    """Save the best models of ``runs`` (retrieval runs or model folders) as one ensemble model folder.

    The members must preprocess images and tokenize texts alike (the same test-time preprocessing,
    ``max_len``, tokenizer and vocabulary files; their training augmentations may differ). Their text tower
    is stored once when all have the same locked tower (same options and equal weights). With ``validate``,
    when the first member is a run directory or one of its checkpoint folders (``RUN/checkpoints/last``), the
    ensemble is validated as that run validated its checkpoints (same splits, same metrics) and its
    ``config.json`` records ``monitor``, ``best_metric`` and ``val_metrics`` like a run's best model, so it
    compares with its members on the data they were chosen on.

    Returns:
        ``out``, written atomically.

    Raises:
        VislangError: Fewer than two runs, a member given twice, a run that is not a trained dual encoder, or
            members that read their inputs differently (the message names the folder and the entry).
    """
    if len(runs) < 2:
        raise VislangError(f"an ensemble needs at least two retrieval runs, got {len(runs)}")
    trained = [load_trained(r, "retrieval") for r in runs]
    seen: dict[Path, str | os.PathLike] = {}
    for r, t in zip(runs, trained):
        if t.folder.resolve() in seen:
            raise VislangError(f"{r}: the same model as {seen[t.folder.resolve()]}; give each member once")
        seen[t.folder.resolve()] = r
    first, files = trained[0], _artifacts(trained[0].folder)
    for t in trained:
        if not isinstance(t.model, DualEncoder):
            raise VislangError(f"{t.folder}: its model ({t.config['model']}) is not a single dual encoder")
    for t in trained[1:]:
        if repr(t.transform) != repr(first.transform):
            raise VislangError(f"{t.folder}: its image preprocessing ({t.transform!r}) differs from "
                               f"{first.folder}'s ({first.transform!r}); ensemble members must read inputs alike")
        for key in SAME:
            if t.config.get(key) != first.config.get(key):
                raise VislangError(f"{t.folder}: its {key} ({t.config.get(key)!r}) differs from {first.folder}'s "
                                   f"({first.config.get(key)!r}); ensemble members must read inputs alike")
        if _artifacts(t.folder) != files:
            raise VislangError(f"{t.folder}: its tokenizer files differ from {first.folder}'s; ensemble members "
                               "must read texts alike")
    share = _same_locked_text_tower(trained)
    model = DualEncoderEnsemble([t.model for t in trained], share_text=share)
    spec = {"task": "retrieval", "model": "dual_encoder_ensemble",
            "model_config": {"members": [{"model": t.config["model"],
                                          "model_config": without_weight_paths(t.config["model_config"])}
                                         for t in trained], "share_text": share},
            "preprocessor": first.config.get("preprocessor") or {},
            **{k: first.config[k] for k in SAME if k in first.config}}
    sources = [{"folder": str(t.folder), "model": t.config["model"],
                "weights_sha256": t.config.get("weights_sha256"), "monitor": t.config.get("monitor"),
                "best_metric": t.config.get("best_metric"), "val_metrics": t.config.get("val_metrics") or {}}
               for t in trained]
    info: dict[str, Any] = {"members": sources}
    run = run_of(runs[0], first.folder)
    if validate and run is not None:
        print(f"validating the ensemble on {run}'s validation data ...", flush=True)
        monitor, value, metrics = validate_as_trained(run, replace(first, model=model, config=spec))
        info.update(monitor=monitor, best_metric=value, val_metrics=metrics)
    return save_checkpoint(out, model, spec, artifacts=lambda tmp: _write_files(files, tmp),
                           info=info, card=lambda body: _card(body, trained))


def _artifacts(folder: Path) -> dict[str, bytes]:
    """A model folder's task files (vocabulary, tokenizer) by name, with their bytes."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())
            if p.is_file() and p.name not in _OWN_FILES}


def _write_files(files: dict[str, bytes], dst: Path) -> None:
    for name, data in files.items():
        (dst / name).write_bytes(data)


def _same_locked_text_tower(trained: list[TrainedModel]) -> bool:
    """Whether every member has the first one's locked text tower: same options, equal weights."""
    def tower(t: TrainedModel) -> tuple[Any, ...]:
        c = t.config["model_config"]
        return c.get("text_encoder"), c.get("text_encoder_kwargs"), c.get("text_mode")

    if any(t.model.text_mode != "locked" or tower(t) != tower(trained[0]) for t in trained):
        return False
    ref = trained[0].model.text_encoder.state_dict()
    return all(all(torch.equal(ref[k], v) for k, v in t.model.text_encoder.state_dict().items())
               for t in trained[1:])


def _card(body: dict[str, Any], trained: list[TrainedModel]) -> str:
    rows = "\n".join(f"| {i} | `{t.folder}` | `{t.config['model']}` | {t.config.get('monitor', '?')} "
                     f"{_num(t.config.get('best_metric'))} | `{str(t.config.get('weights_sha256', '?'))[:16]}` |"
                     for i, t in enumerate(trained))
    data = _section(trained[0].folder / CARD_FILE, "## Training data")
    return f"""---
library_name: vislang
license: other
pipeline_tag: zero-shot-image-classification
tags:
- vislang
- retrieval
- dual_encoder_ensemble
---

# dual_encoder_ensemble (retrieval)

{len(trained)} vislang dual encoders answering as one: each image and text is embedded by every member and
the ensemble's cosine similarity is the mean of theirs (embeddings of width {len(trained)} x
{trained[0].model.embed_dim}). Text tower: {'one locked copy, shared' if body['model_config']['share_text']
else 'one per member'}. Made with `vislang models --ensemble`.

| member | from | model | best validation | weights sha256 |
|---|---|---|---|---|
{rows}
| ensemble | | `dual_encoder_ensemble` | {_own_validation(body)} | |

## Training data (first member)

{data or 'See the members’ own cards.'}

## Use

```python
import vislang
predictor = vislang.load("path/to/this/folder")
```
"""


def _own_validation(body: dict[str, Any]) -> str:
    if body.get("best_metric") is None:
        return "not validated"
    return f"{body.get('monitor', '?')} {_num(body['best_metric'])}"


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _section(card: Path, title: str) -> str:
    """The body of one section of a model card (empty when the card or the section is missing)."""
    if not card.is_file():
        return ""
    text = card.read_text(encoding="utf-8")
    if title not in text:
        return ""
    return text.split(title, 1)[1].split("\n## ", 1)[0].strip()
