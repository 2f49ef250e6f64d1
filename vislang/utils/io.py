"""Atomic file writes, tables and progress bars shared by every command."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from vislang.errors import VislangError

#: ``os.open`` flags of a new temporary file: exclusive, not through a symlink, binary on Windows.
_NEW_FILE = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _new_file(path: Path) -> int:
    """Create ``path`` (which must not exist) with mode 0666 less the umask, as a plain ``open()`` would
    (``tempfile.mkstemp`` would make it 0600); returns its descriptor."""
    return os.open(path, _NEW_FILE, 0o666)


def _temp_beside(path: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new file ``.NAME.<random>.tmp`` beside ``path``, opened; see :func:`_new_file`."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        with contextlib.suppress(FileExistsError):
            return _new_file(tmp), tmp
    raise FileExistsError(f"{path.parent}: no free temporary file name for {path.name}")


def new_file_mode(directory: str | os.PathLike) -> int:
    """The permission bits a new file in ``directory`` gets from a plain ``open()``: 0666 less the umask (or
    what the folder's default ACL gives), measured by creating and removing a file there."""
    fd, tmp = _temp_beside(Path(directory) / "mode", ".probe")
    try:
        return os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        os.unlink(tmp)


def check_output_file(path: str | os.PathLike, option: str | None = None) -> Path:
    """``path`` as a file about to be written: refuses a directory and a folder that does not exist.

    Args:
        path: The file.
        option: The option that named it (``--attention``), for the message.

    Raises:
        VislangError: One line naming the option and the path.
    """
    p = Path(path)
    label = f"{option} {p}" if option else str(p)
    if p.is_dir():
        raise VislangError(f"{label}: is a directory; give a file name (e.g. {p / 'out.png'})")
    if not p.parent.is_dir():
        what = "is not a folder" if p.parent.exists() else "does not exist"
        raise VislangError(f"{label}: the folder {p.parent} {what}; create it first")
    return p


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and move it into place only when the block succeeds.

    A crash inside the block leaves ``path`` as it was (absent or the old version), never half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def restore_interrupted_swap(directory: str | os.PathLike) -> None:
    """Put back the previous version of ``directory`` when a crash in :func:`atomic_dir` removed it and did
    not get to rename the new one in (the old one waits beside it as ``.NAME.old-*``)."""
    directory = Path(directory)
    if directory.exists() or not directory.parent.exists():
        return
    olds = sorted(directory.parent.glob(f".{directory.name}.old-*"))
    if olds:
        os.replace(olds[-1], directory)


@contextlib.contextmanager
def atomic_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """A temporary directory beside ``directory`` to fill; on success its files are synced to disk and it is
    swapped in as ``directory`` (the previous version is moved aside first and deleted after), on any error it
    is removed and ``directory`` is left as it was. A crash between the two renames leaves the old version
    as ``.NAME.old-*``, which :func:`restore_interrupted_swap` puts back.

    Files written into it get the mode a plain ``open()`` gives (0666 less the umask) whatever wrote them
    (safetensors makes its files 0600); files hard-linked from elsewhere keep theirs."""
    directory = Path(directory)
    restore_interrupted_swap(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    for stale in directory.parent.glob(f".{directory.name}.tmp-*"):  # left by a killed writer
        shutil.rmtree(stale, ignore_errors=True)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        yield tmp
        mode = new_file_mode(tmp)
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
                    if st.st_nlink == 1 and (st.st_mode & 0o777) != mode:
                        os.chmod(path, mode)
                    os.fsync(f.fileno())
        _fsync_dir(tmp)
        old = None
        if directory.exists():
            old = directory.parent / f".{directory.name}.old-{time.time_ns():020d}"
            os.replace(directory, old)
        os.replace(tmp, directory)
        _fsync_dir(directory.parent)
        for stale in directory.parent.glob(f".{directory.name}.old-*"):
            shutil.rmtree(stale, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write one JSON object per line to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def atomic_save_image(path: str | os.PathLike, image: Any, format: str = "PNG", **kwargs: Any) -> None:
    """Save a PIL image atomically."""
    with atomic_open(path, "wb") as f:
        image.save(f, format=format, **kwargs)


def progress(iterable: Iterable | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it", disable: bool | None = None) -> tqdm:
    """A tqdm progress bar on stderr; quiet when ``VISLANG_QUIET=1`` or stderr is not a terminal in CI."""
    if disable is None:
        disable = os.environ.get("VISLANG_QUIET") == "1"
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Render rows as a plain-text table with right-aligned numbers."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(headers)), sep] + [line(r) for r in cells])
