"""Batch commands on many images: good ones processed and printed as each batch is done, every bad one
reported together at the end (exit 2, or a warning and exit 0 with ``--skip-bad``), and a peak memory that
does not grow with the number of images.

Real files (missing, text, truncated JPEG, a named pipe the command blocks on, large PNGs), a captioner
trained here, the session's retrieval run, the real CLI in-process and in real ``python -m vislang.cli``
processes. Memory is the peak resident set size of the command's process (``RUSAGE_CHILDREN`` of a small
wrapper process that runs only it): a 3000×3000 PNG decodes to 36 MB in Pillow, so holding every image of a
batch (as before) grows the peak by that much per image."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from vislang.cli import main

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: one thread is fastest

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"


@pytest.fixture(scope="module")
def caption_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("caption-run") / "run"
    assert main(["train", "caption", "--data", SHAPES, "--root", str(data_root), "--model", "caption_lstm_tiny",
                 "--epochs", "1", "--max-steps", "2", "--batch-size", "8", "--image-size", "32", "--out",
                 str(out)]) == 0
    return out


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[list[str], list[str]]:
    """``(all, good)``: three good PNGs with a missing file and a text file among them."""
    good = []
    for name, color in (("a", "red"), ("b", "green"), ("c", "blue")):
        Image.new("RGB", (40, 30), color).save(tmp_path / f"{name}.png")
        good.append(str(tmp_path / f"{name}.png"))
    (tmp_path / "notes.png").write_text("not an image")
    everything = [good[0], str(tmp_path / "gone.png"), good[1], str(tmp_path / "notes.png"), good[2]]
    return everything, good


def test_caption_prints_every_good_image_then_names_every_bad_one(caption_run, inputs, capsys):
    paths, good = inputs
    assert main(["caption", *paths, "--model", str(caption_run), "--batch-size", "2"]) == 2
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.splitlines()] == good
    assert err.startswith("error: 2 of 5 images of the command line are missing or unreadable:")
    assert "gone.png: file not found" in err and "notes.png: not an image" in err
    assert "--skip-bad" in err and "Traceback" not in err

    assert main(["caption", *paths, "--model", str(caption_run), "--json", "--skip-bad"]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["image"] for line in out.splitlines()] == good
    assert err.startswith("warning: skipping 2 of 5 images of the command line")
    assert "gone.png: file not found" in err and "notes.png: not an image" in err and "error" not in err


def test_caption_with_only_bad_images(caption_run, inputs, capsys):
    paths, _ = inputs
    assert main(["caption", paths[1], paths[3], "--model", str(caption_run)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "2 of 2 images" in err and "gone.png" in err and "notes.png" in err
    assert main(["caption", paths[1], "--model", str(caption_run), "--batch-size", "0"]) == 2
    assert "--batch-size must be at least 1" in capsys.readouterr().err


def test_index_build_lists_every_image_whose_pixels_are_broken(retrieval_run, draw_pictures, tmp_path, capsys):
    folder = tmp_path / "imgs"
    draw_pictures(folder, ["red", "green", "blue"])
    for name in ("cut1.jpg", "cut2.jpg"):  # headers fine (they pass the up-front check), pixel data cut short
        Image.effect_noise((64, 64), 60).convert("RGB").save(folder / name, quality=95)
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    out = tmp_path / "idx"
    argv = ["index", "build", "--model", str(retrieval_run), "--images", str(folder), "-o", str(out),
            "--batch-size", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"2 of 5 images of {folder} are missing or unreadable" in err
    assert "cut1.jpg: truncated or corrupt" in err and "cut2.jpg: truncated or corrupt" in err
    assert not (out / "index.json").exists()  # nothing written

    assert main([*argv, "--skip-bad"]) == 0
    printed, err = capsys.readouterr()
    assert "added 3 images" in printed and "2 unreadable" in printed
    assert "warning: skipping 2 of 5 images" in err and "cut1.jpg" in err and "cut2.jpg" in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_caption_streams_each_batch_before_reading_the_next(caption_run, inputs, tmp_path):
    """The third image is a named pipe: the command blocks opening it until this test writes a PNG into it,
    which it does only once the first batch's two captions have come out of the process."""
    _, good = inputs
    pipe = tmp_path / "later.png"
    os.mkfifo(pipe)
    argv = [sys.executable, "-m", "vislang.cli", "caption", good[0], good[1], str(pipe), good[2], "--model",
            str(caption_run), "--batch-size", "2"]
    stalled = threading.Event()

    def unblock(stall: bool) -> None:
        """Write a PNG into the pipe once the command opens it (nothing if the command ends first)."""
        if stall:
            stalled.set()
        while proc.poll() is None:
            try:
                fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)  # fails while no reader has it open
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                time.sleep(0.05)
                continue
            os.write(fd, Path(good[0]).read_bytes())  # a few hundred bytes: fits the pipe's buffer
            os.close(fd)
            return

    guard = threading.Timer(300, unblock, (True,))  # only if the captions never come: then the test fails
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    guard.start()
    try:
        first = [proc.stdout.readline(), proc.stdout.readline()]
        if not stalled.is_set():
            guard.cancel()
            unblock(False)
        rest, err = proc.communicate(timeout=300)
    finally:
        guard.cancel()
        proc.kill()
    assert not stalled.is_set(), "the first batch's captions were not printed before the next batch was read"
    assert [line.split("\t")[0] for line in first] == good[:2]
    assert [line.split("\t")[0] for line in rest.splitlines()] == [str(pipe), good[2]]
    assert proc.returncode == 0 and "Traceback" not in err


