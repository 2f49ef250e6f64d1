"""Generic layers: attention against torch's reference implementation, masks, blocks, norms, patches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vislang.errors import VislangError
from vislang.layers import (
    MLP,
    DropPath,
    LayerNorm2d,
    MixStyle,
    MultiHeadAttention,
    PatchEmbed,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
    resize_pos_embed,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_mlp_shapes_and_default_out_dim() -> None:
    x = torch.randn(2, 5, 8)
    assert MLP(8, 32)(x).shape == (2, 5, 8)
    assert MLP(8, 32, out_dim=3)(x).shape == (2, 5, 3)


def _torch_mha_like(mha: MultiHeadAttention, dim: int, heads: int) -> nn.MultiheadAttention:
    """``nn.MultiheadAttention`` holding the same weights as ``mha``."""
    ref = nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        ref.out_proj.bias.copy_(mha.out_proj.bias)
    return ref


@pytest.mark.parametrize("need_weights", [False, True])
def test_attention_matches_torch_multihead_attention(need_weights: bool) -> None:
    dim, heads, t = 16, 4, 6
    mha = MultiHeadAttention(dim, heads).eval()
    ref = _torch_mha_like(mha, dim, heads).eval()
    x = torch.randn(3, t, dim)
    pad = torch.tensor([[False] * t, [False] * 4 + [True] * 2, [False] * 5 + [True]])
    causal = torch.ones(t, t, dtype=torch.bool).triu(1)           # True above the diagonal = masked

    out, weights = mha(x, key_padding_mask=pad, attn_mask=causal, need_weights=need_weights)
    ref_out, ref_weights = ref(x, x, x, key_padding_mask=pad, attn_mask=causal, need_weights=True)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    if need_weights:
        assert weights.shape == (3, heads, t, t)
        torch.testing.assert_close(weights.mean(dim=1), ref_weights, atol=1e-6, rtol=1e-5)
    else:
        assert weights is None

    out_causal, _ = mha(x, key_padding_mask=pad, is_causal=True)
    torch.testing.assert_close(out_causal, ref_out, atol=1e-5, rtol=1e-5)


def test_cross_attention_ignores_padded_keys_and_has_no_nan() -> None:
    mha = MultiHeadAttention(8, 2, kv_dim=12).eval()
    q, mem = torch.randn(2, 3, 8), torch.randn(2, 5, 12)
    pad = torch.tensor([[False, False, True, True, True], [True] * 5])   # sample 1 has nothing to attend to
    out, weights = mha(q, mem, key_padding_mask=pad, need_weights=True)
    assert out.shape == (2, 3, 8) and weights.shape == (2, 2, 3, 5)
    assert torch.isfinite(out).all()
    assert weights[0, :, :, 2:].abs().max() == 0
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 3))

    changed = mem.clone()
    changed[0, 2:] = 100.0                                              # values behind the padding
    out2, _ = mha(q, changed, key_padding_mask=pad)
    torch.testing.assert_close(out2[0], out[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="key_padding_mask"):
        mha(q, mem, key_padding_mask=pad[:, :3])


def test_attention_rejects_heads_not_dividing_width() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 3)


def test_encoder_block_is_causal_and_padding_invariant() -> None:
    block = TransformerEncoderBlock(16, 4, mlp_ratio=2.0).eval()
    x = torch.randn(2, 7, 16)
    out, weights = block(x, is_causal=True, need_weights=True)
    assert out.shape == (2, 7, 16) and weights.shape == (2, 4, 7, 7)
    assert weights.triu(1).abs().max() == 0
    later = x.clone()
    later[:, 4:] = torch.randn(2, 3, 16)
    out2, _ = block(later, is_causal=True)
    torch.testing.assert_close(out2[:, :4], out[:, :4])                # the future does not leak back

    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 5:] = True
    a, _ = block(x, key_padding_mask=pad)
    noisy = x.clone()
    noisy[1, 5:] = 50.0
    b, _ = block(noisy, key_padding_mask=pad)
    torch.testing.assert_close(a[1, :5], b[1, :5], atol=1e-5, rtol=1e-5)


def test_decoder_block_cross_attends_to_memory() -> None:
    block = TransformerDecoderBlock(16, 2, memory_dim=24).eval()
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 9, 24)
    out, weights = block(x, memory, need_weights=True)
    assert out.shape == (2, 5, 16) and weights.shape == (2, 2, 5, 9)
    shifted = x.clone()
    shifted[:, 3:] = torch.randn(2, 2, 16)
    out2, _ = block(shifted, memory)
    torch.testing.assert_close(out2[:, :3], out[:, :3])                # causal by default
    out3, _ = block(x, memory.flip(1))
    torch.testing.assert_close(out3, out, atol=1e-5, rtol=1e-5)          # memory is a set: order does not matter
    out4, _ = block(x, torch.randn(2, 9, 24))
    assert (out4 - out).abs().max() > 1e-3                               # its content does


def test_blocks_backward_reaches_every_parameter() -> None:
    enc = TransformerEncoderBlock(8, 2, dropout=0.1, attn_dropout=0.1, drop_path=0.1).train()
    dec = TransformerDecoderBlock(8, 2, dropout=0.1).train()
    x = torch.randn(4, 3, 8)
    h, _ = enc(x)
    y, _ = dec(x, h)
    (y * torch.randn_like(y)).sum().backward()
    for name, p in [*enc.named_parameters(), *dec.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_drop_path() -> None:
    x = torch.ones(1000, 4)
    layer = DropPath(0.25)
    assert torch.equal(layer.eval()(x), x)
    y = layer.train()(x)
    kept = y[:, 0] != 0
    assert torch.all((y[kept] - 1 / 0.75).abs() < 1e-6) and torch.all(y[~kept] == 0)
    assert 0.65 < kept.float().mean() < 0.85                             # ~ 0.75 of the samples kept
    with pytest.raises(ValueError):
        DropPath(1.0)


def test_layernorm2d_matches_layernorm_over_channels() -> None:
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 6, 4, 5)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)


def test_patch_embed_tokens_are_row_major_patches() -> None:
    embed = PatchEmbed(patch_size=4, dim=10)
    images = torch.randn(2, 3, 8, 12)
    tokens, hw = embed(images)
    assert hw == (2, 3) and tokens.shape == (2, 6, 10)
    # token 4 = row 1, column 1 = pixels [4:8, 4:8]
    patch = images[:, :, 4:8, 4:8]
    expected = (patch.unsqueeze(1) * embed.proj.weight).sum(dim=(2, 3, 4)) + embed.proj.bias
    torch.testing.assert_close(tokens[:, 4], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(VislangError, match="not a multiple of the patch size 4"):
        embed(torch.randn(1, 3, 10, 12))


def test_resize_pos_embed() -> None:
    pos = torch.randn(1, 16, 8)
    assert resize_pos_embed(pos, (4, 4), (4, 4)) is pos
    assert resize_pos_embed(pos, (4, 4), (6, 3)).shape == (1, 18, 8)
    constant = torch.full((1, 16, 8), 0.7)
    torch.testing.assert_close(resize_pos_embed(constant, (4, 4), (8, 8)), torch.full((1, 64, 8), 0.7))
    down_up = resize_pos_embed(resize_pos_embed(pos, (4, 4), (8, 8)), (8, 8), (4, 4), mode="bilinear")
    assert down_up.shape == pos.shape


def test_mixstyle_swaps_feature_statistics_in_training_only() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 4, 5, 5) * torch.arange(1, 7.0).view(6, 1, 1, 1) + torch.arange(6.0).view(6, 1, 1, 1)
    mix = MixStyle(p=1.0, alpha=0.1)
    y = mix(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    # each map keeps its normalised content; only its per-channel mean and std change
    def norm(t: torch.Tensor) -> torch.Tensor:
        return (t - t.mean(dim=(2, 3), keepdim=True)) / t.std(dim=(2, 3), keepdim=True)
    assert torch.allclose(norm(y), norm(x), atol=1e-4)
    # the new statistics lie between the image's own and another batch member's
    mu = y.mean(dim=(2, 3))
    assert ((mu >= x.mean(dim=(2, 3)).min() - 1e-4) & (mu <= x.mean(dim=(2, 3)).max() + 1e-4)).all()
    x.requires_grad_(True)
    mix(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    mix.eval()
    assert mix(x) is x
    assert MixStyle(p=0.0).train()(x) is x
    with pytest.raises(ValueError, match="MixStyle"):
        MixStyle(p=1.5)
