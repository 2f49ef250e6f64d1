"""WebDataset tar shards: data that does not fit a folder of files.

``vislang data shard`` writes a dataset's records as numbered ``.tar`` shards in the WebDataset layout (the
``webdataset`` library's :class:`~webdataset.TarWriter`; what open_clip and LAVIS read): per sample, its image
file's bytes (``KEY.png``, ``KEY.jpg``, ...) and a ``KEY.json`` holding the record as a manifest line (id,
captions, label, questions, metadata, split). Any ``--data`` then takes the shards by a brace pattern,
``shards/{000000..000099}.tar``.

Opening shards reads the JSON members only (the images are skipped over); each record's ``image`` is a
member reference ``SHARD.tar#KEY.png``. Training reads the shards streaming: the seeded sampler deals whole
shards to ranks and loader workers (:class:`vislang.data.loader.SeededSampler` with ``shards``), and a
worker reads each shard it is dealt once, front to back, keeping that shard's bytes in memory while its
samples are served (:func:`member_bytes`). Other readers of a member (validation, evaluation, header checks)
go through the same cache.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

from vislang.data.records import Record
from vislang.errors import DataError, ImageError, first_line

SUFFIX = ".tar"
CACHED_SHARDS = 2  # whole shards kept in memory per process (a loader worker streams one at a time)

_cache: OrderedDict[str, dict[str, bytes]] = OrderedDict()
_cache_lock = threading.Lock()


def is_shard_spec(spec: str) -> bool:
    """True for a tar shard or a brace pattern of them (``shards/{000000..000009}.tar``)."""
    return str(spec).endswith(SUFFIX)


def expand(spec: str) -> list[str]:
    """The shard files of a brace pattern, in order (each must exist)."""
    from braceexpand import braceexpand

    paths = list(braceexpand(str(spec)))
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"no such shard: {missing[0]}{more}")
    return paths


def member_ref(shard: str, name: str) -> str:
    """The ``image`` of a record whose picture is member ``name`` of ``shard``."""
    return f"{shard}#{name}"


def split_ref(path: str) -> tuple[str, str] | None:
    """``(shard, member)`` of a member reference; None for a plain file path."""
    shard, sep, name = str(path).rpartition("#")
    return (shard, name) if sep and shard.endswith(SUFFIX) else None


def shard_of(record: Record) -> str | None:
    """The shard file a record's image is in (None for a plain file)."""
    ref = split_ref(record.image)
    return ref[0] if ref else None


# ------------------------------------------------------------------------------------------------ write


def write_shards(records: Sequence[Record], out: str | os.PathLike, shard_size: int, *,
                 to_png: Callable[[str], bytes] | None = None, on_record: Callable[[], None] | None = None
                 ) -> list[Path]:
    """Write ``records`` as WebDataset shards ``OUT/000000.tar``, ... of at most ``shard_size`` samples each
    (each written to a temporary name and renamed when complete).

    Args:
        records: The records, in the order the shards keep.
        out: The folder (created).
        shard_size: Samples per shard.
        to_png: PNG bytes of an image file that is stored converted (SVG drawings: rasterised); None stores
            every file as it is.
        on_record: Called after each record (progress).

    Returns:
        The shard files.
    """
    import webdataset as wds

    if shard_size < 1:
        raise DataError(f"--shard-size must be at least 1, got {shard_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for start in range(0, len(records), shard_size):
        path = out / f"{len(written):06d}{SUFFIX}"
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            writer = wds.TarWriter(f, encoder=False)
            for k, rec in enumerate(records[start:start + shard_size], start):
                key = f"{k:09d}"
                ext = Path(rec.image).suffix.lower().lstrip(".") or "png"
                if ext == "svg" and to_png is not None:
                    data, ext = to_png(rec.image), "png"
                else:
                    data = Path(rec.image).read_bytes()
                line = rec.to_manifest(image=f"{key}.{ext}")
                writer.write({"__key__": key, ext: data, "json": json.dumps(line, ensure_ascii=False).encode()})
                if on_record is not None:
                    on_record()
            writer.close()
        os.replace(tmp, path)
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------------- read


def read_shards(spec: str, sources: dict[str, str] | None = None) -> list[Record]:
    """The records of every shard of ``spec`` (their JSON members only), in shard order; each ``image`` is a
    member reference. ``sources`` gets ``SHARD: sample KEY`` for each image, for later errors."""
    from vislang.data.readers import record_from_manifest

    records: list[Record] = []
    seen: dict[tuple[str, str], str] = {}  # (split, id): ids are unique within a split
    for shard in expand(spec):
        try:
            with tarfile.open(shard, "r:") as tar:  # random access: the image members are skipped over
                for member in tar:
                    if not member.isfile() or not member.name.endswith(".json"):
                        continue
                    key = member.name[:-len(".json")]
                    where = f"sample {key}"
                    data = tar.extractfile(member).read()
                    try:
                        obj = json.loads(data.decode("utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError) as e:
                        raise DataError(f"{shard}: {where}: invalid JSON ({e})") from None
                    image = obj.get("image") if isinstance(obj, dict) else None
                    if not isinstance(image, str) or not image:
                        raise DataError(f"{shard}: {where}: field 'image' must name the sample's image member")
                    rec = record_from_manifest(obj, Path(shard), where, member_ref(shard, image), key)
                    ident = (str(rec.meta.get("split", "")), rec.id)
                    if ident in seen:
                        raise DataError(f"{shard}: {where}: duplicate id {rec.id!r} (first in {seen[ident]})")
                    seen[ident] = f"{shard}: {where}"
                    if sources is not None:
                        sources.setdefault(rec.image, f"{shard}: {where}")
                    records.append(rec)
        except (tarfile.TarError, EOFError) as e:
            raise DataError(f"{shard}: not a readable tar shard ({first_line(e)})") from None
    return records


def member_bytes(ref: str) -> bytes:
    """The bytes of a shard member (``SHARD.tar#NAME``), from the shard read whole and kept in memory (the
    last :data:`CACHED_SHARDS` shards of this process).

    Raises:
        ImageError: The shard is missing or unreadable, or has no such member.
    """
    parsed = split_ref(ref)
    if parsed is None:
        raise ImageError(ref, "not a shard member reference (SHARD.tar#NAME)")
    shard, name = parsed
    with _cache_lock:
        members = _cache.get(shard)
        if members is None:
            members = _read_whole(shard, ref)
            _cache[shard] = members
            while len(_cache) > CACHED_SHARDS:
                _cache.popitem(last=False)
        else:
            _cache.move_to_end(shard)
    if name not in members:
        raise ImageError(ref, f"no member {name!r} in the shard")
    return members[name]


def _read_whole(shard: str, ref: str) -> dict[str, bytes]:
    """Every file member of a shard, read front to back (a streaming read)."""
    if not os.path.isfile(shard):
        raise ImageError(ref, "shard file not found")
    try:
        with tarfile.open(shard, "r|") as tar:
            return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ImageError(ref, f"cannot read the shard ({first_line(e)})") from None


def open_member(ref: str) -> io.BytesIO:
    """A shard member as an in-memory file."""
    return io.BytesIO(member_bytes(ref))
