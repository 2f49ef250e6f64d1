"""Writers of one index or one run directory exclude each other with an OS file lock (vislang.utils.lock).

Every concurrent writer here is a real process: ``python -m vislang ...``, or a small script that takes the
real lock, signals through a file that it holds it and keeps it until told to let go (or is killed with
SIGKILL). The order of events is set by those signals and by the "waiting for" line a ``--wait`` writer
prints once it is blocked, never by sleeping and hoping.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vislang.cli import main
from vislang.index import Index
from vislang.utils.lock import LockedError, file_lock, lock_file

pytestmark = pytest.mark.usefixtures("single_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
SAFETY_S = 180  # only against a hung test: no assertion depends on time

HOLD = """
import os, pathlib, sys, time
from vislang.utils.lock import file_lock
target, ready, release, inside, fork = sys.argv[1:6]
ready, release = pathlib.Path(ready), pathlib.Path(release)
with file_lock(target, inside=inside == "1", what="test"):
    if fork == "1" and os.fork() == 0:  # a child that outlives its parent for a while, as a data loader worker
        while release.parent.exists() and not release.exists():
            time.sleep(0.02)
        os._exit(0)
    ready.write_text("held")
    while not release.exists():
        time.sleep(0.02)
"""


@contextlib.contextmanager
def holder(target: Path, *, inside: bool = False, fork: bool = False) -> Iterator[subprocess.Popen]:
    """Another process holding the lock of ``target`` inside the block (it lets go at the end, unless the
    test killed it); with ``fork``, it has forked a child that lives until the end of the block."""
    signals = Path(tempfile.mkdtemp(prefix="vislang-hold-"))  # not beside the target: tests list that folder
    ready, release = signals / "ready", signals / "release"
    flags = ["1" if inside else "0", "1" if fork else "0"]
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target), str(ready), str(release), *flags], cwd=ROOT)
    deadline = time.monotonic() + SAFETY_S
    while not ready.exists():
        assert proc.poll() is None, "the lock holder died"
        assert time.monotonic() < deadline, "the lock holder never took the lock"
        time.sleep(0.02)
    try:
        yield proc
    finally:
        release.write_text("go")
        proc.wait(timeout=SAFETY_S)
        shutil.rmtree(signals)


def vislang(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vislang", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_until_blocked(proc: subprocess.Popen) -> str:
    """Read ``proc``'s stderr up to the line saying it waits for the lock."""
    seen = ""
    for line in proc.stderr:
        seen += line
        if line.startswith("waiting for another vislang process"):
            return seen
    raise AssertionError(f"the writer ended without waiting for the lock: {seen}")


def finish(proc: subprocess.Popen, seen: str = "") -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=SAFETY_S)
    return proc.returncode, out, seen + err


@pytest.fixture
def sets(tmp_path, draw_pictures) -> dict[str, Path]:
    """Three folders of distinct pictures: a base index's and two writers'."""
    names = {"base": ["red", "green"], "a": ["blue", "yellow"], "b": ["purple", "orange", "gray"]}
    return {k: draw_pictures(tmp_path / k, v)[0].parent for k, v in names.items()}


def build(retrieval_run: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return ["index", "build", "--model", str(retrieval_run), "--images", str(images), "-o", str(out), *extra]


# --------------------------------------------------------------------------------------------- the lock


def test_a_held_lock_refuses_or_times_out_and_dies_with_its_holder(tmp_path):
    target = tmp_path / "ix"
    with holder(target, fork=True) as proc:  # its forked child, still running, does not keep the lock
        with pytest.raises(LockedError, match=f"^{re.escape(str(target))}: another vislang process is writing "
                                              "this index; try again when it has finished, or pass --wait"), \
                file_lock(target):
            pass
        index = Index.create("m", 4)
        with pytest.raises(LockedError):  # Index.save takes the lock too
            index.save(target)
        assert not target.exists()
        with pytest.raises(LockedError), file_lock(target, wait=0.2):  # waits, then gives up
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=SAFETY_S)
        assert lock_file(target).exists()  # a killed holder leaves its file, but not its lock
        with file_lock(target, wait=False) as path:
            assert path == tmp_path / ".ix.lock"
    assert os.listdir(tmp_path) == []  # released: the lock file is removed


def test_the_holding_thread_may_take_it_again(tmp_path):
    with file_lock(tmp_path / "ix"), file_lock(tmp_path / "ix", what="index"):
        pass
    with file_lock(tmp_path, inside=True) as path:
        assert path == tmp_path / ".lock"
    assert os.listdir(tmp_path) == []


