"""A small convolutional image encoder for 32-64 px images (shapes, emoji, icons), fast on CPU.

Design: a VGG-style stack of 3x3 convolutions with BatchNorm (Ioffe & Szegedy 2015) and GELU, in stages (four by
default) whose first convolution downsamples; later convolutions of a stage are residual blocks (He et al. 2016).
With the default strides (2, 2, 2, 1) a 64 px image gives an 8x8 grid and a 32 px image a 4x4 grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from vislang.errors import VislangError
from vislang.layers import MixStyle
from vislang.models.encoders import ImageFeatures, check_images, with_weights
from vislang.models.registry import register_family, register_model


@dataclass(frozen=True)
class CNNConfig:
    """Architecture of :class:`SmallCNN`.

    Attributes:
        widths: Channels of the stages before the last (three by default).
        dim: Channels of the last stage, the feature size ``D`` (``out_dim``).
        strides: Stride of each stage's first convolution; their product is the grid's downsampling.
        blocks: Residual blocks after each stage's first convolution.
        mixstyle: Probability of MixStyle (Zhou et al. 2021) after each of the first ``mixstyle_stages`` stages
            of a training batch: the images swap part of their feature statistics, their "style" (0: off).
        mixstyle_stages: How many of the first stages are followed by MixStyle.
        weights: Weights file or vislang run to load after building (its ``image_encoder`` part).
        pretrained: Name of weights shipped with vislang to load instead (``emoji_styles``: the style-robust
            encoder of the emoji retrieval recipe; see ``vislang/models/pretrained/emoji_styles.md``).
    """

    widths: tuple[int, ...] = (32, 64, 128)
    dim: int = 256
    strides: tuple[int, ...] = (2, 2, 2, 1)
    blocks: tuple[int, ...] = (0, 1, 1, 1)
    mixstyle: float = 0.0
    mixstyle_stages: int = 2
    weights: str | None = None
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if not len(self.widths) + 1 == len(self.strides) == len(self.blocks):
            raise VislangError(f"CNN config: {len(self.widths)} widths + dim need as many strides and blocks, "
                               f"got {len(self.strides)} strides and {len(self.blocks)} blocks")
        if not 0.0 <= self.mixstyle <= 1.0 or not 0 <= self.mixstyle_stages < len(self.strides):
            raise VislangError(f"CNN config: mixstyle is a probability in [0, 1] (got {self.mixstyle}) and "
                               f"mixstyle_stages in [0, {len(self.strides) - 1}] (got {self.mixstyle_stages})")


class ConvBNAct(nn.Sequential):
    """3x3 convolution, BatchNorm, GELU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )


class ResidualBlock(nn.Module):
    """``gelu(x + bn(conv(gelu(bn(conv(x))))))`` at constant width and resolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.bn2(self.conv2(self.conv1(x))))        # (B, C, H, W)


class SmallCNN(nn.Module):
    """Convolutional stages; the last stage's map is the grid, its mean the pooled feature."""

    def __init__(self, cfg: CNNConfig):
        super().__init__()
        self.cfg = cfg
        channels = (*cfg.widths, cfg.dim)
        stages, in_channels = [], 3
        for i, (out_channels, stride, blocks) in enumerate(zip(channels, cfg.strides, cfg.blocks)):
            mix = [MixStyle(cfg.mixstyle)] if cfg.mixstyle > 0 and i < cfg.mixstyle_stages else []
            stages.append(nn.Sequential(ConvBNAct(in_channels, out_channels, stride),
                                        *(ResidualBlock(out_channels) for _ in range(blocks)), *mix))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.out_dim = cfg.dim
        self.min_size = max(8, math.prod(cfg.strides))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: Tensor) -> ImageFeatures:
        """Encode ``images`` ``(B, 3, H, W)`` (ImageNet-normalised)."""
        check_images(images, type(self).__name__, self.min_size)
        x = self.stages(images)                                            # (B, D, h, w)
        h, w = x.shape[-2:]
        grid = x.flatten(2).transpose(1, 2)                                 # (B, h*w, D)
        return ImageFeatures(grid=grid, pooled=grid.mean(dim=1), grid_hw=(h, w))


@register_family("cnn", CNNConfig)
def build_cnn(cfg: CNNConfig) -> SmallCNN:
    """A :class:`SmallCNN`, with ``cfg.weights`` (or the shipped ``cfg.pretrained``) loaded when given."""
    return with_weights(SmallCNN(cfg), cfg.weights, "image_encoder", cfg.pretrained)


register_model("cnn_small", "cnn", "The small CNN: widths 32/64/128, D=256, 1.9M parameters; 64 px -> 8x8 grid.")
register_model("cnn_tiny", "cnn", "A very small CNN for tests: widths 8/16/16, D=32, one residual block.",
               widths=(8, 16, 16), dim=32, blocks=(0, 0, 0, 1))
