"""Embedding with a dual encoder: texts batched by length, the images of records, the bank of training
captions of a locked text tower, and the fingerprint that names a model folder's weights."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vislang.data.loader import ImageTextSamples, build_loader, record_key
from vislang.data.records import Record
from vislang.data.text import TextTokenizer
from vislang.utils.folder import WEIGHTS_FILE, sha256_file
from vislang.utils.tensors import lengths_to_mask, model_device, pad_sequences


@torch.no_grad()
def encode_texts(encode: Callable[[Tensor, Tensor], Tensor], dim: int, tokenizer: TextTokenizer,
                 texts: Sequence[str], max_len: int, batch_size: int, device: torch.device) -> Tensor:
    """``encode(tokens, mask)`` of ``texts`` ``(N, dim)`` (float32, CPU), batched by length to pad little."""
    ids = [tokenizer.encode(t, max_len=max_len) for t in texts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = torch.empty(len(ids), dim)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        tokens, lengths = pad_sequences([ids[i] for i in chunk], tokenizer.pad_id)          # (B, L), (B,)
        mask = lengths_to_mask(lengths, tokens.shape[1], dtype=torch.long)                 # (B, L)
        out[torch.tensor(chunk)] = encode(tokens.to(device), mask.to(device)).float().cpu()
    return out


def embed_texts(model: nn.Module, tokenizer: TextTokenizer, texts: Sequence[str], max_len: int = 64,
                batch_size: int = 256) -> Tensor:
    """Normalised text embeddings ``(N, E)`` (float32, CPU) of a dual encoder."""
    return encode_texts(model.encode_text, model.embed_dim, tokenizer, texts, max_len, batch_size,
                        model_device(model))


@torch.no_grad()
def embed_record_images(model: nn.Module, records: Sequence[Record], transform: Callable[[Any], Tensor],
                        batch_size: int = 256) -> Tensor:
    """Normalised image embeddings ``(N, E)`` (float32, CPU) of the records' images, in order."""
    device = model_device(model)
    loader = build_loader(ImageTextSamples(records, transform, unit="image"), batch_size)
    return torch.cat([model.encode_image(b["image"].to(device)).float().cpu() for b in loader])


def model_fingerprint(folder: str | os.PathLike, config: dict[str, Any]) -> str:
    """A stable id of a model folder's weights: ``<model name>-<first 16 hex digits of their sha256>``
    (the digest recorded in ``config.json``, else that of ``model.safetensors``); saved indexes compare it."""
    digest = config.get("weights_sha256") or sha256_file(Path(folder) / WEIGHTS_FILE)
    return f"{config['model']}-{digest[:16]}"


class TextBank:
    """Every distinct caption of the training records with its locked text-tower features, for
    :class:`~vislang.losses.TextBankContrastiveLoss`.

    Args:
        model: A dual encoder with a locked text tower (``text_features``, ``project_text``).
        tokenizer: Its tokenizer.
        records: The training records.
        group_key: Record field whose equal values share captions that are not negatives (None: the record).
        max_len: Longest token sequence of a caption.
        batch_size: Texts per batch while encoding.
    """

    def __init__(self, model: nn.Module, tokenizer: TextTokenizer, records: Sequence[Record],
                 group_key: str | None, max_len: int, batch_size: int = 256):
        self.captions = sorted({c for r in records for c in r.captions})
        self.index = {c: i for i, c in enumerate(self.captions)}
        members: dict[str, set[int]] = {}
        for r in records:
            members.setdefault(record_key(r, group_key) if group_key else r.id, set()).update(
                self.index[c] for c in r.captions)
        self.group_captions = {g: torch.tensor(sorted(m)) for g, m in members.items()}
        self._encode = lambda: encode_texts(model.text_features, model.text_encoder.out_dim, tokenizer,
                                            self.captions, max_len, batch_size, model_device(model))
        self._features: Tensor | None = None

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def features(self) -> Tensor:
        """The locked tower's features of every caption, ``(N, D_txt)``: encoded on first use (at the first
        training step; a run that only validates never encodes them)."""
        if self._features is None:
            self._features = self._encode()
        return self._features

    def features_on(self, device: torch.device) -> Tensor:
        """The bank's features ``(N, D_txt)`` on ``device`` (moved there once, not every step)."""
        if self.features.device != device:
            self._features = self.features.to(device)
        return self.features

    def targets(self, texts: Sequence[str], groups: Sequence[str]) -> tuple[Tensor, Tensor]:
        """The bank index ``(B,)`` of each caption and the ``(B, N)`` mask of its group's other captions."""
        target = torch.tensor([self.index[t] for t in texts])
        masked = torch.zeros(len(texts), len(self), dtype=torch.bool)
        for row, g in enumerate(groups):
            masked[row, self.group_captions[g]] = True
        masked[torch.arange(len(texts)), target] = False
        return target, masked
