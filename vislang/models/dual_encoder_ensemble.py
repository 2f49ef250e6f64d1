"""Several dual encoders answering as one: the members' embeddings side by side.

Each member embeds an image or a text into its own L2-normalised space of width ``E``; the ensemble's
embedding is their concatenation scaled by ``1 / sqrt(M)`` (``M`` members), itself L2-normalised, so that the
ensemble's cosine similarity is the **mean of the members' cosine similarities**. Retrieval, search indexes,
match maps and export then work on it as on one dual encoder of width ``M * E``.

Members trained alike but not identically (another seed, another augmentation strength) make different
mistakes; averaging their similarities is the oldest cure for that (T. G. Dietterich, "Ensemble Methods in
Machine Learning", 2000). Members with the same locked pre-trained text tower share one copy of it
(``share_text``). Build an ensemble from trained runs with ``vislang models --ensemble RUN RUN ... --out DIR``
(:func:`vislang.tasks.retrieval_ensemble.ensemble_retrievers`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vislang.errors import VislangError
from vislang.models.dual_encoder import DualEncoder, DualEncoderOutput, RegionScores
from vislang.models.registry import create_model, register_family, register_model


@dataclass
class DualEncoderEnsembleConfig:
    """The members of an ensemble.

    Attributes:
        members: Each member as saved in its own model folder: ``{"model": registered dual encoder,
            "model_config": its options}``, in order.
        share_text: The members have one text tower in common (the same locked pre-trained tower), stored and
            run once.
    """

    members: list[dict[str, Any]] = field(default_factory=list)
    share_text: bool = False


class DualEncoderEnsemble(nn.Module):
    """Dual encoders whose similarities are averaged (see the module docstring).

    Args:
        members: Two or more dual encoders with the same embedding width.
        share_text: Give every member the first member's text tower (their towers must be the same locked
            one; the caller checks the weights).

    Raises:
        VislangError: Fewer than two members, or members of different embedding widths.
    """

    def __init__(self, members: Sequence[DualEncoder], share_text: bool = False):
        super().__init__()
        if len(members) < 2:
            raise VislangError(f"an ensemble needs at least two dual encoders, got {len(members)}")
        widths = sorted({m.embed_dim for m in members})
        if len(widths) > 1:
            raise VislangError(f"ensemble members must have one embedding width, got {widths}")
        if share_text:
            for m in members[1:]:
                m.text_encoder = members[0].text_encoder
        self.members = nn.ModuleList(members)
        self.share_text = share_text
        self.member_dim = widths[0]
        self.embed_dim = widths[0] * len(members)

    def _join(self, parts: list[Tensor]) -> Tensor:
        return torch.cat(parts, dim=-1) / math.sqrt(len(parts))                   # (B, M*E), unit norm

    def _split(self, embeds: Tensor) -> list[Tensor]:
        """A joint embedding ``(..., M*E)`` as each member's part, rescaled to its own space."""
        return [p * math.sqrt(len(self.members)) for p in embeds.split(self.member_dim, dim=-1)]

    def encode_image(self, images: Tensor) -> Tensor:
        """L2-normalised image embeddings ``(B, M*E)`` of ImageNet-normalised ``images`` ``(B, 3, H, W)``."""
        return self._join([m.encode_image(images) for m in self.members])

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor, *, cached: bool = True) -> Tensor:
        """L2-normalised text embeddings ``(B, M*E)`` of ``input_ids`` ``(B, L)`` (see
        :meth:`DualEncoder.encode_text <vislang.models.dual_encoder.DualEncoder.encode_text>`); a shared tower
        runs once."""
        if self.share_text:
            feats = self.members[0].text_features(input_ids, attention_mask, cached=cached)  # (B, D_txt)
            return self._join([m.project_text(feats) for m in self.members])
        return self._join([m.encode_text(input_ids, attention_mask, cached=cached) for m in self.members])

    def region_scores(self, images: Tensor, queries: Tensor) -> RegionScores:
        """Where each image matches a query: the mean of the members' maps, whose mean is the ensemble's score
        (see :meth:`DualEncoder.region_scores <vislang.models.dual_encoder.DualEncoder.region_scores>`).

        Raises:
            VislangError: ``queries`` is not ``(M*E,)`` or ``(B, M*E)``, or the members' grids differ.
        """
        b = len(images)
        if queries.dim() not in (1, 2) or queries.shape[-1] != self.embed_dim or (
                queries.dim() == 2 and len(queries) != b):
            raise VislangError(f"region scores: queries must be ({self.embed_dim},) or ({b}, {self.embed_dim}) "
                               f"for {b} images, got {tuple(queries.shape)}")
        parts = [m.region_scores(images, q) for m, q in zip(self.members, self._split(queries))]
        shapes = sorted({tuple(p.maps.shape) for p in parts})
        if len(shapes) > 1:
            raise VislangError(f"match maps of an ensemble need one image grid for all members, got {shapes}")
        n = len(parts)
        return RegionScores(sum(p.maps for p in parts) / n, sum(p.scores for p in parts) / n,
                            all(p.exact for p in parts))

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> DualEncoderOutput:
        """Embed a batch of images and a batch of texts."""
        return DualEncoderOutput(self.encode_image(images), self.encode_text(input_ids, attention_mask),
                                 self.similarity_scale())

    def similarity_scale(self) -> Tensor:
        """The mean of the members' similarity scales (a scalar tensor)."""
        return torch.stack([m.similarity_scale() for m in self.members]).mean()


@register_family("dual_encoder_ensemble", DualEncoderEnsembleConfig)
def build_dual_encoder_ensemble(cfg: DualEncoderEnsembleConfig) -> DualEncoderEnsemble:
    """Each member from the registry, then the ensemble.

    Raises:
        VislangError: A member is not ``{"model": ..., "model_config": {...}}`` of a dual encoder.
    """
    members = []
    for i, spec in enumerate(cfg.members):
        if not isinstance(spec, dict) or not isinstance(spec.get("model"), str) or not isinstance(
                spec.get("model_config", {}), dict):
            raise VislangError(f"ensemble member {i}: expected {{'model': NAME, 'model_config': {{...}}}}, "
                               f"got {spec!r}")
        model = create_model(spec["model"], **spec.get("model_config", {}))
        if not isinstance(model, DualEncoder):
            raise VislangError(f"ensemble member {i}: {spec['model']!r} is not a dual encoder")
        members.append(model)
    return DualEncoderEnsemble(members, cfg.share_text)


register_model("dual_encoder_ensemble", "dual_encoder_ensemble", "Dual encoders whose cosine similarities are "
               "averaged (built from trained runs by `vislang models --ensemble`).")
register_model("dual_encoder_ensemble_tiny", "dual_encoder_ensemble", "Two untrained tiny dual encoders as one, "
               "for tests.", members=[{"model": "dual_encoder_tiny"}, {"model": "dual_encoder_tiny"}])
