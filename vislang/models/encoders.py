"""What every image encoder returns, and the helpers all encoders share.

An image encoder is an ``nn.Module`` with an ``out_dim`` attribute whose ``forward`` takes a batch of images
``(B, 3, H, W)`` normalised with the ImageNet mean and standard deviation and returns :class:`ImageFeatures`:
a grid of spatial features for attention (captioning, VQA) and one pooled vector (retrieval, classification).

Encoders are transfer-learned by freezing them (:func:`set_trainable`) or by fine-tuning them at their own
learning rate (the trainer puts their parameters in a parameter group of their own). Weights are plain state
dicts in ``.safetensors`` (preferred) or ``.pth`` files: :func:`save_weights`, :func:`load_weights`. A
``.safetensors`` file vislang writes records the sha256 of its tensor data in its header, checked on reading.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor, nn

from vislang.errors import VislangError, first_line
from vislang.utils.folder import (
    WEIGHTS_FILE,
    corrupt,
    find_checkpoint,
    read_config,
    read_weights_of,
    resolve_checkpoint,
)
from vislang.utils.io import atomic_open

M = TypeVar("M", bound=nn.Module)

DATA_DIGEST = "vislang_data_sha256"  # :func:`save_weights`' header entry: sha256 of the tensor data


class ImageFeatures(NamedTuple):
    """The output of every image encoder."""

    grid: Tensor                # (B, N, D) spatial features: N = h*w grid cells (CNN) or patches (ViT, no CLS)
    pooled: Tensor              # (B, D) global feature
    grid_hw: tuple[int, int]    # (h, w) of the grid, for attention maps


@runtime_checkable
class ImageEncoder(Protocol):
    """Structural type of an image encoder (every ``nn.Module`` with these members qualifies)."""

    out_dim: int

    def __call__(self, images: Tensor) -> ImageFeatures: ...


def check_images(images: Tensor, model: str, min_size: int = 1) -> tuple[int, int]:
    """Check that ``images`` is a ``(B, 3, H, W)`` batch at least ``min_size`` pixels on each side.

    Args:
        images: The batch given to an encoder.
        model: Name of the encoder, for the error message.
        min_size: Smallest height and width the encoder supports.

    Returns:
        ``(H, W)``.

    Raises:
        VislangError: The batch has the wrong shape or is too small.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise VislangError(f"{model} expects a batch of RGB images of shape (B, 3, H, W), "
                           f"got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if height < min_size or width < min_size:
        raise VislangError(f"{model} needs images of at least {min_size}x{min_size} pixels, got {height}x{width}")
    return height, width


def set_trainable(module: nn.Module, trainable: bool) -> nn.Module:
    """Freeze or unfreeze every parameter of ``module``.

    A frozen module is put in eval mode and *stays* there when a parent calls ``.train()``, so its
    BatchNorm statistics and dropout stay fixed: it is a fixed feature extractor. Unfreezing lets the
    next ``.train()`` call reach it again.

    Args:
        module: The module (usually an image encoder).
        trainable: ``False`` to freeze, ``True`` to fine-tune.

    Returns:
        ``module``, for chaining.
    """
    for param in module.parameters():
        param.requires_grad_(trainable)
    if trainable:
        module.__dict__.pop("train", None)          # back to nn.Module.train
    else:
        module.train = functools.partial(_stay_in_eval, module)
        module.eval()
    return module


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(module, False)


def is_frozen(module: nn.Module) -> bool:
    """Whether ``module`` has parameters and none of them is trainable."""
    flags = [p.requires_grad for p in module.parameters()]
    return bool(flags) and not any(flags)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements in ``module`` (buffers excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def read_state_dict(path: str | os.PathLike, submodule: str | None = None) -> dict[str, Tensor]:
    """Read a state dict from a ``.safetensors`` file, a ``torch.save``-d ``.pth``/``.pt``/``.bin`` file, or a
    vislang run or checkpoint directory.

    ``.pth`` files are read with ``weights_only=True`` (no code runs). A checkpoint that wraps its state dict
    under ``"state_dict"`` or ``"model"`` is unwrapped. The digest a vislang-written file records (in its
    header, :func:`save_weights`; or its model folder's ``config.json``) is checked first. From a vislang run
    (its best checkpoint) or checkpoint directory, ``submodule`` picks one part of the saved model, e.g.
    ``"image_encoder"``: its entries, with the ``image_encoder.`` prefix removed. That is how an encoder
    trained in one task starts another (transfer learning: a shapes captioner's CNN for VQA, a retrieval run's
    image tower for captioning).

    Raises:
        VislangError: The file is missing, corrupt or partial (its recorded digest differs, or it cannot be
            parsed), or not a mapping of names to tensors; a run whose model has no ``submodule``.
    """
    path = Path(path)
    if path.is_dir():
        return _run_state_dict(path, submodule)
    if not path.is_file():
        raise VislangError(f"{path}: weights file not found")
    if path.name == WEIGHTS_FILE and find_checkpoint(path.parent) is not None:
        return read_weights_of(path.parent)  # the weights of a model folder: its config.json has their digest
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            _check_data_digest(path)
            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except VislangError:
        raise
    except Exception as e:  # every reader failure means the same to the user: not a (whole) weights file
        raise VislangError(f"{path}: cannot read weights ({first_line(e)}); the file is corrupt or partial, "
                           "or not a .safetensors file or a state dict saved with "
                           "torch.save(model.state_dict(), path)") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise VislangError(f"{path}: holds a {type(state).__name__}, not a state dict of named tensors")
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise VislangError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
    return dict(state)


def _run_state_dict(path: Path, submodule: str | None) -> dict[str, Tensor]:
    ckpt = resolve_checkpoint(path)
    state = read_weights_of(ckpt)
    if submodule is None:
        return state
    prefix = f"{submodule}."
    part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not part:
        model = read_config(ckpt).get("model")
        raise VislangError(f"{ckpt}: its model ({model}) has no {submodule} to take weights from")
    return part


def load_weights(model: nn.Module, path: str | os.PathLike, exclude: Sequence[str] = (),
                 submodule: str | None = None) -> None:
    """Load a weights file into ``model`` strictly: every name and shape must match.

    ``num_batches_tracked`` buffers may be absent (checkpoints saved before PyTorch 0.4.1, such as the first
    torchvision ResNets, lack them).

    Args:
        model: The model to fill in place.
        path: A file or vislang run :func:`read_state_dict` reads.
        exclude: Name prefixes to leave out on both sides (e.g. ``("fc.",)`` to keep a new classifier).
        submodule: The part of a vislang run's model to take (``"image_encoder"``, ``"text_encoder"``).

    Raises:
        VislangError: The file is unreadable, or its names or shapes differ from the model's; the message
            lists the missing and unexpected names and the shape mismatches.
    """
    def kept(key: str) -> bool:
        return not any(key.startswith(prefix) for prefix in exclude)

    own = model.state_dict()
    state = {k: v for k, v in read_state_dict(path, submodule).items() if kept(k)}
    missing = [k for k in own if kept(k) and k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {tuple(v.shape)}, model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or mismatched:
        lines = [f"{path} does not fit {type(model).__name__} ({len(state)} tensors in the file, "
                 f"{len(own)} in the model):"]
        for title, items in (("missing from the file", missing), ("unexpected in the file", unexpected),
                             ("shape mismatch", mismatched)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... and {len(items) - 8} more" if len(items) > 8 else "")
                lines.append(f"  {title} ({len(items)}): {shown}")
        if unexpected and all(k.startswith("module.") for k in unexpected):
            lines.append("  (the file looks saved from DataParallel: strip the 'module.' prefix)")
        raise VislangError("\n".join(lines))
    for key, value in own.items():          # excluded entries and absent num_batches_tracked keep their values
        state.setdefault(key, value)
    model.load_state_dict(state, strict=True)


PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def list_pretrained() -> list[str]:
    """Names of the weights shipped with vislang (``vislang/models/pretrained/NAME.safetensors``, each with its
    model card ``NAME.md``)."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.safetensors"))


def pretrained_weights(name: str) -> Path:
    """The shipped weights file called ``name`` (a file of this installation: nothing is downloaded).

    Raises:
        VislangError: No such weights are shipped.
    """
    path = PRETRAINED_DIR / f"{name}.safetensors"
    if "/" in name or not path.is_file():
        raise VislangError(f"pretrained={name!r}: no such weights ship with vislang "
                           f"(shipped: {', '.join(list_pretrained()) or 'none'}); a file or run: weights=PATH")
    return path


def with_weights(model: M, weights: str | os.PathLike | None, submodule: str, pretrained: str | None = None) -> M:
    """``model``, with the weights file or vislang run ``weights`` loaded into it when given (:func:`load_weights`;
    of a run, its ``submodule`` part), or the shipped weights called ``pretrained``: what a family builder with
    a ``weights`` option returns."""
    if weights and pretrained:
        raise VislangError(f"give weights={weights} or pretrained={pretrained}, not both")
    if pretrained:
        weights = pretrained_weights(pretrained)
    if weights:
        load_weights(model, weights, submodule=submodule)
    return model


def load_local_hf_model(path: Path, what: str) -> nn.Module:
    """``transformers.AutoModel.from_pretrained(path, local_files_only=True)`` (never downloading), with the
    missing ``[hf]`` extra and unloadable directories as :class:`VislangError` naming ``what`` and ``path``."""
    try:
        from transformers import AutoModel
    except ImportError:
        raise VislangError(f"the Hugging Face {what} needs transformers: pip install 'vislang[hf]'") from None
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar per load of a local folder is noise in every command's output
    try:
        return AutoModel.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise VislangError(f"{path}: cannot load the Hugging Face model ({first_line(e)})") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model.state_dict()`` to a ``.safetensors`` file atomically, with the sha256 of its tensor data
    in the header's metadata (:func:`read_state_dict` checks it)."""
    save_tensors(model.state_dict(), path)


def save_tensors(tensors: Mapping[str, Tensor], path: str | os.PathLike,
                 metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` to a ``.safetensors`` file atomically, with ``metadata`` and the sha256 of the tensor
    data in its header (:func:`read_state_dict` and :func:`read_tensors` check it)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"format": "pt", **(metadata or {})}
    plain = save(tensors, metadata=meta)
    digest = hashlib.sha256(memoryview(plain)[_data_start(plain[:8])]).hexdigest()
    data = save(tensors, metadata={**meta, DATA_DIGEST: digest})  # same tensor data, longer header
    with atomic_open(path, "wb") as f:
        f.write(data)


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and header metadata of a ``.safetensors`` file :func:`save_tensors` wrote (digest checked).

    Raises:
        VislangError: The file is missing, corrupt or partial.
    """
    from safetensors import safe_open

    state = read_state_dict(Path(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(state), dict(f.metadata() or {})
    except Exception as e:  # safetensors' own error types
        raise corrupt(path, f"cannot read its header ({first_line(e)})") from None


def _data_start(prefix: bytes) -> slice:
    """Where the tensor data of a ``.safetensors`` file starts (``prefix``: its first 8 bytes, the length of
    the header that follows them)."""
    return slice(8 + int.from_bytes(prefix, "little"), None)


def _check_data_digest(path: Path) -> None:
    """Compare the sha256 of the tensor data of ``path`` with the one :func:`save_weights` recorded in its
    header; a file without that record (or a header safetensors will refuse anyway) is left to the reader.

    Raises:
        CheckpointError: The digests differ (corrupt or partial).
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        start = _data_start(f.read(8)).start
        if start > size:
            return
        try:
            metadata = json.loads(f.read(start - 8)).get("__metadata__") or {}
            expected = metadata.get(DATA_DIGEST)
        except (ValueError, AttributeError):
            return
        if not isinstance(expected, str):
            return
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise corrupt(path, f"checksum mismatch (its tensor data was truncated or changed after saving; its "
                            f"header records sha256 {expected[:16]}..., the data has "
                            f"{digest.hexdigest()[:16]}...)")
