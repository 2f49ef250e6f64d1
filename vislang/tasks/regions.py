"""Region tagging as a task of the shared training loop: every grid cell of an image encoder learns the
attributes of the object it shows, from the scenes' object annotations (:mod:`vislang.models.region_tagger`).

Records carry their objects in ``meta["objects"]`` (the ``shapes`` data does; a JSONL manifest can too): a
list of dicts with the centre ``x``, ``y`` and radius ``r`` as fractions of the image side (y downwards) and
categorical attributes (``color``, ``shape``, ``size``, ...). A cell's target for an attribute is the value of
the topmost object (the last in the list) whose disc ``r * extent_scale`` covers the cell's centre, or "none".
Geometric augmentation would move the objects away from their annotations, so images are only resized.
A trained tagger names the attributes of every cell with ``vislang.load(run).tag(images)``
(:class:`vislang.inference.regions.RegionPredictor`).

Why: trained through the VQA loss alone, the image encoder of a VQA model learns slowly, because until the
fusion knows where to look its gradients are noise. Tagged first, the regions already say what is where, and
a VQA model whose image encoder starts from the tagger (and is kept frozen) leaves the question prior within
a few hundred steps (see the README's fusion table).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislang.data.loader import ImageTextSamples, build_loader
from vislang.data.records import Record
from vislang.data.transforms import TransformConfig, build_transform
from vislang.errors import VislangError
from vislang.tasks.base import TaskSpec, TrainData, register_task
from vislang.tasks.common import DataConfig
from vislang.train import TrainConfig
from vislang.utils.io import atomic_write_json
from vislang.utils.tensors import model_device

ATTRIBUTES_FILE = "attributes.json"
NONE = "none"
GEOMETRY = ("x", "y", "r")


@dataclass
class RegionTaskConfig:
    """Region-tagging options.

    Attributes:
        objects_key: Record metadata field holding the objects.
        attributes: Object fields to tag (None: every field of the training objects other than x, y, r).
        extent_scale: A cell belongs to an object when its centre is within ``r * extent_scale`` of the
            object's centre (1.2 covers the corners of squares and triangles drawn at radius r).
        val_batch_size: Images per batch when validating.
    """

    objects_key: str = "objects"
    attributes: list[str] | None = None
    extent_scale: float = 1.2
    val_batch_size: int = 128


@dataclass
class RegionRunConfig:
    """Everything a region-tagging run needs; saved as ``config.yaml`` in the run directory.

    Attributes:
        model: Registered region tagger (``region_tagger``, ``region_tagger_tiny``).
        model_kwargs: Overrides for its builder (``image_encoder``, ``image_encoder_kwargs``).
        data: Data section (``transform.augment`` is ignored: images are only resized).
        task: Tagging options.
        train: Loop options.
    """

    model: str = "region_tagger"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=lambda: DataConfig(
        name="shapes", transform=TransformConfig(image_size=64, augment=False)))
    task: RegionTaskConfig = field(default_factory=RegionTaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class AttributeVocab:
    """The values of each tagged attribute; class 0 of every attribute is ``"none"`` (no object there).

    Args:
        values: Attribute name -> its values in class order, ``"none"`` first.
    """

    def __init__(self, values: dict[str, list[str]]):
        self.values = {name: list(v) for name, v in values.items()}
        self.index = {name: {x: i for i, x in enumerate(v)} for name, v in self.values.items()}

    @classmethod
    def build(cls, records: Sequence[Record], objects_key: str = "objects",
              attributes: Sequence[str] | None = None) -> AttributeVocab:
        """The attributes and values of the objects of ``records``.

        Raises:
            VislangError: No record has objects, an object misses its geometry or a named attribute.
        """
        objects = [(r, o) for r in records for o in _objects(r, objects_key)]
        if not objects:
            raise VislangError(f"no training record has objects in meta[{objects_key!r}] (each a dict with x, y, r "
                               "and attributes such as color and shape)")
        names = list(attributes) if attributes else sorted({k for _, o in objects for k in o} - set(GEOMETRY))
        if not names:
            raise VislangError(f"the objects in meta[{objects_key!r}] have no attributes besides x, y, r")
        check_attributes(records, objects_key, names)
        return cls({name: [NONE, *sorted({str(o[name]) for _, o in objects} - {NONE})] for name in names})

    def sizes(self) -> dict[str, int]:
        """Attribute name -> number of classes (``"none"`` included)."""
        return {name: len(v) for name, v in self.values.items()}

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.values)

    @classmethod
    def load(cls, path: str | os.PathLike) -> AttributeVocab:
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))


def check_attributes(records: Sequence[Record], objects_key: str, names: Sequence[str]) -> None:
    """Raise a :class:`VislangError` naming the first record with an object that lacks one of ``names``."""
    for r in records:
        for o in _objects(r, objects_key):
            missing = next((name for name in names if name not in o), None)
            if missing is not None:
                raise VislangError(f"record {r.id}: an object in meta[{objects_key!r}] has no {missing!r}")


def _objects(rec: Record, key: str) -> list[dict[str, Any]]:
    objects = rec.meta.get(key) or []
    for o in objects:
        if not isinstance(o, dict) or any(not isinstance(o.get(g), (int, float)) for g in GEOMETRY):
            raise VislangError(f"record {rec.id}: every object in meta[{key!r}] needs numbers x, y and r "
                               f"(fractions of the image side), got {o!r}")
    return objects


def cell_targets(objects: Sequence[dict[str, Any]], vocab: AttributeVocab, grid_hw: tuple[int, int],
                 extent_scale: float = 1.2) -> dict[str, Tensor]:
    """Per attribute, the class ``(h*w,)`` of each grid cell (row-major): the topmost object whose disc covers
    the cell's centre, else 0 ("none"). A disc smaller than half a cell still claims the cell of its centre."""
    h, w = grid_hw
    ys = (torch.arange(h) + 0.5) / h
    xs = (torch.arange(w) + 0.5) / w
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")                                # (h, w) cell centres
    out = {name: torch.zeros(h, w, dtype=torch.long) for name in vocab.values}
    for o in objects:                                                             # later objects on top
        radius = max(float(o["r"]) * extent_scale, 0.5 / min(h, w))
        inside = (xx - float(o["x"])) ** 2 + (yy - float(o["y"])) ** 2 <= radius ** 2  # (h, w)
        for name, t in out.items():
            t[inside] = vocab.index[name].get(str(o[name]), 0)
    return {name: t.flatten() for name, t in out.items()}


