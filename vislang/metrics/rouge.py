"""ROUGE-L (beta = 1.2) exactly as pycocoevalcap's ``Rouge`` computes it.

Sentences are split on single spaces (``str.split(" ")``, so an empty caption is one empty token); for
each reference the longest common subsequence (LCS) with the candidate gives a precision and a recall,
the best precision and the best recall over the references are combined into an F-measure weighted by
beta, and the corpus score is the mean over images. LCS lengths are computed for all (candidate,
reference) pairs at once with the bit-parallel algorithm of Allison & Dix / Hyyrö on 64-bit words.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from vislang.metrics._corpus import CaptionSet
from vislang.metrics._ngrams import Words

BETA = 1.2
_WORD_BITS = 64
_CHUNK_PAIRS = 8192


def _popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    as_bytes = x.view(np.uint8).reshape(len(x), 8)
    return np.unpackbits(as_bytes, axis=1).sum(axis=1).astype(np.int64)


def _lcs_python(a: Sequence[int], b: Sequence[int]) -> int:
    """LCS length with Python integers as bit vectors (any length of ``a``)."""
    masks: dict[int, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def _padded(words: Words, offsets: np.ndarray, rows: np.ndarray, width: int, fill: int) -> np.ndarray:
    """Sentences ``rows`` as a ``[len(rows), width]`` matrix of word ids padded with ``fill``."""
    cols = np.arange(width)[None, :]
    index = np.minimum(offsets[rows][:, None] + cols, max(len(words.ids) - 1, 0))
    values = words.ids[index] if len(words.ids) else np.zeros(index.shape, dtype=np.int64)
    return np.where(cols < words.lengths[rows][:, None], values, fill)


def lcs_lengths(words: Words, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """LCS length of each pair of sentences ``(first[p], second[p])`` of ``words``. [P]"""
    out = np.zeros(len(first), dtype=np.int64)
    offsets = words.offsets
    cand_len, ref_len = words.lengths[first], words.lengths[second]  # [P]

    def sentence(i: int) -> list[int]:
        return words.ids[offsets[i]: offsets[i] + words.lengths[i]].tolist()

    for p in np.flatnonzero(cand_len > _WORD_BITS):  # rare: sentences longer than one machine word
        out[p] = _lcs_python(sentence(first[p]), sentence(second[p]))

    short = np.flatnonzero(cand_len <= _WORD_BITS)
    short = short[np.argsort(ref_len[short], kind="stable")]  # similar reference lengths share a chunk
    bit_values = np.left_shift(np.uint64(1), np.arange(_WORD_BITS, dtype=np.uint64))  # [64]
    all_ones = np.iinfo(np.uint64).max
    for start in range(0, len(short), _CHUNK_PAIRS):
        chunk = short[start: start + _CHUNK_PAIRS]
        m = max(int(cand_len[chunk].max()), 1)
        cand_tokens = _padded(words, offsets, first[chunk], m, fill=-1)  # [C, m]
        ref_tokens = _padded(words, offsets, second[chunk], max(int(ref_len[chunk].max()), 1), fill=-2)  # [C, lr]
        v = np.full(len(chunk), all_ones, dtype=np.uint64)  # [C] bit i clear: position i is in the LCS
        with np.errstate(over="ignore"):
            for t in range(ref_tokens.shape[1]):
                match = cand_tokens == ref_tokens[:, t: t + 1]  # [C, m]
                mask = (match * bit_values[:m]).sum(axis=1, dtype=np.uint64)  # [C]
                u = v & mask
                v = (v + u) | (v - u)
        length = cand_len[chunk]
        low = np.where(length >= _WORD_BITS, all_ones,
                       (np.uint64(1) << np.minimum(length, _WORD_BITS - 1).astype(np.uint64)) - np.uint64(1))
        out[chunk] = length - _popcount(v & low)
    return out


def compute_rouge(captions: CaptionSet, beta: float = BETA) -> tuple[float, np.ndarray]:
    """Corpus ROUGE-L (mean over images) and per-image scores ``[N]`` of a tokenised caption set."""
    words = captions.space_split_words()
    num_images = len(captions)
    refs = np.arange(num_images, num_images + len(captions.references))  # sentence index of each reference
    lcs = lcs_lengths(words, captions.ref_image, refs).astype(np.float64)  # [R]
    cand_len = words.lengths[captions.ref_image].astype(np.float64)  # [R]
    ref_len = words.lengths[refs].astype(np.float64)  # [R]
    first_ref = np.flatnonzero(np.r_[True, captions.ref_image[1:] != captions.ref_image[:-1]])
    prec = np.maximum.reduceat(lcs / cand_len, first_ref)  # [N]
    rec = np.maximum.reduceat(lcs / ref_len, first_ref)  # [N]
    scores = np.zeros(num_images)
    both = (prec != 0) & (rec != 0)
    scores[both] = ((1 + beta ** 2) * prec[both] * rec[both]) / (rec[both] + beta ** 2 * prec[both])
    return float(np.mean(scores)), scores


class Rouge:
    """Drop-in for ``pycocoevalcap.rouge.rouge.Rouge``: ``compute_score(gts, res)`` on tokenised captions."""

    def __init__(self):
        self.beta = BETA

    def compute_score(self, gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, Sequence[str]]
                      ) -> tuple[float, np.ndarray]:
        """Corpus ROUGE-L and the per-image array, in the order of ``gts``."""
        return compute_rouge(CaptionSet.from_dicts(gts, res), self.beta)

    def method(self) -> str:
        return "Rouge"