# -------------------------------------------------------------------------------------------- indexes


def test_concurrent_adds_either_fail_or_wait_and_lose_nothing(retrieval_run, sets, tmp_path, capsys):
    ix = tmp_path / "ix"
    assert main(build(retrieval_run, sets["base"], ix)) == 0
    with holder(ix):
        capsys.readouterr()
        assert main(build(retrieval_run, sets["a"], ix, "--add")) == 2  # no --wait: refused at once
        err = capsys.readouterr().err
        assert err.startswith(f"error: {ix}: another vislang process is writing this index") and "--wait" in err
        assert err.count("\n") == 1
        first = vislang(*build(retrieval_run, sets["a"], ix, "--add", "--wait"))
        second = vislang(*build(retrieval_run, sets["b"], ix, "--add", "--wait"))
        seen = [wait_until_blocked(first), wait_until_blocked(second)]  # both are blocked on the lock
    results = [finish(first, seen[0]), finish(second, seen[1])]
    assert [rc for rc, _, _ in results] == [0, 0], results
    totals = sorted(out.split("total ")[1].strip() for _, out, _ in results)
    assert totals == ["4 (was 2)", "7 (was 4)"] or totals == ["5 (was 2)", "7 (was 5)"]  # one after the other
    assert sorted(Index.load(ix).ids) == sorted(f"{n}.png" for n in
                                                ["red", "green", "blue", "yellow", "purple", "orange", "gray"])
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "base", "ix"]  # no lock file, no temporary left


def test_concurrent_fresh_builds_to_one_new_index_exactly_one_wins(retrieval_run, sets, tmp_path):
    # two at once, no --wait: one builds, the other is refused (locked, or the index is there by then)
    ix = tmp_path / "race"
    procs = [vislang(*build(retrieval_run, sets[k], ix)) for k in ("a", "b")]
    results = [finish(p) for p in procs]
    assert sorted(rc for rc, _, _ in results) == [0, 2], results
    (_, _, err), = [r for r in results if r[0] == 2]
    assert err.count("\n") == 1 and ("another vislang process is writing" in err or "already there" in err), err
    winner = "a" if results[0][0] == 0 else "b"
    assert sorted(Index.load(ix).ids) == sorted(p.name for p in sets[winner].iterdir())

    # both waiting: the first to get the lock builds, the second then finds its index and does not replace it
    ix = tmp_path / "new"
    with holder(ix):
        procs = [vislang(*build(retrieval_run, sets[k], ix, "--wait")) for k in ("a", "b")]
        seen = [wait_until_blocked(p) for p in procs]
    results = [finish(p, s) for p, s in zip(procs, seen)]
    assert sorted(rc for rc, _, _ in results) == [0, 2], results
    (_, _, err), = [r for r in results if r[0] == 2]
    assert err.splitlines()[-1] == (f"error: {ix}: an index is already there; pass --add to add to it or --force "
                                    "to replace it")
    winner = "a" if results[0][0] == 0 else "b"
    assert sorted(Index.load(ix).ids) == sorted(p.name for p in sets[winner].iterdir())


def test_a_writer_killed_while_holding_the_lock_does_not_block_the_next(retrieval_run, sets, tmp_path):
    ix = tmp_path / "ix"
    with holder(ix) as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=SAFETY_S)
        assert main(build(retrieval_run, sets["a"], ix)) == 0
    assert len(Index.load(ix)) == 2 and not lock_file(ix).exists()


# ---------------------------------------------------------------------------------------- run directories


def test_a_second_run_into_a_running_run_directory_is_refused(retrieval_run, shapes_spec, data_root, tmp_path):
    assert not (retrieval_run / ".lock").exists()  # a finished run leaves no lock file
    run = tmp_path / "run"
    run.mkdir()
    with holder(run, inside=True):
        proc = vislang("train", "retrieval", "--data", shapes_spec, "--root", str(data_root), "--model",
                       "dual_encoder_tiny", "--epochs", "1", "--max-steps", "1", "--batch-size", "8",
                       "--image-size", "32", "--workers", "0", "--out", str(run))
        rc, _, err = finish(proc)
    assert rc == 2
    assert err.splitlines()[-1] == (f"error: {run}: another vislang process is writing this run directory; wait "
                                    "until that run ends, or choose another --out")
    assert sorted(os.listdir(run)) == []  # nothing written by the refused run
