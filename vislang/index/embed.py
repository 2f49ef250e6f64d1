"""Embedding many items in batches for an index: image files (decoded on threads) and texts. Under torchrun
each rank embeds its contiguous part and every rank gets all the vectors (rank 0 then writes the index)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from vislang.data.images import load_image
from vislang.errors import ImageError, MissingImagesError
from vislang.index.common import Embedder, as_matrix
from vislang.utils.distributed import is_main, map_sharded
from vislang.utils.io import progress


def embed_image_files(emb: Embedder, paths: Sequence[str], todo: Sequence[int], dim: int, *, batch_size: int,
                      skip_bad: bool, show_progress: bool) -> tuple[np.ndarray | None, list[int], list[tuple[str, str]]]:
    """Embed ``paths[i]`` for each ``i`` in ``todo``, ``batch_size`` images at a time.

    Args:
        emb: The model.
        paths: Image files.
        todo: Positions in ``paths`` to embed, in order.
        dim: The index's vector size.
        batch_size: Images embedded at once.
        skip_bad: Leave out an image whose pixel data is broken (it passed the header check) with a warning
            instead of failing.
        show_progress: Show a progress bar on stderr.

    Images are decoded on threads, by the embedder's ``preprocess`` when it has one (a predictor's: decoded
    at reduced size and made a small tensor at once, so no full-size image outlives its decoding).

    Returns:
        ``(vectors, done, bad)``: the normalised (len(done), dim) vectors (None when none), the positions
        embedded, and the ``(path, reason)`` of the images left out.

    Raises:
        MissingImagesError: Some images' pixel data is broken and ``skip_bad`` is False; all of them are
            decoded first and listed together.
    """
    def join(parts: list[tuple[np.ndarray | None, list[int], list[tuple[str, str]]]]):
        vectors = [v for v, _, _ in parts if v is not None]
        return ((np.concatenate(vectors) if vectors else None), [i for _, d, _ in parts for i in d],
                [b for _, _, bad in parts for b in bad])

    # under torchrun each rank embeds its part of ``todo``; a broken image is raised once all parts are in
    vectors, done, late_bad = map_sharded(
        lambda part: _embed_image_part(emb, paths, part, dim, batch_size=batch_size, skip_bad=skip_bad,
                                       show_progress=show_progress), todo, join)
    if late_bad and not skip_bad:
        raise MissingImagesError("the images", late_bad, len(todo))
    return vectors, done, late_bad


def _embed_image_part(emb: Embedder, paths: Sequence[str], todo: Sequence[int], dim: int, *, batch_size: int,
                      skip_bad: bool, show_progress: bool
                      ) -> tuple[np.ndarray | None, list[int], list[tuple[str, str]]]:
    """:func:`embed_image_files` in one process, without raising for broken images."""
    prepare = getattr(emb, "preprocess", load_image)

    def load(i: int) -> tuple[int, Any]:
        try:
            return i, prepare(paths[i])
        except ImageError as e:  # passed the header check but the pixel data is broken
            return i, e.reason

    late_bad: list[tuple[str, str]] = []
    done: list[int] = []
    chunks: list[np.ndarray] = []  # added in one call at the end: an ivf index trains on all of them
    bar = progress(total=len(todo), desc="embedding images", unit="img", disable=quiet(show_progress))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool, bar:
        for start in range(0, len(todo), batch_size):
            loaded = list(pool.map(load, todo[start:start + batch_size]))
            ok = [(i, im) for i, im in loaded if not isinstance(im, str)]
            late_bad += [(paths[i], im) for i, im in loaded if isinstance(im, str)]
            if ok and (skip_bad or not late_bad):  # once one fails without skip_bad, only look for the others
                chunks.append(as_matrix(emb.embed_images([im for _, im in ok], batch_size=batch_size),
                                        dim, "image embeddings"))
                done += [i for i, _ in ok]
            bar.update(len(loaded))
    return (np.concatenate(chunks) if chunks else None), done, late_bad


def embed_text_batches(emb: Embedder, texts: Sequence[str], dim: int, *, batch_size: int,
                       show_progress: bool) -> np.ndarray | None:
    """The normalised (len(texts), dim) vectors of ``texts``, ``batch_size`` at a time (None when empty)."""
    vectors = map_sharded(lambda part: _embed_text_part(emb, part, dim, batch_size=batch_size,
                                                        show_progress=show_progress),
                          texts, lambda parts: np.concatenate(parts) if parts else None)
    return vectors


def _embed_text_part(emb: Embedder, texts: Sequence[str], dim: int, *, batch_size: int,
                     show_progress: bool) -> np.ndarray | None:
    """:func:`embed_text_batches` in one process."""
    chunks: list[np.ndarray] = []  # added in one call at the end: an ivf index trains on all of them
    with progress(total=len(texts), desc="embedding texts", unit="text", disable=quiet(show_progress)) as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            chunks.append(as_matrix(emb.embed_texts(list(batch)), dim, "text embeddings"))
            bar.update(len(batch))
    return np.concatenate(chunks) if chunks else None


def quiet(show_progress: bool) -> bool | None:
    """The ``disable`` argument of a progress bar: None (auto: shown on a terminal) or True (hidden)."""
    return None if show_progress and is_main() else True  # under torchrun rank 0 alone shows progress
