"""Opening an exported folder (``vislang export``): its config, preprocessing and tokenizer files, and the
graphs behind the stand-in model the task's predictor runs (:mod:`vislang.inference.runtime`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vislang.data.transforms import TransformConfig
from vislang.errors import VislangError
from vislang.inference.runtime import RUNTIME_MODELS, open_graph, read_manifest
from vislang.models.registry import model_family
from vislang.tasks.base import TASKS, TrainedModel

TOKENIZER_FILE = "tokenizer.json"
"""A pre-trained text tower's tokenizer, copied into the exported folder."""


def find_exported(path: str | os.PathLike) -> Path | None:
    """The exported folder at ``path`` (or at ``path/export``), else None."""
    for folder in (Path(path), Path(path) / "export"):
        if (folder / "export.json").is_file():
            return folder
    return None


def load_exported_model(path: str | os.PathLike, runtime: str = "onnx") -> TrainedModel:
    """An exported folder opened as a :class:`~vislang.tasks.base.TrainedModel` whose model runs its graphs
    (``runtime``: ``onnx`` for ONNX Runtime, ``torch-export`` for the ``.pt2`` programs).

    Raises:
        VislangError: Not an exported folder, one of another format than ``runtime``, a model vislang cannot
            run exported, or ONNX Runtime missing.
    """
    folder = find_exported(path)
    if folder is None:
        raise VislangError(f"{path}: not an exported model folder (no export.json); make one with "
                           f"`vislang export RUN --format {runtime} -o OUT`")
    manifest = read_manifest(folder)
    if manifest.get("format") != runtime:
        raise VislangError(f"{folder}: exported as {manifest.get('format')!r}, not {runtime!r}; load it with "
                           f"runtime={manifest.get('format')!r}")
    config = _read_json(folder / "config.json")
    pre = folder / "preprocessor.json"
    config["preprocessor"] = _read_json(pre) if pre.is_file() else {}
    task = config.get("task")
    if task not in TASKS:
        raise VislangError(f"{folder}: unknown task {task!r}; known: {', '.join(TASKS.names())}")
    stand_in = RUNTIME_MODELS.get(model_family(config["model"]) or "")
    if stand_in is None:
        raise VislangError(f"{folder}: model {config['model']!r} has no exported runtime")
    graphs = {name: open_graph(folder, entry, runtime) for name, entry in manifest["graphs"].items()}
    spec = TASKS.get(task)
    artifacts = spec.load_artifacts(folder, _own_tokenizer(folder, config))
    return TrainedModel(folder, config, stand_in(graphs, manifest, config).eval(),
                        TransformConfig.from_dict(config["preprocessor"]), artifacts, spec)


def _own_tokenizer(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` reading a pre-trained tower's tokenizer from the exported folder's own copy."""
    if config.get("tokenizer") != "text_encoder" or not (folder / TOKENIZER_FILE).is_file():
        return config
    mc = dict(config.get("model_config", {}))
    mc.update(text_encoder="hf_text", text_encoder_kwargs={"path": str(folder)})
    return {**config, "model_config": mc}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise VislangError(f"{path}: cannot read: {e}") from None
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) and path.name == "config.json":
        raise VislangError(f"{path}: not a vislang model config")
    return body
