"""A persistent vector index over FAISS: embed images or texts once, search them by text or by image.

An :class:`Index` stores L2-normalised float32 vectors (scored by inner product, i.e. cosine similarity)
of items of one modality, ``"image"`` (each item has a file path) or ``"text"`` (each item has a text),
with per-item ids and JSON metadata, and the fingerprint of the model that embedded them (``model_id``,
``dim`` and the run path). Queries of either modality search either kind of index: text → image,
image → image, image → text, text → text.

Kinds of FAISS index:

* ``"flat"`` (default): exact search (``IndexFlatIP``).
* ``"ivf"``: ``IndexIVFFlat`` with ``nlist`` clusters (default: about ``4·√n``, at most ``n / 39``)
  trained by k-means on the first vectors added, searching ``nprobe`` of them (default 8). With fewer
  vectors than clusters it falls back to ``"flat"`` with a warning.
* ``"hnsw"``: ``IndexHNSWFlat`` graph with ``m`` links per node (default 32), ``ef_construction`` (40)
  and ``ef_search`` (64); inner-product metric.

On disk an index is a directory::

    index.json     format, version, kind, options, modality, model_id, dim, model run path, counts
    vectors.faiss  the FAISS index (faiss.write_index)
    items.jsonl    one {"id", "path" | "text", "metadata"} object per vector, in FAISS order

It is written into a temporary directory beside its final place and swapped in with renames (the
checkpoint scheme of :mod:`vislang.train.checkpoint`): a crash leaves the old index or the new one.

Usage::

    from vislang import Index
    from vislang.embedder import Embedder

    emb = Embedder.load("runs/retrieval")
    index = build_image_index(emb, paths, model_path="runs/retrieval")
    index.save("runs/images.index")
    index = Index.load("runs/images.index", embedder=emb)
    for hit in index.search_text("a sleepy cat", k=5):
        print(hit.rank, hit.score, hit.id, hit.path)
"""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vislang.errors import ImageError, VislangError
from vislang.utils.io import atomic_dir, restore_interrupted_swap

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
    """What an index needs from :class:`vislang.embedder.Embedder`."""

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


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - depends on the environment
        raise VislangError("vector indexes need FAISS: pip install 'vislang[index]' (or faiss-cpu)") from None
    return faiss


def _as_matrix(x: Any, dim: int, what: str) -> np.ndarray:
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


def _check_options(kind: str, opts: dict[str, Any]) -> dict[str, Any]:
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


