"""Image + text classification as a task of the shared training loop (evaluation: :mod:`vislang.tasks.classify_eval`).

Each record gives an image, a text and a class: by default the class is the record's ``label`` (the emoji
group, the shapes scene class, a manifest's ``label``; ``task.label_field`` picks another field such as the
emoji ``subgroup``) and the text is its ``tags`` (emoji) or else its first caption (``task.text_field``).

Label leakage: emoji tags and shapes captions often *name* the class ("... the largest is a red circle").
With ``task.mask_label_words`` (on by default) every word of every class name (and its plural) is removed
from the texts, in training, evaluation and ``vislang classify`` alike, so the text can help only with what it
says besides the class name.

Evaluation reports accuracy, macro-F1 and a confusion matrix PNG, beside three baselines: text-only (the
same model with the image blanked), image-only (the text blanked) and the majority class of the training
split; training uses modality dropout (``task.modality_dropout``) so the blanked runs are fair.
"""

from __future__ import annotations

import functools
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vislang.data.loader import ImageTextSamples, build_loader
from vislang.data.readers import load_format
from vislang.data.records import Record
from vislang.data.text import TextTokenizer, tokenize
from vislang.errors import DataError, VislangError
from vislang.losses import ClassificationLoss
from vislang.metrics.classification import classification_report
from vislang.tasks.base import TrainData, register_task
from vislang.tasks.common import modality_dropout_masks
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

CLASSES_FILE = "classes.json"


@dataclass
class ClassifyTaskConfig:
    """Classification options (read by :class:`ClassifyTask` and :class:`Classification`).

    Attributes:
        label_field: ``"label"`` (the record's label) or a metadata field (``group``, ``subgroup``, ...).
        text_field: ``"auto"`` (``tags`` when the record has them, else its first caption), ``"caption"``,
            or a metadata field (a list is joined with commas).
        mask_label_words: Remove the words of every class name from the texts.
        max_len: Longest text in tokens (BOS/EOS included).
        min_freq: Words seen fewer times in training become ``<unk>``.
        modality_dropout: Probability of blanking a training sample's image, and separately its text.
        label_smoothing: Label smoothing of the cross-entropy.
        val_batch_size: Samples per validation batch.
    """

    label_field: str = "label"
    text_field: str = "auto"
    mask_label_words: bool = True
    max_len: int = 32
    min_freq: int = 1
    modality_dropout: float = 0.1
    label_smoothing: float = 0.0
    val_batch_size: int = 256


def record_label(rec: Record, field_name: str) -> str | None:
    """The class of ``rec`` by ``field_name`` (None when it has none)."""
    value = rec.label if field_name == "label" else rec.meta.get(field_name)
    return None if value is None or value == "" else str(value)


def label_counts(records: Sequence[Record], field_name: str) -> Counter:
    """How many of ``records`` have each class (by ``field_name``)."""
    return Counter(x for r in records if (x := record_label(r, field_name)) is not None)


def warn_unlabelled(records: Sequence[Record], field_name: str, source: str) -> int:
    """Say on stderr how many of ``records`` (of ``source``, e.g. ``m.jsonl [train]``) have no class in
    ``field_name``, and so are left out, naming the first; returns that count."""
    missing = [r for r in records if record_label(r, field_name) is None]
    if missing:
        print(f"warning: {len(missing)} of {len(records)} records of {source} have no {field_name!r} and are left "
              f"out (first: record {missing[0].id!r}, image {missing[0].image})", file=sys.stderr)
    return len(missing)


def record_text(rec: Record, field_name: str) -> str:
    """The text of ``rec`` by ``field_name`` (``auto``: tags, else the first caption; ``""`` when none)."""
    if field_name == "auto":
        field_name = "tags" if rec.meta.get("tags") else "caption"
    if field_name == "caption":
        return rec.captions[0] if rec.captions else ""
    value = rec.meta.get(field_name, "")
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def label_words(classes: Sequence[str]) -> set[str]:
    """Words naming the classes: each class name's words (split at spaces, ``-``, ``_``, ``&``), whole and
    plural."""
    words: set[str] = set()
    for c in classes:
        parts = tokenize(c.replace("-", " ").replace("_", " ").replace("&", " ")) + tokenize(c)
        for w in parts:
            words.update({w, w + "s", w + "es"})
    return words


