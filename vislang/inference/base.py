"""What every predictor shares: opening a trained model folder, its device, eval mode and image batches."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import Tensor

from vislang.data.images import load_image
from vislang.errors import ImageError
from vislang.tasks.base import TrainedModel, load_trained
from vislang.utils.tensors import model_device

ImageInput = str | os.PathLike | Image.Image | Tensor
"""An image given to a predictor: a file path, a PIL image, or a ``(3, S, S)`` tensor of :meth:`Predictor.preprocess`."""


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

    @property
    def decode_side(self) -> int:
        """Shorter side (pixels) image files are decoded at, at least (:func:`vislang.data.images.load_image`):
        8 times the model's image size and at least 512, 4 times that with ``trim``.

        The transform's resize makes a box-filter reduction of its own, so reducing first changes the tensor
        only through the reduced image's rounded size, an error that shrinks with this side: measured on
        drawings of 2,100-5,200 px (hard edges, PNG and JPEG, image sizes 16-64), at most 0.55 grey levels on
        average and 15 at an edge. ``trim`` crops to the content first, which may be a small part of the
        image and is found on the reduced one, hence the larger margin: at most 0.85 levels on average and 32
        at an edge for drawings 12-60 % of the shorter side wide.
        """
        side = max(8 * self.transform_cfg.image_size, 512)
        return 4 * side if self.transform_cfg.trim else side

    def preprocess(self, image: ImageInput) -> Tensor:
        """One image as a preprocessed ``(3, S, S)`` CPU tensor: a file is decoded at :attr:`decode_side`
        and its pixels dropped once transformed; a tensor is taken as already preprocessed.

        Raises:
            vislang.errors.ImageError: A file is missing or not a decodable image.
        """
        if isinstance(image, Tensor):
            return image
        im = image if isinstance(image, Image.Image) else load_image(image, min_side=self.decode_side)
        return self.transform(im.convert("RGB"))

    def images_tensor(self, images: Sequence[ImageInput]) -> Tensor:
        """Images (paths or PIL images) as one preprocessed batch ``(B, 3, S, S)`` on the model's device.

        Raises:
            vislang.errors.ImageError: A file is missing or not a decodable image.
        """
        return torch.stack([self.preprocess(im) for im in images]).to(self.device)

    def batches(self, images: Sequence[ImageInput], batch_size: int,
                bad: list[tuple[str, str]] | None = None) -> Iterator[tuple[list[int], Tensor]]:
        """``(positions, (B, 3, S, S) batch on the model's device)`` for ``batch_size`` images at a time,
        decoded one by one (one full-size image alive at a time).

        Args:
            images: Paths or PIL images.
            batch_size: Images per batch.
            bad: Where to collect ``(path, reason)`` of the files that fail to decode, leaving them out of
                their batch (a batch left empty is skipped); None: raise the first one's error.

        Raises:
            vislang.errors.ImageError: A file is missing or not a decodable image, and ``bad`` is None.
        """
        for start in range(0, len(images), batch_size):
            positions, xs = [], []
            for i in range(start, min(start + batch_size, len(images))):
                try:
                    xs.append(self.preprocess(images[i]))
                except ImageError as e:
                    if bad is None:
                        raise
                    bad.append((e.path, e.reason))
                    continue
                positions.append(i)
            if xs:
                yield positions, torch.stack(xs).to(self.device)


def import_object(path: str) -> Any:
    """The object named ``"package.module:Name"``."""
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
