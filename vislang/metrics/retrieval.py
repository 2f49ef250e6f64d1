"""Image-text retrieval metrics: recall at K, median and mean rank, in both directions.

Several captions per image are handled as CLIP_benchmark does: for text-to-image retrieval every caption
is a query whose single correct answer is its image; for image-to-text retrieval an image query is
correct at rank r when *any* of its captions is ranked r (the best-ranked one counts). Ranks start at 1 and
count the candidates scored strictly higher than the correct one, so ties go in favour of the query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vislang.errors import DataError

DEFAULT_KS = (1, 5, 10)
_CHUNK = 1024  # queries ranked at once (memory: chunk x number of candidates)


@dataclass(frozen=True)
class RetrievalScores:
    """Retrieval metrics of both directions; recalls are fractions in [0, 1].

    Attributes:
        image_to_text: ``{"R@1": ..., "R@5": ..., "R@10": ..., "median_rank": ..., "mean_rank": ...}``.
        text_to_image: Same keys.
        image_ranks: Rank of the best correct caption of each image. [N_img]
        text_ranks: Rank of the correct image of each caption. [N_txt]
    """

    image_to_text: dict[str, float]
    text_to_image: dict[str, float]
    image_ranks: np.ndarray
    text_ranks: np.ndarray

    def as_dict(self) -> dict[str, float]:
        """Flat ``{"image_to_text/R@1": ..., "text_to_image/R@1": ..., ...}``."""
        out = {f"image_to_text/{k}": v for k, v in self.image_to_text.items()}
        out.update({f"text_to_image/{k}": v for k, v in self.text_to_image.items()})
        return out


def _as_array(x: object, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().float().numpy()
    array = np.asarray(x)
    if array.ndim != 2:
        raise DataError(f"must be a 2-D array, got shape {array.shape}", field=name)
    return array.astype(np.float32, copy=False)


def rank_summary(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``{"R@k": ..., "median_rank": ..., "mean_rank": ...}`` of 1-based ranks ``(N,)``."""
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(np.mean(ranks))
    return out


def retrieval_scores_from_similarity(similarity: object, text_image: Sequence[int] | np.ndarray,
                                     ks: Sequence[int] = DEFAULT_KS) -> RetrievalScores:
    """Retrieval metrics from an image-by-text similarity matrix.

    Args:
        similarity: ``[N_img, N_txt]`` scores (higher is more similar), numpy or torch.
        text_image: ``[N_txt]`` index of the image each text describes.
        ks: The K of the recalls.

    Raises:
        DataError: shapes disagree, an image index is out of range, or an image has no text.
    """
    sim = _as_array(similarity, "similarity")  # [I, T]
    num_images, num_texts = sim.shape
    owner = np.asarray(text_image, dtype=np.int64)  # [T]
    if owner.shape != (num_texts,):
        raise DataError(f"needs one image index per text ({num_texts}), got shape {owner.shape}",
                        field="text_image")
    if num_texts and (owner.min() < 0 or owner.max() >= num_images):
        raise DataError(f"image indices must lie in [0, {num_images})", field="text_image")
    without_text = np.flatnonzero(np.bincount(owner, minlength=num_images) == 0)
    if len(without_text):
        raise DataError(f"{len(without_text)} images have no text, e.g. {without_text[:10].tolist()}",
                        field="text_image")

    text_ranks = np.empty(num_texts, dtype=np.int64)
    for start in range(0, num_texts, _CHUNK):
        cols = np.arange(start, min(start + _CHUNK, num_texts))
        scores = sim[:, cols]  # [I, C]
        correct = scores[owner[cols], np.arange(len(cols))]  # [C]
        text_ranks[cols] = 1 + (scores > correct[None, :]).sum(axis=0)

    image_ranks = np.empty(num_images, dtype=np.int64)
    for start in range(0, num_images, _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, num_images))
        scores = sim[rows]  # [C, T]
        is_own = owner[None, :] == rows[:, None]  # [C, T]
        best_own = np.where(is_own, scores, -np.inf).max(axis=1)  # [C]
        image_ranks[rows] = 1 + (scores > best_own[:, None]).sum(axis=1)

    return RetrievalScores(image_to_text=rank_summary(image_ranks, ks),
                           text_to_image=rank_summary(text_ranks, ks), image_ranks=image_ranks, text_ranks=text_ranks)


def retrieval_scores(image_embeddings: object, text_embeddings: object, text_image: Sequence[int] | np.ndarray,
                     ks: Sequence[int] = DEFAULT_KS, normalize: bool = True) -> RetrievalScores:
    """Retrieval metrics from embeddings, scored by dot product (cosine similarity when ``normalize``).

    Args:
        image_embeddings: ``[N_img, D]``.
        text_embeddings: ``[N_txt, D]``.
        text_image: ``[N_txt]`` index of the image each text describes.
        ks: The K of the recalls.
        normalize: L2-normalise the embeddings first.
    """
    images = _as_array(image_embeddings, "image_embeddings")
    texts = _as_array(text_embeddings, "text_embeddings")
    if images.shape[1] != texts.shape[1]:
        raise DataError(f"image and text embeddings have different widths ({images.shape[1]} and "
                        f"{texts.shape[1]})", field="text_embeddings")
    if normalize:
        images = images / np.maximum(np.linalg.norm(images, axis=1, keepdims=True), 1e-12)
        texts = texts / np.maximum(np.linalg.norm(texts, axis=1, keepdims=True), 1e-12)
    return retrieval_scores_from_similarity(images @ texts.T, text_image, ks)
