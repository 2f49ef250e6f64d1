"""WebDataset shards: ``vislang data shard`` writes them, every ``--data`` reads them (records from the JSON
members, images streamed shard by shard), training from one shard equals training from the manifest, and the
sampler deals whole shards to ranks and loader workers."""

from __future__ import annotations

import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vislang.cli import main
from vislang.data import load_dataset
from vislang.data.images import load_image
from vislang.data.loader import SeededSampler

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"


def _shard(data_root: Path, out: Path, size: int, *extra: str) -> str:
    """Shard the shapes set; returns the brace pattern the command printed."""
    assert main(["data", "shard", SHAPES, "--root", str(data_root), "-o", str(out), "--shard-size", str(size),
                 *extra]) == 0
    n = len(list(out.glob("*.tar")))
    return str(out / f"{{000000..{n - 1:06d}}}.tar")


def test_shards_hold_every_split_and_read_back_as_the_same_records(data_root, tmp_path, capsys):
    pattern = _shard(data_root, tmp_path / "s", 16)
    said = capsys.readouterr().out
    # train 40 -> 3 shards (16, 16, 8), val 8 -> 1, test 8 -> 1: each split starts a shard
    assert f"5 shards in {tmp_path / 's'}; read them with --data '{pattern}'" in said
    for split in ("train", "val", "test"):
        want = load_dataset(SHAPES, split, root=data_root).records
        got = load_dataset(pattern, split).records
        assert [r.id for r in got] == [r.id for r in want]
        for g, w in zip(got, want):
            assert (g.captions, g.label, g.qa) == (w.captions, w.label, w.qa)
            assert g.meta == {**w.meta, "split": split}
        assert np.array_equal(np.asarray(load_image(got[3].image)), np.asarray(load_image(want[3].image)))
    assert load_dataset(pattern, "train").check_images() is not None
    with tarfile.open(tmp_path / "s" / "000000.tar") as tar:  # the WebDataset layout: KEY.json + KEY.png
        assert tar.getnames()[:2] == ["000000000.json", "000000000.png"]


def test_training_from_one_shard_equals_training_from_the_manifest(data_root, tmp_path):
    pattern = _shard(data_root, tmp_path / "s", 100)  # train, val and test: one shard each
    base = ["train", "caption", "--root", str(data_root), "--model", "caption_lstm_tiny", "--image-size", "32",
            "--batch-size", "8", "--seed", "0", "--epochs", "1", "--max-steps", "3", "--set", "task.attention_reg=0"]
    assert main([*base, "--data", SHAPES, "--out", str(tmp_path / "manifest")]) == 0
    assert main([*base, "--data", pattern, "--out", str(tmp_path / "shards")]) == 0
    a = load_file(tmp_path / "manifest" / "checkpoints" / "last" / "model.safetensors")
    b = load_file(tmp_path / "shards" / "checkpoints" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _ranks(shards: list[int], world: int, workers: int, batch: int) -> list[list[int]]:
    out = []
    for rank in range(world):
        s = SeededSampler(len(shards), True, torch.Generator().manual_seed(5), rank=rank, world_size=world,
                          batch_size=batch, shards=shards, workers=workers)
        out.append([i for i, _ in s])
    return out


def test_the_sampler_deals_whole_shards_to_ranks_and_workers():
    shards = [i // 6 for i in range(48)]  # 8 shards of 6 samples
    world, workers, batch = 2, 2, 3
    ranks = _ranks(shards, world, workers, batch)
    assert sorted(i for r in ranks for i in r) == list(range(48))  # each sample once per epoch
    # local batch k of a rank goes to loader worker k % workers: each shard is read by one worker of one rank
    reader: dict[int, set] = {}
    for r, order in enumerate(ranks):
        for k in range(0, len(order), batch):
            for i in order[k:k + batch]:
                reader.setdefault(shards[i], set()).add((r, (k // batch) % workers))
    assert all(len(who) == 1 for who in reader.values()), reader
    assert Counter(next(iter(w)) for w in reader.values()) == {(0, 0): 2, (0, 1): 2, (1, 0): 2, (1, 1): 2}
    # each shard's samples come together (shuffled within it), and other epochs deal the shards anew
    assert _ranks(shards, world, workers, batch) == ranks
    s = SeededSampler(48, True, torch.Generator().manual_seed(5), shards=shards, workers=2, batch_size=3)
    assert list(s) != list(s)


def test_uneven_shards_top_up_from_other_streams_and_a_single_shard_is_the_plain_order():
    shards = [0] * 7 + [1] * 2 + [2] * 5  # uneven: streams run out at different times
    ranks = _ranks(shards, 2, 1, 4)
    assert sorted(i for r in ranks for i in r) == list(range(14))
    assert [len(r) for r in ranks] == [8, 6]  # global batches of 8: 4 + 4, 4 + 2 (the last one cut as usual)
    plain = SeededSampler(10, True, torch.Generator().manual_seed(1))
    one = SeededSampler(10, True, torch.Generator().manual_seed(1), shards=[0] * 10)
    assert list(plain) == list(one)


def test_bad_shards_are_one_line_errors(data_root, tmp_path, capsys):
    pattern = _shard(data_root, tmp_path / "s", 16)
    capsys.readouterr()
    assert main(["data", "info", str(tmp_path / "s" / "{000000..000009}.tar")]) == 2
    assert "no such shard:" in capsys.readouterr().err
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar file" * 100)
    assert main(["data", "info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not a readable tar shard" in err and len(err.strip().splitlines()) == 1
    with tarfile.open(tmp_path / "json.tar", "w") as tar:  # a sample whose JSON is broken
        import io

        info = tarfile.TarInfo("000000000.json")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"{oops"))
    assert main(["data", "info", str(tmp_path / "json.tar")]) == 2
    assert "sample 000000000: invalid JSON" in capsys.readouterr().err
    assert main(["data", "shard", SHAPES, "--root", str(data_root), "-o", str(tmp_path / "s")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert load_dataset(pattern, "val").records  # the good shards still read


@pytest.mark.slow
def test_two_ranks_train_from_shards(data_root, tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from ranks import start_ranks, wait_ranks

    pattern = _shard(data_root, tmp_path / "s", 8)
    argv = [sys.executable, "-m", "vislang", "train", "retrieval", "--data", pattern, "--model", "dual_encoder_tiny",
            "--image-size", "32", "--batch-size", "4", "--seed", "0", "--epochs", "2", "--workers", "2",
            "--out", str(tmp_path / "run")]
    logs = tmp_path / "logs"
    wait_ranks(start_ranks(argv, 2, logs), logs)
    assert (logs / "out1").read_text() == ""
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert '"global_batch": 8' in log and '"kind": "val"' in log
