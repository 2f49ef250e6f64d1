"""The metrics do work linear in the number of items, checked by counting, not timing: ids that count how
often they are hashed or compared go through each metric at two sizes, and the count must grow in proportion
(a set rebuilt per prediction, or a list searched per item, makes it grow with the square)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vislang.data.records import QA
from vislang.metrics import classification_report, evaluate_captions, evaluate_vqa

SMALL, LARGE = 500, 4000


class CountedId(int):
    """A question, image or class id that counts how often it is hashed or compared."""

    operations = 0

    def __hash__(self) -> int:
        CountedId.operations += 1
        return int.__hash__(self)

    def __eq__(self, other: object) -> bool:
        CountedId.operations += 1
        return int.__eq__(self, other)


def vqa(n: int) -> None:
    questions = [QA("What color?", ["red"] * 4 + ["Red."] * 3 + ["blue"] * 3, question_type=f"t{i % 7}",
                    answer_type="other", question_id=CountedId(3 * i)) for i in range(n)]
    predictions = {CountedId(3 * i): "red" if i % 2 else "blue" for i in range(n)}
    assert 0 < evaluate_vqa(questions, predictions).overall < 1


def classification(n: int) -> None:
    labels = [CountedId(k) for k in range(10)]
    y_true = [labels[i % 10] for i in range(n)]
    y_pred = [labels[(i * 7) % 10] for i in range(n)]
    assert classification_report(y_true, y_pred).accuracy > 0


def captions(n: int) -> None:
    words = ["dog", "cat", "red", "ball", "grass", "runs", "sits", "on", "with", "big"]
    refs = {CountedId(i): [f"a {words[i % 10]} {words[(i + k) % 10]} on the {words[(i * 3 + k) % 10]}"
                           for k in range(5)] for i in range(n)}
    cands = {CountedId(i): f"a {words[i % 10]} on the {words[(i * 3) % 10]}." for i in range(n)}
    assert evaluate_captions(refs, cands, use_java=False).corpus["CIDEr-D"] > 0


def operations(metric: Callable[[int], None], n: int) -> int:
    CountedId.operations = 0
    metric(n)
    return CountedId.operations


@pytest.mark.parametrize("metric", [vqa, classification, captions], ids=lambda f: f.__name__)
def test_work_on_ids_grows_linearly(metric: Callable[[int], None]) -> None:
    small, large = operations(metric, SMALL), operations(metric, LARGE)
    assert small > 0
    assert large <= 1.1 * (LARGE / SMALL) * small, (small, large)   # quadratic work would be 8x more again
    assert large <= 20 * LARGE, large                                 # a few hash lookups per item
