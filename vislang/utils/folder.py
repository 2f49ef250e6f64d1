"""The model folder on disk (Hugging Face Hub layout), read without building anything.

A trained model is one folder::

    config.json          {"library": "vislang", "format", "version", "task", "model", "model_config",
                          "weights_sha256", "train_state_sha256", "step", ...}: what
                          :func:`vislang.models.create_model` rebuilds
    model.safetensors    the weights (their sha256 is in config.json and checked on load)
    preprocessor.json    the image preprocessing (size, mean / std, trim, ...)
    vocab.json, ...      the task's files (tokenizer / vocabulary, answers, classes)
    README.md            the model card
    train_state.pt       in ``checkpoints/last``: optimiser, scheduler, step and RNG states (sha256 in
                         config.json, checked on load)

A weights file that differs from its recorded digest, or that its reader cannot parse, is refused in one
line naming it as ``corrupt or partial`` (:func:`corrupt`).

A folder of the previous format (``model.json`` instead of ``config.json`` and ``preprocessor.json``) is
read the same way. This module is the lowest layer of it (file names, finding and reading a folder), so that
encoders can copy weights from a run without importing the training code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from vislang.errors import VislangError, first_line
from vislang.utils.io import restore_interrupted_swap

LIBRARY = "vislang"
FORMAT = "vislang.model"
VERSION = 2
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESSOR_FILE = "preprocessor.json"
CARD_FILE = "README.md"
STATE_FILE = "train_state.pt"
LEGACY_SPEC_FILE = "model.json"
WEIGHTS_DIGEST = "weights_sha256"       # the config.json entries recording the files' sha256
STATE_DIGEST = "train_state_sha256"


class CheckpointError(VislangError):
    """A model folder that is missing, incomplete, corrupt or does not fit the model."""


def find_checkpoint(directory: str | os.PathLike) -> Path | None:
    """``directory`` if it holds a model folder, after putting back the previous version when a crash
    interrupted a swap (see :func:`vislang.utils.io.atomic_dir`); None when there is none."""
    directory = Path(directory)
    restore_interrupted_swap(directory)
    if (directory / CONFIG_FILE).is_file() or (directory / LEGACY_SPEC_FILE).is_file():
        return directory
    return None


def run_of(given: str | os.PathLike, folder: Path) -> Path | None:
    """The run directory of a model given as a run or as one of its checkpoint folders (``RUN/checkpoints/last``;
    ``folder`` is what :func:`resolve_checkpoint` made of ``given``); None for a model folder outside any run."""
    if (Path(given) / "config.yaml").is_file():
        return Path(given)
    if folder.parent.name == "checkpoints" and (folder.parent.parent / "config.yaml").is_file():
        return folder.parent.parent
    return None


def resolve_checkpoint(run: str | os.PathLike, which: str = "best") -> Path:
    """A model folder from a run directory (its ``which``, else ``best``, else ``last``) or a model folder."""
    run = Path(run)
    if find_checkpoint(run) is not None:
        return run
    for name in (which, "best", "last"):
        ckpt = run / "checkpoints" / name
        if find_checkpoint(ckpt) is not None:
            return ckpt
    raise VislangError(f"{run}: not a vislang run or checkpoint directory (no config.json, no checkpoints/best or /last)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from None
    if not isinstance(body, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return body


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The model folder's ``config.json`` with ``preprocessor`` (the contents of ``preprocessor.json``) added.

    A folder of the previous format (``model.json``) is read into the same keys: ``task``, ``model``,
    ``model_config``, ``preprocessor`` and the task's own entries.

    Raises:
        CheckpointError: No model folder there, or a file that cannot be read or lacks a required field.
    """
    directory = Path(directory)
    if find_checkpoint(directory) is None:
        raise CheckpointError(f"{directory}: no model folder there (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
    path = directory / CONFIG_FILE
    if not path.is_file():
        return _read_legacy(directory / LEGACY_SPEC_FILE)
    body = _read_json(path)
    if body.get("library") != LIBRARY:
        raise CheckpointError(f"{path}: not a vislang model (library: {body.get('library')!r})")
    if not isinstance(body.get("model"), str) or not isinstance(body.get("model_config"), dict):
        raise CheckpointError(f"{path}: field 'model' must be a string and 'model_config' an object")
    pre = directory / PREPROCESSOR_FILE
    body["preprocessor"] = _read_json(pre) if pre.is_file() else {}
    return body


def _read_legacy(path: Path) -> dict[str, Any]:
    """A ``model.json`` of the previous format, in the keys of :func:`read_config`."""
    spec = _read_json(path)
    if not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs", {}), dict):
        raise CheckpointError(f"{path}: field 'name' must be a string and 'kwargs' an object")
    body = {k: v for k, v in spec.items() if k not in ("name", "kwargs", "transform", "format", "version")}
    return {**body, "library": LIBRARY, "format": "vislang.checkpoint", "version": 1, "model": spec["name"],
            "model_config": spec.get("kwargs", {}), "preprocessor": spec.get("transform", {})}


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def corrupt(path: str | os.PathLike, detail: str) -> CheckpointError:
    """The one-line error of a weights file that is damaged: ``<path>: corrupt or partial: <detail>``."""
    return CheckpointError(f"{path}: corrupt or partial: {detail}")


def check_digest(path: str | os.PathLike, expected: str | None, record: str) -> None:
    """Refuse ``path`` unless its sha256 is ``expected`` (the digest ``record`` holds; None: no record).

    Raises:
        CheckpointError: The digests differ (:func:`corrupt`).
    """
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise corrupt(path, f"checksum mismatch (the file is truncated or was changed after saving; {record} "
                            f"records sha256 {expected[:16]}..., the file has {actual[:16]}...)")


def read_weights(directory: str | os.PathLike, device: str | torch.device = "cpu", *,
                 expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a folder's ``model.safetensors``.

    Args:
        directory: The model folder.
        device: Where the tensors go.
        expected_sha256: The digest recorded at save time (checked when given).

    Raises:
        CheckpointError: The file is missing, or corrupt or partial: its digest differs from the record, or
            safetensors cannot parse it.
    """
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: {WEIGHTS_FILE} is missing")
    check_digest(path, expected_sha256, CONFIG_FILE)
    try:
        return safetensors.torch.load_file(str(path), device=str(device))
    except Exception as e:  # safetensors reports truncated or corrupt files with its own error types
        raise corrupt(path, f"cannot read it ({first_line(e)})") from None


def read_weights_of(directory: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """:func:`read_weights` with the digest recorded in the folder's ``config.json`` checked."""
    body = read_config(directory)
    return read_weights(directory, device, expected_sha256=body.get(WEIGHTS_DIGEST))
