"""Captioning as a task of the shared training loop: teacher-forced log-likelihood, CIDEr-D validation."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vislang.data.loader import ImageTextSamples, build_loader
from vislang.data.records import Record
from vislang.data.text import VOCAB_FILE, Vocabulary
from vislang.decoding import Decoded, beam_search, greedy
from vislang.errors import VislangError
from vislang.losses import CaptionLoss
from vislang.tasks.base import TaskSpec, TrainData, register_task
from vislang.tasks.common import DataConfig
from vislang.train import TrainConfig


@dataclass
class CaptionTaskConfig:
    """Captioning options (read by :class:`CaptionTask`).

    Attributes:
        max_len: Longest training sequence in tokens (BOS and EOS included); also the decoding limit.
        min_freq: Words seen fewer times in the training captions become ``<unk>``.
        label_smoothing: Label smoothing of the cross-entropy.
        attention_reg: Weight of the doubly stochastic attention regulariser.
        val_beam: Beam size when decoding the validation set (1 = greedy).
        val_length_penalty: Length normalisation exponent of that beam search (see :func:`decode_batch`).
        val_batch_size: Images per validation batch.
        captions_per_image: Train on at most the first N captions of each image (None: all). References
            for validation and evaluation always keep every caption.
    """

    max_len: int = 24
    min_freq: int = 1
    label_smoothing: float = 0.0
    attention_reg: float = 1.0
    val_beam: int = 1
    val_length_penalty: float = 0.0
    val_batch_size: int = 64
    captions_per_image: int | None = None


def decode_batch(model: nn.Module, images: Tensor, beam: int, max_len: int, length_penalty: float = 0.0) -> Decoded:
    """Greedy for ``beam <= 1``, else beam search (finished beams ranked by ``score / length ** length_penalty``)."""
    if beam <= 1:
        return greedy(model, images, max_len)
    return beam_search(model, images, beam, max_len, length_penalty=length_penalty)


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    """``--beam`` and ``--length-penalty`` (see :func:`decode_batch`) of the commands that caption with a run."""
    p.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    p.add_argument("--length-penalty", type=float, default=0.0, metavar="P",
                   help="beam search ranks captions by log-probability / length ** P (default 0: the plain sum, "
                        "which favours short captions; 1: the mean per token)")


def caption_records(model: nn.Module, records: Sequence[Record], vocab: Vocabulary,
                    transform: Callable[[Any], Tensor], *, beam: int = 1, max_len: int = 24,
                    length_penalty: float = 0.0, batch_size: int = 64) -> tuple[list[str], list[Decoded]]:
    """Caption every record's image; returns the captions and the per-batch decoder outputs."""
    device = next(model.parameters()).device
    loader = build_loader(ImageTextSamples(records, transform, unit="image"), batch_size)
    captions: list[str] = []
    outputs: list[Decoded] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            out = decode_batch(model, batch["image"].to(device), beam, max_len, length_penalty)
            captions += [vocab.decode(t) for t in out.tokens]
            outputs.append(out)
    model.train(was_training)
    return captions, outputs


