"""``vislang experiment fusion``: train every fusion strategy with the same budget and seed, and compare."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="controlled comparisons (fusion strategies, ...)")
    esub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    f = esub.add_parser(
        "fusion", help="train each fusion strategy on VQA with the same budget and seed; table + plot",
        description="Train the VQA model once per fusion strategy (same parts, data, epochs, batch, learning "
                    "rate and seed), score each on a held-out split per question type with the official VQA "
                    "accuracy beside question-only and image-only baselines; write results.json, table.md "
                    "and fusion.png.")
    f.add_argument("--data", default="shapes", help="dataset: 'shapes' (2000 training scenes at --image-size) or "
                                                    "a spec such as 'shapes:n_train=500,size=32'")
    f.add_argument("--root", help="data root for built-in datasets")
    f.add_argument("--fusions", help="comma-separated strategies (default: late-concat,attention,bilinear,transformer)")
    f.add_argument("--model", default="vqa", help="fusion model (vqa_tiny: a quick smoke run)")
    f.add_argument("--epochs", type=int, default=5)
    f.add_argument("--max-steps", type=int)
    f.add_argument("--batch-size", type=int, default=16, help="images per batch, each with its ~10 questions")
    f.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (warm-up + cosine; default 2e-3)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--image-size", type=int, default=64)
    f.add_argument("--split", default="test", help="held-out split to score (default: test)")
    f.add_argument("--device", default="auto")
    f.add_argument("--image-weights", metavar="RUN",
                   help="start every image encoder from these weights: a run (e.g. `vislang train regions`, with "
                        "the experiment's CNN) or a weights file")
    f.add_argument("--freeze-image", action="store_true", help="keep the image encoder frozen")
    f.add_argument("--out", required=True, help="output folder")
    f.set_defaults(func=cmd_fusion)


def cmd_fusion(args: argparse.Namespace) -> int:
    from vislang.errors import VislangError
    from vislang.fusion import list_fusions
    from vislang.tasks.fusion_experiment import DEFAULT_FUSIONS, FusionExperimentConfig, run_fusion_experiment

    fusions = tuple(s.strip() for s in args.fusions.split(",") if s.strip()) if args.fusions else DEFAULT_FUSIONS
    unknown = [f for f in fusions if f not in list_fusions()]
    if unknown or not fusions:
        raise VislangError(f"unknown fusion(s) {', '.join(unknown) or '(none given)'}; known: "
                           f"{', '.join(list_fusions())}")
    data = args.data
    if data == "shapes":
        data = f"shapes:size={args.image_size}"
    cfg = FusionExperimentConfig(data=data, root=args.root, fusions=fusions, model=args.model, epochs=args.epochs,
                                 max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                 image_size=args.image_size, eval_split=args.split, device=args.device,
                                 image_weights=args.image_weights, freeze_image=args.freeze_image)
    if args.model != "vqa":
        cfg.model_kwargs = {}
    from pathlib import Path

    from vislang.tasks.fusion_experiment import results_table

    results = run_fusion_experiment(cfg, args.out)
    print(results_table(results))
    print(f"best: {results['best']}; results.json, table.md and fusion.png written to {Path(args.out)}")
    return 0
