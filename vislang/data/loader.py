"""Torch datasets over records, a padding collate, and a deterministically seeded DataLoader."""

from __future__ import annotations

import random
import sys
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vislang.data.images import WHITE, Color, load_image
from vislang.data.records import Record
from vislang.data.shards import shard_of
from vislang.data.text import TextTokenizer
from vislang.data.transforms import seeded
from vislang.errors import ImageError
from vislang.utils.tensors import pad_sequences

Unit = Literal["image", "caption", "image_caption", "qa"]


def record_key(rec: Record, key: str) -> str:
    """``rec.meta[key]`` as a string, or the record's id when it has no such field (a group of its own)."""
    return str(rec.meta.get(key, rec.id))


class ImageTextSamples(Dataset):
    """Records flattened into training samples.

    Args:
        records: The records.
        transform: PIL RGB image -> ``(3, H, W)`` tensor.
        unit: ``"image"``: one sample per record (all captions as strings, for evaluation);
            ``"caption"``: one per (record, caption); ``"image_caption"``: one per record with one of its
            captions, drawn afresh with the sample's seed (the first caption when unseeded), as contrastive
            training wants each image once per batch; ``"qa"``: one per (record, question).
        tokenizer: Encodes ``text`` (and ``question``) into ``tokens`` (``question_tokens``) when given.
        max_len: Truncate token sequences to this length (BOS/EOS included).
        background: Colour under transparent pixels.
        skip_bad: Drop samples whose image fails to decode (the collate leaves them out, with a warning)
            instead of raising.
        group_key: Add ``group``, the record's ``meta[group_key]`` (its id when absent), e.g. ``"concept"``
            so a contrastive loss can tell which other samples are not negatives.
        batch_group_key: Shuffle the samples of records with equal ``meta[batch_group_key]`` (their id when
            absent) into the same batches, in runs of at most ``batch_group_run`` (``sampling_groups`` and
            ``sampling_group_run``, read by :func:`build_loader`), e.g. ``"base"``: skin-tone and gender
            variants of an emoji together, as hard negatives of each other.
        batch_group_run: Longest run of one group's samples (None: the whole group).

    Each sample is a dict with ``image`` ``(3, H, W)``, ``index`` (the record index), ``id`` and, by unit,
    ``text``/``tokens``, ``captions``, ``question``/``question_tokens``/``answers``/``question_type``,
    ``label`` when the record has one and ``group`` with ``group_key``.
    """

    def __init__(self, records: Sequence[Record], transform: Callable[[Any], torch.Tensor], unit: Unit = "caption",
                 tokenizer: TextTokenizer | None = None, max_len: int = 32, background: Color = WHITE,
                 skip_bad: bool = False, group_key: str | None = None, batch_group_key: str | None = None,
                 batch_group_run: int | None = None):
        if unit not in ("image", "caption", "image_caption", "qa"):
            raise ValueError(f"unit must be 'image', 'caption', 'image_caption' or 'qa', not {unit!r}")
        self.records, self.transform, self.unit = list(records), transform, unit
        self.tokenizer, self.max_len, self.background, self.skip_bad = tokenizer, max_len, background, skip_bad
        self.group_key = group_key
        if unit == "image":
            self.index = [(i, 0) for i in range(len(self.records))]
        elif unit == "caption":
            self.index = [(i, j) for i, r in enumerate(self.records) for j in range(len(r.captions))]
        elif unit == "image_caption":
            self.index = [(i, 0) for i, r in enumerate(self.records) if r.captions]
        else:
            self.index = [(i, j) for i, r in enumerate(self.records) for j in range(len(r.qa))]
        self.sampling_groups: list[str] | None = None
        self.sampling_group_run = batch_group_run
        if batch_group_key is not None:
            self.sampling_groups = [record_key(self.records[i], batch_group_key) for i, _ in self.index]
        # records read from WebDataset shards: the sampler deals whole shards to ranks and loader workers
        shards = [shard_of(self.records[i]) for i, _ in self.index]
        self.sampling_shards: list[str] | None = shards if shards and None not in shards else None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | None:
        """Sample ``key``, or ``(key, seed)`` as :class:`SeededSampler` yields: random transforms then
        draw from a generator seeded with ``seed``, the same in any worker."""
        k, seed = key if isinstance(key, tuple) else (key, None)
        i, j = self.index[k]
        rec = self.records[i]
        try:
            image = load_image(rec.image, self.background)
            if seed is None:
                image = self.transform(image)
            else:
                with seeded(seed):
                    image = self.transform(image)
        except ImageError as e:
            if not self.skip_bad:
                raise
            print(f"warning: skipping sample: {e}", file=sys.stderr)
            return None
        out: dict[str, Any] = {"image": image, "index": i, "id": rec.id}
        if seed is not None:
            out["seed"] = seed  # a task's own per-sample draws (e.g. diffusion noise) start from it
        if rec.label is not None:
            out["label"] = rec.label
        if self.group_key is not None:
            out["group"] = record_key(rec, self.group_key)
        if self.unit == "image":
            out["captions"] = list(rec.captions)
        elif self.unit in ("caption", "image_caption"):
            if self.unit == "image_caption" and seed is not None:
                j = random.Random(seed).randrange(len(rec.captions))
            out["text"] = rec.captions[j]
            if self.tokenizer is not None:
                out["tokens"] = torch.tensor(self.tokenizer.encode(out["text"], max_len=self.max_len))
        else:
            qa = rec.qa[j]
            out.update(question=qa.question, answers=list(qa.answers), question_type=qa.question_type)
            if self.tokenizer is not None:
                out["question_tokens"] = torch.tensor(self.tokenizer.encode(qa.question, max_len=self.max_len))
        return out


