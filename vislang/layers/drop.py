"""Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth", arXiv:1603.09382)."""

from __future__ import annotations

from torch import Tensor, nn


class DropPath(nn.Module):
    """Zero a whole residual branch for a random subset of samples while training.

    Kept samples are scaled by ``1 / (1 - p)`` so the expected output is unchanged; in eval mode (or with
    ``p == 0``) this is the identity.

    Args:
        p: Probability of dropping the branch for one sample.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)                    # (B, 1, ..., 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
