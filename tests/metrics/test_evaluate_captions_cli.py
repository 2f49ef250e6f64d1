"""``vislang evaluate captions`` on COCO-format files, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vislang.cli import main
from vislang.metrics import evaluate_caption_files, load_coco_annotations


def write_files(tmp_path: Path, results: list[dict], annotations: list[dict], images: list[int] | None = None
                ) -> tuple[Path, Path]:
    ann = {"annotations": [{"id": i, **a} for i, a in enumerate(annotations)]}
    if images is not None:
        ann["images"] = [{"id": i} for i in images]
    (tmp_path / "captions.json").write_text(json.dumps(ann))
    (tmp_path / "results.json").write_text(json.dumps(results))
    return tmp_path / "results.json", tmp_path / "captions.json"


ANNOTATIONS = [
    {"image_id": 2, "caption": "Two dogs play with a frisbee in the park."},
    {"image_id": 1, "caption": "A man riding a wave on top of a surfboard."},
    {"image_id": 1, "caption": "A surfer rides a large wave."},
    {"image_id": 2, "caption": "The dogs don't want to share."},
]
RESULTS = [{"image_id": 1, "caption": "a man surfing a wave"}, {"image_id": 2, "caption": ""}]


def test_scores_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, annotations = write_files(tmp_path, RESULTS, ANNOTATIONS)
    out = tmp_path / "scores.json"
    code = main(["evaluate", "captions", "--results", str(results), "--annotations", str(annotations),
                 "--out", str(out), "--no-java"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "CIDEr-D" in printed and "METEOR unavailable: disabled (--no-java)" in printed
    scores = json.loads(out.read_text())
    assert scores["num_images"] == 2
    assert set(scores["corpus"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}
    by_id = {e["image_id"]: e for e in scores["per_image"]}
    assert by_id[2]["BLEU-1"] < 1e-5 and by_id[2]["CIDEr-D"] == 0.0  # the empty caption is scored, not dropped
    assert by_id[1]["ROUGE-L"] > 0.5


def test_default_output_path(tmp_path: Path) -> None:
    results, annotations = write_files(tmp_path, RESULTS, ANNOTATIONS)
    assert main(["evaluate", "captions", "--results", str(results), "--annotations", str(annotations),
                 "--no-java"]) == 0
    assert (tmp_path / "results.scores.json").is_file()


def test_matches_pycocoevalcap_numbers(tmp_path: Path, real_references, real_candidates) -> None:
    pycoco = pytest.importorskip("pycocoevalcap.cider.cider", reason="pycocoevalcap (a dev dependency) is the reference")
    from vislang.metrics import tokenize_caption_sets

    annotations = [{"image_id": i, "caption": c} for i, refs in real_references.items() for c in refs]
    results = [{"image_id": i, "caption": c} for i, c in real_candidates.items()]
    results_path, annotations_path = write_files(tmp_path, results, annotations)
    scores = evaluate_caption_files(results_path, annotations_path, use_java=False)
    gts, res = tokenize_caption_sets(real_references, real_candidates)
    assert abs(scores.corpus["CIDEr-D"] - pycoco.Cider().compute_score(gts, res)[0]) <= 1e-9


def test_image_order_follows_the_images_list(tmp_path: Path) -> None:
    results, annotations = write_files(tmp_path, RESULTS, ANNOTATIONS, images=[1, 2])
    assert list(load_coco_annotations(annotations)) == [1, 2]
    results, annotations = write_files(tmp_path, RESULTS, ANNOTATIONS)
    assert list(load_coco_annotations(annotations)) == [2, 1]


@pytest.mark.parametrize(("results", "message"), [
    ([{"image_id": 1, "caption": "a"}], "1 image ids with reference captions have no result: 2"),
    ([*RESULTS, {"image_id": 7, "caption": "x"}, {"image_id": 8, "caption": "y"}],
     "2 image ids of the results have no reference caption: 7, 8"),
    ([*RESULTS, {"image_id": 1, "caption": "again"}], "1 image ids have more than one result: 1"),
    ([{"image_id": 1}], "entry 0: field 'caption': missing"),
    ([{"image_id": 1, "caption": 5}], "entry 0: field 'caption': must be a string"),
    ({"image_id": 1}, "not a COCO results file"),
])
def test_bad_results_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str], results, message: str) -> None:
    results_path, annotations = write_files(tmp_path, results, ANNOTATIONS)
    code = main(["evaluate", "captions", "--results", str(results_path), "--annotations", str(annotations),
                 "--no-java"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_unreadable_files_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, annotations = write_files(tmp_path, RESULTS, ANNOTATIONS)
    annotations.write_text("{not json")
    assert main(["evaluate", "captions", "--results", str(results), "--annotations", str(annotations)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["evaluate", "captions", "--results", str(tmp_path / "missing.json"),
                 "--annotations", str(annotations)]) == 2
    assert "missing.json: file not found" in capsys.readouterr().err
