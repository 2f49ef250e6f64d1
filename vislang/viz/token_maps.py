"""Figures of text-to-image generation, drawn with Pillow: the grid of samples (one row per prompt) and the
per-token cross-attention figure of one generated image.

Generated images are small (16-64 px), so both figures enlarge them by a whole factor with nearest-neighbour
resampling: every pixel of the model's image is a square block of the figure, nothing is smoothed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw

from vislang.viz.fonts import default_font
from vislang.viz.heatmap import PAD, fit_text, heatmap_overlay, stack_figures

GRID_TILE = 96     # least side (pixels) of a grid tile: images are enlarged by the smallest whole factor reaching it
PROMPT_H = 20      # pixels of the prompt line above each row of the grid
SEED_H = 16        # pixels of the seed label under each tile
TITLE_H = 28       # pixels of the token figure's title line
LABEL_H = 20       # pixels of the token label under each panel


def tile_side(image_size: int, least: int = GRID_TILE) -> int:
    """Side of a grid tile for images of ``image_size`` pixels: the image enlarged by the smallest whole
    factor reaching ``least`` (16 -> 96, 32 -> 96, 64 -> 128, 200 -> 200)."""
    return image_size * max(1, -(-least // image_size))


def grid_size(prompts: int, samples: int, image_size: int, least: int = GRID_TILE) -> tuple[int, int]:
    """``(width, height)`` in pixels of :func:`sample_grid` of ``prompts`` rows of ``samples`` images."""
    tile = tile_side(image_size, least)
    row_w, row_h = samples * tile + (samples - 1) * PAD, PROMPT_H + tile + SEED_H
    return row_w + 2 * PAD, prompts * row_h + (prompts + 1) * PAD


def sample_grid(rows: Sequence[tuple[str, Sequence[Image.Image], Sequence[int]]],
                least: int = GRID_TILE) -> Image.Image:
    """Generated images in a grid: one row per prompt (the prompt above it), one column per sample (its seed
    under it).

    Args:
        rows: ``(prompt, images, seeds)`` per prompt, every row as long, the images square and of one size.
        least: Least side of a tile (:func:`tile_side`).

    Returns:
        An RGB image of :func:`grid_size` pixels.

    Raises:
        ValueError: No rows, rows of different lengths or images of different sizes.
    """
    if not rows or len({len(images) for _, images, _ in rows}) != 1 or not rows[0][1]:
        raise ValueError("sample_grid needs rows of one non-zero length")
    sizes = {im.size for _, images, _ in rows for im in images}
    if len(sizes) != 1:
        raise ValueError(f"sample_grid needs images of one size, got {sorted(sizes)}")
    side = next(iter(sizes))[0]
    tile = tile_side(side, least)
    font, prompt_font = default_font(11), default_font(13)
    figures = []
    for prompt, images, seeds in rows:
        n = len(images)
        fig = Image.new("RGB", (n * tile + (n - 1) * PAD, PROMPT_H + tile + SEED_H), "white")
        draw = ImageDraw.Draw(fig)
        draw.text((2, 3), fit_text(draw, prompt, prompt_font, fig.width - 4), fill="black", font=prompt_font)
        for k, (im, seed) in enumerate(zip(images, seeds)):
            x = k * (tile + PAD)
            fig.paste(im.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST), (x, PROMPT_H))
            draw.text((x + 2, PROMPT_H + tile + 2), f"seed {seed}", fill=(80, 80, 80), font=font)
        figures.append(fig)
    return stack_figures(figures, columns=1)


def token_maps_figure(image: Image.Image, tokens: Sequence[str], maps: torch.Tensor,
                      weights: torch.Tensor | None = None, title: str | None = None, cell: int = 128,
                      columns: int = 6) -> Image.Image:
    """The generated image, then one heat map over it per token: where in the image that token was attended to.

    Each panel is labelled with its token, the token's share of all the attention (``weights``) and how
    peaked its map is (its maximum over a uniform map's: ``x1.0`` is spread evenly). The overlays are scaled
    each to its own range (:func:`~vislang.viz.heatmap.heatmap_overlay`), so the peak factor tells a
    concentrated map from an almost flat one.

    Args:
        image: The generated image.
        tokens: ``T`` token names (special tokens named like ``[start]``).
        maps: ``(T, h, w)`` attention of each token over the image.
        weights: ``(T,)`` share of the attention of each token (None: not shown).
        title: A line above the panels (None: the tokens joined).
        cell: Side of each panel in pixels.
        columns: Panels per row.

    Raises:
        ValueError: ``maps`` does not have one map per token.
    """
    if maps.dim() != 3 or maps.shape[0] != len(tokens):
        raise ValueError(f"token_maps_figure needs (T, h, w) maps for {len(tokens)} tokens, got {tuple(maps.shape)}")
    big = image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
    panels = [("image", big)]
    for t, token in enumerate(tokens):
        m = maps[t].detach().float().cpu()                                   # (h, w)
        peak = float(m.max() / m.sum().clamp(min=1e-12)) * m.numel()
        share = f"  {float(weights[t]):.0%}" if weights is not None else ""
        panels.append((f"{token}{share}  x{peak:.2f}", heatmap_overlay(big, m, cell)))
    cols = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // cols)
    fig = Image.new("RGB", (cols * cell, TITLE_H + rows * (cell + LABEL_H)), "white")
    draw = ImageDraw.Draw(fig)
    font, title_font = default_font(13), default_font(15)
    line = title if title is not None else " ".join(tokens)
    draw.text((6, 6), fit_text(draw, line, title_font, fig.width - 12), fill="black", font=title_font)
    for k, (label, panel) in enumerate(panels):
        x, y = (k % cols) * cell, TITLE_H + (k // cols) * (cell + LABEL_H)
        fig.paste(panel, (x, y))
        draw.text((x + 4, y + cell + 3), fit_text(draw, label, font, cell - 8), fill="black", font=font)
    return fig
