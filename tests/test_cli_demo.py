"""``vislang demo``: data only, and the whole pipeline with a tiny recipe (real data, real report)."""

from __future__ import annotations

import json

import pytest

from vislang.cli import main

PLAIN = ["--set", "data.name=emoji", "--set", "data.val_split=val"]  # the default data: no extra styles to build
TINY = [*PLAIN, "--set", "model=caption_rag_tiny", "--set", "model_kwargs={}", "--set", "train.max_steps=3",
        "--set", "data.max_val=16", "--set", "data.transform.image_size=32",
        "--limit", "12", "--search-set", "data.name=emoji", "--search-set", "data.val_split=val",
        "--search-set", "train.max_steps=2", "--search-set", "data.max_train=32",
        "--search-set", "data.max_val=16", "--search-set", "task.text_bank=false"]


def test_demo_data_only(data_root, capsys):
    assert main(["demo", "--root", str(data_root), "--data-only", *PLAIN]) == 0
    out = capsys.readouterr().out
    for split in ("train", "val", "test_seen_concepts_new_style", "test_new_concepts"):
        assert split in out
    assert "CC-BY-4.0" in out and "data ready" in out


def test_demo_pipeline_with_a_tiny_recipe(data_root, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--root", str(data_root), "--out", str(out), *TINY]) == 0
    text = capsys.readouterr().out
    for split in ("emoji [test_seen_concepts_new_style]", "emoji [test_new_concepts]", "tuxpaint [test]"):
        assert split in text
    assert "nearest training image" in text and "most frequent caption" in text
    page = (out / "report.html").read_text()
    assert "<table>" in page and "curves.png" in page and page.count('class="card"') == 3 * 6
    assert len(list((out / "report_files").glob("*_attention.png"))) == 18
    # the search model judged the captions
    assert text.count("judged by the search model") == 3
    scores = json.loads((out / "eval" / "emoji_test_new_concepts" / "scores.json").read_text())
    assert str(out / "search") in scores["judge"] and "its memory of" in scores["judge"]
    assert (out / "search" / "checkpoints" / "best" / "judge_memory.safetensors").is_file()
    assert set(scores["corpus"]) == {"model", "nearest training image", "nearest training image (judge)",
                                     "most frequent caption"}
    # it ends with the one command that serves the captioner, judged, with an index of the test images, which loads
    assert text.rstrip().splitlines()[-1].strip() == (f"vislang serve {out} --index {out / 'search.index'} "
                                                      f"--judge {out / 'search'}")
    from vislang.serve import load_service

    service = load_service([out], out / "search.index", judge=out / "search")
    assert sorted(m.task for m in service.models.values()) == ["caption", "retrieval"]
    assert next(m for m in service.models.values() if m.task == "caption").predictor.judge is not None
    assert len(service.index) == 24 and service.index.search_text("a red heart", k=3)


@pytest.mark.slow
def test_full_demo(data_root, tmp_path, capsys):
    """The README's main job with its real recipe (several minutes on 2 CPU cores)."""
    assert main(["demo", "--root", str(data_root), "--out", str(tmp_path / "demo")]) == 0
    assert (tmp_path / "demo" / "report.html").is_file()
    text = capsys.readouterr().out
    assert text.count("most frequent caption") == 4  # OpenMoji, new concepts, the validation style, Tux Paint
    with capsys.disabled():  # the metric tables in CI's log: the README's results come from this job
        print("\n" + text[text.index("trained "):])
