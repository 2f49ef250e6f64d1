"""BLEU-1..4, ROUGE-L and CIDEr-D against pycocoevalcap's scorers, corpus and per image, within 1e-9."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vislang.metrics import Bleu, Cider, Rouge, SharedScorers, tokenize_caption_sets

pycoco_bleu = pytest.importorskip("pycocoevalcap.bleu.bleu", reason="pycocoevalcap (a dev dependency) is the reference")
pycoco_rouge = pytest.importorskip("pycocoevalcap.rouge.rouge")
pycoco_cider = pytest.importorskip("pycocoevalcap.cider.cider")

TOLERANCE = 1e-9


def reference_scores(gts: dict, res: dict) -> dict:
    scores = {
        "bleu": pycoco_bleu.Bleu(4).compute_score(gts, res, verbose=0),
        "rouge": pycoco_rouge.Rouge().compute_score(gts, res),
    }
    if any(r.split() for refs in gts.values() for r in refs):
        scores["cider"] = pycoco_cider.Cider().compute_score(gts, res)
    else:  # pycocoevalcap's CIDEr fails (max() of no document frequency) when no reference has a word
        scores["cider"] = (0.0, np.zeros(len(gts)))
    return scores


def assert_same_scores(gts: dict, res: dict) -> None:
    expected = reference_scores(gts, res)
    bleu, bleu_images = Bleu(4).compute_score(gts, res)
    np.testing.assert_allclose(bleu, expected["bleu"][0], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(np.array(bleu_images), np.array(expected["bleu"][1]), rtol=0, atol=TOLERANCE)
    for name, scorer in (("rouge", Rouge()), ("cider", Cider())):
        corpus, per_image = scorer.compute_score(gts, res)
        assert abs(corpus - expected[name][0]) <= TOLERANCE, name
        np.testing.assert_allclose(per_image, expected[name][1], rtol=0, atol=TOLERANCE, err_msg=name)


def test_real_corpus(real_references, real_candidates) -> None:
    # Tokenised with vislang's tokenizer (identical to the jar's, see test_ptb_tokenizer.py).
    gts, res = tokenize_caption_sets(real_references, real_candidates)
    assert_same_scores(gts, res)


def test_shared_scorers_agree_with_separate_ones(real_references, real_candidates) -> None:
    gts, res = tokenize_caption_sets(real_references, real_candidates)
    shared = SharedScorers()
    assert shared.bleu.compute_score(gts, res) == Bleu(4).compute_score(gts, res)
    assert shared.cider.compute_score(gts, res)[0] == Cider().compute_score(gts, res)[0]
    assert shared.rouge.compute_score(gts, res)[0] == Rouge().compute_score(gts, res)[0]


def test_hand_worked_bleu() -> None:
    # One image: candidate "a b c" against reference "a b d": 2 of 3 unigrams, 1 of 2 bigrams match,
    # no trigram; same lengths, so no brevity penalty.
    corpus, per_image = Bleu(2).compute_score({0: ["a b d"]}, {0: ["a b c"]})
    assert corpus[0] == pytest.approx(2 / 3)
    assert corpus[1] == pytest.approx((2 / 3 * 1 / 2) ** 0.5)
    assert per_image[0][0] == pytest.approx(2 / 3)


def test_single_image_cider_is_zero() -> None:
    # With one image every reference n-gram has document frequency 1 = N, so every weight is 0.
    corpus, per_image = Cider().compute_score({0: ["a dog runs", "a dog"]}, {0: ["a dog runs"]})
    assert corpus == 0.0 and per_image.tolist() == [0.0]


def test_mismatched_ids_are_an_error() -> None:
    from vislang.errors import DataError

    with pytest.raises(DataError, match="different images"):
        Bleu().compute_score({0: ["a"], 1: ["b"]}, {0: ["a"], 2: ["b"]})
    with pytest.raises(DataError, match="exactly one candidate"):
        Rouge().compute_score({0: ["a"]}, {0: ["a", "b"]})
    with pytest.raises(DataError, match="at least one reference"):
        Cider().compute_score({0: []}, {0: ["a"]})
    with pytest.raises(DataError, match="no images"):
        Bleu().compute_score({}, {})


# ---------------------------------------------------------------------------------------------------
# Property-based: random tokenised sets, including empty captions, repeated words, long captions (over
# 64 words, the ROUGE-L bit-parallel word size) and irregular spacing that str.split() and str.split(" ")
# treat differently.

WORDS = ["a", "the", "dog", "cat", "on", "of", "red", "big", "man", "runs", "x", "'s", "n't", "-lrb-",
         "1/2", "caf\u00e9", "\u00a0", ""]
regular = st.lists(st.sampled_from(WORDS[:-2]), max_size=14).map(" ".join)
long_caption = st.lists(st.sampled_from(WORDS[:6]), min_size=60, max_size=80).map(" ".join)
irregular = st.lists(st.sampled_from(WORDS), max_size=10).map(lambda ws: " ".join(ws))
sentence = st.one_of(regular, regular, irregular, long_caption)


@st.composite
def caption_sets(draw: st.DrawFn) -> tuple[dict, dict]:
    num_images = draw(st.integers(min_value=1, max_value=12))
    gts = {i: draw(st.lists(sentence, min_size=1, max_size=6)) for i in range(num_images)}
    res = {i: [draw(sentence)] for i in range(num_images)}
    return gts, res


@settings(max_examples=80, deadline=None)
@given(caption_sets())
def test_random_sets_match_pycocoevalcap(sets: tuple[dict, dict]) -> None:
    assert_same_scores(*sets)
