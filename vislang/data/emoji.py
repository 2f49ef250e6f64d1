"""The built-in ``emoji`` dataset: one concept drawn in several styles, with CLDR names as text.

Sources (npm packages, pinned in :data:`PACKAGES` so every build holds the same data):

* images: ``emoji-datasource-google`` (Noto Emoji, Apache-2.0) and ``emoji-datasource-twitter`` (Twemoji,
  CC-BY-4.0), the single 64 px PNGs under ``img/<vendor>/64/`` (not the sprite sheets); ``openmoji``
  (CC-BY-SA-4.0), the colour SVGs under ``color/svg/`` rasterised with resvg; ``@iconify-json/fluent-emoji-flat``
  (Microsoft Fluent Emoji, flat style, MIT; style ``fluent``) and ``@iconify-json/fluent-emoji-high-contrast``
  (its black line-art set without skin tones; ``fluent_line``), Iconify icon sets: ``icons.json`` holds each
  drawing's SVG body and ``chars.json`` maps code points to icon names (Fluent has no flags);
  ``@iconify-json/emojione`` (EmojiOne 2 / EmojiTwo, CC-BY-4.0; ``emojione``), ``@iconify-json/emojione-monotone``
  (its black line art, no skin tones; ``emojione_line``) and ``@iconify-json/noto-v1`` (Google's Noto Emoji
  before 2017, Apache-2.0; ``noto_v1``), Iconify sets whose ``chars.json`` is empty: their icon names are
  matched to the CLDR labels (``waving-hand-light-skin-tone``); names from older CLDR releases match nothing
  and are counted;
* text: ``emojibase-data`` (MIT; CLDR annotations under the Unicode licence): English label, tags, group,
  subgroup, skin tone and gender.

``prepare`` installs the packages the chosen styles need with npm into ``<data root>/_npm/emoji`` the first
time (about 250 MB). Without npm, install Node.js (which brings npm), or set ``VISLANG_EMOJI_NPM_DIR`` to a
``node_modules`` folder that already holds them.

Concepts
    A *concept* is one emojibase entry or one of its skin-tone variants, named by its code point sequence
    without U+FE0F (upper-case hex joined by ``-``, e.g. ``1F44B-1F3FB``). Vendor file names keep FE0F in
    some places and drop it in others, so both sides are compared with FE0F removed. Left out, because they
    are not pictures of anything: the 26 regional indicator letters (no emojibase group) and the group 2
    "component" entries (skin-tone swatches and hair components). Every entry left out and every image
    without a concept is counted in a line on stderr.

Records
    One record per (style, concept) image, id ``<style>/<concept>``, image ``images/<style>/<concept>.png``
    (RGB, ``size`` x ``size``, alpha composited onto ``background``). Captions are the CLDR label and a
    sentence made from it and the tags: ``"grinning face"`` and ``"a grinning face emoji: cheerful, cheery,
    face, ..."``; a qualifier after the label's colon goes in brackets (``"a waving hand emoji (light skin
    tone): bye, ..."``); skin-tone variants use their base emoji's tags. The record label is the emojibase
    group name (``"smileys-emotion"``, ...) for classification. Meta: ``vendor``, ``concept``, ``base`` (the
    split group key below), ``group``, ``subgroup``, ``emoji`` (the character), ``tags``, and where emojibase
    has them ``skin_tone`` (1-5, or a list of two for two-person emoji with different tones) and ``gender``
    (``"female"``/``"male"``).

Splits
    Concepts are grouped by :func:`base_key`: skin-tone modifiers, ZWJ + gender sign (U+2640/U+2642) and
    ZWJ + right arrow (the "facing right" variants) are removed, the gendered people man/woman, boy/girl and
    old man/old woman become person, child and older person, and the few gendered or multi-person emoji
    that have a separate neutral code point (Santa Claus and Mrs. Claus -> Mx Claus, kiss, couple with
    heart, holding hands, ...) map to it (:data:`SAME_AS`). So "waving hand" and its five tones share a group,
    as do "person: beard", "man: beard" and "woman: beard" in every tone. Each flag is its own group.

    Each group goes wholly to train, val or test by a hash of ``seed`` and the group key (fractions
    ``val_fraction`` and ``test_fraction``; the same on every machine). The split files are:

    * ``train``: the ``vendors`` styles' images of train concepts;
    * ``val``: the ``vendors`` styles' images of val concepts;
    * ``test_seen_concepts_new_style``: the ``heldout`` styles' images of train concepts;
    * ``test_new_concepts``: every style's images (vendors and held out) of test concepts.

    Held-out styles (OpenMoji by default) therefore appear only in test splits; their images of val
    concepts are not used. ``train_only`` styles (none by default; the Fluent, EmojiOne and Noto v1 sets are
    meant for it) add their images of train concepts to ``train`` and nothing else, so more training styles
    leave the val and test splits exactly as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageColor

from vislang.data.records import QA, Record
from vislang.data.registry import PrepareContext, register_dataset
from vislang.data.svg import rasterize_svg
from vislang.errors import DataError, ExternalToolError, ImageError
from vislang.utils.io import atomic_save_image, atomic_write_json, progress

PACKAGES: dict[str, str] = {
    "emojibase-data": "17.0.0",
    "emoji-datasource-google": "16.0.0",
    "emoji-datasource-twitter": "16.0.0",
    "openmoji": "17.0.0",
    "@iconify-json/fluent-emoji-flat": "1.2.6",
    "@iconify-json/fluent-emoji-high-contrast": "1.2.6",
    "@iconify-json/emojione": "1.2.3",
    "@iconify-json/emojione-monotone": "1.2.1",
    "@iconify-json/noto-v1": "1.2.5",
}
"""npm packages and the exact versions every build uses."""

NPM_DIR_ENV = "VISLANG_EMOJI_NPM_DIR"
"""Environment variable naming an existing ``node_modules`` that holds :data:`PACKAGES` (skips npm)."""

SPLITS = ("train", "val", "test_seen_concepts_new_style", "test_new_concepts")

LICENSE = ("Google images: Noto Emoji (Apache-2.0); Twitter images: Twemoji by Twitter/X (CC-BY-4.0); "
           "OpenMoji images (CC-BY-SA-4.0, openmoji.org); Fluent images (train_only=fluent, fluent_line): Fluent "
           "Emoji by Microsoft (MIT); EmojiOne images (train_only=emojione, emojione_line): EmojiOne 2 / "
           "EmojiTwo (CC-BY-4.0); Noto v1 images (train_only=noto_v1): Noto Emoji by Google (Apache-2.0); "
           "text: emojibase-data (MIT) from Unicode CLDR (Unicode License v3)")


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


@dataclass(frozen=True)
class Concept:
    """One emoji (an emojibase entry or one of its skin-tone variants).

    Attributes:
        concept: Code point sequence without FE0F, e.g. ``"1F44B-1F3FB"``.
        base: Split group key from :func:`base_key`.
        label: CLDR English label.
        emoji: The emoji character(s).
        tags: CLDR keywords (a skin-tone variant's are its base emoji's).
        group: Emojibase group name, e.g. ``"people-body"``.
        subgroup: Emojibase subgroup name, e.g. ``"hand-fingers-open"``.
        order: Emojibase sort order.
        skin_tone: 1-5, or two tones for two people; None without skin tone.
        gender: ``"female"`` or ``"male"`` where emojibase gives it.
    """

    concept: str
    base: str
    label: str
    emoji: str
    tags: tuple[str, ...]
    group: str
    subgroup: str
    order: int
    skin_tone: int | tuple[int, ...] | None = None
    gender: str | None = None


# --- concept ids and split groups ---------------------------------------------------------------------

_FE0F = "FE0F"
_ZWJ = "200D"
_SKIN_TONES = frozenset({"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"})
_DROPPED_AFTER_ZWJ = frozenset({"2640", "2642", "27A1"})  # female sign, male sign, right arrow (facing right)
_NEUTRAL_PERSON = {
    "1F468": "1F9D1", "1F469": "1F9D1",  # man, woman -> person
    "1F466": "1F9D2", "1F467": "1F9D2",  # boy, girl -> child
    "1F474": "1F9D3", "1F475": "1F9D3",  # old man, old woman -> older person
}
SAME_AS: dict[str, str] = {
    "1F385": "1F9D1-200D-1F384",  # Santa Claus -> Mx Claus
    "1F936": "1F9D1-200D-1F384",  # Mrs. Claus -> Mx Claus
    "1F934": "1FAC5",  # prince -> person with crown
    "1F478": "1FAC5",  # princess -> person with crown
    "1F930": "1FAC4",  # pregnant woman -> pregnant person
    "1FAC3": "1FAC4",  # pregnant man -> pregnant person
    "1F57A": "1F483",  # man dancing -> woman dancing (no neutral form)
    "1F46B": "1F9D1-200D-1F91D-200D-1F9D1",  # woman and man holding hands -> people holding hands
    "1F46C": "1F9D1-200D-1F91D-200D-1F9D1",  # men holding hands
    "1F46D": "1F9D1-200D-1F91D-200D-1F9D1",  # women holding hands
    "1F9D1-200D-2764-200D-1F48B-200D-1F9D1": "1F48F",  # kiss: X, Y -> kiss
    "1F9D1-200D-2764-200D-1F9D1": "1F491",  # couple with heart: X, Y -> couple with heart
    "1F9D1-200D-1F430-200D-1F9D1": "1F46F",  # two people with bunny ears (toned) -> people with bunny ears
    "1F9D1-200D-1FAEF-200D-1F9D1": "1F93C",  # two people wrestling (toned) -> people wrestling
    "1FAF1-200D-1FAF2": "1F91D",  # handshake with two tones -> handshake
    "1F46A": "1F9D1-200D-1F9D1-200D-1F9D2",  # family -> family: adult, adult, child
}
"""Group keys (after tone and gender removal) that are the same concept as another key."""


def concept_id(hexcode: str) -> str:
    """The concept id of a code point sequence: upper-case hex joined by ``-``, without FE0F."""
    return "-".join(p for p in hexcode.strip().upper().replace("_", "-").split("-") if p and p != _FE0F)


def base_key(concept: str) -> str:
    """The split group of a concept: the concept with skin tone, gender and direction removed.

    Drops skin-tone modifiers (U+1F3FB-1F3FF) and ZWJ + female/male sign or ZWJ + right arrow, maps man and
    woman to person, boy and girl to child, old man and old woman to older person, then applies
    :data:`SAME_AS`. ``base_key("1F9D4-1F3FD-200D-2640")`` (woman: beard, medium skin tone) is ``"1F9D4"``.
    """
    parts = [p for p in concept_id(concept).split("-") if p not in _SKIN_TONES]
    kept: list[str] = []
    i = 0
    while i < len(parts):
        if parts[i] == _ZWJ and i + 1 < len(parts) and parts[i + 1] in _DROPPED_AFTER_ZWJ:
            i += 2
            continue
        kept.append(_NEUTRAL_PERSON.get(parts[i], parts[i]))
        i += 1
    key = "-".join(kept)
    return SAME_AS.get(key, key)


def assign_split(base: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for a split group, from a hash of the seed and the group key."""
    digest = hashlib.sha256(f"emoji:{seed}:{base}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


# --- captions ------------------------------------------------------------------------------------------

_CONSONANT_LIKE = ("one", "uni", "eu", "ewe")  # read with a consonant sound: "a one o'clock", "a unicorn"


def _article(phrase: str) -> str:
    word = phrase.split(" ", 1)[0]
    if word.isupper() and len(word) <= 2 and word.isalpha():  # spelled out: "an NG button", "a VS button"
        return "an" if word[0] in "AEFHILMNORSX" else "a"
    lower = word.lower()
    if lower.startswith(_CONSONANT_LIKE):
        return "a"
    return "an" if lower[:1] in ("a", "e", "i", "o", "u") else "a"


def caption_sentence(label: str, tags: tuple[str, ...] | list[str]) -> str:
    """A sentence describing an emoji from its CLDR label and tags.

    ``caption_sentence("grinning face", ["face", "grin"])`` is ``"a grinning face emoji: face, grin"``;
    ``caption_sentence("man: beard", ["beard"])`` is ``"a man emoji (beard): beard"``.
    """
    head, _, qualifier = label.partition(": ")
    text = f"{_article(head)} {head} emoji"
    if qualifier:
        text += f" ({qualifier})"
    words = [t for t in dict.fromkeys(tags) if t]
    if words:
        text += ": " + ", ".join(words)
    return text


# --- reading emojibase -----------------------------------------------------------------------------------

_REGIONAL_INDICATOR = re.compile(r"^1F1(E[6-9A-F]|F[0-9A-F])$")
_COMPONENT_GROUP = 2
_GENDERS = {0: "female", 1: "male"}


@dataclass
class EmojibaseText:
    """What emojibase-data provides after filtering.

    Attributes:
        concepts: Kept concepts by concept id, in emojibase order.
        skipped: Concept ids of entries left out, with the reason (``"regional indicator"``,
            ``"component"``).
    """

    concepts: dict[str, Concept]
    skipped: dict[str, str]


def _field(entry: dict[str, Any], name: str, kind: type | tuple[type, ...], path: Path, where: str) -> Any:
    if name not in entry:
        raise DataError("missing field", path=str(path), where=where, field=name)
    value = entry[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"expected {getattr(kind, '__name__', kind)}, got {value!r}", path=str(path),
                        where=where, field=name)
    return value


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("file not found (is the emojibase-data package complete?)", path=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read JSON ({e})", path=str(path)) from None


def read_emojibase(package_dir: str | os.PathLike) -> EmojibaseText:
    """Read ``en/data.json`` and ``meta/groups.json`` of an emojibase-data package.

    Args:
        package_dir: The ``emojibase-data`` folder.

    Returns:
        The kept concepts (entries and skin-tone variants) and the skipped ones.

    Raises:
        DataError: A file is missing or an entry lacks a field (named with the entry's index and hexcode).
    """
    package_dir = Path(package_dir)
    data_path, groups_path = package_dir / "en" / "data.json", package_dir / "meta" / "groups.json"
    data, meta = _load_json(data_path), _load_json(groups_path)
    if not isinstance(data, list):
        raise DataError("expected a JSON list of emoji entries", path=str(data_path))
    try:
        group_names = {int(k): str(v) for k, v in meta["groups"].items()}
        subgroup_names = {int(k): str(v) for k, v in meta["subgroups"].items()}
    except (KeyError, AttributeError, TypeError, ValueError):
        raise DataError("expected 'groups' and 'subgroups' objects mapping numbers to names",
                        path=str(groups_path)) from None

    concepts: dict[str, Concept] = {}
    skipped: dict[str, str] = {}
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise DataError("expected an object", path=str(data_path), where=f"entry {index}")
        where = f"entry {index}"
        hexcode = _field(entry, "hexcode", str, data_path, where)
        where = f"entry {index} ({hexcode})"
        concept = concept_id(hexcode)
        if "group" not in entry and _REGIONAL_INDICATOR.match(concept):
            skipped[concept] = "regional indicator"
            continue
        group = _field(entry, "group", int, data_path, where)
        variants = [entry] + list(entry.get("skins") or [])
        if group == _COMPONENT_GROUP:
            skipped.update({concept_id(v.get("hexcode", "")): "component" for v in variants})
            continue
        tags = _field(entry, "tags", list, data_path, where) if "tags" in entry else []
        for k, variant in enumerate(variants):
            vwhere = where if k == 0 else f"{where} skins[{k - 1}]"
            if not isinstance(variant, dict):
                raise DataError("expected an object", path=str(data_path), where=vwhere)
            vid = concept_id(_field(variant, "hexcode", str, data_path, vwhere))
            if vid in concepts:
                raise DataError(f"concept {vid} appears twice", path=str(data_path), where=vwhere,
                                field="hexcode")
            subgroup = _field(variant, "subgroup", int, data_path, vwhere)
            vgroup = _field(variant, "group", int, data_path, vwhere)
            if vgroup not in group_names or subgroup not in subgroup_names:
                raise DataError(f"group {vgroup} / subgroup {subgroup} is not in {groups_path.name}",
                                path=str(data_path), where=vwhere, field="subgroup")
            tone = variant.get("tone")
            tones = tone if isinstance(tone, list) else [tone] if tone is not None else []
            if not all(isinstance(t, int) and 1 <= t <= 5 for t in tones):
                raise DataError(f"expected a skin tone 1-5 or a list of them, got {tone!r}",
                                path=str(data_path), where=vwhere, field="tone")
            if "gender" in variant and variant["gender"] not in _GENDERS:
                raise DataError(f"expected 0 (female) or 1 (male), got {variant['gender']!r}",
                                path=str(data_path), where=vwhere, field="gender")
            concepts[vid] = Concept(
                concept=vid,
                base=base_key(vid),
                label=_field(variant, "label", str, data_path, vwhere),
                emoji=_field(variant, "emoji", str, data_path, vwhere),
                tags=tuple(str(t) for t in tags),
                group=group_names[vgroup],
                subgroup=subgroup_names[subgroup],
                order=int(variant.get("order", 0)),
                skin_tone=tuple(tone) if isinstance(tone, list) else tone,
                gender=_GENDERS[variant["gender"]] if "gender" in variant else None,
            )
    return EmojibaseText(concepts, skipped)


# --- npm packages ----------------------------------------------------------------------------------------

_MARKER = "vislang-installed.json"


def packages_for(styles: tuple[str, ...] | list[str] | None = None) -> dict[str, str]:
    """The pinned packages a build with these styles needs: the text and each style's images (None: all)."""
    if styles is None:
        return dict(PACKAGES)
    names = {"emojibase-data", *(STYLES[s].package for s in styles)}
    return {p: v for p, v in PACKAGES.items() if p in names}


def _missing_packages(node_modules: Path, packages: dict[str, str]) -> list[str]:
    """Packages absent from ``node_modules`` (a folder without package.json counts)."""
    return [name for name in packages if not (node_modules / name / "package.json").is_file()]


def _installed_version(node_modules: Path, name: str) -> str | None:
    try:
        return json.loads((node_modules / name / "package.json").read_text(encoding="utf-8")).get("version")
    except (OSError, json.JSONDecodeError):
        return None


def npm_prefix(root: str | os.PathLike) -> Path:
    """Where ``prepare`` installs the npm packages under a data root."""
    return Path(root) / "_npm" / "emoji"


def ensure_packages(root: str | os.PathLike, styles: tuple[str, ...] | list[str] | None = None) -> Path:
    """The ``node_modules`` folder holding the packages of ``styles``, installing them with npm when missing.

    ``$VISLANG_EMOJI_NPM_DIR`` wins when set (it must already hold the packages). Otherwise the packages go
    to ``<root>/_npm/emoji``; a marker file written after npm succeeds makes later calls instant and an
    interrupted install be redone.

    Args:
        root: The data root.
        styles: Style names whose images are needed (None: every package of :data:`PACKAGES`).

    Returns:
        The ``node_modules`` folder.

    Raises:
        ExternalToolError: npm is needed but absent, or ``npm install`` failed, or the folder named by the
            environment variable lacks a package.
    """
    packages = packages_for(styles)
    env = os.environ.get(NPM_DIR_ENV)
    if env:
        node_modules = Path(env).expanduser()
        missing = _missing_packages(node_modules, packages)
        if missing:
            raise ExternalToolError(
                f"{NPM_DIR_ENV}={env} lacks {', '.join(missing)}; install them there with "
                f"`npm install {' '.join(f'{p}@{packages[p]}' for p in missing)}` or unset {NPM_DIR_ENV}")
        for name, version in packages.items():
            found = _installed_version(node_modules, name)
            if found != version:
                print(f"warning: emoji: {name} in {NPM_DIR_ENV} is version {found}, built data expects "
                      f"{version}; counts may differ from the documented ones", file=sys.stderr)
        return node_modules

    prefix = npm_prefix(root)
    node_modules = prefix / "node_modules"
    marker = prefix / _MARKER
    try:
        installed = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        installed = {}
    if not isinstance(installed, dict):
        installed = {}
    missing = [p for p, v in packages.items()
               if installed.get(p) != v or _installed_version(node_modules, p) != v]
    if not missing:
        return node_modules
    npm = shutil.which("npm")
    if npm is None:
        raise ExternalToolError(
            "the emoji dataset needs npm to download its images and text "
            f"({', '.join(f'{p}@{packages[p]}' for p in missing)}), and npm is not on PATH. "
            "Install Node.js (it includes npm: https://nodejs.org, or `apt-get install npm`), or set "
            f"{NPM_DIR_ENV} to a node_modules folder that already holds these packages.")
    # npm install --save-exact keeps what an earlier call installed (it is in the prefix's package.json)
    _npm_install(npm, prefix, missing)
    atomic_write_json(marker, {p: v for p, v in PACKAGES.items()
                               if _installed_version(node_modules, p) == v})
    still = [p for p in packages if _installed_version(node_modules, p) != packages[p]]
    if still:
        raise ExternalToolError(f"npm install finished but {', '.join(still)} is not in {node_modules}")
    return node_modules


def _npm_install(npm: str, prefix: Path, packages: list[str]) -> None:
    specs = [f"{p}@{PACKAGES[p]}" for p in packages]
    prefix.mkdir(parents=True, exist_ok=True)
    print(f"emoji: installing {' '.join(specs)} with npm into {prefix} (once)", file=sys.stderr)
    start = time.monotonic()
    cmd = [npm, "install", "--prefix", str(prefix), "--save-exact", "--no-audit", "--no-fund",
           "--no-update-notifier", *specs]
    tail: deque[str] = deque(maxlen=15)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise ExternalToolError(f"cannot run npm ({npm}): {e}") from None
    assert proc.stderr is not None
    for line in proc.stderr:
        tail.append(line.rstrip())
        print(f"  npm: {line.rstrip()}", file=sys.stderr)
    rc = proc.wait()
    if rc != 0:
        raise ExternalToolError(
            f"`{' '.join(cmd[1:])}` failed with exit status {rc}:\n" + "\n".join(tail) + "\n"
            f"Check access to the npm registry, or set {NPM_DIR_ENV} to a node_modules folder that holds "
            "the packages.")
    print(f"emoji: npm install done in {time.monotonic() - start:.0f} s", file=sys.stderr)


# --- images ----------------------------------------------------------------------------------------------


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
    chars = _load_json(chars_path)
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
        print(f"emoji: {style}: {_n(len(unmatched), 'icon name')} match no CLDR label "
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
    icon_set = _load_json(icons_path)
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


# --- the dataset -----------------------------------------------------------------------------------------


def check_options(vendors: tuple[str, ...], heldout: tuple[str, ...], size: int, background: str,
                  val_fraction: float, test_fraction: float, train_only: tuple[str, ...] = ()
                  ) -> tuple[int, int, int]:
    """Validate the dataset options before anything is downloaded; returns the background as RGB.

    Raises:
        DataError: An option is invalid (the message names it).
    """
    known = ", ".join(STYLES)
    for option, names in (("vendors", vendors), ("heldout", heldout), ("train_only", train_only)):
        for name in names:
            if name not in STYLES:
                raise DataError(f"unknown style {name!r} (known: {known})", where=f"emoji option {option!r}")
    if not vendors:
        raise DataError("at least one training style is needed", where="emoji option 'vendors'")
    both = sorted(set(vendors) & set(heldout))
    if both:
        raise DataError(f"style {both[0]!r} is both a training and a held-out style",
                        where="emoji options 'vendors' and 'heldout'")
    for option, names in (("vendors", vendors), ("heldout", heldout)):
        both = sorted(set(names) & set(train_only))
        if both:
            raise DataError(f"style {both[0]!r} is in both {option!r} and 'train_only'",
                            where=f"emoji options {option!r} and 'train_only'")
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
                test_fraction: float = 0.1, seed: int = 0, train_only: tuple[str, ...] = ()
                ) -> dict[str, list[Record]]:
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

    Returns:
        Records by split name (see the module docstring).
    """
    vendors, heldout, train_only = tuple(vendors), tuple(heldout), tuple(train_only)
    rgb = check_options(vendors, heldout, size, background, val_fraction, test_fraction, train_only)
    node_modules, out_dir = Path(node_modules), Path(out_dir).resolve()
    text = read_emojibase(node_modules / "emojibase-data")
    group_split = {c.base: assign_split(c.base, seed, val_fraction, test_fraction)
                   for c in text.concepts.values()}

    split_of_style: dict[str, dict[str, str]] = {
        **{s: {"train": "train", "val": "val", "test": "test_new_concepts"} for s in vendors},
        **{s: {"train": "test_seen_concepts_new_style", "test": "test_new_concepts"} for s in heldout},
        **{s: {"train": "train"} for s in train_only},
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
        _report_matching(style, files, text, unused,
                         "validation and test concepts unused (train-only style)" if style in train_only
                         else "validation concepts unused (held-out style)")

    render_all(jobs)
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    for split, _, _, record in sorted(placed, key=lambda p: (p[0], p[1], p[2], p[3].id)):
        splits[split].append(record)
    return splits


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _report_matching(style: str, files: dict[str, Path], text: EmojibaseText, unused: int,
                     unused_what: str = "") -> None:
    """One stderr line: what matched, what had no image, what had no text; nothing is dropped uncounted."""
    matched = sum(1 for c in files if c in text.concepts)
    skipped = Counter(text.skipped[c] for c in files if c in text.skipped)
    no_text = sorted(c for c in files if c not in text.concepts and c not in text.skipped)
    no_image = sum(1 for c in text.concepts if c not in files)
    parts = [f"{_n(matched, 'image')} of {_n(len(text.concepts), 'concept')}",
             f"{_n(no_image, 'concept')} without an image",
             f"{_n(len(no_text), 'image')} without emojibase text"
             + (f" (e.g. {', '.join(no_text[:3])})" if no_text else "")]
    parts += [f"{_n(n, 'image')} of skipped {reason} entries" for reason, n in sorted(skipped.items())]
    if unused:
        parts.append(f"{_n(unused, 'image')} of {unused_what}")
    print(f"emoji: {style}: " + "; ".join(parts), file=sys.stderr)


@register_dataset(
    "emoji",
    description="Emoji in Google, Twitter and OpenMoji styles (Fluent, EmojiOne, Noto v1 optional) with CLDR "
                "names; splits by concept group",
    splits=SPLITS,
    default_split="train",
    license=LICENSE,
    options={"vendors": ("google", "twitter"), "heldout": ("openmoji",), "size": 64, "background": "white",
             "val_fraction": 0.1, "test_fraction": 0.1, "seed": 0, "train_only": ()},
)
def prepare(ctx: PrepareContext, vendors: tuple[str, ...] = ("google", "twitter"),
            heldout: tuple[str, ...] = ("openmoji",), size: int = 64, background: str = "white",
            val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
            train_only: tuple[str, ...] = ()) -> dict[str, list[Record]]:
    """Install the npm packages if needed, then build the dataset (see the module docstring)."""
    vendors, heldout, train_only = tuple(vendors), tuple(heldout), tuple(train_only)
    check_options(vendors, heldout, size, background, val_fraction, test_fraction, train_only)
    node_modules = ensure_packages(ctx.root, vendors + heldout + train_only)
    return build_emoji(node_modules, ctx.out_dir, vendors=vendors, heldout=heldout, size=size,
                       background=background, val_fraction=val_fraction, test_fraction=test_fraction,
                       seed=seed, train_only=train_only)


# ------------------------------------------------------------------------------------- metadata questions

SKIN_TONE_NAMES = {1: "light", 2: "medium-light", 3: "medium", 4: "medium-dark", 5: "dark"}
"""Emoji skin-tone modifiers (Fitzpatrick types 1-2 to 6) by their emojibase number, as Unicode names them."""


def metadata_questions(rec: Record) -> list[QA]:
    """VQA questions about an emoji record, made from its metadata (one answer each).

    * group: "which group is this emoji in?" -> ``smileys-emotion``, ``flags``, ...;
    * skin tone: "what skin tone is this?" -> ``light`` .. ``dark`` (single-tone emoji) and "does this emoji
      have a skin tone?" -> yes/no (people and hands);
    * gender: "is this a man or a woman?" -> ``man``/``woman`` where emojibase gives a gender;
    * which flag: "which flag is this?" -> the country or region of a country/subdivision flag.

    Records that are not emoji (no ``group`` metadata) get none. Question ids are ``<record id>-m<k>``.
    """
    meta = rec.meta
    group = meta.get("group")
    if not group:
        return []
    out = [QA("Which group is this emoji in?", [str(group)], question_type="group", answer_type="other")]
    tone = meta.get("skin_tone")
    if group == "people-body":
        out.append(QA("Does this emoji have a skin tone?", ["yes" if tone is not None else "no"],
                      question_type="skin tone", answer_type="yes/no"))
    if isinstance(tone, int) and tone in SKIN_TONE_NAMES:
        out.append(QA("What skin tone is this?", [SKIN_TONE_NAMES[tone]], question_type="skin tone",
                      answer_type="other"))
    gender = meta.get("gender")
    if gender in ("female", "male"):
        out.append(QA("Is this a man or a woman?", ["woman" if gender == "female" else "man"],
                      question_type="gender", answer_type="other"))
    name = rec.captions[0] if rec.captions else ""
    if meta.get("subgroup") in ("country-flag", "subdivision-flag") and name.lower().startswith("flag:"):
        out.append(QA("Which flag is this?", [name.split(":", 1)[1].strip().lower()], question_type="flag",
                      answer_type="other"))
    for k, q in enumerate(out):
        q.question_id = f"{rec.id}-m{k}"
    return out
