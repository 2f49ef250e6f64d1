"""Generation speed: vislang's sampling and training loop for ``diffusion_unet`` against a plain diffusers
loop over the same UNet, in one process.

Sampling: ``GeneratePredictor.generate_tensor`` (16 prompts, 50 DDIM steps, guidance 3: each step runs the
UNet on 32 images, the conditional and unconditional halves) against a hand-written loop with diffusers'
``DDIMScheduler`` calling the same EMA UNet object with the same text states and starting noise (classifier-
free guidance by batch concatenation); their images must agree within 1e-3 (else the script exits 1).
Images/s from the median of ``--runs`` calls (after a 2-step warm-up call).

Training: vislang's one loop (``vislang.train.fit`` with the generate task's ``GenerateTask``: caption
dropout, ``DDPMScheduler.add_noise``, min-SNR-weighted noise-prediction MSE, gradient clipping, AdamW,
warm-up + cosine schedule, EMA) against a plain PyTorch + diffusers loop doing the same (``DataLoader``,
``add_noise``, UNet, the same loss, ``clip_grad_norm_``, AdamW, ``get_cosine_schedule_with_warmup``,
diffusers' ``EMAModel`` with ``foreach``) on a copy of the UNet, both on the same in-memory images (smooth
random pictures, nothing to decode) and captions at batch 32. The locked text tower's states are computed
once before timing: vislang's per-caption cache is warm, as after a run's first epoch; the plain loop indexes
a precomputed table. Each of ``--repeats`` runs does 3 warm-up + ``--steps`` measured optimiser steps of
each; images/s from the median step.

The two sides alternate step by step, so that changes in the machine's load hit both alike: a hook runs one
plain step, timed apart, after each of vislang's optimiser steps (the task's ``after_optimizer_step``) and
before each of vislang's UNet calls when sampling (a forward pre-hook on the EMA UNet). A vislang training
step is one whole cycle of its loop (logging, the next batch, forward, backward, clipping, AdamW, schedule,
EMA); a sampling call's time leaves out the plain steps run inside it. "Paired steps": the median over
adjacent pairs of the ratio of the two steps' times. Wall time is what counts; CPU time of the process (all
threads) is in the JSON line too, being less sensitive to other processes.

Overhead = 1 - vislang / plain (target: at most 5 %).

    python bench/generate.py [--runs 3] [--repeats 3] [--steps 8] [--threads 2] [--quick]
                             [--skip sample train] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from vislang.data.text import Vocabulary
from vislang.data.transforms import TransformConfig
from vislang.inference.generate import GeneratePredictor
from vislang.models import create_model
from vislang.models.text_encoders import text_tokenizer
from vislang.tasks.base import TrainedModel, get_task, resolved_options
from vislang.tasks.generate import GenerateTask, GenerateTaskConfig, tokenize
from vislang.train import TrainConfig, fit
from vislang.utils.io import format_table

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle", "star")
PLACES = ("on the left", "on the right", "at the top", "in the middle of a white background")
CAPTIONS = [f"a {c} {s} {p}" for c in COLOURS for s in SHAPES for p in PLACES]  # 64 distinct captions
MAX_LEN = 32


@dataclass
class Sizes:
    """What the bench runs (the issue's sizes by default; ``--quick``: a tiny model for a smoke test)."""

    model: str = "diffusion_unet"
    sample_batch: int = 16
    sample_steps: int = 50
    guidance: float = 3.0
    train_batch: int = 32
    warmup: int = 3
    steps: int = 8


QUICK = Sizes(model="diffusion_unet_tiny", sample_batch=4, sample_steps=4, train_batch=8, warmup=2, steps=4)


# ------------------------------------------------------------------------------------------------- setup


def build(sizes: Sizes) -> tuple[nn.Module, object, dict]:
    """The model (seeded), its tokenizer and its builder options. The quick model's tiny text tower is locked
    (random and frozen), like MiniLM in the full one, so both loops can read cached text states."""
    torch.manual_seed(0)
    if sizes.model == "diffusion_unet":
        tokenizer, options = text_tokenizer("minilm", {}), {}
    else:
        tokenizer = Vocabulary.build(CAPTIONS)
        options = {"text_mode": "locked", "text_encoder_kwargs": {"vocab_size": len(tokenizer),
                                                                  "pad_id": tokenizer.pad_id}}
    return create_model(sizes.model, **options), tokenizer, options


@dataclass
class TextTable:
    """Text states of every caption (rows 0..C-1) and of the empty caption (row C), padded."""

    states: Tensor   # (C + 1, L, D)
    mask: Tensor     # (C + 1, L)
    ids: Tensor      # (C + 1, L) token ids
    pooled: Tensor | None  # (C + 1, D) mean token states (the UNet's class embedding input) or None


def text_table(model: nn.Module, tokenizer) -> TextTable:
    """Encode every caption once, through the model (which fills its cache of a locked tower's states)."""
    ids, mask = tokenize(tokenizer, [*CAPTIONS, ""], MAX_LEN)
    with torch.no_grad():
        ctx = model.encode_text(ids, mask)
    pooled = None
    if model.cfg.pooled_text:
        m = ctx.mask.unsqueeze(-1).float()                                   # (C + 1, L, 1)
        pooled = (ctx.states * m).sum(1) / m.sum(1).clamp(min=1.0)          # (C + 1, D)
    return TextTable(ctx.states, ctx.mask, ids, pooled)


def random_images(n: int, size: int, seed: int = 0) -> Tensor:
    """``(n, 3, size, size)`` smooth random pictures in [-1, 1] (upsampled noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, max(2, size // 4), max(2, size // 4), generator=g)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False) * 2.0 - 1.0


# ------------------------------------------------------------------------------------------------ timing

Clock = tuple[float, float]  # wall time, CPU time of the process (all threads), seconds


def clock() -> Clock:
    """Wall time and this process's CPU time."""
    return time.perf_counter(), time.process_time()


def since(start: Clock) -> Clock:
    """Wall and CPU seconds from ``start`` to now."""
    now = clock()
    return now[0] - start[0], now[1] - start[1]


def total(spans: list[Clock]) -> Clock:
    """Sum of wall and of CPU seconds."""
    return sum(w for w, _ in spans), sum(c for _, c in spans)


def paired_ratio(ours: list[Clock], theirs: list[Clock], c: int = 0) -> float:
    """Median over adjacent pairs of (plain step) / (vislang step): vislang / plain in speed."""
    return statistics.median(t[c] / o[c] for o, t in zip(ours, theirs))


# ---------------------------------------------------------------------------------------------- sampling


class PlainSampler:
    """A hand-written DDIM loop with classifier-free guidance over ``unet``, one step per :meth:`step`.

    Args:
        unet: The denoiser.
        cfg: The model's config (its noise schedule).
        states: ``(B, L, D)`` the prompts' text states; ``mask``: ``(B, L)``.
        empty_states: ``(1, L, D)`` the empty caption's; ``empty_mask``: ``(1, L)``.
        guidance: Classifier-free guidance scale.
        pooled: ``(B + 1, D)`` mean token states of the prompts and the empty caption (the UNet's class
            embedding input), for a model with ``pooled_text``.
    """

    def __init__(self, unet: nn.Module, cfg, states: Tensor, mask: Tensor, empty_states: Tensor,
                 empty_mask: Tensor, guidance: float, pooled: Tensor | None = None):
        from diffusers import DDIMScheduler

        self.unet, self.guidance = unet, guidance
        self.scheduler = DDIMScheduler(num_train_timesteps=cfg.train_timesteps,
                                       beta_schedule=cfg.beta_schedule, clip_sample=True,
                                       set_alpha_to_one=True)
        b = states.shape[0]
        self.states = torch.cat([states, empty_states.expand(b, -1, -1)])   # (2B, L, D): cond., uncond.
        self.mask = torch.cat([mask, empty_mask.expand(b, -1)])             # (2B, L)
        self.pooled = None
        if pooled is not None:  # (B + 1, D): the prompts', then the empty caption's
            self.pooled = torch.cat([pooled[:b], pooled[b:].expand(b, -1)])  # (2B, D)

    @torch.inference_mode()
    def start(self, noise: Tensor, steps: int) -> None:
        """Begin at ``noise`` ``(B, 3, S, S)``, for ``steps`` steps."""
        self.scheduler.set_timesteps(steps)
        self.x = noise * self.scheduler.init_noise_sigma
        self.timesteps = iter(self.scheduler.timesteps)

    @torch.inference_mode()
    def step(self) -> None:
        t = next(self.timesteps)
        xin = self.scheduler.scale_model_input(self.x, t)
        eps = self.unet(torch.cat([xin, xin]), t, encoder_hidden_states=self.states,
                        encoder_attention_mask=self.mask, class_labels=self.pooled).sample  # (2B, 3, S, S)
        eps_c, eps_u = eps.chunk(2)
        self.x = self.scheduler.step(eps_u + self.guidance * (eps_c - eps_u), t, self.x).prev_sample

    def images(self) -> Tensor:
        """The images ``(B, 3, S, S)`` in [0, 1]."""
        return ((self.x.clamp(-1.0, 1.0) + 1.0) / 2.0).clamp(0.0, 1.0)


@dataclass
class SampleRun:
    """One ``generate_tensor`` call with the plain loop stepping inside it."""

    ours: Clock                 # the call, less the plain steps run inside it
    theirs: Clock               # the plain loop's start, steps and images
    ours_steps: list[Clock]     # vislang's steps 2, 3, ... (from one UNet call to the next)
    theirs_steps: list[Clock]   # the plain steps 1, 2, ...
    ours_images: Tensor
    theirs_images: Tensor


def sample_interleaved(predictor: GeneratePredictor, prompts: list[str], plain: PlainSampler, noise: Tensor,
                       guidance: float, steps: int) -> SampleRun:
    """Run ``generate_tensor`` with a hook on the EMA UNet that does one plain step (timed apart) before each
    of vislang's UNet calls: the two samplers alternate step by step."""
    theirs_steps: list[Clock] = []
    ours_steps: list[Clock] = []
    state: dict = {"busy": False, "last": None}

    def hook(module: nn.Module, args: tuple) -> None:
        if state["busy"]:  # the plain step's own call of the UNet
            return
        if state["last"] is not None:
            ours_steps.append(since(state["last"]))
        state["busy"] = True
        start = clock()
        plain.step()
        theirs_steps.append(since(start))
        state["busy"], state["last"] = False, clock()

    handle = predictor.model.ema_unet.register_forward_pre_hook(hook)
    try:
        start = clock()
        plain.start(noise, steps)
        setup = since(start)
        start = clock()
        ours_images = predictor.generate_tensor(prompts, guidance=guidance, steps=steps, seed=0,
                                                batch_size=len(prompts))
        call = since(start)
        start = clock()
        theirs_images = plain.images()
        finish = since(start)
    finally:
        handle.remove()
    inside = total(theirs_steps)
    ours = (call[0] - inside[0], call[1] - inside[1])
    theirs = total([setup, inside, finish])
    return SampleRun(ours, theirs, ours_steps, theirs_steps, ours_images, theirs_images)


def bench_sampling(model: nn.Module, tokenizer, table: TextTable, sizes: Sizes, runs: int) -> dict:
    """Images/s of ``GeneratePredictor.generate_tensor`` and of the plain loop (alternating step by step), and
    their largest pixel difference."""
    tf = TransformConfig(image_size=model.image_size)
    trained = TrainedModel(Path("."), {"task": "generate", "max_len": MAX_LEN}, model, tf, tokenizer,
                           get_task("generate"))
    predictor = GeneratePredictor(trained)
    b, n_steps = sizes.sample_batch, sizes.sample_steps
    prompts = CAPTIONS[:b]
    n = int(table.mask[:b].sum(1).max())  # the prompts' longest caption (the empty one is shorter)
    pooled = None if table.pooled is None else torch.cat([table.pooled[:b], table.pooled[-1:]])
    plain = PlainSampler(model.ema_unet, model.cfg, table.states[:b, :n], table.mask[:b, :n],
                         table.states[-1:, :n], table.mask[-1:, :n], sizes.guidance, pooled)
    noise = torch.cat([predictor.noise(i) for i in range(b)])  # (B, 3, S, S): generate_tensor's, seed 0
    sample_interleaved(predictor, prompts, plain, noise, sizes.guidance, 2)  # warm-up
    done = [sample_interleaved(predictor, prompts, plain, noise, sizes.guidance, n_steps)
            for _ in range(runs)]
    result: dict = {"images": b, "steps": n_steps, "guidance": sizes.guidance,
                    "max_abs_diff": max(float((r.ours_images - r.theirs_images).abs().max()) for r in done)}
    for name, c in (("", 0), ("cpu_", 1)):
        for k in ("vislang", "plain"):
            calls = [(r.ours if k == "vislang" else r.theirs)[c] for r in done]
            result[f"{k}_{name}s"] = [round(x, 3) for x in calls]
            result[f"{k}_{name}img_s"] = b / statistics.median(calls)
        result[f"{name}paired_ratio"] = paired_ratio([s for r in done for s in r.ours_steps],
                                                     [s for r in done for s in r.theirs_steps[1:]], c)
    return result


# ---------------------------------------------------------------------------------------------- training


class InMemorySamples(Dataset):
    """Pre-built training samples in the form vislang's loop reads: ``image`` (normalised ``(3, S, S)``) and
    ``tokens`` (1-D ids); indexed by ``i`` or by the ``(i, seed)`` of vislang's sampler."""

    def __init__(self, images: Tensor, tf: TransformConfig, tokens: list[Tensor], caption_of: Tensor):
        mean = torch.tensor(tf.mean).view(1, 3, 1, 1)
        std = torch.tensor(tf.std).view(1, 3, 1, 1)
        self.images = ((images + 1.0) / 2.0 - mean) / std                   # (N, 3, S, S)
        self.tokens, self.caption_of = tokens, caption_of.tolist()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        i = key[0] if isinstance(key, tuple) else key
        return {"image": self.images[i], "tokens": self.tokens[self.caption_of[i]]}


class InterleavedTask(GenerateTask):
    """The generate task, timing each cycle of vislang's loop and running one step of the plain loop between
    two cycles (timed apart): the loops alternate step by step, so drift in the machine's load hits both.

    A cycle runs from the end of the previous plain step to the end of this optimiser step (after the EMA
    update): logging, the next batch, forward, backward, clipping, AdamW, the learning-rate schedule, the EMA.
    """

    def __init__(self, *args, peer: Callable[[], None], **kwargs):
        super().__init__(*args, **kwargs)
        self.peer = peer
        self.ours: list[Clock] = []     # cycles 2, 3, ... (the first starts with the run's setup)
        self.theirs: list[Clock] = []   # plain steps 1, 2, ...
        self._start: Clock | None = None

    def after_optimizer_step(self, model: nn.Module) -> None:
        super().after_optimizer_step(model)
        if self._start is not None:
            self.ours.append(since(self._start))
        start = clock()
        self.peer()
        self.theirs.append(since(start))
        self._start = clock()


class PlainTrainer:
    """A plain PyTorch + diffusers training loop over a copy of the UNet, with its own EMA (diffusers'
    ``EMAModel``), on a precomputed table of text states; :meth:`steps` runs it one step at a time."""

    def __init__(self, model: nn.Module, table: TextTable, images: Tensor, caption_of: Tensor,
                 task: GenerateTaskConfig):
        from diffusers import DDPMScheduler
        from diffusers.training_utils import EMAModel

        cfg = model.cfg
        self.unet = copy.deepcopy(model.unet).train()
        self.ema = EMAModel(self.unet.parameters(), decay=cfg.ema_decay, foreach=True)  # vislang's warm-up
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=cfg.train_timesteps,
                                             beta_schedule=cfg.beta_schedule, clip_sample=True)
        alpha_bar = self.noise_scheduler.alphas_cumprod
        self.snr = alpha_bar / (1.0 - alpha_bar)                                 # (T,)
        self.table, self.task = table, task
        self.data = TensorDataset(images, caption_of)

    def steps(self, batch_size: int, total: int, seed: int) -> Iterator[None]:
        """Optimiser steps, one per ``next`` (a fresh AdamW, warm-up + cosine schedule over ``total``)."""
        from diffusers.optimization import get_cosine_schedule_with_warmup

        params = list(self.unet.parameters())
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
        lr_schedule = get_cosine_schedule_with_warmup(opt, max(1, round(0.05 * total)), total)
        loader = DataLoader(self.data, batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        table, empty, gamma = self.table, len(self.table.states) - 1, self.task.snr_gamma
        while True:
            for x0, cap in loader:                                      # (B, 3, S, S) in [-1, 1], (B,)
                n = int(table.mask[cap].sum(1).max())
                states, mask = table.states[cap, :n], table.mask[cap, :n]  # (B, n, D), (B, n)
                drop = torch.rand(len(cap)) < self.task.cond_dropout    # caption dropout for guidance
                states = torch.where(drop.view(-1, 1, 1), table.states[empty, :n], states)
                mask = torch.where(drop.view(-1, 1), table.mask[empty, :n], mask)
                pooled = None
                if table.pooled is not None:                            # (B, D)
                    pooled = torch.where(drop.view(-1, 1), table.pooled[empty], table.pooled[cap])
                noise = torch.randn_like(x0)
                t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(x0),))
                noisy = self.noise_scheduler.add_noise(x0, noise, t)
                eps = self.unet(noisy, t, encoder_hidden_states=states, encoder_attention_mask=mask,
                                class_labels=pooled).sample
                err = (eps - noise).pow(2).mean(dim=(1, 2, 3))          # (B,)
                if gamma is not None:                                   # min-SNR weighting
                    snr = self.snr[t]
                    err = err * snr.clamp(max=gamma) / snr
                loss = err.mean()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                lr_schedule.step()
                opt.zero_grad(set_to_none=True)
                self.ema.step(params)
                yield


