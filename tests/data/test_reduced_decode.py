"""Decoding at reduced size (``load_image(path, min_side=...)``, what predictors do): the model sees the same
tensor as from a full-size decode but for rounding; orientation, transparency and small images as before.

Real files written with Pillow: drawings with hard edges (the worst case for resampling differences)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from vislang.data.images import load_image
from vislang.data.transforms import TransformConfig, build_transform


def drawing(size: tuple[int, int], mode: str = "RGB", frac: float = 0.6) -> Image.Image:
    """A filled ellipse, a square and a diagonal line (hard edges) filling ``frac`` of the image, on white
    (transparent for RGBA and P)."""
    w, h = size
    clear = mode in ("RGBA", "P")
    im = Image.new("RGBA", size, (255, 255, 255, 0 if clear else 255))
    d = ImageDraw.Draw(im)
    cw, ch = int(w * frac), int(h * frac)
    x0, y0 = (w - cw) // 3, (h - ch) // 2
    d.ellipse((x0, y0, x0 + cw, y0 + ch), fill=(220, 30, 30, 255))
    d.rectangle((x0, y0, x0 + cw // 3, y0 + ch // 3), fill=(30, 60, 230, 255))
    d.line((x0, y0, x0 + cw, y0 + ch), fill=(0, 0, 0, 255), width=max(1, cw // 50))
    if mode == "P":
        return im.quantize(16)  # palette with a transparent entry
    return im if mode == "RGBA" else im.convert(mode)


def same_tensor(path: Path, image_size: int, trim: bool, side: int) -> None:
    """The model input from ``path`` decoded at ``side`` differs from a full-size decode by under a grey level
    on average (one level: 1 / 255 / 0.225 in normalised units)."""
    full_size, reduced = load_image(path), load_image(path, min_side=side)
    assert side <= min(reduced.size) <= min(full_size.size) / 2 and reduced.mode == "RGB"
    tf = build_transform(TransformConfig(image_size=image_size, trim=trim), train=False)
    levels = float((tf(full_size) - tf(reduced)).abs().mean() * 255 * 0.225)
    assert levels < 1, (path.name, trim, levels)


@pytest.mark.parametrize("mode,ext", [("RGB", "png"), ("RGBA", "png"), ("P", "png"), ("L", "png"), ("RGB", "jpg")])
def test_reduced_decode_gives_the_same_tensor(mode, ext, tmp_path):
    """A 16 px model's decode side (``Predictor.decode_side``: 512) on a 3000 x 2100 drawing."""
    for frac in (0.6, 0.12):
        path = tmp_path / f"d{frac}.{ext}"
        drawing((3000, 2100), mode, frac).save(path, quality=95)
        same_tensor(path, 16, False, 512)


def test_reduced_decode_with_trim_gives_the_same_tensor(tmp_path):
    """With trim (cropped to the drawing, found on the reduced image) the decode side is 2048; a small drawing,
    12 % of the image's side, is the hard case."""
    path = tmp_path / "small_drawing.png"
    drawing((4300, 4200), "RGB", 0.12).save(path, compress_level=1)
    same_tensor(path, 32, True, 2048)


def test_reduced_decode_keeps_orientation_transparency_and_small_images(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (1600, 800), (220, 30, 30)).save(tmp_path / "rot.jpg", exif=exif.tobytes())
    im = load_image(tmp_path / "rot.jpg", min_side=100)
    assert im.size == (100, 200)  # JPEG decoded at 1/8 scale, then turned upright
    Image.new("RGB", (1600, 800), (220, 30, 30)).save(tmp_path / "rot.png", exif=exif.tobytes())
    assert load_image(tmp_path / "rot.png", min_side=100).size == (100, 200)  # a PNG's EXIF follows its pixels

    Image.new("RGBA", (900, 600), (255, 0, 0, 128)).save(tmp_path / "half.png")  # half-transparent red
    r, g, b = load_image(tmp_path / "half.png", background=(0, 0, 255), min_side=100).getpixel((50, 50))
    assert r in (127, 128) and g == 0 and b in (127, 128)  # alpha-weighted, then composited as at full size
    drawing((900, 600), "P").save(tmp_path / "p.png", transparency=0)
    assert load_image(tmp_path / "p.png", min_side=100).getpixel((0, 0)) == (255, 255, 255)

    drawing((90, 60)).save(tmp_path / "small.png")  # already under min_side: decoded as it is
    assert load_image(tmp_path / "small.png", min_side=100).tobytes() == load_image(tmp_path / "small.png").tobytes()
