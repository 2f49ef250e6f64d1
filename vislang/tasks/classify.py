"""Image + text classification as a task of the shared training loop, and its evaluation.

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

import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from vislang.captioner import task_checkpoint
from vislang.config import config_to_dict
from vislang.data.images import load_image
from vislang.data.loader import ImageTextSamples, build_loader
from vislang.data.readers import load_json
from vislang.data.records import Record
from vislang.data.text import TextTokenizer, Vocabulary, tokenize
from vislang.data.transforms import TransformConfig, build_transform
from vislang.errors import DataError, VislangError
from vislang.losses import ClassificationLoss
from vislang.metrics.classification import classification_report, save_confusion_matrix_png
from vislang.models.registry import create_model
from vislang.models.text_encoders import saved_tokenizer
from vislang.tasks.common import (
    MODALITY_MODES,
    DataConfig,
    blank_inputs,
    load_split,
    modality_dropout_masks,
    open_split,
    transform_config,
)
from vislang.tasks.vqa import VOCAB_FILE, build_text_side
from vislang.train import FitResult, TrainConfig, fit, seed_everything
from vislang.train.checkpoint import load_model
from vislang.train.loop import resolve_device
from vislang.utils.io import atomic_write_json, format_table

CLASSES_FILE = "classes.json"


@dataclass
class ClassifyTaskConfig:
    """Classification options (read by :class:`ClassifyTask` and :func:`train_classifier`).

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

    def text(self, raw: str) -> str:
        """A raw text as the model reads it."""
        return mask_words(raw, set(self.masked)) if self.masked else raw

    def majority(self) -> str:
        return max(self.classes, key=lambda c: (self.counts.get(c, 0), c))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, {"format": "vislang-classes", "version": 1, **asdict(self)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ClassSpace:
        data = load_json(path)
        if not isinstance(data, dict) or data.get("format") != "vislang-classes":
            raise DataError("not a vislang class list", path=str(path))
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
    if mode not in MODALITY_MODES:
        raise VislangError(f"mode must be one of {', '.join(MODALITY_MODES)}, not {mode!r}")
    device = next(model.parameters()).device
    samples = ImageTextSamples(records, transform, unit="image_caption", tokenizer=tokenizer, max_len=max_len)
    was_training = model.training
    model.eval()
    probs = []
    for batch in build_loader(samples, batch_size, pad_id=tokenizer.pad_id):
        images, tokens, lengths = batch["image"], batch["tokens"], batch["tokens_lengths"]
        full = torch.ones(len(images), dtype=torch.bool)
        images, tokens, lengths = blank_inputs(
            images, tokens, lengths, blank_image=full if mode == "text" else None,
            blank_text=full if mode == "image" else None, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
            pad_id=tokenizer.pad_id)
        mask = (torch.arange(tokens.shape[1])[None, :] < lengths[:, None]).long()
        probs.append(model(images.to(device), tokens.to(device), mask.to(device)).logits.float().softmax(-1).cpu())
    model.train(was_training)
    return torch.cat(probs)


class ClassifyTask:
    """Batch -> cross-entropy (with modality dropout); validation -> accuracy and macro-F1.

    Args:
        tokenizer: Tokenizer of the text encoder.
        space: Classes and text settings.
        val_records: Prepared validation records.
        eval_transform: Image -> tensor for validation.
        cfg: Task options.
    """

    monitor = "accuracy"
    mode = "max"

    def __init__(self, tokenizer: TextTokenizer, space: ClassSpace, val_records: Sequence[Record],
                 eval_transform: Callable[[Any], Tensor], cfg: ClassifyTaskConfig | None = None):
        self.cfg = cfg or ClassifyTaskConfig()
        self.tokenizer, self.space = tokenizer, space
        self.index = {c: i for i, c in enumerate(space.classes)}
        self.val_records, self.eval_transform = list(val_records), eval_transform
        self.loss = ClassificationLoss(self.cfg.label_smoothing)

    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        images, tokens, lengths = batch["image"], batch["tokens"], batch["tokens_lengths"]
        blank_image, blank_text = modality_dropout_masks(len(images), self.cfg.modality_dropout, images.device)
        images, tokens, lengths = blank_inputs(images, tokens, lengths, blank_image=blank_image,
                                               blank_text=blank_text, bos_id=self.tokenizer.bos_id,
                                               eos_id=self.tokenizer.eos_id, pad_id=self.tokenizer.pad_id)
        mask = (torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None]).long()
        labels = torch.tensor([self.index[c] for c in batch["label"]], device=images.device)
        return self.loss(model(images, tokens, mask).logits, labels)

    def validate(self, model: nn.Module) -> dict[str, float]:
        if not self.val_records:
            return {}
        probs = predict_classes(model, self.val_records, self.tokenizer, self.eval_transform,
                                max_len=self.cfg.max_len, batch_size=self.cfg.val_batch_size)
        pred = [self.space.classes[i] for i in probs.argmax(dim=1).tolist()]
        report = classification_report([r.label for r in self.val_records], pred, labels=self.space.classes)
        return {"accuracy": report.accuracy, "macro_f1": report.macro_f1}

    def save_artifacts(self, directory: Path) -> None:
        self.space.save(Path(directory) / CLASSES_FILE)
        if isinstance(self.tokenizer, Vocabulary):
            self.tokenizer.save(Path(directory) / VOCAB_FILE)


