"""Pillow line charts: tick choice and real PNG output."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from vislang.utils.plot import PALETTE, Chart, Series, format_tick, nice_ticks, render_chart, save_charts


@given(st.floats(-1e6, 1e6), st.floats(1e-3, 1e6))
def test_nice_ticks_cover_the_range_with_round_steps(lo, span):
    hi = lo + span
    ticks = nice_ticks(lo, hi)
    assert 2 <= len(ticks) <= 7
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 2.5, 5, 10))
    tol = step * 1e-6  # ticks may sit on the range's ends up to rounding
    assert lo - tol <= ticks[0] < lo + step and hi - step < ticks[-1] <= hi + tol


def test_tick_labels():
    assert nice_ticks(0, 1) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert [format_tick(t, 0.2) for t in nice_ticks(0, 1)] == ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    assert format_tick(2000, 500) == "2000" and format_tick(3e-5, 1e-5) == "3.0e-05"


def _colour_pixels(img: Image.Image, colour: tuple[int, int, int], tol: int = 40) -> int:
    pixels = np.asarray(img.convert("RGB"), dtype=np.int16)  # (H, W, 3)
    return int((np.abs(pixels - np.array(colour)) <= tol).all(-1).sum())


def test_chart_png_has_every_series(tmp_path):
    xs = list(range(100))
    charts = [Chart([Series("loss", xs, [1 / (1 + x) for x in xs]),
                     Series("gap", xs, [0.5 if x % 20 else float("nan") for x in xs])],
                    title="training", xlabel="step", ylabel="loss"),
              Chart([Series("accuracy", [10], [0.5])], title="one point"),
              Chart([], title="empty")]
    save_charts(tmp_path / "curves.png", charts, size=(400, 240), columns=2)
    img = Image.open(tmp_path / "curves.png")
    assert img.format == "PNG" and img.size == (800, 480)
    first = img.convert("RGB").crop((0, 0, 400, 240))
    assert _colour_pixels(first, PALETTE[0]) > 200 and _colour_pixels(first, PALETTE[1]) > 200
    second = img.convert("RGB").crop((400, 0, 800, 240))
    assert _colour_pixels(second, PALETTE[0]) > 10  # a lone point is drawn as a dot
    assert _colour_pixels(img.convert("RGB").crop((0, 240, 400, 480)), PALETTE[0]) == 0  # nothing to plot
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_constant_and_non_finite_series_render():
    chart = Chart([Series("flat", [0, 1, 2], [3.0, 3.0, 3.0]), Series("bad", [0, 1], [math.inf, math.nan])])
    img = render_chart(chart, size=(300, 200))
    assert img.size == (300, 200) and _colour_pixels(img, PALETTE[0]) > 50
    with pytest.raises(ValueError, match="no charts"):
        save_charts("unused.png", [])
