"""Dual encoder ensembles: the joint embedding's similarity is the mean of the members', match maps average
theirs, a shared locked text tower is stored once and the folder rebuilds the same model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vislang.config import config_to_dict
from vislang.errors import VislangError
from vislang.models import create_model, model_config
from vislang.models.dual_encoder_ensemble import DualEncoderEnsemble
from vislang.train.checkpoint import load_model, save_checkpoint


def _inputs(b: int = 3, length: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 50, (b, length), generator=g)                        # (B, L)
    mask = torch.ones(b, length, dtype=torch.long)
    mask[0, 3:] = 0
    return torch.randn(b, 3, 32, 32, generator=g), ids, mask


def test_similarity_is_the_mean_of_the_members():
    torch.manual_seed(0)
    ens = create_model("dual_encoder_ensemble_tiny").eval()
    images, ids, mask = _inputs()
    a, b = ens.members
    with torch.no_grad():
        out = ens(images, ids, mask)
        want = (a.encode_text(ids, mask) @ a.encode_image(images).T
                + b.encode_text(ids, mask) @ b.encode_image(images).T) / 2            # (B, B)
        assert ens.embed_dim == 2 * a.embed_dim and out.image_embeds.shape == (3, 2 * a.embed_dim)
        assert torch.allclose(out.image_embeds.norm(dim=-1), torch.ones(3), atol=1e-6)
        assert torch.allclose(out.text_embeds @ out.image_embeds.T, want, atol=1e-6)
        assert torch.allclose(ens.encode_text(ids, mask, cached=False), out.text_embeds, atol=1e-6)
        assert not torch.allclose(a.encode_image(images), b.encode_image(images))   # two different members


def test_match_maps_average_the_members_and_keep_the_score():
    torch.manual_seed(0)
    ens = create_model("dual_encoder_ensemble_tiny").eval()
    images, ids, mask = _inputs()
    with torch.no_grad():
        queries = ens.encode_text(ids, mask)                                    # (B, 2E)
        out = ens.region_scores(images, queries)
        assert torch.allclose(out.maps.mean((1, 2)), (ens.encode_image(images) * queries).sum(-1), atol=1e-5)
        parts = [m.region_scores(images, q * 2 ** 0.5) for m, q in zip(ens.members, queries.split(16, -1))]
        assert torch.allclose(out.maps, (parts[0].maps + parts[1].maps) / 2, atol=1e-6)
        with pytest.raises(VislangError, match=r"queries must be \(32,\) or \(3, 32\)"):
            ens.region_scores(images, queries[:, :16])


def test_a_shared_locked_tower_is_stored_once_and_rebuilds(tmp_path: Path):
    torch.manual_seed(0)
    member = {"model": "dual_encoder_tiny", "model_config": {"text_mode": "locked"}}
    kw = {"members": [member, member], "share_text": True}
    ens = create_model("dual_encoder_ensemble", **kw).eval()
    a, b = ens.members
    assert a.text_encoder is b.text_encoder
    save_checkpoint(tmp_path / "ens", ens, {"model": "dual_encoder_ensemble",
                                            "model_config": config_to_dict(model_config("dual_encoder_ensemble", **kw))})
    import safetensors

    with safetensors.safe_open(str(tmp_path / "ens" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if k.startswith("members.1.text_encoder.")]     # one copy of the tower
    back = load_model(tmp_path / "ens")
    assert isinstance(back, DualEncoderEnsemble) and back.members[0].text_encoder is back.members[1].text_encoder
    images, ids, mask = _inputs()
    with torch.no_grad():
        assert torch.equal(back.encode_image(images), ens.encode_image(images))
        assert torch.equal(back.encode_text(ids, mask), ens.encode_text(ids, mask))


def test_bad_ensembles_are_refused():
    with pytest.raises(VislangError, match="at least two dual encoders, got 0"):
        create_model("dual_encoder_ensemble")
    with pytest.raises(VislangError, match="'cnn_tiny' is not a dual encoder"):
        create_model("dual_encoder_ensemble", members=[{"model": "cnn_tiny"}, {"model": "cnn_tiny"}])
    with pytest.raises(VislangError, match="ensemble member 1: expected"):
        create_model("dual_encoder_ensemble", members=[{"model": "dual_encoder_tiny"}, {"name": "x"}])
    with pytest.raises(VislangError, match=r"one embedding width, got \[16, 24\]"):
        create_model("dual_encoder_ensemble", members=[{"model": "dual_encoder_tiny"},
                                                       {"model": "dual_encoder_tiny",
                                                        "model_config": {"embed_dim": 24}}])
