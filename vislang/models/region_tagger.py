"""Region tagger: an image encoder whose every grid cell names the attributes of the object it shows.

``RegionTagger(image_encoder, heads)`` puts one linear classifier per attribute (colour, shape, size, ...) on
each cell of the encoder's feature grid; class 0 of every attribute is "no object here". Trained on scenes
with object annotations (:mod:`vislang.tasks.regions`), it gives a VQA model region features that already
say what is where: the role of the object- and attribute-trained detector behind the "bottom-up" features
of P. Anderson et al. 2018 ("Bottom-Up and Top-Down Attention for Image Captioning and VQA"), whose
Faster R-CNN learnt Visual Genome's object and attribute labels before any question was seen. Start a VQA
model's image encoder from a tagger run with ``model_kwargs.image_encoder_kwargs.weights=RUN``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from torch import Tensor, nn

from vislang.errors import VislangError
from vislang.models.registry import create_model, register_family, register_model


@dataclass
class RegionTaggerConfig:
    """Parts of a :class:`RegionTagger`.

    Attributes:
        image_encoder: Registered image encoder with a feature grid (``cnn_small``, ``resnet18``, ...).
        image_encoder_kwargs: Its options (``widths``, ``dim``, ``weights``, ...), checked when it is built.
        attributes: Attribute name -> number of classes, "no object" included (set from the data).
    """

    image_encoder: str = "cnn_small"
    image_encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.attributes.items() if int(v) < 2}
        if bad:
            raise VislangError(f"region tagger: every attribute needs >= 2 classes (no object + one), got {bad}")


class RegionTaggerOutput(NamedTuple):
    """What :meth:`RegionTagger.forward` returns."""

    logits: dict[str, Tensor]      # attribute -> (B, N, C_attr) per grid cell
    grid_hw: tuple[int, int]       # (h, w) of the grid; cells are in row-major order


class RegionTagger(nn.Module):
    """Image encoder + one linear classifier per attribute on every grid cell.

    Args:
        image_encoder: ``(B, 3, H, W)`` -> :class:`~vislang.models.encoders.ImageFeatures`, with ``out_dim``.
        heads: Attribute name -> ``nn.Linear(out_dim, classes)``.
    """

    def __init__(self, image_encoder: nn.Module, heads: nn.ModuleDict):
        super().__init__()
        self.image_encoder, self.heads = image_encoder, heads

    def forward(self, images: Tensor) -> RegionTaggerOutput:
        feats = self.image_encoder(images)                                      # grid (B, N, D)
        return RegionTaggerOutput({name: head(feats.grid) for name, head in self.heads.items()}, feats.grid_hw)


@register_family("region_tagger", RegionTaggerConfig)
def build_region_tagger(cfg: RegionTaggerConfig) -> RegionTagger:
    """The image encoder from the registry, then one linear head per attribute."""
    if not cfg.attributes:
        raise VislangError("region tagger: no attributes (give attributes={name: classes})")
    image = create_model(cfg.image_encoder, **cfg.image_encoder_kwargs)
    heads = nn.ModuleDict({name: nn.Linear(image.out_dim, int(n)) for name, n in cfg.attributes.items()})
    return RegionTagger(image, heads)


register_model("region_tagger", "region_tagger", "The small CNN with per-cell attribute classifiers (set "
               "``attributes``).")
register_model("region_tagger_tiny", "region_tagger", "The tiny CNN with per-cell attribute classifiers, for tests.",
               image_encoder="cnn_tiny")
