"""Image decoding with Pillow: EXIF orientation, every common mode to RGB, and clear errors.

Everything that can go wrong with an image file (missing, not an image, truncated, a decompression bomb)
surfaces as :class:`vislang.errors.ImageError` naming the file and the reason.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vislang.errors import ImageError

#: Largest image (in pixels) decoded by default: 8,192 x 8,192. Override with ``$VISLANG_MAX_IMAGE_PIXELS``.
DEFAULT_MAX_PIXELS = 8192 * 8192

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)


def max_pixels() -> int:
    """The decompression-bomb limit in pixels."""
    return int(os.environ.get("VISLANG_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS))


def _open(path: str | os.PathLike, limit: int | None) -> Image.Image:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ImageError(p, "file not found")
    if os.path.isdir(p):
        raise ImageError(p, "is a directory, not an image file")
    limit = max_pixels() if limit is None else limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(p)
    except UnidentifiedImageError:
        raise ImageError(p, _unidentified_reason(p)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(p, f"image too large (over {limit:,} pixels; raise $VISLANG_MAX_IMAGE_PIXELS "
                            "to allow it)") from None
    except OSError as e:
        raise ImageError(p, f"cannot read ({e})") from None
    w, h = im.size
    if w * h > limit:
        im.close()
        raise ImageError(p, f"image too large: {w}x{h} = {w * h:,} pixels, over the limit of {limit:,} "
                            "(raise $VISLANG_MAX_IMAGE_PIXELS to allow it)")
    if w == 0 or h == 0:
        raise ImageError(p, f"empty image ({w}x{h})")
    return im


def _unidentified_reason(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "not an image: the file is empty"
    if b"\0" not in head:
        try:
            head.decode("utf-8")
            return "not an image: the file holds text"
        except UnicodeDecodeError:
            pass
    return "not an image, or truncated, or a format Pillow cannot read"


def probe_image(path: str | os.PathLike, *, decode: bool = False, limit: int | None = None) -> tuple[int, int]:
    """Check that a file is a readable image without keeping it; returns its (width, height).

    Args:
        path: Image file.
        decode: Decode all pixel data (slow, catches every truncation); otherwise read the header and,
            for PNG, verify every chunk's checksum (catches truncated PNGs cheaply).
        limit: Pixel limit (default :func:`max_pixels`).
    """
    p = os.fspath(path)
    if p.lower().endswith(".svg"):
        return load_image(p, limit=limit).size
    im = _open(p, limit)
    size = im.size
    try:
        if decode:
            im.load()
        elif im.format == "PNG":
            im.verify()
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(p, f"truncated or corrupt image data ({e})") from None
    finally:
        im.close()
    return size


def _composite(im: Image.Image, background: Color) -> Image.Image:
    rgba = im.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(base, rgba).convert("RGB")


def _high_bit_depth_to_l(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float greyscale to 8-bit L, keeping the full range."""
    a = np.asarray(im)
    if im.mode == "F":
        a = a.astype(np.float64)
        scale = 1.0 if a.max(initial=0.0) <= 1.0 else 1.0 / 255.0
        out = np.clip(a * scale * 255.0 + 0.5, 0, 255)
    else:
        a = a.astype(np.int64)
        # 16-bit data (I;16*, or I holding 16-bit values) maps 0..65535 -> 0..255.
        top = 65535 if a.max(initial=0) > 255 or im.mode.startswith("I;16") else 255
        out = np.clip(a, 0, top) * (255.0 / top) + 0.5
    return Image.fromarray(out.astype(np.uint8), mode="L")


def to_rgb(im: Image.Image, background: Color = WHITE) -> Image.Image:
    """Convert an image of any Pillow mode to RGB; transparency is composited onto ``background``."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        return _composite(im, background)
    if mode == "P":
        return im.convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _high_bit_depth_to_l(im).convert("RGB")
    return im.convert("RGB")  # 1, L, CMYK (Adobe inversion is undone by the JPEG decoder), YCbCr, ...


def load_image(path: str | os.PathLike, background: Color = WHITE, *, limit: int | None = None) -> Image.Image:
    """Decode an image file to an upright RGB image.

    Applies the EXIF orientation, converts every mode (1, L, LA, P with transparency, RGBA, CMYK,
    I;16, I, F) to RGB with transparency composited onto ``background``, and rasterises ``.svg`` files.

    Args:
        path: Image file (PNG, JPEG, GIF, WebP, BMP, TIFF, SVG, ...).
        background: RGB colour under transparent pixels.
        limit: Pixel limit (default :func:`max_pixels`).

    Raises:
        ImageError: Missing file, not an image, too large, truncated or corrupt data.
    """
    p = os.fspath(path)
    if p.lower().endswith(".svg"):
        from vislang.data.svg import rasterize_svg

        if not os.path.exists(p):
            raise ImageError(p, "file not found")
        return _composite(rasterize_svg(p, max_side=1024), background)
    im = _open(p, limit)
    try:
        im.load()  # reads all pixel data and closes the file (single-frame images)
    except (OSError, SyntaxError, ValueError) as e:
        im.close()
        raise ImageError(p, f"truncated or corrupt image data ({e})") from None
    return to_rgb(ImageOps.exif_transpose(im), background)


def is_image_file(path: str | Path) -> bool:
    """Whether a file name has an image extension vislang reads."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".svg"})


def find_bad_images(paths: Sequence[str | os.PathLike], workers: int = 8) -> list[tuple[str, str]]:
    """Open the header of every distinct path (in threads); ``(path, reason)`` for each one that fails."""
    from concurrent.futures import ThreadPoolExecutor

    def check(p: str) -> tuple[str, str] | None:
        try:
            probe_image(p)
        except ImageError as e:
            return (p, e.reason)
        return None

    unique = list(dict.fromkeys(str(p) for p in paths))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [b for b in pool.map(check, unique) if b is not None]
