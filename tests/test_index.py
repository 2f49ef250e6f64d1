"""vislang.index: FAISS-backed vector index of images or texts (exact, IVF, HNSW), saved atomically.

The index logic is tested on vectors given directly (constructed or random, with the exact ranking computed
here); everything that embeds uses the session's real tiny retrieval model (``embedder``, see conftest) and
checks the results against ``embed(query) @ embed(items).T`` (``exact``).
"""

from __future__ import annotations

import json
import os
import re
import warnings

import faiss
import numpy as np
import pytest
from PIL import Image

from vislang.errors import MissingImagesError, VislangError
from vislang.index import Index, VectorIndexError, build_image_index, build_text_index
from vislang.viz import contact_sheet, save_contact_sheet, sheet_size

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: one thread is fastest

DIM = 16


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def filled(n: int = 300, kind: str = "flat", **opts) -> tuple[Index, np.ndarray]:
    x = unit_vectors(n)
    index = Index.create("model-a", DIM, kind, model_path="/runs/a", **opts)
    index.add(x, [f"id{i}" for i in range(n)], [f"/img/{i}.png" for i in range(n)], [{"n": i} for i in range(n)])
    return index, x


def exact_top(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]


def test_flat_search_ranks_constructed_vectors():
    # one-hot items; a query mixing them 4:2:1 ranks them 0, 1, 2 with cosine scores 4/√21, 2/√21, 1/√21
    index = Index.create("m", 8)
    index.add(np.eye(8), [f"e{i}" for i in range(8)], [f"/e{i}.png" for i in range(8)])
    hits = index.search_vectors(np.array([4.0, 2.0, 1.0, 0, 0, 0, 0, 0]), k=4)[0]
    assert [h.id for h in hits[:3]] == ["e0", "e1", "e2"] and hits[3].score == pytest.approx(0.0, abs=1e-6)
    assert [h.score for h in hits[:3]] == pytest.approx([4 / 21 ** 0.5, 2 / 21 ** 0.5, 1 / 21 ** 0.5], abs=1e-6)
    # the negation of an item ranks it last; unnormalised items are normalised when added
    index.add(np.array([[0, 0, 0, 0, 0, 0, 3.0, 4.0]]), ["mix"], ["/mix.png"])
    hits = index.search_vectors(-np.eye(8)[5], k=9)[0]
    assert hits[-1].id == "e5" and hits[-1].score == pytest.approx(-1.0, abs=1e-6)
    assert index.search_vectors(np.eye(8)[7], k=1)[0][0].id == "e7"
    top = index.search_vectors(3 * np.eye(8)[6] + 4 * np.eye(8)[7], k=2)[0]
    assert [(h.id, round(h.score, 5)) for h in top] == [("mix", 1.0), ("e7", 0.8)]


def test_flat_search_is_exact_and_hits_carry_the_item():
    index, x = filled()
    q = unit_vectors(7, seed=1)
    hits = index.search_vectors(q, k=5)
    assert len(hits) == 7 and all(len(h) == 5 for h in hits)
    want = exact_top(x, q, 5)
    for row, w in zip(hits, want):
        assert [h.id for h in row] == [f"id{i}" for i in w]
        assert [h.rank for h in row] == [1, 2, 3, 4, 5]
        assert all(a.score >= b.score for a, b in zip(row, row[1:]))
    top = hits[0][0]
    assert top.path == f"/img/{want[0][0]}.png" and top.metadata == {"n": int(want[0][0])} and top.text is None
    assert top.score == pytest.approx(float(q[0] @ x[want[0][0]]), abs=1e-5)
    # a single vector, unnormalised vectors and a torch tensor all work; k beyond the size is cut
    assert index.search_vectors(x[3] * 7.0, k=1)[0][0].id == "id3"
    import torch

    assert index.search_vectors(torch.from_numpy(x[:2]), k=1)[1][0].id == "id1"
    assert len(index.search_vectors(q[:1], k=1000)[0]) == len(index) == 300


