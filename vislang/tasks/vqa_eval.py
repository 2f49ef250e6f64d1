"""Loading a trained VQA run, answering questions about image files, and evaluating a run on a split beside
its question-only and image-only baselines (see :mod:`vislang.tasks.vqa` for how those are made)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from vislang.captioner import task_checkpoint
from vislang.data.images import load_image
from vislang.data.records import QA, Record
from vislang.data.text import TextTokenizer, Vocabulary, tokenize
from vislang.data.transforms import TransformConfig, build_transform
from vislang.errors import VislangError
from vislang.metrics.vqa import evaluate_vqa
from vislang.models.text_encoders import saved_tokenizer
from vislang.tasks.common import load_split
from vislang.tasks.vqa import (
    ANSWERS_FILE,
    AnswerVocab,
    predict_records,
    with_metadata_questions,
    with_question_ids,
)
from vislang.train.checkpoint import load_model
from vislang.train.loop import resolve_device
from vislang.utils.io import atomic_write_json, format_table


@dataclass
class Answer:
    """One answered question.

    Attributes:
        question: The question as asked.
        answer: The top answer.
        confidence: Its probability (sigmoid of its logit).
        top: The ``k`` best ``(answer, probability)`` pairs.
        attention: ``(h, w)`` attention over the image regions (attending fusions), else None.
        notes: What was done to the question (truncated, unknown words).
    """

    question: str
    answer: str
    confidence: float
    top: list[tuple[str, float]]
    attention: Tensor | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer, "confidence": round(self.confidence, 4),
                "top": [{"answer": a, "p": round(p, 4)} for a, p in self.top], "notes": self.notes}


class VQAModelRun:
    """A trained VQA model with its tokenizer, answer vocabulary and image preprocessing."""

    def __init__(self, model: nn.Module, tokenizer: TextTokenizer, answers: AnswerVocab,
                 transform_cfg: TransformConfig, max_len: int, checkpoint: Path):
        self.model, self.tokenizer, self.answers = model.eval(), tokenizer, answers
        self.transform_cfg, self.max_len, self.checkpoint = transform_cfg, max_len, checkpoint
        self.transform = build_transform(transform_cfg, train=False)

    @classmethod
    def load(cls, run: str | os.PathLike, checkpoint: str = "best", device: str = "auto") -> VQAModelRun:
        ckpt, spec = task_checkpoint(run, checkpoint, "vqa", "a VQA")
        model = load_model(ckpt, resolve_device(device))
        return cls(model, saved_tokenizer(ckpt, spec), AnswerVocab.load(ckpt / ANSWERS_FILE),
                   TransformConfig.from_dict(spec["transform"]),
                   int(spec.get("max_len", 24)), ckpt)

    def check_question(self, question: str) -> list[str]:
        """Notes on a question (truncation, unknown words); raises on an empty one."""
        if not isinstance(question, str) or not question.strip() or not tokenize(question):
            raise VislangError(f"the question {question!r} is empty (no words); ask e.g. \"what color is the "
                               "circle?\"")
        notes = []
        n = len(self.tokenizer.encode(question))
        if n > self.max_len:
            notes.append(f"question truncated to its first {self.max_len - 2} tokens (of {n - 2}); the model "
                         f"was trained on questions of at most {self.max_len} tokens")
        if isinstance(self.tokenizer, Vocabulary):
            unknown = [w for w in tokenize(question) if w not in self.tokenizer]
            if unknown:
                notes.append(f"unknown words read as <unk>: {', '.join(dict.fromkeys(unknown))}")
        return notes

    def ask(self, image: str | os.PathLike | Image.Image, questions: Sequence[str], k: int = 5) -> list[Answer]:
        """Answer ``questions`` about one image (a path or a PIL image)."""
        im = image if isinstance(image, Image.Image) else load_image(image)
        notes = [self.check_question(q) for q in questions]
        rec = Record("query", "", qa=[QA(q, ["?"], question_id=i) for i, q in enumerate(questions)])
        x = self.transform(im.convert("RGB"))
        device = next(self.model.parameters()).device
        ids = [self.tokenizer.encode(q, max_len=self.max_len) for q in questions]
        lengths = torch.tensor([len(i) for i in ids])
        tokens = torch.full((len(ids), int(lengths.max())), self.tokenizer.pad_id, dtype=torch.long)
        for row, i in enumerate(ids):
            tokens[row, :len(i)] = torch.tensor(i)
        mask = (torch.arange(tokens.shape[1])[None, :] < lengths[:, None]).long()
        with torch.no_grad():                                   # one image, encoded once for every question
            out = self.model(x.unsqueeze(0).to(device), tokens.to(device), mask.to(device),
                             torch.zeros(len(ids), dtype=torch.long, device=device))
        probs = out.logits.float().sigmoid().cpu()
        answers = []
        for row, q in enumerate(rec.qa):
            p, idx = probs[row].topk(min(k, probs.shape[1]))
            top = [(self.answers.answers[i], float(v)) for v, i in zip(p.tolist(), idx.tolist())]
            att = out.attention[row].float().cpu().view(*out.grid_hw) if out.attention is not None else None
            answers.append(Answer(q.question, top[0][0], top[0][1], top, att, notes[row]))
        return answers


# ----------------------------------------------------------------------------------------------- evaluate


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

    def question_types(self) -> list[str]:
        return sorted({t for r in self.rows.values() for t in r if t != "overall"})

    def table(self) -> str:
        types = self.question_types()
        rows = [[name, r["overall"], *[r.get(t, float("nan")) for t in types]] for name, r in self.rows.items()]
        return format_table(rows, ["system", "overall", *types])

    def to_json(self) -> dict[str, Any]:
        return {"split": self.split, "n_questions": self.n_questions, "accuracy": self.rows,
                "per_answer_type": self.per_answer_type}


SYSTEMS = {"both": "model", "text": "question-only (image blanked)", "image": "image-only (question blanked)"}


def evaluate_vqa_run(vqa: VQAModelRun, records: Sequence[Record], split: str, *, batch_size: int = 256,
                     baselines: bool = True) -> VQAEvaluation:
    """Score ``vqa`` on the questions of ``records`` with the official metric, beside the baselines."""
    records = with_question_ids([r for r in records if r.qa])
    if not records:
        raise VislangError(f"{split} has no questions to evaluate")
    no_answer = sum(not q.answers for r in records for q in r.qa)
    if no_answer:
        raise VislangError(f"{split}: {no_answer} questions have no answers to score against")
    rows: dict[str, dict[str, float]] = {}
    per_answer: dict[str, dict[str, float]] = {}
    qas: list[QA] = []
    for mode in ("both", "text", "image") if baselines else ("both",):
        qas, pred = predict_records(vqa.model, records, vqa.tokenizer, vqa.answers, vqa.transform,
                                    max_len=vqa.max_len, mode=mode, batch_size=batch_size)
        scores = evaluate_vqa(qas, {q.question_id: a for q, a in zip(qas, pred.answers)})
        rows[SYSTEMS[mode]] = {"overall": scores.overall, **scores.per_question_type}
        per_answer[SYSTEMS[mode]] = scores.per_answer_type
    if baselines:
        scores = evaluate_vqa(qas, {q.question_id: vqa.answers.prior_answer(q) for q in qas})
        rows["question prior (train majority)"] = {"overall": scores.overall, **scores.per_question_type}
        per_answer["question prior (train majority)"] = scores.per_answer_type
    return VQAEvaluation(split, len(qas), rows, per_answer)


def evaluate_vqa_model(run: str | os.PathLike, data: str, split: str | None, *, root: str | None = None,
                       image_root: str | None = None, limit: int | None = None, skip_bad: bool = False,
                       baselines: bool = True, batch_size: int = 256, device: str = "auto",
                       out_dir: str | os.PathLike | None = None) -> VQAEvaluation:
    """Load a run, score it on ``data [split]``, write ``scores.json`` to ``out_dir``."""
    vqa = VQAModelRun.load(run, device=device)
    ds = load_split(data, split, root=root, image_root=image_root, limit=limit, skip_bad=skip_bad)
    ev = evaluate_vqa_run(vqa, with_metadata_questions(ds.records), f"{ds.name} [{ds.split}]",
                          batch_size=batch_size, baselines=baselines)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "scores.json", {**ev.to_json(), "checkpoint": str(vqa.checkpoint)})
    return ev
