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

On disk an index is a directory of ``index.json``, ``vectors.faiss`` and ``items.jsonl``, replaced
atomically (:mod:`vislang.index.files`).

Modules: :mod:`~vislang.index.common` (format names, kinds, errors, result types),
:mod:`~vislang.index.store` (the :class:`Index`), :mod:`~vislang.index.files` (the directory on disk),
:mod:`~vislang.index.embed` (batched embedding), :mod:`~vislang.index.checks` (image files checked up
front) and :mod:`~vislang.index.build` (one-call builders). Contact sheets of results are drawn by
:func:`vislang.viz.save_contact_sheet`.

Usage::

    import vislang
    from vislang import Index

    emb = vislang.load("runs/retrieval")  # a RetrievalPredictor
    index = build_image_index(emb, paths, model_path="runs/retrieval")
    index.save("runs/images.index")
    index = Index.load("runs/images.index", embedder=emb)
    for hit in index.search_text("a sleepy cat", k=5):
        print(hit.rank, hit.score, hit.id, hit.path)
"""

from vislang.index.build import build_image_index, build_text_index
from vislang.index.checks import CheckedImages, check_image_files, warn_bad_images
from vislang.index.common import (
    FORMAT,
    ITEMS_FILE,
    KIND_OPTIONS,
    KINDS,
    META_FILE,
    MIN_POINTS_PER_CLUSTER,
    MODALITIES,
    VECTORS_FILE,
    VERSION,
    AddReport,
    Embedder,
    Hit,
    VectorIndexError,
    auto_nlist,
)
from vislang.index.store import Index

__all__ = [
    "FORMAT",
    "ITEMS_FILE",
    "KINDS",
    "KIND_OPTIONS",
    "META_FILE",
    "MIN_POINTS_PER_CLUSTER",
    "MODALITIES",
    "VECTORS_FILE",
    "VERSION",
    "AddReport",
    "CheckedImages",
    "Embedder",
    "Hit",
    "Index",
    "VectorIndexError",
    "auto_nlist",
    "build_image_index",
    "build_text_index",
    "check_image_files",
    "warn_bad_images",
]
