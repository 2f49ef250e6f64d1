"""Readers for users' files: manifests, COCO captions, Karpathy splits, VQA v2 — good and malformed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vislang.data import load_dataset
from vislang.data.readers import read_coco_captions, read_karpathy, read_manifest, read_vqa
from vislang.errors import DataError, MissingImagesError


def _img(path: Path, color=(200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ---- JSONL manifest -------------------------------------------------------------------------------------

def test_manifest_full(tmp_path):
    _img(tmp_path / "imgs" / "a.png")
    _img(tmp_path / "imgs" / "b.png")
    m = _jsonl(tmp_path / "m.jsonl", [
        {"image": "imgs/a.png", "text": "a red square", "label": "red", "split": "train", "source": "me"},
        "",
        {"image": "imgs/b.png", "text": ["two", "captions"], "label": 3, "question": "what colour?",
         "answer": "red", "question_type": "color", "id": "bee"},
        {"image": str((tmp_path / "imgs" / "a.png").resolve()),
         "qa": [{"question": "q1?", "answer": ["x", "y"]}, {"question": "q2?", "answers": "z"}]},
    ])
    recs = read_manifest(m)
    assert [r.id for r in recs] == ["1", "bee", "4"]
    a, b, c = recs
    assert a.image == str((tmp_path / "imgs" / "a.png").resolve())
    assert a.captions == ["a red square"] and a.label == "red" and a.meta == {"split": "train", "source": "me"}
    assert b.captions == ["two", "captions"] and b.label == "3"
    assert b.qa[0].question == "what colour?" and b.qa[0].answers == ["red"] and b.qa[0].question_type == "color"
    assert [q.answers for q in c.qa] == [["x", "y"], ["z"]] and c.image == a.image


def test_manifest_relative_paths_follow_the_manifest_folder(tmp_path, monkeypatch):
    _img(tmp_path / "d" / "x.png")
    _jsonl(tmp_path / "d" / "m.jsonl", [{"image": "x.png", "text": "t"}])
    monkeypatch.chdir(tmp_path)
    assert read_manifest(Path("d/m.jsonl"))[0].image == str((tmp_path / "d" / "x.png").resolve())


@pytest.mark.parametrize("row, message", [
    ('{"image": "a.png", "text": "x"', r"m.jsonl: line 2: invalid JSON"),
    ('["image", "a.png"]', r"line 2: expected a JSON object, got a list"),
    ({"text": "no image"}, r"line 2: field 'image': missing required field"),
    ({"image": 5}, r"line 2: field 'image': expected a string, got an integer"),
    ({"image": "  "}, r"line 2: field 'image': must not be empty"),
    ({"image": "a.png", "text": 7}, r"line 2: field 'text': expected a string or a list of strings, got an integer"),
    ({"image": "a.png", "text": ["ok", None]}, r"field 'text': expected a list of strings, found null"),
    ({"image": "a.png", "label": [1]}, r"field 'label': expected a string or integer label, got a list"),
    ({"image": "a.png", "label": True}, r"field 'label'"),
    ({"image": "a.png", "answer": "yes"}, r"field 'question': an answer without a question"),
    ({"image": "a.png", "question": ""}, r"field 'question': must not be empty"),
    ({"image": "a.png", "question": "q?", "answer": 3}, r"field 'answer': expected a string or a list"),
    ({"image": "a.png", "qa": {"question": "q"}}, r"field 'qa': expected a list of question objects"),
    ({"image": "a.png", "qa": [{"answer": "x"}]}, r"field 'qa\[0\].question': missing required field"),
    ({"image": "a.png", "id": 1}, r"line 2: field 'id': duplicate id '1' \(first on line 1\)"),
    ({"image": "a.png", "id": 1.5}, r"field 'id': expected an integer or string id, got a number"),
])
def test_manifest_errors_name_file_line_and_field(tmp_path, row, message):
    m = _jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "id": 1}, row])
    with pytest.raises(DataError, match=message) as e:
        read_manifest(m)
    assert str(m) in str(e.value)


def test_manifest_not_utf8_and_missing(tmp_path):
    (tmp_path / "bad.jsonl").write_bytes(b'{"image": "\xff.png"}\n')
    with pytest.raises(DataError, match="bad.jsonl: not UTF-8"):
        read_manifest(tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        read_manifest(tmp_path / "nope.jsonl")


# ---- COCO captions --------------------------------------------------------------------------------------

def _coco(tmp_path: Path) -> Path:
    _img(tmp_path / "val2014" / "1.jpg")
    _img(tmp_path / "val2014" / "2.jpg")
    data = {"info": {}, "images": [{"id": 1, "file_name": "1.jpg", "width": 8, "height": 8},
                                   {"id": 2, "file_name": "2.jpg"}, {"id": 3, "file_name": "3.jpg"}],
            "annotations": [{"id": 10, "image_id": 1, "caption": "a cat"},
                            {"id": 11, "image_id": 1, "caption": "a small cat"},
                            {"id": 12, "image_id": 2, "caption": ""}]}
    p = tmp_path / "captions.json"
    p.write_text(json.dumps(data))
    return p


def test_coco_captions(tmp_path):
    p = _coco(tmp_path)
    recs = read_coco_captions(p, image_root=tmp_path / "val2014")
    assert [(r.id, r.captions) for r in recs] == [("1", ["a cat", "a small cat"]), ("2", [""]), ("3", [])]
    assert recs[0].meta == {"image_id": 1, "width": 8, "height": 8}
    assert recs[0].image == str((tmp_path / "val2014" / "1.jpg").resolve())


def test_coco_missing_images_are_reported_together(tmp_path):
    p = _coco(tmp_path)
    ds = load_dataset(p, image_root=tmp_path / "val2014")
    with pytest.raises(MissingImagesError, match=r"1 of 3 images of .*captions.json are missing") as e:
        ds.check_images()
    assert "3.jpg: file not found" in str(e.value) and "--skip-bad" in str(e.value)
    assert [r.id for r in ds.check_images(skip_bad=True)] == ["1", "2"]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("annotations"), r"top level: field 'annotations': missing required field"),
    (lambda d: d.update(images={}), r"field 'images': expected a list, got an object"),
    (lambda d: d["images"][1].pop("file_name"), r"images\[1\]: field 'file_name': missing required field"),
    (lambda d: d["images"][0].update(id=[1]), r"images\[0\]: field 'id': expected an integer or string id"),
    (lambda d: d["images"].append({"id": 1, "file_name": "x.jpg"}), r"images\[3\]: field 'id': duplicate image id 1"),
    (lambda d: d["annotations"][2].update(caption=None), r"annotations\[2\]: field 'caption': expected a string, got null"),
    (lambda d: d["annotations"][0].update(image_id=99), r"annotations\[0\]: field 'image_id': image_id 99 is not in 'images'"),
])
def test_coco_errors(tmp_path, mutate, message):
    p = _coco(tmp_path)
    data = json.loads(p.read_text())
    mutate(data)
    p.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        read_coco_captions(p)


def test_bad_json_names_line_and_column(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{\n  "images": [\n    {"id": 1,}\n  ]\n}')
    with pytest.raises(DataError, match=r"c.json: line 3, column 14: invalid JSON"):
        load_dataset(p)


def test_unrecognised_files(tmp_path):
    (tmp_path / "x.json").write_text('{"foo": []}')
    with pytest.raises(DataError, match="unrecognised JSON layout"):
        load_dataset(tmp_path / "x.json")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DataError, match="unknown dataset file type"):
        load_dataset(tmp_path / "x.csv")
    with pytest.raises(DataError, match="no such dataset or file: 'nothing-here'"):
        load_dataset("nothing-here")


# ---- Karpathy -------------------------------------------------------------------------------------------

def _karpathy(tmp_path: Path) -> Path:
    _img(tmp_path / "val2014" / "a.jpg")
    _img(tmp_path / "train2014" / "b.jpg")
    data = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "a.jpg", "imgid": 0, "cocoid": 391895, "split": "test",
         "sentences": [{"raw": "A man riding a bike.", "tokens": ["a", "man"]}, {"raw": "Cyclist."}]},
        {"filepath": "train2014", "filename": "b.jpg", "imgid": 1, "cocoid": 7, "split": "restval",
         "sentences": [{"raw": "Two dogs."}]},
    ]}
    p = tmp_path / "dataset_coco.json"
    p.write_text(json.dumps(data))
    return p


def test_karpathy_and_split_filter(tmp_path):
    p = _karpathy(tmp_path)
    recs = read_karpathy(p)
    assert [(r.id, r.meta["split"], r.captions) for r in recs] == [
        ("391895", "test", ["A man riding a bike.", "Cyclist."]), ("7", "restval", ["Two dogs."])]
    assert recs[1].image == str((tmp_path / "train2014" / "b.jpg").resolve())
    test = load_dataset(p, "test")
    assert [r.id for r in test] == ["391895"] and test.check_images() is test
    with pytest.raises(DataError, match="no records with split 'val'"):
        load_dataset(p, "val")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["images"][0].pop("split"), r"images\[0\]: field 'split': missing required field"),
    (lambda d: d["images"][1].update(sentences="x"), r"images\[1\]: field 'sentences': expected a list"),
    (lambda d: d["images"][0]["sentences"][1].pop("raw"), r"images\[0\]: field 'sentences\[1\].raw': missing"),
    (lambda d: d["images"][0]["sentences"][0].update(raw=3), r"field 'sentences\[0\].raw': expected a string"),
])
def test_karpathy_errors(tmp_path, mutate, message):
    p = _karpathy(tmp_path)
    data = json.loads(p.read_text())
    mutate(data)
    p.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        read_karpathy(p)


# ---- VQA v2 ---------------------------------------------------------------------------------------------

def _vqa(tmp_path: Path) -> tuple[Path, Path]:
    _img(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    q = {"data_subtype": "val2014", "questions": [
        {"image_id": 42, "question": "What color is the bus?", "question_id": 420},
        {"image_id": 42, "question": "How many wheels?", "question_id": 421},
        {"image_id": 43, "question": "Is it raining?", "question_id": 430}]}
    answers = lambda *xs: [{"answer": x, "answer_confidence": "yes", "answer_id": i + 1} for i, x in enumerate(xs)]  # noqa: E731
    a = {"annotations": [
        {"question_id": 420, "image_id": 42, "question_type": "what color is the", "answer_type": "other",
         "multiple_choice_answer": "red", "answers": answers(*["red"] * 9, "maroon")},
        {"question_id": 421, "image_id": 42, "question_type": "how many", "answer_type": "number",
         "answers": answers("4", "four", "6")},
        {"question_id": 430, "image_id": 43, "question_type": "is it", "answer_type": "yes/no",
         "answers": answers("no")}]}
    qp, ap = tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json", tmp_path / "v2_mscoco_val2014_annotations.json"
    qp.write_text(json.dumps(q))
    ap.write_text(json.dumps(a))
    return qp, ap


def test_vqa_questions_with_annotations_found_beside(tmp_path):
    qp, _ = _vqa(tmp_path)
    ds = load_dataset(qp)
    assert [r.id for r in ds] == ["42", "43"]
    bus = ds[0]
    assert bus.image == str((tmp_path / "val2014" / "COCO_val2014_000000000042.jpg").resolve())
    assert [q.question_id for q in bus.qa] == [420, 421]
    assert bus.qa[0].answers == ["red"] * 9 + ["maroon"] and bus.qa[0].question_type == "what color is the"
    assert bus.qa[1].answer_type == "number"
    with pytest.raises(MissingImagesError, match="1 of 2 images"):
        ds.check_images()


def test_vqa_without_annotations(tmp_path):
    qp, ap = _vqa(tmp_path)
    ap.unlink()
    recs = read_vqa(qp)
    assert all(q.answers == [] for r in recs for q in r.qa)


@pytest.mark.parametrize("which, mutate, message", [
    ("q", lambda d: d["questions"][1].pop("question_id"), r"questions\[1\]: field 'question_id': missing"),
    ("q", lambda d: d["questions"][0].update(question="  "), r"questions\[0\]: field 'question': must not be empty"),
    ("a", lambda d: d["annotations"][2].update(answers="no"), r"annotations\[2\]: field 'answers': expected a list"),
    ("a", lambda d: d["annotations"][0]["answers"][3].update(answer=1), r"field 'answers\[3\].answer': expected a string"),
    ("a", lambda d: d["annotations"].pop(), r"1 of 3 questions have no annotation"),
])
def test_vqa_errors(tmp_path, which, mutate, message):
    qp, ap = _vqa(tmp_path)
    p = qp if which == "q" else ap
    data = json.loads(p.read_text())
    mutate(data)
    p.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        read_vqa(qp)


def test_record_manifest_roundtrip_keeps_qa_fields(tmp_path):
    from vislang.data.records import QA, Record

    _img(tmp_path / "a.png")
    rec = Record(id="r1", image=str((tmp_path / "a.png").resolve()), captions=["one", "two"], label="x",
                 qa=[QA("q?", ["a", "b"], "color", "other", 17), QA("p?", ["c"])], meta={"vendor": "v"})
    single = Record(id="r2", image=rec.image, qa=[QA("only?", ["yes"])])
    _jsonl(tmp_path / "m.jsonl", [rec.to_manifest(image="a.png"), single.to_manifest(image="a.png")])
    assert read_manifest(tmp_path / "m.jsonl") == [rec, single]
