"""Image decoding: every common mode, EXIF orientation, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vislang.data.images import load_image, probe_image
from vislang.errors import ImageError

RED = (255, 0, 0)


def _px(im: Image.Image, xy=(0, 0)) -> tuple[int, ...]:
    assert im.mode == "RGB"
    return tuple(int(v) for v in im.getpixel(xy))


def test_rgb_png_roundtrip(tmp_path):
    p = tmp_path / "a.png"
    Image.new("RGB", (7, 5), RED).save(p)
    im = load_image(p)
    assert im.size == (7, 5) and _px(im) == RED
    assert probe_image(p) == (7, 5)


def test_mode_1_and_l(tmp_path):
    Image.new("1", (4, 4), 1).save(tmp_path / "one.png")
    Image.new("L", (4, 4), 77).save(tmp_path / "l.png")
    assert _px(load_image(tmp_path / "one.png")) == (255, 255, 255)
    assert _px(load_image(tmp_path / "l.png")) == (77, 77, 77)


def test_la_and_rgba_composited_onto_background(tmp_path):
    la = Image.new("LA", (4, 4), (0, 0))  # black, fully transparent
    la.putpixel((1, 1), (0, 255))  # one opaque black pixel
    la.save(tmp_path / "la.png")
    im = load_image(tmp_path / "la.png")
    assert _px(im, (0, 0)) == (255, 255, 255) and _px(im, (1, 1)) == (0, 0, 0)
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 128))
    rgba.save(tmp_path / "rgba.png")
    half = _px(load_image(tmp_path / "rgba.png", background=(0, 0, 255)))
    assert half[0] in (127, 128) and half[1] == 0 and half[2] in (127, 128)


def test_palette_with_transparency(tmp_path):
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.putpixel((2, 2), 1)
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    assert Image.open(tmp_path / "p.png").mode == "P"
    im = load_image(tmp_path / "p.png", background=(0, 255, 0))
    assert _px(im, (0, 0)) == (0, 255, 0)  # transparent index shows the background
    assert _px(im, (2, 2)) == RED


def test_palette_without_transparency(tmp_path):
    p = Image.new("P", (3, 3), 1)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.save(tmp_path / "p.gif")
    assert _px(load_image(tmp_path / "p.gif")) == (10, 20, 30)


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    r, g, b = _px(load_image(tmp_path / "c.jpg"))
    assert r > 240 and g < 15 and b < 15


def test_16_bit_greyscale_keeps_range(tmp_path):
    a = np.array([[0, 65535], [32896, 1000]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode.startswith("I")
    im = load_image(tmp_path / "i16.png")
    assert [_px(im, xy)[0] for xy in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 255, 128, 4]


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), RED)  # wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)


def test_truncated_png_is_reported(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="trunc.png: truncated or corrupt"):
        probe_image(tmp_path / "trunc.png")
    with pytest.raises(ImageError, match="trunc.png: truncated or corrupt"):
        load_image(tmp_path / "trunc.png")


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not a picture\n")
    with pytest.raises(ImageError, match="notes.jpg: not an image: the file holds text"):
        load_image(tmp_path / "notes.jpg")
    with pytest.raises(ImageError, match="not an image"):
        probe_image(tmp_path / "notes.jpg")


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="the file is empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="nope.png: file not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_decompression_bomb_20000_square(tmp_path):
    # A 1-bit 20000x20000 PNG is ~50 KB on disk but 400 Mpx decoded.
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png")
    assert (tmp_path / "huge.png").stat().st_size < 1_000_000
    with pytest.raises(ImageError, match=r"huge.png: image too large"):
        probe_image(tmp_path / "huge.png")
    with pytest.raises(ImageError, match=r"huge.png: image too large"):
        load_image(tmp_path / "huge.png")


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "m.png")
    monkeypatch.setenv("VISLANG_MAX_IMAGE_PIXELS", "5000")
    with pytest.raises(ImageError, match="10,000 pixels, over the limit of 5,000"):
        load_image(tmp_path / "m.png")
    assert load_image(tmp_path / "m.png", limit=10_000).size == (100, 100)


def test_svg_is_rasterised(tmp_path):
    (tmp_path / "s.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10">'
        '<rect width="20" height="10" fill="#00ff00"/></svg>')
    im = load_image(tmp_path / "s.svg")
    assert im.mode == "RGB" and im.size == (20, 10) and _px(im, (5, 5)) == (0, 255, 0)
    (tmp_path / "bad.svg").write_text("<svg")
    with pytest.raises(ImageError, match="bad.svg: cannot render SVG"):
        load_image(tmp_path / "bad.svg")
