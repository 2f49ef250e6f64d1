"""Classifying an image with its text: ``vislang.load("runs/cls").classify("icon.png", "happy, smile")``."""

from __future__ import annotations

import torch

from vislang.data.text import TextTokenizer
from vislang.inference.base import ImageInput, Predictor
from vislang.tasks.classify import ClassSpace
from vislang.tasks.image_text import run_fusion
from vislang.utils.tensors import pad_sequences


class ClassifyPredictor(Predictor):
    """A trained image + text classifier with its tokenizer, classes and image preprocessing."""

    task = "classify"

    @property
    def tokenizer(self) -> TextTokenizer:
        return self.trained.artifacts.tokenizer

    @property
    def space(self) -> ClassSpace:
        """The classes and how texts are made (class-name words removed)."""
        return self.trained.artifacts.labels

    @property
    def max_len(self) -> int:
        """Longest text in tokens, as trained."""
        return self.trained.artifacts.max_len

    @torch.inference_mode()
    def classify(self, image: ImageInput, text: str = "", k: int = 5) -> tuple[list[tuple[str, float]], str]:
        """The ``k`` most probable classes ``[(class, probability)]`` of an image (a path or a PIL image) and
        text, and the text as the model read it (class-name words removed)."""
        x = self.images_tensor([image])                                               # (1, 3, S, S)
        seen = self.space.text(text)
        tokens, lengths = pad_sequences([self.tokenizer.encode(seen, max_len=self.max_len)],
                                        self.tokenizer.pad_id)                       # (1, L), (1,)
        probs = run_fusion(self.model, x, tokens, lengths).logits.float().softmax(-1)[0].cpu()  # (C,)
        p, idx = probs.topk(min(k, len(probs)))
        return [(self.space.classes[i], float(v)) for v, i in zip(p.tolist(), idx.tolist())], seen
