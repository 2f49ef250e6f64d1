"""The pieces of ``vislang evaluate generate`` (:mod:`vislang.tasks.generate_eval`): choosing the prompts,
sampling a generator, feeding images to a separately trained judge, alignment ranks, nearest-training-image
distances and the judge-independent nearest-caption baseline (TF-IDF)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vislang.data.loader import ImageTextSamples, build_loader
from vislang.data.records import Record
from vislang.data.transforms import build_transform
from vislang.errors import VislangError
from vislang.metrics.retrieval import retrieval_scores_from_similarity
from vislang.tasks.base import TrainedModel
from vislang.tasks.generate import sample_images as generate_images
from vislang.tasks.generate import to_model_range, to_pil, to_unit_range
from vislang.utils.io import progress
from vislang.utils.tensors import model_device

# ------------------------------------------------------------------------------------------------ prompts


def distinct_prompts(records: Sequence[Record]) -> tuple[list[str], list[Record]]:
    """The distinct first captions of ``records``, sorted, each with the first record that has it."""
    first: dict[str, Record] = {}
    for r in records:
        if r.captions and r.captions[0].strip():
            first.setdefault(r.captions[0].strip(), r)
    prompts = sorted(first)
    return prompts, [first[p] for p in prompts]


def evenly_spaced(n: int, k: int | None) -> list[int]:
    """``k`` indices of ``range(n)`` spread evenly (all of them when ``k`` is None or ``>= n``): the same
    choice on every run, never a random one."""
    if k is None or k >= n:
        return list(range(n))
    return [(2 * i + 1) * n // (2 * k) for i in range(k)]


def pick_prompts(records: Sequence[Record], limit: int | None) -> tuple[list[str], list[Record]]:
    """At most ``limit`` distinct first captions (evenly spaced after sorting) and each one's record."""
    prompts, owners = distinct_prompts(records)
    keep = evenly_spaced(len(prompts), limit)
    return [prompts[i] for i in keep], [owners[i] for i in keep]


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A fixed permutation ``(n,)`` with no fixed point (for ``n > 1``): one random cycle through all indices."""
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = order[(np.arange(n) + 1) % n]
    return perm


# --------------------------------------------------------------------------------------------- generating


def sample_images(gen: TrainedModel, prompts: Sequence[str], *, guidance: float, steps: int, seed: int,
                  sampler: str, batch_size: int, desc: str = "generating") -> Tensor:
    """Images ``(N, 3, S, S)`` in [0, 1] (CPU) of a generator's EMA weights, one per prompt; sample ``j`` starts
    from the noise of seed ``seed + j``, exactly as ``vislang.load(run).generate(prompts, seed=seed)``."""
    bar = progress(total=len(prompts), desc=desc, unit="image")
    try:
        return generate_images(gen.model, gen.artifacts, prompts, int(gen.config.get("max_len", 32)),
                               guidance=guidance, steps=steps, seed=seed, sampler=sampler, batch_size=batch_size,
                               on_batch=bar.update)
    finally:
        bar.close()


def truncated_prompts(gen: TrainedModel, prompts: Sequence[str]) -> int:
    """How many prompts are longer than the generator reads (its ``max_len`` tokens)."""
    max_len = int(gen.config.get("max_len", 32))
    return sum(len(gen.artifacts.encode(p)) > max_len for p in prompts)


# ------------------------------------------------------------------------------------------------ pixels


@torch.no_grad()
def record_pixels(records: Sequence[Record], gen: TrainedModel, batch_size: int = 256,
                  desc: str = "") -> Tensor:
    """The records' images as the generator is trained to draw them: its evaluation transform, in [0, 1],
    ``(N, 3, S, S)``."""
    tf = gen.transform_cfg
    loader = build_loader(ImageTextSamples(records, build_transform(tf, train=False), unit="image"), batch_size)
    out = [to_unit_range(to_model_range(b["image"], tf)) for b in progress(loader, desc=desc, unit="batch")]
    return torch.cat(out) if out else torch.empty(0, 3, tf.image_size, tf.image_size)


# ------------------------------------------------------------------------------------------------- judge


@torch.no_grad()
def judge_pixels(judge: TrainedModel, images: Tensor, batch_size: int = 128) -> Tensor:
    """Normalised judge embeddings ``(N, E)`` of images ``(N, 3, H, W)`` in [0, 1]: each is made an 8-bit PIL
    image and then prepared by the judge's own (evaluation) transform, as any picture given to it."""
    transform, device = judge.transform, model_device(judge.model)
    out = [torch.empty(0, int(judge.model.embed_dim))]
    for start in range(0, len(images), batch_size):
        x = torch.stack([transform(to_pil(im)) for im in images[start:start + batch_size]])  # (B, 3, S', S')
        out.append(judge.model.encode_image(x.to(device)).float().cpu())
    return torch.cat(out)


