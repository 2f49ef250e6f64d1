"""vislang.utils.tensors: masks from lengths, padding, the device of a module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vislang.utils.tensors import lengths_to_mask, model_device, pad_sequences


def test_lengths_to_mask():
    lengths = torch.tensor([2, 0, 3])
    mask = lengths_to_mask(lengths)
    assert mask.dtype == torch.bool and mask.tolist() == [[True, True, False], [False] * 3, [True] * 3]
    long = lengths_to_mask(lengths, 4, dtype=torch.long)
    assert long.dtype == torch.long and long.tolist() == [[1, 1, 0, 0], [0] * 4, [1, 1, 1, 0]]
    assert lengths_to_mask(torch.zeros(0, dtype=torch.long)).shape == (0, 0)


def test_pad_sequences():
    tokens, lengths = pad_sequences([torch.tensor([5, 6, 7]), torch.tensor([8])], pad_id=0)
    assert tokens.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths.tolist() == [3, 1]
    assert tokens.dtype == torch.long and lengths.dtype == torch.long
    tokens, lengths = pad_sequences([[1, 2], []], pad_id=9, length=4)
    assert tokens.tolist() == [[1, 2, 9, 9], [9, 9, 9, 9]] and lengths.tolist() == [2, 0]
    tokens, _ = pad_sequences([torch.tensor([1, 2], dtype=torch.int32)], pad_id=0)
    assert tokens.dtype == torch.int32
    assert pad_sequences([], pad_id=0)[0].shape == (0, 0)
    with pytest.raises(ValueError, match="does not fit"):
        pad_sequences([[1, 2, 3]], length=2)


def test_model_device():
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")                 # no parameters: CPU
    module = nn.Module()
    module.register_buffer("b", torch.zeros(1, device="meta"))
    assert model_device(module) == torch.device("meta")                  # buffers only
