"""Classification metrics: accuracy, macro and micro F1, per-class precision and recall, confusion matrix.

Precision, recall and F1 of a class that is never predicted (or never true) are 0, as scikit-learn reports
them by default. For single-label classification over all classes, micro F1 equals accuracy. The confusion
matrix can be drawn to a PNG with Pillow (rows: true class, columns: predicted class).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vislang.errors import DataError
from vislang.utils.io import atomic_save_image


@dataclass(frozen=True)
class ClassMetrics:
    """Scores of one class."""

    precision: float
    recall: float
    f1: float
    support: int  # number of samples of the class


@dataclass(frozen=True)
class ClassificationReport:
    """Metrics of a set of predictions.

    Attributes:
        labels: Class labels, in the order of the confusion matrix.
        confusion: ``confusion[i, j]`` counts samples of class ``labels[i]`` predicted as ``labels[j]``.
        accuracy: Fraction of correct predictions.
        macro_f1: Mean F1 over the classes.
        micro_f1: F1 of the pooled counts.
        per_class: Precision, recall, F1 and support of each class.
    """

    labels: list[Hashable]
    confusion: np.ndarray  # [C, C] int64
    accuracy: float
    macro_f1: float
    micro_f1: float
    per_class: dict[Hashable, ClassMetrics]

    def as_dict(self) -> dict:
        """JSON-serialisable summary."""
        return {
            "accuracy": self.accuracy, "macro_f1": self.macro_f1, "micro_f1": self.micro_f1,
            "labels": [str(label) for label in self.labels],
            "confusion": self.confusion.tolist(),
            "per_class": {str(label): vars(m) for label, m in self.per_class.items()},
        }


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(num.shape, dtype=np.float64), where=den > 0)


def classification_report(y_true: Sequence[Hashable], y_pred: Sequence[Hashable],
                          labels: Sequence[Hashable] | None = None) -> ClassificationReport:
    """Compute the metrics of predictions ``y_pred`` against ``y_true``.

    Args:
        y_true: True label of each sample.
        y_pred: Predicted label of each sample.
        labels: All classes, in display order; default: the sorted union of true and predicted labels.

    Raises:
        DataError: lengths differ, there is no sample, or a label is not among ``labels``.
    """
    if len(y_true) != len(y_pred):
        raise DataError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if not len(y_true):
        raise DataError("no samples to score")
    if labels is None:
        labels = sorted(set(y_true) | set(y_pred), key=str)
    labels = list(labels)
    index = {label: i for i, label in enumerate(labels)}
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        unknown = [(i, v) for i, v in enumerate(values) if v not in index]
        if unknown:
            i, v = unknown[0]
            raise DataError(f"label {v!r} is not among the {len(labels)} classes ({len(unknown)} such samples)",
                            where=f"sample {i}", field=name)
    true_idx = np.fromiter((index[v] for v in y_true), dtype=np.int64, count=len(y_true))
    pred_idx = np.fromiter((index[v] for v in y_pred), dtype=np.int64, count=len(y_pred))
    num_classes = len(labels)
    confusion = np.bincount(true_idx * num_classes + pred_idx, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)

    tp = np.diag(confusion).astype(np.float64)  # [C]
    predicted = confusion.sum(axis=0).astype(np.float64)  # [C]
    support = confusion.sum(axis=1)  # [C]
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support.astype(np.float64))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    total_tp, total = tp.sum(), float(len(y_true))
    micro_precision = total_tp / predicted.sum() if predicted.sum() else 0.0
    micro_recall = total_tp / total
    micro_f1 = (2 * micro_precision * micro_recall / (micro_precision + micro_recall)
                if micro_precision + micro_recall else 0.0)
    per_class = {label: ClassMetrics(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
                 for i, label in enumerate(labels)}
    return ClassificationReport(labels=labels, confusion=confusion, accuracy=float(total_tp / total),
                                macro_f1=float(f1.mean()), micro_f1=float(micro_f1), per_class=per_class)


# ---------------------------------------------------------------------------------------------------
# Drawing the confusion matrix.

_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)
_LIGHT_TEXT = (255, 255, 255)


def _shade(fraction: float) -> tuple[int, int, int]:
    """White to dark blue."""
    low, high = np.array([247, 251, 255]), np.array([8, 48, 107])
    return tuple(int(round(v)) for v in low + (high - low) * fraction)


def _short(label: Hashable, limit: int) -> str:
    text = str(label)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def confusion_matrix_image(report: ClassificationReport, cell: int | None = None) -> Image.Image:
    """The confusion matrix drawn as an RGB image: cells shaded by row-normalised counts, counts written in.

    Args:
        report: The metrics to draw.
        cell: Cell size in pixels (default: from 12 to 48 depending on the number of classes).
    """
    n = len(report.labels)
    cell = cell or int(np.clip(900 // max(n, 1), 12, 48))
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    names = [_short(label, 24) for label in report.labels]
    name_width = int(max(measure.textlength(name, font=font) for name in names)) + 12  # room for class names
    title = f"Confusion matrix (rows: true, columns: predicted), accuracy {report.accuracy:.3f}"
    title_height, pad = 24, 8
    top, left = title_height + name_width, name_width
    width = max(left + n * cell + pad, int(measure.textlength(title, font=font)) + 2 * pad)
    image = Image.new("RGB", (width, top + n * cell + pad), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((pad, 6), title, fill=_TEXT, font=font)

    row_totals = np.broadcast_to(report.confusion.sum(axis=1, keepdims=True), report.confusion.shape)
    normalized = _safe_divide(report.confusion.astype(np.float64), row_totals)  # [C, C] fraction of the row
    write_counts = cell >= 20
    for i in range(n):
        for j in range(n):
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_shade(normalized[i, j]),
                           outline=(200, 200, 200))
            if write_counts and report.confusion[i, j]:
                text = str(int(report.confusion[i, j]))
                color = _LIGHT_TEXT if normalized[i, j] > 0.5 else _TEXT
                draw.text((x0 + cell / 2, y0 + cell / 2), text, fill=color, font=font, anchor="mm")
    for i, name in enumerate(names):  # row names, right-aligned against the matrix
        draw.text((left - 6, top + i * cell + cell / 2), name, fill=_TEXT, font=font, anchor="rm")
    # Column names read upwards: draw them on a strip, rotate it and place it above the matrix.
    strip = Image.new("RGB", (name_width, n * cell), _BACKGROUND)
    strip_draw = ImageDraw.Draw(strip)
    for j, name in enumerate(names):
        strip_draw.text((6, j * cell + cell / 2), name, fill=_TEXT, font=font, anchor="lm")
    image.paste(strip.rotate(90, expand=True), (left, title_height))
    return image


def save_confusion_matrix_png(report: ClassificationReport, path: str | Path, cell: int | None = None) -> Path:
    """Draw the confusion matrix and write it to ``path`` (PNG, atomically)."""
    path = Path(path)
    atomic_save_image(path, confusion_matrix_image(report, cell), format="PNG")
    return path
