"""Shared fixtures: one data root per test session (reused across runs when ``VISLANG_DATA`` is set), and a
real tiny retrieval model trained once per session, with exact rankings to check indexes and searches against."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("VISLANG_QUIET", "1")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data root for built datasets: ``$VISLANG_DATA`` when set (fast re-runs), else a session temp dir."""
    env = os.environ.get("VISLANG_DATA")
    root = Path(env) if env else tmp_path_factory.mktemp("vislang-data")
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised BertModel saved with save_pretrained, with a word-level tokenizer.json
    covering the words of the shapes captions (others map to [UNK])."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    import torch

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "an", "the", "of", "in", "at", "and", "is", "small", "large",
             "red", "green", "blue", "yellow", "purple", "orange", "gray", "circle", "square", "triangle",
             "diamond", "object", "objects", "left", "right", "center", "top", "bottom", "picture", "cat", "dog"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer = tokenizers.normalizers.Lowercase()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("tiny-bert")
    tok.save(str(path / "tokenizer.json"))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(path)
    return path


# ----------------------------------------------------------------- a real tiny retrieval model (no stand-ins)

#: The shapes images the session's retrieval model is trained on (and that the index tests build from).
SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"

#: Pictures for :func:`draw_pictures`: name -> (fill colour, shape). The words are in the shapes captions.
PICTURES = {"red": ((220, 30, 30), "circle"), "green": ((30, 160, 60), "square"),
            "blue": ((40, 60, 230), "triangle"), "yellow": ((240, 220, 30), "diamond"),
            "purple": ((130, 40, 160), "square"), "orange": ((250, 140, 20), "circle"),
            "gray": ((128, 128, 128), "triangle")}


