"""What every predictor shares: opening a trained model folder, its device, eval mode and image batches."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import Tensor

from vislang.data.images import load_image
from vislang.tasks.base import TrainedModel, load_trained
from vislang.utils.tensors import model_device

ImageInput = str | os.PathLike | Image.Image
"""An image given to a predictor: a file path or a PIL image."""


class Predictor:
    """A trained model ready to use: eval mode, its preprocessing, batching and ``torch.inference_mode``.

    Args:
        trained: The opened model folder (:func:`vislang.tasks.base.load_trained`).
    """

    task: ClassVar[str] = ""

    def __init__(self, trained: TrainedModel):
        self.trained = trained
        self.model = trained.model.eval()
        self.transform_cfg = trained.transform_cfg
        self.transform = trained.transform

    @classmethod
    def load(cls, path: str | os.PathLike, checkpoint: str = "best", device: str = "auto") -> Any:
        """Open a run directory (its ``checkpoint``: ``best`` or ``last``) or a model folder of this task."""
        return cls(load_trained(path, cls.task or None, which=checkpoint, device=device))

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @property
    def checkpoint(self) -> Path:
        """The model folder this predictor was loaded from."""
        return self.trained.folder

    @property
    def config(self) -> dict[str, Any]:
        """The folder's ``config.json``."""
        return self.trained.config

    def images_tensor(self, images: Sequence[ImageInput]) -> Tensor:
        """Images (paths or PIL images) as one preprocessed batch ``(B, 3, S, S)`` on the model's device.

        Raises:
            vislang.errors.ImageError: A file is missing or not a decodable image.
        """
        pil = [im if isinstance(im, Image.Image) else load_image(im) for im in images]
        return torch.stack([self.transform(im.convert("RGB")) for im in pil]).to(self.device)


def import_object(path: str) -> Any:
    """The object named ``"package.module:Name"``."""
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
