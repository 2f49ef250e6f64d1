"""Classifying an image with its text: ``vislang.load("runs/cls").classify("icon.png", "happy, smile")``."""

from __future__ import annotations

import torch

from vislang.inference.base import ImageInput
from vislang.inference.image_text import ImageTextPredictor
from vislang.tasks.classify import ClassSpace


class ClassifyPredictor(ImageTextPredictor):
    """A trained image + text classifier with its tokenizer, classes and image preprocessing."""

    task = "classify"

    @property
    def space(self) -> ClassSpace:
        """The classes and how texts are made (class-name words removed)."""
        return self.labels

    @torch.inference_mode()
    def classify(self, image: ImageInput, text: str = "", k: int = 5) -> tuple[list[tuple[str, float]], str]:
        """The ``k`` most probable classes ``[(class, probability)]`` of an image (a path or a PIL image) and
        text, and the text as the model read it (class-name words removed)."""
        x = self.images_tensor([image])                                               # (1, 3, S, S)
        seen = self.space.text(text)
        probs = self.run_texts(x, [seen]).logits.float().softmax(-1)[0].cpu()          # (C,)
        p, idx = probs.topk(min(k, len(probs)))
        return [(self.space.classes[i], float(v)) for v, i in zip(p.tolist(), idx.tolist())], seen
