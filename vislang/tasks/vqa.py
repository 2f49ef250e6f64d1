"""Visual question answering as a task of the shared training loop: soft-target BCE per batch, the official
VQA accuracy (overall and per question type) on the validation split.

Answers are classes: the answer vocabulary holds the training answers seen at least ``min_answer_freq``
times (``answers.json`` beside the checkpoint, with the question-only prior). A question's target is the
soft VQA score of each answer, ``min(1, #humans who gave it / 3)`` (1 for the single answer of generated
data).

Baselines. Besides the model, every evaluation reports

* **question-only**: the same model with the image blanked (all zeros), and the *question prior*: the most
  frequent training answer of the exact question (else of its question type, else overall), the best a blind
  lookup can do;
* **image-only**: the same model with the question blanked (the empty question).

So that the blanked runs are fair, training uses *modality dropout* (``task.modality_dropout``, 0.1 by
default): each training question has its image blanked with that probability and, separately, its question,
so the one model also learns to answer from one modality alone.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from vislang.data.loader import ImageTextSamples, build_loader
from vislang.data.readers import load_format
from vislang.data.records import QA, Record
from vislang.data.text import TextTokenizer
from vislang.data.transforms import TransformConfig
from vislang.errors import DataError, VislangError
from vislang.losses import VQALoss
from vislang.metrics.vqa import evaluate_vqa, normalize_answer
from vislang.models.fusion_model import fusion_model_config
from vislang.tasks.base import TrainData, register_task
from vislang.tasks.common import DataConfig, modality_dropout_masks
from vislang.tasks.image_text import (
    ImageTextArtifacts,
    ImageTextObjective,
    ImageTextRunConfig,
    ImageTextSpec,
    blank,
    blank_modality,
    check_mode,
    evaluating,
    run_fusion,
)
from vislang.utils.io import atomic_write_json
from vislang.utils.tensors import pad_sequences

ANSWERS_FILE = "answers.json"


@dataclass
class VQATaskConfig:
    """VQA options (read by :class:`VQATask` and :class:`VisualQA`).

    Attributes:
        max_len: Longest question in tokens (BOS/EOS included); longer ones are truncated.
        min_freq: Question words seen fewer times in training become ``<unk>`` (vocabulary towers).
        min_answer_freq: Answers given fewer times in training are left out of the answer vocabulary.
        modality_dropout: Probability of blanking a training question's image, and separately its question.
        group_by_image: Training samples are images with all their questions (``train.batch_size`` counts
            images): each image goes through the image encoder once for its ~10 questions, several times
            faster on CPU than one sample per question. False: one sample per question.
        val_batch_size: Questions per validation batch.
        metadata_questions: Records without questions get questions made from their emoji metadata (group,
            skin tone, gender, which flag), so ``--data emoji`` trains a VQA model.
    """

    max_len: int = 24
    min_freq: int = 1
    min_answer_freq: int = 1
    modality_dropout: float = 0.1
    group_by_image: bool = True
    val_batch_size: int = 256
    metadata_questions: bool = True


def with_metadata_questions(records: Sequence[Record]) -> list[Record]:
    """Records, where those without questions get questions from their emoji metadata (group, skin tone,
    gender, which flag: :func:`vislang.data.datasets.emoji.metadata_questions`)."""
    from vislang.data.datasets.emoji import metadata_questions

    return [r if r.qa else Record(r.id, r.image, r.captions, r.label, metadata_questions(r), r.meta)
            for r in records]


class ImageQuestions(Dataset):
    """Training samples that are images with all their questions: ``image`` ``(3, H, W)``, ``index``,
    ``questions`` (a list of 1-D token tensors) and ``answers`` (a list of answer lists).

    Args:
        records: Records with questions.
        transform: PIL image -> tensor.
        tokenizer: Question tokenizer.
        max_len: Longest question in tokens.
        skip_bad: Leave out images that fail to decode instead of raising.
    """

    def __init__(self, records: Sequence[Record], transform: Callable[[Any], Tensor], tokenizer: TextTokenizer,
                 max_len: int, skip_bad: bool = False):
        self.records = [r for r in records if r.qa]
        self.images = ImageTextSamples(self.records, transform, unit="image", skip_bad=skip_bad)
        self.questions = [[torch.tensor(tokenizer.encode(q.question, max_len=max_len)) for q in r.qa]
                          for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | None:
        sample = self.images[key]
        if sample is None:
            return None
        i = sample["index"]
        return {"image": sample["image"], "index": i, "questions": self.questions[i],
                "answers": [list(q.answers) for q in self.records[i].qa]}


def flatten_questions(batch: dict[str, Any], pad_id: int) -> tuple[Tensor, Tensor, Tensor, list[list[str]]]:
    """The questions of an :class:`ImageQuestions` batch as ``(tokens (Q, L), lengths (Q,), image_index (Q,),
    answers)``."""
    questions = [q for qs in batch["questions"] for q in qs]
    image_index = torch.tensor([b for b, qs in enumerate(batch["questions"]) for _ in qs])    # (Q,)
    tokens, lengths = pad_sequences(questions, pad_id)                                      # (Q, L), (Q,)
    return tokens, lengths, image_index, [a for answers in batch["answers"] for a in answers]


class AnswerVocab:
    """The answers a VQA model chooses from, their soft targets and the question-only prior.

    Args:
        answers: Answer strings (normalised as the VQA evaluation compares them), in class order.
        prior: ``{"question": {question: answer}, "type": {question type: answer}, "all": answer}``.
    """

    file = ANSWERS_FILE  # its name in a model folder

    def __init__(self, answers: Sequence[str], prior: dict[str, Any] | None = None):
        if not answers:
            raise VislangError("the answer vocabulary is empty: no training question has an answer")
        self.answers = list(answers)
        self.index = {a: i for i, a in enumerate(self.answers)}
        self.prior = prior or {"question": {}, "type": {}, "all": self.answers[0]}

    def __len__(self) -> int:
        return len(self.answers)

    @classmethod
    def build(cls, questions: Sequence[QA], min_freq: int = 1) -> AnswerVocab:
        """Answers given at least ``min_freq`` times (most frequent first), with the prior of ``questions``."""
        counts = Counter(normalize_answer(a) for q in questions for a in q.answers)
        answers = sorted((a for a, c in counts.items() if c >= min_freq), key=lambda a: (-counts[a], a))
        by_question: dict[str, Counter] = {}
        by_type: dict[str, Counter] = {}
        for q in questions:
            for a in q.answers:
                by_question.setdefault(_question_key(q.question), Counter())[normalize_answer(a)] += 1
                by_type.setdefault(q.question_type, Counter())[normalize_answer(a)] += 1
        prior = {"question": {k: _top(c) for k, c in by_question.items()},
                 "type": {k: _top(c) for k, c in by_type.items()},
                 "all": answers[0] if answers else ""}
        return cls(answers, prior)

    def targets(self, answer_lists: Sequence[Sequence[str]]) -> Tensor:
        """Soft targets ``(B, A)``: ``min(1, count / 3)`` per answer; a single answer scores 1."""
        out = torch.zeros(len(answer_lists), len(self.answers))
        for row, answers in enumerate(answer_lists):
            counts = Counter(normalize_answer(a) for a in answers)
            for a, c in counts.items():
                if a in self.index:
                    out[row, self.index[a]] = 1.0 if len(answers) == 1 else min(1.0, c / 3)
        return out

    def prior_answer(self, qa: QA) -> str:
        """The question-only prior's answer to ``qa``."""
        return (self.prior["question"].get(_question_key(qa.question))
                or self.prior["type"].get(qa.question_type) or self.prior["all"])

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, {"format": "vislang-answers", "version": 1, "answers": self.answers,
                                 "prior": self.prior})

    @classmethod
    def load(cls, path: str | os.PathLike) -> AnswerVocab:
        data = load_format(path, "vislang-answers", "not a vislang answer vocabulary")
        answers = data.get("answers")
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise DataError("must be a list of strings", path=str(path), field="answers")
        return cls(answers, data.get("prior"))