class CaptionTask:
    """Batch -> caption loss; validation -> COCO caption metrics of decoded val captions.

    Args:
        vocab: The vocabulary the model's output layer uses.
        val_records: Validation images with reference captions.
        eval_transform: Image -> tensor for validation.
        cfg: Task options.
    """

    monitor = "CIDEr-D"
    mode = "max"

    def __init__(self, vocab: Vocabulary, val_records: Sequence[Record], eval_transform: Callable[[Any], Tensor],
                 cfg: CaptionTaskConfig | None = None):
        self.cfg = cfg or CaptionTaskConfig()
        self.vocab, self.val_records, self.eval_transform = vocab, list(val_records), eval_transform
        self.loss = CaptionLoss(vocab.pad_id, self.cfg.label_smoothing, self.cfg.attention_reg)

    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        tokens = batch["tokens"]  # (B, T)
        out = model(batch["image"], tokens)
        targets = tokens[:, 1:]                                                          # (B, T-1)
        losses = self.loss(out.logits, targets, out.attention)
        # the cross-entropy is a mean over tokens: under torchrun, ranks are weighted by their tokens
        return {**losses, "count": (targets != self.loss.pad_id).sum()}

    def validate(self, model: nn.Module) -> dict[str, float]:
        return self.score_val(self.val_records, self.predict_val(model, self.val_records))

    def predict_val(self, model: nn.Module, records: Sequence[Record]) -> list[str]:
        """The decoded caption of each record (under torchrun each rank decodes a part)."""
        captions, _ = caption_records(model, records, self.vocab, self.eval_transform, beam=self.cfg.val_beam,
                                      max_len=self.cfg.max_len, length_penalty=self.cfg.val_length_penalty,
                                      batch_size=self.cfg.val_batch_size)
        return captions

    def score_val(self, records: Sequence[Record], captions: list[str]) -> dict[str, float]:
        """COCO caption metrics of ``captions`` against the records' references."""
        from vislang.metrics.captions import evaluate_captions

        refs = {r.id: r.captions for r in records}
        cands = {r.id: c for r, c in zip(records, captions)}
        scores = evaluate_captions(refs, cands, use_java=False)
        return {k: scores.corpus[k] for k in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D")}

    def save_artifacts(self, directory: Path) -> None:
        self.vocab.save(Path(directory) / VOCAB_FILE)


@dataclass
class CaptionRunConfig:
    """Everything a captioning run needs; saved as ``config.yaml`` in the run directory.

    Attributes:
        model: Registered captioner name.
        model_kwargs: Options of the model builder, checked against its config (``vocab_size`` and the token
            ids are set from the data).
        data: Data section.
        task: Captioning options.
        train: Loop options.
    """

    model: str = "caption_lstm"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    task: CaptionTaskConfig = field(default_factory=CaptionTaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@register_task("caption")
class Captioning(TaskSpec):
    """Image captioning: an encoder-decoder trained by log-likelihood, validated by CIDEr-D."""

    config = CaptionRunConfig
    help = "image captioning (encoder + attention decoder)"
    monitor_label = "CIDEr-D"
    predictor = "vislang.inference.caption:CaptionPredictor"
    evaluation = "vislang.tasks.caption_eval"
    evaluate_help = "caption a dataset split with a trained run and score it beside baselines"

    def open_data(self, cfg: CaptionRunConfig) -> TrainData:
        data = super().open_data(cfg)
        for records, split in ((data.train, cfg.data.train_split), (data.val, cfg.data.val_split)):
            if not any(r.captions for r in records):
                raise VislangError(f"{cfg.data.name} [{split}] has no captions to train or validate a captioner on")
        return TrainData(data.train, [r for r in data.val if r.captions])

    def prepare(self, cfg: CaptionRunConfig, data: TrainData, reuse: Path | None) -> Vocabulary:
        if reuse is not None and (reuse / VOCAB_FILE).exists():
            return Vocabulary.load(reuse / VOCAB_FILE)
        return Vocabulary.build((c for r in data.train for c in r.captions), min_freq=cfg.task.min_freq)

    def model_options(self, cfg: CaptionRunConfig, vocab: Vocabulary) -> dict[str, Any]:
        return {**cfg.model_kwargs, "vocab_size": len(vocab), "pad_id": vocab.pad_id, "bos_id": vocab.bos_id,
                "eos_id": vocab.eos_id}

    def samples(self, cfg: CaptionRunConfig, data: TrainData, vocab: Vocabulary, transform) -> ImageTextSamples:
        records = data.train
        if cfg.task.captions_per_image is not None:
            records = [replace(r, captions=r.captions[:cfg.task.captions_per_image]) for r in records]
        return ImageTextSamples(records, transform, unit="caption", tokenizer=vocab, max_len=cfg.task.max_len,
                                skip_bad=cfg.data.skip_bad)

    def objective(self, cfg: CaptionRunConfig, model: nn.Module, data: TrainData, vocab: Vocabulary,
                  transform) -> CaptionTask:
        return CaptionTask(vocab, data.val, transform, cfg.task)

    def extra(self, cfg: CaptionRunConfig, vocab: Vocabulary) -> dict[str, Any]:
        return {"max_len": cfg.task.max_len}

    def load_artifacts(self, folder: Path, config: dict[str, Any]) -> Vocabulary:
        return Vocabulary.load(folder / VOCAB_FILE)
