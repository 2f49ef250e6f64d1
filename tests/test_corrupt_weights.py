"""Damaged weights files through the real commands: a truncated ``model.safetensors``, 64 bytes of it
overwritten (same length, so only its digest tells), a truncated or overwritten ``train_state.pt``, a damaged
run given as an encoder's ``weights=RUN``, and damaged weights files vislang wrote with ``save_weights``. Each
command exits 2 with one stderr line ``error: <file>: corrupt or partial: ...`` and no traceback; intact files
still work.

The runs are real (trained here for a step or two on the shapes images); each test damages a copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_model_folders import _one_error_line, _set_digest

from vislang.cli import main
from vislang.models import create_model
from vislang.models.encoders import save_weights
from vislang.utils.folder import sha256_file

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"
QUESTION = "What color is the circle?"


@pytest.fixture(scope="module")
def caption_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("caption-run") / "run"
    assert main(["train", "caption", "--data", SHAPES, "--root", str(data_root),
                 "--model", "caption_lstm_tiny", "--epochs", "1", "--max-steps", "2", "--batch-size", "8",
                 "--image-size", "32", "--set", "task.max_len=8", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def vqa_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vqa-run") / "run"
    assert main(["train", "vqa", "--data", SHAPES, "--root", str(data_root), "--model", "vqa_tiny",
                 "--max-steps", "1", "--batch-size", "16", "--image-size", "32", "--out", str(out)]) == 0
    return out


def truncate(path: Path) -> None:
    """Keep the first half of the file (a copy or download cut short)."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def scribble(path: Path) -> None:
    """Overwrite 64 bytes in the middle of the file with other bytes (a bad sector, a stray write): the length
    and usually the structure stay the same."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xA5 for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


DAMAGES: dict[str, Callable[[Path], None]] = {"truncated": truncate, "64 bytes overwritten": scribble}


def _copy(run: Path, tmp_path: Path) -> Path:
    """A copy of ``run`` with files of its own (copytree does not keep the hard links between checkpoints)."""
    return Path(shutil.copytree(run, tmp_path / "run"))


def _error_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """The one stderr line of ``vislang ARGV`` (exit 2, nothing on stdout), after dropping what the runs'
    training printed."""
    capsys.readouterr()
    return _one_error_line(capsys, argv)


def _assert_corrupt(line: str, path: Path, detail: str = "") -> None:
    assert f"{path}: corrupt or partial: {detail}" in line, line


# --------------------------------------------------------------------------- model.safetensors, by command


def _caption(run: Path, tmp_path: Path, draw) -> list[str]:
    [image] = draw(tmp_path / "img", ["red"])
    return ["caption", str(image), "--model", str(run), "--device", "cpu"]


def _ask(run: Path, tmp_path: Path, draw) -> list[str]:
    [image] = draw(tmp_path / "img", ["red"])
    return ["ask", str(image), QUESTION, "--model", str(run), "--device", "cpu"]


def _index_build(run: Path, tmp_path: Path, draw) -> list[str]:
    pytest.importorskip("faiss")
    draw(tmp_path / "photos", ["red", "blue"])
    return ["index", "build", "--model", str(run), "--images", str(tmp_path / "photos"),
            "-o", str(tmp_path / "photos.index")]


def _resume(run: Path, tmp_path: Path, draw) -> list[str]:
    return ["train", "caption", "--out", str(run), "--resume", "--max-steps", "3"]


#: command: (the fixture of its run, the checkpoint it reads, its argv)
COMMANDS = {"caption": ("caption_run", "best", _caption), "ask": ("vqa_run", "best", _ask),
            "index build": ("retrieval_run", "best", _index_build),
            "train --resume": ("caption_run", "last", _resume)}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_damaged_model_weights_give_one_line(command: str, damage: str, request: pytest.FixtureRequest,
                                             tmp_path: Path, draw_pictures, capsys: pytest.CaptureFixture):
    fixture, checkpoint, argv_of = COMMANDS[command]
    run = _copy(request.getfixturevalue(fixture), tmp_path)
    weights = run / "checkpoints" / checkpoint / "model.safetensors"
    DAMAGES[damage](weights)
    line = _error_line(capsys, argv_of(run, tmp_path, draw_pictures))
    _assert_corrupt(line, weights, "checksum mismatch")


def test_in_a_real_process_the_line_is_all_of_stderr(caption_run: Path, tmp_path: Path, draw_pictures):
    run = _copy(caption_run, tmp_path)
    weights = run / "checkpoints" / "best" / "model.safetensors"
    scribble(weights)
    proc = subprocess.run([sys.executable, "-m", "vislang.cli", *_caption(run, tmp_path, draw_pictures)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "VISLANG_QUIET": "1"})
    assert proc.returncode == 2 and not proc.stdout, proc
    [line] = proc.stderr.splitlines()
    assert line.startswith("error: ") and "Traceback" not in proc.stderr
    _assert_corrupt(line, weights, "checksum mismatch")


@pytest.mark.parametrize("command", ["caption", "train --resume"])
def test_weights_safetensors_cannot_parse_give_one_line(command: str, request: pytest.FixtureRequest,
                                                         tmp_path: Path, draw_pictures, capsys):
    """The digest recorded is the cut file's (as if saved so): safetensors' own refusal is the line."""
    fixture, checkpoint, argv_of = COMMANDS[command]
    run = _copy(request.getfixturevalue(fixture), tmp_path)
    folder = run / "checkpoints" / checkpoint
    truncate(folder / "model.safetensors")
    _set_digest(folder, sha256_file(folder / "model.safetensors"))
    line = _error_line(capsys, argv_of(run, tmp_path, draw_pictures))
    _assert_corrupt(line, folder / "model.safetensors", "cannot read it (")


# ------------------------------------------------------------------------------------------ train_state.pt


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_train_state_refuses_to_resume(damage: str, caption_run: Path, tmp_path: Path, capsys):
    run = _copy(caption_run, tmp_path)
    state = run / "checkpoints" / "last" / "train_state.pt"
    DAMAGES[damage](state)
    line = _error_line(capsys, _resume(run, tmp_path, None))
    _assert_corrupt(line, state, "checksum mismatch")

    _set_digest(state.parent, sha256_file(state), key="train_state_sha256")  # as if saved so: torch refuses
    if damage == "truncated":
        line = _error_line(capsys, _resume(run, tmp_path, None))
        _assert_corrupt(line, state, "cannot read it (")


def test_intact_copies_still_work(caption_run: Path, tmp_path: Path, draw_pictures, capsys):
    run = _copy(caption_run, tmp_path)
    assert main(_caption(run, tmp_path, draw_pictures)) == 0
    assert main(_resume(run, tmp_path, draw_pictures)) == 0
    assert "error" not in capsys.readouterr().err


# ------------------------------------------------------------------ an encoder's weights=RUN or weights=FILE


def _train_vqa_from(weights: Path, data_root: Path, tmp_path: Path) -> list[str]:
    return ["train", "vqa", "--data", SHAPES, "--root", str(data_root), "--model", "vqa_tiny",
            "--max-steps", "1", "--batch-size", "16", "--image-size", "32",
            "--set", f"model_kwargs.image_encoder_kwargs.weights={weights}",
            "--out", str(tmp_path / "transfer")]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_run_as_encoder_weights_gives_one_line(damage: str, vqa_run: Path, data_root: Path,
                                                       tmp_path: Path, capsys):
    run = _copy(vqa_run, tmp_path)
    weights = run / "checkpoints" / "best" / "model.safetensors"
    DAMAGES[damage](weights)
    for source in (run, weights):  # the run, and its checkpoint's weights file given directly
        line = _error_line(capsys, _train_vqa_from(source, data_root, tmp_path))
        _assert_corrupt(line, weights, "checksum mismatch")


def test_save_weights_files_record_and_check_their_digest(data_root: Path, tmp_path: Path, capsys):
    encoder = tmp_path / "encoder.safetensors"
    save_weights(create_model("vqa_tiny").image_encoder, encoder)
    assert main(_train_vqa_from(encoder, data_root, tmp_path)) == 0  # intact: training starts from it
    capsys.readouterr()
    for damage in sorted(DAMAGES):
        save_weights(create_model("vqa_tiny").image_encoder, encoder)
        DAMAGES[damage](encoder)
        line = _error_line(capsys, _train_vqa_from(encoder, data_root, tmp_path / damage))
        _assert_corrupt(line, encoder, "checksum mismatch")


def test_a_damaged_external_weights_file_gives_one_line(data_root: Path, tmp_path: Path, capsys):
    """A .pth of the user's has no recorded digest: torch's refusal to parse it is the line."""
    external = tmp_path / "encoder.pth"
    torch.save(create_model("vqa_tiny").image_encoder.state_dict(), external)
    truncate(external)
    line = _error_line(capsys, _train_vqa_from(external, data_root, tmp_path))
    assert f"{external}: cannot read weights (" in line and "corrupt or partial" in line
