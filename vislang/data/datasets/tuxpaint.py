"""The ``tuxpaint`` dataset: Tux Paint's stamps with their English descriptions, for out-of-domain tests.

The stamps come from Debian's ``tuxpaint-stamps-default`` package (GPL-2). Under ``stamps/`` every stamp is
``<category>/<sub>/.../<name>.{png,svg}`` beside ``<name>.txt``, whose first line is the English description
and whose later lines are translations (``fr.utf8=...``); ``.dat`` and sound files are ignored. One record is
one stamp: the image, the description as its caption and the top folder (``animals``, ``food``, ...) as its
label.

How the odd cases are handled (all counted in ``report.json`` beside the manifest, none silently):

* A stamp with both a PNG and an SVG uses the PNG: it is the artist's own raster of the same picture, it is
  what Tux Paint shows when built without SVG support, and it is used in place with nothing to render.
* SVG-only stamps are rendered to PNG (longer side at most :data:`SVG_MAX_SIDE`, alpha kept) under
  ``images/``; PNG stamps are not copied, the manifest points at them.
* ``<name>_mirror.png`` is Tux Paint's ready-mirrored variant of stamp ``<name>``, not a stamp of its own:
  skipped. Other pictures without a ``.txt`` have no caption: skipped.
* A ``.txt`` without a picture (e.g. ``seasonal/christmas/gift.txt``) is skipped.
* A ``.txt`` that is not UTF-8 has its first line read as Latin-1 and is listed; an empty first line is
  skipped.
* A picture that cannot be decoded or rendered is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vislang.data.records import Record
from vislang.data.registry import NoOptions, PrepareContext, register_dataset
from vislang.data.svg import rasterize_svg
from vislang.errors import DataError, ExternalToolError, ImageError
from vislang.utils.io import atomic_save_image, atomic_write_json, progress

ENV_VAR = "VISLANG_TUXPAINT_DIR"
DEB_PACKAGE = "tuxpaint-stamps-default"
INSTALLED_DIR = Path("/usr/share/tuxpaint/stamps")
STAMPS_IN_PACKAGE = Path("usr/share/tuxpaint/stamps")
SVG_MAX_SIDE = 512
MIRROR_SUFFIX = "_mirror"
SOUND_SUFFIXES = (".ogg", ".wav")

_HOW_TO_GET = (f"Install the stamps with `sudo apt-get update && sudo apt-get install {DEB_PACKAGE}`, "
               f"or set {ENV_VAR} to a Tux Paint stamps folder.")


# ------------------------------------------------------------------------------------------ finding stamps


def _say(message: str) -> None:
    if os.environ.get("VISLANG_QUIET") != "1":
        print(f"tuxpaint: {message}", file=sys.stderr)


def _run_tool(args: list[str], cwd: Path, what: str) -> None:
    """Run an external tool, turning its absence or failure into an :class:`ExternalToolError`."""
    if shutil.which(args[0]) is None:
        raise ExternalToolError(f"cannot {what}: `{args[0]}` is not installed (it comes with Debian and "
                                f"Ubuntu). {_HOW_TO_GET}")
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, errors="replace")
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ExternalToolError(f"cannot {what}: `{' '.join(args)}` failed (exit {result.returncode}): "
                                + " / ".join(detail) + f"\n{_HOW_TO_GET}")


def download_stamps(deb_dir: Path, force: bool = False) -> Path:
    """Fetch and unpack ``tuxpaint-stamps-default`` under ``deb_dir`` unless already there.

    The ``.deb`` comes from ``apt-get download`` (about 160 MB; no root needed) and is unpacked with
    ``dpkg-deb -x`` into ``deb_dir/tuxpaint``, less the stamps' spoken descriptions (``.ogg``/``.wav``,
    190 of its 230 MB), which nothing here uses. Both steps write to a temporary place first, so an
    interrupted run is redone rather than half-used.

    Args:
        deb_dir: Cache folder (``<data root>/_deb``).
        force: Unpack again even when an unpacked copy exists (the ``.deb`` is reused).

    Returns:
        The stamps folder inside the unpacked package.
    """
    unpacked = deb_dir / "tuxpaint"
    stamps = unpacked / STAMPS_IN_PACKAGE
    if stamps.is_dir() and not force:
        return stamps
    deb_dir.mkdir(parents=True, exist_ok=True)
    debs = sorted(deb_dir.glob(f"{DEB_PACKAGE}_*.deb"), key=lambda p: p.stat().st_mtime)
    if not debs:
        tmp = deb_dir / ".download"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _say(f"downloading {DEB_PACKAGE} (about 160 MB) with apt-get into {deb_dir} ...")
        start = time.monotonic()
        _run_tool(["apt-get", "download", DEB_PACKAGE], tmp, f"download {DEB_PACKAGE}")
        got = sorted(tmp.glob(f"{DEB_PACKAGE}_*.deb"))
        if not got:
            raise ExternalToolError(f"`apt-get download {DEB_PACKAGE}` left no .deb in {tmp}. {_HOW_TO_GET}")
        debs = [deb_dir / got[-1].name]
        got[-1].replace(debs[0])
        shutil.rmtree(tmp, ignore_errors=True)
        _say(f"downloaded {debs[0].name} in {time.monotonic() - start:.1f} s")
    tmp = deb_dir / ".tuxpaint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _say(f"unpacking {debs[-1].name} ...")
    _run_tool(["dpkg-deb", "-x", str(debs[-1]), str(tmp)], deb_dir, f"unpack {debs[-1].name}")
    if not (tmp / STAMPS_IN_PACKAGE).is_dir():
        raise ExternalToolError(f"{debs[-1]} has no {STAMPS_IN_PACKAGE} folder; is it {DEB_PACKAGE}?")
    for path in (tmp / STAMPS_IN_PACKAGE).rglob("*"):
        if path.suffix.lower() in SOUND_SUFFIXES:
            path.unlink()
    shutil.rmtree(unpacked, ignore_errors=True)
    tmp.rename(unpacked)
    return stamps


def find_stamps_dir(root: Path, force: bool = False) -> Path:
    """The stamps folder: ``$VISLANG_TUXPAINT_DIR``, else the installed package, else a download under
    ``root/_deb``."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError("not a folder (it should be a Tux Paint stamps folder such as "
                            f"{INSTALLED_DIR})", path=str(path), where=f"${ENV_VAR}")
        return path.resolve()
    if INSTALLED_DIR.is_dir():
        return INSTALLED_DIR
    return download_stamps(root / "_deb", force)


