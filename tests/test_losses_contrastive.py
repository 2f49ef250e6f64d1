"""The symmetric InfoNCE loss of the dual encoders, with same-group pairs masked out of the softmax."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vislang.losses import ContrastiveLoss, TextBankContrastiveLoss


def _embeddings(b: int = 4, e: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(b, e, generator=g), dim=-1),
            F.normalize(torch.randn(b, e, generator=g), dim=-1))


def test_all_distinct_groups_is_plain_infonce():
    images, texts = _embeddings()
    scale = torch.tensor(10.0)
    logits = scale * images @ texts.T
    target = torch.arange(4)
    plain = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    loss = ContrastiveLoss()
    out = loss(images, texts, scale)
    assert out["loss"].item() == pytest.approx(plain.item(), rel=1e-6)
    assert loss(images, texts, scale, torch.tensor([7, 3, 5, 1]))["loss"].item() == pytest.approx(plain.item(),
                                                                                                  rel=1e-6)
    assert out["logit_scale"].item() == 10.0 and out["masked"].item() == 0.0


def test_same_group_pairs_are_not_negatives_by_hand():
    # 3 pairs; pairs 0 and 2 show the same concept, so text 2 is no negative of image 0 and vice versa
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    texts = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    s = 2.0
    sim = [[s * sum(a * b for a, b in zip(i, t)) for t in texts.tolist()] for i in images.tolist()]

    def nll(row: list[float], keep: list[int], target: int) -> float:
        return -(row[target] - math.log(sum(math.exp(row[j]) for j in keep)))

    i2t = [nll(sim[0], [0, 1], 0), nll(sim[1], [0, 1, 2], 1), nll(sim[2], [1, 2], 2)]
    cols = [[sim[i][j] for i in range(3)] for j in range(3)]
    t2i = [nll(cols[0], [0, 1], 0), nll(cols[1], [0, 1, 2], 1), nll(cols[2], [1, 2], 2)]
    out = ContrastiveLoss()(images, texts, torch.tensor(s), torch.tensor([5, 9, 5]))
    assert out["i2t"].item() == pytest.approx(sum(i2t) / 3, rel=1e-6)
    assert out["t2i"].item() == pytest.approx(sum(t2i) / 3, rel=1e-6)
    assert out["loss"].item() == pytest.approx((sum(i2t) + sum(t2i)) / 6, rel=1e-6)
    assert out["masked"].item() == pytest.approx(2 / 6)
    unmasked = ContrastiveLoss()(images, texts, torch.tensor(s))
    assert unmasked["loss"].item() > out["loss"].item()  # the removed negatives only added to the loss


def test_gradients_flow_to_both_towers_and_the_temperature():
    images, texts = _embeddings(b=5, seed=1)
    images.requires_grad_(True)
    texts.requires_grad_(True)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    out = ContrastiveLoss()(images, texts, log_scale.exp(), torch.tensor([0, 1, 0, 2, 3]))
    out["loss"].backward()
    for grad in (images.grad, texts.grad, log_scale.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_perfect_matches_give_full_accuracy_and_low_loss():
    images = torch.eye(4)
    out = ContrastiveLoss()(images, images.clone(), torch.tensor(100.0), torch.tensor([0, 0, 1, 1]))
    assert out["accuracy"].item() == 1.0 and out["loss"].item() < 1e-6
    with pytest.raises(ValueError, match="group_ids must have shape"):
        ContrastiveLoss()(images, images, torch.tensor(1.0), torch.tensor([0, 1]))


def test_text_bank_loss_ranks_each_image_over_the_whole_bank_by_hand():
    # 2 images; bank of 4 texts: image 0's caption is bank text 2, image 1's is 0; bank text 3 belongs to
    # image 0's group (another caption of its concept), so it is no negative of image 0
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    bank = torch.tensor([[0.0, 1.0], [0.8, 0.6], [0.6, 0.8], [1.0, 0.0]])
    s = 3.0
    masked = torch.tensor([[False, False, False, True], [False, False, False, False]])
    out = TextBankContrastiveLoss()(images, texts, torch.tensor(s), None, bank, torch.tensor([2, 0]), masked)

    def nll(row: list[float], keep: list[int], target: int) -> float:
        return -(row[target] - math.log(sum(math.exp(row[j]) for j in keep)))

    sim = (s * images @ bank.T).tolist()
    i2t = (nll(sim[0], [0, 1, 2], 2) + nll(sim[1], [0, 1, 2, 3], 0)) / 2
    batch = ContrastiveLoss()(images, texts, torch.tensor(s))
    assert out["i2t"].item() == pytest.approx(i2t, rel=1e-6)
    assert out["t2i"].item() == pytest.approx(batch["t2i"].item(), rel=1e-6)   # text->image stays in-batch
    assert out["loss"].item() == pytest.approx((i2t + batch["t2i"].item()) / 2, rel=1e-6)
    assert out["accuracy"].item() == 0.5  # image 0's best bank text is 1 (0.8 > 0.6), image 1's is 0


def test_text_bank_loss_gradients_reach_images_texts_bank_and_temperature():
    images, texts = _embeddings(b=3, seed=2)
    bank = F.normalize(torch.randn(6, 8), dim=-1)
    for t in (images, texts, bank):
        t.requires_grad_(True)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    masked = torch.zeros(3, 6, dtype=torch.bool)
    masked[0, 5] = True
    out = TextBankContrastiveLoss()(images, texts, log_scale.exp(), torch.tensor([0, 1, 0]), bank,
                                    torch.tensor([4, 1, 2]), masked)
    out["loss"].backward()
    for grad in (images.grad, texts.grad, bank.grad, log_scale.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
