"""Up-front checks of image files before they are embedded: all bad files are found and reported together."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from vislang.data.images import find_bad_images
from vislang.errors import MissingImagesError


@dataclass
class CheckedImages:
    """Result of :func:`check_image_files`: the readable paths and the bad ones with their reasons."""

    good: list[str]
    bad: list[tuple[str, str]]


def check_image_files(paths: Sequence[str], *, skip_bad: bool = False, label: str | None = None,
                      workers: int = 8) -> CheckedImages:
    """Open every image's header up front (as :meth:`vislang.data.ImageTextDataset.check_images` does).

    Raises:
        MissingImagesError: Some images are bad and ``skip_bad`` is False (all of them are listed).
    """
    unique = list(dict.fromkeys(paths))
    bad = find_bad_images(unique, workers)
    if bad and not skip_bad:
        raise MissingImagesError(label or "the images", bad, len(unique))
    if bad:
        warn_bad_images(bad, len(unique), label)
    bad_set = {p for p, _ in bad}
    return CheckedImages([p for p in paths if p not in bad_set], bad)


def warn_bad_images(bad: Sequence[tuple[str, str]], total: int, label: str | None = None,
                    show: int = 10) -> None:
    """Print ``warning: skipping N of M images ...`` listing the first ``show`` bad files on stderr."""
    listed = "\n".join(f"  {p}: {r}" for p, r in bad[:show])
    more = f"\n  ... and {len(bad) - show} more" if len(bad) > show else ""
    of = f" of {label}" if label else ""
    print(f"warning: skipping {len(bad)} of {total} images{of} that are missing or unreadable:\n{listed}{more}",
          file=sys.stderr)
