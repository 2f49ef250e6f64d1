"""Images/s for load + transform on real data: emoji (64 px PNGs) and Tux Paint (large stamps).

vislang's pipeline (``load_image`` + ``build_transform``: EXIF, mode conversion with alpha compositing,
shorter-side resize with Pillow's reducing gap, centre crop, tensor, normalise) is timed against a plain
peer in the same process: ``Image.open(...).convert("RGB").resize((S, S))`` then NumPy -> torch and
normalise, which does less (no compositing: transparent pixels go black; aspect ratio not kept).
Each figure is the median of several runs over the same files; the DataLoader rows time whole epochs
with 0 and 2 workers.

    python bench/data.py [--root DATA_ROOT] [--runs 5] [--size 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from PIL import Image

from vislang.data import load_dataset
from vislang.data.images import load_image
from vislang.data.loader import ImageTextSamples, build_loader
from vislang.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TransformConfig, build_transform
from vislang.utils.io import format_table


def peer_pipeline(size: int):
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def run(path: str) -> torch.Tensor:
        im = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float().div_(255.0)
        return (x - mean) / std

    return run


def time_images(fn, paths: list[str], runs: int) -> float:
    """Median images/s of ``fn`` over all ``paths``."""
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for p in paths:
            fn(p)
        rates.append(len(paths) / (time.perf_counter() - t0))
    return statistics.median(rates)


def time_loader(records, size: int, workers: int, runs: int) -> float:
    samples = ImageTextSamples(records, build_transform(TransformConfig(image_size=size), train=True),
                               unit="image")
    loader = build_loader(samples, 64, shuffle=True, workers=workers)
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        n = sum(len(b["image"]) for b in loader)
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", help="data root")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--limit", type=int, default=2000, help="images per data set")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    # The peer converts palette images with transparency straight to RGB, which Pillow warns about.
    warnings.filterwarnings("ignore", message="Palette images with Transparency")
    rows = []
    for name, split in (("emoji", "train"), ("tuxpaint", "test")):
        ds = load_dataset(name, split, root=args.root)
        records = ds.records[: args.limit]
        paths = [r.image for r in records]
        px = [Image.open(p).size for p in paths]
        kpx = statistics.mean(w * h for w, h in px) / 1e3
        tf = build_transform(TransformConfig(image_size=args.size), train=False)
        ours = time_images(lambda p, tf=tf: tf(load_image(p)), paths, args.runs)
        peer = time_images(peer_pipeline(args.size), paths, args.runs)
        rows.append([f"{name} load+transform", len(paths), f"{kpx:.1f}", round(ours), round(peer),
                     f"{ours / peer:.2f}"])
        for workers in (0, 2):
            rate = time_loader(records, args.size, workers, max(2, args.runs // 2))
            rows.append([f"{name} DataLoader train aug, {workers} workers", len(paths), f"{kpx:.1f}",
                         round(rate), "", ""])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, output {args.size}x{args.size}")
    print(format_table(rows, ("pipeline", "images", "mean kpx", "vislang img/s", "peer img/s", "ratio")))


if __name__ == "__main__":
    main()
