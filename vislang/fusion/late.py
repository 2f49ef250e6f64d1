"""Late fusion: each modality is pooled to one vector first, then the vectors are combined.

* ``late-concat``: concatenation followed by an MLP (the "deeper LSTM Q + norm I" baseline of Antol et al.
  2015, "VQA: Visual Question Answering", keeps the image and question vectors apart until this point);
* ``late-sum`` / ``late-product``: projections to a joint space summed / multiplied element-wise (the
  point-wise product of Antol et al. 2015);
* ``late-gating``: a gated multimodal unit (J. Arevalo et al. 2017, "Gated Multimodal Units for Information
  Fusion"): ``h_m = tanh(W_m x_m)``, per-dimension gates ``z = softmax_m(G_m [x_1; ...; x_M])``, output
  ``sum_m z_m * h_m``; the gates say how much each modality contributes, per sample.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from vislang.fusion.base import Fusion, FusionConfig, FusionOutput, ModalityFeatures, register_fusion


def _projections(dims: Mapping[str, int], width: int, dropout: float) -> nn.ModuleDict:
    return nn.ModuleDict({m: nn.Sequential(nn.Dropout(dropout), nn.Linear(d, width)) for m, d in dims.items()})


@register_fusion("late-concat", "pooled vectors concatenated, then an MLP (Antol et al. 2015)")
class ConcatFusion(Fusion):
    """``mlp([x_1; ...; x_M])`` of the pooled vectors."""

    def __init__(self, dims: Mapping[str, int], cfg: FusionConfig):
        super().__init__(dims, cfg)
        total = sum(self.dims.values())
        self.mlp = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(total, cfg.hidden_dim), nn.GELU(),
                                 nn.Linear(cfg.hidden_dim, cfg.hidden_dim))

    def forward(self, features: Mapping[str, ModalityFeatures]) -> FusionOutput:
        self.check(features)
        x = torch.cat([features[m].pooled for m in self.dims], dim=-1)         # (B, sum D_m)
        return FusionOutput(self.mlp(x))                                         # (B, H)


class _ElementwiseFusion(Fusion):
    """Projections ``tanh(W_m x_m)`` to the joint space combined element-wise by ``op``."""

    op = "sum"

    def __init__(self, dims: Mapping[str, int], cfg: FusionConfig):
        super().__init__(dims, cfg)
        self.proj = _projections(self.dims, cfg.hidden_dim, cfg.dropout)

    def forward(self, features: Mapping[str, ModalityFeatures]) -> FusionOutput:
        self.check(features)
        hs = [torch.tanh(self.proj[m](features[m].pooled)) for m in self.dims]   # M x (B, H)
        out = hs[0]
        for h in hs[1:]:
            out = out + h if self.op == "sum" else out * h
        return FusionOutput(out)                                                 # (B, H)


@register_fusion("late-sum", "pooled vectors projected to a joint space and summed")
class SumFusion(_ElementwiseFusion):
    """``sum_m tanh(W_m x_m)``."""

    op = "sum"


@register_fusion("late-product", "pooled vectors projected to a joint space and multiplied element-wise")
class ProductFusion(_ElementwiseFusion):
    """``prod_m tanh(W_m x_m)`` (element-wise)."""

    op = "product"


@register_fusion("late-gating", "gated multimodal unit: per-dimension softmax gates over modalities (Arevalo et al. 2017)")
class GatedFusion(Fusion):
    """Gated multimodal unit; ``modality_weights`` are the gates averaged over the dimensions."""

    def __init__(self, dims: Mapping[str, int], cfg: FusionConfig):
        super().__init__(dims, cfg)
        self.proj = _projections(self.dims, cfg.hidden_dim, cfg.dropout)
        self.gate = nn.Linear(sum(self.dims.values()), cfg.hidden_dim * len(self.dims))

    def forward(self, features: Mapping[str, ModalityFeatures]) -> FusionOutput:
        self.check(features)
        names = list(self.dims)
        h = torch.stack([torch.tanh(self.proj[m](features[m].pooled)) for m in names], dim=1)  # (B, M, H)
        x = torch.cat([features[m].pooled for m in names], dim=-1)             # (B, sum D_m)
        z = self.gate(x).view(len(x), len(names), -1).softmax(dim=1)            # (B, M, H)
        return FusionOutput((z * h).sum(dim=1), modality_weights=z.mean(dim=-1))  # (B, H), (B, M)