class RegionTask:
    """Batch -> cross-entropy of every cell's attributes; validation -> accuracy on the cells with an object.

    Args:
        vocab: The attributes and their values.
        train_records: The records the training samples index (``batch["index"]``).
        val_records: Validation records.
        eval_transform: Image -> tensor for validation.
        cfg: Task options.
    """

    monitor = "accuracy"
    mode = "max"

    def __init__(self, vocab: AttributeVocab, train_records: Sequence[Record], val_records: Sequence[Record],
                 eval_transform: Any, cfg: RegionTaskConfig | None = None):
        self.vocab, self.cfg = vocab, cfg or RegionTaskConfig()
        self.train_records, self.val_records = list(train_records), list(val_records)
        self.eval_transform = eval_transform

    def _targets(self, records: Sequence[Record], grid_hw: tuple[int, int], device: torch.device
                 ) -> dict[str, Tensor]:
        per = [cell_targets(_objects(r, self.cfg.objects_key), self.vocab, grid_hw, self.cfg.extent_scale)
               for r in records]
        return {name: torch.stack([p[name] for p in per]).to(device) for name in self.vocab.values}  # (B, N)

    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        out = model(batch["image"])
        records = [self.train_records[i] for i in batch["index"].tolist()]
        targets = self._targets(records, out.grid_hw, batch["image"].device)
        losses = {name: F.cross_entropy(out.logits[name].flatten(0, 1).float(), targets[name].flatten())
                  for name in self.vocab.values}
        result: dict[str, Tensor] = {"loss": sum(losses.values())}
        result.update({f"loss_{name}": v.detach() for name, v in losses.items()})
        return result

    def validate(self, model: nn.Module) -> dict[str, float]:
        return self.score_val(self.val_records, self.predict_val(model, self.val_records))

    def predict_val(self, model: nn.Module, records: Sequence[Record]) -> list[tuple[int, dict[str, int]]]:
        """Per record (under torchrun, those of this rank's part): its grid cells with an object, and how many
        of them each attribute's prediction gets right."""
        if not records:
            return []
        device = model_device(model)
        samples = ImageTextSamples(records, self.eval_transform, unit="image")
        rows: list[tuple[int, dict[str, int]]] = []
        for batch in build_loader(samples, self.cfg.val_batch_size):
            out = model(batch["image"].to(device))
            targets = self._targets([samples.records[i] for i in batch["index"].tolist()], out.grid_hw, device)
            first = next(iter(targets.values()))                                              # (B, N)
            has_object = torch.zeros_like(first, dtype=torch.bool)
            for t in targets.values():
                has_object |= t > 0
            right = {name: ((out.logits[name].argmax(-1) == t) & has_object).sum(1).tolist()   # (B,) each
                     for name, t in targets.items()}
            rows += [(cells, {name: r[b] for name, r in right.items()})
                     for b, cells in enumerate(has_object.sum(1).tolist())]
        return rows

    def score_val(self, records: Sequence[Record], pred: list[tuple[int, dict[str, int]]]) -> dict[str, float]:
        """Per-attribute accuracy over every object cell, and their mean."""
        if not records:
            return {}
        cells = sum(c for c, _ in pred)
        metrics = {f"acc_{name}": sum(r[name] for _, r in pred) / max(1, cells) for name in self.vocab.values}
        metrics["accuracy"] = sum(metrics.values()) / len(metrics)
        return metrics

    def save_artifacts(self, directory: Path) -> None:
        self.vocab.save(Path(directory) / ATTRIBUTES_FILE)


