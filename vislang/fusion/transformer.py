"""Early and hybrid fusion with Transformer layers.

* ``transformer`` (single stream, early fusion): the image regions and the question's tokens, each projected
  to one width and tagged with a learned modality embedding, form one sequence behind a ``[CLS]`` token; a
  pre-norm Transformer encoder (Vaswani et al. 2017) lets every token attend to every other (padding masked),
  as in the single-stream models VisualBERT / UNITER; the fused vector is the final ``[CLS]``.
* ``co-attention`` (two streams, hybrid): per layer, the text stream cross-attends to the image stream and the
  image stream to the text stream, each after self-attention (the co-attentional Transformer layers of
  ViLBERT, J. Lu et al. 2019, and the cross-modality encoder of LXMERT, H. Tan & M. Bansal 2019); the fused
  vector is the product of the two streams' masked means.

Image regions carry no order of their own: position, where needed, is added to the region features by the
model before fusion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vislang.fusion.base import IMAGE, TEXT, Fusion, FusionOutput, real_mask, register_fusion
from vislang.layers import TransformerDecoderBlock, TransformerEncoderBlock

if TYPE_CHECKING:  # names only the annotations use
    from collections.abc import Mapping

    from vislang.fusion.base import FusionConfig, ModalityFeatures


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` ``(B, N, D)`` over the positions where ``mask`` ``(B, N)`` is True."""
    m = mask.unsqueeze(-1).to(x.dtype)                                            # (B, N, 1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)                       # (B, D)


@register_fusion("transformer", "early fusion: image regions + question tokens in one Transformer encoder, [CLS] out")
class TransformerFusion(Fusion):
    """``[CLS] + regions + tokens`` through ``depth`` encoder blocks; attention map: ``[CLS]`` to the regions
    in the last block, heads averaged."""

    def __init__(self, dims: Mapping[str, int], cfg: FusionConfig):
        super().__init__(dims, cfg, needs=(IMAGE, TEXT))
        h = cfg.hidden_dim
        self.names = list(self.dims)                          # sequence order: by modality, image first if given
        self.names.sort(key=lambda m: (m != IMAGE, m))
        self.proj = nn.ModuleDict({m: nn.Linear(d, h) for m, d in self.dims.items()})
        self.type_embed = nn.Parameter(torch.zeros(len(self.names), h))
        self.cls = nn.Parameter(torch.zeros(1, 1, h))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TransformerEncoderBlock(h, cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                                                            dropout=cfg.dropout) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(h, eps=1e-6)
        nn.init.normal_(self.type_embed, std=0.02)
        nn.init.normal_(self.cls, std=0.02)

    def forward(self, features: Mapping[str, ModalityFeatures]) -> FusionOutput:
        self.check(features)
        b = next(iter(features.values())).tokens.shape[0]
        parts, masks = [self.cls.expand(b, -1, -1)], [torch.ones(b, 1, dtype=torch.bool, device=self.cls.device)]
        spans: dict[str, tuple[int, int]] = {}
        start = 1
        for i, m in enumerate(self.names):
            f = features[m]
            parts.append(self.proj[m](f.tokens) + self.type_embed[i])              # (B, N_m, H)
            masks.append(real_mask(f))
            spans[m] = (start, start + f.tokens.shape[1])
            start += f.tokens.shape[1]
        x = self.drop(torch.cat(parts, dim=1))                                     # (B, 1 + sum N_m, H)
        pad = ~torch.cat(masks, dim=1)                                             # (B, T)
        weights = None
        for k, block in enumerate(self.blocks):
            x, weights = block(x, key_padding_mask=pad, need_weights=k == len(self.blocks) - 1)
        x = self.norm(x)
        lo, hi = spans[IMAGE]
        att = weights.mean(dim=1)[:, 0, lo:hi]                                     # (B, N_image) [CLS] -> regions
        att = att / att.sum(dim=-1, keepdim=True).clamp(min=1e-9)
        return FusionOutput(x[:, 0], attention=att)                               # (B, H)


class CoAttentionLayer(nn.Module):
    """One two-stream layer: text self+cross-attends to the image, image self+cross-attends to the text."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.text = TransformerDecoderBlock(dim, num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
        self.image = TransformerDecoderBlock(dim, num_heads, mlp_ratio=mlp_ratio, dropout=dropout)

    def forward(self, t: Tensor, v: Tensor, t_pad: Tensor, v_pad: Tensor,
                need_weights: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        t2, w = self.text(t, v, key_padding_mask=t_pad, memory_padding_mask=v_pad, is_causal=False,
                          need_weights=need_weights)                               # (B, L, H), (B, h, L, N)
        v2, _ = self.image(v, t, key_padding_mask=v_pad, memory_padding_mask=t_pad, is_causal=False)
        return t2, v2, w


@register_fusion("co-attention", "two streams with co-attentional Transformer layers (ViLBERT / LXMERT)")
class CoAttentionFusion(Fusion):
    """``depth`` co-attention layers; fused = masked mean of the text stream times that of the image stream;
    attention map: the text's cross-attention to the regions in the last layer (heads and tokens averaged)."""

    def __init__(self, dims: Mapping[str, int], cfg: FusionConfig):
        super().__init__(dims, cfg, needs=(IMAGE, TEXT))
        if set(self.dims) != {IMAGE, TEXT}:
            raise ValueError("co-attention fusion takes exactly the image and text modalities")
        h = cfg.hidden_dim
        self.t_in = nn.Linear(self.dims[TEXT], h)
        self.v_in = nn.Linear(self.dims[IMAGE], h)
        self.layers = nn.ModuleList(CoAttentionLayer(h, cfg.num_heads, cfg.mlp_ratio, cfg.dropout)
                                    for _ in range(cfg.depth))
        self.norm_t, self.norm_v = nn.LayerNorm(h, eps=1e-6), nn.LayerNorm(h, eps=1e-6)

    def forward(self, features: Mapping[str, ModalityFeatures]) -> FusionOutput:
        self.check(features)
        image, text = features[IMAGE], features[TEXT]
        tm, vm = real_mask(text), real_mask(image)                                 # (B, L), (B, N)
        t, v = self.t_in(text.tokens), self.v_in(image.tokens)                     # (B, L, H), (B, N, H)
        w = None
        for k, layer in enumerate(self.layers):
            t, v, w = layer(t, v, ~tm, ~vm, need_weights=k == len(self.layers) - 1)
        t, v = self.norm_t(t), self.norm_v(v)
        fused = masked_mean(t, tm) * masked_mean(v, vm)                           # (B, H)
        att = masked_mean(w.mean(dim=1), tm)                                      # (B, N)
        return FusionOutput(fused, attention=att)
