"""A Transformer caption decoder with cross-attention to an image grid (CNN cells or ViT patches).

References: A. Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (decoder with cross-attention);
the encoder-decoder captioning layout of e.g. M. Cornia et al., "Meshed-Memory Transformer for Image
Captioning", CVPR 2020 (here with a plain, pre-norm decoder).

The image encoder's grid ``(B, N, D)`` is projected to the model width and given learned row/column
position embeddings; the decoder is a stack of pre-norm blocks (causal self-attention, cross-attention to the
grid, MLP) over token + position embeddings, with the output layer tied to the token embedding. The
attention returned for maps is the last block's cross-attention, averaged over heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vislang.decoding import DecoderState
from vislang.layers import TransformerDecoderBlock, token_layers
from vislang.models.caption_lstm import CaptionOutput
from vislang.models.encoders import ImageFeatures
from vislang.models.registry import create_model, register_family, register_model


@dataclass
class CaptionTransformerConfig:
    """Sizes of the Transformer captioner.

    Attributes:
        vocab_size: Output vocabulary, specials included.
        encoder: Registered image encoder name.
        encoder_kwargs: Options of the encoder, checked when it is built.
        dim: Model width.
        depth: Decoder blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP width as a multiple of ``dim``.
        dropout: Dropout in the blocks and on the embeddings.
        max_len: Longest token sequence (positions).
        max_grid: Largest grid side (row/column positions).
        pad_id: Padding token id.
        bos_id: Start token id.
        eos_id: End token id.
    """

    vocab_size: int = 2000
    encoder: str = "cnn_small"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    dim: int = 256
    depth: int = 3
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    max_len: int = 64
    max_grid: int = 32
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2


class CaptionTransformer(nn.Module):
    """Image encoder + Transformer decoder.

    Args:
        image_encoder: Module mapping images to :class:`ImageFeatures`, with ``out_dim``.
        cfg: Decoder sizes and special token ids.
    """

    def __init__(self, image_encoder: nn.Module, cfg: CaptionTransformerConfig):
        super().__init__()
        self.image_encoder = image_encoder
        self.pad_id, self.bos_id, self.eos_id = cfg.pad_id, cfg.bos_id, cfg.eos_id
        self.vocab_size, self.max_len = cfg.vocab_size, cfg.max_len
        self.memory_proj = nn.Sequential(nn.Linear(image_encoder.out_dim, cfg.dim), nn.LayerNorm(cfg.dim))
        self.row_pos = nn.Parameter(torch.zeros(cfg.max_grid, cfg.dim))
        self.col_pos = nn.Parameter(torch.zeros(cfg.max_grid, cfg.dim))
        self.embed, self.pos, self.drop, self.blocks = token_layers(
            TransformerDecoderBlock, vocab_size=cfg.vocab_size, dim=cfg.dim, max_len=cfg.max_len,
            pad_id=cfg.pad_id, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
            dropout=cfg.dropout)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.head.weight = self.embed.weight  # tied output layer
        for p in (self.row_pos, self.col_pos, self.pos):
            nn.init.normal_(p, std=0.02)

    def encode(self, images: Tensor) -> ImageFeatures:
        return self.image_encoder(images)

    def memory(self, feats: ImageFeatures) -> Tensor:
        """Projected grid with 2-D positions, (B, N, dim)."""
        h, w = feats.grid_hw
        if max(h, w) > self.row_pos.shape[0]:
            raise ValueError(f"image grid {h}x{w} is larger than max_grid={self.row_pos.shape[0]}")
        pos = (self.row_pos[:h, None, :] + self.col_pos[None, :w, :]).reshape(h * w, -1)  # (N, dim)
        return self.memory_proj(feats.grid) + pos

    def decode(self, tokens: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Logits (B, T, V) and last-block cross-attention averaged over heads (B, T, N)."""
        t = tokens.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence of {t} tokens is longer than max_len={self.max_len}")
        x = self.drop(self.embed(tokens) + self.pos[:t])  # (B, T, dim)
        pad = tokens == self.pad_id  # (B, T)
        weights = None
        for i, block in enumerate(self.blocks):
            x, weights = block(x, memory, key_padding_mask=pad, need_weights=i == len(self.blocks) - 1)
        return self.head(self.norm(x)), weights.mean(dim=1)  # (B, T, V), (B, T, N)

    def init_state(self, feats: ImageFeatures) -> DecoderState:
        b = feats.grid.shape[0]
        empty = torch.empty(b, 0, dtype=torch.long, device=feats.grid.device)
        return DecoderState({"tokens": empty}, {"memory": self.memory(feats)})

    def step(self, prev: Tensor, state: DecoderState) -> tuple[Tensor, Tensor, DecoderState]:
        """Append ``prev`` (B,) to the prefix and predict the next token (the prefix is re-encoded)."""
        tokens = torch.cat([state.dynamic["tokens"], prev[:, None]], dim=1)  # (B, t)
        logits, attn = self.decode(tokens, state.static["memory"])
        return logits[:, -1], attn[:, -1], DecoderState({"tokens": tokens}, state.static)

    def forward(self, images: Tensor, tokens: Tensor) -> CaptionOutput:
        """Teacher forcing: predict ``tokens[:, 1:]`` from ``tokens[:, :-1]``; (B, T-1, V) and (B, T-1, N)."""
        logits, attn = self.decode(tokens[:, :-1], self.memory(self.encode(images)))
        return CaptionOutput(logits, attn)


@register_family("caption_transformer", CaptionTransformerConfig)
def build_caption_transformer(cfg: CaptionTransformerConfig) -> CaptionTransformer:
    """The image encoder ``cfg.encoder`` from the registry, then the decoder."""
    return CaptionTransformer(create_model(cfg.encoder, **cfg.encoder_kwargs), cfg)


register_model("caption_transformer", "caption_transformer", "Small CNN grid + 3-block Transformer decoder "
               "(width 256).")
register_model("caption_transformer_vit", "caption_transformer", "ViT patch grid + Transformer decoder.",
               encoder="vit_small")
register_model("caption_transformer_tiny", "caption_transformer", "A tiny variant for tests.",
               vocab_size=50, encoder="cnn_tiny", dim=32, depth=2, num_heads=2, dropout=0.0)
