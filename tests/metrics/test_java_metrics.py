"""METEOR and SPICE: the official jars when Java and the jars are present, "unavailable" otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from vislang.metrics import evaluate_captions, java_metrics, tokenize_caption_sets


@pytest.fixture
def no_java(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A PATH without java on it."""
    monkeypatch.setenv("PATH", str(tmp_path))


def test_reports_unavailable_without_java(no_java: None) -> None:
    assert "Java is not installed" in java_metrics.meteor_unavailable_reason()
    assert "Java is not installed" in java_metrics.spice_unavailable_reason()
    scores = evaluate_captions({1: ["a dog runs"]}, {1: "a dog"})
    assert set(scores.unavailable) == {"METEOR", "SPICE"}
    assert "METEOR" not in scores.corpus and "SPICE" not in scores.corpus  # never replaced by another METEOR
    assert scores.corpus["BLEU-1"] > 0


def test_meteor_raises_clearly_without_java(no_java: None) -> None:
    from vislang.errors import ExternalToolError

    with pytest.raises(ExternalToolError, match="METEOR unavailable: Java is not installed"):
        java_metrics.meteor({1: ["a dog"]}, {1: ["a dog"]})


def test_disabled_java_is_reported() -> None:
    scores = evaluate_captions({1: ["a dog runs"]}, {1: "a dog"}, use_java=False)
    assert scores.unavailable == {"METEOR": "disabled (--no-java)", "SPICE": "disabled (--no-java)"}


def test_spice_never_downloads(java: str) -> None:
    jar = java_metrics.find_spice_jar()
    if jar is None or java_metrics.spice_unavailable_reason() is None:
        pytest.skip("needs spice-1.0.jar without the Stanford CoreNLP jars (pycocoevalcap before first SPICE use)")
    from vislang.errors import ExternalToolError

    before = sorted(p.name for p in (jar.parent / "lib").iterdir())
    with pytest.raises(ExternalToolError, match="vislang does not download them"):
        java_metrics.spice({1: ["a dog runs"]}, {1: ["a dog"]})
    assert sorted(p.name for p in (jar.parent / "lib").iterdir()) == before


@pytest.mark.slow
def test_meteor_matches_pycocoevalcap(java: str, real_references, real_candidates) -> None:
    meteor_module = pytest.importorskip("pycocoevalcap.meteor.meteor")
    if java_metrics.meteor_unavailable_reason():
        pytest.skip(java_metrics.meteor_unavailable_reason())
    ids = list(real_references)[:80]
    gts, res = tokenize_caption_sets({i: real_references[i] for i in ids}, {i: real_candidates[i] for i in ids})
    ours = java_metrics.meteor(gts, res)
    corpus, per_image = meteor_module.Meteor().compute_score(gts, res)
    assert abs(ours.corpus - corpus) <= 1e-9
    np.testing.assert_allclose(ours.per_image, per_image, rtol=0, atol=1e-9)
