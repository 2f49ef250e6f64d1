"""Explanation figures drawn with Pillow: an image beside a heat map over it (a search match map, a classifier's
attention or occlusion map), grids of such figures, and PNG bytes for a server.

Nothing here uses pyplot or any global state, so figures may be drawn from several threads at once.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from vislang.viz.attention import upsample_map
from vislang.viz.fonts import default_font

TITLE_H = 28    # pixels of a figure's title line (when it has a title)
LABEL_H = 20    # pixels of the labels under the panels
PAD = 6         # pixels around the figures of a grid

POSITIVE = np.array([220, 40, 30], dtype=np.float32)   # signed maps: raising the score
NEGATIVE = np.array([30, 90, 220], dtype=np.float32)   # signed maps: lowering it
# non-negative maps: a "hot" ramp from dark red through orange to yellow
RAMP = np.array([[90, 0, 20], [200, 30, 20], [250, 140, 20], [255, 235, 90]], dtype=np.float32)


def heatmap_overlay(image: Image.Image, heat: torch.Tensor, size: int = 192) -> Image.Image:
    """The image with an upsampled ``(h, w)`` map blended over it.

    A map with negative values is drawn signed (red where positive, blue where negative, each as strong as
    its value over the largest absolute value; zero leaves the image as it is); a non-negative map is drawn
    in a hot colour ramp from its minimum to its maximum, as :func:`~vislang.viz.attention.attention_overlay`
    scales its weights.

    Args:
        image: RGB image.
        heat: ``(h, w)`` map (any scale).
        size: Output side in pixels.
    """
    im = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    a = upsample_map(heat, size)                                       # (size, size)
    if float(heat.min()) < 0:
        v = a / (np.abs(a).max() + 1e-12)                              # in [-1, 1]
        colour = np.where(v[..., None] >= 0, POSITIVE, NEGATIVE)       # (size, size, 3)
        alpha = 0.8 * np.abs(v)[..., None]
    else:
        v = (a - a.min()) / (a.max() - a.min() + 1e-12)                # in [0, 1]
        pos = v * (len(RAMP) - 1)
        lo = np.clip(np.floor(pos).astype(int), 0, len(RAMP) - 2)
        frac = (pos - lo)[..., None]
        colour = RAMP[lo] * (1 - frac) + RAMP[lo + 1] * frac           # (size, size, 3)
        alpha = 0.15 + 0.6 * v[..., None]
    out = im * (1 - alpha) + colour * alpha
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def heatmap_figure(image: Image.Image, heat: torch.Tensor, title: str | None = None, cell: int = 192) -> Image.Image:
    """The image beside its heat map overlay (:func:`heatmap_overlay`), the map's range under it.

    Args:
        image: The image explained.
        heat: ``(h, w)`` map over it.
        title: A line above the panels (None: no title line).
        cell: Side of each panel in pixels.

    Returns:
        An RGB image of ``2 * cell`` by ``cell + LABEL_H`` pixels, plus ``TITLE_H`` with a title.
    """
    top = TITLE_H if title is not None else 0
    fig = Image.new("RGB", (2 * cell, top + cell + LABEL_H), "white")
    draw = ImageDraw.Draw(fig)
    font = default_font(13)
    if title is not None:
        title_font = default_font(15)
        draw.text((6, 6), fit_text(draw, title, title_font, 2 * cell - 12), fill="black", font=title_font)
    fig.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.BICUBIC), (0, top))
    fig.paste(heatmap_overlay(image, heat, cell), (cell, top))
    lo, hi = float(heat.min()), float(heat.max())
    draw.text((4, top + cell + 3), "image", fill="black", font=font)
    draw.text((cell + 4, top + cell + 3), fit_text(draw, f"map {heat.shape[-2]}x{heat.shape[-1]}: {lo:.3g} to {hi:.3g}",
                                                font, cell - 8), fill="black", font=font)
    return fig


def stack_figures(figures: Sequence[Image.Image], columns: int = 1) -> Image.Image:
    """Figures in a grid, ``columns`` a row, each in a cell as large as the largest, ``PAD`` pixels apart.

    Raises:
        ValueError: No figures.
    """
    if not figures:
        raise ValueError("stack_figures needs at least one figure")
    cols = max(1, min(columns, len(figures)))
    rows = -(-len(figures) // cols)
    w, h = max(f.width for f in figures), max(f.height for f in figures)
    sheet = Image.new("RGB", (cols * w + (cols + 1) * PAD, rows * h + (rows + 1) * PAD), "white")
    for k, fig in enumerate(figures):
        r, c = divmod(k, cols)
        sheet.paste(fig.convert("RGB"), (PAD + c * (w + PAD), PAD + r * (h + PAD)))
    return sheet


def png_bytes(fig: Image.Image) -> bytes:
    """The figure encoded as PNG."""
    buf = io.BytesIO()
    fig.save(buf, format="PNG")
    return buf.getvalue()


def fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels in ``font``."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
