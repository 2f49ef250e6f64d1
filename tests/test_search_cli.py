"""``vislang index build|info`` and ``vislang search`` end to end on real image files with a real model.

Every test uses the session's tiny retrieval run (``retrieval_run``, trained for two steps in conftest):
its rankings mean little, so what the commands report is checked against the exact computation
``embed(query) @ embed(items).T`` with its :class:`~vislang.inference.retrieval.RetrievalPredictor` (``exact``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from vislang.cli import main
from vislang.index import Index
from vislang.viz import sheet_size

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: one thread is fastest

FOLDER = ["red", "green", "blue", "yellow"]
MORE = ["purple", "orange"]
#: Ids of the images of ``imgs/``: their paths relative to it, in the order `index build` adds them.
FOLDER_IDS = ["blue.png", "green.png", "more/orange.png", "more/purple.png", "red.png", "yellow.png"]
TABLE_TOL = 6e-5  # the table prints scores with 4 decimals


@pytest.fixture
def imgs(tmp_path, draw_pictures) -> Path:
    """A folder of PNGs written with Pillow: ``imgs/{red,green,blue,yellow}.png``, ``imgs/more/{purple,orange}.png``."""
    draw_pictures(tmp_path / "imgs", FOLDER)
    draw_pictures(tmp_path / "imgs" / "more", MORE)
    return tmp_path / "imgs"


def search_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["search", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def table(capsys) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table `vislang search` printed (its last column may hold spaces)."""
    lines = capsys.readouterr().out.splitlines()
    return lines[0].split(), [line.split(maxsplit=3) for line in lines[2:] if not line.startswith("sheet:")]


def items(ix: str | Path) -> tuple[list[str], list]:
    """Ids of an index and its items as :class:`ExactSearch` takes them (image paths or texts)."""
    index = Index.load(ix)
    key = "path" if index.modality == "image" else "text"
    its = [index.item(i)[key] for i in index.ids]
    return index.ids, [Path(p) for p in its] if key == "path" else its


def test_build_and_search_an_image_folder(retrieval_run, embedder, exact, imgs, tmp_path, capsys):
    ix = tmp_path / "photos.index"
    assert main(["index", "build", "--model", str(retrieval_run), "--images", str(imgs), "-o", str(ix)]) == 0
    out = capsys.readouterr().out
    assert "added 6 images" in out and "kind: flat" in out and f"model {embedder.model_id}" in out
    ids, paths = items(ix)
    assert ids == FOLDER_IDS and paths == [(imgs / i).resolve() for i in ids]
    # text -> image: the exact ranking of the real model, with each hit's resolved path
    res = search_json(capsys, "a sleepy red cat", "--index", str(ix), "-k", "3")
    assert [h["rank"] for h in res["hits"]] == [1, 2, 3]
    exact.check(res["hits"], "a sleepy red cat", paths, ids, 3)
    assert all(h["path"] == str((imgs / h["id"]).resolve()) for h in res["hits"])
    assert res["query"] == {"text": "a sleepy red cat"} and res["modality"] == "image" and res["kind"] == "flat"
    exact.check(search_json(capsys, "orange", "--index", str(ix), "-k", "10")["hits"], "orange", paths, ids, 6)
    # image -> image, as a table, with a contact sheet: the query and the 4 hits
    q = tmp_path / "q.png"
    Image.new("RGB", (40, 40), (0, 150, 0)).save(q)
    sheet = tmp_path / "sheet.png"
    assert main(["search", "--image", str(q), "--index", str(ix), "-k", "4", "--sheet", str(sheet)]) == 0
    header, rows = table(capsys)
    assert header == ["rank", "score", "id", "path"] and [r[0] for r in rows] == ["1", "2", "3", "4"]
    exact.check([(r[2], r[1]) for r in rows], q, paths, ids, 4, tol=TABLE_TOL)
    with Image.open(sheet) as im:
        assert im.size == sheet_size(5)


