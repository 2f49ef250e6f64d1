"""Resize / crop / augment / tensor transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vislang.data import transforms as T
from vislang.errors import VislangError
from vislang.tasks.common import DataConfig, transform_config


def _gradient(w: int, h: int) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None, None].repeat(w, 1)
    return Image.fromarray(np.concatenate([x, y, 255 - x], axis=2))


def test_resize_shorter_side_and_exact():
    assert T.Resize(32)(_gradient(100, 50)).size == (64, 32)
    assert T.Resize(32)(_gradient(50, 100)).size == (32, 64)
    assert T.Resize((10, 20))(_gradient(100, 50)).size == (20, 10)
    im = _gradient(32, 32)
    assert T.Resize(32)(im) is im


def test_center_crop():
    im = T.CenterCrop(10)(_gradient(30, 20))
    assert im.size == (10, 10)
    assert im.getpixel((0, 0)) == _gradient(30, 20).getpixel((10, 5))


def test_random_resized_crop_is_seeded():
    im = _gradient(120, 80)
    t = T.RandomResizedCrop(24, scale=(0.2, 0.5))
    torch.manual_seed(3)
    a = np.asarray(t(im))
    torch.manual_seed(3)
    b = np.asarray(t(im))
    c = np.asarray(t(im))
    assert a.shape == (24, 24, 3) and (a == b).all() and not (a == c).all()


def test_color_jitter_changes_colours_not_size():
    im = _gradient(16, 16)
    torch.manual_seed(0)
    out = T.ColorJitter(0.5, 0.5, 0.5, 0.1)(im)
    assert out.size == im.size and out.mode == "RGB"
    assert not (np.asarray(out) == np.asarray(im)).all()
    assert (np.asarray(T.ColorJitter()(im)) == np.asarray(im)).all()


def test_flip():
    im = _gradient(8, 4)
    flipped = T.RandomHorizontalFlip(p=1.0)(im)
    assert (np.asarray(flipped)[:, ::-1] == np.asarray(im)).all()
    assert T.RandomHorizontalFlip(p=0.0)(im) is im


def test_grayscale_and_blur():
    im = _gradient(16, 16)
    grey = np.asarray(T.RandomGrayscale(p=1.0)(im))
    assert grey.shape == (16, 16, 3) and (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert T.RandomGrayscale(p=0.0)(im) is im
    edge = Image.new("RGB", (16, 16), "white")
    edge.paste((0, 0, 0), (0, 0, 8, 16))
    blurred = np.asarray(T.RandomGaussianBlur(p=1.0, radius=(1.0, 1.0))(edge)).astype(int)
    assert 0 < blurred[8, 8, 0] < 255 and blurred[8, 0, 0] == 0 and blurred[8, 15, 0] == 255  # the edge softens
    assert T.RandomGaussianBlur(p=0.0)(edge) is edge


def test_to_tensor_and_normalize():
    im = Image.new("RGB", (5, 3), (255, 0, 51))
    x = T.ToTensor()(im)
    assert x.shape == (3, 3, 5) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))
    y = T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(x)
    assert torch.allclose(y[:, 0, 0], torch.tensor([1.0, -1.0, -0.6]))


def test_build_transform_eval_and_train():
    cfg = T.TransformConfig(image_size=32)
    big = _gradient(300, 200)
    ev = T.build_transform(cfg, train=False)
    assert ev(big).shape == (3, 32, 32)
    assert torch.equal(ev(big), ev(big))
    tr = T.build_transform(cfg, train=True)
    assert tr(big).shape == (3, 32, 32)
    assert not any(isinstance(t, T.RandomHorizontalFlip) for t in tr.transforms)  # off by default
    flips = T.build_transform(T.TransformConfig(image_size=32, hflip=0.5), train=True)
    assert any(isinstance(t, T.RandomHorizontalFlip) for t in flips.transforms)
    style = T.build_transform(T.TransformConfig(image_size=32, grayscale=0.2, blur=0.3), train=True)
    assert [type(t) for t in style.transforms][2:4] == [T.RandomGrayscale, T.RandomGaussianBlur]
    assert not any(isinstance(t, T.RandomGrayscale | T.RandomGaussianBlur) for t in tr.transforms)
    no_aug = T.build_transform(T.TransformConfig(image_size=32, augment=False), train=True)
    assert torch.equal(no_aug(big), ev(big))


def test_seeded_block_is_reproducible_and_leaves_global_rng_alone():
    im = _gradient(64, 48)
    t = T.Compose([T.RandomResizedCrop(16), T.ColorJitter(0.4, 0.4, 0.4, 0.05), T.RandomHorizontalFlip(0.5)])
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    with T.seeded(11):
        a = np.asarray(t(im))
    with T.seeded(11):
        b = np.asarray(t(im))
    with T.seeded(12):
        c = np.asarray(t(im))
    assert (a == b).all() and not (a == c).all()
    assert torch.equal(torch.random.get_rng_state(), before)


def test_trim_and_zoom_out():
    im = Image.new("RGB", (40, 30), "white")
    im.paste((200, 0, 0), (5, 6, 15, 16))                                 # a 10 px red square
    trimmed = T.TrimBackground(margin=0.1)(im)
    assert trimmed.size == (12, 12) and trimmed.getpixel((6, 6)) == (200, 0, 0)
    assert trimmed.getpixel((0, 0)) == (255, 255, 255)
    blank = Image.new("RGB", (8, 8), "white")
    assert T.TrimBackground()(blank) is blank
    zoom = T.RandomZoomOut(1.0, (0.5, 0.5))
    with T.seeded(1):
        small = zoom(trimmed.resize((20, 20)))
    assert small.size == (20, 20) and np.asarray(small).min(axis=2).mean() > 150   # mostly white canvas
    with pytest.raises(ValueError, match="zoom-out scale"):
        T.RandomZoomOut(0.5, (0.0, 1.0))


def test_trim_applies_at_train_and_eval_time_zoom_out_only_in_training():
    cfg = transform_config(DataConfig(transform=T.TransformConfig(image_size=16, trim=True, zoom_out=0.5)))
    train, test = T.build_transform(cfg, train=True), T.build_transform(cfg)
    assert [type(t).__name__ for t in train.transforms][:3] == ["TrimBackground", "RandomZoomOut", "RandomResizedCrop"]
    assert [type(t).__name__ for t in test.transforms][:2] == ["TrimBackground", "Resize"]
    im = Image.new("RGB", (40, 30), "white")
    im.paste((200, 0, 0), (5, 6, 15, 16))
    assert train(im).shape == test(im).shape == (3, 16, 16)
    centre = test(im)[:, 6:10, 6:10]                                       # the red square fills the frame
    assert torch.allclose(centre, centre[:, :1, :1].expand_as(centre))
    assert T.TransformConfig.from_dict({"trim": True, "crop_scale": [0.5, 1.0]}).crop_scale == (0.5, 1.0)
    with pytest.raises(VislangError, match="data.transform.zoom_out_scale"):
        transform_config(DataConfig(transform=T.TransformConfig(zoom_out_scale=(0.0, 1.0))))
    with pytest.raises(VislangError, match="data.transform.zoom_out"):
        transform_config(DataConfig(transform=T.TransformConfig(zoom_out=1.5)))


def test_outline_inks_the_silhouette_and_inner_edges_only():
    im = Image.new("RGB", (40, 40), "white")
    im.paste((250, 200, 0), (8, 8, 32, 32))                                # a yellow square ...
    im.paste((0, 120, 255), (16, 16, 24, 24))                              # ... with a blue patch inside
    with T.seeded(0):
        out = np.asarray(T.RandomOutline(1.0, max_ink=0)(im)).astype(int)
    dark = out.max(axis=2) < 40                                            # pure black ink
    assert dark[8, 8:32].all() and dark[31, 8:32].all() and dark[8:32, 8].all()   # the square's border
    assert dark[16:24, 15:17].any() or dark[16:24, 15].any() or dark[15, 16:24].any()  # the patch's edge
    assert not dark[:6].any() and not dark[:, :6].any()                    # the background stays white
    assert (out[12, 12] == (250, 200, 0)).all() and (out[20, 20] == (0, 120, 255)).all()   # fills stay
    assert T.RandomOutline(0.0)(im) is im
    blank = Image.new("RGB", (8, 8), "white")
    assert np.asarray(T.RandomOutline(1.0)(blank)).min() == 255            # nothing to ink


def test_outline_is_a_training_augmentation_checked_in_the_data_config():
    cfg = transform_config(DataConfig(transform=T.TransformConfig(image_size=16, trim=True, outline=0.5)))
    assert cfg.outline == 0.5
    names = [type(t).__name__ for t in T.build_transform(cfg, train=True).transforms]
    assert names[:3] == ["TrimBackground", "RandomOutline", "RandomResizedCrop"]
    assert "RandomOutline" not in [type(t).__name__ for t in T.build_transform(cfg).transforms]
    assert T.TransformConfig.from_dict({"outline": 0.3}).outline == 0.3
    with pytest.raises(VislangError, match="data.transform.outline"):
        transform_config(DataConfig(transform=T.TransformConfig(outline=-0.1)))


def test_flatten_reduces_shading_to_a_few_flat_colours():
    im = _gradient(48, 48)                                                 # a smooth gradient: many colours
    assert len(im.getcolors(1 << 16)) > 100
    with T.seeded(0):
        flat = T.RandomFlatten(1.0, colors=(4, 8))(im)
    assert flat.mode == "RGB" and flat.size == im.size and 2 <= len(flat.getcolors(1 << 16)) <= 8
    assert np.abs(np.asarray(flat, dtype=int) - np.asarray(im, dtype=int)).mean() < 40   # same picture
    assert T.RandomFlatten(0.0)(im) is im
    with pytest.raises(ValueError, match="flatten colours"):
        T.RandomFlatten(0.5, colors=(1, 8))
    cfg = transform_config(DataConfig(transform=T.TransformConfig(image_size=16, flatten=0.5, outline=0.5)))
    names = [type(t).__name__ for t in T.build_transform(cfg, train=True).transforms]
    assert names[:3] == ["RandomFlatten", "RandomOutline", "RandomResizedCrop"]
    with pytest.raises(VislangError, match="data.transform.flatten"):
        transform_config(DataConfig(transform=T.TransformConfig(flatten=1.1)))
