"""Advisory file locks for vislang's writers (index directories, run directories). POSIX only.

A writer holds an exclusive ``fcntl.flock`` on a lock file, ``.NAME.lock`` beside the target (or
``TARGET/.lock`` inside a directory that is never swapped, ``inside=True``), for as long as it writes. The
operating system drops the lock when the process ends however it ends (``kill -9`` included), so a crashed
writer never blocks the next one; forked children (data loader workers) close their copy of the descriptor,
so the lock does not outlive its holder in them. The holder deletes the lock file on release; one left by a
killed holder is harmless and reused. The locks are advisory: they order vislang writers, not other programs.

Within a process the lock is re-entrant for the thread that holds it (``index build`` holds it from reading
the index to the end of :meth:`vislang.index.Index.save`, which takes it again). Windows has no ``fcntl``
and is not supported: taking a lock there fails with a clear error.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from vislang.errors import VislangError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

WAIT_HINT = "try again when it has finished, or pass --wait to wait for it"
_POLL_S = 0.05
_held: dict[str, tuple[int, int]] = {}  # lock file -> (holding thread, descriptor)
_guard = threading.Lock()


def _forget_in_child() -> None:
    """In a forked child (a data loader worker): close the inherited lock descriptors, so that the lock
    goes with its holder when the holder dies, not with the last of its children."""
    global _guard
    for entry in list(_held.values()):
        with contextlib.suppress(OSError):
            os.close(entry[1])
    _held.clear()
    _guard = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class LockedError(VislangError):
    """Another process holds the lock of a target (an index, a run directory) that this one would write."""

    def __init__(self, target: Path, what: str, hint: str):
        super().__init__(f"{target}: another vislang process is writing this {what}; {hint}")
        self.target = target


def lock_file(target: str | os.PathLike, *, inside: bool = False) -> Path:
    """The lock file of ``target``: ``.NAME.lock`` beside it, or ``TARGET/.lock`` when ``inside``."""
    target = Path(target)
    return target / ".lock" if inside else target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def file_lock(target: str | os.PathLike, *, wait: bool | float = False, what: str = "index",
              inside: bool = False, hint: str = WAIT_HINT) -> Iterator[Path]:
    """Hold the exclusive lock of ``target`` inside the block.

    Args:
        target: What is written (an index directory, a run directory).
        wait: False: fail at once when another process holds the lock; True: wait for it; a number: wait
            at most that many seconds.
        what: The target's kind, for the error message.
        inside: Keep the lock file inside ``target`` (a directory that exists and is never swapped).
        hint: The end of the error message: what the user can do.

    Yields:
        The lock file.

    Raises:
        LockedError: Another process holds the lock (and ``wait`` did not get it).
        VislangError: No ``fcntl`` (Windows), or the lock file cannot be created or locked.
    """
    if fcntl is None:
        raise VislangError("vislang's file locks need fcntl (Linux, macOS); Windows is not supported")
    path = lock_file(target, inside=inside)
    key, me = os.path.abspath(path), threading.get_ident()
    with _guard:
        entry = _held.get(key)
    if entry is not None and entry[0] == me:  # re-entered by the holding thread: the outer block releases it
        yield path
        return
    fd, pid = _acquire(path, Path(target), wait, what, hint), os.getpid()
    with _guard:
        _held[key] = (me, fd)
    try:
        yield path
    finally:
        if os.getpid() == pid:  # not in a forked child leaving the block: the lock is its parent's
            _release(key, path, fd)


def _release(key: str, path: Path, fd: int) -> None:
    with _guard:
        _held.pop(key, None)
    with contextlib.suppress(OSError):
        os.unlink(path)  # while still locked: a waiter on this file sees it is gone and opens the new one
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(path: Path, target: Path, wait: bool | float, what: str, hint: str) -> int:
    """An open descriptor of ``path`` holding its lock (the file still at ``path``, not one deleted by the
    previous holder after this process opened it)."""
    if isinstance(wait, bool):
        deadline = None if wait else time.monotonic()
    else:
        deadline = time.monotonic() + max(0.0, float(wait))
    noted = False
    while True:
        fd = _open(path)
        try:
            while not _flock(fd, path, block=deadline is None and noted):
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockedError(target, what, hint)
                if not noted:
                    print(f"waiting for another vislang process to finish writing {target} ...", file=sys.stderr,
                          flush=True)
                    noted = True
                if deadline is not None:
                    time.sleep(_POLL_S)
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _open(path: Path) -> int:
    flags = os.O_RDONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)  # flock needs no write access
    try:
        try:
            return os.open(path, flags, 0o666)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(path, flags, 0o666)
    except OSError as e:
        raise VislangError(f"{path}: cannot create the lock file: {e.strerror or e}") from None


def _flock(fd: int, path: Path, *, block: bool) -> bool:
    """Take the lock of ``fd``; False when another process holds it and ``block`` is False."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError as e:
        raise VislangError(f"{path}: cannot lock: {e.strerror or e}") from None
    return True
