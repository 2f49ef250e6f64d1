"""Retrieval recall and ranks on small hand-worked similarity matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vislang.errors import DataError
from vislang.metrics import retrieval_scores, retrieval_scores_from_similarity


def test_several_captions_per_image() -> None:
    # 3 images, 5 captions: captions 0, 1 describe image 0; 2 image 1; 3, 4 image 2.
    text_image = [0, 0, 1, 2, 2]
    similarity = np.array([  # [image, text]
        [0.9, 0.1, 0.3, 0.2, 0.0],
        [0.2, 0.8, 0.4, 0.1, 0.3],
        [0.1, 0.7, 0.5, 0.6, 0.2],
    ])
    scores = retrieval_scores_from_similarity(similarity, text_image, ks=(1, 2))
    # Text -> image: caption 0 ranks image 0 first; caption 1: 0.8, 0.7 above 0.1 -> rank 3;
    # caption 2: image 1 scores 0.4 below 0.5 -> rank 2; caption 3: 0.6 best -> 1; caption 4: 0.2 below 0.3 -> 2.
    assert scores.text_ranks.tolist() == [1, 3, 2, 1, 2]
    # Image -> text: image 0's best own caption is caption 0 (0.9) -> 1; image 1's only caption scores 0.4,
    # below 0.8 -> 2; image 2's best own caption scores 0.6, below 0.7 -> 2.
    assert scores.image_ranks.tolist() == [1, 2, 2]
    assert scores.text_to_image == {"R@1": 0.4, "R@2": 0.8, "median_rank": 2.0, "mean_rank": 1.8}
    assert scores.image_to_text["R@1"] == pytest.approx(1 / 3)
    assert scores.image_to_text["R@2"] == 1.0
    assert scores.image_to_text["median_rank"] == 2.0


def test_embeddings_numpy_and_torch_agree() -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(20, 8)).astype(np.float32)
    texts = np.repeat(images, 2, axis=0) + 0.05 * rng.normal(size=(40, 8)).astype(np.float32)
    text_image = np.repeat(np.arange(20), 2)
    a = retrieval_scores(images, texts, text_image)
    b = retrieval_scores(torch.from_numpy(images), torch.from_numpy(texts), torch.from_numpy(text_image).numpy())
    assert a.as_dict() == b.as_dict()
    assert a.image_to_text["R@1"] == 1.0 and a.text_to_image["R@10"] == 1.0


def test_ties_count_for_the_query() -> None:
    scores = retrieval_scores_from_similarity(np.ones((3, 3)), [0, 1, 2])
    assert scores.text_ranks.tolist() == [1, 1, 1]


@pytest.mark.parametrize(("similarity", "text_image", "message"), [
    (np.zeros((2, 3)), [0, 1], "one image index per text"),
    (np.zeros((2, 2)), [0, 2], r"must lie in \[0, 2\)"),
    (np.zeros((3, 2)), [0, 1], "1 images have no text"),
    (np.zeros(4), [0], "2-D"),
])
def test_errors(similarity, text_image, message: str) -> None:
    with pytest.raises(DataError, match=message):
        retrieval_scores_from_similarity(similarity, text_image)
