"""MixStyle: mixing the feature statistics of training images, a regulariser for new visual styles.

Reference: K. Zhou, Y. Yang, Y. Qiao, T. Xiang, "Domain Generalization with MixStyle", ICLR 2021. A CNN's
per-image, per-channel feature mean and standard deviation carry much of an image's *style* (palette,
shading, line weight); replacing them by a random mix with another image's makes the later layers rely on
content instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MixStyle(nn.Module):
    """With probability ``p`` per training batch, re-style each feature map with a mix of its own and a random
    other batch member's channel statistics. The identity in eval mode.

    Args:
        p: Probability of mixing a batch.
        alpha: Parameter of the Beta(alpha, alpha) distribution of the mixing weights.
        eps: Added to the variance before the square root.
    """

    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6):
        super().__init__()
        if not 0.0 <= p <= 1.0 or alpha <= 0:
            raise ValueError(f"MixStyle needs 0 <= p <= 1 and alpha > 0, got p={p}, alpha={alpha}")
        self.p, self.alpha, self.eps = p, alpha, eps

    def forward(self, x: Tensor) -> Tensor:
        """Mix the statistics of ``x`` ``(B, C, H, W)`` (training only)."""
        if not self.training or self.p == 0 or x.shape[0] < 2 or torch.rand(()) >= self.p:
            return x
        b = x.shape[0]
        mu = x.mean(dim=(2, 3), keepdim=True)                                    # (B, C, 1, 1)
        sig = (x.var(dim=(2, 3), keepdim=True) + self.eps).sqrt()                # (B, C, 1, 1)
        mu, sig = mu.detach(), sig.detach()
        normed = (x - mu) / sig
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((b, 1, 1, 1)).to(x)  # (B, 1, 1, 1)
        perm = torch.randperm(b, device=x.device)
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sig_mix = lam * sig + (1 - lam) * sig[perm]
        return normed * sig_mix + mu_mix                                         # (B, C, H, W)

    def extra_repr(self) -> str:
        return f"p={self.p}, alpha={self.alpha}"
