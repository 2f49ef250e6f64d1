"""Nested dataclass configs: dicts, YAML files, CLI overrides, precedence and saving."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from vislang.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_yaml_config,
    resolve_config,
    save_config,
    update_config,
)
from vislang.errors import VislangError
from vislang.train import OptimConfig, TrainConfig


@dataclass
class DataSection:
    name: str = "emoji"
    root: str | None = None
    image_size: int = 64
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    splits: list[str] = field(default_factory=lambda: ["train", "val"])


@dataclass
class RunConfig:
    model: str = "caption_lstm"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    mode: Literal["max", "min"] = "max"
    out: Path | None = None
    data: DataSection = field(default_factory=DataSection)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class NeedsName:
    name: str
    size: int = 1


def test_from_dict_fills_defaults_and_converts():
    cfg = config_from_dict(RunConfig, {"data": {"image_size": 32, "mean": [0.4, 0.5, 0.6]},
                                       "train": {"epochs": 3, "optim": {"lr": "3e-4", "betas": [0.9, 0.98]}},
                                       "out": "runs/a"})
    assert cfg.data == DataSection(image_size=32, mean=(0.4, 0.5, 0.6))
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 32
    assert cfg.train.optim.lr == 3e-4 and isinstance(cfg.train.optim.lr, float)
    assert cfg.train.optim.betas == (0.9, 0.98) and cfg.train.optim.weight_decay == 0.01
    assert cfg.out == Path("runs/a")
    assert config_from_dict(RunConfig, {}) == RunConfig()


@pytest.mark.parametrize("d, key, problem", [
    ({"train": {"optim": {"lrr": 1}}}, "train.optim.lrr", "did you mean 'lr'"),
    ({"train": {"epochs": "many"}}, "train.epochs", "expected an integer"),
    ({"train": {"epochs": 2.5}}, "train.epochs", "expected an integer"),
    ({"train": {"max_steps": "x"}}, "train.max_steps", "expected an integer"),
    ({"train": {"optim": {"betas": [0.9]}}}, "train.optim.betas", "expected 2 values"),
    ({"train": {"optim": {"freeze_encoder": "maybe"}}}, "train.optim.freeze_encoder", "true or false"),
    ({"data": {"mean": [0.1, "a", 0.3]}}, "data.mean[1]", "expected a number"),
    ({"data": {"name": 5}}, "data.name", "expected a string"),
    ({"data": 3}, "data", "expected a mapping"),
    ({"mode": "best"}, "mode", "one of 'max', 'min'"),
    ({"train": {"seed": True}}, "train.seed", "expected an integer"),
])
def test_from_dict_errors_name_the_key(d, key, problem):
    with pytest.raises(ConfigError) as e:
        config_from_dict(RunConfig, d, source="run.yaml")
    assert isinstance(e.value, VislangError)
    assert str(e.value).startswith(f"run.yaml: {key}: ") and problem in str(e.value)


def test_required_key_missing():
    with pytest.raises(ConfigError, match="name: required key is missing"):
        config_from_dict(NeedsName, {"size": 2})
    assert config_from_dict(NeedsName, {"name": "a"}) == NeedsName("a")


def test_yaml_file_with_line_numbers(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: caption_lstm\ntrain:\n  epochs: 4\n  optim:\n    lr: 1e-3\n    warmup: 10\n")
    with pytest.raises(ConfigError) as e:
        load_yaml_config(RunConfig, path)
    expected = f"{path}: line 6: train.optim.warmup: unknown key; did you mean 'warmup_steps'?"
    assert str(e.value).startswith(expected)
    path.write_text("train:\n  epochs: 4\n  optim:\n    lr: 1e-3\n")
    cfg = load_yaml_config(RunConfig, path)
    assert cfg.train.epochs == 4 and cfg.train.optim.lr == 1e-3 and cfg.model == "caption_lstm"


@pytest.mark.parametrize("text, problem", [
    ("train: [1, 2\n", "line 2: invalid YAML"),
    ("- 1\n- 2\n", "must hold a mapping"),
])
def test_bad_yaml_files(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_yaml_config(RunConfig, path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml_config(RunConfig, tmp_path / "missing.yaml")


def test_empty_yaml_is_defaults(tmp_path):
    (tmp_path / "e.yaml").write_text("# nothing\n")
    assert load_yaml_config(RunConfig, tmp_path / "e.yaml") == RunConfig()


def test_overrides_are_typed_by_field():
    cfg = apply_overrides(RunConfig(), [
        "train.optim.lr=3e-4", "train.epochs=5", "train.max_steps=100", "train.optim.grad_clip=none",
        "train.optim.betas=0.9,0.98", "data.mean=[0.1, 0.2, 0.3]", "train.amp=off", "data.name=123",
        "train.optim.freeze_encoder=true", "model_kwargs.encoder_kwargs.weights=w.pt",
        "model_kwargs.dropout=0.5",
        "data.root=/data", "mode=min", "data.splits=train,test", "out=runs/b"])
    assert cfg.train.optim.lr == 3e-4 and cfg.train.epochs == 5 and cfg.train.max_steps == 100
    assert cfg.train.optim.grad_clip is None and cfg.train.optim.betas == (0.9, 0.98)
    assert cfg.data.mean == (0.1, 0.2, 0.3) and cfg.data.splits == ["train", "test"]
    assert cfg.train.amp == "off" and cfg.data.name == "123"  # str fields keep the text as written
    assert cfg.train.optim.freeze_encoder is True and cfg.mode == "min" and cfg.out == Path("runs/b")
    assert cfg.model_kwargs == {"encoder_kwargs": {"weights": "w.pt"}, "dropout": 0.5}
    assert cfg.data.root == "/data" and apply_overrides(cfg, ["data.root=null"]).data.root is None
    assert RunConfig() == RunConfig(), "overrides must not change the input config"
    assert apply_overrides(cfg, ["train.optim={lr: 0.5}"]).train.optim == OptimConfig(
        lr=0.5, grad_clip=None, betas=(0.9, 0.98), freeze_encoder=True)


@pytest.mark.parametrize("override, problem", [
    ("train.optim.lrr=1", "override 'train.optim.lrr=1': train.optim.lrr: unknown key; did you mean 'lr'?"),
    ("train.epochs=five", "override 'train.epochs=five': train.epochs: expected an integer, got 'five'"),
    ("train.epochs", "expected KEY=VALUE"),
    ("train.epochs.x=1", "train.epochs: is 10 (int), which has no key 'x'"),
    ("mode=best", "mode: expected one of 'max', 'min'"),
    ("trian.epochs=1", "trian: unknown key; did you mean 'train'?"),
])
def test_bad_overrides(override, problem):
    with pytest.raises(ConfigError) as e:
        apply_overrides(RunConfig(), [override])
    assert problem in str(e.value)


def test_precedence_defaults_yaml_cli(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epochs: 4\n  batch_size: 16\n")
    cfg = resolve_config(RunConfig, path, ["train.epochs=7"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.seed) == (7, 16, 0)
    assert resolve_config(RunConfig) == RunConfig()
    updated = update_config(cfg, {"train": {"optim": {"lr": 0.1}}})
    assert updated.train.optim.lr == 0.1 and updated.train.epochs == 7


def test_save_and_load_round_trip(tmp_path):
    cfg = apply_overrides(RunConfig(), ["train.optim.lr=1e-10", "train.optim.betas=0.8,0.9", "out=x/y",
                                        "model_kwargs.hidden=[1, 2]", "data.root=/d"])
    d = config_to_dict(cfg)
    assert d["train"]["optim"]["betas"] == [0.8, 0.9] and d["out"] == "x/y"
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == d
    assert load_yaml_config(RunConfig, tmp_path / "config.yaml") == cfg
    assert not [p for p in tmp_path.iterdir() if p.name != "config.yaml"], "no temporary files are left"
    save_config({"plain": {"dict": 1}}, tmp_path / "d.yaml")
    assert yaml.safe_load((tmp_path / "d.yaml").read_text()) == {"plain": {"dict": 1}}
