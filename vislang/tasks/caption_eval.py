"""Evaluating a captioning run on any split, beside two honest baselines (three with a judge).

- **nearest training image**: the first reference caption of the training image closest to the test image in
  the model's own image-encoder feature space (cosine similarity of pooled features) — what retrieval alone
  achieves with the same encoder;
- **nearest training image (judge)** (captions chosen by a :class:`~vislang.tasks.caption_judge.CaptionJudge` with a
  memory of training images): the same in the judge's joint space — what retrieval alone achieves there;
- **most frequent caption**: the most common training caption, for every image — what a model that ignores
  the image achieves.
"""

from __future__ import annotations

import argparse
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from vislang.data import ImageTextDataset, load_dataset
from vislang.data.records import Record
from vislang.errors import VislangError
from vislang.tasks.base import TrainedModel, add_split_args, eval_dir, load_trained
from vislang.tasks.caption import add_decoding_args, caption_records, pooled_features
from vislang.tasks.caption_judge import CaptionJudge, add_judge_args, judge_from_args
from vislang.tasks.common import check_at_least_one
from vislang.train.checkpoint import run_of
from vislang.utils.distributed import is_main, map_sharded
from vislang.utils.io import atomic_write_json, format_table
from vislang.utils.tensors import model_device

REPORTED = ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D", "METEOR", "SPICE")


JUDGE_BASELINE = "nearest training image (judge)"


@dataclass
class CaptionEvaluation:
    """Scores of the model and the baselines on one split.

    Attributes:
        split: What was evaluated (``data [split]``).
        n_images: Images evaluated.
        corpus: ``{system: {metric: score}}`` for "model", "nearest training image", "most frequent caption"
            (and "nearest training image (judge)" for judged captions).
        captions: ``{system: [caption per image]}``.
        records: The evaluated records.
        unavailable: Metrics not computed, with the reason.
    """

    split: str
    n_images: int
    corpus: dict[str, dict[str, float]] = field(default_factory=dict)
    captions: dict[str, list[str]] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        systems = list(self.corpus)
        metrics = [m for m in REPORTED if any(m in self.corpus[s] for s in systems)]
        rows = [[m, *[self.corpus[s].get(m, float("nan")) for s in systems]] for m in metrics]
        return format_table(rows, ["metric", *systems])


def image_id(rec: Record) -> Any:
    """The id written to COCO-format results: the source's image id where there is one."""
    return rec.meta.get("image_id", rec.id)


def nearest_neighbour_captions(trained: TrainedModel, train: Sequence[Record], test: Sequence[Record]) -> list[str]:
    """For each test image, the first caption of its nearest training image in the encoder's space."""
    train = [r for r in train if r.captions]
    enc = trained.model.image_encoder
    device = model_device(trained.model)
    def features(records: list[Record]) -> Tensor:  # (N, D); under torchrun each rank embeds its part
        return map_sharded(lambda part: pooled_features(enc, part, trained.transform, device), records, torch.cat)

    tr, te = features(train), features(list(test))
    nearest = (te @ tr.T).argmax(dim=1).tolist()
    return [train[j].captions[0] for j in nearest]


def most_frequent_caption(train: Sequence[Record]) -> str:
    """The most common training caption (case and surrounding space ignored; ties: first seen)."""
    counts = Counter(c.strip().lower() for r in train for c in r.captions)
    if not counts:
        raise VislangError("the training split has no captions")
    return counts.most_common(1)[0][0]


def run_training_data(run: Path) -> tuple[str, str, str | None]:
    """The (data name, train split, root) a run was trained on, from its ``config.yaml``."""
    path = run / "config.yaml"
    if not path.exists():
        raise VislangError(f"{run}: no config.yaml; pass the run directory, not a checkpoint directory")
    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data = cfg.get("data", {})
    return data.get("name", "emoji"), data.get("train_split", "train"), data.get("root")


