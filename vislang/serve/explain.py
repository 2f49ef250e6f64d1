"""Explanations as JSON: the maps as lists, and a PNG of each drawn over its image (a ``data:`` URL)."""

from __future__ import annotations

import base64
from typing import Any

from torch import Tensor


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def grid_list(heat: Tensor, digits: int = 4) -> list[list[float]]:
    """An ``(h, w)`` map as rows of rounded floats."""
    return [[round(float(v), digits) for v in row] for row in heat.float().tolist()]


def caption_explanation(image: Any, caption: Any) -> dict[str, Any]:
    """Per-word attention of a caption: ``words``, ``maps`` ``(L, h, w)`` and the attention strip."""
    from vislang.viz import attention_figure, png_bytes

    att = caption.attention                                                          # (L, h, w)
    h, w = att.shape[1:]
    strip = attention_figure(image, caption.words, att.flatten(1), (h, w), caption.text)
    return {"kind": "attention", "grid": [h, w], "words": caption.words + (["<end>"] if len(att) > len(caption.words)
                                                                            else []),
            "maps": [grid_list(m) for m in att], "png": data_url(png_bytes(strip))}


def heatmap_explanation(image: Any, heat: Tensor, title: str, kind: str, **extra: Any) -> dict[str, Any]:
    """One ``(h, w)`` map over an image (VQA attention, search match, classification evidence)."""
    from vislang.viz import heatmap_figure, png_bytes

    h, w = heat.shape
    fig = heatmap_figure(image, heat, title)
    return {"kind": kind, "grid": [h, w], "map": grid_list(heat), **extra, "png": data_url(png_bytes(fig))}
