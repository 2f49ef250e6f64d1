"""``vislang demo``: the main job on the built-in data.

For now it builds the real emoji image-text data set and prints its summary; captioning turns it into
the end-to-end train / evaluate / report demo.
"""

from __future__ import annotations

import argparse
import time

from vislang.commands.data import add_root_arg, print_summary
from vislang.data import load_dataset, prepare_dataset


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build the emoji data set and show what is in it")
    add_root_arg(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = prepare_dataset("emoji", args.root)
    print(f"emoji data set ready in {out} ({time.perf_counter() - t0:.1f} s)\n")
    print_summary("emoji", args.root)
    train = load_dataset("emoji", "train", root=args.root)
    print("\nA few training pairs:")
    for rec in train.records[:: max(1, len(train) // 5)][:5]:
        print(f"  {rec.meta.get('vendor', ''):8s} {rec.id:24s} {' | '.join(rec.captions)}")
    return 0
