"""Iconify icon sets as emoji images: one SVG per icon, matched to concepts by code point or CLDR label."""

from __future__ import annotations

import re
import shutil
import sys
import unicodedata
from pathlib import Path
from typing import Any

from vislang.data.datasets.emoji.concepts import concept_id
from vislang.data.datasets.emoji.emojibase import load_json
from vislang.data.datasets.emoji.report import plural
from vislang.errors import DataError

_MAX_ALIAS_DEPTH = 16


def _quarter_turns(entry: dict[str, Any], where: str, name: str) -> int:
    """The ``rotate`` field of an Iconify icon or alias: a whole number of quarter turns (0 when absent)."""
    turns = entry.get("rotate", 0)
    if not isinstance(turns, int) or isinstance(turns, bool):
        raise DataError(f"expected a whole number of quarter turns, got {turns!r}", path=where,
                        field=f"icons.{name}.rotate")
    return turns


def _icons_and_aliases(icon_set: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``icons`` and ``aliases`` objects of an Iconify icon set (no aliases: empty)."""
    icons, aliases = icon_set.get("icons"), icon_set.get("aliases") or {}
    if not isinstance(icons, dict) or not isinstance(aliases, dict):
        raise DataError("expected 'icons' (and 'aliases') objects", path=where)
    return icons, aliases


def iconify_icon_svg(icon_set: dict[str, Any], name: str, where: str = "icons.json") -> str:
    """A standalone SVG document of one icon of an Iconify icon set (the parsed ``icons.json``).

    Aliases are followed to their parent icon, their flips and quarter turns combined as Iconify defines
    them (``hFlip``/``vFlip`` toggle, ``rotate`` adds); sizes fall back from the icon to the set (16 x 16).

    Raises:
        DataError: The icon (or an alias's parent) is missing, an alias chain loops, a field has the wrong
            type, or a non-square icon is turned by a quarter.
    """
    icons, aliases = _icons_and_aliases(icon_set, where)
    h_flip = v_flip = False
    turns = 0
    props: dict[str, Any] = {}
    current = name
    for _ in range(_MAX_ALIAS_DEPTH):
        if current in icons:
            break
        alias = aliases.get(current)
        if not isinstance(alias, dict) or not isinstance(alias.get("parent"), str):
            raise DataError(f"no icon {current!r}" + (f" (alias of {name!r})" if current != name else ""),
                            path=where, field=f"icons.{current}")
        h_flip ^= bool(alias.get("hFlip", False))
        v_flip ^= bool(alias.get("vFlip", False))
        turns += _quarter_turns(alias, where, current)
        props = {k: alias[k] for k in ("width", "height", "left", "top") if k in alias} | props
        current = alias["parent"]
    else:
        raise DataError(f"alias chain of {name!r} is longer than {_MAX_ALIAS_DEPTH} (a loop?)", path=where)
    icon = icons[current]
    if not isinstance(icon, dict) or not isinstance(icon.get("body"), str):
        raise DataError("expected an object with an SVG 'body' string", path=where, field=f"icons.{current}")
    h_flip ^= bool(icon.get("hFlip", False))
    v_flip ^= bool(icon.get("vFlip", False))
    turns = (turns + _quarter_turns(icon, where, current)) % 4
    box = {k: props.get(k, icon.get(k, icon_set.get(k, default)))
           for k, default in (("width", 16), ("height", 16), ("left", 0), ("top", 0))}
    try:
        width, height, left, top = (float(box[k]) for k in ("width", "height", "left", "top"))
    except (TypeError, ValueError):
        raise DataError(f"non-numeric size {box}", path=where, field=f"icons.{current}") from None
    if turns % 2 and width != height:
        raise DataError(f"a quarter turn of a non-square icon ({width:g} x {height:g}) is not supported",
                        path=where, field=f"icons.{name}")
    body = icon["body"]
    if h_flip or v_flip or turns:
        cx, cy = left + width / 2, top + height / 2
        body = (f'<g transform="translate({cx:g} {cy:g}) rotate({90 * turns}) '
                f'scale({-1 if h_flip else 1} {-1 if v_flip else 1}) translate({-cx:g} {-cy:g})">{body}</g>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{left:g} {top:g} {width:g} {height:g}" width="{width:g}" height="{height:g}">{body}</svg>')


def label_slug(label: str) -> str:
    """The Iconify icon name of a CLDR label: ASCII letters and digits, lower case, joined by ``-``.

    Accents are dropped and apostrophes and full stops removed, as Iconify's emoji sets name their icons:
    ``"waving hand: medium-dark skin tone"`` -> ``"waving-hand-medium-dark-skin-tone"``, ``"one o’clock"``
    -> ``"one-oclock"``, ``"piñata"`` -> ``"pinata"``.
    """
    text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"['.]", "", text.replace("&", " and "))
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def label_names(labels: dict[str, str]) -> dict[str, str]:
    """Concept id by Iconify icon name, for an icon set named by CLDR label (see :func:`label_slug`).

    Flags also answer to ``flag-for-<place>`` (``"flag: France"`` -> ``flag-france``, ``flag-for-france``).
    A name that two concepts' labels share is left out: it could be either.

    Args:
        labels: CLDR label by concept id.
    """
    names: dict[str, set[str]] = {}
    for concept, label in labels.items():
        slug = label_slug(label)
        names.setdefault(slug, set()).add(concept)
        if slug.startswith("flag-"):
            names.setdefault("flag-for-" + slug[len("flag-"):], set()).add(concept)
    return {name: next(iter(concepts)) for name, concepts in names.items() if len(concepts) == 1}


def _icon_names_from_chars(chars_path: Path) -> dict[str, str]:
    """Icon name by concept id from an Iconify ``chars.json`` (code point sequence -> icon name)."""
    chars = load_json(chars_path)
    if not isinstance(chars, dict) or not all(isinstance(v, str) for v in chars.values()):
        raise DataError("expected an object mapping code points to icon names", path=str(chars_path))
    names: dict[str, str] = {}
    for hexcode, name in sorted(chars.items()):
        concept = concept_id(hexcode)
        if names.setdefault(concept, name) != name:
            raise DataError(f"concept {concept} has two icons, {names[concept]!r} and {name!r}",
                            path=str(chars_path), field=hexcode)
    return names


def _icon_names_from_labels(icon_set: dict[str, Any], by_name: dict[str, str], where: str, style: str
                            ) -> dict[str, str]:
    """Icon name by concept id for a set named by label: icons before aliases, each in name order."""
    icons, aliases = _icons_and_aliases(icon_set, where)
    names: dict[str, str] = {}
    unmatched: list[str] = []
    for name in [*sorted(icons), *sorted(aliases)]:
        if name in by_name:
            names.setdefault(by_name[name], name)
        else:
            unmatched.append(name)
    if unmatched:  # older CLDR names (``bear-face`` is now ``bear``), letters, keycaps: counted, not used
        print(f"emoji: {style}: {plural(len(unmatched), 'icon name')} match no CLDR label "
              f"(e.g. {', '.join(unmatched[:3])})", file=sys.stderr)
    return names


def iconify_svgs(icons_path: Path, out_dir: Path, by_name: dict[str, str] | None = None) -> dict[str, Path]:
    """Write each emoji of an Iconify icon set as ``<out_dir>/<concept>.svg``; returns them by concept.

    ``chars.json`` next to ``icons_path`` maps code point sequences to icon names, unless ``by_name`` is
    given. ``out_dir`` is rewritten.

    Args:
        icons_path: The set's ``icons.json``.
        out_dir: Folder for the SVG files, named after the style (messages name it).
        by_name: Concept id by icon name (:func:`label_names`), for a set whose ``chars.json`` is empty. An
            icon that names no concept is not used; where an icon and an alias name one concept, the icon
            wins.

    Raises:
        DataError: A file is missing or malformed, or two code point sequences name the same concept with
            different icons.
    """
    if not icons_path.is_file():
        raise DataError("icon set not found (incomplete package? delete it to have it reinstalled)",
                        path=str(icons_path))
    icon_set = load_json(icons_path)
    if not isinstance(icon_set, dict):
        raise DataError("expected an Iconify icon set object", path=str(icons_path))
    names = (_icon_names_from_chars(icons_path.with_name("chars.json")) if by_name is None
             else _icon_names_from_labels(icon_set, by_name, str(icons_path), out_dir.name))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    files: dict[str, Path] = {}
    for concept, name in names.items():
        path = out_dir / f"{concept}.svg"
        path.write_text(iconify_icon_svg(icon_set, name, str(icons_path)), encoding="utf-8")
        files[concept] = path
    return files
