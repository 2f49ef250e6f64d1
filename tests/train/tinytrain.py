"""A tiny real model and a real classification task on the ``shapes`` dataset for the training-loop tests.

Imported by the test modules and by the scripts they run in subprocesses (which put this folder on
``sys.path``), so both sides train exactly the same thing.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislang.data import load_dataset
from vislang.data.loader import ImageTextSamples
from vislang.data.transforms import TransformConfig, build_transform
from vislang.models.registry import create_model, register_model

SHAPES_SPEC = "shapes:n_train=64,n_val=16,n_test=16,size=32"
CLASSES = ("circle", "square", "triangle", "diamond")
MODEL_NAME = "tests_train_tiny_convnet"


class TinyConvNet(nn.Module):
    """Conv encoder (``image_encoder``) + LayerNorm + dropout + linear head.

    ``(B, 3, H, W)`` -> ``(B, C)``.
    """

    def __init__(self, n_classes: int = len(CLASSES), width: int = 8, dropout: float = 0.1,
                 batchnorm: bool = True):
        super().__init__()
        norm: nn.Module = nn.BatchNorm2d(width) if batchnorm else nn.Identity()
        self.image_encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), norm, nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten())  # (B, 2 * width * 16)
        self.norm = nn.LayerNorm(32 * width)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(32 * width, n_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.dropout(self.norm(self.image_encoder(images))))  # (B, C)


def _build(**kwargs) -> nn.Module:
    return TinyConvNet(**kwargs)


with contextlib.suppress(ValueError):  # already registered (the module imported under two names)
    register_model(MODEL_NAME)(_build)


def make_model(seed: int = 0, **kwargs) -> tuple[nn.Module, dict]:
    """A freshly initialised model (seeded) and its spec for the model folder's ``config.json``."""
    torch.manual_seed(seed)
    return create_model(MODEL_NAME, **kwargs), {"model": MODEL_NAME, "model_config": kwargs}


def make_data(root: Path, augment: bool = True, shard_size: int | None = None) -> tuple[ImageTextSamples, list]:
    """Training samples (one per image, augmented) and the validation records of the shapes dataset; with
    ``shard_size``, the training records are read from WebDataset shards of that size (written once)."""
    train = load_dataset(SHAPES_SPEC, "train", root=root)
    if shard_size is not None:
        train = load_dataset(str(_shards(root, train.records, shard_size)), "train")
    val = load_dataset(SHAPES_SPEC, "val", root=root)
    tf = build_transform(TransformConfig(image_size=32, augment=augment), train=True)
    return ImageTextSamples(train.records, tf, unit="image"), val.records


def _shards(root: Path, records: list, shard_size: int) -> Path:
    """The brace pattern of the training records written as shards under ``root`` (once)."""
    import contextlib
    import os
    import tempfile

    from vislang.data.shards import write_shards

    folder = Path(root) / f"tinytrain-shards-{shard_size}"
    if not folder.exists():
        tmp = Path(tempfile.mkdtemp(dir=root))
        write_shards(records, tmp, shard_size)
        with contextlib.suppress(OSError):  # another process wrote them first
            os.replace(tmp, folder)
    n = len(list(folder.glob("*.tar")))
    return folder / f"{{000000..{n - 1:06d}}}.tar"


class ShapeTask:
    """Classify the shape of the large object; validation accuracy is the monitored metric."""

    monitor = "accuracy"
    mode = "max"

    def __init__(self, val_records: list):
        tf = build_transform(TransformConfig(image_size=32), train=False)
        samples = ImageTextSamples(val_records, tf, unit="image")
        self.val_images = torch.stack([samples[i]["image"] for i in range(len(samples))])  # (N, 3, 32, 32)
        self.val_targets = torch.tensor([CLASSES.index(r.label) for r in val_records])  # (N,)
        self.steps = 0

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, Tensor]:
        self.steps += 1
        target = torch.tensor([CLASSES.index(label) for label in batch["label"]])
        target = target.to(batch["image"].device)
        logits = model(batch["image"])  # (B, C)
        loss = F.cross_entropy(logits, target)
        return {"loss": loss, "accuracy_train": (logits.argmax(-1) == target).float().mean()}

    def validate(self, model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        logits = model(self.val_images.to(device))
        targets = self.val_targets.to(device)
        return {"accuracy": (logits.argmax(-1) == targets).float().mean().item(),
                "val_loss": F.cross_entropy(logits, targets).item()}

    def save_artifacts(self, directory: Path) -> None:
        (Path(directory) / "classes.json").write_text(json.dumps(list(CLASSES)))