def alignment(image_emb: Tensor, text_emb: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """Image ``i`` ranks every text; text ``i`` is its own. ``R@k``, ``mean_cosine`` of the matched pairs and
    the 1-based ``ranks`` (ties go in favour of the image, as in :mod:`vislang.metrics.retrieval`)."""
    sim = (image_emb @ text_emb.T).numpy()                                             # (N, N)
    scores = retrieval_scores_from_similarity(sim, np.arange(len(text_emb)), ks)
    out: dict[str, Any] = {f"R@{k}": scores.image_to_text[f"R@{k}"] for k in ks}
    out["mean_cosine"] = float(np.diag(sim).mean())
    out["ranks"] = scores.image_ranks.tolist()
    out["cosines"] = np.diag(sim).tolist()
    return out


# --------------------------------------------------------------------------------------- memorisation


def nearest_pixels(queries: Tensor, bank: Tensor, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Root-mean-square pixel distance (images in [0, 1], so in [0, 1]) of each query ``(N, 3, S, S)`` to its
    nearest image of ``bank`` ``(M, 3, S, S)``, and that image's index."""
    if queries.shape[1:] != bank.shape[1:]:
        raise VislangError(f"cannot compare images of shape {tuple(queries.shape[1:])} and {tuple(bank.shape[1:])}")
    b = bank.flatten(1).double()                                                       # (M, D)
    dist, idx = [], []
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk].flatten(1).double()                           # (C, D)
        d = torch.cdist(q, b, compute_mode="donot_use_mm_for_euclid_dist")              # (C, M), exact
        best = d.min(dim=1)
        dist.append(best.values)
        idx.append(best.indices)
    scale = math.sqrt(b.shape[1])
    return (torch.cat(dist) / scale).numpy(), torch.cat(idx).numpy()


def nearest_features(queries: Tensor, bank: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distance ``1 - cos`` of each normalised embedding ``(N, E)`` to its nearest in ``bank`` ``(M, E)``,
    and that one's index."""
    best = (queries @ bank.T).max(dim=1)                                               # (N,)
    return (1.0 - best.values.double()).clamp(min=0.0).numpy(), best.indices.numpy()


def memorisation(px: np.ndarray, feat: np.ndarray, held_px: np.ndarray, held_feat: np.ndarray) -> dict[str, float]:
    """Medians of the nearest-training distances, and the share of them below the 5th percentile of held-out
    real images' (a sample that close to a training image is closer than 95 % of unseen real pictures are)."""
    return {"median_px": float(np.median(px)), "median_feat": float(np.median(feat)),
            "below_heldout_p5_px": float(np.mean(px < np.percentile(held_px, 5))),
            "below_heldout_p5_feat": float(np.mean(feat < np.percentile(held_feat, 5)))}


# ---------------------------------------------------------------------------- the nearest-caption baseline

BASELINE_METHOD = ("TF-IDF cosine between the prompt and every training caption (lower-cased words, smoothed "
                   "IDF over the training captions); the image of the nearest caption is returned, at the "
                   "generator's resolution. Neither the judge's nor the generator's text tower is used.")

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words."""
    return _WORD.findall(text.lower())


class NearestCaption:
    """Retrieve the training record whose caption is nearest a prompt by TF-IDF cosine (ties: the first).

    Args:
        records: The training records; every caption of each one is a candidate.
    """

    def __init__(self, records: Sequence[Record]):
        self.owner: list[int] = []
        self.captions: list[str] = []
        docs: list[Counter] = []
        for i, r in enumerate(records):
            for c in r.captions:
                self.owner.append(i)
                self.captions.append(c)
                docs.append(Counter(words(c)))
        if not docs:
            raise VislangError("the training split has no captions to retrieve from")
        df = Counter(w for d in docs for w in d)
        n = len(docs)
        self.idf = {w: math.log((1 + n) / (1 + k)) + 1.0 for w, k in df.items()}
        self.postings: dict[str, list[tuple[int, float]]] = {}
        for j, d in enumerate(docs):
            vec = {w: c * self.idf[w] for w, c in d.items()}
            norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
            for w, v in vec.items():
                self.postings.setdefault(w, []).append((j, v / norm))

    def nearest(self, prompt: str) -> tuple[int, str, float]:
        """``(record index, caption, cosine)`` of the nearest training caption (the first caption when no word
        is shared)."""
        q = {w: c * self.idf[w] for w, c in Counter(words(prompt)).items() if w in self.idf}
        norm = math.sqrt(sum(v * v for v in q.values())) or 1.0
        scores = np.zeros(len(self.captions))
        for w, v in q.items():
            idx, weights = zip(*self.postings[w])
            np.add.at(scores, np.array(idx), np.array(weights) * v / norm)
        j = int(np.argmax(scores))
        return self.owner[j], self.captions[j], float(scores[j])
