"""What the ``--explain OUT.png`` options of ``vislang caption``, ``ask``, ``classify`` and ``search`` share: the
option itself (with ``--attention`` as its alias where that came first), its output check, and the search
figure (one heat map per hit)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from vislang.errors import VislangError

SEARCH_CELL = 160  # panel side of the search figure, pixels


def add_explain_option(p: argparse.ArgumentParser, help: str, attention_alias: bool = False) -> None:
    """``--explain OUT.png`` (and, with ``attention_alias``, the older ``--attention OUT.png`` doing the same;
    one or the other)."""
    if not attention_alias:
        p.add_argument("--explain", metavar="OUT.png", help=help)
        return
    g = p.add_mutually_exclusive_group()
    g.add_argument("--explain", metavar="OUT.png", help=help)
    g.add_argument("--attention", metavar="OUT.png", help="the same as --explain")


def explain_output(args: argparse.Namespace) -> tuple[str | None, str]:
    """``(path, option)`` of the figure asked for (``(None, "--explain")`` when none), checked as a file about to
    be written (:func:`~vislang.utils.io.check_output_file`: one line naming the option when it cannot be)."""
    from vislang.utils.io import check_output_file

    path, option = args.explain, "--explain"
    if path is None and getattr(args, "attention", None) is not None:
        path, option = args.attention, "--attention"
    if path is not None:
        check_output_file(path, option)
    return path, option


def check_search_explain(modality: str, text_query: str | None) -> None:
    """Refuse ``--explain`` where no image is searched or given (a text query over a text index).

    Raises:
        VislangError: One line saying what ``--explain`` draws.
    """
    if modality == "text" and text_query is not None:
        raise VislangError("--explain draws where images match a query: search an image index, or give an image "
                           "query (--image) to see where it matches each text")


def search_figure(embedder: Any, hits: Sequence[Any], modality: str, text_query: str | None,
                  query_image: Any) -> Any:
    """One figure of the hits' match maps (:meth:`~vislang.inference.retrieval.RetrievalPredictor.match_maps`),
    two a row, each titled with its rank, score and id (text): over each image hit, where it matches the query (a
    text or an image); over the query image, where it matches each text hit. Image hits that cannot be read
    (any more) are left out with a warning.

    Raises:
        VislangError: No hit to draw.
    """
    from vislang.data.images import load_image
    from vislang.errors import ImageError
    from vislang.viz import heatmap_figure, stack_figures

    if modality == "image":
        query = embedder.embed_texts([text_query]) if text_query is not None else embedder.embed_images([query_image])
        shown, pictures = [], []
        for h in hits:
            try:
                pictures.append(load_image(h.path))
                shown.append(h)
            except ImageError as e:
                print(f"warning: --explain leaves out hit #{h.rank} ({h.id}): {e}", file=sys.stderr)
        maps = embedder.match_maps(pictures, query[0]) if pictures else None    # (k, h, w)
    else:
        shown, pictures = list(hits), [query_image] * len(hits)
        maps = embedder.match_maps(pictures, embedder.embed_texts([h.text for h in hits])) if hits else None
    if maps is None:
        raise VislangError("--explain: no hit to draw")
    figures = [heatmap_figure(pic, m, f"#{h.rank}  {h.score:.3f}  {h.id if modality == 'image' else h.text}",
                              cell=SEARCH_CELL) for h, pic, m in zip(shown, pictures, maps)]
    return stack_figures(figures, columns=2)
