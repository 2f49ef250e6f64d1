"""``vislang ask IMAGE "question"`` (a VQA run) and ``vislang classify IMAGE --text ...`` (an image + text
classifier run)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from vislang.commands.explain import add_explain_option

    p = sub.add_parser("ask", help="answer a question about an image with a trained VQA run",
                       description="Answer questions about an image: the answer, its confidence and the top-k "
                                   "answers; --explain writes where the model looked.")
    p.add_argument("image", help="image file (PNG, JPEG, SVG, ...)")
    p.add_argument("questions", nargs="+", metavar="QUESTION", help="one or more questions")
    p.add_argument("--model", required=True, help="run directory of `vislang train vqa` (or a checkpoint)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--top-k", type=int, default=5, help="answers listed (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object per question")
    add_explain_option(p, "write the image attention map (several questions: OUT_<k>.png); needs an attending "
                          "fusion (attention, bilinear, transformer, ...)", attention_alias=True)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_ask)

    c = sub.add_parser("classify", help="classify an image (with a text) with a trained image + text classifier",
                       description="Classify an image and its text (e.g. an emoji and its tags) with a run of "
                                   "`vislang train classify`; words naming classes are removed from the text as "
                                   "in training.")
    c.add_argument("image", help="image file")
    c.add_argument("--text", default="", help="the text beside the image (tags, a caption, ...)")
    c.add_argument("--model", required=True, help="run directory of `vislang train classify` (or a checkpoint)")
    c.add_argument("--checkpoint", default="best", choices=("best", "last"))
    c.add_argument("--top-k", type=int, default=5)
    c.add_argument("--json", action="store_true", help="print a JSON object")
    add_explain_option(c, "write how much the image and the text each carried the top class (in the title; "
                          "also on stderr, or in the --json object) and where in the image (the fusion's "
                          "attention, else occlusion)")
    c.add_argument("--device", default="auto")
    c.set_defaults(func=cmd_classify)


def _attention_path(base: str, k: int, n: int) -> Path:
    out = Path(base)
    return out if n == 1 else out.with_name(f"{out.stem}_{k}{out.suffix or '.png'}")


def cmd_ask(args: argparse.Namespace) -> int:
    import sys

    from vislang.commands.explain import explain_output
    from vislang.data.images import load_image
    from vislang.errors import VislangError
    from vislang.inference.vqa import VQAPredictor
    from vislang.viz import attention_figure, save_figure

    if args.top_k < 1:
        raise VislangError(f"--top-k must be at least 1, got {args.top_k}")
    figure, option = explain_output(args)
    vqa = VQAPredictor.load(args.model, args.checkpoint, args.device)
    image = load_image(args.image, min_side=vqa.decode_side)  # for the model and the figure (512 px or more)
    answers = vqa.ask(image, args.questions, k=args.top_k)
    for k, a in enumerate(answers):
        for note in a.notes:
            print(f"note: {note}", file=sys.stderr)
        if figure:
            if a.attention is None:
                raise VislangError("this model's fusion has no attention over the image regions (late fusion); "
                                   f"train with --fusion attention, bilinear or transformer for {option}")
            h, w = a.attention.shape
            title = f"{a.question} -> {a.answer} ({a.confidence:.2f})"
            save_figure(attention_figure(image, [a.answer], a.attention.reshape(1, -1), (h, w), title, cell=192,
                                         columns=2), _attention_path(figure, k, len(answers)))
        if args.json:
            print(json.dumps({"image": args.image, **a.to_json()}, ensure_ascii=False))
        else:
            top = ", ".join(f"{ans} {p:.3f}" for ans, p in a.top)
            print(f"{a.question}\t{a.answer}\t{a.confidence:.3f}\ttop-{len(a.top)}: {top}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    import sys

    from vislang.commands.explain import explain_output
    from vislang.data.images import load_image
    from vislang.errors import VislangError
    from vislang.inference.classify import ClassifyPredictor
    from vislang.viz import heatmap_figure, save_figure

    if args.top_k < 1:
        raise VislangError(f"--top-k must be at least 1, got {args.top_k}")
    figure, _ = explain_output(args)
    clf = ClassifyPredictor.load(args.model, args.checkpoint, args.device)
    image = load_image(args.image, min_side=clf.decode_side)  # for the model and the figure (512 px or more)
    top, seen = clf.classify(image, args.text, k=args.top_k)
    if args.text and seen != " ".join(args.text.lower().split()):
        print(f"note: the model reads the text as {seen!r} (class-name words removed, as in training)",
              file=sys.stderr)
    why = clf.explain(image, args.text) if figure else None
    if why is not None:
        weights = ", ".join(f"{m} {w:.2f}" for m, w in why.modality_weights.items())
        save_figure(heatmap_figure(image, why.attention, f"{why.label} ({why.probability:.2f}): {weights}"), figure)
        if not args.json:
            print(f"explain: {why.label}: {weights} ({why.method}); figure: {figure}", file=sys.stderr)
    if args.json:
        out = {"image": args.image, "text": args.text, "label": top[0][0], "confidence": round(top[0][1], 4),
               "top": [{"label": c, "p": round(p, 4)} for c, p in top]}
        if why is not None:
            out["explanation"] = {"label": why.label, "probability": round(why.probability, 4),
                                  "modality_weights": {m: round(w, 4) for m, w in why.modality_weights.items()},
                                  "method": why.method, "grid_hw": list(why.grid_hw), "figure": str(figure)}
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(f"{args.image}\t{top[0][0]}\t{top[0][1]:.3f}\ttop-{len(top)}: "
              + ", ".join(f"{c} {p:.3f}" for c, p in top))
    return 0