def test_save_and_load_round_trip(tmp_path):
    index, x = filled()
    index.save(tmp_path / "ix")
    assert sorted(os.listdir(tmp_path)) == ["ix"]  # no temporary directory left behind
    loaded = Index.load(tmp_path / "ix")
    assert (loaded.model_id, loaded.dim, loaded.kind, loaded.modality, loaded.model_path, len(loaded)) == \
        ("model-a", DIM, "flat", "image", "/runs/a", 300)
    q = unit_vectors(3, seed=2)
    assert [[h.to_dict() for h in r] for r in loaded.search_vectors(q, 4)] == \
        [[h.to_dict() for h in r] for r in index.search_vectors(q, 4)]
    # saving over it replaces it
    loaded.add(unit_vectors(1, seed=9), ["extra"], ["/img/extra.png"])
    loaded.save(tmp_path / "ix")
    assert len(Index.load(tmp_path / "ix")) == 301 and sorted(os.listdir(tmp_path)) == ["ix"]


def test_duplicate_ids_are_refused_or_skipped():
    index, x = filled(20)
    with pytest.raises(VectorIndexError, match="duplicate id 'id3': it is already in the index"):
        index.add(x[:1], ["id3"], ["/p.png"])
    with pytest.raises(VectorIndexError, match="duplicate id 'new': it appears twice"):
        index.add(x[:2], ["new", "new"], ["/a.png", "/b.png"])
    assert len(index) == 20  # nothing was added by the refused calls
    assert index.add(x[:3], ["id0", "new", "new"], ["/a.png", "/b.png", "/c.png"], skip_existing=True) == 1
    assert len(index) == 21 and index.item("new")["path"] == "/b.png"


def test_bad_vectors_and_arguments_are_refused():
    index = Index.create("m", DIM)
    with pytest.raises(VectorIndexError, match=r"expected shape \(N, 16\), got \(2, 3\)"):
        index.add(np.ones((2, 3)), ["a", "b"], ["a", "b"])
    with pytest.raises(VectorIndexError, match="row 1 is all zeros"):
        index.add(np.stack([np.ones(DIM), np.zeros(DIM)]), ["a", "b"], ["a", "b"])
    with pytest.raises(VectorIndexError, match="one path per id"):
        index.add(unit_vectors(2), ["a", "b"], texts=["x", "y"])
    with pytest.raises(VectorIndexError, match="not JSON-serialisable"):
        index.add(unit_vectors(1), ["a"], ["a"], [{"x": object()}])
    with pytest.raises(VectorIndexError, match="unknown index kind 'lsh'"):
        Index.create("m", DIM, "lsh")
    with pytest.raises(VectorIndexError, match="option 'nlist' does not apply to a 'hnsw' index"):
        Index.create("m", DIM, "hnsw", nlist=4)
    assert index.search_vectors(unit_vectors(2), 3) == [[], []]  # empty index


def test_ivf_options_recall_and_fallback(tmp_path):
    index, x = filled(2000, "ivf", nlist=20, nprobe=3)
    ix = index._faiss_index
    assert (index.kind, ix.nlist, ix.nprobe, ix.is_trained) == ("ivf", 20, 3, True)
    q = unit_vectors(50, seed=3)
    want = exact_top(x, q, 10)

    def recall() -> float:
        got = index.search_arrays(q, 10)[1]
        return np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])

    low = recall()
    index.set_search_options(nprobe=20)  # every cluster: exact
    assert recall() == 1.0 and low < 1.0
    index.save(tmp_path / "ivf")
    loaded = Index.load(tmp_path / "ivf")
    assert loaded.options == {"nlist": 20, "nprobe": 20} and loaded._faiss_index.nprobe == 20
    # too few vectors to train 64 clusters: exact flat index, with a warning saying so
    small = Index.create("m", DIM, "ivf", nlist=64)
    with pytest.warns(UserWarning, match="got 30 vectors for nlist=64; using an exact flat index"):
        small.add(unit_vectors(30), [str(i) for i in range(30)], ["p"] * 30)
    assert (small.kind, small.requested_kind) == ("flat", "ivf")
    # the automatic nlist follows the data
    auto = Index.create("m", DIM, "ivf")
    auto.add(x, [str(i) for i in range(2000)], ["p"] * 2000)
    assert auto.options["nlist"] == 51


