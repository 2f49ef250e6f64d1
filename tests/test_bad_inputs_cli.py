"""Bad input on the command line: every case gives one ``error:`` line naming the file (and the line or field)
and exits 2, never a traceback; warnings instead of silently dropping data; files written with the user's umask.

Real files, real tiny runs (a captioner trained here, the session's retrieval run), the real CLI in-process
(``vislang.cli.main``) and, for the no-traceback checks, in real ``python -m vislang`` processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vislang.cli import main
from vislang.errors import VislangError

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: one thread is fastest

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"  # the session's retrieval run is trained on it too


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``(exit code, stderr)`` of ``vislang ARGV`` in-process; argparse's exits are exit codes too."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def assert_error(argv: list[str], capsys, *needles: str) -> str:
    """``vislang ARGV`` fails with exit 2 and one ``error:`` line holding every needle; returns that line."""
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err, err
    line = err.splitlines()[0]
    for needle in needles:
        assert needle in err, (needle, err)
    return line


def picture(path: Path, color: str = "red", size: tuple[int, int] = (16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of bad inputs: folders named like data files, a file where a folder goes, non-UTF-8 text."""
    d = tmp_path_factory.mktemp("bad-inputs")
    for name in ("x.jsonl", "x.json", "texts.txt", "out.png"):
        (d / "dirs" / name).mkdir(parents=True)
    picture(d / "red.png")
    (d / "notes.txt").write_text("a red circle\n", encoding="utf-8")
    (d / "latin1.txt").write_bytes(b"a red circle\n\na caf\xe9 square\n")
    (d / "garbage.json").write_text("{nope", encoding="utf-8")
    (d / "empty.jsonl").write_text("", encoding="utf-8")
    jsonl(d / "ok.jsonl", [{"image": "red.png", "text": "a red square"}])
    jsonl(d / "missing.jsonl", [{"image": "red.png", "text": "a red square"}, {"image": "gone.png", "text": "x"}])
    jsonl(d / "vqa.jsonl", [{"image": "red.png", "question": "what color?", "answer": "red"},
                            {"image": "red.png", "question": "what shape?"}])
    return d


