"""The dataset registry: named, buildable datasets and the ``name:key=value`` spec strings that select them.

A registered dataset is a *prepare* function that builds images and records into a directory. The registry
writes what it returns as one JSONL manifest per split (the same format users write, see
:func:`vislang.data.readers.read_manifest`) plus ``summary.json``, which is written last and marks the build
complete, so a second ``prepare`` is instant and an interrupted one is redone.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vislang.data.cache import data_root
from vislang.data.records import Record
from vislang.errors import DataError
from vislang.utils.io import atomic_write_json, atomic_write_jsonl


@dataclass(frozen=True)
class PrepareContext:
    """What a prepare function gets besides its options.

    Attributes:
        out_dir: Directory to build into (images and any intermediate files).
        root: The data root, for caches shared between builds (e.g. downloaded packages).
        force: Rebuild intermediate files even when present.
    """

    out_dir: Path
    root: Path
    force: bool = False


PrepareFn = Callable[..., dict[str, list[Record]]]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset.

    Attributes:
        name: Registry name.
        description: One line shown by ``vislang data list``.
        splits: Split names in display order.
        default_split: Split used when none is given.
        license: Licence and attribution line for the data.
        prepare: ``prepare(ctx, **options) -> {split: [Record, ...]}``.
        options: Default options; a spec string may override them.
        version: Bumped when the built layout changes, so old builds are rebuilt.
    """

    name: str
    description: str
    splits: tuple[str, ...]
    default_split: str
    license: str
    prepare: PrepareFn
    options: dict[str, Any] = field(default_factory=dict)
    version: int = 1


_DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(name: str, *, description: str, splits: tuple[str, ...], default_split: str,
                     license: str, options: dict[str, Any] | None = None,
                     version: int = 1) -> Callable[[PrepareFn], PrepareFn]:
    """Decorator registering a prepare function under ``name``."""

    def deco(fn: PrepareFn) -> PrepareFn:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        _DATASETS[name] = DatasetInfo(name, description, tuple(splits), default_split, license, fn,
                                      dict(options or {}), version)
        return fn

    return deco


def _ensure_builtin() -> None:
    # Importing the modules registers the built-in datasets.
    from vislang.data import emoji, shapes, tuxpaint  # noqa: F401


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of registered datasets matching a glob pattern."""
    _ensure_builtin()
    return sorted(n for n in _DATASETS if fnmatch.fnmatch(n, pattern))


def get_dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` registered under ``name``."""
    _ensure_builtin()
    try:
        return _DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(_DATASETS))}, "
                        "or give the path of a .jsonl manifest, COCO, Karpathy or VQA JSON file") from None


def _coerce(value: str, default: Any) -> Any:
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"expected true/false, got {value!r}")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, (list, tuple)):
        return tuple(v for v in value.split("+") if v)
    return value


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name:key=value,key=value"`` into the name and its typed options (defaults filled in)."""
    name, _, rest = spec.partition(":")
    info = get_dataset_info(name)
    options = dict(info.options)
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in info.options:
            raise DataError(f"bad option {item!r} for dataset {name!r}; options: "
                            + ", ".join(f"{k}={v!r}" for k, v in info.options.items()))
        try:
            options[key] = _coerce(value, info.options[key])
        except ValueError as e:
            raise DataError(f"option {key!r} of dataset {name!r}: {e}") from None
    return name, options


def is_registered_spec(spec: str) -> bool:
    """Whether ``spec`` names a registered dataset (as opposed to a file path)."""
    _ensure_builtin()
    return spec.partition(":")[0] in _DATASETS and not os.path.exists(spec)


def dataset_dir(name: str, options: dict[str, Any], root: str | os.PathLike | None = None) -> Path:
    """Build directory: ``<root>/<name>`` for default options, ``<root>/<name>-<hash>`` otherwise."""
    info = get_dataset_info(name)
    changed = {k: v for k, v in options.items() if info.options.get(k) != v}
    base = data_root(root)
    if not changed:
        return base / name
    digest = hashlib.sha1(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return base / f"{name}-{digest}"


def summarize(splits: dict[str, list[Record]]) -> list[dict[str, Any]]:
    """Counts per split: records, distinct images, captions, questions, labels and concepts."""
    rows = []
    for split, recs in splits.items():
        rows.append({
            "split": split,
            "images": len({r.image for r in recs}),
            "captions": sum(len(r.captions) for r in recs),
            "questions": sum(len(r.qa) for r in recs),
            "labels": len({r.label for r in recs if r.label is not None}),
            "concepts": len({r.meta["concept"] for r in recs if "concept" in r.meta}),
        })
    return rows


def prepare_dataset(spec: str, root: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Build a registered dataset if it is not built yet; returns its directory.

    Args:
        spec: ``name`` or ``name:key=value,...``.
        root: Data root (default ``$VISLANG_DATA`` or the user cache directory).
        force: Rebuild even when a complete build exists.
    """
    name, options = parse_spec(spec)
    info = get_dataset_info(name)
    out = dataset_dir(name, options, root)
    summary_path = out / "summary.json"
    if not force and summary_path.exists():
        try:
            done = json.loads(summary_path.read_text(encoding="utf-8"))
            # An option added after the build counts at its default (which keeps the earlier behaviour).
            was = done.get("options") if isinstance(done, dict) else None
            if isinstance(was, dict) and done.get("version") == info.version:
                built = {**json.loads(json.dumps(info.options, default=str)), **was}
                if built == json.loads(json.dumps(options, default=str)):
                    return out
        except (OSError, json.JSONDecodeError):
            pass
    if summary_path.exists():
        summary_path.unlink()
    if force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = PrepareContext(out_dir=out, root=data_root(root), force=force)
    splits = info.prepare(ctx, **options)
    for split, recs in splits.items():
        rows = []
        for r in recs:
            image = Path(r.image)
            rel = os.path.relpath(image, out) if image.is_absolute() else str(image)
            rows.append(r.to_manifest(image=rel.replace(os.sep, "/")))
        atomic_write_jsonl(out / f"{split}.jsonl", rows)
    atomic_write_json(summary_path, {
        "name": name, "version": info.version, "license": info.license,
        "options": json.loads(json.dumps(options, default=str)),
        "splits": summarize(splits),
    })
    return out


def read_summary(spec: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``summary.json`` of a built dataset (building it first if needed)."""
    out = prepare_dataset(spec, root)
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))
