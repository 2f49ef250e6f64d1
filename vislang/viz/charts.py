"""Line charts as PNG with matplotlib's Agg renderer: several series per chart, several charts on a grid.

    save_charts("curves.png", [Chart([Series("loss", steps, losses)], title="training", xlabel="step")])

No pyplot: each call draws on its own :class:`matplotlib.figure.Figure`, so nothing global changes and
threads or processes without a display work. matplotlib is imported on first use (it is slow to import).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from vislang.utils.io import atomic_save_image

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
"""Series colours as RGB, in order (the usual ten categorical colours)."""

DPI = 100


@dataclass
class Series:
    """One line: ``y[i]`` at ``x[i]``; non-finite values leave a gap (a lone point is drawn as a dot).

    Attributes:
        name: Legend entry.
        x: Abscissae.
        y: Ordinates.
    """

    name: str
    x: Sequence[float]
    y: Sequence[float]


@dataclass
class Chart:
    """One panel.

    Attributes:
        series: Lines to draw (colours follow :data:`PALETTE`).
        title: Text above the plot.
        xlabel: Label under the x axis.
        ylabel: Label left of the y axis.
    """

    series: list[Series] = field(default_factory=list)
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""


def render_charts(charts: Sequence[Chart], size: tuple[int, int] = (640, 360), columns: int = 1) -> Image.Image:
    """Draw ``charts`` on a grid (``columns`` wide, ``size`` pixels each) into one RGB image.

    Raises:
        ValueError: ``charts`` is empty.
    """
    if not charts:
        raise ValueError("no charts to save")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = max(1, min(columns, len(charts)))
    rows = math.ceil(len(charts) / cols)
    width, height = size[0] * cols, size[1] * rows
    # A quarter pixel more than asked: Agg truncates the size in pixels, and w / DPI * DPI may fall short.
    fig = Figure(figsize=((width + 0.25) / DPI, (height + 0.25) / DPI), dpi=DPI, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, chart in zip(axes, charts):
        _draw(ax, chart)
    for ax in axes[len(charts):]:
        ax.set_axis_off()
    with warnings.catch_warnings():  # a legend taller than its panel: drawn without the layout pass
        warnings.filterwarnings("ignore", message="constrained_layout not applied")
        canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def render_chart(chart: Chart, size: tuple[int, int] = (640, 360)) -> Image.Image:
    """Draw one chart into an RGB image of ``size`` pixels."""
    return render_charts([chart], size)


def save_charts(path: str | os.PathLike, charts: Sequence[Chart], size: tuple[int, int] = (640, 360),
                columns: int = 1) -> None:
    """Render ``charts`` on a grid (``columns`` wide, ``size`` each) and write one PNG atomically."""
    atomic_save_image(path, render_charts(charts, size, columns), format="PNG")


def _draw(ax: Any, chart: Chart) -> None:
    """Draw ``chart`` on a matplotlib Axes."""
    ax.grid(True, color="#e4e4e4", linewidth=0.8)
    ax.set_axisbelow(True)
    if chart.title:
        ax.set_title(chart.title, fontsize=11)
    if chart.xlabel:
        ax.set_xlabel(chart.xlabel, fontsize=9)
    if chart.ylabel:
        ax.set_ylabel(chart.ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    has_data = False
    for i, s in enumerate(chart.series):
        color = tuple(c / 255 for c in PALETTE[i % len(PALETTE)])
        x, y = _finite_or_nan(s.x), _finite_or_nan(s.y)
        n = min(len(x), len(y))
        x, y = x[:n], y[:n]
        y[np.isnan(x)] = np.nan  # a point needs both coordinates
        ok = ~np.isnan(y)
        has_data |= bool(ok.any())
        ax.plot(x, y, color=color, linewidth=1.8, label=s.name)  # NaN breaks the line
        lone = ok & ~np.r_[False, ok[:-1]] & ~np.r_[ok[1:], False]  # no finite neighbour: no line to show it
        if lone.any():
            ax.plot(x[lone], y[lone], "o", color=color, markersize=5)
    if not has_data:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#3c3c3c")
        ax.set_xticks([])
        ax.set_yticks([])
    if has_data:
        ax.legend(loc="best", fontsize=8, frameon=True, framealpha=0.9)


def _finite_or_nan(values: Sequence[float]) -> np.ndarray:
    """``values`` as float64 with everything non-finite or non-numeric as NaN."""
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[i] = v
    return out
