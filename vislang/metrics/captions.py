"""Caption evaluation from COCO-format files: the numbers pycocoevalcap's ``COCOEvalCap`` reports.

References come from a COCO captions file (``{"images": [...], "annotations": [{"image_id", "caption"},
...]}``), candidates from a COCO results file (``[{"image_id": ..., "caption": ...}, ...]``). Captions are
tokenised with the pure-Python PTB tokenizer (references as one document, candidates as another, images
in the annotation file's order, like ``COCOEvalCap`` with ``params["image_id"] = cocoRes.getImgIds()``),
then scored with BLEU-1..4, ROUGE-L and CIDEr-D, plus METEOR and SPICE through their official jars when
Java and the jars are present (otherwise they are reported as unavailable, never replaced).
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vislang.errors import DataError, ExternalToolError
from vislang.metrics import java_metrics
from vislang.metrics._corpus import CaptionSet
from vislang.metrics.bleu import compute_bleu
from vislang.metrics.cider import compute_cider
from vislang.metrics.ptb_tokenizer import tokenize_captions
from vislang.metrics.rouge import compute_rouge

BLEU_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
CAPTION_METRICS = (*BLEU_NAMES, "METEOR", "ROUGE-L", "CIDEr-D", "SPICE")
JAVA_METRICS = ("METEOR", "SPICE")


@dataclass
class CaptionScores:
    """Scores of a caption set.

    Attributes:
        image_ids: Evaluated images, in evaluation order.
        corpus: Corpus score of each available metric.
        per_image: ``per_image[metric][i]`` is the score of ``image_ids[i]``.
        unavailable: Metrics that could not be computed, with the reason.
    """

    image_ids: list[Hashable]
    corpus: dict[str, float] = field(default_factory=dict)
    per_image: dict[str, list[float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def table_rows(self) -> list[list[Any]]:
        """``[metric, score or "unavailable"]`` rows in the usual metric order."""
        rows: list[list[Any]] = []
        for name in CAPTION_METRICS:
            if name in self.corpus:
                rows.append([name, self.corpus[name]])
            elif name in self.unavailable:
                rows.append([name, "unavailable"])
        return rows

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable corpus and per-image scores (NaN becomes null)."""
        def clean(x: float) -> float | None:
            return None if math.isnan(x) else x

        per_image = []
        for i, image_id in enumerate(self.image_ids):
            entry: dict[str, Any] = {"image_id": image_id}
            entry.update({name: clean(scores[i]) for name, scores in self.per_image.items()})
            per_image.append(entry)
        return {
            "num_images": len(self.image_ids),
            "corpus": {name: clean(v) for name, v in self.corpus.items()},
            "unavailable": dict(self.unavailable),
            "per_image": per_image,
        }


def tokenize_caption_sets(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str]
                          ) -> tuple[dict[Hashable, list[str]], dict[Hashable, list[str]]]:
    """PTB-tokenise references (one document) and candidates (another), keyed like pycocoevalcap's."""
    ids = list(references)
    ref_texts = [c for i in ids for c in references[i]]
    ref_tokens = iter(tokenize_captions(ref_texts))
    gts = {i: [next(ref_tokens) for _ in references[i]] for i in ids}
    cand_tokens = tokenize_captions([candidates[i] for i in ids])
    res = {i: [c] for i, c in zip(ids, cand_tokens)}
    return gts, res


def _check_same_images(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str]) -> None:
    only_refs = [i for i in references if i not in candidates]
    only_cands = [i for i in candidates if i not in references]
    if only_refs or only_cands:
        parts = []
        if only_cands:
            parts.append(f"{len(only_cands)} image ids have a result but no reference caption: "
                         f"{_preview(only_cands)}")
        if only_refs:
            parts.append(f"{len(only_refs)} image ids have reference captions but no result: {_preview(only_refs)}")
        raise DataError("; ".join(parts))
    empty = [i for i, refs in references.items() if len(refs) == 0]
    if empty:
        raise DataError(f"{len(empty)} images have no reference caption: {_preview(empty)}")


def _preview(ids: Sequence[Hashable], limit: int = 20) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def evaluate_captions(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str],
                      use_java: bool = True) -> CaptionScores:
    """Score one candidate caption per image against its references.

    Args:
        references: ``{image_id: [reference caption, ...]}`` (raw text), in evaluation order.
        candidates: ``{image_id: candidate caption}`` (raw text) for the same images.
        use_java: Run METEOR and SPICE through their jars when possible; False reports them as
            unavailable without trying.

    Raises:
        DataError: the two sets cover different images, or an image has no reference.
    """
    _check_same_images(references, candidates)
    gts, res = tokenize_caption_sets(references, candidates)
    captions = CaptionSet.from_dicts(gts, res)
    scores = CaptionScores(image_ids=list(captions.image_ids))

    bleu_corpus, bleu_images = compute_bleu(captions, 4)
    for k, name in enumerate(BLEU_NAMES):
        scores.corpus[name] = bleu_corpus[k]
        scores.per_image[name] = bleu_images[:, k].tolist()
    for name, compute in (("ROUGE-L", compute_rouge), ("CIDEr-D", compute_cider)):
        corpus, per_image = compute(captions)
        scores.corpus[name], scores.per_image[name] = corpus, per_image.tolist()

    java_runs = (("METEOR", java_metrics.meteor_unavailable_reason, java_metrics.meteor),
                 ("SPICE", java_metrics.spice_unavailable_reason, java_metrics.spice))
    for name, unavailable_reason, run in java_runs:
        reason = "disabled (--no-java)" if not use_java else unavailable_reason()
        if reason:
            scores.unavailable[name] = reason
            continue
        try:
            result = run(gts, res)
        except ExternalToolError as e:
            scores.unavailable[name] = str(e)
            continue
        scores.corpus[name], scores.per_image[name] = result.corpus, result.per_image
    return scores


