"""The README's command-line screen stays true: every ``vislang ...`` line parses with the real CLI, and a
training line's settings (``--config``, ``--set``, flags) resolve into the task's config without an error."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vislang.cli import build_parser
from vislang.commands.train import run_config

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """Every ``vislang ...`` command in the README's bash blocks (continuation lines joined, comments cut)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("vislang "):
                commands.append(line)
    return commands


def test_the_readme_shows_commands():
    commands = readme_commands()
    assert len(commands) >= 15
    verbs = {c.split()[1] for c in commands}
    assert {"train", "evaluate", "caption", "ask", "classify", "search", "index", "data", "models"} <= verbs


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command, monkeypatch):
    monkeypatch.chdir(ROOT)  # the README's paths (configs/...) are relative to the repository
    argv = shlex.split(command)[1:]
    args = build_parser().parse_args(argv)
    assert callable(args.func)
    if argv[0] == "train":
        cfg = run_config(args.task_spec.config, args)  # resolves --config, --set and the flags
        assert cfg.train.epochs >= 1