@pytest.fixture(scope="module")
def caption_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny captioner (two steps), trained with a 022 umask."""
    out = tmp_path_factory.mktemp("caption-run") / "run"
    old = os.umask(0o022)
    try:
        assert main(["train", "caption", "--data", SHAPES, "--root", str(data_root), "--model", "caption_lstm_tiny",
                     "--epochs", "1", "--max-steps", "2", "--batch-size", "8", "--image-size", "32",
                     "--set", "task.max_len=12", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    return out


# ------------------------------------------------------------- item 5: one-line errors instead of tracebacks


@pytest.mark.parametrize("name", ["x.jsonl", "x.json"])
def test_a_folder_named_like_a_data_file(name, files, retrieval_run, tmp_path, capsys):
    folder = files / "dirs" / name
    for argv in (["data", "info", folder], ["data", "check", folder],
                 ["train", "caption", "--data", folder, "--out", tmp_path / "run"],
                 ["search", "red", "--texts", folder, "--model", retrieval_run],
                 ["index", "build", "--model", retrieval_run, "--texts", folder, "-o", tmp_path / "ix"]):
        assert_error(argv, capsys, f"{folder}: is a directory")
    assert not (tmp_path / "ix").exists() and not any((tmp_path / "run").glob("**/*"))  # nothing written
    assert_error(["search", "red", "--texts", files / "dirs" / "texts.txt", "--model", retrieval_run], capsys,
                 "texts.txt: is a directory")


@pytest.mark.parametrize("value", ["-5", "0"])
def test_caption_max_len_must_be_positive(value, caption_run, files, capsys):
    assert_error(["caption", files / "red.png", "--model", caption_run, "--max-len", value], capsys,
                 f"--max-len must be at least 1, got {value}")
    rc, _ = run_cli(["caption", files / "red.png", "--model", caption_run, "--max-len", "1"], capsys)
    assert rc == 0


def test_attention_refuses_a_folder_and_a_missing_folder(caption_run, files, tmp_path, capsys):
    folder = files / "dirs" / "out.png"
    assert_error(["caption", files / "red.png", "--model", caption_run, "--attention", folder], capsys,
                 f"--attention {folder}: is a directory")
    missing = tmp_path / "no" / "such" / "att.png"
    assert_error(["caption", files / "red.png", "--model", caption_run, "--attention", missing], capsys,
                 f"--attention {missing}: the folder {missing.parent} does not exist")
    assert not (tmp_path / "no").exists()  # not created
    assert_error(["ask", files / "red.png", "what?", "--model", caption_run, "--attention", folder], capsys,
                 "is a directory")
    # the figure writer itself refuses too, for any caller
    from vislang.viz import save_figure

    fig = Image.new("RGB", (4, 4))
    with pytest.raises(VislangError, match="does not exist"):
        save_figure(fig, missing)
    with pytest.raises(VislangError, match="is a directory"):
        save_figure(fig, folder)
    assert not (tmp_path / "no").exists() and not any(folder.iterdir())
    save_figure(fig, tmp_path / "att.png")
    assert Image.open(tmp_path / "att.png").size == (4, 4)


def test_search_sheet_refuses_a_folder(retrieval_run, files, tmp_path, capsys):
    assert_error(["search", "red", "--texts", files / "notes.txt", "--model", retrieval_run, "--sheet",
                  files / "dirs" / "out.png"], capsys, "--sheet", "is a directory")
    missing = tmp_path / "no" / "sheet.png"
    assert_error(["search", "red", "--texts", files / "notes.txt", "--model", retrieval_run, "--sheet", missing],
                 capsys, "does not exist")
    assert not missing.parent.exists()


def test_train_out_an_existing_file(files, data_root, capsys):
    assert_error(["train", "caption", "--data", SHAPES, "--root", data_root, "--out", files / "notes.txt"], capsys,
                 f"--out {files / 'notes.txt'}: is a file, not a run directory")
    assert (files / "notes.txt").read_text() == "a red circle\n"


@pytest.mark.parametrize("value", ["abc", "-3", "0", "1.5"])
def test_max_image_pixels_must_be_a_positive_integer(value, files, monkeypatch, capsys):
    monkeypatch.setenv("VISLANG_MAX_IMAGE_PIXELS", value)
    assert_error(["data", "check", files / "ok.jsonl"], capsys,
                 f"$VISLANG_MAX_IMAGE_PIXELS must be a positive whole number of pixels, got {value!r}")


def test_max_image_pixels_set_empty_or_valid(files, monkeypatch, capsys):
    monkeypatch.setenv("VISLANG_MAX_IMAGE_PIXELS", "")  # empty: the default
    assert run_cli(["data", "check", files / "ok.jsonl"], capsys)[0] == 0
    monkeypatch.setenv("VISLANG_MAX_IMAGE_PIXELS", "100")  # 16x16 = 256 pixels: over the limit
    assert_error(["data", "check", files / "ok.jsonl"], capsys, "red.png: image too large")


# ------------------------------------------------------------------- item 6: errors that name the line


def test_non_utf8_manifest_names_the_line(tmp_path, capsys):
    m = tmp_path / "m.jsonl"
    m.write_bytes(b'{"image": "a.png", "text": "ok"}\n\n{"image": "b.png", "text": "caf\xe9"}\n')
    line = assert_error(["data", "info", m], capsys, f"{m}: not UTF-8 text on line 3")
    assert "byte 32 of the line" in line


def test_non_utf8_json_names_the_line(tmp_path, capsys):
    p = tmp_path / "captions.json"
    p.write_bytes(b'{"images": [],\n "annotations": [{"caption": "caf\xe9"}]}')
    assert_error(["data", "info", p], capsys, f"{p}: not UTF-8 text on line 2")


def test_non_utf8_texts_file_names_the_line(files, retrieval_run, tmp_path, capsys):
    texts = files / "latin1.txt"
    assert_error(["search", "red", "--texts", texts, "--model", retrieval_run], capsys,
                 f"{texts}: not UTF-8 text on line 3")
    assert_error(["index", "build", "--model", retrieval_run, "--texts", texts, "-o", tmp_path / "ix"], capsys,
                 "not UTF-8 text on line 3")


@pytest.mark.parametrize("row, where", [
    ({"image": "red.png", "question": "what shape?"}, "line 2: field 'answer': a question without an answer"),
    ({"image": "red.png", "question": "what shape?", "answer": []}, "line 2: field 'answer': a question without"),
    ({"image": "red.png", "qa": [{"question": "what?", "answer": "red"}, {"question": "and?"}]},
     "line 2: field 'qa[1].answer': a question without an answer"),
])
def test_a_question_without_an_answer_names_line_and_field(row, where, files, tmp_path, capsys):
    m = jsonl(tmp_path / "q.jsonl", [{"image": str(files / "red.png"), "question": "what?", "answer": "red"}, row])
    assert_error(["data", "info", m], capsys, f"{m}: {where}")
    assert_error(["train", "vqa", "--data", m, "--out", tmp_path / "run"], capsys, f"{m}: {where}")


def test_missing_images_name_the_manifest_line_and_field(files, capsys):
    m = files / "missing.jsonl"
    assert_error(["data", "check", m], capsys, "1 of 2 images",
                 f"{m}: line 2: field 'image': {files / 'gone.png'}: file not found")
    rc, err = run_cli(["data", "check", m, "--skip-bad"], capsys)
    assert rc == 0 and f"(first: {m}: line 2: field 'image': {files / 'gone.png'}: file not found)" in err


def test_missing_images_name_the_entry_of_coco_karpathy_and_vqa(files, tmp_path):
    from vislang.data import load_dataset
    from vislang.errors import MissingImagesError

    red = str(files / "red.png")
    coco = tmp_path / "captions.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": red}, {"id": 2, "file_name": "gone.jpg"}],
                                "annotations": [{"image_id": 1, "caption": "a red square"}]}))
    karpathy = tmp_path / "karpathy.json"
    karpathy.write_text(json.dumps({"images": [
        {"filename": "gone.jpg", "filepath": "val", "split": "test", "sentences": [{"raw": "x"}]}]}))
    vqa = tmp_path / "questions.json"
    vqa.write_text(json.dumps({"questions": [{"image_id": 5, "question_id": 50, "question": "what?"}]}))
    for path, where in ((coco, "images[1]: field 'file_name'"), (karpathy, "images[0]: field 'filename'"),
                        (vqa, "questions[0]: field 'image_id'")):
        with pytest.raises(MissingImagesError, match=re.escape(f"{path}: {where}: ")):
            load_dataset(path).check_images()


def test_classify_warns_about_records_without_a_label(files, tmp_path, capsys):
    rows = [{"image": str(picture(tmp_path / f"{i}.png", color)), "text": f"a {color} square",
             **({"label": color} if i not in (2, 5) else {})}
            for i, color in enumerate(["red", "blue"] * 4)]
    m = jsonl(tmp_path / "cls.jsonl", rows)
    rc, err = run_cli(["train", "classify", "--data", m, "--model", "fusion_classifier_tiny", "--image-size", "16",
                       "--batch-size", "4", "--max-steps", "1", "--out", tmp_path / "run"], capsys)
    assert rc == 0, err
    assert f"warning: 2 of 8 records of {m} [train] have no 'label' and are left out (first: record '3'" in err
    assert "classify: 6 training samples" in err


def test_search_warns_when_no_word_of_the_query_is_known(files, retrieval_run, capsys):
    texts = files / "notes.txt"
    for query in ("😀😀", "zzyzx qwv", "!!!"):
        rc, err = run_cli(["search", query, "--texts", texts, "--model", retrieval_run], capsys)
        assert rc == 0 and err.startswith(f"warning: no word of the query {query!r} is known to the model"), err
    rc, err = run_cli(["search", "a red 😀", "--texts", texts, "--model", retrieval_run], capsys)
    assert rc == 0 and "warning" not in err


def test_unknown_words_for_each_kind_of_tokenizer(tiny_bert_dir):
    from vislang.data.text import HFTokenizer, Vocabulary, knows_no_word

    vocab = Vocabulary.build(["a red circle"])
    assert knows_no_word(vocab, "😀 zzz") and knows_no_word(vocab, "?!") and not knows_no_word(vocab, "red 😀")
    bert = HFTokenizer(tiny_bert_dir)  # a word-level tokenizer.json with [UNK]
    assert bert.unk_id == 1
    assert knows_no_word(bert, "😀 unicorn") and not knows_no_word(bert, "red unicorn")


# ------------------------------------------------------------- item 7: files get the user's umask


def _modes(folder: Path, names: list[str]) -> dict[str, str]:
    return {name: oct((folder / name).stat().st_mode & 0o777) for name in names}


MODEL_FILES = ["model.safetensors", "vocab.json", "config.json", "preprocessor.json", "README.md", "train_state.pt"]


def test_files_written_with_umask_022_are_0644(caption_run, files, tmp_path, capsys):
    for ckpt in ("best", "last"):
        assert set(_modes(caption_run / "checkpoints" / ckpt, MODEL_FILES).values()) == {"0o644"}, ckpt
    assert set(_modes(caption_run, ["config.yaml", "log.jsonl", "curves.png"]).values()) == {"0o644"}
    old = os.umask(0o022)
    try:
        assert run_cli(["caption", files / "red.png", "--model", caption_run, "--attention", tmp_path / "att.png"],
                       capsys)[0] == 0
    finally:
        os.umask(old)
    assert oct((tmp_path / "att.png").stat().st_mode & 0o777) == "0o644"


def test_files_written_with_umask_077_are_0600(data_root, files, tmp_path, capsys):
    run = tmp_path / "run"
    old = os.umask(0o077)
    try:
        assert run_cli(["train", "caption", "--data", SHAPES, "--root", data_root, "--model", "caption_lstm_tiny",
                        "--max-steps", "1", "--batch-size", "8", "--image-size", "32", "--out", run], capsys)[0] == 0
        assert run_cli(["caption", files / "red.png", "--model", run, "--attention", tmp_path / "att.png"],
                       capsys)[0] == 0
    finally:
        os.umask(old)
    assert set(_modes(run / "checkpoints" / "last", MODEL_FILES).values()) == {"0o600"}
    assert set(_modes(run, ["config.yaml", "log.jsonl"]).values()) == {"0o600"}
    assert oct((tmp_path / "att.png").stat().st_mode & 0o777) == "0o600"


# ---------------------------------------------- acceptance: every subcommand, a table of bad arguments

#: Rows past argument parsing: exit 2, stderr starts with ``error:``, no traceback. ``{F}`` is the folder of
#: bad inputs, ``{T}`` a fresh folder, ``{C}`` the caption run, ``{R}`` the retrieval run, ``{D}`` the data root.
BAD_RUNS = [
    "data prepare nosuch",
    "data prepare shapes:size=abc --root {T}",
    "data prepare shapes:bogus=1 --root {T}",
    "data info {F}/nope.jsonl",
    "data info {F}/dirs/x.jsonl",
    "data info {F}/notes.txt",
    "data info {F}/garbage.json",
    "data info {F}/vqa.jsonl",
    "data info shapes --split nosplit --root {D}",
    "data check {F}/dirs/x.json",
    "data check {F}/missing.jsonl",
    "train caption --data {F}/dirs/x.jsonl --out {T}/run",
    "train caption --data {F}/ok.jsonl --out {F}/notes.txt",
    "train caption --config {F}/nope.yaml --out {T}/run",
    "train caption --config {F}/dirs/x.json --out {T}/run",
    "train caption --config {F}/notes.txt --out {T}/run",
    "train caption --set foo=1 --out {T}/run",
    "train caption --set train.epochs=abc --out {T}/run",
    "train caption --data {F}/empty.jsonl --out {T}/run",
    "train caption --model nosuch --data {F}/ok.jsonl --out {T}/run",
    "train caption --out {T}/run --resume",
    "train retrieval --data {F}/dirs/x.json --out {T}/run",
    "train vqa --data {F}/vqa.jsonl --out {T}/run",
    "train classify --data {F}/empty.jsonl --out {T}/run",
    "train regions --data {F}/nope.jsonl --out {T}/run",
    "caption {F}/red.png --model {C} --max-len -5",
    "caption {F}/red.png --model {C} --max-len 0",
    "caption {F}/red.png --model {C} --beam 0",
    "caption {F}/red.png --model {C} --attention {F}/dirs/out.png",
    "caption {F}/red.png --model {C} --attention {T}/no/such/att.png",
    "caption {F}/red.png --model {T}/nope",
    "caption {F}/red.png --model {F}/dirs/x.json",
    "caption {F}/notes.txt --model {C}",
    "caption {F}/dirs/x.json --model {C}",
    "caption {F}/red.png --model {C} --device nosuch",
    "ask {F}/red.png what? --model {C}",
    "ask {F}/red.png what? --model {C} --top-k 0",
    "ask {F}/red.png what? --model {C} --attention {F}/dirs/out.png",
    "ask {F}/dirs/x.json what? --model {T}/nope",
    "classify {F}/red.png --model {C}",
    "classify {F}/red.png --model {C} --top-k 0",
    "evaluate caption --model {T}/nope --data {F}/ok.jsonl",
    "evaluate caption --model {C} --data {F}/dirs/x.jsonl",
    "evaluate caption --model {C} --data {F}/missing.jsonl",
    "evaluate caption --model {C} --data {F}/ok.jsonl --out {F}/notes.txt",
    "evaluate captions --results {F}/nope.json --annotations {F}/nope.json",
    "evaluate captions --results {F}/dirs/x.json --annotations {F}/dirs/x.json",
    "evaluate captions --results {F}/garbage.json --annotations {F}/garbage.json",
    "evaluate retrieval --model {C} --data {F}/ok.jsonl",
    "evaluate retrieval --model {R} --data {F}/ok.jsonl --gallery-size 0",
    "evaluate vqa --model {C} --data {F}/ok.jsonl",
    "evaluate classify --model {T}/nope --data {F}/ok.jsonl",
    "experiment fusion --fusions nosuch --out {T}/exp",
    "experiment fusion --data {F}/ok.jsonl --out {F}/notes.txt",
    "index build --model {R} --images {T}/nope -o {T}/ix",
    "index build --model {R} --images {F}/red.png -o {T}/ix",
    "index build --model {R} --texts {F}/notes.txt -o {F}/notes.txt",
    "index build --model {R} --texts {F}/dirs/x.jsonl -o {T}/ix",
    "index build --model {R} --texts {F}/latin1.txt -o {T}/ix",
    "index build --model {R} --texts {F}/notes.txt -o {T}/ix --batch-size 0",
    "index build --model {R} --texts {F}/notes.txt -o {T}/ix --kind ivf --nlist 0",
    "index build --model {T}/nope --texts {F}/notes.txt -o {T}/ix",
    "index info {T}/nope",
    "index info {F}/dirs/x.json",
    "search red --index {T}/nope",
    "search red --texts {F}/dirs/x.jsonl --model {R}",
    "search red --texts {F}/notes.txt",
    "search red --texts {F}/notes.txt --model {R} -k 0",
    "search --image {F}/dirs/x.json --texts {F}/notes.txt --model {R}",
    "search red --texts {F}/notes.txt --model {R} --sheet {F}/dirs/out.png",
]

#: Count options below 1 (once gaps: --beam 0 ran, --limit -1 left the last image out, --batch-size 0 crashed).
COUNTS = [
    "evaluate caption --model {C} --data {F}/ok.jsonl --beam 0",
    "evaluate caption --model {C} --data {F}/ok.jsonl --limit -1",
    "evaluate retrieval --model {R} --data {F}/ok.jsonl --batch-size 0",
    "evaluate retrieval --model {R} --data {F}/ok.jsonl --limit 0",
]

#: Rows argparse refuses: exit 2, its usage line and a ``vislang ...: error:`` line, no traceback.
BAD_ARGS = [
    "", "nosuch", "data", "data list extra", "data prepare", "models a b", "train", "train nosuch",
    "train caption", "train caption --out {T}/r --epochs abc", "train retrieval --out {T}/r --logger nosuch",
    "caption", "caption {F}/red.png", "caption {F}/red.png --model {C} --max-len abc",
    "caption {F}/red.png --model {C} --checkpoint middle", "ask {F}/red.png", "classify {F}/red.png --top-k x",
    "evaluate", "evaluate caption --data x", "evaluate captions --results x", "demo --limit abc",
    "experiment fusion", "index", "index build --model {R} -o {T}/ix", "index build --model {R} --images a --texts b -o x",
    "index info", "search red", "search red --index a --texts b", "search red --index a -k many",
]


@pytest.fixture
def table_paths(files, caption_run, retrieval_run, data_root, tmp_path):
    return {"F": str(files), "T": str(tmp_path), "C": str(caption_run), "R": str(retrieval_run),
            "D": str(data_root)}


def _argv(row: str, paths: dict[str, str]) -> list[str]:
    return row.format(**paths).split()


@pytest.mark.parametrize("row", BAD_RUNS + COUNTS)
def test_every_bad_run_is_one_error_line(row, table_paths, capsys):
    rc, err = run_cli(_argv(row, table_paths), capsys)
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err, (row, rc, err)


@pytest.mark.parametrize("row", BAD_ARGS)
def test_every_bad_argument_is_a_usage_error(row, table_paths, capsys):
    rc, err = run_cli(_argv(row, table_paths), capsys)
    assert rc == 2 and "Traceback" not in err, (row, rc, err)
    assert err.startswith("usage: vislang") and re.search(r"^vislang[\w ]*: error: ", err, re.M), (row, err)


@pytest.mark.parametrize("argv, env, needle", [
    (["data", "info", "{F}/dirs/x.jsonl"], {}, "x.jsonl: is a directory"),
    (["data", "check", "{F}/ok.jsonl"], {"VISLANG_MAX_IMAGE_PIXELS": "abc"}, "$VISLANG_MAX_IMAGE_PIXELS"),
    (["evaluate", "captions", "--results", "{F}/dirs/x.json", "--annotations", "{F}/dirs/x.json"], {},
     "x.json: Is a directory"),
])
def test_a_real_process_prints_one_line_and_no_traceback(argv, env, needle, files):
    argv = [a.format(F=files) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "vislang", *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "VISLANG_QUIET": "1", **env})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