def train_interleaved(model: nn.Module, tokenizer, options: dict, samples: Dataset, plain: PlainTrainer,
                      sizes: Sizes, seed: int, work: Path) -> tuple[list[Clock], list[Clock]]:
    """One ``fit`` of ``warmup + steps`` optimiser steps into a fresh run directory, a plain step after each;
    the step times of both after the warm-up."""
    tf = TransformConfig(image_size=model.image_size)
    total = sizes.warmup + sizes.steps
    peer = plain.steps(sizes.train_batch, total, seed)
    task = InterleavedTask(tokenizer, [], None, tf, GenerateTaskConfig(max_len=MAX_LEN),
                           peer=lambda: next(peer))
    cfg = TrainConfig(epochs=1, batch_size=sizes.train_batch, max_steps=total, seed=seed, device="cpu")
    spec = {"task": "generate", "model": sizes.model, "model_config": resolved_options(sizes.model, options),
            "preprocessor": asdict(tf), "max_len": MAX_LEN,
            "tokenizer": "vocab.json" if isinstance(tokenizer, Vocabulary) else "text_encoder"}
    fit(model, task, samples, cfg, work / f"run_{seed}", model_spec=spec, pad_id=tokenizer.pad_id)
    return task.ours[sizes.warmup - 1:], task.theirs[sizes.warmup:]


