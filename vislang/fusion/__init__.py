"""Multimodal fusion: named modality features in, one fused vector out, with interchangeable strategies.

    fusion = create_fusion("attention", {"image": 256, "text": 128}, hidden_dim=256)
    out = fusion({"image": ModalityFeatures(grid, pooled, mask), "text": ModalityFeatures(tokens, q, tmask)})
    out.fused      # (B, 256)
    out.attention  # (B, N) over the image regions, for strategies that attend

Strategies (``list_fusions()``): late (``late-concat``, ``late-sum``, ``late-product``, ``late-gating``),
attention (``attention``, ``modality-attention``, ``multihead``), ``bilinear`` (MLB/MUTAN) and Transformer
early/hybrid fusion (``transformer``, ``co-attention``).
"""

from vislang.fusion import attention, bilinear, late, transformer  # noqa: F401  (registers)
from vislang.fusion.base import (
    IMAGE,
    TEXT,
    Fusion,
    FusionConfig,
    FusionOutput,
    ModalityFeatures,
    create_fusion,
    list_fusions,
    register_fusion,
)

__all__ = ["IMAGE", "TEXT", "Fusion", "FusionConfig", "FusionOutput", "ModalityFeatures", "create_fusion",
           "list_fusions", "register_fusion"]
