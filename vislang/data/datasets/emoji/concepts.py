"""Emoji concepts: ids, the split groups they fall in, and the captions made from their CLDR text."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


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
