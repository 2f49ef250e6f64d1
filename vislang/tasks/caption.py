"""Captioning as a task of the shared training loop: teacher-forced log-likelihood, CIDEr-D validation."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vislang.data.loader import ImageTextSamples, build_loader, record_key
from vislang.data.records import Record
from vislang.data.text import VOCAB_FILE, Vocabulary
from vislang.decoding import Decoded, beam_search, greedy, teacher_force
from vislang.errors import VislangError
from vislang.losses import CaptionLoss
from vislang.models.encoders import ImageFeatures
from vislang.models.registry import model_family
from vislang.tasks.base import TaskSpec, TrainData, register_task
from vislang.tasks.common import DataConfig
from vislang.train import TrainConfig
from vislang.utils.tensors import lengths_to_mask, pad_sequences


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
        memory_group_key: For a retrieval-augmented captioner (``caption_rag``): the record field that groups
            the memory's entries (an image's group is sometimes hidden from it in training, see
            :class:`~vislang.models.caption_rag.CaptionRAG`); records without it are each a group of their own.
    """

    max_len: int = 24
    min_freq: int = 1
    label_smoothing: float = 0.0
    attention_reg: float = 1.0
    val_beam: int = 1
    val_length_penalty: float = 0.0
    val_batch_size: int = 64
    captions_per_image: int | None = None
    memory_group_key: str = "base"


def decode_batch(model: nn.Module, images: Tensor, beam: int, max_len: int, length_penalty: float = 0.0) -> Decoded:
    """Greedy for ``beam <= 1``, else beam search (finished beams ranked by ``score / length ** length_penalty``).
    A retrieval-augmented captioner's caption is then the likeliest, by the same ranking, of its decoded caption
    and its neighbours' captions (:func:`rerank_with_neighbours`)."""
    out = greedy(model, images, max_len) if beam <= 1 else beam_search(model, images, beam, max_len,
                                                                        length_penalty=length_penalty)
    if hasattr(model, "neighbour_captions"):
        out = rerank_with_neighbours(model, images, out, max_len, length_penalty)
    return out


@torch.no_grad()
def rerank_with_neighbours(model: nn.Module, images: Tensor, decoded: Decoded, max_len: int,
                           length_penalty: float = 0.0) -> Decoded:
    """For each image, the caption with the best ``log p / length ** length_penalty`` under ``model`` among its
    decoded caption and the captions of its nearest training images: whole captions are copied when the model
    finds them likelier than what it composed, never a blend of several (consensus reranking, Devlin et al.
    2015, with the model's own likelihood as the judge)."""
    feats = model.encode(images)  # once: the neighbours and every candidate's score come from these features
    candidates = [[decoded.tokens[i], *[c for c in caps if c != decoded.tokens[i]]]
                  for i, caps in enumerate(model.neighbour_captions(feats))]
    owner = [i for i, caps in enumerate(candidates) for _ in caps]
    flat = [c[:max_len - 1] for caps in candidates for c in caps]
    total, lengths, attn = _log_likelihoods(model, feats, owner, flat, images.device)          # (C,), (C,), (C, T-1, N)
    ranked = total / lengths.float() ** length_penalty
    best: dict[int, int] = {}
    for j, i in enumerate(owner):
        if i not in best or ranked[j] > ranked[best[i]]:
            best[i] = j
    chosen = [j for _, j in sorted(best.items())]
    return _decoded(decoded, [flat[j] for j in chosen], total[chosen], lengths[chosen], attn[chosen])


@torch.no_grad()
def score_captions(model: nn.Module, feats: ImageFeatures, captions: list[list[int]], decoded: Decoded,
                   max_len: int, device: torch.device) -> Decoded:
    """``captions`` (token ids, one per image of ``decoded``'s batch) as a :class:`Decoded`: each one's summed
    log-probability under ``model`` and its attention as the model reads it (``feats``: the batch's encoded
    images, on ``device``)."""
    flat = [c[:max_len - 1] for c in captions]
    total, lengths, attn = _log_likelihoods(model, feats, list(range(len(flat))), flat, device)
    return _decoded(decoded, flat, total, lengths, attn)


def _log_likelihoods(model: nn.Module, feats: ImageFeatures, owner: list[int], captions: list[list[int]],
                     device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Teacher-force each caption (no BOS / EOS) on its image ``owner[j]``: summed log-probabilities (C,) with
    EOS, predicted lengths (C,) and attention (C, T-1, N). ``feats`` may be an exported captioner's encoding, so
    the images' ``device`` is given."""
    tokens, n = pad_sequences([[model.bos_id, *c, model.eos_id] for c in captions], model.pad_id)     # (C, T), (C,)
    tokens, lengths = tokens.to(device), (n - 1).to(device)                           # predicted: EOS counted
    rows = torch.tensor(owner, device=device)
    logits, attn = teacher_force(model, model.init_state(feats).map(lambda t: t[rows]), tokens)       # (C, T-1, V)
    logp = logits.float().log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)                # (C, T-1)
    return (logp * lengths_to_mask(lengths, logp.shape[1])).sum(1), lengths, attn


