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
    _add_split_args(run, "caption", "dataset name (emoji, tuxpaint, ...) or manifest / COCO / Karpathy file",
                    "folder image names in COCO / Karpathy files are relative to")
    run.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    run.add_argument("--length-penalty", type=float, default=0.0, metavar="P",
                     help="beam search ranks captions by log-probability / length ** P (default 0: the plain sum, "
                          "which favours short captions; 1: the mean per token)")
    run.add_argument("--limit", type=int, help="evaluate only the first N images")
    run.add_argument("--skip-bad", action="store_true", help="leave out images that are missing or unreadable")
    run.add_argument("--no-baselines", action="store_true", help="score only the model")
    run.add_argument("--java", action="store_true", help="also compute METEOR/SPICE through their jars (needs Java)")
    run.add_argument("--out", type=Path, help="output folder (default: <run>/eval/<data>_<split>)")
    run.set_defaults(func=run_caption_model)

    ret = sub.add_parser(
        "retrieval", help="score a trained retrieval run on a dataset split (recall at K, zero-shot accuracy)",
        description="Rank a split's images for each caption (text->image) and its captions for each image "
                    "(image->text) with a run's best checkpoint; report R@1/5/10 and median/mean rank, and "
                    "zero-shot classification accuracy by prompts made from the labels.")
    _add_split_args(ret, "retrieval", "dataset name (emoji, tuxpaint, ...) or manifest / COCO / Karpathy file",
                    "folder image names in COCO / Karpathy files are relative to")
    ret.add_argument("--captions", choices=("all", "first"), default="all",
                     help="text queries: every caption (default) or each image's first caption")
    ret.add_argument("--gallery-key", default="vendor",
                     help="record field splitting the images into separately ranked galleries (default: vendor, "
                          "the emoji art style; 'none': one gallery)")
    ret.add_argument("--template", default="a {label} emoji",
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
    ret.set_defaults(func=run_retrieval_model)

    vqa = sub.add_parser(
        "vqa", help="score a trained VQA run on a split beside question-only and image-only baselines",
        description="Answer every question of a split with a run's best checkpoint and score the answers with the "
                    "official VQA accuracy, overall and per question type, beside the question-only (image "
                    "blanked; and the train-majority answer per question) and image-only (question blanked) "
                    "baselines.")
    _add_split_args(vqa, "vqa", "dataset name (shapes, ...), manifest or VQA v2 questions JSON",
                    "folder image names in VQA / COCO files are relative to")
    vqa.add_argument("--limit", type=int, help="evaluate only the first N images")
    vqa.add_argument("--batch-size", type=int, default=256)
    vqa.add_argument("--skip-bad", action="store_true", help="leave out images that are missing or unreadable")
    vqa.add_argument("--no-baselines", action="store_true", help="score only the model")
    vqa.add_argument("--device", default="auto")
    vqa.add_argument("--out", type=Path, help="output folder (default: <run>/eval/<data>_<split>)")
    vqa.set_defaults(func=run_vqa_model)

    cls = sub.add_parser(
        "classify", help="score a trained image + text classifier: accuracy, macro-F1, confusion matrix PNG",
        description="Classify every record of a split with a run's best checkpoint; report accuracy and macro-F1 "
                    "beside the text-only (image blanked), image-only (text blanked) and majority-class "
                    "baselines, and draw the confusion matrix.")
    _add_split_args(cls, "classify", "dataset name (emoji, shapes, ...) or manifest with labels",
                    "folder image names are relative to")
    cls.add_argument("--limit", type=int, help="evaluate only the first N images")
    cls.add_argument("--batch-size", type=int, default=256)
    cls.add_argument("--skip-bad", action="store_true", help="leave out images that are missing or unreadable")
    cls.add_argument("--no-baselines", action="store_true", help="score only the model")
    cls.add_argument("--device", default="auto")
    cls.add_argument("--out", type=Path, help="output folder (default: <run>/eval/<data>_<split>)")
    cls.set_defaults(func=run_classify_model)


def _add_split_args(p: argparse.ArgumentParser, command: str, data_help: str, image_root_help: str) -> None:
    """The arguments every ``evaluate TASK`` of a trained run takes: the run and the data split to score."""
    p.add_argument("--model", required=True, help=f"run directory of `vislang train {command}`")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--split", help="split to evaluate (default: the dataset's default split)")
    p.add_argument("--root", help="data root for built-in datasets")
    p.add_argument("--image-root", help=image_root_help)


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

    out = _eval_dir(args)
    ev = evaluate_captioner(args.model, args.data, args.split, beam=args.beam,
                            length_penalty=args.length_penalty, root=args.root,
                            image_root=args.image_root, limit=args.limit, skip_bad=args.skip_bad,
                            use_java=args.java, baselines=not args.no_baselines, out_dir=out)
    print(f"{ev.split}: {ev.n_images} images, beam {args.beam}"
          + (f", length penalty {args.length_penalty:g}" if args.beam > 1 and args.length_penalty else ""))
    print(ev.table())
    for name, reason in ev.unavailable.items():
        print(f"{name} unavailable: {reason}")
    print(f"results, references and scores written to {out}")
    return 0


def run_retrieval_model(args: argparse.Namespace) -> int:
    """Score a retrieval run on a split, print the table, write scores.json."""
    from vislang.tasks.retrieval_eval import evaluate_retriever

    out = _eval_dir(args)
    gallery_key = None if args.gallery_key.lower() in ("", "none") else args.gallery_key
    ev = evaluate_retriever(args.model, args.data, args.split, root=args.root, image_root=args.image_root,
                            captions=args.captions, gallery_key=gallery_key, template=args.template,
                            zero_shot=not args.no_zero_shot, limit=args.limit, skip_bad=args.skip_bad,
                            batch_size=args.batch_size, out_dir=out, gallery_size=args.gallery_size,
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


def _eval_dir(args: argparse.Namespace) -> Path:
    slug = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(args.data).name)
    return args.out or Path(args.model) / "eval" / f"{slug}_{args.split or 'default'}"


def run_vqa_model(args: argparse.Namespace) -> int:
    """Score a VQA run and its baselines on a split, print the table, write scores.json."""
    from vislang.tasks.vqa_eval import evaluate_vqa_model

    out = _eval_dir(args)
    ev = evaluate_vqa_model(args.model, args.data, args.split, root=args.root, image_root=args.image_root,
                            limit=args.limit, skip_bad=args.skip_bad, baselines=not args.no_baselines,
                            batch_size=args.batch_size, device=args.device, out_dir=out)
    print(f"{ev.split}: {ev.n_questions} questions; official VQA accuracy")
    print(ev.table())
    print(f"scores written to {out / 'scores.json'}")
    return 0


def run_classify_model(args: argparse.Namespace) -> int:
    """Score a classifier run and its baselines on a split, print the table, write scores and the confusion PNG."""
    from vislang.tasks.classify import evaluate_classifier_model

    out = _eval_dir(args)
    ev = evaluate_classifier_model(args.model, args.data, args.split, root=args.root, image_root=args.image_root,
                                   limit=args.limit, skip_bad=args.skip_bad, baselines=not args.no_baselines,
                                   batch_size=args.batch_size, device=args.device, out_dir=out)
    print(f"{ev.split}: {ev.n_samples} samples, {ev.n_classes} classes")
    print(ev.table())
    print(f"scores and confusion matrix (confusion.png) written to {out}")
    return 0
