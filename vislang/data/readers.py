"""Readers for users' own data: JSONL manifests, COCO captions, Karpathy splits and VQA v2.

Every reader validates as it goes and raises :class:`vislang.errors.DataError` naming the file, the line
or entry, and the field. Image paths are resolved but not opened here; see
:meth:`vislang.data.ImageTextDataset.check_images` for the up-front image check.

JSONL manifest, one object per line (blank lines are skipped)::

    {"image": "imgs/cat.png", "text": "a sleepy cat", "label": "animal",
     "question": "what animal is it?", "answer": "cat"}

- ``image`` (required): path, relative to the manifest's folder or absolute.
- ``text``: one caption or a list of captions.
- ``label``: class label (string or integer).
- ``question`` + ``answer`` (a string or a non-empty list of human answers; a question without one is an
  error), optional ``question_type``; or ``qa``:
  a list of ``{"question", "answer", "question_type"}`` objects for several questions (``answer_type`` and
  ``question_id`` are kept too).
- ``id``: sample id (default: the line number); ``split``: split name (``--split`` filters on it).
- Any other key is kept as metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vislang.data.records import QA, Record
from vislang.errors import DataError

_MANIFEST_KEYS = {"id", "image", "text", "label", "question", "answer", "answers", "question_type", "answer_type",
                  "question_id", "qa"}


def _type_name(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


class _Checker:
    """Field checks that name the file and the line or entry in their errors."""

    def __init__(self, path: Path, where: str):
        self.path, self.where = str(path), where

    def fail(self, message: str, field: str | None = None) -> DataError:
        return DataError(message, path=self.path, where=self.where, field=field)

    def obj(self, v: Any, field: str | None = None) -> dict:
        if not isinstance(v, dict):
            raise self.fail(f"expected a JSON object, got {_type_name(v)}", field)
        return v

    def require(self, obj: dict, field: str) -> Any:
        if field not in obj:
            raise self.fail("missing required field", field)
        return obj[field]

    def string(self, v: Any, field: str, allow_empty: bool = True) -> str:
        if not isinstance(v, str):
            raise self.fail(f"expected a string, got {_type_name(v)}", field)
        if not allow_empty and not v.strip():
            raise self.fail("must not be empty", field)
        return v

    def strings(self, v: Any, field: str) -> list[str]:
        """A string or a list of strings, as a list."""
        if isinstance(v, str):
            return [v]
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return list(v)
        if isinstance(v, list):
            bad = next(x for x in v if not isinstance(x, str))
            raise self.fail(f"expected a list of strings, found {_type_name(bad)} in it", field)
        raise self.fail(f"expected a string or a list of strings, got {_type_name(v)}", field)

    def ident(self, v: Any, field: str) -> int | str:
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise self.fail(f"expected an integer or string id, got {_type_name(v)}", field)
        return v

    def label(self, v: Any) -> str | None:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise self.fail(f"expected a string or integer label, got {_type_name(v)}", "label")
        return str(v)

    def image_path(self, v: Any, base: Path, field: str = "image") -> str:
        s = self.string(v, field, allow_empty=False)
        if "\0" in s:
            raise self.fail("not a file name (holds a NUL character)", field)
        try:
            os.fsencode(s)
            p = Path(s).expanduser()
            return str(p if p.is_absolute() else (base / p).resolve())
        except (ValueError, RuntimeError, OSError) as e:  # unencodable characters, an unknown ~user, ...
            raise self.fail(f"not a usable file name ({e})", field) from None

    def locate(self, field: str) -> str:
        """Where a field of this line or entry is, as errors name it (``FILE: line 3: field 'image'``)."""
        return f"{self.path}: {self.where}: field '{field}'"


def read_text_file(path: str | os.PathLike) -> str:
    """A UTF-8 text file's contents.

    Raises:
        DataError: Naming the file: it is missing, a directory or unreadable, or a byte is not UTF-8 (the
            message names its line).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except IsADirectoryError:
        raise DataError("is a directory, not a file", path=str(path)) from None
    except OSError as e:
        raise DataError(f"cannot read ({e.strerror or e})", path=str(path)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - raw.rfind(b"\n", 0, e.start)
        raise DataError(f"not UTF-8 text on line {line} ({e.reason} at byte {column} of the line)",
                        path=str(path)) from None


def _parse_json(text: str) -> Any:
    """``json.loads`` with every failure a :class:`json.JSONDecodeError` or a ``ValueError`` to report."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ValueError(f"invalid JSON: {e}") from None


def load_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; syntax errors name the line and column."""
    path = Path(path)
    try:
        return _parse_json(read_text_file(path))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg}", path=str(path),
                        where=f"line {e.lineno}, column {e.colno}") from None
    except ValueError as e:
        raise DataError(str(e), path=str(path)) from None


