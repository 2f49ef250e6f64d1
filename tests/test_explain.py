"""Explanations for every task, on tiny real models trained in-process: the search match maps (exact: each
map's mean is its score), the classifier's modality weights and image maps (fusion gates and attention, or
blanking and occlusion), ``classify_many``, the heat-map figures, and ``--explain`` on caption, ask, classify
and search."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vislang
from vislang.cli import main
from vislang.errors import VislangError
from vislang.models import create_model
from vislang.models.encoders import ImageFeatures
from vislang.viz import heatmap_figure, png_bytes, stack_figures
from vislang.viz.heatmap import LABEL_H, PAD, TITLE_H

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"
TRAIN = ["--data", SHAPES, "--batch-size", "8", "--image-size", "32", "--max-steps", "1", "--set", "data.max_val=2"]
CLASSES = {"circle", "diamond", "square", "triangle"}


def train(data_root: Path, out: Path, *args: str) -> Path:
    assert main(["train", *args, *TRAIN, "--root", str(data_root), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def runs(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny runs of one step each: a late-fusion and a gated + attending classifier, a captioner, a VQA model."""
    root = tmp_path_factory.mktemp("explain-runs")
    return {
        "late": train(data_root, root / "late", "classify", "--model", "fusion_classifier_tiny", "--fusion",
                      "late-concat"),
        "gated": train(data_root, root / "gated", "classify", "--model", "fusion_classifier_tiny", "--fusion",
                       "modality-attention"),
        "caption": train(data_root, root / "caption", "caption", "--model", "caption_lstm_tiny", "--set",
                         "task.max_len=12"),
        "vqa": train(data_root, root / "vqa", "vqa", "--model", "vqa_tiny", "--fusion", "attention", "--set",
                     "task.max_len=16"),
    }


@pytest.fixture
def pics(tmp_path: Path, draw_pictures) -> list[Path]:
    return draw_pictures(tmp_path / "imgs", ["red", "green", "blue", "yellow"])