def test_add_skip_existing_and_refusals(retrieval_run, other_run, embedder, imgs, tmp_path, capsys):
    run_a = tmp_path / "run_a"  # a copy of the session's run (the same model), to be deleted at the end
    shutil.copytree(retrieval_run, run_a)
    ix = str(tmp_path / "ix")
    base = ["index", "build", "--images", str(imgs / "more"), "-o", ix]
    assert main([*base, "--model", str(run_a)]) == 0
    assert main([*base, "--model", str(run_a)]) == 2
    assert "an index is already there; pass --add" in capsys.readouterr().err
    assert main([*base, "--model", str(run_a), "--add"]) == 2
    assert "duplicate id 'orange.png'" in capsys.readouterr().err
    assert main(["index", "build", "--images", str(imgs), "-o", ix, "--model", str(run_a),
                 "--add", "--skip-existing"]) == 0
    assert "added 6 images" in capsys.readouterr().out  # ids are relative to the folder given
    assert main([*base, "--model", str(run_a), "--add", "--skip-existing"]) == 0
    assert "added 0 images" in capsys.readouterr().out and len(Index.load(ix)) == 8
    # another model: refused when adding and when searching, naming both models
    assert Index.load(ix).model_id == embedder.model_id  # the copied run is the same model
    from vislang.inference.retrieval import RetrievalPredictor

    other_id = RetrievalPredictor.load(other_run).model_id
    assert main([*base, "--model", str(other_run), "--add"]) == 2
    err = capsys.readouterr().err
    assert f"built with model '{embedder.model_id}'" in err and f"'{other_id}'" in err
    assert main(["search", "red", "--index", ix, "--model", str(other_run)]) == 2
    err = capsys.readouterr().err
    assert "model mismatch" in err and f"'{embedder.model_id}'" in err and f"'{other_id}'" in err
    assert len(Index.load(ix)) == 8
    # the run recorded in the index is gone: say so and point at --model
    shutil.rmtree(run_a)
    assert main(["search", "red", "--index", ix]) == 2
    assert "does not exist (moved?); pass --model RUN" in capsys.readouterr().err


def test_bad_images_error_or_skip(retrieval_run, imgs, tmp_path, capsys):
    (imgs / "notes.png").write_text("not an image")
    ix = str(tmp_path / "ix")
    args = ["index", "build", "--model", str(retrieval_run), "--images", str(imgs), "-o", ix]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 of 7 images" in err and "notes.png: not an image" in err and "--skip-bad" in err
    assert not (tmp_path / "ix").exists()
    assert main([*args, "--skip-bad"]) == 0
    out, err = capsys.readouterr()
    assert "warning: skipping 1 of 7 images" in err and "notes.png" in err
    assert "added 6 images" in out and "skipped 1 unreadable" in out
    assert Index.load(ix).ids == FOLDER_IDS


def test_ivf_and_hnsw_options_from_the_command_line(retrieval_run, exact, tmp_path, capsys):
    many, few = tmp_path / "many", tmp_path / "few"
    many.mkdir()
    few.mkdir()
    for i in range(80):
        Image.new("RGB", (8, 8), (i * 3, 255 - i * 3, (i * 37) % 256)).save(many / f"{i:03d}.png")
    for i in range(5):
        shutil.copy(many / f"{i:03d}.png", few)
    build = ["index", "build", "--model", str(retrieval_run), "--images", str(many)]
    assert main([*build, "-o", str(tmp_path / "ivf"), "--kind", "ivf", "--nlist", "3", "--nprobe", "2"]) == 0
    assert main([*build, "-o", str(tmp_path / "hnsw"), "--kind", "hnsw", "--hnsw-m", "8", "--ef-search", "20"]) == 0
    assert Index.load(tmp_path / "ivf").options == {"nlist": 3, "nprobe": 2}
    # the clusters are trained on every image, not on the first batch (auto nlist: 80 // 39 = 2; 16 images
    # would give none, hence a flat index)
    assert main([*build, "-o", str(tmp_path / "auto"), "--kind", "ivf", "--batch-size", "16"]) == 0
    assert Index.load(tmp_path / "auto").options == {"nlist": 2, "nprobe": 8}
    assert Index.load(tmp_path / "hnsw").options == {"m": 8, "ef_construction": 40, "ef_search": 20}
    capsys.readouterr()
    assert main(["index", "info", str(tmp_path / "ivf")]) == 0
    assert "ivf" in capsys.readouterr().out
    ids, paths = items(tmp_path / "ivf")
    assert ids == [f"{i:03d}.png" for i in range(80)]
    # every cluster searched (--nprobe 3 of 3): exact; hnsw with a short list: approximate, but each hit's
    # score is its image's exact score
    res = search_json(capsys, "red", "--index", str(tmp_path / "ivf"), "-k", "10", "--nprobe", "3")
    assert res["kind"] == "ivf" and len(res["hits"]) == 10
    exact.check(res["hits"], "red", paths, ids, 10)
    res = search_json(capsys, "red", "--index", str(tmp_path / "hnsw"), "-k", "10", "--ef-search", "3")
    assert res["kind"] == "hnsw" and 1 <= len(res["hits"]) <= 10
    exact.check(res["hits"], "red", paths, ids, 10, exhaustive=False)
    assert main(["search", "red", "--index", str(tmp_path / "ivf"), "--ef-search", "3"]) == 2
    assert "option 'ef_search' does not apply to a 'ivf' index" in capsys.readouterr().err
    # too few images to train nlist=10 clusters: a flat index, with a warning
    with pytest.warns(UserWarning, match="got 5 vectors for nlist=10; using an exact flat index"):
        assert main(["index", "build", "--model", str(retrieval_run), "--images", str(few),
                     "-o", str(tmp_path / "small"), "--kind", "ivf", "--nlist", "10"]) == 0
    assert "kind: flat (asked for ivf)" in capsys.readouterr().out


