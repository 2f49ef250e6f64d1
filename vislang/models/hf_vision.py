"""Any Hugging Face vision backbone from a local directory as a vislang image encoder (``[hf]`` extra).

``HFVisionEncoder("path/to/model")`` loads the directory with ``transformers.AutoModel.from_pretrained(path,
local_files_only=True)`` (never downloading): ViT, DeiT, DINOv2, CLIP or SigLIP vision towers (from a
vision-only or a full two-tower checkpoint), ConvNeXt, ResNet and other models taking ``pixel_values``.
Outputs become :class:`ImageFeatures`: token models give their patch tokens as the grid (the class and register
tokens before them are dropped) and convolutional models their last feature map; ``pooled`` is the model's
``pooler_output`` when it has one, else the grid mean.

vislang feeds ImageNet-normalised images; when the directory's ``preprocessor_config.json`` names another
``image_mean``/``image_std`` (CLIP, SigLIP, most ViTs), inputs are re-normalised to match.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vislang.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vislang.errors import DataError, VislangError
from vislang.models.encoders import ImageFeatures, check_images, load_local_hf_model, with_weights
from vislang.models.registry import register_family, register_model


@dataclass(frozen=True)
class HFVisionConfig:
    """Where :class:`HFVisionEncoder` loads from.

    Attributes:
        path: Local Hugging Face model directory (required).
        weights: A vislang state dict of the wrapped model to load after building (e.g. after fine-tuning).
    """

    path: str | None = None
    weights: str | None = None


class HFVisionEncoder(nn.Module):
    """A local Hugging Face vision model behind the vislang encoder interface.

    Args:
        path: Directory written by ``save_pretrained`` (``config.json`` plus weights).

    Raises:
        VislangError: ``transformers`` is not installed, the directory is not a loadable model, or the model
            does not take images.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        path = Path(path)
        if not (path / "config.json").is_file():
            raise VislangError(f"{path}: not a Hugging Face model directory (no config.json)")
        model = load_local_hf_model(path, "image encoder")
        if isinstance(getattr(model, "vision_model", None), nn.Module):
            model = model.vision_model                   # the image tower (CLIP/SigLIP-style models)
        if not _takes("pixel_values", model.forward):
            raise VislangError(f"{path}: {type(model).__name__} is not a vision model (it takes no pixel_values)")
        self.model = model.float()
        self.path = str(path)
        config = model.config
        sizes = getattr(config, "hidden_sizes", None)
        self.out_dim = int(sizes[-1] if sizes else config.hidden_size)
        self.patch_size = _pair(getattr(config, "patch_size", None))
        self.image_size = _pair(getattr(config, "image_size", None))
        self.can_interpolate = _takes("interpolate_pos_encoding", model.forward)
        scale, shift = _renormalisation(path / "preprocessor_config.json")
        self.register_buffer("scale", scale, persistent=False)            # (1, 3, 1, 1)
        self.register_buffer("shift", shift, persistent=False)            # (1, 3, 1, 1)

    def forward(self, images: Tensor) -> ImageFeatures:
        """Encode ``images`` ``(B, 3, H, W)`` (ImageNet-normalised)."""
        hw = check_images(images, type(self.model).__name__)
        kwargs: dict[str, Any] = {}
        if self.can_interpolate and self.image_size and tuple(hw) != self.image_size:
            kwargs["interpolate_pos_encoding"] = True
        out = self.model(pixel_values=images * self.scale + self.shift, return_dict=True, **kwargs)
        hidden = out.last_hidden_state
        if hidden.dim() == 4:                                               # (B, C, h, w): convolutional
            grid_hw = (hidden.shape[2], hidden.shape[3])
            grid = hidden.flatten(2).transpose(1, 2)                        # (B, h*w, C)
        else:                                                               # (B, extra + h*w, D): tokens
            grid, grid_hw = _patch_tokens(hidden, hw, self.patch_size)
        pooled = getattr(out, "pooler_output", None)
        pooled = grid.mean(dim=1) if pooled is None else pooled.flatten(1)  # (B, D)
        return ImageFeatures(grid=grid, pooled=pooled, grid_hw=grid_hw)


def _takes(name: str, fn: Any) -> bool:
    """Whether callable ``fn`` has a parameter called ``name``."""
    return name in inspect.signature(fn).parameters


def _pair(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _patch_tokens(hidden: Tensor, image_hw: tuple[int, int],
                  patch: tuple[int, int] | None) -> tuple[Tensor, tuple[int, int]]:
    """Split ``(B, T, D)`` tokens into the leading extra tokens (class, registers) and the patch grid."""
    n = hidden.shape[1]
    if patch is not None:
        h, w = image_hw[0] // patch[0], image_hw[1] // patch[1]
    else:                                            # no patch size in the config: a square grid, maybe + CLS
        side = next((s for s in (math.isqrt(n), math.isqrt(n - 1)) if s * s in (n, n - 1)), None)
        if side is None:
            raise VislangError(f"cannot tell the patch grid of a model with {n} output tokens and no patch_size")
        h = w = side
    extra = n - h * w
    if extra < 0:
        raise VislangError(f"the model returned {n} tokens, fewer than its {h}x{w} patch grid")
    return hidden[:, extra:], (h, w)                                        # (B, h*w, D)


def _renormalisation(path: Path) -> tuple[Tensor, Tensor]:
    """``scale``/``shift`` mapping ImageNet-normalised pixels to the model's own normalisation."""
    in_mean, in_std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    mean, std = in_mean, in_std
    if path.is_file():
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"not valid JSON ({e})", path=str(path)) from None
        if cfg.get("do_normalize", True) is False:
            mean, std = torch.zeros(3), torch.ones(3)
        else:
            mean = _triple(cfg, "image_mean", path, in_mean)
            std = _triple(cfg, "image_std", path, in_std)
    scale = in_std / std                                                    # (3,)
    shift = (in_mean - mean) / std                                          # (3,)
    return scale.view(1, 3, 1, 1), shift.view(1, 3, 1, 1)


def _triple(cfg: dict, key: str, path: Path, default: Tensor) -> Tensor:
    value = cfg.get(key)
    if value is None:
        return default
    if isinstance(value, (int, float)):
        value = [value] * 3
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
        raise DataError(f"expected three numbers, got {value!r}", path=str(path), field=key)
    if key == "image_std" and min(value) <= 0:
        raise DataError(f"standard deviations must be positive, got {value!r}", path=str(path), field=key)
    return torch.tensor(value, dtype=torch.float32)


@register_family("hf_vision", HFVisionConfig)
def build_hf_vision(cfg: HFVisionConfig) -> HFVisionEncoder:
    """An :class:`HFVisionEncoder` of ``cfg.path``, with ``cfg.weights`` loaded when given."""
    if not cfg.path:
        raise VislangError("hf_vision needs path=<directory of a Hugging Face vision model>")
    return with_weights(HFVisionEncoder(cfg.path), cfg.weights, "image_encoder")


register_model("hf_vision", "hf_vision", "A Hugging Face vision model from the local directory ``path``; "
               "``weights`` (optional) is a vislang state dict of the wrapped model, e.g. saved after fine-tuning.")
