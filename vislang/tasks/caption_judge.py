"""Choosing a retrieval-augmented captioner's caption with a joint image-text space (CLIP-style reranking).

A retrieval-augmented captioner (``caption_rag``) keeps its training captions in a memory. The judge gives each
image a short list of whole captions: the captioner's own and the distinct captions of the image's
``neighbours`` nearest memory entries (in the captioner's encoder space, nearest first), and keeps the one with
the best

    score = encoder similarity + weight * joint similarity(image, caption)

where the joint similarity comes from a trained dual encoder (a retrieval run, e.g. the demo's search model) and
the captioner's own caption, unless it is one of the neighbours' captions, takes the nearest neighbour's encoder
similarity minus ``margin``. With ``weight`` 0 and a positive margin this is the nearest-training-image caption;
the joint space lets a caption that fits the image better win over a nearer drawing's, and lets a composed
caption win where no neighbour's fits. How the defaults were chosen (on validation): ``docs/results.md``.

```python
captioner = vislang.load("runs/demo")                        # a caption_rag run
captioner.judge = CaptionJudge.load("runs/demo/search")      # a retrieval run
captioner.caption(["cat.png"], beam=3, length_penalty=1.5)   # judged captions
```
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislang.data.records import Record
from vislang.data.text import Vocabulary
from vislang.decoding import Decoded
from vislang.errors import VislangError
from vislang.models.caption_rag import memory_captions
from vislang.tasks.base import TrainedModel, load_trained
from vislang.tasks.caption import score_captions
from vislang.tasks.retrieval_embed import embed_record_images, embed_texts

# Chosen on validation (new concepts and the validation style; docs/results.md, "Captioning demo").
JUDGE_WEIGHT = 0.25
JUDGE_MARGIN = 0.02
JUDGE_NEIGHBOURS = 10
_SHORTLIST = 50     # memory entries looked at to find ``neighbours`` distinct captions
_CACHE_SIZE = 50_000  # text embeddings kept (the memory's captions are met again and again)


@dataclass
class JudgeChoice:
    """What the judge chose for one image.

    Attributes:
        caption: The chosen caption.
        own: Whether it is the captioner's own caption (not a neighbour's).
        score: Its judge score.
    """

    caption: str
    own: bool
    score: float


class CaptionJudge:
    """Chooses each image's caption among the captioner's own and its nearest training images' captions.

    Args:
        space: An opened retrieval model (dual encoder): its image and text embeddings are the joint space.
        weight: Weight of the joint image-caption similarity beside the encoder similarity.
        margin: How much less than the nearest neighbour's encoder similarity the captioner's own caption gets.
        neighbours: Distinct neighbour captions per image.
    """

    def __init__(self, space: TrainedModel, weight: float = JUDGE_WEIGHT, margin: float = JUDGE_MARGIN,
                 neighbours: int = JUDGE_NEIGHBOURS):
        if space.spec.name != "retrieval":
            raise VislangError(f"{space.folder}: a caption judge needs a retrieval model (a dual encoder), "
                               f"not a {space.spec.name} model")
        if neighbours < 1:
            raise VislangError(f"judge neighbours must be at least 1, got {neighbours}")
        self.space, self.weight, self.margin, self.neighbours = space, weight, margin, neighbours
        self._texts: dict[str, Tensor] = {}  # caption -> joint-space embedding (E,)
        self._lock = threading.Lock()          # one judge may serve several captioners' worker threads

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", **options) -> CaptionJudge:
        """Open a retrieval run or model folder as a judge (``options``: weight, margin, neighbours)."""
        return cls(load_trained(path, "retrieval", device=device), **options)

    @staticmethod
    def can_judge(model: nn.Module) -> bool:
        """Whether ``model`` is a captioner the judge can serve: retrieval-augmented, with a memory of training
        captions (an exported one keeps no memory)."""
        return hasattr(model, "memory_keys")

    def describe(self) -> str:
        """One line: which joint space, with which settings."""
        return (f"judged by {self.space.folder} (weight {self.weight:g}, margin {self.margin:g}, "
                f"{self.neighbours} neighbours)")

    @property
    def transform(self):
        """The judge's image preprocessing (PIL image -> tensor)."""
        return self.space.transform

    def same_preprocessing(self, other: TrainedModel) -> bool:
        """Whether ``other``'s preprocessed images can be given to the judge as they are."""
        return self.space.transform_cfg.evaluation_settings() == other.transform_cfg.evaluation_settings()

    @torch.no_grad()
    def embed_images(self, images: Tensor) -> Tensor:
        """Joint-space embeddings ``(B, E)`` (float32, CPU) of images preprocessed by :attr:`transform`."""
        model = self.space.model
        return model.encode_image(images.to(next(model.parameters()).device)).float().cpu()

    def embed_records(self, records: Sequence[Record]) -> Tensor:
        """Joint-space embeddings ``(N, E)`` of the records' images."""
        return embed_record_images(self.space.model, records, self.transform)

    def _embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Joint-space embeddings ``(N, E)`` of ``texts``, each embedded once while it stays in the cache."""
        with self._lock:
            new = sorted({t for t in texts if t not in self._texts})
            if new:
                if len(self._texts) + len(new) > _CACHE_SIZE:
                    self._texts.clear()
                emb = embed_texts(self.space.model, self.space.artifacts, new,
                                  int(self.space.config.get("max_len", 64)))                     # (n, E)
                self._texts.update(zip(new, emb))
            return torch.stack([self._texts[t] for t in texts])                                 # (N, E)

    @torch.no_grad()
    def choose(self, model: nn.Module, images: Tensor, decoded: Decoded, image_emb: Tensor, vocab: Vocabulary,
               max_len: int) -> tuple[Decoded, list[JudgeChoice]]:
        """The judge's caption for each image, scored and with its attention as the captioner reads it.

        Args:
            model: A retrieval-augmented captioner (with a memory of training captions).
            images: The batch as the captioner preprocesses it (B, 3, S, S).
            decoded: The captioner's own captions of the batch.
            image_emb: The batch's joint-space embeddings (B, E) (:meth:`embed_images`).
            vocab: The captioner's vocabulary.
            max_len: Longest caption in tokens.
        """
        feats = model.encode(images)
        lists = self.shortlists(model, feats.pooled, decoded.tokens, vocab)
        choices = self.pick(lists, self.joint_similarities(lists, image_emb))
        chosen = [lst.tokens[c.index] for lst, c in zip(lists, choices)]
        return score_captions(model, feats, chosen, decoded, max_len, images.device), [c.choice for c in choices]

    def shortlists(self, model: nn.Module, pooled: Tensor, own: list[list[int]], vocab: Vocabulary) -> list[Shortlist]:
        """Each image's candidates: its ``neighbours`` nearest memory entries' distinct captions, then its own
        caption (``pooled``: the captioner's pooled image features (B, D); ``own``: its captions' tokens)."""
        if not self.can_judge(model):
            raise VislangError("a caption judge needs a retrieval-augmented captioner (caption_rag): its memory "
                               "holds the training captions it chooses among")
        sims = F.normalize(pooled.float(), dim=-1) @ model.memory_keys.T                       # (B, M)
        top, rows = sims.topk(min(_SHORTLIST, sims.shape[1]), dim=1)                            # (B, K)
        memory = memory_captions(model.memory_tokens[rows].tolist(), model.pad_id, model.eos_id)
        out = []
        for i, caps in enumerate(memory):
            nearest: dict[str, tuple[list[int], float]] = {}
            for toks, s in zip(caps, top[i].tolist()):
                nearest.setdefault(vocab.decode(toks), (toks, s))
                if len(nearest) == self.neighbours:
                    break
            mine = vocab.decode(own[i])
            out.append(Shortlist([*nearest, mine], [t for t, _ in nearest.values()] + [own[i]],
                                 [s for _, s in nearest.values()], list(nearest).index(mine) if mine in nearest
                                 else None))
        return out

    def joint_similarities(self, lists: list[Shortlist], image_emb: Tensor) -> list[list[float]]:
        """Each candidate's joint-space similarity to its image (``image_emb``: (B, E))."""
        texts = [c for lst in lists for c in lst.captions]
        counts = torch.tensor([len(lst.captions) for lst in lists])
        flat = (self._embed_texts(texts) * image_emb.repeat_interleave(counts, dim=0)).sum(-1).tolist()   # (C,)
        out, k = [], 0
        for n in counts.tolist():
            out.append(flat[k:k + n])
            k += n
        return out

    def pick(self, lists: list[Shortlist], joint: list[list[float]]) -> list[_Pick]:
        """The best candidate of each shortlist by ``encoder similarity + weight * joint similarity``; the own
        caption's encoder similarity is its neighbour's when it is one, else the nearest's minus ``margin``."""
        picks = []
        for lst, js in zip(lists, joint):
            own = lst.sims[lst.own_is] if lst.own_is is not None else lst.sims[0] - self.margin
            scores = [s + self.weight * j for s, j in zip([*lst.sims, own], js)]
            best = max(range(len(scores)), key=scores.__getitem__)  # ties: the nearer neighbour
            is_own = best == len(lst.sims) and lst.own_is is None
            picks.append(_Pick(best, JudgeChoice(lst.captions[best], is_own, scores[best])))
        return picks


