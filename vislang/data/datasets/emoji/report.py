"""The stderr lines of an emoji build: what matched, and every image or concept left out, counted."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from vislang.data.datasets.emoji.emojibase import EmojibaseText


def plural(count: int, noun: str) -> str:
    """``"1 image"``, ``"2 images"``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def report_matching(style: str, files: dict[str, Path], text: EmojibaseText, unused: int,
                     unused_what: str = "") -> None:
    """One stderr line: what matched, what had no image, what had no text; nothing is dropped uncounted."""
    matched = sum(1 for c in files if c in text.concepts)
    skipped = Counter(text.skipped[c] for c in files if c in text.skipped)
    no_text = sorted(c for c in files if c not in text.concepts and c not in text.skipped)
    no_image = sum(1 for c in text.concepts if c not in files)
    parts = [f"{plural(matched, 'image')} of {plural(len(text.concepts), 'concept')}",
             f"{plural(no_image, 'concept')} without an image",
             f"{plural(len(no_text), 'image')} without emojibase text"
             + (f" (e.g. {', '.join(no_text[:3])})" if no_text else "")]
    parts += [f"{plural(n, 'image')} of skipped {reason} entries" for reason, n in sorted(skipped.items())]
    if unused:
        parts.append(f"{plural(unused, 'image')} of {unused_what}")
    print(f"emoji: {style}: " + "; ".join(parts), file=sys.stderr)
