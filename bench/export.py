"""Exported models on ONNX Runtime against the eager PyTorch models, in one process, on the same inputs.

Each model (random weights: latency does not depend on training) is exported with
:func:`vislang.export.export_model` (which checks its graphs against the eager model) and run behind the
stand-ins :func:`vislang.load` uses for an exported folder, so both sides run the same Python around the
network (beam search of :func:`vislang.tasks.caption.decode_batch`, batching, masks):

- caption: ``caption_lstm`` and ``caption_transformer`` (small CNN, 64 px, vocabulary 2,000), beam search of
  width 3 over at most 16 tokens, batches of 1 and 32 images (both sides emit the same tokens; checked);
- embedding: ``dual_encoder`` (small CNN + text Transformer), 64 images, and 64 texts of 12 tokens;
- VQA: ``vqa`` (small CNN + GRU + attention fusion, 500 answers), 5 questions about 1 image, and 64
  questions about 64 images.

torch and ONNX Runtime both get ``--threads`` intra-op threads (2 by default); each figure is the median of
``--runs`` timed calls after a warm-up call, the eager and ONNX calls taken in turns (so that load from other
processes falls on both); the load average is printed with the table.

    python bench/export.py [--runs 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile

import torch
from timing import median_time

from vislang.export import export_model
from vislang.inference.runtime import (
    ExportedCaptioner,
    ExportedDualEncoder,
    ExportedFusionModel,
    open_graph,
)
from vislang.models import create_model
from vislang.tasks.caption import decode_batch
from vislang.utils.io import format_table

SIZE = 64


def exported(model: torch.nn.Module, cls: type, folder: str, threads: int, **kw) -> tuple[torch.nn.Module, float]:
    """The ONNX Runtime stand-in of ``model`` and the largest difference the exporter measured."""
    manifest = export_model(model, folder, fmt="onnx", image_size=SIZE, **kw)
    graphs = {n: open_graph(folder, e, "onnx", threads) for n, e in manifest["graphs"].items()}
    return cls(graphs, manifest, {}), max(g["max_abs_diff"] for g in manifest["graphs"].values())


def row(what: str, batch: str, eager, onnx, runs: int, diff: float) -> list:
    """Median times of ``eager`` and ``onnx``, timed in turns (one call each, ``runs`` times) so that both see
    the same load from other processes."""
    t_eager, t_onnx = [], []
    with torch.inference_mode():
        for _ in range(runs):
            t_eager.append(median_time(eager, 1, warmup=0 if t_eager else 1))
            t_onnx.append(median_time(onnx, 1, warmup=0 if t_onnx else 1))
    t_eager, t_onnx = statistics.median(t_eager), statistics.median(t_onnx)
    return [what, batch, f"{t_eager * 1000:.1f}", f"{t_onnx * 1000:.1f}", f"{t_eager / t_onnx:.2f}x", f"{diff:.1e}"]


def caption_rows(name: str, runs: int, threads: int) -> list[list]:
    torch.manual_seed(0)
    model = create_model(name).eval()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        onnx, diff = exported(model, ExportedCaptioner, d, threads, model_name=name)
        for b in (1, 32):
            x = torch.randn(b, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(b))
            with torch.inference_mode():
                assert decode_batch(model, x, 3, 16).tokens == decode_batch(onnx, x, 3, 16).tokens
            rows.append(row(f"caption {name}, beam 3", str(b), lambda m=model, x=x: decode_batch(m, x, 3, 16),
                            lambda m=onnx, x=x: decode_batch(m, x, 3, 16), runs, diff))
    return rows


def embedding_rows(runs: int, threads: int) -> list[list]:
    torch.manual_seed(0)
    model = create_model("dual_encoder").eval()
    x = torch.randn(64, 3, SIZE, SIZE)
    ids = torch.randint(4, 2000, (64, 12))
    mask = torch.ones(64, 12, dtype=torch.long)
    mask[::3, 8:] = 0
    with tempfile.TemporaryDirectory() as d:
        onnx, diff = exported(model, ExportedDualEncoder, d, threads, model_name="dual_encoder")
        return [row("embed images, dual_encoder", "64", lambda: model.encode_image(x), lambda: onnx.encode_image(x),
                    runs, diff),
                row("embed texts (12 tokens), dual_encoder", "64", lambda: model.encode_text(ids, mask),
                    lambda: onnx.encode_text(ids, mask), runs, diff)]


def vqa_rows(runs: int, threads: int) -> list[list]:
    torch.manual_seed(0)
    model = create_model("vqa", num_classes=500, text_encoder_kwargs={"vocab_size": 2000}).eval()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        onnx, diff = exported(model, ExportedFusionModel, d, threads, model_name="vqa")
        for images, questions in ((1, 5), (64, 64)):
            x = torch.randn(images, 3, SIZE, SIZE)
            ids = torch.randint(4, 2000, (questions, 10))
            mask = torch.ones(questions, 10, dtype=torch.long)
            mask[::2, 7:] = 0
            index = torch.arange(questions).clamp(max=images - 1)
            rows.append(row("VQA, vqa (attention fusion)", f"{questions} q / {images} img",
                            lambda x=x, i=ids, m=mask, j=index: model(x, i, m, j),
                            lambda x=x, i=ids, m=mask, j=index: onnx(x, i, m, j), runs, diff))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    rows = [*caption_rows("caption_lstm", args.runs, args.threads),
            *caption_rows("caption_transformer", args.runs, args.threads),
            *embedding_rows(args.runs, args.threads), *vqa_rows(args.runs, args.threads)]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, median of {args.runs}; load average after: {load}")
    print(format_table(rows, ("what", "batch", "eager ms", "onnx ms", "speed-up", "max abs diff")))


if __name__ == "__main__":
    main()
