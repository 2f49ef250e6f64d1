"""An index directory on disk, written atomically and read back with every field and file checked.

    index.json     format, version, kind, options, modality, model_id, dim, model run path, counts
    vectors.faiss  the FAISS index (faiss.write_index)
    items.jsonl    one {"id", "path" | "text", "metadata"} object per vector, in FAISS order

The scheme of :mod:`vislang.train.checkpoint` (:func:`vislang.utils.io.atomic_dir`): fill ``.NAME.tmp-*``,
move the old directory to ``.NAME.old-*``, rename the new one into place, delete the old one. A crash
between the two renames leaves only the old copy, which the next load or save puts back.

Writers hold the index's lock (``.NAME.lock`` beside it, :func:`vislang.utils.lock.file_lock`). Every save
writes a new random ``save_id`` into ``index.json``, so the digest of that file (:func:`meta_digest`)
tells a writer whether the index it read is still the one on disk.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

from vislang.index.common import (
    FORMAT,
    ITEMS_FILE,
    META_FILE,
    VECTORS_FILE,
    VERSION,
    VectorIndexError,
    faiss_module,
)
from vislang.utils.io import atomic_dir, restore_interrupted_swap
from vislang.utils.lock import file_lock

#: How long a reader waits for a writer in the middle of its swap before reporting the index busy.
REPAIR_WAIT_S = 60.0


def write_index_dir(directory: Path, faiss_index: Any, items: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """Write an index directory atomically, replacing any index there (the caller holds its lock).

    Args:
        directory: Where the index goes.
        faiss_index: The FAISS index (None: an ivf index not trained yet, no vectors file).
        items: The ``items.jsonl`` rows, in FAISS order.
        info: The ``index.json`` body; file sizes, the time and a new ``save_id`` are added.

    Returns:
        The :func:`meta_digest` of the new index.
    """
    faiss = faiss_module()
    with atomic_dir(directory) as tmp:
        if faiss_index is not None:
            faiss.write_index(faiss_index, str(tmp / VECTORS_FILE))
        with open(tmp / ITEMS_FILE, "w", encoding="utf-8") as f:
            for it in items:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
        files = {name: (tmp / name).stat().st_size for name in (VECTORS_FILE, ITEMS_FILE)
                 if (tmp / name).exists()}
        body = {**info, "files": files, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "save_id": uuid.uuid4().hex}
        data = (json.dumps(body, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
        (tmp / META_FILE).write_bytes(data)
    return _digest(data)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def meta_digest(directory: Path) -> str | None:
    """The SHA-256 of the ``index.json`` of ``directory``; None when there is none."""
    try:
        return _digest((directory / META_FILE).read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None


def repair_interrupted_swap(directory: Path) -> None:
    """Put back the index a writer killed between its two renames left moved aside, holding the index's lock
    (a writer in the middle of its swap holds it: wait for it to finish rather than race it)."""
    if directory.exists() or not any(directory.parent.glob(f".{directory.name}.old-*")):
        return
    with file_lock(directory, wait=REPAIR_WAIT_S, hint="try again when it has finished"):
        restore_interrupted_swap(directory)


def read_meta(directory: Path) -> tuple[dict[str, Any], str]:
    """The checked ``index.json`` of ``directory`` (after repairing a swap a crash interrupted), and the
    :func:`meta_digest` of what was read.

    Raises:
        VectorIndexError: No index there, or its ``index.json`` is unreadable or lacks a field.
    """
    repair_interrupted_swap(directory)
    meta_path = directory / META_FILE
    if not directory.exists():
        raise VectorIndexError(f"{directory}: no index there (the directory does not exist)")
    if not meta_path.is_file():
        raise VectorIndexError(f"{directory}: not a vislang index ({META_FILE} is missing)")
    try:
        data = meta_path.read_bytes()
        meta = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VectorIndexError(f"{meta_path}: cannot read: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise VectorIndexError(f"{meta_path}: not a vislang index file (field 'format' is not {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise VectorIndexError(f"{meta_path}: field 'version': unsupported index version "
                               f"{meta.get('version')!r} "
                               f"(this vislang reads version {VERSION})")
    for key, typ in (("model_id", str), ("dim", int), ("kind", str), ("modality", str), ("count", int),
                     ("options", dict), ("files", dict)):
        if not isinstance(meta.get(key), typ):
            raise VectorIndexError(f"{meta_path}: field '{key}': missing or not {typ.__name__}")
    return meta, _digest(data)


def read_vectors(directory: Path, meta: dict[str, Any]) -> Any:
    """The FAISS index of ``directory`` (None for an ivf index saved before any vector), after checking
    that every file ``index.json`` lists is there with its size.

    Raises:
        VectorIndexError: A file is missing, of the wrong size or unreadable, or holds vectors of another size.
    """
    for name, size in meta["files"].items():
        path = directory / name
        if not path.is_file():
            raise VectorIndexError(f"{directory}: partial index: {name} is missing")
        if path.stat().st_size != size:
            raise VectorIndexError(f"{path}: corrupt or partial: {path.stat().st_size:,} bytes, "
                                   f"{META_FILE} says {size:,}")
    if VECTORS_FILE not in meta["files"]:
        if meta["kind"] != "ivf" or meta["count"]:
            raise VectorIndexError(f"{directory}: partial index: {VECTORS_FILE} is missing")
        return None
    faiss = faiss_module()
    try:
        ix = faiss.read_index(str(directory / VECTORS_FILE))
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise VectorIndexError(f"{directory / VECTORS_FILE}: cannot read (corrupt?): {reason}") from None
    if ix.d != meta["dim"]:
        raise VectorIndexError(f"{directory / VECTORS_FILE}: holds {ix.d}-d vectors, {META_FILE} says "
                               f"{meta['dim']}")
    return ix


def read_items(path: Path, modality: str) -> list[dict[str, Any]]:
    """The rows of ``items.jsonl``, each checked to have an id and a path (image) or text (text).

    Raises:
        VectorIndexError: The file is missing or a line is not a valid item.
    """
    if not path.is_file():
        raise VectorIndexError(f"{path.parent}: partial index: {ITEMS_FILE} is missing")
    key = "path" if modality == "image" else "text"
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                it = json.loads(line)
            except json.JSONDecodeError as e:
                raise VectorIndexError(f"{path}: line {lineno}: not JSON ({e.msg})") from None
            if not isinstance(it, dict) or not isinstance(it.get("id"), str):
                raise VectorIndexError(f"{path}: line {lineno}: field 'id': missing or not a string")
            if not isinstance(it.get(key), str):
                raise VectorIndexError(f"{path}: line {lineno}: field '{key}': missing or not a string")
            if not isinstance(it.get("metadata", {}), dict):
                raise VectorIndexError(f"{path}: line {lineno}: field 'metadata': not an object")
            items.append(it)
    return items