def one_error_line(capsys, starts: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(starts) and "\n" not in err, err
    return err


# ------------------------------------------------------------------------------------------- search maps


@pytest.mark.parametrize("options, exact", [
    ({}, True), ({"image_pool_grid": 2}, True), ({"image_pool_grid": 3, "image_thumbnail": 5}, True),
    ({"image_thumbnail": 4}, True), ({"image_encoder": "resnet_tiny", "image_thumbnail": 3}, True),
    ({"image_encoder": "vit_tiny"}, False), ({"image_encoder": "vit_tiny", "image_pool_grid": 3}, True),
])
def test_region_scores_mean_is_the_score(options, exact):
    torch.manual_seed(0)
    model = create_model("dual_encoder_tiny", text_encoder_kwargs={"vocab_size": 20}, **options).eval()
    images, queries = torch.randn(3, 3, 32, 32), F.normalize(torch.randn(3, 16), dim=-1)
    with torch.inference_mode():
        out = model.region_scores(images, queries)
        scores = (model.encode_image(images) * queries).sum(-1)                      # (B,)
        shared = model.region_scores(images, queries[0])                              # (E,): every image
    h, w = model.image_encoder(images).grid_hw
    assert out.maps.shape == (3, h, w) and out.exact is exact
    torch.testing.assert_close(out.maps.mean(dim=(1, 2)), scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.scores, scores, atol=1e-6, rtol=0)
    torch.testing.assert_close(shared.maps.mean(dim=(1, 2)), (model.encode_image(images) @ queries[0]).detach(),
                               atol=1e-5, rtol=0)
    with pytest.raises(VislangError, match="queries must be"):
        model.region_scores(images, queries[:2])


@pytest.mark.parametrize("pool_grid", [0, 3])
def test_each_cell_gets_exactly_its_own_term(pool_grid):
    """Without a thumbnail ``q · W x`` is linear in the grid, so each cell's term is ``g_i · d(q · W x)/d g_i``
    (computed here by autograd, independently of the map)."""
    torch.manual_seed(1)
    model = create_model("dual_encoder_tiny", text_encoder_kwargs={"vocab_size": 20}, image_pool_grid=pool_grid)
    model.eval()
    images, q = torch.randn(2, 3, 32, 32), F.normalize(torch.randn(2, 16), dim=-1)
    feats = model.image_encoder(images)
    grid = feats.grid.detach().requires_grad_(True)                                  # (B, N, D)
    x = model._projection_input(images, ImageFeatures(grid, grid.mean(dim=1), feats.grid_hw))
    emb = model.image_proj(x)                                                         # (B, E)
    (emb * q).sum().backward()
    terms = (grid * grid.grad).sum(-1) / emb.norm(dim=-1, keepdim=True).detach()     # (B, N)
    with torch.no_grad():
        maps = model.region_scores(images, q).maps                                    # (B, h, w)
    torch.testing.assert_close(maps.flatten(1) / grid.shape[1], terms.detach(), atol=1e-6, rtol=1e-4)


def test_match_maps_of_a_trained_model(embedder, pics):
    queries = embedder.embed_texts(["a red circle", "a green square", "a blue triangle", "a yellow diamond"])
    maps = embedder.match_maps(pics, queries)
    assert maps.dtype == torch.float32 and maps.device.type == "cpu" and maps.dim() == 3 and len(maps) == 4
    scores = (embedder.embed_images(pics) * queries).sum(-1)                          # (B,)
    torch.testing.assert_close(maps.mean(dim=(1, 2)), scores, atol=1e-5, rtol=0)
    batch = embedder.images_tensor(pics).cpu()                                        # (B, 3, S, S)
    torch.testing.assert_close(embedder.match_maps(batch, queries, batch_size=3), maps, atol=1e-6, rtol=0)
    one = embedder.match_maps([Image.open(pics[0])] * 2, queries[0])                  # (E,) for both
    torch.testing.assert_close(one[0], maps[0], atol=1e-6, rtol=0)
    with pytest.raises(VislangError, match="queries must be"):
        embedder.match_maps(pics, queries[:2])


def test_the_map_moves_with_the_query(embedder, pics):
    texts = embedder.embed_texts(["a red circle", "a small blue triangle at the left"])
    by_text = embedder.match_maps([pics[0]] * 2, texts)
    by_image = embedder.match_maps([pics[0]] * 2, embedder.embed_images(pics[1:3]))
    for maps in (by_text, by_image):
        diff = maps[0] - maps[1]
        assert float((diff - diff.mean()).abs().max()) > 1e-4          # not only another level: another shape


# ------------------------------------------------------------------------------------------- classify


def test_classify_explained_by_blanking_and_occlusion(runs, pics):
    clf = vislang.load(runs["late"])
    why = clf.explain(pics[0], "a large red circle")
    assert why.method == "weights=blanking, map=occlusion" and why.label in CLASSES and why.text == "a large red"
    assert set(why.modality_weights) == {"image", "text"}
    assert sum(why.modality_weights.values()) == pytest.approx(1, abs=1e-6)
    assert why.attention.shape == why.grid_hw and float(why.attention.min()) >= 0
    assert float(why.attention.sum()) == pytest.approx(1, abs=1e-5)
    top, _ = clf.classify(pics[0], "a large red circle", k=1)
    assert (why.label, why.probability) == (top[0][0], pytest.approx(top[0][1], abs=1e-6))
    small = clf.explain(pics[0], "a large red circle", batch_size=3)                  # other occlusion batches
    torch.testing.assert_close(small.attention, why.attention, atol=1e-4, rtol=0)     # float noise only
    other = next(c for c in sorted(CLASSES) if c != why.label)
    assert clf.explain(pics[0], "a large red circle", label=other).label == other
    with pytest.raises(VislangError, match="not a class"):
        clf.explain(pics[0], "", label="zebra")


def test_classify_explained_by_the_fusion_gates_and_attention(runs, pics):
    clf = vislang.load(runs["gated"])
    why = clf.explain(pics[1], "small green")
    assert why.method == "weights=gates, map=attention"
    assert set(why.modality_weights) == {"image", "text"}
    assert sum(why.modality_weights.values()) == pytest.approx(1, abs=1e-6)
    assert why.attention.shape == why.grid_hw and float(why.attention.sum()) == pytest.approx(1, abs=1e-5)
    x = clf.images_tensor([pics[1]])
    with torch.inference_mode():
        out = clf.run_texts(x, ["small green"])
    assert out.modality_weights.shape == (1, 2)
    assert why.modality_weights["image"] == pytest.approx(float(out.modality_weights[0, 0]), abs=1e-6)


def test_classify_many_is_classify_of_each(runs, pics):
    clf = vislang.load(runs["late"])
    texts = ["a large red circle", "small", "", "a small yellow diamond at the top left"]
    many = clf.classify_many(pics, texts, k=3)
    for pic, text, (top, seen) in zip(pics, texts, many):
        one_top, one_seen = clf.classify(pic, text, k=3)
        assert seen == one_seen and [c for c, _ in top] == [c for c, _ in one_top]
        assert [p for _, p in top] == pytest.approx([p for _, p in one_top], abs=1e-5)
    assert clf.classify_many([], []) == []
    with pytest.raises(VislangError, match="one text per image"):
        clf.classify_many(pics, texts[:2])


# ------------------------------------------------------------------------------------------- figures


def test_heatmap_figures_are_thread_safe_pngs():
    im = Image.new("RGB", (40, 32), (200, 40, 40))
    heats = [torch.randn(4, 4), torch.rand(3, 5), torch.zeros(2, 2)]
    figs = [heatmap_figure(im, h, "a title", cell=96) for h in heats]
    assert {f.size for f in figs} == {(192, TITLE_H + 96 + LABEL_H)}
    assert heatmap_figure(im, heats[0]).size == (384, 192 + LABEL_H)
    sheet = stack_figures(figs, columns=2)
    assert sheet.size == (2 * 192 + 3 * PAD, 2 * (TITLE_H + 96 + LABEL_H) + 3 * PAD)
    data = png_bytes(sheet)
    assert Image.open(io.BytesIO(data)).size == sheet.size
    with ThreadPoolExecutor(4) as pool:                                               # the server draws so
        drawn = list(pool.map(lambda h: png_bytes(heatmap_figure(im, h, "a title", cell=96)), heats * 4))
    assert drawn == [png_bytes(f) for f in figs] * 4


# ------------------------------------------------------------------------------------------- the CLI


def test_caption_explain(runs, pics, tmp_path, capsys):
    out = tmp_path / "cap.png"
    assert main(["caption", str(pics[0]), "--model", str(runs["caption"]), "--explain", str(out)]) == 0
    cap = vislang.load(runs["caption"]).caption([pics[0]])[0]
    panels = 1 + cap.attention.shape[0]                                                # the image + one per step
    assert Image.open(out).size == (6 * 128, 28 + -(-panels // 6) * (128 + 20))
    alias = tmp_path / "alias.png"
    assert main(["caption", str(pics[0]), "--model", str(runs["caption"]), "--attention", str(alias)]) == 0
    assert alias.read_bytes() == out.read_bytes()


def test_ask_explain(runs, pics, tmp_path, capsys):
    out = tmp_path / "ask.png"
    assert main(["ask", str(pics[0]), "what color is the circle?", "--model", str(runs["vqa"]), "--explain",
                 str(out)]) == 0
    assert Image.open(out).size == (2 * 192, 28 + 192 + 20)


def test_classify_explain(runs, pics, tmp_path, capsys):
    out = tmp_path / "cls.png"
    capsys.readouterr()
    assert main(["classify", str(pics[0]), "--text", "a large red circle", "--model", str(runs["late"]),
                 "--explain", str(out)]) == 0
    assert "weights=blanking, map=occlusion" in capsys.readouterr().err
    assert Image.open(out).size == (2 * 192, TITLE_H + 192 + LABEL_H)
    assert main(["classify", str(pics[0]), "--text", "small", "--model", str(runs["gated"]), "--json",
                 "--explain", str(out)]) == 0
    why = json.loads(capsys.readouterr().out)["explanation"]
    assert why["method"] == "weights=gates, map=attention"
    assert sum(why["modality_weights"].values()) == pytest.approx(1, abs=1e-3)


def test_search_explain(retrieval_run, pics, tmp_path, capsys):
    ix = tmp_path / "pics.index"
    assert main(["index", "build", "--model", str(retrieval_run), "--images", str(pics[0].parent), "-o",
                 str(ix)]) == 0
    texts = tmp_path / "texts.txt"
    texts.write_text("a red circle\na green square\na blue triangle\n")
    for args, n in ((["a red circle", "--index", str(ix), "-k", "3"], 3),
                    (["--image", str(pics[1]), "--index", str(ix), "-k", "4"], 4),
                    (["--image", str(pics[1]), "--texts", str(texts), "--model", str(retrieval_run)], 3)):
        out = tmp_path / "search.png"
        assert main(["search", *args, "--explain", str(out)]) == 0
        rows = -(-n // 2)
        assert Image.open(out).size == (2 * 320 + 3 * PAD, rows * (TITLE_H + 160 + LABEL_H) + (rows + 1) * PAD)
    capsys.readouterr()
    assert main(["search", "a red circle", "--texts", str(texts), "--model", str(retrieval_run), "--explain",
                 str(tmp_path / "x.png")]) == 2
    one_error_line(capsys, "error: --explain draws where images match")


def test_a_bad_explain_path_is_a_one_line_error(runs, retrieval_run, pics, tmp_path, capsys):
    image = str(pics[0])
    commands = [["caption", image, "--model", str(runs["caption"])],
                ["ask", image, "what color?", "--model", str(runs["vqa"])],
                ["classify", image, "--model", str(runs["late"])],
                ["search", "a red circle", "--texts", str(tmp_path), "--model", str(retrieval_run)]]
    capsys.readouterr()
    for command in commands:
        for bad, says in ((tmp_path, "is a directory"), (tmp_path / "nowhere" / "x.png", "does not exist")):
            assert main([*command, "--explain", str(bad)]) == 2
            assert says in one_error_line(capsys, f"error: --explain {bad}")
    assert main(["ask", image, "what color?", "--model", str(runs["vqa"]), "--attention", str(tmp_path)]) == 2
    one_error_line(capsys, f"error: --attention {tmp_path}: is a directory")
