"""The image styles of the emoji dataset and where each one's image files are."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vislang.data.datasets.emoji.concepts import concept_id
from vislang.data.datasets.emoji.iconify import iconify_svgs, label_names
from vislang.errors import DataError


@dataclass(frozen=True)
class Style:
    """One image source.

    Attributes:
        name: Style name used in options, record ids and image folders.
        package: npm package holding the images.
        folder: Image folder inside the package, or for an Iconify set its ``icons.json``.
        suffix: Image file suffix (``.png`` or ``.svg``).
        iconify: The images are the SVG bodies of an Iconify icon set (``folder`` names its JSON; a
            ``chars.json`` beside it maps code points to icon names), not files in a folder.
        by_label: The Iconify set's ``chars.json`` is empty: its icon names are matched to the concepts'
            CLDR labels instead (:func:`label_slug`).
    """

    name: str
    package: str
    folder: str
    suffix: str
    iconify: bool = False
    by_label: bool = False


STYLES: dict[str, Style] = {s.name: s for s in (
    Style("google", "emoji-datasource-google", "img/google/64", ".png"),
    Style("twitter", "emoji-datasource-twitter", "img/twitter/64", ".png"),
    Style("openmoji", "openmoji", "color/svg", ".svg"),
    Style("fluent", "@iconify-json/fluent-emoji-flat", "icons.json", ".svg", iconify=True),
    Style("fluent_line", "@iconify-json/fluent-emoji-high-contrast", "icons.json", ".svg", iconify=True),
    Style("emojione", "@iconify-json/emojione", "icons.json", ".svg", iconify=True, by_label=True),
    Style("emojione_line", "@iconify-json/emojione-monotone", "icons.json", ".svg", iconify=True,
          by_label=True),
    Style("noto_v1", "@iconify-json/noto-v1", "icons.json", ".svg", iconify=True, by_label=True),
)}


def style_images(node_modules: str | os.PathLike, style: Style, work_dir: str | os.PathLike | None = None,
                 labels: dict[str, str] | None = None) -> dict[str, Path]:
    """The image files of a style by concept id (file names normalised with :func:`concept_id`).

    Args:
        node_modules: Folder holding the style's package.
        style: The style.
        work_dir: Where an Iconify style's SVGs are written (one file per concept, under ``<style name>/``);
            needed only for those.
        labels: CLDR label by concept id; needed only for a style matched by label (``Style.by_label``).

    Raises:
        DataError: The style's image folder (or icon set) is missing or malformed, or two files name the
            same concept.
    """
    if style.iconify:
        if work_dir is None:
            raise ValueError(f"style {style.name!r} is an Iconify set: style_images needs a work_dir")
        if style.by_label and labels is None:
            raise ValueError(f"style {style.name!r} is matched by label: style_images needs the labels")
        return iconify_svgs(Path(node_modules) / style.package / style.folder, Path(work_dir) / style.name,
                            label_names(labels) if style.by_label and labels is not None else None)
    folder = Path(node_modules) / style.package / style.folder
    if not folder.is_dir():
        raise DataError(f"image folder of style {style.name!r} not found (incomplete {style.package} "
                        "package? delete it to have it reinstalled)", path=str(folder))
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() != style.suffix:
            continue
        concept = concept_id(path.stem)
        if concept in files:
            raise DataError(f"two {style.name} images name concept {concept}: {files[concept].name} and "
                            f"{path.name}", path=str(folder))
        files[concept] = path
    return files