def bench_training(model: nn.Module, tokenizer, options: dict, table: TextTable, sizes: Sizes,
                   repeats: int) -> dict:
    """Steady-state training images/s of vislang's loop and the plain loop, alternating step by step."""
    n_images = (sizes.warmup + sizes.steps) * sizes.train_batch  # one epoch: no epoch end inside the timing
    images = random_images(n_images, model.image_size)
    caption_of = torch.arange(n_images) % len(CAPTIONS)
    tokens = [ids[m.bool()] for ids, m in zip(table.ids[:-1], table.mask[:-1])]
    samples = InMemorySamples(images, TransformConfig(image_size=model.image_size), tokens, caption_of)
    plain = PlainTrainer(model, table, images, caption_of, GenerateTaskConfig(max_len=MAX_LEN))
    per_step: dict[str, list[list[Clock]]] = {"vislang": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="bench_generate_") as work:
        for r in range(repeats):
            ours, theirs = train_interleaved(model, tokenizer, options, samples, plain, sizes, r, Path(work))
            per_step["vislang"].append(ours)
            per_step["plain"].append(theirs)
    b = sizes.train_batch
    out: dict = {"batch": b, "warmup_steps": sizes.warmup, "measured_steps": sizes.steps, "repeats": repeats}
    for name, c in (("", 0), ("cpu_", 1)):  # images per wall second; per CPU second (all threads)
        for k, reps in per_step.items():
            out[f"{k}_{name}step_s"] = [[round(s[c], 4) for s in rep] for rep in reps]
            out[f"{k}_{name}img_s"] = b / statistics.median(s[c] for rep in reps for s in rep)
        pairs = list(zip(per_step["vislang"], per_step["plain"]))
        out[f"{name}paired_ratio"] = paired_ratio([s for o, _ in pairs for s in o],
                                                  [s for _, t in pairs for s in t], c)
        out[f"{name}paired_ratio_per_repeat"] = [paired_ratio(o, t, c) for o, t in pairs]
    return out


