"""Losses as modules: features in, a dict with ``loss`` (and its parts, for logging) out."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class CaptionLoss(nn.Module):
    """Token cross-entropy with optional label smoothing, plus the doubly stochastic attention
    regulariser of Show, Attend and Tell, ``lambda * (1 - sum_t alpha_ti)^2``, which pushes the model to look
    at every part of the image over the caption. The paper sums it over the N grid cells; here it is
    averaged over cells (and images) so one lambda suits any grid size and caption length.

    Args:
        pad_id: Target id ignored by the loss.
        label_smoothing: Label smoothing of the cross-entropy.
        attention_reg: lambda (0 disables).
    """

    def __init__(self, pad_id: int = 0, label_smoothing: float = 0.0, attention_reg: float = 1.0):
        super().__init__()
        self.pad_id, self.label_smoothing, self.attention_reg = pad_id, label_smoothing, attention_reg

    def forward(self, logits: Tensor, targets: Tensor, attention: Tensor | None = None) -> dict[str, Tensor]:
        """Args:
            logits: (B, T, V).
            targets: (B, T), ``pad_id`` where there is no token.
            attention: (B, T, N) attention weights, or None.
        """
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                             ignore_index=self.pad_id, label_smoothing=self.label_smoothing)
        out = {"loss": ce, "ce": ce.detach()}
        if attention is not None and self.attention_reg > 0:
            mask = (targets != self.pad_id).unsqueeze(-1).to(attention.dtype)  # (B, T, 1)
            coverage = (attention * mask).sum(dim=1)  # (B, N)
            reg = self.attention_reg * ((1.0 - coverage) ** 2).mean()
            out["loss"] = ce + reg
            out["attention_reg"] = reg.detach()
        return out


__all__ = ["CaptionLoss"]
