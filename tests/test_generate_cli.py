"""``vislang generate`` on the real tiny generator (``generate_run``): the grid and per-sample files, seeds and
byte-identical reruns, ``--json``, ``--explain``, ``--prompts-file``, warnings and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from vislang.cli import main

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: one thread is fastest

PROMPTS = ["a small red circle", "a big blue square at the left"]
LONG = " ".join(["a red circle"] * 15)  # 45 words + 2 specials: over the model's 32 tokens


def generate(run: Path, out: Path, *args: str) -> int:
    return main(["generate", "--model", str(run), "--steps", "2", "-o", str(out), *args])


def one_line_error(capsys, needle: str) -> None:
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert needle in captured.err and "Traceback" not in captured.err
    assert captured.out == ""


def test_grid_and_samples_are_written_and_match_the_api(generate_run: Path, tmp_path: Path, capsys):
    from vislang.inference.generate import GeneratePredictor
    from vislang.viz.token_maps import grid_size

    out = tmp_path / "out.png"
    assert generate(generate_run, out, *PROMPTS, "-n", "3", "--seed", "4") == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    names = [f"out_{i}_{k}.png" for i in (1, 2) for k in (1, 2, 3)]
    assert lines == [[str(tmp_path / name), str(4 + j), PROMPTS[j // 3]] for j, name in enumerate(names)]
    with Image.open(out) as grid:
        assert grid.format == "PNG" and grid.size == grid_size(2, 3, 16)
    api = GeneratePredictor.load(generate_run).generate(PROMPTS, n=3, steps=2, seed=4, warn=False)
    for name, g in zip(names, api):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size == (16, 16) and im.mode == "RGB"
            assert im.tobytes() == g.image.tobytes(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.png", *names])  # no temporary left


def test_the_same_command_writes_the_same_bytes(generate_run: Path, tmp_path: Path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        assert generate(generate_run, tmp_path / folder / "g.png", PROMPTS[0], "-n", "2", "--seed", "9",
                        "--sampler", "dpm", "--explain", str(tmp_path / folder / "why.png")) == 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["g.png", "g_1_1.png", "g_1_2.png", "why.png"]
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # a sample drawn alone from its seed is the same picture (to a grey level: batches may round differently)
    assert generate(generate_run, tmp_path / "alone.png", PROMPTS[0], "-n", "1", "--seed", "10",
                    "--sampler", "dpm") == 0
    with Image.open(tmp_path / "alone_1_1.png") as a, Image.open(tmp_path / "a" / "g_1_2.png") as b:
        assert max(abs(x - y) for x, y in zip(a.tobytes(), b.tobytes())) <= 1


def test_json_lines_and_an_overlong_prompt_warning(generate_run: Path, tmp_path: Path, capsys):
    assert generate(generate_run, tmp_path / "j.png", PROMPTS[0], LONG, "-n", "2", "--json") == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [(r["prompt_index"], r["sample"], r["seed"]) for r in rows] == [(1, 1, 0), (1, 2, 1), (2, 1, 2), (2, 2, 3)]
    assert rows[0]["path"] == str(tmp_path / "j_1_1.png") and rows[3]["prompt"] == LONG
    assert "warning" not in rows[0] and "47 tokens long" in rows[2]["warning"]
    assert captured.err == "warning: prompt 2 is 47 tokens long; only its first 32 are read (the model's longest " \
                           "caption)\n"
    assert all(Path(r["path"]).is_file() for r in rows)


def test_explain_writes_the_token_figure(generate_run: Path, tmp_path: Path, capsys):
    from vislang.viz.token_maps import LABEL_H, TITLE_H

    fig = tmp_path / "why.png"
    assert generate(generate_run, tmp_path / "e.png", PROMPTS[1], PROMPTS[0], "-n", "1", "--explain", str(fig)) == 0
    panels = 1 + len(PROMPTS[1].split()) + 2                       # the image, each word, [start] and [end]
    with Image.open(fig) as im:
        assert im.format == "PNG" and im.size == (6 * 128, TITLE_H + -(-panels // 6) * (128 + LABEL_H))
    capsys.readouterr()
    assert generate(generate_run, tmp_path / "e.png", PROMPTS[0], "--explain", str(tmp_path / "no" / "w.png")) == 2
    one_line_error(capsys, "--explain")
    assert generate(generate_run, tmp_path / "e.png", PROMPTS[0], "--explain", str(tmp_path / "e_1_2.png")) == 2
    one_line_error(capsys, "is also a file of -o")


def test_prompts_file(generate_run: Path, tmp_path: Path, capsys):
    good = tmp_path / "prompts.txt"
    good.write_text(f"{PROMPTS[1]}\n\n   \n{PROMPTS[0]}\n", encoding="utf-8")
    assert generate(generate_run, tmp_path / "f.png", "a green diamond", "--prompts-file", str(good), "-n", "1") == 0
    assert [line.split("\t")[2] for line in capsys.readouterr().out.splitlines()] == ["a green diamond", PROMPTS[1], PROMPTS[0]]
    assert (tmp_path / "f_3_1.png").is_file() and not (tmp_path / "f_4_1.png").exists()
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{PROMPTS[0]}\n\n?!...\n", encoding="utf-8")
    assert generate(generate_run, tmp_path / "g.png", "--prompts-file", str(bad)) == 2
    one_line_error(capsys, f"{bad}:3 ('?!...') has no word the model reads")
    bad.write_bytes(b"a red circle\n\xff\xfe broken\n")
    assert generate(generate_run, tmp_path / "g.png", "--prompts-file", str(bad)) == 2
    one_line_error(capsys, "line 2")
    bad.write_text("\n  \n", encoding="utf-8")
    assert generate(generate_run, tmp_path / "g.png", "--prompts-file", str(bad)) == 2
    one_line_error(capsys, "no prompts")
    assert generate(generate_run, tmp_path / "g.png", "--prompts-file", str(tmp_path / "missing.txt")) == 2
    one_line_error(capsys, "missing.txt")
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "g_1_1.png").exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["", "-n", "1"], "prompt 1 is empty"),
    ([PROMPTS[0], "  "], "prompt 2 is empty"),
    ([], "no prompt: give one or more texts, or --prompts-file"),
    ([PROMPTS[0], "-n", "0"], "-n must be at least 1, got 0"),
    ([PROMPTS[0], "--steps", "0"], "--steps must be at least 1"),
    ([PROMPTS[0], "--guidance", "51"], "--guidance must be in [0, 50]"),
    ([PROMPTS[0], "--guidance", "nan"], "--guidance must be in [0, 50]"),
    ([PROMPTS[0], "--batch-size", "0"], "--batch-size must be at least 1"),
    ([PROMPTS[0], "--seed", "-1"], "--seed must be in"),
    ([PROMPTS[0], PROMPTS[1], "-n", "129"], "258 images; at most 256"),
    (["!!!"], "prompt 1 ('!!!') has no word the model reads"),
])
def test_bad_prompts_and_options_are_one_line_errors(generate_run: Path, tmp_path: Path, capsys, args, needle):
    assert generate(generate_run, tmp_path / "x.png", *args) == 2
    one_line_error(capsys, needle)
    assert list(tmp_path.iterdir()) == []


def test_bad_outputs_and_runs_are_one_line_errors(generate_run: Path, tmp_path: Path, capsys):
    assert generate(generate_run, tmp_path / "x.jpg", PROMPTS[0]) == 2
    one_line_error(capsys, "end the name with .png")
    assert generate(generate_run, tmp_path / "nowhere" / "x.png", PROMPTS[0]) == 2
    one_line_error(capsys, "does not exist")
    assert generate(tmp_path / "no-run", tmp_path / "x.png", PROMPTS[0]) == 2
    one_line_error(capsys, "no-run")
    other = shutil.copytree(generate_run / "checkpoints" / "best", tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "task": "caption"}))
    assert generate(other, tmp_path / "x.png", PROMPTS[0]) == 2
    one_line_error(capsys, "not a generate model (task: 'caption')")
    with pytest.raises(SystemExit) as e:
        generate(generate_run, tmp_path / "x.png", PROMPTS[0], "--sampler", "euler")
    assert e.value.code == 2 and "invalid choice: 'euler'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]


def test_help_says_where_the_samples_go(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "OUT_<prompt>_<sample>.png" in text and "out.png -> out_1_1.png" in text and "--prompts-file" in text
