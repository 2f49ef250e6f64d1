"""``vislang caption IMAGE... --model RUN``: caption image files with a trained run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from vislang.tasks.caption import add_decoding_args

    p = sub.add_parser("caption", help="caption image files with a trained captioning run")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, SVG, ...)")
    p.add_argument("--model", required=True, help="run directory (or one of its checkpoint directories)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    add_decoding_args(p)
    p.add_argument("--max-len", type=int, help="longest caption in tokens")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.add_argument("--attention", metavar="OUT.png",
                   help="write the per-word attention figure (several images: OUT_<image name>.png)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_caption)


def cmd_caption(args: argparse.Namespace) -> int:
    from vislang.data.images import load_image
    from vislang.errors import VislangError
    from vislang.inference.caption import CaptionPredictor
    from vislang.viz import attention_figure, save_figure

    if args.beam < 1:
        raise VislangError(f"--beam must be at least 1, got {args.beam}")
    captioner = CaptionPredictor.load(args.model, args.checkpoint, args.device)
    images = [load_image(p) for p in args.images]  # every bad file fails here, before any work
    results = captioner.caption(images, beam=args.beam, max_len=args.max_len, length_penalty=args.length_penalty)
    for path, image, cap in zip(args.images, images, results):
        if args.attention and cap.attention is not None:
            out = Path(args.attention)
            if len(args.images) > 1:
                out = out.with_name(f"{out.stem}_{Path(path).stem}{out.suffix or '.png'}")
            h, w = cap.attention.shape[1:]
            save_figure(attention_figure(image, cap.words, cap.attention.flatten(1), (h, w), cap.text), out)
        if args.json:
            print(json.dumps({"image": str(path), "caption": cap.text, "score": round(cap.score, 4)}))
        else:
            print(f"{path}\t{cap.text}")
    return 0
