"""The GPU path, on a CUDA device (skipped without one; ``bench/gpu.sh`` runs these on a GPU machine):
training on ``--device cuda`` matches the CPU in fp32, bf16 autocast, ``--compile`` and channels-last train,
torchrun with one rank uses NCCL, and a trained folder predicts on the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"


def _train(out: Path, data_root: Path, *extra: str, env: dict | None = None) -> Path:
    argv = [sys.executable, "-m", "vislang", "train", "caption", "--data", SHAPES, "--root", str(data_root),
            "--model", "caption_lstm_tiny", "--image-size", "32", "--batch-size", "16", "--max-steps", "3",
            "--epochs", "1", "--seed", "0", "--out", str(out), "--set", "task.attention_reg=0", *extra]
    proc = subprocess.run(argv, env={**os.environ, "VISLANG_QUIET": "1", **(env or {})}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / "model.safetensors")


def test_cuda_fp32_training_matches_the_cpu(data_root, tmp_path):
    gpu = _weights(_train(tmp_path / "gpu", data_root, "--device", "cuda", "--amp", "off"))
    cpu = _weights(_train(tmp_path / "cpu", data_root, "--device", "cpu"))
    worst = max((gpu[k].float() - cpu[k].float()).abs().max().item() for k in cpu if cpu[k].is_floating_point())
    assert worst < 1e-3  # TF32 and cuDNN's algorithms against CPU fp32, over 3 Adam steps


@pytest.mark.parametrize("flags", [["--amp", "bf16"], ["--amp", "bf16", "--compile"],
                                   ["--amp", "bf16", "--set", "train.channels_last=true"]],
                         ids=["bf16", "bf16-compile", "channels-last"])
def test_gpu_modes_train(data_root, tmp_path, flags):
    run = _train(tmp_path / "run", data_root, "--device", "cuda", *flags)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in log if e["kind"] == "train"]
    assert losses and all(v == v and v < 20 for v in losses)


def test_torchrun_one_rank_uses_nccl(data_root, tmp_path):
    run = _train(tmp_path / "run", data_root, "--device", "cuda",
                 env={"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                      "MASTER_PORT": "29611"})
    setup = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert setup["backend"] == "nccl" and setup["world_size"] == 1


def test_trained_folder_captions_on_the_gpu(data_root, tmp_path):
    from PIL import Image

    import vislang

    run = _train(tmp_path / "run", data_root, "--device", "cuda")
    model = vislang.load(run / "checkpoints" / "last", device="cuda")
    out = model.caption([Image.new("RGB", (32, 32), (200, 30, 30))])
    assert isinstance(out[0].text, str)
