"""CIDEr-D exactly as pycocoevalcap's ``Cider`` computes it (corpus mean and per image).

Each sentence becomes, per n-gram order, a tf-idf vector: term frequency times ``log(N) - log(max(1,
df))`` where ``N`` is the number of images and ``df`` the number of images whose references contain the
n-gram (document frequency from the references of the evaluated set). For each reference the cosine
similarity with the candidate uses clipped candidate weights ``min(w_cand, w_ref) * w_ref``, is multiplied
by the Gaussian length penalty ``exp(-delta^2 / (2 sigma^2))`` (sigma = 6; ``delta`` is the difference in
the number of bigrams), averaged over the orders and the references, and multiplied by 10.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from vislang.metrics._corpus import CaptionSet
from vislang.metrics._ngrams import lookup, reference_runs


def compute_cider(captions: CaptionSet, n: int = 4, sigma: float = 6.0) -> tuple[float, np.ndarray]:
    """Corpus CIDEr-D and per-image scores ``[N]`` of a tokenised caption set."""
    table = captions.ngrams(n)
    num_images, num_refs = len(captions), len(captions.references)
    ref_image = captions.ref_image  # [R]
    log_num_images = np.log(float(num_images))
    # "length" in pycocoevalcap's CIDEr is the number of bigrams of the sentence.
    bigrams = np.maximum(table.lengths - 1, 0).astype(np.float64)  # [S]
    delta = bigrams[ref_image] - bigrams[num_images:]  # [R] candidate minus reference
    penalty = np.e ** (-(delta ** 2) / (2 * sigma ** 2))  # [R]

    sims = np.zeros((num_refs, n))  # [R, n] penalised similarity of each reference with its candidate
    for k, order in enumerate(table.orders):
        is_ref, runs = reference_runs(order, ref_image, num_images)
        document_frequency = np.bincount(runs.ngram, minlength=order.size)  # images whose references have it
        idf = log_num_images - np.log(np.maximum(1.0, document_frequency.astype(np.float64)))  # [G]
        weights = order.count * idf[order.ngram]  # [E] tf-idf of every entry
        norms = np.sqrt(np.bincount(order.sentence, weights=weights ** 2, minlength=len(table.lengths))
                        .astype(np.float64))  # [S]

        ref_sentence = order.sentence[is_ref] - num_images
        cand_keys = order.ngram[~is_ref] * num_images + order.sentence[~is_ref]  # ascending
        cand_weight = lookup(cand_keys, weights[~is_ref], order.ngram[is_ref] * num_images + ref_image[ref_sentence],
                             default=0.0)  # [E_ref] the candidate's weight of each reference n-gram
        ref_weight = weights[is_ref]
        overlap = np.bincount(ref_sentence, weights=np.minimum(cand_weight, ref_weight) * ref_weight,
                              minlength=num_refs).astype(np.float64)  # [R] (bincount of nothing is integer)
        cand_norm, ref_norm = norms[ref_image], norms[num_images:]
        nonzero = (cand_norm != 0) & (ref_norm != 0)
        overlap[nonzero] /= cand_norm[nonzero] * ref_norm[nonzero]
        sims[:, k] = overlap * penalty

    summed = np.zeros((num_images, n))
    for k in range(n):
        summed[:, k] = np.bincount(ref_image, weights=sims[:, k], minlength=num_images)
    scores = summed.mean(axis=1) / captions.refs_per_image * 10.0  # [N]
    return float(np.mean(scores)), scores


class Cider:
    """Drop-in for ``pycocoevalcap.cider.cider.Cider``: ``compute_score(gts, res)`` on tokenised captions."""

    def __init__(self, n: int = 4, sigma: float = 6.0):
        self._n, self._sigma = n, sigma

    def compute_score(self, gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, Sequence[str]]
                      ) -> tuple[float, np.ndarray]:
        """Corpus CIDEr-D and the per-image array, in the order of ``gts``."""
        return compute_cider(CaptionSet.from_dicts(gts, res), self._n, self._sigma)

    def method(self) -> str:
        return "CIDEr"
