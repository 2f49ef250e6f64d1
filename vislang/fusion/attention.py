"""Attention fusion: the question decides where to look.

* ``attention``: text-guided multi-head attention over the image regions, as in the stacked attention
  networks (Z. Yang et al. 2016, "Stacked Attention Networks for Image Question Answering") and the top-down
  attention of P. Anderson et al. 2018 ("Bottom-Up and Top-Down Attention for Image Captioning and VQA"):
  per glimpse ``g``, ``a_g = softmax_n(w_g^T relu(W_v v_n * W_q q))`` over the regions ``v_n`` (padding
  masked), the attended image ``v_g = sum_n a_gn v_n``; glimpses are concatenated, projected and multiplied
  element-wise with the projected question. Several glimpses are several heads looking at different places.
* ``modality-attention``: the score-softmax weighting of modalities: each modality's vector ``x_i`` (the
  attended image, the pooled text, ...) is scored against the guide ``y`` (the question),
  ``s(x_i, y) = w^T tanh(W x_i + U y)``, and the fused vector is ``sum_i alpha_i x_i`` with
  ``alpha_i = softmax_i s(x_i, y)`` (attention-based multimodal fusion, Hori et al. 2017).
* ``multihead``: the question's tokens cross-attend to the image regions with standard multi-head attention
  (Vaswani et al. 2017), the result is pooled over the real question tokens and combined with the question.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vislang.fusion.base import IMAGE, TEXT, Fusion, FusionOutput, real_mask, register_fusion
from vislang.layers import MultiHeadAttention

if TYPE_CHECKING:  # names only the annotations use
    from collections.abc import Mapping

    from vislang.fusion.base import FusionConfig, ModalityFeatures


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Softmax of ``scores`` over ``dim`` where ``mask`` is True (a row without real entries: uniform)."""
    mask = mask | ~mask.any(dim=dim, keepdim=True)
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=dim)


class RegionAttention(nn.Module):
    """Guided attention over regions: ``softmax_n(w_g^T relu(W_v v_n * W_q q))`` per glimpse ``g``.

    Args:
        region_dim: Width of the regions ``v_n``.
        guide_dim: Width of the guide ``q``.
        hidden_dim: Width of the joint space.
        glimpses: Attention distributions computed.
        dropout: Dropout on the joint features.
    """

    def __init__(self, region_dim: int, guide_dim: int, hidden_dim: int, glimpses: int, dropout: float = 0.0):
        super().__init__()
        self.v_proj = nn.Linear(region_dim, hidden_dim)
        self.q_proj = nn.Linear(guide_dim, hidden_dim)
        self.drop = nn.Dropout(dropout)
        self.score = nn.Linear(hidden_dim, glimpses)

    def forward(self, regions: Tensor, guide: Tensor, mask: Tensor) -> Tensor:
        """Weights ``(B, G, N)`` over ``regions`` ``(B, N, Dv)`` guided by ``guide`` ``(B, Dq)``."""
        joint = torch.relu(self.v_proj(regions) * self.q_proj(guide).unsqueeze(1))  # (B, N, H)
        scores = self.score(self.drop(joint)).transpose(1, 2)                      # (B, G, N)
        return masked_softmax(scores, mask.unsqueeze(1), dim=-1)                  # (B, G, N)


@register_fusion("attention", "question-guided attention over image regions, several glimpses (SAN; Anderson et al. 2018)")
class GuidedAttentionFusion(Fusion):
    """Attended image (``glimpses`` heads) times the question, in a joint space."""

    def __init__(self, dims: Mapping[str, int], cfg: FusionConfig):
        super().__init__(dims, cfg, needs=(IMAGE, TEXT))
        dv, dq, h = self.dims[IMAGE], self.dims[TEXT], cfg.hidden_dim
        self.attend = RegionAttention(dv, dq, h, cfg.glimpses, cfg.dropout)
        self.v_out = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(dv * cfg.glimpses, h))
        self.q_out = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(dq, h))

    def forward(self, features: Mapping[str, ModalityFeatures]) -> FusionOutput:
        self.check(features)
        image, text = features[IMAGE], features[TEXT]
        a = self.attend(image.tokens, text.pooled, real_mask(image))               # (B, G, N)
        attended = (a @ image.tokens).flatten(1)                                   # (B, G*Dv)
        fused = torch.relu(self.v_out(attended)) * torch.relu(self.q_out(text.pooled))  # (B, H)
        return FusionOutput(fused, attention=a.mean(dim=1))                      # (B, H), (B, N)