@dataclass
class Shortlist:
    """One image's candidates: the distinct captions of its nearest memory entries, nearest first, then its own.

    Attributes:
        captions: The candidates' text (the own caption last).
        tokens: Their token ids.
        sims: The neighbours' encoder similarities (one fewer than ``captions``).
        own_is: Which neighbour the own caption is, or None.
    """

    captions: list[str]
    tokens: list[list[int]]
    sims: list[float]
    own_is: int | None


@dataclass
class _Pick:
    index: int
    choice: JudgeChoice


def add_judge_args(p: argparse.ArgumentParser) -> None:
    """``--judge RUN`` and its settings, for the commands that caption with a retrieval-augmented run."""
    p.add_argument("--judge", metavar="RUN",
                   help="choose each caption among the model's own and its nearest training images' captions "
                        "with this retrieval run's joint image-text space (caption_rag models; e.g. the demo's "
                        "runs/demo/search)")
    p.add_argument("--judge-weight", type=float, default=JUDGE_WEIGHT, metavar="W",
                   help=f"weight of the joint image-caption similarity (default {JUDGE_WEIGHT:g})")
    p.add_argument("--judge-margin", type=float, default=JUDGE_MARGIN, metavar="M",
                   help="the model's own caption gets the nearest neighbour's encoder similarity minus M "
                        f"(default {JUDGE_MARGIN:g})")
    p.add_argument("--judge-neighbours", type=int, default=JUDGE_NEIGHBOURS, metavar="K",
                   help=f"distinct neighbour captions per image (default {JUDGE_NEIGHBOURS})")


def judge_from_args(args: argparse.Namespace) -> CaptionJudge | None:
    """The judge the ``--judge`` options name, or None."""
    if not getattr(args, "judge", None):
        return None
    return CaptionJudge.load(args.judge, weight=args.judge_weight, margin=args.judge_margin,
                             neighbours=args.judge_neighbours)