def load_format(path: str | os.PathLike, fmt: str, message: str) -> dict[str, Any]:
    """A JSON object file whose ``"format"`` field is ``fmt`` (as vislang writes its vocabularies and lists).

    Raises:
        DataError: The file is unreadable or not JSON (see :func:`load_json`), or not such an object:
            ``message`` naming the file.
    """
    data = load_json(path)
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise DataError(message, path=str(path))
    return data


def _qa_from(c: _Checker, obj: dict, field_prefix: str = "") -> QA:
    if "question" not in obj:
        raise c.fail("missing required field", f"{field_prefix}question")
    question = c.string(obj["question"], f"{field_prefix}question", allow_empty=False)
    ans_key = "answers" if "answers" in obj else "answer"
    if ans_key not in obj:
        raise c.fail("a question without an answer", f"{field_prefix}answer")
    answers = c.strings(obj[ans_key], f"{field_prefix}{ans_key}")
    if not answers:
        raise c.fail("a question without an answer (an empty list)", f"{field_prefix}{ans_key}")
    qtype = c.string(obj.get("question_type", ""), f"{field_prefix}question_type")
    atype = c.string(obj.get("answer_type", ""), f"{field_prefix}answer_type")
    qid = c.ident(obj["question_id"], f"{field_prefix}question_id") if "question_id" in obj else None
    return QA(question=question, answers=answers, question_type=qtype, answer_type=atype, question_id=qid)


def read_manifest(path: str | os.PathLike, sources: dict[str, str] | None = None) -> list[Record]:
    """Read a JSONL manifest (format in the module docstring).

    Args:
        path: The manifest.
        sources: When given, filled with each image path -> where the first record naming it is
            (``FILE: line N: field 'image'``), for errors about the image found later.
    """
    path = Path(path)
    base = path.parent.resolve()
    records: list[Record] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(read_text_file(path).split("\n"), 1):
        if not line.strip():
            continue
        c = _Checker(path, f"line {lineno}")
        try:
            obj = _parse_json(line)
        except json.JSONDecodeError as e:
            raise c.fail(f"invalid JSON: {e.msg} (column {e.colno})") from None
        except ValueError as e:
            raise c.fail(str(e)) from None
        c.obj(obj)
        image = c.image_path(c.require(obj, "image"), base)
        rec = record_from_manifest(obj, path, f"line {lineno}", image, str(lineno))
        if rec.id in seen:
            raise c.fail(f"duplicate id {rec.id!r} (first on line {seen[rec.id]})", "id")
        seen[rec.id] = lineno
        _note_source(sources, image, c, "image")
        records.append(rec)
    return records


def record_from_manifest(obj: Any, path: Path, where: str, image: str, default_id: str) -> Record:
    """One manifest object (a JSONL line, or a shard sample's JSON) as a record whose image is ``image``.

    Args:
        obj: The parsed object.
        path: The file it came from (for errors).
        where: Its place in the file (``line 3``, ``sample 000000042``).
        image: The record's image, already resolved.
        default_id: The id when the object has none.

    Raises:
        DataError: A field has the wrong type (one line naming the file, the place and the field).
    """
    c = _Checker(path, where)
    c.obj(obj)
    rid = str(c.ident(obj["id"], "id")) if "id" in obj else default_id
    captions = c.strings(obj["text"], "text") if "text" in obj else []
    qa: list[QA] = []
    if "question" in obj:
        qa.append(_qa_from(c, obj))
    elif "answer" in obj or "answers" in obj:
        raise c.fail("an answer without a question", "question")
    if "qa" in obj:
        items = obj["qa"]
        if not isinstance(items, list):
            raise c.fail(f"expected a list of question objects, got {_type_name(items)}", "qa")
        for i, item in enumerate(items):
            c.obj(item, f"qa[{i}]")
            qa.append(_qa_from(c, item, f"qa[{i}]."))
    meta = {k: v for k, v in obj.items() if k not in _MANIFEST_KEYS}
    return Record(id=rid, image=image, captions=captions, label=c.label(obj.get("label")), qa=qa, meta=meta)


def _note_source(sources: dict[str, str] | None, image: str, c: _Checker, field: str) -> None:
    if sources is not None:
        sources.setdefault(image, c.locate(field))