@register_fusion("modality-attention", "score-softmax weighting of the modalities by the question: alpha_i = softmax_i s(x_i, y)")
class ModalityAttentionFusion(Fusion):
    """``sum_i alpha_i W_i x_i`` with ``alpha_i = softmax_i w^T tanh(W_i x_i + U y)``, ``y`` the question; the
    image's vector ``x`` is itself question-guided attention over its regions (one glimpse)."""

    def __init__(self, dims: Mapping[str, int], cfg: FusionConfig):
        super().__init__(dims, cfg, needs=(IMAGE, TEXT))
        h = cfg.hidden_dim
        self.attend = RegionAttention(self.dims[IMAGE], self.dims[TEXT], h, 1, cfg.dropout)
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d, h))
                                   for m, d in self.dims.items()})
        self.guide = nn.Linear(self.dims[TEXT], h, bias=False)
        self.score = nn.Linear(h, 1)
        self.out = nn.Linear(h, h)

    def forward(self, features: Mapping[str, ModalityFeatures]) -> FusionOutput:
        self.check(features)
        image, text = features[IMAGE], features[TEXT]
        a = self.attend(image.tokens, text.pooled, real_mask(image))[:, 0]         # (B, N)
        vectors = {m: f.pooled for m, f in features.items()}
        vectors[IMAGE] = (a.unsqueeze(1) @ image.tokens).squeeze(1)                # (B, Dv)
        names = list(self.dims)
        x = torch.stack([self.proj[m](vectors[m]) for m in names], dim=1)         # (B, M, H)
        s = self.score(torch.tanh(x + self.guide(text.pooled).unsqueeze(1)))      # (B, M, 1)
        alpha = s.softmax(dim=1)                                                  # (B, M, 1)
        fused = torch.relu(self.out((alpha * x).sum(dim=1)))                      # (B, H)
        return FusionOutput(fused, attention=a, modality_weights=alpha.squeeze(-1))


@register_fusion("multihead", "question tokens cross-attend to image regions with multi-head attention (Vaswani et al. 2017)")
class MultiHeadCrossFusion(Fusion):
    """Multi-head cross-attention from the question's tokens to the regions, pooled over the real tokens."""

    def __init__(self, dims: Mapping[str, int], cfg: FusionConfig):
        super().__init__(dims, cfg, needs=(IMAGE, TEXT))
        h = cfg.hidden_dim
        self.q_in = nn.Linear(self.dims[TEXT], h)
        self.attn = MultiHeadAttention(h, cfg.num_heads, kv_dim=self.dims[IMAGE], dropout=cfg.dropout)
        self.norm = nn.LayerNorm(h)
        self.q_out = nn.Linear(self.dims[TEXT], h)

    def forward(self, features: Mapping[str, ModalityFeatures]) -> FusionOutput:
        self.check(features)
        image, text = features[IMAGE], features[TEXT]
        tmask = real_mask(text)                                                    # (B, L)
        q = self.q_in(text.tokens)                                                 # (B, L, H)
        out, w = self.attn(q, image.tokens, key_padding_mask=~real_mask(image), need_weights=True)
        out = self.norm(q + out)                                                   # (B, L, H)
        m = tmask.unsqueeze(-1).to(out.dtype)                                      # (B, L, 1)
        pooled = (out * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)                # (B, H)
        fused = torch.relu(pooled) * torch.relu(self.q_out(text.pooled))          # (B, H)
        # attention map: heads and real question tokens averaged, (B, N)
        att = (w.mean(dim=1) * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        return FusionOutput(fused, attention=att)
