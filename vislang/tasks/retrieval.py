"""Image-text retrieval as a task of the shared training loop: a contrastive loss per batch, recall at K on
the validation split.

Training batches hold each image once, with one of its captions drawn afresh every epoch (seeded like the
augmentations), and the image's group id (``task.group_key``, the emoji *concept* by default): two images of
the same concept in one batch (its Google and Twitter drawings) are not treated as negatives of each other.

Retrieval is scored per *gallery* (``task.gallery_key``, the emoji art style by default): each caption is
ranked against the images of its own gallery only. Otherwise the Google, Twitter and OpenMoji drawings of one
concept, which share their captions word for word, would count as wrong answers to each other.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from vislang.config import config_to_dict
from vislang.data.loader import ImageTextSamples, build_loader, record_key
from vislang.data.records import Record
from vislang.data.text import VOCAB_FILE, TextTokenizer, Vocabulary
from vislang.data.transforms import build_transform
from vislang.errors import VislangError
from vislang.losses import ContrastiveLoss, TextBankContrastiveLoss
from vislang.metrics.retrieval import DEFAULT_KS, RetrievalScores, retrieval_scores
from vislang.models.dual_encoder import TEXT_MODES, dual_encoder_config
from vislang.models.registry import create_model, list_models
from vislang.models.text_encoders import HF_TOWERS, text_tokenizer
from vislang.tasks.common import DataConfig, open_split, transform_config
from vislang.train import FitResult, TrainConfig, fit, load_weights, seed_everything
from vislang.train.checkpoint import resolve_checkpoint


@dataclass
class RetrievalTaskConfig:
    """Retrieval options (read by :class:`RetrievalTask` and :func:`train_retrieval`).

    Attributes:
        max_len: Longest token sequence of a caption (specials included); longer ones are truncated.
        min_freq: Words seen fewer times in the training captions become ``<unk>`` (vocabulary towers).
        group_key: Record metadata field whose equal values are not negatives of each other in a batch
            (None: every image is its own group).
        gallery_key: Record metadata field splitting images into separate galleries for scoring
            (None: one gallery).
        val_captions: ``"all"`` (every caption is a query) or ``"first"`` (each image's first caption).
        val_batch_size: Images or texts per batch when embedding the validation split.
        pair_views: Train on groups (``group_key``) instead of images: each sample is two images of one group
            (two art styles of a concept, or one image twice when it is alone) with their captions, and an
            image-image contrastive term pulls the two views together (weight ``pair_weight``); the images
            seen per epoch stay the same.
        pair_weight: Weight of the image-image term with ``pair_views``.
        batch_group_key: Record metadata field whose equal values are shuffled into the same training
            batches (``"base"`` for emoji: skin-tone and gender variants of an emoji together, so they are
            each other's negatives and the towers must tell them apart); None: a plain shuffle.
        batch_group_run: With ``batch_group_key``, at most this many samples of one group come together
            (None: the whole group), so that a batch still holds many groups.
        text_bank: Locked text towers only: rank each training image's caption against every distinct
            training caption, not only the batch's (:class:`~vislang.losses.TextBankContrastiveLoss`); the
            captions of its own group (``group_key``) are not negatives. The other skin tones of an emoji are
            then negatives in every step, which a random batch almost never gives.
    """

    max_len: int = 64
    min_freq: int = 1
    group_key: str | None = "concept"
    gallery_key: str | None = "vendor"
    val_captions: str = "all"
    val_batch_size: int = 256
    pair_views: bool = False
    pair_weight: float = 1.0
    batch_group_key: str | None = None
    batch_group_run: int | None = 4
    text_bank: bool = False


@dataclass
class RetrievalRunConfig:
    """Everything a retrieval run needs; saved as ``config.yaml`` in the run directory.

    Attributes:
        model: Registered dual encoder name (``dual_encoder``, ``dual_encoder_minilm``, ...).
        model_kwargs: Overrides for the model builder (``embed_dim``, ``image_encoder``, ...).
        text_encoder: Text tower: ``"scratch"`` (a Transformer over a vocabulary of the training captions),
            ``"gru"``, ``"minilm"``, another registered text encoder, or the directory of a Hugging Face text
            model; None: the model's own.
        text_mode: ``"scratch"``, ``"locked"`` or ``"finetune"``; None: locked for pre-trained towers, scratch
            for the others. Fine-tuning uses ``train.optim.text_encoder_lr``.
        init_from: Run or checkpoint directory whose weights (and vocabulary) start this run, e.g. a run with
            a locked text tower to go on with it unlocked; the architecture must be the same.
        data: Data section.
        task: Retrieval options.
        train: Loop options.
    """

    model: str = "dual_encoder"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    text_encoder: str | None = None
    text_mode: str | None = None
    init_from: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    task: RetrievalTaskConfig = field(default_factory=RetrievalTaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class PairedSamples(Dataset):
    """Training samples that are groups of records (e.g. one emoji concept in several art styles): each gives
    two of the group's images with one caption each, drawn afresh with the sample's seed.

    Args:
        samples: One-image-one-caption samples (``unit="image_caption"``, with ``group_key``) of the records.

    Each sample holds ``image`` ``(2, 3, H, W)`` (the two views), ``tokens``/``tokens2`` (their captions),
    ``group`` and ``index``. A group of one record gives that image twice, differently augmented.
    """

    def __init__(self, samples: ImageTextSamples):
        if samples.unit != "image_caption" or samples.group_key is None:
            raise ValueError("PairedSamples needs unit='image_caption' samples with a group_key")
        self.samples = samples
        groups: dict[str, list[int]] = {}
        for k, (i, _) in enumerate(samples.index):
            groups.setdefault(record_key(samples.records[i], samples.group_key), []).append(k)
        self.groups = list(groups.values())

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | None:
        k, seed = key if isinstance(key, tuple) else (key, None)
        members = self.groups[k]
        rng = random.Random(seed if seed is not None else k)
        first, second = rng.sample(members, 2) if len(members) > 1 else (members[0], members[0])
        seeds = (seed, seed ^ 0x5DEECE66D) if seed is not None else (None, None)
        a = self.samples[(first, seeds[0]) if seeds[0] is not None else first]
        b = self.samples[(second, seeds[1]) if seeds[1] is not None else second]
        if a is None or b is None:
            return None
        out = {"image": torch.stack([a["image"], b["image"]]), "index": a["index"], "group": a["group"]}
        if "tokens" in a:
            out.update(tokens=a["tokens"], tokens2=b["tokens"])
        return out


# ------------------------------------------------------------------------------------------- embedding


def attention_mask(lengths: Tensor, length: int) -> Tensor:
    """``(B, length)`` long mask, 1 at the first ``lengths[b]`` positions of row ``b``."""
    return (torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]).long()


def _pad_to(tokens: Tensor, width: int, pad_id: int) -> Tensor:
    """Right-pad ``(B, L)`` token ids to ``(B, width)``."""
    if tokens.shape[1] == width:
        return tokens
    return torch.nn.functional.pad(tokens, (0, width - tokens.shape[1]), value=pad_id)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def embed_texts(model: nn.Module, tokenizer: TextTokenizer, texts: Sequence[str], max_len: int = 64,
                batch_size: int = 256) -> Tensor:
    """Normalised text embeddings ``(N, E)`` (float32, CPU); texts are batched by length to pad little."""
    return _encode_texts(model.encode_text, model.embed_dim, tokenizer, texts, max_len, batch_size, model_device(model))


@torch.no_grad()
def _encode_texts(encode: Callable[[Tensor, Tensor], Tensor], dim: int, tokenizer: TextTokenizer,
                  texts: Sequence[str], max_len: int, batch_size: int, device: torch.device) -> Tensor:
    """``encode(tokens, mask)`` of ``texts`` ``(N, dim)`` (float32, CPU), batched by length."""
    ids = [tokenizer.encode(t, max_len=max_len) for t in texts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = torch.empty(len(ids), dim)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        lengths = torch.tensor([len(ids[i]) for i in chunk])
        tokens = torch.full((len(chunk), int(lengths.max())), tokenizer.pad_id, dtype=torch.long)
        for row, i in enumerate(chunk):
            tokens[row, :len(ids[i])] = torch.tensor(ids[i])
        emb = encode(tokens.to(device), attention_mask(lengths, tokens.shape[1]).to(device))
        out[torch.tensor(chunk)] = emb.float().cpu()
    return out


class TextBank:
    """Every distinct caption of the training records with its locked text-tower features, for
    :class:`~vislang.losses.TextBankContrastiveLoss`.

    Args:
        model: A dual encoder with a locked text tower (``text_features``, ``project_text``).
        tokenizer: Its tokenizer.
        records: The training records.
        group_key: Record field whose equal values share captions that are not negatives (None: the record).
        max_len: Longest token sequence of a caption.
        batch_size: Texts per batch while encoding.
    """

    def __init__(self, model: nn.Module, tokenizer: TextTokenizer, records: Sequence[Record],
                 group_key: str | None, max_len: int, batch_size: int = 256):
        self.captions = sorted({c for r in records for c in r.captions})
        self.index = {c: i for i, c in enumerate(self.captions)}
        members: dict[str, set[int]] = {}
        for r in records:
            members.setdefault(record_key(r, group_key) if group_key else r.id, set()).update(
                self.index[c] for c in r.captions)
        self.group_captions = {g: torch.tensor(sorted(m)) for g, m in members.items()}
        text_dim = model.text_encoder.out_dim
        self.features = _encode_texts(model.text_features, text_dim, tokenizer, self.captions, max_len,
                                      batch_size, model_device(model))  # (N, D_txt)

    def __len__(self) -> int:
        return len(self.captions)

    def features_on(self, device: torch.device) -> Tensor:
        """The bank's features ``(N, D_txt)`` on ``device`` (moved there once, not every step)."""
        if self.features.device != device:
            self.features = self.features.to(device)
        return self.features

    def targets(self, texts: Sequence[str], groups: Sequence[str]) -> tuple[Tensor, Tensor]:
        """The bank index ``(B,)`` of each caption and the ``(B, N)`` mask of its group's other captions."""
        target = torch.tensor([self.index[t] for t in texts])
        masked = torch.zeros(len(texts), len(self), dtype=torch.bool)
        for row, g in enumerate(groups):
            masked[row, self.group_captions[g]] = True
        masked[torch.arange(len(texts)), target] = False
        return target, masked


@torch.no_grad()
def embed_record_images(model: nn.Module, records: Sequence[Record], transform: Callable[[Any], Tensor],
                        batch_size: int = 256) -> Tensor:
    """Normalised image embeddings ``(N, E)`` (float32, CPU) of the records' images, in order."""
    device = model_device(model)
    loader = build_loader(ImageTextSamples(records, transform, unit="image"), batch_size)
    return torch.cat([model.encode_image(b["image"].to(device)).float().cpu() for b in loader])


def query_texts(records: Sequence[Record], captions: str = "all") -> tuple[list[str], list[int]]:
    """The caption queries of ``records`` and the index of the record each describes.

    Args:
        records: Records with at least one caption each.
        captions: ``"all"`` (every caption) or ``"first"`` (the first caption of each record).
    """
    if captions not in ("all", "first"):
        raise VislangError(f"captions must be 'all' or 'first', not {captions!r}")
    texts, owner = [], []
    for i, rec in enumerate(records):
        for cap in rec.captions[:1] if captions == "first" else rec.captions:
            texts.append(cap)
            owner.append(i)
    return texts, owner


def galleries_of(records: Sequence[Record], key: str | None) -> list[str]:
    """Gallery name of each record: ``meta[key]`` (``"all"`` when ``key`` is None or the record lacks it)."""
    return [str(r.meta.get(key, "all")) if key else "all" for r in records]


@dataclass
class GalleryScores:
    """Retrieval scores with every query ranked within its own gallery.

    Attributes:
        overall: Scores pooled over the galleries (recalls are means over all queries of every gallery).
        per_gallery: Scores of each gallery on its own.
        sizes: Number of images (candidates) of each gallery.
    """

    overall: RetrievalScores
    per_gallery: dict[str, RetrievalScores]
    sizes: dict[str, int]


def gallery_retrieval_scores(image_embeds: Tensor, text_embeds: Tensor, text_image: Sequence[int],
                             galleries: Sequence[str], ks: Sequence[int] = DEFAULT_KS) -> GalleryScores:
    """Recall at K and ranks in both directions, each gallery of images scored on its own.

    Args:
        image_embeds: ``(N_img, E)``.
        text_embeds: ``(N_txt, E)``.
        text_image: ``(N_txt,)`` index of the image each text describes.
        galleries: ``(N_img,)`` gallery name of each image.
        ks: The K of the recalls.
    """
    owner = np.asarray(text_image, dtype=np.int64)
    names = np.asarray(list(galleries))
    per: dict[str, RetrievalScores] = {}
    sizes: dict[str, int] = {}
    image_ranks, text_ranks = [], []
    for name in sorted(set(names.tolist())):
        images = np.flatnonzero(names == name)                                  # gallery's image indices
        local = -np.ones(len(names), dtype=np.int64)
        local[images] = np.arange(len(images))
        texts = np.flatnonzero(np.isin(owner, images))
        scores = retrieval_scores(image_embeds[torch.from_numpy(images)], text_embeds[torch.from_numpy(texts)],
                                  local[owner[texts]], ks)
        per[name], sizes[name] = scores, len(images)
        image_ranks.append(scores.image_ranks)
        text_ranks.append(scores.text_ranks)
    all_image, all_text = np.concatenate(image_ranks), np.concatenate(text_ranks)
    overall = RetrievalScores(image_to_text=_summary(all_image, ks), text_to_image=_summary(all_text, ks),
                              image_ranks=all_image, text_ranks=all_text)
    return GalleryScores(overall, per, sizes)


def subsampled_gallery_scores(image_embeds: Tensor, text_embeds: Tensor, text_image: Sequence[int],
                              galleries: Sequence[str], size: int, draws: int = 10, seed: int = 0,
                              ks: Sequence[int] = DEFAULT_KS) -> dict[str, Any]:
    """Recall at K with every gallery cut down to ``size`` random candidates, averaged over ``draws`` cuts.

    The protocol for comparing with numbers measured on a smaller gallery (COCO's "1K test" beside its 5K
    one): each draw keeps ``size`` images of each gallery (all of a smaller gallery) and their captions as
    the queries; recalls and ranks are pooled over the galleries of a draw, then averaged over the draws.

    Args:
        image_embeds: ``(N_img, E)``.
        text_embeds: ``(N_txt, E)``.
        text_image: ``(N_txt,)`` index of the image each text describes.
        galleries: ``(N_img,)`` gallery name of each image.
        size: Candidates per gallery in each draw.
        draws: Number of random cuts (seeded by ``seed``, the same on every machine).
        seed: Seed of the cuts.
        ks: The K of the recalls.

    Returns:
        ``{"gallery_size", "draws", "text_to_image", "image_to_text"}``, the last two averaged over the draws,
        plus ``"text_to_image_std"`` (standard deviation of each recall over the draws).

    Raises:
        VislangError: ``size`` or ``draws`` is below 1.
    """
    if size < 1 or draws < 1:
        raise VislangError(f"gallery size and draws must be >= 1, got {size} and {draws}")
    owner = np.asarray(text_image, dtype=np.int64)
    names = np.asarray(list(galleries))
    rng = np.random.default_rng(seed)
    per_draw: list[GalleryScores] = []
    for _ in range(draws):
        keep = np.concatenate([rng.permutation(np.flatnonzero(names == g))[:size]
                               for g in sorted(set(names.tolist()))])
        keep.sort()
        local = -np.ones(len(names), dtype=np.int64)
        local[keep] = np.arange(len(keep))
        texts = np.flatnonzero(local[owner] >= 0)
        per_draw.append(gallery_retrieval_scores(image_embeds[torch.from_numpy(keep)],
                                                 text_embeds[torch.from_numpy(texts)], local[owner[texts]],
                                                 names[keep].tolist(), ks))

    def mean(direction: str) -> dict[str, float]:
        rows = [getattr(d.overall, direction) for d in per_draw]
        return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}

    spread = {k: float(np.std([d.overall.text_to_image[k] for d in per_draw]))
              for k in per_draw[0].overall.text_to_image if k.startswith("R@")}
    return {"gallery_size": size, "draws": draws, "text_to_image": mean("text_to_image"),
            "image_to_text": mean("image_to_text"), "text_to_image_std": spread}


def _summary(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(np.mean(ranks))
    return out


def recall_metrics(scores: RetrievalScores, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Flat ``{"t2i_R@1", ..., "i2t_R@1", ..., "rsum"}`` (``rsum``: the sum of all the recalls, in [0, 2*len(ks)])."""
    out = {f"t2i_R@{k}": scores.text_to_image[f"R@{k}"] for k in ks}
    out.update({f"i2t_R@{k}": scores.image_to_text[f"R@{k}"] for k in ks})
    out["rsum"] = sum(out.values())
    return out


# ------------------------------------------------------------------------------------------------ task


class RetrievalTask:
    """Batch -> contrastive loss; validation -> recall at 1/5/10 in both directions on the val split.

    Args:
        tokenizer: The tokenizer of the model's text tower.
        val_records: Validation images with captions.
        eval_transform: Image -> tensor for validation.
        cfg: Task options.
        text_bank: Every training caption, for the image->text half of the loss (``cfg.text_bank``);
            None: the batch's captions.
    """

    monitor = "rsum"
    mode = "max"

    def __init__(self, tokenizer: TextTokenizer, val_records: Sequence[Record],
                 eval_transform: Callable[[Any], Tensor], cfg: RetrievalTaskConfig | None = None,
                 text_bank: TextBank | None = None):
        self.cfg = cfg or RetrievalTaskConfig()
        self.tokenizer, self.val_records, self.eval_transform = tokenizer, list(val_records), eval_transform
        self.loss = ContrastiveLoss()
        self.text_bank, self.bank_loss = text_bank, TextBankContrastiveLoss()

    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        tokens, lengths, images = batch["tokens"], batch["tokens_lengths"], batch["image"]
        groups = None
        if "group" in batch:
            ids: dict[str, int] = {}
            groups = torch.tensor([ids.setdefault(g, len(ids)) for g in batch["group"]], device=tokens.device)
        paired = images.dim() == 5                                              # (B, 2, 3, H, W) views
        if paired:
            b = images.shape[0]
            images = images.transpose(0, 1).reshape(2 * b, *images.shape[2:])  # (2B, 3, H, W): firsts, seconds
            width = max(tokens.shape[1], batch["tokens2"].shape[1])
            tokens = torch.cat([_pad_to(tokens, width, self.tokenizer.pad_id),
                                _pad_to(batch["tokens2"], width, self.tokenizer.pad_id)])  # (2B, L)
            lengths = torch.cat([lengths, batch["tokens2_lengths"]])
            groups = torch.cat([groups, groups]) if groups is not None else torch.arange(b).repeat(2)
        mask = attention_mask(lengths.to(tokens.device), tokens.shape[1])      # (B', L)
        out = model(images, tokens, mask)
        if self.text_bank is not None and not paired:
            bank = self.text_bank
            target, masked = bank.targets(batch["text"], batch["group"] if "group" in batch else batch["id"])
            device = out.image_embeds.device
            bank_embeds = model.project_text(bank.features_on(device))            # (N, E)
            return self.bank_loss(out.image_embeds, out.text_embeds, out.logit_scale, groups, bank_embeds,
                                  target.to(device), masked.to(device))
        losses = self.loss(out.image_embeds, out.text_embeds, out.logit_scale, groups)
        if paired:
            first, second = out.image_embeds[:b], out.image_embeds[b:]          # (B, E) each
            views = self.loss(first, second, out.logit_scale, groups[:b])
            losses["image_text"] = losses["loss"].detach()
            losses["image_image"] = views["loss"].detach()
            losses["loss"] = losses["loss"] + self.cfg.pair_weight * views["loss"]
        return losses

    def validate(self, model: nn.Module) -> dict[str, float]:
        if not self.val_records:
            return {}
        texts, owner = query_texts(self.val_records, self.cfg.val_captions)
        images = embed_record_images(model, self.val_records, self.eval_transform, self.cfg.val_batch_size)
        text_emb = embed_texts(model, self.tokenizer, texts, self.cfg.max_len, self.cfg.val_batch_size)
        scores = gallery_retrieval_scores(images, text_emb, owner, galleries_of(self.val_records, self.cfg.gallery_key))
        return recall_metrics(scores.overall)

    def save_artifacts(self, directory: Path) -> None:
        if isinstance(self.tokenizer, Vocabulary):
            self.tokenizer.save(Path(directory) / VOCAB_FILE)


# ------------------------------------------------------------------------------------------- training


def resolve_text_tower(cfg: RetrievalRunConfig) -> tuple[str, dict[str, Any], str]:
    """The registered text tower, its builder kwargs and the text mode a run config asks for.

    Raises:
        VislangError: The model is not a dual encoder, ``text_encoder`` names nothing known, or
            ``text_mode`` is not one of scratch/locked/finetune.
    """
    preset = dual_encoder_config(cfg.model, **cfg.model_kwargs)
    name, kwargs = preset.text_encoder, dict(preset.text_encoder_kwargs)
    choice = cfg.text_encoder
    if choice in (None, ""):
        pass
    elif choice == "scratch":
        if name in HF_TOWERS or name.startswith("text_gru"):
            name, kwargs = "text_transformer", {}
    elif choice == "gru":
        if not name.startswith("text_gru"):
            name, kwargs = "text_gru", {}
    elif choice == "minilm":
        name, kwargs = "minilm", {}
    elif choice in list_models("text_*"):
        name, kwargs = choice, {}
    elif Path(choice).is_dir():
        name, kwargs = "hf_text", {"path": str(Path(choice).resolve())}
    else:
        raise VislangError(f"text encoder {choice!r}: not 'scratch', 'gru', 'minilm', a registered text encoder "
                           f"({', '.join(list_models('text_*'))}) or the directory of a Hugging Face text model")
    if cfg.text_mode:
        mode = cfg.text_mode
    elif choice and "text_mode" not in cfg.model_kwargs:  # another tower: its natural mode
        mode = "locked" if name in HF_TOWERS else "scratch"
    else:
        mode = preset.text_mode
    if mode not in TEXT_MODES:
        raise VislangError(f"text mode {mode!r}: use one of {', '.join(TEXT_MODES)}")
    dual_encoder_config(cfg.model, **{**cfg.model_kwargs, "text_encoder": name, "text_mode": mode})  # checks
    return name, kwargs, mode


def train_retrieval(cfg: RetrievalRunConfig, run_dir: str | os.PathLike, resume: bool = False) -> FitResult:
    """Build the data, tokenizer, dual encoder and task from ``cfg`` and run the shared training loop."""
    run_dir = Path(run_dir)
    if cfg.task.val_captions not in ("all", "first"):
        raise VislangError(f"task.val_captions must be 'all' or 'first', not {cfg.task.val_captions!r}")
    if cfg.task.batch_group_run is not None and cfg.task.batch_group_run < 1:
        raise VislangError(f"task.batch_group_run must be a number >= 1 (or null), not {cfg.task.batch_group_run}")
    if cfg.task.batch_group_key is not None and cfg.task.pair_views:
        raise VislangError("task.batch_group_key and task.pair_views do not go together: pair_views already "
                           "draws each training sample from a group")
    if cfg.task.text_bank and cfg.task.pair_views:
        raise VislangError("task.text_bank and task.pair_views do not go together: use one of them")
    text_name, text_kwargs, text_mode = resolve_text_tower(cfg)
    train_ds = open_split(cfg.data, cfg.data.train_split, cfg.data.max_train)
    val_records: list[Record] = []
    if cfg.data.val_split:
        val_records = [r for r in open_split(cfg.data, cfg.data.val_split, cfg.data.max_val) if r.captions]
    train_records = [r for r in train_ds if r.captions]
    if not train_records:
        raise VislangError(f"{cfg.data.name} [{cfg.data.train_split}] has no captions to train a retrieval "
                           "model on")
    key = cfg.task.batch_group_key
    if key is not None and not any(key in r.meta for r in train_records):
        raise VislangError(f"task.batch_group_key: no training record of {cfg.data.name} has the field {key!r}")
    init = resolve_checkpoint(cfg.init_from) if cfg.init_from else None
    tokenizer = text_tokenizer(text_name, text_kwargs)
    if tokenizer is None:
        last_vocab = run_dir / "checkpoints" / "last" / VOCAB_FILE
        if resume and last_vocab.exists():
            tokenizer = Vocabulary.load(last_vocab)
        elif init is not None and (init / VOCAB_FILE).exists():
            tokenizer = Vocabulary.load(init / VOCAB_FILE)
        else:
            tokenizer = Vocabulary.build((c for r in train_records for c in r.captions), min_freq=cfg.task.min_freq)
        text_kwargs = {**text_kwargs, "vocab_size": len(tokenizer), "pad_id": tokenizer.pad_id}
        if text_name.startswith("text_transformer"):
            text_kwargs["max_len"] = cfg.task.max_len
    kwargs = {**cfg.model_kwargs, "text_encoder": text_name, "text_encoder_kwargs": text_kwargs,
              "text_mode": text_mode}
    if text_mode == "finetune" and cfg.train.optim.text_encoder_lr is None:
        print(f"note: fine-tuning the text tower at the model's learning rate {cfg.train.optim.lr:g}; set "
              "train.optim.text_encoder_lr (--text-lr) for a gentler one", file=sys.stderr)
    seed_everything(cfg.train.seed)  # a reproducible initialisation
    model = create_model(cfg.model, **kwargs)
    if init is not None and not resume:
        load_weights(model, init)
    tf_cfg = transform_config(cfg.data)
    train_tf = build_transform(tf_cfg, train=True)
    samples = ImageTextSamples(train_records, train_tf, unit="image_caption",
                               tokenizer=tokenizer, max_len=cfg.task.max_len, skip_bad=cfg.data.skip_bad,
                               group_key=cfg.task.group_key, batch_group_key=cfg.task.batch_group_key,
                               batch_group_run=cfg.task.batch_group_run)
    if cfg.task.pair_views:
        if cfg.task.group_key is None:
            raise VislangError("task.pair_views needs task.group_key (the field whose records are views of one "
                               "thing, e.g. concept)")
        samples = PairedSamples(samples)
    bank = None
    if cfg.task.text_bank:
        if text_mode != "locked":
            raise VislangError(f"task.text_bank needs a locked text tower (text_mode locked), not {text_mode!r}: "
                               "the bank's text features are computed once; set task.text_bank=false")
        bank = TextBank(model, tokenizer, train_records, cfg.task.group_key, cfg.task.max_len,
                        cfg.task.val_batch_size)
    task = RetrievalTask(tokenizer, val_records, build_transform(tf_cfg), cfg.task, bank)
    if getattr(model, "cache_text", False):  # a locked tower: encode each distinct caption once, by length
        captions = sorted({c for r in [*train_records, *val_records] for c in r.captions})
        embed_texts(model, tokenizer, captions, cfg.task.max_len, cfg.task.val_batch_size)
    spec = {"name": cfg.model, "kwargs": kwargs, "task": "retrieval", "transform": asdict(tf_cfg),
            "max_len": cfg.task.max_len,
            "tokenizer": VOCAB_FILE if isinstance(tokenizer, Vocabulary) else "text_encoder"}
    return fit(model, task, samples, cfg.train, run_dir, model_spec=spec, pad_id=tokenizer.pad_id,
               resume=resume, config_to_save=config_to_dict(cfg))
