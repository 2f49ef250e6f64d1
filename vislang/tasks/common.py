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
    skip_bad: bool = False
    max_train: int | None = None
    max_val: int | None = None


def transform_config(cfg: DataConfig) -> TransformConfig:
    """The image pipeline settings a data config asks for.

    Raises:
        VislangError: A probability is outside [0, 1] or the crop area range is not ``0 < low <= high <= 1``.
    """
    for name in ("grayscale", "blur"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise VislangError(f"data.{name} is a probability in [0, 1], got {getattr(cfg, name)}")
    low, high = cfg.crop_scale
    if not 0.0 < low <= high <= 1.0:
        raise VislangError(f"data.crop_scale must satisfy 0 < low <= high <= 1, got {tuple(cfg.crop_scale)}")
    return TransformConfig(image_size=cfg.image_size, augment=cfg.augment, crop_scale=tuple(cfg.crop_scale),
                           jitter=cfg.jitter, hue=cfg.hue, grayscale=cfg.grayscale, blur=cfg.blur)


def open_split(cfg: DataConfig, split: str, limit: int | None = None) -> ImageTextDataset:
    """Load a split, check every image up front (all problems reported together), keep the first ``limit``."""
    ds = load_dataset(cfg.name, split, root=cfg.root, image_root=cfg.image_root)
    if limit is not None:
        ds = ImageTextDataset(ds.name, ds.split, ds.records[:limit])
    return ds.check_images(skip_bad=cfg.skip_bad)
