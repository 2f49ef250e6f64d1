"""``vislang caption IMAGE... --model RUN``: caption image files with a trained run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from vislang.commands.explain import add_explain_option
    from vislang.tasks.caption import add_decoding_args
    from vislang.tasks.caption_judge import add_judge_args

    p = sub.add_parser("caption", help="caption image files with a trained captioning run")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, SVG, ...)")
    p.add_argument("--model", required=True, help="run directory (or one of its checkpoint directories)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    add_decoding_args(p)
    add_judge_args(p)
    p.add_argument("--max-len", type=int, help="longest caption in tokens")
    p.add_argument("--batch-size", type=int, default=32,
                   help="images captioned at once; each batch's captions are printed when it is done (default 32)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    add_explain_option(p, "write the per-word attention figure (several images: OUT_<image name>.png)",
                       attention_alias=True)
    p.add_argument("--skip-bad", action="store_true",
                   help="report missing or unreadable images as a warning and exit 0 (default: an error, exit 2, "
                        "after the other images' captions)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_caption)


def cmd_caption(args: argparse.Namespace) -> int:
    from vislang.commands.explain import explain_output
    from vislang.data.images import load_image
    from vislang.errors import VislangError
    from vislang.inference.caption import CaptionPredictor
    from vislang.tasks.caption_judge import judge_from_args
    from vislang.viz import attention_figure, save_figure

    if args.beam < 1:
        raise VislangError(f"--beam must be at least 1, got {args.beam}")
    if args.max_len is not None and args.max_len < 1:
        raise VislangError(f"--max-len must be at least 1, got {args.max_len}")
    if args.batch_size < 1:
        raise VislangError(f"--batch-size must be at least 1, got {args.batch_size}")
    figure, _ = explain_output(args)
    captioner = CaptionPredictor.load(args.model, args.checkpoint, args.device)
    captioner.judge = judge_from_args(args)
    bad: list[tuple[str, str]] = []  # every bad file is reported at the end, after the good ones' captions
    for i, cap in captioner.iter_captions(args.images, beam=args.beam, max_len=args.max_len,
                                          batch_size=args.batch_size, length_penalty=args.length_penalty, bad=bad):
        path = args.images[i]
        if figure and cap.attention is not None:
            out = Path(figure)
            if len(args.images) > 1:
                out = out.with_name(f"{out.stem}_{Path(path).stem}{out.suffix or '.png'}")
            h, w = cap.attention.shape[1:]
            image = load_image(path, min_side=captioner.decode_side)  # 512 px or more: enough for a figure
            save_figure(attention_figure(image, cap.words, cap.attention.flatten(1), (h, w), cap.text), out)
        if args.json:
            print(json.dumps({"image": str(path), "caption": cap.text, "score": round(cap.score, 4)}), flush=True)
        else:
            print(f"{path}\t{cap.text}", flush=True)
    report_bad_images(bad, len(args.images), args.skip_bad)
    return 0


def report_bad_images(bad: list[tuple[str, str]], total: int, skip_bad: bool) -> None:
    """After a batch command's results: every bad image together on stderr, as a warning (``skip_bad``) or
    as the :class:`vislang.errors.MissingImagesError` the command fails with.

    Args:
        bad: ``(path, reason)`` of each image that failed.
        total: Images given.
        skip_bad: Warn instead of failing.
    """
    from vislang.errors import MissingImagesError
    from vislang.index.checks import warn_bad_images

    if bad and not skip_bad:
        raise MissingImagesError("the command line", bad, total)
    if bad:
        warn_bad_images(bad, total, "the command line")
