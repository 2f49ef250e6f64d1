"""Writing and loading model folders (the layout is in :mod:`vislang.utils.folder`), atomically.

A folder is written into a temporary directory beside its final place, flushed to disk, and then swapped in
with renames. A crash at any point leaves either the old or the new folder: if it strikes between the two
renames, :func:`find_checkpoint` puts the old one back.

Loading is strict: a missing, extra or mis-shaped tensor is refused with its key named, and the sha256 of
``model.safetensors`` and ``train_state.pt`` recorded in ``config.json`` is checked first: a truncated or
damaged file gives one line naming it as ``corrupt or partial``.
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

from vislang.errors import VislangError, first_line
from vislang.utils.folder import (
    CARD_FILE,
    CONFIG_FILE,
    FORMAT,
    LIBRARY,
    PREPROCESSOR_FILE,
    STATE_DIGEST,
    STATE_FILE,
    VERSION,
    WEIGHTS_DIGEST,
    WEIGHTS_FILE,
    CheckpointError,
    check_digest,
    corrupt,
    find_checkpoint,
    read_config,
    read_weights,
    resolve_checkpoint,
    run_of,
    sha256_file,
)
from vislang.utils.io import atomic_dir

__all__ = [
    "CheckpointError",
    "copy_checkpoint",
    "find_checkpoint",
    "load_checkpoint",
    "load_model",
    "load_train_state",
    "load_weights",
    "read_config",
    "resolve_checkpoint",
    "run_of",
    "save_checkpoint",
]


def save_checkpoint(directory: str | os.PathLike, model: nn.Module, model_spec: dict[str, Any],
                    train_state: dict[str, Any] | None = None, *,
                    artifacts: Callable[[Path], None] | None = None,
                    info: dict[str, Any] | None = None,
                    card: Callable[[dict[str, Any]], str] | None = None) -> Path:
    """Write a model folder atomically, replacing any previous one.

    Args:
        directory: Final location, e.g. ``run/checkpoints/last``.
        model: The model whose ``state_dict`` is saved (tied weights stored once).
        model_spec: ``{"model": registry name, "model_config": builder options, "task": ...,
            "preprocessor": image preprocessing, ...}`` (JSON-serialisable; extra keys are task entries).
        train_state: Resumable training state, saved to ``train_state.pt`` (None: weights only).
        artifacts: Called with the (temporary) directory to add task files such as a vocabulary.
        info: Extra entries for ``config.json`` (step, epoch, metrics).
        card: Makes the model card (``README.md``) from the finished ``config.json`` body.

    Returns:
        ``directory``.
    """
    directory = Path(directory)
    spec = _check_spec(model_spec)
    with _staged(directory) as tmp:
        safetensors.torch.save_model(model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        digests = {WEIGHTS_DIGEST: sha256_file(tmp / WEIGHTS_FILE)}
        if train_state is not None:
            buf = io.BytesIO()
            torch.save(train_state, buf)
            (tmp / STATE_FILE).write_bytes(buf.getvalue())
            digests[STATE_DIGEST] = sha256_file(tmp / STATE_FILE)
        body = {"library": LIBRARY, "format": FORMAT, "version": VERSION,
                **{k: v for k, v in spec.items() if k != "preprocessor"}, **digests, **(info or {})}
        _write_json(tmp / CONFIG_FILE, body)
        _write_json(tmp / PREPROCESSOR_FILE, spec.get("preprocessor") or {})
        if artifacts is not None:
            artifacts(tmp)
        if card is not None:
            (tmp / CARD_FILE).write_text(card({**body, "preprocessor": spec.get("preprocessor") or {}}),
                                         encoding="utf-8")
    return directory


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Atomically make ``dst`` a copy of the folder ``src`` (hard links where the filesystem allows: files
    of a model folder are never modified in place, only replaced)."""
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


