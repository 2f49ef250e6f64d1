"""Captioning with a trained model: ``vislang.load("runs/cap").caption(["cat.png"], beam=3)``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vislang.inference.base import ImageInput, Predictor
from vislang.tasks.caption import decode_batch
from vislang.tasks.caption_judge import CaptionJudge


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

    judge: CaptionJudge | None = None
    """Chooses each caption among the model's own and its nearest training images' captions (a retrieval-augmented
    captioner; :class:`~vislang.tasks.caption_judge.CaptionJudge`), or None."""

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

        With a :attr:`judge`, each caption is then the judge's choice.
        """
        return [cap for _, cap in self.iter_captions(images, beam, max_len, batch_size, length_penalty)]

    @torch.inference_mode()
    def iter_captions(self, images: Sequence[ImageInput], beam: int = 1, max_len: int | None = None,
                      batch_size: int = 32, length_penalty: float = 0.0,
                      bad: list[tuple[str, str]] | None = None) -> Iterator[tuple[int, Caption]]:
        """``(position in images, caption)`` as each batch is decoded; the arguments are those of
        :meth:`caption`, and ``bad`` collects the files that fail to decode instead of raising (see
        :meth:`Predictor.batches`)."""
        for positions, x in self.batches(images, batch_size, bad):                      # x: (B, 3, S, S)
            dec = decode_batch(self.model, x, beam, max_len or self.max_len, length_penalty)
            if self.judge is not None:
                dec, _ = self.judge.choose(self.model, x, dec, self._judge_embeddings(images, positions, x),
                                           self.vocab, max_len or self.max_len)
            h, w = dec.grid_hw
            for i, toks in enumerate(dec.tokens):
                words = [self.vocab.itos[t] for t in toks]
                att = dec.attention[i].view(-1, h, w) if dec.attention is not None else None
                yield positions[i], Caption(" ".join(words), words, dec.scores[i], att)

    def _judge_embeddings(self, images: Sequence[ImageInput], positions: list[int], x: Tensor) -> Tensor:
        """The judge's embeddings (B, E) of the batch ``x`` (``images[positions]``, preprocessed for the model)."""
        if self.judge.same_preprocessing(self.trained) or isinstance(images[positions[0]], Tensor):
            return self.judge.embed_images(x)
        as_judge_reads = Predictor(self.judge.space)  # the judge's own preprocessing, as its predictor does it
        return self.judge.embed_images(torch.stack([as_judge_reads.preprocess(images[i]) for i in positions]))
