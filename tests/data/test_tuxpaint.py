"""The ``tuxpaint`` dataset: a small stamps tree built here (every odd case) and the real Debian package."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from vislang.data import load_dataset, prepare_dataset
from vislang.data.datasets.tuxpaint import DEB_PACKAGE, ENV_VAR, INSTALLED_DIR
from vislang.errors import DataError, ExternalToolError

SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">'
       '<circle cx="{cx}" cy="{cy}" r="{r}" fill="#c00"/></svg>')


def manifest(out: Path, split: str = "test") -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def save(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


@pytest.fixture
def stamps(tmp_path: Path) -> Path:
    """A stamps folder with one of each case the real package has, and a few it might have."""
    s = tmp_path / "stamps"
    save(s / "animals/birds/bird.png", Image.new("RGBA", (40, 30), (0, 0, 255, 128)))
    write(s / "animals/birds/bird.txt", "A bird.\nfr.utf8=Un oiseau.\n")
    write(s / "animals/birds/bird.dat", "colorable\n")
    write(s / "animals/birds/bird_desc_fr.ogg", b"OggS")
    save(s / "animals/cat.png", Image.new("LA", (20, 20), (90, 200)))
    write(s / "animals/cat.txt", "\ufeffA grey cat.  \r\nde.utf8=Eine Katze.\r\n")
    write(s / "food/apple.svg", SVG.format(w=1000, h=500, cx=500, cy=250, r=200))
    write(s / "food/apple.txt", "A red apple.\n")
    save(s / "food/pear.png", Image.new("P", (12, 14), 3))
    write(s / "food/pear.svg", SVG.format(w=12, h=14, cx=6, cy=7, r=5))
    write(s / "food/pear.txt", "A pear.\n")
    write(s / "seasonal/gift.txt", "A gift.\n")
    save(s / "seasonal/tree.png", Image.new("RGBA", (10, 30), (0, 128, 0, 255)))
    save(s / "seasonal/tree_mirror.png", Image.new("RGBA", (10, 30), (0, 128, 0, 255)))
    write(s / "seasonal/tree.txt", "A tree.\n")
    save(s / "symbols/cafe.png", Image.new("RGB", (8, 8), (100, 60, 20)))
    write(s / "symbols/cafe.txt", "A café.\nfr.utf8=Un café.\n".encode("latin-1"))
    save(s / "symbols/blank.png", Image.new("RGBA", (8, 8)))
    write(s / "symbols/blank.txt", "\nfr.utf8=Rien.\n")
    write(s / "symbols/broken.png", b"\x89PNG\r\n\x1a\nnot really a png")
    write(s / "symbols/broken.txt", "A broken picture.\n")
    save(s / "symbols/orphan.png", Image.new("RGBA", (8, 8)))
    save(s / "symbols/tall/spade.png", Image.new("RGBA", (694, 2348), (120, 80, 40, 255)))
    write(s / "symbols/tall/spade.txt", "A garden spade.\n")
    return s


def test_synthetic_stamps_tree(stamps: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_VAR, str(stamps))
    out = prepare_dataset("tuxpaint", root=tmp_path / "data")
    rows = {r["id"]: r for r in manifest(out)}
    assert sorted(rows) == ["animals/birds/bird", "animals/cat", "food/apple", "food/pear", "seasonal/tree",
                            "symbols/cafe", "symbols/tall/spade"]
    assert {i: r["text"] for i, r in rows.items()} == {
        "animals/birds/bird": "A bird.", "animals/cat": "A grey cat.", "food/apple": "A red apple.",
        "food/pear": "A pear.", "seasonal/tree": "A tree.", "symbols/cafe": "A café.",
        "symbols/tall/spade": "A garden spade."}
    assert {i: (r["label"], r["subcategory"]) for i, r in rows.items()} == {
        "animals/birds/bird": ("animals", "animals/birds"), "animals/cat": ("animals", "animals"),
        "food/apple": ("food", "food"), "food/pear": ("food", "food"),
        "seasonal/tree": ("seasonal", "seasonal"),
        "symbols/cafe": ("symbols", "symbols"), "symbols/tall/spade": ("symbols", "symbols/tall")}

    # PNG stamps are used in place; the SVG-only one is rendered (scaled to 512 wide, alpha kept).
    for sid in ("animals/birds/bird", "animals/cat", "food/pear", "symbols/tall/spade"):
        assert rows[sid]["source_format"] == "png"
        assert (out / rows[sid]["image"]).resolve() == (stamps / f"{sid}.png").resolve()
    assert rows["animals/cat"]["mode"] == "LA" and rows["food/pear"]["mode"] == "P"
    assert rows["symbols/tall/spade"]["original_size"] == [694, 2348]
    apple = rows["food/apple"]
    assert apple["source_format"] == "svg" and apple["image"] == "images/food/apple.png"
    assert apple["original_size"] == [512, 256]
    with Image.open(out / apple["image"]) as im:
        assert im.mode == "RGBA" and im.size == (512, 256)
        assert im.getpixel((0, 0))[3] == 0 and im.getpixel((256, 128)) == (204, 0, 0, 255)
    for r in rows.values():
        with Image.open(out / r["image"]) as im:
            im.load()

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["stamps_dir"] == str(stamps.resolve())
    assert (report["records"], report["from_png"], report["from_svg"], report["png_and_svg"]) == (7, 6, 1, 1)
    assert report["missing_image"] == ["seasonal/gift.txt"]
    assert report["mirror_skipped"] == ["seasonal/tree_mirror"]
    assert report["no_description"] == ["symbols/orphan"]
    assert report["non_utf8"] == ["symbols/cafe.txt"]
    assert report["empty_description"] == ["symbols/blank.txt"]
    assert [b["path"] for b in report["bad_images"]] == [str(stamps.resolve() / "symbols/broken.png")]
    assert "cannot decode PNG" in report["bad_images"][0]["reason"]
    assert report["skipped"] == 5

    dataset = load_dataset("tuxpaint", root=tmp_path / "data")
    assert dataset.split == "test" and len(dataset) == 7
    bird = next(r for r in dataset if r.id == "animals/birds/bird")
    assert bird.captions == ["A bird."] and bird.label == "animals"
    assert bird.meta["subcategory"] == "animals/birds" and bird.meta["original_size"] == [40, 30]


def test_rebuild_reuses_rendered_svgs_unless_forced(stamps: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_VAR, str(stamps))
    out = prepare_dataset("tuxpaint", root=tmp_path)
    rendered = out / "images/food/apple.png"
    (out / "summary.json").unlink()  # as if the first build had been interrupted after rendering
    stamp = rendered.stat().st_mtime_ns
    prepare_dataset("tuxpaint", root=tmp_path)
    assert rendered.stat().st_mtime_ns == stamp
    write(stamps / "food/apple.svg", SVG.format(w=100, h=100, cx=50, cy=50, r=40))
    prepare_dataset("tuxpaint", root=tmp_path, force=True)
    with Image.open(rendered) as im:
        assert im.size == (100, 100)
    assert {r["id"]: r for r in manifest(out)}["food/apple"]["original_size"] == [100, 100]


def test_bad_stamps_dir_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=rf"nowhere: \${ENV_VAR}: not a folder"):
        prepare_dataset("tuxpaint", root=tmp_path)
    empty = tmp_path / "empty"
    write(empty / "animals/gift.txt", "A gift.\n")
    monkeypatch.setenv(ENV_VAR, str(empty))
    with pytest.raises(DataError, match="no stamps found"):
        prepare_dataset("tuxpaint", root=tmp_path)


@pytest.mark.skipif(INSTALLED_DIR.is_dir(), reason="the package is installed, so nothing is downloaded")
def test_missing_apt_get_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ExternalToolError) as err:
        prepare_dataset("tuxpaint", root=tmp_path)
    message = str(err.value)
    assert "`apt-get` is not installed" in message
    assert f"sudo apt-get update && sudo apt-get install {DEB_PACKAGE}" in message and ENV_VAR in message


# ------------------------------------------------------------------------------------------ the real package


def _real_source_available(root: Path) -> bool:
    return bool(os.environ.get(ENV_VAR)) or INSTALLED_DIR.is_dir() or (root / "_deb/tuxpaint").is_dir() or (
        shutil.which("apt-get") is not None and shutil.which("dpkg-deb") is not None)


@pytest.fixture(scope="module")
def real(data_root: Path) -> Path:
    if not _real_source_available(data_root):
        pytest.skip(f"no Tux Paint stamps: set {ENV_VAR}, install {DEB_PACKAGE}, or run on Debian/Ubuntu")
    return prepare_dataset("tuxpaint", root=data_root)


@pytest.mark.slow
@pytest.mark.network_data
def test_real_stamps(real: Path, data_root: Path):
    rows = manifest(real)
    report = json.loads((real / "report.json").read_text(encoding="utf-8"))
    stamps_dir = Path(report["stamps_dir"])
    if not os.environ.get(ENV_VAR) and not INSTALLED_DIR.is_dir():
        assert stamps_dir == (data_root / "_deb/tuxpaint/usr/share/tuxpaint/stamps").resolve()

    assert len(rows) >= 900 and len(rows) == report["records"] == report["from_png"] + report["from_svg"]
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["label"] for r in rows} == {d.name for d in stamps_dir.iterdir() if d.is_dir()}
    for r in rows:
        assert r["subcategory"] == r["id"].rpartition("/")[0]
        assert r["label"] == r["subcategory"].split("/")[0]

    # Captions are the English first lines, read here independently.
    for r in rows:
        first = (stamps_dir / f"{r['id']}.txt").read_text(encoding="utf-8").splitlines()[0].strip()
        assert r["text"] == first
    by_id = {r["id"]: r for r in rows}
    assert by_id["symbols/money/us/coins/025quarter"]["text"] == "A US 25 cent piece ($.25) called a quarter."

    # Every SVG-only stamp was rendered; stamps with both use the PNG.
    svg_only = {p.relative_to(stamps_dir).with_suffix("").as_posix() for p in stamps_dir.rglob("*.svg")
                if not p.with_suffix(".png").exists() and p.with_suffix(".txt").exists()}
    assert report["bad_images"] == []
    assert {r["id"] for r in rows if r["source_format"] == "svg"} == svg_only
    assert report["png_and_svg"] > 0
    for r in rows:
        if r["source_format"] == "svg":
            assert r["image"] == f"images/{r['id']}.png"
        else:
            assert (real / r["image"]).resolve() == (stamps_dir / f"{r['id']}.png").resolve()

    # Every image opens, in every mode the package has, big ones included.
    modes = set()
    for r in rows:
        with Image.open(real / r["image"]) as im:
            im.load()
            assert list(im.size) == r["original_size"] and im.mode == r["mode"]
            modes.add(im.mode)
    assert {"RGBA", "LA", "P"} <= modes
    assert by_id["household/tools/spade"]["original_size"] == [694, 2348]

    assert "seasonal/christmas/gift.txt" in report["missing_image"]
    assert report["mirror_skipped"] and all(m.endswith("_mirror") for m in report["mirror_skipped"])
    assert report["non_utf8"] == [] and report["empty_description"] == []


@pytest.mark.slow
@pytest.mark.network_data
def test_real_stamps_load(real: Path, data_root: Path):
    dataset = load_dataset("tuxpaint", root=data_root)
    assert dataset.split == "test" and len(dataset) == len(manifest(real))
    quarter = next(r for r in dataset if r.id == "symbols/money/us/coins/025quarter")
    assert quarter.captions == ["A US 25 cent piece ($.25) called a quarter."]
    assert quarter.label == "symbols" and quarter.meta["subcategory"] == "symbols/money/us/coins"
    assert Path(quarter.image).is_file()
