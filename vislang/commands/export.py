"""``vislang export RUN_OR_FOLDER --format onnx|torch-export -o OUT``: a trained model's graphs (image and text
towers, fusion model, captioner encoder + one decoding step, UNet step), each checked against the eager model,
in a folder usable on its own: ``vislang.load(OUT, runtime="onnx")``, ``vislang serve --runtime onnx OUT``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained model to ONNX or torch.export (the 'onnx' extra)",
                       description=__doc__.splitlines()[0].replace("``", "`"))
    p.add_argument("model", metavar="RUN_OR_FOLDER", help="a run directory or model folder")
    p.add_argument("--format", default="onnx", help="onnx (default) or torch-export")
    p.add_argument("-o", "--out", required=True, help="the folder to write (new, empty, or an earlier export)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--tolerance", type=float, default=None, metavar="ABS",
                   help="largest accepted absolute difference from the eager model (default 1e-4, fp32)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vislang.errors import VislangError
    from vislang.inference.runtime import FORMATS

    if args.format not in FORMATS:
        raise VislangError(f"unknown --format {args.format!r}; use one of {', '.join(FORMATS)}")
    if not Path(args.model).exists():
        raise VislangError(f"{args.model}: no such run or model folder")
    if args.format == "onnx":
        for module, extra in (("onnx", "onnx"), ("onnxscript", "onnxscript"), ("onnxruntime", "onnxruntime")):
            try:
                __import__(module)
            except ImportError:
                raise VislangError(f"--format onnx needs {extra}: pip install 'vislang[onnx]'") from None
    from vislang.export import TOLERANCE, export_folder

    tolerance = TOLERANCE if args.tolerance is None else args.tolerance
    manifest = export_folder(args.model, args.out, fmt=args.format, checkpoint=args.checkpoint,
                             tolerance=tolerance)
    for name, g in manifest["graphs"].items():
        print(f"{Path(args.out) / g['file']}: {name} graph, inputs {', '.join(g['inputs'])}; max abs diff from "
              f"the eager model {g['max_abs_diff']:.1e} (batch 5, other lengths)")
    print(f"{args.out}: {manifest['model']} ({manifest.get('task')}) exported; vislang.load({str(args.out)!r}, "
          f"runtime={args.format!r})")  # each format's runtime has its name
    return 0
