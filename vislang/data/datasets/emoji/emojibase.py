"""Reading the ``emojibase-data`` package: CLDR labels, tags, groups, skin tones and genders of each emoji."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vislang.data.datasets.emoji.concepts import Concept, base_key, concept_id
from vislang.errors import DataError

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


def load_json(path: Path) -> Any:
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
    data, meta = load_json(data_path), load_json(groups_path)
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
