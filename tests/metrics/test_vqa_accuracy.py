"""VQA accuracy: hand-worked examples of the official evaluation's rules."""

from __future__ import annotations

import pytest

from vislang.data.records import QA
from vislang.errors import DataError
from vislang.metrics import evaluate_vqa, normalize_answer, vqa_accuracy


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
