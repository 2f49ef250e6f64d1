"""Rendering vendor PNGs and SVGs to the dataset's square RGB PNGs, in a process pool."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from PIL import Image

from vislang.data.svg import rasterize_svg
from vislang.errors import DataError, ImageError
from vislang.utils.io import atomic_save_image, progress


@dataclass(frozen=True)
class RenderJob:
    """One image to write.

    Attributes:
        source: Vendor PNG or SVG file.
        target: Output PNG.
        size: Output side in pixels.
        background: RGB colour composited under the alpha channel.
    """

    source: str
    target: str
    size: int
    background: tuple[int, int, int]


def render_image(job: RenderJob) -> str | None:
    """Write one composited RGB PNG; returns None, or the reason the source could not be read."""
    try:
        if job.source.lower().endswith(".svg"):
            rgba = rasterize_svg(job.source, size=job.size)
        else:
            with Image.open(job.source) as im:
                rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*job.background, 255))
        rgb = Image.alpha_composite(canvas, rgba).convert("RGB")
        if rgb.size != (job.size, job.size):
            rgb = rgb.resize((job.size, job.size), Image.Resampling.LANCZOS)
        atomic_save_image(job.target, rgb, format="PNG", optimize=False)
    except ImageError as e:
        return e.reason
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return f"cannot render ({e})"
    return None


def _workers() -> int:
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # not on Linux
        return max(1, min(8, os.cpu_count() or 1))


def render_all(jobs: list[RenderJob], workers: int | None = None) -> None:
    """Render jobs in a process pool with a progress bar.

    Raises:
        DataError: Some source images could not be read (all failures are listed).
    """
    workers = workers or _workers()
    bar = progress(total=len(jobs), desc="emoji: images", unit="img")
    failures: list[tuple[str, str]] = []
    try:
        if workers == 1 or len(jobs) < 200:
            results = map(render_image, jobs)
            for job, reason in zip(jobs, results):
                if reason:
                    failures.append((job.source, reason))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for job, reason in zip(jobs, pool.map(render_image, jobs, chunksize=64)):
                    if reason:
                        failures.append((job.source, reason))
                    bar.update(1)
    finally:
        bar.close()
    if failures:
        shown = "\n".join(f"  {p}: {r}" for p, r in failures[:5])
        more = f"\n  ... and {len(failures) - 5} more" if len(failures) > 5 else ""
        raise DataError(f"{len(failures)} of {len(jobs)} emoji images could not be rendered:\n{shown}{more}")
