"""Captioning speed: vislang's ``caption_lstm`` against a Hugging Face ``VisionEncoderDecoderModel`` of
similar size, in one process, at the same sizes.

Sizes (the issue's): 64x64 images; vislang: small CNN giving an 8x8x256 feature map, embedding 256, LSTM
hidden 512, attention 256; Hugging Face: ViT (image 64, patch 8 -> 8x8 patches, hidden 256, 4 layers) +
GPT-2 (n_embd 256, 4 layers, cross-attention); vocabulary 2,000, 16 tokens, batch 32, 2 threads, float32.
Both models are randomly initialised; decoding runs exactly 16 steps (EOS suppressed until then:
``min_len`` / ``min_new_tokens``) so both do the same amount of work.

Reported (median of ``--runs``): training images/s (forward + backward + AdamW step), greedy latency at
batch 32 and batch 1, beam-3 latency at batch 1, and training MFU: model FLOPs per training step counted by
``torch.utils.flop_counter`` over the measured float32 matmul rate of this machine.

    python bench/caption.py [--runs 7]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from timing import median_time
from torch.utils.flop_counter import FlopCounterMode

from vislang.decoding import beam_search, greedy
from vislang.losses import CaptionLoss
from vislang.models import create_model
from vislang.utils.io import format_table

V, T, B, S = 2000, 16, 32, 64


def matmul_flops(runs: int) -> float:
    """Measured float32 matmul rate (FLOP/s) at 2048^3."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    return 2 * 2048**3 / median_time(lambda: a @ b, runs, warmup=2)


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def build_vislang():
    model = create_model("caption_lstm", vocab_size=V, embed_dim=256, hidden_dim=512, attention_dim=256,
                         dropout=0.0)
    loss_fn = CaptionLoss(pad_id=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step(images, tokens):
        out = model(images, tokens)
        loss = loss_fn(out.logits, tokens[:, 1:], out.attention)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def fwd_bwd(images, tokens):
        out = model(images, tokens)
        loss_fn(out.logits, tokens[:, 1:], out.attention)["loss"].backward()

    def greedy_fn(images):
        return greedy(model, images, max_len=T, min_len=T)

    def beam_fn(images):
        return beam_search(model, images, beam_size=3, max_len=T, min_len=T)

    return model, train_step, fwd_bwd, greedy_fn, beam_fn


def build_hf():
    from transformers import GPT2Config, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

    enc = ViTConfig(image_size=S, patch_size=8, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=1024)
    dec = GPT2Config(vocab_size=V, n_embd=256, n_layer=4, n_head=4, n_positions=64, add_cross_attention=True,
                     is_decoder=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 1, 0, 2
    model = VisionEncoderDecoderModel(config=cfg)
    model.generation_config.decoder_start_token_id = 1
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def fwd_bwd(images, tokens):
        model(pixel_values=images, labels=tokens[:, 1:]).loss.backward()

    def train_step(images, tokens):
        loss = model(pixel_values=images, labels=tokens[:, 1:]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def gen(images, beams):
        return model.generate(pixel_values=images, max_new_tokens=T, min_new_tokens=T, num_beams=beams,
                              do_sample=False)

    return model, train_step, fwd_bwd, (lambda x: gen(x, 1)), (lambda x: gen(x, 3))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    images, images1 = torch.randn(B, 3, S, S), torch.randn(1, 3, S, S)
    tokens = torch.randint(3, V, (B, T + 1))
    tokens[:, 0] = 1
    peak = matmul_flops(args.runs)
    rows, results = [], {}
    for name, build in (("vislang caption_lstm", build_vislang), ("HF ViT+GPT-2", build_hf)):
        model, train_step, fwd_bwd, greedy_fn, beam_fn = build()
        params = sum(p.numel() for p in model.parameters())
        model.train()
        step_s = median_time(lambda ts=train_step: ts(images, tokens), args.runs, warmup=2)
        flops = count_flops(lambda fb=fwd_bwd: fb(images, tokens))
        model.zero_grad(set_to_none=True)
        model.eval()
        with torch.no_grad():
            g32 = median_time(lambda g=greedy_fn: g(images), args.runs, warmup=2)
            g1 = median_time(lambda g=greedy_fn: g(images1), args.runs, warmup=2)
            b1 = median_time(lambda b=beam_fn: b(images1), args.runs, warmup=2)
        results[name] = (B / step_s, g32, g1, b1)
        rows.append([name, f"{params / 1e6:.2f}M", f"{B / step_s:.1f}", f"{g32 * 1e3:.1f}", f"{g1 * 1e3:.1f}",
                     f"{b1 * 1e3:.1f}", f"{flops / B / 1e9:.3f}", f"{100 * flops / step_s / peak:.1f}%"])
    (ours, hf) = results.values()
    rows.append(["ratio vislang / HF", "", f"{ours[0] / hf[0]:.2f}x", f"{ours[1] / hf[1]:.2f}x",
                 f"{ours[2] / hf[2]:.2f}x", f"{ours[3] / hf[3]:.2f}x", "", ""])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32 matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s; batch {B}, {S}x{S} images, {T} tokens, vocab {V}")
    print(format_table(rows, ["model", "params", "train img/s", "greedy b32 ms", "greedy b1 ms", "beam3 b1 ms",
                              "train GFLOP/img", "train MFU"]))


if __name__ == "__main__":
    main()
