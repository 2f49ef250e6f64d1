"""The fusion experiment's figure: VQA accuracy per question type, one bar per fusion strategy."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw

from vislang.utils.io import atomic_save_image
from vislang.viz.charts import PALETTE


def save_fusion_plot(results: dict[str, Any], path: str | os.PathLike, question_types: Sequence[str]) -> None:
    """Grouped bars: VQA accuracy per question type (and overall), one colour per strategy, baselines grey.

    Args:
        results: The fusion experiment's ``results.json`` body (``fusions``, ``best``).
        path: PNG file to write (atomically).
        question_types: Question types in the order of the groups (those with no score are left out).
    """
    fusions = results["fusions"]
    best = results.get("best") or next(iter(fusions))
    series = [(name, e["accuracy"]["model"]) for name, e in fusions.items()]
    for system, label in (("question prior (train majority)", "question prior"),
                          ("image-only (question blanked)", "image-only")):
        if system in fusions[best]["accuracy"]:
            series.append((label, fusions[best]["accuracy"][system]))
    groups = ["overall", *[t for t in question_types if any(t in acc for _, acc in series)]]
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(fusions))] + [(170, 170, 170), (100, 100, 100)]
    bar, gap, left, top, height = 12, 18, 50, 40, 260
    width = left + len(groups) * (len(series) * bar + gap) + 170
    im = Image.new("RGB", (width, top + height + 40), "white")
    d = ImageDraw.Draw(im)
    d.text((left, 10), "VQA accuracy per question type (official metric), same budget and seed", fill="black")
    for k in range(0, 101, 20):
        y = top + height - height * k / 100
        d.line([(left - 4, y), (width - 170, y)], fill=(225, 225, 225))
        d.text((8, y - 6), f"{k}%", fill="black")
    for g, name in enumerate(groups):
        x0 = left + g * (len(series) * bar + gap)
        for s, (_, acc) in enumerate(series):
            v = acc.get(name, float("nan"))
            if v == v:
                x = x0 + s * bar
                d.rectangle([x, top + height - height * v, x + bar - 2, top + height], fill=colors[s])
        d.text((x0, top + height + 6), name, fill="black")
    for s, (label, _) in enumerate(series):
        y = top + s * 18
        d.rectangle([width - 160, y, width - 148, y + 12], fill=colors[s])
        d.text((width - 142, y), label, fill="black")
    atomic_save_image(path, im, format="PNG")
