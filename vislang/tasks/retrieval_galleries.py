"""Scoring retrieval per gallery: every caption query is ranked against the images of its own gallery only.

The emoji art styles (Google, Twitter, OpenMoji, ...) draw the same concepts with word-for-word the same
captions, so in one pooled gallery the other drawings of a concept would count as wrong answers; each style
is therefore a gallery of its own (``gallery_key``), and recalls are pooled over the galleries afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vislang.data.records import Record
from vislang.errors import VislangError
from vislang.metrics.retrieval import DEFAULT_KS, RetrievalScores, rank_summary, retrieval_scores


def query_texts(records: Sequence[Record], captions: str = "all") -> tuple[list[str], list[int]]:
    """The caption queries of ``records`` and the index of the record each describes.

    Args:
        records: Records with at least one caption each.
        captions: ``"all"`` (every caption) or ``"first"`` (the first caption of each record).
    """
    if captions not in ("all", "first"):
        raise VislangError(f"captions must be 'all' or 'first', not {captions!r}")
    texts, owner = [], []
    for i, rec in enumerate(records):
        for cap in rec.captions[:1] if captions == "first" else rec.captions:
            texts.append(cap)
            owner.append(i)
    return texts, owner


def galleries_of(records: Sequence[Record], key: str | None) -> list[str]:
    """Gallery name of each record: ``meta[key]`` (``"all"`` when ``key`` is None or the record lacks it)."""
    return [str(r.meta.get(key, "all")) if key else "all" for r in records]


@dataclass
class GalleryScores:
    """Retrieval scores with every query ranked within its own gallery.

    Attributes:
        overall: Scores pooled over the galleries (recalls are means over all queries of every gallery).
        per_gallery: Scores of each gallery on its own.
        sizes: Number of images (candidates) of each gallery.
    """

    overall: RetrievalScores
    per_gallery: dict[str, RetrievalScores]
    sizes: dict[str, int]


def gallery_retrieval_scores(image_embeds: Tensor, text_embeds: Tensor, text_image: Sequence[int],
                             galleries: Sequence[str], ks: Sequence[int] = DEFAULT_KS) -> GalleryScores:
    """Recall at K and ranks in both directions, each gallery of images scored on its own.

    Args:
        image_embeds: ``(N_img, E)``.
        text_embeds: ``(N_txt, E)``.
        text_image: ``(N_txt,)`` index of the image each text describes.
        galleries: ``(N_img,)`` gallery name of each image.
        ks: The K of the recalls.
    """
    owner = np.asarray(text_image, dtype=np.int64)
    names = np.asarray(list(galleries))
    per: dict[str, RetrievalScores] = {}
    sizes: dict[str, int] = {}
    image_ranks, text_ranks = [], []
    for name in sorted(set(names.tolist())):
        images = np.flatnonzero(names == name)                                  # gallery's image indices
        local = -np.ones(len(names), dtype=np.int64)
        local[images] = np.arange(len(images))
        texts = np.flatnonzero(np.isin(owner, images))
        scores = retrieval_scores(image_embeds[torch.from_numpy(images)], text_embeds[torch.from_numpy(texts)],
                                  local[owner[texts]], ks)
        per[name], sizes[name] = scores, len(images)
        image_ranks.append(scores.image_ranks)
        text_ranks.append(scores.text_ranks)
    all_image, all_text = np.concatenate(image_ranks), np.concatenate(text_ranks)
    overall = RetrievalScores(image_to_text=rank_summary(all_image, ks),
                              text_to_image=rank_summary(all_text, ks),
                              image_ranks=all_image, text_ranks=all_text)
    return GalleryScores(overall, per, sizes)


def subsampled_gallery_scores(image_embeds: Tensor, text_embeds: Tensor, text_image: Sequence[int],
                              galleries: Sequence[str], size: int, draws: int = 10, seed: int = 0,
                              ks: Sequence[int] = DEFAULT_KS) -> dict[str, Any]:
    """Recall at K with every gallery cut down to ``size`` random candidates, averaged over ``draws`` cuts.

    The protocol for comparing with numbers measured on a smaller gallery (COCO's "1K test" beside its 5K
    one): each draw keeps ``size`` images of each gallery (all of a smaller gallery) and their captions as
    the queries; recalls and ranks are pooled over the galleries of a draw, then averaged over the draws.

    Args:
        image_embeds: ``(N_img, E)``.
        text_embeds: ``(N_txt, E)``.
        text_image: ``(N_txt,)`` index of the image each text describes.
        galleries: ``(N_img,)`` gallery name of each image.
        size: Candidates per gallery in each draw.
        draws: Number of random cuts (seeded by ``seed``, the same on every machine).
        seed: Seed of the cuts.
        ks: The K of the recalls.

    Returns:
        ``{"gallery_size", "draws", "text_to_image", "image_to_text"}``, the last two averaged over the draws,
        plus ``"text_to_image_std"`` (standard deviation of each recall over the draws).

    Raises:
        VislangError: ``size`` or ``draws`` is below 1.
    """
    if size < 1 or draws < 1:
        raise VislangError(f"gallery size and draws must be >= 1, got {size} and {draws}")
    owner = np.asarray(text_image, dtype=np.int64)
    names = np.asarray(list(galleries))
    rng = np.random.default_rng(seed)
    per_draw: list[GalleryScores] = []
    for _ in range(draws):
        keep = np.concatenate([rng.permutation(np.flatnonzero(names == g))[:size]
                               for g in sorted(set(names.tolist()))])
        keep.sort()
        local = -np.ones(len(names), dtype=np.int64)
        local[keep] = np.arange(len(keep))
        texts = np.flatnonzero(local[owner] >= 0)
        per_draw.append(gallery_retrieval_scores(image_embeds[torch.from_numpy(keep)],
                                                 text_embeds[torch.from_numpy(texts)], local[owner[texts]],
                                                 names[keep].tolist(), ks))

    def mean(direction: str) -> dict[str, float]:
        rows = [getattr(d.overall, direction) for d in per_draw]
        return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}

    spread = {k: float(np.std([d.overall.text_to_image[k] for d in per_draw]))
              for k in per_draw[0].overall.text_to_image if k.startswith("R@")}
    return {"gallery_size": size, "draws": draws, "text_to_image": mean("text_to_image"),
            "image_to_text": mean("image_to_text"), "text_to_image_std": spread}


def recall_metrics(scores: RetrievalScores, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Flat ``{"t2i_R@1", ..., "i2t_R@1", ..., "rsum"}`` (``rsum``: the sum of all the recalls, in [0, 2*len(ks)])."""
    out = {f"t2i_R@{k}": scores.text_to_image[f"R@{k}"] for k in ks}
    out.update({f"i2t_R@{k}": scores.image_to_text[f"R@{k}"] for k in ks})
    out["rsum"] = sum(out.values())
    return out
