"""``vislang demo`` builds the real emoji data and prints its summary."""

from __future__ import annotations

from vislang.cli import main


def test_demo_prints_emoji_summary(data_root, capsys):
    assert main(["demo", "--root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "emoji data set ready in" in out
    for split in ("train", "val", "test_seen_concepts_new_style", "test_new_concepts"):
        assert split in out
    assert "CC-BY-4.0" in out and "A few training pairs:" in out
    assert main(["demo", "--root", str(data_root)]) == 0  # second run reuses the build
