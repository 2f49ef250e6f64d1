"""Low-rank bilinear fusion.

A full bilinear interaction ``z_k = x^T W_k y`` between an image vector ``x`` and a question vector ``y``
has ``Dx * Dy * K`` parameters. Two factorisations make it affordable:

* MLB (J.-H. Kim et al. 2017, "Hadamard Product for Low-rank Bilinear Pooling"): ``z = P^T (tanh(U^T x) *
  tanh(V^T y))``, rank one per output in the joint space, used both for the attention scores over the
  regions and for the final fusion;
* MUTAN (H. Ben-younes et al. 2017, "MUTAN: Multimodal Tucker Fusion for VQA"): a Tucker decomposition
  whose core tensor is itself of rank ``R``: ``z = sum_{r=1..R} (W_r^x x~) * (W_r^y y~)`` with ``x~``, ``y~``
  the projected inputs.

``bilinear`` here is MLB attention over the regions (``glimpses`` of them) followed by a rank-``rank``
MUTAN fusion of the attended image and the question (``rank=1`` is MLB's Hadamard product).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vislang.fusion.attention import masked_softmax
from vislang.fusion.base import IMAGE, TEXT, Fusion, FusionOutput, real_mask, register_fusion

if TYPE_CHECKING:  # names only the annotations use
    from collections.abc import Mapping

    from vislang.fusion.base import FusionConfig, ModalityFeatures


class LowRankBilinear(nn.Module):
    """``sum_r (A_r tanh(W_x x)) * (B_r tanh(W_y y))``: a rank-``rank`` bilinear map to ``out_dim``.

    Args:
        x_dim: Width of ``x``.
        y_dim: Width of ``y``.
        hidden_dim: Width of the projected inputs.
        out_dim: Width of the output.
        rank: Number of rank-one terms summed.
        dropout: Dropout on the projected inputs.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden_dim: int, out_dim: int, rank: int, dropout: float = 0.0):
        super().__init__()
        self.rank, self.out_dim = rank, out_dim
        self.x_proj = nn.Linear(x_dim, hidden_dim)
        self.y_proj = nn.Linear(y_dim, hidden_dim)
        self.x_rank = nn.Linear(hidden_dim, out_dim * rank)
        self.y_rank = nn.Linear(hidden_dim, out_dim * rank)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """``x`` ``(..., Dx)`` and ``y`` ``(..., Dy)`` (broadcastable leading dims) -> ``(..., out_dim)``."""
        xr = self.x_rank(self.drop(torch.tanh(self.x_proj(x))))                   # (..., K*R)
        yr = self.y_rank(self.drop(torch.tanh(self.y_proj(y))))                   # (..., K*R)
        z = xr * yr                                                               # (..., K*R)
        return z.view(*z.shape[:-1], self.rank, self.out_dim).sum(dim=-2)         # (..., K)


@register_fusion("bilinear", "low-rank bilinear: MLB attention over regions + rank-R MUTAN fusion (Kim et al. 2017; Ben-younes et al. 2017)")
class BilinearFusion(Fusion):
    """MLB attention (``glimpses``) then a rank-``rank`` Tucker-style fusion with the question."""

    def __init__(self, dims: Mapping[str, int], cfg: FusionConfig):
        super().__init__(dims, cfg, needs=(IMAGE, TEXT))
        dv, dq, h = self.dims[IMAGE], self.dims[TEXT], cfg.hidden_dim
        self.att = LowRankBilinear(dv, dq, h, h, rank=1, dropout=cfg.dropout)     # MLB: Hadamard, rank 1
        self.att_score = nn.Linear(h, cfg.glimpses)
        self.fuse = LowRankBilinear(dv * cfg.glimpses, dq, h, h, rank=cfg.rank, dropout=cfg.dropout)

    def forward(self, features: Mapping[str, ModalityFeatures]) -> FusionOutput:
        self.check(features)
        image, text = features[IMAGE], features[TEXT]
        joint = self.att(image.tokens, text.pooled.unsqueeze(1))                  # (B, N, H)
        scores = self.att_score(torch.tanh(joint)).transpose(1, 2)                # (B, G, N)
        a = masked_softmax(scores, real_mask(image).unsqueeze(1), dim=-1)         # (B, G, N)
        attended = (a @ image.tokens).flatten(1)                                  # (B, G*Dv)
        return FusionOutput(self.fuse(attended, text.pooled), attention=a.mean(dim=1))  # (B, H), (B, N)
