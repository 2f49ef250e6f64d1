"""Parameter groups (weight decay, encoder lr, freezing) and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vislang.errors import VislangError
from vislang.train.optim import WarmupCosine, build_optimizer, build_scheduler, param_groups, warmup_steps


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.image_encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.embed = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.scale = nn.Parameter(torch.ones(()))  # a learned temperature
        self.head = nn.Linear(4, 10)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.embed.weight  # tied


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_no_weight_decay_on_biases_norms_and_1d():
    model = Net()
    groups, summary = param_groups(model, lr=1e-3, weight_decay=0.1)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"model", "model_no_decay"}
    assert _names(model, by_name["model"]) == {"image_encoder.0.weight", "embed.weight", "head.weight"}
    assert _names(model, by_name["model_no_decay"]) == {
        "image_encoder.0.bias", "image_encoder.1.weight", "image_encoder.1.bias", "norm.weight", "norm.bias",
        "scale", "head.bias"}
    assert by_name["model"]["weight_decay"] == 0.1 and by_name["model_no_decay"]["weight_decay"] == 0.0
    n_unique = len(list(model.parameters()))  # the tied weight is listed once
    assert summary.decay + summary.no_decay == n_unique and summary.frozen == 0
    assert summary.trainable_params == sum(p.numel() for p in model.parameters())


def test_encoder_lr_and_freezing():
    model = Net()
    groups, _ = param_groups(model, lr=1e-3, weight_decay=0.1, encoder_lr=1e-5)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {"model": 1e-3, "model_no_decay": 1e-3, "encoder": 1e-5, "encoder_no_decay": 1e-5}
    assert _names(model, next(g for g in groups if g["name"] == "encoder")) == {"image_encoder.0.weight"}

    frozen = Net()
    groups, summary = param_groups(frozen, lr=1e-3, weight_decay=0.1, freeze_encoder=True)
    assert {g["name"] for g in groups} == {"model", "model_no_decay"}
    assert summary.frozen == 4 and not any(p.requires_grad for p in frozen.image_encoder.parameters())

    with pytest.raises(VislangError, match="no 'image_encoder' sub-module"):
        param_groups(nn.Linear(2, 2), lr=1e-3, weight_decay=0.0, freeze_encoder=True)


def test_adamw_decay_is_decoupled_and_skips_no_decay_params():
    model = Net()
    groups, _ = param_groups(model, lr=0.1, weight_decay=0.5)
    opt = build_optimizer(groups, lr=0.1, betas=(0.9, 0.999))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero gradients: only weight decay can move a parameter
    opt.step()
    after = dict(model.named_parameters())
    assert torch.allclose(after["head.weight"], before["head.weight"] * (1 - 0.1 * 0.5))
    assert torch.equal(after["head.bias"], before["head.bias"]) and torch.equal(after["norm.weight"],
                                                                                 before["norm.weight"])


def test_warmup_cosine_values():
    f = WarmupCosine(warmup=4, total=14, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert f(14) == pytest.approx(0.1) and f(20) == pytest.approx(0.1)
    values = [f(s) for s in range(4, 15)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert WarmupCosine(0, 10)(0) == 1.0 and WarmupCosine(0, 10)(5) == pytest.approx(0.5)
    assert warmup_steps(1000, 0, 0.05) == 50 and warmup_steps(1000, 80, 0.05) == 80
    assert warmup_steps(10, 50, 0) == 10


def test_scheduler_drives_each_group_from_its_own_lr():
    model = Net()
    groups, _ = param_groups(model, lr=1e-2, weight_decay=0.1, encoder_lr=1e-4)
    opt = build_optimizer(groups, lr=1e-2, betas=(0.9, 0.999))
    sched = build_scheduler(opt, total_steps=10, warmup=2, min_lr_ratio=0.0)
    seen = []
    for _ in range(10):
        seen.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    assert seen[0]["model"] == pytest.approx(5e-3) and seen[0]["encoder"] == pytest.approx(5e-5)
    assert seen[1]["model"] == pytest.approx(1e-2)
    expected = 1e-2 * 0.5 * (1 + math.cos(math.pi * 7 / 8))
    assert seen[9]["model"] == pytest.approx(expected) and seen[9]["encoder"] == pytest.approx(expected / 100)
    with pytest.raises(VislangError, match="min_lr_ratio"):
        build_scheduler(opt, total_steps=10, warmup=0, min_lr_ratio=2.0)
