"""The ``shapes`` dataset: procedural 2-D scenes with captions, questions and class labels.

In the spirit of CLEVR and Sort-of-CLEVR, and needing nothing installed, each scene holds 1 to
``max_objects`` flat shapes on a white canvas. Every object has a shape (circle, square, triangle, diamond),
a colour (red, green, blue, yellow, purple, orange, gray), a size (small or large) and a position; objects
never overlap.

Scene rules that keep every annotation unambiguous:

* exactly one object is large, the others are small;
* no two objects share both colour and shape, so "the red circle" always names one object;
* a spatial relation (left of, right of, above, below) is only stated or asked when the two centres differ
  by at least :data:`RELATION_MARGIN` (a fraction of the image side) along that axis.

The class label of a scene is **the shape of its large object**: balanced over the four shapes, visible in
the image and named in the captions ("... the largest is a red circle").

Everything is deterministic: scene ``i`` of split ``s`` comes from a seed derived from ``(seed, s, i)``, so
a dataset of ``N`` scenes is a prefix of one of ``2N`` and the same options give byte-identical files.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from PIL import Image, ImageDraw

from vislang.data.records import QA, Record
from vislang.data.registry import PrepareContext, register_dataset
from vislang.errors import DataError
from vislang.utils.io import progress

SHAPES = ("circle", "square", "triangle", "diamond")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 80, 225),
    "yellow": (245, 205, 20),
    "purple": (135, 50, 185),
    "orange": (245, 130, 15),
    "gray": (125, 125, 125),
}
SIZES = ("small", "large")
BACKGROUND = (255, 255, 255)
MAX_OBJECTS = 6
RELATION_MARGIN = 0.12
"""Minimum centre distance along an axis (fraction of the side) for a spatial relation to be used."""

_RADIUS = {"small": (0.075, 0.095), "large": (0.14, 0.17)}
# Distance from the centre to the farthest point of each outline, in radii: the overlap test uses it.
_EXTENT = {"circle": 1.0, "square": 0.9 * math.sqrt(2), "triangle": 1.15, "diamond": 1.2}
_GAP = 0.03  # free space between two outlines and between an outline and the border
# So any two centres are at least 0.075 + 0.075 + _GAP = 0.18 apart, hence >= 0.127 apart along one axis:
# every pair of objects has a clear relation (see relation()), which the captions rely on.
_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six")
_RELATIONS = ("to the left of", "to the right of", "above", "below")
_OPPOSITE = {"to the left of": "to the right of", "to the right of": "to the left of",
             "above": "below", "below": "above"}


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene. Coordinates are fractions of the image side, with y growing downwards.

    Attributes:
        shape: One of :data:`SHAPES`.
        color: A key of :data:`COLORS`.
        size: "small" or "large".
        x: Centre, from the left edge.
        y: Centre, from the top edge.
        r: Radius (half the width of a circle; other shapes are scaled to look as big).
    """

    shape: str
    color: str
    size: str
    x: float
    y: float
    r: float

    @property
    def extent(self) -> float:
        """Radius of the smallest circle around the centre that holds the whole outline."""
        return self.r * _EXTENT[self.shape]

    def phrase(self) -> str:
        """Indefinite description with every attribute, e.g. "a large red circle"."""
        return f"a {self.size} {self.color} {self.shape}"  # sizes start with a consonant

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (as stored in the manifest's ``objects`` field)."""
        return {"shape": self.shape, "color": self.color, "size": self.size, "x": self.x, "y": self.y,
                "r": self.r}


@dataclass(frozen=True)
class Scene:
    """A generated scene.

    Attributes:
        objects: The objects, in drawing order.
    """

    objects: tuple[ShapeObject, ...]

    @property
    def large(self) -> ShapeObject:
        """The scene's one large object."""
        return next(o for o in self.objects if o.size == "large")

    @property
    def label(self) -> str:
        """The class label: the shape of the large object."""
        return self.large.shape

    @classmethod
    def from_dicts(cls, objects: list[dict[str, Any]]) -> Scene:
        """Rebuild a scene from its manifest form (the ``objects`` metadata)."""
        return cls(tuple(ShapeObject(**o) for o in objects))


# ---------------------------------------------------------------------------------------------- generation


def scene_seed(seed: int, split: str, index: int) -> int:
    """The seed of scene ``index`` of ``split``: stable across runs, platforms and dataset sizes."""
    digest = hashlib.sha256(f"shapes:{seed}:{split}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _as_rng(seed_or_rng: int | random.Random) -> random.Random:
    return seed_or_rng if isinstance(seed_or_rng, random.Random) else random.Random(seed_or_rng)


def _apart(a: ShapeObject, b: ShapeObject) -> bool:
    return math.hypot(a.x - b.x, a.y - b.y) >= a.extent + b.extent + _GAP


def generate_scene(seed_or_rng: int | random.Random, max_objects: int = 4, min_objects: int = 1) -> Scene:
    """Sample a scene: one large object and up to ``max_objects - 1`` small ones, none overlapping.

    Args:
        seed_or_rng: A seed, or a ``random.Random`` to draw from (it is advanced).
        max_objects: Most objects in the scene (at most :data:`MAX_OBJECTS`).
        min_objects: Fewest objects in the scene.

    Returns:
        The scene. Coordinates and radii are rounded to 4 decimals, so the manifest form is exact.
    """
    if not 1 <= min_objects <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, "
                         f"got min_objects={min_objects}, max_objects={max_objects}")
    rng = _as_rng(seed_or_rng)
    n = rng.randint(min_objects, max_objects)
    for _ in range(1000):  # rejection sampling; a restart is rare even with MAX_OBJECTS objects
        sizes = ["large"] + ["small"] * (n - 1)
        rng.shuffle(sizes)
        objects: list[ShapeObject] = []
        for size in sizes:
            taken = {(o.color, o.shape) for o in objects}
            color, shape = rng.choice([(c, s) for c in COLORS for s in SHAPES if (c, s) not in taken])
            r = round(rng.uniform(*_RADIUS[size]), 4)
            lo = r * _EXTENT[shape] + _GAP
            for _ in range(100):
                obj = ShapeObject(shape, color, size, round(rng.uniform(lo, 1 - lo), 4),
                                  round(rng.uniform(lo, 1 - lo), 4), r)
                if all(_apart(obj, o) for o in objects):
                    objects.append(obj)
                    break
            else:
                break
        if len(objects) == n:
            return Scene(tuple(objects))
    raise RuntimeError(f"could not place {n} objects without overlap")  # pragma: no cover


# ----------------------------------------------------------------------------------------------- rendering


def _outline(obj: ShapeObject, side: float) -> list[tuple[float, float]] | None:
    """Polygon vertices in pixels, or None for a circle."""
    cx, cy, r = obj.x * side, obj.y * side, obj.r * side
    if obj.shape == "circle":
        return None
    if obj.shape == "square":
        h = 0.9 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if obj.shape == "triangle":  # equilateral, pointing up, centred on its centroid
        big = _EXTENT["triangle"] * r
        return [(cx + big * math.cos(a), cy + big * math.sin(a))
                for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if obj.shape == "diamond":  # taller than wide, so it never reads as a turned square
        tall = _EXTENT["diamond"] * r
        return [(cx, cy - tall), (cx + 0.8 * r, cy), (cx, cy + tall), (cx - 0.8 * r, cy)]
    raise ValueError(f"unknown shape {obj.shape!r}")


def render_scene(scene: Scene, size: int) -> Image.Image:
    """Draw a scene as a ``size`` x ``size`` RGB image.

    Shapes are drawn at up to 4x the size and box-filtered down, so edges stay smooth from 16 px upwards.
    """
    if size < 1:
        raise ValueError(f"image size must be positive, got {size}")
    ss = max(1, min(4, 4096 // size))
    side = size * ss
    canvas = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        fill = COLORS[obj.color]
        points = _outline(obj, side)
        if points is None:
            cx, cy, r = obj.x * side, obj.y * side, obj.r * side
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(points, fill=fill)
    return canvas.reduce(ss) if ss > 1 else canvas  # box filter: the mean of each ss x ss block


# ----------------------------------------------------------------------------------------- spatial language


def relation(a: ShapeObject, b: ShapeObject) -> str | None:
    """The clearest relation of ``a`` to ``b`` ("to the left of", ...), or None if both axes are too close."""
    dx, dy = a.x - b.x, a.y - b.y
    if max(abs(dx), abs(dy)) < RELATION_MARGIN:
        return None
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def holds(a: ShapeObject, rel: str, b: ShapeObject) -> bool:
    """Whether ``a`` is clearly (by :data:`RELATION_MARGIN`) ``rel`` ``b``."""
    d = {"to the left of": b.x - a.x, "to the right of": a.x - b.x, "above": b.y - a.y, "below": a.y - b.y}
    return d[rel] >= RELATION_MARGIN


def region(obj: ShapeObject) -> str:
    """Where an object lies, by thirds of the image: "top left", "bottom", "center", ..."""
    row = ("top", "", "bottom")[min(2, int(obj.y * 3))]
    col = ("left", "", "right")[min(2, int(obj.x * 3))]
    return " ".join(w for w in (row, col) if w) or "center"


@lru_cache(maxsize=4096)
def refer(scene: Scene, obj: ShapeObject, exclude: str | None = None) -> str | None:
    """The shortest definite description naming ``obj`` alone, e.g. "the circle", "the large red object".

    Args:
        scene: The scene the object is in.
        obj: The object to name.
        exclude: An attribute ("color", "shape" or "size") the description must not use, because the
            question asks about it.

    Returns:
        The description, or None when no description without ``exclude`` is unique.
    """
    options = (("shape",), ("color", "shape"), ("size", "shape"), ("color",), ("size", "color"), ("size",),
               ("size", "color", "shape"))
    for attrs in options:
        if exclude in attrs:
            continue
        if sum(all(getattr(o, a) == getattr(obj, a) for a in attrs) for o in scene.objects) == 1:
            words = [getattr(obj, a) for a in ("size", "color") if a in attrs]
            words.append(obj.shape if "shape" in attrs else "object")
            return "the " + " ".join(words)
    return None


def _a(word: str) -> str:
    """``word`` with its indefinite article: "a red", "an orange"."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe_scene(scene: Scene, rng: random.Random) -> list[str]:
    """Captions of a scene, one per template (3 for one object, 5 otherwise).

    Templates: a list of the objects; a count with the largest object; one spatial relation between two
    objects; where each object is; and the large object's relation to every other object.
    """
    objs = list(scene.objects)
    order = objs[:]
    rng.shuffle(order)
    n = len(objs)
    big = scene.large
    captions = [_sentence(_join([o.phrase() for o in order]))]
    if n == 1:
        captions.append(_sentence(f"one object: {big.phrase()} in the {region(big)} of the picture"))
    else:
        captions.append(_sentence(f"{_NUMBER_WORDS[n]} objects; the largest is {_a(big.color)} {big.shape}"))
        a, b = rng.sample(objs, 2)
        captions.append(_sentence(f"{a.phrase()} {relation(a, b)} {b.phrase()}"))
    captions.append(_sentence(_join([f"{o.phrase()} at the {region(o)}" for o in order])))
    if n > 1:
        others = [o for o in order if o is not big]
        parts = [f"{relation(big, o)} the {o.size} {o.color} {o.shape}" for o in others]
        captions.append(_sentence(f"the large {big.color} {big.shape} is {_join(parts)}"))
    return captions


# ---------------------------------------------------------------------------------------------- questions

_Candidate = tuple[str, str]  # (question, answer)


@dataclass
class _YesNo:
    """Yes/no candidates, picked one "yes" and one "no" per scene to keep the answers balanced."""

    yes: list[_Candidate] = field(default_factory=list)
    no: list[_Candidate] = field(default_factory=list)

    def add(self, question: str, truth: bool) -> None:
        (self.yes if truth else self.no).append((question, "yes" if truth else "no"))

    def pick(self, rng: random.Random) -> list[_Candidate]:
        """One "yes" and one "no" question when both exist, else what there is, in random order."""
        picked = [rng.choice(pool) for pool in (self.yes, self.no) if pool]
        rng.shuffle(picked)
        return picked


def _pairs(objs: Sequence[ShapeObject]) -> Iterator[tuple[ShapeObject, ShapeObject]]:
    """Every ordered pair ``(a, b)`` of two different objects, ``a`` in the outer loop."""
    return ((a, b) for a in objs for b in objs if a is not b)


def _color_questions(scene: Scene, rng: random.Random) -> list[_Candidate]:
    cands = [(f"What color is {ref}?", o.color) for o in scene.objects
             if (ref := refer(scene, o, exclude="color"))]
    return [rng.choice(cands)]


def _shape_questions(scene: Scene, rng: random.Random) -> list[_Candidate]:
    cands = [(f"What shape is {ref}?", o.shape) for o in scene.objects
             if (ref := refer(scene, o, exclude="shape"))]
    return [rng.choice(cands)]


def _count_questions(scene: Scene, rng: random.Random) -> list[_Candidate]:
    objs = scene.objects
    cands = [("How many objects are there?", str(len(objs)))]
    for shape in SHAPES:
        cands.append((f"How many {shape}s are there?", str(sum(o.shape == shape for o in objs))))
    for color in COLORS:
        cands.append((f"How many {color} objects are there?", str(sum(o.color == color for o in objs))))
    cands.append(("How many small objects are there?", str(sum(o.size == "small" for o in objs))))
    # Zero answers are most of the candidates; keep them to about a quarter of the questions.
    nonzero = [c for c in cands if c[1] != "0"]
    zero = [c for c in cands if c[1] == "0"]
    picked = [rng.choice(nonzero)]
    picked.append(rng.choice(zero if zero and rng.random() < 0.5 else nonzero))
    return picked


def _exists_questions(scene: Scene, rng: random.Random) -> list[_Candidate]:
    objs = scene.objects
    cands = _YesNo()
    for color in COLORS:
        for shape in SHAPES:
            # Only combinations sharing colour or shape with some object: a "no" that needs a look.
            if any(o.color == color or o.shape == shape for o in objs):
                present = any(o.color == color and o.shape == shape for o in objs)
                cands.add(f"Is there {_a(color)} {shape}?", present)
    for shape in SHAPES:
        cands.add(f"Are there any {shape}s?", any(o.shape == shape for o in objs))
    for color in COLORS:
        cands.add(f"Are there any {color} objects?", any(o.color == color for o in objs))
    return cands.pick(rng)


def _relation_questions(scene: Scene, rng: random.Random) -> list[_Candidate]:
    objs = scene.objects
    cands = _YesNo()
    for a, b in _pairs(objs):
        rel = relation(a, b)
        ra, rb = refer(scene, a), refer(scene, b)
        if rel and ra and rb:
            cands.add(f"Is {ra} {rel} {rb}?", True)
            cands.add(f"Is {ra} {_OPPOSITE[rel]} {rb}?", False)
    picked = cands.pick(rng)
    # "What shape is to the left of the red circle?" when exactly one object is clearly there and every
    # other object is clearly on the opposite side.
    which: list[_Candidate] = []
    for b in objs:
        rb = refer(scene, b)
        others = [o for o in objs if o is not b]
        for rel in _RELATIONS:
            there = [o for o in others if holds(o, rel, b)]
            rest = [o for o in others if o not in there]
            if rb and len(there) == 1 and all(holds(o, _OPPOSITE[rel], b) for o in rest):
                attr = rng.choice(("shape", "color"))
                which.append((f"What {attr} is {rel} {rb}?", getattr(there[0], attr)))
    if which:
        picked.append(rng.choice(which))
    return picked


def _comparison_questions(scene: Scene, rng: random.Random) -> list[_Candidate]:
    objs = scene.objects
    cands = _YesNo()
    for a, b in _pairs(objs):
        for attr in ("color", "shape"):  # described without the attribute compared
            ra, rb = refer(scene, a, exclude=attr), refer(scene, b, exclude=attr)
            if ra and rb:
                cands.add(f"Is {ra} the same {attr} as {rb}?", getattr(a, attr) == getattr(b, attr))
        ra, rb = refer(scene, a, exclude="size"), refer(scene, b, exclude="size")
        if ra and rb and a.size != b.size:  # sizes within one class are too close to compare
            cands.add(f"Is {ra} larger than {rb}?", a.size == "large")
            cands.add(f"Is {ra} smaller than {rb}?", a.size == "small")
    counts = Counter(o.shape for o in objs)
    for s1 in counts:
        for s2 in SHAPES:
            if s1 != s2:
                cands.add(f"Are there more {s1}s than {s2}s?", counts[s1] > counts[s2])
    return cands.pick(rng)


QUESTION_TYPES: dict[str, Callable[[Scene, random.Random], list[_Candidate]]] = {
    "color": _color_questions,
    "shape": _shape_questions,
    "count": _count_questions,
    "exists": _exists_questions,
    "relation": _relation_questions,
    "comparison": _comparison_questions,
}
"""Question type -> generator of (question, answer) pairs; relation and comparison need two objects."""


def _answer_type(answer: str) -> str:
    if answer in ("yes", "no"):
        return "yes/no"
    return "number" if answer.isdigit() else "other"


def make_questions(scene: Scene, rng: random.Random) -> list[QA]:
    """Questions about a scene with one-word or numeric answers.

    Every scene gets color, shape, count (2) and exists (one yes, one no) questions; scenes with two or more
    objects also get relation (a yes, a no, and a "what is left of ..." where one object is clearly there)
    and comparison (a yes and a no) questions.
    """
    out = []
    for qtype, make in QUESTION_TYPES.items():
        if qtype in ("relation", "comparison") and len(scene.objects) < 2:
            continue
        for question, answer in make(scene, rng):
            out.append(QA(question, [answer], question_type=qtype, answer_type=_answer_type(answer)))
    return out


# ------------------------------------------------------------------------------------------------ dataset


def make_record(seed: int, split: str, index: int, image_path: str,
                max_objects: int = 4) -> tuple[Record, Scene]:
    """The record of scene ``index`` of ``split`` (the image is not drawn here).

    Args:
        seed: Dataset seed.
        split: Split name.
        index: Scene number within the split.
        image_path: Absolute path the image is (or will be) written to.
        max_objects: Most objects per scene.

    Returns:
        The record and its scene.
    """
    rng = random.Random(scene_seed(seed, split, index))
    scene = generate_scene(rng, max_objects=max_objects)
    captions = describe_scene(scene, rng)
    qa = make_questions(scene, rng)
    rid = f"{split}-{index}"
    for k, q in enumerate(qa):
        q.question_id = f"{rid}-q{k}"
    meta = {"objects": [o.to_dict() for o in scene.objects], "n_objects": len(scene.objects)}
    return Record(rid, image_path, captions, scene.label, qa, meta), scene


def _check_options(n: dict[str, int], size: int, max_objects: int) -> None:
    where = "dataset 'shapes'"
    for key, value in n.items():
        if value < 0:
            raise DataError(f"must be >= 0, got {value}", where=where, field=key)
    if not 8 <= size <= 4096:
        raise DataError(f"image size must be between 8 and 4096 pixels, got {size}", where=where,
                        field="size")
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise DataError(f"must be between 1 and {MAX_OBJECTS}, got {max_objects}", where=where,
                        field="max_objects")


@dataclass(frozen=True)
class ShapesOptions:
    """Options of the ``shapes`` dataset (``shapes:n_train=10000,size=128``).

    Attributes:
        n_train: Scenes in the train split.
        n_val: Scenes in the val split.
        n_test: Scenes in the test split.
        size: Image side in pixels (8 to 4096).
        seed: Seed of every scene (scene ``i`` of a split is the same for any count).
        max_objects: Most objects in a scene (1 to :data:`MAX_OBJECTS`).
    """

    n_train: int = 2000
    n_val: int = 200
    n_test: int = 200
    size: int = 64
    seed: int = 0
    max_objects: int = 4


@register_dataset(
    "shapes",
    description="procedural 2-D scenes of coloured shapes: captions, questions, labels (nothing to download)",
    splits=("train", "val", "test"),
    default_split="train",
    license="generated, CC0",
    options=ShapesOptions,
)
def prepare(ctx: PrepareContext, options: ShapesOptions) -> dict[str, list[Record]]:
    """Generate the scenes and write ``images/<split>/<i>.png`` under ``ctx.out_dir``."""
    size, seed, max_objects = options.size, options.seed, options.max_objects
    counts = {"n_train": options.n_train, "n_val": options.n_val, "n_test": options.n_test}
    _check_options(counts, size, max_objects)
    splits: dict[str, list[Record]] = {}
    with progress(desc="shapes", total=sum(counts.values()), unit="img") as bar:
        for split, n in zip(("train", "val", "test"), counts.values()):
            folder = ctx.out_dir / "images" / split
            folder.mkdir(parents=True, exist_ok=True)
            records = []
            for i in range(n):
                path = folder / f"{i}.png"
                record, scene = make_record(seed, split, i, str(path.resolve()), max_objects)
                # Plain save: the build only counts as done once the registry writes summary.json, and an
                # unfinished build is redone from scratch, so a torn image never survives.
                render_scene(scene, size).save(path, format="PNG")
                records.append(record)
                bar.update()
            splits[split] = records
    return splits
