"""Contact sheets of search results: a grid of thumbnails (image hits) or text cards (text hits) labelled
with rank, score and id, the query first."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from PIL import Image, ImageDraw

from vislang.data.images import load_image
from vislang.errors import ImageError
from vislang.utils.io import atomic_save_image
from vislang.viz.fonts import default_font

SHEET_PAD = 6
SHEET_LABEL = 30


class HitLike(Protocol):
    """What a sheet needs from a search result (as :class:`vislang.index.Hit`)."""

    @property
    def rank(self) -> int: ...

    @property
    def score(self) -> float: ...

    @property
    def id(self) -> str: ...

    @property
    def path(self) -> str | None: ...

    @property
    def text(self) -> str | None: ...


def sheet_size(n_tiles: int, tile: int = 128, cols: int = 5) -> tuple[int, int]:
    """(width, height) in pixels of a contact sheet of ``n_tiles`` tiles."""
    cols = max(1, min(cols, n_tiles))
    rows = max(1, math.ceil(n_tiles / cols))
    return cols * tile + (cols + 1) * SHEET_PAD, rows * (tile + SHEET_LABEL) + (rows + 1) * SHEET_PAD


def contact_sheet(hits: Sequence[HitLike], query: Any = None, *, tile: int = 128, cols: int = 5) -> Image.Image:
    """A grid of thumbnails (image hits) or text cards (text hits) labelled with rank, score and id.

    Args:
        hits: Search results, best first.
        query: Shown first when given: an image as a :class:`pathlib.Path` or a PIL image, or a query
            text as a ``str``.
        tile: Side of each thumbnail in pixels.
        cols: Tiles per row.

    Returns:
        An RGB PIL image of :func:`sheet_size` pixels.
    """
    font = default_font(11)
    cells: list[tuple[Any, str, str]] = []  # (PIL image or text, label line 1, label line 2)
    if isinstance(query, str):
        cells.append((query, "query", "(text)"))
    elif query is not None:
        name = "(image)" if hasattr(query, "convert") else Path(query).name
        cells.append((query if hasattr(query, "convert") else _thumb_source(query), "query", name))
    for h in hits:
        src = h.text if h.text is not None else _thumb_source(h.path)
        cells.append((src, f"#{h.rank}  {h.score:.3f}", h.id))
    w, hgt = sheet_size(len(cells), tile, cols)
    sheet = Image.new("RGB", (w, hgt), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    ncols = max(1, min(cols, len(cells)))
    chars = max(4, tile // 7)
    for n, (src, line1, line2) in enumerate(cells):
        r, c = divmod(n, ncols)
        x = SHEET_PAD + c * (tile + SHEET_PAD)
        y = SHEET_PAD + r * (tile + SHEET_LABEL + SHEET_PAD)
        if isinstance(src, str):  # a text card
            draw.rectangle([x, y, x + tile - 1, y + tile - 1], fill=(240, 240, 232), outline=(200, 200, 190))
            lines = textwrap.wrap(src, chars)[: max(1, tile // 14)]
            draw.multiline_text((x + 4, y + 4), "\n".join(lines), fill=(20, 20, 20), font=font, spacing=2)
        elif src is None:  # an image that cannot be read (any more)
            draw.rectangle([x, y, x + tile - 1, y + tile - 1], fill=(200, 200, 200))
            draw.text((x + 4, y + tile // 2 - 6), "unreadable", fill=(90, 0, 0), font=font)
        else:  # scaled to fit the tile, up or down
            scale = min(tile / src.width, tile / src.height)
            size = (max(1, round(src.width * scale)), max(1, round(src.height * scale)))
            thumb = src.convert("RGB").resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
            sheet.paste(thumb, (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2))
        frame = (40, 90, 200) if query is not None and n == 0 else (210, 210, 210)  # the query in blue
        draw.rectangle([x - 1, y - 1, x + tile, y + tile], outline=frame)
        draw.text((x + 2, y + tile + 2), line1, fill=(0, 0, 0), font=font)
        draw.text((x + 2, y + tile + 15), _clip(line2, chars), fill=(80, 80, 80), font=font)
    return sheet


def save_contact_sheet(path: str | os.PathLike, hits: Sequence[HitLike], query: Any = None, *, tile: int = 128,
                       cols: int = 5) -> Path:
    """Write :func:`contact_sheet` as a PNG atomically; returns ``path``."""
    atomic_save_image(path, contact_sheet(hits, query, tile=tile, cols=cols), "PNG")
    return Path(path)


def _thumb_source(path: Any) -> Any:
    """The decoded image at ``path``, or None when it cannot be read (drawn as an "unreadable" tile)."""
    if path is None:
        return None
    try:
        return load_image(path)
    except ImageError:
        return None


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"