# ---------------------------------------------------------------------------------- peak memory

SIDE = 3000
FEW, MANY = 4, 12
GROWTH_MB = 100  # holding the 8 extra images would add 8 x 36 MB = 288 MB
CEILING_MB = 1000

WRAPPER = """import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode, r.stderr[-2000:].replace(chr(10), ' '))
"""


def peak_rss_mb(argv: list[str]) -> float:
    """Peak RSS (MB) of ``vislang ARGV`` run in a new process, which must succeed."""
    res = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "vislang.cli", *argv],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    kb, rc, err = res.stdout.split(" ", 2)
    assert rc == "0", err
    return int(kb) / 1024


@pytest.fixture(scope="module")
def large_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str]]:
    """``(few, many)``: 4 and 12 paths (folders ``few/`` and ``many/``) of one large RGB PNG, hard-linked."""
    root = tmp_path_factory.mktemp("large")
    original = root / "original.png"
    im = Image.new("RGB", (SIDE, SIDE), "white")
    d = ImageDraw.Draw(im)
    d.ellipse((300, 300, 1500, 1500), fill=(220, 30, 30))
    d.rectangle((1700, 1200, 2700, 2700), fill=(40, 60, 230))
    im.save(original)
    out = []
    for name, n in (("few", FEW), ("many", MANY)):
        (root / name).mkdir()
        for i in range(n):
            os.link(original, root / name / f"img{i:02d}.png")
        out.append(sorted(str(p) for p in (root / name).iterdir()))
    return out[0], out[1]


def test_index_build_peak_is_flat_in_the_number_of_images(retrieval_run, large_images, tmp_path):
    peaks = [peak_rss_mb(["index", "build", "--model", str(retrieval_run), "--images", str(Path(paths[0]).parent),
                          "-o", str(tmp_path / f"idx{len(paths)}")]) for paths in large_images]
    assert peaks[1] < CEILING_MB and peaks[1] - peaks[0] < GROWTH_MB, peaks


def test_caption_peak_is_flat_in_the_number_of_images(caption_run, large_images):
    peaks = [peak_rss_mb(["caption", *paths, "--model", str(caption_run)]) for paths in large_images]
    assert peaks[1] < CEILING_MB and peaks[1] - peaks[0] < GROWTH_MB, peaks
