"""Pieces every task's run shares: the data section of a run config and opening its splits."""

from __future__ import annotations

from dataclasses import dataclass

from vislang.data import ImageTextDataset, load_dataset
from vislang.data.transforms import TransformConfig
from vislang.errors import VislangError


@dataclass
class DataConfig:
    """Which data a run trains and validates on (read by :func:`open_split`).

    Attributes:
        name: Registered dataset (``emoji``, ``shapes:size=32``) or path of a manifest / COCO / Karpathy file.
        train_split: Split to train on.
        val_split: Split to validate on.
        root: Data root for registered datasets.
        image_root: Folder image names in COCO / Karpathy / VQA files are relative to.
        image_size: Side of the square model input in pixels.
        augment: Random resized crops and colour jitter when training.
        crop_scale: Area range of the random resized crops.
        jitter: Brightness/contrast/saturation jitter amount.
        hue: Hue jitter amount.
        grayscale: Probability of a grey training image.
        blur: Probability of a blurred training image.
        trim: Crop every image to the square around its content (training, validation and later use; saved
            with the checkpoint), so icons drawn with wide margins and ones filling the frame match in scale.
        zoom_out: Probability of shrinking a training image onto a canvas of its background colour.
        zoom_out_scale: Range of the shrunk image's side as a fraction of the canvas side.
        outline: Probability of drawing a training image in line art: a dark line along its silhouette and
            inner edges (bridges filled icon styles to outlined ones such as OpenMoji).
        flatten: Probability of reducing a training image to a few flat colours (no shading or gradients).
        skip_bad: Leave out samples whose image is missing or unreadable (with a warning) instead of stopping.
        max_train: Use only the first N training records.
        max_val: Use only the first N validation records.
    """

    name: str = "emoji"
    train_split: str = "train"
    val_split: str = "val"
    root: str | None = None
    image_root: str | None = None
    image_size: int = 64
    augment: bool = True
    crop_scale: tuple[float, float] = (0.6, 1.0)
    jitter: float = 0.2
    hue: float = 0.0
    grayscale: float = 0.0
    blur: float = 0.0
    trim: bool = False
    zoom_out: float = 0.0
    zoom_out_scale: tuple[float, float] = (0.6, 1.0)
    outline: float = 0.0
    flatten: float = 0.0
    skip_bad: bool = False
    max_train: int | None = None
    max_val: int | None = None


def transform_config(cfg: DataConfig) -> TransformConfig:
    """The image pipeline settings a data config asks for.

    Raises:
        VislangError: A probability is outside [0, 1], or the crop area or zoom-out range is not
            ``0 < low <= high <= 1``.
    """
    for name in ("grayscale", "blur", "zoom_out", "outline", "flatten"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise VislangError(f"data.{name} is a probability in [0, 1], got {getattr(cfg, name)}")
    low, high = cfg.crop_scale
    if not 0.0 < low <= high <= 1.0:
        raise VislangError(f"data.crop_scale must satisfy 0 < low <= high <= 1, got {tuple(cfg.crop_scale)}")
    low, high = cfg.zoom_out_scale
    if not 0.0 < low <= high <= 1.0:
        raise VislangError(f"data.zoom_out_scale must satisfy 0 < low <= high <= 1, got {tuple(cfg.zoom_out_scale)}")
    return TransformConfig(image_size=cfg.image_size, augment=cfg.augment, crop_scale=tuple(cfg.crop_scale),
                           jitter=cfg.jitter, hue=cfg.hue, grayscale=cfg.grayscale, blur=cfg.blur, trim=cfg.trim,
                           zoom_out=cfg.zoom_out, zoom_out_scale=tuple(cfg.zoom_out_scale),
                           outline=cfg.outline, flatten=cfg.flatten)


def load_split(data: str, split: str | None, *, root: str | None = None, image_root: str | None = None,
               limit: int | None = None, skip_bad: bool = False) -> ImageTextDataset:
    """Load a split, keep its first ``limit`` records and check their images up front (all problems reported
    together; ``skip_bad`` leaves the bad ones out with a warning)."""
    ds = load_dataset(data, split, root=root, image_root=image_root)
    if limit is not None:
        ds = ImageTextDataset(ds.name, ds.split, ds.records[:limit])
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
