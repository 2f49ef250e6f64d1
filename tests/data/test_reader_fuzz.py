"""Fuzzing the dataset readers with hypothesis: whatever a JSONL manifest, COCO captions, Karpathy split or VQA
questions / annotations file holds, the reader either returns records or raises :class:`DataError` naming the
file and the line or entry; never another exception.

The inputs are real files: plausible documents with a few mutations (a value replaced by any JSON value, a
key removed), sometimes cut short or with a byte that is not UTF-8; any JSON; any text; any bytes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vislang.data.readers import read_coco_captions, read_karpathy, read_manifest, read_vqa
from vislang.data.records import Record
from vislang.errors import DataError

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# any JSON value: small, nested a few levels
LEAF = (st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=12))
ANY_JSON = st.recursive(LEAF, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                                                          max_size=3), max_leaves=8)
# names that look like files, with the characters file names trip over (NUL, lone surrogates, '~user', '..')
NAMES = st.sampled_from(["a.png", "sub/b.jpg", "", "  ", "~nosuchuser/x.png", "../up.png", "/abs/c.png", "a\0b.png",
                         "\ud800.png", "x" * 300])
NAME = st.one_of(NAMES, NAMES, st.text(max_size=10))
IDENT = st.integers(-3, 5) | st.sampled_from(["1", "7", "²", "01", "a/b", "", "x\0"])

def _slots(value) -> list[tuple[dict | list, str | int]]:
    """Every ``(container, key)`` inside a JSON document."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return []
    return [(value, k) for k, _ in items] + [s for _, v in items for s in _slots(v)]


@st.composite
def mutated(draw, doc: st.SearchStrategy):
    """A plausible document with up to three mutations, each a value replaced by any JSON value or a key or
    list item removed."""
    value = draw(doc)
    for _ in range(draw(st.integers(0, 3))):
        slots = _slots(value)
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        if draw(st.booleans()):
            container[key] = draw(ANY_JSON)
        else:
            del container[key]
    return value


def objects(required: dict[str, st.SearchStrategy], optional: dict[str, st.SearchStrategy] | None = None,
            max_size: int = 3) -> st.SearchStrategy:
    """Lists of 1 to ``max_size`` objects with the ``required`` fields and some of the ``optional`` ones."""
    return st.lists(st.fixed_dictionaries(required, optional=optional or {}), min_size=1, max_size=max_size)


STRINGS = st.text(max_size=8) | st.lists(st.text(max_size=8), max_size=3)
MANIFEST_LINE = st.fixed_dictionaries({"image": NAME}, optional={
    "text": STRINGS, "label": st.text(max_size=4) | st.integers(0, 3), "id": IDENT, "question": st.text(max_size=8),
    "answer": STRINGS, "answers": STRINGS, "split": st.sampled_from(["train", "val"]),
    "qa": objects({"question": st.text(max_size=8), "answer": STRINGS},
                  {"question_type": st.text(max_size=4), "question_id": IDENT}, 2)})
COCO = st.fixed_dictionaries({
    "images": objects({"id": IDENT, "file_name": NAME}, {"width": st.integers(0, 9)}),
    "annotations": objects({"image_id": IDENT, "caption": st.text(max_size=8)}, {"id": IDENT})})
KARPATHY = st.fixed_dictionaries({"images": objects(
    {"filename": NAME, "split": st.sampled_from(["train", "val", "restval"]),
     "sentences": objects({"raw": st.text(max_size=8)}, {"tokens": st.lists(st.text(max_size=3), max_size=2)})},
    {"filepath": NAME, "cocoid": IDENT, "imgid": IDENT})})
VQA_QUESTIONS = st.fixed_dictionaries(
    {"questions": objects({"image_id": IDENT, "question_id": IDENT, "question": st.text(min_size=1, max_size=8)})},
    optional={"data_subtype": st.sampled_from(["val2014", "val2014", "", "a/b", "..", "x\0y"])})
VQA_ANNOTATIONS = st.fixed_dictionaries({"annotations": objects(
    {"question_id": IDENT, "answers": objects({"answer": st.text(max_size=6)})},
    {"question_type": st.text(max_size=4), "answer_type": st.text(max_size=4)})})