# -------------------------------------------------------------------------------------------------- main


def row(label: str, r: dict) -> list[str]:
    """One table row: images/s of both sides, their ratio and overhead, and the overhead of paired steps."""
    ratio = r["vislang_img_s"] / r["plain_img_s"]
    return [label, f"{r['vislang_img_s']:.4g}", f"{r['plain_img_s']:.4g}", f"{ratio:.3f}",
            f"{100 * (1 - ratio):+.1f} %", f"{100 * (1 - r['paired_ratio']):+.1f} %"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, help="timed sampling calls per side (default 3; --quick: 2)")
    ap.add_argument("--repeats", type=int, help="training repeats per side (default 3; --quick: 2)")
    ap.add_argument("--steps", type=int, help="measured optimiser steps per repeat (default 8; --quick: 4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny model, few steps: a smoke test")
    ap.add_argument("--skip", nargs="*", default=[], choices=["sample", "train"])
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    sizes = copy.copy(QUICK if args.quick else Sizes())
    runs = args.runs or (2 if args.quick else 3)
    repeats = args.repeats or (2 if args.quick else 3)
    sizes.steps = args.steps or sizes.steps
    if min(runs, repeats, sizes.steps, args.threads) < 1:
        ap.error("--runs, --repeats, --steps and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("VISLANG_QUIET", "1")  # no progress bars from vislang's loop in the bench's output
    start, load = time.perf_counter(), os.getloadavg()[0]
    model, tokenizer, options = build(sizes)
    table = text_table(model, tokenizer)
    params = sum(p.numel() for p in model.unet.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}; "
          f"{sizes.model} ({model.image_size} px, UNet {params / 1e6:.2f}M parameters, locked text tower "
          f"{type(model.text_encoder).__name__}); load average {load:.1f}", flush=True)
    results: dict = {"bench": "generate", "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "model": sizes.model, "image_size": model.image_size, "unet_params": params}
    rows = []
    if "sample" not in args.skip:
        s = results["sample"] = bench_sampling(model, tokenizer, table, sizes, runs)
        label = f"sampling: {s['images']} images, {s['steps']} DDIM steps, guidance {s['guidance']:g}"
        rows.append(row(label, s))
    if "train" not in args.skip:
        t = results["train"] = bench_training(model, tokenizer, options, table, sizes, repeats)
        rows.append(row(f"training: batch {t['batch']}, steady state", t))
        rows.append(["  paired steps, vislang / plain per repeat", "", "",
                     " ".join(f"{x:.3f}" for x in t["paired_ratio_per_repeat"]), "", ""])
    results["load_average"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    results["wall_s"] = round(time.perf_counter() - start, 1)
    print(format_table(rows, ["part", "vislang img/s", "plain img/s", "vislang / plain", "overhead",
                              "overhead, paired steps"]))
    print(f"wall time {results['wall_s']:.0f} s; load average {load:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end")
    line = json.dumps(results)
    print(line)
    if args.out:
        args.out.write_text(line + "\n", encoding="utf-8")
    diff = results.get("sample", {}).get("max_abs_diff", 0.0)
    if not diff <= 1e-3:
        print(f"error: vislang's and the plain loop's images differ by up to {diff:.2e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
