"""Evaluating a text-to-image generator honestly: ``vislang evaluate generate``, one table with the model beside
its floors and ceilings.

- **Alignment**: a retrieval model trained *separately* (the judge; never the generator's own text tower) ranks
  each generated image's prompt among all the evaluated prompts: R@1, R@5 and the mean cosine of the matched
  pairs. Ceiling: the real image of each prompt (also shown as the generator is trained to draw it, at its
  resolution). Floor: the generated images scored against a fixed derangement of the prompts.
- **Realism**: the Frechet distance in the judge's image-embedding space to the real images of the split,
  beside real training images (real vs real) and trivial generators (the training mean image, uniform noise).
  Not comparable to Inception FID.
- **Memorisation**: each sample's distance to its nearest training image (RMS over pixels at the generator's
  resolution, and judge-feature cosine distance), beside the same distances of held-out real images.
- **Baseline**: retrieve the training image whose caption is nearest the prompt (TF-IDF, judge-independent).

Writes ``metrics.json``, ``table.md``, ``samples.jsonl``, ``samples/*.png`` and ``report.html``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from vislang.data.images import load_image
from vislang.errors import VislangError
from vislang.metrics.frechet import METHOD as FRECHET_METHOD
from vislang.metrics.frechet import frechet_distance
from vislang.models.diffusion_unet import SAMPLERS
from vislang.tasks.base import TrainedModel, eval_dir, load_trained
from vislang.tasks.common import check_at_least_one, load_split
from vislang.tasks.generate_scores import (
    BASELINE_METHOD,
    NearestCaption,
    alignment,
    derangement,
    evenly_spaced,
    judge_pixels,
    memorisation,
    nearest_features,
    nearest_pixels,
    pick_prompts,
    record_pixels,
    sample_images,
    to_pil,
    truncated_prompts,
)
from vislang.tasks.retrieval_embed import embed_record_images, embed_texts, model_fingerprint
from vislang.train.checkpoint import read_config, resolve_checkpoint, run_of
from vislang.utils.distributed import is_main, map_sharded
from vislang.utils.io import (
    atomic_open,
    atomic_save_image,
    atomic_write_json,
    atomic_write_jsonl,
    format_table,
)
from vislang.viz.generate_report import save_prompt_grid, write_generate_report

DEFAULT_COMPOSITIONS = ("a blue cat", "a heart with a face", "a flag with a star")

GENERATOR = "generator"
CEILING = "real images (ceiling)"
CEILING_LOW = "real images at {size} px"
FLOOR = "generator, shuffled prompts (floor)"
BASELINE = "nearest training caption (baseline)"
REAL_TRAIN = "real training images (real vs real)"
MEAN_IMAGE = "training mean image (trivial)"
NOISE = "uniform noise (trivial)"
HEADERS = ("system", "R@1", "R@5", "mean cosine", "Frechet (judge)", "N vs real", "nearest-train px",
           "nearest-train feat")
KEYS = ("R@1", "R@5", "mean_cosine", "frechet", "frechet_n", "median_px", "median_feat")


@dataclass
class GenerateEvaluation:
    """A generator's scores on one split, with its floors, ceilings and baselines.

    Attributes:
        split: What was evaluated (``data [split]``).
        prompts: The evaluated prompts (one image each).
        rows: ``{system: {key: value}}``, keys of :data:`KEYS` (None: not applicable; ``frechet_n``: images in
            the set compared with the ``settings["real_images"]`` real ones).
        settings: How the numbers were made (steps, guidance, seed, judge, ...).
        notes: How to read the table.
        verdict: Whether the generator beats the nearest-caption baseline on alignment, in one line.
        baseline_better: The prompts whose baseline image the judge ranks better than the generated one.
        beats_baseline: ``{"R@1" | "R@5" | "mean_cosine": whether the generator scores higher than the baseline}``.
        memorisation: ``{"generator": ..., "held-out real": ...}`` distance summaries.
        per_prompt: One dict per prompt (files, ranks, cosines, nearest training images).
    """

    split: str
    prompts: list[str]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    verdict: str = ""
    baseline_better: list[str] = field(default_factory=list)
    beats_baseline: dict[str, bool] = field(default_factory=dict)
    memorisation: dict[str, dict[str, float]] = field(default_factory=dict)
    per_prompt: list[dict[str, Any]] = field(default_factory=list)

    def table_rows(self) -> list[list[Any]]:
        """The table's rows (None: not applicable)."""
        m = self.settings.get("real_images")
        return [[name, *[f"{r[k]} vs {m}" if k == "frechet_n" and r[k] is not None else r.get(k) for k in KEYS]]
                for name, r in self.rows.items()]

    def table(self) -> str:
        """The table as plain text."""
        return format_table([["-" if v is None else v for v in row] for row in self.table_rows()], HEADERS)

    def markdown(self) -> str:
        """The table in Markdown."""
        def cell(v: Any) -> str:
            return "—" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.table_rows()]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def open_judge(judge: str | os.PathLike, gen: TrainedModel) -> TrainedModel:
    """The judge's retrieval model; refuses the generator itself and any model that is not a retrieval one."""
    folder = resolve_checkpoint(judge)
    if folder.resolve() == gen.folder.resolve():
        raise VislangError(f"--judge {judge} is the generator itself; judge with a separately trained "
                           "`vislang train retrieval` run")
    task = read_config(folder).get("task")
    if task != "retrieval":
        raise VislangError(f"--judge {judge} is a {task!r} model, not a retrieval model; judge with a separately "
                           "trained `vislang train retrieval` run")
    return load_trained(folder, "retrieval")


