"""VQA accuracy: hand-worked examples of the official evaluation's rules."""

from __future__ import annotations

import re

import pytest

from vislang.data.records import QA
from vislang.errors import DataError
from vislang.metrics import evaluate_vqa, normalize_answer, vqa_accuracy
from vislang.metrics.vqa import CONTRACTIONS


def test_full_credit_needs_three_humans() -> None:
    # 10 humans: for each left-out answer, the other 9 are searched. "2" given by 3 humans:
    # leaving out one of the 3 leaves 2 matches (2/3), leaving out another answer leaves 3 (1).
    answers = ["2"] * 3 + ["3"] * 7
    assert vqa_accuracy("2", answers) == pytest.approx((3 * (2 / 3) + 7 * 1) / 10)
    assert vqa_accuracy("2", ["2"] * 4 + ["3"] * 6) == 1.0
    assert vqa_accuracy("2", ["2"] + ["3"] * 9) == pytest.approx(9 * (1 / 3) / 10)
    assert vqa_accuracy("5", ["2"] * 10) == 0.0


def test_two_matching_humans() -> None:
    # Leaving out one of the 2 matches leaves 1 (1/3); leaving out any of the 8 others leaves 2 (2/3).
    assert vqa_accuracy("red", ["red", "red"] + ["blue"] * 8) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)


def test_normalisation_when_humans_disagree() -> None:
    answers = ["two", "2", "2 ", "two dogs", "2", "2", "a 2", "2!", "Two", "2."]
    # Normalised: "2" x 9 ("two", "a 2", "2!", "Two", "2." all become "2") and "2 dogs".
    assert vqa_accuracy("Two", answers) == 1.0
    assert vqa_accuracy("the two", answers) == 1.0


def test_no_normalisation_when_humans_agree() -> None:
    # All ten humans wrote "yes": the prediction is compared as written (only whitespace stripped).
    assert vqa_accuracy(" yes\n", ["yes"] * 10) == 1.0
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqa_accuracy("Yes", ["yes"] * 9 + ["no"]) == 1.0


@pytest.mark.parametrize(("raw", "normalized"), [
    ("The Dog", "dog"),
    ("an apple", "apple"),
    ("none", "0"),
    ("ten dogs", "10 dogs"),
    ("dont know", "don't know"),
    ("whatll happen", "what'll happen"),
    ("couldnt've", "couldn't've"),
    ("yes.", "yes"),
    ("3.5", "3.5"),
    ("hot-dog", "hot dog"),  # hyphen inside a word: replaced by a space
    ("hot - dog", "hot dog"),  # hyphen touching a space: deleted
    ("1,000 x-ray", "1000 xray"),  # a digit-comma-digit anywhere: punctuation deleted everywhere
    ("left/right", "left right"),
    ("(red)", "red"),
    ("'cause", "'cause"),  # apostrophes are kept
])
def test_normalize_answer(raw: str, normalized: str) -> None:
    assert normalize_answer(raw) == normalized


def test_single_reference_answer_uses_exact_match() -> None:
    assert vqa_accuracy("Two", ["2"]) == 1.0
    assert vqa_accuracy("3", ["2"]) == 0.0


def test_evaluate_vqa_breaks_down_by_type() -> None:
    questions = [
        QA("What color?", ["red"] * 10, question_type="what color", answer_type="other", question_id=1),
        QA("How many?", ["2"] * 2 + ["3"] * 8, question_type="how many", answer_type="number", question_id=2),
        QA("Is it?", ["yes"] * 10, question_type="is the", answer_type="yes/no", question_id=3),
    ]
    scores = evaluate_vqa(questions, {1: "red", 2: "2", 3: "no"})
    q2 = (2 * (1 / 3) + 8 * (2 / 3)) / 10
    assert scores.per_question == {1: 1.0, 2: pytest.approx(q2), 3: 0.0}
    assert scores.overall == pytest.approx((1 + q2 + 0) / 3)
    assert scores.per_answer_type == {"other": 1.0, "number": pytest.approx(q2), "yes/no": 0.0}
    assert scores.per_question_type["how many"] == pytest.approx(q2)


