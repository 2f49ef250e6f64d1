"""The :class:`Index` class: vectors of items of one modality with their ids, paths or texts and metadata,
searchable by FAISS, saved to and loaded from an index directory (:mod:`vislang.index.files`)."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vislang.errors import VislangError
from vislang.index.checks import check_image_files, warn_bad_images
from vislang.index.common import (
    FORMAT,
    ITEMS_FILE,
    META_FILE,
    MIN_POINTS_PER_CLUSTER,
    MODALITIES,
    VERSION,
    AddReport,
    Embedder,
    Hit,
    VectorIndexError,
    as_matrix,
    auto_nlist,
    check_options,
    faiss_module,
)
from vislang.index.embed import embed_image_files, embed_text_batches
from vislang.index.files import meta_digest, read_items, read_meta, read_vectors, write_index_dir
from vislang.utils.lock import file_lock


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
        self.options = check_options(kind, options or {})
        self.requested_kind = requested_kind or kind
        self.embedder: Embedder | None = None
        self._faiss_index: Any = None  # built on the first add for "ivf" (it is trained on those vectors)
        self._items: list[dict[str, Any]] = []
        self._pos: dict[str, int] = {}
        self._base: tuple[Path, str] | None = None  # the directory read or last saved, and its meta_digest
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
        faiss = faiss_module()
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
        vecs = as_matrix(vectors, self.dim, "vectors")
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
        q = as_matrix(queries, self.dim, "queries")
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

        vectors, done, late_bad = embed_image_files(emb, paths, todo, self.dim, batch_size=batch_size,
                                                    skip_bad=skip_bad, show_progress=show_progress)
        if done:
            report.added = self.add(vectors, [ids[i] for i in done], [paths[i] for i in done],
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
        vectors = embed_text_batches(emb, [texts[i] for i in todo], self.dim, batch_size=batch_size,
                                     show_progress=show_progress)
        if todo:
            report.added = self.add(vectors, [ids[i] for i in todo], texts=[texts[i] for i in todo],
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

    def save(self, directory: str | os.PathLike, *, overwrite: bool = True, wait: bool | float = False) -> Path:
        """Write the index to ``directory`` atomically.

        Everything is written into a temporary directory beside ``directory``, flushed, then swapped in
        with renames; an error or a crash part-way leaves the previous index (if any) readable. The save
        holds the index's lock (:func:`vislang.utils.lock.file_lock`), and an index saved back where it was
        loaded (or last saved) from must still be the one there: another writer's save in between is never
        silently overwritten.

        Args:
            directory: Where the index goes.
            overwrite: Replace another index found in ``directory`` (False: refuse).
            wait: Wait for another process writing ``directory`` (True, or at most that many seconds)
                instead of failing at once.

        Raises:
            LockedError: Another process is writing ``directory``.
            VectorIndexError: ``directory`` changed since this index was read from it, or holds another
                index and ``overwrite`` is False.
        """
        directory = Path(directory)
        with file_lock(directory, wait=wait):
            current = meta_digest(directory)
            if self._base is not None and self._base[0] == directory.resolve():
                if current != self._base[1]:
                    raise VectorIndexError(
                        f"{directory}: the index there changed since this one was read from it (another process "
                        "saved it meanwhile); load it again and redo the change")
            elif current is not None and not overwrite:
                raise VectorIndexError(f"{directory}: an index is already there (written by another process?); "
                                       "pass --force (overwrite=True) to replace it")
            digest = write_index_dir(directory, self._faiss_index, self._items, self.info())
        self._base = (directory.resolve(), digest)
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
        meta, digest = read_meta(directory)
        try:
            index = cls(meta["model_id"], meta["dim"], meta["kind"], modality=meta["modality"],
                        model_path=meta.get("model"), options=meta["options"],
                        requested_kind=meta.get("requested_kind"))
        except VislangError as e:
            raise VectorIndexError(f"{directory / META_FILE}: {e}") from None
        index._faiss_index = read_vectors(directory, meta)
        index._apply_search_options()
        index._items = read_items(directory / ITEMS_FILE, index.modality)
        n_vectors = index._faiss_index.ntotal if index._faiss_index is not None else 0
        if not (len(index._items) == n_vectors == meta["count"]):
            raise VectorIndexError(f"{directory}: inconsistent index: {n_vectors} vectors, "
                                   f"{len(index._items)} items, "
                                   f"{META_FILE} says {meta['count']}")
        index._pos = {it["id"]: i for i, it in enumerate(index._items)}
        if len(index._pos) != len(index._items):
            raise VectorIndexError(f"{directory / ITEMS_FILE}: ids are not unique")
        index._base = (directory.resolve(), digest)
        if embedder is not None:
            index.attach(embedder)
        return index

    def __repr__(self) -> str:
        return (f"Index({len(self)} {self.modality} items, kind={self.kind!r}, dim={self.dim}, "
                f"model_id={self.model_id!r})")