def test_hnsw_options(tmp_path):
    index, x = filled(500, "hnsw", m=8, ef_search=100, ef_construction=80)
    ix = index._faiss_index
    assert (ix.hnsw.efSearch, ix.hnsw.efConstruction, ix.metric_type) == (100, 80, faiss.METRIC_INNER_PRODUCT)
    q = unit_vectors(20, seed=4)
    got = index.search_arrays(q, 5)[1]
    assert np.mean([len(set(g) & set(w)) / 5 for g, w in zip(got, exact_top(x, q, 5))]) > 0.9
    index.set_search_options(ef_search=16)
    index.save(tmp_path / "h")
    assert Index.load(tmp_path / "h")._faiss_index.hnsw.efSearch == 16
    with pytest.raises(VectorIndexError, match="option 'nprobe' does not apply to a 'hnsw' index"):
        index.set_search_options(nprobe=3)


def test_a_failed_save_leaves_the_old_index_intact(tmp_path, monkeypatch):
    index, _ = filled(50)
    index.save(tmp_path / "ix")
    index.add(unit_vectors(5, seed=7), [f"new{i}" for i in range(5)], ["p"] * 5)
    seen = []

    def broken_write(ix, path):
        seen.append(path)
        assert os.path.isdir(os.path.dirname(path))  # the write fails midway, inside the temporary directory
        with open(path, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken_write)
    with pytest.raises(RuntimeError, match="disk full"):
        index.save(tmp_path / "ix")
    assert seen and ".ix.tmp-" in seen[0]
    assert sorted(os.listdir(tmp_path)) == ["ix"]
    old = Index.load(tmp_path / "ix")
    assert len(old) == 50 and "new0" not in old


def test_a_crash_between_the_renames_is_repaired(tmp_path):
    index, _ = filled(10)
    index.save(tmp_path / "ix")
    os.replace(tmp_path / "ix", tmp_path / ".ix.old-00000000000000000001")  # the old copy, moved aside
    assert len(Index.load(tmp_path / "ix")) == 10
    assert sorted(os.listdir(tmp_path)) == ["ix"]


def test_a_save_never_replaces_what_another_writer_saved_meanwhile(tmp_path):
    filled(20)[0].save(tmp_path / "ix")
    one, two = Index.load(tmp_path / "ix"), Index.load(tmp_path / "ix")  # two writers read the same base
    one.add(unit_vectors(1, seed=3), ["one"], ["/one.png"])
    one.save(tmp_path / "ix")
    two.add(unit_vectors(1, seed=4), ["two"], ["/two.png"])  # same count, same file sizes as one's save
    with pytest.raises(VectorIndexError, match=r"ix: the index there changed since this one was read from it "
                                               r"\(another process saved it meanwhile\); load it again"):
        two.save(tmp_path / "ix")
    on_disk = Index.load(tmp_path / "ix")
    assert len(on_disk) == 21 and "one" in on_disk and "two" not in on_disk
    one.add(unit_vectors(1, seed=5), ["one-more"], ["/one-more.png"])
    one.save(tmp_path / "ix")  # the last writer saves again: its base is what it saved
    assert len(Index.load(tmp_path / "ix")) == 22
    two.save(tmp_path / "copy")  # elsewhere: a new index there, nothing to compare
    with pytest.raises(VectorIndexError, match="ix: an index is already there .* pass --force"):
        filled(5)[0].save(tmp_path / "ix", overwrite=False)
    assert len(Index.load(tmp_path / "ix")) == 22 and sorted(os.listdir(tmp_path)) == ["copy", "ix"]


