"""Checkpoint directories, written atomically.

A checkpoint is a directory holding:

* ``model.safetensors`` — the model's ``state_dict`` (tied weights stored once);
* ``model.json`` — the model spec ``{"name": <registry name>, "kwargs": <builder kwargs>, ...}`` (a task
  may add entries) plus ``format``, ``version``, ``step``...; ``create_model(name, **kwargs)`` rebuilds the
  model;
* ``train_state.pt`` — optional: optimiser, scheduler, step, epoch, sampler and RNG states (loaded with
  ``weights_only=True``, so it holds only tensors and plain Python values);
* whatever a task adds (e.g. ``vocab.json``).

It is written into a temporary directory beside its final place, flushed to disk, and then swapped in
with renames. A crash at any point leaves either the old or the new checkpoint: if it strikes between the
two renames, :func:`find_checkpoint` puts the old one back.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from vislang.errors import VislangError
from vislang.utils.io import atomic_dir

FORMAT = "vislang.checkpoint"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"
STATE_FILE = "train_state.pt"


class CheckpointError(VislangError):
    """A checkpoint directory that is missing, incomplete or does not fit the model."""


def save_checkpoint(directory: str | os.PathLike, model: nn.Module, model_spec: dict[str, Any],
                    train_state: dict[str, Any] | None = None, *,
                    artifacts: Callable[[Path], None] | None = None,
                    info: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory atomically, replacing any previous one.

    Args:
        directory: Final location, e.g. ``run/checkpoints/last``.
        model: The model whose ``state_dict`` is saved.
        model_spec: ``{"name": registry name, "kwargs": builder kwargs}`` (JSON-serialisable).
        train_state: Resumable training state, saved to ``train_state.pt`` (None: weights only).
        artifacts: Called with the (temporary) directory to add task files such as a vocabulary.
        info: Extra JSON-serialisable entries for ``model.json`` (step, epoch, metrics).

    Returns:
        ``directory``.
    """
    directory = Path(directory)
    spec = _check_spec(model_spec)
    with _staged(directory) as tmp:
        safetensors.torch.save_model(model, str(tmp / WEIGHTS_FILE))
        body = {**spec, "format": FORMAT, "version": VERSION, **(info or {})}  # info: step, epoch, metrics
        with open(tmp / SPEC_FILE, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=1, ensure_ascii=False)
            f.write("\n")
        if train_state is not None:
            buf = io.BytesIO()
            torch.save(train_state, buf)
            (tmp / STATE_FILE).write_bytes(buf.getvalue())
        if artifacts is not None:
            artifacts(tmp)
    return directory


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Atomically make ``dst`` a copy of the checkpoint ``src`` (hard links where the filesystem allows:
    checkpoint files are never modified in place, only replaced)."""
    src, dst = Path(src), Path(dst)
    with _staged(dst) as tmp:
        for path in sorted(src.rglob("*")):
            target = tmp / path.relative_to(src)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
    return dst


def find_checkpoint(directory: str | os.PathLike) -> Path | None:
    """``directory`` if it holds a checkpoint, after putting back the previous version when a crash
    interrupted a swap; None when there is none."""
    directory = Path(directory)
    if not directory.exists():
        olds = sorted(directory.parent.glob(f".{directory.name}.old-*")) if directory.parent.exists() else []
        if not olds:
            return None
        os.replace(olds[-1], directory)
    return directory if (directory / SPEC_FILE).is_file() else None


def resolve_checkpoint(run: str | os.PathLike, which: str = "best") -> Path:
    """A checkpoint directory from a run directory (its ``best``, else ``last``) or a checkpoint directory."""
    run = Path(run)
    if find_checkpoint(run) is not None:
        return run
    for name in (which, "best", "last"):
        ckpt = run / "checkpoints" / name
        if find_checkpoint(ckpt) is not None:
            return ckpt
    raise VislangError(f"{run}: not a vislang run or checkpoint directory (no checkpoints/best or /last)")


def read_model_json(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``model.json`` of a checkpoint."""
    directory = Path(directory)
    path = directory / SPEC_FILE
    if find_checkpoint(directory) is None:
        raise CheckpointError(f"{directory}: no checkpoint there (expected {SPEC_FILE} and {WEIGHTS_FILE})")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from None
    if not isinstance(spec, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    try:
        _check_spec(spec)
    except VislangError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return spec


def load_checkpoint(directory: str | os.PathLike, map_location: str | torch.device = "cpu",
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read a checkpoint directory.

    Returns:
        ``(model_spec, state_dict, train_state)``: ``model_spec`` is the parsed ``model.json``;
        ``state_dict`` holds the saved tensors (a tied weight appears under one of its names: load it with
        :func:`load_weights`); ``train_state`` is None when the checkpoint has no ``train_state.pt``.
    """
    directory = Path(directory)
    spec = read_model_json(directory)
    weights = directory / WEIGHTS_FILE
    try:
        state_dict = safetensors.torch.load_file(str(weights), device=str(map_location))
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: {WEIGHTS_FILE} is missing") from None
    except Exception as e:  # safetensors reports corrupt files with its own error types
        raise CheckpointError(f"{weights}: cannot read: {e}") from None
    return spec, state_dict, load_train_state(directory, map_location)


def load_train_state(directory: str | os.PathLike, map_location: str | torch.device = "cpu",
                     ) -> dict[str, Any] | None:
    """A checkpoint's ``train_state.pt`` (None when it has none), without reading the weights."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise CheckpointError(f"{path}: cannot read: {e}") from None


def load_weights(model: nn.Module, directory: str | os.PathLike) -> None:
    """Load a checkpoint's weights into ``model`` (strict: every tensor must match)."""
    directory = Path(directory)
    if find_checkpoint(directory) is None:
        raise CheckpointError(f"{directory}: no checkpoint there (expected {SPEC_FILE} and {WEIGHTS_FILE})")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(directory / WEIGHTS_FILE), strict=False,
                                                           device=str(device))
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: {WEIGHTS_FILE} is missing") from None
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{directory / WEIGHTS_FILE} does not fit {type(model).__name__}: {e}"
                              ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"{directory / WEIGHTS_FILE} does not fit {type(model).__name__}: "
            f"missing {_first(missing)}, unexpected {_first(unexpected)}")


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a checkpoint with the model registry and load its weights (in eval mode)."""
    from vislang.models.registry import create_model

    spec = read_model_json(directory)
    model = create_model(spec["name"], **spec["kwargs"]).to(device)
    load_weights(model, directory)
    return model.eval()


# ------------------------------------------------------------------------------------------------ internals


def _check_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (kept whole: tasks add entries such as the image transform) after checking it."""
    if not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs", {}), dict):
        raise VislangError(f"a model spec needs a string 'name' and a dict 'kwargs', got {spec!r}")
    out = {**spec, "kwargs": spec.get("kwargs", {})}
    try:
        json.dumps(out)
    except (TypeError, ValueError) as e:
        raise VislangError(f"the model spec of {spec['name']!r} is not JSON-serialisable: {e}") from None
    return out


def _first(names: Iterable[str], n: int = 5) -> str:
    names = sorted(names)
    if not names:
        return "none"
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


@contextlib.contextmanager
def _staged(directory: Path) -> Iterator[Path]:
    """A temporary directory to fill; on success it is synced to disk and swapped in as ``directory``,
    on any error it is removed and ``directory`` is left as it was."""
    find_checkpoint(directory)  # finish a swap a crash interrupted before replacing it
    with atomic_dir(directory) as tmp:
        yield tmp
