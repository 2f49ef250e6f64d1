"""The procedural ``shapes`` dataset: determinism, geometry, and every annotation re-derived from the scene.

The checks here do not reuse the generator's helpers: references ("the large red object"), spatial relations,
regions and counts are recomputed from the object list, and overlaps are found on rendered pixels.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vislang.data import load_dataset, prepare_dataset
from vislang.data.datasets.shapes import (
    COLORS,
    RELATION_MARGIN,
    SHAPES,
    Scene,
    ShapeObject,
    describe_scene,
    generate_scene,
    make_questions,
    make_record,
    render_scene,
    scene_seed,
)
from vislang.errors import DataError

REL = r"(to the left of|to the right of|above|below)"
OPPOSITE = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below",
            "below": "above"}


def sample(n: int, seed: int = 0, max_objects: int = 4):
    """``n`` scenes with their captions and questions, drawn as the dataset draws them."""
    out = []
    for i in range(n):
        rng = random.Random(scene_seed(seed, "train", i))
        scene = generate_scene(rng, max_objects=max_objects)
        out.append((scene, describe_scene(scene, rng), make_questions(scene, rng)))
    return out


SCENES = sample(300)


def png_bytes(scene: Scene, size: int) -> bytes:
    buf = io.BytesIO()
    render_scene(scene, size).save(buf, format="PNG")
    return buf.getvalue()


# -------------------------------------------------------------------------------------------- the oracle


def find(scene: Scene, ref: str) -> ShapeObject:
    """The one object a definite description such as "the large red object" names."""
    words = ref.split()
    assert words[0] == "the", ref

    def fits(o: ShapeObject, w: str) -> bool:
        if w in ("small", "large"):
            return o.size == w
        if w in COLORS:
            return o.color == w
        if w in SHAPES:
            return o.shape == w
        assert w == "object", f"unexpected word {w!r} in {ref!r}"
        return True

    hits = [o for o in scene.objects if all(fits(o, w) for w in words[1:])]
    assert len(hits) == 1, f"{ref!r} names {len(hits)} objects in {scene}"
    return hits[0]


def clearly(a: ShapeObject, rel: str, b: ShapeObject) -> bool:
    """``a`` is ``rel`` ``b`` by at least the margin (y grows downwards)."""
    gap = {"to the left of": b.x - a.x, "to the right of": a.x - b.x, "above": b.y - a.y,
           "below": a.y - b.y}[rel]
    return gap >= RELATION_MARGIN


def expected_answer(scene: Scene, question: str) -> str:
    """Answer a generated question from the object list alone."""
    objs = scene.objects
    yes_no = {True: "yes", False: "no"}
    if m := re.fullmatch(r"Is (the [a-z ]+?) the same (color|shape) as (the [a-z ]+)\?", question):
        a, b = find(scene, m[1]), find(scene, m[3])
        banned = set(COLORS) if m[2] == "color" else set(SHAPES)
        assert not banned & set(f"{m[1]} {m[3]}".split()), f"the question gives the answer away: {question}"
        return yes_no[getattr(a, m[2]) == getattr(b, m[2])]
    if m := re.fullmatch(r"Is (the [a-z ]+?) (larger|smaller) than (the [a-z ]+)\?", question):
        a, b = find(scene, m[1]), find(scene, m[3])
        assert a.size != b.size, f"size comparison of two {a.size} objects: {question}"
        return yes_no[(a.size == "large") == (m[2] == "larger")]
    if m := re.fullmatch(r"Are there more ([a-z]+)s than ([a-z]+)s\?", question):
        return yes_no[sum(o.shape == m[1] for o in objs) > sum(o.shape == m[2] for o in objs)]
    if m := re.fullmatch(rf"Is (the [a-z ]+?) {REL} (the [a-z ]+)\?", question):
        a, b = find(scene, m[1]), find(scene, m[3])
        if clearly(a, m[2], b):
            return "yes"
        assert clearly(a, OPPOSITE[m[2]], b), f"ambiguous relation asked: {question} in {scene}"
        return "no"
    if m := re.fullmatch(rf"What (shape|color) is {REL} (the [a-z ]+)\?", question):
        b = find(scene, m[3])
        there = [o for o in objs if o != b and clearly(o, m[2], b)]
        assert len(there) == 1, question
        assert all(clearly(o, OPPOSITE[m[2]], b) for o in objs if o not in (b, there[0])), question
        return getattr(there[0], m[1])
    if m := re.fullmatch(r"What (color|shape) is (the [a-z ]+)\?", question):
        banned = set(COLORS) if m[1] == "color" else set(SHAPES)
        assert not banned & set(m[2].split()), f"the question gives the answer away: {question}"
        return getattr(find(scene, m[2]), m[1])
    if m := re.fullmatch(r"How many ([a-z ]+) are there\?", question):
        words = m[1].split()
        if words == ["objects"]:
            return str(len(objs))
        if len(words) == 1 and words[0][:-1] in SHAPES:
            return str(sum(o.shape == words[0][:-1] for o in objs))
        assert words[1:] == ["objects"], question
        return str(sum(words[0] in (o.color, o.size) for o in objs))
    if m := re.fullmatch(r"Is there an? ([a-z]+) ([a-z]+)\?", question):
        assert m[0].split()[2] == ("an" if m[1][0] in "aeiou" else "a"), question
        return yes_no[any(o.color == m[1] and o.shape == m[2] for o in objs)]
    if m := re.fullmatch(r"Are there any ([a-z]+)s\?", question):
        return yes_no[any(o.shape == m[1] for o in objs)]
    if m := re.fullmatch(r"Are there any ([a-z]+) objects\?", question):
        return yes_no[any(o.color == m[1] for o in objs)]
    raise AssertionError(f"question matches no known form: {question!r}")


def region(o: ShapeObject) -> str:
    row = "top" if o.y < 1 / 3 else "bottom" if o.y >= 2 / 3 else ""
    col = "left" if o.x < 1 / 3 else "right" if o.x >= 2 / 3 else ""
    return f"{row} {col}".strip() or "center"


# ------------------------------------------------------------------------------------------------- tests


def test_same_seed_same_bytes_and_different_seed_differs():
    a, b = generate_scene(7), generate_scene(7)
    assert a == b
    assert png_bytes(a, 64) == png_bytes(b, 64)
    rec_a, _ = make_record(3, "val", 11, "/x.png")
    rec_b, _ = make_record(3, "val", 11, "/x.png")
    assert rec_a == rec_b
    other = generate_scene(8)
    assert other != a and png_bytes(other, 64) != png_bytes(a, 64)
    assert make_record(4, "val", 11, "/x.png")[0].meta != rec_a.meta
    assert make_record(3, "test", 11, "/x.png")[0].meta != rec_a.meta


def test_generator_accepts_an_rng_and_advances_it():
    rng = random.Random(5)
    first, second = generate_scene(rng), generate_scene(rng)
    assert first == generate_scene(random.Random(5))
    assert second != first


def test_built_dataset_is_a_prefix_of_a_larger_one_and_reproducible(data_root: Path, tmp_path: Path):
    small = prepare_dataset("shapes:n_train=6,n_val=2,n_test=3,size=32,seed=5", root=data_root)
    big = prepare_dataset("shapes:n_train=12,n_val=4,n_test=6,size=32,seed=5", root=data_root)
    again = prepare_dataset("shapes:n_train=6,n_val=2,n_test=3,size=32,seed=5", root=tmp_path, force=True)
    assert small != big
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        rows_small = (small / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        rows_big = (big / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(rows_small) == n and len(rows_big) == 2 * n
        assert rows_big[:n] == rows_small
        assert (again / f"{split}.jsonl").read_text(encoding="utf-8").splitlines() == rows_small
        for i in range(n):
            image = f"images/{split}/{i}.png"
            assert json.loads(rows_small[i])["image"] == image
            assert (small / image).read_bytes() == (big / image).read_bytes() == (again / image).read_bytes()
    assert (small / "images/train/0.png").read_bytes() != (small / "images/val/0.png").read_bytes()


@pytest.mark.parametrize("size", [16, 64, 200])
def test_any_resolution(size: int):
    scene = generate_scene(11)
    image = render_scene(scene, size)
    assert image.mode == "RGB" and image.size == (size, size)
    px = np.asarray(image)
    assert (px != 255).any(axis=2).sum() > 0, "blank image"
    assert tuple(px[0, 0]) == (255, 255, 255)
    if size >= 64:  # large enough for every object's centre pixel to be its pure colour
        for o in scene.objects:
            centre = px[int(o.y * size), int(o.x * size)].astype(int)
            assert np.abs(centre - COLORS[o.color]).max() <= 2, (o, centre)


def test_images_are_antialiased():
    px = np.asarray(render_scene(generate_scene(2), 64)).reshape(-1, 3)
    pure = {(255, 255, 255), *COLORS.values()}
    blended = sum(tuple(p) not in pure for p in px)
    assert blended > 20, "edges should be blended, not hard-stepped"


@pytest.mark.parametrize("max_objects", [4, 6])
def test_objects_never_overlap_and_stay_inside(max_objects: int):
    side = 128
    for i in range(120):
        scene = generate_scene(1000 + i, max_objects=max_objects)
        assert 1 <= len(scene.objects) <= max_objects
        masks = [(np.asarray(render_scene(Scene((o,)), side)) != 255).any(axis=2) for o in scene.objects]
        for j, m in enumerate(masks):
            assert m.sum() > 0
            assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()), "object touches border"
            for k in range(j):
                assert not (m & masks[k]).any(), f"objects {k} and {j} overlap in {scene}"


def test_scene_rules_and_labels():
    labels = Counter()
    sizes = Counter()
    for scene, _, _ in SCENES:
        large = [o for o in scene.objects if o.size == "large"]
        assert len(large) == 1
        assert scene.label == large[0].shape
        pairs = [(o.color, o.shape) for o in scene.objects]
        assert len(set(pairs)) == len(pairs)
        labels[scene.label] += 1
        sizes[len(scene.objects)] += 1
    assert set(labels) == set(SHAPES) and min(labels.values()) >= 0.15 * len(SCENES)
    assert set(sizes) == {1, 2, 3, 4}


def test_question_answers_are_correct():
    for scene, _, questions in SCENES:
        for q in questions:
            assert len(q.answers) == 1
            answer = q.answers[0]
            assert answer == expected_answer(scene, q.question), (q, scene)
            assert re.fullmatch(r"[a-z]+|\d+", answer)
            assert q.answer_type == ("yes/no" if answer in ("yes", "no") else
                                     "number" if answer.isdigit() else "other")


def test_all_question_types_appear_and_yes_no_is_balanced():
    types = Counter()
    answers: dict[str, Counter] = {}
    for _, _, questions in SCENES:
        for q in questions:
            types[q.question_type] += 1
            answers.setdefault(q.question_type, Counter())[q.answers[0]] += 1
    assert set(types) == {"color", "shape", "count", "exists", "relation", "comparison"}
    assert all(n >= 100 for n in types.values()), types
    for qtype in ("exists", "relation", "comparison"):
        yes, no = answers[qtype]["yes"], answers[qtype]["no"]
        assert 0.4 <= yes / (yes + no) <= 0.6, (qtype, yes, no)
    assert set(answers["color"]) == set(COLORS)
    assert set(answers["shape"]) == set(SHAPES)
    assert {"0", "1", "2", "3", "4"} <= set(answers["count"])


def test_captions_mention_attributes_and_true_relations():
    relation_captions = 0
    for scene, captions, _ in SCENES:
        n = len(scene.objects)
        assert len(captions) == (3 if n == 1 else 5)
        assert len(set(captions)) == len(captions)
        listed = Counter(re.findall(r"\ba (small|large) ([a-z]+) ([a-z]+)", captions[0].lower()))
        assert listed == Counter((o.size, o.color, o.shape) for o in scene.objects), captions[0]
        for o in scene.objects:
            assert f"{o.size} {o.color} {o.shape} at the {region(o)}" in captions[-1 if n == 1 else 3]
        big = scene.large
        if n == 1:
            continue
        article = "an" if big.color[0] in "aeiou" else "a"
        assert f"the largest is {article} {big.color} {big.shape}" in captions[1]
        m = re.fullmatch(rf"A (small|large) (\w+) (\w+) {REL} a (small|large) (\w+) (\w+)\.", captions[2])
        assert m, captions[2]
        a = next(o for o in scene.objects if (o.color, o.shape) == (m[2], m[3]))
        b = next(o for o in scene.objects if (o.color, o.shape) == (m[6], m[7]))
        assert clearly(a, m[4], b), (captions[2], scene)
        m = re.fullmatch(r"The large (\w+) (\w+) is (.+)\.", captions[4])
        assert m and (m[1], m[2]) == (big.color, big.shape)
        parts = re.split(r", | and ", m[3])
        assert len(parts) == n - 1
        for part in parts:
            pm = re.fullmatch(rf"{REL} the small (\w+) (\w+)", part)
            assert pm, part
            other = next(o for o in scene.objects if (o.color, o.shape) == (pm[2], pm[3]))
            assert clearly(big, pm[1], other), (captions[4], scene)
            relation_captions += 1
    assert relation_captions > 300


def test_registered_dataset_loads(data_root: Path):
    spec = "shapes:n_train=50,n_val=10,n_test=10"
    train = load_dataset(spec, "train", root=data_root)
    assert len(train) == 50
    assert len(load_dataset(spec, "val", root=data_root)) == 10
    assert len(load_dataset(spec, "test", root=data_root)) == 10
    qtypes = set()
    for rec in train:
        scene = Scene.from_dicts(rec.meta["objects"])
        assert rec.meta["n_objects"] == len(scene.objects)
        assert rec.label == scene.label
        assert rec.captions and all(c.endswith(".") for c in rec.captions)
        for q in rec.qa:
            assert q.answers == [expected_answer(scene, q.question)]
            qtypes.add(q.question_type)
        with Image.open(rec.image) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
            assert np.array_equal(np.asarray(im), np.asarray(render_scene(scene, 64)))
    assert qtypes == {"color", "shape", "count", "exists", "relation", "comparison"}
    # The same scenes as the default-size build: records depend only on (seed, split, index).
    first, _ = make_record(0, "train", 0, train[0].image)
    assert [q.question for q in train[0].qa] == [q.question for q in first.qa]
    assert train[0].captions == first.captions


@pytest.mark.parametrize("option, field", [("size=4", "size"), ("max_objects=9", "max_objects"),
                                           ("n_val=-1", "n_val")])
def test_bad_options_are_reported(tmp_path: Path, option: str, field: str):
    with pytest.raises(DataError, match=f"field '{field}'"):
        prepare_dataset(f"shapes:{option}", root=tmp_path)