class PadCollate:
    """Batch samples: stack images ``(B, 3, H, W)``, right-pad 1-D token tensors to ``(B, T)`` with
    ``pad_id`` and add ``<key>_lengths`` ``(B,)``, turn ints into tensors, keep everything else as lists.
    Samples that are ``None`` (skipped bad images) are left out."""

    def __init__(self, pad_id: int = 0):
        self.pad_id = pad_id

    def __call__(self, samples: list[dict[str, Any] | None]) -> dict[str, Any]:
        samples = [s for s in samples if s is not None]
        if not samples:
            return {}
        batch: dict[str, Any] = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            v0 = values[0]
            if key == "image":
                batch[key] = torch.stack(values)  # (B, 3, H, W)
            elif isinstance(v0, torch.Tensor) and v0.dim() == 1:
                batch[key], batch[f"{key}_lengths"] = pad_sequences(values, self.pad_id)  # (B, T), (B,)
            elif isinstance(v0, int) and not isinstance(v0, bool):
                batch[key] = torch.tensor(values)
            else:
                batch[key] = values
        return batch


class SeededSampler(Sampler):
    """Yields ``(index, seed)``: the order (shuffled or not) and one augmentation seed per sample, both
    drawn from ``generator`` in the main process, so batches and augmentations do not depend on the number
    of workers, and every epoch draws new ones.

    With ``groups`` (one key per sample), a shuffled order keeps related samples next to each other: each
    key's samples are shuffled and cut into runs of at most ``group_run`` (all of them when None), and the
    runs come in random order. A batch then holds a few samples of one key among many others (for a
    contrastive loss: hard negatives, e.g. several skin-tone variants of one emoji, and easy ones).

    To resume mid-epoch, keep :meth:`state_dict` from before the epoch's pass and later give it back with
    ``start`` set to the number of samples already consumed: the next pass draws the same order and seeds
    and begins at that sample.

    With ``world_size`` > 1 (several processes, one sampler each, equally seeded) the order is cut into global
    batches of ``batch_size * world_size`` samples and rank ``r`` yields the ``r``-th ``batch_size`` slice of
    each: the ranks' slices are disjoint, cover each epoch once, and a global batch holds the same samples
    (with the same seeds) whatever the number of ranks. ``start`` counts samples of the global order.

    With ``shards`` (the shard file of each sample; WebDataset data) the order streams whole shards: each
    epoch the shards are shuffled and dealt in turn to rank ``j % world_size`` and, within a rank, to loader
    worker ``(j // world_size) % workers``; each shard's samples are shuffled, and the slice of rank ``r`` in
    global batch ``g`` comes from the stream of its worker ``g % workers`` (the worker a DataLoader gives that
    batch), so every shard is read by one worker of one rank. A stream that runs out is topped up from the
    rank's other streams, then from other ranks' (the epoch's last batches). Unlike the plain order, this
    one depends on the number of ranks and workers (and ``groups`` are not used); with a single shard it is
    the plain order.
    """

    def __init__(self, n: int, shuffle: bool, generator: torch.Generator, groups: Sequence[Hashable] | None = None,
                 group_run: int | None = None, *, rank: int = 0, world_size: int = 1, batch_size: int = 1,
                 shards: Sequence[Hashable] | None = None, workers: int = 0):
        if groups is not None and len(groups) != n:
            raise ValueError(f"{len(groups)} sampling groups for {n} samples")
        if group_run is not None and group_run < 1:
            raise ValueError(f"group_run must be >= 1, got {group_run}")
        if world_size < 1 or not 0 <= rank < world_size or batch_size < 1:
            raise ValueError(f"bad sampler shard: rank {rank} of {world_size}, batch_size {batch_size}")
        self.n, self.shuffle, self.generator, self.group_run = n, shuffle, generator, group_run
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.start = 0  # samples the next pass skips (then back to 0)
        self.groups: list[list[int]] | None = None
        if groups is not None:
            members: dict[Hashable, list[int]] = {}
            for i, g in enumerate(groups):
                members.setdefault(g, []).append(i)
            self.groups = list(members.values())
        self.shards: list[list[int]] | None = None
        self.workers = max(1, workers)
        if shards is not None:
            if len(shards) != n:
                raise ValueError(f"{len(shards)} sample shards for {n} samples")
            by_shard: dict[Hashable, list[int]] = {}
            for i, s in enumerate(shards):
                by_shard.setdefault(s, []).append(i)
            self.shards = list(by_shard.values())

    def __len__(self) -> int:
        return len(self._positions(0))

    def _positions(self, start: int) -> range | list[int]:
        """Positions in the global order this rank yields, from sample ``start`` on."""
        if self.world_size == 1:
            return range(start, self.n)
        glob, b = self.batch_size * self.world_size, self.batch_size
        return [i for g in range(start, self.n, glob)
                for i in range(g + self.rank * b, min(g + (self.rank + 1) * b, self.n))]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if not self.shuffle:
            order = torch.arange(self.n)
        elif self.shards is not None:
            order = torch.tensor(self._shard_order(), dtype=torch.long)
        elif self.groups is None:
            order = torch.randperm(self.n, generator=self.generator)
        else:
            runs = []
            for members in self.groups:
                shuffled = [members[i] for i in torch.randperm(len(members), generator=self.generator).tolist()]
                step = self.group_run or len(shuffled)
                runs += [shuffled[k:k + step] for k in range(0, len(shuffled), step)]
            order = torch.tensor([i for r in torch.randperm(len(runs), generator=self.generator).tolist()
                                  for i in runs[r]])
        seeds = torch.randint(0, 2**62, (self.n,), generator=self.generator)
        start, self.start = self.start, 0
        order_list, seed_list = order.tolist(), seeds.tolist()
        for i in self._positions(start):
            yield order_list[i], seed_list[i]

    def _shard_order(self) -> list[int]:
        """One epoch's global order over shards (see the class docstring); draws the shard order, then each
        shard's sample order (a single shard: just its order, as the plain sampler draws it)."""
        assert self.shards is not None
        dealt = torch.randperm(len(self.shards), generator=self.generator).tolist() if len(self.shards) > 1 else [0]
        inner = [[m[i] for i in torch.randperm(len(m), generator=self.generator).tolist()] for m in self.shards]
        n_ranks, n_workers, b = self.world_size, self.workers, self.batch_size
        streams = [[deque() for _ in range(n_workers)] for _ in range(n_ranks)]
        for j, s in enumerate(dealt):
            streams[j % n_ranks][(j // n_ranks) % n_workers].extend(inner[s])
        order: list[int] = []
        g = 0
        while len(order) < self.n:
            for r in range(n_ranks):
                own = g % n_workers
                sources = [streams[r][own], *(streams[r][w] for w in range(n_workers) if w != own),
                           *(q for rr in range(n_ranks) if rr != r for q in streams[rr])]
                want = b
                for q in sources:
                    while want and q:
                        order.append(q.popleft())
                        want -= 1
            g += 1
        return order

    def state_dict(self) -> dict[str, Any]:
        """The generator state the next pass starts from, and the samples it skips."""
        return {"generator": self.generator.get_state(), "start": self.start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (with ``start`` raised to resume inside a pass)."""
        start = int(state["start"])
        if not 0 <= start <= self.n:
            raise ValueError(f"sampler start {start} is outside [0, {self.n}]")
        self.generator.set_state(state["generator"])
        self.start = start


def seed_worker(worker_id: int) -> None:
    """Seed Python's and NumPy's RNGs in a worker from the seed torch gave it."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(samples: Dataset, batch_size: int, *, shuffle: bool = False, workers: int = 0, seed: int = 0,
                 drop_last: bool = False, pad_id: int = 0, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False) -> DataLoader:
    """A DataLoader with :class:`PadCollate` and a :class:`SeededSampler`: the same seed gives the same
    batches and the same augmentations, with any number of workers. Samples with a ``sampling_groups``
    attribute (one key per sample, e.g. :class:`ImageTextSamples` with ``batch_group_key``) are shuffled in
    runs of related samples, at most ``sampling_group_run`` long (see :class:`SeededSampler`). With
    ``world_size`` > 1 the loader of rank ``rank`` yields its ``batch_size`` slice of each global batch;
    ``pin_memory`` puts batches in page-locked memory (faster, non-blocking copies to a GPU)."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    # Worker base seeds come from a generator of their own, so the sampler's stream (order and augmentation
    # seeds) depends only on the seed and the number of passes, whether or not workers are persistent.
    worker_gen = torch.Generator()
    worker_gen.manual_seed((seed * 0x9E3779B97F4A7C15 + 1) % 2**63)
    sampler = SeededSampler(len(samples), shuffle, gen, getattr(samples, "sampling_groups", None),
                            getattr(samples, "sampling_group_run", None), rank=rank, world_size=world_size,
                            batch_size=batch_size, shards=getattr(samples, "sampling_shards", None),
                            workers=workers)
    return DataLoader(samples, batch_size=batch_size, sampler=sampler,
                      num_workers=workers, collate_fn=PadCollate(pad_id), worker_init_fn=seed_worker,
                      generator=worker_gen, drop_last=drop_last, persistent_workers=workers > 0,
                      pin_memory=pin_memory)
