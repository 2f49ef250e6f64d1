"""``vislang evaluate``: score model outputs.

Sub-commands:
    captions  COCO caption results against COCO reference captions (BLEU, METEOR, ROUGE-L, CIDEr-D, SPICE).
    caption   a trained captioning run on a dataset split, beside the nearest-neighbour and most-frequent
              caption baselines.
"""

from __future__ import annotations

import argparse
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

    run = sub.add_parser("caption", help="caption a dataset split with a trained run and score it beside baselines")
    run.add_argument("--model", required=True, help="run directory of `vislang train caption`")
    run.add_argument("--data", required=True, help="dataset name (emoji, tuxpaint, ...) or manifest / COCO / Karpathy file")
    run.add_argument("--split", help="split to evaluate (default: the dataset's default split)")
    run.add_argument("--root", help="data root for built-in datasets")
    run.add_argument("--image-root", help="folder image names in COCO / Karpathy files are relative to")
    run.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    run.add_argument("--limit", type=int, help="evaluate only the first N images")
    run.add_argument("--skip-bad", action="store_true", help="leave out images that are missing or unreadable")
    run.add_argument("--no-baselines", action="store_true", help="score only the model")
    run.add_argument("--java", action="store_true", help="also compute METEOR/SPICE through their jars (needs Java)")
    run.add_argument("--out", type=Path, help="output folder (default: <run>/eval/<data>_<split>)")
    run.set_defaults(func=run_caption_model)


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


def run_caption_model(args: argparse.Namespace) -> int:
    """Caption a split with a run, score model and baselines, print the table, write COCO-format files."""
    from vislang.tasks.caption_eval import evaluate_captioner

    slug = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(args.data).name)
    out = args.out or Path(args.model) / "eval" / f"{slug}_{args.split or 'default'}"
    ev = evaluate_captioner(args.model, args.data, args.split, beam=args.beam, root=args.root,
                            image_root=args.image_root, limit=args.limit, skip_bad=args.skip_bad,
                            use_java=args.java, baselines=not args.no_baselines, out_dir=out)
    print(f"{ev.split}: {ev.n_images} images, beam {args.beam}")
    print(ev.table())
    for name, reason in ev.unavailable.items():
        print(f"{name} unavailable: {reason}")
    print(f"results, references and scores written to {out}")
    return 0
