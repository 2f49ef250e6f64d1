"""Building the emoji dataset: options, records and splits, and its registration as ``emoji``."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import ImageColor

from vislang.data.datasets.emoji.concepts import Concept, assign_split, caption_sentence
from vislang.data.datasets.emoji.emojibase import read_emojibase
from vislang.data.datasets.emoji.npm import ensure_packages
from vislang.data.datasets.emoji.render import RenderJob, render_all
from vislang.data.datasets.emoji.report import report_matching
from vislang.data.datasets.emoji.styles import STYLES, style_images
from vislang.data.records import Record
from vislang.data.registry import PrepareContext, register_dataset
from vislang.errors import DataError

SPLITS = ("train", "val", "test_seen_concepts_new_style", "test_new_concepts", "val_new_style")

LICENSE = ("Google images: Noto Emoji (Apache-2.0); Twitter images: Twemoji by Twitter/X (CC-BY-4.0); "
           "OpenMoji images (CC-BY-SA-4.0, openmoji.org); Fluent images (train_only=fluent, fluent_line): Fluent "
           "Emoji by Microsoft (MIT); EmojiOne images (train_only=emojione, emojione_line): EmojiOne 2 / "
           "EmojiTwo (CC-BY-4.0); Noto v1 images (train_only=noto_v1): Noto Emoji by Google (Apache-2.0); "
           "text: emojibase-data (MIT) from Unicode CLDR (Unicode License v3)")


@dataclass(frozen=True)
class EmojiOptions:
    """Options of the ``emoji`` dataset (``emoji:train_only=fluent+fluent_line``; see :func:`build_emoji`).

    Attributes:
        vendors: Training styles.
        heldout: Styles kept for the test splits only.
        size: Output image side in pixels.
        background: Colour composited under transparent pixels.
        val_fraction: Share of concept groups for validation.
        test_fraction: Share of concept groups for testing.
        seed: Seed of the group assignment.
        train_only: Extra training styles: their images of train concepts join ``train``, the rest is unused.
        val_style: Validation styles: their images of train concepts form ``val_new_style`` (a style never
            trained on, for choosing recipes without a test split); the rest is unused.
    """

    vendors: tuple[str, ...] = ("google", "twitter")
    heldout: tuple[str, ...] = ("openmoji",)
    size: int = 64
    background: str = "white"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    train_only: tuple[str, ...] = ()
    val_style: tuple[str, ...] = ()


def check_options(vendors: tuple[str, ...], heldout: tuple[str, ...], size: int, background: str,
                  val_fraction: float, test_fraction: float, train_only: tuple[str, ...] = (),
                  val_style: tuple[str, ...] = ()) -> tuple[int, int, int]:
    """Validate the dataset options before anything is downloaded; returns the background as RGB.

    Raises:
        DataError: An option is invalid (the message names it).
    """
    known = ", ".join(STYLES)
    groups = (("vendors", vendors), ("heldout", heldout), ("train_only", train_only), ("val_style", val_style))
    for option, names in groups:
        for name in names:
            if name not in STYLES:
                raise DataError(f"unknown style {name!r} (known: {known})", where=f"emoji option {option!r}")
    if not vendors:
        raise DataError("at least one training style is needed", where="emoji option 'vendors'")
    both = sorted(set(vendors) & set(heldout))
    if both:
        raise DataError(f"style {both[0]!r} is both a training and a held-out style",
                        where="emoji options 'vendors' and 'heldout'")
    for j, (extra, extra_names) in enumerate(groups[2:], 2):  # train-only and validation styles: nowhere else
        why = " (a validation style is never trained on nor tested)" if extra == "val_style" else ""
        for option, names in groups[:j]:
            both = sorted(set(names) & set(extra_names))
            if both:
                raise DataError(f"style {both[0]!r} is in both {option!r} and {extra!r}{why}",
                                where=f"emoji options {option!r} and {extra!r}")
    if size <= 0:
        raise DataError(f"expected a positive image size, got {size}", where="emoji option 'size'")
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise DataError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be >= 0 "
                        "and sum to less than 1", where="emoji options")
    try:
        rgb = ImageColor.getrgb(background)
    except ValueError:
        raise DataError(f"unknown colour {background!r} (use a name like 'white' or '#rrggbb')",
                        where="emoji option 'background'") from None
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def _record(concept: Concept, style: str, image: Path) -> Record:
    meta: dict[str, Any] = {
        "vendor": style,
        "concept": concept.concept,
        "base": concept.base,
        "group": concept.group,
        "subgroup": concept.subgroup,
        "emoji": concept.emoji,
        "tags": list(concept.tags),
    }
    if concept.skin_tone is not None:
        meta["skin_tone"] = list(concept.skin_tone) if isinstance(concept.skin_tone, tuple) \
            else concept.skin_tone
    if concept.gender is not None:
        meta["gender"] = concept.gender
    return Record(id=f"{style}/{concept.concept}", image=str(image),
                  captions=[concept.label, caption_sentence(concept.label, concept.tags)],
                  label=concept.group, meta=meta)


def build_emoji(node_modules: str | os.PathLike, out_dir: str | os.PathLike, *,
                vendors: tuple[str, ...] = ("google", "twitter"), heldout: tuple[str, ...] = ("openmoji",),
                size: int = 64, background: str = "white", val_fraction: float = 0.1,
                test_fraction: float = 0.1, seed: int = 0, train_only: tuple[str, ...] = (),
                val_style: tuple[str, ...] = ()) -> dict[str, list[Record]]:
    """Render the images and make the split records from an existing ``node_modules``.

    Args:
        node_modules: Folder holding :data:`PACKAGES`.
        out_dir: Build folder; images go to ``images/<style>/<concept>.png`` (the folder is rewritten).
        vendors: Training styles.
        heldout: Styles kept for the test splits only.
        size: Output image side in pixels (vendor PNGs are 64 px, so larger sizes upsample them; OpenMoji
            SVGs are rendered at this size).
        background: Colour composited under transparent pixels.
        val_fraction: Share of concept groups for validation.
        test_fraction: Share of concept groups for testing.
        seed: Seed of the group assignment.
        train_only: Extra training styles: their images of train concepts join ``train``, the rest is unused.
        val_style: Validation styles: their images of train concepts form ``val_new_style``.

    Returns:
        Records by split name (see the package docstring).
    """
    vendors, heldout, train_only, val_style = tuple(vendors), tuple(heldout), tuple(train_only), tuple(val_style)
    rgb = check_options(vendors, heldout, size, background, val_fraction, test_fraction, train_only, val_style)
    node_modules, out_dir = Path(node_modules), Path(out_dir).resolve()
    text = read_emojibase(node_modules / "emojibase-data")
    group_split = {c.base: assign_split(c.base, seed, val_fraction, test_fraction)
                   for c in text.concepts.values()}

    split_of_style: dict[str, dict[str, str]] = {
        **{s: {"train": "train", "val": "val", "test": "test_new_concepts"} for s in vendors},
        **{s: {"train": "test_seen_concepts_new_style", "test": "test_new_concepts"} for s in heldout},
        **{s: {"train": "train"} for s in train_only},
        **{s: {"train": "val_new_style"} for s in val_style},
    }
    images_dir, sources_dir = out_dir / "images", out_dir / "sources"
    for folder in (images_dir, sources_dir):
        if folder.exists():
            shutil.rmtree(folder)
    placed: list[tuple[str, int, int, Record]] = []  # (split, concept order, style index, record)
    jobs: list[RenderJob] = []
    labels = {c.concept: c.label for c in text.concepts.values()}
    for style_index, (style, targets) in enumerate(split_of_style.items()):
        files = style_images(node_modules, STYLES[style], sources_dir, labels)
        unused = 0
        for concept in text.concepts.values():
            source = files.get(concept.concept)
            split = targets.get(group_split[concept.base])
            if source is None:
                continue
            if split is None:
                unused += 1
                continue
            target = images_dir / style / f"{concept.concept}.png"
            jobs.append(RenderJob(str(source), str(target), size, rgb))
            placed.append((split, concept.order, style_index, _record(concept, style, target)))
        why = ("validation and test concepts unused (train-only style)" if style in train_only else
               "validation and test concepts unused (validation style)" if style in val_style else
               "validation concepts unused (held-out style)")
        report_matching(style, files, text, unused, why)

    render_all(jobs)
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    for split, _, _, record in sorted(placed, key=lambda p: (p[0], p[1], p[2], p[3].id)):
        splits[split].append(record)
    return splits



@register_dataset(
    "emoji",
    description="Emoji in Google, Twitter and OpenMoji styles (Fluent, EmojiOne, Noto v1 optional) with CLDR "
                "names; splits by concept group",
    splits=SPLITS,
    default_split="train",
    license=LICENSE,
    options=EmojiOptions,
)
def prepare(ctx: PrepareContext, options: EmojiOptions) -> dict[str, list[Record]]:
    """Install the npm packages if needed, then build the dataset (see the package docstring)."""
    o = options
    check_options(o.vendors, o.heldout, o.size, o.background, o.val_fraction, o.test_fraction, o.train_only,
                  o.val_style)
    node_modules = ensure_packages(ctx.root, o.vendors + o.heldout + o.train_only + o.val_style)
    return build_emoji(node_modules, ctx.out_dir, vendors=o.vendors, heldout=o.heldout, size=o.size,
                       background=o.background, val_fraction=o.val_fraction, test_fraction=o.test_fraction,
                       seed=o.seed, train_only=o.train_only, val_style=o.val_style)
