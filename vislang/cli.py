"""The ``vislang`` command line: ``vislang <command> ...``.

Each command lives in a module of :mod:`vislang.commands` exposing ``register(subparsers)``; the parser
sets ``func`` to a callable taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from vislang.errors import VislangError

COMMAND_MODULES = (
    "vislang.commands.data",
    "vislang.commands.models",
    "vislang.commands.train",
    "vislang.commands.caption",
    "vislang.commands.generate",
    "vislang.commands.evaluate",
    "vislang.commands.demo",
    "vislang.commands.index",
    "vislang.commands.vqa",
    "vislang.commands.experiment",
    "vislang.commands.serve",
    "vislang.commands.export",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every command registered."""
    from vislang import __version__

    parser = argparse.ArgumentParser(prog="vislang", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vislang {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def os_error_message(e: OSError) -> str:
    """One line for an ``OSError``: the file (the target of a rename) and the system's reason."""
    name = e.filename2 if e.filename2 is not None else e.filename
    reason = e.strerror or str(e)
    if name is None:
        return reason
    return f"{os.fsdecode(name) if isinstance(name, (str, bytes)) else name}: {reason}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Errors vislang anticipates (bad data, missing tools) print ``error: ...`` and return 2, as does an
    ``OSError`` (a file that cannot be read or written), in one line naming the file.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VislangError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file no check foresaw: a directory, no permission, a full disk
        print(f"error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
