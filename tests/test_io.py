"""Atomic writes and tables."""

from __future__ import annotations

import json
import os

import pytest

from vislang.utils.io import atomic_open, atomic_write_json, format_table


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "sub" / "x.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in p.parent.iterdir()] == ["x.json"]


def test_crash_inside_block_keeps_old_file_and_no_temp(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(p) as f:
        f.write("half of the new conte")
        raise RuntimeError("crash")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["x.txt"]


def test_format_table_aligns_numbers():
    out = format_table([["a", 1, 0.5], ["bbb", 100, 0.25]], ("name", "n", "score"))
    lines = out.splitlines()
    assert lines[0].split() == ["name", "n", "score"]
    assert lines[2] == "a       1  0.5000"
    assert lines[3] == "bbb   100  0.2500"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_of_a_plain_open(tmp_path, umask, mode):
    """0666 less the umask, as ``open()`` gives, for atomic files and for every file of an atomic folder (even one
    its writer made 0600, as safetensors does); a file hard-linked in from elsewhere keeps its own."""
    from PIL import Image

    from vislang.utils.io import atomic_dir, atomic_save_image

    elsewhere = tmp_path / "elsewhere.bin"
    elsewhere.write_bytes(b"x")
    elsewhere.chmod(0o640)
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "a.json", {"a": 1})
        atomic_save_image(tmp_path / "a.png", Image.new("RGB", (2, 2)))
        with atomic_dir(tmp_path / "folder") as tmp:
            fd = os.open(tmp / "private.bin", os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
            (tmp / "sub").mkdir()
            (tmp / "sub" / "plain.txt").write_text("y")
            os.link(elsewhere, tmp / "linked.bin")
    finally:
        os.umask(old)
    for path in (tmp_path / "a.json", tmp_path / "a.png", tmp_path / "folder" / "private.bin",
                 tmp_path / "folder" / "sub" / "plain.txt"):
        assert oct(path.stat().st_mode & 0o777) == oct(mode), path
    assert oct((tmp_path / "folder" / "linked.bin").stat().st_mode & 0o777) == oct(0o640)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.png", "elsewhere.bin", "folder"]


def test_check_output_file_refuses_a_folder_and_a_missing_folder(tmp_path):
    from vislang.errors import VislangError
    from vislang.utils.io import check_output_file

    assert check_output_file(tmp_path / "out.png") == tmp_path / "out.png"
    with pytest.raises(VislangError, match=r"--out .*: is a directory"):
        check_output_file(tmp_path, "--out")
    with pytest.raises(VislangError, match=r"the folder .*nope does not exist"):
        check_output_file(tmp_path / "nope" / "x.png")
    (tmp_path / "file").write_text("")
    with pytest.raises(VislangError, match=r"the folder .*file is not a folder"):
        check_output_file(tmp_path / "file" / "x.png")
    assert not (tmp_path / "nope").exists()
