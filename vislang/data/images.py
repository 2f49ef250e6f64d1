"""Image decoding with Pillow: EXIF orientation, every common mode to RGB, and clear errors.

Everything that can go wrong with an image file (missing, not an image, truncated, a decompression bomb)
surfaces as :class:`vislang.errors.ImageError` naming the file and the reason.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from vislang.data.shards import member_bytes, open_member, split_ref
from vislang.errors import ImageError, VislangError

#: Largest image (in pixels) decoded by default: 8,192 x 8,192. Override with ``$VISLANG_MAX_IMAGE_PIXELS``.
DEFAULT_MAX_PIXELS = 8192 * 8192

#: Pillow allocates image memory in blocks of up to this size. Blocks over glibc's largest mmap threshold
#: (32 MB) are mapped on their own and go back to the system when freed; with Pillow's 16 MB each thread
#: that decoded a large image keeps its memory in its malloc arena. ``$PILLOW_BLOCK_SIZE`` overrides it.
PILLOW_BLOCK_SIZE = 64 * 1024 * 1024
if "PILLOW_BLOCK_SIZE" not in os.environ:
    Image.core.set_block_size(PILLOW_BLOCK_SIZE)

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)


def max_pixels() -> int:
    """The decompression-bomb limit in pixels: ``$VISLANG_MAX_IMAGE_PIXELS`` when set (and not empty), else
    :data:`DEFAULT_MAX_PIXELS`.

    Raises:
        VislangError: The variable is not a positive integer.
    """
    raw = os.environ.get("VISLANG_MAX_IMAGE_PIXELS", "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise VislangError(f"$VISLANG_MAX_IMAGE_PIXELS must be a positive whole number of pixels, got {raw!r}")
    return value


def _open(path: str | os.PathLike, limit: int | None) -> Image.Image:
    p = os.fspath(path)
    member = split_ref(p) is not None  # SHARD.tar#NAME: a member of a WebDataset shard
    if not member and not os.path.exists(p):
        raise ImageError(p, "file not found")
    if not member and os.path.isdir(p):
        raise ImageError(p, "is a directory, not an image file")
    limit = max_pixels() if limit is None else limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(open_member(p) if member else p)
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
    if split_ref(path) is not None:
        head = member_bytes(path)[:512]
    else:
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


def load_image(path: str | os.PathLike, background: Color = WHITE, *, limit: int | None = None,
               min_side: int | None = None) -> Image.Image:
    """Decode an image file to an upright RGB image.

    Applies the EXIF orientation, converts every mode (1, L, LA, P with transparency, RGBA, CMYK,
    I;16, I, F) to RGB with transparency composited onto ``background``, and rasterises ``.svg`` files.

    Args:
        path: Image file (PNG, JPEG, GIF, WebP, BMP, TIFF, SVG, ...).
        background: RGB colour under transparent pixels.
        limit: Pixel limit (default :func:`max_pixels`), on the file's full size.
        min_side: Decode at a reduced scale whose shorter side is still at least this many pixels: JPEG
            through the decoder's DCT scaling (``Image.draft``), other formats with an integer box-filter
            ``Image.reduce`` right after decoding, so the full-size pixels are dropped at once. Concurrent
            full-size decodes in this process share a budget (:data:`DECODE_BUDGET`); None: full size.

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
    if min_side is None:
        _decode(im, p)
        return to_rgb(ImageOps.exif_transpose(im), background)
    w, h = im.size
    scale = min(w, h) // max(1, min_side)
    if im.format == "JPEG" and scale >= 2:
        im.draft(None, (w // scale, h // scale))  # DCT scaling by 1/2, 1/4 or 1/8, never below (w, h) / scale
    with _DECODE_BUDGET.hold(im.width * im.height * _BYTES_PER_PIXEL):
        _decode(im, p)
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)  # a PNG's may follow its pixel data
        im = _reduce(im, min_side)
    method = _ORIENTATION.get(orientation)
    return to_rgb(im.transpose(method) if method is not None else im, background)


def _decode(im: Image.Image, path: str) -> None:
    try:
        im.load()  # reads all pixel data and closes the file (single-frame images)
    except (OSError, SyntaxError, ValueError) as e:
        im.close()
        raise ImageError(path, f"truncated or corrupt image data ({e})") from None


def _reduce(im: Image.Image, min_side: int) -> Image.Image:
    """``im`` reduced by the largest integer factor that keeps its shorter side at least ``min_side``.

    ``Image.reduce`` averages RGB and L as they are and RGBA / LA alpha-weighted; other images with
    transparency become RGBA first, the rest (palette, 1-bit, 16-bit, CMYK, ...) RGB.
    """
    factor = min(im.size) // max(1, min_side)
    if factor < 2:
        return im
    if "transparency" in im.info or im.mode in ("PA", "RGBa", "La"):
        im = im.convert("RGBA")
    elif im.mode not in ("RGB", "RGBA", "L", "LA"):
        im = to_rgb(im)
    return im.reduce(factor)


class _Budget:
    """A shared allowance of bytes: :meth:`hold` waits until ``n`` bytes are free (a request over the
    whole allowance waits until nothing else is held, then runs alone)."""

    def __init__(self, limit: int):
        self.limit, self.free = limit, limit
        self.cond = threading.Condition()

    @contextmanager
    def hold(self, n: int) -> Iterator[None]:
        n = min(n, self.limit)
        with self.cond:
            self.cond.wait_for(lambda: self.free >= n)
            self.free -= n
        try:
            yield
        finally:
            with self.cond:
                self.free += n
                self.cond.notify_all()


#: Bytes of full-size pixels that threads of one process decode at once with ``min_side``: two 8000 x 8000
#: images (Pillow keeps 4 bytes a pixel), however many threads decode; an image over it decodes alone.
DECODE_BUDGET = 512 * 1024 * 1024
_BYTES_PER_PIXEL = 4
_DECODE_BUDGET = _Budget(DECODE_BUDGET)
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}


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
