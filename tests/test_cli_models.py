"""``vislang models``."""

from __future__ import annotations

from vislang.cli import main


def test_models_lists_builders_with_descriptions(capsys):
    assert main(["models", "*_tiny"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines[2:]]
    assert "caption_lstm_tiny" in names and "cnn_tiny" in names and "resnet50" not in names
    assert all(name.endswith("_tiny") for name in names)
    assert main(["models", "caption_lstm_resnet50"]) == 0
    assert "load torchvision weights with" in capsys.readouterr().out