def _run_data(run: Path) -> dict[str, Any]:
    """The ``data`` section of a run's ``config.yaml`` (empty when there is none)."""
    path = run / "config.yaml"
    return ((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("data") or {}) if path.exists() else {}


def text_tower_note(gen_config: dict[str, Any], judge_config: dict[str, Any]) -> str:
    """Whether the judge reads text with the generator's own pre-trained tower, in one sentence (from the two
    model folders' ``config.json``)."""
    g, j = gen_config.get("model_config", {}), judge_config.get("model_config", {})
    same = (g.get("text_encoder") == j.get("text_encoder") and g.get("text_mode") == "locked"
            and g.get("text_encoder_kwargs", {}).get("path") == j.get("text_encoder_kwargs", {}).get("path"))
    if same:
        how = "the same locked tower" if j.get("text_mode") == "locked" else f"it, {j.get('text_mode')}"
        return (f"The judge shares the generator's pre-trained text tower ({g.get('text_encoder')}; the judge "
                f"uses {how}). Allowed: the judge's image tower and projections were trained separately, but "
                "its text side is not independent of the generator's.")
    return (f"Text towers: generator {g.get('text_encoder')} ({g.get('text_mode')}), judge {j.get('text_encoder')} "
            f"({j.get('text_mode')}); the judge shares no weights with the generator.")


def _check_options(steps: int, guidance: float, sampler: str, max_prompts: int | None, batch_size: int,
                   max_train: int | None) -> None:
    check_at_least_one(steps=steps, max_prompts=max_prompts, batch_size=batch_size, max_train=max_train)
    if not 0.0 <= guidance <= 50.0:
        raise VislangError(f"guidance must be in [0, 50], not {guidance}")
    if sampler not in SAMPLERS:
        raise VislangError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")


def evaluate_generator(model: str | os.PathLike, judge: str | os.PathLike, data: str, split: str | None, *,
                       root: str | None = None, image_root: str | None = None, train_split: str | None = None,
                       max_prompts: int | None = 200, max_train: int | None = None, steps: int = 50,
                       guidance: float = 3.0, sampler: str = "ddim", seed: int = 0, batch_size: int = 32,
                       skip_bad: bool = False, out_dir: str | os.PathLike | None = None,
                       compositions: tuple[str, ...] | list[str] = DEFAULT_COMPOSITIONS,
                       gallery_size: int = 8) -> GenerateEvaluation:
    """Generate one image per distinct first caption of a split and score it (see the module docstring).

    Args:
        model: The generator's run directory (or a model folder).
        judge: A separately trained retrieval run (or model folder).
        data: Dataset name or manifest file.
        split: The split whose captions are the prompts (e.g. ``test_new_concepts``).
        root: Data root for registered datasets.
        image_root: Folder image names in COCO / Karpathy files are relative to.
        train_split: The training split (memorisation, baseline, real vs real); default: the generator run's.
        max_prompts: At most this many prompts, evenly spaced over the sorted distinct captions.
        max_train: Use at most this many training images (evenly spaced; default: all).
        steps: Sampler steps.
        guidance: Classifier-free guidance scale.
        sampler: ``ddim`` or ``dpm``.
        seed: The sample of prompt ``j`` starts from the noise of seed ``seed + j``.
        batch_size: Images per batch.
        skip_bad: Leave out records whose image is missing or unreadable.
        out_dir: Where to write the files and the report (nothing written when None).
        compositions: Free prompts shown in the report's gallery.
        gallery_size: Prompts per gallery of the report.

    Raises:
        VislangError: Bad options, a judge that is the generator or not a retrieval model, a split without captions.
    """
    _check_options(steps, guidance, sampler, max_prompts, batch_size, max_train)
    for i, p in enumerate(compositions, 1):
        if not isinstance(p, str) or not p.strip():
            raise VislangError(f"--compositions: prompt {i} is empty")
    gen = load_trained(model, "generate")
    jdg = open_judge(judge, gen)
    gen_run = run_of(model, gen.folder) or gen.folder.parent.parent
    train_split = train_split or _run_data(gen_run).get("train_split") or "train"
    ds = load_split(data, split, root=root, image_root=image_root, skip_bad=skip_bad)
    reference = [r for r in ds.records if r.captions]
    prompts, owners = pick_prompts(reference, max_prompts)
    name = f"{data} [{ds.split}]" if ds.split else str(data)
    if len(prompts) < 2:
        raise VislangError(f"{name} has {len(prompts)} distinct captions; need at least 2 prompts to rank")
    train = [r for r in load_split(data, train_split, root=root, image_root=image_root, skip_bad=skip_bad).records
             if r.captions]
    train = [train[i] for i in evenly_spaced(len(train), max_train)]
    if not train:
        raise VislangError(f"{data} [{train_split}] has no captioned images to compare with")
    n, size = len(prompts), int(gen.model.image_size)

    # (N, 3, S, S); under torchrun each rank draws its part (sample j always from seed + j)
    samples = map_sharded(lambda part: sample_images(gen, [prompts[j] for j in part], guidance=guidance, steps=steps,
                                                     seed=seed + part[0], sampler=sampler, batch_size=batch_size),
                          range(n), torch.cat)
    text = embed_texts(jdg.model, jdg.artifacts, prompts, int(jdg.config.get("max_len", 64)))  # (N, E)
    real_emb = embed_record_images(jdg.model, owners, jdg.transform, batch_size)             # (N, E)
    # everything else is compared at the generator's resolution, as it is trained to draw the real images
    real_px = record_pixels(owners, gen, batch_size)                                         # (N, 3, S, S)
    train_px = record_pixels(train, gen, batch_size, desc="training images")                 # (T, 3, S, S)
    ref_px = record_pixels(reference, gen, batch_size, desc="real images")                   # (M, 3, S, S)
    retriever = NearestCaption(train)
    nearest = [retriever.nearest(p) for p in prompts]
    base_idx = [i for i, _, _ in nearest]
    mean_px = train_px.mean(0, keepdim=True)                                                 # (1, 3, S, S)
    noise_px = torch.rand((n, 3, size, size), generator=torch.Generator().manual_seed(seed))
    gen_emb, low_emb, train_emb, ref_emb, mean_emb, noise_emb = (
        judge_pixels(jdg, x, batch_size) for x in (samples, real_px, train_px, ref_px, mean_px, noise_px))
    base_emb = train_emb[base_idx]
    real_train_emb = train_emb[evenly_spaced(len(train), n)]

    perm = derangement(n, seed)
    aligned = {GENERATOR: alignment(gen_emb, text), CEILING: alignment(real_emb, text),
               CEILING_LOW.format(size=size): alignment(low_emb, text), FLOOR: alignment(gen_emb, text[perm]),
               BASELINE: alignment(base_emb, text)}
    frechet = {GENERATOR: gen_emb, BASELINE: base_emb, REAL_TRAIN: real_train_emb,
               MEAN_IMAGE: mean_emb.expand(n, -1), NOISE: noise_emb}
    g_px, g_px_idx = nearest_pixels(samples, train_px)
    g_ft, g_ft_idx = nearest_features(gen_emb, train_emb)
    h_px, h_ft = nearest_pixels(real_px, train_px)[0], nearest_features(low_emb, train_emb)[0]
    distances = {GENERATOR: (g_px, g_ft), CEILING: (h_px, h_ft),
                 BASELINE: (nearest_pixels(train_px[base_idx], train_px)[0], nearest_features(base_emb, train_emb)[0]),
                 MEAN_IMAGE: (nearest_pixels(mean_px, train_px)[0], nearest_features(mean_emb, train_emb)[0])}

    ev = GenerateEvaluation(split=name, prompts=prompts)
    for system in (GENERATOR, CEILING, CEILING_LOW.format(size=size), FLOOR, BASELINE, REAL_TRAIN, MEAN_IMAGE,
                   NOISE):
        row: dict[str, Any] = {k: None for k in KEYS}
        if system in aligned:
            row.update({k: aligned[system][k] for k in ("R@1", "R@5", "mean_cosine")})
        if system in frechet:
            row["frechet"] = frechet_distance(frechet[system], ref_emb)
            row["frechet_n"] = len(frechet[system])
        if system in distances:
            row["median_px"], row["median_feat"] = (float(np.median(d)) for d in distances[system])
        ev.rows[system] = row
    ev.memorisation = {"generator": memorisation(g_px, g_ft, h_px, h_ft),
                       "held-out real": memorisation(h_px, h_ft, h_px, h_ft)}

    g_al, b_al = aligned[GENERATOR], aligned[BASELINE]
    ev.baseline_better = [p for p, gr, br in zip(prompts, g_al["ranks"], b_al["ranks"]) if br < gr]
    ev.beats_baseline = {k: g_al[k] > b_al[k] for k in ("R@1", "R@5", "mean_cosine")}
    ev.verdict = baseline_verdict(g_al, b_al, ev.beats_baseline, len(ev.baseline_better), n)
    ev.per_prompt = [{"prompt": p, "sample": f"samples/{j:04d}.png", "seed": seed + j, "real_id": owners[j].id,
                      "rank": g_al["ranks"][j], "cosine": g_al["cosines"][j], "real_rank": aligned[CEILING]["ranks"][j],
                      "floor_prompt": prompts[int(perm[j])], "floor_rank": aligned[FLOOR]["ranks"][j],
                      "baseline_caption": nearest[j][1], "baseline_id": train[base_idx[j]].id,
                      "baseline_rank": b_al["ranks"][j], "nearest_train_px": float(g_px[j]),
                      "nearest_train_px_id": train[int(g_px_idx[j])].id, "nearest_train_feat": float(g_ft[j]),
                      "nearest_train_feat_id": train[int(g_ft_idx[j])].id} for j, p in enumerate(prompts)]
    ev.settings = {"data": str(data), "split": ds.split, "train_split": train_split, "prompts": n,
                   "real_images": len(reference), "training_images": len(train), "steps": steps,
                   "guidance": guidance, "sampler": sampler, "seed": seed,
                   "generator": str(gen.folder), "generator_id": model_fingerprint(gen.folder, gen.config),
                   "image_size": size, "judge": str(jdg.folder), "judge_id": model_fingerprint(jdg.folder, jdg.config),
                   "judge_embedding_dim": int(jdg.model.embed_dim), "frechet_method": FRECHET_METHOD,
                   "baseline_method": BASELINE_METHOD, "floor_permutation": perm.tolist(),
                   "truncated_prompts": truncated_prompts(gen, prompts)}
    ev.notes = _notes(ev, gen, jdg, judge, size)
    if out_dir is not None:
        _write(ev, Path(out_dir), samples, gen, gen_run, owners, train, compositions, gallery_size, batch_size)
    return ev


def baseline_verdict(gen: dict[str, Any], base: dict[str, Any], beats: dict[str, bool], worse: int, n: int) -> str:
    """One sentence: on which alignment numbers the generator beats the nearest-caption baseline, and on which not."""
    def said(keys: list[str]) -> str:
        return ", ".join(f"{k.replace('_', ' ')} ({gen[k]:.4f} vs {base[k]:.4f})" for k in keys)

    won, lost = [k for k, b in beats.items() if b], [k for k, b in beats.items() if not b]
    text = f"the generator beats the nearest-caption baseline on {said(won)}" if won else ""
    if lost:
        text += ("; it does NOT on " if won else "the generator does NOT beat the nearest-caption baseline on ")
        text += said(lost)
    return text + f"; the judge ranks the baseline's image above the generated one on {worse} of {n} prompts"


def _notes(ev: GenerateEvaluation, gen: TrainedModel, jdg: TrainedModel, judge: str | os.PathLike,
           size: int) -> list[str]:
    s, n = ev.settings, ev.settings["prompts"]
    mem = ev.memorisation["generator"]
    notes = [
        f"Alignment: the judge (retrieval model {s['judge_id']}, trained separately from the generator) ranks each "
        f"image's prompt among all {n} prompts; R@K is the share of images whose own prompt is in its top K "
        f"(chance: K/{n}). Ceiling: the real image of each prompt as the judge reads any picture; 'at {size} px': "
        "the same images as the generator is trained to draw them. Floor: the generated images against a fixed "
        "derangement of the prompts (settings: floor_permutation).",
        f"Realism: Frechet distance between the judge's {s['judge_embedding_dim']}-d image embeddings of each set "
        f"and of the split's {s['real_images']} real images, every set at the generator's {size} px (as the judge "
        "reads any picture). It is NOT comparable to Inception FID (another feature "
        "space), and with few samples it is biased upwards: compare rows only at equal N. Matrix square root: "
        f"{FRECHET_METHOD}.",
        f"Memorisation: median distance of each image to its nearest of the {s['training_images']} training images "
        f"(RMS over {size} px RGB pixels in [0, 1]; cosine distance of the judge's embeddings of the {size} px "
        "images). The real images' row (the prompts' images, at that size) is the "
        f"held-out reference: {mem['below_heldout_p5_px']:.0%} of the samples are nearer a training image in "
        f"pixels ({mem['below_heldout_p5_feat']:.0%} in features) than 95% of held-out real images are "
        "(about 5% is expected of a generator that does not copy). The baseline returns training images: 0 by "
        "construction.",
        f"Baseline: {BASELINE_METHOD} On prompts of concepts never trained on the generator should beat it on "
        f"alignment. On {ev.split}, {ev.verdict}.",
        text_tower_note(gen.config, jdg.config),
    ]
    if ev.baseline_better:
        shown = ev.baseline_better[:12]
        notes.append("Prompts whose baseline image the judge ranks above the generated one: " + "; ".join(shown)
                     + (f"; and {len(ev.baseline_better) - len(shown)} more (metrics.json: baseline_better)."
                        if len(ev.baseline_better) > len(shown) else "."))
    judge_data = _run_data(run_of(judge, jdg.folder) or jdg.folder.parent.parent)
    if judge_data:
        notes.append(f"The judge was trained on {judge_data.get('name')} [{judge_data.get('train_split')}].")
        if judge_data.get("name") == s["data"] and judge_data.get("train_split") == s["split"]:
            notes.append("WARNING: the judge was trained on the evaluated split itself; its scores are optimistic.")
    if s["truncated_prompts"]:
        notes.append(f"{s['truncated_prompts']} prompts are longer than the generator reads and were truncated.")
    return notes


def _write(ev: GenerateEvaluation, out: Path, samples: torch.Tensor, gen: TrainedModel, gen_run: Path,
           owners: list, train: list, compositions, gallery_size: int, batch_size: int) -> None:
    """Samples, ``samples.jsonl``, ``metrics.json``, ``table.md``, the galleries and ``report.html``."""
    s = ev.settings
    for j, image in enumerate(samples):
        atomic_save_image(out / ev.per_prompt[j]["sample"], to_pil(image))
    atomic_write_jsonl(out / "samples.jsonl", ev.per_prompt)
    atomic_write_json(out / "metrics.json", {k: v for k, v in ev.to_json().items() if k != "per_prompt"})
    with atomic_open(out / "table.md", "w", encoding="utf-8") as f:
        f.write(f"{ev.split}: {s['prompts']} prompts\n\n{ev.markdown()}")
    galleries = _galleries(ev, out / "report_files", samples, gen, owners, train, compositions, gallery_size,
                           batch_size)
    write_generate_report(out, title="vislang text-to-image evaluation",
                          subtitle=f"{ev.split}: {s['prompts']} prompts, {s['sampler']} {s['steps']} steps, guidance "
                                   f"{s['guidance']:g}, seed {s['seed']}",
                          headers=HEADERS, rows=ev.table_rows(), notes=ev.notes,
                          settings={k: v for k, v in s.items() if k != "floor_permutation"},
                          curves=gen_run / "curves.png", galleries=galleries)


def _galleries(ev: GenerateEvaluation, assets: Path, samples: torch.Tensor, gen: TrainedModel, owners: list,
               train: list, compositions, size: int, batch_size: int) -> list[tuple[str, str, Path, list[str]]]:
    """The report's three galleries (training concepts, the evaluated prompts, free compositions) as PNG grids:
    ``(title, description, path, prompts)``."""
    s = ev.settings
    options = {"guidance": s["guidance"], "steps": s["steps"], "sampler": s["sampler"], "batch_size": batch_size}
    t_prompts, t_owners = pick_prompts(train, size)
    t_images = sample_images(gen, t_prompts, seed=s["seed"], desc="gallery", **options)
    pick = evenly_spaced(len(ev.prompts), size)
    out = [("Training concepts", "Prompts of training captions: generated (blue frame), then the training image.",
            save_prompt_grid(assets / "gallery_train.png", [([to_pil(im), load_image(r.image)], p)
                                                             for im, r, p in zip(t_images, t_owners, t_prompts)]),
            t_prompts),
           (f"New concepts: {ev.split}", "Evaluated prompts: the evaluated sample (blue frame), then the real image.",
            save_prompt_grid(assets / "gallery_eval.png", [([to_pil(samples[j]), load_image(owners[j].image)],
                                                            ev.prompts[j]) for j in pick]),
            [ev.prompts[j] for j in pick])]
    if compositions:
        cells = [([to_pil(im) for im in sample_images(gen, [p, p], seed=s["seed"], desc=p, **options)], p)
                 for p in compositions]
        out.append(("Free compositions", f"Two samples of each prompt, from the noise of seeds {s['seed']} and "
                    f"{s['seed'] + 1}.", save_prompt_grid(assets / "gallery_compositions.png", cells),
                    list(compositions)))
    return out


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    """The options of ``vislang evaluate generate``."""
    p.add_argument("--model", required=True, help="run directory of `vislang train generate` (or a model folder)")
    p.add_argument("--judge", required=True,
                   help="run directory of a separately trained `vislang train retrieval` model that scores alignment")
    p.add_argument("--data", required=True, help="dataset name (emoji, shapes, ...) or manifest file")
    p.add_argument("--split", help="split whose captions are the prompts (e.g. test_new_concepts; default: the "
                                   "dataset's default split)")
    p.add_argument("--root", help="data root for built-in datasets")
    p.add_argument("--image-root", help="folder image names in COCO / Karpathy files are relative to")
    p.add_argument("--train-split", help="training split (memorisation, baseline, real vs real; default: the "
                                         "generator run's)")
    p.add_argument("--max-prompts", type=int, default=200,
                   help="at most N prompts, evenly spaced over the sorted distinct captions (default: 200)")
    p.add_argument("--max-train", type=int, help="compare with at most N training images, evenly spaced (default: all)")
    p.add_argument("--steps", type=int, default=50, help="sampler steps (default: 50)")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default: 3)")
    p.add_argument("--sampler", default="ddim", help=f"one of {', '.join(SAMPLERS)} (default: ddim)")
    p.add_argument("--seed", type=int, default=0, help="sample j starts from the noise of seed + j (default: 0)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default: 32)")
    p.add_argument("--compositions", nargs="*", default=list(DEFAULT_COMPOSITIONS), metavar="PROMPT",
                   help="free prompts for the report's gallery (default: %(default)s)")
    p.add_argument("--skip-bad", action="store_true", help="leave out images that are missing or unreadable")
    p.add_argument("--out", type=Path, help="output folder (default: <run>/eval/<data>_<split>)")