def _decoded(decoded: Decoded, captions: list[list[int]], total: Tensor, lengths: Tensor, attn: Tensor) -> Decoded:
    """The chosen captions (one per image) with their scores; attention kept from ``decoded`` where the caption is
    the decoded one."""
    attention = None
    if decoded.attention is not None:
        attention = [decoded.attention[i] if c == decoded.tokens[i] else attn[i, :lengths[i]].cpu()
                     for i, c in enumerate(captions)]
    return Decoded(captions, [float(t) for t in total], attention, decoded.grid_hw)


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    """``--beam`` and ``--length-penalty`` (see :func:`decode_batch`) of the commands that caption with a run."""
    p.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    p.add_argument("--length-penalty", type=float, default=0.0, metavar="P",
                   help="beam search ranks captions by log-probability / length ** P (default 0: the plain sum, "
                        "which favours short captions; 1: the mean per token)")


def caption_records(model: nn.Module, records: Sequence[Record], vocab: Vocabulary,
                    transform: Callable[[Any], Tensor], *, beam: int = 1, max_len: int = 24,
                    length_penalty: float = 0.0, batch_size: int = 64,
                    judge: Any = None, joint: Tensor | None = None) -> tuple[list[str], list[Decoded]]:
    """Caption every record's image; returns the captions and the per-batch decoder outputs. ``judge``: a
    :class:`~vislang.tasks.caption_judge.CaptionJudge` that then chooses each caption; ``joint``: the records'
    embeddings in its space (N, E), when already computed."""
    device = next(model.parameters()).device
    loader = build_loader(ImageTextSamples(records, transform, unit="image"), batch_size)
    if judge is not None and joint is None:
        joint = judge.embed_records(records)                                                 # (N, E)
    captions: list[str] = []
    outputs: list[Decoded] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            x = batch["image"].to(device)
            out = decode_batch(model, x, beam, max_len, length_penalty)
            if judge is not None:
                out, _ = judge.choose(model, x, out, joint[len(captions):len(captions) + len(x)], vocab, max_len)
            captions += [vocab.decode(t) for t in out.tokens]
            outputs.append(out)
    model.train(was_training)
    return captions, outputs


@torch.no_grad()
def pooled_features(encoder: nn.Module, records: Sequence[Record], transform, device,
                    batch_size: int = 128) -> Tensor:
    """L2-normalised pooled image features, (N, D), from ``encoder`` in eval mode (its mode is restored)."""
    was_training = encoder.training
    encoder.eval()
    feats = []
    for batch in build_loader(ImageTextSamples(records, transform, unit="image"), batch_size):
        feats.append(nn.functional.normalize(encoder(batch["image"].to(device)).pooled.float(), dim=-1))
    encoder.train(was_training)
    return torch.cat(feats).cpu()


def memory_row(vocab: Vocabulary, caption: str, length: int) -> list[int]:
    """``caption``'s token ids as a retrieval-augmented captioner's memory row of ``length`` holds them: no BOS,
    cut to fit with its EOS kept (:func:`~vislang.models.caption_rag.memory_captions` reads them back)."""
    return vocab.encode(caption, max_len=length + 1)[1:]


def fill_memory(model: nn.Module, records: Sequence[Record], vocab: Vocabulary, transform: Callable[[Any], Tensor],
                group_key: str) -> dict[str, int]:
    """Fill a retrieval-augmented captioner's memory with the training ``records`` (features from its image
    encoder in eval mode, first caption, group); returns each record id's memory row."""
    length = model.memory_tokens.shape[1]
    device = model.memory_keys.device
    keys = pooled_features(model.image_encoder, records, transform, device)                          # (M, D)
    tokens, _ = pad_sequences([memory_row(vocab, r.captions[0], length) for r in records],
                              vocab.pad_id, length=length)                                           # (M, L)
    names: dict[str, int] = {}
    groups = torch.tensor([names.setdefault(record_key(r, group_key), len(names)) for r in records])
    model.set_memory(keys.to(device), tokens.to(device), groups.to(device))
    return {r.id: i for i, r in enumerate(records)}