@register_task("regions")
class RegionTagging(TaskSpec):
    """Train an image encoder whose grid cells classify the attributes (colour, shape, ...) of the annotated
    object under them, from meta['objects'] (the shapes data has them); start a VQA model from it with
    --set model_kwargs.image_encoder_kwargs.weights=RUN.
    """

    config = RegionRunConfig
    help = ("region tagging: every grid cell names the object it shows (pre-training an image encoder for VQA "
            "from object annotations)")
    monitor_label = "object-cell accuracy"
    predictor = "vislang.inference.regions:RegionPredictor"

    def check(self, cfg: RegionRunConfig) -> None:
        if cfg.task.extent_scale <= 0:
            raise VislangError(f"task.extent_scale must be > 0, got {cfg.task.extent_scale}")

    def open_val(self, cfg: RegionRunConfig, split: str) -> list[Record]:
        return [r for r in super().open_val(cfg, split) if _objects(r, cfg.task.objects_key)]

    def prepare(self, cfg: RegionRunConfig, data: TrainData, reuse: Path | None) -> AttributeVocab:
        if reuse is not None and (reuse / ATTRIBUTES_FILE).exists():
            vocab = AttributeVocab.load(reuse / ATTRIBUTES_FILE)
        else:
            vocab = AttributeVocab.build(data.train, cfg.task.objects_key, cfg.task.attributes)
        check_attributes(data.val, cfg.task.objects_key, list(vocab.values))
        return vocab

    def model_options(self, cfg: RegionRunConfig, vocab: AttributeVocab, data: TrainData) -> dict[str, Any]:
        return {**cfg.model_kwargs, "attributes": vocab.sizes()}

    def samples(self, cfg: RegionRunConfig, data: TrainData, vocab: AttributeVocab, transform) -> ImageTextSamples:
        # resize only (the validation transform): the objects must stay where they are annotated
        samples = ImageTextSamples(data.train, build_transform(cfg.data.transform, train=False), unit="image",
                                   skip_bad=cfg.data.skip_bad)
        print(f"regions: {len(data.train)} training images, attributes "
              f"{', '.join(f'{k} ({len(v) - 1})' for k, v in vocab.values.items())}", file=sys.stderr)
        return samples

    def objective(self, cfg: RegionRunConfig, model: nn.Module, data: TrainData, vocab: AttributeVocab,
                  transform) -> RegionTask:
        return RegionTask(vocab, data.train, data.val, transform, cfg.task)

    def load_artifacts(self, folder: Path, config: dict[str, Any]) -> AttributeVocab:
        return AttributeVocab.load(folder / ATTRIBUTES_FILE)
