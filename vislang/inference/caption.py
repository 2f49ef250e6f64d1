"""Captioning with a trained model: ``vislang.load("runs/cap").caption(["cat.png"], beam=3)``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vislang.inference.base import ImageInput, Predictor
from vislang.tasks.caption import decode_batch


@dataclass
class Caption:
    """One generated caption.

    Attributes:
        text: The caption.
        words: Its words (vocabulary tokens).
        score: Sum of token log-probabilities.
        attention: (L, h, w) attention weights per emitted token (EOS step included), or None.
    """

    text: str
    words: list[str]
    score: float
    attention: Tensor | None


class CaptionPredictor(Predictor):
    """A trained captioner with its vocabulary and image preprocessing."""

    task = "caption"

    @property
    def vocab(self):
        return self.trained.artifacts

    @property
    def max_len(self) -> int:
        """Longest caption in tokens, as trained."""
        return int(self.config.get("max_len", 24))

    @torch.inference_mode()
    def caption(self, images: Sequence[ImageInput], beam: int = 1, max_len: int | None = None,
                batch_size: int = 32, length_penalty: float = 0.0) -> list[Caption]:
        """Caption images given as paths or PIL images (bad files raise :class:`vislang.errors.ImageError`).

        Args:
            images: Paths or PIL images.
            beam: Beam size (1: greedy).
            max_len: Longest caption in tokens (default: the training length).
            batch_size: Images decoded at once.
            length_penalty: Beam search ranks finished captions by ``log p / length ** length_penalty``
                (0: the plain sum of log-probabilities, which favours short captions; 1: the mean per token).
        """
        out: list[Caption] = []
        for start in range(0, len(images), batch_size):
            x = self.images_tensor(images[start:start + batch_size])                  # (B, 3, S, S)
            dec = decode_batch(self.model, x, beam, max_len or self.max_len, length_penalty)
            h, w = dec.grid_hw
            for i, toks in enumerate(dec.tokens):
                words = [self.vocab.itos[t] for t in toks]
                att = dec.attention[i].view(-1, h, w) if dec.attention is not None else None
                out.append(Caption(" ".join(words), words, dec.scores[i], att))
        return out
