"""ResNet-18/34/50/101 (He et al. 2016, "Deep Residual Learning for Image Recognition", arXiv:1512.03385).

Module names and state-dict keys are those of torchvision's ``torchvision.models.resnet`` (``conv1``, ``bn1``,
``layer1.0.conv1``, ..., ``layer2.0.downsample.0``/``.1``, ``fc``), so a torchvision checkpoint
(``torch.save(model.state_dict())`` or a ``.safetensors`` export) loads strictly with
:func:`load_torchvision_weights`. As in torchvision the bottleneck downsamples in its 3x3 convolution
("ResNet v1.5"). ``fc`` is kept so official checkpoints load and :meth:`ResNet.classify` works; the encoder
output is the ``layer4`` map (grid) and its average (pooled). Any image of at least 32x32 pixels works:
224 px gives a 7x7 grid, 64 px a 2x2 grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import Tensor, nn

from vislang.errors import VislangError
from vislang.models.encoders import ImageFeatures, check_images, load_weights
from vislang.models.registry import register_family, register_model


@dataclass(frozen=True)
class ResNetConfig:
    """Architecture of :class:`ResNet`.

    Attributes:
        block: ``"basic"`` (two 3x3 convolutions; ResNet-18/34) or ``"bottleneck"`` (1x1-3x3-1x1, 4x wider
            output; ResNet-50/101).
        layers: Number of blocks in ``layer1`` .. ``layer4``.
        width: Channels of the stem and of ``layer1``'s blocks; doubled at each later stage (torchvision: 64).
        num_classes: Outputs of the ``fc`` classifier (1000 for ImageNet checkpoints).
        zero_init_residual: Start each residual branch's last BatchNorm at zero (Goyal et al. 2017).
        weights: torchvision checkpoint, weights file or vislang run to load after building
            (:func:`load_torchvision_weights`).
    """

    block: str = "basic"
    layers: tuple[int, ...] = (2, 2, 2, 2)
    width: int = 64
    num_classes: int = 1000
    zero_init_residual: bool = False
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.block not in _BLOCKS:
            raise VislangError(f"ResNet block must be one of {', '.join(_BLOCKS)}, got {self.block!r}")
        if len(self.layers) != 4 or min(self.layers) < 1:
            raise VislangError(f"ResNet layers must be four positive block counts, got {self.layers}")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """``relu(x + bn2(conv2(relu(bn1(conv1(x))))))``; ``downsample`` adapts ``x`` when the shape changes."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # (B, planes, H', W')
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)                                   # (B, planes, H', W')

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand to ``4 * planes``, plus the shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # (B, 4*planes, H', W')
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)                                   # (B, 4*planes, H', W')

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn3


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """ResNet image encoder with torchvision's module layout; see the module docstring."""

    min_size = 32

    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        self.cfg = cfg
        block = _BLOCKS[cfg.block]
        w = cfg.width
        self.conv1 = nn.Conv2d(3, w, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.in_channels = w
        self.layer1 = self._make_layer(block, w, cfg.layers[0], stride=1)
        self.layer2 = self._make_layer(block, 2 * w, cfg.layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * w, cfg.layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * w, cfg.layers[3], stride=2)
        self.out_dim = 8 * w * block.expansion
        self.fc = nn.Linear(self.out_dim, cfg.num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if cfg.zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_norm().weight)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or self.in_channels != out_channels:
            downsample = nn.Sequential(conv1x1(self.in_channels, out_channels, stride),
                                       nn.BatchNorm2d(out_channels))
        layers = [block(self.in_channels, planes, stride, downsample)]
        self.in_channels = out_channels
        layers += [block(out_channels, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def feature_map(self, images: Tensor) -> Tensor:
        """The ``layer4`` output ``(B, out_dim, H/32, W/32)`` (rounded up) of ImageNet-normalised images."""
        check_images(images, f"ResNet ({self.cfg.block}, {list(self.cfg.layers)})", self.min_size)
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))         # (B, w, H/4, W/4)
        x = self.layer1(x)                                                  # (B, w*e, H/4, W/4)
        x = self.layer2(x)                                                  # (B, 2w*e, H/8, W/8)
        x = self.layer3(x)                                                  # (B, 4w*e, H/16, W/16)
        return self.layer4(x)                                               # (B, 8w*e, H/32, W/32)

    def forward(self, images: Tensor) -> ImageFeatures:
        """Encode ``images`` ``(B, 3, H, W)``: grid = ``layer4`` cells, pooled = their average."""
        x = self.feature_map(images)                                        # (B, D, h, w)
        h, w = x.shape[-2:]
        grid = x.flatten(2).transpose(1, 2)                                 # (B, h*w, D)
        return ImageFeatures(grid=grid, pooled=grid.mean(dim=1), grid_hw=(h, w))

    def classify(self, images: Tensor) -> Tensor:
        """ImageNet-style logits ``(B, num_classes)``, as torchvision's ``ResNet.forward``."""
        return self.fc(self(images).pooled)


def load_torchvision_weights(model: ResNet, path: str | os.PathLike) -> None:
    """Load a torchvision ResNet checkpoint (a plain state dict in ``.pth`` or ``.safetensors``) strictly.

    Raises:
        VislangError: The file is unreadable, or is not a checkpoint of this architecture (the message lists
            the missing and unexpected keys and the shape mismatches).
    """
    if not isinstance(model, ResNet):
        raise VislangError(f"torchvision ResNet weights need a vislang ResNet, got {type(model).__name__}")
    load_weights(model, path, submodule="image_encoder")  # a vislang run directory: its image encoder


@register_family("resnet", ResNetConfig)
def build_resnet(cfg: ResNetConfig) -> ResNet:
    """A :class:`ResNet`, with ``cfg.weights`` loaded when given."""
    model = ResNet(cfg)
    if cfg.weights:
        load_torchvision_weights(model, cfg.weights)
    return model


register_model("resnet18", "resnet", "ResNet-18: basic blocks (2, 2, 2, 2), 11.7M parameters, D=512.",
               block="basic", layers=(2, 2, 2, 2))
register_model("resnet34", "resnet", "ResNet-34: basic blocks (3, 4, 6, 3), 21.8M parameters, D=512.",
               block="basic", layers=(3, 4, 6, 3))
register_model("resnet50", "resnet", "ResNet-50: bottleneck blocks (3, 4, 6, 3), 25.6M parameters, D=2048.",
               block="bottleneck", layers=(3, 4, 6, 3))
register_model("resnet101", "resnet", "ResNet-101: bottleneck blocks (3, 4, 23, 3), 44.5M parameters, D=2048.",
               block="bottleneck", layers=(3, 4, 23, 3))
register_model("resnet_tiny", "resnet", "A tiny ResNet for tests: basic blocks (1, 1, 1, 1), width 16, D=128, "
               "10 classes.", block="basic", layers=(1, 1, 1, 1), width=16, num_classes=10)
