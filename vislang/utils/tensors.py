"""Small tensor helpers shared by the data loader, the models and the tasks: masks, padding, devices."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def lengths_to_mask(lengths: Tensor, max_len: int | None = None, *, dtype: torch.dtype = torch.bool) -> Tensor:
    """The ``(B, T)`` mask that is true (1) at the first ``lengths[b]`` positions of row ``b``.

    Args:
        lengths: ``(B,)`` integer lengths.
        max_len: Width ``T`` of the mask (default: the largest length).
        dtype: ``torch.bool`` (default) or e.g. ``torch.long`` for an ``attention_mask`` of 1s and 0s.

    Returns:
        The mask, on the device of ``lengths``.
    """
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    mask = torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]  # (B, T)
    return mask if dtype == torch.bool else mask.to(dtype)


def pad_sequences(seqs: Sequence[Tensor | Sequence[int]], pad_id: int = 0, *, length: int | None = None,
                  dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """Right-pad sequences of token ids into one batch.

    Args:
        seqs: 1-D tensors or lists of ids.
        pad_id: Value of the padding positions.
        length: Width ``T`` of the batch (default: the longest sequence); must hold every sequence.
        dtype: Of the batch (default: that of the first tensor, else ``torch.long``).

    Returns:
        ``tokens`` ``(B, T)`` and ``lengths`` ``(B,)`` (``torch.long``).

    Raises:
        ValueError: A sequence is longer than ``length``.
    """
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)           # (B,)
    longest = int(lengths.max()) if len(seqs) else 0
    width = longest if length is None else length
    if longest > width:
        raise ValueError(f"a sequence of {longest} tokens does not fit a batch of width {width}")
    if dtype is None:
        dtype = seqs[0].dtype if len(seqs) and isinstance(seqs[0], Tensor) else torch.long
    tokens = torch.full((len(seqs), width), pad_id, dtype=dtype)               # (B, T)
    for b, s in enumerate(seqs):
        tokens[b, :len(s)] = s if isinstance(s, Tensor) else torch.as_tensor(s, dtype=dtype)
    return tokens, lengths


def model_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (or buffer); CPU for a module that has neither."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if first is None else first.device
