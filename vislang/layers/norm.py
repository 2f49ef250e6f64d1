"""Layer normalisation over the channels of a ``(B, C, H, W)`` feature map."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over ``C`` at every position of a channels-first map (as in ConvNeXt).

    Args:
        channels: Number of channels ``C``.
        eps: Added to the variance for stability.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)                                              # (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)                                           # (B, C, H, W)