# --------------------------------------------------------------------------------------------- scanning


@dataclass
class Stamp:
    """One stamp found in the stamps folder.

    Attributes:
        id: Path under the stamps folder without extension, e.g. "animals/birds/blackbird".
        caption: The English description (first line of the ``.txt``).
        png: The PNG picture, if any.
        svg: The SVG picture, if any.
    """

    id: str
    caption: str
    png: Path | None
    svg: Path | None

    @property
    def category(self) -> str:
        """The top folder ("animals"); "uncategorized" for a stamp directly in the stamps folder."""
        parts = self.id.split("/")
        return parts[0] if len(parts) > 1 else "uncategorized"

    @property
    def subcategory(self) -> str:
        """The whole folder path ("animals/birds")."""
        return self.id.rpartition("/")[0] or "uncategorized"


@dataclass
class StampReport:
    """What a build found besides usable stamps; written to ``report.json``.

    Attributes:
        stamps_dir: The stamps folder read.
        records: Stamps that became records.
        from_png: Records whose picture is a PNG used in place.
        from_svg: Records whose SVG was rendered.
        png_and_svg: Stamps having both pictures (the PNG is used).
        missing_image: ``.txt`` files with no picture beside them.
        mirror_skipped: ``_mirror`` pictures (variants of another stamp).
        no_description: Other pictures without a ``.txt``.
        non_utf8: ``.txt`` files read as Latin-1.
        empty_description: ``.txt`` files whose first line is empty.
        bad_images: Pictures that could not be decoded or rendered, with the reason.
    """

    stamps_dir: str
    records: int = 0
    from_png: int = 0
    from_svg: int = 0
    png_and_svg: int = 0
    missing_image: list[str] = field(default_factory=list)
    mirror_skipped: list[str] = field(default_factory=list)
    no_description: list[str] = field(default_factory=list)
    non_utf8: list[str] = field(default_factory=list)
    empty_description: list[str] = field(default_factory=list)
    bad_images: list[dict[str, str]] = field(default_factory=list)

    def skipped(self) -> int:
        """Stamps or files left out for any reason."""
        return (len(self.missing_image) + len(self.mirror_skipped) + len(self.no_description)
                + len(self.empty_description) + len(self.bad_images))


def read_description(path: Path) -> tuple[str, bool]:
    """The first line of a stamp's ``.txt``, stripped.

    Returns:
        The line and whether it had to be read as Latin-1 because it is not UTF-8.
    """
    raw = path.read_bytes().split(b"\n", 1)[0].removeprefix(b"\xef\xbb\xbf")
    try:
        return raw.decode("utf-8").strip(), False
    except UnicodeDecodeError:
        return raw.decode("latin-1").strip(), True