def evaluate_captioner(run: str | os.PathLike, data: str, split: str | None, *, beam: int = 1,
                       length_penalty: float = 0.0,
                       root: str | None = None, image_root: str | None = None, limit: int | None = None,
                       skip_bad: bool = False, use_java: bool = False, baselines: bool = True,
                       out_dir: str | os.PathLike | None = None, trained: TrainedModel | None = None,
                       judge: CaptionJudge | None = None) -> CaptionEvaluation:
    """Caption a split with a run's best checkpoint and score it (and the baselines) with the COCO metrics.

    Writes ``results_<system>.json`` (COCO results format), ``annotations.json`` (COCO captions format) and
    ``scores.json`` (corpus and per-image scores) to ``out_dir`` when given. ``trained``: the run's model,
    already opened with :func:`load_trained` (opened here when None). ``judge``: chooses the model's captions
    (:class:`~vislang.tasks.caption_judge.CaptionJudge`).
    """
    from vislang.metrics.captions import evaluate_captions

    check_at_least_one(beam=beam, limit=limit)
    run = Path(run)
    trained = trained or load_trained(run, "caption")
    ds = load_dataset(data, split, root=root, image_root=image_root)
    records = [r for r in ds.records if r.captions][:limit]
    if not records:
        raise VislangError(f"{data} [{split}] has no images with reference captions to evaluate on")
    records = ImageTextDataset(ds.name, ds.split, records, ds.sources).check_images(skip_bad=skip_bad).records
    ev = CaptionEvaluation(split=f"{data} [{split}]" if split else data, n_images=len(records), records=records)
    # the images in the judge's space, embedded once for its choices and its baseline (under torchrun in parts)
    joint = map_sharded(judge.embed_records, records, torch.cat) if judge is not None else None    # (N, E)
    ev.captions["model"] = map_sharded(  # under torchrun each rank captions its part of the images
        lambda rows: caption_records(trained.model, [records[i] for i in rows], trained.artifacts,
                                     trained.transform, beam=beam, max_len=int(trained.config.get("max_len", 24)),
                                     length_penalty=length_penalty, judge=judge,
                                     joint=None if joint is None else joint[rows])[0], range(len(records)))
    if baselines:
        run_dir = run_of(run, trained.folder) or run.parent.parent  # a run or one of its checkpoints
        name, train_split, train_root = run_training_data(run_dir)
        train = load_dataset(name, train_split, root=root or train_root).records
        ev.captions["nearest training image"] = nearest_neighbour_captions(trained, train, records)
        if judge is not None and judge.memory is not None:  # the same, in the judge's space
            ev.captions[JUDGE_BASELINE] = judge.nearest_captions(joint)
        ev.captions["most frequent caption"] = [most_frequent_caption(train)] * len(records)
    refs = {image_id(r): r.captions for r in records}
    per_image: dict[str, Any] = {}
    for system, caps in ev.captions.items():
        scores = evaluate_captions(refs, {image_id(r): c for r, c in zip(records, caps)}, use_java=use_java)
        ev.corpus[system] = dict(scores.corpus)
        ev.unavailable.update(scores.unavailable)
        per_image[system] = scores.to_json()
    if out_dir is not None:
        out = Path(out_dir)
        for system, caps in ev.captions.items():
            slug = re.sub(r"[^a-z0-9]+", "_", system.lower()).strip("_")
            atomic_write_json(out / f"results_{slug}.json",
                              [{"image_id": image_id(r), "caption": c} for r, c in zip(records, caps)])
        atomic_write_json(out / "annotations.json", {
            "images": [{"id": image_id(r), "file_name": r.image} for r in records],
            "annotations": [{"id": k, "image_id": image_id(r), "caption": c}
                            for k, (r, c) in enumerate((r, c) for r in records for c in r.captions)]})
        atomic_write_json(out / "scores.json", {"split": ev.split, "n_images": ev.n_images, "beam": beam,
                                                "length_penalty": length_penalty,
                                                "judge": None if judge is None else judge.describe(),
                                                "corpus": ev.corpus, "unavailable": ev.unavailable,
                                                "per_image": per_image})
    return ev


def add_evaluate_args(run: argparse.ArgumentParser) -> None:
    """The options of ``vislang evaluate caption``."""
    add_split_args(run, "caption", "dataset name (emoji, tuxpaint, ...) or manifest / COCO / Karpathy file",
                   "folder image names in COCO / Karpathy files are relative to")
    add_decoding_args(run)
    add_judge_args(run)
    run.add_argument("--limit", type=int, help="evaluate only the first N images")
    run.add_argument("--skip-bad", action="store_true", help="leave out images that are missing or unreadable")
    run.add_argument("--no-baselines", action="store_true", help="score only the model")
    run.add_argument("--java", action="store_true", help="also compute METEOR/SPICE through their jars (needs Java)")
    run.add_argument("--out", type=Path, help="output folder (default: <run>/eval/<data>_<split>)")


def run_evaluate(args: argparse.Namespace) -> int:
    """Caption a split with a run, score model and baselines, print the table, write COCO-format files."""
    out = eval_dir(args)
    judge = judge_from_args(args)
    ev = evaluate_captioner(args.model, args.data, args.split, beam=args.beam,
                            length_penalty=args.length_penalty, root=args.root,
                            image_root=args.image_root, limit=args.limit, skip_bad=args.skip_bad,
                            use_java=args.java, baselines=not args.no_baselines,
                            out_dir=out if is_main() else None,  # under torchrun rank 0 writes
                            judge=judge)
    print(f"{ev.split}: {ev.n_images} images, beam {args.beam}"
          + (f", length penalty {args.length_penalty:g}" if args.beam > 1 and args.length_penalty else "")
          + (f", {judge.describe()}" if judge else ""))
    print(ev.table())
    for name, reason in ev.unavailable.items():
        print(f"{name} unavailable: {reason}")
    print(f"results, references and scores written to {out}")
    return 0
