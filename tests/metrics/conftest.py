"""Fixtures of the metric tests: the committed real-caption corpus and pycocoevalcap as the reference."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def java() -> str:
    """Path of ``java``; skips the test when Java is not installed."""
    path = shutil.which("java")
    if path is None:
        pytest.skip("Java is not installed: pycocoevalcap's PTBTokenizer and METEOR (the reference) need it")
    return path


@pytest.fixture(scope="session")
def jar_tokenize(java: str) -> Callable[[list[str]], list[str]]:
    """pycocoevalcap's PTBTokenizer (the Stanford jar) on captions joined as one document, in order."""
    module = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer",
                                 reason="pycocoevalcap (a dev dependency) is the reference")

    def tokenize(captions: list[str]) -> list[str]:
        out = module.PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
        return [out[i][0] for i in range(len(captions))]

    return tokenize


@pytest.fixture(scope="session")
def real_corpus() -> list[dict]:
    """400 images of real captions (emoji labels and tags, Tux Paint sentences) with perturbed candidates."""
    return json.loads((DATA / "real_captions.json").read_text(encoding="utf-8"))["images"]


@pytest.fixture(scope="session")
def real_references(real_corpus: list[dict]) -> dict[int, list[str]]:
    return {im["image_id"]: im["references"] for im in real_corpus}


@pytest.fixture(scope="session")
def real_candidates(real_corpus: list[dict]) -> dict[int, str]:
    return {im["image_id"]: im["candidate"] for im in real_corpus}
