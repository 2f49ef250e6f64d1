"""Peak memory of `vislang index build` and `vislang caption` on large images, against the number of images.

Writes ``--distinct`` different 8000×8000 RGB PNGs (a few coloured shapes on white: ≈ 200 KB each, 64 Mpx,
just under the default pixel limit) and links them under N names for each N of ``--counts``; trains a
tiny retrieval run and a tiny captioning run on the built-in shapes data (a few steps: memory does not
depend on the weights); then runs each command in a fresh process under ``/usr/bin/time -v`` and reports
its peak resident set size (median of ``--runs``) and wall time.

``--pythonpath DIR`` runs another vislang source tree (e.g. ``git archive HEAD | tar -x -C /tmp/head``) with
the same runs and images, for a before / after table. Commands run from the work folder so that the
vislang imported is the one asked for (checked and printed).

    python bench/memory.py [--counts 16 64] [--side 8000] [--runs 1] [--work DIR] [--pythonpath DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from vislang.utils.io import format_table

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"
COLORS = [(220, 30, 30), (30, 160, 60), (40, 60, 230), (240, 220, 30), (130, 40, 160), (250, 140, 20)]


def draw_large(path: Path, side: int, seed: int) -> None:
    """A ``side``×``side`` RGB PNG: a circle, a square and a triangle in colours picked by ``seed``."""
    im = Image.new("RGB", (side, side), "white")
    d = ImageDraw.Draw(im)
    c = [COLORS[(seed + k) % len(COLORS)] for k in range(3)]
    u = side // 8
    d.ellipse((u, u, 3 * u, 3 * u), fill=c[0])
    d.rectangle((5 * u, u, 7 * u, 4 * u), fill=c[1])
    d.polygon([(4 * u, 5 * u), (7 * u, 7 * u), (u, 7 * u)], fill=c[2])
    im.save(path)


def image_folder(work: Path, n: int, originals: list[Path]) -> Path:
    """``work/images_N`` holding ``n`` hard links to the originals in turn."""
    folder = work / f"images_{n}"
    if not folder.is_dir():
        folder.mkdir()
        for i in range(n):
            os.link(originals[i % len(originals)], folder / f"img{i:03d}.png")
    return folder


def vislang(args: list[str], env: dict[str, str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vislang.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, check=check)


def train_runs(work: Path, root: str, env: dict[str, str]) -> tuple[Path, Path]:
    """A tiny retrieval run and a tiny captioning run (trained once, kept in ``work``)."""
    common = ["--data", SHAPES, "--root", root, "--epochs", "1", "--max-steps", "2", "--batch-size", "8",
              "--seed", "0"]
    retr, cap = work / "retrieval_run", work / "caption_run"
    if not (retr / "checkpoints" / "best").is_dir():
        vislang(["train", "retrieval", "--model", "dual_encoder_tiny", *common, "--out", str(retr)], env, work)
    if not (cap / "checkpoints" / "best").is_dir():
        vislang(["train", "caption", "--model", "caption_lstm_tiny", *common, "--out", str(cap)], env, work)
    return retr, cap


def peak_rss(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """``(peak RSS in MB, wall seconds)`` of ``vislang ARGS`` in a new process, from ``/usr/bin/time -v``."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "vislang.cli", *args]
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(args)}\n{res.stderr[-2000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", res.stderr)
    assert rss and wall, res.stderr[-2000:]
    h, m, s = wall.groups()
    return int(rss.group(1)) / 1024, int(h or 0) * 3600 + int(m) * 60 + float(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[16, 64], help="numbers of images")
    ap.add_argument("--side", type=int, default=8000, help="image side in pixels (default 8000)")
    ap.add_argument("--distinct", type=int, default=4, help="different images drawn (the rest are links)")
    ap.add_argument("--runs", type=int, default=1, help="runs per command (median)")
    ap.add_argument("--work", help="work folder (kept; default: a temporary one, removed)")
    ap.add_argument("--root", help="data root for the shapes data (default: $VISLANG_DATA or in the work folder)")
    ap.add_argument("--pythonpath", help="vislang source tree to run instead of the installed one")
    ap.add_argument("--commands", nargs="+", default=["index", "caption"], choices=("index", "caption"))
    args = ap.parse_args()
    if not Path("/usr/bin/time").is_file():
        raise SystemExit("needs /usr/bin/time (GNU time: apt-get install time)")

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vislang-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "VISLANG_QUIET": "1"}
    if args.pythonpath:
        env["PYTHONPATH"] = str(Path(args.pythonpath).resolve())
    root = args.root or os.environ.get("VISLANG_DATA") or str(work / "data")
    try:
        where = vislang_file(env, work)
        print(f"vislang from {where}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
        retr, cap = train_runs(work, root, env)
        originals = []
        for k in range(args.distinct):
            p = work / f"original_{args.side}_{k}.png"
            if not p.is_file():
                draw_large(p, args.side, k)
            originals.append(p)
        size_kb = statistics.mean(p.stat().st_size for p in originals) / 1024
        rows = []
        for n in args.counts:
            folder = image_folder(work, n, originals)
            files = [str(p) for p in sorted(folder.glob("*.png"))]
            jobs = {"index": ["index", "build", "--model", str(retr), "--images", str(folder), "-o",
                              str(work / f"index_{n}"), "--force"],
                    "caption": ["caption", *files, "--model", str(cap)]}
            for name in args.commands:
                runs = [peak_rss(jobs[name], env, work) for _ in range(args.runs)]
                rss, wall = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
                rows.append([f"vislang {jobs[name][0]}{' build' if name == 'index' else ''}", n, f"{rss:,.0f}",
                             f"{wall:.1f}"])
        print(f"{args.side}x{args.side} RGB PNG, {size_kb:,.0f} KB each; median of {args.runs} run(s)")
        print(format_table(rows, ("command", "images", "peak RSS MB", "wall s")))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def vislang_file(env: dict[str, str], cwd: Path) -> str:
    """Where the vislang that the commands import lives."""
    res = subprocess.run([sys.executable, "-c", "import vislang; print(vislang.__file__)"], env=env, cwd=cwd,
                         capture_output=True, text=True, check=True)
    return res.stdout.strip()


if __name__ == "__main__":
    main()
