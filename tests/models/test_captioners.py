"""Every captioner (each *_tiny variant): forward, gradients, save/load, decoding; the caption loss."""

from __future__ import annotations

import re

import pytest
import torch

from vislang.config import config_to_dict
from vislang.decoding import beam_search, greedy, sample
from vislang.losses import CaptionLoss
from vislang.models import create_model, list_models, model_config, model_family
from vislang.train.checkpoint import load_model, save_checkpoint

CAPTIONERS = list_models("caption_*_tiny")
each_captioner = pytest.mark.parametrize("name", CAPTIONERS)


def test_every_decoder_is_registered():
    assert CAPTIONERS == ["caption_lstm_tiny", "caption_rag_tiny", "caption_transformer_tiny"]


def _captioner(name, seed=0, **kwargs):
    """``create_model(name)``; a retrieval-augmented one gets a memory of 10 random entries."""
    if model_family(name) != "caption_rag":
        return create_model(name, **kwargs)
    model = create_model(name, memory_size=10, **kwargs)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, model.vocab_size, (10, model.cfg.memory_len), generator=g)
    tokens[:, -3] = 2
    tokens[:, -2:] = 0
    model.set_memory(torch.randn(10, model.image_encoder.out_dim, generator=g), tokens, torch.arange(10) // 2)
    return model


def _batch(b=3, t=7, v=50, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, size, size, generator=g)
    tokens = torch.randint(3, v, (b, t), generator=g)
    tokens[:, 0] = 1
    tokens[0, -2:] = torch.tensor([2, 0])  # EOS then padding in the first row
    return images, tokens


def test_every_caption_model_has_a_tiny_variant():
    for name in list_models("caption_*"):
        if not name.endswith("_tiny"):
            base = re.sub(r"_(resnet\d+|vit)$", "", name)  # encoder variants share the decoder's tiny model
            assert f"{base}_tiny" in list_models(), name


@each_captioner
def test_forward_shapes_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = _captioner(name)
    images, tokens = _batch()
    out = model(images, tokens)
    assert out.logits.shape == (3, 6, 50) and out.attention.shape == (3, 6, 16)  # 32 px -> 4x4 grid
    assert torch.allclose(out.attention.sum(-1), torch.ones(3, 6))
    loss = CaptionLoss(pad_id=0)(out.logits, tokens[:, 1:], out.attention)["loss"]
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@each_captioner
def test_save_load_roundtrip(name, tmp_path):
    torch.manual_seed(1)
    model = _captioner(name, vocab_size=40).eval()
    memory = {"memory_size": 10} if model_family(name) == "caption_rag" else {}
    save_checkpoint(tmp_path / "ckpt", model, {"model": name, "model_config": {"vocab_size": 40, **memory}})
    again = load_model(tmp_path / "ckpt")
    images, tokens = _batch(v=40)
    assert torch.equal(model(images, tokens).logits, again(images, tokens).logits)


def test_lstm_tied_embeddings_share_one_tensor_through_training_and_a_checkpoint(tmp_path):
    torch.manual_seed(2)
    model = create_model("caption_lstm_tiny", vocab_size=40, tie_embeddings=True)
    assert model.out.weight is model.embed.weight
    images, tokens = _batch(v=40)
    out = model(images, tokens)
    CaptionLoss(pad_id=0)(out.logits, tokens[:, 1:], out.attention)["loss"].backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()          # one update moves both uses together
    assert model.out.weight is model.embed.weight
    model.eval()
    full = config_to_dict(model_config("caption_lstm_tiny", vocab_size=40, tie_embeddings=True))
    save_checkpoint(tmp_path / "ckpt", model, {"model": "caption_lstm_tiny", "model_config": full})
    again = load_model(tmp_path / "ckpt")
    assert again.out.weight is again.embed.weight
    assert torch.equal(again.embed.weight, model.embed.weight)
    assert torch.equal(model(images, tokens).logits, again(images, tokens).logits)


@each_captioner
def test_greedy_equals_beam_of_one_and_top_k_one(name):
    torch.manual_seed(2)
    model = _captioner(name).eval()
    images, _ = _batch(b=4, seed=3)
    g = greedy(model, images, max_len=12)
    b1 = beam_search(model, images, beam_size=1, max_len=12)
    s1 = sample(model, images, max_len=12, top_k=1, generator=torch.Generator().manual_seed(0))
    sp = sample(model, images, max_len=12, top_p=1e-6, generator=torch.Generator().manual_seed(0))
    assert g.tokens == b1.tokens == s1.tokens == sp.tokens
    assert g.scores == pytest.approx(b1.scores, abs=1e-5)
    for att, toks in zip(g.attention, g.tokens):
        assert att.shape[0] == min(len(toks) + 1, 12) and att.shape[1] == 16


@each_captioner
def test_beam_search_returns_valid_hypotheses(name):
    torch.manual_seed(4)
    model = _captioner(name).eval()
    images, _ = _batch(b=2, seed=5)
    out = beam_search(model, images, beam_size=4, max_len=9, length_penalty=1.0)
    assert len(out.tokens) == 2 and all(len(t) <= 9 for t in out.tokens)
    assert all({model.eos_id, model.pad_id, model.bos_id}.isdisjoint(t) for t in out.tokens)
    # the reported score is the model's log-probability of that caption (+ EOS when it ended)
    for i, toks in enumerate(out.tokens):
        seq = torch.tensor([[model.bos_id, *toks, model.eos_id]])
        with torch.no_grad():
            logits = model(images[i:i + 1], seq).logits[0].float()
        logits[:, [model.pad_id, model.bos_id]] = float("-inf")
        logp = logits.log_softmax(-1).gather(1, seq[0, 1:, None]).sum().item()
        if len(toks) < 9:
            assert out.scores[i] == pytest.approx(logp, abs=1e-4)


def test_length_penalty_reranks_the_same_beams_towards_longer_captions():
    """The penalty only changes which finished hypothesis wins: the caption chosen with a larger exponent is
    never shorter (its beams are the same), and the choice follows ``log p / length ** penalty``."""
    torch.manual_seed(8)
    model = create_model("caption_lstm_tiny").eval()
    with torch.no_grad():
        model.out.bias[model.eos_id] += 4.0  # an untrained model that ends captions at varied lengths
    images, _ = _batch(b=8, seed=9)
    runs = {lp: beam_search(model, images, beam_size=4, max_len=10, length_penalty=lp) for lp in (0.0, 1.0, 3.0)}
    lengths = {lp: [len(t) for t in out.tokens] for lp, out in runs.items()}
    assert all(a <= b <= c for a, b, c in zip(lengths[0.0], lengths[1.0], lengths[3.0]))
    assert lengths[3.0] != lengths[0.0]  # the test exercises a real re-ranking
    for i in range(8):  # lp 0 picks the highest total log-probability, so any other pick scores no higher
        assert runs[3.0].scores[i] <= runs[0.0].scores[i] + 1e-6
        if lengths[0.0][i] < lengths[3.0][i] < 10:  # longer, ended by EOS (which counts), better per token**3
            assert (runs[3.0].scores[i] / (lengths[3.0][i] + 1) ** 3
                    >= runs[0.0].scores[i] / (lengths[0.0][i] + 1) ** 3 - 1e-6)


@each_captioner
def test_sampling_is_seeded(name):
    torch.manual_seed(6)
    model = _captioner(name).eval()
    images, _ = _batch(b=3, seed=7)
    a = sample(model, images, max_len=8, temperature=1.5, generator=torch.Generator().manual_seed(1))
    b = sample(model, images, max_len=8, temperature=1.5, generator=torch.Generator().manual_seed(1))
    assert a.tokens == b.tokens


def test_caption_loss_attention_regulariser_by_hand():
    logits = torch.zeros(1, 2, 5)
    targets = torch.tensor([[3, 0]])  # one real token, one pad
    attention = torch.tensor([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]])  # the pad step must not count
    out = CaptionLoss(pad_id=0, attention_reg=2.0)(logits, targets, attention)
    expected_reg = 2.0 * ((1 - 0.5) ** 2 + (1 - 0.5) ** 2 + (1 - 0.0) ** 2) / 3  # mean over the 3 cells
    assert out["attention_reg"].item() == pytest.approx(expected_reg)
    assert out["ce"].item() == pytest.approx(torch.log(torch.tensor(5.0)).item())
    assert out["loss"].item() == pytest.approx(out["ce"].item() + expected_reg)