def as_bytes(doc: st.SearchStrategy) -> st.SearchStrategy:
    """A file's bytes: mostly the JSON of a mutated ``doc`` (sometimes cut short or with a byte that is not
    UTF-8), else any JSON, any text or any bytes."""
    def damage(data: tuple[bytes, bool, int]) -> bytes:
        raw, cut, at = data
        at = at % (len(raw) + 1)
        return raw[:at] if cut else raw[:at] + b"\xff" + raw[at:]

    encoded = mutated(doc).map(lambda d: json.dumps(d).encode())
    return st.one_of(encoded, encoded, encoded, encoded,
                     st.tuples(encoded, st.booleans(), st.integers(0, 10**6)).map(damage),
                     ANY_JSON.map(lambda d: json.dumps(d).encode()), st.text(max_size=30).map(str.encode),
                     st.binary(max_size=30))


LINE = st.one_of(mutated(MANIFEST_LINE).map(json.dumps), mutated(MANIFEST_LINE).map(json.dumps),
                 mutated(MANIFEST_LINE).map(json.dumps), ANY_JSON.map(json.dumps), st.text(max_size=12), st.just(""))
MANIFEST = st.lists(LINE, max_size=5).map(lambda lines: "\n".join(lines).encode())


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every example (each writes its files anew); a few of the named images exist."""
    d = tmp_path_factory.mktemp("fuzz")
    (d / "sub").mkdir()
    for name in ("a.png", "sub/b.jpg", "val2014/COCO_val2014_000000000001.jpg", "7.jpg"):
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(b"not read by the readers")
    return d


def check(read, files: list[Path]) -> None:
    """``read()`` returns records, or raises a DataError naming one of ``files`` and a line or entry."""
    try:
        records = read()
    except DataError as e:
        message = str(e)
        assert "\n" not in message, message
        assert e.path in {str(f) for f in files}, message
        assert message.startswith(e.path + ": "), message
        assert e.where or re.search(r"\bline \d+\b", message), message
        return
    assert isinstance(records, list) and all(isinstance(r, Record) for r in records)
    for r in records:
        assert isinstance(r.id, str) and Path(r.image).is_absolute()
        assert all(isinstance(c, str) for c in r.captions)
        assert all(isinstance(a, str) for q in r.qa for a in q.answers)


@pytest.mark.parametrize("name, read, raw", [
    ("m.jsonl", read_manifest, st.one_of(MANIFEST, MANIFEST.map(lambda b: b + b"\n\xc3("), st.binary(max_size=40))),
    ("captions.json", read_coco_captions, as_bytes(COCO)),
    ("dataset_coco.json", read_karpathy, as_bytes(KARPATHY)),
], ids=["manifest", "coco", "karpathy"])
@FUZZ
@given(data=st.data())
def test_reader(folder, name, read, raw, data):
    path = folder / name
    path.write_bytes(data.draw(raw, label="file"))
    check(lambda: read(path), [path])


@FUZZ
@given(questions=as_bytes(VQA_QUESTIONS), annotations=st.none() | as_bytes(VQA_ANNOTATIONS))
def test_vqa_reader(folder, questions, annotations):
    qpath, apath = folder / "questions.json", folder / "annotations.json"
    qpath.write_bytes(questions)
    if annotations is not None:
        apath.write_bytes(annotations)
    check(lambda: read_vqa(qpath, apath if annotations is not None else None), [qpath, apath])


@pytest.mark.parametrize("text, message", [
    ('{"image": ' + "[" * 100_000 + "]" * 100_000 + "}", "invalid JSON: nested too deeply"),
    ('{"image": "a.png", "id": ' + "7" * 5000 + "}", "invalid JSON: Exceeds the limit"),
])
def test_json_that_python_refuses_is_a_data_error(tmp_path, text, message):
    m = tmp_path / "m.jsonl"
    m.write_text('{"image": "a.png"}\n' + text + "\n")
    with pytest.raises(DataError, match=re.escape(f"{m}: line 2: {message}")):
        read_manifest(m)
    j = tmp_path / "captions.json"
    j.write_text(text)
    with pytest.raises(DataError, match=re.escape(f"{j}: {message}")):
        read_coco_captions(j)