def scan_stamps(stamps_dir: Path, report: StampReport) -> list[Stamp]:
    """Find every stamp under ``stamps_dir`` in a stable order, noting odd files in ``report``."""
    stamps = []
    for folder, dirs, files in os.walk(stamps_dir):
        dirs.sort()
        rel = Path(folder).relative_to(stamps_dir)
        by_stem: dict[str, dict[str, Path]] = {}
        for name in files:
            stem, dot, ext = name.rpartition(".")
            if dot and ext.lower() in ("png", "svg", "txt"):
                by_stem.setdefault(stem, {})[ext.lower()] = Path(folder) / name
        for stem in sorted(by_stem):
            kinds = by_stem[stem]
            sid = (rel / stem).as_posix()
            if "txt" not in kinds:
                mirrored = stem.endswith(MIRROR_SUFFIX)
                (report.mirror_skipped if mirrored else report.no_description).append(sid)
                continue
            if "png" not in kinds and "svg" not in kinds:
                report.missing_image.append((rel / f"{stem}.txt").as_posix())
                continue
            caption, latin1 = read_description(kinds["txt"])
            if latin1:
                report.non_utf8.append((rel / f"{stem}.txt").as_posix())
            if not caption:
                report.empty_description.append((rel / f"{stem}.txt").as_posix())
                continue
            stamps.append(Stamp(sid, caption, kinds.get("png"), kinds.get("svg")))
    return stamps


# ------------------------------------------------------------------------------------------------ building


def _png_record(stamp: Stamp, path: Path) -> Record:
    """A record pointing at the stamp's PNG in place, after decoding it once."""
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
            im.load()  # a truncated file fails here, not later in a training run
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(str(path), f"cannot decode PNG ({e})") from e
    meta = {"subcategory": stamp.subcategory, "source_format": "png", "original_size": list(size),
            "mode": mode}
    return Record(stamp.id, str(path.resolve()), [stamp.caption], stamp.category, meta=meta)


def _svg_record(stamp: Stamp, svg: Path, images_dir: Path, force: bool) -> Record:
    """A record pointing at the stamp's SVG rendered to ``images_dir/<id>.png``."""
    out = images_dir / f"{stamp.id}.png"
    if force or not out.exists():  # images are written atomically, so an existing one is complete
        image = rasterize_svg(svg, max_side=SVG_MAX_SIDE)
        atomic_save_image(out, image)
        size = image.size
    else:
        with Image.open(out) as im:
            size = im.size
    meta = {"subcategory": stamp.subcategory, "source_format": "svg", "original_size": list(size),
            "mode": "RGBA"}
    return Record(stamp.id, str(out.resolve()), [stamp.caption], stamp.category, meta=meta)


@register_dataset(
    "tuxpaint",
    description="Tux Paint stamps (Debian tuxpaint-stamps-default): picture, English description, category; "
                "test-only, out-of-domain",
    splits=("test",),
    default_split="test",
    license="GPL-2.0 (Tux Paint stamps, Debian package tuxpaint-stamps-default)",
)
def prepare(ctx: PrepareContext, options: NoOptions) -> dict[str, list[Record]]:
    """Read the stamps (downloading them if needed) and render the SVG-only ones (no options)."""
    stamps_dir = find_stamps_dir(ctx.root, ctx.force)
    report = StampReport(stamps_dir=str(stamps_dir))
    stamps = scan_stamps(stamps_dir, report)
    if not stamps:
        raise DataError("no stamps found (no picture with a .txt description beside it)",
                        path=str(stamps_dir))
    images_dir = ctx.out_dir / "images"
    records = []
    for stamp in progress(stamps, desc="tuxpaint", unit="stamp"):
        try:
            if stamp.png is not None:
                records.append(_png_record(stamp, stamp.png))
                report.from_png += 1
                report.png_and_svg += stamp.svg is not None
            elif stamp.svg is not None:
                records.append(_svg_record(stamp, stamp.svg, images_dir, ctx.force))
                report.from_svg += 1
        except ImageError as e:
            report.bad_images.append({"path": e.path, "reason": e.reason})
    report.records = len(records)
    atomic_write_json(ctx.out_dir / "report.json", _report_json(report))
    if report.skipped() or report.non_utf8:
        _say(f"{report.records} stamps from {stamps_dir}; skipped {len(report.missing_image)} .txt without "
             f"a picture, {len(report.mirror_skipped)} mirrored variants, {len(report.no_description)} "
             f"pictures without a .txt, {len(report.empty_description)} empty descriptions, "
             f"{len(report.bad_images)} unreadable pictures; {len(report.non_utf8)} .txt read as Latin-1 "
             f"(details: {ctx.out_dir / 'report.json'})")
    return {"test": records}


def _report_json(report: StampReport) -> dict[str, Any]:
    out = asdict(report)
    out["skipped"] = report.skipped()
    return out