# ---------------------------------------------------------------------------------------------------
# COCO-format files.


def _read_json(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})", path=str(path)) from None


def _image_id(value: Any, path: str, where: str) -> Hashable:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(f"image_id must be an integer or a string, got {value!r}", path=path, where=where,
                        field="image_id")
    return value


def _caption(entry: Mapping, path: str, where: str) -> str:
    if "caption" not in entry:
        raise DataError("missing", path=path, where=where, field="caption")
    if not isinstance(entry["caption"], str):
        raise DataError(f"must be a string, got {type(entry['caption']).__name__}", path=path, where=where,
                        field="caption")
    return entry["caption"]


def _captioned(entries: list[Any], path: str, where: str) -> Iterator[tuple[Hashable, str]]:
    """``(image_id, caption)`` of each entry of a COCO ``annotations`` or results list, checked as it is read;
    ``where.format(index)`` names an entry in errors."""
    for index, entry in enumerate(entries):
        at = where.format(index)
        if not isinstance(entry, dict):
            raise DataError("must be an object", path=path, where=at)
        if "image_id" not in entry:
            raise DataError("missing", path=path, where=at, field="image_id")
        yield _image_id(entry["image_id"], path, at), _caption(entry, path, at)


def load_coco_annotations(path: str | Path) -> dict[Hashable, list[str]]:
    """Reference captions of a COCO captions file, ``{image_id: [caption, ...]}``.

    Images come in the order of the file's ``images`` list (as pycocotools indexes them), then any image
    that only appears in ``annotations``; captions in file order.

    Raises:
        DataError: the file is missing, not JSON, or an entry lacks an image id or a caption.
    """
    path = str(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError("not a COCO captions file (expected an object with an 'annotations' list)", path=path)
    captions: dict[Hashable, list[str]] = {}
    for img in data.get("images") or []:
        if isinstance(img, dict) and "id" in img:
            captions.setdefault(_image_id(img["id"], path, "images"), [])
    for image_id, caption in _captioned(data["annotations"], path, "annotations[{}]"):
        captions.setdefault(image_id, []).append(caption)
    return {i: c for i, c in captions.items() if c}


def load_coco_results(path: str | Path) -> dict[Hashable, str]:
    """Candidate captions of a COCO results file, ``{image_id: caption}``.

    Raises:
        DataError: the file is missing, not a JSON list, an entry lacks a field, or an image has several
            results (each duplicated id is listed).
    """
    path = str(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise DataError('not a COCO results file (expected a list of {"image_id": ..., "caption": ...})',
                        path=path)
    results: dict[Hashable, str] = {}
    duplicates: list[Hashable] = []
    for image_id, caption in _captioned(data, path, "entry {}"):
        if image_id in results:
            duplicates.append(image_id)
        results[image_id] = caption
    if duplicates:
        raise DataError(f"{len(duplicates)} image ids have more than one result: {_preview(duplicates)}", path=path)
    return results


def evaluate_caption_files(results_path: str | Path, annotations_path: str | Path, use_java: bool = True
                           ) -> CaptionScores:
    """Score a COCO results file against a COCO captions file (see :func:`evaluate_captions`)."""
    candidates = load_coco_results(results_path)
    annotations = load_coco_annotations(annotations_path)
    only_results = [i for i in candidates if i not in annotations]
    if only_results:
        raise DataError(f"{len(only_results)} image ids of the results have no reference caption: "
                        f"{_preview(only_results)}", path=str(results_path))
    only_refs = [i for i in annotations if i not in candidates]
    if only_refs:
        raise DataError(f"{len(only_refs)} image ids with reference captions have no result: "
                        f"{_preview(only_refs)}", path=str(results_path))
    return evaluate_captions(annotations, candidates, use_java=use_java)


# ---------------------------------------------------------------------------------------------------
# pycocoevalcap-style scorers sharing their n-gram counts.


class SharedScorers:
    """BLEU, ROUGE-L and CIDEr-D scorers with pycocoevalcap's ``compute_score(gts, res)`` interface.

    The three share one :class:`CaptionSet` per ``(gts, res)`` pair, so the caption set is indexed and its
    n-grams counted once for BLEU and CIDEr-D.
    """

    def __init__(self) -> None:
        self._key: tuple[int, int] | None = None
        self._captions: CaptionSet | None = None
        self.bleu = _Scorer(self, "Bleu", _bleu_lists)
        self.rouge = _Scorer(self, "Rouge", compute_rouge)
        self.cider = _Scorer(self, "CIDEr", compute_cider)

    def caption_set(self, gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, Sequence[str]]) -> CaptionSet:
        key = (id(gts), id(res))
        if key != self._key or self._captions is None:
            self._key, self._captions = key, CaptionSet.from_dicts(gts, res)
        return self._captions


def _bleu_lists(captions: CaptionSet) -> tuple[list[float], list[list[float]]]:
    corpus, per_image = compute_bleu(captions, 4)
    return corpus, [per_image[:, k].tolist() for k in range(per_image.shape[1])]


@dataclass
class _Scorer:
    shared: SharedScorers
    name: str
    compute: Any

    def compute_score(self, gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, Sequence[str]]
                      ) -> tuple[Any, Any]:
        return self.compute(self.shared.caption_set(gts, res))

    def method(self) -> str:
        return self.name
