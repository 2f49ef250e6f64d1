"""Fusion strategy throughput: training and inference speed of each strategy alone and inside the VQA model.

(a) The fusion module alone on random features: a batch of ``--batch`` questions, each with an image of
    ``--regions`` regions (8x8 = 64: a 64 px image through ``cnn_small``) of width 256 and a question of 12
    tokens of width 256 (a ``text_gru`` with 128 per direction), joint width 256 (``FusionConfig`` defaults
    otherwise: 4 heads, 2 glimpses, rank 5, depth 2). Inference = forward under ``no_grad`` in eval mode;
    training = forward + backward of the sum of the outputs.
(b) The whole ``vqa`` model (the ``vislang experiment fusion`` parts: narrow CNN, 64 px images, 2x64 GRU,
    joint width 128, one Transformer layer) with each strategy: training questions/s of one AdamW step on 16
    images with 10 questions each (the image encoder runs once per image, as ``task.group_by_image`` does),
    and inference questions/s of 160 questions with one image each.

Everything runs on ``--threads`` torch threads (1 by default); the median of ``--runs`` timed calls after a
warm-up call.

    python bench/fusion.py [--runs 5] [--threads 1] [--batch 64] [--regions 64]
"""

from __future__ import annotations

import argparse
import copy
import platform

import torch
from timing import median_time

from vislang.fusion import ModalityFeatures, create_fusion, list_fusions
from vislang.models import create_model
from vislang.models.encoders import count_parameters
from vislang.tasks.fusion_experiment import SMALL_MODEL
from vislang.utils.io import format_table


def fusion_alone(name: str, b: int, n: int, runs: int) -> list:
    torch.manual_seed(0)
    fusion = create_fusion(name, {"image": 256, "text": 256}, hidden_dim=256)
    grid, tokens = torch.randn(b, n, 256), torch.randn(b, 12, 256)
    mask = torch.ones(b, 12, dtype=torch.bool)
    mask[:, 9:] = False
    feats = {"image": ModalityFeatures(grid, grid.mean(1)), "text": ModalityFeatures(tokens, tokens[:, 0], mask)}

    def infer() -> None:
        with torch.no_grad():
            fusion(feats)

    def train() -> None:
        fusion.zero_grad(set_to_none=True)
        fusion(feats).fused.sum().backward()

    fusion.eval()
    t_inf = median_time(infer, runs)
    fusion.train()
    t_train = median_time(train, runs)
    return [name, count_parameters(fusion), round(b / t_train), round(b / t_inf)]


def whole_model(name: str, runs: int) -> list:
    torch.manual_seed(0)
    kwargs = copy.deepcopy(SMALL_MODEL)
    kwargs["text_encoder_kwargs"]["vocab_size"] = 100
    model = create_model("vqa", fusion=name, num_classes=18, **kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(16, 3, 64, 64)
    tokens = torch.randint(4, 100, (160, 10))
    mask = torch.ones(160, 10, dtype=torch.long)
    index = torch.arange(16).repeat_interleave(10)
    targets = torch.zeros(160, 18)
    targets[:, 0] = 1

    def train() -> None:
        out = model(images, tokens, mask, index)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer() -> None:
        with torch.no_grad():
            model(images[index], tokens, mask)

    model.train()
    t_train = median_time(train, runs)
    model.eval()
    t_inf = median_time(infer, runs)
    return [name, count_parameters(model), round(160 / t_train), round(160 / t_inf)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64, help="questions per batch in (a)")
    ap.add_argument("--regions", type=int, default=64, help="image regions per question in (a)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}")
    names = list(list_fusions())
    print(f"\n(a) fusion module alone: {args.batch} questions x {args.regions} regions x 12 tokens, width 256")
    rows = [fusion_alone(n, args.batch, args.regions, args.runs) for n in names]
    print(format_table(rows, ["fusion", "params", "train q/s", "inference q/s"]))
    print("\n(b) whole vqa model (experiment parts, 64 px): train = 16 images x 10 questions per step, "
          "inference = 160 image-question pairs")
    rows = [whole_model(n, args.runs) for n in names]
    print(format_table(rows, ["fusion", "params", "train q/s", "inference q/s"]))


if __name__ == "__main__":
    main()
