"""SVG rasterisation through resvg (the ``resvg-py`` wheel; no system libraries, no network)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from vislang.errors import ExternalToolError, ImageError


def rasterize_svg(path: str | Path, size: int | None = None, max_side: int | None = None) -> Image.Image:
    """Render an SVG file to an RGBA image.

    Args:
        path: The SVG file.
        size: Render to a ``size`` x ``size`` square (aspect kept by the SVG's own viewBox).
        max_side: Otherwise, render at the SVG's natural size scaled down so the longer side is at most this.

    Returns:
        The RGBA image.
    """
    try:
        import resvg_py
    except ImportError as e:  # pragma: no cover - resvg-py is in the data/dev extras
        raise ExternalToolError("rasterising SVG needs resvg-py: pip install 'vislang[data]'") from e
    path = str(path)
    try:
        if size is not None:
            png = resvg_py.svg_to_bytes(svg_path=path, width=size, height=size, skip_system_fonts=True, dpi=96.0)
        else:
            png = resvg_py.svg_to_bytes(svg_path=path, skip_system_fonts=True, dpi=96.0)
            if max_side is not None:
                w, h = Image.open(io.BytesIO(bytes(png))).size
                if max(w, h) > max_side:
                    zoom = max_side / max(w, h)
                    png = resvg_py.svg_to_bytes(svg_path=path, zoom=zoom, skip_system_fonts=True, dpi=96.0)
    except (ValueError, OSError) as e:
        raise ImageError(path, f"cannot render SVG ({e})") from e
    im = Image.open(io.BytesIO(bytes(png)))
    im.load()
    return im.convert("RGBA")
