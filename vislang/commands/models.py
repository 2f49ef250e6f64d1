"""``vislang models [PATTERN]``: the registered models, their families and descriptions."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models (image encoders, captioners, ...)")
    p.add_argument("pattern", nargs="?", default="*", help="glob pattern, e.g. '*tiny*' or 'caption_*'")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from vislang.models.registry import describe_model, list_models, model_family
    from vislang.utils.io import format_table

    rows = [[n, model_family(n) or "-", describe_model(n)] for n in list_models(args.pattern)]
    print(format_table(rows, ("name", "family", "description")))
    return 0
