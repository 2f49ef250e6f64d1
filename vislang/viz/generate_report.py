"""The HTML report of a generator's evaluation (``vislang evaluate generate``): the one table of the model
beside its floors and ceilings, the notes that say how to read it, the run's training curves and galleries of
prompts with what was drawn for them."""

from __future__ import annotations

import html
import math
import os
import shutil
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from vislang.utils.io import atomic_open, atomic_save_image
from vislang.viz.fonts import default_font
from vislang.viz.report import CSS

PAD = 6
LABEL_LINES = 3
LINE = 13

EXTRA_CSS = """
td.missing { color: #aaa; text-align: center; }
.notes li { margin-bottom: .3rem; }
img.grid { max-width: 100%; border: 1px solid #ddd; image-rendering: pixelated; }
"""


def _fit(image: Image.Image, side: int) -> Image.Image:
    """``image`` scaled to fit a ``side`` square: pixels kept sharp when enlarged (a 16 px sample stays 16 px)."""
    scale = min(side / image.width, side / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BICUBIC
    return image.convert("RGB").resize(size, resample)


def prompt_grid(cells: Sequence[tuple[Sequence[Image.Image], str]], *, tile: int = 96, cols: int = 4) -> Image.Image:
    """A grid of cells, each a row of images (e.g. the generated one, then the real one) over a wrapped label.

    Args:
        cells: ``(images, label)`` per cell; cells may hold different numbers of images.
        tile: Side of each image in pixels.
        cols: Cells per row.

    Returns:
        An RGB PIL image.
    """
    per_cell = max((len(ims) for ims, _ in cells), default=1) or 1
    cell_w = per_cell * tile + (per_cell - 1) * 2
    cell_h = tile + LABEL_LINES * LINE + 4
    cols = max(1, min(cols, len(cells)))
    rows = max(1, math.ceil(len(cells) / cols))
    sheet = Image.new("RGB", (cols * cell_w + (cols + 1) * PAD, rows * cell_h + (rows + 1) * PAD), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = default_font(11)
    chars = max(8, cell_w // 7)
    for n, (images, label) in enumerate(cells):
        r, c = divmod(n, cols)
        x0, y0 = PAD + c * (cell_w + PAD), PAD + r * (cell_h + PAD)
        for k, im in enumerate(images):
            x = x0 + k * (tile + 2)
            thumb = _fit(im, tile)
            sheet.paste(thumb, (x + (tile - thumb.width) // 2, y0 + (tile - thumb.height) // 2))
            draw.rectangle([x - 1, y0 - 1, x + tile, y0 + tile], outline=(40, 90, 200) if k == 0 else (200, 200, 200))
        lines = textwrap.wrap(label, chars) or [""]
        if len(lines) > LABEL_LINES:
            lines = lines[:LABEL_LINES - 1] + [textwrap.shorten(" ".join(lines[LABEL_LINES - 1:]), chars, placeholder="…")]
        draw.multiline_text((x0, y0 + tile + 3), "\n".join(lines), fill=(20, 20, 20), font=font, spacing=2)
    return sheet


def save_prompt_grid(path: str | os.PathLike, cells: Sequence[tuple[Sequence[Image.Image], str]], *,
                     tile: int = 96, cols: int = 4) -> Path:
    """Write :func:`prompt_grid` as a PNG atomically; returns ``path``."""
    atomic_save_image(path, prompt_grid(cells, tile=tile, cols=cols), "PNG")
    return Path(path)


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return '<td class="missing">&mdash;</td>'
    if isinstance(v, float):
        return f"<td>{v:.4f}</td>"
    return f"<td>{html.escape(str(v))}</td>"


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; None and NaN cells show as a dash."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_generate_report(out_dir: str | os.PathLike, *, title: str, subtitle: str, headers: Sequence[str],
                          rows: Sequence[Sequence[Any]], notes: Sequence[str], settings: dict[str, Any],
                          curves: str | os.PathLike | None = None,
                          galleries: Sequence[tuple[str, str, str | os.PathLike, Sequence[str]]] = ()) -> Path:
    """Write ``out_dir/report.html`` (images under ``out_dir/report_files/``); returns its path.

    Args:
        out_dir: The evaluation folder.
        title: Page title.
        subtitle: One line under it (what was evaluated).
        headers: Column names of the table.
        rows: Its rows (None or NaN: not applicable).
        notes: Paragraphs on how to read the table (plain text, escaped here).
        settings: Shown as a small key/value table.
        curves: The run's ``curves.png`` (copied beside the report), when there is one.
        galleries: ``(title, description, PNG path, prompts)`` per gallery (the PNG copied beside the report when
            elsewhere; the prompts listed under it, in order).
    """
    out = Path(out_dir)
    assets = out / "report_files"
    assets.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>{html.escape(title)}</h1>", f'<p class="sub">{html.escape(subtitle)}</p>',
             "<h2>Results</h2>", html_table(headers, rows)]
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("<h2>Settings</h2>" + html_table(["setting", "value"], [[k, v] for k, v in settings.items()]))
    if curves is not None and Path(curves).exists():
        shutil.copyfile(curves, assets / "curves.png")
        parts.append(f'<h2>Training curves</h2><img class="curves" src="{assets.name}/curves.png" '
                     'alt="training curves">')
    for k, (name, text, path, prompts) in enumerate(galleries):
        path = Path(path)
        if path.parent.resolve() != assets.resolve():
            shutil.copyfile(path, assets / f"gallery_{k}.png")
            path = assets / f"gallery_{k}.png"
        parts.append(f"<h2>{html.escape(name)}</h2><p>{html.escape(text)}</p>"
                     f'<img class="grid" src="{assets.name}/{path.name}" alt="{html.escape(name)}">'
                     f'<p class="sub">Prompts: {html.escape("; ".join(prompts))}</p>')
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}{EXTRA_CSS}</style></head><body>{''.join(parts)}</body></html>\n")
    path = out / "report.html"
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
