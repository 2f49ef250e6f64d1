"""What DistributedDataParallel costs on CPU: the one training loop at one global batch, run three ways.

(a) plain: one process, 2 threads, batch B (no process group);
(b) DDP, 1 rank: one process in a gloo group of one (``torchrun --nproc-per-node 1``), 2 threads, batch B;
(c) DDP, 2 ranks: two processes of 1 thread each, B/2 each (``torchrun --nproc-per-node 2``).

Each is the real ``vislang train retrieval`` command (the retrieval recipe's model, ``dual_encoder`` with a
trained-from-scratch text tower, on the shapes images at 64 px), started as its own processes with the
environment torchrun would give them, ``--runs`` times in turn (a, b, c, a, b, c, ...). Reported: training
images/s (median over the log windows after the first, then median over runs) and its ratio to (a), and the
bytes all-reduced per optimiser step (the gradients of the trainable parameters, plus the two statistics
all-reduces of each synchronised BatchNorm layer).

A 2-core machine cannot show a speed-up from 2 ranks: (c) splits the same two cores between two processes,
and pays the gradient all-reduce and BatchNorm synchronisation on top.

    python bench/distributed.py [--root DATA_ROOT] [--runs 3] [--steps 40] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from vislang.data.cache import data_root
from vislang.train import load_model
from vislang.utils.io import format_table

SHAPES = "shapes:n_train=2000,n_val=32,n_test=32,size=64"
MODEL = ["--model", "dual_encoder", "--text-encoder", "scratch", "--image-size", "64"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, root: str, world: int | None, batch: int, steps: int, threads: int) -> float:
    """Train once; the median images/s of the log windows after the first."""
    argv = [sys.executable, "-m", "vislang", "train", "retrieval", "--data", SHAPES, "--root", root, *MODEL,
            "--batch-size", str(batch), "--max-steps", str(steps), "--epochs", "100", "--seed", "0",
            "--out", str(out), "--set", "train.log_every=5", "--set", "train.eval_every=100"]
    port = free_port()
    procs = []
    for rank in range(world or 1):
        env = {**os.environ, "VISLANG_QUIET": "1", "OMP_NUM_THREADS": str(threads)}
        if world is not None:
            env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port))
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=900)
        if p.returncode:
            raise SystemExit(f"training failed ({p.returncode}): {err[-2000:]}")
    rates = [e["images_per_s"] for e in map(json.loads, (out / "log.jsonl").read_text().splitlines())
             if e.get("kind") == "train"]
    return statistics.median(rates[1:])


def allreduce_bytes(model: nn.Module) -> tuple[int, int]:
    """Bytes of the gradient all-reduce and of the BatchNorm statistics all-reduces, per micro-batch."""
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    bn = sum((2 * m.num_features + 1) * 4 + m.num_features * 4 for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm))
    return grads, bn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="data root (default $VISLANG_DATA or the cache)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=64, help="global batch")
    args = p.parse_args(argv)
    root = str(data_root(args.root))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"global batch {args.batch}, {args.steps} steps, {args.runs} runs each", flush=True)
    ways = {"plain loop, 1 process x 2 threads": (None, args.batch, 2),
            "DDP, 1 rank x 2 threads": (1, args.batch, 2),
            "DDP, 2 ranks x 1 thread": (2, args.batch // 2, 1)}
    rates: dict[str, list[float]] = {k: [] for k in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for name, (world, batch, threads) in ways.items():
                rates[name].append(launch(Path(tmp) / f"{run}-{len(rates[name])}-{world}", root, world, batch,
                                          args.steps, threads))
                print(f"  run {run + 1}: {name}: {rates[name][-1]:.1f} img/s", flush=True)
        grads, bn = allreduce_bytes(load_model(next(Path(tmp).iterdir()) / "checkpoints" / "last"))
    base = statistics.median(rates["plain loop, 1 process x 2 threads"])
    rows = [[name, f"{statistics.median(r):.1f}", f"{statistics.median(r) / base:.3f}"] for name, r in rates.items()]
    print(format_table(rows, ["way", "train img/s (median)", "vs plain"]))
    print(f"all-reduced per optimiser step: gradients {grads / 1e6:.2f} MB (every trainable parameter, fp32), "
          f"BatchNorm statistics {bn / 1e3:.1f} kB per micro-batch (forward) and as much again in backward")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
