"""Evaluating a trained image + text classifier on a split (accuracy, macro-F1, confusion matrix PNG) beside its
text-only, image-only and majority-class baselines, and ``vislang evaluate classify``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vislang.errors import VislangError
from vislang.metrics.classification import classification_report, save_confusion_matrix_png
from vislang.tasks.base import TrainedModel, load_trained
from vislang.tasks.classify import predict_classes, prepare_records
from vislang.tasks.common import load_split
from vislang.tasks.image_text import evaluated_modes, image_text_evaluate_command
from vislang.utils.distributed import map_sharded
from vislang.utils.io import atomic_write_json, format_table

SYSTEMS = {"both": "model", "text": "text-only (image blanked)", "image": "image-only (text blanked)"}


@dataclass
class ClassifyEvaluation:
    """Scores of a classifier and its baselines on one split.

    Attributes:
        split: What was evaluated.
        n_samples: Samples scored.
        n_classes: Classes of the model.
        rows: ``{system: {"accuracy": ..., "macro_f1": ...}}``.
        report: The model's full report (per-class scores, confusion matrix) as a dict.
    """

    split: str
    n_samples: int
    n_classes: int
    rows: dict[str, dict[str, float]]
    report: dict[str, Any]

    def headline(self) -> str:
        return f"{self.split}: {self.n_samples} samples, {self.n_classes} classes"

    def table(self) -> str:
        return format_table([[n, r["accuracy"], r["macro_f1"]] for n, r in self.rows.items()],
                            ["system", "accuracy", "macro_f1"])

    @staticmethod
    def written(out: Path) -> str:
        """What :func:`evaluate_classifier_model` wrote to ``out``."""
        return f"scores and confusion matrix (confusion.png) written to {out}"


def evaluate_classifier_model(run: str | os.PathLike, data: str, split: str | None, *, root: str | None = None,
                              image_root: str | None = None, limit: int | None = None, skip_bad: bool = False,
                              baselines: bool = True, batch_size: int = 256, device: str = "auto",
                              out_dir: str | os.PathLike | None = None, trained: TrainedModel | None = None
                              ) -> ClassifyEvaluation:
    """Score a classifier run (``trained``: it already opened with :func:`~vislang.tasks.base.load_trained`) on
    ``data [split]``; writes ``scores.json`` and ``confusion.png`` to ``out_dir``."""
    trained = trained or load_trained(run, "classify", device=device)
    art = trained.artifacts
    space = art.labels
    ds = load_split(data, split, root=root, image_root=image_root, limit=limit, skip_bad=skip_bad)
    records = prepare_records(ds.records, space)
    name = f"{ds.name} [{ds.split}]"
    if not records:
        raise VislangError(f"{name} has no samples of the model's classes in field {space.label_field!r}")
    truth = [r.label for r in records]
    rows: dict[str, dict[str, float]] = {}
    model_report = None
    for mode in evaluated_modes(baselines):
        probs = map_sharded(  # (N, C); under torchrun each rank classifies its part
            lambda part, mode=mode: predict_classes(trained.model, part, art.tokenizer, trained.transform,
                                                    max_len=art.max_len, mode=mode, batch_size=batch_size),
            records, torch.cat)
        pred = [space.classes[i] for i in probs.argmax(dim=1).tolist()]
        rep = classification_report(truth, pred, labels=space.classes)
        rows[SYSTEMS[mode]] = {"accuracy": rep.accuracy, "macro_f1": rep.macro_f1}
        if mode == "both":
            model_report = rep
    if baselines:
        rep = classification_report(truth, [space.majority()] * len(truth), labels=space.classes)
        rows["majority class"] = {"accuracy": rep.accuracy, "macro_f1": rep.macro_f1}
    assert model_report is not None
    ev = ClassifyEvaluation(name, len(records), len(space.classes), rows, model_report.as_dict())
    if out_dir is not None:
        out_dir = Path(out_dir)
        save_confusion_matrix_png(model_report, out_dir / "confusion.png")
        atomic_write_json(out_dir / "scores.json", {"split": name, "n_samples": ev.n_samples, "systems": rows,
                                                    "model": ev.report, "checkpoint": str(trained.folder)})
    return ev


add_evaluate_args, run_evaluate = image_text_evaluate_command(
    "classify", evaluate_classifier_model, data_help="dataset name (emoji, shapes, ...) or manifest with labels",
    image_root_help="folder image names are relative to")
