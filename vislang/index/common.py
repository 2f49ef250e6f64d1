"""What the index modules share: the on-disk format's names, index kinds and their options, the error and
result types, and vector checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from vislang.errors import VislangError

FORMAT = "vislang.index"
VERSION = 1
META_FILE = "index.json"
VECTORS_FILE = "vectors.faiss"
ITEMS_FILE = "items.jsonl"

KINDS = ("flat", "ivf", "hnsw")
MODALITIES = ("image", "text")
#: Options each kind takes, with their defaults (None: chosen from the data).
KIND_OPTIONS: dict[str, dict[str, int | None]] = {
    "flat": {},
    "ivf": {"nlist": None, "nprobe": 8},
    "hnsw": {"m": 32, "ef_construction": 40, "ef_search": 64},
}
#: k-means wants about this many training vectors per cluster (FAISS warns below 39).
MIN_POINTS_PER_CLUSTER = 39


class VectorIndexError(VislangError):
    """An index directory that is missing, partial or corrupt, or a request it cannot serve."""


class Embedder(Protocol):
    """What an index needs from :class:`vislang.inference.retrieval.RetrievalPredictor`."""

    model_id: str
    dim: int

    def embed_images(self, images: Sequence[Any], batch_size: int = 64) -> Any: ...

    def embed_texts(self, texts: Sequence[str]) -> Any: ...


@dataclass
class Hit:
    """One search result.

    Attributes:
        rank: 1 for the best match.
        score: Cosine similarity (inner product of normalised vectors), higher is better.
        id: The item's id.
        path: Image file of an image item (None for a text item).
        text: Text of a text item (None for an image item).
        metadata: The item's metadata.
    """

    rank: int
    score: float
    id: str
    path: str | None
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the score rounded to 6 decimals)."""
        out = asdict(self)
        out["score"] = round(self.score, 6)
        return out


@dataclass
class AddReport:
    """What :meth:`Index.add_images` / :meth:`Index.add_texts` did.

    Attributes:
        added: Items added.
        skipped_existing: Ids left out because the index already had them.
        bad: ``(path, reason)`` of images left out because they are missing or unreadable.
        seconds: Wall time, embedding included.
    """

    added: int = 0
    skipped_existing: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def faiss_module():
    """The ``faiss`` module, or a :class:`VislangError` saying how to install it."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - depends on the environment
        raise VislangError("vector indexes need FAISS: pip install 'vislang[index]' (or faiss-cpu)") from None
    return faiss


def as_matrix(x: Any, dim: int, what: str) -> np.ndarray:
    """A C-contiguous float32 (N, dim) copy of ``x`` (NumPy array, torch tensor or nested lists),
    L2-normalised row by row."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    a = np.array(x, dtype=np.float32, copy=True)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != dim:
        raise VectorIndexError(f"{what}: expected shape (N, {dim}), got {tuple(a.shape)}")
    if not np.isfinite(a).all():
        bad = int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
        raise VectorIndexError(f"{what}: row {bad} holds NaN or infinite values")
    norms = np.sqrt(np.einsum("ij,ij->i", a, a))
    if a.shape[0] and norms.min() == 0.0:
        raise VectorIndexError(f"{what}: row {int(np.argmin(norms))} is all zeros and cannot be normalised")
    a /= norms[:, None]
    return np.ascontiguousarray(a)


def check_options(kind: str, opts: dict[str, Any]) -> dict[str, Any]:
    """The options of a ``kind`` index: the defaults updated with ``opts`` (None values keep the default)."""
    if kind not in KINDS:
        raise VectorIndexError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    allowed = KIND_OPTIONS[kind]
    out = dict(allowed)
    for name, value in opts.items():
        if value is None:
            continue
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise VectorIndexError(f"option {name!r} does not apply to a {kind!r} index (its options: {known})")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise VectorIndexError(f"option {name!r} must be a positive integer, got {value!r}")
        out[name] = value
    if kind == "hnsw" and out["m"] < 2:
        raise VectorIndexError(f"option 'm' of an hnsw index must be at least 2, got {out['m']}")
    return out


def auto_nlist(n: int) -> int:
    """Default number of IVF clusters for ``n`` vectors: ``4·√n``, at most ``n / 39`` (0: too few)."""
    return min(int(4 * math.sqrt(n)), n // MIN_POINTS_PER_CLUSTER)
