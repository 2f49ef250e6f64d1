"""Shared fixtures of the service tests: tiny real runs of every served task (trained in-process once per
session), an image index over drawn pictures, and a real ``vislang serve`` process on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

PICTURE_NAMES = ["red", "green", "blue", "yellow", "purple", "orange"]


def _train(threads, shapes: str, data_root: Path, out: Path, *args: str) -> Path:
    from vislang.cli import main

    with threads(1):
        assert main(["train", *args, "--data", shapes, "--root", str(data_root), "--batch-size", "8",
                     "--image-size", "32", "--max-steps", "3", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def serve_runs(data_root: Path, retrieval_run: Path, shapes_spec: str, threads,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Task -> a tiny real run: caption (attention LSTM), retrieval, vqa (attention fusion), classify (late
    fusion: no attention, so its explanation takes the occlusion path)."""
    root = tmp_path_factory.mktemp("serve-runs")

    def train(name: str, *args: str) -> Path:
        return _train(threads, shapes_spec, data_root, root / name, *args)

    return {
        "caption": train("cap", "caption", "--model", "caption_lstm_tiny", "--set", "task.max_len=12"),
        "retrieval": retrieval_run,
        "vqa": train("vqa", "vqa", "--model", "vqa_tiny", "--fusion", "attention", "--set", "task.max_len=16"),
        "classify": train("cls", "classify", "--model", "fusion_classifier_tiny"),
    }


@pytest.fixture(scope="session")
def serve_pictures(tmp_path_factory: pytest.TempPathFactory, draw_pictures) -> list[Path]:
    """Six drawn pictures (a coloured shape on white, 40 x 32 PNG): the indexed images."""
    return draw_pictures(tmp_path_factory.mktemp("serve-pictures"), PICTURE_NAMES)


@pytest.fixture(scope="session")
def serve_index(serve_runs: dict[str, Path], serve_pictures: list[Path], threads,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image index of :func:`serve_pictures` built by ``vislang index build`` with the retrieval run."""
    from vislang.cli import main

    out = tmp_path_factory.mktemp("serve-index") / "pictures.index"
    with threads(1):
        assert main(["index", "build", "--model", str(serve_runs["retrieval"]), "--images",
                     str(serve_pictures[0].parent), "-o", str(out)]) == 0
    return out