def _question_key(question: str) -> str:
    return " ".join(question.lower().replace("?", " ").split())


def _top(counter: Counter) -> str:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


# ------------------------------------------------------------------------------------------- predicting


@dataclass
class Predictions:
    """Answers of a model to a list of questions.

    Attributes:
        answers: Top answer per question.
        scores: ``(Q, A)`` answer probabilities (sigmoids of the logits), CPU float32.
        attention: ``(Q, N)`` attention over the image regions, or None.
        grid_hw: ``(h, w)`` of the image grid.
    """

    answers: list[str]
    scores: Tensor
    attention: Tensor | None
    grid_hw: tuple[int, int]


@torch.no_grad()
def predict_records(model: nn.Module, records: Sequence[Record], tokenizer: TextTokenizer, answers: AnswerVocab,
                    transform: Callable[[Any], Tensor], *, max_len: int = 24, mode: str = "both",
                    batch_size: int = 256) -> tuple[list[QA], Predictions]:
    """Answer every question of ``records`` (each image encoded once for all its questions, about
    ``batch_size`` questions per batch); ``mode`` ``"text"`` blanks the images (question-only), ``"image"``
    blanks the questions (image-only).

    Returns:
        The questions, in record order, and the predictions, in the same order.
    """
    check_mode(mode)
    samples = ImageQuestions(records, transform, tokenizer, max_len)
    per_image = max(1, round(sum(len(r.qa) for r in samples.records) / max(1, len(samples.records))))
    loader = build_loader(samples, max(1, batch_size // per_image), pad_id=tokenizer.pad_id)
    scores, attention, grid_hw = [], [], (1, 1)
    with evaluating(model):
        for batch in loader:
            tokens, lengths, image_index, _ = flatten_questions(batch, tokenizer.pad_id)
            out = run_fusion(model, *blank_modality(mode, tokenizer, batch["image"], tokens, lengths), image_index)
            scores.append(out.logits.float().sigmoid().cpu())                         # (Q, A)
            if out.attention is not None:
                attention.append(out.attention.float().cpu())                         # (Q, N)
            grid_hw = out.grid_hw
    qas = [q for r in samples.records for q in r.qa]
    all_scores = torch.cat(scores) if scores else torch.zeros(0, len(answers))
    top = all_scores.argmax(dim=1).tolist() if len(all_scores) else []
    return qas, Predictions([answers.answers[k] for k in top], all_scores,
                            torch.cat(attention) if attention else None, grid_hw)


def with_question_ids(records: Sequence[Record]) -> list[Record]:
    """Records whose questions all have ids (``<record id>-q<k>`` where missing), for scoring."""
    out = []
    for r in records:
        if all(q.question_id is not None for q in r.qa):
            out.append(r)
            continue
        qa = [q if q.question_id is not None else QA(q.question, q.answers, q.question_type, q.answer_type,
                                                       f"{r.id}-q{k}") for k, q in enumerate(r.qa)]
        out.append(Record(r.id, r.image, r.captions, r.label, qa, r.meta))
    return out


def vqa_metrics(qas: Sequence[QA], predicted: Sequence[str]) -> dict[str, float]:
    """``{"accuracy": overall, "acc_<question type>": ...}`` by the official VQA metric."""
    scores = evaluate_vqa(qas, {q.question_id: p for q, p in zip(qas, predicted)})
    out = {"accuracy": scores.overall}
    out.update({f"acc_{t or 'untyped'}": v for t, v in sorted(scores.per_question_type.items())})
    return out


# ------------------------------------------------------------------------------------------------ task


class VQATask(ImageTextObjective):
    """Batch -> soft-target BCE (with modality dropout); validation -> VQA accuracy per question type
    (``labels``: the :class:`AnswerVocab`)."""

    config_type = VQATaskConfig

    def validation_records(self, records: Sequence[Record]) -> list[Record]:
        return with_question_ids(records)  # every question needs an id to be scored

    def build_loss(self) -> VQALoss:
        return VQALoss()

    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        images = batch["image"]                                                        # (B, 3, H, W)
        if "questions" in batch:                                 # ImageQuestions: images with all their questions
            tokens, lengths, image_index, answers = flatten_questions(batch, self.tokenizer.pad_id)
            tokens, lengths, image_index = (t.to(images.device) for t in (tokens, lengths, image_index))
        else:
            tokens, lengths, answers = batch["question_tokens"], batch["question_tokens_lengths"], batch["answers"]
            image_index = torch.arange(len(images), device=images.device)
        blank_image, blank_text = modality_dropout_masks(len(tokens), self.cfg.modality_dropout, images.device)
        _, tokens, lengths = blank(self.tokenizer, images[:0], tokens, lengths, blank_text=blank_text)
        if blank_image is not None and bool(blank_image.any()):  # those questions see an extra, blank image
            images = torch.cat([images, images.new_zeros(1, *images.shape[1:])])
            image_index = torch.where(blank_image, len(images) - 1, image_index)
        out = run_fusion(model, images, tokens, lengths, image_index)
        targets = self.labels.targets(answers).to(out.logits.device)                 # (Q, A)
        return {**self.loss(out.logits, targets), "count": len(targets)}  # a mean over questions

    def validate(self, model: nn.Module) -> dict[str, float]:
        return self.score_val(self.val_records, self.predict_val(model, self.val_records))

    def predict_val(self, model: nn.Module, records: Sequence[Record]) -> list[str]:
        """The answer to each question of the records, in record order (under torchrun each rank answers a
        part)."""
        if not records:
            return []
        _, pred = predict_records(model, records, self.tokenizer, self.labels, self.eval_transform,
                                  max_len=self.cfg.max_len, batch_size=self.cfg.val_batch_size)
        return pred.answers

    def score_val(self, records: Sequence[Record], answers: list[str]) -> dict[str, float]:
        """VQA accuracy (and per question type) of ``answers`` to the records' questions."""
        if not records:
            return {}
        return vqa_metrics([q for r in records for q in r.qa], answers)


# ------------------------------------------------------------------------------------------- training


@dataclass
class VQARunConfig(ImageTextRunConfig):
    """Everything a VQA run needs; saved as ``config.yaml`` in the run directory.

    Attributes:
        model: Registered fusion model (``vqa``, ``vqa_tiny``, ``vqa_minilm``).
        data: Data section (``shapes``, a manifest with questions, a VQA v2 questions JSON); augmentation is
            off by default: a random crop can cut an object out and change the answer.
        task: VQA options.

    The other fields are :class:`~vislang.tasks.image_text.ImageTextRunConfig`'s.
    """

    model: str = "vqa"
    data: DataConfig = field(default_factory=lambda: DataConfig(name="shapes",
                                                                transform=TransformConfig(augment=False)))
    task: VQATaskConfig = field(default_factory=VQATaskConfig)


@register_task("vqa")
class VisualQA(ImageTextSpec):
    """Visual question answering (image + question -> answer, soft VQA targets)."""

    config = VQARunConfig
    help = "visual question answering (image + question -> answer, soft VQA targets)"
    monitor_label = "VQA accuracy"
    predictor = "vislang.inference.vqa:VQAPredictor"
    evaluation = "vislang.tasks.vqa_eval"
    evaluate_help = "score a trained VQA run on a split beside question-only and image-only baselines"
    evaluate_description = ("Answer every question of a split with a run's best checkpoint and score the answers "
                            "with the official VQA accuracy, overall and per question type, beside the "
                            "question-only (image blanked; and the train-majority answer per question) and "
                            "image-only (question blanked) baselines.")
    labels_type = AnswerVocab

    def open_data(self, cfg: VQARunConfig) -> TrainData:
        data = super().open_data(cfg)
        train = self._asked(cfg, data.train)
        if not train:
            raise VislangError(f"{cfg.data.name} [{cfg.data.train_split}] has no questions to train a VQA model on")
        questions = [q for r in train for q in r.qa]
        no_answer = sum(not q.answers for q in questions)
        if no_answer:
            raise VislangError(f"{no_answer} of {len(questions)} training questions have no answer; VQA training "
                               "needs answers (VQA v2: give the annotations file beside the questions)")
        return TrainData(train, data.val)

    def open_val(self, cfg: VQARunConfig, split: str) -> list[Record]:
        return self._asked(cfg, super().open_val(cfg, split))

    @staticmethod
    def _asked(cfg: VQARunConfig, records: list[Record]) -> list[Record]:
        """The records with questions (made from their metadata with ``task.metadata_questions``)."""
        questions_of = with_metadata_questions if cfg.task.metadata_questions else list
        return [r for r in questions_of(records) if r.qa]

    def prepare(self, cfg: VQARunConfig, data: TrainData, reuse: Path | None) -> ImageTextArtifacts:
        questions = [q for r in data.train for q in r.qa]
        answers = self.reuse_labels(reuse)
        if answers is None:
            answers = AnswerVocab.build(questions, cfg.task.min_answer_freq)
        return self.text_side(cfg, answers, lambda: [q.question for q in questions], reuse)

    def samples(self, cfg: VQARunConfig, data: TrainData, artifacts: ImageTextArtifacts, transform) -> Dataset:
        if cfg.task.group_by_image:
            return ImageQuestions(data.train, transform, artifacts.tokenizer, cfg.task.max_len,
                                  skip_bad=cfg.data.skip_bad)
        return ImageTextSamples(data.train, transform, unit="qa", tokenizer=artifacts.tokenizer,
                                max_len=cfg.task.max_len, skip_bad=cfg.data.skip_bad)

    def objective(self, cfg: VQARunConfig, model: nn.Module, data: TrainData, artifacts: ImageTextArtifacts,
                  transform) -> VQATask:
        task = VQATask(artifacts.tokenizer, artifacts.labels, data.val, transform, cfg.task)
        options = artifacts.options
        print(f"vqa: {sum(len(r.qa) for r in data.train)} training questions on {len(data.train)} images, "
              f"{len(artifacts.labels)} answers, fusion {options.get('fusion') or fusion_model_config(cfg.model).fusion}"
              f", text {options['text_encoder']}", file=sys.stderr)
        return task
