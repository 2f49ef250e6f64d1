"""Image + text -> one decision: the VQA model and the image+text classifier.

``FusionModel(image_encoder, text_encoder, fusion, head)`` composes an image encoder (its grid of region
features, with their positions added), a text encoder (the question, or the text beside the image), a fusion
strategy from :mod:`vislang.fusion` and an MLP head over the classes: the answer vocabulary for VQA, the
labels for classification. The registered variants choose the defaults:

* ``vqa`` / ``vqa_tiny`` / ``vqa_minilm``: answer classifiers over an answer vocabulary, trained with soft VQA
  targets and a binary cross-entropy per answer (:class:`vislang.losses.VQALoss`), as in D. Teney et al. 2018,
  "Tips and Tricks for Visual Question Answering", and P. Anderson et al. 2018 ("Bottom-Up and Top-Down
  Attention"). ``vqa_minilm`` reads the question with the pre-trained all-MiniLM-L6-v2, locked.
* ``fusion_classifier`` / ``fusion_classifier_tiny``: the same composition trained with cross-entropy over
  class labels (:class:`vislang.losses.ClassificationLoss`).

Region positions: convolutional grid cells carry no explicit position, yet "left of" and "above" questions
need it; a Fourier embedding of each cell's centre (sines and cosines of its coordinates) is projected and
added to the region features (``region_pos``), as the box-coordinate features of Bottom-Up/Top-Down do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vislang.errors import VislangError
from vislang.fusion import IMAGE, TEXT, ModalityFeatures, create_fusion
from vislang.models.encoders import set_trainable
from vislang.models.registry import create_model, family_config, register_family, register_model
from vislang.models.text_encoders import HF_TOWERS, TEXT_MODES


@dataclass
class FusionModelConfig:
    """Parts of a :class:`FusionModel`.

    Attributes:
        image_encoder: Registered image encoder (``cnn_small``, ``cnn_tiny``, ``resnet18``, ``vit_tiny``, ...).
        image_encoder_kwargs: Its options (e.g. ``weights``), checked when it is built.
        text_encoder: Registered text encoder (``text_gru``, ``text_transformer``, ``minilm``, ``hf_text``).
        text_encoder_kwargs: Its options (``vocab_size``/``pad_id`` are set from the data).
        text_mode: ``"scratch"``, ``"locked"`` (frozen pre-trained tower) or ``"finetune"``.
        fusion: Registered fusion strategy (see :func:`vislang.fusion.list_fusions`).
        fusion_kwargs: :class:`vislang.fusion.FusionConfig` overrides (``hidden_dim``, ``num_heads``, ...); those
            given to :func:`~vislang.models.registry.create_model` update the variant's, key by key.
        num_classes: Outputs of the head (answers or labels; set from the data).
        region_pos: Add Fourier position embeddings of the grid cells to the region features.
        head_hidden: Hidden width of the MLP head (0: twice the fusion width).
        dropout: Dropout before and inside the head.
    """

    image_encoder: str = "cnn_small"
    image_encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    text_encoder: str = "text_gru"
    text_encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    text_mode: str = "scratch"
    fusion: str = "attention"
    fusion_kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 2
    region_pos: bool = True
    head_hidden: int = 0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.text_mode not in TEXT_MODES:
            raise VislangError(f"text_mode must be one of {', '.join(TEXT_MODES)}, not {self.text_mode!r}")
        if self.text_mode == "scratch" and self.text_encoder in HF_TOWERS:
            raise VislangError(f"text_mode 'scratch' trains from random weights, but {self.text_encoder!r} is "
                               "pre-trained; use text_mode 'locked' or 'finetune'")
        if self.num_classes < 1:
            raise VislangError(f"num_classes must be >= 1, got {self.num_classes}")


class FusionModelOutput(NamedTuple):
    """What :meth:`FusionModel.forward` returns (``modality_weights``: the fusion's own weights of the modalities,
    e.g. the gates of ``late-gating``, in the order of :attr:`FusionModel.modalities`)."""

    logits: Tensor                 # (B, C) over the answers / classes
    attention: Tensor | None       # (B, N) weights over the image regions (attending fusions), else None
    grid_hw: tuple[int, int]       # (h, w) of the image grid, to draw the attention map
    modality_weights: Tensor | None = None  # (B, M) gates of the fusion (FusionModel.modalities order), else None


class RegionPosition(nn.Module):
    """Fourier features of each grid cell's centre, ``sin/cos(pi * 2^k * (x, y))``, projected to ``dim``."""

    def __init__(self, dim: int, frequencies: int = 4):
        super().__init__()
        self.frequencies = frequencies
        self.proj = nn.Linear(4 * frequencies, dim)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, grid_hw: tuple[int, int], device: torch.device) -> Tensor:
        """Embeddings ``(h*w, dim)`` in row-major order, as the encoders flatten their grids."""
        h, w = grid_hw
        ys = (torch.arange(h, device=device) + 0.5) / h * 2 - 1
        xs = (torch.arange(w, device=device) + 0.5) / w * 2 - 1
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([xx.flatten(), yy.flatten()], dim=-1)                  # (N, 2) in [-1, 1]
        freqs = math.pi * 2.0 ** torch.arange(self.frequencies, device=device)      # (F,)
        angles = (coords[:, :, None] * freqs).flatten(1)                            # (N, 2F)
        return self.proj(torch.cat([angles.sin(), angles.cos()], dim=-1))          # (N, dim)


