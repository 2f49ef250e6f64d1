"""Vectorised n-gram counting shared by BLEU and CIDEr-D.

Sentences are split on whitespace (``str.split()``, as pycocoevalcap's scorers do), words are mapped to
integer ids and every n-gram gets a dense integer id per order, so that BLEU's clipping and CIDEr's tf-idf
vectors become operations on sorted arrays instead of Python dictionaries. One stable sort per order
gives both the n-gram ids and the per-sentence counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, count, repeat

import numpy as np


@dataclass(frozen=True)
class OrderCounts:
    """How often each n-gram of one order occurs in each sentence.

    Entries are sorted by n-gram id, then by sentence: the entries of one n-gram are contiguous.
    """

    sentence: np.ndarray  # [E] int64 index of the sentence
    ngram: np.ndarray  # [E] int64 dense id of the n-gram among this order's n-grams
    count: np.ndarray  # [E] int64 occurrences of the n-gram in the sentence (>= 1)
    size: int  # number of distinct n-grams of this order


@dataclass(frozen=True)
class Words:
    """Sentences as integer word ids stored flat: sentence ``i`` is ``ids[offsets[i]: offsets[i] + lengths[i]]``.

    Ids are unique per distinct word but not dense: use ``id_bound`` (larger than every id) as their range.
    """

    ids: np.ndarray  # [T] int64
    lengths: np.ndarray  # [S] int64

    @property
    def offsets(self) -> np.ndarray:
        """[S] int64 index of each sentence's first word."""
        return np.cumsum(self.lengths) - self.lengths

    @property
    def id_bound(self) -> int:
        return int(self.ids.max(initial=-1)) + 1

    @classmethod
    def from_split(cls, sentences: Sequence[Sequence[str]]) -> Words:
        """Ids of already split sentences."""
        lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
        return cls(ids=_ids(list(chain.from_iterable(sentences))), lengths=lengths)


def _ids(words: list[str]) -> np.ndarray:
    """An id per word: the index of the word's first occurrence."""
    first_index: dict[str, int] = {}
    return np.fromiter(map(first_index.setdefault, words, count()), dtype=np.int64, count=len(words))


def split_words(sentences: Sequence[str]) -> tuple[Words, bool]:
    """Word ids of ``sentence.split()`` for every sentence, and whether the sentences are single-spaced.

    Single-spaced sentences (non-empty, words separated by exactly one space, no other whitespace) split
    the same way with ``str.split()`` (BLEU, CIDEr-D) and ``str.split(" ")`` (ROUGE-L).
    """
    document = " ".join(sentences)
    words = document.split()
    spaces = document.count(" ")
    single_spaced = (all(sentences) and len(words) == spaces + 1
                     and sum(map(len, words)) == len(document) - spaces)
    if single_spaced:
        lengths = np.fromiter(map(str.count, sentences, repeat(" ")), dtype=np.int64, count=len(sentences)) + 1
        return Words(ids=_ids(words), lengths=lengths), True
    return Words.from_split([s.split() for s in sentences]), False


@dataclass(frozen=True)
class NgramTable:
    """N-gram counts of a list of sentences, for orders 1..n."""

    lengths: np.ndarray  # [S] int64 words per sentence
    orders: tuple[OrderCounts, ...]  # orders[k - 1] holds the k-grams


def _argsort_then_position(keys: np.ndarray) -> np.ndarray:
    """Indices sorting ``keys``, equal keys kept in position order (a stable argsort).

    Sorting the unique composite ``key * len + position`` with quicksort is several times faster than
    numpy's stable sort; the stable sort is the fallback when the composite could overflow int64.
    """
    if len(keys) and (int(keys.max()) + 1) * len(keys) < 2 ** 62:
        return np.argsort(keys * len(keys) + np.arange(len(keys)))
    return np.argsort(keys, kind="stable")


def count_ngrams(words: Words, n: int) -> NgramTable:
    """Count the 1..n-grams of each sentence."""
    ids, lengths = words.ids, words.lengths
    vocab_size = words.id_bound
    total = len(ids)
    sentence_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)  # [T]
    remaining = np.repeat(lengths, lengths) - (np.arange(total) - np.repeat(words.offsets, lengths))  # [T]

    orders = []
    gram_ids = ids  # [T] dense id of the (k-1)-gram starting at each position
    for k in range(1, n + 1):
        positions = np.flatnonzero(remaining >= k)  # a k-gram starts here
        keys = ids[positions] if k == 1 else gram_ids[positions] * vocab_size + ids[positions + k - 1]
        by_key = _argsort_then_position(keys)  # sentences stay ascending within an n-gram
        keys, sentences_sorted = keys[by_key], sentence_of[positions[by_key]]
        new_gram = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, dtype=bool)
        dense = np.cumsum(new_gram) - 1  # [P] n-gram id of each sorted position
        gram_ids = np.full(total, -1, dtype=np.int64)
        gram_ids[positions[by_key]] = dense
        new_entry = new_gram.copy()
        new_entry[1:] |= sentences_sorted[1:] != sentences_sorted[:-1]
        entry_starts = np.flatnonzero(new_entry)
        orders.append(OrderCounts(
            sentence=sentences_sorted[entry_starts],
            ngram=dense[entry_starts],
            count=np.diff(np.r_[entry_starts, len(keys)]).astype(np.int64),
            size=int(dense[-1]) + 1 if len(dense) else 0,
        ))
    return NgramTable(lengths=lengths, orders=tuple(orders))


@dataclass(frozen=True)
class ImageRuns:
    """The reference entries of one order grouped by (n-gram, image).

    Consecutive reference entries with the same n-gram and image form a run (entries are sorted by
    n-gram then sentence, and references are laid out image by image).
    """

    key: np.ndarray  # [U] int64 ngram * num_images + image, ascending
    ngram: np.ndarray  # [U] int64
    max_count: np.ndarray  # [U] int64 largest count of the n-gram in one reference of the image


def reference_runs(order: OrderCounts, ref_image: np.ndarray, num_images: int) -> tuple[np.ndarray, ImageRuns]:
    """Mask of reference entries ``[E]`` and their (n-gram, image) runs."""
    is_ref = order.sentence >= num_images
    image = ref_image[order.sentence[is_ref] - num_images]
    keys = order.ngram[is_ref] * num_images + image
    if not len(keys):
        return is_ref, ImageRuns(keys, keys, keys)
    run_starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return is_ref, ImageRuns(key=keys[run_starts], ngram=order.ngram[is_ref][run_starts],
                             max_count=np.maximum.reduceat(order.count[is_ref], run_starts))


def lookup(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray, default: float | int = 0
           ) -> np.ndarray:
    """``values`` of ``queries`` in ``sorted_keys`` (unique, ascending), ``default`` where absent."""
    if not len(sorted_keys):
        return np.full(len(queries), default, dtype=values.dtype)
    pos = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == queries, values[pos], default)
