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


def readme_torchrun_lines() -> list[str]:
    """The README's ``torchrun`` commands (continuation lines joined)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
            for line in block.replace("\\\n", " ").splitlines() if line.strip().startswith("torchrun ")]


def test_the_readme_shows_a_one_node_and_a_two_node_torchrun_command():
    lines = readme_torchrun_lines()
    assert any("--standalone" in line for line in lines) and any("--nnodes 2" in line for line in lines)
    commands = set()
    for line in lines:  # what torchrun runs is a vislang command line this CLI accepts
        argv = shlex.split(line)
        rest = argv[argv.index("vislang") + 1:]
        commands.add(rest[0])
        assert callable(build_parser().parse_args(rest).func)
    assert commands == {"train", "evaluate", "index"}


@pytest.mark.slow
def test_the_readme_one_node_torchrun_commands_run_as_written(data_root, tmp_path):
    """The one-node commands (train, evaluate, index), as written and in order, on this 2-core machine (torchrun
    is ``python -m torch.distributed.run``)."""
    import os
    import subprocess
    import sys

    lines = [c for c in readme_torchrun_lines() if "--standalone" in c]
    env = {**os.environ, "VISLANG_DATA": str(data_root), "VISLANG_QUIET": "1", "OMP_NUM_THREADS": "1"}
    said = []
    for line in lines:
        argv = [sys.executable, "-m", "torch.distributed.run", *shlex.split(line)[1:]]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, line + "\n" + proc.stderr[-3000:]
        said.append(proc.stdout)
    train, evaluate, index = said
    assert train.count("run: runs/ddp") == 1  # rank 0 alone reports
    assert (tmp_path / "runs" / "ddp" / "checkpoints" / "best" / "model.safetensors").exists()
    assert evaluate.count("scores written to") == 1
    assert (tmp_path / "runs" / "ddp" / "eval" / "shapes_test" / "scores.json").exists()
    assert index.count("index: runs/ddp.index") == 1 and (tmp_path / "runs" / "ddp.index" / "index.json").exists()