def test_missing_partial_and_corrupt_indexes_are_named(tmp_path):
    with pytest.raises(VislangError, match="no index there"):
        Index.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VislangError, match=r"not a vislang index \(index.json is missing\)"):
        Index.load(tmp_path / "empty")

    def fresh(name: str):
        filled(40)[0].save(tmp_path / name)
        return tmp_path / name

    d = fresh("a")
    (d / "index.json").write_text("{not json")
    with pytest.raises(VislangError, match="index.json: cannot read"):
        Index.load(d)
    d = fresh("b")
    (d / "vectors.faiss").unlink()
    with pytest.raises(VislangError, match="partial index: vectors.faiss is missing"):
        Index.load(d)
    d = fresh("c")
    data = (d / "vectors.faiss").read_bytes()
    (d / "vectors.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(VislangError, match=r"vectors.faiss: corrupt or partial: .* index.json says"):
        Index.load(d)
    meta = json.loads((d / "index.json").read_text())  # same size, garbage content: FAISS cannot read it
    meta["files"]["vectors.faiss"] = len(data)
    (d / "index.json").write_text(json.dumps(meta))
    (d / "vectors.faiss").write_bytes(b"\0" * len(data))
    with pytest.raises(VislangError, match="vectors.faiss: cannot read"):
        Index.load(d)
    d = fresh("e")
    lines = (d / "items.jsonl").read_text().splitlines()
    lines[3] = '{"id": 3}'
    text = "\n".join(lines) + "\n"
    (d / "items.jsonl").write_text(text)
    meta = json.loads((d / "index.json").read_text())
    meta["files"]["items.jsonl"] = len(text.encode())
    (d / "index.json").write_text(json.dumps(meta))
    with pytest.raises(VislangError, match="items.jsonl: line 4: field 'id'"):
        Index.load(d)


def image_index(embedder, paths, **kw) -> Index:
    return build_image_index(embedder, paths, [p.stem for p in paths], show_progress=False, **kw)


def test_search_by_text_and_image_with_a_real_model(embedder, exact, retrieval_run, draw_pictures, tmp_path):
    paths = draw_pictures(tmp_path / "imgs", ["red", "green", "blue", "yellow", "purple"])
    ids = [p.stem for p in paths]
    index = image_index(embedder, paths, model_path=retrieval_run)
    assert (len(index), index.modality, index.model_id, index.dim, index.model_path) == \
        (5, "image", embedder.model_id, embedder.dim, str(retrieval_run))
    for q in ("a small red circle", "a large blue triangle"):  # text -> image
        hits = index.search_text(q, k=3)
        exact.check(hits, q, paths, ids, 3)
        assert [h.rank for h in hits] == [1, 2, 3] and all(h.path == str(tmp_path / "imgs" / f"{h.id}.png")
                                                           for h in hits)
    q = draw_pictures(tmp_path / "q", ["gray"], size=(30, 30))[0]  # image -> image, by path and as a PIL image
    exact.check(index.search_image(q, k=2), q, paths, ids, 2)
    im = Image.open(paths[3]).convert("RGB").resize((17, 23))
    exact.check(index.search_image(im, k=5), im, paths, ids, 5)
    hit = index.search_image(paths[2], k=1)[0]  # an indexed image finds itself
    assert hit.id == "blue" and hit.score == pytest.approx(1.0, abs=1e-5)
    index.save(tmp_path / "ix")
    with pytest.raises(VislangError, match="no model attached"):
        Index.load(tmp_path / "ix").search_text("red")
    exact.check(Index.load(tmp_path / "ix", embedder=embedder).search_text("green", 5), "green", paths, ids, 5)


def test_an_embedder_of_another_model_is_refused(embedder, other_run, retrieval_run, tmp_path):
    from vislang.inference.retrieval import RetrievalPredictor

    other = RetrievalPredictor.load(other_run)
    assert other.model_id != embedder.model_id and other.dim == embedder.dim
    index = Index.create(embedder.model_id, embedder.dim, model_path=retrieval_run)
    index.add(unit_vectors(3), ["a", "b", "c"], ["a.png", "b.png", "c.png"])
    message = (rf"model mismatch: the index was built with model '{re.escape(embedder.model_id)}' "
               rf"\({re.escape(str(retrieval_run))}\), but the given model is '{re.escape(other.model_id)}'")
    with pytest.raises(VislangError, match=message):
        index.attach(other)
    assert index.embedder is None
    index.save(tmp_path / "ix")
    with pytest.raises(VislangError, match=message):
        Index.load(tmp_path / "ix", embedder=other)
    assert Index.load(tmp_path / "ix", embedder=embedder).embedder is embedder


def test_text_index_for_image_to_text_search(embedder, exact, draw_pictures, tmp_path):
    texts = ["a red circle", "a large blue square", "green grass", "a yellow diamond at the top"]
    ids = ["0", "1", "2", "3"]
    index = build_text_index(embedder, texts, show_progress=False)
    assert index.modality == "text" and index.ids == ids
    blue = draw_pictures(tmp_path, ["blue"])[0]
    hits = index.search_image(blue, k=4)  # image -> text
    exact.check(hits, blue, texts, ids, 4)
    assert all((h.text, h.path) == (texts[int(h.id)], None) for h in hits)
    index.save(tmp_path / "t")
    loaded = Index.load(tmp_path / "t", embedder=embedder)
    exact.check(loaded.search_text("something green", 2), "something green", texts, ids, 2)  # text -> text
    exact.check(loaded.search_image(Image.open(blue), 1), blue, texts, ids, 1)
    with pytest.raises(VislangError, match="this index holds texts"):
        loaded.add_images([tmp_path / "x.png"])


def test_add_images_checks_files_up_front(embedder, exact, draw_pictures, tmp_path, capsys, monkeypatch):
    paths = draw_pictures(tmp_path, ["red", "blue"])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "notes.png").write_text("hello")
    all_paths = [*paths, tmp_path / "broken.png", tmp_path / "notes.png", tmp_path / "gone.png"]
    calls, real_embed = [], embedder.embed_images

    def counted(images, batch_size=64):  # the real embed_images, its calls counted
        calls.append(len(images))
        return real_embed(images, batch_size)

    monkeypatch.setattr(embedder, "embed_images", counted)
    index = Index.create(embedder.model_id, embedder.dim).attach(embedder)
    with pytest.raises(MissingImagesError, match=r"3 of 5 images of my photos are missing or unreadable") as e:
        index.add_images(all_paths, label="my photos", show_progress=False)
    assert "gone.png: file not found" in str(e.value) and "notes.png: not an image" in str(e.value)
    assert len(index) == 0 and calls == []  # nothing embedded before the check
    report = index.add_images(all_paths, skip_bad=True, show_progress=False, batch_size=1)
    assert report.added == 2 and len(report.bad) == 3 and index.ids == [str(p) for p in paths]
    assert calls == [1, 1]  # batches of one image
    err = capsys.readouterr().err
    assert "warning: skipping 3 of 5 images" in err and "broken.png" in err and "gone.png" in err
    exact.check(index.search_text("a red circle", 2), "a red circle", paths, [str(p) for p in paths], 2)
    again = index.add_images(paths, skip_existing=True, show_progress=False)
    assert again.added == 0 and again.skipped_existing == [str(p) for p in paths] and len(index) == 2


def test_contact_sheet_size_and_atomic_write(embedder, exact, draw_pictures, tmp_path):
    paths = draw_pictures(tmp_path, ["red", "green", "blue"])
    index = image_index(embedder, paths)
    hits = index.search_text("green", k=3)
    exact.check(hits, "green", paths, ["red", "green", "blue"], 3)
    sheet = contact_sheet(hits, "green", tile=64, cols=2)
    assert sheet.size == sheet_size(4, 64, 2) == (2 * 64 + 3 * 6, 2 * (64 + 30) + 3 * 6)
    out = save_contact_sheet(tmp_path / "out" / "sheet.png", hits, paths[0], tile=32)
    with Image.open(out) as im:
        assert im.size == sheet_size(4, 32, 5) and im.mode == "RGB"
    assert sorted(os.listdir(tmp_path / "out")) == ["sheet.png"]  # written atomically: no temporary file left
    os.unlink(paths[1])  # a moved image is drawn as a placeholder, not an error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert contact_sheet(hits).size == sheet_size(3)
