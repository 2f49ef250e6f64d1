"""Starting real rank processes as torchrun does (one process per rank with RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT set) and waiting for them with a timeout, for the distributed tests."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

TIMEOUT_S = 120  # each process (a compiling one: 600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    env = {**os.environ, "VISLANG_QUIET": "1", "OMP_NUM_THREADS": "1"}
    if world > 1:
        env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
    return env


def start_ranks(argv: list[str], world: int, logs: Path) -> list[subprocess.Popen]:
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for rank in range(world):
        with open(logs / f"out{rank}", "w") as out, open(logs / f"err{rank}", "w") as err:
            procs.append(subprocess.Popen(argv, env=rank_env(rank, world, port), stdout=out, stderr=err))
    return procs


def wait_ranks(procs: list[subprocess.Popen], logs: Path, ok: bool = True) -> list[int]:
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=600 if "--compile" in p.args else TIMEOUT_S))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a rank ran past {TIMEOUT_S} s: " + rank_logs(logs))
    if ok and any(codes):
        pytest.fail(f"exit codes {codes}: " + rank_logs(logs))
    return codes


def rank_logs(logs: Path) -> str:
    return "\n".join(f"--- {f.name}\n{f.read_text()[-2000:]}" for f in sorted(logs.iterdir()))