def read_coco_captions(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                       data: Any = None, sources: dict[str, str] | None = None) -> list[Record]:
    """Read a COCO captions file (``images`` + ``annotations``).

    Args:
        path: e.g. ``captions_val2014.json``.
        image_root: Folder holding the ``file_name`` images (default: the JSON file's folder).
        data: The file's parsed JSON, when already read.
        sources: Filled as by :func:`read_manifest` (``FILE: images[3]: field 'file_name'``).
    """
    path = Path(path)
    data = load_json(path) if data is None else data
    root = Path(image_root) if image_root else path.parent
    top = _Checker(path, "top level")
    top.obj(data)
    images, anns = top.require(data, "images"), top.require(data, "annotations")
    for name, v in (("images", images), ("annotations", anns)):
        if not isinstance(v, list):
            raise top.fail(f"expected a list, got {_type_name(v)}", name)
    by_id: dict[int | str, Record] = {}
    for i, im in enumerate(images):
        c = _Checker(path, f"images[{i}]")
        c.obj(im)
        iid = c.ident(c.require(im, "id"), "id")
        if iid in by_id:
            raise c.fail(f"duplicate image id {iid!r}", "id")
        file_name = c.image_path(c.require(im, "file_name"), root, "file_name")
        _note_source(sources, file_name, c, "file_name")
        meta = {"image_id": iid}
        meta.update({k: im[k] for k in ("width", "height") if k in im})
        by_id[iid] = Record(id=str(iid), image=file_name, meta=meta)
    for i, ann in enumerate(anns):
        c = _Checker(path, f"annotations[{i}]")
        c.obj(ann)
        iid = c.ident(c.require(ann, "image_id"), "image_id")
        caption = c.string(c.require(ann, "caption"), "caption")
        if iid not in by_id:
            raise c.fail(f"image_id {iid!r} is not in 'images'", "image_id")
        by_id[iid].captions.append(caption)
    return list(by_id.values())


def read_karpathy(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                  data: Any = None, sources: dict[str, str] | None = None) -> list[Record]:
    """Read a Karpathy split file (``dataset_coco.json`` style: ``images[].sentences[].raw``, ``split``).

    The image path is ``image_root/filepath/filename`` (``filepath`` optional). ``restval`` images keep
    that split name; pass ``split="train"`` and ``"restval"`` separately or merge them yourself. ``data`` and
    ``sources`` as for :func:`read_coco_captions`.
    """
    path = Path(path)
    data = load_json(path) if data is None else data
    root = Path(image_root) if image_root else path.parent
    top = _Checker(path, "top level")
    top.obj(data)
    images = top.require(data, "images")
    if not isinstance(images, list):
        raise top.fail(f"expected a list, got {_type_name(images)}", "images")
    records = []
    for i, im in enumerate(images):
        c = _Checker(path, f"images[{i}]")
        c.obj(im)
        filename = c.string(c.require(im, "filename"), "filename", allow_empty=False)
        filepath = c.string(im.get("filepath", ""), "filepath")
        sentences = c.require(im, "sentences")
        if not isinstance(sentences, list):
            raise c.fail(f"expected a list, got {_type_name(sentences)}", "sentences")
        captions = []
        for j, s in enumerate(sentences):
            c.obj(s, f"sentences[{j}]")
            if "raw" not in s:
                raise c.fail("missing required field", f"sentences[{j}].raw")
            captions.append(c.string(s["raw"], f"sentences[{j}].raw"))
        split = c.string(c.require(im, "split"), "split", allow_empty=False)
        iid = c.ident(im["cocoid"], "cocoid") if "cocoid" in im else c.ident(im.get("imgid", i), "imgid")
        image = c.image_path(os.path.join(filepath, filename), root, "filename")
        _note_source(sources, image, c, "filename")
        records.append(Record(id=str(iid), image=image, captions=captions,
                              meta={"image_id": iid, "split": split}))
    return records


def _find_vqa_annotations(questions: Path) -> Path | None:
    """Official names pair ``v2_OpenEnded_mscoco_val2014_questions.json`` with
    ``v2_mscoco_val2014_annotations.json``."""
    stem = questions.name
    candidates = [stem.replace("questions", "annotations"),
                  stem.replace("OpenEnded_", "").replace("questions", "annotations")]
    for name in candidates:
        p = questions.with_name(name)
        if p != questions and p.exists():
            return p
    return None


