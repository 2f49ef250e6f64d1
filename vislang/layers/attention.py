"""Multi-head scaled dot-product attention (Vaswani et al. 2017, "Attention Is All You Need").

One module serves self-attention (``key`` and ``value`` default to ``query``) and cross-attention
(``key``/``value`` from another sequence, of width ``kv_dim``). Masks follow ``nn.MultiheadAttention``:
a boolean ``True`` means *may not attend*. The fast path is ``F.scaled_dot_product_attention``; asking for the
attention weights computes them explicitly (same result, more memory).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate query/key/value projections.

    Args:
        dim: Width of the queries and of the output.
        num_heads: Number of heads; must divide ``dim``.
        kv_dim: Width of keys and values (default ``dim``), for cross-attention to another modality.
        dropout: Dropout on the attention weights while training.
        bias: Whether the projections have biases.
    """

    def __init__(self, dim: int, num_heads: int, kv_dim: int | None = None, dropout: float = 0.0,
                 bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        kv_dim = kv_dim or dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None, *,
                key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None,
                is_causal: bool = False, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``key``/``value``.

        Args:
            query: ``(B, Tq, dim)``.
            key: ``(B, Tk, kv_dim)``; default ``query``.
            value: ``(B, Tk, kv_dim)``; default ``key``.
            key_padding_mask: ``(B, Tk)`` bool, ``True`` at padding keys to ignore.
            attn_mask: ``(Tq, Tk)`` or ``(B, Tq, Tk)`` bool, ``True`` where a query may not see a key.
            is_causal: Query ``i`` sees keys ``0..i`` only (decoder self-attention); when ``Tk > Tq`` the
                queries are taken to be the last ``Tq`` positions.
            need_weights: Also return the attention weights.

        Returns:
            The output ``(B, Tq, dim)`` and, when asked for, the weights ``(B, heads, Tq, Tk)``, else ``None``.
            A query row whose keys are all masked attends to every key instead of producing NaN.
        """
        key = query if key is None else key
        value = key if value is None else value
        b, tq, _ = query.shape
        tk = key.shape[1]
        q = self._split_heads(self.q_proj(query))                          # (B, H, Tq, hd)
        k = self._split_heads(self.k_proj(key))                            # (B, H, Tk, hd)
        v = self._split_heads(self.v_proj(value))                          # (B, H, Tk, hd)
        allowed = _allowed_mask(b, tq, tk, key_padding_mask, attn_mask, is_causal, query.device)
        p = self.dropout if self.training else 0.0

        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)   # (B, H, Tq, Tk)
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, p, self.training) @ v                 # (B, H, Tq, hd)
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        out = out.transpose(1, 2).reshape(b, tq, -1)                        # (B, Tq, dim)
        return self.out_proj(out), weights

    def _split_heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)


def _allowed_mask(b: int, tq: int, tk: int, key_padding_mask: Tensor | None, attn_mask: Tensor | None,
                  is_causal: bool, device: torch.device) -> Tensor | None:
    """Combine the masks into one boolean ``(B|1, 1, Tq, Tk)`` tensor, ``True`` where attending is allowed."""
    if key_padding_mask is None and attn_mask is None and not is_causal:
        return None
    allowed = torch.ones(1, 1, tq, tk, dtype=torch.bool, device=device)
    if is_causal:
        allowed = allowed & torch.ones(tq, tk, dtype=torch.bool, device=device).tril(tk - tq)
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool:
            raise TypeError(f"attn_mask must be boolean (True = masked), got {attn_mask.dtype}")
        am = attn_mask if attn_mask.dim() == 3 else attn_mask.unsqueeze(0)  # (B|1, Tq, Tk)
        allowed = allowed & ~am.unsqueeze(1)
    if key_padding_mask is not None:
        if key_padding_mask.shape != (b, tk):
            raise ValueError(f"key_padding_mask has shape {tuple(key_padding_mask.shape)}, expected {(b, tk)}")
        allowed = allowed & ~key_padding_mask.bool()[:, None, None, :]
    # A row with nothing to attend to would softmax to NaN and spread through every later layer.
    return allowed | ~allowed.any(dim=-1, keepdim=True)
