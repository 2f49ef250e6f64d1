"""Building a new index in one call: embed image files or texts with a model and index them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from vislang.index.common import Embedder
from vislang.index.store import Index


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

