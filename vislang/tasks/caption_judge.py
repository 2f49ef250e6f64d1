"""Choosing a retrieval-augmented captioner's caption with a joint image-text space (CLIP-style reranking).

A retrieval-augmented captioner (``caption_rag``) keeps its training captions in a memory. The judge gives each
image a short list of whole captions: the captioner's own and the distinct captions of the image's nearest
training images, found twice: the ``neighbours`` nearest memory entries in the captioner's encoder space, and,
when the judge has a :class:`JudgeMemory` (the same training images embedded in its joint space), the
``neighbours`` nearest in the joint space. Each candidate gets one neighbour similarity from the two
(:meth:`CaptionJudge.fuse`: their sum where the judge recognises the drawing, else the larger), and the judge
keeps the one with the best

    score = neighbour similarity + weight * joint similarity(image, caption)

where the joint similarity comes from a trained dual encoder (a retrieval run, e.g. the demo's search model) and
the captioner's own caption, unless it is one of the neighbours' captions, takes the nearest neighbour's
similarity minus ``margin``. With ``weight`` 0, a positive margin and no judge memory this is the
nearest-training-image caption. The joint space, trained to match drawings in every training style to their
captions, finds the same concept drawn in a new style more often than the captioner's encoder; the captioner's
encoder finds the nearer look-alikes of concepts neither has seen. How the defaults were chosen (on validation):
``docs/results.md``.

```python
captioner = vislang.load("runs/demo")                        # a caption_rag run
captioner.judge = CaptionJudge.load("runs/demo/search")      # a retrieval run (with its judge memory, if built)
captioner.caption(["cat.png"], beam=3, length_penalty=1.5)   # judged captions
```

A judge memory is built once from the training records and kept in the retrieval model's folder
(``judge_memory.safetensors``, checksummed; the demo builds it)::

    CaptionJudge.load("runs/demo/search").build_memory(vislang.load_dataset("emoji", "train").records)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislang.data.records import Record
from vislang.data.text import Vocabulary
from vislang.decoding import Decoded
from vislang.errors import VislangError
from vislang.models.caption_rag import memory_captions
from vislang.models.encoders import read_tensors, save_tensors
from vislang.tasks.base import TrainedModel, load_trained
from vislang.tasks.caption import memory_row, score_captions
from vislang.tasks.retrieval_embed import embed_record_images, embed_texts, model_fingerprint

# Chosen on validation (new concepts and the validation style; docs/results.md, "Captioning demo").
JUDGE_WEIGHT = 0.02
JUDGE_MARGIN = 0.01
JUDGE_NEIGHBOURS = 10
_SHORTLIST = 50     # memory entries looked at to find ``neighbours`` distinct captions
_CACHE_SIZE = 50_000  # text embeddings kept (the memory's captions are met again and again)
MEMORY_FILE = "judge_memory.safetensors"  # a judge memory, in the folder of the weights that embedded it


@dataclass
class JudgeMemory:
    """Training images in the judge's joint space, each with its first caption: the judge's own nearest training
    images (beside the captioner's, found in its encoder space).

    Attributes:
        keys: L2-normalised joint-space image embeddings (M, E).
        captions: The first caption of each image.
        model: Fingerprint of the weights that embedded them (:func:`model_fingerprint`).
    """

    keys: Tensor
    captions: list[str]
    model: str

    def save(self, path: str | os.PathLike) -> None:
        """Write the memory to a ``.safetensors`` file atomically (checksummed; captions in its header)."""
        save_tensors({"keys": self.keys.float()}, path,
                     {"captions": json.dumps(self.captions, ensure_ascii=False), "model": self.model})

    @classmethod
    def read(cls, path: str | os.PathLike) -> JudgeMemory:
        """Read a memory :meth:`save` wrote.

        Raises:
            VislangError: The file is corrupt or partial, or not a judge memory.
        """
        tensors, meta = read_tensors(path)
        try:
            captions, keys = json.loads(meta["captions"]), tensors["keys"]
        except (KeyError, ValueError):
            raise VislangError(f"{path}: not a caption judge memory (no keys tensor or captions header)") from None
        if not isinstance(captions, list) or keys.ndim != 2 or len(captions) != len(keys):
            raise VislangError(f"{path}: not a caption judge memory ({len(keys)} keys, captions "
                               f"{type(captions).__name__} of {len(captions)})")
        return cls(keys, [str(c) for c in captions], meta.get("model", ""))


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
                 neighbours: int = JUDGE_NEIGHBOURS, memory: JudgeMemory | None = None):
        if space.spec.name != "retrieval":
            raise VislangError(f"{space.folder}: a caption judge needs a retrieval model (a dual encoder), "
                               f"not a {space.spec.name} model")
        if neighbours < 1:
            raise VislangError(f"judge neighbours must be at least 1, got {neighbours}")
        self.space, self.weight, self.margin, self.neighbours = space, weight, margin, neighbours
        self.memory = memory
        if memory is not None and memory.model != self.fingerprint:
            raise VislangError(f"{space.folder / MEMORY_FILE}: the judge memory was embedded by other weights "
                               f"({memory.model}, not {self.fingerprint}); build it again (build_memory)")
        self._texts: dict[str, Tensor] = {}  # caption -> joint-space embedding (E,)
        self._encoded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # vocabulary -> memory tokens
        self._lock = threading.Lock()          # one judge may serve several captioners' worker threads

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", **options) -> CaptionJudge:
        """Open a retrieval run or model folder as a judge, with the judge memory kept in its folder if there
        is one (``options``: weight, margin, neighbours)."""
        space = load_trained(path, "retrieval", device=device)
        file = space.folder / MEMORY_FILE
        return cls(space, memory=JudgeMemory.read(file) if file.is_file() else None, **options)

    @property
    def fingerprint(self) -> str:
        """The id of the judge's weights (a judge memory records the one that embedded it)."""
        return model_fingerprint(self.space.folder, self.space.config)

    def build_memory(self, records: Sequence[Record], save: bool = True) -> JudgeMemory:
        """Embed the training ``records``' images (each with its first caption) as the judge's memory, and keep
        it in the judge's folder (``judge_memory.safetensors``) when ``save``."""
        records = [r for r in records if r.captions]
        if not records:
            raise VislangError("a judge memory needs training images with captions; none were given")
        print(f"the judge embeds {len(records)} training images ...", file=sys.stderr, flush=True)
        self.memory = JudgeMemory(self.embed_records(records), [r.captions[0] for r in records], self.fingerprint)
        self._encoded = weakref.WeakKeyDictionary()
        if save:
            self.memory.save(self.space.folder / MEMORY_FILE)
        return self.memory

    @staticmethod
    def can_judge(model: nn.Module) -> bool:
        """Whether ``model`` is a captioner the judge can serve: retrieval-augmented, with a memory of training
        captions (an exported one keeps no memory)."""
        return hasattr(model, "memory_keys")

    def describe(self) -> str:
        """One line: which joint space, with which settings."""
        images = f"its memory of {len(self.memory.captions)} images" if self.memory else "no judge memory"
        return (f"judged by {self.space.folder} (weight {self.weight:g}, margin {self.margin:g}, "
                f"{self.neighbours} neighbours, {images})")

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

    def nearest_captions(self, image_emb: Tensor) -> list[str]:
        """For each image (its joint-space embedding, ``image_emb`` (N, E)), the first caption of its nearest
        judge-memory image: the nearest-training-image baseline in the judge's space (needs a judge memory)."""
        if self.memory is None:
            raise VislangError(f"{self.space.folder}: the judge has no memory of training images (build_memory)")
        return [self.memory.captions[j] for j in (image_emb @ self.memory.keys.T).argmax(1).tolist()]

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
        lists = self.shortlists(model, feats.pooled, decoded.tokens, vocab, image_emb)
        choices = self.pick(lists, self.joint_similarities(lists, image_emb))
        chosen = [lst.tokens[c.index] for lst, c in zip(lists, choices)]
        return score_captions(model, feats, chosen, decoded, max_len, images.device), [c.choice for c in choices]

    def shortlists(self, model: nn.Module, pooled: Tensor, own: list[list[int]], vocab: Vocabulary,
                   image_emb: Tensor | None = None) -> list[Shortlist]:
        """Each image's candidates: the distinct captions of its ``neighbours`` nearest memory entries and, with a
        judge memory and the images' joint-space embeddings ``image_emb`` (B, E), of its ``neighbours`` nearest
        judge-memory images (their similarities fused by :meth:`fuse`), most similar first; then its own caption
        (``pooled``: the captioner's pooled image features (B, D); ``own``: its captions' tokens)."""
        if not self.can_judge(model):
            raise VislangError("a caption judge needs a retrieval-augmented captioner (caption_rag): its memory "
                               "holds the training captions it chooses among")
        sims = F.normalize(pooled.float(), dim=-1) @ model.memory_keys.T                       # (B, M)
        top, rows = sims.topk(min(_SHORTLIST, sims.shape[1]), dim=1)                            # (B, K)
        memory = memory_captions(model.memory_tokens[rows].tolist(), model.pad_id, model.eos_id)
        judged = (self._judge_memory_neighbours(image_emb, model, vocab)
                  if self.memory is not None and image_emb is not None else None)
        out = []
        for i, caps in enumerate(memory):
            nearest = self._distinct((vocab.decode(t), t, s) for t, s in zip(caps, top[i].tolist()))
            if judged is not None:
                nearest = self.fuse(nearest, self._distinct(judged[i]))
            ranked = sorted(nearest.items(), key=lambda kv: -kv[1][1])  # stable: the captioner's first on ties
            texts = [t for t, _ in ranked]
            mine = vocab.decode(own[i])
            out.append(Shortlist([*texts, mine], [t for _, (t, _) in ranked] + [own[i]],
                                 [s for _, (_, s) in ranked], texts.index(mine) if mine in nearest else None))
        return out

    def _distinct(self, found: Iterable[tuple[str, list[int], float]]) -> dict[str, tuple[list[int], float]]:
        """The first ``neighbours`` distinct captions of ``found`` (text, tokens, similarity; most similar first),
        each with its tokens and its best similarity."""
        out: dict[str, tuple[list[int], float]] = {}
        for text, tokens, sim in found:
            out.setdefault(text, (tokens, sim))
            if len(out) == self.neighbours:
                break
        return out

    @staticmethod
    def fuse(encoder: dict[str, tuple[list[int], float]], joint: dict[str, tuple[list[int], float]]
             ) -> dict[str, tuple[list[int], float]]:
        """One neighbour similarity per caption from the captioner's neighbours and the judge's (caption ->
        (tokens, similarity of its nearest image)).

        When the judge's nearest image is at least as similar as the captioner's (the judge recognises the
        drawing), a caption scores the sum of its two similarities, one the list lacks counting as that list's
        least: both spaces must agree. Otherwise it scores the larger of the two (the captioner's encoder finds
        the nearer drawings of concepts the judge does not recognise).
        """
        if not joint:
            return encoder
        if max(s for _, s in joint.values()) < max(s for _, s in encoder.values()):
            return {t: max(encoder.get(t, ([], -math.inf)), joint.get(t, ([], -math.inf)), key=lambda v: v[1])
                    for t in {**encoder, **joint}}
        low_e, low_j = min(s for _, s in encoder.values()), min(s for _, s in joint.values())
        return {t: ((encoder.get(t) or joint[t])[0], encoder.get(t, ([], low_e))[1] + joint.get(t, ([], low_j))[1])
                for t in {**encoder, **joint}}

    def _judge_memory_neighbours(self, image_emb: Tensor, model: nn.Module, vocab: Vocabulary
                                 ) -> list[list[tuple[str, list[int], float]]]:
        """Each image's nearest judge-memory images (text, tokens, similarity), most similar first; captions with
        a word the captioner's vocabulary lacks are left out (the captioner could not score them)."""
        keys = self.memory.keys.to(image_emb.device)
        sims = F.normalize(image_emb.float(), dim=-1) @ keys.T                                    # (B, M)
        top, rows = sims.topk(min(_SHORTLIST, sims.shape[1]), dim=1)                             # (B, K)
        tokens = self._memory_tokens(vocab, model.memory_tokens.shape[1], model.eos_id)
        return [[(vocab.decode(tokens[r]), tokens[r], s) for r, s in zip(row, sim) if tokens[r] is not None]
                for row, sim in zip(rows.tolist(), top.tolist())]

    def _memory_tokens(self, vocab: Vocabulary, length: int, eos_id: int) -> list[list[int] | None]:
        """The judge memory's captions as the captioner's memory holds its own (``length`` tokens with EOS,
        cut before it), None where a word is unknown; encoded once per vocabulary."""
        with self._lock:
            per_vocab = self._encoded.setdefault(vocab, {})
            if length not in per_vocab:
                rows = [[memory_row(vocab, caption, length) for caption in self.memory.captions]]
                (encoded,) = memory_captions(rows, vocab.pad_id, eos_id)
                per_vocab[length] = [None if vocab.unk_id in ids or not ids else ids for ids in encoded]
            return per_vocab[length]

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
        """The best candidate of each shortlist by ``neighbour similarity + weight * joint similarity``; the own
        caption's neighbour similarity is its neighbour's when it is one, else the nearest's minus ``margin``."""
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
    """One image's candidates: the distinct captions of its nearest training images, most similar first, then its
    own.

    Attributes:
        captions: The candidates' text (the own caption last).
        tokens: Their token ids.
        sims: The neighbours' similarities to the image (one fewer than ``captions``; most similar first).
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
