"""``vislang data ...`` in-process on real files."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from vislang.cli import main

SHAPES = "shapes:n_train=12,n_val=4,n_test=4,size=32"


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and "vislang 0.1.0" in capsys.readouterr().out


def test_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("emoji", "tuxpaint", "shapes"):
        assert name in out


def test_prepare_info_check_shapes(data_root, capsys):
    assert main(["data", "prepare", SHAPES, "--root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "ready in" in out and "split" in out and "train" in out and "12" in out
    assert main(["data", "info", SHAPES, "--root", str(data_root), "--split", "val"]) == 0
    assert "val" in capsys.readouterr().out
    assert main(["data", "check", SHAPES, "--root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "[train]: 12 of 12 records have readable images" in out
    assert "[test]: 4 of 4" in out


def _manifest(tmp_path, n_missing: int):
    rows = []
    for i in range(4):
        if i >= n_missing:
            Image.new("RGB", (6, 6)).save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "text": f"picture {i}"})
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return tmp_path / "m.jsonl"


def test_check_reports_missing_images_together(tmp_path, capsys):
    m = _manifest(tmp_path, n_missing=2)
    assert main(["data", "check", str(m)]) == 2
    err = capsys.readouterr().err
    assert "error: 2 of 4 images of" in err and "0.png: file not found" in err and "1.png" in err
    assert main(["data", "check", str(m), "--skip-bad"]) == 0
    cap = capsys.readouterr()
    assert "2 of 4 records have readable images" in cap.out and "warning: skipping 2 of 4" in cap.err


def test_info_on_a_manifest(tmp_path, capsys):
    assert main(["data", "info", str(_manifest(tmp_path, 0))]) == 0
    out = capsys.readouterr().out
    assert "all" in out and "4" in out


def test_bad_dataset_names_give_clear_errors(tmp_path, capsys):
    assert main(["data", "info", "no-such-thing"]) == 2
    assert "error: no such dataset or file: 'no-such-thing'" in capsys.readouterr().err
    assert main(["data", "prepare", "shapes:colour=red", "--root", str(tmp_path)]) == 2
    assert "error: bad option 'colour=red' for dataset 'shapes'" in capsys.readouterr().err
    assert main(["data", "prepare", "shapes:size=big", "--root", str(tmp_path)]) == 2
    assert "option 'size' of dataset 'shapes'" in capsys.readouterr().err
    assert main(["data", "info", "shapes", "--split", "nope", "--root", str(tmp_path)]) == 2
    assert "has no split 'nope'" in capsys.readouterr().err
