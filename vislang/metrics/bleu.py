"""BLEU-1..n exactly as pycocoevalcap's ``Bleu(4)`` computes it (corpus and per image).

pycocoevalcap's scorer (after David Chiang's ``bleu_scorer.py``) clips each candidate n-gram count by its
largest count in any one reference, takes for each image the reference length closest to the candidate
length (the shorter on ties), adds 1e-15 to matches and 1e-9 to guesses, and applies the brevity penalty
per image for the per-image scores and on the summed lengths for the corpus score. The same arithmetic is
done here on arrays.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vislang.metrics._corpus import CaptionSet
from vislang.metrics._ngrams import lookup, reference_runs

_TINY = 1e-15  # added to matches so that a zero count still gives a (tiny) positive precision
_SMALL = 1e-9  # added to guesses and lengths to avoid division by zero


@dataclass(frozen=True)
class BleuStats:
    """Per-image sufficient statistics of BLEU."""

    correct: np.ndarray  # [N, n] int64 clipped n-gram matches
    guess: np.ndarray  # [N, n] int64 candidate n-grams
    testlen: np.ndarray  # [N] int64 candidate length
    reflen: np.ndarray  # [N] int64 closest reference length


def bleu_stats(captions: CaptionSet, n: int = 4) -> BleuStats:
    """Clipped matches, guesses and lengths of every image."""
    table = captions.ngrams(n)
    num_images = len(captions)
    testlen = table.lengths[:num_images]
    ref_lengths = table.lengths[num_images:]  # [R]
    correct = np.zeros((num_images, n), dtype=np.int64)
    for k, order in enumerate(table.orders):
        is_ref, runs = reference_runs(order, captions.ref_image, num_images)
        cand_image = order.sentence[~is_ref]
        cand_keys = order.ngram[~is_ref] * num_images + cand_image
        clipped = np.minimum(order.count[~is_ref], lookup(runs.key, runs.max_count, cand_keys))
        correct[:, k] = np.bincount(cand_image, weights=clipped, minlength=num_images).astype(np.int64)
    guess = np.maximum(testlen[:, None] - np.arange(n)[None, :], 0)  # [N, n]

    # Closest reference length, the shorter one on ties: minimise (|l - testlen|, l) per image.
    diff = np.abs(ref_lengths - testlen[captions.ref_image])
    span = int(ref_lengths.max(initial=0)) + 1
    first_ref = np.flatnonzero(np.r_[True, captions.ref_image[1:] != captions.ref_image[:-1]])
    reflen = np.minimum.reduceat(diff * span + ref_lengths, first_ref) % span
    return BleuStats(correct=correct, guess=guess, testlen=testlen, reflen=reflen)


def _precision_products(correct: np.ndarray, guess: np.ndarray) -> np.ndarray:
    """Geometric-mean precisions up to each order, in pycocoevalcap's order of operations. [..., n]"""
    bleu = np.ones(correct.shape[:-1])
    out = np.empty(correct.shape, dtype=np.float64)
    for k in range(correct.shape[-1]):
        bleu = bleu * ((correct[..., k] + _TINY) / (guess[..., k] + _SMALL))
        out[..., k] = bleu ** (1.0 / (k + 1))
    return out


def bleu_from_stats(stats: BleuStats) -> tuple[list[float], np.ndarray]:
    """Corpus BLEU-1..n and per-image BLEU-1..n ``[N, n]`` from the statistics."""
    per_image = _precision_products(stats.correct.astype(np.float64), stats.guess.astype(np.float64))
    ratio = (stats.testlen + _TINY) / (stats.reflen + _SMALL)  # [N]
    short = ratio < 1
    per_image[short] *= np.exp(1 - 1 / ratio[short])[:, None]

    n = stats.correct.shape[1]
    testlen, reflen = int(stats.testlen.sum()), int(stats.reflen.sum())
    correct, guess = stats.correct.sum(axis=0), stats.guess.sum(axis=0)
    corpus, bleu = [], 1.0
    for k in range(n):
        bleu *= float(int(correct[k]) + _TINY) / (int(guess[k]) + _SMALL)
        corpus.append(bleu ** (1.0 / (k + 1)))
    ratio_all = (testlen + _TINY) / (reflen + _SMALL)
    if ratio_all < 1:
        corpus = [b * math.exp(1 - 1 / ratio_all) for b in corpus]
    return corpus, per_image


def compute_bleu(captions: CaptionSet, n: int = 4) -> tuple[list[float], np.ndarray]:
    """Corpus BLEU-1..n and per-image scores ``[N, n]`` of a tokenised caption set."""
    return bleu_from_stats(bleu_stats(captions, n))


class Bleu:
    """Drop-in for ``pycocoevalcap.bleu.bleu.Bleu``: ``compute_score(gts, res)`` on tokenised captions."""

    def __init__(self, n: int = 4):
        self._n = n

    def compute_score(self, gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, Sequence[str]],
                      verbose: int = 0) -> tuple[list[float], list[list[float]]]:
        """Corpus scores ``[BLEU-1..n]`` and per-image scores ``[[image scores of BLEU-k] for k]``."""
        corpus, per_image = compute_bleu(CaptionSet.from_dicts(gts, res), self._n)
        return corpus, [per_image[:, k].tolist() for k in range(self._n)]

    def method(self) -> str:
        return "Bleu"
