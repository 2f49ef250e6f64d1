"""Every fusion strategy: output shapes, masks honoured, gradients reach every input and parameter."""

from __future__ import annotations

import pytest
import torch

from vislang.errors import VislangError
from vislang.fusion import FusionOutput, ModalityFeatures, create_fusion, list_fusions

pytestmark = pytest.mark.usefixtures("single_torch_thread")

DIMS = {"image": 12, "text": 10}
ATTENDING = {"attention", "modality-attention", "multihead", "bilinear", "transformer", "co-attention"}


def _inputs(b: int = 3, n: int = 5, length: int = 4, grad: bool = False):
    torch.manual_seed(0)
    grid = torch.randn(b, n, DIMS["image"], requires_grad=grad)
    tokens = torch.randn(b, length, DIMS["text"], requires_grad=grad)
    tmask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)[:b, :length]
    vmask = torch.ones(b, n, dtype=torch.bool)
    vmask[0, -2:] = False                                  # sample 0 has only 3 real regions
    image = ModalityFeatures(grid, grid.mean(dim=1), vmask)
    text = ModalityFeatures(tokens, tokens[:, 0], tmask)
    return {"image": image, "text": text}


def _build(name: str):
    torch.manual_seed(0)
    return create_fusion(name, DIMS, hidden_dim=16, num_heads=2, glimpses=2, rank=3, depth=1, dropout=0.0).eval()


def test_every_strategy_is_listed_with_a_description():
    names = set(list_fusions())
    assert {"late-concat", "late-sum", "late-product", "late-gating", "attention", "modality-attention",
            "multihead", "bilinear", "transformer", "co-attention"} <= names
    assert all(list_fusions().values())


@pytest.mark.parametrize("name", sorted(list_fusions()))
def test_shapes_and_attention(name: str):
    fusion = _build(name)
    out = fusion(_inputs())
    assert isinstance(out, FusionOutput) and fusion.out_dim == 16
    assert out.fused.shape == (3, 16) and torch.isfinite(out.fused).all()
    if name in ATTENDING:
        assert out.attention is not None and out.attention.shape == (3, 5)
        torch.testing.assert_close(out.attention.sum(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
        assert (out.attention >= 0).all()
    else:
        assert out.attention is None


@pytest.mark.parametrize("name", sorted(ATTENDING))
def test_masked_regions_get_no_attention_and_do_not_matter(name: str):
    fusion = _build(name)
    feats = _inputs()
    out = fusion(feats)
    assert out.attention[0, -2:].abs().max() < 1e-6               # padded regions of sample 0
    grid = feats["image"].tokens.detach().clone()
    grid[0, -2:] += 100.0                                           # change only masked regions
    feats2 = dict(feats, image=feats["image"]._replace(tokens=grid))
    torch.testing.assert_close(fusion(feats2).fused[0], out.fused[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(ATTENDING - {"attention", "bilinear", "modality-attention"}))
def test_masked_text_tokens_do_not_matter(name: str):
    fusion = _build(name)
    feats = _inputs()
    out = fusion(feats)
    tokens = feats["text"].tokens.detach().clone()
    tokens[0, 2:] -= 50.0                                           # padding of sample 0
    feats2 = dict(feats, text=feats["text"]._replace(tokens=tokens))
    torch.testing.assert_close(fusion(feats2).fused[0], out.fused[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(list_fusions()))
def test_gradients_reach_both_modalities_and_every_parameter(name: str):
    fusion = _build(name).train()
    feats = _inputs(grad=True)
    fusion(feats).fused.pow(2).sum().backward()
    assert feats["image"].tokens.grad.abs().sum() > 0 and feats["text"].tokens.grad.abs().sum() > 0
    dead = [n for n, p in fusion.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not dead, dead


def test_modality_weights_are_a_distribution():
    for name in ("late-gating", "modality-attention"):
        out = _build(name)(_inputs())
        assert out.modality_weights.shape == (3, 2)
        torch.testing.assert_close(out.modality_weights.sum(dim=-1), torch.ones(3))


def test_bad_names_options_and_inputs_are_clear_errors():
    with pytest.raises(VislangError, match="unknown fusion 'nope'.*late-concat"):
        create_fusion("nope", DIMS)
    with pytest.raises(VislangError, match="fusion attention: heads: unknown key; did you mean 'num_heads'"):
        create_fusion("attention", DIMS, heads=2)
    with pytest.raises(VislangError, match="not divisible"):
        create_fusion("transformer", DIMS, hidden_dim=10, num_heads=4)
    with pytest.raises(VislangError, match="needs the modalities image, text"):
        create_fusion("attention", {"a": 3, "b": 4})
    fusion = _build("late-concat")
    feats = _inputs()
    with pytest.raises(VislangError, match="modality 'text' has width"):
        fusion({"image": feats["image"], "text": ModalityFeatures(torch.zeros(3, 4, 7), torch.zeros(3, 7))})
    with pytest.raises(VislangError, match="built for modalities"):
        fusion({"image": feats["image"]})