def mask_words(text: str, words: set[str]) -> str:
    """``text`` as words (see :func:`vislang.data.text.tokenize`) without those in ``words`` (a hyphenated
    word goes when one of its parts is in ``words``)."""
    kept = [w for w in tokenize(text) if w not in words and not any(p in words for p in w.split("-"))]
    return " ".join(kept)


@dataclass
class ClassSpace:
    """The classes of a classifier run and how its texts are made (saved as ``classes.json``).

    Attributes:
        classes: Class names, in output order.
        label_field: Field the classes come from.
        text_field: Field the texts come from.
        masked: Words removed from every text (empty: no masking).
        counts: Training samples per class (the majority baseline).
    """

    classes: list[str]
    label_field: str = "label"
    text_field: str = "auto"
    masked: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    file: ClassVar[str] = CLASSES_FILE  # its name in a model folder

    def __len__(self) -> int:
        return len(self.classes)

    def text(self, raw: str) -> str:
        """A raw text as the model reads it."""
        return mask_words(raw, set(self.masked)) if self.masked else raw

    def majority(self) -> str:
        return max(self.classes, key=lambda c: (self.counts.get(c, 0), c))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, {"format": "vislang-classes", "version": 1, **asdict(self)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ClassSpace:
        data = load_format(path, "vislang-classes", "not a vislang class list")
        if not isinstance(data.get("classes"), list) or not data["classes"]:
            raise DataError("must be a non-empty list", path=str(path), field="classes")
        return cls(**{k: data[k] for k in ("classes", "label_field", "text_field", "masked", "counts") if k in data})


def prepare_records(records: Sequence[Record], space: ClassSpace, *, known_only: bool = True) -> list[Record]:
    """Records with their model text as the only caption and their class as ``label`` (unlabelled records
    and, with ``known_only``, records of classes outside ``space`` are left out)."""
    index = set(space.classes)
    out = []
    for r in records:
        label = record_label(r, space.label_field)
        if label is None or (known_only and label not in index):
            continue
        out.append(replace(r, captions=[space.text(record_text(r, space.text_field))], label=label, qa=[]))
    return out


# ------------------------------------------------------------------------------------------- predicting


@torch.no_grad()
def predict_classes(model: nn.Module, records: Sequence[Record], tokenizer: TextTokenizer,
                    transform: Callable[[Any], Tensor], *, max_len: int = 32, mode: str = "both",
                    batch_size: int = 256) -> Tensor:
    """Class probabilities ``(N, C)`` of prepared ``records`` (see :func:`prepare_records`); ``mode``
    ``"text"`` blanks the images, ``"image"`` blanks the texts."""
    check_mode(mode)
    samples = ImageTextSamples(records, transform, unit="image_caption", tokenizer=tokenizer, max_len=max_len)
    probs = []
    with evaluating(model):
        for batch in build_loader(samples, batch_size, pad_id=tokenizer.pad_id):
            inputs = blank_modality(mode, tokenizer, batch["image"], batch["tokens"], batch["tokens_lengths"])
            probs.append(run_fusion(model, *inputs).logits.float().softmax(-1).cpu())    # (B, C)
    return torch.cat(probs)


class ClassifyTask(ImageTextObjective):
    """Batch -> cross-entropy (with modality dropout); validation -> accuracy and macro-F1 (``labels``: the
    :class:`ClassSpace`; ``val_records``: prepared records, see :func:`prepare_records`)."""

    config_type = ClassifyTaskConfig

    def build_loss(self) -> ClassificationLoss:
        return ClassificationLoss(self.cfg.label_smoothing)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """Class name -> output index."""
        return {c: i for i, c in enumerate(self.labels.classes)}

    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        images, tokens, lengths = batch["image"], batch["tokens"], batch["tokens_lengths"]   # (B, 3, H, W), (B, L)
        blank_image, blank_text = modality_dropout_masks(len(images), self.cfg.modality_dropout, images.device)
        inputs = blank(self.tokenizer, images, tokens, lengths, blank_image=blank_image, blank_text=blank_text)
        labels = torch.tensor([self.index[c] for c in batch["label"]], device=images.device)
        return self.loss(run_fusion(model, *inputs).logits, labels)

    def validate(self, model: nn.Module) -> dict[str, float]:
        return self.score_val(self.val_records, self.predict_val(model, self.val_records))

    def predict_val(self, model: nn.Module, records: Sequence[Record]) -> list[str]:
        """The predicted class of each record (under torchrun each rank predicts a part)."""
        if not records:
            return []
        probs = predict_classes(model, records, self.tokenizer, self.eval_transform, max_len=self.cfg.max_len,
                                batch_size=self.cfg.val_batch_size)
        return [self.labels.classes[i] for i in probs.argmax(dim=1).tolist()]

    def score_val(self, records: Sequence[Record], pred: list[str]) -> dict[str, float]:
        """Accuracy and macro-F1 of ``pred`` against the records' labels."""
        if not records:
            return {}
        report = classification_report([r.label for r in records], pred, labels=self.labels.classes)
        return {"accuracy": report.accuracy, "macro_f1": report.macro_f1}


# ------------------------------------------------------------------------------------------- training


@dataclass
class ClassifyRunConfig(ImageTextRunConfig):
    """Everything an image + text classification run needs; saved as ``config.yaml``.

    Attributes:
        model: Registered fusion model (``fusion_classifier``, ``fusion_classifier_tiny``).
        task: Classification options.

    The other fields are :class:`~vislang.tasks.image_text.ImageTextRunConfig`'s (``fusion``: the model's own
    is late-concat).
    """

    model: str = "fusion_classifier"
    task: ClassifyTaskConfig = field(default_factory=ClassifyTaskConfig)


@register_task("classify")
class Classification(ImageTextSpec):
    """Image + text classification (e.g. emoji group from image + tags)."""

    config = ClassifyRunConfig
    help = "image + text classification (e.g. emoji group from image + tags)"
    monitor_label = "accuracy"
    predictor = "vislang.inference.classify:ClassifyPredictor"
    evaluation = "vislang.tasks.classify_eval"
    evaluate_help = "score a trained image + text classifier: accuracy, macro-F1, confusion matrix PNG"
    evaluate_description = ("Classify every record of a split with a run's best checkpoint; report accuracy and "
                            "macro-F1 beside the text-only (image blanked), image-only (text blanked) and "
                            "majority-class baselines, and draw the confusion matrix.")
    labels_type = ClassSpace

    def open_data(self, cfg: ClassifyRunConfig) -> TrainData:
        data = super().open_data(cfg)
        field_name = cfg.task.label_field
        warn_unlabelled(data.train, field_name, f"{cfg.data.name} [{cfg.data.train_split}]")
        n_classes = len(label_counts(data.train, field_name))
        if n_classes < 2:
            raise VislangError(f"{cfg.data.name} [{cfg.data.train_split}] has {n_classes} class(es) in field "
                               f"{cfg.task.label_field!r}; classification needs at least two (task.label_field)")
        return data

    def open_val(self, cfg: ClassifyRunConfig, split: str) -> list[Record]:
        records = super().open_val(cfg, split)
        if records:
            warn_unlabelled(records, cfg.task.label_field, f"{cfg.data.name} [{split}]")
        return records

    def prepare(self, cfg: ClassifyRunConfig, data: TrainData, reuse: Path | None) -> ImageTextArtifacts:
        space = self.reuse_labels(reuse)
        if space is None:
            counts = label_counts(data.train, cfg.task.label_field)
            classes = sorted(counts)
            masked = sorted(label_words(classes)) if cfg.task.mask_label_words else []
            space = ClassSpace(classes, cfg.task.label_field, cfg.task.text_field, masked, dict(counts))
        return self.text_side(cfg, space, lambda: [r.captions[0] for r in prepare_records(data.train, space)], reuse)

    def samples(self, cfg: ClassifyRunConfig, data: TrainData, artifacts: ImageTextArtifacts,
                transform) -> ImageTextSamples:
        return ImageTextSamples(prepare_records(data.train, artifacts.labels), transform, unit="image_caption",
                                tokenizer=artifacts.tokenizer, max_len=cfg.task.max_len, skip_bad=cfg.data.skip_bad)

    def objective(self, cfg: ClassifyRunConfig, model: nn.Module, data: TrainData, artifacts: ImageTextArtifacts,
                  transform) -> ClassifyTask:
        space = artifacts.labels
        val = prepare_records(data.val, space)
        dropped = sum(record_label(r, space.label_field) is not None for r in data.val) - len(val)
        if dropped:
            print(f"note: {dropped} validation samples of classes unseen in training are left out", file=sys.stderr)
        task = ClassifyTask(artifacts.tokenizer, space, val, transform, cfg.task)
        print(f"classify: {len(prepare_records(data.train, space))} training samples, {len(space.classes)} classes "
              f"from {space.label_field!r}, text from {space.text_field!r}"
              + (f" ({len(space.masked)} class-name words masked)" if space.masked else ""), file=sys.stderr)
        return task
