"""Figures drawn with Pillow: per-word attention overlays in the style of Show, Attend and Tell."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from vislang.utils.io import atomic_save_image, check_output_file
from vislang.viz.fonts import default_font


def attention_overlay(image: Image.Image, attention: torch.Tensor, size: int = 160) -> Image.Image:
    """The image darkened where the attention is low, as in the Show, Attend and Tell figures.

    Args:
        image: RGB image.
        attention: (h, w) weights of one step (any scale).
        size: Output side in pixels.
    """
    im = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    a = upsample_map(attention, size)
    a = (a - a.min()) / (a.max() - a.min() + 1e-8)  # (size, size) in [0, 1]
    light = 0.25 + 0.75 * a[..., None]
    out = np.asarray(im, dtype=np.float32) * light
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def upsample_map(weights: torch.Tensor, size: int) -> np.ndarray:
    """A ``(h, w)`` map bilinearly upsampled to ``(size, size)`` float32 values (not rescaled)."""
    a = weights.detach().float().cpu()[None, None]  # (1, 1, h, w)
    return F.interpolate(a, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def attention_figure(image: Image.Image, words: Sequence[str], attention: torch.Tensor, grid_hw: tuple[int, int],
                     caption: str | None = None, cell: int = 128, columns: int = 6) -> Image.Image:
    """A grid of panels: the image, then one attention overlay per generated word.

    Args:
        image: The captioned image.
        words: Generated words; an ``<end>`` panel is added when ``attention`` has one more row.
        attention: (L, N) weights per step, N = h * w.
        grid_hw: (h, w) of the attention grid.
        caption: Title line (default: the words joined).
        cell: Panel side in pixels.
        columns: Panels per row.
    """
    h, w = grid_hw
    labels = list(words) + (["<end>"] if attention.shape[0] > len(words) else [])
    panels = [("", image.convert("RGB").resize((cell, cell), Image.Resampling.BICUBIC))]
    panels += [(word, attention_overlay(image, attention[i].view(h, w), cell)) for i, word in enumerate(labels)]
    rows = (len(panels) + columns - 1) // columns
    font, title_font = default_font(13), default_font(15)
    label_h, title_h = 20, 28
    fig = Image.new("RGB", (columns * cell, title_h + rows * (cell + label_h)), "white")
    draw = ImageDraw.Draw(fig)
    draw.text((6, 6), caption if caption is not None else " ".join(words), fill="black", font=title_font)
    for k, (label, panel) in enumerate(panels):
        x, y = (k % columns) * cell, title_h + (k // columns) * (cell + label_h)
        fig.paste(panel, (x, y))
        draw.text((x + 4, y + cell + 3), label, fill="black", font=font)
    return fig


def save_figure(fig: Image.Image, path: str | os.PathLike) -> None:
    """Write a figure as PNG atomically.

    Raises:
        VislangError: ``path`` is a directory, or its folder does not exist (it is not created).
    """
    atomic_save_image(check_output_file(path), fig, format="PNG")
