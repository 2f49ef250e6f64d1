"""A small Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", arXiv:2010.11929).

Non-overlapping patches are embedded linearly, a learned class token is prepended, learned position
embeddings are added (bicubically resized when the image is not the configured size), and pre-norm
Transformer blocks follow. The encoder's grid is the patch tokens after the final LayerNorm (no class token);
its pooled feature is the class token after the same LayerNorm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vislang.errors import VislangError
from vislang.layers import PatchEmbed, TransformerEncoderBlock, resize_pos_embed
from vislang.models.encoders import ImageFeatures, check_images, with_weights
from vislang.models.registry import register_family, register_model


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of :class:`VisionTransformer`.

    Attributes:
        image_size: Side of the square images the position embeddings are learned for.
        patch_size: Side of a square patch; must divide ``image_size``.
        dim: Token width ``D`` (``out_dim``).
        depth: Number of Transformer blocks.
        num_heads: Attention heads; must divide ``dim``.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        dropout: Dropout on embeddings, attention outputs and MLPs.
        attn_dropout: Dropout on attention weights.
        drop_path: Stochastic depth of the last block (rising linearly from 0 at the first).
        weights: Weights file or vislang run to load after building (its ``image_encoder`` part).
    """

    image_size: int = 64
    patch_size: int = 8
    dim: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise VislangError(f"ViT image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.dim % self.num_heads:
            raise VislangError(f"ViT dim {self.dim} is not divisible by num_heads {self.num_heads}")


class VisionTransformer(nn.Module):
    """ViT image encoder; see the module docstring."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        side = cfg.image_size // cfg.patch_size
        self.grid_hw = (side, side)
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + side * side, cfg.dim))  # class token first
        self.pos_drop = nn.Dropout(cfg.dropout)
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            TransformerEncoderBlock(cfg.dim, cfg.num_heads, cfg.mlp_ratio, dropout=cfg.dropout,
                                    attn_dropout=cfg.attn_dropout, drop_path=rate)
            for rate in rates
        )
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.out_dim = cfg.dim
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        patch = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(patch.view(patch.shape[0], -1))  # as a linear map of the flattened patch

    def _tokens(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Embedded patches with the class token and position embeddings: ``(B, 1 + h*w, D)``."""
        check_images(images, "VisionTransformer", self.cfg.patch_size)
        patches, hw = self.patch_embed(images)                               # (B, h*w, D)
        pos_cls, pos_grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        pos_grid = resize_pos_embed(pos_grid, self.grid_hw, hw)              # (1, h*w, D)
        cls = (self.cls_token + pos_cls).expand(patches.shape[0], -1, -1)    # (B, 1, D)
        return self.pos_drop(torch.cat([cls, patches + pos_grid], dim=1)), hw

    def forward(self, images: Tensor) -> ImageFeatures:
        """Encode ``images`` ``(B, 3, H, W)`` (ImageNet-normalised, sides multiples of the patch size)."""
        x, hw = self._tokens(images)                                         # (B, 1 + N, D)
        for block in self.blocks:
            x, _ = block(x)
        x = self.norm(x)
        return ImageFeatures(grid=x[:, 1:], pooled=x[:, 0], grid_hw=hw)    # (B, N, D), (B, D)

    @torch.no_grad()
    def attention_maps(self, images: Tensor) -> list[Tensor]:
        """Attention weights of every block, each ``(B, heads, 1 + N, 1 + N)`` (token 0 is the class token)."""
        x, _ = self._tokens(images)
        maps = []
        for block in self.blocks:
            x, weights = block(x, need_weights=True)
            maps.append(weights)
        return maps


@register_family("vit", ViTConfig)
def build_vit(cfg: ViTConfig) -> VisionTransformer:
    """A :class:`VisionTransformer`, with ``cfg.weights`` loaded when given."""
    return with_weights(VisionTransformer(cfg), cfg.weights, "image_encoder")


register_model("vit_small", "vit", "A small ViT for 64 px images: patch 8 (8x8 grid), D=256, 4 blocks of 4 heads, "
               "3.2M parameters.")
register_model("vit_tiny", "vit", "A tiny ViT for tests: image 32, patch 8, D=32, 2 blocks of 2 heads.",
               image_size=32, patch_size=8, dim=32, depth=2, num_heads=2)
