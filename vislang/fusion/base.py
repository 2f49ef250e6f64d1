"""The one interface of every fusion strategy, and the string factory ``create_fusion("late-concat", ...)``.

A fusion module is built from the widths of its input modalities (``dims``, e.g. ``{"image": 256, "text":
128}``) and a :class:`FusionConfig`; its ``forward`` takes the modalities' features by name
(:class:`ModalityFeatures`: per-token features, their mask and one pooled vector) and returns
:class:`FusionOutput`: one fused vector per sample of width ``out_dim``, and attention weights over the image
regions when the strategy has them (for attention maps).

Conventions: the modality named ``"image"`` is the *context* that attention strategies look at and the one
named ``"text"`` is the *guide* (the question). Masks are boolean ``(B, N)``, ``True`` at real tokens (the
opposite of the ``key_padding_mask`` of :class:`~vislang.layers.MultiHeadAttention`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vislang.config import update_config
from vislang.errors import VislangError
from vislang.utils.registry import Registry

IMAGE, TEXT = "image", "text"


class ModalityFeatures(NamedTuple):
    """The features of one modality, as every fusion strategy reads them."""

    tokens: Tensor            # (B, N, D) per-token features (image regions, words)
    pooled: Tensor            # (B, D) one vector per sample
    mask: Tensor | None = None  # (B, N) bool, True at real tokens; None: all real


class FusionOutput(NamedTuple):
    """What every fusion strategy returns."""

    fused: Tensor                          # (B, out_dim)
    attention: Tensor | None = None        # (B, N_image) weights over the image regions, if any
    modality_weights: Tensor | None = None  # (B, M) weight of each modality, if any


@dataclass(frozen=True)
class FusionConfig:
    """Options of the fusion strategies (each reads the fields it needs; read by the builders only).

    Attributes:
        hidden_dim: Width of the joint space and of the fused output (``out_dim``).
        num_heads: Attention heads (attention, transformer fusion).
        glimpses: Attention glimpses over the image regions (attention fusion; SAN/MCB-style).
        rank: Rank of the low-rank bilinear interaction (bilinear fusion; 1 = MLB's Hadamard product).
        depth: Transformer layers (transformer and co-attention fusion).
        mlp_ratio: MLP width of the Transformer layers as a multiple of ``hidden_dim``.
        dropout: Dropout on the projected inputs and inside the layers.
    """

    hidden_dim: int = 256
    num_heads: int = 4
    glimpses: int = 2
    rank: int = 5
    depth: int = 2
    mlp_ratio: float = 2.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden_dim < 1 or self.num_heads < 1 or self.glimpses < 1 or self.rank < 1 or self.depth < 1:
            raise VislangError("fusion config: hidden_dim, num_heads, glimpses, rank and depth must be >= 1")
        if self.hidden_dim % self.num_heads:
            raise VislangError(f"fusion config: hidden_dim {self.hidden_dim} is not divisible by num_heads "
                               f"{self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise VislangError(f"fusion config: dropout must be in [0, 1), got {self.dropout}")


class Fusion(nn.Module):
    """Base of the fusion strategies: checks the modalities given against those it was built for.

    Args:
        dims: Width of each input modality's tokens and pooled vector.
        cfg: Options.
        needs: Modalities the strategy requires (checked by name).
    """

    def __init__(self, dims: Mapping[str, int], cfg: FusionConfig, needs: tuple[str, ...] = ()):
        super().__init__()
        missing = [m for m in needs if m not in dims]
        if missing:
            raise VislangError(f"{type(self).__name__} needs the modalities {', '.join(needs)}; "
                               f"got {', '.join(dims) or 'none'}")
        if len(dims) < 2:
            raise VislangError(f"{type(self).__name__} fuses two or more modalities, got {list(dims)}")
        self.dims, self.cfg = dict(dims), cfg
        self.out_dim = cfg.hidden_dim

    def check(self, features: Mapping[str, ModalityFeatures]) -> None:
        """Raise a clear error when ``features`` do not match the modalities and widths of the module."""
        if set(features) != set(self.dims):
            raise VislangError(f"{type(self).__name__} was built for modalities {sorted(self.dims)}, "
                               f"got {sorted(features)}")
        for name, f in features.items():
            if f.pooled.shape[-1] != self.dims[name] or f.tokens.shape[-1] != self.dims[name]:
                raise VislangError(f"{type(self).__name__}: modality {name!r} has width "
                                   f"{f.tokens.shape[-1]}/{f.pooled.shape[-1]}, built for {self.dims[name]}")
            if f.mask is not None and f.mask.shape != f.tokens.shape[:2]:
                raise VislangError(f"{type(self).__name__}: mask of {name!r} has shape {tuple(f.mask.shape)}, "
                                   f"tokens {tuple(f.tokens.shape[:2])}")


FusionBuilder = Callable[[Mapping[str, int], FusionConfig], Fusion]


class FusionEntry(NamedTuple):
    """A registered fusion strategy."""

    build: FusionBuilder          # (dims, cfg) -> Fusion: the class or a function
    description: str              # one line, for listings


FUSIONS: Registry[FusionEntry] = Registry("fusion", load="vislang.fusion")


def register_fusion(name: str, description: str) -> Callable[[FusionBuilder], FusionBuilder]:
    """Decorator registering a fusion class or builder under ``name`` (``late-concat``, ``attention``, ...)."""

    def deco(fn: FusionBuilder) -> FusionBuilder:
        FUSIONS.add(name, FusionEntry(fn, description))
        return fn

    return deco


def list_fusions() -> dict[str, str]:
    """Registered fusion names and their one-line descriptions."""
    return {name: FUSIONS.get(name).description for name in FUSIONS.names()}


def create_fusion(name: str, dims: Mapping[str, int], **options: Any) -> Fusion:
    """Build the fusion strategy ``name`` for modalities of widths ``dims``; ``options`` are
    :class:`FusionConfig` fields, checked as config overrides are.

    Raises:
        VislangError: Unknown name; :class:`~vislang.config.ConfigError` for an unknown option or a wrong type.
    """
    entry = FUSIONS.get(name)
    return entry.build(dims, update_config(FusionConfig(), options, source=f"fusion {name}"))


def real_mask(f: ModalityFeatures) -> Tensor:
    """``(B, N)`` bool mask of ``f``'s real tokens (all True when it has none)."""
    if f.mask is not None:
        return f.mask.bool()
    return torch.ones(f.tokens.shape[:2], dtype=torch.bool, device=f.tokens.device)
