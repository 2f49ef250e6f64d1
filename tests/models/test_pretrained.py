"""Weights shipped with vislang: loaded offline by name, checksummed, the same output as when they were made."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch

from vislang.cli import main
from vislang.errors import VislangError
from vislang.models import create_model
from vislang.models.encoders import PRETRAINED_DIR, list_pretrained, pretrained_weights

# Recorded when emoji_styles.safetensors was written: the encoder's pooled feature of ``_fixed_input()``.
EMOJI_STYLES_SHA256 = "6627e30825c65c086bd716905e1d47050f1a2619fa4235e33c98da608475253c"
EMOJI_STYLES_POOLED = {"sum": -2.83333, "norm": 1.40907, "first": [-0.032916, 0.050821, 0.139676, 0.016168]}


def _fixed_input() -> torch.Tensor:
    """A deterministic 32 px drawing, normalised: a dark-outlined yellow disc on white."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    r = (x ** 2 + y ** 2).sqrt()
    img = torch.ones(3, 32, 32)
    disc = r < 0.8
    img[:, disc] = torch.tensor([1.0, 0.8, 0.1]).unsqueeze(1)
    img[:, (r >= 0.8) & (r < 0.9)] = 0.1
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return ((img - mean.view(3, 1, 1)) / std.view(3, 1, 1)).unsqueeze(0)                     # (1, 3, 32, 32)


def test_the_shipped_encoder_has_its_card_and_licences():
    assert "emoji_styles" in list_pretrained()
    card = (PRETRAINED_DIR / "emoji_styles.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: vislang\nlicense: apache-2.0")
    for licence in ("Apache-2.0", "CC-BY-4.0", "MIT"):
        assert licence in card
    assert "OpenMoji" in card and "Noto v1" in card   # said to be left out


def test_the_shipped_encoder_loads_by_name_offline_and_gives_its_recorded_output():
    path = pretrained_weights("emoji_styles")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == EMOJI_STYLES_SHA256
    header = json.loads(path.read_bytes()[8:8 + struct.unpack("<Q", path.read_bytes()[:8])[0]])
    assert "vislang_data_sha256" in header["__metadata__"]          # the tensor data is checked on load
    encoder = create_model("cnn_small", pretrained="emoji_styles").eval()
    with torch.no_grad():
        pooled = encoder(_fixed_input()).pooled[0]                                              # (256,)
    assert pooled.sum().item() == pytest.approx(EMOJI_STYLES_POOLED["sum"], abs=1e-3)
    assert pooled.norm().item() == pytest.approx(EMOJI_STYLES_POOLED["norm"], abs=1e-4)
    assert pooled[:4].tolist() == pytest.approx(EMOJI_STYLES_POOLED["first"], abs=1e-5)


def test_a_captioner_starts_from_the_shipped_encoder():
    captioner = create_model("caption_lstm", encoder_kwargs={"pretrained": "emoji_styles"})
    shipped = create_model("cnn_small", pretrained="emoji_styles")
    assert all(torch.equal(a, b) for a, b in zip(captioner.image_encoder.state_dict().values(),
                                                 shipped.state_dict().values()))


def test_unknown_names_and_two_sources_are_refused_in_one_line():
    with pytest.raises(VislangError, match=r"pretrained='nope': no such weights ship with vislang \(shipped: "):
        create_model("cnn_small", pretrained="nope")
    with pytest.raises(VislangError, match="not both"):
        create_model("cnn_small", pretrained="emoji_styles", weights="x.safetensors")
    with pytest.raises(VislangError, match="does not fit|wrong shape|missing"):
        create_model("cnn_tiny", pretrained="emoji_styles")                   # another architecture


def test_models_lists_the_shipped_weights_and_saves_a_runs_image_encoder(retrieval_run, tmp_path, capsys):
    assert main(["models", "--pretrained"]) == 0
    assert "emoji_styles" in capsys.readouterr().out
    out = tmp_path / "enc.safetensors"
    assert main(["models", "--save-image-encoder", str(retrieval_run), str(out)]) == 0
    from vislang.tasks import load_trained

    want = load_trained(retrieval_run).model.image_encoder.state_dict()
    encoder = create_model("cnn_tiny", weights=str(out))                     # the run's tower, loadable
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in want.items())