# ------------------------------------------------------------------------------------------- training


@dataclass
class ClassifyRunConfig:
    """Everything an image + text classification run needs; saved as ``config.yaml``.

    Attributes:
        model: Registered fusion model (``fusion_classifier``, ``fusion_classifier_tiny``).
        model_kwargs: Overrides for the builder.
        fusion: Fusion strategy; None: the model's own (late-concat).
        text_encoder: ``gru``, ``transformer``, ``minilm`` or a Hugging Face model directory; None: the model's.
        data: Data section.
        task: Classification options.
        train: Loop options.
    """

    model: str = "fusion_classifier"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    fusion: str | None = None
    text_encoder: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    task: ClassifyTaskConfig = field(default_factory=ClassifyTaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def train_classifier(cfg: ClassifyRunConfig, run_dir: str | os.PathLike, resume: bool = False) -> FitResult:
    """Build the data, classes, tokenizer, model and task from ``cfg`` and run the shared loop."""
    run_dir = Path(run_dir)
    if not 0.0 <= cfg.task.modality_dropout < 0.5:
        raise VislangError(f"task.modality_dropout must be in [0, 0.5), got {cfg.task.modality_dropout}")
    train_ds = open_split(cfg.data, cfg.data.train_split, cfg.data.max_train)
    counts = Counter(x for r in train_ds if (x := record_label(r, cfg.task.label_field)) is not None)
    if len(counts) < 2:
        raise VislangError(f"{cfg.data.name} [{cfg.data.train_split}] has {len(counts)} class(es) in field "
                           f"{cfg.task.label_field!r}; classification needs at least two (task.label_field)")
    last = run_dir / "checkpoints" / "last"
    if resume and (last / CLASSES_FILE).exists():
        space = ClassSpace.load(last / CLASSES_FILE)
    else:
        classes = sorted(counts)
        masked = sorted(label_words(classes)) if cfg.task.mask_label_words else []
        space = ClassSpace(classes, cfg.task.label_field, cfg.task.text_field, masked, dict(counts))
    train_records = prepare_records(train_ds.records, space)
    val_records: list[Record] = []
    if cfg.data.val_split:
        val_ds = open_split(cfg.data, cfg.data.val_split, cfg.data.max_val)
        val_records = prepare_records(val_ds.records, space)
        dropped = sum(record_label(r, space.label_field) is not None for r in val_ds) - len(val_records)
        if dropped:
            print(f"note: {dropped} validation samples of classes unseen in training are left out", file=sys.stderr)
    model_kwargs = dict(cfg.model_kwargs)
    if cfg.fusion:
        model_kwargs["fusion"] = cfg.fusion
    tokenizer, kwargs = build_text_side(cfg.text_encoder, cfg.model, model_kwargs,
                                        lambda: [r.captions[0] for r in train_records], max_len=cfg.task.max_len,
                                        min_freq=cfg.task.min_freq, vocab_path=last / VOCAB_FILE if resume else None)
    kwargs["num_classes"] = len(space.classes)
    seed_everything(cfg.train.seed)
    model = create_model(cfg.model, **kwargs)
    tf_cfg = transform_config(cfg.data)
    samples = ImageTextSamples(train_records, build_transform(tf_cfg, train=True), unit="image_caption",
                               tokenizer=tokenizer, max_len=cfg.task.max_len, skip_bad=cfg.data.skip_bad)
    task = ClassifyTask(tokenizer, space, val_records, build_transform(tf_cfg, train=False), cfg.task)
    print(f"classify: {len(samples)} training samples, {len(space.classes)} classes from "
          f"{space.label_field!r}, text from {space.text_field!r}"
          + (f" ({len(space.masked)} class-name words masked)" if space.masked else ""), file=sys.stderr)
    spec = {"name": cfg.model, "kwargs": kwargs, "task": "classify", "transform": asdict(tf_cfg),
            "max_len": cfg.task.max_len,
            "tokenizer": VOCAB_FILE if isinstance(tokenizer, Vocabulary) else "text_encoder"}
    return fit(model, task, samples, cfg.train, run_dir, model_spec=spec, pad_id=tokenizer.pad_id,
               resume=resume, config_to_save=config_to_dict(cfg))


# ----------------------------------------------------------------------------------- using and evaluating


class ClassifierRun:
    """A trained image + text classifier with its tokenizer, classes and image preprocessing."""

    def __init__(self, model: nn.Module, tokenizer: TextTokenizer, space: ClassSpace, transform_cfg, max_len: int,
                 checkpoint: Path):
        self.model, self.tokenizer, self.space, self.max_len = model.eval(), tokenizer, space, max_len
        self.transform = build_transform(transform_cfg, train=False)
        self.checkpoint = checkpoint

    @classmethod
    def load(cls, run: str | os.PathLike, checkpoint: str = "best", device: str = "auto") -> ClassifierRun:
        ckpt, spec = task_checkpoint(run, checkpoint, "classify", "an image + text classifier")
        model = load_model(ckpt, resolve_device(device))
        return cls(model, saved_tokenizer(ckpt, spec), ClassSpace.load(ckpt / CLASSES_FILE),
                   TransformConfig.from_dict(spec["transform"]),
                   int(spec.get("max_len", 32)), ckpt)

    def classify(self, image: str | os.PathLike | Image.Image, text: str = "", k: int = 5
                 ) -> tuple[list[tuple[str, float]], str]:
        """The ``k`` most probable classes ``[(class, probability)]`` of an image and text, and the text as the
        model read it (class-name words removed)."""
        im = image if isinstance(image, Image.Image) else load_image(image)
        seen = self.space.text(text)
        ids = self.tokenizer.encode(seen, max_len=self.max_len)
        tokens = torch.tensor([ids])
        device = next(self.model.parameters()).device
        with torch.no_grad():
            logits = self.model(self.transform(im.convert("RGB")).unsqueeze(0).to(device), tokens.to(device),
                                torch.ones_like(tokens).to(device)).logits
        p, idx = logits.float().softmax(-1)[0].cpu().topk(min(k, logits.shape[1]))
        return [(self.space.classes[i], float(v)) for v, i in zip(p.tolist(), idx.tolist())], seen


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

    def table(self) -> str:
        return format_table([[n, r["accuracy"], r["macro_f1"]] for n, r in self.rows.items()],
                            ["system", "accuracy", "macro_f1"])


def evaluate_classifier_model(run: str | os.PathLike, data: str, split: str | None, *, root: str | None = None,
                              image_root: str | None = None, limit: int | None = None, skip_bad: bool = False,
                              baselines: bool = True, batch_size: int = 256, device: str = "auto",
                              out_dir: str | os.PathLike | None = None) -> ClassifyEvaluation:
    """Score a classifier run on ``data [split]``; writes ``scores.json`` and ``confusion.png`` to ``out_dir``."""
    clf = ClassifierRun.load(run, device=device)
    ds = load_split(data, split, root=root, image_root=image_root, limit=limit, skip_bad=skip_bad)
    records = prepare_records(ds.records, clf.space)
    name = f"{ds.name} [{ds.split}]"
    if not records:
        raise VislangError(f"{name} has no samples of the model's classes in field {clf.space.label_field!r}")
    truth = [r.label for r in records]
    rows: dict[str, dict[str, float]] = {}
    model_report = None
    systems = {"both": "model", "text": "text-only (image blanked)", "image": "image-only (text blanked)"}
    for mode in ("both", "text", "image") if baselines else ("both",):
        probs = predict_classes(clf.model, records, clf.tokenizer, clf.transform, max_len=clf.max_len, mode=mode,
                                batch_size=batch_size)
        pred = [clf.space.classes[i] for i in probs.argmax(dim=1).tolist()]
        rep = classification_report(truth, pred, labels=clf.space.classes)
        rows[systems[mode]] = {"accuracy": rep.accuracy, "macro_f1": rep.macro_f1}
        if mode == "both":
            model_report = rep
    if baselines:
        rep = classification_report(truth, [clf.space.majority()] * len(truth), labels=clf.space.classes)
        rows["majority class"] = {"accuracy": rep.accuracy, "macro_f1": rep.macro_f1}
    assert model_report is not None
    ev = ClassifyEvaluation(name, len(records), len(clf.space.classes), rows, model_report.as_dict())
    if out_dir is not None:
        out_dir = Path(out_dir)
        save_confusion_matrix_png(model_report, out_dir / "confusion.png")
        atomic_write_json(out_dir / "scores.json", {"split": name, "n_samples": ev.n_samples, "systems": rows,
                                                    "model": ev.report, "checkpoint": str(clf.checkpoint)})
    return ev
