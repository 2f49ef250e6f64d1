"""The evaluated set of a caption metric: one candidate and one or more references per image."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from vislang.errors import DataError
from vislang.metrics._ngrams import NgramTable, Words, count_ngrams, split_words


@dataclass
class CaptionSet:
    """Tokenised candidates and references, image by image, in the order of the references mapping.

    Attributes:
        image_ids: Image ids, in evaluation order.
        candidates: One tokenised candidate per image.
        references: All tokenised references, those of the first image first.
        ref_image: Index (into ``image_ids``) of the image of each reference.
    """

    image_ids: list[Hashable]
    candidates: list[str]
    references: list[str]
    ref_image: np.ndarray  # [R] int64
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dicts(cls, gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, Sequence[str]]) -> CaptionSet:
        """Build from pycocoevalcap-style ``{image_id: [tokenised caption, ...]}`` mappings.

        Raises:
            DataError: there is no image, the two mappings have different ids, an image has no reference,
                or an image has other than exactly one candidate.
        """
        if not gts and not res:
            raise DataError("nothing to score: no images")
        if gts.keys() != res.keys():
            only_gts = [k for k in gts if k not in res]
            only_res = [k for k in res if k not in gts]
            raise DataError(f"references and candidates cover different images: only in references "
                            f"{only_gts[:10]}, only in candidates {only_res[:10]}")
        candidates, references, ref_image = [], [], []
        for index, image_id in enumerate(gts):
            hypo, refs = res[image_id], gts[image_id]
            if isinstance(hypo, str) or len(hypo) != 1:
                raise DataError("each image needs exactly one candidate caption", where=f"image {image_id!r}")
            if isinstance(refs, str) or len(refs) == 0:
                raise DataError("each image needs at least one reference caption", where=f"image {image_id!r}")
            candidates.append(hypo[0])
            references.extend(refs)
            ref_image.extend([index] * len(refs))
        return cls(list(gts), candidates, references, np.asarray(ref_image, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def refs_per_image(self) -> np.ndarray:
        """[N] number of references of each image."""
        return np.bincount(self.ref_image, minlength=len(self)).astype(np.int64)

    @property
    def sentences(self) -> list[str]:
        """Candidates (sentences 0..N-1) followed by references (N..N+R-1)."""
        return self.candidates + self.references

    def words(self) -> Words:
        """Word ids of every sentence split on whitespace (``str.split()``, for BLEU and CIDEr-D)."""
        if "words" not in self._cache:
            self._cache["words"], self._cache["single_spaced"] = split_words(self.sentences)
        return self._cache["words"]

    def space_split_words(self) -> Words:
        """Word ids of every sentence split on single spaces (``str.split(" ")``, for ROUGE-L)."""
        words = self.words()
        if self._cache["single_spaced"]:
            return words
        if "space_split_words" not in self._cache:
            self._cache["space_split_words"] = Words.from_split([s.split(" ") for s in self.sentences])
        return self._cache["space_split_words"]

    def ngrams(self, n: int) -> NgramTable:
        """N-gram counts of the candidates (sentences 0..N-1) followed by the references (N..N+R-1).

        Counted once per set, so BLEU and CIDEr-D on the same set share the work.
        """
        tables = self._cache.setdefault("ngrams", {})
        for m, table in tables.items():
            if m >= n:
                return NgramTable(table.lengths, table.orders[:n])
        tables[n] = count_ngrams(self.words(), n)
        return tables[n]