class CaptionTask:
    """Batch -> caption loss; validation -> COCO caption metrics of decoded val captions.

    Args:
        vocab: The vocabulary the model's output layer uses.
        val_records: Validation images with reference captions.
        eval_transform: Image -> tensor for validation.
        cfg: Task options.
        memory_rows: For a retrieval-augmented captioner, each training record id's memory row (so an image is
            never its own neighbour).
    """

    monitor = "CIDEr-D"
    mode = "max"

    def __init__(self, vocab: Vocabulary, val_records: Sequence[Record], eval_transform: Callable[[Any], Tensor],
                 cfg: CaptionTaskConfig | None = None, memory_rows: dict[str, int] | None = None):
        self.cfg = cfg or CaptionTaskConfig()
        self.memory_rows = memory_rows
        self.vocab, self.val_records, self.eval_transform = vocab, list(val_records), eval_transform
        self.loss = CaptionLoss(vocab.pad_id, self.cfg.label_smoothing, self.cfg.attention_reg)

    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        tokens = batch["tokens"]  # (B, T)
        if self.memory_rows is None:
            out = model(batch["image"], tokens)
        else:
            rows = torch.tensor([self.memory_rows[i] for i in batch["id"]], device=tokens.device)   # (B,)
            out = model(batch["image"], tokens, rows)
        targets = tokens[:, 1:]                                                          # (B, T-1)
        losses = self.loss(out.logits, targets, out.attention)
        # the cross-entropy is a mean over tokens: under torchrun, ranks are weighted by their tokens
        return {**losses, "count": (targets != self.loss.pad_id).sum()}

    def with_val_records(self, records: Sequence[Record]) -> CaptionTask:
        """The same task validating on ``records`` (for a run's further validation splits; the memory rows of
        a retrieval-augmented captioner are shared, not rebuilt)."""
        return CaptionTask(self.vocab, records, self.eval_transform, self.cfg, self.memory_rows)

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
        if not any(r.captions for r in data.train):
            raise self._no_captions(cfg, cfg.data.train_split)
        if not data.val:  # no validation split (open_val refuses one without captions)
            raise self._no_captions(cfg, cfg.data.val_split)
        return data

    def open_val(self, cfg: CaptionRunConfig, split: str) -> list[Record]:
        records = [r for r in super().open_val(cfg, split) if r.captions]
        if not records:
            raise self._no_captions(cfg, split)
        return records

    @staticmethod
    def _no_captions(cfg: CaptionRunConfig, split: str | None) -> VislangError:
        return VislangError(f"{cfg.data.name} [{split}] has no captions to train or validate a captioner on")

    def prepare(self, cfg: CaptionRunConfig, data: TrainData, reuse: Path | None) -> Vocabulary:
        if reuse is not None and (reuse / VOCAB_FILE).exists():
            return Vocabulary.load(reuse / VOCAB_FILE)
        return Vocabulary.build((c for r in data.train for c in r.captions), min_freq=cfg.task.min_freq)

    def check(self, cfg: CaptionRunConfig) -> None:
        if model_family(cfg.model) == "caption_rag" and not cfg.train.optim.freeze_encoder:
            raise VislangError(f"{cfg.model} keeps a memory of its encoder's features: train it with "
                               "train.optim.freeze_encoder=true")

    def model_options(self, cfg: CaptionRunConfig, vocab: Vocabulary, data: TrainData) -> dict[str, Any]:
        options = {**cfg.model_kwargs, "vocab_size": len(vocab), "pad_id": vocab.pad_id, "bos_id": vocab.bos_id,
                   "eos_id": vocab.eos_id}
        if model_family(cfg.model) == "caption_rag":
            options.update(memory_size=len(data.train), unk_id=vocab.unk_id)
        return options

    def samples(self, cfg: CaptionRunConfig, data: TrainData, vocab: Vocabulary, transform) -> ImageTextSamples:
        records = data.train
        if cfg.task.captions_per_image is not None:
            records = [replace(r, captions=r.captions[:cfg.task.captions_per_image]) for r in records]
        return ImageTextSamples(records, transform, unit="caption", tokenizer=vocab, max_len=cfg.task.max_len,
                                skip_bad=cfg.data.skip_bad)

    def objective(self, cfg: CaptionRunConfig, model: nn.Module, data: TrainData, vocab: Vocabulary,
                  transform) -> CaptionTask:
        rows = (fill_memory(model, data.train, vocab, transform, cfg.task.memory_group_key)
                if model_family(cfg.model) == "caption_rag" else None)
        return CaptionTask(vocab, data.val, transform, cfg.task, rows)

    def extra(self, cfg: CaptionRunConfig, vocab: Vocabulary) -> dict[str, Any]:
        return {"max_len": cfg.task.max_len}

    def load_artifacts(self, folder: Path, config: dict[str, Any]) -> Vocabulary:
        return Vocabulary.load(folder / VOCAB_FILE)
