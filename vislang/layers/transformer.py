"""Pre-norm Transformer blocks (Vaswani et al. 2017; pre-norm as in Xiong et al. 2020, arXiv:2002.04745).

``TransformerEncoderBlock`` is self-attention + MLP (ViT, text encoders, fusion over a joint sequence);
``TransformerDecoderBlock`` adds cross-attention to a memory such as image grid features (caption decoders,
VQA fusion). Both return their attention weights on request, for attention maps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vislang.layers.attention import MultiHeadAttention
from vislang.layers.drop import DropPath
from vislang.layers.mlp import MLP


class TransformerEncoderBlock(nn.Module):
    """``x + attn(norm(x))`` then ``x + mlp(norm(x))``.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        mlp_ratio: Hidden width of the MLP as a multiple of ``dim``.
        dropout: Dropout on the attention output and inside the MLP.
        attn_dropout: Dropout on the attention weights.
        drop_path: Stochastic-depth probability of both residual branches.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(dim, num_heads, dropout=attn_dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, *, key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None,
                is_causal: bool = False, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Transform the tokens ``x``.

        Args:
            x: Tokens ``(B, T, dim)``.
            key_padding_mask: ``(B, T)`` bool, ``True`` at padding tokens.
            attn_mask: ``(T, T)`` or ``(B, T, T)`` bool, ``True`` where attending is forbidden.
            is_causal: Each token sees only itself and earlier tokens.
            need_weights: Also return the attention weights.

        Returns:
            The tokens ``(B, T, dim)`` and the attention weights ``(B, heads, T, T)`` or ``None``.
        """
        h, weights = self.attn(self.norm1(x), key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                               is_causal=is_causal, need_weights=need_weights)
        x = x + self.drop_path(self.drop(h))                                # (B, T, dim)
        x = x + self.drop_path(self.mlp(self.norm2(x)))                     # (B, T, dim)
        return x, weights


class TransformerDecoderBlock(nn.Module):
    """Self-attention, cross-attention to ``memory``, then MLP, each pre-norm with a residual.

    Args:
        dim: Token width.
        num_heads: Attention heads (self and cross).
        memory_dim: Width of the memory tokens (default ``dim``).
        mlp_ratio: Hidden width of the MLP as a multiple of ``dim``.
        dropout: Dropout on the attention outputs and inside the MLP.
        attn_dropout: Dropout on the attention weights.
        drop_path: Stochastic-depth probability of the residual branches.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, num_heads: int, memory_dim: int | None = None, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, attn_dropout: float = 0.0, drop_path: float = 0.0,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout=attn_dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.cross_attn = MultiHeadAttention(dim, num_heads, kv_dim=memory_dim, dropout=attn_dropout)
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, memory: Tensor, *, key_padding_mask: Tensor | None = None,
                memory_padding_mask: Tensor | None = None, is_causal: bool = True,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Transform the target tokens ``x`` given ``memory``.

        Args:
            x: Target tokens ``(B, T, dim)``.
            memory: Tokens to attend to ``(B, M, memory_dim)``, e.g. an image grid.
            key_padding_mask: ``(B, T)`` bool, ``True`` at padding target tokens.
            memory_padding_mask: ``(B, M)`` bool, ``True`` at padding memory tokens.
            is_causal: Target token ``i`` sees target tokens ``0..i`` only (default, for generation).
            need_weights: Also return the cross-attention weights.

        Returns:
            The tokens ``(B, T, dim)`` and the cross-attention weights ``(B, heads, T, M)`` or ``None``.
        """
        h, _ = self.self_attn(self.norm1(x), key_padding_mask=key_padding_mask, is_causal=is_causal)
        x = x + self.drop_path(self.drop(h))                                # (B, T, dim)
        h, weights = self.cross_attn(self.norm2(x), memory, key_padding_mask=memory_padding_mask,
                                     need_weights=need_weights)
        x = x + self.drop_path(self.drop(h))                                # (B, T, dim)
        x = x + self.drop_path(self.mlp(self.norm3(x)))                     # (B, T, dim)
        return x, weights


def token_layers(block: type[TransformerEncoderBlock | TransformerDecoderBlock], *, vocab_size: int, dim: int,
                 max_len: int, pad_id: int, depth: int, num_heads: int, mlp_ratio: float, dropout: float
                 ) -> tuple[nn.Embedding, nn.Parameter, nn.Dropout, nn.ModuleList]:
    """The layers of a Transformer over token ids, created in this order: the token embedding (``pad_id`` its
    padding row), learned positions ``(max_len, dim)`` (zeros, for the caller to initialise), the dropout on
    their sum, and ``depth`` blocks ``block(dim, num_heads, mlp_ratio=mlp_ratio, dropout=dropout)``."""
    embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
    pos = nn.Parameter(torch.zeros(max_len, dim))
    drop = nn.Dropout(dropout)
    blocks = nn.ModuleList(block(dim, num_heads, mlp_ratio=mlp_ratio, dropout=dropout) for _ in range(depth))
    return embed, pos, drop, blocks
