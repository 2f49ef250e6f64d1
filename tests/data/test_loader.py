"""Torch samples, padding collate and seeded loaders over real image files."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from vislang.data import load_dataset
from vislang.data.loader import ImageTextSamples, PadCollate, SeededSampler, build_loader
from vislang.data.text import Vocabulary
from vislang.data.transforms import TransformConfig, build_transform
from vislang.errors import ImageError


@pytest.fixture
def manifest(tmp_path):
    rows = []
    for i in range(6):
        Image.new("RGB", (20 + i, 16), (40 * i, 10, 200)).save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "text": [f"image number {i}", "a blue picture"], "label": f"c{i % 2}",
                     "qa": [{"question": "what colour is it?", "answer": "blue"}]})
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    return p


def test_units_and_collate(manifest):
    ds = load_dataset(manifest)
    vocab = Vocabulary.build(c for r in ds for c in r.captions)
    tf = build_transform(TransformConfig(image_size=16), train=False)
    caps = ImageTextSamples(ds.records, tf, unit="caption", tokenizer=vocab)
    assert len(caps) == 12
    s = caps[1]
    assert s["text"] == "a blue picture" and s["index"] == 0 and s["label"] == "c0"
    assert s["tokens"].tolist() == vocab.encode("a blue picture")
    batch = PadCollate(vocab.pad_id)([caps[0], caps[1], caps[3]])
    assert batch["image"].shape == (3, 3, 16, 16)
    assert batch["tokens"].shape == (3, 5) and batch["tokens_lengths"].tolist() == [5, 5, 5]
    assert batch["index"].tolist() == [0, 0, 1] and batch["label"] == ["c0", "c0", "c1"]
    qa = ImageTextSamples(ds.records, tf, unit="qa", tokenizer=vocab)
    assert len(qa) == 6 and qa[2]["answers"] == ["blue"] and qa[2]["question_tokens"][0] == vocab.bos_id
    images = ImageTextSamples(ds.records, tf, unit="image")
    assert len(images) == 6 and images[5]["captions"] == ["image number 5", "a blue picture"]


def test_padding_with_different_lengths():
    a, b = torch.tensor([1, 5, 6, 2]), torch.tensor([1, 2])
    batch = PadCollate(pad_id=0)([{"tokens": a}, {"tokens": b}, None])
    assert batch["tokens"].tolist() == [[1, 5, 6, 2], [1, 2, 0, 0]]
    assert batch["tokens_lengths"].tolist() == [4, 2]
    assert PadCollate()([None]) == {}


def _epoch(loader):
    return [(b["index"].tolist(), b["image"].sum().item()) for b in loader]


def test_seeded_loader_is_deterministic(manifest):
    ds = load_dataset(manifest)
    tf = build_transform(TransformConfig(image_size=16), train=True)  # random crops and jitter
    samples = ImageTextSamples(ds.records, tf, unit="caption")
    a = _epoch(build_loader(samples, 4, shuffle=True, seed=7))
    b = _epoch(build_loader(samples, 4, shuffle=True, seed=7))
    c = _epoch(build_loader(samples, 4, shuffle=True, seed=8))
    assert a == b and a != c
    w1 = _epoch(build_loader(samples, 4, shuffle=True, seed=7, workers=2))
    w2 = _epoch(build_loader(samples, 4, shuffle=True, seed=7, workers=2))
    assert w1 == w2 == a  # same batches and augmentations with or without workers
    loader = build_loader(samples, 4, shuffle=True, seed=7)
    assert _epoch(loader) == a and _epoch(loader) != a  # a new order and new augmentations each epoch


def test_bad_image_mid_epoch(manifest, tmp_path):
    ds = load_dataset(manifest)
    (tmp_path / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # corrupted after the manifest was read
    tf = build_transform(TransformConfig(image_size=16))
    strict = ImageTextSamples(ds.records, tf, unit="image")
    with pytest.raises(ImageError, match="3.png"):
        list(build_loader(strict, 6))
    lenient = ImageTextSamples(ds.records, tf, unit="image", skip_bad=True)
    (batch,) = list(build_loader(lenient, 6))
    assert batch["index"].tolist() == [0, 1, 2, 4, 5]


def test_batch_groups_keep_related_samples_together(manifest, tmp_path):
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    bases = ["a", "a", "b", "b", "b", "c"]                                  # e.g. an emoji and its tone variants
    manifest.write_text("\n".join(json.dumps({**r, "base": b}) for r, b in zip(rows, bases)))
    ds = load_dataset(manifest)
    tf = build_transform(TransformConfig(image_size=16), train=True)
    samples = ImageTextSamples(ds.records, tf, unit="caption", batch_group_key="base", batch_group_run=None)
    assert samples.sampling_groups == [b for b in bases for _ in range(2)]  # two captions per image
    orders = []
    for seed in range(6):
        order = [i for b in build_loader(samples, 4, shuffle=True, seed=seed) for i in b["index"].tolist()]
        assert sorted(order) == sorted(i for i in range(6) for _ in range(2))   # every sample once
        runs = [bases[i] for k, i in enumerate(order) if k == 0 or bases[order[k - 1]] != bases[i]]
        assert sorted(runs) == ["a", "b", "c"]                               # each group in one stretch
        orders.append(order)
    assert len({tuple(o) for o in orders}) > 1                               # groups and members shuffled
    plain = ImageTextSamples(ds.records, tf, unit="caption")
    assert plain.sampling_groups is None
    first = [i for b in build_loader(samples, 4, shuffle=True, seed=3) for i in b["index"].tolist()]
    again = [i for b in build_loader(samples, 4, shuffle=True, seed=3) for i in b["index"].tolist()]
    assert first == again


def _stretches(order, key):
    """(key, length) of the maximal stretches of equal keys in ``order``."""
    out = []
    for i in order:
        if out and out[-1][0] == key[i]:
            out[-1][1] += 1
        else:
            out.append([key[i], 1])
    return [tuple(x) for x in out]


def test_batch_group_runs_cut_large_groups():
    key = "aaaaaabbbcdd"
    gen = torch.Generator().manual_seed(0)
    sampler = SeededSampler(12, True, gen, groups=list(key), group_run=2)
    split = 0
    for _ in range(8):
        order = [i for i, _ in sampler]
        assert sorted(order) == list(range(12))
        stretches = _stretches(order, key)
        assert all(n % 2 == 0 for k, n in stretches if k == "a")             # runs of exactly 2 (6 = 3 x 2)
        split += sum(k == "a" for k, _ in stretches) > 1
    assert split > 0                                                          # a group of 6 is not kept whole
    whole = SeededSampler(12, True, gen, groups=list(key))
    assert all(sorted(k for k, _ in _stretches([i for i, _ in whole], key)) == list("abcd") for _ in range(4))
    assert [i for i, _ in SeededSampler(4, False, gen, groups=list("abab"), group_run=1)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="group_run"):
        SeededSampler(4, True, gen, groups=list("abab"), group_run=0)
    with pytest.raises(ValueError, match="sampling groups"):
        SeededSampler(4, True, gen, groups=list("ab"))