def test_evaluate_vqa_errors() -> None:
    q = QA("Q?", ["a"] * 10, question_id=1)
    with pytest.raises(DataError, match="1 questions without prediction"):
        evaluate_vqa([q], {})
    with pytest.raises(DataError, match="question_id"):
        evaluate_vqa([QA("Q?", ["a"])], {})
    with pytest.raises(DataError, match="no human answer"):
        evaluate_vqa([QA("Q?", [], question_id=1)], {1: "a"})


# --------------------------------------------------------- the official normalisation, digits beyond ASCII

# The official vqaEval.py (GT-Vision-Lab/VQA) re-typed from its source. It ran on Python 2, where a pattern
# compiled without re.UNICODE has \d = [0-9]; Python 3's equivalent is re.ASCII. Its periodStrip.sub passes
# re.UNICODE (32) as the substitution count. (Its contraction table is long and not at stake here: the one
# vislang derives is used.)
OFFICIAL_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
OFFICIAL_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)", re.ASCII)
OFFICIAL_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                  ",", "?", "!"]
OFFICIAL_MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                       "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
OFFICIAL_ARTICLES = ["a", "an", "the"]


def official_process_punctuation(in_text: str, comma_strip: re.Pattern = OFFICIAL_COMMA_STRIP,
                                 period_strip: re.Pattern = OFFICIAL_PERIOD_STRIP) -> str:
    out_text = in_text
    for p in OFFICIAL_PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (re.search(comma_strip, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    return period_strip.sub("", out_text, re.UNICODE)


def official_process_digit_article(in_text: str) -> str:
    manual_map = dict(OFFICIAL_MANUAL_MAP)
    out_text = []
    for word in in_text.lower().split():
        word = manual_map.setdefault(word, word)
        if word not in OFFICIAL_ARTICLES:
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in CONTRACTIONS:
            out_text[word_id] = CONTRACTIONS[word]
    return " ".join(out_text)


def official_normalize(answer: str) -> str:
    """What the official evaluation compares when the humans disagree (after its strip of the answer)."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return official_process_digit_article(official_process_punctuation(answer))


ANSWERS = [
    # ASCII
    "1,000", "3.5", "yes.", "2.", "1,000 x-ray", "hot-dog", "(red)", "Two dogs", "a.m.", "U.S.A.",
    "3,5 apples", "1.000,5", "e.g. the dog", "no, thanks", "...", "3 . 5", "$1.50", "10:30.",
    "left/right, up",
    # digits beyond ASCII: fullwidth, Arabic-Indic, Extended Arabic-Indic (Persian), Devanagari
    "１,０００", "٣.٥", "٣,٥ apples", "١٠٠٠.", "２.５", "1,０", "１,000", "x-ray １,０００", "٣.", "۴.۵", "१,२",
    "１,０００ x-ray", "two ٣.٥",
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_normalisation_equals_the_official_code(answer: str) -> None:
    assert normalize_answer(answer) == official_normalize(answer)


def test_digits_beyond_ascii_are_not_digits_to_the_official_regexes() -> None:
    # "," between non-ASCII digits is not a digit-comma-digit: replaced by a space, not deleted; a "." before
    # one is not before a digit: deleted.
    assert normalize_answer("１,０００") == "１ ０００" and normalize_answer("1,000") == "1000"
    assert normalize_answer("٣.٥") == "٣٥" and normalize_answer("3.5") == "3.5"
    # With Unicode \d (Python 3's default) the same code would keep them: what vislang must not do.
    unicode_digits = official_process_punctuation("１,０００", re.compile(r"(\d)(\,)(\d)"),
                                                  re.compile(r"(?!<=\d)(\.)(?!\d)"))
    assert unicode_digits == "１０００"
    # Humans who disagree are normalised: "١,٠٠٠" becomes "١ ٠٠٠" (with Unicode \d: "١٠٠٠", all 10 match).
    humans = ["١٠٠٠"] * 3 + ["١,٠٠٠"] * 7
    assert vqa_accuracy("١٠٠٠", humans) == pytest.approx((3 * (2 / 3) + 7 * 1) / 10)
