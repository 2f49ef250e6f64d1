"""``vislang evaluate``: score model outputs.

Sub-commands:
    captions  COCO caption results against COCO reference captions (BLEU, METEOR, ROUGE-L, CIDEr-D, SPICE).
    caption   a trained captioning run on a dataset split, beside the nearest-neighbour and most-frequent
              caption baselines.
    retrieval a trained retrieval run on a dataset split: text->image and image->text recall at K and ranks,
              and zero-shot classification by label prompts.
    vqa       a trained VQA run: official VQA accuracy per question type, beside question-only and image-only
              baselines.
    classify  a trained image + text classifier: accuracy, macro-F1, confusion matrix PNG, beside text-only,
              image-only and majority baselines.
    generate  a trained text-to-image generator, judged by a separately trained retrieval model.

Under ``torchrun`` the evaluation of a trained run is sharded: each rank predicts (captions, embeddings,
answers, classes, samples) for its contiguous part of the split, every rank gets the parts, and rank 0 alone
prints and writes (atomically): the same scores as one process.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from vislang.utils.io import atomic_write_json, format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` and its sub-commands to the CLI."""
    parser = subparsers.add_parser("evaluate", help="score model outputs against references",
                                   description="Score model outputs against references.")
    sub = parser.add_subparsers(dest="evaluate_command", metavar="TASK", required=True)

    captions = sub.add_parser(
        "captions", help="caption metrics of COCO-format results (pycocoevalcap numbers, no Java needed)",
        description="Score COCO-format caption results ([{\"image_id\": ..., \"caption\": ...}]) against a COCO "
                    "captions file: BLEU-1..4, ROUGE-L and CIDEr-D exactly as pycocoevalcap computes them; "
                    "METEOR and SPICE through their official jars when Java is present.")
    captions.add_argument("--results", required=True, type=Path, help="COCO results JSON (one caption per image)")
    captions.add_argument("--annotations", required=True, type=Path, help="COCO captions JSON (references)")
    captions.add_argument("--out", type=Path, default=None,
                          help="where to write corpus and per-image scores (default: <results>.scores.json)")
    captions.add_argument("--no-java", action="store_true",
                          help="do not run METEOR and SPICE even if Java is installed")
    captions.set_defaults(func=run_captions)

    from vislang.tasks import TASKS

    for name in TASKS.names():  # every registered task with an evaluation: its options and runner
        spec = TASKS.get(name)
        if not spec.evaluation:
            continue
        p = sub.add_parser(name, help=spec.evaluate_help, description=spec.evaluate_description or None)
        spec.add_evaluate_args(p)
        p.set_defaults(func=sharded(spec.evaluate))


def sharded(evaluate: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``evaluate`` run over torchrun's ranks (joined on the device it evaluates on; a plain call otherwise)."""

    def run(args: argparse.Namespace) -> int:
        from vislang.train.runtime import resolve_device
        from vislang.utils.distributed import sharded_command

        with sharded_command("evaluation", resolve_device(getattr(args, "device", "auto"))):
            return evaluate(args)

    return run


def run_captions(args: argparse.Namespace) -> int:
    """Score the captions, print a table, write the JSON; returns the exit code."""
    from vislang.metrics.captions import evaluate_caption_files

    scores = evaluate_caption_files(args.results, args.annotations, use_java=not args.no_java)
    out = args.out or args.results.with_name(args.results.stem + ".scores.json")
    atomic_write_json(out, scores.to_json())
    print(format_table(scores.table_rows(), ["metric", "score"]))
    for name, reason in scores.unavailable.items():
        print(f"{name} unavailable: {reason}")
    print(f"{len(scores.image_ids)} images; corpus and per-image scores written to {out}")
    return 0

