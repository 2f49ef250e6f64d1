"""Captioning a trained run's images from Python: ``Captioner.load(run).caption(paths)``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from vislang.data.images import load_image
from vislang.data.text import VOCAB_FILE, Vocabulary
from vislang.data.transforms import TransformConfig, build_transform
from vislang.errors import VislangError
from vislang.tasks.caption import decode_batch
from vislang.train.checkpoint import load_model, read_model_json, resolve_checkpoint
from vislang.train.loop import resolve_device


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


def task_checkpoint(run: str | os.PathLike, which: str, task: str, kind: str) -> tuple[Path, dict]:
    """The checkpoint directory of ``run`` (:func:`resolve_checkpoint`) and its ``model.json``, checked to be
    a ``task`` checkpoint (``kind`` names it in the error, e.g. "a VQA").

    Raises:
        VislangError: Not a run or checkpoint directory, or a checkpoint of another task.
    """
    ckpt = resolve_checkpoint(run, which)
    spec = read_model_json(ckpt)
    if spec.get("task") != task:
        raise VislangError(f"{ckpt}: not {kind} checkpoint (task: {spec.get('task')!r}); train one with "
                           f"`vislang train {task}`")
    return ckpt, spec


class Captioner:
    """A trained captioner with its vocabulary and image preprocessing.

    Args:
        model: The captioning model.
        vocab: Its vocabulary.
        transform_cfg: The image preprocessing it was trained with.
        max_len: Longest caption in tokens.
    """

    def __init__(self, model: torch.nn.Module, vocab: Vocabulary, transform_cfg: TransformConfig, max_len: int = 24):
        self.model, self.vocab, self.max_len = model.eval(), vocab, max_len
        self.transform_cfg = transform_cfg
        self.transform = build_transform(transform_cfg, train=False)

    @classmethod
    def load(cls, run: str | os.PathLike, checkpoint: str = "best", device: str = "auto") -> Captioner:
        """Load from a run directory (``checkpoint``: ``best`` or ``last``) or a checkpoint directory."""
        ckpt, spec = task_checkpoint(run, checkpoint, "caption", "a captioning")
        tf = TransformConfig.from_dict(spec["transform"])
        model = load_model(ckpt, resolve_device(device))
        return cls(model, Vocabulary.load(ckpt / VOCAB_FILE), tf, int(spec.get("max_len", 24)))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def caption(self, images: Sequence[str | os.PathLike | Image.Image], beam: int = 1,
                max_len: int | None = None, batch_size: int = 32, length_penalty: float = 0.0) -> list[Caption]:
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
            chunk = [im if isinstance(im, Image.Image) else load_image(im) for im in images[start:start + batch_size]]
            x = torch.stack([self.transform(im.convert("RGB")) for im in chunk]).to(self.device)
            dec = decode_batch(self.model, x, beam, max_len or self.max_len, length_penalty)
            h, w = dec.grid_hw
            for i, toks in enumerate(dec.tokens):
                words = [self.vocab.itos[t] for t in toks]
                att = dec.attention[i].view(-1, h, w) if dec.attention is not None else None
                out.append(Caption(" ".join(words), words, dec.scores[i], att))
        return out