def read_vqa(questions: str | os.PathLike, annotations: str | os.PathLike | None = None,
             image_root: str | os.PathLike | None = None, data: Any = None,
             sources: dict[str, str] | None = None) -> list[Record]:
    """Read VQA v2 questions (and annotations, when given or found beside them), one record per image.

    Images are looked up as ``image_root/<data_subtype>/COCO_<data_subtype>_<id:012d>.jpg`` or directly
    in ``image_root`` (default: the questions file's folder). ``data`` and ``sources`` as for
    :func:`read_coco_captions` (``FILE: questions[3]: field 'image_id'``).
    """
    qpath = Path(questions)
    qdata = load_json(qpath) if data is None else data
    top = _Checker(qpath, "top level")
    top.obj(qdata)
    qs = top.require(qdata, "questions")
    if not isinstance(qs, list):
        raise top.fail(f"expected a list, got {_type_name(qs)}", "questions")
    subtype = top.string(qdata.get("data_subtype", ""), "data_subtype")
    if "\0" in subtype or "/" in subtype or "\\" in subtype or subtype in (".", ".."):
        raise top.fail("expected a folder name such as val2014", "data_subtype")
    root = Path(image_root) if image_root else qpath.parent
    apath = Path(annotations) if annotations else _find_vqa_annotations(qpath)
    anns: dict[Any, dict] = {}
    if apath is not None:
        adata = load_json(apath)
        atop = _Checker(apath, "top level")
        atop.obj(adata)
        alist = atop.require(adata, "annotations")
        if not isinstance(alist, list):
            raise atop.fail(f"expected a list, got {_type_name(alist)}", "annotations")
        for i, a in enumerate(alist):
            c = _Checker(apath, f"annotations[{i}]")
            c.obj(a)
            qid = c.ident(c.require(a, "question_id"), "question_id")
            answers = c.require(a, "answers")
            if not isinstance(answers, list):
                raise c.fail(f"expected a list, got {_type_name(answers)}", "answers")
            for j, ans in enumerate(answers):
                c.obj(ans, f"answers[{j}]")
                c.string(c.require(ans, "answer"), f"answers[{j}].answer")
            anns[qid] = a
    by_image: dict[Any, Record] = {}
    missing_ann: list[int] = []
    for i, q in enumerate(qs):
        c = _Checker(qpath, f"questions[{i}]")
        c.obj(q)
        iid = c.ident(c.require(q, "image_id"), "image_id")
        qid = c.ident(c.require(q, "question_id"), "question_id")
        text = c.string(c.require(q, "question"), "question", allow_empty=False)
        a = anns.get(qid)
        if a is None:
            missing_ann.append(i)
        qa = QA(question=text, answers=[x["answer"] for x in a["answers"]] if a else [],
                question_type=str(a.get("question_type", "")) if a else "",
                answer_type=str(a.get("answer_type", "")) if a else "", question_id=qid)
        if iid not in by_image:
            image = _vqa_image(c, root, subtype, iid)
            _note_source(sources, image, c, "image_id")
            by_image[iid] = Record(id=str(iid), image=image, meta={"image_id": iid})
        by_image[iid].qa.append(qa)
    if apath is not None and missing_ann:
        raise DataError(f"{len(missing_ann)} of {len(qs)} questions have no annotation in {apath}",
                        path=str(qpath), where=f"questions[{missing_ann[0]}]", field="question_id")
    return list(by_image.values())


def _vqa_image(c: _Checker, root: Path, subtype: str, iid: Any) -> str:
    """The image of an ``image_id``: the official COCO name in ``root/subtype`` or ``root``, else ``ID.jpg``."""
    digits = isinstance(iid, int) or (iid.isascii() and iid.isdigit())
    name = f"COCO_{subtype}_{int(iid):012d}.jpg" if subtype and digits else f"{iid}.jpg"
    candidates = [os.path.join(subtype, name), name] if subtype else [name]
    for p in candidates:
        if os.path.exists(root / p):  # False, not an error, for a name the OS cannot take
            return c.image_path(p, root, "image_id")
    return c.image_path(candidates[0], root, "image_id")


def detect_format(path: str | os.PathLike, data: Any = None) -> str:
    """``"manifest"``, ``"coco"``, ``"karpathy"`` or ``"vqa"`` for a file (JSON sniffed by its keys)."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return "manifest"
    if path.suffix.lower() != ".json":
        raise DataError("unknown dataset file type (expected .jsonl manifest or .json COCO/Karpathy/VQA)",
                        path=str(path))
    data = load_json(path) if data is None else data
    if isinstance(data, dict):
        if "questions" in data:
            return "vqa"
        images = data.get("images")
        if isinstance(images, list) and images and isinstance(images[0], dict) and "sentences" in images[0]:
            return "karpathy"
        if "images" in data and "annotations" in data:
            return "coco"
    raise DataError("unrecognised JSON layout: expected COCO captions ('images' + 'annotations'), "
                    "Karpathy ('images[].sentences'), or VQA questions ('questions')", path=str(path))


def read_any(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
             annotations: str | os.PathLike | None = None, sources: dict[str, str] | None = None) -> list[Record]:
    """Read a dataset file of any supported format (``sources`` as for :func:`read_manifest`)."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return read_manifest(path, sources)
    data = load_json(path) if path.suffix.lower() == ".json" else None
    fmt = detect_format(path, data)
    if fmt == "vqa":
        return read_vqa(path, annotations, image_root, data=data, sources=sources)
    if fmt == "karpathy":
        return read_karpathy(path, image_root, data=data, sources=sources)
    return read_coco_captions(path, image_root, data=data, sources=sources)