class FusionModel(nn.Module):
    """Image encoder + text encoder + fusion + classifier head.

    Args:
        image_encoder: ``(B, 3, H, W)`` -> :class:`~vislang.models.encoders.ImageFeatures`, with ``out_dim``.
        text_encoder: ``(input_ids, attention_mask)`` -> :class:`~vislang.models.text_encoders.TextFeatures`.
        fusion: A :class:`vislang.fusion.Fusion` built for ``{"image": image dim, "text": text dim}``.
        head: Fused vector ``(B, fusion.out_dim)`` -> logits ``(B, C)``.
        region_pos: Add position embeddings to the image regions.
        text_mode: ``"locked"`` freezes the text encoder.
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, fusion: nn.Module, head: nn.Module,
                 region_pos: bool = True, text_mode: str = "scratch"):
        super().__init__()
        self.image_encoder, self.text_encoder, self.fusion, self.head = image_encoder, text_encoder, fusion, head
        self.region_pos = RegionPosition(image_encoder.out_dim) if region_pos else None
        self.text_mode = text_mode
        if text_mode == "locked":
            set_trainable(text_encoder, False)

    def features(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor,
                 image_index: Tensor | None = None) -> tuple[dict[str, ModalityFeatures], tuple[int, int]]:
        """The modality features the fusion reads, and the ``(h, w)`` of the image grid."""
        img = self.image_encoder(images)
        grid = img.grid                                                             # (B_img, N, Dv)
        if image_index is not None:
            grid = grid[image_index]                                                # (B, N, Dv) per text
        if self.region_pos is not None:
            grid = grid + self.region_pos(img.grid_hw, grid.device)
        txt = self.text_encoder(input_ids, attention_mask)                           # (B, L, Dt), (B, Dt)
        return {IMAGE: ModalityFeatures(grid, grid.mean(dim=1), None),
                TEXT: ModalityFeatures(txt.tokens, txt.pooled, attention_mask.bool())}, img.grid_hw

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor,
                image_index: Tensor | None = None) -> FusionModelOutput:
        """Logits ``(B, C)`` for ``images`` ``(B, 3, H, W)`` and texts ``input_ids`` ``(B, L)`` with their
        ``attention_mask`` ``(B, L)`` (1 at real tokens).

        With ``image_index`` ``(B,)``, text ``b`` goes with image ``image_index[b]`` of ``images``
        ``(B_img, 3, H, W)``: several questions about one image share one pass of the image encoder."""
        feats, grid_hw = self.features(images, input_ids, attention_mask, image_index)
        out = self.fusion(feats)
        return FusionModelOutput(self.head(out.fused), out.attention, grid_hw, out.modality_weights)

    @property
    def modalities(self) -> list[str]:
        """The modalities the fusion reads, in the order of :attr:`FusionModelOutput.modality_weights`."""
        return list(self.fusion.dims)


@register_family("fusion_model", FusionModelConfig, merge=("fusion_kwargs",))
def build_fusion_model(cfg: FusionModelConfig) -> FusionModel:
    """The encoders from the registry (image first), the fusion, then the head."""
    image = create_model(cfg.image_encoder, **cfg.image_encoder_kwargs)
    text = create_model(cfg.text_encoder, **cfg.text_encoder_kwargs)
    fusion = create_fusion(cfg.fusion, {IMAGE: image.out_dim, TEXT: text.out_dim}, **cfg.fusion_kwargs)
    hidden = cfg.head_hidden or 2 * fusion.out_dim
    head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(fusion.out_dim, hidden), nn.GELU(),
                         nn.Dropout(cfg.dropout), nn.Linear(hidden, cfg.num_classes))
    return FusionModel(image, text, fusion, head, region_pos=cfg.region_pos, text_mode=cfg.text_mode)


register_model("vqa", "fusion_model", "VQA answer classifier: small CNN regions + GRU question + attention fusion "
               "(set num_classes, vocab).")
register_model("vqa_minilm", "fusion_model", "VQA with the pre-trained all-MiniLM-L6-v2 question encoder (locked "
               "by default).", text_encoder="minilm", text_mode="locked")
register_model("vqa_tiny", "fusion_model", "A tiny VQA model for tests: tiny CNN, tiny GRU, width 16.",
               image_encoder="cnn_tiny", text_encoder="text_gru_tiny",
               fusion_kwargs={"hidden_dim": 16, "num_heads": 2, "depth": 1}, dropout=0.0)
register_model("fusion_classifier", "fusion_model", "Image + text classifier: small CNN + GRU text + late "
               "concatenation (any fusion via fusion=...).", fusion="late-concat")
register_model("fusion_classifier_tiny", "fusion_model", "A tiny image + text classifier for tests.",
               image_encoder="cnn_tiny", text_encoder="text_gru_tiny", fusion="late-concat",
               fusion_kwargs={"hidden_dim": 16, "num_heads": 2, "depth": 1}, dropout=0.0)


def fusion_model_config(name: str, **kwargs: Any) -> FusionModelConfig:
    """:func:`~vislang.models.registry.model_config` of a registered fusion model.

    Raises:
        VislangError: ``name`` is not a fusion model, or an option is invalid.
    """
    return family_config(name, "fusion_model", "a fusion model", **kwargs)
