"""``vislang generate "a prompt" ... --model RUN -o out.png``: images from text with a trained generator run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Generate images from text prompts with a run of `vislang train generate` (its EMA weights, classifier-free
guidance). Writes a grid to OUT (one row per prompt, one column per sample, each sample's seed under it) and
each sample beside it as OUT_<prompt>_<sample>.png, both counted from 1 (out.png -> out_1_1.png, out_1_2.png,
..., out_2_1.png, ...), at the model's own size. Prints one line per sample: its file, seed and prompt (a JSON
object with --json). Sample j (counted from 0 over all prompts, n each) starts from the noise of seed SEED + j:
the same command writes the same bytes, and that prompt alone with `--seed SEED+j -n 1` draws sample j again."""


def register(sub: argparse._SubParsersAction) -> None:
    from vislang.commands.explain import add_explain_option

    p = sub.add_parser("generate", help="generate images from text prompts with a trained generator run",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompts", nargs="*", metavar="PROMPT", help="text prompts (quote each one)")
    p.add_argument("--prompts-file", metavar="FILE",
                   help="more prompts, one per line (UTF-8; blank lines are skipped), after those given")
    p.add_argument("--model", required=True, help="run directory of `vislang train generate` (or a checkpoint)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("-o", "--out", required=True, metavar="OUT.png",
                   help="grid to write; the samples go beside it as OUT_<prompt>_<sample>.png")
    p.add_argument("-n", "--num-samples", type=int, default=4, metavar="N", help="images per prompt (default 4)")
    p.add_argument("--guidance", type=float, default=3.0,
                   help="classifier-free guidance scale, 0-50 (1: the prompt's prediction alone; default 3)")
    p.add_argument("--steps", type=int, default=50, help="sampler steps (default 50)")
    p.add_argument("--sampler", default="ddim", choices=("ddim", "dpm"),
                   help="ddim (default) or dpm (DPM-Solver++, as good in fewer steps)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first sample's noise (default 0)")
    p.add_argument("--batch-size", type=int, default=16, help="images sampled at once (default 16)")
    p.add_argument("--json", action="store_true", help="print one JSON object per sample")
    add_explain_option(p, "write where each token of the first prompt was attended to in its first sample (the "
                          "cross-attention per token, averaged over heads, layers and steps)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from vislang.commands.explain import explain_output
    from vislang.errors import VislangError
    from vislang.inference.generate import GeneratePredictor
    from vislang.utils.io import atomic_save_image
    from vislang.viz import save_figure
    from vislang.viz.token_maps import sample_grid, token_maps_figure

    out = check_options(args)
    prompts, sources = gather_prompts(args.prompts, args.prompts_file)
    check_count(len(prompts), args.num_samples)
    n = args.num_samples
    paths = [sample_path(out, j // n + 1, j % n + 1) for j in range(len(prompts) * n)]
    figure, _ = explain_output(args)
    if figure is not None and Path(figure).resolve() in {p.resolve() for p in (out, *paths)}:
        raise VislangError(f"--explain {figure} is also a file of -o {out}; give the figure another name")
    gen = GeneratePredictor.load(args.model, args.checkpoint, args.device)
    check_words(gen.tokenizer, prompts, sources)
    results = gen.generate(prompts, n=n, guidance=args.guidance, steps=args.steps, seed=args.seed,
                           sampler=args.sampler, batch_size=args.batch_size)
    why = (gen.explain(prompts[0], guidance=args.guidance, steps=args.steps, seed=args.seed, sampler=args.sampler)
           if figure else None)
    for path, r in zip(paths, results):
        atomic_save_image(path, r.image, "PNG")
    rows = [(prompts[i], [r.image for r in results[i * n:(i + 1) * n]], [r.seed for r in results[i * n:(i + 1) * n]])
            for i in range(len(prompts))]
    atomic_save_image(out, sample_grid(rows), "PNG")
    if why is not None:
        title = f"{why.prompt}  (seed {args.seed}; per token: share of the attention, peak over uniform)"
        save_figure(token_maps_figure(why.image, why.tokens, why.maps, why.weights, title), figure)
    for j, (path, r) in enumerate(zip(paths, results)):
        if args.json:
            row: dict[str, Any] = {"path": str(path), "prompt": r.prompt, "prompt_index": j // n + 1,
                                   "sample": j % n + 1, "seed": r.seed}
            if r.warning:
                row["warning"] = r.warning
            print(json.dumps(row, ensure_ascii=False))
        else:
            print(f"{path}\t{r.seed}\t{r.prompt}")
    return 0


def check_options(args: argparse.Namespace) -> Path:
    """The checked grid path; every option checked before the model is loaded.

    Raises:
        VislangError: One line naming the option.
    """
    from vislang.errors import VislangError
    from vislang.utils.io import check_output_file

    for option, value in (("-n", args.num_samples), ("--steps", args.steps), ("--batch-size", args.batch_size)):
        if value < 1:
            raise VislangError(f"{option} must be at least 1, got {value}")
    if not 0.0 <= args.guidance <= 50.0:  # also refuses nan
        raise VislangError(f"--guidance must be in [0, 50], got {args.guidance}")
    if not 0 <= args.seed <= 2**62:
        raise VislangError(f"--seed must be in [0, 2**62], got {args.seed}")
    out = check_output_file(args.out, "-o")
    if out.suffix.lower() != ".png":
        raise VislangError(f"-o {out}: the grid and the samples are PNG files; end the name with .png")
    return out


def gather_prompts(given: list[str], prompts_file: str | None) -> tuple[list[str], list[str]]:
    """``(prompts, where each came from)``: the command line's (``prompt 2``), then the file's non-blank lines
    (``FILE:LINE``).

    Raises:
        VislangError: An empty prompt on the command line, an unreadable file, or no prompt at all.
    """
    from vislang.data.text import read_texts
    from vislang.errors import VislangError

    prompts, sources = [], []
    for i, p in enumerate(given, 1):
        if not p.strip():
            raise VislangError(f"prompt {i} is empty; give a text such as \"a red heart\"")
        prompts.append(p)
        sources.append(f"prompt {i}")
    if prompts_file is not None:
        lines = read_texts(prompts_file)
        if not lines:
            raise VislangError(f"--prompts-file {prompts_file}: no prompts (it has no non-blank line)")
        for lineno, line in lines:
            prompts.append(line)
            sources.append(f"{prompts_file}:{lineno}")
    if not prompts:
        raise VislangError("no prompt: give one or more texts, or --prompts-file")
    return prompts, sources


def check_count(prompts: int, n: int) -> None:
    """Refuse more images than one call generates.

    Raises:
        VislangError: ``prompts * n`` above :data:`~vislang.inference.generate.MAX_SAMPLES`.
    """
    from vislang.errors import VislangError
    from vislang.inference.generate import MAX_SAMPLES

    if prompts * n > MAX_SAMPLES:
        raise VislangError(f"{prompts} prompts x -n {n} = {prompts * n} images; at most {MAX_SAMPLES} per command")


def check_words(tokenizer: Any, prompts: list[str], sources: list[str]) -> None:
    """Refuse a prompt the model reads no token of (e.g. only punctuation: it would draw as the empty,
    unconditional prompt); warn about one of only words the model never saw.

    Raises:
        VislangError: Naming the prompt (``prompt 2``) or the file line (``FILE:LINE``).
    """
    from vislang.data.text import has_words
    from vislang.errors import VislangError

    unk = getattr(tokenizer, "unk_id", None)
    for prompt, where in zip(prompts, sources):
        ids = tokenizer.encode(prompt, add_special=False)
        if not ids or not has_words(prompt):
            raise VislangError(f"{where} ({prompt!r}) has no word the model reads; give a text such as \"a red "
                               "heart\"")
        if unk is not None and all(i == unk for i in ids):
            print(f"warning: {where} ({prompt!r}): the model knows none of its words; it draws from the "
                  "unknown-word token", file=sys.stderr)


def sample_path(out: Path, prompt: int, sample: int) -> Path:
    """Where sample ``sample`` of prompt ``prompt`` (both from 1) goes beside the grid ``out``."""
    return out.with_name(f"{out.stem}_{prompt}_{sample}.png")