def test_text_indexes_and_image_to_text_search(retrieval_run, exact, imgs, tmp_path, capsys):
    (tmp_path / "caps.txt").write_text("a red apple\n\na blue whale\nyellow sun\n")
    texts, ids = ["a red apple", "a blue whale", "yellow sun"], ["caps.txt:1", "caps.txt:3", "caps.txt:4"]
    ix = str(tmp_path / "caps.index")
    assert main(["index", "build", "--model", str(retrieval_run), "--texts", str(tmp_path / "caps.txt"),
                 "-o", ix]) == 0
    assert "added 3 texts" in capsys.readouterr().out
    assert items(ix) == (ids, texts)
    res = search_json(capsys, "--image", str(imgs / "blue.png"), "--index", ix, "-k", "2")
    assert res["modality"] == "text" and res["query"] == {"image": str(imgs / "blue.png")}
    exact.check(res["hits"], imgs / "blue.png", texts, ids, 2)
    assert all(h["text"] == texts[ids.index(h["id"])] and h["path"] is None for h in res["hits"])
    # a text index holds texts only
    assert main(["index", "build", "--model", str(retrieval_run), "--images", str(imgs), "-o", ix, "--add"]) == 2
    assert "holds texts; cannot add images" in capsys.readouterr().err
    # rank a file's texts without an index; the sheet shows text cards
    capsys.readouterr()
    assert main(["search", "--image", str(imgs / "yellow.png"), "--texts", str(tmp_path / "caps.txt"),
                 "--model", str(retrieval_run), "-k", "1", "--sheet", str(tmp_path / "t.png")]) == 0
    header, rows = table(capsys)
    assert header == ["rank", "score", "id", "text"] and len(rows) == 1
    exact.check([(rows[0][2], rows[0][1])], imgs / "yellow.png", texts, ids, 1, tol=TABLE_TOL)
    assert rows[0][3] == texts[ids.index(rows[0][2])]
    with Image.open(tmp_path / "t.png") as im:
        assert im.size == sheet_size(2)


