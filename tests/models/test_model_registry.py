"""The model registry: one declaration per variant, typed options, the resolved-config round trip."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from vislang.config import ConfigError, config_to_dict
from vislang.errors import VislangError
from vislang.models import create_model, describe_model, list_models, model_config, model_family
from vislang.models.cnn import CNNConfig
from vislang.models.fusion_model import fusion_model_config
from vislang.models.registry import FAMILIES, MODELS, register_family, register_model

NEEDS_OPTIONS = {"region_tagger_tiny": {"attributes": {"colour": 5, "shape": 4}}}
NEEDS_FILES = {"dual_encoder_hf_tiny"}
TINY = [n for n in list_models("*_tiny") if n not in NEEDS_FILES]


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_model_has_a_family_a_config_and_a_one_line_description():
    for name in list_models():
        if model_family(name) is None:                                # a plain builder (registered by a test)
            assert not MODELS.get(name).builder.__module__.startswith("vislang."), name
            continue
        assert model_family(name) in FAMILIES, name
        doc = describe_model(name)
        assert doc and "\n" not in doc, name
        assert type(model_config(name)) is FAMILIES.get(model_family(name)).config_cls
    assert list_models("dual_encoder*", family="dual_encoder") == [
        n for n in list_models("dual_encoder*") if not n.startswith("dual_encoder_ensemble")]
    assert list_models(family="dual_encoder_ensemble") == ["dual_encoder_ensemble", "dual_encoder_ensemble_tiny"]
    assert list_models(family="fusion_model") == ["fusion_classifier", "fusion_classifier_tiny", "vqa",
                                                  "vqa_minilm", "vqa_tiny"]


@pytest.mark.parametrize("name", TINY)
def test_the_resolved_config_rebuilds_the_same_model(name):
    kwargs = NEEDS_OPTIONS.get(name, {})
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    full = config_to_dict(model_config(name, **kwargs))            # what a saved model folder stores
    torch.manual_seed(0)
    assert _same(model, create_model(name, **full))
    assert model_config(name, **full) == model_config(name, **kwargs)


def test_options_are_checked_like_config_overrides():
    with pytest.raises(ConfigError, match="model caption_lstm_tiny: hiden_dim: unknown key; did you mean 'hidden_dim'"):
        create_model("caption_lstm_tiny", hiden_dim=8)
    with pytest.raises(ConfigError, match="model caption_lstm_tiny: hidden_dim: expected an integer"):
        model_config("caption_lstm_tiny", hidden_dim=8.5)
    with pytest.raises(ConfigError, match=r"model cnn_tiny: widths\[1\]: expected an integer"):
        create_model("cnn_tiny", widths=[4, "x", 8])
    with pytest.raises(VislangError, match="unknown model 'nope'"):
        create_model("nope")
    cfg = model_config("cnn_tiny", widths=[4, 8, 8], mixstyle=0)        # JSON/YAML values
    assert cfg.widths == (4, 8, 8) and isinstance(cfg.mixstyle, float)


def test_a_variant_declares_only_what_differs_and_kwargs_override_it():
    assert model_config("caption_lstm_resnet50").encoder == "resnet50"
    assert model_config("caption_lstm_resnet50", encoder="cnn_small").encoder == "cnn_small"
    assert model_config("cnn_tiny") == CNNConfig(widths=(8, 16, 16), dim=32, blocks=(0, 0, 0, 1))


def test_fusion_kwargs_update_the_variant_key_by_key():
    cfg = fusion_model_config("vqa_tiny", fusion_kwargs={"depth": 2})
    assert cfg.fusion_kwargs == {"hidden_dim": 16, "num_heads": 2, "depth": 2}
    with pytest.raises(VislangError, match="'dual_encoder_tiny' is not a fusion model"):
        fusion_model_config("dual_encoder_tiny")


def test_resolved_configs_are_copies():
    model_config("vqa_tiny").fusion_kwargs["depth"] = 9
    assert model_config("vqa_tiny").fusion_kwargs["depth"] == 1


def test_registering_a_family_and_variants():
    @dataclass
    class WidthConfig:
        width: int = 4
        bias: bool = True

    @register_family("test_linear", WidthConfig)
    def build(cfg: WidthConfig) -> nn.Module:
        return nn.Linear(3, cfg.width, bias=cfg.bias)

    try:
        register_model("test_linear_wide", "test_linear", "A wide linear layer.", width=8)
        assert create_model("test_linear_wide").out_features == 8
        assert create_model("test_linear_wide", bias="false").bias is None
        assert describe_model("test_linear_wide") == "A wide linear layer."
        with pytest.raises(ValueError, match="registered twice"):
            register_model("test_linear_wide", "test_linear", "again")
        with pytest.raises(ConfigError, match="model test_linear_bad: depth: unknown key"):
            register_model("test_linear_bad", "test_linear", "a typo in a declaration", depth=2)
    finally:
        MODELS.remove("test_linear_wide")
        FAMILIES.remove("test_linear")


def test_a_plain_builder_still_registers_with_its_kwargs_unchecked():
    @register_model("test_plain_builder")
    def plain(width: int = 2) -> nn.Module:
        """A plain builder.

        More text."""
        return nn.Linear(1, width)

    try:
        assert create_model("test_plain_builder", width=3).out_features == 3
        assert describe_model("test_plain_builder") == "A plain builder."
        assert model_family("test_plain_builder") is None
        with pytest.raises(VislangError, match="plain builder"):
            model_config("test_plain_builder")
    finally:
        MODELS.remove("test_plain_builder")


def test_fusion_and_layers_do_not_import_the_models():
    code = "import sys, vislang.fusion, vislang.layers; print(any(m.startswith('vislang.models') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
