"""matplotlib line charts (vislang.viz.charts): real PNG output, gaps, lone points and empty panels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from vislang.viz.charts import PALETTE, Chart, Series, render_chart, render_charts, save_charts


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


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None])
def test_non_finite_values_leave_a_gap(bad):
    xs = list(range(100))
    full = Chart([Series("a", xs, [0.5] * 100), Series("b", [0, 99], [0.0, 1.0])])  # b pins the y range
    gapped = Chart([Series("a", xs, [bad if 30 <= x < 70 else 0.5 for x in xs]), Series("b", [0, 99], [0.0, 1.0])])
    n_full = _colour_pixels(render_chart(full, (400, 240)), PALETTE[0], tol=20)
    n_gapped = _colour_pixels(render_chart(gapped, (400, 240)), PALETTE[0], tol=20)
    assert 0.4 * n_full < n_gapped < 0.8 * n_full  # 40% of the line is missing (the legend swatch stays)


def test_points_between_gaps_are_dots_and_empty_series_say_no_data():
    lone = render_chart(Chart([Series("x", [0, 1, 2, 3, 4], [math.nan, 1.0, math.nan, 2.0, math.nan])]), (300, 200))
    assert _colour_pixels(lone, PALETTE[0]) > 30
    only_bad = render_chart(Chart([Series("x", [0, 1], [math.nan, math.inf])], title="t"), (300, 200))
    assert _colour_pixels(only_bad, PALETTE[0]) == 0  # no line and no legend when there is nothing to plot


def test_grid_sizes_and_colours_follow_the_palette():
    charts = [Chart([Series(f"s{i}", [0, 1], [i, i + 1]) for i in range(12)]) for _ in range(3)]
    img = render_charts(charts, size=(321, 157), columns=2)
    assert img.mode == "RGB" and img.size == (642, 314)  # exact pixel sizes, odd ones included
    assert all(_colour_pixels(img, c, tol=10) > 0 for c in PALETTE)
    assert render_charts(charts[:1], size=(200, 100), columns=4).size == (200, 100)  # no empty columns
