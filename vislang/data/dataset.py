"""Opening any dataset by name or path, and the in-memory :class:`ImageTextDataset`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vislang.data import readers
from vislang.data.records import Record
from vislang.data.registry import (
    get_dataset_info,
    is_registered_spec,
    list_datasets,
    parse_spec,
    prepare_dataset,
)
from vislang.data.shards import is_shard_spec, read_shards
from vislang.errors import DataError, MissingImagesError


@dataclass
class ImageTextDataset:
    """A list of records with where they came from.

    Attributes:
        name: Dataset name or file path.
        split: Split name, or None when the source has no splits.
        records: The records.
        sources: Image path -> where a record of the source file names it (``FILE: line 3: field 'image'``),
            so that errors about an image point at the line to fix (see :func:`load_dataset`).
    """

    name: str
    split: str | None
    records: list[Record]
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def check_images(self, skip_bad: bool = False, workers: int = 8) -> ImageTextDataset:
        """Open every image's header up front and report all failures together.

        Args:
            skip_bad: Drop records whose image is missing or unreadable (with a warning on stderr) instead
                of raising.
            workers: Threads used to check files.

        Returns:
            This dataset, or a copy without the bad records when ``skip_bad``.

        Raises:
            MissingImagesError: Some images are bad and ``skip_bad`` is False.
        """
        from vislang.data.images import find_bad_images

        paths = sorted({r.image for r in self.records})
        bad = find_bad_images(paths, workers)
        if not bad:
            return self
        label = self.name + (f" [{self.split}]" if self.split else "")
        named = [(f"{self.sources[p]}: {p}" if p in self.sources else p, reason) for p, reason in bad]
        if not skip_bad:
            raise MissingImagesError(label, named, len(paths))
        bad_paths = {p for p, _ in bad}
        import sys

        print(f"warning: skipping {len(bad)} of {len(paths)} images of {label} that are missing or "
              f"unreadable (first: {named[0][0]}: {named[0][1]})", file=sys.stderr)
        return ImageTextDataset(self.name, self.split,
                                [r for r in self.records if r.image not in bad_paths], self.sources)


def load_dataset(spec: str | os.PathLike, split: str | None = None, *, root: str | os.PathLike | None = None,
                 image_root: str | os.PathLike | None = None,
                 annotations: str | os.PathLike | None = None) -> ImageTextDataset:
    """Open a dataset by registered name (building it on first use) or by file path.

    Args:
        spec: A registered name (``"emoji"``, ``"shapes:size=32"``) or the path of a JSONL manifest,
            COCO captions JSON, Karpathy split JSON or VQA v2 questions JSON.
        split: Split to load. Registered datasets default to their default split; files with a split field
            (Karpathy, manifests with ``"split"``) are filtered by it; other files ignore it.
        root: Data root for registered datasets.
        image_root: Folder that image file names in COCO/Karpathy/VQA files are relative to
            (default: the JSON file's folder).
        annotations: VQA annotations JSON (default: found beside the questions file).

    Returns:
        The dataset.
    """
    spec = os.fspath(spec)
    if is_registered_spec(spec):
        name, _ = parse_spec(spec)
        info = get_dataset_info(name)
        split = split or info.default_split
        if split not in info.splits:
            raise DataError(f"dataset {name!r} has no split {split!r}; splits: {', '.join(info.splits)}")
        out = prepare_dataset(spec, root)
        sources: dict[str, str] = {}
        return ImageTextDataset(spec, split, readers.read_manifest(out / f"{split}.jsonl", sources), sources)
    if is_shard_spec(spec):  # WebDataset shards: records from their JSON members, filtered by split
        sources = {}
        records = read_shards(spec, sources)
        if split is not None and any("split" in r.meta for r in records):
            records = [r for r in records if r.meta.get("split") == split]
            if not records:
                raise DataError(f"{spec}: no records with split {split!r}")
        return ImageTextDataset(spec, split, records, sources)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"no such dataset or file: {spec!r} (registered datasets: "
                        f"{', '.join(list_datasets())})")
    if path.is_dir():
        raise DataError("is a directory; expected a .jsonl manifest or a COCO / Karpathy / VQA .json file",
                        path=str(path))
    sources = {}
    records = readers.read_any(path, image_root=image_root, annotations=annotations, sources=sources)
    if split is not None and any("split" in r.meta for r in records):
        records = [r for r in records if r.meta.get("split") == split]
        if not records:
            raise DataError(f"{path}: no records with split {split!r}")
    return ImageTextDataset(str(path), split, records, sources)