class Index:
    """Vectors of items of one modality, their ids, paths or texts and metadata, searchable by FAISS.

    Build one with :meth:`create` (or :func:`build_image_index` / :func:`build_text_index`), read one
    with :meth:`load`.

    Attributes:
        model_id: Fingerprint of the model whose embeddings the index holds.
        dim: Vector size.
        kind: ``"flat"``, ``"ivf"`` or ``"hnsw"`` (an ``"ivf"`` index with too few vectors is ``"flat"``).
        modality: ``"image"`` or ``"text"``: what the items are.
        model_path: Run directory of the model (used by the CLI to find it again), or None.
        options: The kind's options (``nlist``, ``nprobe``; ``m``, ``ef_construction``, ``ef_search``).
        requested_kind: The kind asked for at creation.
        embedder: The attached embedder, if any (see :meth:`attach`).
    """

    def __init__(self, model_id: str, dim: int, kind: str = "flat", *, modality: str = "image",
                 model_path: str | None = None, options: dict[str, Any] | None = None,
                 requested_kind: str | None = None):
        if not isinstance(model_id, str) or not model_id:
            raise VectorIndexError(f"model_id must be a non-empty string, got {model_id!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise VectorIndexError(f"dim must be a positive integer, got {dim!r}")
        if modality not in MODALITIES:
            raise VectorIndexError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")
        self.model_id, self.dim, self.modality, self.model_path = model_id, dim, modality, model_path
        self.kind = kind
        self.options = _check_options(kind, options or {})
        self.requested_kind = requested_kind or kind
        self.embedder: Embedder | None = None
        self._faiss_index: Any = None  # built on the first add for "ivf" (it is trained on those vectors)
        self._items: list[dict[str, Any]] = []
        self._pos: dict[str, int] = {}
        if kind != "ivf":
            self._faiss_index = self._new_faiss(kind)

    # ------------------------------------------------------------------------------------------- creating

    @classmethod
    def create(cls, model_id: str, dim: int, kind: str = "flat", *, modality: str = "image",
               model_path: str | os.PathLike | None = None, **opts: Any) -> Index:
        """An empty index.

        Args:
            model_id: Fingerprint of the embedding model (``Embedder.model_id``).
            dim: Vector size (``Embedder.dim``).
            kind: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"``.
            modality: ``"image"`` or ``"text"`` items.
            model_path: Run directory of the model, stored so that a search can load it again.
            **opts: ``nlist``, ``nprobe`` (ivf); ``m``, ``ef_construction``, ``ef_search`` (hnsw).
                None values mean the default.
        """
        return cls(model_id, dim, kind, modality=modality,
                   model_path=os.fspath(model_path) if model_path is not None else None, options=opts)

    def _new_faiss(self, kind: str, train: np.ndarray | None = None) -> Any:
        faiss = _faiss()
        if kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        if kind == "hnsw":
            ix = faiss.IndexHNSWFlat(self.dim, self.options["m"], faiss.METRIC_INNER_PRODUCT)
            ix.hnsw.efConstruction = self.options["ef_construction"]
            ix.hnsw.efSearch = self.options["ef_search"]
            return ix
        assert train is not None
        nlist = self.options["nlist"] or auto_nlist(len(train))
        if nlist < 1 or len(train) < nlist:
            warnings.warn(
                f"an ivf index needs at least as many vectors as clusters to train: got {len(train)} vectors "
                f"for nlist={nlist or '(auto)'}" + ("" if self.options["nlist"] else
                                                    f" (auto nlist needs {MIN_POINTS_PER_CLUSTER}+)")
                + "; using an exact flat index instead", stacklevel=4)
            self.kind, self.options = "flat", {}
            return faiss.IndexFlatIP(self.dim)
        quantizer = faiss.IndexFlatIP(self.dim)
        ix = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ix.cp.min_points_per_centroid = 1  # small data: no "please provide more points" chatter
        ix.train(train)
        ix.nprobe = min(self.options["nprobe"], nlist)
        self.options = {**self.options, "nlist": nlist}
        return ix  # FAISS's Python wrapper keeps ``quantizer`` alive with the index

    # -------------------------------------------------------------------------------------------- contents

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self._pos

    @property
    def ids(self) -> list[str]:
        """Item ids in insertion order."""
        return [it["id"] for it in self._items]

    def item(self, item_id: str) -> dict[str, Any]:
        """The stored ``{"id", "path" | "text", "metadata"}`` of an item."""
        try:
            return dict(self._items[self._pos[str(item_id)]])
        except KeyError:
            raise VectorIndexError(f"no item with id {item_id!r} in the index") from None

    def add(self, vectors: Any, ids: Sequence[str | int], paths: Sequence[str | os.PathLike] | None = None,
            metadata: Sequence[dict[str, Any] | None] | None = None, *, texts: Sequence[str] | None = None,
            skip_existing: bool = False) -> int:
        """Add items with their vectors.

        An ``"ivf"`` index is trained on the vectors of its first ``add``: add a representative set first
        (:meth:`add_images` and :meth:`add_texts` add everything they embed in one call).

        Args:
            vectors: (N, dim) array or tensor; rows are L2-normalised here (zero rows are refused).
            ids: N unique ids (strings; integers are converted).
            paths: N image paths (image index).
            metadata: N JSON-serialisable dicts (or None).
            texts: N texts (text index).
            skip_existing: Leave out ids already in the index (and repeats within ``ids``) instead of
                refusing them.

        Returns:
            How many items were added.
        """
        ids = [str(i) for i in ids]
        n = len(ids)
        vecs = _as_matrix(vectors, self.dim, "vectors")
        if vecs.shape[0] != n:
            raise VectorIndexError(f"got {vecs.shape[0]} vectors for {n} ids")
        if self.modality == "image":
            if paths is None or len(paths) != n:
                raise VectorIndexError(f"an image index needs one path per id ({n}), got "
                                       f"{'none' if paths is None else len(paths)}")
            if texts is not None:
                raise VectorIndexError("this index holds images: pass paths, not texts")
            payload = [{"path": os.fspath(p)} for p in paths]
        else:
            if texts is None or len(texts) != n:
                raise VectorIndexError(f"a text index needs one text per id ({n}), got "
                                       f"{'none' if texts is None else len(texts)}")
            if paths is not None:
                raise VectorIndexError("this index holds texts: pass texts, not paths")
            bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
            if bad is not None:
                raise VectorIndexError(f"text of id {ids[bad]!r}: expected a string, "
                                       f"got {type(texts[bad]).__name__}")
            payload = [{"text": t} for t in texts]
        if metadata is not None and len(metadata) != n:
            raise VectorIndexError(f"got {len(metadata)} metadata entries for {n} ids")

        self._check_new_ids(ids, skip_existing)
        keep = list(range(n))
        if skip_existing:  # leave out ids already there, and repeats of a new id after its first
            first: dict[str, int] = {}
            keep = [i for i in keep if ids[i] not in self._pos and first.setdefault(ids[i], i) == i]
        metas: list[dict[str, Any] | None] = [None] * len(keep)
        if metadata is not None:
            for j, i in enumerate(keep):
                meta = metadata[i]
                if meta is None:
                    continue
                if not isinstance(meta, dict):
                    raise VectorIndexError(f"metadata of id {ids[i]!r}: expected a dict, got {type(meta).__name__}")
                try:
                    json.dumps(meta)
                except (TypeError, ValueError) as e:
                    raise VectorIndexError(f"metadata of id {ids[i]!r} is not JSON-serialisable: {e}") from None
                metas[j] = dict(meta) if meta else None
        if not keep:
            return 0
        vecs = vecs[keep] if len(keep) != n else vecs
        if self._faiss_index is None:  # ivf: train on the first vectors
            self._faiss_index = self._new_faiss("ivf", vecs)
        self._faiss_index.add(vecs)
        start = len(self._items)
        for j, i in enumerate(keep):
            item = {"id": ids[i], **payload[i]}
            if metas[j]:
                item["metadata"] = metas[j]
            self._items.append(item)
        self._pos.update((ids[i], start + j) for j, i in enumerate(keep))
        return len(keep)

    # ------------------------------------------------------------------------------------------- searching

    def set_search_options(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the speed/recall trade-off of searches (ivf: ``nprobe``; hnsw: ``ef_search``).

        The new values are saved with the index.
        """
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is None:
                continue
            if name not in self.options:
                raise VectorIndexError(f"option {name!r} does not apply to a {self.kind!r} index")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise VectorIndexError(f"option {name!r} must be a positive integer, got {value!r}")
            self.options[name] = value
        self._apply_search_options()

    def _apply_search_options(self) -> None:
        ix = self._faiss_index
        if ix is None:
            return
        if self.kind == "ivf":
            ix.nprobe = min(self.options["nprobe"], ix.nlist)
        elif self.kind == "hnsw":
            ix.hnsw.efSearch = self.options["ef_search"]

    def search_arrays(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Raw search: ``(scores, positions)``, both (Q, k); position -1 where fewer than k were found.

        Args:
            queries: (Q, dim) or (dim,) vectors; normalised here.
            k: Results per query.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise VectorIndexError(f"k must be a positive integer, got {k!r}")
        q = _as_matrix(queries, self.dim, "queries")
        if self._faiss_index is None or not self._items:
            return (np.full((len(q), k), -np.inf, dtype=np.float32), np.full((len(q), k), -1, dtype=np.int64))
        return self._faiss_index.search(q, k)

    def search_vectors(self, queries: Any, k: int = 10) -> list[list[Hit]]:
        """The ``k`` best items for each query vector.

        Args:
            queries: (Q, dim) or (dim,) vectors (normalised here).
            k: Results per query (fewer when the index holds fewer items, or an ivf search finds fewer).

        Returns:
            One list of :class:`Hit` per query, best first.
        """
        scores, positions = self.search_arrays(queries, k)
        items, out = self._items, []
        for srow, prow in zip(scores.tolist(), positions.tolist()):
            hits = []
            for s, p in zip(srow, prow):
                if p < 0:
                    continue
                it = items[p]
                meta = it.get("metadata")
                hits.append(Hit(len(hits) + 1, s, it["id"], it.get("path"), it.get("text"),
                                dict(meta) if meta else {}))
            out.append(hits)
        return out

    # ------------------------------------------------------------------------------------ with an embedder

    def attach(self, embedder: Embedder) -> Index:
        """Use ``embedder`` for :meth:`search_text`, :meth:`search_image` and the ``add_*`` methods.

        Raises:
            VislangError: The embedder is not the model the index was built with.
        """
        mid = getattr(embedder, "model_id", None)
        if mid != self.model_id:
            run = f" ({self.model_path})" if self.model_path else ""
            raise VectorIndexError(
                f"model mismatch: the index was built with model {self.model_id!r}{run}, but the given model "
                f"is {mid!r}; search with the index's model, or rebuild the index with this one")
        if getattr(embedder, "dim", self.dim) != self.dim:
            raise VectorIndexError(f"dimension mismatch: the index holds {self.dim}-d vectors, the model gives "
                                   f"{embedder.dim}-d ones")
        self.embedder = embedder
        return self

    def _need_embedder(self) -> Embedder:
        if self.embedder is None:
            raise VectorIndexError("no model attached: use Index.load(dir, embedder=...) or "
                                   "index.attach(embedder)")
        return self.embedder

    def search_text(self, text: str, k: int = 10) -> list[Hit]:
        """The ``k`` items closest to a text query (text → image on an image index, text → text on a text
        index)."""
        if not isinstance(text, str) or not text.strip():
            raise VectorIndexError(f"a text query must be a non-empty string, got {text!r}")
        return self.search_vectors(self._need_embedder().embed_texts([text]), k)[0]

    def search_image(self, image: Any, k: int = 10) -> list[Hit]:
        """The ``k`` items closest to an image query, given as a path or a PIL image (image → image on an
        image index, image → text on a text index)."""
        from vislang.data.images import load_image

        emb = self._need_embedder()
        im = image if hasattr(image, "convert") else load_image(image)
        return self.search_vectors(emb.embed_images([im], batch_size=1), k)[0]

    def add_images(self, paths: Sequence[str | os.PathLike], ids: Sequence[str] | None = None,
                   metadata: Sequence[dict[str, Any] | None] | None = None, *, batch_size: int = 64,
                   skip_bad: bool = False, skip_existing: bool = False, show_progress: bool = True,
                   label: str | None = None) -> AddReport:
        """Embed image files with the attached model and add them.

        Every image is checked up front (:func:`check_image_files`); bad ones are reported together, or
        left out with a warning listing them when ``skip_bad``.

        Args:
            paths: Image files.
            ids: Their ids (default: the paths).
            metadata: Per-image metadata.
            batch_size: Images embedded at once.
            skip_bad: Leave out missing or unreadable images with a warning instead of failing.
            skip_existing: Leave out ids the index already has instead of failing.
            show_progress: Show a progress bar on stderr.
            label: Name of the image collection in messages.
        """
        if self.modality != "image":
            raise VectorIndexError("this index holds texts: add texts to it, or build an image index")
        emb = self._need_embedder()
        t0 = time.perf_counter()
        paths = [os.fspath(p) for p in paths]
        ids = [str(i) for i in ids] if ids is not None else list(paths)
        if len(ids) != len(paths) or (metadata is not None and len(metadata) != len(paths)):
            raise VectorIndexError(f"got {len(paths)} paths, {len(ids)} ids and "
                                   f"{'no' if metadata is None else len(metadata)} metadata entries")
        report = AddReport()
        todo = list(range(len(paths)))
        if skip_existing:
            report.skipped_existing = [ids[i] for i in todo if ids[i] in self._pos]
            todo = [i for i in todo if ids[i] not in self._pos]
        self._check_new_ids([ids[i] for i in todo], skip_existing)
        if skip_existing:  # repeats within the new ids: keep the first
            first: dict[str, int] = {}
            todo = [i for i in todo if first.setdefault(ids[i], i) == i]
        good = check_image_files([paths[i] for i in todo], skip_bad=skip_bad, label=label)
        report.bad = good.bad
        bad_paths = {p for p, _ in good.bad}
        todo = [i for i in todo if paths[i] not in bad_paths]

        from vislang.data.images import load_image
        from vislang.utils.io import progress

        def load(i: int) -> tuple[int, Any]:
            try:
                return i, load_image(paths[i])
            except ImageError as e:  # passed the header check but the pixel data is broken
                if not skip_bad:
                    raise
                return i, e.reason

        late_bad: list[tuple[str, str]] = []
        done: list[int] = []
        chunks: list[np.ndarray] = []  # added in one call at the end: an ivf index trains on all of them
        bar = progress(total=len(todo), desc="embedding images", unit="img", disable=_quiet(show_progress))
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool, bar:
            for start in range(0, len(todo), batch_size):
                loaded = list(pool.map(load, todo[start:start + batch_size]))
                ok = [(i, im) for i, im in loaded if not isinstance(im, str)]
                late_bad += [(paths[i], im) for i, im in loaded if isinstance(im, str)]
                if ok:
                    chunks.append(_as_matrix(emb.embed_images([im for _, im in ok], batch_size=batch_size),
                                             self.dim, "image embeddings"))
                    done += [i for i, _ in ok]
                bar.update(len(loaded))
        if done:
            report.added = self.add(np.concatenate(chunks), [ids[i] for i in done], [paths[i] for i in done],
                                    [metadata[i] for i in done] if metadata is not None else None)
        if late_bad:
            warn_bad_images(late_bad, len(paths), label)
            report.bad += late_bad
        report.seconds = time.perf_counter() - t0
        return report

    def add_texts(self, texts: Sequence[str], ids: Sequence[str] | None = None,
                  metadata: Sequence[dict[str, Any] | None] | None = None, *, batch_size: int = 256,
                  skip_existing: bool = False, show_progress: bool = True) -> AddReport:
        """Embed texts with the attached model and add them (ids default to ``"0"``, ``"1"``, ... after the
        items already there)."""
        if self.modality != "text":
            raise VectorIndexError("this index holds images: add images to it, or build a text index")
        emb = self._need_embedder()
        t0 = time.perf_counter()
        texts = list(texts)
        ids = [str(i) for i in ids] if ids is not None else [str(len(self) + i) for i in range(len(texts))]
        if len(ids) != len(texts) or (metadata is not None and len(metadata) != len(texts)):
            raise VectorIndexError(f"got {len(texts)} texts, {len(ids)} ids and "
                                   f"{'no' if metadata is None else len(metadata)} metadata entries")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise VectorIndexError(f"text of id {ids[i]!r}: expected a non-empty string, got {t!r}")
        report = AddReport()
        todo = list(range(len(texts)))
        if skip_existing:
            report.skipped_existing = [ids[i] for i in todo if ids[i] in self._pos]
            first: dict[str, int] = {}
            todo = [i for i in todo if ids[i] not in self._pos and first.setdefault(ids[i], i) == i]
        self._check_new_ids([ids[i] for i in todo], skip_existing)
        from vislang.utils.io import progress

        chunks: list[np.ndarray] = []  # added in one call at the end: an ivf index trains on all of them
        with progress(total=len(todo), desc="embedding texts", unit="text", disable=_quiet(show_progress)) as bar:
            for start in range(0, len(todo), batch_size):
                idx = todo[start:start + batch_size]
                chunks.append(_as_matrix(emb.embed_texts([texts[i] for i in idx]), self.dim, "text embeddings"))
                bar.update(len(idx))
        if todo:
            report.added = self.add(np.concatenate(chunks), [ids[i] for i in todo], texts=[texts[i] for i in todo],
                                    metadata=[metadata[i] for i in todo] if metadata is not None else None)
        report.seconds = time.perf_counter() - t0
        return report

    def _check_new_ids(self, ids: Sequence[str], skip_existing: bool) -> None:
        """Refuse duplicates before any embedding work (``add`` checks again)."""
        if skip_existing:
            return
        seen: set[str] = set()
        for item_id in ids:
            if item_id in self._pos or item_id in seen:
                where = "is already in the index" if item_id in self._pos else "appears twice in the new items"
                raise VectorIndexError(f"duplicate id {item_id!r}: it {where} (ids must be unique; pass "
                                       "skip_existing=True / --skip-existing to leave existing ids out)")
            seen.add(item_id)

    # ---------------------------------------------------------------------------------------- persistence

    def info(self) -> dict[str, Any]:
        """The ``index.json`` body (without file sizes)."""
        return {
            "format": FORMAT, "version": VERSION, "kind": self.kind, "requested_kind": self.requested_kind,
            "options": dict(self.options), "modality": self.modality, "metric": "inner_product",
            "model_id": self.model_id, "dim": self.dim, "model": self.model_path, "count": len(self),
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index to ``directory`` atomically, replacing any index there.

        Everything is written into a temporary directory beside ``directory``, flushed, then swapped in
        with renames; an error or a crash part-way leaves the previous index (if any) readable.
        """
        faiss = _faiss()
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            if self._faiss_index is not None:
                faiss.write_index(self._faiss_index, str(tmp / VECTORS_FILE))
            with open(tmp / ITEMS_FILE, "w", encoding="utf-8") as f:
                for it in self._items:
                    f.write(json.dumps(it, ensure_ascii=False) + "\n")
            files = {name: (tmp / name).stat().st_size for name in (VECTORS_FILE, ITEMS_FILE)
                     if (tmp / name).exists()}
            body = {**self.info(), "files": files, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            with open(tmp / META_FILE, "w", encoding="utf-8") as f:
                json.dump(body, f, indent=1, ensure_ascii=False)
                f.write("\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, embedder: Embedder | None = None) -> Index:
        """Read an index directory written by :meth:`save`.

        Args:
            directory: The index directory.
            embedder: Attach this model (refused if it is not the index's model).

        Raises:
            VislangError: The directory is missing, partial or corrupt.
        """
        directory = Path(directory)
        restore_interrupted_swap(directory)
        meta_path = directory / META_FILE
        if not directory.exists():
            raise VectorIndexError(f"{directory}: no index there (the directory does not exist)")
        if not meta_path.is_file():
            raise VectorIndexError(f"{directory}: not a vislang index ({META_FILE} is missing)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise VectorIndexError(f"{meta_path}: cannot read: {e}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise VectorIndexError(f"{meta_path}: not a vislang index file (field 'format' is not {FORMAT!r})")
        if meta.get("version") != VERSION:
            raise VectorIndexError(f"{meta_path}: field 'version': unsupported index version "
                                   f"{meta.get('version')!r} "
                                   f"(this vislang reads version {VERSION})")
        for key, typ in (("model_id", str), ("dim", int), ("kind", str), ("modality", str), ("count", int),
                         ("options", dict), ("files", dict)):
            if not isinstance(meta.get(key), typ):
                raise VectorIndexError(f"{meta_path}: field '{key}': missing or not {typ.__name__}")
        try:
            index = cls(meta["model_id"], meta["dim"], meta["kind"], modality=meta["modality"],
                        model_path=meta.get("model"), options=meta["options"],
                        requested_kind=meta.get("requested_kind"))
        except VislangError as e:
            raise VectorIndexError(f"{meta_path}: {e}") from None
        for name, size in meta["files"].items():
            path = directory / name
            if not path.is_file():
                raise VectorIndexError(f"{directory}: partial index: {name} is missing")
            if path.stat().st_size != size:
                raise VectorIndexError(f"{path}: corrupt or partial: {path.stat().st_size:,} bytes, "
                                       f"{META_FILE} says {size:,}")
        if VECTORS_FILE in meta["files"]:
            faiss = _faiss()
            try:
                ix = faiss.read_index(str(directory / VECTORS_FILE))
            except RuntimeError as e:
                reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise VectorIndexError(f"{directory / VECTORS_FILE}: cannot read (corrupt?): {reason}") from None
            if ix.d != index.dim:
                raise VectorIndexError(f"{directory / VECTORS_FILE}: holds {ix.d}-d vectors, {META_FILE} says "
                                       f"{index.dim}")
            index._faiss_index = ix
            index._apply_search_options()
        elif meta["kind"] != "ivf" or meta["count"]:
            raise VectorIndexError(f"{directory}: partial index: {VECTORS_FILE} is missing")
        else:
            index._faiss_index = None
        index._items = _read_items(directory / ITEMS_FILE, index.modality)
        n_vectors = index._faiss_index.ntotal if index._faiss_index is not None else 0
        if not (len(index._items) == n_vectors == meta["count"]):
            raise VectorIndexError(f"{directory}: inconsistent index: {n_vectors} vectors, "
                                   f"{len(index._items)} items, "
                                   f"{META_FILE} says {meta['count']}")
        index._pos = {it["id"]: i for i, it in enumerate(index._items)}
        if len(index._pos) != len(index._items):
            raise VectorIndexError(f"{directory / ITEMS_FILE}: ids are not unique")
        if embedder is not None:
            index.attach(embedder)
        return index

    def __repr__(self) -> str:
        return (f"Index({len(self)} {self.modality} items, kind={self.kind!r}, dim={self.dim}, "
                f"model_id={self.model_id!r})")


# ------------------------------------------------------------------------------------------------ builders


def build_image_index(embedder: Embedder, paths: Sequence[str | os.PathLike], ids: Sequence[str] | None = None,
                      metadata: Sequence[dict[str, Any] | None] | None = None, *, kind: str = "flat",
                      model_path: str | os.PathLike | None = None, batch_size: int = 64,
                      skip_bad: bool = False, show_progress: bool = True, **opts: Any) -> Index:
    """A new index of image files embedded with ``embedder`` (attached to the result).

    ``opts`` are the kind's options (see :meth:`Index.create`); the other arguments are those of
    :meth:`Index.add_images`.
    """
    index = Index.create(embedder.model_id, embedder.dim, kind, modality="image", model_path=model_path, **opts)
    index.attach(embedder)
    index.add_images(paths, ids, metadata, batch_size=batch_size, skip_bad=skip_bad, show_progress=show_progress)
    return index


def build_text_index(embedder: Embedder, texts: Sequence[str], ids: Sequence[str] | None = None,
                     metadata: Sequence[dict[str, Any] | None] | None = None, *, kind: str = "flat",
                     model_path: str | os.PathLike | None = None, show_progress: bool = True,
                     **opts: Any) -> Index:
    """A new index of texts embedded with ``embedder`` (attached to the result), for image → text search."""
    index = Index.create(embedder.model_id, embedder.dim, kind, modality="text", model_path=model_path, **opts)
    index.attach(embedder)
    index.add_texts(texts, ids, metadata, show_progress=show_progress)
    return index


@dataclass
class CheckedImages:
    """Result of :func:`check_image_files`: the readable paths and the bad ones with their reasons."""

    good: list[str]
    bad: list[tuple[str, str]]


def check_image_files(paths: Sequence[str], *, skip_bad: bool = False, label: str | None = None,
                      workers: int = 8) -> CheckedImages:
    """Open every image's header up front (as :meth:`vislang.data.ImageTextDataset.check_images` does).

    Raises:
        MissingImagesError: Some images are bad and ``skip_bad`` is False (all of them are listed).
    """
    from vislang.data.images import find_bad_images
    from vislang.errors import MissingImagesError

    unique = list(dict.fromkeys(paths))
    bad = find_bad_images(unique, workers)
    if bad and not skip_bad:
        raise MissingImagesError(label or "the images", bad, len(unique))
    if bad:
        warn_bad_images(bad, len(unique), label)
    bad_set = {p for p, _ in bad}
    return CheckedImages([p for p in paths if p not in bad_set], bad)


def warn_bad_images(bad: Sequence[tuple[str, str]], total: int, label: str | None = None,
                    show: int = 10) -> None:
    """Print ``warning: skipping N of M images ...`` listing the first ``show`` bad files on stderr."""
    listed = "\n".join(f"  {p}: {r}" for p, r in bad[:show])
    more = f"\n  ... and {len(bad) - show} more" if len(bad) > show else ""
    of = f" of {label}" if label else ""
    print(f"warning: skipping {len(bad)} of {total} images{of} that are missing or unreadable:\n{listed}{more}",
          file=sys.stderr)


def _quiet(show_progress: bool) -> bool | None:
    return None if show_progress else True


def _read_items(path: Path, modality: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise VectorIndexError(f"{path.parent}: partial index: {ITEMS_FILE} is missing")
    key = "path" if modality == "image" else "text"
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                it = json.loads(line)
            except json.JSONDecodeError as e:
                raise VectorIndexError(f"{path}: line {lineno}: not JSON ({e.msg})") from None
            if not isinstance(it, dict) or not isinstance(it.get("id"), str):
                raise VectorIndexError(f"{path}: line {lineno}: field 'id': missing or not a string")
            if not isinstance(it.get(key), str):
                raise VectorIndexError(f"{path}: line {lineno}: field '{key}': missing or not a string")
            if not isinstance(it.get("metadata", {}), dict):
                raise VectorIndexError(f"{path}: line {lineno}: field 'metadata': not an object")
            items.append(it)
    return items


# ------------------------------------------------------------------------- atomic directory replacement
# The scheme of vislang.train.checkpoint: fill ``.NAME.tmp-*``, move the old directory to ``.NAME.old-*``,
# rename the new one into place, delete the old one. A crash between the two renames leaves only the old
# copy, which the next load or save puts back.


# --------------------------------------------------------------------------------------------- contact sheet

SHEET_PAD = 6
SHEET_LABEL = 30


def sheet_size(n_tiles: int, tile: int = 128, cols: int = 5) -> tuple[int, int]:
    """(width, height) in pixels of a contact sheet of ``n_tiles`` tiles."""
    cols = max(1, min(cols, n_tiles))
    rows = max(1, math.ceil(n_tiles / cols))
    return cols * tile + (cols + 1) * SHEET_PAD, rows * (tile + SHEET_LABEL) + (rows + 1) * SHEET_PAD


def contact_sheet(hits: Sequence[Hit], query: Any = None, *, tile: int = 128, cols: int = 5) -> Any:
    """A grid of thumbnails (image hits) or text cards (text hits) labelled with rank, score and id.

    Args:
        hits: Search results, best first.
        query: Shown first when given: an image as a :class:`pathlib.Path` or a PIL image, or a query
            text as a ``str``.
        tile: Side of each thumbnail in pixels.
        cols: Tiles per row.

    Returns:
        An RGB PIL image of :func:`sheet_size` pixels.
    """
    from PIL import Image, ImageDraw

    font = _font(11)
    cells: list[tuple[Any, str, str]] = []  # (PIL image or text, label line 1, label line 2)
    if isinstance(query, str):
        cells.append((query, "query", "(text)"))
    elif query is not None:
        name = "(image)" if hasattr(query, "convert") else Path(query).name
        cells.append((query if hasattr(query, "convert") else _thumb_source(query), "query", name))
    for h in hits:
        src = h.text if h.text is not None else _thumb_source(h.path)
        cells.append((src, f"#{h.rank}  {h.score:.3f}", h.id))
    w, hgt = sheet_size(len(cells), tile, cols)
    sheet = Image.new("RGB", (w, hgt), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    ncols = max(1, min(cols, len(cells)))
    chars = max(4, tile // 7)
    for n, (src, line1, line2) in enumerate(cells):
        r, c = divmod(n, ncols)
        x = SHEET_PAD + c * (tile + SHEET_PAD)
        y = SHEET_PAD + r * (tile + SHEET_LABEL + SHEET_PAD)
        if isinstance(src, str):  # a text card
            draw.rectangle([x, y, x + tile - 1, y + tile - 1], fill=(240, 240, 232), outline=(200, 200, 190))
            lines = textwrap.wrap(src, chars)[: max(1, tile // 14)]
            draw.multiline_text((x + 4, y + 4), "\n".join(lines), fill=(20, 20, 20), font=font, spacing=2)
        elif src is None:  # an image that cannot be read (any more)
            draw.rectangle([x, y, x + tile - 1, y + tile - 1], fill=(200, 200, 200))
            draw.text((x + 4, y + tile // 2 - 6), "unreadable", fill=(90, 0, 0), font=font)
        else:  # scaled to fit the tile, up or down
            scale = min(tile / src.width, tile / src.height)
            size = (max(1, round(src.width * scale)), max(1, round(src.height * scale)))
            thumb = src.convert("RGB").resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
            sheet.paste(thumb, (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2))
        frame = (40, 90, 200) if query is not None and n == 0 else (210, 210, 210)  # the query in blue
        draw.rectangle([x - 1, y - 1, x + tile, y + tile], outline=frame)
        draw.text((x + 2, y + tile + 2), line1, fill=(0, 0, 0), font=font)
        draw.text((x + 2, y + tile + 15), _clip(line2, chars), fill=(80, 80, 80), font=font)
    return sheet


def _thumb_source(path: Any) -> Any:
    """The decoded image at ``path``, or None when it cannot be read (drawn as an "unreadable" tile)."""
    from vislang.data.images import load_image

    if path is None:
        return None
    try:
        return load_image(path)
    except ImageError:
        return None


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def save_contact_sheet(path: str | os.PathLike, hits: Sequence[Hit], query: Any = None, *, tile: int = 128,
                       cols: int = 5) -> Path:
    """Write :func:`contact_sheet` as a PNG atomically; returns ``path``."""
    from vislang.utils.io import atomic_save_image

    atomic_save_image(path, contact_sheet(hits, query, tile=tile, cols=cols), "PNG")
    return Path(path)
