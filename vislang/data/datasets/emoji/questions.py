"""VQA questions about emoji records, made from their metadata."""

from __future__ import annotations

from vislang.data.records import QA, Record

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