def load_checkpoint(directory: str | os.PathLike, map_location: str | torch.device = "cpu",
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read a model folder.

    Returns:
        ``(config, state_dict, train_state)``: ``config`` is :func:`read_config`'s; ``state_dict`` holds the
        saved tensors (a tied weight appears under one of its names: load it with :func:`load_weights`);
        ``train_state`` is None when the folder has no ``train_state.pt``.
    """
    config = read_config(directory)
    state_dict = read_weights(directory, map_location, expected_sha256=config.get(WEIGHTS_DIGEST))
    return config, state_dict, load_train_state(directory, map_location)


def load_train_state(directory: str | os.PathLike, map_location: str | torch.device = "cpu",
                     ) -> dict[str, Any] | None:
    """A folder's ``train_state.pt`` (None when it has none), without reading the weights.

    Raises:
        CheckpointError: The file is corrupt or partial: its digest differs from the one ``config.json``
            records, or torch cannot read it.
    """
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    check_digest(path, read_config(directory).get(STATE_DIGEST), CONFIG_FILE)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise corrupt(path, f"cannot read it ({first_line(e)})") from None


def load_weights(model: nn.Module, directory: str | os.PathLike) -> None:
    """Load a folder's weights into ``model``, strictly: a missing, unexpected or mis-shaped tensor is
    refused with its key named.

    Raises:
        CheckpointError: The folder is missing or corrupt, or its tensors do not fit ``model``.
    """
    directory = Path(directory)
    config = read_config(directory)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    saved = read_weights(directory, device, expected_sha256=config.get(WEIGHTS_DIGEST))
    check_state_dict(model, saved, f"{directory / WEIGHTS_FILE}")
    with torch.no_grad():
        model.load_state_dict(saved, strict=False)  # checked above; a tied tensor is saved under one name


def check_state_dict(model: nn.Module, saved: dict[str, torch.Tensor], where: str) -> None:
    """Refuse ``saved`` unless it has exactly the tensors of ``model`` (a tied weight under any one of its
    names), each of the same shape.

    Raises:
        CheckpointError: Naming the first missing, unexpected or mis-shaped keys.
    """
    own = model.state_dict(keep_vars=True)
    aliases: dict[int, list[str]] = {}
    for name, t in own.items():
        aliases.setdefault(id(t), []).append(name)
    missing = [names[0] for names in aliases.values() if not any(n in saved for n in names)]
    unexpected = [k for k in saved if k not in own]
    what = type(model).__name__
    if missing or unexpected:
        raise CheckpointError(f"{where} does not fit {what}: missing {_first(missing)}, "
                              f"unexpected {_first(unexpected)}")
    bad = [f"{k} {tuple(saved[k].shape)} (model {tuple(own[k].shape)})" for k in saved
           if tuple(saved[k].shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"{where} does not fit {what}: wrong shape {_first(bad)}")


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a folder with the model registry and load its weights (in eval mode)."""
    from vislang.models.registry import create_model

    config = read_config(directory)
    model = create_model(config["model"], **without_weight_paths(config["model_config"])).to(device)
    load_weights(model, directory)
    return model.eval()


def without_weight_paths(options: Any) -> Any:
    """Builder options with every ``weights`` entry (a file or run to start an encoder from) removed: a
    saved model's own weights file holds every tensor, so rebuilding must not need those paths."""
    if isinstance(options, dict):
        return {k: without_weight_paths(v) for k, v in options.items() if k != "weights"}
    return options


# ------------------------------------------------------------------------------------------------ internals


def _write_json(path: Path, body: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(body, f, indent=1, ensure_ascii=False)
        f.write("\n")


def _check_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (kept whole: tasks add entries such as ``max_len``) after checking it."""
    if not isinstance(spec.get("model"), str) or not isinstance(spec.get("model_config", {}), dict):
        raise VislangError(f"a model spec needs a string 'model' and a dict 'model_config', got {spec!r}")
    out = {**spec, "model_config": spec.get("model_config", {})}
    try:
        json.dumps(out)
    except (TypeError, ValueError) as e:
        raise VislangError(f"the model spec of {spec['model']!r} is not JSON-serialisable: {e}") from None
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
