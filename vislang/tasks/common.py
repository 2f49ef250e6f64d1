"""Pieces every task's run shares: the data section of a run config and opening its splits."""

from __future__ import annotations

from dataclasses import dataclass, field

from vislang.data import ImageTextDataset, load_dataset
from vislang.data.transforms import TransformConfig
from vislang.errors import VislangError


@dataclass
class DataConfig:
    """Which data a run trains and validates on (read by :func:`open_split`), and how its images are prepared.

    Attributes:
        name: Registered dataset (``emoji``, ``shapes:size=32``) or path of a manifest / COCO / Karpathy file.
        train_split: Split to train on.
        val_split: Split to validate on; several joined by ``+`` (``val+val_new_style``) are each validated,
            and the mean of their monitored metric picks the best checkpoint.
        root: Data root for registered datasets.
        image_root: Folder image names in COCO / Karpathy / VQA files are relative to.
        skip_bad: Leave out samples whose image is missing or unreadable (with a warning) instead of stopping.
        max_train: Use only the first N training records.
        max_val: Use only the first N validation records.
        transform: The image pipeline (size, normalisation, trim, augmentations); saved in the model folder as
            ``preprocessor.json`` (``data.transform.image_size=48``, ``data.transform.trim=true``, ...).
    """

    name: str = "emoji"
    train_split: str = "train"
    val_split: str = "val"
    root: str | None = None
    image_root: str | None = None
    skip_bad: bool = False
    max_train: int | None = None
    max_val: int | None = None
    transform: TransformConfig = field(default_factory=TransformConfig)


def val_splits(cfg: DataConfig) -> list[str]:
    """The validation splits of a data config (``val+val_new_style`` -> two; empty: none).

    Raises:
        VislangError: A split is named twice or left empty (``val+``).
    """
    if not cfg.val_split:
        return []
    names = cfg.val_split.split("+")
    if "" in names or len(set(names)) != len(names):
        raise VislangError(f"data.val_split: name each validation split once, joined by '+', got '{cfg.val_split}'")
    return names


def transform_config(cfg: DataConfig) -> TransformConfig:
    """The image pipeline settings of a data config, checked.

    Raises:
        VislangError: A probability is outside [0, 1], or the crop area or zoom-out range is not
            ``0 < low <= high <= 1``.
    """
    tf = cfg.transform
    for name in ("grayscale", "blur", "hflip", "zoom_out", "outline", "flatten"):
        if not 0.0 <= getattr(tf, name) <= 1.0:
            raise VislangError(f"data.transform.{name} is a probability in [0, 1], got {getattr(tf, name)}")
    for name in ("crop_scale", "zoom_out_scale"):
        low, high = getattr(tf, name)
        if not 0.0 < low <= high <= 1.0:
            raise VislangError(f"data.transform.{name} must satisfy 0 < low <= high <= 1, got {tuple(getattr(tf, name))}")
    if tf.image_size < 1:
        raise VislangError(f"data.transform.image_size must be >= 1, got {tf.image_size}")
    return tf


def check_at_least_one(**values: int | None) -> None:
    """Refuse a count option below 1 (``limit``, ``beam``, ``batch_size``; None means unset) in one line.

    Raises:
        VislangError: Naming the first such option and its value.
    """
    for name, value in values.items():
        if value is not None and value < 1:
            raise VislangError(f"{name.replace('_', ' ')} must be at least 1, got {value}")


def load_split(data: str, split: str | None, *, root: str | None = None, image_root: str | None = None,
               limit: int | None = None, skip_bad: bool = False) -> ImageTextDataset:
    """Load a split, keep its first ``limit`` records and check their images up front (all problems reported
    together; ``skip_bad`` leaves the bad ones out with a warning)."""
    check_at_least_one(limit=limit)
    ds = load_dataset(data, split, root=root, image_root=image_root)
    if limit is not None:
        ds = ImageTextDataset(ds.name, ds.split, ds.records[:limit], ds.sources)
    return ds.check_images(skip_bad=skip_bad)


def open_split(cfg: DataConfig, split: str, limit: int | None = None) -> ImageTextDataset:
    """:func:`load_split` with the data section of a run's config."""
    return load_split(cfg.name, split, root=cfg.root, image_root=cfg.image_root, limit=limit, skip_bad=cfg.skip_bad)


# ------------------------------------------------------------------- image + text tasks (VQA, classify)

MODALITY_MODES = ("both", "text", "image")
"""What an image + text model is given: both, the text alone (image blanked) or the image alone (text blanked)."""


def blank_inputs(images, tokens, lengths, *, blank_image=None, blank_text=None, bos_id: int = 1,
                 eos_id: int = 2, pad_id: int = 0):
    """Blank a modality of some samples: a blanked image becomes all zeros (the mean image after the ImageNet
    normalisation), a blanked text the empty text ``[BOS, EOS]``.

    Args:
        images: ``(B, 3, H, W)``.
        tokens: ``(B, L)`` token ids.
        lengths: ``(B,)`` real tokens of each row.
        blank_image: ``(B,)`` bool, rows whose image is blanked (None: none).
        blank_text: ``(B,)`` bool, rows whose text is blanked (None: none).

    Returns:
        New ``images``, ``tokens`` and ``lengths`` (the inputs are not modified).
    """
    import torch

    if blank_image is not None and bool(blank_image.any()):
        images = images * (~blank_image).to(images.dtype)[:, None, None, None]
    if blank_text is not None and bool(blank_text.any()):
        tokens, lengths = tokens.clone(), lengths.clone()
        if tokens.shape[1] < 2:
            tokens = torch.nn.functional.pad(tokens, (0, 2 - tokens.shape[1]), value=pad_id)
        tokens[blank_text] = pad_id
        tokens[blank_text, 0] = bos_id
        tokens[blank_text, 1] = eos_id
        lengths[blank_text] = 2
    return images, tokens, lengths


def modality_dropout_masks(batch_size: int, p: float, device):
    """Per-sample masks for modality dropout: each sample loses its image with probability ``p`` and,
    otherwise, its text with probability ``p / (1 - p)`` (so each is blanked with probability ``p``, never
    both). Drawn from torch's global RNG (seeded and checkpointed by the training loop)."""
    import torch

    if p <= 0:
        return None, None
    u = torch.rand(batch_size, device=device)
    return u < p, (u >= p) & (u < 2 * p)
