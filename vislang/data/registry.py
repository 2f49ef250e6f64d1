"""The dataset registry: named, buildable datasets and the ``name:key=value`` spec strings that select them.

A registered dataset is a *prepare* function that builds images and records into a directory. The registry
writes what it returns as one JSONL manifest per split (the same format users write, see
:func:`vislang.data.readers.read_manifest`) plus ``summary.json``, which is written last and marks the build
complete, so a second ``prepare`` is instant and an interrupted one is redone.

A dataset declares its options as a frozen dataclass with defaults (e.g. ``ShapesOptions``). A spec string
overrides them (``shapes:n_train=10000,size=128``), checked and converted by :mod:`vislang.config`, so a
wrong key or value is a :class:`~vislang.config.ConfigError` naming it, as for ``--set``; the items of a
list option are joined by ``+`` (``emoji:train_only=fluent+fluent_line``).

The built-in datasets register themselves when :mod:`vislang.data.datasets` is imported (importing
:mod:`vislang.data` does it); this module never imports them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vislang.config import ConfigError, config_to_dict, update_config
from vislang.data.cache import data_root
from vislang.data.records import Record
from vislang.errors import DataError
from vislang.utils.io import atomic_write_json, atomic_write_jsonl
from vislang.utils.registry import Registry


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


@dataclass(frozen=True)
class NoOptions:
    """The options of a dataset that takes none."""


PrepareFn = Callable[[PrepareContext, Any], dict[str, list[Record]]]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset.

    Attributes:
        name: Registry name.
        description: One line shown by ``vislang data list``.
        splits: Split names in display order.
        default_split: Split used when none is given.
        license: Licence and attribution line for the data.
        prepare: ``prepare(ctx, options) -> {split: [Record, ...]}``, ``options`` an ``option_type``.
        option_type: Frozen dataclass of the options, every field with its default.
        version: Bumped when the built layout changes, so old builds are rebuilt.
    """

    name: str
    description: str
    splits: tuple[str, ...]
    default_split: str
    license: str
    prepare: PrepareFn
    option_type: type = NoOptions
    version: int = 1

    @property
    def options(self) -> dict[str, Any]:
        """The default options by name."""
        return options_dict(self.option_type())


DATASETS: Registry[DatasetInfo] = Registry("dataset")
"""The registered datasets by name."""


def options_dict(options: Any) -> dict[str, Any]:
    """The fields of an options dataclass by name, values as they are (tuples stay tuples)."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


def register_dataset(name: str, *, description: str, splits: tuple[str, ...], default_split: str,
                     license: str, options: type = NoOptions,
                     version: int = 1) -> Callable[[PrepareFn], PrepareFn]:
    """Decorator registering a prepare function under ``name``.

    Args:
        options: The dataset's options: a frozen dataclass whose fields all have defaults.
    """
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise TypeError(f"options of dataset {name!r} must be a dataclass type, got {options!r}")

    def deco(fn: PrepareFn) -> PrepareFn:
        DATASETS.add(name, DatasetInfo(name, description, tuple(splits), default_split, license, fn, options,
                                       version))
        return fn

    return deco


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of registered datasets matching a glob pattern."""
    return DATASETS.names(pattern)


def get_dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` registered under ``name``."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS.names())}, "
                        "or give the path of a .jsonl manifest, COCO, Karpathy or VQA JSON file")
    return DATASETS.get(name)


def parse_options(info: DatasetInfo, text: str) -> Any:
    """The ``info.option_type`` of ``"key=value,key=value"``, defaults for the keys not given.

    Raises:
        ConfigError: An item is not ``key=value``, names no option, or has a value of the wrong type.
    """
    options = info.option_type()
    hints = typing.get_type_hints(info.option_type)
    names = [f.name for f in dataclasses.fields(options)]
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not names:
            problem = f"expected KEY=VALUE (known: {', '.join(names)})" if names else "it takes no options"
            raise ConfigError(f"bad option {item!r} for dataset {info.name!r}: {problem}")
        where = (f"option {key!r} of dataset {info.name!r}" if key in names
                 else f"bad option {item!r} for dataset {info.name!r}")
        is_list = typing.get_origin(hints.get(key)) in (tuple, list)
        raw = [v for v in value.split("+") if v] if is_list else value  # "," separates the options
        options = update_config(options, {key: raw}, source=where)
    return options


def _parse(spec: str) -> tuple[DatasetInfo, Any]:
    name, _, rest = spec.partition(":")
    info = get_dataset_info(name)
    return info, parse_options(info, rest)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name:key=value,key=value"`` into the name and its typed options (defaults filled in).

    Raises:
        DataError: No dataset of that name.
        ConfigError: A wrong option (see :func:`parse_options`).
    """
    info, options = _parse(spec)
    return info.name, options_dict(options)


def is_registered_spec(spec: str) -> bool:
    """Whether ``spec`` names a registered dataset (as opposed to a file path)."""
    return spec.partition(":")[0] in DATASETS and not os.path.exists(spec)


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
    info, parsed = _parse(spec)
    name, options = info.name, options_dict(parsed)
    out = dataset_dir(name, options, root)
    summary_path = out / "summary.json"
    if not force and summary_path.exists():
        try:
            done = json.loads(summary_path.read_text(encoding="utf-8"))
            # An option added after the build counts at its default (which keeps the earlier behaviour).
            was = done.get("options") if isinstance(done, dict) else None
            if isinstance(was, dict) and done.get("version") == info.version:
                built = {**config_to_dict(info.options), **was}
                # a split added after the build (its file missing) rebuilds it
                if built == config_to_dict(options) and all((out / f"{s}.jsonl").exists() for s in info.splits):
                    return out
        except (OSError, json.JSONDecodeError):
            pass
    if summary_path.exists():
        summary_path.unlink()
    if force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = PrepareContext(out_dir=out, root=data_root(root), force=force)
    splits = info.prepare(ctx, parsed)
    for split, recs in splits.items():
        rows = []
        for r in recs:
            image = Path(r.image)
            rel = os.path.relpath(image, out) if image.is_absolute() else str(image)
            rows.append(r.to_manifest(image=rel.replace(os.sep, "/")))
        atomic_write_jsonl(out / f"{split}.jsonl", rows)
    atomic_write_json(summary_path, {
        "name": name, "version": info.version, "license": info.license,
        "options": config_to_dict(options),
        "splits": summarize(splits),
    })
    return out


def read_summary(spec: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``summary.json`` of a built dataset (building it first if needed)."""
    out = prepare_dataset(spec, root)
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))
