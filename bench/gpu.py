"""Training throughput on a GPU at realistic sizes, and model FLOPs utilisation (MFU) against the GPU's peak.

For captioning (``caption_lstm``) and retrieval (``dual_encoder``, text tower from scratch), each with a
ResNet-50 image tower at 224 px and batch 128: the task's own ``training_step`` (vislang's ``CaptionTask`` /
``RetrievalTask``: model, loss) plus backward and an AdamW step, on batches already on the GPU (synthetic
images and token ids: this measures the model, not the data pipeline), in three modes:

- ``fp32``: full precision (TF32 matmuls off);
- ``bf16``: bf16 autocast, as ``vislang train --amp bf16`` (the default on CUDA);
- ``bf16+compile``: the same step under ``torch.compile``, as ``vislang train --compile``.

Images/s is the median of ``--steps`` timed steps (CUDA-synchronised) after ``--warmup`` steps. FLOPs per step
come from ``torch.utils.flop_counter.FlopCounterMode`` on one step (forward and backward, matmuls and
convolutions); MFU = FLOPs per second / the GPU's dense peak for the mode's dtype (a table of known GPUs; none
printed for another). Runs on CPU too with small sizes (``--device cpu --size 32 --batch 4``), to check the
script, not to measure.

    python bench/gpu.py [--device cuda] [--size 224] [--batch 128] [--steps 20] [--warmup 5] [--modes ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from vislang.data.text import Vocabulary
from vislang.models.registry import create_model
from vislang.tasks.caption import CaptionTask
from vislang.tasks.retrieval import RetrievalTask
from vislang.utils.io import format_table

#: Dense peak TFLOP/s (no sparsity) by GPU name fragment: (fp32 without tensor cores, bf16 tensor cores).
PEAKS = {"H200": (66.9, 989.4), "H100 SXM": (66.9, 989.4), "H100 PCIe": (51.2, 756.0), "H100": (66.9, 989.4),
         "A100": (19.5, 312.0), "L40S": (91.6, 362.1), "A10G": (31.2, 125.0), "RTX 4090": (82.6, 165.2)}
VOCAB = 5000
LENGTH = 16


def peak_tflops(device: torch.device, mode: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (fp32, bf16) in PEAKS.items():
        if key in name:
            return fp32 if mode == "fp32" else bf16
    return None


def workload(task: str, size: int, batch: int, device: torch.device) -> tuple[torch.nn.Module, Callable, dict]:
    """The model, its task's training step and one batch on ``device``."""
    vocab = Vocabulary(f"w{i}" for i in range(VOCAB - 4))
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=g)
    tokens = torch.randint(4, len(vocab), (batch, LENGTH), generator=g)
    tokens[:, 0], tokens[:, -1] = vocab.bos_id, vocab.eos_id
    if task == "caption":
        model = create_model("caption_lstm", encoder="resnet50", vocab_size=len(vocab), pad_id=vocab.pad_id,
                             bos_id=vocab.bos_id, eos_id=vocab.eos_id)
        step = CaptionTask(vocab, [], None).training_step
        data = {"image": images, "tokens": tokens}
    else:
        model = create_model("dual_encoder", image_encoder="resnet50",
                             text_encoder_kwargs={"vocab_size": len(vocab), "pad_id": vocab.pad_id})
        step = RetrievalTask(vocab, [], None).training_step
        data = {"image": images, "tokens": tokens, "tokens_lengths": torch.full((batch,), LENGTH)}
    data = {k: v.to(device, non_blocking=True) for k, v in data.items()}
    return model.to(device), step, data


def measure(task: str, mode: str, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model, task_step, batch = workload(task, args.size, args.batch, device)
    model.train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode != "fp32")

    def step() -> None:
        with autocast:
            loss = task_step(model, batch)["loss"]
        loss.float().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    run = torch.compile(step) if mode.endswith("compile") else step
    flops_mode = FlopCounterMode(display=False)
    with flops_mode:
        step()  # eager: what the model computes, whatever compile fuses
    flops = flops_mode.get_total_flops()
    compile_start = time.perf_counter()
    for _ in range(args.warmup):
        run()
    sync(device)
    warm = time.perf_counter() - compile_start
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - t)
    sec = statistics.median(times)
    peak = peak_tflops(device, mode)
    achieved = flops / sec / 1e12
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return {"task": task, "mode": mode, "img_s": args.batch / sec, "step_ms": sec * 1000, "tflops": achieved,
            "mfu": achieved / peak if peak else None, "gflop_step": flops / 1e9, "warmup_s": warm, "mem_gib": memory}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--tasks", nargs="+", default=["caption", "retrieval"], choices=["caption", "retrieval"])
    p.add_argument("--modes", nargs="+", default=["fp32", "bf16", "bf16+compile"],
                   choices=["fp32", "bf16", "bf16+compile"])
    p.add_argument("--channels-last", action="store_true", help="channels-last images and conv weights")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}; torch {torch.__version__}; {args.size} px, batch {args.batch}, ResNet-50 image tower, "
          f"{args.steps} timed steps after {args.warmup}", flush=True)
    rows = []
    for task in args.tasks:
        for mode in args.modes:
            r = measure(task, mode, args, device)
            print(f"  {task} {mode}: {r['img_s']:.1f} img/s", flush=True)
            rows.append([r["task"], r["mode"], f"{r['img_s']:.1f}", f"{r['step_ms']:.1f}", f"{r['gflop_step']:.0f}",
                         f"{r['tflops']:.1f}", "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %",
                         f"{r['warmup_s']:.1f}", f"{r['mem_gib']:.1f}"])
    print(format_table(rows, ["task", "mode", "img/s", "ms/step", "GFLOP/step", "TFLOP/s", "MFU", "warm-up s",
                              "peak GiB"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
