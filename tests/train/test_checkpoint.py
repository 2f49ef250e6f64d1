"""Model folders: contents (config.json, preprocessor.json, README.md, ...), strict loading through the model
registry, and atomic replacement (also under SIGKILL in a real subprocess)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tinytrain import MODEL_NAME, make_model
from torch import nn

from vislang.train import (
    CheckpointError,
    copy_checkpoint,
    find_checkpoint,
    load_checkpoint,
    load_model,
    load_weights,
    save_checkpoint,
)

HERE = Path(__file__).parent


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(6, 3)
        self.out = nn.Linear(3, 6)
        self.out.weight = self.embed.weight


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_and_load_round_trip(tmp_path):
    model, spec = make_model(3, width=4)
    spec = {**spec, "task": "classify", "preprocessor": {"image_size": 32}, "max_len": 9}
    state = {"step": 7, "rng": torch.get_rng_state(), "nested": {"a": [1, 2.5, "x"], "t": (1, 2)}}
    out = save_checkpoint(tmp_path / "ckpt" / "last", model, spec, state, info={"step": 7, "metric": 0.5},
                          artifacts=lambda d: (d / "vocab.json").write_text("[]"),
                          card=lambda body: f"# {body['model']} {body['preprocessor']['image_size']}\n")
    files = sorted(p.name for p in out.iterdir())
    assert files == ["README.md", "config.json", "model.safetensors", "preprocessor.json", "train_state.pt",
                     "vocab.json"]
    body = json.loads((out / "config.json").read_text())
    assert body["model"] == MODEL_NAME and body["model_config"] == {"width": 4} and body["task"] == "classify"
    assert body["step"] == 7 and body["format"] == "vislang.model" and body["library"] == "vislang"
    assert body["max_len"] == 9 and "preprocessor" not in body  # task entries kept; preprocessing on its own
    assert body["weights_sha256"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    assert json.loads((out / "preprocessor.json").read_text()) == {"image_size": 32}
    assert (out / "README.md").read_text() == f"# {MODEL_NAME} 32\n"
    got_config, state_dict, got_state = load_checkpoint(out)
    assert got_config["preprocessor"] == {"image_size": 32} and got_config["model_config"] == {"width": 4}
    assert all(torch.equal(state_dict[k], v) for k, v in model.state_dict().items())
    assert got_state["step"] == 7 and torch.equal(got_state["rng"], state["rng"])
    assert got_state["nested"] == {"a": [1, 2.5, "x"], "t": (1, 2)}
    rebuilt = load_model(out)  # through the model registry
    assert not rebuilt.training and _same(rebuilt, model)
    assert not list((tmp_path / "ckpt").glob(".*")), "no temporary directories are left"


def test_tied_weights_and_mismatches(tmp_path):
    model = Tied()
    save_checkpoint(tmp_path / "c", model, {"model": "tied", "model_config": {}}, None)
    assert len(load_file(str(tmp_path / "c" / "model.safetensors"))) == 2  # the shared tensor once, plus bias
    other = Tied()
    load_weights(other, tmp_path / "c")
    assert _same(other, model) and other.out.weight is other.embed.weight
    with pytest.raises(CheckpointError, match=r"does not fit Linear: missing bias, weight, unexpected "):
        load_weights(nn.Linear(3, 6), tmp_path / "c")
    with pytest.raises(CheckpointError, match=r"wrong shape out\.bias \(6,\) \(model \(7,\)\)"):
        wider = Tied()
        wider.out.bias = nn.Parameter(torch.zeros(7))
        load_weights(wider, tmp_path / "c")
    with pytest.raises(CheckpointError, match="no model folder there"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "c" / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="config.json: cannot read"):
        load_checkpoint(tmp_path / "c")
    with pytest.raises(Exception, match="not JSON-serialisable"):
        save_checkpoint(tmp_path / "d", model, {"model": "tied", "model_config": {"x": object()}})


def test_replacement_is_atomic_and_recovers_an_interrupted_swap(tmp_path):
    first, spec = make_model(1)
    second, _ = make_model(2)
    last = tmp_path / "last"
    save_checkpoint(last, first, spec, {"step": 1})

    def crash(directory: Path) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):  # a failure while writing keeps the old checkpoint
        save_checkpoint(last, second, spec, {"step": 2}, artifacts=crash)
    assert load_checkpoint(last)[2] == {"step": 1} and not list(tmp_path.glob(".*"))

    os.replace(last, tmp_path / ".last.old-00000000000000000001")  # a crash between the two renames
    assert find_checkpoint(last) == last and _same(load_model(last), first)

    save_checkpoint(last, second, spec, {"step": 2})
    copy_checkpoint(last, tmp_path / "best")
    assert _same(load_model(tmp_path / "best"), second)
    assert load_checkpoint(tmp_path / "best")[2] == {"step": 2}
    save_checkpoint(last, first, spec, {"step": 3})  # replacing last leaves the (hard-linked) best intact
    assert _same(load_model(tmp_path / "best"), second) and _same(load_model(last), first)


_SCRIPT = """
import sys, time
from pathlib import Path
sys.path.insert(0, {here!r})
from tinytrain import make_model
from vislang.train import save_checkpoint

last = Path({last!r})
model, spec = make_model(1)
save_checkpoint(last, model, spec, {{"step": 1}})
other, _ = make_model(2)

def hang(directory):
    Path({marker!r}).write_text(str(directory))
    time.sleep(600)

save_checkpoint(last, other, spec, {{"step": 2}}, artifacts=hang)
"""


def test_sigkill_while_saving_keeps_the_previous_checkpoint(tmp_path):
    last, marker = tmp_path / "run" / "last", tmp_path / "saving"
    script = tmp_path / "save_and_hang.py"
    script.write_text(_SCRIPT.format(here=str(HERE), last=str(last), marker=str(marker)))
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, str(script)], stderr=err)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
        assert time.monotonic() < deadline, "the script never reached the second save"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert Path(marker.read_text()).exists()  # the half-written temporary directory is still there
    assert load_checkpoint(last)[2] == {"step": 1} and _same(load_model(last), make_model(1)[0])
    model, spec = make_model(2)
    save_checkpoint(last, model, spec, {"step": 2})  # the next save clears the leftover
    assert sorted(p.name for p in last.parent.iterdir()) == ["last"]