def run_evaluate(args: argparse.Namespace) -> int:
    """Generate, judge, print the table, write the files and the report."""
    out = eval_dir(args)
    ev = evaluate_generator(args.model, args.judge, args.data, args.split, root=args.root, image_root=args.image_root,
                            train_split=args.train_split, max_prompts=args.max_prompts, max_train=args.max_train,
                            steps=args.steps, guidance=args.guidance, sampler=args.sampler, seed=args.seed,
                            batch_size=args.batch_size, skip_bad=args.skip_bad,
                            out_dir=out if is_main() else None, compositions=tuple(args.compositions))
    s = ev.settings
    print(f"{ev.split}: {s['prompts']} prompts, {s['sampler']} {s['steps']} steps, guidance {s['guidance']:g}, "
          f"seed {s['seed']}; judge {s['judge_id']}")
    print(ev.table())
    print(f"Frechet distances are in the judge's {s['judge_embedding_dim']}-d embedding space, at {s['image_size']} px: "
          "not comparable to Inception FID.")
    print(ev.verdict[0].upper() + ev.verdict[1:])
    print(text_tower_note_line(ev))
    print(f"metrics, table, samples and report written to {out}")
    return 0


def text_tower_note_line(ev: GenerateEvaluation) -> str:
    """The note on the judge's text tower (the table's other notes are in the report)."""
    return next((n for n in ev.notes if n.startswith(("The judge shares", "Text towers"))), "")