def _draw(path: Path, name: str, size: tuple[int, int]) -> Path:
    from PIL import Image, ImageDraw

    fill, shape = PICTURES[name]
    w, h = size
    im = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(im)
    box = (w // 6, h // 6, w - w // 6, h - h // 6)
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    elif shape == "triangle":
        d.polygon([(w // 2, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
    else:
        d.polygon([(w // 2, box[1]), (box[2], h // 2), (w // 2, box[3]), (box[0], h // 2)], fill=fill)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


@pytest.fixture(scope="session")
def draw_pictures():
    """``draw(folder, names, size=(40, 32))``: one PNG per name of :data:`PICTURES` (a coloured shape on
    white), written with Pillow as ``folder/<name>.png``; returns their paths."""

    def draw(folder: Path, names: list[str], size: tuple[int, int] = (40, 32)) -> list[Path]:
        return [_draw(Path(folder) / f"{n}.png", n, size) for n in names]

    return draw


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch on ``n`` intra-op threads inside the block. The tiny models of the tests are fastest on one:
    with more, the threads of such small ops spin against each other (several times slower on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def threads():
    """:func:`torch_threads` for fixtures of other folders: ``with threads(1): ...``."""
    return torch_threads


@pytest.fixture(scope="module")
def single_torch_thread():
    """One torch thread for a test module (``pytestmark = pytest.mark.usefixtures("single_torch_thread")``)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def shapes_spec() -> str:
    """The shapes dataset spec the session's retrieval run is trained on (built under ``data_root``)."""
    return SHAPES


@pytest.fixture(scope="session")
def retrieval_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``dual_encoder_tiny`` trained in-process for two steps on the shapes images (a few seconds).

    Its rankings mean little; tests check what indexes and searches report against exact computations
    with its :class:`vislang.inference.retrieval.RetrievalPredictor` (the ``exact`` fixture)."""
    from vislang.cli import main

    out = tmp_path_factory.mktemp("retrieval-run") / "run"
    with torch_threads(1):
        assert main(["train", "retrieval", "--data", SHAPES, "--root", str(data_root), "--model",
                     "dual_encoder_tiny", "--epochs", "1", "--max-steps", "2", "--batch-size", "8", "--image-size",
                     "32", "--seed", "0", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def generate_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``diffusion_unet_tiny`` (16 px, text tower from scratch) trained in-process for a few steps on the
    shapes images (a few seconds). Its pictures mean little; tests check determinism, guidance and plumbing."""
    pytest.importorskip("diffusers")
    from vislang.cli import main

    out = tmp_path_factory.mktemp("generate-run") / "run"
    with torch_threads(1):
        assert main(["train", "generate", "--data", SHAPES, "--root", str(data_root), "--model",
                     "diffusion_unet_tiny", "--text-encoder", "scratch", "--epochs", "1", "--max-steps", "3",
                     "--batch-size", "8", "--image-size", "16", "--seed", "0", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def embedder(retrieval_run: Path):
    """``RetrievalPredictor.load(retrieval_run)``."""
    from vislang.inference.retrieval import RetrievalPredictor

    return RetrievalPredictor.load(retrieval_run)


@pytest.fixture(scope="session")
def other_run(retrieval_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model: a copy of ``retrieval_run`` with one weight changed and re-saved (so another model_id)."""
    import hashlib
    import json
    import shutil

    import safetensors.torch

    out = tmp_path_factory.mktemp("other-run") / "run"
    shutil.copytree(retrieval_run, out)
    for ckpt in ("best", "last"):
        weights = out / "checkpoints" / ckpt / "model.safetensors"
        state = safetensors.torch.load_file(str(weights))
        name = sorted(state)[0]
        state[name] = state[name] + 0.5
        safetensors.torch.save_file(state, str(weights))
        config = weights.with_name("config.json")  # re-saved: config.json records the new weights' digest
        body = json.loads(config.read_text())
        body["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        config.write_text(json.dumps(body))
    return out


class ExactSearch:
    """Exact rankings with the real embedder, to check what an index or ``vislang search`` reports:
    ``scores = embed(query) @ embed(items).T``, sorted, top k.

    Queries and items are texts (``str``) or images (a :class:`pathlib.Path` or a PIL image).
    """

    def __init__(self, emb):
        self.emb = emb

    def embed(self, items) -> np.ndarray:
        items = list(items)
        if all(isinstance(x, str) for x in items):
            return self.emb.embed_texts(items).numpy()
        assert not any(isinstance(x, str) for x in items), "images as Path or PIL images, texts as str"
        return self.emb.embed_images(items).numpy()

    def scores(self, query, items) -> np.ndarray:
        """``embed([query]) @ embed(items).T``: the exact score of every item, (N,)."""
        return (self.embed([query]) @ self.embed(items).T)[0]

    def top(self, query, items, ids, k: int, scores: np.ndarray | None = None) -> list[tuple[str, float]]:
        """``[(id, score)]`` of the ``k`` best items, best first."""
        scores = self.scores(query, items) if scores is None else scores
        return [(ids[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")[:k]]

    def check(self, hits, query, items, ids, k: int, tol: float = 1e-5, exhaustive: bool = True) -> None:
        """Assert that ``hits`` (Hit objects, JSON hit dicts or ``(id, score)`` pairs) are the exact top ``k``:
        the same ids in the same order with the same scores (to ``tol``; items whose scores tie within
        ``tol`` may come in either order). With ``exhaustive=False`` (an approximate index) only that every
        hit's score is its item's exact score, best first."""
        got = [_pair(h) for h in hits]
        scores = self.scores(query, items)
        exact = dict(zip(ids, scores.tolist()))
        assert len(exact) == len(ids) and len({i for i, _ in got}) == len(got), f"repeated ids in {ids} or {got}"
        for i, s in got:
            assert exact[i] == pytest.approx(s, abs=tol), f"{i}: reported {s}, exact {exact[i]}"
        assert all(a[1] >= b[1] - tol for a, b in zip(got, got[1:])), f"not best first: {got}"
        if not exhaustive:
            return
        want = self.top(query, items, ids, k, scores)
        # with each hit's score its item's exact score, equal k best scores mean the exact top k, in order
        # (ids differ from ``want`` only where scores tie within ``tol``)
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=tol), (got, want)


def _pair(hit) -> tuple[str, float]:
    if isinstance(hit, dict):
        return hit["id"], float(hit["score"])
    if isinstance(hit, (tuple, list)):
        return str(hit[0]), float(hit[1])
    return hit.id, float(hit.score)


@pytest.fixture(scope="session")
def exact(embedder) -> ExactSearch:
    """:class:`ExactSearch` with the session's real embedder."""
    return ExactSearch(embedder)
