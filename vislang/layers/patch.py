"""Patch embedding and position-embedding resizing for Vision Transformers (Dosovitskiy et al. 2021,
"An Image is Worth 16x16 Words", arXiv:2010.11929)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vislang.errors import VislangError


class PatchEmbed(nn.Module):
    """Cut an image into non-overlapping ``patch_size`` squares and project each to ``dim``.

    Args:
        patch_size: Side of a square patch in pixels.
        dim: Output token width.
        in_channels: Image channels.
    """

    def __init__(self, patch_size: int, dim: int, in_channels: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Embed the patches of ``images``.

        Args:
            images: ``(B, C, H, W)`` with ``H`` and ``W`` multiples of the patch size.

        Returns:
            Tokens ``(B, h*w, dim)`` in row-major order and the patch grid ``(h, w)``.
        """
        height, width = images.shape[-2:]
        p = self.patch_size
        if height % p or width % p:
            raise VislangError(f"image size {height}x{width} is not a multiple of the patch size {p}; "
                               f"resize the images to a multiple of {p} pixels")
        x = self.proj(images)                                               # (B, dim, h, w)
        return x.flatten(2).transpose(1, 2), (height // p, width // p)      # (B, h*w, dim)


def resize_pos_embed(pos: Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int],
                     mode: str = "bicubic") -> Tensor:
    """Interpolate grid position embeddings ``(1, h0*w0, D)`` to another grid ``(1, h1*w1, D)``.

    Args:
        pos: Position embeddings of the grid cells only (no class token), row-major.
        old_hw: Grid ``(h0, w0)`` the embeddings were learned for.
        new_hw: Grid ``(h1, w1)`` wanted.
        mode: ``F.interpolate`` mode.
    """
    if tuple(old_hw) == tuple(new_hw):
        return pos
    (h0, w0), dim = old_hw, pos.shape[-1]
    grid = pos.reshape(1, h0, w0, dim).permute(0, 3, 1, 2)                 # (1, D, h0, w0)
    grid = F.interpolate(grid, size=new_hw, mode=mode, align_corners=False)  # (1, D, h1, w1)
    return grid.permute(0, 2, 3, 1).reshape(1, new_hw[0] * new_hw[1], dim)
