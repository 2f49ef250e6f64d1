"""Line charts as PNG with Pillow only (matplotlib is not a dependency): axes, ticks, labels, a legend and
several series per chart, several charts stacked in one image.

    save_charts("curves.png", [Chart([Series("loss", steps, losses)], title="training", xlabel="step")])
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

from vislang.utils.io import atomic_save_image

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
"""Series colours, in order (the usual ten categorical colours)."""

_SCALE = 2  # draw at twice the size, then downsample: smooth lines without an anti-aliasing rasteriser
_AXIS = (60, 60, 60)
_GRID = (228, 228, 228)
_TEXT = (30, 30, 30)


@dataclass
class Series:
    """One line: ``y[i]`` at ``x[i]``; non-finite values leave a gap.

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


def nice_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    """Round tick values covering ``[lo, hi]``: multiples of 1, 2 or 5 times a power of ten."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, max_ticks - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def format_tick(value: float, step: float) -> str:
    """A tick label with as many decimals as the tick spacing needs (``1e+04`` style when very large or
    small)."""
    if value == 0:
        return "0"
    if abs(value) >= 1e6 or abs(value) < 1e-4:
        return f"{value:.1e}"
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 2
    return f"{value:.{decimals}f}"


def render_chart(chart: Chart, size: tuple[int, int] = (640, 360)) -> Image.Image:
    """Draw one chart into an RGB image of ``size`` pixels."""
    w, h = size[0] * _SCALE, size[1] * _SCALE
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    font = _font(11 * _SCALE)
    title_font = _font(13 * _SCALE)
    line_h = _text_size(draw, "0", font)[1]

    left = 12 * _SCALE + line_h + 14 * _SCALE + _tick_label_width(draw, chart, font)
    top = (2 * line_h + 8 * _SCALE) if chart.title else 12 * _SCALE
    bottom = h - (line_h * (2 if chart.xlabel else 1) + 16 * _SCALE)
    right = w - 16 * _SCALE
    if chart.title:
        tw = _text_size(draw, chart.title, title_font)[0]
        draw.text(((left + right - tw) // 2, 4 * _SCALE), chart.title, fill=_TEXT, font=title_font)

    xs, ys = _finite_values(chart)
    draw.rectangle((left, top, right, bottom), outline=_AXIS, width=_SCALE)
    if xs:
        (x0, x1), (y0, y1) = _padded_range(xs, pad=0.0), _padded_range(ys, pad=0.05)

        def px(x: float) -> float:
            return left + (x - x0) / (x1 - x0) * (right - left)

        def py(y: float) -> float:
            return bottom - (y - y0) / (y1 - y0) * (bottom - top)

        _draw_ticks(draw, nice_ticks(x0, x1), px, "x", (left, top, right, bottom), font)
        _draw_ticks(draw, nice_ticks(y0, y1), py, "y", (left, top, right, bottom), font)
        for i, s in enumerate(chart.series):
            color = PALETTE[i % len(PALETTE)]
            for segment in _segments(s):
                points = [(px(x), py(y)) for x, y in segment]
                if len(points) == 1:
                    (cx, cy), r = points[0], 3 * _SCALE
                    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
                else:
                    draw.line(points, fill=color, width=2 * _SCALE, joint="curve")
        points = [(px(x), py(y)) for x, y in zip(xs, ys)]
        _draw_legend(draw, chart.series, (left, top, right, bottom), font, points)
    else:
        msg = "no data"
        tw, th = _text_size(draw, msg, font)
        draw.text(((left + right - tw) // 2, (top + bottom - th) // 2), msg, fill=_AXIS, font=font)

    if chart.xlabel:
        tw = _text_size(draw, chart.xlabel, font)[0]
        draw.text(((left + right - tw) // 2, h - line_h - 6 * _SCALE), chart.xlabel, fill=_TEXT, font=font)
    if chart.ylabel:
        label = _rotated_text(chart.ylabel, font)
        img.paste(label, (6 * _SCALE, max(0, (top + bottom - label.height) // 2)))
    return img.reduce(_SCALE)


def save_charts(path: str | os.PathLike, charts: Sequence[Chart], size: tuple[int, int] = (640, 360),
                columns: int = 1) -> None:
    """Render ``charts`` on a grid (``columns`` wide, ``size`` each) and write one PNG atomically."""
    if not charts:
        raise ValueError("no charts to save")
    rows = math.ceil(len(charts) / columns)
    sheet = Image.new("RGB", (size[0] * min(columns, len(charts)), size[1] * rows), "white")
    for i, chart in enumerate(charts):
        sheet.paste(render_chart(chart, size), ((i % columns) * size[0], (i // columns) * size[1]))
    atomic_save_image(path, sheet, format="PNG")


# ------------------------------------------------------------------------------------------------ internals


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return int(x1 - x0), int(y1 - y0 + 2)


def _rotated_text(text: str, font: ImageFont.ImageFont) -> Image.Image:
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    tw, th = _text_size(probe, text, font)
    img = Image.new("RGB", (tw + 4, th + 4), "white")
    ImageDraw.Draw(img).text((2, 0), text, fill=_TEXT, font=font)
    return img.rotate(90, expand=True)


def _finite_values(chart: Chart) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for s in chart.series:
        for x, y in zip(s.x, s.y):
            if _finite(x) and _finite(y):
                xs.append(float(x))
                ys.append(float(y))
    return xs, ys


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _padded_range(values: list[float], pad: float) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        spread = abs(lo) * 0.1 or 1.0
        return lo - spread, hi + spread
    margin = (hi - lo) * pad
    return lo - margin, hi + margin


def _segments(s: Series) -> list[list[tuple[float, float]]]:
    """Runs of consecutive finite points (a NaN or inf value breaks the line)."""
    segments: list[list[tuple[float, float]]] = [[]]
    for x, y in zip(s.x, s.y):
        if _finite(x) and _finite(y):
            segments[-1].append((float(x), float(y)))
        elif segments[-1]:
            segments.append([])
    return [seg for seg in segments if seg]


def _tick_label_width(draw: ImageDraw.ImageDraw, chart: Chart, font: ImageFont.ImageFont) -> int:
    _, ys = _finite_values(chart)
    if not ys:
        return 0
    lo, hi = _padded_range(ys, pad=0.05)
    ticks = nice_ticks(lo, hi)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 0
    return max((_text_size(draw, format_tick(t, step), font)[0] for t in ticks), default=0)


def _draw_ticks(draw: ImageDraw.ImageDraw, ticks: list[float], pos, axis: str,
                box: tuple[int, int, int, int], font: ImageFont.ImageFont) -> None:
    left, top, right, bottom = box
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 0
    tick = 5 * _SCALE
    for t in ticks:
        p = pos(t)
        label = format_tick(t, step)
        tw, th = _text_size(draw, label, font)
        if axis == "x":
            draw.line((p, top, p, bottom), fill=_GRID, width=1)
            draw.line((p, bottom, p, bottom + tick), fill=_AXIS, width=_SCALE)
            draw.text((p - tw / 2, bottom + tick + 2), label, fill=_TEXT, font=font)
        else:
            draw.line((left, p, right, p), fill=_GRID, width=1)
            draw.line((left - tick, p, left, p), fill=_AXIS, width=_SCALE)
            draw.text((left - tick - 3 - tw, p - th / 2), label, fill=_TEXT, font=font)
    draw.rectangle(box, outline=_AXIS, width=_SCALE)  # over the grid lines


def _draw_legend(draw: ImageDraw.ImageDraw, series: list[Series], box: tuple[int, int, int, int],
                 font: ImageFont.ImageFont, points: list[tuple[float, float]]) -> None:
    """A legend box in the corner of the plot that covers the fewest data points."""
    if not series:
        return
    left, top, right, bottom = box
    sizes = [_text_size(draw, s.name, font) for s in series]
    line_h = max(h for _, h in sizes) + 4 * _SCALE
    swatch = 18 * _SCALE
    width = max(w for w, _ in sizes) + swatch + 16 * _SCALE
    height = line_h * len(series) + 6 * _SCALE
    pad = 8 * _SCALE
    corners = [(right - width - pad, top + pad), (left + pad, top + pad),
               (right - width - pad, bottom - height - pad), (left + pad, bottom - height - pad)]

    def covered(corner: tuple[float, float]) -> int:
        cx, cy = corner
        return sum(cx - pad <= x <= cx + width + pad and cy - pad <= y <= cy + height + pad
                   for x, y in points)

    x0, y0 = min(corners, key=covered)  # min keeps the first (top right) on ties
    draw.rectangle((x0, y0, x0 + width, y0 + height), fill="white", outline=_GRID, width=_SCALE)
    for i, s in enumerate(series):
        y = y0 + 4 * _SCALE + i * line_h
        color = PALETTE[i % len(PALETTE)]
        draw.line((x0 + 6 * _SCALE, y + line_h / 2, x0 + 6 * _SCALE + swatch, y + line_h / 2), fill=color,
                  width=3 * _SCALE)
        draw.text((x0 + swatch + 10 * _SCALE, y), s.name, fill=_TEXT, font=font)
