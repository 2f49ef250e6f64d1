"""Image encoders: shapes, gradients, freezing, weight files, torchvision key compatibility, Hugging Face."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from vislang.config import ConfigError
from vislang.errors import DataError, VislangError
from vislang.models.encoders import (
    ImageEncoder,
    ImageFeatures,
    count_parameters,
    is_frozen,
    load_weights,
    save_weights,
    set_trainable,
)
from vislang.models.registry import create_model, list_models
from vislang.models.resnet import load_torchvision_weights

TINY = ["cnn_tiny", "resnet_tiny", "vit_tiny"]
# grid (h, w) for 32 px and 64 px images
GRID = {"cnn_tiny": {32: (4, 4), 64: (8, 8)}, "resnet_tiny": {32: (1, 1), 64: (2, 2)},
        "vit_tiny": {32: (4, 4), 64: (8, 8)}}
ONLY_FOR_CLASSIFY = {"resnet_tiny": {"fc.weight", "fc.bias"}}  # ResNet's fc is used by classify(), not forward()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_builders_are_registered() -> None:
    names = set(list_models())
    assert {"cnn_small", "cnn_tiny", "resnet18", "resnet34", "resnet50", "resnet101", "resnet_tiny",
            "vit_small", "vit_tiny", "hf_vision"} <= names
    assert set(list_models("*tiny")) >= set(TINY)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("size", [32, 64])
def test_forward_shapes(name: str, size: int) -> None:
    enc = create_model(name).eval()
    assert isinstance(enc, ImageEncoder)
    feats = enc(torch.randn(2, 3, size, size))
    h, w = GRID[name][size]
    assert isinstance(feats, ImageFeatures)
    assert feats.grid_hw == (h, w)
    assert feats.grid.shape == (2, h * w, enc.out_dim)
    assert feats.pooled.shape == (2, enc.out_dim)
    assert torch.isfinite(feats.grid).all() and torch.isfinite(feats.pooled).all()


@pytest.mark.parametrize("name", TINY)
def test_non_square_images(name: str) -> None:
    feats = create_model(name).eval()(torch.randn(1, 3, 32, 64))
    assert feats.grid.shape[1] == feats.grid_hw[0] * feats.grid_hw[1]
    assert feats.grid_hw[1] == 2 * feats.grid_hw[0]


@pytest.mark.parametrize("name", TINY)
def test_backward_reaches_every_parameter(name: str) -> None:
    enc = create_model(name).train()
    feats = enc(torch.randn(3, 3, 32, 32))
    loss = (feats.grid * torch.randn_like(feats.grid)).sum() + (feats.pooled * torch.randn_like(feats.pooled)).sum()
    loss.backward()
    no_grad = {n for n, p in enc.named_parameters() if p.grad is None or p.grad.abs().sum() == 0}
    assert no_grad == ONLY_FOR_CLASSIFY.get(name, set())


def test_resnet_classify_uses_fc() -> None:
    enc = create_model("resnet_tiny", num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    logits = enc.classify(x)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(logits, enc.fc(enc(x).pooled))


@pytest.mark.parametrize("name", TINY)
def test_safetensors_round_trip_gives_identical_outputs(name: str, tmp_path: Path) -> None:
    enc = create_model(name)
    enc.train()(torch.randn(4, 3, 32, 32))           # move BatchNorm statistics away from their initial values
    enc.eval()
    path = tmp_path / f"{name}.safetensors"
    save_weights(enc, path)

    torch.manual_seed(1)
    fresh = create_model(name).eval()
    x = torch.randn(2, 3, 64, 64)
    assert not torch.equal(fresh(x).pooled, enc(x).pooled)
    load_weights(fresh, path)
    assert torch.equal(fresh(x).grid, enc(x).grid) and torch.equal(fresh(x).pooled, enc(x).pooled)
    built = create_model(name, weights=str(path)).eval()
    assert torch.equal(built(x).pooled, enc(x).pooled)


@pytest.mark.parametrize("name", TINY)
def test_frozen_encoder_gets_no_gradients_and_keeps_its_statistics(name: str) -> None:
    enc = create_model(name)
    head = nn.Linear(enc.out_dim, 3)
    model = nn.ModuleDict({"image_encoder": enc, "head": head})
    set_trainable(enc, False)
    model.train()
    assert is_frozen(enc) and not enc.training and head.training
    assert count_parameters(model, trainable_only=True) == count_parameters(head)
    before = {k: v.clone() for k, v in enc.state_dict().items()}

    head(enc(torch.randn(4, 3, 32, 32)).pooled).sum().backward()
    assert all(p.grad is None for p in enc.parameters())
    assert head.weight.grad is not None
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)   # BatchNorm running stats unchanged

    set_trainable(enc, True)
    model.train()
    assert enc.training and not is_frozen(enc)
    head(enc(torch.randn(4, 3, 32, 32)).pooled).sum().backward()
    assert all(p.grad is not None for n, p in enc.named_parameters() if not n.startswith("fc."))


def test_builder_overrides_and_errors() -> None:
    enc = create_model("cnn_tiny", dim=48, widths=[4, 8, 8])   # lists (from YAML) become tuples
    assert enc.out_dim == 48 and enc.cfg.widths == (4, 8, 8)
    assert create_model("vit_tiny", dim=64, num_heads=4).out_dim == 64
    assert create_model("resnet_tiny", block="bottleneck").out_dim == 16 * 8 * 4
    with pytest.raises(ConfigError, match="model cnn_tiny: colour: unknown key"):
        create_model("cnn_tiny", colour="red")
    with pytest.raises(ConfigError, match="model vit_tiny: depth: expected an integer, got 'two'"):
        create_model("vit_tiny", depth="two")
    with pytest.raises(VislangError, match="not divisible"):
        create_model("vit_tiny", dim=33)
    with pytest.raises(VislangError, match="block must be one of"):
        create_model("resnet_tiny", block="dense")
    with pytest.raises(VislangError, match="strides"):
        create_model("cnn_tiny", strides=(2, 2))


@pytest.mark.parametrize("name", TINY)
def test_bad_inputs_are_clear_errors(name: str) -> None:
    enc = create_model(name).eval()
    with pytest.raises(VislangError, match=r"\(B, 3, H, W\)"):
        enc(torch.randn(2, 1, 32, 32))
    with pytest.raises(VislangError, match="at least"):
        enc(torch.randn(2, 3, 4, 4))


def test_resnet_and_vit_specific_input_errors() -> None:
    with pytest.raises(VislangError, match="at least 32x32"):
        create_model("resnet_tiny")(torch.randn(2, 3, 16, 16))
    with pytest.raises(VislangError, match="not a multiple of the patch size 8"):
        create_model("vit_tiny")(torch.randn(2, 3, 36, 36))


def test_vit_position_embeddings_and_attention_maps() -> None:
    vit = create_model("vit_tiny").eval()                      # configured for 32 px, 4x4 patches
    maps = vit.attention_maps(torch.randn(2, 3, 32, 32))
    assert len(maps) == vit.cfg.depth and maps[0].shape == (2, vit.cfg.num_heads, 17, 17)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, vit.cfg.num_heads, 17))
    big = vit.attention_maps(torch.randn(1, 3, 64, 48))        # resized position embeddings: 8x6 patches
    assert big[-1].shape == (1, vit.cfg.num_heads, 49, 49)


def test_vit_pooled_is_the_class_token_and_grid_the_patches() -> None:
    vit = create_model("vit_tiny", depth=0).eval()            # no blocks: tokens are embeddings + final norm
    x = torch.randn(2, 3, 32, 32)
    feats = vit(x)
    norm = vit.norm
    cls = norm(vit.cls_token[0, 0] + vit.pos_embed[0, 0])
    patches = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)                # (B, 16, D), row-major
    torch.testing.assert_close(feats.pooled, cls.expand(2, -1))
    torch.testing.assert_close(feats.grid, norm(patches + vit.pos_embed[:, 1:]))


# --- torchvision compatibility -----------------------------------------------------------------------
# Expected state dict of torchvision.models.resnet18(), written from the module structure of torchvision's
# torchvision/models/resnet.py (ResNet: conv1, bn1, layer1..4 of BasicBlocks [2, 2, 2, 2] with conv1, bn1,
# conv2, bn2 and, where the shape changes, downsample = Sequential(conv1x1, BatchNorm2d); fc = Linear(512, 1000)).
# Each BatchNorm2d "bn" entry stands for weight, bias, running_mean, running_var (C,) and num_batches_tracked ().
TORCHVISION_RESNET18 = [
    ("conv1.weight", (64, 3, 7, 7)),
    ("bn1", "bn", 64),
    ("layer1.0.conv1.weight", (64, 64, 3, 3)),
    ("layer1.0.bn1", "bn", 64),
    ("layer1.0.conv2.weight", (64, 64, 3, 3)),
    ("layer1.0.bn2", "bn", 64),
    ("layer1.1.conv1.weight", (64, 64, 3, 3)),
    ("layer1.1.bn1", "bn", 64),
    ("layer1.1.conv2.weight", (64, 64, 3, 3)),
    ("layer1.1.bn2", "bn", 64),
    ("layer2.0.conv1.weight", (128, 64, 3, 3)),
    ("layer2.0.bn1", "bn", 128),
    ("layer2.0.conv2.weight", (128, 128, 3, 3)),
    ("layer2.0.bn2", "bn", 128),
    ("layer2.0.downsample.0.weight", (128, 64, 1, 1)),
    ("layer2.0.downsample.1", "bn", 128),
    ("layer2.1.conv1.weight", (128, 128, 3, 3)),
    ("layer2.1.bn1", "bn", 128),
    ("layer2.1.conv2.weight", (128, 128, 3, 3)),
    ("layer2.1.bn2", "bn", 128),
    ("layer3.0.conv1.weight", (256, 128, 3, 3)),
    ("layer3.0.bn1", "bn", 256),
    ("layer3.0.conv2.weight", (256, 256, 3, 3)),
    ("layer3.0.bn2", "bn", 256),
    ("layer3.0.downsample.0.weight", (256, 128, 1, 1)),
    ("layer3.0.downsample.1", "bn", 256),
    ("layer3.1.conv1.weight", (256, 256, 3, 3)),
    ("layer3.1.bn1", "bn", 256),
    ("layer3.1.conv2.weight", (256, 256, 3, 3)),
    ("layer3.1.bn2", "bn", 256),
    ("layer4.0.conv1.weight", (512, 256, 3, 3)),
    ("layer4.0.bn1", "bn", 512),
    ("layer4.0.conv2.weight", (512, 512, 3, 3)),
    ("layer4.0.bn2", "bn", 512),
    ("layer4.0.downsample.0.weight", (512, 256, 1, 1)),
    ("layer4.0.downsample.1", "bn", 512),
    ("layer4.1.conv1.weight", (512, 512, 3, 3)),
    ("layer4.1.bn1", "bn", 512),
    ("layer4.1.conv2.weight", (512, 512, 3, 3)),
    ("layer4.1.bn2", "bn", 512),
    ("fc.weight", (1000, 512)),
    ("fc.bias", (1000,)),
]


def _expand(spec: list[tuple]) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for entry in spec:
        if len(entry) == 3:
            name, _, channels = entry
            out += [(f"{name}.{s}", (channels,)) for s in ("weight", "bias", "running_mean", "running_var")]
            out.append((f"{name}.num_batches_tracked", ()))
        else:
            out.append(entry)
    return out


def _torchvision_state_dict(with_num_batches_tracked: bool = True) -> dict[str, torch.Tensor]:
    """A random state dict laid out like a torchvision resnet18 checkpoint."""
    state = {}
    for key, shape in _expand(TORCHVISION_RESNET18):
        if key.endswith("num_batches_tracked"):
            if with_num_batches_tracked:
                state[key] = torch.tensor(123)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape) + 0.5
        else:
            state[key] = torch.randn(shape)
    return state


def test_resnet18_state_dict_matches_torchvision_keys_and_shapes() -> None:
    expected = _expand(TORCHVISION_RESNET18)
    assert len(expected) == 122
    with torch.device("meta"):
        model = create_model("resnet18")
    actual = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert actual == expected                      # same names, same shapes, same order


@pytest.mark.parametrize(("name", "params"), [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                              ("resnet50", 25_557_032), ("resnet101", 44_549_160)])
def test_resnet_parameter_counts_match_torchvision(name: str, params: int) -> None:
    # num_params as published in torchvision's model documentation (IMAGENET1K_V1 weights)
    with torch.device("meta"):
        assert count_parameters(create_model(name)) == params


def test_resnet50_bottleneck_layout_matches_torchvision() -> None:
    with torch.device("meta"):
        state = create_model("resnet50").state_dict()
    # 53 BatchNorms x 5 + 53 convolutions + fc weight and bias
    assert len(state) == 320
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert shapes["layer1.0.conv1.weight"] == (64, 64, 1, 1)
    assert shapes["layer2.0.conv1.weight"] == (128, 256, 1, 1)
    assert shapes["layer2.0.conv2.weight"] == (128, 128, 3, 3)
    assert shapes["layer3.5.conv3.weight"] == (1024, 256, 1, 1)
    assert shapes["layer4.2.bn3.running_var"] == (2048,)
    assert shapes["fc.weight"] == (1000, 2048)
    assert "layer1.1.downsample.0.weight" not in shapes and "layer3.6.conv1.weight" not in shapes


def test_resnet50_downsamples_in_the_3x3_convolution() -> None:
    enc = create_model("resnet50")
    assert enc.layer2[0].conv1.stride == (1, 1) and enc.layer2[0].conv2.stride == (2, 2)
    assert enc.layer2[0].downsample[0].stride == (2, 2)


@pytest.mark.parametrize("fmt", ["pth", "pth-legacy", "pth-no-num-batches-tracked", "safetensors"])
def test_torchvision_checkpoint_loads_strictly(fmt: str, tmp_path: Path) -> None:
    state = _torchvision_state_dict(with_num_batches_tracked=fmt != "pth-no-num-batches-tracked")
    path = tmp_path / ("resnet18.safetensors" if fmt == "safetensors" else "resnet18.pth")
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=fmt != "pth-legacy")

    model = create_model("resnet18", weights=str(path)).eval()
    loaded = model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    if fmt == "pth-no-num-batches-tracked":
        assert int(loaded["bn1.num_batches_tracked"]) == 0
    if fmt == "pth":                                    # the loaded weights, not the initial ones, drive the output
        x = torch.randn(1, 3, 32, 32)
        assert not torch.allclose(create_model("resnet18").eval().classify(x), model.classify(x))


def test_wrong_weight_files_are_clear_errors(tmp_path: Path) -> None:
    model = create_model("resnet_tiny")
    with pytest.raises(VislangError, match="weights file not found"):
        load_torchvision_weights(model, tmp_path / "absent.pth")

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(VislangError, match="garbage.pth: cannot read weights"):
        load_weights(model, garbage)
    bad_st = tmp_path / "garbage.safetensors"
    bad_st.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(VislangError, match="garbage.safetensors: cannot read weights"):
        load_weights(model, bad_st)

    whole = tmp_path / "whole_model.pth"               # a pickled module, not a state dict: refused, no code run
    torch.save(model, whole)
    with pytest.raises(VislangError, match="cannot read weights"):
        load_weights(model, whole)

    not_tensors = tmp_path / "numbers.pth"
    torch.save({"conv1.weight": 3}, not_tensors)
    with pytest.raises(VislangError, match="'conv1.weight' is a int, not a tensor"):
        load_weights(model, not_tensors)

    r18 = tmp_path / "resnet18.pth"
    torch.save(_torchvision_state_dict(), r18)
    with pytest.raises(VislangError) as err:            # resnet18 weights into the tiny ResNet
        load_torchvision_weights(model, r18)
    msg = str(err.value)
    assert "resnet18.pth does not fit ResNet" in msg and "shape mismatch" in msg
    assert "conv1.weight: file (64, 3, 7, 7), model (16, 3, 7, 7)" in msg
    assert "unexpected in the file" in msg and "layer1.1.conv1.weight" in msg

    with pytest.raises(VislangError, match=r"missing from the file \(80\): layer1.2.conv1.weight"):  # into resnet34
        create_model("resnet34", weights=str(r18))
    r50 = create_model("resnet50")
    with pytest.raises(VislangError, match=r"missing from the file \(\d+\): .*conv3"):
        load_torchvision_weights(r50, r18)

    wrapped = tmp_path / "dataparallel.pth"
    torch.save({f"module.{k}": v for k, v in create_model("resnet_tiny").state_dict().items()}, wrapped)
    with pytest.raises(VislangError, match="DataParallel"):
        load_weights(model, wrapped)


def test_new_classifier_head_with_exclude(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    state = _torchvision_state_dict()
    torch.save(state, path)
    model = create_model("resnet18", num_classes=5)
    with pytest.raises(VislangError, match=r"fc.weight: file \(1000, 512\), model \(5, 512\)"):
        load_torchvision_weights(model, path)
    fc_before = model.fc.weight.clone()
    load_weights(model, path, exclude=("fc.",))
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(model.fc.weight, fc_before)


def test_checkpoint_wrapping_a_state_dict_is_unwrapped(tmp_path: Path) -> None:
    enc = create_model("cnn_tiny")
    path = tmp_path / "ckpt.pth"
    torch.save({"model": enc.state_dict(), "epoch": 3}, path)
    fresh = create_model("cnn_tiny")
    load_weights(fresh, path)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), enc.state_dict().values()))


def test_importing_models_does_not_import_transformers() -> None:
    code = "import sys, vislang.models; assert 'transformers' not in sys.modules, 'transformers imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- Hugging Face -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised ViTModel saved with save_pretrained, with a CLIP-like preprocessor config."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64)
    path = tmp_path_factory.mktemp("hf-vit")
    transformers.ViTModel(config).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.5, 0.5], "do_normalize": True}))
    return path


def test_hf_vit_loads_offline_and_maps_outputs(hf_vit_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import ViTModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = create_model("hf_vision", path=str(hf_vit_dir)).eval()
    assert isinstance(enc, ImageEncoder) and enc.out_dim == 32
    images = torch.randn(2, 3, 32, 32)                          # ImageNet-normalised
    feats = enc(images)
    assert feats.grid.shape == (2, 16, 32) and feats.pooled.shape == (2, 32) and feats.grid_hw == (4, 4)

    reference = ViTModel.from_pretrained(hf_vit_dir, local_files_only=True).eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pixels = images * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)                         # back to [0, 1]
    model_input = (pixels - 0.5) / torch.tensor([0.25, 0.5, 0.5]).view(1, 3, 1, 1)       # the model's own
    out = reference(pixel_values=model_input)
    torch.testing.assert_close(feats.grid, out.last_hidden_state[:, 1:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(feats.pooled, out.pooler_output, atol=1e-5, rtol=1e-4)

    bigger = enc(torch.randn(1, 3, 64, 48))                       # position embeddings interpolated
    assert bigger.grid_hw == (8, 6) and bigger.grid.shape == (1, 48, 32)


def test_hf_encoder_freeze_and_round_trip(hf_vit_dir: Path, tmp_path: Path) -> None:
    enc = create_model("hf_vision", path=str(hf_vit_dir))
    head = nn.Linear(enc.out_dim, 2)
    set_trainable(enc, False)
    head(enc(torch.randn(2, 3, 32, 32)).pooled).sum().backward()
    assert all(p.grad is None for p in enc.parameters()) and head.weight.grad is not None

    set_trainable(enc, True)
    with torch.no_grad():
        enc.model.embeddings.cls_token.add_(1.0)                  # "fine-tuned"
    path = tmp_path / "finetuned.safetensors"
    save_weights(enc, path)
    again = create_model("hf_vision", path=str(hf_vit_dir), weights=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(again(x).pooled, enc.eval()(x).pooled)


def test_hf_convolutional_model(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
    transformers.ConvNextModel(config).save_pretrained(tmp_path)
    enc = create_model("hf_vision", path=str(tmp_path)).eval()
    feats = enc(torch.randn(2, 3, 64, 64))                         # stem /4, one more stage /2
    assert enc.out_dim == 16
    assert feats.grid_hw == (8, 8) and feats.grid.shape == (2, 64, 16) and feats.pooled.shape == (2, 16)


def test_hf_errors(tmp_path: Path, hf_vit_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(VislangError, match="needs path="):
        create_model("hf_vision")
    with pytest.raises(VislangError, match="no config.json"):
        create_model("hf_vision", path=str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "no-such-model"}')
    with pytest.raises(VislangError, match="cannot load the Hugging Face model"):
        create_model("hf_vision", path=str(tmp_path))

    bad = tmp_path / "bad-preprocessor"
    bad.mkdir()
    for f in hf_vit_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "preprocessor_config.json").write_text('{"image_mean": [0.5, 0.5]}')
    with pytest.raises(DataError, match="field 'image_mean': expected three numbers"):
        create_model("hf_vision", path=str(bad))

    monkeypatch.setitem(sys.modules, "transformers", None)      # as if the [hf] extra were not installed
    with pytest.raises(VislangError, match=r"pip install 'vislang\[hf\]'"):
        create_model("hf_vision", path=str(hf_vit_dir))