def test_build_from_a_manifest(retrieval_run, exact, imgs, tmp_path, capsys):
    colors = FOLDER[:3]
    rows = [{"id": c, "image": f"imgs/{c}.png", "text": [f"a {c} thing", f"{c} again"], "label": c} for c in colors]
    rows.append({"id": "lost", "image": "imgs/lost.png", "text": "gone"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ix = str(tmp_path / "ix")
    assert main(["index", "build", "--model", str(retrieval_run), "--data", str(tmp_path / "m.jsonl"), "-o", ix,
                 "--skip-bad"]) == 0
    assert "skipped 1 unreadable" in capsys.readouterr().out
    assert items(ix) == (colors, [imgs / f"{c}.png" for c in colors])
    hits = search_json(capsys, "green", "--index", ix, "-k", "3")["hits"]
    exact.check(hits, "green", [imgs / f"{c}.png" for c in colors], colors, 3)
    for hit in hits:
        c = hit["id"]
        assert hit["metadata"]["label"] == c and hit["metadata"]["captions"] == [f"a {c} thing", f"{c} again"]
    tx = str(tmp_path / "tx")
    assert main(["index", "build", "--model", str(retrieval_run), "--texts", str(tmp_path / "m.jsonl"),
                 "-o", tx]) == 0
    ids, texts = items(tx)
    assert ids == ["red#0", "red#1", "green#0", "green#1", "blue#0", "blue#1", "lost#0"]
    assert texts == ["a red thing", "red again", "a green thing", "green again", "a blue thing", "blue again", "gone"]
    hits = search_json(capsys, "--image", str(imgs / "red.png"), "--index", tx, "-k", "3")["hits"]
    exact.check(hits, imgs / "red.png", texts, ids, 3)
    assert all(h["metadata"]["record"] == h["id"].split("#")[0] for h in hits)


def test_search_errors(retrieval_run, imgs, tmp_path, capsys):
    ix = tmp_path / "ix"
    assert main(["index", "build", "--model", str(retrieval_run), "--images", str(imgs), "-o", str(ix)]) == 0
    capsys.readouterr()
    assert main(["search", "--index", str(ix)]) == 2
    assert "give either a text query or --image" in capsys.readouterr().err
    assert main(["search", "red", "--index", str(tmp_path / "nothing")]) == 2
    assert "no index there" in capsys.readouterr().err
    (ix / "vectors.faiss").write_bytes(b"garbage")
    assert main(["search", "red", "--index", str(ix)]) == 2
    assert "vectors.faiss: corrupt or partial" in capsys.readouterr().err
    (tmp_path / "q.png").write_text("text")
    assert main(["search", "--image", str(tmp_path / "q.png"), "--index", str(ix)]) == 2
    assert "q.png: not an image" in capsys.readouterr().err
    assert main(["index", "build", "--model", str(retrieval_run), "--images", str(tmp_path / "nope"), "-o",
                 str(tmp_path / "o")]) == 2
    assert "nope: not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------------ a built-in dataset (the shapes)


def test_shapes_index_build_and_search(retrieval_run, embedder, exact, shapes_spec, data_root, tmp_path, capsys):
    ix = tmp_path / "shapes.index"
    assert main(["index", "build", "--model", str(retrieval_run), "--data", shapes_spec, "--split", "test", "--root",
                 str(data_root), "-o", str(ix), "--batch-size", "3"]) == 0
    assert "added 8 images" in capsys.readouterr().out
    index = Index.load(ix, embedder=embedder)
    assert (len(index), index.dim, index.model_id, index.model_path) == (8, embedder.dim, embedder.model_id,
                                                                        str(retrieval_run.resolve()))
    ids, paths = items(ix)
    q = "a small red circle"
    res = search_json(capsys, q, "--index", str(ix), "-k", "3", "--sheet", str(tmp_path / "s.png"))
    exact.check(res["hits"], q, paths, ids, 3)  # text -> image
    assert {"captions", "split"} <= set(res["hits"][0]["metadata"]) and res["hits"][0]["metadata"]["split"] == "test"
    with Image.open(tmp_path / "s.png") as im:
        assert im.size == sheet_size(4)
    # image -> image, in Python as from the command line; an indexed image finds itself first
    first = paths[2]
    exact.check(index.search_image(first, k=8), first, paths, ids, 8)
    res = search_json(capsys, "--image", str(first), "--index", str(ix), "-k", "4")
    exact.check(res["hits"], first, paths, ids, 4)
    assert res["hits"][0]["id"] == ids[2] and res["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    # captions of the same split as a text index: image -> text
    tx = tmp_path / "captions.index"
    assert main(["index", "build", "--model", str(retrieval_run), "--texts", shapes_spec, "--split", "test", "--root",
                 str(data_root), "-o", str(tx)]) == 0
    tids, texts = items(tx)
    res = search_json(capsys, "--image", str(first), "--index", str(tx), "-k", "5")
    assert res["modality"] == "text" and len(res["hits"]) == 5
    exact.check(res["hits"], first, texts, tids, 5)
    assert all(h["text"] == texts[tids.index(h["id"])] for h in res["hits"])


def test_shapes_index_refuses_another_model(retrieval_run, other_run, shapes_spec, data_root, tmp_path, capsys):
    from vislang.inference.retrieval import RetrievalPredictor

    ix = tmp_path / "ix"
    assert main(["index", "build", "--model", str(retrieval_run), "--data", shapes_spec, "--split", "val", "--root",
                 str(data_root), "-o", str(ix)]) == 0
    capsys.readouterr()
    assert main(["search", "a red square", "--index", str(ix), "--model", str(other_run)]) == 2
    err = capsys.readouterr().err
    other_id = RetrievalPredictor.load(other_run).model_id
    assert "model mismatch" in err and Index.load(ix).model_id in err and other_id in err
    assert other_id.startswith("dual_encoder_tiny-") and other_id != Index.load(ix).model_id
