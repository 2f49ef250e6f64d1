"""Evaluating a trained VQA model on a split beside its question-only and image-only baselines (see
:mod:`vislang.tasks.vqa` for how those are made), and ``vislang evaluate vqa``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vislang.data.records import QA, Record
from vislang.errors import VislangError
from vislang.metrics.vqa import evaluate_vqa
from vislang.tasks.base import TrainedModel, load_trained
from vislang.tasks.common import load_split
from vislang.tasks.image_text import evaluated_modes, image_text_evaluate_command
from vislang.tasks.vqa import predict_records, with_metadata_questions, with_question_ids
from vislang.utils.distributed import map_sharded
from vislang.utils.io import atomic_write_json, format_table


@dataclass
class VQAEvaluation:
    """Official VQA accuracy of a run and its baselines on one split.

    Attributes:
        split: What was evaluated.
        n_questions: Questions scored.
        rows: ``{system: {"overall": acc, "<question type>": acc, ...}}``; systems are ``model``,
            ``question-only (image blanked)``, ``image-only (question blanked)`` and ``question prior``.
        per_answer_type: ``{system: {answer type: acc}}``.
    """

    split: str
    n_questions: int
    rows: dict[str, dict[str, float]]
    per_answer_type: dict[str, dict[str, float]]

    def headline(self) -> str:
        return f"{self.split}: {self.n_questions} questions; official VQA accuracy"

    def question_types(self) -> list[str]:
        return sorted({t for r in self.rows.values() for t in r if t != "overall"})

    def table(self) -> str:
        types = self.question_types()
        rows = [[name, r["overall"], *[r.get(t, float("nan")) for t in types]] for name, r in self.rows.items()]
        return format_table(rows, ["system", "overall", *types])

    def to_json(self) -> dict[str, Any]:
        return {"split": self.split, "n_questions": self.n_questions, "accuracy": self.rows,
                "per_answer_type": self.per_answer_type}

    @staticmethod
    def written(out: Path) -> str:
        """What :func:`evaluate_vqa_model` wrote to ``out``."""
        return f"scores written to {out / 'scores.json'}"


SYSTEMS = {"both": "model", "text": "question-only (image blanked)", "image": "image-only (question blanked)"}
PRIOR = "question prior (train majority)"


def evaluate_vqa_run(trained: TrainedModel, records: Sequence[Record], split: str, *, batch_size: int = 256,
                     baselines: bool = True) -> VQAEvaluation:
    """Score a VQA model (opened with :func:`~vislang.tasks.base.load_trained`) on the questions of
    ``records`` with the official metric, beside the baselines."""
    records = with_question_ids([r for r in records if r.qa])
    if not records:
        raise VislangError(f"{split} has no questions to evaluate")
    no_answer = sum(not q.answers for r in records for q in r.qa)
    if no_answer:
        raise VislangError(f"{split}: {no_answer} questions have no answers to score against")
    art = trained.artifacts
    rows: dict[str, dict[str, float]] = {}
    per_answer: dict[str, dict[str, float]] = {}
    qas: list[QA] = []
    for mode in evaluated_modes(baselines):
        def answer(part: list[Record], mode: str = mode) -> list[tuple[QA, str]]:
            qas, pred = predict_records(trained.model, part, art.tokenizer, art.labels, trained.transform,
                                        max_len=art.max_len, mode=mode, batch_size=batch_size)
            return list(zip(qas, pred.answers))

        answered = map_sharded(answer, records)  # under torchrun each rank answers its part of the images
        qas = [q for q, _ in answered]
        scores = evaluate_vqa(qas, {q.question_id: a for q, a in answered})
        rows[SYSTEMS[mode]] = {"overall": scores.overall, **scores.per_question_type}
        per_answer[SYSTEMS[mode]] = scores.per_answer_type
    if baselines:
        scores = evaluate_vqa(qas, {q.question_id: art.labels.prior_answer(q) for q in qas})
        rows[PRIOR] = {"overall": scores.overall, **scores.per_question_type}
        per_answer[PRIOR] = scores.per_answer_type
    return VQAEvaluation(split, len(qas), rows, per_answer)


def evaluate_vqa_model(run: str | os.PathLike, data: str, split: str | None, *, root: str | None = None,
                       image_root: str | None = None, limit: int | None = None, skip_bad: bool = False,
                       baselines: bool = True, batch_size: int = 256, device: str = "auto",
                       out_dir: str | os.PathLike | None = None, trained: TrainedModel | None = None
                       ) -> VQAEvaluation:
    """Score a run (``trained``: it already opened) on ``data [split]``, write ``scores.json`` to ``out_dir``."""
    trained = trained or load_trained(run, "vqa", device=device)
    ds = load_split(data, split, root=root, image_root=image_root, limit=limit, skip_bad=skip_bad)
    ev = evaluate_vqa_run(trained, with_metadata_questions(ds.records), f"{ds.name} [{ds.split}]",
                          batch_size=batch_size, baselines=baselines)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "scores.json", {**ev.to_json(), "checkpoint": str(trained.folder)})
    return ev


add_evaluate_args, run_evaluate = image_text_evaluate_command(
    "vqa", evaluate_vqa_model, data_help="dataset name (shapes, ...), manifest or VQA v2 questions JSON",
    image_root_help="folder image names in VQA / COCO files are relative to")
