"""Classification metrics on a hand-worked example, and the confusion-matrix PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vislang.errors import DataError
from vislang.metrics import classification_report, save_confusion_matrix_png

Y_TRUE = ["cat", "cat", "cat", "dog", "dog", "bird"]
Y_PRED = ["cat", "cat", "dog", "dog", "cat", "cat"]


def test_hand_worked_report() -> None:
    report = classification_report(Y_TRUE, Y_PRED)
    assert report.labels == ["bird", "cat", "dog"]
    assert report.confusion.tolist() == [[0, 1, 0], [0, 2, 1], [0, 1, 1]]
    assert report.accuracy == pytest.approx(3 / 6)
    cat, dog, bird = report.per_class["cat"], report.per_class["dog"], report.per_class["bird"]
    assert (cat.precision, cat.recall, cat.support) == (pytest.approx(2 / 4), pytest.approx(2 / 3), 3)
    assert cat.f1 == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    assert (dog.precision, dog.recall) == (pytest.approx(1 / 2), pytest.approx(1 / 2))
    assert (bird.precision, bird.recall, bird.f1) == (0.0, 0.0, 0.0)  # never predicted: 0, not an error
    assert report.macro_f1 == pytest.approx((cat.f1 + dog.f1 + 0.0) / 3)
    assert report.micro_f1 == pytest.approx(report.accuracy)


def test_explicit_labels_keep_unseen_classes() -> None:
    report = classification_report(["a", "b"], ["a", "b"], labels=["b", "a", "c"])
    assert report.confusion.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert report.macro_f1 == pytest.approx(2 / 3)


def test_png(tmp_path: Path) -> None:
    report = classification_report(Y_TRUE, Y_PRED)
    path = save_confusion_matrix_png(report, tmp_path / "confusion.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        pixels = np.asarray(image)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 5  # shaded cells and text, not a blank image


def test_png_many_classes(tmp_path: Path) -> None:
    labels = [f"class {i}" for i in range(120)]
    report = classification_report(labels, labels[1:] + labels[:1])
    save_confusion_matrix_png(report, tmp_path / "big.png")
    with Image.open(tmp_path / "big.png") as image:
        assert image.width < 3000


@pytest.mark.parametrize(("y_true", "y_pred", "labels", "message"), [
    (["a"], ["a", "b"], None, "1 true labels but 2 predictions"),
    ([], [], None, "no samples"),
    (["a", "z"], ["a", "a"], ["a", "b"], "sample 1: field 'y_true': label 'z' is not among the 2 classes"),
])
def test_errors(y_true, y_pred, labels, message: str) -> None:
    with pytest.raises(DataError, match=message):
        classification_report(y_true, y_pred, labels)
