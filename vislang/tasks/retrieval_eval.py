"""Evaluating a retrieval run on any split: text->image and image->text retrieval, and zero-shot classification.

Retrieval follows the multi-caption protocol of :mod:`vislang.metrics.retrieval`: the candidates are the
split's images, every caption is a text query whose one correct answer is its own image (``captions="first"``
keeps one query per image), and an image query is right at rank r when any of its captions is ranked r.
Images are split into galleries by ``gallery_key`` (the emoji art style by default) and every query is ranked
within its own gallery, since the drawings of one concept in other styles carry the very same captions.

Zero-shot classification: each class label becomes a prompt (``template``, "a {label} emoji" by default, with
``-`` and ``_`` in labels read as spaces); an image is given the class whose prompt embeds closest to it.
Labels are the records' ``label`` (the emoji group, the Tux Paint category, a manifest's ``label``).
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vislang.errors import VislangError
from vislang.metrics.classification import classification_report
from vislang.tasks.base import TrainedModel, add_split_args, eval_dir, load_trained
from vislang.tasks.common import check_at_least_one, load_split
from vislang.tasks.retrieval_embed import embed_record_images, embed_texts, model_fingerprint
from vislang.tasks.retrieval_galleries import (
    galleries_of,
    gallery_retrieval_scores,
    query_texts,
    subsampled_gallery_scores,
)
from vislang.utils.distributed import is_main, map_sharded
from vislang.utils.io import atomic_write_json, format_table

DEFAULT_TEMPLATE = "a {label} emoji"
RANK_KEYS = ("R@1", "R@5", "R@10", "median_rank", "mean_rank")


@dataclass
class RetrievalEvaluation:
    """Scores of a retrieval model on one split.

    Attributes:
        split: What was evaluated (``data [split]``).
        model_id: Fingerprint of the evaluated checkpoint.
        n_images: Candidate images (with captions).
        n_queries: Text queries.
        captions: ``"all"`` or ``"first"``.
        galleries: Candidates per gallery.
        text_to_image: R@1/5/10, median and mean rank of the text queries (pooled over galleries).
        image_to_text: The same for the image queries.
        per_gallery: ``{gallery: {"text_to_image": ..., "image_to_text": ...}}``.
        zero_shot: Zero-shot classification (accuracy, macro F1, classes, prompts, chance and majority-class
            accuracy), or None when the split has no labels.
        subsampled: Recalls with every gallery cut to ``gallery_size`` random candidates, averaged over
            ``draws`` cuts (see :func:`~vislang.tasks.retrieval_galleries.subsampled_gallery_scores`), or None.
    """

    split: str
    model_id: str
    n_images: int
    n_queries: int
    captions: str
    galleries: dict[str, int] = field(default_factory=dict)
    text_to_image: dict[str, float] = field(default_factory=dict)
    image_to_text: dict[str, float] = field(default_factory=dict)
    per_gallery: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    zero_shot: dict[str, Any] | None = None
    subsampled: dict[str, Any] | None = None

    def table(self) -> str:
        rows: list[list[Any]] = [[k, self.text_to_image[k], self.image_to_text[k]] for k in RANK_KEYS
                                 if k in self.text_to_image]
        if self.subsampled is not None:
            sub = self.subsampled
            tag = f"galleries of {sub['gallery_size']}, {sub['draws']} draws"
            rows += [[f"{k} ({tag})", sub["text_to_image"][k], sub["image_to_text"][k]]
                     for k in RANK_KEYS if k.startswith("R@") and k in sub["text_to_image"]]
        if self.zero_shot is not None:
            rows.append(["zero-shot accuracy", self.zero_shot["accuracy"], ""])
            rows.append(["zero-shot macro F1", self.zero_shot["macro_f1"], ""])
        return format_table(rows, ["metric", "text->image", "image->text"])

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def readable_label(label: str) -> str:
    """``"smileys-emotion"`` -> ``"smileys emotion"``: labels as words for a prompt."""
    return " ".join(str(label).replace("-", " ").replace("_", " ").split())


def text_embeddings(trained: TrainedModel, texts: list[str], batch_size: int = 256) -> Tensor:
    """Normalised embeddings ``(N, E)`` of texts with a trained dual encoder (truncated to its ``max_len``)."""
    return embed_texts(trained.model, trained.artifacts, texts, int(trained.config.get("max_len", 64)), batch_size)


def zero_shot_classification(trained: TrainedModel, image_embeds: Any, labels: list[str],
                             template: str = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """Classify images by the closest class prompt.

    Args:
        trained: The dual encoder that embeds the prompts.
        image_embeds: ``(N, E)`` normalised image embeddings.
        labels: ``(N,)`` true label of each image.
        template: Prompt with a ``{label}`` placeholder.

    Returns:
        ``accuracy``, ``macro_f1``, ``n_classes``, ``classes``, ``prompts``, ``chance`` (1 / classes),
        ``majority`` (accuracy of always answering the most common class) and ``per_class_recall``.
    """
    if "{label}" not in template:
        raise VislangError(f"zero-shot template {template!r} has no {{label}} placeholder")
    classes = sorted(set(labels))
    prompts = [template.format(label=readable_label(c)) for c in classes]
    sims = image_embeds @ text_embeddings(trained, prompts).T                  # (N, C)
    predicted = [classes[j] for j in sims.argmax(dim=1).tolist()]
    report = classification_report(labels, predicted, labels=classes)
    return {"accuracy": report.accuracy, "macro_f1": report.macro_f1, "n_classes": len(classes),
            "classes": classes, "prompts": prompts, "template": template, "chance": 1.0 / len(classes),
            "majority": Counter(labels).most_common(1)[0][1] / len(labels),
            "per_class_recall": {str(c): m.recall for c, m in report.per_class.items()}}


def evaluate_retriever(run: str | os.PathLike, data: str, split: str | None, *, root: str | None = None,
                       image_root: str | None = None, captions: str = "all", gallery_key: str | None = "vendor",
                       template: str = DEFAULT_TEMPLATE, zero_shot: bool = True, limit: int | None = None,
                       skip_bad: bool = False, batch_size: int = 128, out_dir: str | os.PathLike | None = None,
                       trained: TrainedModel | None = None, gallery_size: int | None = None,
                       gallery_draws: int = 10) -> RetrievalEvaluation:
    """Score a run's best checkpoint on a split: retrieval both ways and zero-shot classification.

    Args:
        run: Run or checkpoint directory of ``vislang train retrieval``.
        data: Dataset name or manifest / COCO / Karpathy file.
        split: Split to evaluate (None: the dataset's default).
        root: Data root for registered datasets.
        image_root: Folder image names in COCO / Karpathy files are relative to.
        captions: ``"all"`` (every caption is a query) or ``"first"`` (one query per image).
        gallery_key: Record metadata field whose values are separate galleries (None: one gallery).
        template: Zero-shot prompt with a ``{label}`` placeholder.
        zero_shot: Also classify the images by their labels' prompts (when the split has labels).
        limit: Evaluate only the first N images.
        skip_bad: Leave out missing or unreadable images instead of stopping.
        batch_size: Images per embedding batch.
        out_dir: Write ``scores.json`` there (atomically) when given.
        trained: The run's model, already opened with :func:`load_trained` (default: opened here).
        gallery_size: Also score every gallery cut to this many random candidates (for comparing with
            numbers measured on a smaller gallery), averaged over ``gallery_draws`` cuts.
        gallery_draws: Random cuts to average over.

    Raises:
        VislangError: The split has no captioned images (and no labels for zero-shot), or bad options.
    """
    if captions not in ("all", "first"):
        raise VislangError(f"captions must be 'all' or 'first', not {captions!r}")
    if gallery_size is not None and (gallery_size < 1 or gallery_draws < 1):
        raise VislangError(f"--gallery-size and --gallery-draws must be >= 1, got {gallery_size} and "
                           f"{gallery_draws}")
    check_at_least_one(batch_size=batch_size)
    trained = trained or load_trained(run, "retrieval")
    ds = load_split(data, split, root=root, image_root=image_root, limit=limit, skip_bad=skip_bad)
    records = ds.records
    captioned = [r for r in records if r.captions]
    labelled = [r for r in records if r.label is not None] if zero_shot else []
    name = f"{data} [{ds.split}]" if ds.split else str(data)
    if not captioned and not labelled:
        raise VislangError(f"{name} has no images with captions (or labels) to evaluate retrieval on")
    # (N, E); under torchrun each rank embeds its part of the images and of the texts
    images = map_sharded(lambda part: embed_record_images(trained.model, part, trained.transform, batch_size),
                         records, torch.cat)
    row = {id(r): i for i, r in enumerate(records)}
    ev = RetrievalEvaluation(split=name, model_id=model_fingerprint(trained.folder, trained.config),
                             n_images=len(captioned), n_queries=0, captions=captions)
    if captioned:
        texts, owner = query_texts(captioned, captions)
        text_emb = map_sharded(lambda part: text_embeddings(trained, part), texts, torch.cat)  # (Q, E)
        cap_images = images[[row[id(r)] for r in captioned]]
        gallery_names = galleries_of(captioned, gallery_key)
        scores = gallery_retrieval_scores(cap_images, text_emb, owner, gallery_names)
        if gallery_size is not None:
            ev.subsampled = subsampled_gallery_scores(cap_images, text_emb, owner, gallery_names, gallery_size,
                                                      gallery_draws)
        ev.n_queries = len(texts)
        ev.galleries = scores.sizes
        ev.text_to_image = scores.overall.text_to_image
        ev.image_to_text = scores.overall.image_to_text
        ev.per_gallery = {g: {"text_to_image": s.text_to_image, "image_to_text": s.image_to_text}
                          for g, s in scores.per_gallery.items()}
    if labelled:
        ev.zero_shot = zero_shot_classification(trained, images[[row[id(r)] for r in labelled]],
                                                [str(r.label) for r in labelled], template)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "scores.json", ev.to_json())
    return ev


def add_evaluate_args(ret: argparse.ArgumentParser) -> None:
    """The options of ``vislang evaluate retrieval``."""
    add_split_args(ret, "retrieval", "dataset name (emoji, tuxpaint, ...) or manifest / COCO / Karpathy file",
                   "folder image names in COCO / Karpathy files are relative to")
    ret.add_argument("--captions", choices=("all", "first"), default="all",
                     help="text queries: every caption (default) or each image's first caption")
    ret.add_argument("--gallery-key", default="vendor",
                     help="record field splitting the images into separately ranked galleries (default: vendor, "
                          "the emoji art style; 'none': one gallery)")
    ret.add_argument("--template", default=DEFAULT_TEMPLATE,
                     help="zero-shot prompt with a {label} placeholder (default: 'a {label} emoji')")
    ret.add_argument("--no-zero-shot", action="store_true", help="skip zero-shot classification")
    ret.add_argument("--gallery-size", type=int, metavar="N",
                     help="also score every gallery cut to N random candidates (to compare with numbers measured "
                          "on a smaller gallery, like COCO's 1K test), averaged over --gallery-draws cuts")
    ret.add_argument("--gallery-draws", type=int, default=10, metavar="D",
                     help="random cuts averaged for --gallery-size (default: 10)")
    ret.add_argument("--limit", type=int, help="evaluate only the first N images")
    ret.add_argument("--batch-size", type=int, default=128, help="images per embedding batch")
    ret.add_argument("--skip-bad", action="store_true", help="leave out images that are missing or unreadable")
    ret.add_argument("--out", type=Path, help="output folder (default: <run>/eval/<data>_<split>)")


def run_evaluate(args: argparse.Namespace) -> int:
    """Score a retrieval run on a split, print the table, write scores.json."""
    out = eval_dir(args)
    gallery_key = None if args.gallery_key.lower() in ("", "none") else args.gallery_key
    ev = evaluate_retriever(args.model, args.data, args.split, root=args.root, image_root=args.image_root,
                            captions=args.captions, gallery_key=gallery_key, template=args.template,
                            zero_shot=not args.no_zero_shot, limit=args.limit, skip_bad=args.skip_bad,
                            batch_size=args.batch_size, out_dir=out if is_main() else None,
                            gallery_size=args.gallery_size,
                            gallery_draws=args.gallery_draws)
    galleries = ", ".join(f"{g} {n}" for g, n in ev.galleries.items())
    which = "every caption" if args.captions == "all" else "first captions"
    print(f"{ev.split}: {ev.n_images} images, {ev.n_queries} text queries ({which}); "
          f"candidates per gallery: {galleries or 'none'}")
    print(ev.table())
    if len(ev.per_gallery) > 1:
        for g, s in ev.per_gallery.items():
            t2i, i2t = s["text_to_image"], s["image_to_text"]
            print(f"  {g} ({ev.galleries[g]} candidates): text->image R@1 {t2i['R@1']:.4f} R@5 {t2i['R@5']:.4f}, "
                  f"image->text R@1 {i2t['R@1']:.4f} R@5 {i2t['R@5']:.4f}")
    if ev.zero_shot is not None:
        z = ev.zero_shot
        print(f"zero-shot: {z['n_classes']} classes, prompt {z['template']!r}; chance {z['chance']:.4f}, "
              f"majority class {z['majority']:.4f}")
    print(f"model {ev.model_id}; scores written to {out / 'scores.json'}")
    return 0
