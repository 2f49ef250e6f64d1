"""Region tagging with a trained tagger: ``vislang.load("runs/regions").tag(["scene.png"])[0].labels("color")``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vislang.inference.base import ImageInput, Predictor


@dataclass
class RegionTags:
    """The attributes of every grid cell of one image.

    Attributes:
        grid_hw: ``(h, w)`` of the grid; cell ``(i, j)`` covers row ``i``, column ``j`` of the image.
        classes: Attribute -> ``(h, w)`` class index of each cell (0: no object there).
        probs: Attribute -> ``(h, w, C)`` class probabilities of each cell.
        values: Attribute -> its class names in index order (``"none"`` first).
    """

    grid_hw: tuple[int, int]
    classes: dict[str, Tensor]
    probs: dict[str, Tensor]
    values: dict[str, list[str]]

    def labels(self, attribute: str) -> list[list[str]]:
        """The value of ``attribute`` in each cell, as ``h`` rows of ``w`` names (``"none"``: no object)."""
        names = self.values[attribute]
        return [[names[c] for c in row] for row in self.classes[attribute].tolist()]


class RegionPredictor(Predictor):
    """A trained region tagger with its attribute values and image preprocessing."""

    task = "regions"

    @property
    def attributes(self) -> dict[str, list[str]]:
        """Attribute -> its values (``"none"`` first), as trained."""
        return self.trained.artifacts.values

    @torch.inference_mode()
    def tag(self, images: Sequence[ImageInput], batch_size: int = 32) -> list[RegionTags]:
        """Tag every grid cell of images given as paths or PIL images (bad files raise
        :class:`vislang.errors.ImageError`)."""
        out: list[RegionTags] = []
        for _, x in self.batches(images, batch_size):
            res = self.model(x)                                                          # logits (B, N, C) each
            h, w = res.grid_hw
            probs = {k: v.float().softmax(-1).view(v.shape[0], h, w, -1).cpu() for k, v in res.logits.items()}
            for i in range(next(iter(probs.values())).shape[0]):
                p = {k: v[i] for k, v in probs.items()}                                  # (h, w, C)
                out.append(RegionTags((h, w), {k: v.argmax(-1) for k, v in p.items()}, p, self.attributes))
        return out
